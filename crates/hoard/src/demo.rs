//! `hoard demo`: a local cluster of child processes on loopback ports, for
//! trying hoard out, for tests and for benchmarks. It writes
//! `DIR/cluster.json` and stops its children on Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

#[derive(Serialize)]
struct ClusterFile {
    nodes: Vec<NodeEntry>,
}

#[derive(Serialize)]
struct NodeEntry {
    id: String,
    role: &'static str,
    pid: u32,
    http_url: String,
    grpc_addr: String,
    data_dir: PathBuf,
    admin_token: String,
}

struct Planned {
    id: String,
    role: &'static str,
    /// For a voter: its Raft id.
    raft_id: Option<u64>,
    http: u16,
    grpc: u16,
    upstreams: Vec<String>,
    dir: PathBuf,
}

/// A free loopback port, found by binding port 0. Another process could
/// take it before the child binds; the child then fails loudly.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn run(voters: usize, replicas: usize, chain: bool, dir: &Path) -> anyhow::Result<()> {
    if !matches!(voters, 1 | 3 | 5) {
        bail!("--voters must be 1, 3 or 5: an even number of voters tolerates no more failures than one fewer");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let mut plan = Vec::new();
    for v in 0..voters {
        let id = format!("hoard-{}", v + 1);
        plan.push(Planned {
            dir: dir.join(&id),
            id,
            role: "voter",
            raft_id: Some(v as u64 + 1),
            http: free_port()?,
            grpc: free_port()?,
            upstreams: Vec::new(),
        });
    }
    let voter_grpc: Vec<String> = plan
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.grpc))
        .collect();
    for i in 0..replicas {
        // With --chain, each replica follows the one before it (a fan-out
        // tree), with the voters as its fallbacks.
        let mut upstreams = voter_grpc.clone();
        if chain && i > 0 {
            upstreams.insert(0, format!("127.0.0.1:{}", plan[voters + i - 1].grpc));
        }
        let id = format!("hoard-{}", voters + i + 1);
        plan.push(Planned {
            dir: dir.join(&id),
            id,
            role: "replica",
            raft_id: None,
            http: free_port()?,
            grpc: free_port()?,
            upstreams,
        });
    }

    let exe = std::env::current_exe().context("cannot find the hoard binary")?;
    let mut children: Vec<Child> = Vec::new();
    let mut entries = Vec::new();
    for node in &plan {
        std::fs::create_dir_all(&node.dir)?;
        let config_path = node.dir.join("hoard.toml");
        let upstreams: Vec<String> = node.upstreams.iter().map(|u| format!("{u:?}")).collect();
        let mut config = format!(
            "node_id = {:?}\nrole = {:?}\nhttp_listen = \"127.0.0.1:{}\"\ngrpc_listen = \"127.0.0.1:{}\"\ndata_dir = {:?}\n",
            node.id,
            node.role,
            node.http,
            node.grpc,
            node.dir.join("data"),
        );
        if !upstreams.is_empty() {
            config.push_str(&format!("upstreams = [{}]\n", upstreams.join(", ")));
        }
        if let Some(raft_id) = node.raft_id {
            // The first voter starts the group; the others join it below.
            config.push_str(&format!(
                "raft_id = {raft_id}\nbootstrap = {}\n",
                raft_id == 1
            ));
        }
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(node.dir.join("hoard.log"))?;
        let child = Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", node.id))?;
        let pid = child.id();
        children.push(child);
        let http_url = format!("http://127.0.0.1:{}", node.http);
        if let Err(e) = wait_ready(&http_url).await {
            stop_all(&mut children);
            bail!(
                "{} did not start ({e}); see {}",
                node.id,
                node.dir.join("hoard.log").display()
            );
        }
        let admin_token = std::fs::read_to_string(node.dir.join("data/admin-token"))?
            .trim()
            .to_owned();
        eprintln!(
            "{:<8} {:<8} {http_url}  grpc 127.0.0.1:{}  pid {pid}",
            node.id, node.role, node.grpc
        );
        entries.push(NodeEntry {
            id: node.id.clone(),
            role: node.role,
            pid,
            http_url,
            grpc_addr: format!("127.0.0.1:{}", node.grpc),
            data_dir: node.dir.join("data"),
            admin_token,
        });
        if let Some(raft_id) = node.raft_id.filter(|id| *id > 1) {
            let first = &entries[0];
            if let Err(e) = add_voter(first, raft_id, entries.last().expect("just pushed")).await {
                stop_all(&mut children);
                bail!("adding {} as a voter failed: {e:#}", node.id);
            }
            eprintln!("{:<8} joined the Raft group as voter {raft_id}", node.id);
        }
    }
    let cluster_file = dir.join("cluster.json");
    let json = serde_json::to_string_pretty(&ClusterFile { nodes: entries })?;
    let tmp = dir.join("cluster.json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &cluster_file)?;
    eprintln!(
        "cluster described in {}; Ctrl-C stops it",
        cluster_file.display()
    );
    let first_url = format!("http://127.0.0.1:{}", plan[0].http);
    eprintln!("web UI: {first_url}/+ui/  (the cluster: {first_url}/+ui/+cluster)");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut catch_up = CatchUpReport::default();
    let replica_urls: Vec<(String, String)> = plan
        .iter()
        .filter(|p| p.role == "replica")
        .map(|p| (p.id.clone(), format!("http://127.0.0.1:{}", p.http)))
        .collect();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                for (child, node) in children.iter_mut().zip(&plan) {
                    if let Ok(Some(status)) = child.try_wait() {
                        eprintln!("{} exited ({status}); see {}", node.id, node.dir.join("hoard.log").display());
                    }
                }
                catch_up.poll(&replica_urls).await;
            }
        }
    }
    eprintln!("stopping the cluster");
    stop_all(&mut children);
    Ok(())
}

/// Replicas that fall behind (a burst of uploads, a restart) show their
/// catch-up here too, every few seconds: the serial, the rate, the time
/// left; and a line once they have caught up.
#[derive(Default)]
struct CatchUpReport {
    last: Option<Instant>,
    /// Per replica: the serial and time of the last report, while behind.
    behind: std::collections::HashMap<String, (u64, Instant)>,
}

impl CatchUpReport {
    const EVERY: Duration = Duration::from_secs(5);
    /// Fewer events behind than this is ordinary replication lag.
    const BEHIND: u64 = 100;

    async fn poll(&mut self, replicas: &[(String, String)]) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let client = reqwest::Client::new();
        for (id, url) in replicas {
            let Ok(response) = client
                .get(format!("{url}/+status"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
            else {
                continue;
            };
            let Ok(status) = response.json::<serde_json::Value>().await else {
                continue;
            };
            let applied = status["applied_serial"].as_u64().unwrap_or(0);
            let lag = status["lag_events"].as_u64().unwrap_or(0);
            let upstream = applied + lag;
            match self.behind.get(id).copied() {
                None if lag >= Self::BEHIND => {
                    eprintln!("{id:<8} catching up: serial {applied} of {upstream}");
                    self.behind.insert(id.clone(), (applied, Instant::now()));
                }
                Some(_) if lag == 0 => {
                    eprintln!("{id:<8} caught up: serial {applied}");
                    self.behind.remove(id);
                }
                Some((before, at)) => {
                    let rate = (applied.saturating_sub(before)) as f64 / at.elapsed().as_secs_f64();
                    let eta = if rate > 0.0 {
                        format!("{:.0} s", lag as f64 / rate)
                    } else {
                        "unknown".to_owned()
                    };
                    eprintln!(
                        "{id:<8} catching up: serial {applied} of {upstream}, {rate:.0} events/s, ETA {eta}"
                    );
                    self.behind.insert(id.clone(), (applied, Instant::now()));
                }
                None => {}
            }
        }
    }
}

/// Asks the first voter (the leader of a new cluster) to add `node`.
async fn add_voter(leader: &NodeEntry, raft_id: u64, node: &NodeEntry) -> anyhow::Result<()> {
    let url = format!("{}/+admin/members/add", leader.http_url);
    let body = serde_json::json!({
        "id": raft_id,
        "grpc_addr": node.grpc_addr,
        "http_url": node.http_url,
        "node_id": node.id,
    });
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&leader.admin_token)
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if !response.status().is_success() {
        let status = response.status();
        bail!(
            "{url} answered {status}: {}",
            response.text().await.unwrap_or_default().trim()
        );
    }
    Ok(())
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = format!("{url}/+status");
    loop {
        match reqwest::get(&status).await {
            Ok(r) if r.status().is_success() => return Ok(()),
            _ if Instant::now() > deadline => bail!("no answer from {status} within 30s"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// SIGTERM every child, then SIGKILL the ones still running after a while.
fn stop_all(children: &mut [Child]) {
    for child in children.iter() {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for child in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}
