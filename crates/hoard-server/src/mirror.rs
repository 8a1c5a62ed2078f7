//! Mirror repositories: keeping a project's listing fresh from the
//! upstreams, and fetching a file's bytes on its first download.
//!
//! Fills are writes like any other. The leader fetches, verifies and
//! commits through the writer (so every voter and replica gets the event,
//! and the blob before it). Any other node asks the leader to fill
//! (`X-Hoard-Fill`), waits (bounded) for the event, and then serves from
//! its own index and disk.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hoard_core::{
    Change, GenericPath, MirrorPart, MirrorSettings, MirroredNpmVersion, NpmTarball, Serial,
};
use hoard_mirror::{
    download_limit, plan_npm_refresh, plan_pypi_refresh, Freshness, KnownFile, KnownNpmVersion,
    NpmRefresh, Page, PageResponse, SingleFlight, UpstreamClient, UpstreamError,
};
use hoard_npm::{parse_upstream_packument, tarball_matches_declared, PackageName};
use hoard_pypi::{parse_upstream_project, UpstreamFormat, UPSTREAM_ACCEPT};
use hoard_store::{BlobDigests, ExtraDigests, FileState, NpmVersionState, RepoState, StagedBlob};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::error::ApiError;
use crate::http::{with_body, HandlerResult, ResBody};
use crate::node::Node;

/// The request header by which a node asks the leader to fill its cache
/// (the leader answers 204 once the fill is committed).
pub const FILL_HEADER: &str = "x-hoard-fill";
/// Tells a client that the page could not be revalidated with any
/// upstream, and why; the page is the last one fetched.
pub const STALE_HEADER: &str = "x-hoard-stale";
/// The actor of mirror events.
const ACTOR: &str = "mirror";
/// The most files one listing event carries: a large project's first
/// fetch becomes a few events of bounded size.
const FILES_PER_EVENT: usize = 500;
/// The most manifest bytes one npm listing event carries (the raft and
/// replication streams take messages far larger; this keeps each small).
const MAX_EVENT_BYTES: usize = 1 << 20;
/// The largest PEP 658 metadata file fetched.
const MAX_METADATA_BYTES: u64 = 16 << 20;

/// A node's mirror machinery: one upstream client, and what it knows of
/// freshness and fills under way.
pub struct MirrorState {
    pub client: UpstreamClient,
    pub freshness: Freshness,
    pub counters: MirrorCounters,
    pages: SingleFlight<String, PageFill>,
    files: SingleFlight<String, Result<(), ApiError>>,
}

/// What the upstreams answered, for `/+metrics`.
#[derive(Default)]
pub struct MirrorCounters {
    pub pages_fetched: AtomicU64,
    pub pages_not_modified: AtomicU64,
    pub pages_not_found: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub files_cached: AtomicU64,
    pub digest_mismatches: AtomicU64,
    pub stale_pages: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl MirrorState {
    pub fn new() -> Result<Self, UpstreamError> {
        Ok(MirrorState {
            client: UpstreamClient::new()?,
            freshness: Freshness::default(),
            counters: MirrorCounters::default(),
            pages: SingleFlight::default(),
            files: SingleFlight::default(),
        })
    }
}

/// How a mirrored page stands after trying to make it fresh.
#[derive(Clone, Debug)]
pub enum PageFill {
    /// Checked with an upstream within the TTL (or just now).
    Fresh,
    /// No upstream could be asked or answered; the index holds the last
    /// page fetched. Why, for the stale header.
    Stale(String),
    /// No upstream has the project (remembered for the negative TTL).
    NotFound,
    /// Never fetched, and no upstream answered: why.
    Failed(String),
}

/// The mirror settings of `repo`, if it is a mirror.
pub fn settings(repo: &RepoState) -> Option<&MirrorSettings> {
    match &repo.settings.kind {
        hoard_core::RepoKind::Mirror(m) => Some(m),
        _ => None,
    }
}

/// Whether a request asks this node to fill its cache for another node.
pub fn is_fill_request(headers: &HeaderMap) -> bool {
    headers.contains_key(FILL_HEADER)
}

/// Marks a response served from the cache after no upstream could be asked.
pub fn mark_stale(response: &mut Response<crate::http::ResBody>, why: &str) {
    let why: String = why.chars().filter(|c| !c.is_control()).take(500).collect();
    if let Ok(value) = HeaderValue::from_str(&why) {
        response.headers_mut().insert(STALE_HEADER, value);
    }
    response.headers_mut().insert(
        header::WARNING,
        HeaderValue::from_static("110 hoard \"Response is Stale\""),
    );
}

/// `X-Hoard-Cache: hit` when the bytes were here before the request,
/// `miss` when this request fetched them (`hoard prefetch` reports it).
pub fn with_cache_state(response: HandlerResult, was_stored: bool) -> HandlerResult {
    let mut response = response?;
    response.headers_mut().insert(
        "x-hoard-cache",
        HeaderValue::from_static(if was_stored { "hit" } else { "miss" }),
    );
    Ok(response)
}

/// `name` was never fetched into mirror `repo`, and no upstream answered.
pub fn not_cached(repo: &RepoState, name: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!(
            "{name} is not cached in {}, and no upstream answered: {why}",
            repo.name
        ),
    )
}

/// The leader's answer to a fill request from another node: done (the
/// serial it is done at is on every response).
pub fn filled() -> Response<ResBody> {
    with_body(
        StatusCode::NO_CONTENT,
        "text/plain; charset=utf-8",
        Bytes::new(),
    )
}

fn page_key(repo: &RepoState, project: &str) -> String {
    format!("{}/{project}", repo.name)
}

/// Makes the listing of PyPI `project` fresh enough to serve.
pub async fn refresh_pypi_project(
    node: &Node,
    repo: &RepoState,
    settings: &MirrorSettings,
    project: &str,
    headers: &HeaderMap,
) -> PageFill {
    let known = matches!(node.index.project(&repo.name, project, None), Ok(Some(_)));
    let path = format!("/{}/simple/{project}/", repo.name);
    refresh_listing(
        node,
        repo,
        settings,
        project,
        known,
        &path,
        headers,
        |key| fetch_pypi_project(node, repo, settings, project, key),
    )
    .await
}

/// Makes the packument of npm package `name` fresh enough to serve.
pub async fn refresh_npm_package(
    node: &Node,
    repo: &RepoState,
    settings: &MirrorSettings,
    name: &PackageName,
    headers: &HeaderMap,
) -> PageFill {
    let full = name.full();
    let known = matches!(node.index.npm_package(&repo.name, &full, None), Ok(Some(_)));
    let path = format!("/{}/{}", repo.name, name.escaped());
    refresh_listing(node, repo, settings, &full, known, &path, headers, |key| {
        fetch_npm_package(node, repo, settings, name, key)
    })
    .await
}

/// Makes a listing fresh enough to serve: within the TTL it is served as
/// it is; after it, the upstreams are asked (the leader asks them with
/// `fetch`, once however many requests wait; any other node asks the
/// leader, at `path`).
#[allow(clippy::too_many_arguments)]
async fn refresh_listing<F, Fut>(
    node: &Node,
    repo: &RepoState,
    settings: &MirrorSettings,
    name: &str,
    known: bool,
    path: &str,
    headers: &HeaderMap,
    fetch: F,
) -> PageFill
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = PageFill>,
{
    if settings.offline || settings.upstreams.is_empty() {
        return if known {
            PageFill::Fresh
        } else {
            PageFill::NotFound
        };
    }
    let key = page_key(repo, name);
    let ttl = Duration::from_secs(settings.ttl_secs);
    let negative_ttl = Duration::from_secs(settings.negative_ttl_secs);
    if let Some(state) = node.mirror.freshness.get(&key) {
        if state.is_fresh(ttl, negative_ttl) {
            return if state.not_found && !known {
                PageFill::NotFound
            } else {
                PageFill::Fresh
            };
        }
    }
    if !node.is_leader() {
        return match fill_via_leader(node, path, headers).await {
            Ok(()) => {
                node.mirror.freshness.checked(&key, Default::default());
                PageFill::Fresh
            }
            Err(e) if e.status == StatusCode::NOT_FOUND => PageFill::NotFound,
            Err(e) if known => PageFill::Stale(e.message),
            Err(e) => PageFill::Failed(e.message),
        };
    }
    let fill = node
        .mirror
        .pages
        .run(key.clone(), || fetch(key.clone()))
        .await;
    if matches!(fill, PageFill::Stale(_)) {
        count(&node.mirror.counters.stale_pages);
    }
    fill
}

/// What became of one upstream's page.
enum Recorded {
    /// Its changes are committed.
    Done,
    /// The page is unusable (why): the next upstream is asked.
    Refused(String),
    /// Committing failed: no other upstream would do better.
    Failed(ApiError),
}

/// The leader's fill of one listing, from the first upstream that has it
/// (`url_of` an upstream base), recorded by `record`. `listed`: whether the
/// mirror lists anything for it yet.
async fn fill_from_upstreams<R, Fut>(
    node: &Node,
    settings: &MirrorSettings,
    key: &str,
    listed: bool,
    accept: &str,
    url_of: impl Fn(&str) -> String,
    mut record: R,
) -> PageFill
where
    R: FnMut(Page) -> Fut,
    Fut: Future<Output = Recorded>,
{
    let validators = node
        .mirror
        .freshness
        .get(key)
        .filter(|_| listed)
        .map(|s| s.validators);
    let timeout = Duration::from_secs(settings.timeout_secs);
    let mut failures = Vec::new();
    for upstream in &settings.upstreams {
        let url = url_of(upstream);
        let started = Instant::now();
        let response = node
            .mirror
            .client
            .page(&url, accept, validators.as_ref(), timeout)
            .await;
        node.metrics
            .record_upstream("page", response.is_ok(), started.elapsed().as_secs_f64());
        let page = match response {
            Ok(PageResponse::NotModified) => {
                count(&node.mirror.counters.pages_not_modified);
                node.mirror
                    .freshness
                    .checked(key, validators.clone().unwrap_or_default());
                return PageFill::Fresh;
            }
            Ok(PageResponse::NotFound) => {
                count(&node.mirror.counters.pages_not_found);
                continue;
            }
            Ok(PageResponse::Page(page)) => {
                count(&node.mirror.counters.pages_fetched);
                page
            }
            Err(e) => {
                count(&node.mirror.counters.upstream_errors);
                tracing::warn!(%url, error = %e, "upstream page fetch failed");
                failures.push(e.to_string());
                continue;
            }
        };
        let page_validators = page.validators.clone();
        match record(page).await {
            Recorded::Done => {
                node.mirror.freshness.checked(key, page_validators);
                return PageFill::Fresh;
            }
            Recorded::Refused(why) => failures.push(why),
            Recorded::Failed(e) if listed => return PageFill::Stale(e.message),
            Recorded::Failed(e) => return PageFill::Failed(e.message),
        }
    }
    if failures.is_empty() {
        node.mirror.freshness.not_found(key);
        return if listed {
            // Every upstream dropped it: what was listed stays.
            PageFill::Fresh
        } else {
            PageFill::NotFound
        };
    }
    let why = failures.join("; ");
    if listed {
        PageFill::Stale(why)
    } else {
        PageFill::Failed(why)
    }
}

/// The leader's fill of one project page.
async fn fetch_pypi_project(
    node: &Node,
    repo: &RepoState,
    settings: &MirrorSettings,
    project: &str,
    key: String,
) -> PageFill {
    let known = match node.index.files(&repo.name, project, None) {
        Ok(files) => files,
        Err(e) => return PageFill::Failed(format!("reading the index: {e}")),
    };
    let known_files: BTreeMap<String, KnownFile> = known
        .iter()
        .map(|f| {
            (
                f.record.filename.clone(),
                KnownFile {
                    yanked: f.yanked_at(None).map(str::to_owned),
                },
            )
        })
        .collect();
    let known_files = &known_files;
    fill_from_upstreams(
        node,
        settings,
        &key,
        !known.is_empty(),
        UPSTREAM_ACCEPT,
        |upstream| format!("{upstream}{project}/"),
        |page| async move {
            let format = page
                .content_type
                .as_deref()
                .and_then(UpstreamFormat::from_content_type)
                .unwrap_or(UpstreamFormat::Html);
            let parsed = match parse_upstream_project(format, &page.url, &page.body) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::warn!(url = %page.url, error = %e, "upstream page refused");
                    return Recorded::Refused(format!("{}: {e}", page.url));
                }
            };
            let refresh = plan_pypi_refresh(project, &parsed, known_files);
            for refused in &refresh.refused {
                tracing::warn!(
                    url = %page.url,
                    entry = %refused.entry,
                    reason = %refused.reason,
                    "upstream file entry refused"
                );
            }
            match record_refresh(node, repo, project, refresh).await {
                Ok(()) => Recorded::Done,
                Err(e) => Recorded::Failed(e),
            }
        },
    )
    .await
}

/// The leader's fill of one packument. The full document is fetched (the
/// abbreviated one lacks fields that the full one served here needs), and
/// both forms are rendered from what it records.
async fn fetch_npm_package(
    node: &Node,
    repo: &RepoState,
    settings: &MirrorSettings,
    name: &PackageName,
    key: String,
) -> PageFill {
    let full = name.full();
    let read = || -> Result<_, hoard_store::StoreError> {
        let versions = node.index.npm_versions(&repo.name, &full, None)?;
        let tags = node
            .index
            .npm_package(&repo.name, &full, None)?
            .map(|p| p.tags_at(None))
            .unwrap_or_default();
        Ok((versions, tags))
    };
    let (versions, tags) = match read() {
        Ok(known) => known,
        Err(e) => return PageFill::Failed(format!("reading the index: {e}")),
    };
    let known: BTreeMap<String, KnownNpmVersion> = versions
        .iter()
        .map(|v| {
            (
                v.version.clone(),
                KnownNpmVersion {
                    deprecated: v.deprecated_at(None).map(str::to_owned),
                },
            )
        })
        .collect();
    let (known, tags, full) = (&known, &tags, &full);
    fill_from_upstreams(
        node,
        settings,
        &key,
        !known.is_empty(),
        "application/json",
        |upstream| format!("{upstream}{}", name.escaped()),
        |page| async move {
            let parsed = match parse_upstream_packument(name, &page.body) {
                Ok(parsed) => parsed,
                Err(e) => {
                    tracing::warn!(url = %page.url, error = %e, "upstream packument refused");
                    return Recorded::Refused(format!("{}: {e}", page.url));
                }
            };
            let refresh = plan_npm_refresh(&parsed, known, tags);
            for refused in &refresh.refused {
                tracing::warn!(
                    url = %page.url,
                    version = %refused.version,
                    reason = %refused.reason,
                    "upstream npm version refused"
                );
            }
            match record_npm_refresh(node, repo, full, refresh).await {
                Ok(()) => Recorded::Done,
                Err(e) => Recorded::Failed(e),
            }
        },
    )
    .await
}

/// Records a packument's changes: new versions in events of bounded size
/// (a package with thousands of versions is a few events), the dist-tags
/// with the last of them, deprecations after.
async fn record_npm_refresh(
    node: &Node,
    repo: &RepoState,
    package: &str,
    refresh: NpmRefresh,
) -> Result<(), ApiError> {
    let mut batches: Vec<Vec<MirroredNpmVersion>> = Vec::new();
    let mut bytes = 0;
    for version in refresh.new_versions {
        let size = version.manifest.len() + version.url.len();
        match batches.last_mut() {
            Some(batch) if batch.len() < FILES_PER_EVENT && bytes + size <= MAX_EVENT_BYTES => {
                bytes += size;
                batch.push(version);
            }
            _ => {
                bytes = size;
                batches.push(vec![version]);
            }
        }
    }
    if batches.is_empty() && !refresh.dist_tags.is_empty() {
        batches.push(Vec::new());
    }
    let last = batches.len().saturating_sub(1);
    let mut dist_tags = Some(refresh.dist_tags);
    for (i, versions) in batches.into_iter().enumerate() {
        let count = versions.len();
        let serial = node
            .commit(
                ACTOR,
                Change::NpmMirrorListed {
                    repo: repo.name.clone(),
                    package: package.to_owned(),
                    versions,
                    dist_tags: if i == last {
                        dist_tags.take().unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                },
            )
            .await?;
        tracing::info!(repo = %repo.name, %package, versions = count, %serial, "mirrored npm versions listed");
    }
    if !refresh.deprecations.is_empty() {
        node.commit(
            ACTOR,
            Change::NpmDeprecated {
                repo: repo.name.clone(),
                package: package.to_owned(),
                changes: refresh.deprecations,
            },
        )
        .await?;
    }
    Ok(())
}

async fn record_refresh(
    node: &Node,
    repo: &RepoState,
    project: &str,
    refresh: hoard_mirror::PypiRefresh,
) -> Result<(), ApiError> {
    for files in refresh.new_files.chunks(FILES_PER_EVENT) {
        let serial = node
            .commit(
                ACTOR,
                Change::MirrorFilesListed {
                    repo: repo.name.clone(),
                    project: project.to_owned(),
                    display_name: refresh.display_name.clone(),
                    files: files.to_vec(),
                },
            )
            .await?;
        tracing::info!(repo = %repo.name, %project, files = files.len(), %serial, "mirrored files listed");
    }
    for (reason, filenames) in refresh.yanks {
        node.commit(
            ACTOR,
            Change::FilesYanked {
                repo: repo.name.clone(),
                project: project.to_owned(),
                filenames,
                reason,
            },
        )
        .await?;
    }
    Ok(())
}

/// Makes the bytes of a mirrored file (or of its PEP 658 metadata) local:
/// fetched once across the cluster, verified against the listed digest,
/// and committed before anything is served.
pub async fn ensure_cached(
    node: &Node,
    repo: &RepoState,
    settings: &MirrorSettings,
    project: &str,
    file: &FileState,
    part: MirrorPart,
    req: &http::Request<hyper::body::Incoming>,
) -> Result<(), ApiError> {
    let Some(origin) = &file.mirror else {
        return Ok(());
    };
    let filename = &file.record.filename;
    if settings.offline {
        return Err(ApiError::not_found(format!(
            "{filename} is not cached, and {} is offline",
            repo.name
        )));
    }
    if !node.is_leader() {
        return fill_via_leader(node, req.uri().path(), req.headers()).await;
    }
    let (url, expected, limit) = match part {
        MirrorPart::File => (
            origin.url.clone(),
            file.record.sha256,
            download_limit(file.record.size, node.config.max_upload_bytes),
        ),
        MirrorPart::CoreMetadata => (
            format!("{}.metadata", origin.url),
            file.record
                .core_metadata
                .ok_or_else(|| ApiError::not_found("no metadata is listed for it"))?,
            MAX_METADATA_BYTES,
        ),
    };
    let key = format!("{}/{filename}/{part:?}", repo.name);
    node.mirror
        .files
        .run(key, || async {
            // A fill that finished while this one waited to start.
            if let Ok(Some(now)) = node.index.file(&repo.name, project, filename, None) {
                if now.stored_blobs().contains(&expected) {
                    return Ok(());
                }
            }
            let staged = download_checked(
                node,
                settings,
                &url,
                limit,
                ExtraDigests::default(),
                |digests| {
                    (digests.sha256 != expected).then(|| {
                        (
                            format!("the sha256 it lists for {filename}"),
                            expected.to_hex(),
                            digests.sha256.to_hex(),
                        )
                    })
                },
            )
            .await?;
            let size = staged.size;
            let change = Change::MirrorFileCached {
                repo: repo.name.clone(),
                project: project.to_owned(),
                filename: filename.clone(),
                part,
                sha256: expected,
                size,
            };
            let committed = node.commit_with_blobs(ACTOR, vec![staged], change).await?;
            count(&node.mirror.counters.files_cached);
            tracing::info!(repo = %repo.name, %filename, ?part, size, serial = %committed.serial, "mirrored file cached");
            Ok(())
        })
        .await
}

/// Makes a mirrored npm tarball local before it is served: fetched once
/// across the cluster, checked against every digest the upstream declared,
/// and committed first.
pub async fn ensure_npm_tarball(
    node: &Node,
    repo: &RepoState,
    settings: &MirrorSettings,
    package: &str,
    version: &NpmVersionState,
    req: &http::Request<hyper::body::Incoming>,
) -> Result<(), ApiError> {
    let Some(origin) = version
        .mirror
        .as_ref()
        .filter(|_| version.tarball.sha256.is_none())
    else {
        return Ok(());
    };
    let v = &version.version;
    if settings.offline {
        return Err(ApiError::not_found(format!(
            "the tarball of {package}@{v} is not cached, and {} is offline",
            repo.name
        )));
    }
    if !node.is_leader() {
        return fill_via_leader(node, req.uri().path(), req.headers()).await;
    }
    let declared = |d: &str| Some(d.to_owned()).filter(|d| !d.is_empty());
    let shasum = declared(&version.tarball.shasum);
    let integrity = declared(&version.tarball.integrity);
    let key = format!("{}/{package}@{v}", repo.name);
    node.mirror
        .files
        .run(key, || async {
            // A fill that finished while this one waited to start.
            if let Ok(Some(now)) = node.index.npm_version(&repo.name, package, v) {
                if now.tarball.sha256.is_some() {
                    return Ok(());
                }
            }
            let extra = ExtraDigests {
                sha1: true,
                sha512: true,
                ..ExtraDigests::default()
            };
            let staged = download_checked(
                node,
                settings,
                &origin.url,
                node.config.max_upload_bytes,
                extra,
                |digests| {
                    let (Some(sha1), Some(sha512)) = (&digests.sha1, &digests.sha512) else {
                        return Some(("its digests".into(), "sha1 and sha512".into(), "none".into()));
                    };
                    (!tarball_matches_declared(shasum.as_deref(), integrity.as_deref(), sha1, sha512))
                        .then(|| {
                            (
                                format!("the integrity it declares for {package}@{v}"),
                                format!("{} {}", integrity.as_deref().unwrap_or("-"), shasum.as_deref().unwrap_or("-")),
                                format!("{} {}", sri_sha512(sha512), hex::encode(sha1)),
                            )
                        })
                },
            )
            .await?;
            let tarball = NpmTarball {
                sha256: staged.digests.sha256,
                size: staged.size,
                shasum: staged.digests.sha1.map(hex::encode).unwrap_or_default(),
                integrity: staged.digests.sha512.as_ref().map(sri_sha512).unwrap_or_default(),
            };
            let size = tarball.size;
            let change = Change::NpmMirrorTarballCached {
                repo: repo.name.clone(),
                package: package.to_owned(),
                version: v.clone(),
                tarball,
            };
            let committed = node.commit_with_blobs(ACTOR, vec![staged], change).await?;
            count(&node.mirror.counters.files_cached);
            tracing::info!(repo = %repo.name, %package, version = %v, size, serial = %committed.serial, "mirrored npm tarball cached");
            Ok(())
        })
        .await
}

/// Makes a path of a generic mirror local: fetched from the first
/// upstream that has it (`{upstream}/{path}`), once across the cluster,
/// and committed before it is served. A path that no upstream has is
/// remembered for the negative TTL. A generic upstream declares no digest:
/// the bytes are hashed as they arrive, like an upload's.
pub async fn ensure_generic_cached(
    node: &Node,
    repo: &RepoState,
    settings: &MirrorSettings,
    path: &GenericPath,
    req: &http::Request<hyper::body::Incoming>,
) -> Result<(), ApiError> {
    let not_found = || {
        ApiError::not_found(format!(
            "no file at {path} in {} or its upstreams",
            repo.name
        ))
    };
    if settings.offline || settings.upstreams.is_empty() {
        return Err(not_found());
    }
    let key = format!("{}/{path}", repo.name);
    let negative_ttl = Duration::from_secs(settings.negative_ttl_secs);
    if node
        .mirror
        .freshness
        .get(&key)
        .is_some_and(|state| state.not_found && state.is_fresh(negative_ttl, negative_ttl))
    {
        return Err(not_found());
    }
    if !node.is_leader() {
        return fill_via_leader(node, req.uri().path(), req.headers()).await;
    }
    node.mirror
        .files
        .run(key.clone(), || async {
            // A fill that finished while this one waited to start.
            if let Ok(Some(_)) = node.index.generic_file(&repo.name, path.as_str(), None) {
                return Ok(());
            }
            let mut last_error = None;
            for upstream in &settings.upstreams {
                let url = format!("{}/{path}", upstream.trim_end_matches('/'));
                let limit = node.config.max_upload_bytes;
                let staged = match download_checked(
                    node,
                    settings,
                    &url,
                    limit,
                    ExtraDigests::default(),
                    |_| None,
                )
                .await
                {
                    Ok(staged) => staged,
                    Err(e) if e.status == StatusCode::NOT_FOUND => continue,
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                };
                let size = staged.size;
                let change = Change::GenericFileStored {
                    repo: repo.name.clone(),
                    path: path.clone(),
                    sha256: staged.digests.sha256,
                    size,
                    upload_time_us: None,
                    upstream_url: Some(url.clone()),
                };
                let committed = node.commit_with_blobs(ACTOR, vec![staged], change).await?;
                count(&node.mirror.counters.files_cached);
                tracing::info!(repo = %repo.name, %path, size, serial = %committed.serial, "mirrored generic file cached");
                return Ok(());
            }
            match last_error {
                Some(e) => Err(e),
                None => {
                    node.mirror.freshness.not_found(&key);
                    Err(not_found())
                }
            }
        })
        .await
}

fn sri_sha512(digest: &[u8; 64]) -> String {
    use base64::Engine as _;
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Fetches `url` into a staged blob of at most `limit` bytes, and checks it
/// with `mismatch` (which says what was expected, and what came, when the
/// bytes are wrong). Wrong bytes are a 502 that leaves nothing behind: the
/// staged file is dropped, and nothing is committed.
async fn download_checked(
    node: &Node,
    settings: &MirrorSettings,
    url: &str,
    limit: u64,
    extra: ExtraDigests,
    mismatch: impl FnOnce(&BlobDigests) -> Option<(String, String, String)>,
) -> Result<StagedBlob, ApiError> {
    let timeout = Duration::from_secs(settings.timeout_secs);
    let mut writer = node.blobs.writer(extra).await?;
    let started = Instant::now();
    let downloaded = node
        .mirror
        .client
        .download(url, timeout, limit, &mut writer)
        .await;
    node.metrics
        .record_upstream("file", downloaded.is_ok(), started.elapsed().as_secs_f64());
    if let Err(e) = downloaded {
        count(&node.mirror.counters.upstream_errors);
        tracing::warn!(%url, error = %e, "upstream file fetch failed");
        return Err(upstream_error(&e));
    }
    let staged = writer.finish().await?;
    if let Some((what, expected, got)) = mismatch(&staged.digests) {
        count(&node.mirror.counters.digest_mismatches);
        let e = UpstreamError::Digest {
            url: url.to_owned(),
            expected,
            got,
        };
        tracing::error!(%url, error = %e, "upstream bytes do not match the listed digest; nothing stored");
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the upstream's bytes do not match {what}"),
        ));
    }
    Ok(staged)
}

fn upstream_error(e: &UpstreamError) -> ApiError {
    let status = match e {
        UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        UpstreamError::Status { status: 404, .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, format!("fetching from the upstream failed: {e}"))
}

/// Asks the leader to fill `path` (a page or a file of this node's
/// repository), then waits until this node has applied the fill.
async fn fill_via_leader(node: &Node, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let unavailable = |why: String| ApiError {
        retry_after: Some(1),
        ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why)
    };
    // A fill request is answered by the leader only: never passed on.
    if is_fill_request(headers) {
        return Err(unavailable(
            "this node is not the leader, so it cannot fill its cache".into(),
        ));
    }
    let Some(leader) = node
        .primary_url()
        .filter(|u| *u != node.config.public_url())
    else {
        return Err(unavailable(
            "no leader is known to fill the cache; retry shortly".into(),
        ));
    };
    let url = format!("{leader}{path}");
    let wait = node.config.min_serial_wait();
    let (status, answer, body) = node
        .mirror
        .client
        .get_small(&url, &[(FILL_HEADER, "1")], wait + Duration::from_secs(60))
        .await
        .map_err(|e| unavailable(format!("asking the leader to fill: {e}")))?;
    if status != 204 {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return Err(ApiError::new(status, body.trim().to_owned()));
    }
    let serial = answer
        .get("x-hoard-serial")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Serial)
        .ok_or_else(|| unavailable("the leader's answer carries no serial".into()))?;
    if node.wait_for_serial(serial, wait).await {
        Ok(())
    } else {
        Err(unavailable(format!(
            "the leader filled the cache at serial {serial}, and this node has not applied it yet"
        )))
    }
}
