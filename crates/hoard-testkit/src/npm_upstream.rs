//! A fixture upstream npm registry: what a hoard npm "mirror" repository is
//! pointed at in the tests, standing in for the public npm registry.
//!
//! [`NpmFixtureUpstream`] listens on two loopback ports, as the public
//! registry serves documents and tarballs from different places. One serves
//! packuments (`GET /{name}`; a scoped name as `/@scope%2fname`, which is
//! what npm sends, or as `/@scope/name`): the abbreviated document when
//! `Accept` asks for [`ABBREVIATED_MEDIA_TYPE`] (as `npm install` does),
//! else the full one. The other serves the tarballs at the absolute URLs the
//! packuments give
//! (`http://127.0.0.1:{tarballs}/tarballs/{name}/-/{basename}-{version}.tgz`).
//! Packuments carry strong ETags, `Last-Modified` and
//! [`PACKUMENT_CACHE_CONTROL`], answer conditional requests with 304 and are
//! gzip-encoded when the client accepts it.
//!
//! Tests control it while it runs: versions are added with the digests that
//! their `dist` should declare, tagged and deprecated; the whole-server
//! [`Fault`]s of [`crate::upstream`] (500s, hangs, redirect loops, corrupted
//! tarballs) and per-package [`NpmPackageFault`]s (hostile packuments) are
//! switched on and off; the listeners are stopped (connections refused) and
//! restarted on the same ports; exact, thread-safe counters tell how many
//! requests reached it. [`npm_package_tarball`] makes tarballs that the real
//! npm client installs.
//!
//! Blocking, like the rest of the test kit: one thread accepts on each port
//! and one thread serves each connection (HTTP/1.1 with keep-alive), with the
//! request parsing, response writing and gzip of [`crate::upstream`].

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::npm::{sha1_hex, sri_sha512};
pub use crate::upstream::Fault;
use crate::upstream::{
    civil_from_days, document_response, flip_middle_byte, lock, Listener, Request, Response, Serve,
};

/// The media type of the abbreviated packument ("corgi"), asked for in
/// `Accept` and answered as `Content-Type`.
pub const ABBREVIATED_MEDIA_TYPE: &str = "application/vnd.npm.install-v1+json";
/// The `Content-Type` of full packuments.
pub const FULL_MEDIA_TYPE: &str = "application/json";
/// `Cache-Control` of every packument.
pub const PACKUMENT_CACHE_CONTROL: &str = "public, max-age=300";
/// The time of the first version added to a package without
/// [`NpmVersionOpts::time`]; each further one is a minute later, so that
/// versions are ordered in time as they were added.
pub const DEFAULT_PUBLISH_TIME: &str = "2026-01-02T03:04:05.678Z";
/// The version key that [`NpmPackageFault::BadVersion`] adds.
pub const BAD_VERSION: &str = "not-a-version!";
/// The body of every 404, as the public registry words it.
pub const NOT_FOUND_BODY: &str = r#"{"error":"Not found"}"#;

/// [`DEFAULT_PUBLISH_TIME`] in Unix milliseconds.
const DEFAULT_PUBLISH_MS: u64 = 1_767_323_045_678;
/// The manifest fields that the abbreviated packument keeps.
const ABBREVIATED_FIELDS: &[&str] = &[
    "name",
    "version",
    "dependencies",
    "deprecated",
    "dist",
    "engines",
];

/// Which digests a version's `dist` declares (the tarball is served the
/// same whatever they are).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeclaredDigests {
    /// `integrity` (`sha512-…`, SRI) and `shasum` (hex sha1), as npm
    /// publishes today.
    #[default]
    Both,
    IntegrityOnly,
    /// Only the hex sha1, as very old packages have it.
    ShasumOnly,
    None,
}

impl DeclaredDigests {
    fn integrity(self) -> bool {
        matches!(self, DeclaredDigests::Both | DeclaredDigests::IntegrityOnly)
    }

    fn shasum(self) -> bool {
        matches!(self, DeclaredDigests::Both | DeclaredDigests::ShasumOnly)
    }
}

/// A fault of one package's packument (both documents), set with
/// [`NpmFixtureUpstream::set_package_fault`]. It takes effect for a package
/// that has versions; an unknown package stays a 404. The versions that the
/// fault does not name stay correct.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NpmPackageFault {
    /// A correct packument.
    #[default]
    None,
    /// `200` with the first half of the document: truncated JSON, with the
    /// content type and validators of a good answer.
    MalformedPackument,
    /// The first added version's `dist.tarball` is
    /// `ftp://127.0.0.1:{tarballs}/tarballs/…`.
    OtherSchemeTarball,
    /// The first added version's `dist` has neither `integrity` nor
    /// `shasum`.
    NoDigests,
    /// One extra version [`BAD_VERSION`] is listed (also in `time`) with a
    /// valid-looking manifest: the first added version's, under that
    /// version, at a tarball URL of its own where the first version's bytes
    /// are served (with the digests that it declares).
    BadVersion,
}

/// How a version is listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NpmVersionOpts {
    /// The manifest's `dependencies` (give the same as the tarball's
    /// `package.json`, as a real publish would).
    pub dependencies: BTreeMap<String, String>,
    /// The `deprecated` message; `None` lists the version undeprecated.
    pub deprecated: Option<String>,
    pub digests: DeclaredDigests,
    /// The dist-tag pointed at this version (`npm publish --tag`); `None`
    /// moves `latest`. A package always gets a `latest`, as on the public
    /// registry: its first version gets it whatever the tag.
    pub tag: Option<String>,
    /// Its `time` entry (ISO 8601, e.g. `2026-01-02T03:04:05.678Z`); `None`
    /// is [`DEFAULT_PUBLISH_TIME`] plus a minute per version that the package
    /// already has.
    pub time: Option<String>,
}

/// A fixture upstream npm registry on two loopback ports (registry and
/// tarballs). See the [module documentation](self).
///
/// Dropping it stops both listeners, closes every connection and joins all
/// its threads.
pub struct NpmFixtureUpstream {
    shared: Arc<NpmShared>,
    registry: Listener<NpmShared>,
    tarballs: Listener<NpmShared>,
}

impl NpmFixtureUpstream {
    /// Binds two loopback ports (registry and tarballs) and starts serving
    /// an empty registry.
    pub fn start() -> NpmFixtureUpstream {
        let registry = TcpListener::bind("127.0.0.1:0").expect("bind the registry port");
        let tarballs = TcpListener::bind("127.0.0.1:0").expect("bind the tarballs port");
        let tarballs_addr = tarballs.local_addr().expect("tarballs port address");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let shared = Arc::new(NpmShared {
            state: Mutex::new(NpmState::default()),
            changed: Condvar::new(),
            requests: AtomicUsize::new(0),
            tarballs_base: format!("http://{tarballs_addr}"),
            // Last-Modified is this plus the serial of the last change: in
            // the past, and later after every change.
            epoch: now.saturating_sub(86_400),
        });
        NpmFixtureUpstream {
            registry: Listener::start(registry, NpmPort::Registry, &shared),
            tarballs: Listener::start(tarballs, NpmPort::Tarballs, &shared),
            shared,
        }
    }

    /// The registry base URL, `http://127.0.0.1:{registry}/` (with the
    /// trailing slash, as npm registry URLs are written).
    pub fn registry_url(&self) -> String {
        format!("http://{}/", self.registry.addr())
    }

    /// The packument URL as npm asks for it: `{registry_url}{name}`, a
    /// scoped name's slash encoded (`@scope%2fname`).
    pub fn packument_url(&self, name: &str) -> String {
        format!("{}{}", self.registry_url(), name.replace('/', "%2f"))
    }

    /// The absolute URL that the packument gives for a version's tarball
    /// (whether or not it was added).
    pub fn tarball_url(&self, name: &str, version: &str) -> String {
        self.shared.tarball_url(name, version)
    }

    /// The registry port's address.
    pub fn registry_addr(&self) -> SocketAddr {
        self.registry.addr()
    }

    /// The tarballs port's address.
    pub fn tarballs_addr(&self) -> SocketAddr {
        self.tarballs.addr()
    }

    /// Lists `name@version` with `tarball` as its bytes (they need not be a
    /// tarball; `fileCount` and `unpackedSize` are declared only when they
    /// are). Adding a version again replaces it in place (it stays "first"
    /// for the [`NpmPackageFault`]s if it was).
    pub fn add_version(&self, name: &str, version: &str, tarball: Vec<u8>, opts: NpmVersionOpts) {
        assert!(
            is_package_name(name),
            "{name:?} is not a package name the fixture can serve"
        );
        assert!(
            !version.is_empty() && !version.contains('/'),
            "{version:?} cannot be a version in a tarball URL"
        );
        let stats = tar_stats(&tarball);
        let mut st = self.shared.lock();
        let serial = st.bump();
        let p = st.packages.entry(name.to_string()).or_default();
        let time = opts
            .time
            .unwrap_or_else(|| iso_time(DEFAULT_PUBLISH_MS + 60_000 * p.versions.len() as u64));
        let entry = VersionEntry {
            version: version.to_string(),
            integrity: sri_sha512(&tarball),
            shasum: sha1_hex(&tarball),
            bytes: Arc::new(tarball),
            stats,
            dependencies: opts.dependencies,
            deprecated: opts.deprecated,
            digests: opts.digests,
            time,
        };
        match p.versions.iter_mut().find(|v| v.version == version) {
            Some(v) => *v = entry,
            None => p.versions.push(entry),
        }
        let tag = opts.tag.unwrap_or_else(|| "latest".to_string());
        p.dist_tags.insert(tag, version.to_string());
        p.dist_tags
            .entry("latest".to_string())
            .or_insert_with(|| version.to_string());
        p.serial = serial;
    }

    /// [`NpmFixtureUpstream::add_version`] of an [`npm_package_tarball`]
    /// with these dependencies (in its `package.json` and its manifest), the
    /// other options by default. Returns the tarball.
    pub fn add_package(&self, name: &str, version: &str, dependencies: &[(&str, &str)]) -> Vec<u8> {
        let dependencies: BTreeMap<String, String> = dependencies
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let tarball = npm_package_tarball(name, version, &dependencies);
        let opts = NpmVersionOpts {
            dependencies,
            ..NpmVersionOpts::default()
        };
        self.add_version(name, version, tarball.clone(), opts);
        tarball
    }

    /// Points `tag` at `version` (`Some`), or removes it (`None`; `latest`
    /// too can be removed). Panics if the package or the version was not
    /// added.
    pub fn set_dist_tag(&self, name: &str, tag: &str, version: Option<&str>) {
        self.change(name, |p| match version {
            Some(v) => {
                p.version_mut(name, v);
                p.dist_tags.insert(tag.to_string(), v.to_string());
            }
            None => {
                p.dist_tags.remove(tag);
            }
        });
    }

    /// Deprecates a version with `message` (`Some`; npm treats an empty one
    /// as not deprecated) or lists it undeprecated (`None`). Panics if the
    /// version was not added.
    pub fn deprecate(&self, name: &str, version: &str, message: Option<&str>) {
        self.change(name, |p| {
            p.version_mut(name, version).deprecated = message.map(str::to_string);
        });
    }

    /// Changes a package that must exist, as one change of its packument.
    fn change(&self, name: &str, f: impl FnOnce(&mut Package)) {
        let mut st = self.shared.lock();
        let serial = st.bump();
        let p = st
            .packages
            .get_mut(name)
            .unwrap_or_else(|| panic!("the fixture registry has no package {name:?}"));
        f(p);
        p.serial = serial;
    }

    /// Sets the fault of one package's packument (see [`NpmPackageFault`]);
    /// also for a package not added (yet).
    pub fn set_package_fault(&self, name: &str, fault: NpmPackageFault) {
        let mut st = self.shared.lock();
        let serial = st.bump();
        if let Some(p) = st.packages.get_mut(name) {
            p.serial = serial;
        }
        st.package_faults.insert(name.to_string(), fault);
    }

    /// Sets the fault of both ports (see [`Fault`]; [`Fault::WrongBytes`]
    /// corrupts tarballs only). Requests hanging in [`Fault::Hang`] are
    /// released into the new fault.
    pub fn set_fault(&self, fault: Fault) {
        let mut st = self.shared.lock();
        st.registry_fault = fault;
        st.tarballs_fault = fault;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Sets the fault of the registry port only.
    pub fn set_registry_fault(&self, fault: Fault) {
        self.shared.lock().registry_fault = fault;
        self.shared.changed.notify_all();
    }

    /// Sets the fault of the tarballs port only, e.g. corrupted tarballs
    /// behind good packuments.
    pub fn set_tarballs_fault(&self, fault: Fault) {
        self.shared.lock().tarballs_fault = fault;
        self.shared.changed.notify_all();
    }

    /// Delays every answer (on both ports) by `latency`, e.g. so that
    /// concurrent requests through hoard surely overlap. Zero by default.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// GET requests for that package's packument (either spelling of a
    /// scoped name), whatever the answer (304, fault, hang, 404).
    pub fn packument_hits(&self, name: &str) -> usize {
        let st = self.shared.lock();
        st.packument_hits.get(name).copied().unwrap_or(0)
    }

    /// GET requests for that version's tarball URL, whatever the answer
    /// (faults and 404s included; `HEAD` is not counted).
    pub fn tarball_hits(&self, name: &str, version: &str) -> usize {
        let st = self.shared.lock();
        let key = (name.to_string(), version.to_string());
        st.tarball_hits.get(&key).copied().unwrap_or(0)
    }

    /// All requests read on both ports (any method, path and answer).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        let mut st = self.shared.lock();
        st.packument_hits.clear();
        st.tarball_hits.clear();
        self.shared.requests.store(0, Ordering::SeqCst);
    }

    /// Closes both listeners and every open connection (hanging requests
    /// are dropped unanswered): new connections are then refused. The ports
    /// stay bound by this value, so that [`NpmFixtureUpstream::restart`]
    /// gets them back. Stopping twice is a no-op.
    pub fn stop(&mut self) {
        self.registry.stop(&self.shared, true);
        self.tarballs.stop(&self.shared, true);
    }

    /// Listens again on the same two ports, with the same content, faults
    /// and counters. A no-op on ports that are listening.
    pub fn restart(&mut self) {
        self.registry.restart(&self.shared);
        self.tarballs.restart(&self.shared);
    }

    /// Whether the listeners are up (not between
    /// [`NpmFixtureUpstream::stop`] and [`NpmFixtureUpstream::restart`]).
    pub fn is_running(&self) -> bool {
        self.registry.is_listening()
    }
}

impl Drop for NpmFixtureUpstream {
    fn drop(&mut self) {
        self.registry.stop(&self.shared, false);
        self.tarballs.stop(&self.shared, false);
    }
}

/// A package tarball that the real npm client installs: a gzipped tar with
/// `package/package.json` (`name`, `version`, `dependencies`, `main`) and
/// `package/index.js`, which exports the string `"{name}@{version}"` (so a
/// test can `require` it and see which version npm installed).
pub fn npm_package_tarball(
    name: &str,
    version: &str,
    dependencies: &BTreeMap<String, String>,
) -> Vec<u8> {
    let manifest = json!({
        "name": name,
        "version": version,
        "dependencies": dependencies,
        "main": "index.js",
    });
    let id = Value::String(format!("{name}@{version}"));
    crate::npm::npm_pack(
        &[
            (
                "package/package.json".into(),
                serde_json::to_vec_pretty(&manifest).expect("a JSON manifest"),
            ),
            (
                "package/index.js".into(),
                format!("module.exports = {id};\n").into_bytes(),
            ),
        ],
        flate2::Compression::default(),
    )
}

/// One listed version.
#[derive(Clone)]
struct VersionEntry {
    version: String,
    bytes: Arc<Vec<u8>>,
    /// Always computed; declared as `digests` says.
    integrity: String,
    shasum: String,
    /// `fileCount` and `unpackedSize`, when the bytes are a tarball.
    stats: Option<(u64, u64)>,
    dependencies: BTreeMap<String, String>,
    deprecated: Option<String>,
    digests: DeclaredDigests,
    time: String,
}

impl VersionEntry {
    /// The full manifest, with `dist` as `digests` says.
    fn manifest(&self, name: &str, tarball: String, digests: DeclaredDigests) -> Value {
        let mut dist = json!({ "tarball": tarball });
        if digests.integrity() {
            dist["integrity"] = json!(self.integrity);
        }
        if digests.shasum() {
            dist["shasum"] = json!(self.shasum);
        }
        if let Some((files, size)) = self.stats {
            dist["fileCount"] = json!(files);
            dist["unpackedSize"] = json!(size);
        }
        let mut m = json!({
            "name": name,
            "version": self.version,
            "description": description(name),
            "main": "index.js",
            "dependencies": self.dependencies,
            "engines": { "node": "*" },
            "_id": format!("{name}@{}", self.version),
            "dist": dist,
        });
        if let Some(d) = &self.deprecated {
            m["deprecated"] = json!(d);
        }
        m
    }
}

#[derive(Default)]
struct Package {
    /// In the order added.
    versions: Vec<VersionEntry>,
    dist_tags: BTreeMap<String, String>,
    /// The serial of the last change to this package's packument.
    serial: u64,
}

impl Package {
    fn version_mut(&mut self, name: &str, version: &str) -> &mut VersionEntry {
        self.versions
            .iter_mut()
            .find(|v| v.version == version)
            .unwrap_or_else(|| panic!("the fixture registry has no {name}@{version}"))
    }

    /// The entry served for a tarball URL's version: a listed one, or the
    /// one that [`NpmPackageFault::BadVersion`] lists.
    fn served(&self, version: &str, fault: NpmPackageFault) -> Option<&VersionEntry> {
        match self.versions.iter().find(|v| v.version == version) {
            Some(v) => Some(v),
            None if version == BAD_VERSION && fault == NpmPackageFault::BadVersion => {
                self.versions.first()
            }
            None => None,
        }
    }
}

#[derive(Default)]
struct NpmState {
    packages: BTreeMap<String, Package>,
    package_faults: HashMap<String, NpmPackageFault>,
    registry_fault: Fault,
    tarballs_fault: Fault,
    latency: Duration,
    /// Bumped on every change of content.
    serial: u64,
    packument_hits: HashMap<String, usize>,
    tarball_hits: HashMap<(String, String), usize>,
}

impl NpmState {
    fn bump(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn package_fault(&self, name: &str) -> NpmPackageFault {
        self.package_faults.get(name).copied().unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NpmPort {
    Registry,
    Tarballs,
}

/// What the connection threads share with the handle.
struct NpmShared {
    state: Mutex<NpmState>,
    changed: Condvar,
    requests: AtomicUsize,
    /// `http://127.0.0.1:{tarballs}` (no trailing slash).
    tarballs_base: String,
    /// Unix seconds: `Last-Modified` is this plus the packument's serial.
    epoch: u64,
}

impl NpmShared {
    fn lock(&self) -> MutexGuard<'_, NpmState> {
        lock(&self.state)
    }

    fn tarball_url(&self, name: &str, version: &str) -> String {
        format!(
            "{}/tarballs/{name}/-/{}-{version}.tgz",
            self.tarballs_base,
            basename(name)
        )
    }

    fn packument(&self, req: &Request) -> Response {
        let Some(name) = package_of_path(&req.path) else {
            return not_found();
        };
        let abbreviated = req
            .header("accept")
            .is_some_and(|a| a.to_ascii_lowercase().contains(ABBREVIATED_MEDIA_TYPE));
        let (body, serial) = {
            let st = self.lock();
            let Some(p) = st.packages.get(name) else {
                return not_found();
            };
            let fault = st.package_fault(name);
            let doc = self.render(name, p, fault, abbreviated);
            let mut body = serde_json::to_vec(&doc).expect("a JSON packument");
            if fault == NpmPackageFault::MalformedPackument {
                // A strict prefix of one JSON object never parses: its
                // closing brace is the last byte.
                body.truncate(body.len() / 2);
            }
            (body, p.serial)
        };
        let content_type = if abbreviated {
            ABBREVIATED_MEDIA_TYPE
        } else {
            FULL_MEDIA_TYPE
        };
        let mut resp = document_response(req, body, content_type, self.epoch + serial);
        resp.header("Cache-Control", PACKUMENT_CACHE_CONTROL);
        resp
    }

    fn render(&self, name: &str, p: &Package, fault: NpmPackageFault, abbreviated: bool) -> Value {
        let mut versions = Map::new();
        let mut times = Map::new();
        for (i, v) in p.versions.iter().enumerate() {
            let first = i == 0;
            let mut url = self.tarball_url(name, &v.version);
            if first && fault == NpmPackageFault::OtherSchemeTarball {
                url = url.replacen("http://", "ftp://", 1);
            }
            let digests = if first && fault == NpmPackageFault::NoDigests {
                DeclaredDigests::None
            } else {
                v.digests
            };
            versions.insert(v.version.clone(), v.manifest(name, url, digests));
            times.insert(v.version.clone(), json!(v.time));
        }
        if let Some(first) = p
            .versions
            .first()
            .filter(|_| fault == NpmPackageFault::BadVersion)
        {
            let bad = VersionEntry {
                version: BAD_VERSION.to_string(),
                ..first.clone()
            };
            let url = self.tarball_url(name, BAD_VERSION);
            versions.insert(BAD_VERSION.into(), bad.manifest(name, url, bad.digests));
            times.insert(BAD_VERSION.into(), json!(bad.time));
        }
        let last_change = iso_time((self.epoch + p.serial) * 1000);
        let modified = p
            .versions
            .iter()
            .map(|v| &v.time)
            .fold(&last_change, |a, b| a.max(b))
            .clone();
        if abbreviated {
            for m in versions.values_mut() {
                if let Value::Object(fields) = m {
                    fields.retain(|k, _| ABBREVIATED_FIELDS.contains(&k.as_str()));
                }
            }
            return json!({
                "name": name,
                "modified": modified,
                "dist-tags": p.dist_tags,
                "versions": versions,
            });
        }
        let created = p.versions.first().map(|v| v.time.clone());
        times.insert("created".into(), json!(created.unwrap_or(modified.clone())));
        times.insert("modified".into(), json!(modified));
        let rev_hash = crate::sha256_hex(format!("{name}@{}", p.serial).as_bytes());
        json!({
            "_id": name,
            "_rev": format!("{}-{}", p.serial, &rev_hash[..32]),
            "name": name,
            "description": description(name),
            "dist-tags": p.dist_tags,
            "versions": versions,
            "time": times,
            "readme": format!("# {name}\n\n{}.\n", description(name)),
            "readmeFilename": "README.md",
        })
    }

    fn tarball(&self, req: &Request, wrong_bytes: bool) -> Response {
        let Some((name, version)) = tarball_of_path(&req.path) else {
            return not_found();
        };
        let bytes = {
            let st = self.lock();
            let fault = st.package_fault(name);
            let entry = st.packages.get(name).and_then(|p| p.served(version, fault));
            match entry {
                Some(v) => v.bytes.clone(),
                None => return not_found(),
            }
        };
        let bytes = if wrong_bytes {
            flip_middle_byte(&bytes)
        } else {
            bytes
        };
        let len = bytes.len();
        let mut resp = Response::shared(200, bytes, 0, len);
        resp.header("Content-Type", "application/octet-stream");
        resp.header("Cache-Control", "public, max-age=31557600, immutable");
        resp
    }
}

impl Serve for NpmShared {
    type Port = NpmPort;
    type State = NpmState;

    fn state(&self) -> &Mutex<NpmState> {
        &self.state
    }

    fn changed(&self) -> &Condvar {
        &self.changed
    }

    fn requests(&self) -> &AtomicUsize {
        &self.requests
    }

    fn count(st: &mut NpmState, port: NpmPort, path: &str) {
        match port {
            NpmPort::Registry => {
                if let Some(name) = package_of_path(path) {
                    *st.packument_hits.entry(name.to_string()).or_default() += 1;
                }
            }
            NpmPort::Tarballs => {
                if let Some((name, version)) = tarball_of_path(path) {
                    let key = (name.to_string(), version.to_string());
                    *st.tarball_hits.entry(key).or_default() += 1;
                }
            }
        }
    }

    fn fault(st: &NpmState, port: NpmPort) -> (Fault, Duration) {
        let fault = match port {
            NpmPort::Registry => st.registry_fault,
            NpmPort::Tarballs => st.tarballs_fault,
        };
        (fault, st.latency)
    }

    fn serve(&self, port: NpmPort, req: &Request, wrong_bytes: bool) -> Response {
        match port {
            NpmPort::Registry => self.packument(req),
            NpmPort::Tarballs => self.tarball(req, wrong_bytes),
        }
    }
}

fn not_found() -> Response {
    let mut r = Response::new(404, NOT_FOUND_BODY.as_bytes().to_vec());
    r.header("Content-Type", FULL_MEDIA_TYPE);
    r
}

fn description(name: &str) -> String {
    format!("{name}, a hoard fixture package")
}

/// The last segment of a (possibly scoped) name: what tarball filenames
/// start with.
fn basename(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// `name` or `@scope/name`, without further slashes: the names a packument
/// path can carry.
fn is_package_name(name: &str) -> bool {
    match name.strip_prefix('@') {
        Some(scoped) => scoped
            .split_once('/')
            .is_some_and(|(s, n)| !s.is_empty() && !n.is_empty() && !n.contains('/')),
        None => !name.is_empty() && !name.contains('/'),
    }
}

/// `/{name}` (percent-decoded, so `/@scope%2fname` is `/@scope/name`).
fn package_of_path(path: &str) -> Option<&str> {
    path.strip_prefix('/').filter(|n| is_package_name(n))
}

/// `/tarballs/{name}/-/{basename}-{version}.tgz` → (name, version).
fn tarball_of_path(path: &str) -> Option<(&str, &str)> {
    let (name, file) = path.strip_prefix("/tarballs/")?.rsplit_once("/-/")?;
    let version = file
        .strip_suffix(".tgz")?
        .strip_prefix(basename(name))?
        .strip_prefix('-')?;
    (is_package_name(name) && !version.is_empty()).then_some((name, version))
}

/// `fileCount` and `unpackedSize` of a package tarball; `None` when the
/// bytes are not a gzipped tar (tests serve garbage too).
fn tar_stats(bytes: &[u8]) -> Option<(u64, u64)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let (mut files, mut size) = (0, 0);
    for entry in archive.entries().ok()? {
        let entry = entry.ok()?;
        if entry.header().entry_type().is_file() {
            files += 1;
            size += entry.size();
        }
    }
    Some((files, size))
}

/// `2026-01-02T03:04:05.678Z` of Unix milliseconds, as npm writes times.
fn iso_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::time::Instant;

    use reqwest::StatusCode;

    use super::*;
    use crate::npm::Npm;
    use crate::upstream::tests::{client, client_with_timeout, get, header, wait_until};

    /// What npm 10 sends for packuments.
    const NPM_ACCEPT: &str =
        "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";

    fn deps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn doc(url: &str, accept: Option<&str>) -> (Value, String) {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let r = get(&client(), url, &headers);
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        let ct = header(&r, "content-type").unwrap();
        let body = r.bytes().unwrap();
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&body)));
        (v, ct)
    }

    fn full(up: &NpmFixtureUpstream, name: &str) -> Value {
        doc(&up.packument_url(name), None).0
    }

    fn abbreviated(up: &NpmFixtureUpstream, name: &str) -> Value {
        doc(&up.packument_url(name), Some(NPM_ACCEPT)).0
    }

    /// `left-pad` 1.0.0 (deprecated, one dependency) and 1.1.0.
    fn fixture() -> (NpmFixtureUpstream, Vec<Vec<u8>>) {
        let up = NpmFixtureUpstream::start();
        let t10 = npm_package_tarball("left-pad", "1.0.0", &deps(&[("ms", "^2.1.3")]));
        up.add_version(
            "left-pad",
            "1.0.0",
            t10.clone(),
            NpmVersionOpts {
                dependencies: deps(&[("ms", "^2.1.3")]),
                deprecated: Some("use 1.1.0".into()),
                ..NpmVersionOpts::default()
            },
        );
        let t11 = up.add_package("left-pad", "1.1.0", &[]);
        (up, vec![t10, t11])
    }

    #[test]
    fn full_and_abbreviated_packuments_by_accept() {
        let (up, tarballs) = fixture();
        let url = up.packument_url("left-pad");
        assert_eq!(url, format!("{}left-pad", up.registry_url()));
        assert!(up.registry_url().ends_with('/'));
        for accept in [None, Some("application/json"), Some("*/*")] {
            let (d, ct) = doc(&url, accept);
            assert_eq!(ct, FULL_MEDIA_TYPE, "{accept:?}");
            assert_eq!(d["_id"], "left-pad");
            assert!(d["_rev"].as_str().unwrap().contains('-'));
            assert_eq!(d["name"], "left-pad");
            assert_eq!(d["description"], "left-pad, a hoard fixture package");
            assert!(d["readme"].as_str().unwrap().starts_with("# left-pad"));
            assert_eq!(d["dist-tags"], json!({ "latest": "1.1.0" }));
            let v = &d["versions"]["1.0.0"];
            assert_eq!(v["name"], "left-pad");
            assert_eq!(v["version"], "1.0.0");
            assert_eq!(v["_id"], "left-pad@1.0.0");
            assert_eq!(v["main"], "index.js");
            assert_eq!(v["description"], d["description"]);
            assert_eq!(v["dependencies"], json!({ "ms": "^2.1.3" }));
            assert_eq!(v["deprecated"], "use 1.1.0");
            assert!(d["versions"]["1.1.0"].get("deprecated").is_none());
            let dist = &v["dist"];
            assert_eq!(dist["tarball"], up.tarball_url("left-pad", "1.0.0"));
            assert_eq!(dist["integrity"], sri_sha512(&tarballs[0]));
            assert_eq!(dist["shasum"], sha1_hex(&tarballs[0]));
            assert_eq!(dist["fileCount"], 2);
            let unpacked = dist["unpackedSize"].as_u64().unwrap();
            assert!(unpacked > 50, "{unpacked}");
            let time = &d["time"];
            assert_eq!(time["1.0.0"], DEFAULT_PUBLISH_TIME);
            assert_eq!(time["1.1.0"], "2026-01-02T03:05:05.678Z");
            assert_eq!(time["created"], DEFAULT_PUBLISH_TIME);
            let modified = time["modified"].as_str().unwrap();
            assert!(modified > "2026-01-02T03:05:05.678Z", "{modified}");
            assert_eq!(modified.len(), DEFAULT_PUBLISH_TIME.len());
        }

        let (a, ct) = doc(&url, Some(NPM_ACCEPT));
        assert_eq!(ct, ABBREVIATED_MEDIA_TYPE);
        let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["dist-tags", "modified", "name", "versions"]);
        assert_eq!(a["modified"], full(&up, "left-pad")["time"]["modified"]);
        let v = a["versions"]["1.0.0"].as_object().unwrap();
        let keys: Vec<&String> = v.keys().collect();
        assert_eq!(
            keys,
            [
                "dependencies",
                "deprecated",
                "dist",
                "engines",
                "name",
                "version"
            ]
        );
        assert_eq!(
            a["versions"]["1.0.0"]["dist"],
            full(&up, "left-pad")["versions"]["1.0.0"]["dist"]
        );

        // Validators and caching headers.
        let r = get(&client(), &url, &[]);
        let etag = header(&r, "etag").unwrap();
        assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
        assert_eq!(
            header(&r, "cache-control").unwrap(),
            PACKUMENT_CACHE_CONTROL
        );
        assert!(header(&r, "last-modified").unwrap().ends_with(" GMT"));
        assert!(header(&r, "content-encoding").is_none());
    }

    #[test]
    fn scoped_names_by_percent_encoded_and_plain_slash() {
        let up = NpmFixtureUpstream::start();
        let t = up.add_package("@scope/pkg", "2.0.0", &[]);
        let root = up.registry_url();
        let encoded = up.packument_url("@scope/pkg");
        assert_eq!(encoded, format!("{root}@scope%2fpkg"));
        let c = client();
        let mut bodies = Vec::new();
        for url in [
            encoded.clone(),
            format!("{root}@scope%2Fpkg"),
            format!("{root}@scope/pkg"),
        ] {
            let r = get(&c, &url, &[]);
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            bodies.push(r.bytes().unwrap());
        }
        assert!(bodies.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(up.packument_hits("@scope/pkg"), 3);

        let url = up.tarball_url("@scope/pkg", "2.0.0");
        assert_eq!(
            url,
            format!(
                "http://{}/tarballs/@scope/pkg/-/pkg-2.0.0.tgz",
                up.tarballs_addr()
            )
        );
        assert_eq!(
            full(&up, "@scope/pkg")["versions"]["2.0.0"]["dist"]["tarball"],
            url
        );
        let got = get(&c, &url, &[]).bytes().unwrap();
        assert_eq!(got.as_ref(), t.as_slice());
        let encoded_tarball = url.replace("@scope/pkg/-", "@scope%2fpkg/-");
        assert_eq!(get(&c, &encoded_tarball, &[]).status(), StatusCode::OK);
        assert_eq!(up.tarball_hits("@scope/pkg", "2.0.0"), 2);

        for missing in [
            format!("{root}@scope%2fother"),
            format!("{root}@scope"),
            format!("{root}pkg"),
            format!("{root}pkg/2.0.0"),
            format!("{root}@scope/pkg/2.0.0"),
        ] {
            let r = get(&c, &missing, &[]);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(header(&r, "content-type").unwrap(), FULL_MEDIA_TYPE);
            assert_eq!(r.text().unwrap(), NOT_FOUND_BODY);
        }
        assert_eq!(up.packument_hits("@scope/other"), 1);
    }

    #[test]
    fn conditional_requests_give_304() {
        let (up, _) = fixture();
        let c = client();
        let url = up.packument_url("left-pad");
        let r = get(&c, &url, &[("accept", NPM_ACCEPT)]);
        let etag = header(&r, "etag").unwrap();
        let last_modified = header(&r, "last-modified").unwrap();
        // The abbreviated document with one validator: status, ETag, body.
        let conditional = |validator: &str, value: &str| {
            let r = get(&c, &url, &[("accept", NPM_ACCEPT), (validator, value)]);
            (r.status(), header(&r, "etag").unwrap(), r.bytes().unwrap())
        };

        let (status, got_etag, body) = conditional("if-none-match", &etag);
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(got_etag, etag);
        assert!(body.is_empty());
        let (status, ..) = conditional("if-modified-since", &last_modified);
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        // The ETag is of the abbreviated document: the full one differs.
        let r = get(&c, &url, &[("if-none-match", &etag)]);
        assert_eq!(r.status(), StatusCode::OK);

        up.deprecate("left-pad", "1.1.0", Some("old"));
        let (status, got_etag, _) = conditional("if-none-match", &etag);
        assert_eq!(status, StatusCode::OK);
        assert_ne!(got_etag, etag);
        let (status, ..) = conditional("if-modified-since", &last_modified);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(up.packument_hits("left-pad"), 6);
    }

    #[test]
    fn packuments_are_gzipped_when_accepted_and_tarballs_never() {
        let (up, tarballs) = fixture();
        let c = client();
        let url = up.packument_url("left-pad");
        let plain = get(&c, &url, &[("accept", NPM_ACCEPT)]);
        let plain_etag = header(&plain, "etag").unwrap();
        let plain = plain.bytes().unwrap();
        let r = get(
            &c,
            &url,
            &[("accept", NPM_ACCEPT), ("accept-encoding", "gzip, deflate")],
        );
        assert_eq!(header(&r, "content-encoding").unwrap(), "gzip");
        assert_eq!(header(&r, "vary").unwrap(), "Accept, Accept-Encoding");
        assert_ne!(header(&r, "etag").unwrap(), plain_etag);
        let gz = r.bytes().unwrap();
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(gz.as_ref())
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain.as_ref());

        let r = get(
            &c,
            &up.tarball_url("left-pad", "1.0.0"),
            &[("accept-encoding", "gzip")],
        );
        assert!(header(&r, "content-encoding").is_none());
        assert_eq!(r.bytes().unwrap().as_ref(), tarballs[0].as_slice());
    }

    #[test]
    fn declared_digest_modes() {
        let up = NpmFixtureUpstream::start();
        let modes = [
            ("1.0.0", DeclaredDigests::Both, true, true),
            ("2.0.0", DeclaredDigests::IntegrityOnly, true, false),
            ("3.0.0", DeclaredDigests::ShasumOnly, false, true),
            ("4.0.0", DeclaredDigests::None, false, false),
        ];
        for (v, digests, ..) in modes {
            let t = npm_package_tarball("digests", v, &BTreeMap::new());
            let opts = NpmVersionOpts {
                digests,
                ..NpmVersionOpts::default()
            };
            up.add_version("digests", v, t, opts);
        }
        let c = client();
        for d in [full(&up, "digests"), abbreviated(&up, "digests")] {
            for (v, _, integrity, shasum) in modes {
                let dist = &d["versions"][v]["dist"];
                let url = dist["tarball"].as_str().unwrap();
                let bytes = get(&c, url, &[]).bytes().unwrap();
                assert_eq!(
                    bytes.as_ref(),
                    npm_package_tarball("digests", v, &BTreeMap::new())
                );
                assert_eq!(dist.get("integrity").is_some(), integrity, "{v}");
                assert_eq!(dist.get("shasum").is_some(), shasum, "{v}");
                if integrity {
                    assert_eq!(dist["integrity"], sri_sha512(&bytes));
                }
                if shasum {
                    assert_eq!(dist["shasum"], sha1_hex(&bytes));
                }
            }
        }
        // Bytes that are no tarball are served as given, without file stats.
        up.add_version(
            "digests",
            "5.0.0",
            b"not a tarball".to_vec(),
            NpmVersionOpts::default(),
        );
        let dist = &full(&up, "digests")["versions"]["5.0.0"]["dist"];
        assert!(dist.get("fileCount").is_none() && dist.get("unpackedSize").is_none());
        assert_eq!(dist["shasum"], sha1_hex(b"not a tarball"));
    }

    #[test]
    fn dist_tags_deprecation_and_times() {
        let (up, _) = fixture();
        let t = npm_package_tarball("left-pad", "2.0.0-beta.1", &BTreeMap::new());
        up.add_version(
            "left-pad",
            "2.0.0-beta.1",
            t,
            NpmVersionOpts {
                tag: Some("next".into()),
                time: Some("2026-03-04T05:06:07.089Z".into()),
                ..NpmVersionOpts::default()
            },
        );
        let d = full(&up, "left-pad");
        assert_eq!(
            d["dist-tags"],
            json!({ "latest": "1.1.0", "next": "2.0.0-beta.1" })
        );
        assert_eq!(d["time"]["2.0.0-beta.1"], "2026-03-04T05:06:07.089Z");
        assert_eq!(abbreviated(&up, "left-pad")["dist-tags"], d["dist-tags"]);

        up.set_dist_tag("left-pad", "latest", Some("1.0.0"));
        up.set_dist_tag("left-pad", "next", None);
        assert_eq!(
            full(&up, "left-pad")["dist-tags"],
            json!({ "latest": "1.0.0" })
        );
        // A package's first version gets `latest` whatever its tag.
        let t = npm_package_tarball("tagged", "0.1.0", &BTreeMap::new());
        let opts = NpmVersionOpts {
            tag: Some("beta".into()),
            ..NpmVersionOpts::default()
        };
        up.add_version("tagged", "0.1.0", t, opts);
        assert_eq!(
            full(&up, "tagged")["dist-tags"],
            json!({ "beta": "0.1.0", "latest": "0.1.0" })
        );

        up.deprecate("left-pad", "1.0.0", None);
        up.deprecate("left-pad", "1.1.0", Some("no longer"));
        let a = abbreviated(&up, "left-pad");
        assert!(a["versions"]["1.0.0"].get("deprecated").is_none());
        assert_eq!(a["versions"]["1.1.0"]["deprecated"], "no longer");
    }

    #[test]
    fn package_faults() {
        let (up, tarballs) = fixture();
        up.add_package("other", "1.0.0", &[]);
        let c = client();
        let url = up.packument_url("left-pad");
        let normal_full = full(&up, "left-pad");
        let normal_abbreviated = abbreviated(&up, "left-pad");
        let both = |up: &NpmFixtureUpstream| {
            [
                (full(up, "left-pad"), &normal_full),
                (abbreviated(up, "left-pad"), &normal_abbreviated),
            ]
        };

        up.set_package_fault("left-pad", NpmPackageFault::MalformedPackument);
        for (accept, ct) in [
            (NPM_ACCEPT, ABBREVIATED_MEDIA_TYPE),
            ("application/json", FULL_MEDIA_TYPE),
        ] {
            let r = get(&c, &url, &[("accept", accept)]);
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(header(&r, "content-type").unwrap(), ct);
            let body = r.bytes().unwrap();
            assert!(body.starts_with(b"{\""), "{body:?}");
            assert!(serde_json::from_slice::<Value>(&body).is_err());
        }
        assert_eq!(full(&up, "other")["name"], "other");

        up.set_package_fault("left-pad", NpmPackageFault::OtherSchemeTarball);
        for (d, normal) in both(&up) {
            let first = d["versions"]["1.0.0"]["dist"]["tarball"].as_str().unwrap();
            assert_eq!(
                first,
                up.tarball_url("left-pad", "1.0.0")
                    .replace("http://", "ftp://")
            );
            assert_eq!(
                d["versions"]["1.1.0"]["dist"],
                normal["versions"]["1.1.0"]["dist"]
            );
        }

        up.set_package_fault("left-pad", NpmPackageFault::NoDigests);
        for (d, normal) in both(&up) {
            let dist = &d["versions"]["1.0.0"]["dist"];
            assert!(dist.get("integrity").is_none() && dist.get("shasum").is_none());
            assert_eq!(dist["tarball"], up.tarball_url("left-pad", "1.0.0"));
            assert_eq!(
                d["versions"]["1.1.0"]["dist"],
                normal["versions"]["1.1.0"]["dist"]
            );
        }

        up.set_package_fault("left-pad", NpmPackageFault::BadVersion);
        for (d, normal) in both(&up) {
            let versions = d["versions"].as_object().unwrap();
            assert_eq!(versions.len(), 3);
            let bad = &versions[BAD_VERSION];
            assert_eq!(bad["version"], BAD_VERSION);
            assert_eq!(bad["name"], "left-pad");
            let tarball = bad["dist"]["tarball"].as_str().unwrap();
            assert_eq!(tarball, up.tarball_url("left-pad", BAD_VERSION));
            let got = get(&c, tarball, &[]).bytes().unwrap();
            assert_eq!(got.as_ref(), tarballs[0].as_slice());
            assert_eq!(bad["dist"]["integrity"], sri_sha512(&got));
            assert_eq!(versions["1.0.0"], normal["versions"]["1.0.0"]);
            assert_eq!(versions["1.1.0"], normal["versions"]["1.1.0"]);
        }
        assert!(full(&up, "left-pad")["time"].get(BAD_VERSION).is_some());
        assert_eq!(up.tarball_hits("left-pad", BAD_VERSION), 2);

        up.set_package_fault("left-pad", NpmPackageFault::None);
        for (d, normal) in both(&up) {
            assert_eq!(d["versions"], normal["versions"]);
            assert_eq!(d["dist-tags"], normal["dist-tags"]);
        }
        let bad_url = up.tarball_url("left-pad", BAD_VERSION);
        assert_eq!(get(&c, &bad_url, &[]).status(), StatusCode::NOT_FOUND);
        // Unknown packages stay 404 whatever their fault.
        up.set_package_fault("ghost", NpmPackageFault::MalformedPackument);
        let r = get(&c, &up.packument_url("ghost"), &[]);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn tarballs_by_get_and_head_and_404_otherwise() {
        let (up, tarballs) = fixture();
        let c = client();
        let url = up.tarball_url("left-pad", "1.1.0");
        let r = c.head(&url).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "content-length").unwrap(),
            tarballs[1].len().to_string()
        );
        assert_eq!(
            header(&r, "content-type").unwrap(),
            "application/octet-stream"
        );
        assert!(r.bytes().unwrap().is_empty());
        let r = get(&c, &url, &[]);
        assert_eq!(
            header(&r, "content-length").unwrap(),
            tarballs[1].len().to_string()
        );
        assert_eq!(r.bytes().unwrap().as_ref(), tarballs[1].as_slice());
        assert_eq!(
            up.tarball_hits("left-pad", "1.1.0"),
            1,
            "HEAD is not counted"
        );
        let base = format!("http://{}", up.tarballs_addr());
        for missing in [
            up.tarball_url("left-pad", "9.9.9"),
            up.tarball_url("ghost", "1.0.0"),
            format!("{base}/tarballs/left-pad/-/other-1.1.0.tgz"),
            format!("{base}/tarballs/left-pad/-/left-pad-1.1.0.tar.gz"),
            format!("{base}/left-pad/-/left-pad-1.1.0.tgz"),
        ] {
            let r = get(&c, &missing, &[]);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(r.text().unwrap(), NOT_FOUND_BODY);
        }
        assert_eq!(up.tarball_hits("left-pad", "9.9.9"), 1);
        let r = c.post(&url).send().unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn counters_are_exact_under_40_concurrent_connections() {
        let (up, _) = fixture();
        let packument = up.packument_url("left-pad");
        let tarball = up.tarball_url("left-pad", "1.0.0");
        std::thread::scope(|s| {
            for i in 0..40 {
                let url = if i % 2 == 0 { &packument } else { &tarball };
                s.spawn(move || {
                    let c = client();
                    for _ in 0..5 {
                        assert_eq!(get(&c, url, &[]).status(), StatusCode::OK);
                    }
                });
            }
        });
        assert_eq!(up.packument_hits("left-pad"), 100);
        assert_eq!(up.tarball_hits("left-pad", "1.0.0"), 100);
        assert_eq!(up.tarball_hits("left-pad", "1.1.0"), 0);
        assert_eq!(up.requests(), 200);
        up.reset_counters();
        assert_eq!(up.requests(), 0);
        assert_eq!(up.packument_hits("left-pad"), 0);
        assert_eq!(up.tarball_hits("left-pad", "1.0.0"), 0);
    }

    #[test]
    fn stop_refuses_connections_and_restart_serves_the_same_content() {
        let (mut up, tarballs) = fixture();
        let packument = up.packument_url("left-pad");
        let tarball = up.tarball_url("left-pad", "1.0.0");
        let before = full(&up, "left-pad");
        let kept_alive = client();
        assert_eq!(get(&kept_alive, &packument, &[]).status(), StatusCode::OK);
        up.stop();
        up.stop();
        assert!(!up.is_running());
        for url in [&packument, &tarball] {
            let err = client().get(url).send().unwrap_err();
            assert!(err.is_connect(), "{url}: {err:?}");
        }
        assert!(kept_alive.get(&packument).send().is_err());
        let requests = up.requests();
        up.restart();
        up.restart();
        assert!(up.is_running());
        assert_eq!(up.packument_url("left-pad"), packument);
        assert_eq!(full(&up, "left-pad"), before);
        let got = get(&client(), &tarball, &[]).bytes().unwrap();
        assert_eq!(got.as_ref(), tarballs[0].as_slice());
        assert_eq!(up.requests(), requests + 2);
    }

    #[test]
    fn server_error_redirect_loop_and_hang_faults() {
        let (up, _) = fixture();
        let c = client();
        let packument = up.packument_url("left-pad");
        let tarball = up.tarball_url("left-pad", "1.0.0");
        let status = |url: &str| get(&c, url, &[]).status();

        up.set_fault(Fault::ServerError);
        assert_eq!(status(&packument), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(&tarball), StatusCode::INTERNAL_SERVER_ERROR);
        up.set_fault(Fault::None);
        up.set_tarballs_fault(Fault::ServerError);
        assert_eq!(status(&packument), StatusCode::OK);
        assert_eq!(status(&tarball), StatusCode::INTERNAL_SERVER_ERROR);
        up.set_tarballs_fault(Fault::None);
        up.set_registry_fault(Fault::RedirectLoop);
        let r = get(&c, &packument, &[]);
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(header(&r, "location").unwrap(), "/left-padx");
        assert_eq!(status(&tarball), StatusCode::OK);
        assert_eq!(up.packument_hits("left-pad"), 3);
        assert_eq!(up.tarball_hits("left-pad", "1.0.0"), 3);

        up.set_registry_fault(Fault::Hang);
        let err = client_with_timeout(Duration::from_millis(200))
            .get(&packument)
            .send()
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        std::thread::scope(|s| {
            let waiting = s.spawn(|| get(&client(), &packument, &[]).status());
            wait_until("the hanging request", || up.packument_hits("left-pad") == 5);
            std::thread::sleep(Duration::from_millis(20));
            assert!(!waiting.is_finished());
            up.set_fault(Fault::None);
            assert_eq!(waiting.join().unwrap(), StatusCode::OK);
        });
        // Dropping the fixture closes hanging connections unanswered.
        up.set_fault(Fault::Hang);
        let waiting = std::thread::spawn(move || client().get(tarball).send().map(|r| r.status()));
        wait_until("the hanging tarball request", || {
            up.tarball_hits("left-pad", "1.0.0") == 4
        });
        let dropped = Instant::now();
        drop(up);
        assert!(dropped.elapsed() < Duration::from_secs(5));
        assert!(waiting.join().unwrap().is_err());
    }

    #[test]
    fn wrong_bytes_flips_one_tarball_byte() {
        let (up, tarballs) = fixture();
        let c = client();
        let before = full(&up, "left-pad");
        up.set_fault(Fault::WrongBytes);
        assert_eq!(full(&up, "left-pad"), before, "packuments are not affected");
        let r = get(&c, &up.tarball_url("left-pad", "1.0.0"), &[]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "content-length").unwrap(),
            tarballs[0].len().to_string()
        );
        let got = r.bytes().unwrap();
        assert_eq!(got.len(), tarballs[0].len());
        let differing = got.iter().zip(&tarballs[0]).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1);
        assert_ne!(sri_sha512(&got), sri_sha512(&tarballs[0]));
        up.set_fault(Fault::None);
        let got = get(&c, &up.tarball_url("left-pad", "1.0.0"), &[])
            .bytes()
            .unwrap();
        assert_eq!(got.as_ref(), tarballs[0].as_slice());
    }

    #[test]
    fn tarball_maker_makes_a_package() {
        let t = npm_package_tarball("@s/p", "1.2.3", &deps(&[("a", "^1.0.0")]));
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&t[..]));
        let mut files = BTreeMap::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            files.insert(path, s);
        }
        let keys: Vec<&String> = files.keys().collect();
        assert_eq!(keys, ["package/index.js", "package/package.json"]);
        assert_eq!(
            files["package/index.js"],
            "module.exports = \"@s/p@1.2.3\";\n"
        );
        let manifest: Value = serde_json::from_str(&files["package/package.json"]).unwrap();
        assert_eq!(
            manifest,
            json!({
                "name": "@s/p",
                "version": "1.2.3",
                "dependencies": { "a": "^1.0.0" },
                "main": "index.js",
            })
        );
        assert_eq!(tar_stats(&t).unwrap().0, 2);
    }

    #[test]
    fn iso_times_and_paths() {
        assert_eq!(iso_time(DEFAULT_PUBLISH_MS), DEFAULT_PUBLISH_TIME);
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(package_of_path("/@a/b"), Some("@a/b"));
        assert_eq!(package_of_path("/a"), Some("a"));
        for bad in ["/", "/@a", "/@/b", "/@a/", "/a/b", "/@a/b/c"] {
            assert_eq!(package_of_path(bad), None, "{bad}");
        }
        assert_eq!(
            tarball_of_path("/tarballs/@a/b/-/b-1.0.0-rc.1.tgz"),
            Some(("@a/b", "1.0.0-rc.1"))
        );
        assert_eq!(tarball_of_path("/tarballs/a/-/a-.tgz"), None);
        assert_eq!(tarball_of_path("/tarballs/a/-/b-1.0.0.tgz"), None);
    }

    /// The real npm client resolves a dependency tree (one scoped
    /// dependency, reached as `@scope%2fname`) from the fixture alone and
    /// records the declared digests and tarball URLs in its lockfile.
    #[test]
    fn npm_installs_from_the_fixture() {
        let up = NpmFixtureUpstream::start();
        let mut tarballs = BTreeMap::new();
        for (name, version, dependencies) in [
            ("dep-a", "1.0.0", vec![]),
            ("dep-a", "1.4.0", vec![]),
            ("dep-a", "2.0.0", vec![]),
            ("@scope/dep-b", "0.3.1", vec![("dep-a", "*")]),
            (
                "top-pkg",
                "1.0.0",
                vec![("dep-a", "^1.0.0"), ("@scope/dep-b", "~0.3.0")],
            ),
        ] {
            let t = up.add_package(name, version, &dependencies);
            tarballs.insert(format!("{name}@{version}"), t);
        }
        let mut npm = Npm::for_registry(&up.registry_url());
        let project = npm.project();
        let registry = format!("--registry={}", up.registry_url());
        npm.ok(&project, &["install", &registry, "top-pkg"]);

        let require = std::process::Command::new("node")
            .arg("-e")
            .arg(
                "console.log([require('top-pkg'), require('dep-a'), \
                 require('@scope/dep-b')].join(' '))",
            )
            .current_dir(&project)
            .output()
            .unwrap();
        assert!(require.status.success(), "{require:?}");
        assert_eq!(
            String::from_utf8_lossy(&require.stdout).trim(),
            "top-pkg@1.0.0 dep-a@1.4.0 @scope/dep-b@0.3.1"
        );
        let lock: Value =
            serde_json::from_slice(&std::fs::read(project.join("package-lock.json")).unwrap())
                .unwrap();
        for (name, version) in [
            ("top-pkg", "1.0.0"),
            ("dep-a", "1.4.0"),
            ("@scope/dep-b", "0.3.1"),
        ] {
            let entry = &lock["packages"][format!("node_modules/{name}")];
            let bytes = &tarballs[&format!("{name}@{version}")];
            assert_eq!(entry["version"], version, "{name}: {entry}");
            assert_eq!(entry["integrity"], sri_sha512(bytes), "{name}");
            assert_eq!(entry["resolved"], up.tarball_url(name, version), "{name}");
            assert_eq!(up.tarball_hits(name, version), 1, "{name}");
        }
        assert_eq!(up.tarball_hits("dep-a", "2.0.0"), 0);
        for name in ["top-pkg", "dep-a", "@scope/dep-b"] {
            assert!(up.packument_hits(name) >= 1, "{name}");
        }
    }
}
