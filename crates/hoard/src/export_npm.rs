//! `hoard export` of an npm repository, in the registry's layout:
//! `{name}/index.json` (the full packument as of one serial, each
//! `dist.tarball` made relative: `-/{file}.tgz`) and `{name}/-/{file}.tgz`
//! beside it, checked against the packument's `dist.shasum`; and the
//! manifest `hoard-export.json`. `hoard import` publishes the tarballs
//! back, each package's versions oldest first.
//!
//! The packages are found with the registry's own search (empty text,
//! paged), as of the export's serial.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use sha1::Digest as _;

use crate::progress::Progress;

/// Whether `repo` on the node at `url` is an npm registry: it answers
/// npm's ping.
pub async fn is_npm(url: &str, repo: &str, token: Option<&str>) -> anyhow::Result<bool> {
    let target = format!("{}/{repo}/-/ping", url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&target);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {target}"))?;
    Ok(response.status().is_success()
        && response.json::<Value>().await.is_ok_and(|v| v.is_object()))
}

pub async fn export_npm(
    url: &str,
    repo: &str,
    to: &Path,
    at: Option<u64>,
    token: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()?;
    let get = |target: String| {
        let request = http.get(target).header("accept", "application/json");
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    };
    let root = format!("{}/{repo}", url.trim_end_matches('/'));
    let serial = match at {
        Some(serial) => serial,
        None => get(format!("{root}/-/ping"))
            .send()
            .await?
            .headers()
            .get("x-hoard-serial")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .context("the node did not say its serial")?,
    };
    let base = format!("{root}/+at/{serial}");
    let mut names = Vec::new();
    loop {
        let page_url = format!(
            "{base}/-/v1/search?text=&size={}&from={}",
            hoard_npm::MAX_SEARCH_SIZE,
            names.len()
        );
        let page: Value = get(page_url.clone())
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("GET {page_url}"))?
            .json()
            .await?;
        let objects = page["objects"].as_array().cloned().unwrap_or_default();
        let before = names.len();
        for o in &objects {
            if let Some(name) = o["package"]["name"].as_str() {
                names.push(name.to_owned());
            }
        }
        let total = page["total"].as_u64().unwrap_or(0) as usize;
        if names.len() >= total || names.len() == before {
            break;
        }
    }
    names.sort();
    names.dedup();

    let mut progress = Progress::new("export", Some(names.len() as u64));
    let (mut written, mut kept, mut bytes) = (0, 0, 0u64);
    let mut manifest = Vec::new();
    for (i, name) in names.iter().enumerate() {
        progress.update(i as u64, Some(names.len() as u64), name);
        let parsed = hoard_npm::PackageName::parse(name)
            .map_err(|e| anyhow::anyhow!("the registry lists a package named {name:?}: {e}"))?;
        let packument_url = format!("{base}/{}", parsed.url_path());
        let mut packument: Value = get(packument_url.clone())
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("GET {packument_url}"))?
            .json()
            .await?;
        // The scope and the name are checked names: safe as directories.
        let dir = name.split('/').fold(to.to_path_buf(), |d, s| d.join(s));
        let tarballs = dir.join("-");
        std::fs::create_dir_all(&tarballs)
            .with_context(|| format!("create {}", tarballs.display()))?;
        let times = packument["time"].clone();
        let versions = packument["versions"]
            .as_object_mut()
            .context("a packument without versions")?;
        for (version, doc) in versions.iter_mut() {
            let dist = &mut doc["dist"];
            let source = dist["tarball"]
                .as_str()
                .context("a version without dist.tarball")?
                .to_owned();
            let shasum = dist["shasum"].as_str().unwrap_or_default().to_owned();
            let file = source
                .rsplit('/')
                .next()
                .filter(|f| f.ends_with(".tgz") && !f.starts_with('.'))
                .with_context(|| format!("{name}@{version}: tarball URL {source}"))?
                .to_owned();
            let dest = tarballs.join(&file);
            if fetch_checked(&get, &source, &dest, &shasum).await? {
                kept += 1;
            } else {
                written += 1;
                bytes += std::fs::metadata(&dest)?.len();
            }
            dist["tarball"] = json!(format!("-/{file}"));
            manifest.push(json!({
                "name": name,
                "version": version,
                "tarball": format!("{name}/-/{file}"),
                "shasum": shasum,
                "integrity": dist["integrity"],
                "time": times[version],
            }));
        }
        crate::export::write_page(
            &dir,
            "index.json",
            &serde_json::to_string_pretty(&packument)?,
        )?;
    }
    progress.finish();
    crate::export::write_manifest(to, "npm", repo, serial, url, ("versions", manifest))?;
    println!(
        "exported {repo} as of serial {serial} to {}: {} packages, {written} tarball(s) written ({bytes} bytes), {kept} already there",
        to.display(),
        names.len(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Downloads a tarball to `path`, checked against npm's hex sha1
/// (`dist.shasum`): to a temp name, synced, then renamed. `Ok(true)`: the
/// file was there already, intact.
async fn fetch_checked(
    get: &impl Fn(String) -> reqwest::RequestBuilder,
    url: &str,
    path: &Path,
    shasum: &str,
) -> anyhow::Result<bool> {
    let sha1_of = |bytes: &[u8]| hex::encode(sha1::Sha1::digest(bytes));
    if let Ok(existing) = std::fs::read(path) {
        if sha1_of(&existing) == shasum {
            return Ok(true);
        }
    }
    let bytes = get(url.to_owned())
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("GET {url}"))?
        .bytes()
        .await?;
    let got = sha1_of(&bytes);
    if got != shasum {
        bail!("{url}: the bytes have sha1 {got}, but the packument lists {shasum}");
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("a file name")?;
    let dir = path.parent().context("a directory")?;
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, &bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(false)
}
