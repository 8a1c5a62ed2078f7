//! One `hoard serve` process with its own temp dir and loopback ports.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use reqwest::blocking::{Client, Response};
use serde_json::Value;

use crate::http::{raw_request, Auth, RawResponse, Upload};
use crate::tools::hoard_bin;

/// A `[[repos]]` table of the node's config.
#[derive(Clone, Debug)]
pub struct RepoSpec {
    pub name: String,
    pub format: String,
    pub kind: String,
    pub anonymous_read: bool,
    /// More raw TOML lines of the table (`upstreams = [...]`, ...).
    pub extra: Vec<String>,
}

impl RepoSpec {
    /// A PyPI mirror of `upstreams` (Simple API roots), in order.
    pub fn pypi_mirror(name: &str, upstreams: &[String]) -> RepoSpec {
        let list: Vec<String> = upstreams.iter().map(|u| toml_str(u)).collect();
        RepoSpec {
            kind: "mirror".to_string(),
            extra: vec![format!("upstreams = [{}]", list.join(", "))],
            ..RepoSpec::pypi(name)
        }
    }

    /// An npm mirror of `upstreams` (registry base URLs), in order.
    pub fn npm_mirror(name: &str, upstreams: &[String]) -> RepoSpec {
        RepoSpec {
            format: "npm".to_string(),
            ..RepoSpec::pypi_mirror(name, upstreams)
        }
    }

    /// A hosted npm repository with anonymous reads.
    pub fn npm(name: &str) -> RepoSpec {
        RepoSpec {
            format: "npm".to_string(),
            ..RepoSpec::pypi(name)
        }
    }

    /// A hosted generic repository with anonymous reads.
    pub fn generic(name: &str) -> RepoSpec {
        RepoSpec {
            format: "generic".to_string(),
            ..RepoSpec::pypi(name)
        }
    }

    /// A generic mirror of `upstreams` (base URLs), in order.
    pub fn generic_mirror(name: &str, upstreams: &[String]) -> RepoSpec {
        RepoSpec {
            format: "generic".to_string(),
            ..RepoSpec::pypi_mirror(name, upstreams)
        }
    }

    /// A virtual repository of `format` over `members`, in order.
    pub fn virtual_of(format: &str, name: &str, members: &[&str]) -> RepoSpec {
        let list: Vec<String> = members.iter().map(|m| toml_str(m)).collect();
        RepoSpec {
            format: format.to_string(),
            kind: "virtual".to_string(),
            ..RepoSpec::pypi(name)
        }
        .with(&format!("members = [{}]", list.join(", ")))
    }

    /// One more raw TOML line of this repository's table.
    pub fn with(mut self, line: &str) -> Self {
        self.extra.push(line.to_string());
        self
    }

    /// A hosted PyPI repository with anonymous reads.
    pub fn pypi(name: &str) -> RepoSpec {
        RepoSpec {
            name: name.to_string(),
            format: "pypi".to_string(),
            kind: "hosted".to_string(),
            anonymous_read: true,
            extra: Vec::new(),
        }
    }
}

/// What to put in a node's config.
#[derive(Clone, Debug)]
pub struct NodeOpts {
    pub node_id: String,
    /// Empty: no `[[repos]]` (the node then has one hosted PyPI repo `pypi`).
    pub repos: Vec<RepoSpec>,
    pub max_upload_bytes: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub log_format: Option<String>,
    /// Extra environment for the `hoard serve` process.
    pub env: Vec<(String, String)>,
    /// Raw TOML lines added to the config before the `[[repos]]` tables
    /// (e.g. `role = "replica"`).
    pub extra_config: Vec<String>,
    /// HTTPS on the public listener with this certificate; the harness's
    /// client and CLI runs then trust its CA.
    pub https: Option<crate::tls::NodeCert>,
    /// Node-to-node mutual TLS with this certificate, and the node ids
    /// of `allowed_nodes` (empty: any from the CA).
    pub cluster_tls: Option<(crate::tls::NodeCert, Vec<String>)>,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts {
            node_id: "n1".to_string(),
            repos: Vec::new(),
            max_upload_bytes: None,
            body_timeout_secs: Some(2),
            log_format: None,
            env: Vec::new(),
            extra_config: Vec::new(),
            https: None,
            cluster_tls: None,
        }
    }
}

impl NodeOpts {
    pub fn repo(mut self, repo: RepoSpec) -> Self {
        self.repos.push(repo);
        self
    }

    pub fn max_upload_bytes(mut self, n: u64) -> Self {
        self.max_upload_bytes = Some(n);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Serve HTTPS with `cert`.
    pub fn https(mut self, cert: &crate::tls::NodeCert) -> Self {
        self.https = Some(cert.clone());
        self
    }

    /// Node-to-node mutual TLS with `cert`; `allowed` node ids (empty: any).
    pub fn cluster_tls(mut self, cert: &crate::tls::NodeCert, allowed: &[&str]) -> Self {
        self.cluster_tls = Some((
            cert.clone(),
            allowed.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }

    /// Add a top-level TOML key to the config, ahead of any table lines
    /// that [`NodeOpts::config`] added (as `npm_opts` does).
    pub fn top_level(mut self, line: impl Into<String>) -> Self {
        self.extra_config.insert(0, line.into());
        self
    }

    /// Add a raw TOML line (a top-level key) to the config.
    pub fn config(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// A replica named `node_id` that follows `upstreams` (gRPC addresses,
    /// in order of preference).
    pub fn replica(node_id: &str, upstreams: &[String]) -> Self {
        let list: Vec<String> = upstreams.iter().map(|u| toml_str(u)).collect();
        NodeOpts {
            node_id: node_id.to_string(),
            ..NodeOpts::default()
        }
        .config("role = \"replica\"")
        .config(format!("upstreams = [{}]", list.join(", ")))
    }

    fn to_toml(&self, http: u16, grpc: u16, data_dir: &Path) -> String {
        let mut s = String::new();
        let q = toml_str;
        writeln!(s, "node_id = {}", q(&self.node_id)).unwrap();
        writeln!(s, "http_listen = {}", q(&format!("127.0.0.1:{http}"))).unwrap();
        writeln!(s, "grpc_listen = {}", q(&format!("127.0.0.1:{grpc}"))).unwrap();
        let scheme = if self.https.is_some() {
            "https"
        } else {
            "http"
        };
        writeln!(
            s,
            "public_url = {}",
            q(&format!("{scheme}://127.0.0.1:{http}"))
        )
        .unwrap();
        writeln!(s, "data_dir = {}", q(&data_dir.to_string_lossy())).unwrap();
        if let Some(n) = self.max_upload_bytes {
            writeln!(s, "max_upload_bytes = {n}").unwrap();
        }
        if let Some(n) = self.body_timeout_secs {
            writeln!(s, "body_timeout_secs = {n}").unwrap();
        }
        if let Some(f) = &self.log_format {
            writeln!(s, "log_format = {}", q(f)).unwrap();
        }
        for line in &self.extra_config {
            writeln!(s, "{line}").unwrap();
        }
        let path = |p: &Path| q(&p.to_string_lossy());
        if let Some(c) = &self.https {
            writeln!(
                s,
                "\n[tls]\ncert = {}\nkey = {}",
                path(&c.cert),
                path(&c.key)
            )
            .unwrap();
        }
        if let Some((c, allowed)) = &self.cluster_tls {
            let list: Vec<String> = allowed.iter().map(|a| q(a)).collect();
            writeln!(
                s,
                "\n[cluster_tls]\nca = {}\ncert = {}\nkey = {}\nallowed_nodes = [{}]",
                path(&c.ca),
                path(&c.cert),
                path(&c.key),
                list.join(", ")
            )
            .unwrap();
        }
        for r in &self.repos {
            writeln!(s, "\n[[repos]]").unwrap();
            writeln!(s, "name = {}", q(&r.name)).unwrap();
            writeln!(s, "format = {}", q(&r.format)).unwrap();
            writeln!(s, "kind = {}", q(&r.kind)).unwrap();
            writeln!(s, "anonymous_read = {}", r.anonymous_read).unwrap();
            for line in &r.extra {
                writeln!(s, "{line}").unwrap();
            }
        }
        s
    }
}

fn toml_str(s: &str) -> String {
    // serde_json's string escaping is valid TOML basic-string escaping for
    // everything we write (paths, names).
    serde_json::to_string(s).unwrap()
}

/// Two distinct free loopback ports.
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// What `store_snapshot` saw: the serial and the number of blob files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreSnapshot {
    pub serial: u64,
    pub blobs: usize,
}

/// A running (or stopped) `hoard serve` process.
///
/// Dropping it kills the process. If the test is panicking, the node's log is
/// printed and its temp dir is kept for inspection.
pub struct Node {
    pub opts: NodeOpts,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    http_port: u16,
    grpc_port: u16,
    child: Option<Child>,
    client: Client,
    /// tmpfs mounts made by [`Node::mount_tmpfs_data_dir`], unmounted on drop.
    mounts: Vec<PathBuf>,
}

impl Node {
    /// Start a node and wait until `GET /+status` answers 200. Panics (with
    /// the node's log) if it does not within 30 s.
    pub fn start(opts: NodeOpts) -> Node {
        let mut node = Node::prepare(opts);
        node.launch();
        node
    }

    /// A node with its temp dir and ports chosen, not started yet (see
    /// [`Node::launch`]), so that a test can prepare its data dir first.
    pub fn prepare(opts: NodeOpts) -> Node {
        let opts = crate::s3::with_suite_blobs(opts);
        let dir = tempfile::Builder::new()
            .prefix("hoard-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        let mut builder = Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120));
        if let Some(c) = &opts.https {
            let pem = fs::read(&c.ca).expect("read the CA certificate");
            let ca = reqwest::Certificate::from_pem(&pem).expect("a PEM CA certificate");
            builder = builder.tls_certs_only([ca]);
        }
        let client = builder.build().expect("reqwest client");
        let (http_port, grpc_port) = free_ports();
        Node {
            opts,
            dir: Some(dir),
            root,
            http_port,
            grpc_port,
            child: None,
            client,
            mounts: Vec::new(),
        }
    }

    /// Start a prepared node and wait until `GET /+status` answers 200.
    /// Panics (with the node's log) if it does not within 30 s.
    pub fn launch(&mut self) {
        // A port picked as free can be taken by a parallel test before the
        // node binds it: retry a few times with new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if attempt < 3 && self.log().contains("in use") => {
                    eprintln!("node start failed ({e:#}), retrying with new ports");
                    self.kill_quietly();
                    (self.http_port, self.grpc_port) = free_ports();
                }
                Err(e) => panic!("node did not start: {e:#}\n{}", self.log_tail(200)),
            }
        }
    }

    /// Start a node with the default options.
    pub fn start_default() -> Node {
        Node::start(NodeOpts::default())
    }

    fn write_config(&self) -> Result<()> {
        fs::create_dir_all(self.data_dir())?;
        let toml = self
            .opts
            .to_toml(self.http_port, self.grpc_port, &self.data_dir());
        fs::write(self.config_path(), toml)?;
        Ok(())
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        assert!(self.child.is_none(), "node already running");
        self.write_config()?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(
            &log,
            "===== hoard-tests: starting node (http {}, grpc {}) =====",
            self.http_port, self.grpc_port
        )?;
        let mut cmd = Command::new(hoard_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        clear_hoard_env(&mut cmd);
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawn hoard serve")?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                self.child = None;
                bail!("hoard serve exited during startup with {status}");
            }
            if let Ok(resp) = self
                .client
                .get(format!("{}/+status", self.url()))
                .timeout(Duration::from_secs(2))
                .send()
            {
                if resp.status().as_u16() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("GET /+status did not answer 200 within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` with [`NodeOpts::https`]).
    pub fn url(&self) -> String {
        let scheme = if self.opts.https.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.http_port)
    }

    /// The gRPC listen address, `127.0.0.1:PORT` (what replicas list in
    /// `upstreams`).
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The HTTP listen address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// The node's temp dir (config, log and data dir are inside).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("hoard.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("node.log")
    }

    /// The whole log so far (all starts of this node).
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits (up to 10 s) for a line past byte `since` of the log that
    /// `wanted` accepts: access lines (one per request) are written in
    /// batches, up to 100 ms after the request. Panics with `what` and the
    /// log past `since` if none comes.
    pub fn wait_for_log_line(&self, since: usize, what: &str, wanted: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.log();
            let recent = log.get(since..).unwrap_or_default();
            if recent.lines().any(&wanted) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: no such line in the log within 10 s:\n{recent}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// `<data_dir>/admin-token`, trimmed.
    pub fn admin_token(&self) -> String {
        let path = self.data_dir().join("admin-token");
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// A blocking HTTP client (no proxy, no redirects followed).
    pub fn http(&self) -> &Client {
        &self.client
    }

    /// `GET {url}{path}`.
    pub fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.url()))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET /+status` as JSON; also checks that `X-Hoard-Serial` equals
    /// `applied_serial`.
    pub fn status(&self) -> Value {
        let resp = self.get("/+status");
        assert_eq!(resp.status().as_u16(), 200, "GET /+status");
        let header = resp
            .headers()
            .get("x-hoard-serial")
            .map(|v| v.to_str().unwrap().to_string());
        let v: Value = resp.json().expect("/+status is JSON");
        let serial = v["applied_serial"]
            .as_u64()
            .unwrap_or_else(|| panic!("/+status has no integer applied_serial: {v}"));
        assert_eq!(
            header.as_deref(),
            Some(serial.to_string().as_str()),
            "X-Hoard-Serial of GET /+status vs applied_serial"
        );
        v
    }

    /// `applied_serial` from `/+status`.
    pub fn serial(&self) -> u64 {
        self.status()["applied_serial"].as_u64().unwrap()
    }

    /// Serial and blob count, to check later that a request stored nothing.
    pub fn store_snapshot(&self) -> StoreSnapshot {
        StoreSnapshot {
            serial: self.serial(),
            blobs: count_files(&self.data_dir().join("blobs")),
        }
    }

    /// Files under `<data_dir>/tmp/`.
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.data_dir().join("tmp"), &mut out);
        out
    }

    /// Assert that nothing was stored since `before`: the same serial and
    /// blob count, no leftover temp files (waiting up to 5 s for cleanup),
    /// and `filename` not on the project's simple page.
    pub fn assert_nothing_stored(
        &self,
        before: &StoreSnapshot,
        repo: &str,
        project: &str,
        filename: &str,
    ) {
        let after = self.store_snapshot();
        assert_eq!(
            after.serial, before.serial,
            "a refused request changed the applied serial"
        );
        assert_eq!(
            after.blobs,
            before.blobs,
            "a refused request left a blob under {}/blobs",
            self.data_dir().display()
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let tmp = self.tmp_files();
            if tmp.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a refused request left temp files: {tmp:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if !filename.is_empty() {
            let resp = self.get(&format!("/{repo}/simple/{project}/"));
            let status = resp.status().as_u16();
            let body = resp.text().unwrap_or_default();
            assert!(
                status == 404 || (status == 200 && !body.contains(filename)),
                "after a refused upload, /{repo}/simple/{project}/ answered {status} \
                 and lists {filename:?}: {body}"
            );
        }
    }

    /// Upload with reqwest (the multipart body from [`Upload::multipart`]).
    pub fn upload(&self, repo: &str, auth: &Auth, upload: &Upload) -> Response {
        let mp = upload.multipart();
        let req = self
            .client
            .post(format!("{}/{repo}/", self.url()))
            .header("content-type", mp.content_type())
            .body(mp.finish());
        auth.apply(req)
            .send()
            .unwrap_or_else(|e| panic!("upload {}: {e}", upload.filename))
    }

    /// Upload and assert 200.
    pub fn upload_ok(&self, repo: &str, token: &str, upload: &Upload) {
        let resp = self.upload(repo, &Auth::Basic(token.to_string()), upload);
        let status = resp.status().as_u16();
        let body = resp.text().unwrap_or_default();
        assert_eq!(status, 200, "upload {}: {body}", upload.filename);
    }

    /// Send `head` (request line and headers, without the final blank line;
    /// `Host` and `Connection: close` are added) and `body` over a raw socket.
    pub fn raw(&self, head: &str, body: &[u8]) -> RawResponse {
        let head = format!(
            "{head}\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.http_port
        );
        raw_request(self.addr(), head.as_bytes(), body)
            .unwrap_or_else(|e| panic!("raw request failed: {e:#}\n{head}"))
    }

    /// `POST /{repo}/` over a raw socket with this Content-Type and body
    /// (Content-Length is the body's length).
    pub fn raw_upload(
        &self,
        repo: &str,
        auth: &Auth,
        content_type: Option<&str>,
        body: &[u8],
    ) -> RawResponse {
        let mut head = format!("POST /{repo}/ HTTP/1.1\r\nContent-Length: {}", body.len());
        if let Some(ct) = content_type {
            head.push_str(&format!("\r\nContent-Type: {ct}"));
        }
        if let Some(h) = auth.header_value() {
            head.push_str(&format!("\r\nAuthorization: {h}"));
        }
        self.raw(&head, body)
    }

    /// Run the `hoard` CLI with `args` (no HOARD_* environment).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    /// Run the `hoard` CLI with `args` and only these HOARD_* variables.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(hoard_bin());
        cmd.args(args).current_dir(&self.root).stdin(Stdio::null());
        clear_hoard_env(&mut cmd);
        // The CLI trusts the system's roots, and SSL_CERT_FILE.
        if let Some(c) = &self.opts.https {
            cmd.env("SSL_CERT_FILE", &c.ca);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run hoard")
    }

    /// Run the `hoard` CLI and return its stdout; panics unless it exits 0.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.cli_env_ok(args, &[])
    }

    /// Like [`Node::cli_env`], and panics unless it exits 0.
    pub fn cli_env_ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.cli_env(args, env);
        assert!(
            out.status.success(),
            "hoard {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Run the `hoard` CLI with `stdin` as its standard input (how it
    /// reads passwords when not on a terminal); its stdout, and its stderr.
    /// Panics unless it exits 0.
    pub fn cli_stdin_ok(&self, args: &[&str], stdin: &str) -> (String, String) {
        use std::io::Write as _;
        let mut cmd = Command::new(hoard_bin());
        cmd.args(args)
            .current_dir(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clear_hoard_env(&mut cmd);
        if let Some(c) = &self.opts.https {
            cmd.env("SSL_CERT_FILE", &c.ca);
        }
        let mut child = cmd.spawn().expect("run hoard");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait for hoard");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "hoard {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        (stdout, stderr)
    }

    /// `hoard user add NAME` (the password on stdin) with the admin token.
    pub fn add_user(&self, name: &str, password: &str) {
        let url = self.url();
        let admin = self.admin_token();
        self.cli_stdin_ok(
            &["user", "add", name, "--url", &url, "--token", &admin],
            &format!("{password}\n"),
        );
    }

    /// `hoard token create --repo R --perm P --url URL --token ADMIN`: the
    /// printed token (checked to be alone on stdout).
    pub fn create_token(&self, repo: &str, perm: &str) -> String {
        let url = self.url();
        let admin = self.admin_token();
        let out = self.cli_ok(&[
            "token", "create", "--repo", repo, "--perm", perm, "--label", "test", "--url", &url,
            "--token", &admin,
        ]);
        let token = out.trim();
        assert!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "hoard token create should print the token alone, got {out:?}"
        );
        token.to_string()
    }

    /// `hoard fsck --data-dir DIR` (the node should be stopped); where its
    /// blobs are elsewhere (`[blobs]`), `hoard fsck --deep --config`.
    pub fn fsck(&self) -> Output {
        let dir = self.data_dir();
        let elsewhere = self
            .opts
            .extra_config
            .iter()
            .any(|l| l.starts_with("blobs"));
        if !elsewhere {
            return self.cli(&["fsck", "--data-dir", dir.to_str().unwrap()]);
        }
        let config = self.config_path();
        let env: Vec<(&str, &str)> = self
            .opts
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.cli_env(
            &["fsck", "--deep", "--config", config.to_str().unwrap()],
            &env,
        )
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("node is not running");
        child.kill().expect("kill -9");
        child.wait().expect("wait");
    }

    /// SIGTERM and wait up to 15 s for a graceful exit; returns whether it
    /// exited by itself (else it was killed) and its exit status.
    pub fn stop(&mut self) -> (bool, std::process::ExitStatus) {
        let mut child = self.child.take().expect("node is not running");
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (true, status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return (false, child.wait().expect("wait"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start again with the same config, data dir and ports (stopping it
    /// gracefully first if it is running).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        if let Err(e) = self.spawn_and_wait() {
            panic!("node did not restart: {e:#}\n{}", self.log_tail(200));
        }
    }

    fn kill_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Mount a tmpfs of `size` (e.g. `"40m"`) on the data dir (the node
    /// must not be running yet). Needs root; panics if `mount` fails. The
    /// mount is removed when the node is dropped.
    pub fn mount_tmpfs_data_dir(&mut self, size: &str) {
        assert!(self.child.is_none(), "mount the data dir before starting");
        let dir = self.data_dir();
        fs::create_dir_all(&dir).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size}"))
                .arg("tmpfs")
                .arg(&dir),
        );
        self.mounts.push(dir);
    }

    /// Change the size of the tmpfs on the data dir (`mount -o remount`).
    pub fn resize_tmpfs_data_dir(&self, size: &str) {
        let dir = self.data_dir();
        assert!(self.mounts.contains(&dir), "the data dir is not a tmpfs");
        run_ok(
            Command::new("mount")
                .arg("-o")
                .arg(format!("remount,size={size}"))
                .arg(&dir),
        );
    }

    fn unmount_all(&mut self) {
        for dir in self.mounts.drain(..).rev() {
            let ok = Command::new("umount")
                .arg(&dir)
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("umount {} failed; detaching it lazily", dir.display());
                let _ = Command::new("umount").arg("-l").arg(&dir).status();
            }
        }
    }

    /// Peak resident memory of the process (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_quietly();
        let panicking = std::thread::panicking();
        if panicking && !self.mounts.is_empty() {
            eprintln!(
                "the data dir {} is a tmpfs: it is unmounted, its contents are lost",
                self.data_dir().display()
            );
        }
        self.unmount_all();
        if panicking {
            eprintln!(
                "----- hoard node log ({}) -----\n{}\n----- end of node log -----",
                self.log_path().display(),
                self.log_tail(300)
            );
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("kept the node's temp dir: {}", kept.display());
            }
        }
    }
}

fn clear_hoard_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HOARD_") {
            cmd.env_remove(key);
        }
    }
}

/// The number of regular files under `dir` (0 if it does not exist).
pub fn count_files(dir: &Path) -> usize {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.len()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, out),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
}

/// Run `cmd`, capture its output, and fail with all of it unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("{}", describe_failure(cmd, &out));
    }
    out
}

/// A readable account of a failed command.
/// What a command printed: its stdout, then its stderr.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn describe_failure(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Write `bytes` to `dir/name` and return the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes).unwrap();
    path
}

/// Parse a response's `X-Hoard-Serial` header.
pub fn serial_header(resp: &Response) -> Result<u64> {
    resp.headers()
        .get("x-hoard-serial")
        .ok_or_else(|| anyhow!("no X-Hoard-Serial header"))?
        .to_str()?
        .trim()
        .parse()
        .context("X-Hoard-Serial is not an integer")
}
