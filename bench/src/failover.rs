//! Raft: the time from kill -9 of the leader to the first acknowledged
//! upload on the new leader, over many trials; and upload acknowledgement
//! latency and throughput of one voter against three, side by side (and
//! against a baseline binary, e.g. the last build before Raft, if given).
//!
//! Every cluster is a `hoard demo` of the binary under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use hoard_testkit::{wheel, Artifact};
use serde_json::Value;

use crate::procs::Proc;
use crate::{report, Common};

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Kill -9 trials (each on a fresh three-voter cluster).
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Sequential uploads per latency measurement.
    #[arg(long, default_value_t = 300)]
    pub uploads: usize,
    /// Concurrent uploaders for the throughput measurement.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Another hoard binary to measure one node of, in the same run (the
    /// single-node writer before Raft, say).
    #[arg(long)]
    pub baseline_bin: Option<PathBuf>,
}

/// A running `hoard demo` and what its cluster.json says.
struct Demo {
    proc: Proc,
    nodes: Vec<Value>,
}

impl Demo {
    async fn start(bin: &Path, voters: usize, dir: &Path) -> Result<Demo> {
        std::fs::create_dir_all(dir)?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "demo",
            "--voters",
            &voters.to_string(),
            "--replicas",
            "0",
            "--dir",
        ])
        .arg(dir);
        let mut proc = Proc::spawn("hoard demo", cmd, &dir.join("demo.log"))?;
        let file = dir.join("cluster.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let v: Value = serde_json::from_str(&text)?;
                let nodes = v["nodes"].as_array().context("nodes")?.clone();
                return Ok(Demo { proc, nodes });
            }
            if let Some(status) = proc.child.try_wait()? {
                bail!("hoard demo exited with {status}: {}", proc.log_tail());
            }
            if Instant::now() > deadline {
                bail!("no cluster.json within 60 s: {}", proc.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, i: usize) -> String {
        self.nodes[i]["http_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn upload_token(&self, http: &reqwest::Client) -> Result<String> {
        let resp = http
            .post(format!("{}/+admin/tokens", self.url(0)))
            .bearer_auth(self.nodes[0]["admin_token"].as_str().unwrap_or_default())
            .json(&serde_json::json!({ "repo": "pypi", "perm": "upload", "label": "bench" }))
            .send()
            .await?;
        let v: Value = resp.json().await?;
        v["token"].as_str().map(str::to_owned).context("no token")
    }

    async fn leader(&self, http: &reqwest::Client, skip: Option<usize>) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if Some(i) == skip {
                continue;
            }
            let Ok(resp) = http.get(format!("{}/+status", self.url(i))).send().await else {
                continue;
            };
            let Ok(s) = resp.json::<Value>().await else {
                continue;
            };
            if s["role"] == "leader" {
                return Some(i);
            }
        }
        None
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.proc.pid() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.proc.child.wait();
    }
}

/// One upload through the benchmarks' shared twine-style helper; `Ok`
/// only when it was acknowledged.
async fn upload(http: &reqwest::Client, url: &str, token: &str, w: &Artifact) -> Result<()> {
    crate::servers::upload(http, &format!("{url}/pypi/"), "__token__", token, w)
        .await
        .map(|_| ())
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// One trial: kill -9 the leader of a fresh cluster, then upload to the
/// other nodes until one acknowledges.
pub async fn failover_trial(bin: &Path, dir: &Path, n: usize) -> Result<(Duration, Duration)> {
    // Bounded: a node without a quorum may hold an upload for a while.
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()?;
    let demo = Demo::start(bin, 3, &dir.join(format!("trial-{n}"))).await?;
    let token = demo.upload_token(&http).await?;
    let leader = demo.leader(&http, None).await.context("no leader")?;
    let pid = demo.nodes[leader]["pid"].as_u64().context("pid")? as libc::pid_t;
    let w = wheel("failover-bench", "0.0.1");
    upload(&http, &demo.url(leader), &token, &w)
        .await
        .context("the first upload")?;
    // SAFETY: a pid that `hoard demo` (our child) started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let killed = Instant::now();
    let mut elected = None;
    let mut v = 1u64;
    loop {
        if killed.elapsed() > Duration::from_secs(30) {
            bail!("no acknowledged upload within 30 s of the kill");
        }
        if elected.is_none() && demo.leader(&http, Some(leader)).await.is_some() {
            elected = Some(killed.elapsed());
        }
        v += 1;
        let w = wheel("failover-bench", &format!("0.0.{v}"));
        for i in (0..3).filter(|i| *i != leader) {
            if upload(&http, &demo.url(i), &token, &w).await.is_ok() {
                let acked = killed.elapsed();
                return Ok((elected.unwrap_or(acked), acked));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Upload acknowledgement latencies and rate against one cluster.
pub struct UploadLatency {
    /// Sequential uploads' latencies, sorted.
    pub sorted: Vec<Duration>,
    /// Uploads/s from `concurrency` clients at once.
    pub per_sec: f64,
}

/// Sequential upload latency and concurrent uploads/s against the leader
/// of a `voters`-voter demo of `bin`.
pub async fn upload_latency(
    bin: &Path,
    voters: usize,
    dir: &Path,
    args: &FailoverArgs,
) -> Result<UploadLatency> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let demo = Demo::start(bin, voters, dir).await?;
    let token = demo.upload_token(&http).await?;
    let leader = demo.leader(&http, None).await.unwrap_or(0);
    let url = demo.url(leader);
    let mut lat = Vec::with_capacity(args.uploads);
    for i in 0..args.uploads {
        let w = wheel("latency-bench", &format!("1.0.{i}"));
        let t = Instant::now();
        upload(&http, &url, &token, &w)
            .await
            .with_context(|| format!("upload {i}"))?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let total = args.uploads;
    let t = Instant::now();
    let mut tasks = Vec::new();
    let step = args.concurrency.max(1);
    for c in 0..step {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        // Each uploader takes every `step`-th upload.
        tasks.push(tokio::spawn(async move {
            for i in (c..total).step_by(step) {
                let w = wheel("throughput-bench", &format!("2.{c}.{i}"));
                let _ = upload(&http, &url, &token, &w).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let per_sec = total as f64 / t.elapsed().as_secs_f64();
    Ok(UploadLatency {
        sorted: lat,
        per_sec,
    })
}

pub async fn run(common: &Common, args: &FailoverArgs, hoard_bin: PathBuf) -> Result<()> {
    let work = common.work_dir()?;
    let mut elected = Vec::new();
    let mut acked = Vec::new();
    for n in 0..args.trials {
        let (e, a) = failover_trial(&hoard_bin, work.path(), n).await?;
        eprintln!(
            "trial {n}: elected after {} ms, first ack after {} ms",
            ms(e),
            ms(a)
        );
        elected.push(e);
        acked.push(a);
    }
    elected.sort();
    acked.sort();

    let mut rows = Vec::new();
    let mut targets: Vec<(String, PathBuf, usize)> = vec![
        ("1 voter (Raft)".into(), hoard_bin.clone(), 1),
        ("3 voters (Raft)".into(), hoard_bin.clone(), 3),
    ];
    if let Some(b) = &args.baseline_bin {
        targets.insert(0, (format!("baseline {}", b.display()), b.clone(), 1));
    }
    for (i, (name, bin, voters)) in targets.iter().enumerate() {
        let measured = upload_latency(
            bin,
            *voters,
            &work.path().join(format!("latency-{i}")),
            args,
        )
        .await?;
        let (p50, p99, per_sec) = (
            percentile(&measured.sorted, 0.5),
            percentile(&measured.sorted, 0.99),
            measured.per_sec,
        );
        eprintln!(
            "{name}: p50 {} ms, p99 {} ms, {per_sec:.0} uploads/s",
            ms(p50),
            ms(p99)
        );
        rows.push((name.clone(), p50, p99, per_sec));
    }

    let mut md = String::new();
    md.push_str(&format!(
        "# Raft failover and upload latency ({})\n\n",
        report::now_utc()
    ));
    md.push_str(&report::how_run(
        &crate::command_line(),
        &crate::git_description(),
        &hoard_bin,
    ));
    md.push_str(
        "- election settings: heartbeat 100 ms, election timeout 500–1000 ms (the defaults)\n\n",
    );
    md.push_str(&format!(
        "## Failover: kill -9 of the leader of three voters, {} trials\n\n",
        args.trials
    ));
    md.push_str("| | p50 | p99 | max |\n|---|---|---|---|\n");
    for (what, v) in [
        ("new leader seen in /+status", &elected),
        ("first acknowledged upload on the new leader", &acked),
    ] {
        md.push_str(&format!(
            "| {what} | {} ms | {} ms | {} ms |\n",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        ));
    }
    md.push_str(&format!(
        "\n## Upload acknowledgement, small wheels, same run\n\n{} sequential uploads for the latency; {} uploads from {} concurrent clients for the rate.\n\n",
        args.uploads, args.uploads, args.concurrency
    ));
    md.push_str("| cluster | p50 | p99 | uploads/s | p50 vs 1 voter |\n|---|---|---|---|---|\n");
    let one = rows
        .iter()
        .find(|r| r.0 == "1 voter (Raft)")
        .map_or(Duration::from_millis(1), |r| r.1);
    for (name, p50, p99, per_sec) in &rows {
        md.push_str(&format!(
            "| {name} | {} ms | {} ms | {per_sec:.0} | {:.2}× |\n",
            ms(*p50),
            ms(*p99),
            p50.as_secs_f64() / one.as_secs_f64()
        ));
    }
    common.publish(&md, "raft")
}
