//! Generic repositories: any file at any path, as Artifactory's generic
//! and Nexus's raw repositories keep them.
//!
//! - `PUT /{repo}/{path}` stores a file (a token with upload permission).
//!   A path never changes once written: the same bytes again are a 200,
//!   other bytes a 409. `X-Checksum-Sha256` is checked before anything is
//!   stored.
//! - `GET`/`HEAD /{repo}/{path}` serve it, with Range, and its sha256 as
//!   the ETag.
//! - `GET /{repo}/{dir}/` lists a directory, as HTML or (by `Accept`) JSON.
//! - `/{repo}/+at/{serial}/…` shows any of it as it was at a serial.
//! - A mirror fetches a path it lacks from its upstreams on first use; a
//!   virtual repository serves the first member that has a path.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use hoard_core::{Change, GenericPath, Perm, RepoKind, RepoName, Serial, Sha256};
use hoard_store::{GenericEntry, GenericFileState, RepoState};
use http::{header, HeaderMap, Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::body::{bounded_stream, discard_refused, BodyError};
use crate::download::serve_blob;
use crate::error::ApiError;
use crate::http::{json, redirect, with_body, HandlerResult};
use crate::mirror;
use crate::node::{Node, Principal};
use crate::pypi::{imported_upload_time, parse_at};
use crate::virtual_repo::upload_target;

/// The header a client may send with an upload: the sha256 its bytes must
/// have, checked before the file is stored.
pub const CHECKSUM_HEADER: &str = "x-checksum-sha256";

/// What a request below a generic repository names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A directory: `""` for the root, else `a/b/`.
    Dir(String),
    File(GenericPath),
}

/// Splits the raw path below the repository into a point in time and a
/// target. Each segment is percent-decoded on its own, so an encoded `/`
/// (`%2F`) stays inside its segment, where [`GenericPath`] refuses it.
fn parse_below(below: &str) -> Result<(Option<String>, Target), ApiError> {
    let mut segments = Vec::new();
    for raw in below.split('/') {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| ApiError::bad_request("the path is not valid UTF-8"))?;
        segments.push(decoded.into_owned());
    }
    let (at, segments) = match segments.as_slice() {
        [first, serial, rest @ ..] if first == "+at" => (Some(serial.clone()), rest),
        all => (None, all),
    };
    let invalid = |e: hoard_core::CoreError| ApiError::bad_request(e.to_string());
    let target = match segments {
        [] | [_] if segments.iter().all(String::is_empty) => Target::Dir(String::new()),
        [dirs @ .., last] if last.is_empty() => {
            for segment in dirs {
                GenericPath::check_segment(segment).map_err(invalid)?;
            }
            Target::Dir(format!("{}/", dirs.join("/")))
        }
        segments => {
            for segment in segments {
                GenericPath::check_segment(segment).map_err(invalid)?;
            }
            Target::File(segments.join("/").parse().map_err(invalid)?)
        }
    };
    Ok((at, target))
}

pub async fn handle(
    node: &Arc<Node>,
    req: Request<Incoming>,
    repo: &RepoState,
    below: &str,
) -> HandlerResult {
    let (at, target) = match parse_below(below) {
        Ok(parsed) => parsed,
        Err(e) => {
            discard_refused(req, node.config.body_timeout());
            return Err(e.closing());
        }
    };
    let at = at.map(|serial| parse_at(node, &serial)).transpose()?;
    if req.method() == Method::PUT {
        let Target::File(path) = target else {
            discard_refused(req, node.config.body_timeout());
            return Err(
                ApiError::bad_request("a PUT names a file: its path may not end in `/`").closing(),
            );
        };
        if at.is_some() {
            discard_refused(req, node.config.body_timeout());
            return Err(ApiError::bad_request("+at views are read-only").closing());
        }
        return match &repo.settings.kind {
            RepoKind::Virtual(v) => {
                let target = upload_target(node, repo, v)?;
                put(node, req, &repo.name, &target, path).await
            }
            _ => put(node, req, &repo.name, repo, path).await,
        };
    }
    crate::http::require_read_method(req.method())?;
    if !repo.settings.anonymous_read {
        node.require(req.headers(), &repo.name, Perm::Read)?;
    }
    let prefix = match at {
        Some(serial) => format!("/{}/+at/{serial}/", repo.name),
        None => format!("/{}/", repo.name),
    };
    match target {
        Target::Dir(dir) => listing(node, &req, repo, &dir, at, &prefix),
        Target::File(path) => get(node, &req, repo, &path, at, &prefix).await,
    }
}

/// The repositories that serve a read of `repo`: its members, in order,
/// for a virtual one.
fn sources(node: &Node, repo: &RepoState) -> Result<Vec<RepoState>, ApiError> {
    match &repo.settings.kind {
        RepoKind::Virtual(v) => crate::virtual_repo::virtual_sources(node, v, |_| Ok(false)),
        _ => Ok(vec![repo.clone()]),
    }
}

async fn get(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    path: &GenericPath,
    at: Option<Serial>,
    prefix: &str,
) -> HandlerResult {
    let view = Some(at.unwrap_or_else(|| node.applied_serial()));
    let members = sources(node, repo)?;
    for source in &members {
        if let Some(file) = node.index.generic_file(&source.name, path.as_str(), view)? {
            if mirror::is_fill_request(req.headers()) {
                return Ok(mirror::filled());
            }
            return serve_file(node, req, &file, true).await;
        }
    }
    // A directory asked for without its `/`.
    for source in &members {
        if node
            .index
            .generic_listing(&source.name, &format!("{path}/"), view)?
            .is_some()
        {
            let escaped: Vec<String> = path.segments().map(escape_segment).collect();
            return redirect(
                StatusCode::MOVED_PERMANENTLY,
                &format!("{prefix}{}/", escaped.join("/")),
            );
        }
    }
    if at.is_none() {
        let mut last_error = None;
        for source in &members {
            let Some(settings) = mirror::settings(source) else {
                continue;
            };
            match mirror::ensure_generic_cached(node, source, settings, path, req).await {
                Ok(()) => {
                    if mirror::is_fill_request(req.headers()) {
                        return Ok(mirror::filled());
                    }
                    let file = node
                        .index
                        .generic_file(&source.name, path.as_str(), None)?
                        .ok_or_else(|| ApiError::internal("a fetched file is not listed"))?;
                    return serve_file(node, req, &file, false).await;
                }
                Err(e) if e.status == StatusCode::NOT_FOUND => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = last_error {
            return Err(e);
        }
    }
    Err(ApiError::not_found(format!(
        "no file at {path} in {}",
        repo.name
    )))
}

async fn serve_file(
    node: &Node,
    req: &Request<Incoming>,
    file: &GenericFileState,
    was_stored: bool,
) -> HandlerResult {
    let content_type = mime_guess::from_path(file.path.file_name())
        .first_raw()
        .unwrap_or("application/octet-stream");
    let response = serve_blob(
        node,
        req.method(),
        req.headers(),
        &file.sha256,
        file.size,
        content_type,
    )
    .await;
    if file.upstream_url.is_some() {
        mirror::with_cache_state(response, was_stored)
    } else {
        response
    }
}

fn listing(
    node: &Node,
    req: &Request<Incoming>,
    repo: &RepoState,
    dir: &str,
    at: Option<Serial>,
    prefix: &str,
) -> HandlerResult {
    let serial = at.unwrap_or_else(|| node.applied_serial());
    let entries = merged_listing(node, &sources(node, repo)?, dir, serial)?
        .ok_or_else(|| ApiError::not_found(format!("no directory {dir} in {}", repo.name)))?;
    let page = Listing {
        repo: &repo.name,
        dir,
        serial,
        at,
        entries: &entries,
    };
    if wants_json(req.headers()) {
        return Ok(json(StatusCode::OK, &page.to_json()));
    }
    Ok(with_body(
        StatusCode::OK,
        "text/html; charset=utf-8",
        page.to_html(prefix),
    ))
}

/// A directory as the union of `sources` at `serial`: the first source
/// to list a name serves it; subdirectories first, then files, by name.
/// `None` when no source has the directory.
pub(crate) fn merged_listing(
    node: &Node,
    sources: &[RepoState],
    dir: &str,
    serial: Serial,
) -> Result<Option<Vec<GenericEntry>>, ApiError> {
    let mut found = false;
    let mut entries: Vec<GenericEntry> = Vec::new();
    for source in sources {
        let Some(listed) = node
            .index
            .generic_listing(&source.name, dir, Some(serial))?
        else {
            continue;
        };
        found = true;
        for entry in listed {
            if !entries.iter().any(|e| entry_name(e) == entry_name(&entry)) {
                entries.push(entry);
            }
        }
    }
    entries.sort_by(|a, b| {
        let is_file = |e: &GenericEntry| matches!(e, GenericEntry::File(_));
        (is_file(a), entry_name(a)).cmp(&(is_file(b), entry_name(b)))
    });
    Ok(found.then_some(entries))
}

pub(crate) fn entry_name(entry: &GenericEntry) -> &str {
    match entry {
        GenericEntry::Dir { name, .. } => name,
        GenericEntry::File(f) => f.path.file_name(),
    }
}

/// JSON when the client asks for it before HTML.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let position = |needle: &str| accept.find(needle);
    match (position("application/json"), position("text/html")) {
        (Some(_), None) => true,
        (Some(j), Some(h)) => j < h,
        _ => false,
    }
}

/// A directory's listing, rendered.
struct Listing<'a> {
    repo: &'a RepoName,
    dir: &'a str,
    serial: Serial,
    at: Option<Serial>,
    entries: &'a [GenericEntry],
}

impl Listing<'_> {
    fn to_json(&self) -> serde_json::Value {
        let entries: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|entry| match entry {
                GenericEntry::Dir { name, .. } => json!({
                    "name": name,
                    "type": "directory",
                    "url": format!("{}/", escape_segment(name)),
                }),
                GenericEntry::File(f) => json!({
                    "name": f.path.file_name(),
                    "type": "file",
                    "size": f.size,
                    "sha256": f.sha256.to_hex(),
                    "time": rfc3339(f.upload_time_us),
                    "uploader": f.uploader,
                    "serial": f.added.0,
                    "url": escape_segment(f.path.file_name()),
                }),
            })
            .collect();
        json!({
            "repo": self.repo.as_str(),
            "path": self.dir,
            "serial": self.serial.0,
            "at": self.at.map(|s| s.0),
            "entries": entries,
        })
    }

    fn to_html(&self, prefix: &str) -> String {
        let title = format!("{}/{}", self.repo, self.dir);
        let markup = maud::html! {
            (maud::DOCTYPE)
            html {
                head {
                    meta charset="utf-8";
                    title { "Index of " (title) }
                }
                body {
                    h1 { "Index of " (title) }
                    @if let Some(at) = self.at {
                        p { "As of serial " (at.0) "." }
                    }
                    table {
                        thead { tr { th { "Name" } th { "Size" } th { "Uploaded" } th { "sha256" } } }
                        tbody {
                            @if !self.dir.is_empty() {
                                tr { td { a href="../" { "../" } } td {} td {} td {} }
                            }
                            @for entry in self.entries {
                                @match entry {
                                    GenericEntry::Dir { name, .. } => tr {
                                        td { a href=(format!("{}/", escape_segment(name))) { (name) "/" } }
                                        td { "-" } td {} td {}
                                    },
                                    GenericEntry::File(f) => tr {
                                        td { a href=(escape_segment(f.path.file_name())) { (f.path.file_name()) } }
                                        td { (f.size) }
                                        td { (rfc3339(f.upload_time_us)) " by " (f.uploader) }
                                        td { code { (f.sha256.to_hex()) } }
                                    },
                                }
                            }
                        }
                    }
                    p { small { "serial " (self.serial.0) " · " a href=(format!("/+ui/{}/{}", self.repo, self.dir)) { "web UI" } " · root: " a href=(prefix) { (prefix) } } }
                }
            }
        };
        markup.into_string()
    }
}

/// A time as RFC 3339, to the millisecond.
pub(crate) fn rfc3339(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .map(hoard_npm::format_npm_time)
        .unwrap_or_default()
}

/// A path segment as a relative link: escaped so that a `?`, `#`, `%` or
/// a name with a `:` (read as a scheme) stays a name.
pub(crate) fn escape_segment(segment: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'+')
        .remove(b'@');
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

/// `PUT /{repo}/{path}`: the body streams to a temp blob while it is
/// hashed; the file becomes visible only once the event commits.
async fn put(
    node: &Arc<Node>,
    req: Request<Incoming>,
    auth_repo: &RepoName,
    repo: &RepoState,
    path: GenericPath,
) -> HandlerResult {
    let idle = node.config.body_timeout();
    let refuse = |req: Request<Incoming>, e: ApiError| {
        discard_refused(req, idle);
        e.closing()
    };
    let checked = check_put(node, &req, auth_repo, repo, &path);
    let (principal, upload_time_us, expected) = match checked {
        Ok(checked) => checked,
        Err(e) => return Err(refuse(req, e)),
    };
    let limit = node.config.max_upload_bytes;
    let mut body = std::pin::pin!(bounded_stream(req.into_body(), limit, idle));
    let mut writer = node.blobs.writer(Default::default()).await?;
    while let Some(chunk) = body.next().await {
        let chunk: Bytes = chunk?;
        writer.write(&chunk).await?;
    }
    let staged = writer.finish().await?;
    let sha256 = staged.digests.sha256;
    if let Some(expected) = expected {
        if expected != sha256 {
            return Err(ApiError::bad_request(format!(
                "checksum mismatch: {CHECKSUM_HEADER} says {expected}, but the body's sha256 is \
                 {sha256}; nothing was stored"
            )));
        }
    }
    // Held until the event commits: a concurrent PUT of the same path sees
    // this one's result before it stores anything.
    let _turn = node
        .upload_locks
        .lock(format!("{}/{path}", repo.name))
        .await;
    if let Some(existing) = node.index.generic_file(&repo.name, path.as_str(), None)? {
        return same_or_conflict(&existing, sha256);
    }
    let size = staged.size;
    let change = Change::GenericFileStored {
        repo: repo.name.clone(),
        path: path.clone(),
        sha256,
        size,
        upload_time_us,
        upstream_url: None,
    };
    let committed = node
        .commit_with_blobs_as(&principal, vec![staged], change)
        .await?;
    tracing::info!(repo = %repo.name, %path, size, serial = %committed.serial, "generic file stored");
    let url = format!(
        "{}/{}/{}",
        node.config.public_url(),
        repo.name,
        path.segments()
            .map(escape_segment)
            .collect::<Vec<_>>()
            .join("/")
    );
    let mut response = json(
        StatusCode::CREATED,
        &json!({
            "path": path.as_str(),
            "sha256": sha256.to_hex(),
            "size": size,
            "serial": committed.serial.0,
            "url": url,
        }),
    );
    if let Ok(location) = http::HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Everything a PUT is refused for before its body is read: who may write,
/// where, and a path already taken by other bytes or by a directory.
fn check_put(
    node: &Node,
    req: &Request<Incoming>,
    auth_repo: &RepoName,
    repo: &RepoState,
    path: &GenericPath,
) -> Result<(Principal, Option<i64>, Option<Sha256>), ApiError> {
    let headers = req.headers();
    let principal = node.require(headers, auth_repo, Perm::Upload)?;
    if !matches!(repo.settings.kind, RepoKind::Hosted) {
        return Err(ApiError::bad_request(format!(
            "{} is a mirror and does not accept uploads",
            repo.name
        )));
    }
    // A token scoped to projects may write below those top directories.
    let top = path.segments().next().unwrap_or_default();
    if !principal.allows_project(top) {
        return Err(ApiError::forbidden(format!(
            "this token may not write to {top}/: it is scoped to other paths"
        )));
    }
    let upload_time_us = imported_upload_time(headers, &principal, &repo.name)?;
    let limit = node.config.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(BodyError::TooLarge { limit }.into());
    }
    let expected = match headers.get(CHECKSUM_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().to_ascii_lowercase().parse::<Sha256>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("{CHECKSUM_HEADER} must be 64 hex characters"))
                })?,
        ),
    };
    let index = &node.index;
    if let Some(existing) = index.generic_file(&repo.name, path.as_str(), None)? {
        if expected.is_some_and(|e| e != existing.sha256) {
            return Err(conflict(&existing));
        }
    }
    if index
        .generic_listing(&repo.name, &format!("{path}/"), None)?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{path} is a directory; a file cannot be stored there"),
        ));
    }
    for dir in path.parent_dirs() {
        let file = dir.trim_end_matches('/');
        if index.generic_file(&repo.name, file, None)?.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("{file} is a file, so {path} cannot be stored under it"),
            ));
        }
    }
    Ok((principal, upload_time_us, expected))
}

/// A second PUT of a path succeeds only with identical bytes.
fn same_or_conflict(existing: &GenericFileState, sha256: Sha256) -> HandlerResult {
    if existing.sha256 == sha256 {
        Ok(json(
            StatusCode::OK,
            &json!({
                "path": existing.path.as_str(),
                "sha256": sha256.to_hex(),
                "size": existing.size,
                "serial": existing.added.0,
                "note": "already stored with these bytes",
            }),
        ))
    } else {
        Err(conflict(existing))
    }
}

fn conflict(existing: &GenericFileState) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "{} already exists with other content (sha256 {}); a stored path never changes: \
             store the new bytes at a new path",
            existing.path, existing.sha256
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Target {
        Target::File(path.parse().unwrap())
    }

    #[test]
    fn paths_below_a_repository_parse_into_files_and_directories() {
        assert_eq!(parse_below("").unwrap(), (None, Target::Dir(String::new())));
        assert_eq!(
            parse_below("images/").unwrap(),
            (None, Target::Dir("images/".into()))
        );
        assert_eq!(
            parse_below("images/app.box").unwrap(),
            (None, file("images/app.box"))
        );
        assert_eq!(
            parse_below("+at/12/images/a%20b.box").unwrap(),
            (Some("12".into()), file("images/a b.box"))
        );
        assert_eq!(
            parse_below("+at/12/").unwrap(),
            (Some("12".into()), Target::Dir(String::new()))
        );
    }

    #[test]
    fn traversal_and_encoded_separators_are_refused() {
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "%2e%2e/x",
            "a/%2E%2E/b",
            "a%2Fb",
            "a%2fb/",
            "a%5c..%5cb",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a/%00b",
            "+ui/x",
            "../",
            "%ff",
        ] {
            assert!(parse_below(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_is_served_when_asked_for_before_html() {
        let accept = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, v.parse().unwrap());
            wants_json(&h)
        };
        assert!(accept("application/json"));
        assert!(accept("application/json, text/html;q=0.5"));
        assert!(!accept(
            "text/html,application/xhtml+xml,application/json;q=0.9"
        ));
        assert!(!accept("*/*"));
        assert!(!wants_json(&HeaderMap::new()));
    }

    #[test]
    fn links_escape_what_a_url_would_read_otherwise() {
        assert_eq!(escape_segment("app-1.2.box"), "app-1.2.box");
        assert_eq!(escape_segment("a b#c?d"), "a%20b%23c%3Fd");
        assert_eq!(escape_segment("c:x"), "c%3Ax");
    }
}
