//! devpi-server, the competitor baseline: a primary with one index
//! (`root/bench`, no bases, no network), its replicas, and the two
//! replication measures that `suite` sets next to hoard's: the lag from an
//! upload's acknowledgement to the replica's serial, and the catch-up of a
//! fresh replica.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use bytes::Bytes;
use hoard_testkit::Artifact;

use crate::procs::{cpu_seconds_tree, free_port, memory_kib, output_of, Proc};
use crate::servers::{upload_with, UploadAuth, Uploaded};

const DEVPI_PASSWORD: &str = "bench";
pub const DEVPI_INDEX: &str = "/root/bench";

/// `devpi-server` from `--devpi`, else from target/bench-tools/devpi, else
/// from target/test-tools/devpi (where `bench/run` has
/// `tests/tools/setup-devpi.sh` put it).
pub fn find_devpi(explicit: Option<&Path>, workspace: &Path) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    ["target/bench-tools/devpi", "target/test-tools/devpi"]
        .iter()
        .map(|venv| workspace.join(venv).join("bin/devpi-server"))
        .find(|p| p.is_file())
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .timeout(Duration::from_secs(300))
        .build()?)
}

/// A running devpi-server primary (`--role primary`, so that replicas can
/// follow it) with the index `root/bench`, and a login token for uploads.
pub struct Devpi {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub version: String,
    pub serverdir: PathBuf,
    bin: PathBuf,
    /// Shared with the replicas: devpi signs the replica's credentials with it.
    secretfile: PathBuf,
    /// `X-Devpi-Auth`: base64 of `root:<token from /+login>`.
    auth: String,
    client: reqwest::Client,
}

impl Devpi {
    pub async fn start(server_bin: &Path, dir: &Path) -> Result<Devpi> {
        let bin_dir = server_bin.parent().unwrap_or(Path::new("."));
        let serverdir = dir.join("devpi");
        let secretfile = dir.join("devpi-secret");
        output_of(
            Command::new(bin_dir.join("devpi-init"))
                .arg("--serverdir")
                .arg(&serverdir)
                .arg("--no-root-pypi")
                .arg("--root-passwd")
                .arg(DEVPI_PASSWORD),
        )?;
        output_of(
            Command::new(bin_dir.join("devpi-gen-secret"))
                .arg("--secretfile")
                .arg(&secretfile),
        )?;
        let version = output_of(Command::new(server_bin).arg("--version"))
            .unwrap_or_else(|_| "unknown".into());
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut cmd = Command::new(server_bin);
        cmd.arg("--serverdir")
            .arg(&serverdir)
            .arg("--secretfile")
            .arg(&secretfile)
            .args(["--role", "primary", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--offline-mode");
        let mut proc = Proc::spawn("devpi-server", cmd, &dir.join("devpi.log"))?;
        proc.wait_ready(addr, "/+api").await?;
        let client = client()?;
        let login: serde_json::Value = client
            .post(format!("http://{addr}/+login"))
            .header("accept", "application/json")
            .json(&serde_json::json!({"user": "root", "password": DEVPI_PASSWORD}))
            .send()
            .await?
            .error_for_status()
            .context("devpi: POST /+login")?
            .json()
            .await?;
        let token = login["result"]["password"]
            .as_str()
            .with_context(|| format!("devpi's /+login answer has no token: {login}"))?;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("root:{token}"));
        let resp = client
            .put(format!("http://{addr}{DEVPI_INDEX}"))
            .header("x-devpi-auth", &auth)
            .header("accept", "application/json")
            .json(&serde_json::json!({"type": "stage", "bases": [], "volatile": true}))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("devpi: create index: {}", resp.status());
        }
        Ok(Devpi {
            proc,
            addr,
            version,
            serverdir,
            bin: server_bin.to_path_buf(),
            secretfile,
            auth,
            client,
        })
    }

    /// Uploads one wheel with twine's legacy API; the serial is devpi's
    /// `X-Devpi-Serial` after the commit.
    pub async fn upload_serial(&self, w: &Artifact) -> Result<Uploaded> {
        let url = format!("http://{}{DEVPI_INDEX}/", self.addr);
        upload_with(
            &self.client,
            &url,
            &UploadAuth::Header("x-devpi-auth", &self.auth),
            w,
        )
        .await
    }

    pub async fn upload(&self, w: &Artifact) -> Result<Duration> {
        Ok(self.upload_serial(w).await?.elapsed)
    }

    /// Uploads `count` artifacts made by `make`, `concurrency` at a time.
    pub async fn upload_many(
        &self,
        count: usize,
        concurrency: usize,
        make: impl Fn(usize) -> Artifact + Send + Sync + 'static,
    ) -> Result<Duration> {
        let t0 = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let make = Arc::new(make);
        let mut tasks = tokio::task::JoinSet::new();
        let url = format!("http://{}{DEVPI_INDEX}/", self.addr);
        for _ in 0..concurrency.max(1) {
            let (next, make, client, auth, url) = (
                next.clone(),
                make.clone(),
                self.client.clone(),
                self.auth.clone(),
                url.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let w = make(i);
                    upload_with(
                        &client,
                        &url,
                        &UploadAuth::Header("x-devpi-auth", &auth),
                        &w,
                    )
                    .await?;
                    if (i + 1).is_multiple_of(1000) {
                        eprintln!("  devpi: {} uploads", i + 1);
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.context("devpi upload task")??;
        }
        Ok(t0.elapsed())
    }

    /// GET a path: (content type, body); fails unless 200.
    pub async fn get(&self, path: &str, accept: &str) -> Result<(String, Bytes)> {
        get(&self.client, self.addr, path, accept).await
    }

    /// The current serial (`/+status`).
    pub async fn serial(&self) -> Result<i64> {
        serial(&self.client, self.addr).await
    }

    /// The path of `filename` as linked from the project's simple page.
    pub async fn file_path(&self, project: &str, filename: &str) -> Result<String> {
        let page = format!("{DEVPI_INDEX}/+simple/{project}/");
        let (_, html) = self.get(&page, "text/html").await?;
        let html = String::from_utf8_lossy(&html);
        let href = html
            .split("href=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .find(|h| h.split('#').next().unwrap_or("").ends_with(filename))
            .with_context(|| format!("devpi's page of {project} links no {filename}"))?;
        let base = reqwest::Url::parse(&format!("http://{}{page}", self.addr))?;
        let url = base.join(href.split('#').next().unwrap_or(href))?;
        Ok(url.path().to_string())
    }
}

async fn get(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    accept: &str,
) -> Result<(String, Bytes)> {
    let resp = client
        .get(format!("http://{addr}{path}"))
        .header("accept", accept)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("devpi {addr}: GET {path}: {}", resp.status());
    }
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((ct, resp.bytes().await?))
}

async fn serial(client: &reqwest::Client, addr: SocketAddr) -> Result<i64> {
    let (_, body) = get(client, addr, "/+status", "application/json").await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["result"]["serial"]
        .as_i64()
        .with_context(|| format!("devpi {addr}: /+status has no serial"))
}

/// A devpi-server replica of a [`Devpi`] primary, with its own serverdir.
pub struct DevpiReplica {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub serverdir: PathBuf,
    client: reqwest::Client,
}

impl DevpiReplica {
    /// Starts a replica with an empty serverdir (`devpi-init
    /// --primary-url`, then `devpi-server --primary-url`), without waiting
    /// for it to answer. Not `--offline-mode`: devpi's offline mode
    /// refuses the replica's own requests to its primary.
    pub fn spawn(primary: &Devpi, dir: &Path, name: &str) -> Result<DevpiReplica> {
        let bin_dir = primary.bin.parent().unwrap_or(Path::new("."));
        let serverdir = dir.join(name);
        let primary_url = format!("http://{}", primary.addr);
        output_of(
            Command::new(bin_dir.join("devpi-init"))
                .arg("--serverdir")
                .arg(&serverdir)
                .arg("--primary-url")
                .arg(&primary_url),
        )?;
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut cmd = Command::new(&primary.bin);
        cmd.arg("--serverdir")
            .arg(&serverdir)
            .arg("--secretfile")
            .arg(&primary.secretfile)
            .arg("--primary-url")
            .arg(&primary_url)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(port.to_string());
        let proc = Proc::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
        Ok(DevpiReplica {
            proc,
            addr,
            serverdir,
            client: client()?,
        })
    }

    /// Starts a replica and waits until it has the primary's serial.
    pub async fn start(primary: &Devpi, dir: &Path, name: &str) -> Result<DevpiReplica> {
        let mut r = DevpiReplica::spawn(primary, dir, name)?;
        r.proc.wait_ready(r.addr, "/+status").await?;
        r.wait_serial(primary.serial().await?, Duration::from_secs(300))
            .await?;
        Ok(r)
    }

    pub async fn serial(&self) -> Result<i64> {
        serial(&self.client, self.addr).await
    }

    /// GET a path: (content type, body); fails unless 200.
    pub async fn get(&self, path: &str, accept: &str) -> Result<(String, Bytes)> {
        get(&self.client, self.addr, path, accept).await
    }

    /// Polls `/+status` back to back until the replica has `target`.
    pub async fn wait_serial(&self, target: i64, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.serial().await.is_ok_and(|s| s >= target) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "the devpi replica did not reach serial {target} in {timeout:?}; log:\n{}",
                    self.proc.log_tail()
                );
            }
        }
    }
}

/// devpi's lag over sequential uploads, measured as hoard's is but by
/// polling: devpi has no request that waits for a serial, so `/+status`
/// on the replica is asked back to back from the acknowledgement on.
pub struct DevpiLag {
    pub lag_ms: Vec<f64>,
    pub ack_ms: Vec<f64>,
    pub status_rtt_ms: Vec<f64>,
}

pub async fn measure_lag(
    primary: &Devpi,
    replica: &DevpiReplica,
    uploads: usize,
    make: impl Fn(usize) -> Artifact,
) -> Result<DevpiLag> {
    let mut status_rtt_ms = Vec::new();
    for _ in 0..100 {
        let t0 = Instant::now();
        replica.serial().await?;
        status_rtt_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    status_rtt_ms.sort_by(f64::total_cmp);
    eprintln!("devpi lag: {uploads} sequential uploads to the primary");
    let mut lag_ms = Vec::with_capacity(uploads);
    let mut ack_ms = Vec::with_capacity(uploads);
    for i in 0..uploads {
        let up = primary.upload_serial(&make(i)).await?;
        let acked = Instant::now();
        ack_ms.push(up.elapsed.as_secs_f64() * 1e3);
        let serial = up
            .serial
            .context("devpi's upload response has no X-Devpi-Serial")?;
        let visible = replica
            .wait_serial(serial as i64, Duration::from_secs(60))
            .await?;
        lag_ms.push(visible.duration_since(acked).as_secs_f64() * 1e3);
    }
    Ok(DevpiLag {
        lag_ms,
        ack_ms,
        status_rtt_ms,
    })
}

/// A fresh devpi replica's catch-up.
pub struct DevpiCatchUp {
    pub serial: i64,
    pub files: u64,
    pub bytes: u64,
    /// Process start → the primary's serial and every file on disk.
    pub done_s: f64,
    /// The same, plus a `sync` (devpi does not fsync its file downloads).
    pub done_sync_s: f64,
    pub replica_cpu_s: f64,
    pub primary_cpu_s: f64,
    pub idle_rss_kib: u64,
}

/// Starts a replica with an empty serverdir and times it until it has the
/// primary's serial and the same files (count and bytes) under `+files`:
/// devpi fetches files in background threads after the metadata.
pub async fn measure_catch_up(primary: &Devpi, dir: &Path) -> Result<DevpiCatchUp> {
    let target = primary.serial().await?;
    let want = crate::scale::disk_use(&primary.serverdir.join("+files"));
    eprintln!(
        "devpi catch-up: a fresh replica, serial {target}, {} files ({:.2} GB)",
        want.files,
        want.bytes as f64 / 1e9
    );
    crate::replication::sync_disks()?;
    let primary_cpu0 = cpu_seconds_tree(primary.proc.pid());
    let t0 = Instant::now();
    let mut replica = DevpiReplica::spawn(primary, dir, "devpi-replica-fresh")?;
    replica.proc.wait_ready(replica.addr, "/+status").await?;
    let deadline = t0 + Duration::from_secs(3600);
    loop {
        if replica.serial().await.is_ok_and(|s| s >= target) {
            let have = crate::scale::disk_use(&replica.serverdir.join("+files"));
            // Equal, not at least: a download in flight is a partial file.
            if have.files == want.files && have.bytes == want.bytes {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("the fresh devpi replica did not catch up within an hour");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done_s = t0.elapsed().as_secs_f64();
    let replica_cpu_s = cpu_seconds_tree(replica.proc.pid());
    let primary_cpu_s = cpu_seconds_tree(primary.proc.pid()) - primary_cpu0;
    crate::replication::sync_disks()?;
    let done_sync_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss_kib = memory_kib(replica.proc.pid()).map_or(0, |m| m.0);
    eprintln!("  devpi caught up in {done_s:.2} s ({done_sync_s:.2} s with sync)");
    Ok(DevpiCatchUp {
        serial: target,
        files: want.files,
        bytes: want.bytes,
        done_s,
        done_sync_s,
        replica_cpu_s,
        primary_cpu_s,
        idle_rss_kib,
    })
}
