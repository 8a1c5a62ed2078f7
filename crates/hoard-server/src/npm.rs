//! The npm handler: the registry API rooted at `/{repo}/` (packuments,
//! tarballs, publish, dist-tags, deprecate, search, login, whoami), and
//! the same repository at a serial (`/{repo}/+at/{serial}/`). Errors are
//! npm's `{"error": …}` JSON, which the npm client prints.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::node::TokenScope;
use hoard_core::{Change, NpmTarball, Perm, RepoKind, RepoName, Serial, VirtualSettings};
use hoard_npm::{
    dist_tags_after_publish, login_ok_body, matches_search, parse_dist_tag_put, parse_login,
    parse_npm_path, parse_revision_put, parse_search_query, parse_split_publish,
    render_abbreviated_packument, render_full_packument, render_search, search_score, user_doc,
    validate_tag, whoami_body, NpmError, NpmPath, PackageName, PackageView, PublishRequest,
    PublishSplitter, PutDocument, RevisionUpdate, SearchHit, SplitPublish, StoredVersion,
    ABBREVIATED_MEDIA_TYPE,
};
use hoard_store::{
    BlobWriter, ExtraDigests, NpmPackageState, NpmVersionState, RepoState, StagedBlob,
};
use http::{header, HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use time::OffsetDateTime;

use crate::body::{discard_refused, pump, read_small};
use crate::download::serve_blob;
use crate::error::ApiError;
use crate::http::{with_body, HandlerResult};
use crate::mirror::{self, PageFill};
use crate::node::{Node, Principal};
use crate::virtual_repo::{upload_target, virtual_sources};

pub async fn handle(
    node: &Arc<Node>,
    req: Request<Incoming>,
    repo: &RepoState,
    below: &str,
) -> HandlerResult {
    route(node, req, repo, below).await.map_err(ApiError::npm)
}

fn npm_error(e: NpmError) -> ApiError {
    let status = match e {
        NpmError::UnknownPath(_) => StatusCode::NOT_FOUND,
        NpmError::DocumentTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.to_string())
}

fn json_ok(status: StatusCode, body: String) -> HandlerResult {
    Ok(with_body(status, "application/json", body))
}

/// The request target, split into a point in time and the registry path.
struct Target<'a> {
    at: Option<Serial>,
    path: &'a str,
    /// The URL of the registry root as this request sees it, for tarballs.
    base: String,
}

fn target<'a>(node: &Node, repo: &RepoName, below: &'a str) -> Result<Target<'a>, ApiError> {
    let public = node.config.public_url();
    if let Some(rest) = below.strip_prefix("+at/") {
        let (serial, path) = rest.split_once('/').unwrap_or((rest, ""));
        let serial = serial.parse::<u64>().map(Serial).map_err(|_| {
            ApiError::bad_request(format!("+at needs a serial number, not {serial:?}"))
        })?;
        if serial > node.applied_serial() {
            return Err(ApiError::not_found(format!(
                "serial {serial} is beyond this node's applied serial {}",
                node.applied_serial()
            )));
        }
        return Ok(Target {
            at: Some(serial),
            path,
            base: format!("{public}/{repo}/+at/{serial}"),
        });
    }
    Ok(Target {
        at: None,
        path: below,
        base: format!("{public}/{repo}"),
    })
}

async fn route(
    node: &Arc<Node>,
    req: Request<Incoming>,
    repo: &RepoState,
    below: &str,
) -> HandlerResult {
    let target = target(node, &repo.name, below)?;
    let path = parse_npm_path(target.path).map_err(npm_error)?;
    let method = req.method().clone();
    let read = method == Method::GET || method == Method::HEAD;
    if !read && target.at.is_some() {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "a point-in-time view is read-only",
        ));
    }
    if read && !repo.settings.anonymous_read && !matches!(path, NpmPath::Whoami | NpmPath::Ping) {
        node.require(req.headers(), &repo.name, Perm::Read)?;
    }
    match (method, path) {
        (Method::GET | Method::HEAD, NpmPath::Root) => json_ok(
            StatusCode::OK,
            serde_json::json!({ "db_name": repo.name.as_str(), "update_seq": node.applied_serial().0 })
                .to_string(),
        ),
        (Method::GET | Method::HEAD, NpmPath::Ping) => json_ok(StatusCode::OK, "{}".into()),
        (Method::GET, NpmPath::Whoami) => match node.authenticate(req.headers())? {
            Some(principal) => json_ok(
                StatusCode::OK,
                whoami_body(&principal.acting_user().unwrap_or_else(|| principal.actor())),
            ),
            None => Err(ApiError::unauthorized("not logged in: run npm login, or set an _authToken")),
        },
        (Method::GET, NpmPath::Search) => search(node, &req, repo, &target),
        (Method::POST, NpmPath::WebLogin) => Ok(with_body(
            StatusCode::from_u16(hoard_npm::WEB_LOGIN_FALLBACK_STATUS).unwrap_or(StatusCode::NOT_FOUND),
            "application/json",
            hoard_npm::web_login_not_supported_body(),
        )),
        (Method::PUT, NpmPath::CouchUser { user }) => login(node, req, repo, &user).await,
        (Method::GET, NpmPath::CouchUser { user }) => match node.index.user(&user)? {
            // What `npm owner add` asks about the user it adds.
            Some(account) => json_ok(
                StatusCode::OK,
                user_doc(&account.record.name, account.record.email.as_deref()),
            ),
            None => Err(ApiError::not_found(format!("user {user:?} does not exist here"))),
        },
        (_, NpmPath::Audit) => Ok(with_body(
            StatusCode::from_u16(hoard_npm::AUDIT_NOT_SUPPORTED_STATUS).unwrap_or(StatusCode::NOT_FOUND),
            "application/json",
            hoard_npm::audit_not_supported_body(),
        )),
        (Method::GET | Method::HEAD, NpmPath::DistTags { name }) => {
            let (view, _) = fresh_view(node, &req, repo, &name, &target).await?;
            json_ok(
                StatusCode::OK,
                serde_json::to_string(&view.dist_tags).unwrap_or_default(),
            )
        }
        (Method::GET | Method::HEAD, NpmPath::Package { name }) => {
            packument(node, &req, repo, &name, &target).await
        }
        (Method::GET | Method::HEAD, NpmPath::PackageVersion { name, spec }) => {
            version_manifest(node, &req, repo, &name, &spec, &target).await
        }
        (Method::GET | Method::HEAD, NpmPath::Tarball { name, version, .. }) => match &repo.settings.kind {
            RepoKind::Virtual(v) => virtual_tarball(node, &req, repo, v, &name, &version, &target).await,
            _ => tarball(node, &req, repo, &name, &version, &target).await,
        },
        (method, path) if !read => {
            // Writes to a virtual repository go to its `upload_to` member; a
            // token for the virtual repository may write there.
            let into = match &repo.settings.kind {
                RepoKind::Hosted => repo.clone(),
                RepoKind::Virtual(v) => upload_target(node, repo, v)?,
                RepoKind::Mirror(_) => {
                    return Err(ApiError::forbidden(format!(
                        "{} is a mirror of its upstreams and accepts no publishes or changes; \
                         publish to a hosted repository",
                        repo.name
                    ))
                    .closing())
                }
            };
            write(node, req, &repo.name, &into, method, path).await
        }
        (method, _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported here"),
        )),
    }
}

/// The registry's writes. `auth` is the repository the client named (the
/// token must be for it); `repo` is the hosted repository written to.
async fn write(
    node: &Arc<Node>,
    req: Request<Incoming>,
    auth: &RepoName,
    repo: &RepoState,
    method: Method,
    path: NpmPath,
) -> HandlerResult {
    match (method, path) {
        (Method::PUT, NpmPath::DistTag { name, tag }) => {
            set_dist_tag(node, req, auth, repo, &name, &tag).await
        }
        (Method::DELETE, NpmPath::DistTag { name, tag }) => {
            remove_dist_tag(node, &req, auth, repo, &name, &tag).await
        }
        (Method::PUT, NpmPath::Package { name }) => put_package(node, req, auth, repo, &name).await,
        (Method::PUT, NpmPath::PackageRevision { name, .. }) => {
            revision_put(node, req, auth, repo, &name).await
        }
        (Method::DELETE, NpmPath::PackageRevision { name, .. }) => {
            unpublish_all(node, &req, auth, repo, &name).await
        }
        (Method::DELETE, NpmPath::TarballRevision { name, version, .. }) => {
            // npm deletes the tarball after unpublishing its version: the
            // blob stays (earlier point-in-time views still serve it).
            node.require(req.headers(), auth, Perm::Admin)?;
            match node.index.npm_version(&repo.name, &name.full(), &version)? {
                Some(v) if v.unpublished.is_some() => json_ok(StatusCode::OK, hoard_npm::ok_body()),
                Some(_) => Err(unpublish_refused(repo)),
                None => Err(ApiError::not_found(format!(
                    "{}@{version} does not exist",
                    name.full()
                ))),
            }
        }
        (method, _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported here"),
        )),
    }
}

/// The repositories whose state a read of `name` is computed from, made
/// fresh first where they are mirrors; and why, if some upstream could not
/// be asked (the answer is then marked stale).
async fn fresh_sources(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    name: &PackageName,
    target: &Target<'_>,
) -> Result<(Vec<RepoState>, Option<String>), ApiError> {
    let full = name.full();
    let view = Some(target.at.unwrap_or_else(|| node.applied_serial()));
    let sources = match &repo.settings.kind {
        RepoKind::Virtual(v) => virtual_sources(node, v, |m| {
            Ok(node.index.npm_package(&m.name, &full, view)?.is_some())
        })?,
        _ => vec![repo.clone()],
    };
    if target.at.is_some() {
        return Ok((sources, None));
    }
    let mut failures = Vec::new();
    for member in &sources {
        let Some(settings) = mirror::settings(member) else {
            continue;
        };
        match mirror::refresh_npm_package(node, member, settings, name, req.headers()).await {
            PageFill::Fresh => {}
            PageFill::NotFound if member.name == repo.name => {
                return Err(ApiError::not_found(format!(
                    "package {full} not found in {} or its upstreams",
                    repo.name
                )))
            }
            PageFill::NotFound => {}
            PageFill::Failed(why) if member.name == repo.name => {
                return Err(mirror::not_cached(repo, &full, &why))
            }
            PageFill::Stale(why) | PageFill::Failed(why) => {
                failures.push(format!("{}: {why}", member.name))
            }
        }
    }
    Ok((sources, (!failures.is_empty()).then(|| failures.join("; "))))
}

/// A package as its sources hold it now (fetching what a mirror lacks).
async fn fresh_view(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    name: &PackageName,
    target: &Target<'_>,
) -> Result<(PackageView, Option<String>), ApiError> {
    let (sources, stale) = fresh_sources(node, req, repo, name, target).await?;
    let view = package_view(node, repo, &sources, name, target);
    Ok((upstream_failed(view, repo, name, &stale)?, stale))
}

/// A package that no source has while an upstream could not be asked is
/// an upstream failure, not a 404.
fn upstream_failed<T>(
    result: Result<T, ApiError>,
    repo: &RepoState,
    name: &PackageName,
    stale: &Option<String>,
) -> Result<T, ApiError> {
    match (result, stale) {
        (Err(e), Some(why)) if e.status == StatusCode::NOT_FOUND => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "{} is in no member of {}, and an upstream failed: {why}",
                name.full(),
                repo.name
            ),
        )),
        (result, _) => result,
    }
}

fn time_of(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A package as it was at `target.at` in `sources` (in order of
/// priority: the first to have a version serves it, and sets a tag first),
/// ready to render under `repo`'s URL; 404 if absent.
fn package_view(
    node: &Node,
    repo: &RepoState,
    sources: &[RepoState],
    name: &PackageName,
    target: &Target<'_>,
) -> Result<PackageView, ApiError> {
    let full = name.full();
    let not_found = || ApiError::not_found(format!("package {full} not found in {}", repo.name));
    // One view per request: the serial this node has made durable, unless
    // the request pins an earlier one. Applied-but-unflushed events stay
    // out of it.
    let view = target.at.unwrap_or_else(|| node.applied_serial());
    let at = Some(view);
    let mut created: Option<i64> = None;
    let mut modified = i64::MIN;
    let mut versions: Vec<StoredVersion> = Vec::new();
    let mut dist_tags = BTreeMap::new();
    let mut newest: Option<NpmVersionState> = None;
    let mut maintainers = Vec::new();
    // The serial of the package's last change: its revision, the same at
    // every view that shows the same document.
    let mut changed = Serial::ZERO;
    for source in sources {
        let Some(pkg) = node.index.npm_package(&source.name, &full, at)? else {
            continue;
        };
        let all = node.index.npm_versions(&source.name, &full, at)?;
        changed = pkg
            .tags
            .values()
            .flatten()
            .map(|t| t.serial)
            .chain(all.iter().flat_map(|v| {
                let deprecations = v.deprecations.iter().map(|d| d.serial);
                [Some(v.published), v.unpublished]
                    .into_iter()
                    .flatten()
                    .chain(deprecations)
            }))
            .filter(|s| *s <= view)
            .fold(changed.max(pkg.created), Serial::max);
        let live: Vec<NpmVersionState> = all
            .into_iter()
            .filter(|v| v.live_at(at))
            .filter(|v| versions.iter().all(|s| s.version != v.version))
            .collect();
        if live.is_empty() {
            continue;
        }
        if maintainers.is_empty() {
            for owner in node.index.owners(&source.name, &full)? {
                let email = node.index.user(&owner)?.and_then(|u| u.record.email);
                maintainers.push((owner, email.unwrap_or_default()));
            }
        }
        created = Some(created.map_or(pkg.created_us, |c| c.min(pkg.created_us)));
        modified = live
            .iter()
            .map(|v| v.last_change_us(at))
            .chain(pkg.last_tag_change_us(at))
            .fold(modified.max(pkg.created_us), i64::max);
        // Tags that point at an unpublished version say nothing.
        for (tag, version) in pkg.tags_at(at) {
            if live.iter().any(|v| v.version == version) {
                dist_tags.entry(tag).or_insert(version);
            }
        }
        if newest.is_none() {
            newest = live.iter().max_by_key(|v| v.published).cloned();
        }
        versions.extend(live.iter().map(|v| StoredVersion {
            version: v.version.clone(),
            manifest: serde_json::from_str(&v.manifest).unwrap_or(serde_json::Value::Null),
            tarball_url: format!("{}/{}", target.base, name.tarball_path(&v.version)),
            shasum: v.tarball.shasum.clone(),
            integrity: v.tarball.integrity.clone(),
            published: time_of(v.time_us),
            deprecated: v.deprecated_at(at).map(str::to_owned),
        }));
    }
    // Every version was unpublished, or none was ever here.
    let created = created.ok_or_else(not_found)?;
    Ok(PackageView {
        name: name.clone(),
        versions,
        dist_tags,
        created: time_of(created),
        modified: time_of(modified),
        readme: newest.as_ref().and_then(|v| v.readme.clone()),
        description: newest.and_then(|v| v.description),
        rev: format!("{}-hoard", changed.0),
        maintainers,
    })
}

async fn packument(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    name: &PackageName,
    target: &Target<'_>,
) -> HandlerResult {
    let (sources, stale) = fresh_sources(node, req, repo, name, target).await?;
    if mirror::is_fill_request(req.headers()) && mirror::settings(repo).is_some() {
        // The leader has filled this mirror for another node.
        return match stale {
            None => Ok(mirror::filled()),
            Some(why) => Err(ApiError::new(StatusCode::BAD_GATEWAY, why)),
        };
    }
    let abbreviated = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains(ABBREVIATED_MEDIA_TYPE));
    let content_type = if abbreviated {
        ABBREVIATED_MEDIA_TYPE
    } else {
        "application/json"
    };
    // A packument is a function of the index at a serial: render it once,
    // and keep it for as long as the package stays as it is.
    let serial = target.at.unwrap_or_else(|| node.applied_serial());
    let repos: Vec<RepoName> = match &repo.settings.kind {
        RepoKind::Virtual(settings) => settings.members.clone(),
        _ => vec![repo.name.clone()],
    };
    let stamp = node.index.page_stamp(&repos, Some(&name.full()), serial);
    let key = format!(
        "npm\0{}\0{}\0{abbreviated}\0{stamp}",
        repo.name,
        name.full()
    );
    let page = node
        .page_cache
        .get_or_render(key, || -> Result<String, ApiError> {
            let view = package_view(node, repo, &sources, name, target)?;
            Ok(if abbreviated {
                render_abbreviated_packument(&view)
            } else {
                render_full_packument(&view)
            })
        });
    let page = upstream_failed(page, repo, name, &stale)?;
    let mut response = page.respond(req.headers(), content_type);
    let h = response.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if target.at.is_some() {
            "public, max-age=31536000, immutable"
        } else {
            "max-age=0, must-revalidate"
        }),
    );
    if let Some(why) = stale {
        mirror::mark_stale(&mut response, &why);
    }
    Ok(response)
}

async fn version_manifest(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    name: &PackageName,
    spec: &str,
    target: &Target<'_>,
) -> HandlerResult {
    let (view, _) = fresh_view(node, req, repo, name, target).await?;
    let version = view
        .dist_tags
        .get(spec)
        .cloned()
        .unwrap_or_else(|| spec.to_owned());
    let doc: serde_json::Value =
        serde_json::from_str(&render_full_packument(&view)).unwrap_or_default();
    match doc.get("versions").and_then(|v| v.get(&version)) {
        Some(manifest) => json_ok(StatusCode::OK, manifest.to_string()),
        None => Err(ApiError::not_found(format!(
            "version {spec} of {} not found",
            name.full()
        ))),
    }
}

/// A tarball of a hosted or mirror repository. A mirror that does not
/// list the version yet asks its upstreams first (`npm ci` asks for the
/// tarballs of a lockfile without their packuments), and fetches the bytes
/// on their first download.
async fn tarball(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    name: &PackageName,
    version: &str,
    target: &Target<'_>,
) -> HandlerResult {
    let full = name.full();
    let not_found =
        || ApiError::not_found(format!("no tarball for {full}@{version} in {}", repo.name));
    let find = || -> Result<Option<NpmVersionState>, ApiError> {
        Ok(node
            .index
            .npm_version(&repo.name, &full, version)?
            .filter(|v| v.live_at(target.at)))
    };
    let mut state = find()?;
    let mirror = mirror::settings(repo).filter(|_| target.at.is_none());
    if let (Some(settings), None) = (mirror, &state) {
        match mirror::refresh_npm_package(node, repo, settings, name, req.headers()).await {
            PageFill::Fresh | PageFill::NotFound | PageFill::Stale(_) => {}
            PageFill::Failed(why) => return Err(mirror::not_cached(repo, &full, &why)),
        }
        state = find()?;
    }
    let mut state = state.ok_or_else(not_found)?;
    let was_stored = state.tarball.sha256.is_some();
    if let (Some(settings), false) = (mirror, was_stored) {
        mirror::ensure_npm_tarball(node, repo, settings, &full, &state, req).await?;
        state = find()?.ok_or_else(not_found)?;
    }
    if mirror::is_fill_request(req.headers()) {
        return Ok(mirror::filled());
    }
    let sha256 = state.tarball.sha256.ok_or_else(|| {
        ApiError::not_found(format!(
            "the tarball of {full}@{version} is not cached in {}",
            repo.name
        ))
    })?;
    let response = serve_blob(
        node,
        req.method(),
        req.headers(),
        &sha256,
        state.tarball.size,
        "application/octet-stream",
    )
    .await;
    mirror::with_cache_state(response, was_stored)
}

/// A tarball of a virtual repository, from the first member that has the
/// version (its mirrors asked first if none lists it yet).
async fn virtual_tarball(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    settings: &VirtualSettings,
    name: &PackageName,
    version: &str,
    target: &Target<'_>,
) -> HandlerResult {
    let full = name.full();
    let view = Some(target.at.unwrap_or_else(|| node.applied_serial()));
    let sources = virtual_sources(node, settings, |m| {
        Ok(node.index.npm_package(&m.name, &full, view)?.is_some())
    })?;
    let listed = |member: &RepoState| -> Result<bool, ApiError> {
        Ok(node
            .index
            .npm_version(&member.name, &full, version)?
            .is_some_and(|v| v.live_at(view)))
    };
    for member in &sources {
        if listed(member)? {
            return tarball(node, req, member, name, version, target).await;
        }
    }
    if target.at.is_none() {
        for member in sources.iter().filter(|m| mirror::settings(m).is_some()) {
            let answer = tarball(node, req, member, name, version, target).await;
            if !matches!(&answer, Err(e) if e.status == StatusCode::NOT_FOUND) {
                return answer;
            }
        }
    }
    Err(ApiError::not_found(format!(
        "no tarball for {full}@{version} in {}",
        repo.name
    )))
}

/// The bound on the small JSON bodies of logins, dist-tags and the like.
const MAX_SMALL_BODY: u64 = 1 << 20;

/// The most of a `PUT` document that is held in memory: all of a
/// revision update, and all of a publish but its tarball, which streams
/// to a temp blob. The largest such document is a packument that
/// `npm deprecate` or `npm unpublish` sends back.
const MAX_DOCUMENT_BYTES: u64 = 32 << 20;

fn document_limit(node: &Node) -> u64 {
    node.config.max_npm_publish_bytes.min(MAX_DOCUMENT_BYTES)
}

/// Reads a revision document, within [`document_limit`].
async fn read_document(node: &Node, req: Request<Incoming>) -> Result<Vec<u8>, ApiError> {
    read_body(node, req, document_limit(node)).await
}

async fn read_body(node: &Node, req: Request<Incoming>, limit: u64) -> Result<Vec<u8>, ApiError> {
    let req = refuse_declared_over(node, req, limit)?;
    Ok(read_small(req.into_body(), limit, node.config.body_timeout()).await?)
}

/// Refuses a body whose declared length is over `limit`, before reading
/// it.
fn refuse_declared_over(
    node: &Node,
    req: Request<Incoming>,
    limit: u64,
) -> Result<Request<Incoming>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        // npm sends the whole document before it reads an answer: read and
        // drop it, so that npm prints the 413 rather than EPIPE.
        discard_refused(req, node.config.body_timeout());
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the document is larger than the limit of {limit} bytes"),
        )
        .closing());
    }
    Ok(req)
}

/// Reads a `PUT /{name}` body within `max_npm_publish_bytes`: the
/// document is kept (within [`document_limit`]), and the tarball in it is
/// decoded and hashed as it arrives, into a staged blob. So a publish
/// holds its metadata in memory, never its tarball.
async fn read_publish(
    node: &Node,
    req: Request<Incoming>,
) -> Result<(SplitPublish, Option<StagedBlob>), ApiError> {
    use futures_util::StreamExt;
    let limit = node.config.max_npm_publish_bytes;
    let req = refuse_declared_over(node, req, limit)?;
    // The pump reads on (bounded) after a refusal, so that npm, which
    // sends everything before it reads, gets the answer.
    let (stream, body_done) = pump(req.into_body(), limit, node.config.body_timeout());
    futures_util::pin_mut!(stream);
    let kept = usize::try_from(document_limit(node)).unwrap_or(usize::MAX);
    let mut splitter = PublishSplitter::new(kept);
    let mut decoded = Vec::new();
    let mut writer: Option<BlobWriter> = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        decoded.clear();
        splitter
            .feed(&chunk, &mut decoded)
            .map_err(|e| npm_error(e).closing())?;
        if !decoded.is_empty() {
            let writer = match &mut writer {
                Some(w) => w,
                None => writer.insert(node.blobs.writer(ExtraDigests::default()).await?),
            };
            writer.write(&decoded).await?;
        }
    }
    body_done.finished().await?;
    let staged = match writer {
        Some(w) => Some(w.finish().await?),
        None => None,
    };
    Ok((splitter.finish(), staged))
}

/// `PUT /{name}`: `npm publish` (a new version with its tarball) or
/// `npm deprecate` (the packument with changed `deprecated` fields).
async fn put_package(
    node: &Node,
    req: Request<Incoming>,
    auth: &RepoName,
    repo: &RepoState,
    name: &PackageName,
) -> HandlerResult {
    let principal = match node.require(req.headers(), auth, Perm::Upload) {
        Ok(p) => p,
        Err(e) => {
            discard_refused(req, node.config.body_timeout());
            return Err(e.closing());
        }
    };
    let (split, staged) = read_publish(node, req).await?;
    match parse_split_publish(&split, name).map_err(npm_error)? {
        PutDocument::Publish(publish) => {
            publish_version(node, &principal, repo, *publish, staged).await
        }
        PutDocument::Deprecate(deprecate) => {
            let _turn = node
                .upload_locks
                .lock(format!("{}/{}", repo.name, name.full()))
                .await;
            let full = name.full();
            node.may_write(&principal, &repo.name, &full)?;
            let stored = node.index.npm_versions(&repo.name, &full, None)?;
            let mut changes = Vec::new();
            for version in &deprecate.versions {
                if !stored
                    .iter()
                    .any(|v| &v.version == version && v.unpublished.is_none())
                {
                    return Err(ApiError::bad_request(format!(
                        "{full}@{version} is not published here; publish it with its tarball"
                    )));
                }
            }
            for (version, message) in deprecate.changes {
                let wanted = Some(message).filter(|m| !m.is_empty());
                let current = stored
                    .iter()
                    .find(|v| v.version == version)
                    .and_then(|v| v.deprecated_at(None).map(str::to_owned));
                if current != wanted {
                    changes.push((version, wanted));
                }
            }
            if !changes.is_empty() {
                node.commit_as(
                    &principal,
                    Change::NpmDeprecated {
                        repo: repo.name.clone(),
                        package: full,
                        changes,
                    },
                )
                .await?;
            }
            json_ok(StatusCode::OK, hoard_npm::ok_body())
        }
    }
}

/// Publishes a checked version; its tarball is `streamed`, or in the
/// document.
async fn publish_version(
    node: &Node,
    principal: &Principal,
    repo: &RepoState,
    mut publish: PublishRequest,
    streamed: Option<StagedBlob>,
) -> HandlerResult {
    let full = publish.name.full();
    node.may_write(principal, &repo.name, &full)?;
    let _turn = node
        .upload_locks
        .lock(format!("{}/{full}", repo.name))
        .await;
    if node
        .index
        .npm_version(&repo.name, &full, &publish.version)?
        .is_some()
    {
        return Err(ApiError::forbidden(format!(
            "You cannot publish over the previously published versions: {}.",
            publish.version
        )));
    }
    let existing = node
        .index
        .npm_package(&repo.name, &full, None)?
        .map(|p| p.tags_at(None))
        .unwrap_or_default();
    let tags = dist_tags_after_publish(&existing, &publish);
    let changed_tags: Vec<String> = tags
        .iter()
        .filter(|(tag, version)| existing.get(*tag) != Some(*version))
        .map(|(tag, _)| tag.clone())
        .collect();

    let staged = match (publish.tarball.take(), streamed) {
        (Some(bytes), _) => {
            let mut writer = node.blobs.writer(ExtraDigests::default()).await?;
            writer.write(&bytes).await?;
            writer.finish().await?
        }
        (None, Some(staged)) => staged,
        (None, None) => {
            return Err(ApiError::internal(
                "a publish whose tarball was neither streamed nor inline",
            ))
        }
    };
    let sha256 = staged.digests.sha256;
    if sha256.to_hex() != publish.digests.sha256 {
        // The splitter hashed what it decoded, the blob writer what it
        // wrote: they are the same bytes, or something is badly wrong.
        return Err(ApiError::internal(format!(
            "the stored tarball's sha256 {sha256} is not the decoded one's {}",
            publish.digests.sha256
        )));
    }
    let manifest = serde_json::to_string(&publish.manifest)
        .map_err(|e| ApiError::bad_request(format!("unserializable manifest: {e}")))?;
    let serial = node
        .commit_with_blobs_as(
            principal,
            vec![staged],
            Change::NpmPublished {
                repo: repo.name.clone(),
                package: full.clone(),
                version: publish.version.clone(),
                manifest,
                tarball: NpmTarball {
                    sha256,
                    size: publish.digests.size,
                    shasum: publish.digests.shasum.clone(),
                    integrity: publish.digests.integrity.clone(),
                },
                dist_tags: changed_tags,
                readme: publish.readme.clone(),
                description: publish.description.clone(),
            },
        )
        .await?
        .serial;
    tracing::info!(repo = %repo.name, package = %full, version = %publish.version, %serial, "npm version published");
    let mut response = with_body(
        StatusCode::OK,
        "application/json",
        serde_json::json!({ "ok": true, "id": full, "rev": format!("{serial}-hoard") }).to_string(),
    );
    response
        .headers_mut()
        .insert("x-hoard-upload-serial", HeaderValue::from(serial.0));
    Ok(response)
}

async fn set_dist_tag(
    node: &Node,
    req: Request<Incoming>,
    auth: &RepoName,
    repo: &RepoState,
    name: &PackageName,
    tag: &str,
) -> HandlerResult {
    let principal = node
        .require(req.headers(), auth, Perm::Upload)
        .map_err(ApiError::closing)?;
    let tag = validate_tag(tag).map_err(npm_error)?;
    let body = read_body(node, req, MAX_SMALL_BODY).await?;
    let version = parse_dist_tag_put(&body).map_err(npm_error)?;
    let full = name.full();
    node.may_write(&principal, &repo.name, &full)?;
    let live = node
        .index
        .npm_version(&repo.name, &full, &version)?
        .is_some_and(|v| v.unpublished.is_none());
    if !live {
        return Err(ApiError::not_found(format!(
            "{full}@{version} is not published"
        )));
    }
    node.commit_as(
        &principal,
        Change::NpmDistTagChanged {
            repo: repo.name.clone(),
            package: full,
            tag,
            version: Some(version),
        },
    )
    .await?;
    json_ok(StatusCode::OK, hoard_npm::ok_body())
}

async fn remove_dist_tag(
    node: &Node,
    req: &Request<Incoming>,
    auth: &RepoName,
    repo: &RepoState,
    name: &PackageName,
    tag: &str,
) -> HandlerResult {
    let principal = node.require(req.headers(), auth, Perm::Upload)?;
    if tag == "latest" {
        return Err(ApiError::bad_request(
            "the latest tag cannot be removed; point it at another version",
        ));
    }
    let full = name.full();
    node.may_write(&principal, &repo.name, &full)?;
    let tags = node
        .index
        .npm_package(&repo.name, &full, None)?
        .map(|p| p.tags_at(None))
        .ok_or_else(|| ApiError::not_found(format!("package {full} not found")))?;
    if !tags.contains_key(tag) {
        return Err(ApiError::not_found(format!(
            "{full} has no dist-tag {tag:?}"
        )));
    }
    node.commit_as(
        &principal,
        Change::NpmDistTagChanged {
            repo: repo.name.clone(),
            package: full,
            tag: tag.to_owned(),
            version: None,
        },
    )
    .await?;
    json_ok(StatusCode::OK, hoard_npm::ok_body())
}

fn unpublish_refused(repo: &RepoState) -> ApiError {
    ApiError::forbidden(format!(
        "unpublish is disabled in {}: published versions stay available so that builds keep working \
         (deprecate the version instead, or ask an admin to allow unpublish)",
        repo.name
    ))
}

/// Unpublish needs the repository setting and an admin token.
fn require_unpublish(
    node: &Node,
    req: &Request<Incoming>,
    auth: &RepoName,
    repo: &RepoState,
) -> Result<Principal, ApiError> {
    if !repo.settings.allow_unpublish {
        return Err(unpublish_refused(repo));
    }
    node.require(req.headers(), auth, Perm::Admin)
}

async fn unpublish(
    node: &Node,
    principal: &Principal,
    repo: &RepoState,
    full: &str,
    versions: Vec<String>,
    dist_tags: Vec<(String, Option<String>)>,
) -> Result<(), ApiError> {
    if versions.is_empty() {
        return Ok(());
    }
    node.commit_as(
        principal,
        Change::NpmUnpublished {
            repo: repo.name.clone(),
            package: full.to_owned(),
            versions,
            dist_tags,
        },
    )
    .await?;
    Ok(())
}

/// `PUT /{name}/-rev/{rev}`: `npm owner add|rm` sends the changed
/// `maintainers` alone; `npm unpublish pkg@version` sends the packument
/// without that version.
async fn revision_put(
    node: &Node,
    req: Request<Incoming>,
    auth: &RepoName,
    repo: &RepoState,
    name: &PackageName,
) -> HandlerResult {
    let principal = node
        .require(req.headers(), auth, Perm::Upload)
        .map_err(ApiError::closing)?;
    let body = read_document(node, req).await?;
    let update = parse_revision_put(&body, name).map_err(npm_error)?;
    match update.maintainers {
        Some(maintainers) if update.versions.is_none() => {
            set_owners(node, &principal, repo, name, maintainers).await
        }
        _ => {
            if !repo.settings.allow_unpublish {
                return Err(unpublish_refused(repo));
            }
            if !principal.allows(auth, Perm::Admin) {
                return Err(ApiError::forbidden(format!(
                    "unpublishing in {auth} needs an admin token"
                )));
            }
            unpublish_missing_versions(node, &principal, repo, name, update).await
        }
    }
}

/// `npm owner add|rm`: the package's owners become `maintainers`. An
/// owner or an admin may change them; each must be a user here.
async fn set_owners(
    node: &Node,
    principal: &Principal,
    repo: &RepoState,
    name: &PackageName,
    maintainers: Vec<String>,
) -> HandlerResult {
    let full = name.full();
    if node.index.npm_package(&repo.name, &full, None)?.is_none() {
        return Err(ApiError::not_found(format!("package {full} not found")));
    }
    node.may_write(principal, &repo.name, &full)?;
    let current = node.index.owners(&repo.name, &full)?;
    if current != maintainers {
        let serial = node
            .commit_as(
                principal,
                Change::OwnersChanged {
                    repo: repo.name.clone(),
                    project: full.clone(),
                    owners: maintainers.clone(),
                },
            )
            .await?;
        tracing::info!(repo = %repo.name, package = %full, owners = ?maintainers, %serial, "owners changed");
    }
    json_ok(StatusCode::OK, hoard_npm::ok_body())
}

/// `npm unpublish pkg@version` sends the packument without that version,
/// and with the dist-tags it wants afterwards (tags of the removed version
/// dropped, `latest` moved to the highest remaining). Both happen in one
/// event.
async fn unpublish_missing_versions(
    node: &Node,
    principal: &Principal,
    repo: &RepoState,
    name: &PackageName,
    update: RevisionUpdate,
) -> HandlerResult {
    let remaining = update.versions.unwrap_or_default();
    let full = name.full();
    let _turn = node
        .upload_locks
        .lock(format!("{}/{full}", repo.name))
        .await;
    let gone: Vec<String> = node
        .index
        .npm_versions(&repo.name, &full, None)?
        .into_iter()
        .filter(|v| v.unpublished.is_none() && !remaining.contains(&v.version))
        .map(|v| v.version)
        .collect();
    let current = node
        .index
        .npm_package(&repo.name, &full, None)?
        .map(|p| p.tags_at(None))
        .unwrap_or_default();
    let wanted: BTreeMap<String, String> = update.dist_tags.into_iter().collect();
    let mut tag_changes: Vec<(String, Option<String>)> = wanted
        .iter()
        .filter(|(tag, version)| current.get(*tag) != Some(*version))
        .map(|(tag, version)| (tag.clone(), Some(version.clone())))
        .collect();
    tag_changes.extend(
        current
            .keys()
            .filter(|tag| !wanted.contains_key(*tag))
            .map(|tag| (tag.clone(), None)),
    );
    unpublish(node, principal, repo, &full, gone, tag_changes).await?;
    json_ok(StatusCode::OK, hoard_npm::ok_body())
}

/// `DELETE /{name}/-rev/{rev}`: unpublish every version.
async fn unpublish_all(
    node: &Node,
    req: &Request<Incoming>,
    auth: &RepoName,
    repo: &RepoState,
    name: &PackageName,
) -> HandlerResult {
    let principal = require_unpublish(node, req, auth, repo)?;
    let full = name.full();
    let _turn = node
        .upload_locks
        .lock(format!("{}/{full}", repo.name))
        .await;
    let live: Vec<String> = node
        .index
        .npm_versions(&repo.name, &full, None)?
        .into_iter()
        .filter(|v| v.unpublished.is_none())
        .map(|v| v.version)
        .collect();
    // Every tag goes with the versions it pointed at.
    let tags: Vec<(String, Option<String>)> = node
        .index
        .npm_package(&repo.name, &full, None)?
        .map(|p| p.tags_at(None).into_keys().map(|tag| (tag, None)).collect())
        .unwrap_or_default();
    unpublish(node, &principal, repo, &full, live, tags).await?;
    json_ok(StatusCode::OK, hoard_npm::ok_body())
}

fn search(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    target: &Target<'_>,
) -> HandlerResult {
    let query = parse_search_query(req.uri().query().unwrap_or(""));
    // A virtual repository searches its members, the first to have a name
    // answering for it.
    let members = match &repo.settings.kind {
        RepoKind::Virtual(v) => virtual_sources(node, v, |_| Ok(false))?,
        _ => vec![repo.clone()],
    };
    let mut packages = Vec::new();
    for member in &members {
        for pkg in node.index.npm_packages(&member.name, target.at)? {
            if !packages
                .iter()
                .any(|(_, p): &(RepoName, NpmPackageState)| p.name == pkg.name)
            {
                packages.push((member.name.clone(), pkg));
            }
        }
    }
    let mut hits = Vec::new();
    for (member, pkg) in packages {
        let Ok(name) = PackageName::parse(&pkg.name) else {
            continue;
        };
        let tags = pkg.tags_at(target.at);
        let live: Vec<NpmVersionState> = node
            .index
            .npm_versions(&member, &pkg.name, target.at)?
            .into_iter()
            .filter(|v| v.live_at(target.at))
            .collect();
        let latest = tags
            .get("latest")
            .and_then(|l| live.iter().find(|v| &v.version == l))
            .or_else(|| live.iter().max_by_key(|v| v.published));
        let Some(latest) = latest else { continue };
        let manifest: serde_json::Value =
            serde_json::from_str(&latest.manifest).unwrap_or_default();
        let description = manifest
            .get("description")
            .and_then(|d| d.as_str())
            .map(str::to_owned)
            .or_else(|| latest.description.clone());
        let keywords: Vec<String> = manifest
            .get("keywords")
            .and_then(|k| k.as_array())
            .map(|k| {
                k.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !matches_search(&query.text, &name, description.as_deref(), &keywords) {
            continue;
        }
        let score = search_score(&query.text, &name, description.as_deref(), &keywords);
        let links = BTreeMap::from([(
            "npm".to_owned(),
            format!("{}/{}", target.base, name.url_path()),
        )]);
        hits.push(SearchHit {
            version: latest.version.clone(),
            date: time_of(latest.time_us),
            publisher: Some(latest.publisher.clone()),
            name,
            description,
            keywords,
            links,
            score,
        });
    }
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.name.full().cmp(&b.name.full()))
    });
    let total = hits.len() as u64;
    let page: Vec<SearchHit> = hits.into_iter().skip(query.from).take(query.size).collect();
    json_ok(
        StatusCode::OK,
        render_search(&page, total, OffsetDateTime::now_utc()).to_string(),
    )
}

/// `PUT /-/user/org.couchdb.user:{name}`: npm's legacy login. A configured
/// user with the right password gets an upload token for this repository.
async fn login(node: &Node, req: Request<Incoming>, repo: &RepoState, user: &str) -> HandlerResult {
    let body = read_body(node, req, MAX_SMALL_BODY).await?;
    let login = parse_login(&body, user).map_err(npm_error)?;
    if node.index.user(&login.name)?.is_none() {
        return Err(ApiError::forbidden(format!(
            "user {:?} does not exist here and self-registration is off; ask an admin for an account \
             (hoard user add), or for a token from `hoard token create`",
            login.name
        )));
    }
    let Some(account) = node.sign_in(&login.name, &login.password).await? else {
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    let (token, _) = node
        .create_token(
            "login",
            TokenScope {
                repo: Some(repo.name.clone()),
                perm: Perm::Upload,
                label: format!("npm login {}", account.name),
                user: Some(account.name.clone()),
                projects: None,
                expires_us: None,
            },
        )
        .await?;
    json_ok(StatusCode::CREATED, login_ok_body(&login.name, &token))
}
