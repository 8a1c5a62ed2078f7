//! A fixture upstream package index: what a hoard "mirror" repository is
//! pointed at in the tests, standing in for the public Python package index.
//!
//! [`FixtureUpstream`] listens on two loopback ports, as the public index
//! does on two hosts: one serves the Simple API pages (`/simple/…`, PEP 503
//! HTML or PEP 691 JSON by `Accept`), the other the files, at absolute URLs
//! (`http://127.0.0.1:{files}/files/{sha256 prefix}/{filename}`) with their
//! PEP 658 `.metadata` beside them. Pages carry strong ETags, `Last-Modified`,
//! `Cache-Control: max-age=600, public` and are gzip-encoded when the client
//! accepts it; files support `HEAD`, `If-None-Match` and single byte ranges.
//!
//! Tests control it while it runs: files are added and yanked, whole-server
//! [`Fault`]s (500s, hangs, redirect loops, corrupted bytes) and per-project
//! [`ProjectFault`]s (hostile pages) are switched on and off, the listeners
//! are stopped (connections refused) and restarted on the same ports, and
//! exact, thread-safe counters tell how many requests reached it.
//!
//! Blocking, like the rest of the test kit: one thread accepts on each port
//! and one thread serves each connection (HTTP/1.1 with keep-alive).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::artifacts::normalize;
use crate::Artifact;

/// The media type of PEP 691 JSON pages (`Content-Type` of JSON answers).
pub const SIMPLE_JSON: &str = "application/vnd.pypi.simple.v1+json";
/// The `Content-Type` of PEP 503 HTML answers.
pub const SIMPLE_HTML: &str = "text/html; charset=utf-8";
/// `Cache-Control` of every page.
pub const PAGE_CACHE_CONTROL: &str = "max-age=600, public";
/// `Vary` of every page (they are negotiated on both headers).
pub const PAGE_VARY: &str = "Accept, Accept-Encoding";
/// `upload-time` of a file added without [`FileOpts::upload_time`].
pub const DEFAULT_UPLOAD_TIME: &str = "2026-01-02T03:04:05.000000Z";
/// The name of the extra file that [`ProjectFault::TraversalFilename`] lists.
pub const TRAVERSAL_FILENAME: &str = "../../evil-1.0-py3-none-any.whl";

/// How long a kept-alive connection may stay idle before it is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request line or header line, and all header lines together.
const MAX_HEAD: u64 = 64 * 1024;
/// The largest request body read (and thrown away).
const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// Hex digits of the sha256 in a file's URL path.
const URL_PREFIX_LEN: usize = 16;

/// A fault of the whole server (or of one of its two ports, see
/// [`FixtureUpstream::set_pages_fault`] and
/// [`FixtureUpstream::set_files_fault`]). Counters still count every
/// request that a fault answers (or does not answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Answer every request with `500 Internal Server Error`.
    ServerError,
    /// Accept the connection and read the request, then never answer,
    /// until the fault is changed (the request is then answered as the new
    /// fault says) or the port is stopped or the upstream dropped (the
    /// connection is then closed without an answer).
    Hang,
    /// Answer every request with `302 Found` to its own path plus `"x"`
    /// (`/simple/foo/` → `/simple/foo/x` → `/simple/foo/xx` …).
    RedirectLoop,
    /// Serve every file and `.metadata` body with one byte flipped (the
    /// middle one; same length, same headers, so only a hash check notices).
    /// Pages are not affected.
    WrongBytes,
}

/// A fault of one project's page (both JSON and HTML), set with
/// [`FixtureUpstream::set_project_fault`]. It takes effect for a project
/// that has files; an unknown project stays a 404.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProjectFault {
    /// A correct page.
    #[default]
    None,
    /// `200` with a body that is neither JSON nor HTML (truncated JSON
    /// followed by NUL and invalid UTF-8), always with the JSON content type
    /// [`SIMPLE_JSON`].
    MalformedPage,
    /// The first file of the page (the first added) is listed with an
    /// `ftp://` URL (`ftp://127.0.0.1:{files}/files/…`); the others are fine.
    OtherSchemeUrl,
    /// One extra file named [`TRAVERSAL_FILENAME`] is listed after the
    /// others, with a correct sha256, at a URL on the files port whose last
    /// segment is the percent-encoded name (`..%2F..%2Fevil-1.0-py3-none-any.whl`),
    /// where a real wheel is served.
    TraversalFilename,
}

/// How a file is listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOpts {
    /// PEP 592: `Some(reason)` yanks the file; an empty reason is listed as
    /// `yanked: true` (JSON) / `data-yanked=""` (HTML).
    pub yanked: Option<String>,
    /// PEP 658/714: serve `{file url}.metadata` and declare its sha256 as
    /// `core-metadata` and `data-dist-info-metadata`. Only possible when the
    /// file has core metadata (a wheel with `*.dist-info/METADATA`, or
    /// metadata given to [`FixtureUpstream::add_file_with_metadata`]);
    /// otherwise both are `false`.
    pub core_metadata: bool,
    /// `requires-python` / `data-requires-python`. `None` takes the
    /// `Requires-Python` of the file's core metadata (as the public index
    /// does with what was uploaded), if any; `Some("")` declares none.
    pub requires_python: Option<String>,
    /// PEP 700 `upload-time` (JSON only); `None` is [`DEFAULT_UPLOAD_TIME`].
    pub upload_time: Option<String>,
}

impl Default for FileOpts {
    fn default() -> Self {
        FileOpts {
            yanked: None,
            core_metadata: true,
            requires_python: None,
            upload_time: None,
        }
    }
}

/// A fixture upstream index on two loopback ports (pages and files). See
/// the [module documentation](self).
///
/// Dropping it stops both listeners, closes every connection and joins all
/// its threads.
pub struct FixtureUpstream {
    shared: Arc<Shared>,
    pages: Listener<Shared>,
    files: Listener<Shared>,
}

impl FixtureUpstream {
    /// Binds two loopback ports (one for pages, one for files) and starts
    /// serving an empty index.
    pub fn start() -> FixtureUpstream {
        let pages_listener = TcpListener::bind("127.0.0.1:0").expect("bind the pages port");
        let files_listener = TcpListener::bind("127.0.0.1:0").expect("bind the files port");
        let files_addr = files_listener.local_addr().expect("files port address");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            requests: AtomicUsize::new(0),
            files_base: format!("http://{files_addr}/"),
            // Last-Modified is this plus the serial of the last change: in
            // the past, and later after every change.
            epoch: now.saturating_sub(86_400),
        });
        let pages = Listener::start(pages_listener, PortKind::Pages, &shared);
        let files = Listener::start(files_listener, PortKind::Files, &shared);
        FixtureUpstream {
            shared,
            pages,
            files,
        }
    }

    /// The Simple API root: `http://127.0.0.1:{pages}/simple/`.
    pub fn index_url(&self) -> String {
        format!("http://{}/simple/", self.pages.addr)
    }

    /// The base of every file URL: `http://127.0.0.1:{files}/`.
    pub fn files_base(&self) -> String {
        self.shared.files_base.clone()
    }

    /// The pages port's address.
    pub fn pages_addr(&self) -> SocketAddr {
        self.pages.addr
    }

    /// The files port's address.
    pub fn files_addr(&self) -> SocketAddr {
        self.files.addr
    }

    /// A project's page: `{index_url}{normalized name}/`.
    pub fn project_url(&self, project: &str) -> String {
        format!("{}{}/", self.index_url(), normalize(project))
    }

    /// The absolute URL of a listed file (on the files port), as its page
    /// gives it. Panics if no such file was added.
    pub fn file_url(&self, filename: &str) -> String {
        let st = self.shared.lock();
        let f = st
            .files
            .get(filename)
            .unwrap_or_else(|| panic!("the fixture upstream has no file {filename:?}"));
        format!(
            "{}{}",
            self.shared.files_base.trim_end_matches('/'),
            f.path()
        )
    }

    /// Lists a wheel under `project_display_name` (the first name given for
    /// a project is the one the project list shows; pages use the
    /// normalized name). Its core metadata is read from the wheel's
    /// `*.dist-info/METADATA`. Adding a filename again replaces that file.
    pub fn add_wheel(&self, project_display_name: &str, artifact: &Artifact, opts: FileOpts) {
        let metadata = wheel_metadata(&artifact.bytes);
        self.insert(
            project_display_name,
            &artifact.filename,
            artifact.bytes.clone(),
            metadata,
            Some(artifact.version.clone()),
            opts,
        );
    }

    /// Lists any file (sdists, anything) under `project_display_name`. A
    /// `*.whl` that is a zip with `*.dist-info/METADATA` gets core metadata
    /// as with [`FixtureUpstream::add_wheel`]; other files have none.
    pub fn add_file(
        &self,
        project_display_name: &str,
        filename: &str,
        bytes: Vec<u8>,
        opts: FileOpts,
    ) {
        let metadata = if filename.ends_with(".whl") {
            wheel_metadata(&bytes)
        } else {
            None
        };
        self.add_file_with_metadata(project_display_name, filename, bytes, metadata, opts);
    }

    /// Lists a file with the given core metadata bytes (served as its
    /// `.metadata` when [`FileOpts::core_metadata`] is set), e.g. metadata
    /// that does not match the file.
    pub fn add_file_with_metadata(
        &self,
        project_display_name: &str,
        filename: &str,
        bytes: Vec<u8>,
        metadata: Option<Vec<u8>>,
        opts: FileOpts,
    ) {
        let version = version_of(filename);
        self.insert(
            project_display_name,
            filename,
            bytes,
            metadata,
            version,
            opts,
        );
    }

    fn insert(
        &self,
        project_display_name: &str,
        filename: &str,
        bytes: Vec<u8>,
        metadata: Option<Vec<u8>>,
        version: Option<String>,
        opts: FileOpts,
    ) {
        let project = normalize(project_display_name);
        assert!(
            !project.is_empty(),
            "project name {project_display_name:?} normalizes to nothing"
        );
        let requires_python = match opts.requires_python {
            Some(rp) if rp.is_empty() => None,
            Some(rp) => Some(rp),
            None => metadata.as_deref().and_then(metadata_requires_python),
        };
        let metadata = metadata.filter(|_| opts.core_metadata);
        let entry = FileEntry {
            filename: filename.to_string(),
            sha256: crate::sha256_hex(&bytes),
            bytes: Arc::new(bytes),
            metadata_sha256: metadata.as_deref().map(crate::sha256_hex),
            metadata: metadata.map(Arc::new),
            requires_python,
            yanked: opts.yanked,
            upload_time: opts
                .upload_time
                .unwrap_or_else(|| DEFAULT_UPLOAD_TIME.to_string()),
            version,
        };
        let mut st = self.shared.lock();
        let serial = st.bump();
        if st.files.contains_key(filename) {
            for p in st.projects.values_mut() {
                if p.files.iter().any(|f| f == filename) {
                    p.serial = serial;
                    p.files.retain(|f| f != filename);
                }
            }
        }
        st.files.insert(filename.to_string(), entry);
        let p = st.projects.entry(project).or_insert_with(|| Project {
            display: project_display_name.to_string(),
            files: Vec::new(),
            serial,
        });
        p.files.push(filename.to_string());
        p.serial = serial;
    }

    /// Yanks (`Some(reason)`; empty: yanked without a reason) or unyanks
    /// (`None`) a listed file. Panics if no such file was added.
    pub fn set_yanked(&self, filename: &str, reason: Option<String>) {
        let mut st = self.shared.lock();
        let serial = st.bump();
        let f = st
            .files
            .get_mut(filename)
            .unwrap_or_else(|| panic!("the fixture upstream has no file {filename:?}"));
        f.yanked = reason;
        for p in st.projects.values_mut() {
            if p.files.iter().any(|f| f == filename) {
                p.serial = serial;
            }
        }
    }

    /// Sets the fault of both ports (see [`Fault`]). Requests hanging in
    /// [`Fault::Hang`] are released into the new fault.
    pub fn set_fault(&self, fault: Fault) {
        let mut st = self.shared.lock();
        st.pages_fault = fault;
        st.files_fault = fault;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Sets the fault of the pages port only (the files port keeps its own).
    pub fn set_pages_fault(&self, fault: Fault) {
        self.shared.lock().pages_fault = fault;
        self.shared.changed.notify_all();
    }

    /// Sets the fault of the files port only (the pages port keeps its own),
    /// e.g. a redirect loop on files behind a good page.
    pub fn set_files_fault(&self, fault: Fault) {
        self.shared.lock().files_fault = fault;
        self.shared.changed.notify_all();
    }

    /// Delays every answer (on both ports) by `latency`, e.g. so that
    /// concurrent requests through hoard surely overlap. Zero by default.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Sets the fault of one project's page (see [`ProjectFault`]).
    pub fn set_project_fault(&self, project: &str, fault: ProjectFault) {
        let project = normalize(project);
        let mut st = self.shared.lock();
        let serial = st.bump();
        if fault == ProjectFault::TraversalFilename && !st.files.contains_key(TRAVERSAL_FILENAME) {
            let evil = crate::wheel("evil", "1.0").bytes;
            st.files.insert(
                TRAVERSAL_FILENAME.to_string(),
                FileEntry {
                    filename: TRAVERSAL_FILENAME.to_string(),
                    sha256: crate::sha256_hex(&evil),
                    bytes: Arc::new(evil),
                    metadata: None,
                    metadata_sha256: None,
                    requires_python: None,
                    yanked: None,
                    upload_time: DEFAULT_UPLOAD_TIME.to_string(),
                    version: Some("1.0".to_string()),
                },
            );
        }
        if let Some(p) = st.projects.get_mut(&project) {
            p.serial = serial;
        }
        st.project_faults.insert(project, fault);
    }

    /// GET requests for that project's page (`/simple/{name}/` or
    /// `/simple/{name}`, any spelling that normalizes to the same name),
    /// whatever the answer (redirect, 304, fault, hang, 404).
    pub fn page_hits(&self, project: &str) -> usize {
        let st = self.shared.lock();
        st.page_hits.get(&normalize(project)).copied().unwrap_or(0)
    }

    /// GET requests for that file on the files port (not its `.metadata`),
    /// whatever the answer (ranges, 304s, faults included).
    pub fn file_hits(&self, filename: &str) -> usize {
        let st = self.shared.lock();
        st.file_hits.get(filename).copied().unwrap_or(0)
    }

    /// GET requests for that file's `.metadata` (give the file's name,
    /// without `.metadata`).
    pub fn metadata_hits(&self, filename: &str) -> usize {
        let st = self.shared.lock();
        st.metadata_hits.get(filename).copied().unwrap_or(0)
    }

    /// All requests read on both ports (any method, path and answer).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        let mut st = self.shared.lock();
        st.page_hits.clear();
        st.file_hits.clear();
        st.metadata_hits.clear();
        self.shared.requests.store(0, Ordering::SeqCst);
    }

    /// Closes both listeners and every open connection (hanging requests
    /// are dropped unanswered): new connections are then refused. The two
    /// ports stay bound (not listening) by this value, so that
    /// [`FixtureUpstream::restart`] gets them back. Stopping twice is a
    /// no-op.
    pub fn stop(&mut self) {
        self.pages.stop(&self.shared, true);
        self.files.stop(&self.shared, true);
    }

    /// Listens again on the same two ports, with the same content, faults
    /// and counters. A no-op on ports that are listening.
    pub fn restart(&mut self) {
        self.pages.restart(&self.shared);
        self.files.restart(&self.shared);
    }

    /// Whether the listeners are up (between [`FixtureUpstream::stop`] and
    /// [`FixtureUpstream::restart`] they are not).
    pub fn is_running(&self) -> bool {
        self.pages.is_listening()
    }
}

impl Drop for FixtureUpstream {
    fn drop(&mut self) {
        self.pages.stop(&self.shared, false);
        self.files.stop(&self.shared, false);
    }
}

/// One listed file.
#[derive(Clone)]
struct FileEntry {
    filename: String,
    sha256: String,
    bytes: Arc<Vec<u8>>,
    /// Only when served (`FileOpts::core_metadata`).
    metadata: Option<Arc<Vec<u8>>>,
    metadata_sha256: Option<String>,
    requires_python: Option<String>,
    yanked: Option<String>,
    upload_time: String,
    version: Option<String>,
}

impl FileEntry {
    /// The URL path on the files port.
    fn path(&self) -> String {
        format!(
            "/files/{}/{}",
            &self.sha256[..URL_PREFIX_LEN],
            encode_segment(&self.filename)
        )
    }
}

struct Project {
    display: String,
    /// Filenames in the order added.
    files: Vec<String>,
    /// The serial of the last change to this project's page.
    serial: u64,
}

#[derive(Default)]
struct State {
    /// By normalized name.
    projects: BTreeMap<String, Project>,
    /// By filename (unique across projects, as on the public index).
    files: HashMap<String, FileEntry>,
    project_faults: HashMap<String, ProjectFault>,
    pages_fault: Fault,
    files_fault: Fault,
    latency: Duration,
    /// Bumped on every change of content.
    serial: u64,
    page_hits: HashMap<String, usize>,
    file_hits: HashMap<String, usize>,
    metadata_hits: HashMap<String, usize>,
}

impl State {
    fn bump(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }
}

/// What the connection threads share with the handle.
struct Shared {
    state: Mutex<State>,
    /// Notified when a fault changes or a port stops (for hanging requests).
    changed: Condvar,
    requests: AtomicUsize,
    /// `http://127.0.0.1:{files}/`
    files_base: String,
    /// Unix seconds: `Last-Modified` is this plus the page's serial.
    epoch: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fault(st: &State, kind: PortKind) -> Fault {
        match kind {
            PortKind::Pages => st.pages_fault,
            PortKind::Files => st.files_fault,
        }
    }

    fn page(&self, req: &Request) -> Response {
        if req.path == "/simple" {
            return Response::redirect(301, "/simple/".to_string());
        }
        if req.path == "/simple/" {
            return self.index_page(req);
        }
        let Some((name, slash)) = project_of_path(&req.path) else {
            return not_found();
        };
        let norm = normalize(name);
        if !self.lock().projects.contains_key(&norm) {
            return not_found();
        }
        if name != norm || !slash {
            return Response::redirect(301, format!("/simple/{}/", encode_segment(&norm)));
        }
        self.project_page(&norm, req)
    }

    fn index_page(&self, req: &Request) -> Response {
        let format = negotiate(req.header("accept"));
        let (serial, projects) = {
            let st = self.lock();
            let projects: Vec<(String, String)> = st
                .projects
                .iter()
                .map(|(norm, p)| (norm.clone(), p.display.clone()))
                .collect();
            (st.serial, projects)
        };
        let (body, content_type) = match format {
            Format::Json => {
                let projects: Vec<serde_json::Value> = projects
                    .iter()
                    .map(|(_, display)| serde_json::json!({ "name": display }))
                    .collect();
                let doc = serde_json::json!({
                    "meta": { "api-version": "1.1", "_last-serial": serial },
                    "projects": projects,
                });
                (serde_json::to_vec(&doc).unwrap(), SIMPLE_JSON)
            }
            Format::Html => {
                let mut html = String::from(
                    "<!DOCTYPE html>\n<html>\n  <head>\n    \
                     <meta name=\"pypi:repository-version\" content=\"1.1\">\n    \
                     <title>Simple index</title>\n  </head>\n  <body>\n",
                );
                for (norm, display) in &projects {
                    html.push_str(&format!(
                        "    <a href=\"/simple/{}/\">{}</a><br />\n",
                        escape(&encode_segment(norm)),
                        escape(display)
                    ));
                }
                html.push_str("  </body>\n</html>\n");
                (html.into_bytes(), SIMPLE_HTML)
            }
        };
        self.page_response(req, body, content_type, serial)
    }

    fn project_page(&self, norm: &str, req: &Request) -> Response {
        let format = negotiate(req.header("accept"));
        let (serial, fault, mut files) = {
            let st = self.lock();
            let Some(p) = st.projects.get(norm) else {
                return not_found();
            };
            let fault = st.project_faults.get(norm).copied().unwrap_or_default();
            let mut files: Vec<FileEntry> = p
                .files
                .iter()
                .filter_map(|f| st.files.get(f).cloned())
                .collect();
            if fault == ProjectFault::TraversalFilename {
                files.extend(st.files.get(TRAVERSAL_FILENAME).cloned());
            }
            (p.serial, fault, files)
        };
        if fault == ProjectFault::MalformedPage {
            let mut body = format!(
                "{{\"meta\": {{\"api-version\": \"1.1\"}}, \"name\": \"{norm}\", \"files\": [{{\"filename\": "
            )
            .into_bytes();
            body.extend_from_slice(b"\0\xff\xfe<html><a href=\"");
            return self.page_response(req, body, SIMPLE_JSON, serial);
        }
        let base = self.files_base.trim_end_matches('/');
        let mut versions: Vec<String> = Vec::new();
        let listed: Vec<Listed> = files
            .drain(..)
            .enumerate()
            .map(|(i, f)| {
                let mut url = format!("{base}{}", f.path());
                if i == 0 && fault == ProjectFault::OtherSchemeUrl {
                    url = url.replacen("http://", "ftp://", 1);
                }
                if f.filename != TRAVERSAL_FILENAME {
                    if let Some(v) = &f.version {
                        if !versions.contains(v) {
                            versions.push(v.clone());
                        }
                    }
                }
                Listed { url, file: f }
            })
            .collect();
        versions.sort_by(|a, b| natural_cmp(a, b));
        let (body, content_type) = match format {
            Format::Json => (json_page(norm, serial, &listed, &versions), SIMPLE_JSON),
            Format::Html => (html_page(norm, &listed), SIMPLE_HTML),
        };
        self.page_response(req, body, content_type, serial)
    }

    /// A page's answer: [`document_response`] with the index's headers.
    fn page_response(
        &self,
        req: &Request,
        body: Vec<u8>,
        content_type: &str,
        serial: u64,
    ) -> Response {
        let mut resp = document_response(req, body, content_type, self.epoch + serial);
        resp.header("Cache-Control", PAGE_CACHE_CONTROL);
        resp.header("X-PyPI-Last-Serial", &serial.to_string());
        resp
    }

    fn file(&self, req: &Request, wrong_bytes: bool) -> Response {
        let Some((prefix, filename)) = file_of_path(&req.path) else {
            return not_found();
        };
        let found = {
            let st = self.lock();
            let prefix_ok =
                |f: &FileEntry| f.sha256.starts_with(prefix) && prefix.len() == URL_PREFIX_LEN;
            match st.files.get(filename) {
                Some(f) if prefix_ok(f) => Some((f.bytes.clone(), f.sha256.clone())),
                _ => filename
                    .strip_suffix(".metadata")
                    .and_then(|base| st.files.get(base))
                    .filter(|f| prefix_ok(f))
                    .and_then(|f| {
                        let m = f.metadata.clone()?;
                        Some((m, f.metadata_sha256.clone()?))
                    }),
            }
        };
        let Some((bytes, sha256)) = found else {
            return not_found();
        };
        let etag = format!("\"{sha256}\"");
        if req
            .header("if-none-match")
            .is_some_and(|h| etag_matches(h, &etag))
        {
            let mut r = Response::new(304, Vec::new());
            r.header("ETag", &etag);
            return r;
        }
        let bytes = if wrong_bytes {
            flip_middle_byte(&bytes)
        } else {
            bytes
        };
        let len = bytes.len();
        let mut resp = match req.header("range").map(|r| parse_range(r, len)) {
            Some(RangeReq::Satisfiable(start, end)) => {
                let mut r = Response::shared(206, bytes, start, end);
                r.header("Content-Range", &format!("bytes {start}-{}/{len}", end - 1));
                r
            }
            Some(RangeReq::Unsatisfiable) => {
                let mut r = Response::new(416, Vec::new());
                r.header("Content-Range", &format!("bytes */{len}"));
                r
            }
            Some(RangeReq::Ignored) | None => Response::shared(200, bytes, 0, len),
        };
        resp.header("Content-Type", "application/octet-stream");
        resp.header("ETag", &etag);
        resp.header("Accept-Ranges", "bytes");
        resp.header("Cache-Control", "max-age=365000000, immutable, public");
        resp
    }
}

impl Serve for Shared {
    type Port = PortKind;
    type State = State;

    fn state(&self) -> &Mutex<State> {
        &self.state
    }

    fn changed(&self) -> &Condvar {
        &self.changed
    }

    fn requests(&self) -> &AtomicUsize {
        &self.requests
    }

    fn count(st: &mut State, kind: PortKind, path: &str) {
        count(st, kind, path);
    }

    fn fault(st: &State, kind: PortKind) -> (Fault, Duration) {
        (Shared::fault(st, kind), st.latency)
    }

    fn serve(&self, kind: PortKind, req: &Request, wrong_bytes: bool) -> Response {
        match kind {
            PortKind::Pages => self.page(req),
            PortKind::Files => self.file(req, wrong_bytes),
        }
    }
}

/// Counts a GET on the per-project and per-file counters.
fn count(st: &mut State, kind: PortKind, path: &str) {
    match kind {
        PortKind::Pages => {
            if let Some((name, _)) = project_of_path(path) {
                let norm = normalize(name);
                if !norm.is_empty() {
                    *st.page_hits.entry(norm).or_default() += 1;
                }
            }
        }
        PortKind::Files => {
            if let Some((_, filename)) = file_of_path(path) {
                let metadata_of = filename
                    .strip_suffix(".metadata")
                    .filter(|_| !st.files.contains_key(filename));
                match metadata_of {
                    Some(base) => *st.metadata_hits.entry(base.to_string()).or_default() += 1,
                    None => *st.file_hits.entry(filename.to_string()).or_default() += 1,
                }
            }
        }
    }
}

/// `/simple/{name}/` or `/simple/{name}` → (name, whether the slash was
/// there).
fn project_of_path(path: &str) -> Option<(&str, bool)> {
    let rest = path.strip_prefix("/simple/")?;
    let (name, slash) = match rest.strip_suffix('/') {
        Some(name) => (name, true),
        None => (rest, false),
    };
    (!name.is_empty() && !name.contains('/')).then_some((name, slash))
}

/// `/files/{prefix}/{filename}` (the filename decoded, possibly with `/`).
fn file_of_path(path: &str) -> Option<(&str, &str)> {
    let (prefix, filename) = path.strip_prefix("/files/")?.split_once('/')?;
    (!filename.is_empty()).then_some((prefix, filename))
}

/// A file with the URL its page gives.
struct Listed {
    url: String,
    file: FileEntry,
}

fn json_page(norm: &str, serial: u64, listed: &[Listed], versions: &[String]) -> Vec<u8> {
    let files: Vec<serde_json::Value> = listed
        .iter()
        .map(|l| {
            let f = &l.file;
            let yanked = match f.yanked.as_deref() {
                None => serde_json::Value::Bool(false),
                Some("") => serde_json::Value::Bool(true),
                Some(reason) => serde_json::Value::String(reason.to_string()),
            };
            let metadata = match &f.metadata_sha256 {
                Some(h) => serde_json::json!({ "sha256": h }),
                None => serde_json::Value::Bool(false),
            };
            serde_json::json!({
                "filename": f.filename,
                "url": l.url,
                "hashes": { "sha256": f.sha256 },
                "requires-python": f.requires_python,
                "yanked": yanked,
                "core-metadata": metadata,
                "data-dist-info-metadata": metadata,
                "size": f.bytes.len(),
                "upload-time": f.upload_time,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "meta": { "api-version": "1.1", "_last-serial": serial },
        "name": norm,
        "files": files,
        "versions": versions,
    });
    serde_json::to_vec(&doc).unwrap()
}

fn html_page(norm: &str, listed: &[Listed]) -> Vec<u8> {
    let title = escape(norm);
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    \
         <meta name=\"pypi:repository-version\" content=\"1.1\">\n    \
         <title>Links for {title}</title>\n  </head>\n  <body>\n    \
         <h1>Links for {title}</h1>\n"
    );
    for l in listed {
        let f = &l.file;
        let mut a = format!("    <a href=\"{}#sha256={}\"", escape(&l.url), f.sha256);
        if let Some(rp) = &f.requires_python {
            a.push_str(&format!(" data-requires-python=\"{}\"", escape(rp)));
        }
        if let Some(h) = &f.metadata_sha256 {
            a.push_str(&format!(
                " data-dist-info-metadata=\"sha256={h}\" data-core-metadata=\"sha256={h}\""
            ));
        }
        if let Some(reason) = &f.yanked {
            a.push_str(&format!(" data-yanked=\"{}\"", escape(reason)));
        }
        a.push_str(&format!(">{}</a><br />\n", escape(&f.filename)));
        html.push_str(&a);
    }
    html.push_str("  </body>\n</html>\n");
    html.into_bytes()
}

/// The two encodings of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Html,
}

/// PEP 691 content negotiation: JSON when the client prefers it (strictly
/// higher q, or the same q and named explicitly), else HTML (also when
/// nothing offered is acceptable).
fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Html;
    };
    // (specificity, q) of the most specific range matching each format.
    let mut json: Option<(u8, f32)> = None;
    let mut html: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in parts {
            let p = p.trim();
            if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        let json_spec = match media.as_str() {
            "application/vnd.pypi.simple.v1+json" | "application/vnd.pypi.simple.latest+json" => {
                Some(2)
            }
            "application/*" => Some(1),
            "*/*" => Some(0),
            _ => None,
        };
        let html_spec = match media.as_str() {
            "application/vnd.pypi.simple.v1+html"
            | "application/vnd.pypi.simple.latest+html"
            | "text/html" => Some(2),
            "application/*" | "text/*" => Some(1),
            "*/*" => Some(0),
            _ => None,
        };
        for (spec, best) in [(json_spec, &mut json), (html_spec, &mut html)] {
            if let Some(spec) = spec {
                let better = match *best {
                    None => true,
                    Some((s, bq)) => spec > s || (spec == s && q > bq),
                };
                if better {
                    *best = Some((spec, q));
                }
            }
        }
    }
    let (json_spec, qj) = json.unwrap_or((0, 0.0));
    let qh = html.map_or(0.0, |(_, q)| q);
    if qj > 0.0 && (qj > qh || (qj == qh && json_spec == 2)) {
        Format::Json
    } else {
        Format::Html
    }
}

pub(crate) fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|h| {
        h.split(',').any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").map(|v| v.trim().parse::<f32>()))
                .next()
                .map_or(1.0, |q| q.unwrap_or(0.0));
            (name == "gzip" || name == "x-gzip") && q > 0.0
        })
    })
}

pub(crate) fn gzip_bytes(body: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body).expect("gzip into memory");
    gz.finish().expect("gzip into memory")
}

/// Whether the request's validators match (`If-None-Match` first; then
/// `If-Modified-Since`).
pub(crate) fn not_modified(req: &Request, etag: &str, modified: u64) -> bool {
    if let Some(inm) = req.header("if-none-match") {
        return etag_matches(inm, etag);
    }
    req.header("if-modified-since")
        .and_then(parse_http_date)
        .is_some_and(|since| modified <= since)
}

/// `If-None-Match` (weak comparison, as RFC 9110 says for it).
fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

enum RangeReq {
    /// `[start, end)`
    Satisfiable(usize, usize),
    Unsatisfiable,
    /// Malformed or several ranges: the whole file.
    Ignored,
}

/// A single `bytes=` range.
fn parse_range(header: &str, len: usize) -> RangeReq {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeReq::Ignored;
    };
    if spec.contains(',') {
        return RangeReq::Ignored;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Ignored;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // The last b bytes.
        let Ok(n) = b.parse::<usize>() else {
            return RangeReq::Ignored;
        };
        if n == 0 || len == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Satisfiable(len - n.min(len), len);
    }
    let Ok(start) = a.parse::<usize>() else {
        return RangeReq::Ignored;
    };
    let end = if b.is_empty() {
        len
    } else {
        match b.parse::<usize>() {
            Ok(last) if last >= start => last.saturating_add(1).min(len),
            _ => return RangeReq::Ignored,
        }
    };
    if start >= len {
        RangeReq::Unsatisfiable
    } else {
        RangeReq::Satisfiable(start, end)
    }
}

/// `*.dist-info/METADATA` of a wheel, if it is a zip that has one.
fn wheel_metadata(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
    let name = zip
        .file_names()
        .find(|n| {
            n.strip_suffix("/METADATA")
                .is_some_and(|dir| dir.ends_with(".dist-info") && !dir.contains('/'))
        })?
        .to_string();
    let mut member = zip.by_name(&name).ok()?;
    let mut out = Vec::new();
    member.read_to_end(&mut out).ok()?;
    Some(out)
}

/// The `Requires-Python` header of core metadata.
fn metadata_requires_python(metadata: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(metadata);
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("requires-python")
                .then(|| v.trim().to_string())
        })
        .filter(|v| !v.is_empty())
}

/// The version in a wheel or sdist filename.
fn version_of(filename: &str) -> Option<String> {
    if let Some(stem) = filename.strip_suffix(".whl") {
        return stem.split('-').nth(1).map(str::to_string);
    }
    [".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"]
        .iter()
        .find_map(|ext| filename.strip_suffix(ext))
        .and_then(|stem| stem.rsplit_once('-'))
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// Orders versions by their runs of digits as numbers (`1.2` < `1.10`).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// HTML-escapes text and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a URL path segment (all but unreserved characters and
/// `+`).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Dates (HTTP IMF-fixdate, UTC).

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of days since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
pub(crate) fn http_date(secs: u64) -> String {
    let secs = secs as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days + 4).rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses an IMF-fixdate (the only form HTTP/1.1 senders use).
fn parse_http_date(s: &str) -> Option<u64> {
    let (_, rest) = s.trim().split_once(", ")?;
    let mut it = rest.split(' ');
    let d: i64 = it.next()?.parse().ok()?;
    let month = it.next()?;
    let m = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(month))? as i64 + 1;
    let y: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let se: i64 = hms.next()?.parse().ok()?;
    if it.next()? != "GMT" {
        return None;
    }
    let secs = days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs).ok()
}

// ---------------------------------------------------------------------------
// HTTP/1.1.

pub(crate) struct Request {
    pub(crate) method: String,
    /// The target's path as sent (percent-encoded), without the query.
    pub(crate) raw_path: String,
    /// `raw_path` percent-decoded.
    pub(crate) path: String,
    /// Names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) keep_alive: bool,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) enum ReadError {
    Io,
    Bad(&'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

/// One line (with its `\n`), at most `limit` bytes.
fn read_line(r: &mut BufReader<TcpStream>, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    r.by_ref().take(limit).read_until(b'\n', &mut line)?;
    Ok(line)
}

/// Reads one request; `Ok(None)` at a clean end of the connection.
pub(crate) fn read_request(r: &mut BufReader<TcpStream>) -> Result<Option<Request>, ReadError> {
    let line = loop {
        let line = read_line(r, MAX_HEAD)?;
        if line.is_empty() {
            return Ok(None);
        }
        if line != b"\r\n" && line != b"\n" {
            break line;
        }
    };
    if !line.ends_with(b"\n") {
        return Err(ReadError::Bad("request line too long or cut"));
    }
    let line = String::from_utf8_lossy(&line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad("not HTTP/1.x"));
    }
    let mut headers = Vec::new();
    let mut total = 0u64;
    loop {
        let h = read_line(r, MAX_HEAD)?;
        total += h.len() as u64;
        if !h.ends_with(b"\n") || total > MAX_HEAD {
            return Err(ReadError::Bad("header too long or cut"));
        }
        let h = String::from_utf8_lossy(&h);
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let Some((k, v)) = h.split_once(':') else {
            return Err(ReadError::Bad("malformed header"));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let connection = header("connection").unwrap_or_default();
    let keep_alive = if version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    if header("transfer-encoding").is_some() {
        return Err(ReadError::Bad("request bodies must have a Content-Length"));
    }
    if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ReadError::Bad("malformed Content-Length"))?;
        if len > MAX_REQUEST_BODY {
            return Err(ReadError::Bad("request body too large"));
        }
        io::copy(&mut r.by_ref().take(len as u64), &mut io::sink())?;
    }
    // Absolute form (`GET http://host/path`) as a proxy would get it.
    let target = match target.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/').unwrap_or(rest.len())..],
        None => target,
    };
    let raw_path = target.split(['?', '#']).next().unwrap_or("").to_string();
    let path = percent_decode(&raw_path);
    Ok(Some(Request {
        method: method.to_string(),
        raw_path,
        path,
        headers,
        keep_alive,
    }))
}

enum Body {
    Owned(Vec<u8>),
    /// `[start, end)` of shared bytes (files are not copied per request).
    Shared(Arc<Vec<u8>>, usize, usize),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Owned(b) => b,
            Body::Shared(b, start, end) => &b[*start..*end],
        }
    }
}

pub(crate) struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Response {
    pub(crate) fn new(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Owned(body),
        }
    }

    pub(crate) fn shared(status: u16, bytes: Arc<Vec<u8>>, start: usize, end: usize) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Shared(bytes, start, end),
        }
    }

    pub(crate) fn text(status: u16, text: &str) -> Response {
        let mut r = Response::new(status, text.as_bytes().to_vec());
        r.header("Content-Type", "text/plain; charset=utf-8");
        r
    }

    pub(crate) fn redirect(status: u16, location: String) -> Response {
        let mut r = Response::text(status, &format!("redirect to {location}\n"));
        r.header("Location", &location);
        r
    }

    pub(crate) fn header(&mut self, name: &str, value: &str) {
        self.headers.push((name.to_string(), value.to_string()));
    }
}

fn not_found() -> Response {
    Response::text(404, "404 Not Found\n")
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

pub(crate) fn write_response(
    w: &mut TcpStream,
    resp: &Response,
    head: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut h = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    h.push_str(&format!(
        "Date: {}\r\nServer: hoard-testkit-upstream\r\n",
        http_date(now)
    ));
    for (k, v) in &resp.headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = resp.body.bytes();
    if resp.status != 304 {
        h.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !keep_alive {
        h.push_str("Connection: close\r\n");
    }
    h.push_str("\r\n");
    if head || resp.status == 304 || body.len() > 64 * 1024 {
        w.write_all(h.as_bytes())?;
        if !head && resp.status != 304 {
            w.write_all(body)?;
        }
    } else {
        let mut all = h.into_bytes();
        all.extend_from_slice(body);
        w.write_all(&all)?;
    }
    w.flush()
}

// ---------------------------------------------------------------------------
// Listeners and connections.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortKind {
    Pages,
    Files,
}

pub(crate) enum PortRun {
    Listening(Running),
    /// Bound, not listening: connections are refused, the port kept.
    Reserved(OwnedFd),
    /// Dropped (or a transient state).
    Gone,
}

/// Binds (without listening) a socket to `addr`, so that connections are
/// refused but the port stays ours. Retried briefly: the listener's close
/// may take a moment to release the port.
pub(crate) fn reserve_port(addr: SocketAddr) -> OwnedFd {
    let SocketAddr::V4(v4) = addr else {
        panic!("the fixture upstream listens on IPv4 loopback only");
    };
    let mut last = None;
    for _ in 0..200 {
        // SAFETY: plain socket calls on a descriptor that we own; `sa` is a
        // fully initialized sockaddr_in whose size we pass.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = v4.port().to_be();
            sa.sin_addr = libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            };
            let rc = libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            if rc == 0 {
                return fd;
            }
            last = Some(io::Error::last_os_error());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("cannot keep port {addr} after stopping: {last:?}");
}

/// A listening port: its accept thread and its connections.
pub(crate) struct Running {
    pub(crate) listener: Arc<TcpListener>,
    pub(crate) session: Arc<Session>,
    pub(crate) accept: JoinHandle<()>,
}

/// What one listening period's threads share.
#[derive(Default)]
pub(crate) struct Session {
    pub(crate) stopped: AtomicBool,
    pub(crate) next_id: AtomicU64,
    /// Open connections (clones, to shut them down on stop).
    pub(crate) conns: Mutex<HashMap<u64, TcpStream>>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Answers that do not depend on what a fixture serves.

/// A negotiated document's answer (a packument, an index page): gzip when
/// accepted, a strong ETag of the bytes sent, `Last-Modified` (Unix
/// seconds), and 304 when the client's copy is current. The caller adds its
/// caching headers.
pub(crate) fn document_response(
    req: &Request,
    body: Vec<u8>,
    content_type: &str,
    last_modified: u64,
) -> Response {
    let gzip = accepts_gzip(req.header("accept-encoding"));
    let body = if gzip { gzip_bytes(&body) } else { body };
    let etag = format!("\"{}\"", &crate::sha256_hex(&body)[..32]);
    let mut resp = if not_modified(req, &etag, last_modified) {
        Response::new(304, Vec::new())
    } else {
        let mut r = Response::new(200, body);
        r.header("Content-Type", content_type);
        if gzip {
            r.header("Content-Encoding", "gzip");
        }
        r
    };
    resp.header("ETag", &etag);
    resp.header("Last-Modified", &http_date(last_modified));
    resp.header("Vary", "Accept, Accept-Encoding");
    resp
}

/// `bytes` with the middle byte flipped ([`Fault::WrongBytes`]): same
/// length, so that only a digest check notices.
pub(crate) fn flip_middle_byte(bytes: &Arc<Vec<u8>>) -> Arc<Vec<u8>> {
    if bytes.is_empty() {
        return bytes.clone();
    }
    let mut flipped = bytes.as_ref().clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    Arc::new(flipped)
}

// ---------------------------------------------------------------------------
// Listeners, generic over what answers the requests: faults, stop and
// restart behave the same whatever a fixture serves.

/// A fixture's shared state as its listeners need it.
pub(crate) trait Serve: Send + Sync + 'static {
    /// Which of the fixture's ports a connection came in on.
    type Port: Copy + std::fmt::Debug + Send + 'static;
    type State;

    fn state(&self) -> &Mutex<Self::State>;
    /// Notified when a fault changes or a port stops (for hanging requests).
    fn changed(&self) -> &Condvar;
    /// Every request read, on all ports.
    fn requests(&self) -> &AtomicUsize;
    /// Counts a GET on the fixture's own counters, before any fault
    /// answers it.
    fn count(st: &mut Self::State, port: Self::Port, path: &str);
    /// The port's fault, and the delay of every answer.
    fn fault(st: &Self::State, port: Self::Port) -> (Fault, Duration);
    /// Answers a GET or HEAD that no fault took (`wrong_bytes`: under
    /// [`Fault::WrongBytes`]).
    fn serve(&self, port: Self::Port, req: &Request, wrong_bytes: bool) -> Response;
}

/// Answers one request; `None` to close the connection unanswered (the
/// port stopped while the request hung).
fn answer<S: Serve>(
    shared: &S,
    port: S::Port,
    req: &Request,
    session: &Session,
) -> Option<Response> {
    let (fault, latency) = {
        let mut st = lock(shared.state());
        if req.method == "GET" {
            S::count(&mut st, port, &req.path);
        }
        loop {
            if session.stopped.load(Ordering::SeqCst) {
                return None;
            }
            let (fault, latency) = S::fault(&st, port);
            if fault != Fault::Hang {
                break (fault, latency);
            }
            st = shared
                .changed()
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    };
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
    match fault {
        Fault::ServerError => return Some(Response::text(500, "500 Internal Server Error\n")),
        Fault::RedirectLoop => {
            return Some(Response::redirect(302, format!("{}x", req.raw_path)));
        }
        _ => {}
    }
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = Response::text(405, "405 Method Not Allowed\n");
        r.header("Allow", "GET, HEAD");
        return Some(r);
    }
    Some(shared.serve(port, req, fault == Fault::WrongBytes))
}

/// One port of a fixture: listening, or bound but refusing connections.
pub(crate) struct Listener<S: Serve> {
    port: S::Port,
    addr: SocketAddr,
    run: PortRun,
}

impl<S: Serve> Listener<S> {
    pub(crate) fn start(listener: TcpListener, port: S::Port, shared: &Arc<S>) -> Listener<S> {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the {port:?} port's address: {e}"));
        Listener {
            port,
            addr,
            run: PortRun::Listening(spawn(listener, shared, port)),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn is_listening(&self) -> bool {
        matches!(self.run, PortRun::Listening(_))
    }

    /// Closes the listener and every connection; with `reserve`, the port
    /// stays bound (refusing connections) for [`Listener::restart`].
    pub(crate) fn stop(&mut self, shared: &S, reserve: bool) {
        match std::mem::replace(&mut self.run, PortRun::Gone) {
            PortRun::Listening(running) => {
                stop(running, shared);
                if reserve {
                    self.run = PortRun::Reserved(reserve_port(self.addr));
                }
            }
            PortRun::Reserved(fd) if reserve => self.run = PortRun::Reserved(fd),
            PortRun::Reserved(_) | PortRun::Gone => {}
        }
    }

    pub(crate) fn restart(&mut self, shared: &Arc<S>) {
        let fd = match std::mem::replace(&mut self.run, PortRun::Gone) {
            PortRun::Reserved(fd) => fd,
            other => {
                self.run = other;
                return;
            }
        };
        // SAFETY: `fd` is a bound TCP socket that we own.
        let rc = unsafe { libc::listen(fd.as_raw_fd(), 1024) };
        assert_eq!(
            rc,
            0,
            "listen again on {}: {}",
            self.addr,
            io::Error::last_os_error()
        );
        let listener = TcpListener::from(fd);
        self.run = PortRun::Listening(spawn(listener, shared, self.port));
    }
}

fn thread_name<P: std::fmt::Debug>(port: P, what: &str) -> String {
    format!("fixture-{port:?}-{what}").to_lowercase()
}

fn spawn<S: Serve>(listener: TcpListener, shared: &Arc<S>, port: S::Port) -> Running {
    let listener = Arc::new(listener);
    let session = Arc::new(Session::default());
    let accept = {
        let (listener, session, shared) = (listener.clone(), session.clone(), shared.clone());
        std::thread::Builder::new()
            .name(thread_name(port, "accept"))
            .spawn(move || accept_loop(&listener, &shared, port, &session))
            .expect("spawn the accept thread")
    };
    Running {
        listener,
        session,
        accept,
    }
}

fn stop<S: Serve>(running: Running, shared: &S) {
    running.session.stopped.store(true, Ordering::SeqCst);
    // Wakes the blocked accept() (EINVAL on Linux); the listener stays open
    // until joined, so the descriptor cannot be reused meanwhile.
    // SAFETY: shutdown on a socket that `running.listener` keeps open.
    unsafe {
        libc::shutdown(running.listener.as_raw_fd(), libc::SHUT_RDWR);
    }
    if !cfg!(target_os = "linux") {
        if let Ok(addr) = running.listener.local_addr() {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(500));
        }
    }
    let _ = running.accept.join();
    drop(running.listener);
    for conn in lock(&running.session.conns).values() {
        let _ = conn.shutdown(std::net::Shutdown::Both);
    }
    // Release hanging requests: they see `stopped` under the state lock.
    drop(lock(shared.state()));
    shared.changed().notify_all();
    let threads: Vec<_> = lock(&running.session.threads).drain(..).collect();
    for t in threads {
        let _ = t.join();
    }
}

fn accept_loop<S: Serve>(
    listener: &TcpListener,
    shared: &Arc<S>,
    port: S::Port,
    session: &Arc<Session>,
) {
    loop {
        let accepted = listener.accept();
        if session.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok((stream, _)) = accepted else {
            // Out of descriptors or an aborted connection: try again.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let id = session.next_id.fetch_add(1, Ordering::SeqCst);
        lock(&session.conns).insert(id, clone);
        let (shared2, session2) = (shared.clone(), session.clone());
        let spawned = std::thread::Builder::new()
            .name(thread_name(port, "conn"))
            .stack_size(512 * 1024)
            .spawn(move || {
                serve_conn(stream, shared2.as_ref(), port, &session2);
                lock(&session2.conns).remove(&id);
            });
        match spawned {
            Ok(handle) => {
                let mut threads = lock(&session.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(handle);
            }
            Err(_) => {
                lock(&session.conns).remove(&id);
            }
        }
    }
}

fn serve_conn<S: Serve>(stream: TcpStream, shared: &S, port: S::Port, session: &Session) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) | Err(ReadError::Io) => return,
            Err(ReadError::Bad(why)) => {
                shared.requests().fetch_add(1, Ordering::SeqCst);
                let resp = Response::text(400, &format!("400 Bad Request: {why}\n"));
                let _ = write_response(&mut writer, &resp, false, false);
                return;
            }
        };
        shared.requests().fetch_add(1, Ordering::SeqCst);
        let Some(resp) = answer(shared, port, &req, session) else {
            return;
        };
        let keep_alive = req.keep_alive && !session.stopped.load(Ordering::SeqCst);
        if write_response(&mut writer, &resp, req.method == "HEAD", keep_alive).is_err()
            || !keep_alive
        {
            return;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Read as _;
    use std::process::Command;
    use std::time::Instant;

    use reqwest::blocking::{Client, Response as HttpResponse};
    use reqwest::StatusCode;
    use serde_json::Value;

    use super::*;
    use crate::{sdist, WheelSpec};

    /// What pip sends for simple pages.
    const PIP_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, \
                              application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";

    pub(crate) fn client_with_timeout(timeout: Duration) -> Client {
        // No transparent gzip: the tests look at the encoding as sent (the
        // workspace build enables reqwest's gzip for the mirror).
        Client::builder()
            .no_gzip()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .unwrap()
    }

    pub(crate) fn client() -> Client {
        client_with_timeout(Duration::from_secs(20))
    }

    pub(crate) fn get(c: &Client, url: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let mut req = c.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    pub(crate) fn header(r: &HttpResponse, name: &str) -> Option<String> {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    fn json_page(c: &Client, url: &str) -> Value {
        let r = get(c, url, &[("accept", PIP_ACCEPT)]);
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        serde_json::from_slice(&r.bytes().unwrap()).unwrap()
    }

    pub(crate) fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// An upstream with project `Foo_Bar`: a wheel 1.0 (Requires-Python
    /// >=3.8), an sdist 1.10 and a wheel 1.2.
    fn fixture() -> (FixtureUpstream, Vec<Artifact>) {
        let up = FixtureUpstream::start();
        let mut w10 = WheelSpec::new("Foo_Bar", "1.0");
        w10.requires_python = Some(">=3.8".to_string());
        let w10 = w10.build();
        let s110 = sdist("Foo_Bar", "1.10");
        let w12 = crate::wheel("Foo_Bar", "1.2");
        up.add_wheel("Foo_Bar", &w10, FileOpts::default());
        up.add_file(
            "Foo_Bar",
            &s110.filename,
            s110.bytes.clone(),
            FileOpts::default(),
        );
        up.add_wheel("Foo_Bar", &w12, FileOpts::default());
        (up, vec![w10, s110, w12])
    }

    #[test]
    fn negotiates_json_and_html() {
        let (up, arts) = fixture();
        let c = client();
        let url = up.project_url("foo-bar");
        assert_eq!(url, format!("{}foo-bar/", up.index_url()));

        for accept in [
            PIP_ACCEPT,
            SIMPLE_JSON,
            "application/vnd.pypi.simple.latest+json",
        ] {
            let r = get(&c, &url, &[("accept", accept)]);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(header(&r, "content-type").unwrap(), SIMPLE_JSON, "{accept}");
        }
        let page = json_page(&c, &url);
        assert_eq!(page["meta"]["api-version"], "1.1");
        assert_eq!(page["name"], "foo-bar");
        assert_eq!(page["versions"], serde_json::json!(["1.0", "1.2", "1.10"]));
        let files = page["files"].as_array().unwrap();
        assert_eq!(files.len(), 3);
        let (w10, s110) = (&files[0], &files[1]);
        assert_eq!(w10["filename"], arts[0].filename);
        assert_eq!(w10["requires-python"], ">=3.8", "taken from METADATA");
        assert_eq!(w10["yanked"], false);
        assert_eq!(w10["size"], arts[0].bytes.len());
        assert_eq!(w10["upload-time"], DEFAULT_UPLOAD_TIME);
        let meta_sha = crate::sha256_hex(arts[0].metadata.as_bytes());
        assert_eq!(w10["core-metadata"]["sha256"], meta_sha);
        assert_eq!(w10["data-dist-info-metadata"]["sha256"], meta_sha);
        assert_eq!(s110["filename"], arts[1].filename);
        assert_eq!(s110["requires-python"], Value::Null);
        assert_eq!(s110["core-metadata"], false);
        assert_eq!(s110["data-dist-info-metadata"], false);

        for accept in [
            Some("text/html"),
            Some("application/vnd.pypi.simple.v1+html"),
            Some("*/*"),
            Some("application/json"),
            Some("application/vnd.pypi.simple.v1+json;q=0, */*"),
            None,
        ] {
            let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
            let r = get(&c, &url, &headers);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(
                header(&r, "content-type").unwrap(),
                SIMPLE_HTML,
                "{accept:?}"
            );
            let html = r.text().unwrap();
            assert!(html.contains("<meta name=\"pypi:repository-version\" content=\"1.1\">"));
            assert!(
                html.contains(" data-requires-python=\"&gt;=3.8\""),
                "{html}"
            );
            assert!(html.contains(&format!(
                " data-dist-info-metadata=\"sha256={meta_sha}\" data-core-metadata=\"sha256={meta_sha}\""
            )));
            assert!(!html.contains("data-yanked"));
            assert_eq!(html.matches("<a ").count(), 3);
        }

        // The project list.
        let list = json_page(&c, &up.index_url());
        assert_eq!(list["meta"]["api-version"], "1.1");
        assert_eq!(list["projects"], serde_json::json!([{ "name": "Foo_Bar" }]));
        let r = get(&c, &up.index_url(), &[("accept", "text/html")]);
        assert_eq!(header(&r, "content-type").unwrap(), SIMPLE_HTML);
        assert!(r
            .text()
            .unwrap()
            .contains("<a href=\"/simple/foo-bar/\">Foo_Bar</a>"));
    }

    #[test]
    fn file_urls_are_absolute_on_the_files_port_with_their_sha256() {
        let (up, arts) = fixture();
        let c = client();
        assert_ne!(up.pages_addr().port(), up.files_addr().port());
        assert_eq!(up.files_base(), format!("http://{}/", up.files_addr()));
        let page = json_page(&c, &up.project_url("foo-bar"));
        let html = get(&c, &up.project_url("foo-bar"), &[]).text().unwrap();
        for (f, art) in page["files"].as_array().unwrap().iter().zip(&arts) {
            let url = f["url"].as_str().unwrap();
            let sha = art.sha256();
            assert_eq!(
                url,
                format!("{}files/{}/{}", up.files_base(), &sha[..16], art.filename)
            );
            assert_eq!(url, up.file_url(&art.filename));
            assert_eq!(f["hashes"]["sha256"], sha);
            assert!(
                html.contains(&format!("<a href=\"{url}#sha256={sha}\"")),
                "{html}"
            );
            let r = get(&c, url, &[]);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(
                header(&r, "content-type").unwrap(),
                "application/octet-stream"
            );
            assert_eq!(
                header(&r, "content-length").unwrap(),
                art.bytes.len().to_string()
            );
            assert_eq!(header(&r, "etag").unwrap(), format!("\"{sha}\""));
            let body = r.bytes().unwrap();
            assert_eq!(crate::sha256_hex(&body), sha);

            let r = c.head(url).send().unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(
                header(&r, "content-length").unwrap(),
                art.bytes.len().to_string()
            );
            assert!(r.bytes().unwrap().is_empty());

            let r = get(&c, url, &[("if-none-match", &format!("\"{sha}\""))]);
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        }
        // Byte ranges.
        let url = up.file_url(&arts[0].filename);
        let r = get(&c, &url, &[("range", "bytes=2-11")]);
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        let len = arts[0].bytes.len();
        assert_eq!(
            header(&r, "content-range").unwrap(),
            format!("bytes 2-11/{len}")
        );
        assert_eq!(r.bytes().unwrap().as_ref(), &arts[0].bytes[2..12]);
        let r = get(&c, &url, &[("range", "bytes=-4")]);
        assert_eq!(r.bytes().unwrap().as_ref(), &arts[0].bytes[len - 4..]);
        let r = get(&c, &url, &[("range", &format!("bytes={len}-"))]);
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        // Unknown files, wrong prefixes, other paths; pages are not there.
        let wrong_prefix = url.replace(&arts[0].sha256()[..16], "0000000000000000");
        let base = up.files_base();
        for bad in [
            wrong_prefix,
            format!("{base}files/{}/nope-1.0.tar.gz", &arts[0].sha256()[..16]),
            base.clone(),
            format!("{base}simple/foo-bar/"),
            format!("http://{}/files/x/{}", up.pages_addr(), arts[0].filename),
        ] {
            assert_eq!(get(&c, &bad, &[]).status(), StatusCode::NOT_FOUND, "{bad}");
        }
    }

    #[test]
    fn non_normalized_names_redirect_and_unknown_projects_are_404() {
        let (up, _) = fixture();
        let c = client();
        let root = format!("http://{}", up.pages_addr());
        for path in ["/simple/Foo_Bar/", "/simple/FOO..bar/", "/simple/foo-bar"] {
            let r = get(&c, &format!("{root}{path}"), &[("accept", PIP_ACCEPT)]);
            assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY, "{path}");
            assert_eq!(header(&r, "location").unwrap(), "/simple/foo-bar/");
        }
        assert_eq!(up.page_hits("foo-bar"), 3);
        assert_eq!(up.page_hits("Foo_Bar"), 3, "counted by normalized name");
        let r = get(&c, &format!("{root}/simple"), &[]);
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(header(&r, "location").unwrap(), "/simple/");
        for path in [
            "/simple/unknown/",
            "/simple/Unknown_Thing/",
            "/simple/foo-bar/x",
            "/",
        ] {
            let r = get(&c, &format!("{root}{path}"), &[]);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        }
        assert_eq!(up.page_hits("unknown"), 1);
        assert_eq!(up.page_hits("unknown-thing"), 1);
        assert_eq!(
            up.page_hits("foo-bar"),
            3,
            "/simple/foo-bar/x is not the page"
        );
        // A client that follows redirects lands on the page.
        let follow = Client::builder().no_gzip().no_proxy().build().unwrap();
        let r = get(
            &follow,
            &format!("{root}/simple/Foo_Bar/"),
            &[("accept", PIP_ACCEPT)],
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(up.page_hits("foo-bar"), 5);
        assert_eq!(up.requests(), 10);
    }

    #[test]
    fn etag_and_last_modified_give_304() {
        let (up, _) = fixture();
        let c = client();
        let url = up.project_url("foo-bar");
        let r = get(&c, &url, &[("accept", PIP_ACCEPT)]);
        assert_eq!(header(&r, "cache-control").unwrap(), PAGE_CACHE_CONTROL);
        let etag = header(&r, "etag").unwrap();
        let modified = header(&r, "last-modified").unwrap();
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34);
        assert!(modified.ends_with(" GMT"));
        assert_eq!(
            parse_http_date(&modified).map(http_date),
            Some(modified.clone())
        );
        let body = r.bytes().unwrap();
        assert_eq!(etag, format!("\"{}\"", &crate::sha256_hex(&body)[..32]));

        for inm in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".into(),
        ] {
            let r = get(&c, &url, &[("accept", PIP_ACCEPT), ("if-none-match", &inm)]);
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{inm}");
            assert_eq!(header(&r, "etag").unwrap(), etag);
            assert_eq!(header(&r, "cache-control").unwrap(), PAGE_CACHE_CONTROL);
            assert!(r.bytes().unwrap().is_empty());
        }
        // Another representation has another ETag.
        let r = get(
            &c,
            &url,
            &[("accept", "text/html"), ("if-none-match", &etag)],
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_ne!(header(&r, "etag").unwrap(), etag);
        let r = get(
            &c,
            &url,
            &[("accept", PIP_ACCEPT), ("if-modified-since", &modified)],
        );
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        // If-None-Match wins over If-Modified-Since.
        let r = get(
            &c,
            &url,
            &[
                ("accept", PIP_ACCEPT),
                ("if-none-match", "\"stale\""),
                ("if-modified-since", &modified),
            ],
        );
        assert_eq!(r.status(), StatusCode::OK);

        // A change of the project changes both validators.
        let w = crate::wheel("Foo_Bar", "2.0");
        up.add_wheel("foo-bar", &w, FileOpts::default());
        let r = get(
            &c,
            &url,
            &[("accept", PIP_ACCEPT), ("if-none-match", &etag)],
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_ne!(header(&r, "etag").unwrap(), etag);
        let r = get(
            &c,
            &url,
            &[("accept", PIP_ACCEPT), ("if-modified-since", &modified)],
        );
        assert_eq!(r.status(), StatusCode::OK);
        let newer = header(&r, "last-modified").unwrap();
        assert!(parse_http_date(&newer) > parse_http_date(&modified));
        // Another project's change does not touch this page.
        let etag = header(&r, "etag").unwrap();
        up.add_wheel("other", &crate::wheel("other", "1.0"), FileOpts::default());
        let r = get(
            &c,
            &url,
            &[("accept", PIP_ACCEPT), ("if-none-match", &etag)],
        );
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn pages_are_gzipped_when_accepted_and_files_never() {
        let (up, arts) = fixture();
        let c = client();
        let url = up.project_url("foo-bar");
        let plain = get(&c, &url, &[("accept", PIP_ACCEPT)]);
        assert_eq!(header(&plain, "content-encoding"), None);
        assert!(header(&plain, "vary").unwrap().contains("Accept-Encoding"));
        let plain = plain.bytes().unwrap();

        let r = get(
            &c,
            &url,
            &[
                ("accept", PIP_ACCEPT),
                ("accept-encoding", "gzip, deflate, br"),
            ],
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-encoding").unwrap(), "gzip");
        assert_eq!(header(&r, "vary").unwrap(), PAGE_VARY);
        let etag = header(&r, "etag").unwrap();
        let gz = r.bytes().unwrap();
        assert_ne!(gz, plain);
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(gz.as_ref())
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain.as_ref());
        let r = get(
            &c,
            &url,
            &[
                ("accept", PIP_ACCEPT),
                ("accept-encoding", "gzip"),
                ("if-none-match", &etag),
            ],
        );
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        // HTML pages and the project list too; q=0 refuses gzip.
        let r = get(&c, &url, &[("accept-encoding", "gzip")]);
        assert_eq!(header(&r, "content-encoding").unwrap(), "gzip");
        let r = get(&c, &up.index_url(), &[("accept-encoding", "gzip")]);
        assert_eq!(header(&r, "content-encoding").unwrap(), "gzip");
        let r = get(&c, &url, &[("accept-encoding", "gzip;q=0, identity")]);
        assert_eq!(header(&r, "content-encoding"), None);

        let r = get(
            &c,
            &up.file_url(&arts[0].filename),
            &[("accept-encoding", "gzip")],
        );
        assert_eq!(header(&r, "content-encoding"), None);
        assert_eq!(r.bytes().unwrap().as_ref(), arts[0].bytes.as_slice());
    }

    #[test]
    fn serves_core_metadata_next_to_the_file() {
        let (up, arts) = fixture();
        let c = client();
        let no_meta = crate::wheel("Foo_Bar", "3.0");
        up.add_wheel(
            "Foo_Bar",
            &no_meta,
            FileOpts {
                core_metadata: false,
                ..FileOpts::default()
            },
        );
        let url = up.file_url(&arts[0].filename);
        let r = get(&c, &format!("{url}.metadata"), &[]);
        assert_eq!(r.status(), StatusCode::OK);
        let sha = crate::sha256_hex(arts[0].metadata.as_bytes());
        assert_eq!(header(&r, "etag").unwrap(), format!("\"{sha}\""));
        assert_eq!(r.bytes().unwrap().as_ref(), arts[0].metadata.as_bytes());
        let r = c.head(format!("{url}.metadata")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);

        let page = json_page(&c, &up.project_url("foo-bar"));
        let listed = &page["files"][3];
        assert_eq!(listed["filename"], no_meta.filename);
        assert_eq!(listed["core-metadata"], false);
        assert_eq!(listed["data-dist-info-metadata"], false);
        let html = get(&c, &up.project_url("foo-bar"), &[]).text().unwrap();
        let line = html
            .lines()
            .find(|l| l.contains(&no_meta.filename))
            .unwrap();
        assert!(!line.contains("data-core-metadata"), "{line}");
        for missing in [&no_meta.filename, &arts[1].filename] {
            let r = get(&c, &format!("{}.metadata", up.file_url(missing)), &[]);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{missing}");
        }
        // Metadata given by hand.
        up.add_file_with_metadata(
            "Foo_Bar",
            "foo_bar-4.0.tar.gz",
            b"not really".to_vec(),
            Some(b"Metadata-Version: 2.1\nName: foo-bar\nVersion: 4.0\n".to_vec()),
            FileOpts::default(),
        );
        let r = get(
            &c,
            &format!("{}.metadata", up.file_url("foo_bar-4.0.tar.gz")),
            &[],
        );
        assert_eq!(r.status(), StatusCode::OK);

        assert_eq!(
            up.metadata_hits(&arts[0].filename),
            1,
            "HEAD is not counted"
        );
        assert_eq!(up.metadata_hits(&no_meta.filename), 1);
        assert_eq!(up.metadata_hits(&arts[1].filename), 1);
        assert_eq!(up.file_hits(&arts[0].filename), 0);
    }

    #[test]
    fn counters_are_exact_under_50_concurrent_connections() {
        let (up, arts) = fixture();
        // Every answer waits, so all 50 connections are open at once.
        up.set_latency(Duration::from_millis(100));
        let url = up.file_url(&arts[0].filename);
        let page = up.project_url("foo-bar");
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..50 {
                s.spawn(|| {
                    let c = client();
                    let r = get(&c, &url, &[("connection", "close")]);
                    assert_eq!(r.bytes().unwrap().as_ref(), arts[0].bytes.as_slice());
                    let r = get(&c, &page, &[("accept", PIP_ACCEPT)]);
                    assert_eq!(r.status(), StatusCode::OK);
                    // Keep-alive: the same connection again.
                    let r = get(&c, &page, &[("accept", PIP_ACCEPT)]);
                    assert_eq!(r.status(), StatusCode::OK);
                });
            }
        });
        // Served concurrently, not one after another (50 × 300 ms).
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(up.file_hits(&arts[0].filename), 50);
        assert_eq!(up.page_hits("foo-bar"), 100);
        assert_eq!(up.metadata_hits(&arts[0].filename), 0);
        assert_eq!(up.requests(), 150);
        up.set_latency(Duration::ZERO);
        up.reset_counters();
        assert_eq!(up.requests(), 0);
        assert_eq!(up.file_hits(&arts[0].filename), 0);
        assert_eq!(up.page_hits("foo-bar"), 0);
        assert_eq!(up.file_hits("never-added.whl"), 0);
    }

    #[test]
    fn stop_refuses_connections_and_restart_serves_the_same_content() {
        let (mut up, arts) = fixture();
        let page = up.project_url("foo-bar");
        let file = up.file_url(&arts[0].filename);
        let before = json_page(&client(), &page);
        up.stop();
        assert!(!up.is_running());
        up.stop();
        for url in [&page, &file] {
            let err = client().get(url).send().unwrap_err();
            assert!(err.is_connect(), "{url}: {err:?}");
        }
        let requests = up.requests();
        up.restart();
        up.restart();
        assert!(up.is_running());
        assert_eq!(up.project_url("foo-bar"), page);
        let c = client();
        assert_eq!(json_page(&c, &page), before);
        assert_eq!(
            get(&c, &file, &[]).bytes().unwrap().as_ref(),
            arts[0].bytes.as_slice()
        );
        assert_eq!(up.requests(), requests + 2);
        assert_eq!(up.page_hits("foo-bar"), 2);
        // And once more, with a kept-alive connection open across the stop.
        up.stop();
        assert!(c.get(&page).send().is_err());
        up.restart();
        assert_eq!(json_page(&client(), &page), before);
    }

    #[test]
    fn server_error_fault() {
        let (up, arts) = fixture();
        let c = client();
        up.set_fault(Fault::ServerError);
        let file = up.file_url(&arts[0].filename);
        for url in [
            up.project_url("foo-bar"),
            up.index_url(),
            file.clone(),
            format!("{file}.metadata"),
        ] {
            assert_eq!(
                get(&c, &url, &[]).status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{url}"
            );
        }
        assert_eq!(up.page_hits("foo-bar"), 1);
        assert_eq!(up.file_hits(&arts[0].filename), 1);
        assert_eq!(up.metadata_hits(&arts[0].filename), 1);
        // Per port.
        up.set_fault(Fault::None);
        up.set_files_fault(Fault::ServerError);
        assert_eq!(
            get(&c, &up.project_url("foo-bar"), &[]).status(),
            StatusCode::OK
        );
        assert_eq!(
            get(&c, &file, &[]).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        up.set_files_fault(Fault::None);
        up.set_pages_fault(Fault::ServerError);
        assert_eq!(
            get(&c, &up.project_url("foo-bar"), &[]).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(get(&c, &file, &[]).status(), StatusCode::OK);
        up.set_fault(Fault::None);
        assert_eq!(
            get(&c, &up.project_url("foo-bar"), &[]).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn hang_fault_holds_requests_until_cleared_or_dropped() {
        let (up, arts) = fixture();
        up.set_fault(Fault::Hang);
        let page = up.project_url("foo-bar");
        let file = up.file_url(&arts[0].filename);
        for url in [&page, &file] {
            let err = client_with_timeout(Duration::from_millis(200))
                .get(url)
                .send()
                .unwrap_err();
            assert!(err.is_timeout(), "{url}: {err:?}");
        }
        assert_eq!(up.page_hits("foo-bar"), 1, "the request was read");
        assert_eq!(up.file_hits(&arts[0].filename), 1);

        // A waiting request is answered once the fault is cleared.
        std::thread::scope(|s| {
            let waiting = s.spawn(|| get(&client(), &page, &[("accept", PIP_ACCEPT)]).status());
            wait_until("the hanging request", || up.page_hits("foo-bar") == 2);
            std::thread::sleep(Duration::from_millis(20));
            assert!(!waiting.is_finished());
            up.set_fault(Fault::None);
            assert_eq!(waiting.join().unwrap(), StatusCode::OK);
        });

        // Dropping the upstream closes hanging connections unanswered.
        up.set_fault(Fault::Hang);
        let waiting = std::thread::spawn(move || client().get(file).send().map(|r| r.status()));
        wait_until("the hanging file request", || {
            up.file_hits(&arts[0].filename) == 2
        });
        let dropped = Instant::now();
        drop(up);
        assert!(dropped.elapsed() < Duration::from_secs(5));
        assert!(waiting.join().unwrap().is_err());
    }

    #[test]
    fn redirect_loop_fault() {
        let (up, arts) = fixture();
        let c = client();
        up.set_fault(Fault::RedirectLoop);
        let root = format!("http://{}", up.pages_addr());
        let mut path = "/simple/foo-bar/".to_string();
        for _ in 0..3 {
            let r = get(&c, &format!("{root}{path}"), &[("accept", PIP_ACCEPT)]);
            assert_eq!(r.status(), StatusCode::FOUND);
            let next = header(&r, "location").unwrap();
            assert_eq!(next, format!("{path}x"));
            path = next;
        }
        assert_eq!(path, "/simple/foo-bar/xxx");
        assert_eq!(up.page_hits("foo-bar"), 1);
        // A following client gives up.
        let follow = Client::builder().no_gzip().no_proxy().build().unwrap();
        assert!(follow.get(up.project_url("foo-bar")).send().is_err());
        // Files loop too (on the files port only here).
        up.set_pages_fault(Fault::None);
        let file = up.file_url(&arts[0].filename);
        let r = get(&c, &file, &[]);
        assert_eq!(r.status(), StatusCode::FOUND);
        let location = header(&r, "location").unwrap();
        assert!(file.ends_with(location.trim_end_matches('x')));
        assert!(location.ends_with(".whlx"));
        assert_eq!(
            get(&c, &up.project_url("foo-bar"), &[]).status(),
            StatusCode::OK
        );
        up.set_fault(Fault::None);
        assert_eq!(get(&c, &file, &[]).status(), StatusCode::OK);
    }

    #[test]
    fn wrong_bytes_fault_flips_one_byte_of_files() {
        let (up, arts) = fixture();
        let c = client();
        let url = up.project_url("foo-bar");
        let page_before = get(&c, &url, &[("accept", PIP_ACCEPT)]).bytes().unwrap();
        up.set_fault(Fault::WrongBytes);
        let page_during = get(&c, &url, &[("accept", PIP_ACCEPT)]).bytes().unwrap();
        assert_eq!(page_before, page_during, "pages are not affected");
        let file = up.file_url(&arts[0].filename);
        let r = get(&c, &file, &[]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "content-length").unwrap(),
            arts[0].bytes.len().to_string()
        );
        let got = r.bytes().unwrap();
        assert_eq!(got.len(), arts[0].bytes.len());
        let differing = got
            .iter()
            .zip(&arts[0].bytes)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 1);
        assert_ne!(crate::sha256_hex(&got), arts[0].sha256());
        let meta = get(&c, &format!("{file}.metadata"), &[]).bytes().unwrap();
        assert_ne!(meta.as_ref(), arts[0].metadata.as_bytes());
        assert_eq!(meta.len(), arts[0].metadata.len());
        up.set_fault(Fault::None);
        let got = get(&c, &file, &[]).bytes().unwrap();
        assert_eq!(crate::sha256_hex(&got), arts[0].sha256());
    }

    #[test]
    fn project_faults() {
        let (up, arts) = fixture();
        up.add_wheel("other", &crate::wheel("other", "1.0"), FileOpts::default());
        let c = client();
        let url = up.project_url("foo-bar");
        let normal = json_page(&c, &url);

        up.set_project_fault("Foo_Bar", ProjectFault::MalformedPage);
        for accept in [PIP_ACCEPT, "text/html"] {
            let r = get(&c, &url, &[("accept", accept)]);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(header(&r, "content-type").unwrap(), SIMPLE_JSON);
            let body = r.bytes().unwrap();
            assert!(serde_json::from_slice::<Value>(&body).is_err());
            assert!(std::str::from_utf8(&body).is_err());
        }
        assert_eq!(json_page(&c, &up.project_url("other"))["name"], "other");

        up.set_project_fault("foo-bar", ProjectFault::OtherSchemeUrl);
        let page = json_page(&c, &url);
        let files = page["files"].as_array().unwrap();
        assert_eq!(files.len(), 3);
        let first = files[0]["url"].as_str().unwrap();
        assert_eq!(
            first,
            up.file_url(&arts[0].filename).replace("http://", "ftp://")
        );
        assert!(files[1..]
            .iter()
            .all(|f| f["url"].as_str().unwrap().starts_with(&up.files_base())));
        let html = get(&c, &url, &[]).text().unwrap();
        assert!(html.contains(&format!("<a href=\"ftp://{}/files/", up.files_addr())));

        up.set_project_fault("foo-bar", ProjectFault::TraversalFilename);
        let page = json_page(&c, &url);
        let files = page["files"].as_array().unwrap();
        assert_eq!(files.len(), 4);
        let evil = &files[3];
        assert_eq!(evil["filename"], TRAVERSAL_FILENAME);
        let evil_url = evil["url"].as_str().unwrap();
        assert!(evil_url.starts_with(&up.files_base()));
        assert!(
            evil_url.ends_with("/..%2F..%2Fevil-1.0-py3-none-any.whl"),
            "{evil_url}"
        );
        let got = get(&c, evil_url, &[]).bytes().unwrap();
        assert_eq!(evil["hashes"]["sha256"], crate::sha256_hex(&got));
        assert_eq!(up.file_hits(TRAVERSAL_FILENAME), 1);
        assert_eq!(page["versions"], normal["versions"]);
        let html = get(&c, &url, &[]).text().unwrap();
        assert!(html.contains(">../../evil-1.0-py3-none-any.whl</a>"));

        up.set_project_fault("foo-bar", ProjectFault::None);
        assert_eq!(json_page(&c, &url)["files"], normal["files"]);
        // Unknown projects stay 404 whatever their fault.
        up.set_project_fault("ghost", ProjectFault::MalformedPage);
        assert_eq!(
            get(&c, &up.project_url("ghost"), &[]).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn yanks_are_listed() {
        let (up, arts) = fixture();
        let c = client();
        let url = up.project_url("foo-bar");
        let name = &arts[2].filename;
        let line = |html: &str| {
            html.lines()
                .find(|l| l.contains(name.as_str()))
                .unwrap()
                .to_string()
        };
        up.set_yanked(name, Some("broken <build>".into()));
        assert_eq!(json_page(&c, &url)["files"][2]["yanked"], "broken <build>");
        let html = get(&c, &url, &[]).text().unwrap();
        assert!(line(&html).contains(" data-yanked=\"broken &lt;build&gt;\""));
        up.set_yanked(name, Some(String::new()));
        assert_eq!(json_page(&c, &url)["files"][2]["yanked"], true);
        assert!(line(&get(&c, &url, &[]).text().unwrap()).contains(" data-yanked=\"\""));
        up.set_yanked(name, None);
        assert_eq!(json_page(&c, &url)["files"][2]["yanked"], false);
        assert!(!get(&c, &url, &[]).text().unwrap().contains("data-yanked"));

        let w = crate::wheel("Foo_Bar", "9.0");
        up.add_wheel(
            "Foo_Bar",
            &w,
            FileOpts {
                yanked: Some("too new".into()),
                requires_python: Some(">=3.99".into()),
                upload_time: Some("2026-05-06T07:08:09.000000Z".into()),
                ..FileOpts::default()
            },
        );
        let f = &json_page(&c, &url)["files"][3];
        assert_eq!(f["yanked"], "too new");
        assert_eq!(f["requires-python"], ">=3.99");
        assert_eq!(f["upload-time"], "2026-05-06T07:08:09.000000Z");
    }

    #[test]
    fn http_dates_round_trip() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        for secs in [0, 951_782_400, 1_767_323_045, 4_102_444_800] {
            assert_eq!(parse_http_date(&http_date(secs)), Some(secs));
        }
    }

    /// pip and uv resolve `Requires-Dist` of the served METADATA, skip a
    /// yanked version, and take the newest matching one.
    #[test]
    fn pip_and_uv_install_through_the_fixture() {
        let up = FixtureUpstream::start();
        let top = WheelSpec::new("top-pkg", "1.0")
            .requires("dep-a>=1.0,<2")
            .build();
        up.add_wheel("top-pkg", &top, FileOpts::default());
        for (v, yanked) in [
            ("0.5", None),
            ("1.0", None),
            ("1.1", Some("bad".to_string())),
            ("2.0", None),
        ] {
            let w = crate::wheel("dep-a", v);
            up.add_wheel(
                "dep-a",
                &w,
                FileOpts {
                    yanked,
                    ..FileOpts::default()
                },
            );
        }
        let tools = crate::tools::py_tools();
        let dir = tempfile::tempdir().unwrap();

        let pip_dir = dir.path().join("pip");
        let out = crate::tools::isolate_python_env(&mut Command::new(&tools.python3))
            .args(["-m", "pip", "download", "--no-cache-dir", "--index-url"])
            .arg(up.index_url())
            .arg("--dest")
            .arg(&pip_dir)
            .arg("top-pkg")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got: Vec<String> = std::fs::read_dir(&pip_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        got.sort();
        assert_eq!(
            got,
            ["dep_a-1.0-py3-none-any.whl", "top_pkg-1.0-py3-none-any.whl"]
        );
        assert_eq!(up.file_hits("dep_a-1.0-py3-none-any.whl"), 1);
        assert_eq!(up.file_hits("dep_a-1.1-py3-none-any.whl"), 0);

        let target = dir.path().join("uv");
        let out = crate::tools::isolate_python_env(&mut Command::new(&tools.uv))
            .args(["pip", "install", "--no-cache", "--python"])
            .arg(&tools.python3)
            .arg("--target")
            .arg(&target)
            .arg("--index-url")
            .arg(up.index_url())
            .arg("top-pkg")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "uv: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(target.join("top_pkg/__init__.py").is_file());
        assert!(target.join("dep_a-1.0.dist-info").is_dir());
        assert!(
            up.metadata_hits("top_pkg-1.0-py3-none-any.whl") >= 1,
            "uv reads PEP 658 metadata"
        );
    }
}
