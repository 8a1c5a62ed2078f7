//! `hoard prefetch`: fills a node's cache with every file that a pinned
//! requirements file or an npm lockfile names, so that a later build
//! succeeds with the upstreams out of reach. It asks the node as any
//! client would (the project page or packument, then a `HEAD` of each
//! file), so the node fetches, checks and records what it lacks; `--hash`
//! pins and locked integrities are checked against what the node lists
//! before anything is fetched.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use hoard_npm::{
    check_locked_integrity, parse_package_lock, LockedPackage, PackageName, ABBREVIATED_MEDIA_TYPE,
};
use hoard_pypi::{parse_dist_filename, parse_requirements, PinnedRequirement};

use crate::progress::Progress;

const JSON_ACCEPT: &str = "application/vnd.pypi.simple.v1+json";

/// Prefetches what `file` names: an npm lockfile (`.json`, or text that
/// starts as a JSON object, which no requirements file does) the npm way,
/// anything else as a requirements file. `repo` is required for a
/// lockfile: there is no default npm repository to fall back on.
pub async fn prefetch(
    url: &str,
    repo: Option<&str>,
    file: &Path,
    token: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    if json {
        let repo = repo.context(
            "name the npm repository to fill with --repo (an npm lockfile cannot go to the default pypi)",
        )?;
        let node = Node::new(url, repo, token, Auth::Bearer)?;
        prefetch_npm(&node, file, &text).await
    } else {
        let node = Node::new(url, repo.unwrap_or("pypi"), token, Auth::PypiToken)?;
        prefetch_pypi(&node, file, &text).await
    }
}

/// How a client of each ecosystem sends a token (the node accepts both).
#[derive(Clone, Copy)]
enum Auth {
    /// `npm` sends `Authorization: Bearer`.
    Bearer,
    /// pip and twine send Basic auth as user `__token__`.
    PypiToken,
}

/// One repository of the node, asked as a client would.
struct Node<'a> {
    client: reqwest::Client,
    /// `{url}/{repo}`, without a trailing slash.
    root: String,
    repo: &'a str,
    token: Option<&'a str>,
    auth: Auth,
}

impl<'a> Node<'a> {
    fn new(url: &str, repo: &'a str, token: Option<&'a str>, auth: Auth) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()?;
        Ok(Node {
            client,
            root: format!("{}/{repo}", url.trim_end_matches('/')),
            repo,
            token,
            auth,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        accept: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self.client.request(method.clone(), url);
        request = match (self.token, self.auth) {
            (None, _) => request,
            (Some(t), Auth::Bearer) => request.bearer_auth(t),
            (Some(t), Auth::PypiToken) => request.basic_auth("__token__", Some(t)),
        };
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))
    }

    /// GETs a JSON document; `what` names it in errors.
    async fn get_json(
        &self,
        url: &str,
        accept: &str,
        what: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let resp = self.send(reqwest::Method::GET, url, Some(accept)).await?;
        let status = resp.status();
        // An unreadable body leaves the status to speak for itself.
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("{what} answered {status}: {}", error_message(&text));
        }
        serde_json::from_str(&text).with_context(|| format!("{url} is not {what} in JSON"))
    }

    /// Makes the node hold the file; `true` when it already did.
    async fn ensure_cached(&self, url: &str) -> anyhow::Result<bool> {
        let head = self.send(reqwest::Method::HEAD, url, None).await?;
        if head.status().is_success() {
            return Ok(was_cached(&head));
        }
        // A HEAD answer has no body: ask again for the node's reason. A
        // node that refuses HEAD but serves the GET caches the file all
        // the same, if the download is read to its end.
        let mut resp = self.send(reqwest::Method::GET, url, None).await?;
        let status = resp.status();
        if status.is_success() {
            let cached = was_cached(&resp);
            while resp.chunk().await?.is_some() {}
            return Ok(cached);
        }
        let text = resp.text().await.unwrap_or_default();
        anyhow::bail!("{status}: {}", error_message(&text))
    }
}

/// A download's `X-Hoard-Cache`: `miss` when the node fetched it from the
/// upstream for this request. A node that does not say is not counted as
/// having fetched anything.
fn was_cached(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get("x-hoard-cache")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|state| state != "miss")
}

/// The reason in an error body: the `error` of npm's `{"error": …}`, or
/// the text itself.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// What became of the files of one run, reported as it goes: a line per
/// item and file, and on a terminal a bar under them.
struct Summary {
    fetched: usize,
    cached: usize,
    failed: Vec<String>,
    progress: Progress,
}

impl Summary {
    fn new(items: usize) -> Summary {
        Summary {
            fetched: 0,
            cached: 0,
            failed: Vec::new(),
            progress: Progress::new("prefetch", Some(items as u64)),
        }
    }

    fn item(&mut self, i: usize, n: usize, item: impl Display) {
        self.progress.println(&format!("[{}/{n}] {item}", i + 1));
        self.progress.set_bar(i as u64, &item.to_string());
    }

    /// One file's outcome ([`Node::ensure_cached`]'s answer).
    fn file(&mut self, label: &str, got: anyhow::Result<bool>) {
        match got {
            Ok(true) => {
                self.cached += 1;
                self.progress
                    .println(&format!("      already cached  {label}"));
            }
            Ok(false) => {
                self.fetched += 1;
                self.progress
                    .println(&format!("      fetched         {label}"));
            }
            Err(e) => {
                self.progress
                    .println(&format!("      FAILED          {label}: {e:#}"));
                self.failed.push(format!("{label}: {e:#}"));
            }
        }
    }

    /// A failure of a whole item, before any of its files.
    fn item_failed(&mut self, item: impl Display, e: &anyhow::Error) {
        self.progress.println(&format!("      FAILED: {e:#}"));
        self.failed.push(format!("{item}: {e:#}"));
    }

    /// Prints the totals; failure when anything failed.
    fn finish(self, items: usize, noun: &str, repo: &str) -> ExitCode {
        self.progress.finish();
        println!(
            "prefetched {items} {noun}(s) into {repo}: {} file(s) fetched, {} already cached, {} failed",
            self.fetched,
            self.cached,
            self.failed.len()
        );
        for failure in &self.failed {
            println!("  failed: {failure}");
        }
        if self.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

async fn prefetch_pypi(node: &Node<'_>, file: &Path, text: &str) -> anyhow::Result<ExitCode> {
    let (pins, problems) = parse_requirements(text);
    let mut summary = Summary::new(pins.len());
    for p in problems {
        summary.failed.push(format!(
            "{}:{}: {} ({})",
            file.display(),
            p.line,
            p.text,
            p.reason
        ));
    }
    let index = format!("{}/simple/", node.root);
    for (i, pin) in pins.iter().enumerate() {
        let item = format!("{}=={}", pin.project, pin.version);
        summary.item(i, pins.len(), &item);
        let files = match files_of(node, &index, pin).await {
            Ok(files) => files,
            Err(e) => {
                summary.item_failed(&item, &e);
                continue;
            }
        };
        for (filename, file_url, metadata) in files {
            // Resolvers read PEP 658 metadata before any wheel: an
            // offline build needs it cached too.
            let got = match node.ensure_cached(&file_url).await {
                Ok(cached) if metadata => {
                    let metadata_url = format!("{file_url}.metadata");
                    node.ensure_cached(&metadata_url).await.map(|m| cached && m)
                }
                other => other,
            };
            summary.file(&filename, got);
        }
    }
    Ok(summary.finish(pins.len(), "requirement", node.repo))
}

/// The files of the pinned version (those with a pinned digest, when the
/// line has `--hash` pins), as (filename, absolute URL, whether PEP 658
/// metadata is offered).
async fn files_of(
    node: &Node<'_>,
    index: &str,
    pin: &PinnedRequirement,
) -> anyhow::Result<Vec<(String, String, bool)>> {
    let page_url = format!("{index}{}/", pin.project);
    let page = node
        .get_json(&page_url, JSON_ACCEPT, "the project page")
        .await?;
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

async fn prefetch_npm(node: &Node<'_>, file: &Path, text: &str) -> anyhow::Result<ExitCode> {
    let lock = parse_package_lock(text).with_context(|| format!("reading {}", file.display()))?;
    let mut summary = Summary::new(lock.packages.len());
    for p in &lock.problems {
        summary
            .failed
            .push(format!("{}: {}: {}", file.display(), p.path, p.reason));
    }
    // The build fetches these from their own sources, so the mirror cannot
    // stand in for them; say so, but a lockfile with a git dependency is
    // no failure of the prefetch.
    for s in &lock.skipped {
        eprintln!("not from a registry, skipped: {} ({})", s.path, s.source);
    }
    let n = lock.packages.len();
    for (i, package) in lock.packages.iter().enumerate() {
        let item = format!("{}@{}", package.name, package.version);
        summary.item(i, n, &item);
        let got = match tarball_of(node, package).await {
            Ok(tarball) => node.ensure_cached(&tarball).await,
            Err(e) => Err(e),
        };
        summary.file(&item, got);
    }
    if !lock.skipped.is_empty() {
        println!(
            "{} package(s) not from a registry were skipped (git, file: or tarball URLs)",
            lock.skipped.len()
        );
    }
    Ok(summary.finish(n, "package", node.repo))
}

/// The absolute tarball URL of the locked version, once the packument's
/// digests agree with the locked integrity.
async fn tarball_of(node: &Node<'_>, package: &LockedPackage) -> anyhow::Result<String> {
    // npm asks for a scoped packument as `@scope%2fname`.
    let name = PackageName::parse(&package.name)?;
    let url = format!("{}/{}", node.root, name.escaped());
    let packument = node
        .get_json(&url, ABBREVIATED_MEDIA_TYPE, "the packument")
        .await?;
    let dist = &packument["versions"][package.version.as_str()]["dist"];
    if !dist.is_object() {
        anyhow::bail!("{url} lists no version {}", package.version);
    }
    if let Some(locked) = &package.integrity {
        check_locked_integrity(locked, dist["integrity"].as_str(), dist["shasum"].as_str())?;
    }
    let tarball = dist["tarball"]
        .as_str()
        .with_context(|| format!("{url} names no tarball for {}", package.version))?;
    let base = reqwest::Url::parse(&url)?;
    Ok(base.join(tarball)?.to_string())
}
