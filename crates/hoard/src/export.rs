//! `hoard export --repo R --to DIR [--at SERIAL]`: a PyPI repository as a
//! static index, read from any node over its own Simple API (so a replica
//! serves an export as well as the leader). The tree:
//!
//! - `files/{project}/{filename}` (and `{filename}.metadata`, PEP 658);
//! - `simple/index.html` and `simple/{project}/index.html` (PEP 503, with
//!   relative links, yanks and `data-requires-python`), and `index.json`
//!   beside each (PEP 691), so any static file server is an index pip
//!   installs from;
//! - `hoard-export.json`: the manifest (every file with its sha256, size,
//!   upload time and yank), for tools and for a later import.
//!
//! Every file is checked against the sha256 its page lists, written to a
//! temp name, synced and renamed into place. A file already in the tree
//! with the right sha256 is kept, so an interrupted export resumes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use hoard_core::Sha256Hasher;
use hoard_pypi::{
    normalize_project_name, parse_upstream_project, render_index, render_project, sort_versions,
    FileLink, IndexPage, ProjectLink, ProjectPage, SimpleFormat, UpstreamFile, UpstreamFormat,
};
use serde_json::{json, Value};

use crate::progress::Progress;

const JSON_ACCEPT: &str = "application/vnd.pypi.simple.v1+json";
/// The manifest's name in the tree.
pub const MANIFEST: &str = "hoard-export.json";

/// What one export did.
#[derive(Default)]
struct Totals {
    projects: usize,
    written: usize,
    kept: usize,
    bytes: u64,
}

pub async fn export(
    url: &str,
    repo: &str,
    to: &Path,
    at: Option<u64>,
    token: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()?;
    let base = match at {
        Some(serial) => format!("{}/{repo}/+at/{serial}/simple/", url.trim_end_matches('/')),
        None => format!("{}/{repo}/simple/", url.trim_end_matches('/')),
    };
    let get = |target: String| {
        let mut request = client.get(target).header("accept", JSON_ACCEPT);
        if let Some(t) = token {
            request = request.basic_auth("__token__", Some(t));
        }
        request
    };

    let index = get(base.clone())
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let serial = index
        .headers()
        .get("x-hoard-serial")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if !index.status().is_success() {
        let status = index.status();
        bail!(
            "{base} answered {status}: {}",
            index.text().await.unwrap_or_default().trim()
        );
    }
    let index: Value = index
        .json()
        .await
        .context("the index is not PEP 691 JSON")?;
    // As of one serial throughout, even while uploads go on.
    let serial = at.or(serial).context("the node did not say its serial")?;
    let base = format!("{}/{repo}/+at/{serial}/simple/", url.trim_end_matches('/'));
    let mut projects: Vec<String> = index["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    projects.sort_by_key(|p| normalize_project_name(p));

    std::fs::create_dir_all(to.join("simple"))
        .with_context(|| format!("create {}", to.join("simple").display()))?;
    let mut totals = Totals::default();
    let mut manifest = Vec::new();
    let mut links = Vec::new();
    let mut progress = Progress::new("export", Some(projects.len() as u64));
    for (i, name) in projects.iter().enumerate() {
        // The name becomes a path: only what PEP 508 allows.
        if !hoard_pypi::is_valid_project_name(name) {
            bail!("{base} lists a project named {name:?}, which is not a valid project name");
        }
        let normalized = normalize_project_name(name);
        progress.update(i as u64, Some(projects.len() as u64), &normalized);
        let page_url = format!("{base}{normalized}/");
        let response = get(page_url.clone()).send().await?;
        if !response.status().is_success() {
            bail!("{page_url} answered {}", response.status());
        }
        let body = response.bytes().await?;
        let page = parse_upstream_project(UpstreamFormat::Json, &page_url, &body)
            .with_context(|| format!("reading {page_url}"))?;
        if let Some(refused) = page.refused.first() {
            bail!("{page_url}: {}: {}", refused.entry, refused.reason);
        }
        let dir = to.join("files").join(&normalized);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut files = Vec::new();
        for file in &page.files {
            let sha256 = file
                .hashes
                .get("sha256")
                .with_context(|| format!("{}: no sha256 listed", file.filename))?;
            let path = dir.join(&file.filename);
            let kept = fetch_verified(&get, &file.url, &path, sha256).await?;
            let metadata_sha256 = match &file.core_metadata {
                Some(hashes) => {
                    let meta_sha = hashes
                        .get("sha256")
                        .with_context(|| format!("{}.metadata: no sha256", file.filename))?;
                    let meta_path = dir.join(format!("{}.metadata", file.filename));
                    fetch_verified(
                        &get,
                        &format!("{}.metadata", file.url),
                        &meta_path,
                        meta_sha,
                    )
                    .await?;
                    Some(meta_sha.clone())
                }
                None => None,
            };
            let size = std::fs::metadata(&path)?.len();
            if kept {
                totals.kept += 1;
            } else {
                totals.written += 1;
                totals.bytes += size;
            }
            manifest.push(manifest_entry(&normalized, file, sha256, size));
            files.push(static_link(
                &normalized,
                file,
                sha256,
                size,
                metadata_sha256,
            )?);
        }
        let mut versions: Vec<String> = files
            .iter()
            .filter_map(|f| {
                hoard_pypi::parse_dist_filename(&f.filename)
                    .ok()
                    .map(|d| d.version)
            })
            .collect();
        versions.sort();
        versions.dedup();
        sort_versions(&mut versions);
        let page = ProjectPage {
            name: normalized.clone(),
            files,
            versions,
            last_serial: serial,
        };
        let page_dir = to.join("simple").join(&normalized);
        write_page(
            &page_dir,
            "index.html",
            &render_project(&page, SimpleFormat::Html),
        )?;
        write_page(
            &page_dir,
            "index.json",
            &render_project(&page, SimpleFormat::JsonV1),
        )?;
        links.push(ProjectLink {
            name: name.clone(),
            normalized,
        });
        totals.projects += 1;
    }
    progress.finish();
    let index = IndexPage {
        projects: links,
        last_serial: serial,
    };
    let simple = to.join("simple");
    write_page(
        &simple,
        "index.html",
        &render_index(&index, SimpleFormat::Html),
    )?;
    write_page(
        &simple,
        "index.json",
        &render_index(&index, SimpleFormat::JsonV1),
    )?;
    write_manifest(to, "pypi", repo, serial, url, ("files", manifest))?;
    println!(
        "exported {repo} as of serial {serial} to {}: {} projects, {} file(s) written ({} bytes), {} already there",
        to.display(),
        totals.projects,
        totals.written,
        totals.bytes,
        totals.kept
    );
    Ok(ExitCode::SUCCESS)
}

fn manifest_entry(project: &str, file: &UpstreamFile, sha256: &str, size: u64) -> Value {
    json!({
        "project": project,
        "filename": file.filename,
        "path": format!("files/{project}/{}", file.filename),
        "sha256": sha256,
        "size": size,
        "upload_time": file.upload_time,
        "requires_python": file.requires_python,
        "yanked": file.yanked,
    })
}

/// The link a static project page gives: relative, from
/// `simple/{project}/` to `files/{project}/{filename}`.
fn static_link(
    project: &str,
    file: &UpstreamFile,
    sha256: &str,
    size: u64,
    metadata_sha256: Option<String>,
) -> anyhow::Result<FileLink> {
    let upload_time = match &file.upload_time {
        Some(t) => time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("{}: upload time {t:?}", file.filename))?,
        None => time::OffsetDateTime::UNIX_EPOCH,
    };
    Ok(FileLink {
        filename: file.filename.clone(),
        // Wheel and sdist names are URL-safe (PEP 427, PEP 625).
        url: format!("../../files/{project}/{}", file.filename),
        sha256: sha256.to_owned(),
        size,
        upload_time,
        requires_python: file.requires_python.clone(),
        yanked: file.yanked.clone(),
        core_metadata_sha256: metadata_sha256,
    })
}

/// Downloads `url` to `path`, checked against `sha256`: to a temp name,
/// synced, then renamed. `Ok(true)`: the file was there already, intact.
pub(crate) async fn fetch_verified(
    get: &impl Fn(String) -> reqwest::RequestBuilder,
    url: &str,
    path: &Path,
    sha256: &str,
) -> anyhow::Result<bool> {
    if path.is_file() && sha256_of(path)? == sha256 {
        return Ok(true);
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("a file name")?;
    let tmp = path.with_file_name(format!(".{name}.part"));
    let response = get(url.to_owned())
        .send()
        .await
        .with_context(|| format!("cannot fetch {url}"))?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    let mut response = response;
    let mut out =
        std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let mut hasher = Sha256Hasher::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading {url}"))?
    {
        hasher.update(&chunk);
        out.write_all(&chunk)?;
    }
    out.sync_all()?;
    let got = hasher.finish().to_hex();
    if got != sha256 {
        let _ = std::fs::remove_file(&tmp);
        bail!("{url}: the bytes have sha256 {got}, but the page lists {sha256}");
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    Ok(false)
}

/// The hex sha256 of a file, read in 64 KiB pieces.
pub(crate) fn sha256_of(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish().to_hex());
        }
        hasher.update(&buf[..n]);
    }
}

/// Writes the manifest of an export of `format`: where it came from, as
/// of which serial, and its entries (each export's own kind, under
/// `entries.0`).
pub(crate) fn write_manifest(
    to: &Path,
    format: &str,
    repo: &str,
    serial: u64,
    source: &str,
    entries: (&str, Vec<Value>),
) -> anyhow::Result<()> {
    let mut manifest = json!({
        "format": format,
        "repo": repo,
        "serial": serial,
        "source": source,
    });
    manifest[entries.0] = Value::Array(entries.1);
    write_page(to, MANIFEST, &serde_json::to_string_pretty(&manifest)?)
}

pub(crate) fn write_page(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path: PathBuf = dir.join(name);
    let tmp = dir.join(format!(".{name}.part"));
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))?;
    sync_dir(&path)
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
