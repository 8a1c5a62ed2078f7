//! `hoard import --repo R DIR`: every wheel and sdist under a directory
//! (a CI output dir, or a `hoard export` tree), uploaded through the
//! node's own upload API, so each file is checked exactly as a twine
//! upload is and the leader writes it. Files are hashed off the async
//! threads, several at a time, and streamed, not read into memory. npm
//! tarballs (`.tgz`) are published as `npm publish` would, each package's
//! versions oldest first, so `latest` ends on the newest.
//!
//! Importing a `hoard export` tree, a bandersnatch mirror's, or what
//! `devpi-export` wrote keeps the source's upload times (from the export's
//! manifest, bandersnatch's `web/json/`, or devpi's upload log), sent as
//! `X-Hoard-Upload-Time`, which needs an admin token. A devpi export's
//! users come along with their password hashes, and each index's
//! uploaders own its projects. (`import_offline` writes into a stopped
//! node instead; `transfer` imports into generic repositories.)
//! A file the repository already lists with the same sha256 is skipped
//! before it is sent, so a second run, or one after an interruption,
//! uploads nothing twice. The summary counts imported, already present
//! and refused files, with the node's reasons; refusals exit 1.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use hoard_pypi::{normalize_project_name, parse_dist_filename, DistFilename, DistKind};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::devpi::DevpiExport;
use crate::progress::Progress;

const JSON_ACCEPT: &str = "application/vnd.pypi.simple.v1+json";

/// What became of one file.
enum Outcome {
    Imported(u64),
    Present,
    Refused(String),
}

/// What a directory holds: distributions, and files named like one that
/// do not parse as one (refused up front, with why).
#[derive(Default)]
pub(crate) struct Found {
    pub(crate) dists: Vec<(PathBuf, DistFilename)>,
    /// npm package tarballs.
    pub(crate) tarballs: Vec<PathBuf>,
    pub(crate) bad: Vec<(PathBuf, String)>,
}

pub(crate) fn walk(dir: &Path) -> anyhow::Result<Found> {
    let mut found = Found::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            // Temp files of an export, pages and metadata: not artifacts.
            if name.starts_with('.') {
                continue;
            }
            if name.ends_with(".tgz") {
                found.tarballs.push(path);
                continue;
            }
            if !(name.ends_with(".whl") || name.ends_with(".tar.gz") || name.ends_with(".zip")) {
                continue;
            }
            match parse_dist_filename(name) {
                Ok(dist) => found.dists.push((path, dist)),
                Err(e) => found.bad.push((path, e.to_string())),
            }
        }
    }
    found.dists.sort_by(|a, b| a.1.filename.cmp(&b.1.filename));
    found.tarballs.sort();
    Ok(found)
}

/// One npm tarball, read and turned into its publish document.
struct PackedVersion {
    path: PathBuf,
    version: String,
    document: Value,
    tarball: Vec<u8>,
}

/// The counts of one run.
#[derive(Default)]
pub(crate) struct Summary {
    pub(crate) imported: usize,
    pub(crate) present: usize,
    pub(crate) bytes: u64,
    pub(crate) refused: Vec<String>,
}

impl Summary {
    pub(crate) fn done(&self) -> usize {
        self.imported + self.present + self.refused.len()
    }

    pub(crate) fn refuse(&mut self, path: &Path, why: String, progress: &Progress) {
        progress.println(&format!("refused {}: {why}", path.display()));
        self.refused.push(format!("{}: {why}", path.display()));
    }

    fn add(
        &mut self,
        path: &Path,
        outcome: anyhow::Result<Outcome>,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        match outcome? {
            Outcome::Imported(len) => {
                self.imported += 1;
                self.bytes += len;
            }
            Outcome::Present => self.present += 1,
            Outcome::Refused(why) => self.refuse(path, why, progress),
        }
        Ok(())
    }
}

/// The upload times a source records, by filename (RFC 3339): an
/// export's manifest, or a bandersnatch mirror's `web/json/{project}`
/// documents (PyPI's JSON API: `releases` and `urls`).
pub(crate) fn source_times(dir: &Path) -> anyhow::Result<HashMap<String, String>> {
    let mut times = HashMap::new();
    let manifest = dir.join(crate::export::MANIFEST);
    if let Ok(text) = std::fs::read(&manifest) {
        let manifest: Value = serde_json::from_slice(&text)
            .with_context(|| format!("reading {}", manifest.display()))?;
        for f in manifest["files"].as_array().into_iter().flatten() {
            if let (Some(name), Some(time)) = (f["filename"].as_str(), f["upload_time"].as_str()) {
                times.insert(name.to_owned(), time.to_owned());
            }
        }
    }
    let json_dir = dir.join("web").join("json");
    if let Ok(entries) = std::fs::read_dir(&json_dir) {
        for entry in entries {
            let path = entry?.path();
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            // A page that does not parse gives no times; its files still
            // import, with the import's time.
            let Ok(doc) = serde_json::from_slice::<Value>(&text) else {
                eprintln!("not a JSON API document, skipped: {}", path.display());
                continue;
            };
            times.extend(json_api_times(&doc));
        }
    }
    Ok(times)
}

/// Filename → upload time in a PyPI JSON API document.
fn json_api_times(doc: &Value) -> Vec<(String, String)> {
    let releases = doc["releases"]
        .as_object()
        .into_iter()
        .flat_map(|r| r.values())
        .filter_map(Value::as_array)
        .flatten();
    let urls = doc["urls"].as_array().into_iter().flatten();
    releases
        .chain(urls)
        .filter_map(|f| {
            let name = f["filename"].as_str()?;
            let time = match f["upload_time_iso_8601"].as_str() {
                Some(t) => t.to_owned(),
                // The older field has no zone: it is UTC.
                None => format!("{}Z", f["upload_time"].as_str()?),
            };
            Some((name.to_owned(), time))
        })
        .collect()
}

/// One repository of a node, as an uploader sees it.
struct Target {
    client: reqwest::Client,
    root: String,
    token: Option<String>,
    /// Upload times to keep, by filename (from an export's manifest).
    times: HashMap<String, String>,
    /// Each project's listed files (filename → sha256), asked once.
    listed: Mutex<HashMap<String, Arc<BTreeMap<String, String>>>>,
}

impl Target {
    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => request.basic_auth("__token__", Some(t)),
            None => request,
        }
    }

    async fn listed(&self, project: &str) -> anyhow::Result<Arc<BTreeMap<String, String>>> {
        if let Some(files) = self.listed.lock().await.get(project) {
            return Ok(files.clone());
        }
        // Asked without the lock held: two files of one project may both
        // ask, which costs a page, not the other projects' turn.
        let url = format!("{}/simple/{project}/", self.root);
        let response = self
            .auth(self.client.get(&url).header("accept", JSON_ACCEPT))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let mut files = BTreeMap::new();
        if response.status().is_success() {
            let page: serde_json::Value = response.json().await?;
            for f in page["files"].as_array().into_iter().flatten() {
                if let (Some(name), Some(sha)) =
                    (f["filename"].as_str(), f["hashes"]["sha256"].as_str())
                {
                    files.insert(name.to_owned(), sha.to_owned());
                }
            }
        } else if response.status() != reqwest::StatusCode::NOT_FOUND {
            anyhow::bail!("{url} answered {}", response.status());
        }
        let files = Arc::new(files);
        self.listed
            .lock()
            .await
            .insert(project.to_owned(), files.clone());
        Ok(files)
    }

    /// Publishes one package's tarballs (read and parsed), oldest version
    /// first; each version already there with the same shasum is skipped.
    async fn publish_package(
        &self,
        mut versions: Vec<PackedVersion>,
    ) -> Vec<(PathBuf, anyhow::Result<Outcome>)> {
        versions.sort_by(|a, b| hoard_npm::compare_versions(&a.version, &b.version));
        let mut outcomes = Vec::new();
        let mut listed: Option<Value> = None;
        for v in versions {
            let name = v.document["name"].as_str().unwrap_or_default().to_owned();
            let outcome = self
                .publish_version(&name, &v.version, &v.document, &v.tarball, &mut listed)
                .await;
            outcomes.push((v.path, outcome));
        }
        outcomes
    }

    async fn publish_version(
        &self,
        name: &str,
        version: &str,
        document: &Value,
        tarball: &[u8],
        listed: &mut Option<Value>,
    ) -> anyhow::Result<Outcome> {
        // npm's escaping of a scoped name in a path: `@scope%2fname`.
        let url = format!("{}/{}", self.root, name.replace('/', "%2f"));
        if listed.is_none() {
            let response = self.bearer(self.client.get(&url)).send().await?;
            *listed = Some(if response.status().is_success() {
                response.json().await?
            } else {
                Value::Null
            });
        }
        let ours = &document["versions"][version]["dist"]["shasum"];
        match listed
            .as_ref()
            .map(|p| &p["versions"][version]["dist"]["shasum"])
        {
            Some(Value::String(theirs)) if Some(theirs.as_str()) == ours.as_str() => {
                return Ok(Outcome::Present)
            }
            Some(Value::String(theirs)) => {
                return Ok(Outcome::Refused(format!(
                    "the repository has another {name}@{version} (shasum {theirs})"
                )))
            }
            _ => {}
        }
        let response = self
            .bearer(self.client.put(&url).json(document))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(Outcome::Imported(tarball.len() as u64))
        } else if status.is_client_error() {
            let why = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            Ok(Outcome::Refused(format!("{status}: {}", why.trim())))
        } else {
            anyhow::bail!("{url} answered {status}: {}", text.trim())
        }
    }

    fn bearer(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    /// twine's upload form, with the file streamed from disk.
    async fn form(
        &self,
        path: &Path,
        dist: &DistFilename,
        sha256: &str,
    ) -> anyhow::Result<reqwest::multipart::Form> {
        let file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let content = reqwest::multipart::Part::stream_with_length(body, len)
            .file_name(dist.filename.clone())
            .mime_str("application/octet-stream")?;
        let (filetype, pyversion) = match dist.kind {
            DistKind::Sdist => ("sdist", "source"),
            DistKind::Wheel => ("bdist_wheel", "py3"),
        };
        Ok(reqwest::multipart::Form::new()
            .text(":action", "file_upload")
            .text("protocol_version", "1")
            .text("metadata_version", "2.1")
            .text("name", dist.name.clone())
            .text("version", dist.version.clone())
            .text("filetype", filetype)
            .text("pyversion", pyversion)
            .text("sha256_digest", sha256.to_owned())
            .part("content", content))
    }

    async fn import(&self, path: &Path, dist: &DistFilename) -> anyhow::Result<Outcome> {
        let hashed = path.to_path_buf();
        let sha256 = tokio::task::spawn_blocking(move || crate::export::sha256_of(&hashed))
            .await?
            .with_context(|| format!("read {}", path.display()))?;
        let project = normalize_project_name(&dist.name);
        if let Some(listed) = self.listed(&project).await?.get(&dist.filename) {
            return Ok(if *listed == sha256 {
                Outcome::Present
            } else {
                Outcome::Refused(format!(
                    "the repository has another file of this name (sha256 {listed})"
                ))
            });
        }
        let url = format!("{}/", self.root);
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let mut request = self.client.post(&url);
            if let Some(time) = self.times.get(&dist.filename) {
                request = request.header(hoard_server::UPLOAD_TIME_HEADER, time);
            }
            let response = self
                .auth(request.multipart(self.form(path, dist, &sha256).await?))
                .send()
                .await;
            match response {
                // A leader change, or a replica between leaders: the
                // upload was not taken; it is safe to send again.
                Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE && attempt < 5 => {}
                Err(e) if e.is_connect() && attempt < 5 => {}
                other => break other.with_context(|| format!("cannot reach {url}"))?,
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        };
        let len = tokio::fs::metadata(path).await?.len();
        let status = response.status();
        if status.is_success() {
            return Ok(Outcome::Imported(len));
        }
        let text = response.text().await.unwrap_or_default();
        if status.is_client_error() {
            Ok(Outcome::Refused(format!("{status}: {}", text.trim())))
        } else {
            anyhow::bail!("{url} answered {status}: {}", text.trim())
        }
    }
}

/// What to import from.
pub enum Source {
    /// Every distribution and npm tarball under a directory: CI output, a
    /// `hoard export` tree, or a bandersnatch mirror (`web/`).
    Dir(PathBuf),
    /// What `devpi-export` wrote: one index's files, or every index's,
    /// and the users.
    Devpi { dir: PathBuf, index: Option<String> },
}

/// The release files of a devpi export (of one index, or all), as a
/// [`Found`], and their upload times by filename.
fn devpi_found(
    export: &DevpiExport,
    dir: &Path,
    index: Option<&str>,
) -> anyhow::Result<(Found, HashMap<String, String>)> {
    if let Some(index) = index {
        if !export.indexes.iter().any(|i| i == index) {
            anyhow::bail!(
                "the devpi export has no index {index:?}; it has {}",
                export.indexes.join(", ")
            );
        }
    }
    let mut found = Found::default();
    let mut times = HashMap::new();
    for file in &export.files {
        if index.is_some_and(|i| i != file.index) {
            continue;
        }
        let path = DevpiExport::path_of(dir, file)?;
        match parse_dist_filename(&file.filename) {
            Ok(dist) => found.dists.push((path, dist)),
            Err(e) => found.bad.push((path, e.to_string())),
        }
        if let Some(time) = &file.upload_time {
            times.insert(file.filename.clone(), time.clone());
        }
    }
    found.dists.sort_by(|a, b| a.1.filename.cmp(&b.1.filename));
    Ok((found, times))
}

/// Adds a devpi export's users, with their password hashes, so that they
/// sign in as before. Needs an admin token; a user that exists is left
/// as it is.
async fn import_devpi_users(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    users: &[crate::devpi::DevpiUser],
) -> anyhow::Result<()> {
    let endpoint = format!("{}/+admin/users/add", url.trim_end_matches('/'));
    let (mut added, mut present) = (Vec::new(), Vec::new());
    for user in users {
        let Some(hash) = &user.password_hash else {
            eprintln!(
                "user {}: devpi kept an older kind of password hash, which cannot be carried over; \
                 add the user with `hoard user add`",
                user.name
            );
            continue;
        };
        let mut request = client.post(&endpoint).json(&serde_json::json!({
            "name": user.name,
            "password_hash": hash,
            "email": user.email,
        }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {endpoint}"))?;
        match response.status() {
            s if s.is_success() => added.push(user.name.as_str()),
            reqwest::StatusCode::CONFLICT => present.push(user.name.as_str()),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                eprintln!("the devpi users were not imported: adding users needs an admin token");
                return Ok(());
            }
            s => {
                let text = response.text().await.unwrap_or_default();
                eprintln!("user {}: refused ({s}): {}", user.name, text.trim());
            }
        }
    }
    eprintln!(
        "devpi users: {} added ({}), {} already present",
        added.len(),
        added.join(", "),
        present.len()
    );
    Ok(())
}

/// Makes each devpi index's uploaders (`acl_upload`) the owners of the
/// projects imported from it, as devpi let only them upload there. Needs
/// an admin token; an owner already named is left as is.
async fn import_devpi_owners(
    client: &reqwest::Client,
    url: &str,
    repo: &str,
    token: Option<&str>,
    export: &DevpiExport,
    index: Option<&str>,
) -> anyhow::Result<()> {
    let endpoint = format!("{}/+admin/owners/add", url.trim_end_matches('/'));
    let known: std::collections::HashSet<&str> =
        export.users.iter().map(|u| u.name.as_str()).collect();
    let mut owners: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for file in &export.files {
        if index.is_some_and(|i| i != file.index) {
            continue;
        }
        let Ok(dist) = parse_dist_filename(&file.filename) else {
            continue;
        };
        let uploaders = export.uploaders.get(&file.index).into_iter().flatten();
        owners
            .entry(normalize_project_name(&dist.name))
            .or_default()
            .extend(uploaders.filter(|u| known.contains(u.as_str())).cloned());
    }
    let mut named = 0;
    for (project, users) in &owners {
        for user in users {
            let mut request = client.post(&endpoint).json(&serde_json::json!({
                "repo": repo, "project": project, "user": user,
            }));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach {endpoint}"))?;
            match response.status() {
                s if s.is_success() => named += 1,
                reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                    eprintln!(
                        "the devpi owners were not imported: naming owners needs an admin token"
                    );
                    return Ok(());
                }
                s => {
                    let text = response.text().await.unwrap_or_default();
                    eprintln!("owner {user} of {project}: refused ({s}): {}", text.trim());
                }
            }
        }
    }
    eprintln!("devpi owners: {named} named, from the indexes' acl_upload");
    Ok(())
}

pub async fn import(
    url: &str,
    repo: &str,
    source: Source,
    jobs: usize,
    token: Option<String>,
    keep_upload_times: bool,
) -> anyhow::Result<ExitCode> {
    let mut devpi = None;
    let (found, times) = match &source {
        Source::Dir(dir) => {
            let times = if keep_upload_times {
                source_times(dir)?
            } else {
                HashMap::new()
            };
            (walk(dir)?, times)
        }
        Source::Devpi { dir, index } => {
            let export = DevpiExport::read(dir)?;
            eprintln!(
                "devpi export: {} users, {} indexes ({}), {} release files",
                export.users.len(),
                export.indexes.len(),
                export.indexes.join(", "),
                export.files.len()
            );
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::limited(2))
                .build()?;
            import_devpi_users(&client, url, token.as_deref(), &export.users).await?;
            let (found, times) = devpi_found(&export, dir, index.as_deref())?;
            devpi = Some((client, export, index.clone()));
            (
                found,
                if keep_upload_times {
                    times
                } else {
                    HashMap::new()
                },
            )
        }
    };
    if !times.is_empty() {
        eprintln!(
            "keeping the source's upload times of {} files (this needs an admin token for {repo})",
            times.len()
        );
    }
    let target = Arc::new(Target {
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        root: format!("{}/{repo}", url.trim_end_matches('/')),
        token,
        times,
        listed: Mutex::default(),
    });
    let total = (found.dists.len() + found.tarballs.len() + found.bad.len()) as u64;
    let mut progress = Progress::new("import", Some(total));
    let mut summary = Summary::default();
    for (path, why) in found.bad {
        summary.add(&path, Ok(Outcome::Refused(why)), &progress)?;
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (path, dist) in found.dists {
        let permit = semaphore.clone().acquire_owned().await?;
        let target = target.clone();
        tasks.spawn(async move {
            let outcome = target.import(&path, &dist).await;
            drop(permit);
            (path, outcome)
        });
        // Count what is done, so the bar moves while files go out.
        while let Some(done) = tasks.try_join_next() {
            let (path, outcome) = done?;
            summary.add(&path, outcome, &progress)?;
        }
        progress.update(summary.done() as u64, Some(total), "");
    }
    while let Some(done) = tasks.join_next().await {
        let (path, outcome) = done?;
        summary.add(&path, outcome, &progress)?;
        progress.update(summary.done() as u64, Some(total), "");
    }
    // npm: read every tarball, then publish each package's versions in
    // order, packages side by side.
    let registry = format!("{}/", target.root);
    let mut packages: BTreeMap<String, Vec<PackedVersion>> = BTreeMap::new();
    for path in found.tarballs {
        let read = path.clone();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(read))
            .await?
            .with_context(|| format!("read {}", path.display()))?;
        let parsed = hoard_npm::manifest_from_tarball(&bytes)
            .and_then(|m| hoard_npm::publish_document(&m, &bytes, &registry));
        match parsed {
            Ok((package, version, document)) => {
                packages
                    .entry(package.full())
                    .or_default()
                    .push(PackedVersion {
                        path,
                        version,
                        document,
                        tarball: bytes,
                    })
            }
            Err(e) => summary.add(&path, Ok(Outcome::Refused(e.to_string())), &progress)?,
        }
    }
    let mut publishing = tokio::task::JoinSet::new();
    for versions in packages.into_values() {
        let permit = semaphore.clone().acquire_owned().await?;
        let target = target.clone();
        publishing.spawn(async move {
            let outcomes = target.publish_package(versions).await;
            drop(permit);
            outcomes
        });
    }
    while let Some(done) = publishing.join_next().await {
        for (path, outcome) in done? {
            summary.add(&path, outcome, &progress)?;
        }
        progress.update(summary.done() as u64, Some(total), "");
    }
    progress.finish();
    if let Some((client, export, index)) = &devpi {
        import_devpi_owners(
            client,
            url,
            repo,
            target.token.as_deref(),
            export,
            index.as_deref(),
        )
        .await?;
    }
    println!(
        "imported into {repo}: {} file(s) ({} bytes), {} already present, {} refused",
        summary.imported,
        summary.bytes,
        summary.present,
        summary.refused.len()
    );
    for r in &summary.refused {
        println!("  refused: {r}");
    }
    Ok(if summary.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_api_document_gives_each_file_its_upload_time() {
        let doc = serde_json::json!({
            "info": {"name": "demo"},
            "releases": {
                "1.0": [{"filename": "demo-1.0.tar.gz", "upload_time_iso_8601": "2020-01-02T03:04:05.123456Z"}],
                "2.0": [{"filename": "demo-2.0-py3-none-any.whl", "upload_time": "2021-05-06T07:08:09"}],
            },
            "urls": [{"filename": "demo-2.0-py3-none-any.whl", "upload_time": "2021-05-06T07:08:09"}],
        });
        let times: HashMap<_, _> = json_api_times(&doc).into_iter().collect();
        assert_eq!(times["demo-1.0.tar.gz"], "2020-01-02T03:04:05.123456Z");
        assert_eq!(times["demo-2.0-py3-none-any.whl"], "2021-05-06T07:08:09Z");
        assert!(json_api_times(&serde_json::json!({"releases": 3})).is_empty());
    }
}
