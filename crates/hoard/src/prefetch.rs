//! `hoard prefetch`: fills a node's cache with every file a pinned
//! requirements file names, so that a later build succeeds with the
//! upstreams out of reach. It asks the node as any client would (the
//! project page, then a `HEAD` of each file), so the node fetches, checks
//! and records what it lacks; `--hash` pins are checked against the
//! digests the node lists before anything is fetched.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use hoard_pypi::{parse_dist_filename, parse_requirements, PinnedRequirement};

const JSON_ACCEPT: &str = "application/vnd.pypi.simple.v1+json";

/// What became of the files of one run.
#[derive(Default)]
struct Summary {
    fetched: usize,
    cached: usize,
    failed: Vec<String>,
}

pub async fn prefetch_pypi(
    url: &str,
    repo: &str,
    requirements: &Path,
    token: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let (pins, problems) = parse_requirements(&text);
    let mut summary = Summary::default();
    for p in problems {
        summary.failed.push(format!(
            "{}:{}: {} ({})",
            requirements.display(),
            p.line,
            p.text,
            p.reason
        ));
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()?;
    let index = format!("{}/{repo}/simple/", url.trim_end_matches('/'));
    for (i, pin) in pins.iter().enumerate() {
        eprintln!(
            "[{}/{}] {}=={}",
            i + 1,
            pins.len(),
            pin.project,
            pin.version
        );
        match files_of(&client, &index, pin, token).await {
            Ok(files) => {
                for (filename, file_url, metadata) in files {
                    // Resolvers read PEP 658 metadata before any wheel: an
                    // offline build needs it cached too.
                    let got = match fetch(&client, &file_url, token).await {
                        Ok(cached) if metadata => {
                            let metadata_url = format!("{file_url}.metadata");
                            fetch(&client, &metadata_url, token)
                                .await
                                .map(|m| cached && m)
                        }
                        other => other,
                    };
                    match got {
                        Ok(true) => {
                            summary.cached += 1;
                            eprintln!("      already cached  {filename}");
                        }
                        Ok(false) => {
                            summary.fetched += 1;
                            eprintln!("      fetched         {filename}");
                        }
                        Err(e) => {
                            eprintln!("      FAILED          {filename}: {e}");
                            summary.failed.push(format!("{filename}: {e}"));
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("      FAILED: {e}");
                summary
                    .failed
                    .push(format!("{}=={}: {e}", pin.project, pin.version));
            }
        }
    }
    println!(
        "prefetched {} requirement(s) into {repo}: {} file(s) fetched, {} already cached, {} failed",
        pins.len(),
        summary.fetched,
        summary.cached,
        summary.failed.len()
    );
    for failure in &summary.failed {
        println!("  failed: {failure}");
    }
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn authorized(request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => request.basic_auth("__token__", Some(t)),
        None => request,
    }
}

/// The files of the pinned version (those with a pinned digest, when the
/// line has `--hash` pins), as (filename, absolute URL, whether PEP 658
/// metadata is offered).
async fn files_of(
    client: &reqwest::Client,
    index: &str,
    pin: &PinnedRequirement,
    token: Option<&str>,
) -> anyhow::Result<Vec<(String, String, bool)>> {
    let page_url = format!("{index}{}/", pin.project);
    let resp = authorized(client.get(&page_url), token)
        .header(reqwest::header::ACCEPT, JSON_ACCEPT)
        .send()
        .await
        .with_context(|| format!("GET {page_url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("the project page answered {status}: {}", text.trim());
    }
    let page: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{page_url} is not PEP 691 JSON"))?;
    let base = reqwest::Url::parse(&page_url)?;
    let mut of_version = Vec::new();
    for f in page["files"].as_array().into_iter().flatten() {
        let (Some(filename), Some(href)) = (f["filename"].as_str(), f["url"].as_str()) else {
            continue;
        };
        let matches_version = parse_dist_filename(filename).is_ok_and(|d| d.version == pin.version);
        if !matches_version {
            continue;
        }
        let sha = f["hashes"]["sha256"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let metadata = !matches!(
            f.get("core-metadata")
                .or_else(|| f.get("data-dist-info-metadata")),
            None | Some(serde_json::Value::Bool(false))
        );
        let url = base.join(href)?.to_string();
        of_version.push(((filename.to_owned(), url, metadata), sha));
    }
    if of_version.is_empty() {
        anyhow::bail!("{page_url} lists no file of version {}", pin.version);
    }
    if pin.sha256.is_empty() {
        return Ok(of_version.into_iter().map(|(file, _)| file).collect());
    }
    let listed: Vec<String> = of_version.iter().map(|(f, _)| f.0.clone()).collect();
    let pinned: Vec<(String, String, bool)> = of_version
        .into_iter()
        .filter(|(_, sha)| pin.sha256.contains(sha))
        .map(|(file, _)| file)
        .collect();
    if pinned.is_empty() {
        anyhow::bail!(
            "no file of {}=={} has a pinned --hash (listed: {})",
            pin.project,
            pin.version,
            listed.join(", ")
        );
    }
    Ok(pinned)
}

/// Makes the node hold the file; `true` when it already did.
async fn fetch(client: &reqwest::Client, url: &str, token: Option<&str>) -> anyhow::Result<bool> {
    let resp = authorized(client.head(url), token).send().await?;
    if resp.status().is_success() {
        let state = resp
            .headers()
            .get("x-hoard-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("hit");
        return Ok(state == "hit");
    }
    // A HEAD answer has no body: ask again for the node's reason.
    let resp = authorized(client.get(url), token).send().await?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    anyhow::bail!("{status}: {}", text.trim())
}
