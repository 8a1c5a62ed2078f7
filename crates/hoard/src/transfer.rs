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
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let escaped: Vec<String> = path
        .segments()
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    let at = at.map_or(String::new(), |serial| format!("+at/{serial}/"));
    format!(
        "{}/{repo}/{at}{}",
        url.trim_end_matches('/'),
        escaped.join("/")
    )
}

fn client() -> anyhow::Result<reqwest::Client> {
    // A node forwards writes to its leader itself: never follow a redirect
    // with a body, and never send a token to another host.
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
