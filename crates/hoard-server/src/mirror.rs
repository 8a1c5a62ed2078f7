//! Mirror repositories: keeping a project's listing fresh from the
//! upstreams, and fetching a file's bytes on its first download.
//!
//! Fills are writes like any other. The leader fetches, verifies and
//! commits through the writer (so every voter and replica gets the event,
//! and the blob before it). Any other node asks the leader to fill
//! (`X-Hoard-Fill`), waits (bounded) for the event, and then serves from
//! its own index and disk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hoard_core::{Change, MirrorPart, MirrorSettings, Serial};
use hoard_mirror::{
    download_limit, plan_pypi_refresh, Freshness, KnownFile, PageResponse, SingleFlight,
    UpstreamClient, UpstreamError,
};
use hoard_pypi::{parse_upstream_project, UpstreamFormat, UPSTREAM_ACCEPT};
use hoard_store::{ExtraDigests, FileState, RepoState};
use http::{HeaderMap, StatusCode};

use crate::error::ApiError;
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

fn page_key(repo: &RepoState, project: &str) -> String {
    format!("{}/{project}", repo.name)
}

/// Makes the listing of `project` fresh enough to serve: within the TTL
/// it is served as it is; after it, the upstreams are asked (the leader
/// asks them, any other node asks the leader).
pub async fn refresh_pypi_project(
    node: &Node,
    repo: &RepoState,
    settings: &MirrorSettings,
    project: &str,
    headers: &HeaderMap,
) -> PageFill {
    let known = matches!(node.index.project(&repo.name, project, None), Ok(Some(_)));
    if settings.offline || settings.upstreams.is_empty() {
        return if known {
            PageFill::Fresh
        } else {
            PageFill::NotFound
        };
    }
    let key = page_key(repo, project);
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
    let path = format!("/{}/simple/{project}/", repo.name);
    if !node.is_leader() {
        return match fill_via_leader(node, &path, headers).await {
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
        .run(key.clone(), || {
            fetch_pypi_project(node, repo, settings, project, &key)
        })
        .await;
    if matches!(fill, PageFill::Stale(_)) {
        count(&node.mirror.counters.stale_pages);
    }
    fill
}

/// The leader's fill of one project page, from the first upstream that
/// has it.
async fn fetch_pypi_project(
    node: &Node,
    repo: &RepoState,
    settings: &MirrorSettings,
    project: &str,
    key: &str,
) -> PageFill {
    let known = match node.index.files(&repo.name, project, None) {
        Ok(files) => files,
        Err(e) => return PageFill::Failed(format!("reading the index: {e}")),
    };
    let validators = node
        .mirror
        .freshness
        .get(key)
        .filter(|_| !known.is_empty())
        .map(|s| s.validators);
    let timeout = Duration::from_secs(settings.timeout_secs);
    let mut failures = Vec::new();
    for upstream in &settings.upstreams {
        let url = format!("{upstream}{project}/");
        let response = node
            .mirror
            .client
            .page(&url, UPSTREAM_ACCEPT, validators.as_ref(), timeout)
            .await;
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
        let format = page
            .content_type
            .as_deref()
            .and_then(UpstreamFormat::from_content_type)
            .unwrap_or(UpstreamFormat::Html);
        let parsed = match parse_upstream_project(format, &page.url, &page.body) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::warn!(url = %page.url, error = %e, "upstream page refused");
                failures.push(format!("{}: {e}", page.url));
                continue;
            }
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
        let refresh = plan_pypi_refresh(project, &parsed, &known_files);
        for refused in &refresh.refused {
            tracing::warn!(
                url = %page.url,
                entry = %refused.entry,
                reason = %refused.reason,
                "upstream file entry refused"
            );
        }
        if let Err(e) = record_refresh(node, repo, project, refresh).await {
            return if known.is_empty() {
                PageFill::Failed(e.message)
            } else {
                PageFill::Stale(e.message)
            };
        }
        node.mirror.freshness.checked(key, page.validators);
        return PageFill::Fresh;
    }
    if failures.is_empty() {
        node.mirror.freshness.not_found(key);
        return if known.is_empty() {
            PageFill::NotFound
        } else {
            // Every upstream dropped the project: what was listed stays.
            PageFill::Fresh
        };
    }
    let why = failures.join("; ");
    if known.is_empty() {
        PageFill::Failed(why)
    } else {
        PageFill::Stale(why)
    }
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
            let timeout = Duration::from_secs(settings.timeout_secs);
            let mut writer = node.blobs.writer(ExtraDigests::default()).await?;
            if let Err(e) = node
                .mirror
                .client
                .download(&url, timeout, limit, &mut writer)
                .await
            {
                count(&node.mirror.counters.upstream_errors);
                tracing::warn!(%url, error = %e, "upstream file fetch failed");
                return Err(upstream_error(&e));
            }
            let staged = writer.finish().await?;
            if staged.digests.sha256 != expected {
                count(&node.mirror.counters.digest_mismatches);
                let e = UpstreamError::Digest {
                    url: url.clone(),
                    expected: expected.to_hex(),
                    got: staged.digests.sha256.to_hex(),
                };
                tracing::error!(%url, error = %e, "upstream bytes do not match the listed digest; nothing stored");
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("the upstream's bytes of {filename} do not match the sha256 it lists"),
                ));
            }
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
