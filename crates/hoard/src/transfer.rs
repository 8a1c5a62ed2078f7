//! `hoard push` and `hoard pull`: one file into or out of a generic
//! repository, streamed in bounded memory, with progress. A push sends
//! the file's sha256 (`X-Checksum-Sha256`), so the node stores exactly
//! the bytes that were read here; a pull checks what arrives against the
//! node's ETag (the sha256) before the file takes its name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use hoard_core::{GenericPath, Sha256Hasher};
use tokio::io::AsyncWriteExt as _;

use crate::progress::Progress;

/// The URL of `path` in `repo`, each segment escaped.
fn file_url(url: &str, repo: &str, path: &GenericPath, at: Option<u64>) -> String {
    let at = at.map_or(String::new(), |serial| format!("+at/{serial}/"));
    format!(
        "{}/{repo}/{at}{}",
        url.trim_end_matches('/'),
        escape_path(path.as_str())
    )
}

fn client() -> anyhow::Result<reqwest::Client> {
    // Redirects are followed by hand: a streamed body cannot be sent
    // twice by reqwest, and a push sends its file again to the leader that
    // a replica names (see `push`).
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// The node's message in an error answer (its body's text, or npm's and
/// the admin API's `error` field).
async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let why = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(text);
    format!("{status}: {}", why.trim())
}

pub async fn push(
    url: &str,
    repo: &str,
    local: &Path,
    dest: &str,
    token: Option<&str>,
) -> anyhow::Result<std::process::ExitCode> {
    let path: GenericPath = dest.parse()?;
    let len = tokio::fs::metadata(local)
        .await
        .with_context(|| format!("open {}", local.display()))?
        .len();
    let mut progress = Progress::bytes("hashing", len);
    let sha256 = {
        let local = local.to_owned();
        let hashing = tokio::task::spawn_blocking(move || crate::export::sha256_of(&local));
        hashing.await??
    };
    progress.update(len, Some(len), "");
    progress.finish();

    // A replica answers a write with a redirect to its leader: the file is
    // sent again, there.
    let mut target = file_url(url, repo, &path, None);
    let mut hops = 0;
    let response = loop {
        let response = send_file(&target, local, len, &sha256, token).await?;
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match location {
            Some(next)
                if hops < 3
                    && (status == reqwest::StatusCode::TEMPORARY_REDIRECT
                        || status == reqwest::StatusCode::PERMANENT_REDIRECT) =>
            {
                eprintln!("{target} sends writes to {next}");
                target = next;
                hops += 1;
            }
            _ => break response,
        }
    };
    let status = response.status();
    if !status.is_success() {
        bail!("{target} refused the file: {}", refusal(response).await);
    }
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    let serial = &answer["serial"];
    if status == reqwest::StatusCode::CREATED {
        eprintln!("stored {repo}/{path} ({len} bytes, sha256 {sha256}) at serial {serial}");
    } else {
        eprintln!("{repo}/{path} was already stored with these bytes (serial {serial})");
    }
    println!("{target}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// One PUT of the file at `local`, streamed from disk with a progress bar.
async fn send_file(
    target: &str,
    local: &Path,
    len: u64,
    sha256: &str,
    token: Option<&str>,
) -> anyhow::Result<reqwest::Response> {
    let file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("open {}", local.display()))?;
    let bar = std::sync::Arc::new(std::sync::Mutex::new(Progress::bytes("pushing", len)));
    let shown = bar.clone();
    let mut sent = 0u64;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
        if let Ok(bytes) = &chunk {
            sent += bytes.len() as u64;
            if let Ok(mut p) = shown.lock() {
                p.update(sent, Some(len), "");
            }
        }
        chunk
    });
    let mut request = client()?
        .put(target)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .header(hoard_server::CHECKSUM_HEADER, sha256)
        .body(reqwest::Body::wrap_stream(stream));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("PUT {target}"));
    if let Ok(p) = bar.lock() {
        p.clear();
    }
    response
}

pub async fn pull(
    url: &str,
    repo: &str,
    src: &str,
    out: Option<PathBuf>,
    at: Option<u64>,
    token: Option<&str>,
) -> anyhow::Result<std::process::ExitCode> {
    let path: GenericPath = src.parse()?;
    let out = match out {
        Some(out) if out.is_dir() => out.join(path.file_name()),
        Some(out) => out,
        None => PathBuf::from(path.file_name()),
    };
    let source = file_url(url, repo, &path, at);
    let mut request = client()?.get(&source);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("GET {source}"))?;
    if !response.status().is_success() {
        bail!("{source}: {}", refusal(response).await);
    }
    let expected = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_owned());
    let len = response.content_length();

    // Written beside its destination, then renamed: a reader never sees a
    // half-written file under the name.
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.file_name().to_owned());
    let part = dir.join(format!(".{name}.part"));
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("create {}", part.display()))?;
    let result = async {
        let mut progress = match len {
            Some(len) => Progress::bytes("pulling", len),
            None => Progress::new("pulling", None),
        };
        let mut hasher = Sha256Hasher::new();
        let mut received = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.with_context(|| format!("reading {source}"))?;
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
            received += chunk.len() as u64;
            progress.update(received, len, "");
        }
        progress.finish();
        file.flush().await?;
        file.sync_all().await?;
        let got = hasher.finish().to_hex();
        if let Some(expected) = &expected {
            if *expected != got {
                bail!("{source}: the bytes received hash to {got}, not {expected} as the node says; nothing was written");
            }
        }
        Ok((received, got))
    }
    .await;
    let (received, sha256) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, &out).with_context(|| format!("rename to {}", out.display()))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    eprintln!(
        "pulled {repo}/{path} to {} ({received} bytes, sha256 {sha256})",
        out.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// Whether `repo` on the node at `url` is a generic repository: its root
/// answers a JSON listing (a PyPI or npm repository's does not).
pub async fn is_generic(url: &str, repo: &str, token: Option<&str>) -> anyhow::Result<bool> {
    let target = format!("{}/{repo}/", url.trim_end_matches('/'));
    let mut request = client()?
        .get(&target)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {target}"))?;
    if !response.status().is_success() {
        return Ok(false);
    }
    let listing: serde_json::Value = response.json().await.unwrap_or_default();
    Ok(listing["entries"].is_array())
}

/// One file of a generic repository, as its listing gives it.
struct ListedFile {
    path: String,
    sha256: String,
    size: u64,
    time: String,
}

/// Every file under `dir` (`""` or `a/b/`) of a generic repository as of
/// `serial`, walking its listings.
async fn list_tree(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
) -> anyhow::Result<Vec<ListedFile>> {
    let mut files = Vec::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let target = format!("{base}{}", escape_path(&dir));
        let mut request = http
            .get(&target)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            bail!("{target}: {}", refusal(response).await);
        }
        let listing: serde_json::Value = response.json().await?;
        for entry in listing["entries"].as_array().into_iter().flatten() {
            let name = entry["name"].as_str().context("an entry without a name")?;
            // The name becomes a path: only what the node itself accepts.
            GenericPath::check_segment(name)?;
            match entry["type"].as_str() {
                Some("directory") => dirs.push(format!("{dir}{name}/")),
                _ => files.push(ListedFile {
                    path: format!("{dir}{name}"),
                    sha256: entry["sha256"].as_str().unwrap_or_default().to_owned(),
                    size: entry["size"].as_u64().unwrap_or_default(),
                    time: entry["time"].as_str().unwrap_or_default().to_owned(),
                }),
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A path's segments, each escaped, joined by `/` (a trailing `/` kept).
fn escape_path(path: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    path.split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// `hoard export` of a generic repository: every file at
/// `files/{path}`, checked against its sha256, and the manifest (with
/// paths, digests, sizes and upload times) that `hoard import` reads.
pub async fn export_generic(
    url: &str,
    repo: &str,
    to: &Path,
    at: Option<u64>,
    token: Option<&str>,
) -> anyhow::Result<std::process::ExitCode> {
    let http = client()?;
    let root = format!("{}/{repo}/", url.trim_end_matches('/'));
    let serial = match at {
        Some(serial) => serial,
        None => {
            let mut request = http.head(&root);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request
                .send()
                .await?
                .headers()
                .get("x-hoard-serial")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .context("the node did not say its serial")?
        }
    };
    let base = format!("{root}+at/{serial}/");
    let files = list_tree(&http, &base, token).await?;
    let mut progress = Progress::new("export", Some(files.len() as u64));
    let get = |target: String| {
        let request = http.get(target);
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    };
    let (mut written, mut kept, mut bytes) = (0, 0, 0);
    let mut manifest = Vec::new();
    for (i, file) in files.iter().enumerate() {
        progress.update(i as u64, Some(files.len() as u64), &file.path);
        let mut dest = to.join("files");
        for segment in file.path.split('/') {
            dest.push(segment);
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        let source = format!("{base}{}", escape_path(&file.path));
        if crate::export::fetch_verified(&get, &source, &dest, &file.sha256).await? {
            kept += 1;
        } else {
            written += 1;
            bytes += file.size;
        }
        manifest.push(serde_json::json!({
            "path": file.path,
            "sha256": file.sha256,
            "size": file.size,
            "upload_time": file.time,
        }));
    }
    progress.finish();
    crate::export::write_manifest(to, "generic", repo, serial, url, ("files", manifest))?;
    println!(
        "exported {repo} as of serial {serial} to {}: {} file(s) written ({bytes} bytes), {kept} already there",
        to.display(),
        written,
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// What a generic import does with one file.
struct Planned {
    local: PathBuf,
    path: String,
    upload_time: Option<String>,
}

/// The files to import into a generic repository: a generic export's
/// (its manifest names them, under `files/`, with their upload times), or
/// every file under `dir` at its relative path.
fn plan_generic_import(dir: &Path) -> anyhow::Result<Vec<Planned>> {
    let manifest_path = dir.join(crate::export::MANIFEST);
    if let Ok(text) = std::fs::read(&manifest_path) {
        let manifest: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        if manifest["format"].as_str() == Some("generic") {
            let mut planned = Vec::new();
            for f in manifest["files"].as_array().into_iter().flatten() {
                let path: GenericPath = f["path"].as_str().unwrap_or_default().parse()?;
                let mut local = dir.join("files");
                for segment in path.segments() {
                    local.push(segment);
                }
                planned.push(Planned {
                    local,
                    path: path.to_string(),
                    upload_time: f["upload_time"].as_str().map(str::to_owned),
                });
            }
            return Ok(planned);
        }
    }
    let mut planned = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in
            std::fs::read_dir(&current).with_context(|| format!("read {}", current.display()))?
        {
            let local = entry?.path();
            let name = local.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') {
                continue; // temp files of an export or a pull
            }
            if local.is_dir() {
                stack.push(local);
                continue;
            }
            let relative = local
                .strip_prefix(dir)
                .ok()
                .and_then(|r| r.to_str())
                .with_context(|| format!("{} is not a UTF-8 path", local.display()))?;
            let path: GenericPath = relative
                .parse()
                .with_context(|| format!("{} cannot be a path", local.display()))?;
            planned.push(Planned {
                local,
                path: path.to_string(),
                upload_time: None,
            });
        }
    }
    planned.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(planned)
}

/// `hoard import` into a generic repository, `jobs` files at a time. A
/// path the repository holds with the same sha256 is skipped, so a second
/// run imports nothing; one with other bytes is refused.
pub async fn import_generic(
    url: &str,
    repo: &str,
    dir: &Path,
    jobs: usize,
    token: Option<String>,
    keep_upload_times: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let planned = plan_generic_import(dir)?;
    let total = planned.len() as u64;
    let http = client()?;
    let root = format!("{}/{repo}", url.trim_end_matches('/'));
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for plan in planned {
        let permit = semaphore.clone().acquire_owned().await?;
        let http = http.clone();
        let target = format!("{root}/{}", escape_path(&plan.path));
        let token = token.clone();
        tasks.spawn(async move {
            let outcome =
                import_one(&http, &target, &plan, token.as_deref(), keep_upload_times).await;
            drop(permit);
            (plan.path, outcome)
        });
    }
    let mut progress = Progress::new("import", Some(total));
    let (mut imported, mut present, mut bytes) = (0, 0, 0u64);
    let mut refused = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (path, outcome) = done?;
        match outcome? {
            Ok(Some(len)) => {
                imported += 1;
                bytes += len;
            }
            Ok(None) => present += 1,
            Err(why) => {
                progress.println(&format!("refused {path}: {why}"));
                refused.push(format!("{path}: {why}"));
            }
        }
        progress.update((imported + present + refused.len()) as u64, Some(total), "");
    }
    progress.finish();
    println!(
        "imported into {repo}: {imported} file(s) ({bytes} bytes), {present} already present, {} refused",
        refused.len()
    );
    for r in &refused {
        println!("  refused: {r}");
    }
    Ok(if refused.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// Imports one file: `Ok(Ok(Some(bytes)))` stored, `Ok(Ok(None))` there
/// already, `Ok(Err(why))` refused by the node.
async fn import_one(
    http: &reqwest::Client,
    target: &str,
    plan: &Planned,
    token: Option<&str>,
    keep_upload_times: bool,
) -> anyhow::Result<Result<Option<u64>, String>> {
    let local = plan.local.clone();
    let sha256 = tokio::task::spawn_blocking(move || crate::export::sha256_of(&local))
        .await?
        .with_context(|| format!("read {}", plan.local.display()))?;
    let mut head = http.head(target);
    if let Some(token) = token {
        head = head.bearer_auth(token);
    }
    let existing = head.send().await?;
    if existing.status().is_success() {
        let etag = existing
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned());
        return Ok(if etag.as_deref() == Some(sha256.as_str()) {
            Ok(None)
        } else {
            Err(format!(
                "the repository has other bytes at this path (sha256 {})",
                etag.unwrap_or_default()
            ))
        });
    }
    let file = tokio::fs::File::open(&plan.local).await?;
    let len = file.metadata().await?.len();
    let mut request = http
        .put(target)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .header(hoard_server::CHECKSUM_HEADER, &sha256)
        .body(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::new(file),
        ));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(time) = plan.upload_time.as_ref().filter(|_| keep_upload_times) {
        request = request.header(hoard_server::UPLOAD_TIME_HEADER, time);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("PUT {target}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(Ok(Some(len)))
    } else if status.is_client_error() {
        Ok(Err(refusal(response).await))
    } else {
        bail!("{target}: {}", refusal(response).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_escape_each_segment() {
        let path: GenericPath = "images/app 1.2#x.box".parse().unwrap();
        assert_eq!(
            file_url("http://n:4040/", "media", &path, None),
            "http://n:4040/media/images/app%201.2%23x.box"
        );
        assert_eq!(
            file_url("http://n:4040", "media", &path, Some(7)),
            "http://n:4040/media/+at/7/images/app%201.2%23x.box"
        );
    }
}
