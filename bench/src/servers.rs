//! The servers under test: hoard itself, and the static baselines that serve
//! the same bytes (nginx, and a minimal in-memory hyper server).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use hoard_testkit::Artifact;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::procs::{free_port, output_of, Proc};

pub const HTML_ACCEPT: &str = "text/html";
pub const JSON_ACCEPT: &str = "application/vnd.pypi.simple.v1+json";
pub const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";

/// A running `hoard serve`, with an upload token if it is a primary.
pub struct Hoard {
    pub proc: Proc,
    pub addr: SocketAddr,
    /// Its gRPC address (the changelog and blob streams).
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
    /// An upload token for the repository named at start (empty on a replica).
    pub token: String,
    pub client: reqwest::Client,
}

/// How to start one hoard node.
pub struct NodeSpec<'a> {
    /// `node_id`, and the name of its process in messages.
    pub id: &'a str,
    /// Its files: `hoard.toml`, `hoard.log`, and the data dir `hoard-data/`.
    pub dir: &'a Path,
    /// More TOML lines (role, upstreams, repositories, …).
    pub extra_toml: &'a str,
    /// Create an upload token for this repository (primary only).
    pub token_repo: Option<&'a str>,
    /// More environment for the process (credentials of a blob backend).
    pub env: &'a [(&'a str, &'a str)],
}

impl Hoard {
    /// A single primary with the default `pypi` repository, in `dir`.
    pub async fn start(bin: &Path, dir: &Path) -> Result<Hoard> {
        Hoard::start_node(
            bin,
            &NodeSpec {
                id: "bench-1",
                dir,
                extra_toml: "",
                token_repo: Some("pypi"),
                env: &[],
            },
        )
        .await
    }

    /// Starts a node and waits until it answers; retries on a port clash.
    pub async fn start_node(bin: &Path, spec: &NodeSpec<'_>) -> Result<Hoard> {
        let mut last_err = None;
        // A port that was free can be taken before hoard binds it: retry.
        for _ in 0..3 {
            let mut node = Hoard::spawn_node(bin, spec)?;
            match node.proc.wait_ready(node.addr, "/+status").await {
                Ok(()) => {
                    if let Some(repo) = spec.token_repo {
                        node.create_token(bin, repo)?;
                    }
                    return Ok(node);
                }
                Err(e) => {
                    let in_use = node.proc.log_tail().contains("in use");
                    last_err = Some(e);
                    drop(node);
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("hoard did not start")))
    }

    /// Writes the config and starts the process, without waiting for it.
    pub fn spawn_node(bin: &Path, spec: &NodeSpec<'_>) -> Result<Hoard> {
        let dir = spec.dir;
        let data = dir.join("hoard-data");
        std::fs::create_dir_all(&data)?;
        let http = free_port()?;
        let grpc = free_port()?;
        let config = dir.join("hoard.toml");
        // The bench measures throughput, not the request limits: no rate
        // limit, and large uploads and publishes.
        let toml = format!(
            "node_id = {}\nhttp_listen = \"127.0.0.1:{http}\"\n\
             grpc_listen = \"127.0.0.1:{grpc}\"\npublic_url = \"http://127.0.0.1:{http}\"\n\
             data_dir = {}\nmax_upload_bytes = 1000000000\nmax_npm_publish_bytes = 1000000000\n\
             token_rate_per_sec = 0\n{}",
            serde_json::to_string(spec.id)?,
            serde_json::to_string(&data.to_string_lossy())?,
            spec.extra_toml
        );
        std::fs::write(&config, toml)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--config").arg(&config);
        cmd.envs(spec.env.iter().copied());
        let proc = Proc::spawn(spec.id, cmd, &dir.join("hoard.log"))?;
        Ok(Hoard {
            proc,
            addr: format!("127.0.0.1:{http}").parse()?,
            grpc: format!("127.0.0.1:{grpc}").parse()?,
            data_dir: data,
            token: String::new(),
            // no_gzip: when hoard is built in the same cargo run, feature
            // unification gives reqwest its gzip feature, and it would then
            // ask for gzip and decode it: get_encoded must see the bytes
            // and the Content-Encoding hoard sent.
            client: reqwest::Client::builder()
                .no_proxy()
                .no_gzip()
                .timeout(Duration::from_secs(300))
                .build()?,
        })
    }

    fn create_token(&mut self, bin: &Path, repo: &str) -> Result<()> {
        let admin = std::fs::read_to_string(self.data_dir.join("admin-token"))
            .context("read the admin token")?;
        let token = output_of(
            Command::new(bin)
                .args(["token", "create", "--repo", repo, "--perm", "upload"])
                .arg("--url")
                .arg(format!("http://{}", self.addr))
                .arg("--token")
                .arg(admin.trim()),
        )?;
        let token = token.lines().last().unwrap_or_default().trim().to_string();
        if token.is_empty() {
            bail!("`hoard token create` printed no token");
        }
        self.token = token;
        Ok(())
    }

    /// Upload one wheel with twine's legacy API.
    pub async fn upload(&self, w: &Artifact) -> Result<Uploaded> {
        let url = format!("http://{}/pypi/", self.addr);
        upload(&self.client, &url, "__token__", &self.token, w).await
    }

    /// GET a path and return the body; fails unless 200.
    pub async fn get(&self, path: &str, accept: &str) -> Result<Bytes> {
        let resp = self
            .client
            .get(format!("http://{}{path}", self.addr))
            .header("accept", accept)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("GET {path}: {}", resp.status());
        }
        Ok(resp.bytes().await?)
    }

    /// GET a path with `Accept-Encoding` too: the body as sent (not
    /// decoded) and whether it was `Content-Encoding: gzip`; fails unless 200.
    pub async fn get_encoded(
        &self,
        path: &str,
        accept: &str,
        accept_encoding: &str,
    ) -> Result<(Bytes, bool)> {
        // This client decodes nothing (built with no_gzip).
        let resp = self
            .client
            .get(format!("http://{}{path}", self.addr))
            .header("accept", accept)
            .header("accept-encoding", accept_encoding)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("GET {path}: {}", resp.status());
        }
        let gzip = resp
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        Ok((resp.bytes().await?, gzip))
    }

    /// `/+status` as JSON.
    pub async fn status(&self) -> Result<serde_json::Value> {
        let body = self.get("/+status", "application/json").await?;
        Ok(serde_json::from_slice(&body)?)
    }
}

/// Uploads every wheel of `wheels` to `url` (a repository's upload URL)
/// with `hoard`'s token, `concurrency` at a time; the time it took.
pub async fn upload_all(
    hoard: &Hoard,
    url: &str,
    wheels: &Arc<Vec<Artifact>>,
    concurrency: usize,
) -> Result<Duration> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, wheels, client, token, url) = (
            next.clone(),
            wheels.clone(),
            hoard.client.clone(),
            hoard.token.clone(),
            url.to_owned(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(w) = wheels.get(i) else {
                    return Ok::<(), anyhow::Error>(());
                };
                upload(&client, &url, "__token__", &token, w).await?;
                if (i + 1).is_multiple_of(1000) {
                    eprintln!("  {} uploads", i + 1);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("upload task")??;
    }
    Ok(t0.elapsed())
}

/// An acknowledged upload.
pub struct Uploaded {
    /// From sending the request to the end of the response.
    pub elapsed: Duration,
    /// `X-Hoard-Upload-Serial` (or devpi's `X-Devpi-Serial`), if sent.
    pub serial: Option<u64>,
}

/// How an upload authenticates.
pub enum UploadAuth<'a> {
    /// HTTP basic auth, as twine sends it.
    Basic { user: &'a str, password: &'a str },
    /// One header, e.g. devpi's `X-Devpi-Auth` session token (devpi checks
    /// a basic-auth password with a deliberately slow hash on every request).
    Header(&'static str, &'a str),
}

/// Upload one wheel to `url` with twine's legacy API (multipart
/// `:action=file_upload`, basic auth).
pub async fn upload(
    client: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
    w: &Artifact,
) -> Result<Uploaded> {
    upload_with(client, url, &UploadAuth::Basic { user, password }, w).await
}

/// Upload one wheel to `url` with twine's legacy API (multipart
/// `:action=file_upload`), authenticated by `auth`.
pub async fn upload_with(
    client: &reqwest::Client,
    url: &str,
    auth: &UploadAuth<'_>,
    w: &Artifact,
) -> Result<Uploaded> {
    let part = reqwest::multipart::Part::bytes(w.bytes.clone())
        .file_name(w.filename.clone())
        .mime_str("application/octet-stream")?;
    let form = reqwest::multipart::Form::new()
        .text(":action", "file_upload")
        .text("protocol_version", "1")
        .text("name", w.name.clone())
        .text("version", w.version.clone())
        .text("filetype", "bdist_wheel")
        .text("pyversion", "py3")
        .text("metadata_version", "2.1")
        .text("sha256_digest", w.sha256())
        .part("content", part);
    let t0 = Instant::now();
    let request = match auth {
        UploadAuth::Basic { user, password } => client.post(url).basic_auth(user, Some(password)),
        UploadAuth::Header(name, value) => client.post(url).header(*name, *value),
    };
    let resp = request
        .multipart(form)
        .send()
        .await
        .with_context(|| format!("upload {}", w.filename))?;
    let status = resp.status();
    let serial = resp
        .headers()
        .get("x-hoard-upload-serial")
        .or_else(|| resp.headers().get("x-devpi-serial"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    // The body too: the upload is acknowledged when the response is complete.
    let body = resp.bytes().await.unwrap_or_default();
    let elapsed = t0.elapsed();
    if !status.is_success() {
        bail!(
            "upload {} to {url}: {status}: {}",
            w.filename,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(Uploaded { elapsed, serial })
}

/// The files every static baseline serves, under `www/`.
pub struct StaticFiles {
    pub root: PathBuf,
    /// A path that every static server answers with 200 once ready.
    pub probe: String,
}

pub const STATIC_HTML: &str = "/page.html";
pub const STATIC_JSON: &str = "/page.json";
pub const STATIC_WHEEL: &str = "/big.whl";

impl StaticFiles {
    /// Writes `files`: (URL path, bytes); the paths are flat (`/name`).
    pub fn write(dir: &Path, files: &[(&str, &[u8])]) -> Result<StaticFiles> {
        let root = dir.join("www");
        std::fs::create_dir_all(&root)?;
        for (path, bytes) in files {
            std::fs::write(root.join(path.trim_start_matches('/')), bytes)?;
        }
        let probe = files.first().map_or("/", |f| f.0).to_string();
        Ok(StaticFiles { root, probe })
    }
}

fn content_type(path: &str) -> &'static str {
    if path.ends_with(".html") {
        "text/html"
    } else if path.ends_with(".json") {
        JSON_TYPE
    } else {
        "application/octet-stream"
    }
}

/// Find nginx on PATH or in /usr/sbin.
pub fn find_nginx(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

pub fn nginx_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .trim_start_matches("nginx version: ")
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Start nginx in the foreground with a generated config serving `files`.
pub async fn start_nginx(
    bin: &Path,
    dir: &Path,
    files: &StaticFiles,
    workers: usize,
) -> Result<(Proc, SocketAddr)> {
    let prefix = dir.join("nginx");
    for sub in ["tmp", "logs"] {
        std::fs::create_dir_all(prefix.join(sub))?;
    }
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let mut last_err = None;
    for _ in 0..3 {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let p = prefix.display();
        let conf = format!(
            r#"# generated by hoard-bench
daemon off;
master_process on;
worker_processes {workers};
{user}
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    open_file_cache max=16 inactive=60s;
    # A request with `Accept-Encoding: gzip` gets `<file>.gz` if there is
    # one (the suite writes them for the pages): pre-compressed bytes, as
    # hoard's gzip page variants are, so neither side compresses per request.
    gzip_static on;
    gzip_vary on;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    types {{
        text/html html;
        {JSON_TYPE} json;
        application/octet-stream whl tgz;
    }}
    default_type application/octet-stream;
    server {{
        listen {addr};
        root {root};
    }}
}}
"#,
            user = if root_user { "user root root;" } else { "" },
            root = files.root.display(),
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(prefix.join("logs/error.log"));
        let mut proc = Proc::spawn("nginx", cmd, &prefix.join("logs/stdout.log"))?;
        match proc.wait_ready(addr, &files.probe).await {
            Ok(()) => return Ok((proc, addr)),
            Err(e) => {
                let log =
                    std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
                let in_use = log.contains("in use");
                last_err = Some(e.context(log));
                drop(proc);
                if !in_use {
                    break;
                }
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("nginx did not start")))
}

/// Start `hoard-bench serve-static` (this binary) as a child process.
pub async fn start_static(
    dir: &Path,
    files: &StaticFiles,
    threads: usize,
) -> Result<(Proc, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve-static")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--root")
        .arg(&files.root)
        .arg("--threads")
        .arg(threads.to_string());
    let mut proc = Proc::spawn("hyper-static", cmd, &dir.join("static.log"))?;
    proc.wait_ready(addr, &files.probe).await?;
    Ok((proc, addr))
}

/// The `serve-static` subcommand: serve every file of `root` from memory
/// with hyper (HTTP/1.1, keep-alive), on its own runtime of `threads`.
pub fn serve_static(listen: SocketAddr, root: &Path, threads: usize) -> Result<()> {
    let mut files: HashMap<String, (Bytes, &'static str)> = HashMap::new();
    for e in std::fs::read_dir(root)? {
        let e = e?;
        let name = format!("/{}", e.file_name().to_string_lossy());
        let bytes = Bytes::from(std::fs::read(e.path())?);
        let ct = content_type(&name);
        files.insert(name, (bytes, ct));
    }
    let files = Arc::new(files);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let files = files.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let files = files.clone();
                    async move {
                        let resp = match files.get(req.uri().path()) {
                            Some((bytes, ct)) => http::Response::builder()
                                .header(http::header::CONTENT_TYPE, *ct)
                                .body(Full::new(bytes.clone())),
                            None => http::Response::builder()
                                .status(http::StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::new())),
                        };
                        Ok::<_, Infallible>(resp.expect("valid response"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// Check that `path` on a static server serves exactly `expected`.
pub async fn verify_same_bytes(addr: SocketAddr, path: &str, expected: &[u8]) -> Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let got = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await?
        .bytes()
        .await?;
    if got.as_ref() != expected {
        bail!(
            "{addr}{path} served {} bytes that differ from hoard's {} bytes",
            got.len(),
            expected.len()
        );
    }
    Ok(())
}
