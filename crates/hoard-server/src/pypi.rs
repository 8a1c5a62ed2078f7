//! The PyPI handler: the Simple API (PEP 503/691 with 592, 629, 658/714,
//! 700), file downloads, and twine's legacy upload API, for one
//! repository, optionally seen as it was at a serial (`+at/{serial}`).

use std::sync::Arc;

use bytes::Bytes;
use hoard_cluster::{Committed, WriteError};
use hoard_core::{
    Change, FileRecord, MirrorPart, Perm, RepoKind, RepoName, Serial, Sha256, VirtualSettings,
};
use hoard_pypi::{
    check_sdist_magic, extract_wheel_metadata, negotiate, normalize_project_name,
    parse_core_metadata, parse_dist_filename, render_project, sort_versions, validate_upload,
    ComputedDigests, DistFilename, DistKind, FileLink, ProjectPage, SimpleFormat, UploadForm,
    ZipLimits,
};
use hoard_store::{BlobStore, ExtraDigests, FileState, Rejection, RepoState, StagedBlob};
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::body::{discard_refused, pump, BodyCompletion, BodyError, BodyOutcome};
use crate::download::serve_blob;
use crate::error::ApiError;
use crate::http::{redirect, require_read_method, with_body, HandlerResult};
use crate::mirror::{self, PageFill};
use crate::node::{Node, Principal};
use crate::page_cache::CachedPage;
use crate::simple_index;
use crate::virtual_repo::{upload_target, virtual_sources};

/// The largest text field of an upload form we keep (long descriptions).
const MAX_TEXT_FIELD: usize = 4 << 20;

/// Characters left unescaped in file URLs: what filenames use.
const PATH_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'+')
    .remove(b'!');

pub async fn handle(
    node: &Arc<Node>,
    req: Request<Incoming>,
    repo: &RepoState,
    rest: &[String],
) -> HandlerResult {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let (at, rest) = match rest.as_slice() {
        ["+at", serial, rest @ ..] => (Some(parse_at(node, serial)?), rest),
        rest => (None, rest),
    };
    let prefix = match at {
        Some(serial) => format!("/{}/+at/{serial}", repo.name),
        None => format!("/{}", repo.name),
    };
    if req.method() == Method::POST && at.is_none() && matches!(rest, [] | [""]) {
        return match &repo.settings.kind {
            // Uploads to a virtual repository go to its `upload_to` member
            // (a token for the virtual repository may upload there).
            RepoKind::Virtual(v) => {
                let target = upload_target(node, repo, v)?;
                upload(node, req, &repo.name, &target).await
            }
            _ => upload(node, req, &repo.name, repo).await,
        };
    }
    require_read_method(req.method())?;
    if !repo.settings.anonymous_read {
        node.require(req.headers(), &repo.name, Perm::Read)?;
    }
    match rest {
        [] | [""] | ["simple"] => {
            redirect(StatusCode::MOVED_PERMANENTLY, &format!("{prefix}/simple/"))
        }
        ["simple", ""] => match &repo.settings.kind {
            RepoKind::Virtual(v) => virtual_index_page(node, &req, repo, v, at),
            _ => index_page(node, &req, repo, at),
        },
        ["simple", project] => redirect(
            StatusCode::MOVED_PERMANENTLY,
            &format!("{prefix}/simple/{}/", normalize_project_name(project)),
        ),
        ["simple", project, ""] => {
            let normalized = normalize_project_name(project);
            if normalized != *project {
                return redirect(
                    StatusCode::MOVED_PERMANENTLY,
                    &format!("{prefix}/simple/{normalized}/"),
                );
            }
            if let RepoKind::Virtual(v) = &repo.settings.kind {
                return virtual_project_page(node, &req, repo, v, project, at).await;
            }
            match (mirror::settings(repo), at) {
                (Some(settings), None) => {
                    let fill =
                        mirror::refresh_pypi_project(node, repo, settings, project, req.headers())
                            .await;
                    mirrored_project_page(node, &req, repo, project, fill)
                }
                _ => project_page(node, &req, repo, project, at),
            }
        }
        ["files", project, filename] => match &repo.settings.kind {
            RepoKind::Virtual(v) => {
                virtual_download(node, &req, repo, v, project, filename, at).await
            }
            _ => download(node, &req, repo, project, filename, at).await,
        },
        _ => Err(ApiError::not_found("not found")),
    }
}

pub(crate) fn parse_at(node: &Node, serial: &str) -> Result<Serial, ApiError> {
    let serial = serial
        .parse::<u64>()
        .map(Serial)
        .map_err(|_| ApiError::bad_request(format!("+at needs a serial number, not {serial:?}")))?;
    let applied = node.applied_serial();
    if serial > applied {
        return Err(ApiError::not_found(format!(
            "serial {serial} is beyond this node's applied serial {applied}"
        )));
    }
    Ok(serial)
}

fn format_for(req: &Request<Incoming>) -> Result<SimpleFormat, ApiError> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format_query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("format=")));
    let decoded = format_query.map(|f| {
        percent_encoding::percent_decode_str(f)
            .decode_utf8_lossy()
            .into_owned()
    });
    negotiate(accept, decoded.as_deref()).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "none of the accepted types is served: use application/vnd.pypi.simple.v1+json, \
             application/vnd.pypi.simple.v1+html or text/html",
        )
    })
}

/// Answers with a cached page: gzip when taken, `ETag` and
/// `If-None-Match`, and caching that depends on whether the view is pinned
/// to a serial.
fn page_response(
    req: &Request<Incoming>,
    format: SimpleFormat,
    page: &CachedPage,
    last_serial: Serial,
    at: Option<Serial>,
) -> HandlerResult {
    let mut response = page.respond(req.headers(), format.content_type());
    let h = response.headers_mut();
    h.insert("x-pypi-last-serial", HeaderValue::from(last_serial.0));
    h.insert(header::CACHE_CONTROL, cache_control(at));
    Ok(response)
}

/// A page at a serial never changes; the live one changes with every upload.
fn cache_control(at: Option<Serial>) -> HeaderValue {
    HeaderValue::from_static(if at.is_some() {
        "public, max-age=31536000, immutable"
    } else {
        "max-age=0, must-revalidate"
    })
}

fn index_page(
    node: &Arc<Node>,
    req: &Request<Incoming>,
    repo: &RepoState,
    at: Option<Serial>,
) -> HandlerResult {
    index_page_of(node, req, repo, std::slice::from_ref(&repo.name), at)
}

/// A virtual repository's index: every project of every member.
fn virtual_index_page(
    node: &Arc<Node>,
    req: &Request<Incoming>,
    repo: &RepoState,
    settings: &VirtualSettings,
    at: Option<Serial>,
) -> HandlerResult {
    index_page_of(node, req, repo, &settings.members, at)
}

/// The index page of `repo`, listing the projects of `sources` (the
/// repository itself, or a virtual one's members); the first spelling of
/// a name wins.
fn index_page_of(
    node: &Arc<Node>,
    req: &Request<Incoming>,
    repo: &RepoState,
    sources: &[RepoName],
    at: Option<Serial>,
) -> HandlerResult {
    let format = format_for(req)?;
    let last_serial = at.unwrap_or_else(|| node.applied_serial());
    // One view per request (see `project_page`).
    let stamp = node.index.page_stamp(sources, None, last_serial);
    let key = format!("{}\0\0{format:?}\0{stamp}", repo.name);
    match simple_index::index_page(node, key, sources, last_serial, format)? {
        simple_index::IndexPage::Cached(page) => page_response(req, format, &page, last_serial, at),
        simple_index::IndexPage::Streamed(mut response) => {
            let h = response.headers_mut();
            h.insert("x-pypi-last-serial", HeaderValue::from(last_serial.0));
            h.insert(header::CACHE_CONTROL, cache_control(at));
            Ok(response)
        }
    }
}

fn file_link(project: &str, file: &FileState, at: Option<Serial>) -> FileLink {
    let record = &file.record;
    FileLink {
        filename: record.filename.clone(),
        url: format!(
            "../../files/{project}/{}",
            utf8_percent_encode(&record.filename, PATH_SAFE)
        ),
        sha256: record.sha256.to_hex(),
        size: record.size,
        upload_time: time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(file.upload_time_us) * 1000,
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        requires_python: record.requires_python.clone(),
        yanked: file.yanked_at(at).map(str::to_owned),
        core_metadata_sha256: record.core_metadata.map(|s| s.to_hex()),
    }
}

fn project_page(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    project: &str,
    at: Option<Serial>,
) -> HandlerResult {
    let repos = std::slice::from_ref(&repo.name);
    project_page_of(node, req, repo, repos, project, at, |view| {
        if node.index.project(&repo.name, project, view)?.is_none() {
            return Ok(None);
        }
        Ok(Some(node.index.files(&repo.name, project, view)?))
    })
}

/// The project page of `repo`, with the files `list` gives at a view
/// (`None`: no such project); `sources` are the repositories the files
/// come from.
fn project_page_of(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    sources: &[RepoName],
    project: &str,
    at: Option<Serial>,
    list: impl FnOnce(Option<Serial>) -> Result<Option<Vec<FileState>>, ApiError>,
) -> HandlerResult {
    let format = format_for(req)?;
    let last_serial = at.unwrap_or_else(|| node.applied_serial());
    // One view per request: the serial this node has made durable (or the
    // pinned one). The index may hold applied events past it that are not
    // flushed yet; the page, and its cache key, leave them out.
    let view = Some(last_serial);
    // Cached for as long as the project stays as it is at this view.
    let stamp = node.index.page_stamp(sources, Some(project), last_serial);
    let key = format!("{}\0{project}\0{format:?}\0{stamp}", repo.name);
    let page = node
        .page_cache
        .get_or_render(key, || -> Result<String, ApiError> {
            let Some(files) = list(view)? else {
                return Err(ApiError::not_found(format!(
                    "no project named {project:?} in {}",
                    repo.name
                )));
            };
            let mut versions: Vec<String> =
                files.iter().map(|f| f.record.version.clone()).collect();
            versions.sort();
            versions.dedup();
            sort_versions(&mut versions);
            // The serial of the page's last change, as PyPI gives a
            // project's: the same bytes at every view that shows them.
            let changed = files
                .iter()
                .flat_map(|f| std::iter::once(f.added).chain(f.yanks.iter().map(|y| y.serial)))
                .filter(|s| *s <= last_serial)
                .max()
                .unwrap_or_default();
            let page = ProjectPage {
                name: project.to_owned(),
                files: files.iter().map(|f| file_link(project, f, view)).collect(),
                versions,
                last_serial: changed.0,
            };
            Ok(render_project(&page, format))
        })?;
    page_response(req, format, &page, last_serial, at)
}

/// A virtual repository's project page, computed from its members' state
/// now (or at the pinned serial): never stale against them. Mirror
/// members are made fresh first.
async fn virtual_project_page(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    settings: &VirtualSettings,
    project: &str,
    at: Option<Serial>,
) -> HandlerResult {
    let sources = virtual_sources(node, settings, |m| {
        Ok(node.index.project(&m.name, project, at)?.is_some())
    })?;
    let mut failures = Vec::new();
    if at.is_none() {
        for member in &sources {
            if let Some(m) = mirror::settings(member) {
                match mirror::refresh_pypi_project(node, member, m, project, req.headers()).await {
                    PageFill::Fresh | PageFill::NotFound => {}
                    PageFill::Stale(why) | PageFill::Failed(why) => {
                        failures.push(format!("{}: {why}", member.name))
                    }
                }
            }
        }
    }
    let page = project_page_of(node, req, repo, &settings.members, project, at, |view| {
        let mut seen = std::collections::HashSet::new();
        let mut files = Vec::new();
        let mut found = false;
        for member in &sources {
            if node.index.project(&member.name, project, view)?.is_none() {
                continue;
            }
            found = true;
            for f in node.index.files(&member.name, project, view)? {
                if seen.insert(f.record.filename.clone()) {
                    files.push(f);
                }
            }
        }
        Ok(found.then_some(files))
    });
    match page {
        Err(e) if e.status == StatusCode::NOT_FOUND && !failures.is_empty() => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "{project} is in no member of {}, and an upstream failed: {}",
                repo.name,
                failures.join("; ")
            ),
        )),
        Ok(mut response) if !failures.is_empty() => {
            mirror::mark_stale(&mut response, &failures.join("; "));
            Ok(response)
        }
        other => other,
    }
}

/// A file of a virtual repository, from the first member that lists it.
async fn virtual_download(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    settings: &VirtualSettings,
    project: &str,
    filename: &str,
    at: Option<Serial>,
) -> HandlerResult {
    let view = Some(at.unwrap_or_else(|| node.applied_serial()));
    let listed = filename.strip_suffix(".metadata").unwrap_or(filename);
    for member in virtual_sources(node, settings, |m| {
        Ok(node.index.project(&m.name, project, view)?.is_some())
    })? {
        let has = |name: &str| node.index.file(&member.name, project, name, view);
        if has(filename)?.is_some() || has(listed)?.is_some() {
            return download(node, req, &member, project, filename, at).await;
        }
    }
    Err(ApiError::not_found(format!(
        "no file named {filename:?} in {}",
        repo.name
    )))
}

/// A mirror's project page, after trying to make it fresh: served from
/// the index, marked when it could not be revalidated.
fn mirrored_project_page(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    project: &str,
    fill: PageFill,
) -> HandlerResult {
    if mirror::is_fill_request(req.headers()) {
        return match fill {
            PageFill::Fresh => Ok(mirror::filled()),
            PageFill::NotFound => Err(no_upstream_has(repo, project)),
            PageFill::Stale(why) | PageFill::Failed(why) => {
                Err(ApiError::new(StatusCode::BAD_GATEWAY, why))
            }
        };
    }
    match fill {
        PageFill::Fresh => project_page(node, req, repo, project, None),
        PageFill::Stale(why) => {
            let mut response = project_page(node, req, repo, project, None)?;
            mirror::mark_stale(&mut response, &why);
            Ok(response)
        }
        PageFill::NotFound => Err(no_upstream_has(repo, project)),
        PageFill::Failed(why) => Err(mirror::not_cached(repo, project, &why)),
    }
}

fn no_upstream_has(repo: &RepoState, project: &str) -> ApiError {
    ApiError::not_found(format!(
        "no project named {project:?} in {} or its upstreams",
        repo.name
    ))
}

/// Makes a mirrored file's bytes (or its metadata's) local before they
/// are served. A fill request from another node is answered 204 here.
async fn fill_file(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    project: &str,
    file: &FileState,
    part: MirrorPart,
) -> Result<Option<HandlerResult>, ApiError> {
    let Some(settings) = mirror::settings(repo) else {
        return Ok(None);
    };
    let stored = match part {
        MirrorPart::File => file.is_stored(),
        MirrorPart::CoreMetadata => file
            .record
            .core_metadata
            .is_some_and(|m| file.stored_blobs().contains(&m)),
    };
    if !stored {
        mirror::ensure_cached(node, repo, settings, project, file, part, req).await?;
    }
    if mirror::is_fill_request(req.headers()) {
        return Ok(Some(Ok(mirror::filled())));
    }
    Ok(None)
}

async fn download(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    project: &str,
    filename: &str,
    at: Option<Serial>,
) -> HandlerResult {
    let not_found = || ApiError::not_found(format!("no file named {filename:?} in {}", repo.name));
    let view = Some(at.unwrap_or_else(|| node.applied_serial()));
    if let Some(mut file) = node.index.file(&repo.name, project, filename, view)? {
        let was_stored = file.is_stored();
        if let Some(answer) = fill_file(node, req, repo, project, &file, MirrorPart::File).await? {
            return answer;
        }
        if !was_stored {
            // Just cached: its size is known now.
            file = node
                .index
                .file(&repo.name, project, filename, None)?
                .ok_or_else(not_found)?;
        }
        let r = &file.record;
        let response = serve_blob(
            node,
            req.method(),
            req.headers(),
            &r.sha256,
            r.size,
            "application/octet-stream",
        )
        .await;
        return mirror::with_cache_state(response, was_stored);
    }
    // PEP 658: the core metadata of `x.whl` is at `x.whl.metadata`.
    let Some(dist) = filename.strip_suffix(".metadata") else {
        return Err(not_found());
    };
    let file = node
        .index
        .file(&repo.name, project, dist, view)?
        .ok_or_else(not_found)?;
    let sha = file.record.core_metadata.ok_or_else(not_found)?;
    let was_stored = file.stored_blobs().contains(&sha);
    if let Some(answer) =
        fill_file(node, req, repo, project, &file, MirrorPart::CoreMetadata).await?
    {
        return answer;
    }
    let size = node
        .blobs
        .size_of(&sha)
        .await?
        .ok_or_else(|| ApiError::internal("the metadata blob is unavailable on this node"))?;
    let response = serve_blob(
        node,
        req.method(),
        req.headers(),
        &sha,
        size,
        "text/plain; charset=utf-8",
    )
    .await;
    mirror::with_cache_state(response, was_stored)
}

/// Why reading an upload form stopped.
enum FormError {
    Multipart(multer::Error),
    Api(ApiError),
}

impl From<multer::Error> for FormError {
    fn from(e: multer::Error) -> Self {
        FormError::Multipart(e)
    }
}

impl<E: Into<ApiError>> From<E> for FormError {
    fn from(e: E) -> Self {
        FormError::Api(e.into())
    }
}

/// Reads the fields of twine's form; the `content` file streams into a
/// staged blob as it arrives.
async fn read_upload_form(
    blobs: &BlobStore,
    multipart: &mut multer::Multipart<'static>,
) -> Result<(UploadForm, Option<(DistFilename, StagedBlob)>), FormError> {
    let mut form = UploadForm::default();
    let mut content: Option<(DistFilename, StagedBlob)> = None;
    while let Some(mut field) = multipart.next_field().await? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "content" {
            if content.is_some() {
                return Err(ApiError::bad_request("the upload has more than one file")
                    .closing()
                    .into());
            }
            let filename = field.file_name().ok_or_else(|| {
                ApiError::bad_request("the content field has no filename").closing()
            })?;
            // Refuse a bad name before storing a byte.
            let dist = parse_dist_filename(filename).map_err(|e| ApiError::from(e).closing())?;
            let mut writer = blobs
                .writer(ExtraDigests {
                    md5: true,
                    blake2b_256: true,
                    ..ExtraDigests::default()
                })
                .await?;
            while let Some(chunk) = field.chunk().await? {
                writer.write(&chunk).await?;
            }
            content = Some((dist, writer.finish().await?));
        } else {
            let mut text = Vec::new();
            while let Some(chunk) = field.chunk().await? {
                if text.len() + chunk.len() > MAX_TEXT_FIELD {
                    return Err(ApiError::bad_request(format!(
                        "the form field {name:?} is too large"
                    ))
                    .closing()
                    .into());
                }
                text.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(text).map_err(|_| {
                ApiError::bad_request(format!("the form field {name:?} is not UTF-8"))
            })?;
            form.set_field(&name, text);
        }
    }
    Ok((form, content))
}

/// The digests of an uploaded file, as the form's checks compare them.
fn computed_digests(staged: &StagedBlob) -> ComputedDigests {
    ComputedDigests {
        sha256: staged.digests.sha256.to_hex(),
        md5: staged.digests.md5.map(hex::encode).unwrap_or_default(),
        blake2_256: staged
            .digests
            .blake2b_256
            .map(hex::encode)
            .unwrap_or_default(),
    }
}

/// A multipart error as the client should see it. When the form ended
/// early, what the body did is the real cause: a read error or timeout is
/// reported as such, and otherwise the answer says how much arrived.
async fn explain_multipart_error(
    e: multer::Error,
    declared: Option<u64>,
    body: BodyCompletion,
) -> ApiError {
    match e {
        multer::Error::StreamReadFailed(inner) => {
            return match inner.downcast::<BodyError>() {
                Ok(body) => ApiError::from(*body),
                Err(other) => {
                    ApiError::bad_request(format!("reading the upload failed: {other}")).closing()
                }
            };
        }
        multer::Error::IncompleteStream | multer::Error::IncompleteFieldData { .. } => {}
        other => {
            return ApiError::bad_request(format!("malformed multipart body: {other}")).closing()
        }
    }
    // The parser saw the stream end (or bytes that are not the boundary);
    // the reader has then finished, or is still reading.
    let (outcome, trace) = body.outcome(std::time::Duration::from_secs(1)).await;
    let ended = match outcome {
        BodyOutcome::Failed(body_error) => return ApiError::from(body_error),
        BodyOutcome::Ended { received } => format!("the body ended after {received} bytes"),
        BodyOutcome::Reading { received } => {
            format!("{received} bytes had arrived and the body went on")
        }
    };
    let declared = declared.map_or_else(|| "no".to_owned(), |n| n.to_string());
    tracing::warn!(
        error = %e,
        %ended,
        %declared,
        body = %trace,
        "a multipart upload did not reach its closing boundary"
    );
    ApiError::bad_request(format!(
        "malformed multipart body: {e} ({ended}; Content-Length {declared})"
    ))
    .closing()
}

/// twine's legacy upload: `POST /{repo}/`, multipart/form-data. The file
/// streams to a temp blob while it is hashed; nothing becomes visible
/// until every check passed and the event is committed.
/// `auth_repo` is the repository the client named (a virtual one, or
/// `repo` itself); the file is stored in `repo`.
async fn upload(
    node: &Arc<Node>,
    req: Request<Incoming>,
    auth_repo: &RepoName,
    repo: &RepoState,
) -> HandlerResult {
    // Refusals before the body is read let the client read them: the body
    // is discarded meanwhile, rather than left to reset the connection.
    let idle = node.config.body_timeout();
    let refuse = |req: Request<Incoming>, e: ApiError| {
        discard_refused(req, idle);
        e.closing()
    };
    let principal = match node.require(req.headers(), auth_repo, Perm::Upload) {
        Ok(p) => p,
        Err(e) => return Err(refuse(req, e)),
    };
    let upload_time_us = match imported_upload_time(req.headers(), &principal, &repo.name) {
        Ok(t) => t,
        Err(e) => return Err(refuse(req, e)),
    };
    if !matches!(repo.settings.kind, RepoKind::Hosted) {
        let e = ApiError::bad_request(format!("{} does not accept uploads", repo.name));
        return Err(refuse(req, e));
    }
    let limit = node.config.max_upload_bytes;
    let declared = declared_length(req.headers());
    if let Some(len) = declared {
        if len > limit {
            return Err(refuse(req, BodyError::TooLarge { limit }.into()));
        }
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let e = ApiError::bad_request(format!(
            "uploads must be multipart/form-data (as twine sends them), not {content_type:?}"
        ));
        return Err(refuse(req, e));
    }
    let boundary = match multer::parse_boundary(&content_type) {
        Ok(b) => b,
        Err(_) => {
            let e = ApiError::bad_request("the multipart/form-data Content-Type has no boundary");
            return Err(refuse(req, e));
        }
    };
    let (stream, body_done) = pump(req.into_body(), limit, node.config.body_timeout());
    let mut multipart = multer::Multipart::new(stream, boundary);

    let read = read_upload_form(&node.blobs, &mut multipart).await;
    drop(multipart);
    let (form, content) = match read {
        Ok(parts) => parts,
        Err(FormError::Api(e)) => return Err(e),
        Err(FormError::Multipart(e)) => {
            return Err(explain_multipart_error(e, declared, body_done).await)
        }
    };
    // The form may end before the body does: all of it must arrive.
    body_done.finished().await?;
    let (dist, staged) =
        content.ok_or_else(|| ApiError::bad_request("the upload has no file (field 'content')"))?;
    let upload = validate_upload(&form, &dist, &computed_digests(&staged))?;
    node.may_write(&principal, &repo.name, &upload.project)?;
    let metadata = inspect_distribution(&dist, &staged).await?;
    let requires_python = upload
        .requires_python
        .clone()
        .or_else(|| {
            metadata
                .as_ref()
                .and_then(|(_, m)| m.requires_python.clone())
        })
        .filter(|s| !s.trim().is_empty());

    let sha256 = staged.digests.sha256;
    // Held until the event commits: a concurrent upload of the same file
    // then sees this one's result before it stores anything.
    let _turn = node
        .upload_locks
        .lock(format!("{}/{}", repo.name, dist.filename))
        .await;
    if let Some(existing) = node
        .index
        .file(&repo.name, &upload.project, &dist.filename, None)?
    {
        return same_or_conflict(&existing, sha256);
    }
    let record = FileRecord {
        filename: dist.filename.clone(),
        version: upload.version.clone(),
        sha256,
        size: staged.size,
        packagetype: dist.kind.packagetype().to_owned(),
        requires_python,
        core_metadata: None,
    };
    commit_upload(
        node,
        &principal,
        &repo.name,
        upload.project,
        upload.name,
        record,
        staged,
        metadata.map(|(bytes, _)| bytes),
        upload_time_us,
    )
    .await
}

/// The header with which an import keeps its source's upload time.
pub const UPLOAD_TIME_HEADER: &str = "x-hoard-upload-time";

/// An import's upload time (`X-Hoard-Upload-Time`, RFC 3339): only a
/// repository's admins may set one, since it rewrites history as pip and
/// the UI show it, and never later than now.
pub(crate) fn imported_upload_time(
    headers: &http::HeaderMap,
    principal: &Principal,
    repo: &RepoName,
) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(UPLOAD_TIME_HEADER) else {
        return Ok(None);
    };
    if !principal.allows(repo, Perm::Admin) {
        return Err(ApiError::forbidden(format!(
            "setting an upload time ({UPLOAD_TIME_HEADER}) needs an admin token for {repo}"
        )));
    }
    let text = value.to_str().unwrap_or_default();
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{UPLOAD_TIME_HEADER}: {text:?} is not an RFC 3339 time"
            ))
        })?;
    let us = (time.unix_timestamp_nanos() / 1000) as i64;
    if us > crate::node::now_us() {
        return Err(ApiError::bad_request(format!(
            "{UPLOAD_TIME_HEADER}: {text} is in the future"
        )));
    }
    Ok(Some(us))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// An upload of an existing filename succeeds only with identical bytes.
fn same_or_conflict(existing: &FileState, sha256: Sha256) -> HandlerResult {
    if existing.record.sha256 == sha256 {
        Ok(with_body(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "OK (already uploaded)\n",
        ))
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} already exists with different content; a published file never changes (upload a new version)",
                existing.record.filename
            ),
        ))
    }
}

/// Checks that the file is what its name says. For a wheel, extracts the
/// core metadata (PEP 658) with bounded memory and checks it against the
/// filename; for an sdist, checks the archive's magic bytes.
async fn inspect_distribution(
    dist: &DistFilename,
    staged: &StagedBlob,
) -> Result<Option<(Vec<u8>, hoard_pypi::CoreMetadata)>, ApiError> {
    let path = staged.path().to_owned();
    let dist = dist.clone();
    tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut file = std::fs::File::open(&path)
            .map_err(|e| ApiError::internal(format!("reopening the upload failed: {e}")))?;
        match dist.kind {
            DistKind::Wheel => {
                let bytes = extract_wheel_metadata(&mut file, &dist, &ZipLimits::default())?;
                let meta = parse_core_metadata(&bytes)?;
                meta.check_matches(&dist)?;
                Ok(Some((bytes, meta)))
            }
            DistKind::Sdist => {
                use std::io::Read;
                let mut head = [0u8; 8];
                let n = file.read(&mut head).unwrap_or(0);
                check_sdist_magic(&dist, &head[..n])?;
                Ok(None)
            }
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("inspecting the upload failed: {e}")))?
}

/// Makes the blobs durable, then commits the event. A crash between the
/// two leaves an unlisted blob (found by fsck as an orphan), never a
/// listed file without its blob.
#[allow(clippy::too_many_arguments)]
async fn commit_upload(
    node: &Node,
    principal: &Principal,
    repo: &RepoName,
    project: String,
    display_name: String,
    mut record: FileRecord,
    staged: StagedBlob,
    metadata: Option<Vec<u8>>,
    upload_time_us: Option<i64>,
) -> HandlerResult {
    let sha256 = staged.digests.sha256;
    let mut blobs = vec![staged];
    if let Some(bytes) = metadata {
        let meta = node.blobs.stage_bytes(&bytes).await?;
        record.core_metadata = Some(meta.digests.sha256);
        blobs.push(meta);
    }
    let filename = record.filename.clone();
    let change = Change::FileAdded {
        repo: repo.clone(),
        project: project.clone(),
        display_name,
        file: record,
        upload_time_us,
    };
    match node.commit_with_blobs_as(principal, blobs, change).await {
        Ok(Committed { serial, term }) => {
            tracing::info!(%repo, %filename, %serial, actor = %principal.actor(), "file uploaded");
            let mut response = with_body(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                Bytes::from("OK\n"),
            );
            response
                .headers_mut()
                .insert("x-hoard-upload-serial", HeaderValue::from(serial.0));
            // The term of the entry that committed it, and the node that
            // acknowledged: fault tests check that no term has two
            // acknowledging nodes.
            response
                .headers_mut()
                .insert("x-hoard-term", HeaderValue::from(term));
            if let Ok(id) = HeaderValue::from_str(&node.config.node_id) {
                response.headers_mut().insert("x-hoard-node", id);
            }
            Ok(response)
        }
        // A concurrent upload of the same filename won the race.
        Err(WriteError::Rejected(Rejection::FileExists(_))) => {
            let existing = node
                .index
                .file(repo, &project, &filename, None)?
                .ok_or_else(|| ApiError::internal("conflicting upload vanished"))?;
            same_or_conflict(&existing, sha256)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod form_fuzz {
    //! The multipart upload under fuzzing: twine's form, mutated and cut
    //! into chunks at random places. Whatever arrives, reading it gives a
    //! form or an error, never a panic, and once the request is over no
    //! temp file is left behind. Long with `HOARD_FUZZ_SECS` (see
    //! `tests/fuzz-long.sh`).

    use super::*;
    use hoard_testkit::fuzz::{fuzz, mutated};
    use hoard_testkit::{wheel, Upload};
    use proptest::prelude::*;

    /// `body` cut at the offsets in `cuts` (each taken modulo what is left).
    fn chunks(body: Vec<u8>, cuts: Vec<usize>) -> Vec<Bytes> {
        let mut rest = Bytes::from(body);
        let mut out = Vec::new();
        for cut in cuts {
            if rest.is_empty() {
                break;
            }
            out.push(rest.split_to(cut % rest.len() + 1));
        }
        if !rest.is_empty() {
            out.push(rest);
        }
        out
    }

    #[test]
    fn upload_forms_read_or_refuse_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let form = Upload::of(&wheel("fuzz-demo", "1.0")).multipart();
        let boundary = form.boundary().to_owned();
        let bodies = (
            prop_oneof![
                mutated(form.finish()),
                mutated(form.unfinished()),
                proptest::collection::vec(any::<u8>(), 0..512),
            ],
            proptest::collection::vec(any::<usize>(), 0..8),
        );
        fuzz(
            env!("CARGO_MANIFEST_DIR"),
            "multipart_upload",
            bodies,
            |(body, cuts)| {
                let stream = futures_util::stream::iter(
                    chunks(body, cuts).into_iter().map(Ok::<_, std::io::Error>),
                );
                let mut multipart = multer::Multipart::new(stream, boundary.clone());
                let read = runtime.block_on(read_upload_form(&blobs, &mut multipart));
                if let Ok((form, Some((dist, staged)))) = read {
                    prop_assert_eq!(staged.path().parent(), Some(blobs.tmp_dir()));
                    if let Ok(upload) = validate_upload(&form, &dist, &computed_digests(&staged)) {
                        prop_assert_eq!(&upload.filename, &dist.filename);
                    }
                }
                let left = std::fs::read_dir(blobs.tmp_dir()).unwrap().count();
                prop_assert_eq!(left, 0, "a temp file was left behind");
                Ok(())
            },
        );
    }
}
