//! `hoard-bench replication`: a primary and replicas on loopback.
//!
//! 1. Lag: sequential uploads to the primary; for each, the time from the
//!    upload's acknowledgement to the moment a replica has applied its
//!    serial. A long-poll (`GET /+status` with `X-Hoard-Min-Serial: S`) is
//!    already waiting on the replica when the upload is sent, so the
//!    visibility time is when the replica answers it. Right after, the file
//!    is downloaded from the replica (it must be there: a replica never
//!    lists a file it cannot serve).
//! 2. Catch-up: more uploads bring the primary to N events and ~1 GiB of
//!    blobs; then a fresh replica starts from an empty data dir, and the
//!    time until its applied serial and digest equal the primary's is
//!    measured, next to `cp -a` of the primary's blob dir (+ `sync`) on the
//!    same disk in the same run.
//! 3. Memory: VmRSS and VmHWM of the replicas and the primary, sampled
//!    from /proc during and after the catch-up.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use hoard_testkit::{wheel, Artifact, WheelSpec};

use crate::procs::{cpu_seconds_tree, memory_kib};
use crate::report::{how_run, now_utc};
use crate::servers::{self, Hoard, NodeSpec};
use crate::{command_line, git_description, Common};

pub const LAG_PROJECT: &str = "bench-lag";

#[derive(Args, Debug, Clone)]
pub struct ReplicationArgs {
    /// Sequential uploads for the lag measurement (0: skip it).
    #[arg(long, default_value_t = 1000)]
    pub lag_uploads: usize,
    /// Events on the primary when the fresh replica starts (0: skip the
    /// catch-up).
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// How many of the catch-up uploads carry a big random payload.
    #[arg(long, default_value_t = 1000)]
    pub big_files: usize,
    /// Payload of each big upload, in KiB (1000 × 1100 KiB ≈ 1.05 GiB).
    #[arg(long, default_value_t = 1100)]
    pub big_kib: usize,
    /// Projects that the catch-up uploads are spread over.
    #[arg(long, default_value_t = 100)]
    pub projects: usize,
    /// Concurrent uploads while preparing the catch-up (not measured).
    #[arg(long, default_value_t = 4)]
    pub prep_concurrency: usize,
    /// `fetch_concurrency` of the replicas (hoard's default is 8).
    #[arg(long, default_value_t = 8)]
    pub fetch_concurrency: usize,
    /// Memory sampling interval during the catch-up, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub sample_ms: u64,
    /// Seconds to keep sampling memory after the catch-up.
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
}

pub fn replica_toml(upstream: SocketAddr, fetch_concurrency: usize) -> String {
    format!(
        "role = \"replica\"\nupstreams = [\"{upstream}\"]\nfetch_concurrency = {fetch_concurrency}\n"
    )
}

/// Quantile `q` of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

pub fn status_u64(v: &serde_json::Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .with_context(|| format!("/+status has no {key}: {v}"))
}

/// Waits (long-polls) until the node at `addr` has applied `serial`;
/// returns its `/+status` and the instant its answer arrived. Retries
/// while the node is not up yet, and on 503 (its bounded wait ran out).
pub async fn wait_applied(
    client: &reqwest::Client,
    addr: SocketAddr,
    serial: u64,
) -> Result<(serde_json::Value, Instant)> {
    let url = format!("http://{addr}/+status");
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        if Instant::now() > deadline {
            bail!("{addr} did not apply serial {serial} within an hour");
        }
        match client
            .get(&url)
            .header("x-hoard-min-serial", serial.to_string())
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => {
                let at = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
                if status_u64(&v, "applied_serial")? >= serial {
                    return Ok((v, at));
                }
                bail!("{addr} answered X-Hoard-Min-Serial: {serial} with applied_serial below it: {v}");
            }
            Ok(resp) if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {}
            Ok(resp) => bail!("{addr}: GET /+status: {}", resp.status()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Sum of file sizes and number of files under `dir`.
fn dir_size(dir: &Path) -> (u64, u64) {
    let used = crate::scale::disk_use(dir);
    (used.bytes, used.files)
}

pub fn sync_disks() -> Result<Duration> {
    let t0 = Instant::now();
    let st = Command::new("sync").status().context("run sync")?;
    if !st.success() {
        bail!("sync failed: {st}");
    }
    Ok(t0.elapsed())
}

/// Memory of one process at one moment, for the report.
struct MemPoint {
    process: String,
    when: String,
    rss_kib: u64,
    hwm_kib: u64,
}

fn mem_point(pid: u32, process: &str, when: &str) -> Option<MemPoint> {
    memory_kib(pid).map(|(rss, hwm)| MemPoint {
        process: process.into(),
        when: when.into(),
        rss_kib: rss,
        hwm_kib: hwm,
    })
}

pub struct LagResult {
    pub uploads: usize,
    pub lag_ms: Vec<f64>,
    pub ack_ms: Vec<f64>,
    pub serial_surprises: usize,
    pub download_failures: usize,
    pub first_download_failure: Option<String>,
    pub status_rtt_replica_ms: Vec<f64>,
}

/// One sample during the catch-up.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    pub t: f64,
    pub replica_rss: u64,
    pub replica_hwm: u64,
    pub primary_rss: u64,
    pub applied: Option<u64>,
    pub fetched: Option<u64>,
}

pub struct CatchUp {
    pub events: u64,
    pub blob_bytes: u64,
    pub blob_files: u64,
    pub ready_s: f64,
    pub done_s: f64,
    pub digest_ok: bool,
    pub fetched_bytes: u64,
    pub replica_cpu_s: f64,
    pub primary_cpu_s: f64,
    pub samples: Vec<Sample>,
    pub idle_rss: u64,
    pub idle_hwm: u64,
    pub replica_data_bytes: u64,
    pub primary_data_bytes: u64,
    pub sync_before_s: f64,
    pub cp_s: f64,
    pub cp_sync_s: f64,
    pub cp_bytes: u64,
}

pub struct Prep {
    pub uploads: usize,
    pub big: usize,
    pub elapsed: Duration,
    pub bytes: u64,
    pub replica1_caught_up_after: Duration,
}

/// A primary (with an upload token for `pypi`) and a replica following it,
/// named `ids` and in sub-dirs of `dir` of those names, and a client for
/// long polls on them.
pub async fn primary_with_replica(
    hoard_bin: &Path,
    dir: &Path,
    ids: [&str; 2],
    fetch_concurrency: usize,
) -> Result<(Hoard, Hoard, reqwest::Client)> {
    let primary = Hoard::start_node(
        hoard_bin,
        &NodeSpec {
            id: ids[0],
            dir: &dir.join(ids[0]),
            extra_toml: "",
            token_repo: Some("pypi"),
            env: &[],
        },
    )
    .await?;
    let replica = Hoard::start_node(
        hoard_bin,
        &NodeSpec {
            id: ids[1],
            dir: &dir.join(ids[1]),
            extra_toml: &replica_toml(primary.grpc, fetch_concurrency),
            token_repo: None,
            env: &[],
        },
    )
    .await?;
    let poll = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    Ok((primary, replica, poll))
}

pub async fn run(common: &Common, args: &ReplicationArgs, hoard_bin: PathBuf) -> Result<()> {
    let work = common.work_dir()?;
    let dir = work.path().to_path_buf();
    let mut notes: Vec<String> = Vec::new();
    let mut mem: Vec<MemPoint> = Vec::new();

    eprintln!("starting the primary and replica-1");
    let (primary, replica1, poll) = primary_with_replica(
        &hoard_bin,
        &dir,
        ["primary", "replica-1"],
        args.fetch_concurrency,
    )
    .await?;
    let p_serial = status_u64(&primary.status().await?, "applied_serial")?;
    wait_applied(&poll, replica1.addr, p_serial).await?;

    // 1. Lag.
    let lag = if args.lag_uploads > 0 {
        Some(measure_lag(&primary, &replica1, &poll, args.lag_uploads).await?)
    } else {
        None
    };
    mem.extend(mem_point(
        primary.proc.pid(),
        "primary",
        "after the lag uploads",
    ));
    mem.extend(mem_point(
        replica1.proc.pid(),
        "replica-1 (following live)",
        "after the lag uploads",
    ));

    // 2. Catch-up.
    let mut catch_up = None;
    let mut prep = None;
    if args.events > 0 {
        let p = prepare(&primary, &replica1, &poll, args).await?;
        mem.extend(mem_point(
            primary.proc.pid(),
            "primary",
            "after the preparation uploads",
        ));
        mem.extend(mem_point(
            replica1.proc.pid(),
            "replica-1 (following live)",
            "after following the preparation uploads",
        ));
        let p_status = primary.status().await?;
        let r1_status = replica1.status().await?;
        if p_status["digest"] != r1_status["digest"] {
            notes.push(format!(
                "replica-1's digest {} differs from the primary's {} at serial {}",
                r1_status["digest"], p_status["digest"], p_status["applied_serial"]
            ));
        }
        prep = Some(p);
        // replica-1 stops here, so that it takes no CPU from the catch-up.
        drop(replica1);
        let c = measure_catch_up(common, args, &hoard_bin, &primary, &dir, &poll).await?;
        if !c.digest_ok {
            notes.push("the fresh replica's digest did not match the primary's".into());
        }
        catch_up = Some(c);
    } else {
        drop(replica1);
    }
    mem.extend(mem_point(primary.proc.pid(), "primary", "at the end"));

    let md = markdown(
        common,
        args,
        &hoard_bin,
        lag.as_ref(),
        prep.as_ref(),
        catch_up.as_ref(),
        &mem,
        &notes,
    );
    common.publish(&md, "replication")?;
    drop(primary);
    drop(work);
    Ok(())
}

pub async fn measure_lag(
    primary: &Hoard,
    replica: &Hoard,
    poll: &reqwest::Client,
    uploads: usize,
) -> Result<LagResult> {
    // The floor: a round trip of `GET /+status` on the replica, one at a time.
    let mut status_rtt = Vec::new();
    for _ in 0..200 {
        let t0 = Instant::now();
        poll.get(format!("http://{}/+status", replica.addr))
            .send()
            .await?
            .bytes()
            .await?;
        status_rtt.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    status_rtt.sort_by(f64::total_cmp);

    eprintln!("lag: {uploads} sequential uploads to the primary");
    let mut expected = status_u64(&primary.status().await?, "applied_serial")? + 1;
    let mut lag_ms = Vec::with_capacity(uploads);
    let mut ack_ms = Vec::with_capacity(uploads);
    let mut surprises = 0;
    let mut download_failures = 0;
    let mut first_failure = None;
    let getter = reqwest::Client::builder().no_proxy().build()?;
    for i in 0..uploads {
        let w = wheel(LAG_PROJECT, &format!("1.0.{i}"));
        // The long-poll is waiting on the replica before the upload starts.
        let waiter = {
            let poll = poll.clone();
            let addr = replica.addr;
            tokio::spawn(async move { wait_applied(&poll, addr, expected).await })
        };
        tokio::task::yield_now().await;
        let up = primary.upload(&w).await?;
        let acked = Instant::now();
        ack_ms.push(up.elapsed.as_secs_f64() * 1e3);
        let serial = up
            .serial
            .context("the upload response has no X-Hoard-Upload-Serial")?;
        let visible = if serial == expected {
            waiter.await.context("long-poll task")??.1
        } else {
            // Another event took the serial we expected: wait for ours
            // (this sample then includes a request's round trip).
            surprises += 1;
            waiter.abort();
            wait_applied(poll, replica.addr, serial).await?.1
        };
        let lag = if visible >= acked {
            visible.duration_since(acked).as_secs_f64() * 1e3
        } else {
            -(acked.duration_since(visible).as_secs_f64() * 1e3)
        };
        lag_ms.push(lag);
        expected = serial + 1;
        // Listed on the replica, so it must download from there at once.
        let url = format!(
            "http://{}/pypi/files/{LAG_PROJECT}/{}",
            replica.addr, w.filename
        );
        let failure = match getter.get(&url).send().await {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(b) if b.as_ref() == w.bytes.as_slice() => None,
                Ok(b) => Some(format!("{url}: {} bytes differ from the upload", b.len())),
                Err(e) => Some(format!("{url}: {e}")),
            },
            Ok(r) => Some(format!("{url}: {}", r.status())),
            Err(e) => Some(format!("{url}: {e}")),
        };
        if let Some(f) = failure {
            download_failures += 1;
            first_failure.get_or_insert(f);
        }
        if (i + 1) / 250 != i / 250 {
            eprintln!("  {} uploads", i + 1);
        }
    }
    Ok(LagResult {
        uploads,
        lag_ms,
        ack_ms,
        serial_surprises: surprises,
        download_failures,
        first_download_failure: first_failure,
        status_rtt_replica_ms: status_rtt,
    })
}

/// Upload `i` of the `uploads` that prepare a catch-up: `big` of them,
/// evenly spread, carry `big_kib` KiB of random bytes; they are spread over
/// `projects` projects. The same `i` gives the same bytes, so that another
/// server (devpi) can be given the very same data set.
pub fn catch_up_wheel(
    i: usize,
    uploads: usize,
    big: usize,
    projects: usize,
    big_kib: usize,
) -> Artifact {
    let is_big = i * big / uploads != (i + 1) * big / uploads;
    let project = format!("bench-cu-{}", i % projects);
    let version = format!("1.{}.0", i / projects);
    let mut spec = WheelSpec::new(&project, &version);
    if is_big {
        spec = spec.padding(big_kib * 1024, 1000 + i as u64);
    }
    spec.build()
}

/// Uploads until the primary has `args.events` events, `args.big_files` of
/// them with a big random payload, spread over `args.projects` projects.
pub async fn prepare(
    primary: &Hoard,
    replica1: &Hoard,
    poll: &reqwest::Client,
    args: &ReplicationArgs,
) -> Result<Prep> {
    let serial = status_u64(&primary.status().await?, "applied_serial")?;
    let uploads = args.events.saturating_sub(serial) as usize;
    let big = args.big_files.min(uploads);
    eprintln!(
        "catch-up preparation: {uploads} uploads ({big} of {} KiB) with {} at a time",
        args.big_kib, args.prep_concurrency
    );
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let url = format!("http://{}/pypi/", primary.addr);
    for _ in 0..args.prep_concurrency.max(1) {
        let next = next.clone();
        let bytes = bytes.clone();
        let client = primary.client.clone();
        let token = primary.token.clone();
        let url = url.clone();
        let (projects, big_kib) = (args.projects.max(1), args.big_kib);
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= uploads {
                    return Ok::<(), anyhow::Error>(());
                }
                let w = catch_up_wheel(i, uploads, big, projects, big_kib);
                bytes.fetch_add(w.bytes.len(), Ordering::Relaxed);
                servers::upload(&client, &url, "__token__", &token, &w).await?;
                if (i + 1) / 1000 != i / 1000 {
                    eprintln!("  {} uploads", i + 1);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("upload task")??;
    }
    let elapsed = t0.elapsed();
    let serial = status_u64(&primary.status().await?, "applied_serial")?;
    wait_applied(poll, replica1.addr, serial).await?;
    Ok(Prep {
        uploads,
        big,
        elapsed,
        bytes: bytes.load(Ordering::Relaxed) as u64,
        replica1_caught_up_after: t0.elapsed(),
    })
}

pub async fn measure_catch_up(
    common: &Common,
    args: &ReplicationArgs,
    hoard_bin: &Path,
    primary: &Hoard,
    dir: &Path,
    poll: &reqwest::Client,
) -> Result<CatchUp> {
    let p_status = primary.status().await?;
    let target = status_u64(&p_status, "applied_serial")?;
    let digest = p_status["digest"].clone();
    let (blob_bytes, blob_files) = dir_size(&primary.data_dir.join("blobs"));
    eprintln!(
        "catch-up: a fresh replica, {target} events and {blob_files} blobs ({:.2} GiB)",
        blob_bytes as f64 / (1u64 << 30) as f64
    );
    let sync_before = sync_disks()?;

    let t0 = Instant::now();
    let primary_cpu0 = cpu_seconds_tree(primary.proc.pid());
    let mut replica = Hoard::spawn_node(
        hoard_bin,
        &NodeSpec {
            id: "replica-2",
            dir: &dir.join("replica-2"),
            extra_toml: &replica_toml(primary.grpc, args.fetch_concurrency),
            token_repo: None,
            env: &[],
        },
    )?;
    let rpid = replica.proc.pid();
    let ppid = primary.proc.pid();
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        let every = Duration::from_millis(args.sample_ms.max(10));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?;
        let status_url = format!("http://{}/+status", replica.addr);
        tokio::spawn(async move {
            let mut last_status = Instant::now() - Duration::from_secs(1);
            while !stop.load(Ordering::Relaxed) {
                let mut s = Sample {
                    t: t0.elapsed().as_secs_f64(),
                    ..Sample::default()
                };
                if let Some((rss, hwm)) = memory_kib(rpid) {
                    (s.replica_rss, s.replica_hwm) = (rss, hwm);
                }
                s.primary_rss = memory_kib(ppid).map_or(0, |m| m.0);
                // Progress from /+status, at most twice a second.
                if last_status.elapsed() >= Duration::from_millis(500) {
                    last_status = Instant::now();
                    if let Ok(r) = client.get(&status_url).send().await {
                        if let Ok(v) = r.json::<serde_json::Value>().await {
                            s.applied = v["applied_serial"].as_u64();
                            s.fetched = v["blob_bytes_fetched"].as_u64();
                        }
                    }
                }
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                tokio::time::sleep(every).await;
            }
        })
    };
    replica.proc.wait_ready(replica.addr, "/+status").await?;
    let ready_s = t0.elapsed().as_secs_f64();
    let (status, done) = wait_applied(poll, replica.addr, target).await?;
    let done_s = done.duration_since(t0).as_secs_f64();
    let replica_cpu = cpu_seconds_tree(rpid);
    let primary_cpu = cpu_seconds_tree(ppid) - primary_cpu0;
    let digest_ok = status["digest"] == digest && status_u64(&status, "applied_serial")? == target;
    eprintln!(
        "  caught up in {done_s:.2} s (digest {})",
        if digest_ok { "matches" } else { "DIFFERS" }
    );
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.context("sampler task")?;
    let (idle_rss, idle_hwm) = memory_kib(rpid).unwrap_or_default();
    let fetched_bytes = status_u64(&replica.status().await?, "blob_bytes_fetched").unwrap_or(0);
    let replica_data_bytes = dir_size(&replica.data_dir).0;
    let primary_data_bytes = dir_size(&primary.data_dir).0;
    drop(replica);
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));

    // The baseline: copy the primary's blob dir on the same disk.
    eprintln!("baseline: cp -a of the primary's blob dir, then sync");
    sync_disks()?;
    let copy = dir.join("cp-baseline");
    let t1 = Instant::now();
    let st = Command::new("cp")
        .arg("-a")
        .arg(primary.data_dir.join("blobs"))
        .arg(&copy)
        .status()
        .context("run cp -a")?;
    if !st.success() {
        bail!("cp -a failed: {st}");
    }
    let cp_s = t1.elapsed().as_secs_f64();
    sync_disks()?;
    let cp_sync_s = t1.elapsed().as_secs_f64();
    let cp_bytes = dir_size(&copy).0;
    if !common.keep {
        let _ = std::fs::remove_dir_all(&copy);
    }
    Ok(CatchUp {
        events: target,
        blob_bytes,
        blob_files,
        ready_s,
        done_s,
        digest_ok,
        fetched_bytes,
        replica_cpu_s: replica_cpu,
        primary_cpu_s: primary_cpu,
        samples,
        idle_rss,
        idle_hwm,
        replica_data_bytes,
        primary_data_bytes,
        sync_before_s: sync_before.as_secs_f64(),
        cp_s,
        cp_sync_s,
        cp_bytes,
    })
}

#[allow(clippy::too_many_arguments)]
fn markdown(
    common: &Common,
    args: &ReplicationArgs,
    hoard_bin: &Path,
    lag: Option<&LagResult>,
    prep: Option<&Prep>,
    cu: Option<&CatchUp>,
    mem: &[MemPoint],
    notes: &[String],
) -> String {
    let _ = common;
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# hoard replication benchmark, {}\n", now_utc());
    let _ = writeln!(w, "## Summary\n");
    if let Some(l) = lag {
        let mut v = l.lag_ms.clone();
        v.sort_by(f64::total_cmp);
        let mut a = l.ack_ms.clone();
        a.sort_by(f64::total_cmp);
        let rtt = quantile(&l.status_rtt_replica_ms, 0.5);
        let _ = writeln!(
            w,
            "- **lag** (upload acknowledged by the primary → serial applied on a replica), {} sequential uploads: p50 **{} ms**, p90 {} ms, p99 **{} ms**, max {} ms (the upload itself: p50 {} ms, p99 {} ms; a `GET /+status` round trip on the replica, the floor of any observation: p50 {} ms)",
            l.uploads,
            fmt_ms(quantile(&v, 0.5)),
            fmt_ms(quantile(&v, 0.9)),
            fmt_ms(quantile(&v, 0.99)),
            fmt_ms(quantile(&v, 1.0)),
            fmt_ms(quantile(&a, 0.5)),
            fmt_ms(quantile(&a, 0.99)),
            fmt_ms(rtt),
        );
    }
    if let Some(c) = cu {
        let mb = c.blob_bytes as f64 / 1e6;
        let _ = writeln!(
            w,
            "- **catch-up** of a fresh replica: {} events and {} blobs ({:.0} MB) in **{:.1} s** = **{:.0} events/s**, **{:.0} MB/s**; digest {}. Baseline, same disk, same run: `cp -a` of the primary's blob dir {:.1} s ({:.0} MB/s), `cp -a` + `sync` {:.1} s ({:.0} MB/s): the catch-up runs at **{:.2}×** the speed of `cp -a` + `sync` ({:.2}× `cp -a` alone)",
            c.events,
            c.blob_files,
            mb,
            c.done_s,
            c.events as f64 / c.done_s,
            mb / c.done_s,
            if c.digest_ok { "matches the primary's" } else { "**differs** from the primary's" },
            c.cp_s,
            c.cp_bytes as f64 / 1e6 / c.cp_s,
            c.cp_sync_s,
            c.cp_bytes as f64 / 1e6 / c.cp_sync_s,
            c.cp_sync_s / c.done_s,
            c.cp_s / c.done_s,
        );
        let peak = c.samples.iter().map(|s| s.replica_rss).max().unwrap_or(0);
        let primary_peak = c.samples.iter().map(|s| s.primary_rss).max().unwrap_or(0);
        let _ = writeln!(
            w,
            "- **replica memory**: during the catch-up, peak VmRSS {} MiB (VmHWM {} MiB at the end); {} s after it, VmRSS {} MiB; the primary serving it peaked at VmRSS {} MiB (table below)",
            mib(peak),
            mib(c.samples.last().map_or(0, |s| s.replica_hwm)),
            args.idle_secs,
            mib(c.idle_rss),
            mib(primary_peak),
        );
    }

    if let Some(l) = lag {
        let mut v = l.lag_ms.clone();
        v.sort_by(f64::total_cmp);
        let _ = writeln!(w, "\n## Lag\n");
        let _ = writeln!(
            w,
            "{} wheels of `{LAG_PROJECT}` (about 1 KB each) uploaded one at a time to the primary, with replica-1 following it (`fetch_concurrency = {}`). Before each upload, a `GET /+status` with `X-Hoard-Min-Serial: S` (S = the serial this upload will get) is already waiting on the replica; the lag is from the end of the upload's response to the replica's answer. A negative lag means the replica answered before the primary's response reached the client.\n",
            l.uploads, args.fetch_concurrency
        );
        let _ = writeln!(w, "| | min | p50 | p90 | p99 | max |");
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|");
        let row = |w: &mut String, name: &str, v: &[f64]| w.push_str(&quantiles_row(name, v));
        row(w, "lag: ack → applied on the replica (ms)", &v);
        let mut a = l.ack_ms.clone();
        a.sort_by(f64::total_cmp);
        row(w, "upload, request → acknowledgement (ms)", &a);
        row(
            w,
            "`GET /+status` round trip on the replica, 200 in a row (ms)",
            &l.status_rtt_replica_ms,
        );
        let negative = v.iter().filter(|x| **x <= 0.0).count();
        let _ = writeln!(
            w,
            "\n- lag ≤ 0 (the replica had applied the serial before the client had the primary's answer): {negative} of {}",
            l.uploads
        );
        let _ = writeln!(
            w,
            "- downloads of the new file from the replica, right after it applied the serial: {} failed of {}{}",
            l.download_failures,
            l.uploads,
            l.first_download_failure
                .as_ref()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        );
        if l.serial_surprises > 0 {
            let _ = writeln!(
                w,
                "- {} uploads got another serial than the next one (their sample includes one more round trip)",
                l.serial_surprises
            );
        }
    }

    if let (Some(p), Some(c)) = (prep, cu) {
        let _ = writeln!(w, "\n## Catch-up\n");
        let _ = writeln!(
            w,
            "Preparation (not a benchmark): {} uploads to the primary, {} at a time, spread over {} projects; {} of them carry a {} KiB random payload (stored); {:.2} GB sent in {:.1} s ({:.0} uploads/s), with replica-1 following live (it had applied everything {:.1} s after the first upload). Then `sync` ({:.1} s), replica-1 stopped, and a fresh replica (replica-2, empty data dir, `fetch_concurrency = {}`) started, following the primary.\n",
            p.uploads,
            args.prep_concurrency,
            args.projects,
            p.big,
            args.big_kib,
            p.bytes as f64 / 1e9,
            p.elapsed.as_secs_f64(),
            p.uploads as f64 / p.elapsed.as_secs_f64(),
            p.replica1_caught_up_after.as_secs_f64(),
            c.sync_before_s,
            args.fetch_concurrency,
        );
        let _ = writeln!(w, "| | value |");
        let _ = writeln!(w, "|---|--:|");
        let _ = writeln!(w, "| events (the primary's serial) | {} |", c.events);
        let _ = writeln!(
            w,
            "| blobs on the primary | {} files, {} bytes |",
            c.blob_files, c.blob_bytes
        );
        let _ = writeln!(
            w,
            "| replica process start → `/+status` answers | {:.2} s |",
            c.ready_s
        );
        let _ = writeln!(
            w,
            "| replica process start → applied serial = {} | **{:.2} s** |",
            c.events, c.done_s
        );
        let _ = writeln!(w, "| events/s | {:.0} |", c.events as f64 / c.done_s);
        let _ = writeln!(
            w,
            "| MB/s (blob bytes / catch-up time) | {:.0} |",
            c.blob_bytes as f64 / 1e6 / c.done_s
        );
        let _ = writeln!(
            w,
            "| digest equal to the primary's | {} |",
            if c.digest_ok { "yes" } else { "**no**" }
        );
        let _ = writeln!(
            w,
            "| bytes fetched (`blob_bytes_fetched`) | {} |",
            c.fetched_bytes
        );
        let _ = writeln!(
            w,
            "| CPU: replica (whole life) / primary (during the catch-up) | {:.1} s / {:.1} s |",
            c.replica_cpu_s, c.primary_cpu_s
        );
        let _ = writeln!(
            w,
            "| data dir size: replica / primary | {:.0} MB / {:.0} MB |",
            c.replica_data_bytes as f64 / 1e6,
            c.primary_data_bytes as f64 / 1e6
        );
        let _ = writeln!(
            w,
            "| baseline `cp -a blobs` (same disk) | {:.2} s, {:.0} MB/s |",
            c.cp_s,
            c.cp_bytes as f64 / 1e6 / c.cp_s
        );
        let _ = writeln!(
            w,
            "| baseline `cp -a blobs` + `sync` | {:.2} s, {:.0} MB/s |",
            c.cp_sync_s,
            c.cp_bytes as f64 / 1e6 / c.cp_sync_s
        );
        let _ = writeln!(
            w,
            "\nThe baseline copies the files only (no hashing, no index, one fsync at the end); the replica fetches every blob over gRPC, checks its sha256, fsyncs it and its directory, and applies and flushes the events. Both read the primary's blobs from the page cache (written minutes before).\n"
        );
        let _ = writeln!(
            w,
            "Progress of the fresh replica (from its `/+status` and /proc):\n"
        );
        let _ = writeln!(
            w,
            "| t (s) | applied serial | MB fetched | replica VmRSS (MiB) | replica VmHWM (MiB) | primary VmRSS (MiB) |"
        );
        let _ = writeln!(w, "|--:|--:|--:|--:|--:|--:|");
        let with_status: Vec<&Sample> = c.samples.iter().filter(|s| s.applied.is_some()).collect();
        let step = (with_status.len() / 15).max(1);
        for (i, s) in with_status.iter().enumerate() {
            if i % step != 0 && i + 1 != with_status.len() {
                continue;
            }
            let _ = writeln!(
                w,
                "| {:.1} | {} | {:.0} | {} | {} | {} |",
                s.t,
                s.applied.unwrap_or(0),
                s.fetched.unwrap_or(0) as f64 / 1e6,
                mib(s.replica_rss),
                mib(s.replica_hwm),
                mib(s.primary_rss)
            );
        }
    }

    let _ = writeln!(w, "\n## Memory (VmRSS and VmHWM from /proc/PID/status)\n");
    let _ = writeln!(w, "| process | when | VmRSS (MiB) | VmHWM (MiB) |");
    let _ = writeln!(w, "|---|---|--:|--:|");
    for m in mem {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            m.process,
            m.when,
            mib(m.rss_kib),
            mib(m.hwm_kib)
        );
    }
    if let Some(c) = cu {
        let during: Vec<&Sample> = c
            .samples
            .iter()
            .filter(|s| s.t <= c.done_s && s.replica_rss > 0)
            .collect();
        let peak = during.iter().map(|s| s.replica_rss).max().unwrap_or(0);
        let mut rss: Vec<f64> = during.iter().map(|s| s.replica_rss as f64).collect();
        rss.sort_by(f64::total_cmp);
        let _ = writeln!(
            w,
            "| replica-2 (fresh) | during the catch-up ({} samples every {} ms): median / peak VmRSS | {} / {} | {} |",
            during.len(),
            args.sample_ms,
            mib(quantile(&rss, 0.5) as u64),
            mib(peak),
            mib(during.last().map_or(0, |s| s.replica_hwm))
        );
        let _ = writeln!(
            w,
            "| replica-2 (fresh) | {} s after catching up | {} | {} |",
            args.idle_secs,
            mib(c.idle_rss),
            mib(c.idle_hwm)
        );
        let ppeak = c.samples.iter().map(|s| s.primary_rss).max().unwrap_or(0);
        let _ = writeln!(
            w,
            "| primary | peak VmRSS while serving the catch-up | {} | |",
            mib(ppeak)
        );
    }

    let _ = writeln!(w, "\n## How this was run\n");
    let _ = write!(
        w,
        "{}",
        how_run(&command_line(), &git_description(), hoard_bin)
    );
    let _ = writeln!(
        w,
        "- nodes: `hoard serve` processes on loopback ports, each with its own data dir in one temp dir on the same disk; replicas with `role = \"replica\"`, `upstreams = [the primary's gRPC address]`, `fetch_concurrency = {}`; uploads with twine's legacy API; hoard logs at `info`",
        args.fetch_concurrency
    );
    if !notes.is_empty() {
        let _ = writeln!(w, "\n## Notes\n");
        for n in notes {
            let _ = writeln!(w, "- {n}");
        }
    }
    s
}

/// A markdown table row: `name`, then min, p50, p90, p99 and max of the
/// sorted values `v` (ms).
pub fn quantiles_row(name: &str, v: &[f64]) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} |\n",
        fmt_ms(quantile(v, 0.0)),
        fmt_ms(quantile(v, 0.5)),
        fmt_ms(quantile(v, 0.9)),
        fmt_ms(quantile(v, 0.99)),
        fmt_ms(quantile(v, 1.0))
    )
}

fn fmt_ms(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}
