//! `hoard-bench scale`: how hoard behaves as its index grows, figure 8 of
//! the performance issue. For each size (1k → 10k → 100k → 500k projects
//! of F files each, in one hosted PyPI repository):
//!
//! 1. The index is made synthetically, straight into the stopped
//!    one-voter primary's store, the way `hoard import --data-dir` writes
//!    (`Index::apply_batch`: thousands of `FileAdded` events per
//!    transaction, one flush each). Real wheels for millions of files would
//!    take hours, so every file's record names one of a few tiny real
//!    wheels in the blob store (content-addressed: many files share a
//!    blob). The sizes nest, so one data dir grows from size to size.
//! 2. The primary starts on it, and a fresh replica (empty data dir)
//!    follows it: the time until the replica has applied the primary's
//!    serial is the catch-up.
//! 3. On the replica: VmRSS once settled; project pages of random
//!    projects, HTML and PEP 691 JSON, each project asked once (the page is
//!    rendered from the index: what a resolver sees first) and a set of
//!    projects asked again and again with the load generator (the page
//!    cache); the root page's time to first byte and total, with and
//!    without gzip; VmRSS and VmHWM under that load.
//! 4. The data dirs' size per file, the index and the blobs apart.
//!
//! The targets of the issue: project-page latency at the largest size
//! within 1.5× of 1k's; an idle replica with 10k projects under 64 MiB.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::Args;
use hoard_core::{Change, Event, FileRecord, RepoName, Sha256};
use hoard_store::{BlobStore, Index, StagedBlob};
use hoard_testkit::WheelSpec;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;

use crate::load::{self, Measured, Plan, Target};
use crate::plots::{self, Chart, Mark, Series};
use crate::procs::memory_kib;
use crate::replication::{replica_toml, status_u64, wait_applied};
use crate::report::{fmt_ms, how_run, now_utc};
use crate::servers::{Hoard, NodeSpec, HTML_ACCEPT, JSON_ACCEPT};
use crate::{command_line, git_description, Common};

/// The hosted repository of `hoard serve`'s default configuration.
const HOSTED: &str = "pypi-local";
/// Project names are `scale-0000042`: one width, so that every project's
/// pages have the same length.
const PREFIX: &str = "scale";
/// Distinct blobs the files' records point at (tiny real wheels).
const BLOBS: usize = 8;
/// The actor of the generated events.
const ACTOR: &str = "bench-scale";
/// The targets.
const FLAT_TARGET: f64 = 1.5;
const IDLE_RSS_TARGET_MIB: f64 = 64.0;

#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Sizes 1,000 and 10,000 only, with fewer requests (under 2 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Index sizes in projects, ascending (default 1000,10000,100000,500000;
    /// with --quick 1000,10000).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Files (versions) per project, for the first `--full-projects`.
    #[arg(long, default_value_t = 10)]
    pub files_per_project: usize,
    /// Projects that get `--files-per-project` files; the projects beyond
    /// them get `--top-files-per-project`. On 2 cores, the generator
    /// applies about 5,000 events/s at 500k projects and a fresh replica
    /// catches up at about 6,000, so 500k × 10 files (5M events) would take
    /// half an hour; the page latencies are measured on projects of the
    /// first kind at every size, so that they compare the same pages.
    #[arg(long, default_value_t = 10_000)]
    pub full_projects: usize,
    /// Files per project beyond `--full-projects`.
    #[arg(long, default_value_t = 1)]
    pub top_files_per_project: usize,
    /// Events per transaction (one flush each) while generating.
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    /// Project pages asked once each, per format (default 2000; --quick 600).
    #[arg(long)]
    pub requests: Option<usize>,
    /// Requests in flight for the project pages.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds of the load generator per format, on a fixed set of
    /// projects asked again and again (default 4; --quick 2).
    #[arg(long)]
    pub load_secs: Option<f64>,
    /// Samples of the root page per encoding.
    #[arg(long, default_value_t = 5)]
    pub root_samples: usize,
    /// Seconds the replica settles after its catch-up before its idle RSS
    /// is read.
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
    /// `fetch_concurrency` of the replica.
    #[arg(long, default_value_t = 8)]
    pub fetch_concurrency: usize,
}

impl ScaleArgs {
    fn sizes(&self) -> Vec<usize> {
        let mut s = match &self.sizes {
            Some(s) => s.clone(),
            None if self.quick => vec![1_000, 10_000],
            None => vec![1_000, 10_000, 100_000, 500_000],
        };
        s.retain(|n| *n > 0);
        s.sort_unstable();
        s.dedup();
        s
    }

    /// Files (versions) of project `i`.
    fn files_of(&self, i: usize) -> usize {
        if i < self.full_projects {
            self.files_per_project
        } else {
            self.top_files_per_project.max(1)
        }
    }

    /// Files in an index of `projects` projects.
    fn files_in(&self, projects: usize) -> u64 {
        let full = projects.min(self.full_projects);
        (full * self.files_per_project + (projects - full) * self.top_files_per_project.max(1))
            as u64
    }

    /// Projects the pages are asked of: those with `files_per_project`.
    fn page_projects(&self, projects: usize) -> usize {
        projects.min(self.full_projects).max(1)
    }

    fn requests(&self) -> usize {
        self.requests.unwrap_or(if self.quick { 600 } else { 2000 })
    }

    fn load_secs(&self) -> f64 {
        self.load_secs.unwrap_or(if self.quick { 2.0 } else { 4.0 })
    }
}

/// Latency of one kind of request, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub req_per_s: f64,
}

impl Latency {
    fn of_sorted_us(sorted: &[u32], window: Duration) -> Latency {
        let q = |q: f64| {
            if sorted.is_empty() {
                return f64::NAN;
            }
            f64::from(sorted[((sorted.len() - 1) as f64 * q).round() as usize]) / 1000.0
        };
        Latency {
            requests: sorted.len() as u64,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_ms: q(1.0),
            req_per_s: sorted.len() as f64 / window.as_secs_f64().max(1e-9),
        }
    }

    fn of_measured(m: &Measured) -> Latency {
        Latency::of_sorted_us(&m.latencies_us, m.window)
    }
}

/// The root page, one encoding: medians of the samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct RootPage {
    pub samples: usize,
    /// Bytes as sent (compressed when gzip).
    pub bytes: u64,
    /// Request sent → response headers.
    pub headers_ms: f64,
    /// Request sent → first body bytes.
    pub ttfb_ms: f64,
    /// Request sent → last body bytes.
    pub total_ms: f64,
    /// Whether the node answered `Content-Encoding: gzip`.
    pub gzip: bool,
    /// The first sample alone: the page rendered (plain) or compressed
    /// (gzip) for it, before the page cache has it.
    pub first_ttfb_ms: f64,
    pub first_total_ms: f64,
}

/// Apparent and allocated bytes of a directory tree.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskUse {
    pub bytes: u64,
    pub allocated: u64,
    pub files: u64,
}

/// A node's data dir: the index (sled), the blobs, and all of it.
#[derive(Clone, Copy, Debug, Default)]
pub struct DataDir {
    pub index: DiskUse,
    pub blobs: DiskUse,
    pub total: DiskUse,
}

/// Everything measured at one size.
#[derive(Clone, Debug, Default)]
pub struct SizeFigures {
    pub projects: usize,
    pub files: u64,
    /// Events (the primary's applied serial).
    pub events: u64,
    /// Generating this size's new files (from the size before it).
    pub generated_files: u64,
    pub generate_s: f64,
    /// Primary process start → `/+status` answers.
    pub primary_start_s: f64,
    /// Replica process start → `/+status` answers.
    pub replica_ready_s: f64,
    /// Replica process start → applied serial = the primary's.
    pub catch_up_s: f64,
    pub digest_ok: bool,
    /// Replica VmRSS, `idle_secs` after its catch-up.
    pub idle_rss_kib: u64,
    /// Replica VmHWM at that moment (the catch-up's peak).
    pub catch_up_hwm_kib: u64,
    /// The primary's VmRSS at the same moment: it opened the same index
    /// but did not write it since it started.
    pub primary_idle_rss_kib: u64,
    /// Highest VmRSS sampled on the replica while the pages were asked.
    pub load_rss_kib: u64,
    /// Replica VmHWM at the end.
    pub hwm_kib: u64,
    /// Each of `requests` random projects asked once (rendered).
    pub page_once_html: Latency,
    pub page_once_json: Latency,
    /// A fixed set of projects asked again and again (load generator).
    pub page_repeat_html: Latency,
    pub page_repeat_json: Latency,
    pub root_plain: RootPage,
    pub root_gzip: RootPage,
    pub primary_dir: DataDir,
    pub replica_dir: DataDir,
}

impl SizeFigures {
    pub fn generate_files_per_s(&self) -> f64 {
        self.generated_files as f64 / self.generate_s.max(1e-9)
    }

    pub fn catch_up_events_per_s(&self) -> f64 {
        self.events as f64 / self.catch_up_s.max(1e-9)
    }

    /// Index bytes (on disk, allocated) per file, on the primary.
    pub fn index_bytes_per_file(&self) -> f64 {
        self.primary_dir.index.allocated as f64 / (self.files.max(1)) as f64
    }

    pub fn replica_index_bytes_per_file(&self) -> f64 {
        self.replica_dir.index.allocated as f64 / (self.files.max(1)) as f64
    }
}

/// The results of one `scale` run, for the report and for the suite.
#[derive(Clone, Debug, Default)]
pub struct ScaleFigures {
    pub files_per_project: usize,
    pub full_projects: usize,
    pub top_files_per_project: usize,
    pub concurrency: usize,
    pub requests: usize,
    pub load_secs: f64,
    pub sizes: Vec<SizeFigures>,
    pub elapsed_s: f64,
    pub notes: Vec<String>,
}

impl ScaleFigures {
    /// Project-page p50 at the largest size over that at the smallest,
    /// per kind of request: (asked once HTML, JSON; repeated HTML, JSON).
    pub fn flatness(&self) -> Option<[f64; 4]> {
        let (a, b) = (self.sizes.first()?, self.sizes.last()?);
        Some([
            b.page_once_html.p50_ms / a.page_once_html.p50_ms,
            b.page_once_json.p50_ms / a.page_once_json.p50_ms,
            b.page_repeat_html.p50_ms / a.page_repeat_html.p50_ms,
            b.page_repeat_json.p50_ms / a.page_repeat_json.p50_ms,
        ])
    }

    /// Idle replica RSS at 10,000 projects, in MiB, if that size ran.
    pub fn idle_rss_10k_mib(&self) -> Option<f64> {
        self.sizes
            .iter()
            .find(|s| s.projects == 10_000)
            .map(|s| s.idle_rss_kib as f64 / 1024.0)
    }
}

/// `hoard-bench scale`: runs, writes the report and the plot.
pub async fn command(common: &Common, args: &ScaleArgs, hoard_bin: PathBuf) -> Result<()> {
    let figures = run(common, args, &hoard_bin).await?;
    let mut md = markdown(&figures, &hoard_bin);
    if !common.no_write {
        let out_dir = common
            .out_dir
            .clone()
            .unwrap_or_else(|| hoard_testkit::tools::workspace_root().join("bench/results"));
        std::fs::create_dir_all(&out_dir)?;
        let name = format!("{}-scale.png", crate::report::today());
        match plot(&figures, &out_dir.join(&name)) {
            Ok(()) => {
                let _ = writeln!(md, "\n![the scale curves]({name})");
            }
            Err(e) => eprintln!("scale: no plot: {e:#}"),
        }
    }
    common.publish(&md, "scale")
}

/// Measures every size; the figures, for a report or the suite.
pub async fn run(common: &Common, args: &ScaleArgs, hoard_bin: &Path) -> Result<ScaleFigures> {
    let started = Instant::now();
    let sizes = args.sizes();
    if sizes.is_empty() {
        bail!("no sizes to measure");
    }
    if args.files_per_project == 0 {
        bail!("--files-per-project must be at least 1");
    }
    let work = common.work_dir()?;
    let dir = work.path().to_path_buf();
    let primary_dir = dir.join("primary");
    let mut figures = ScaleFigures {
        files_per_project: args.files_per_project,
        full_projects: args.full_projects,
        top_files_per_project: args.top_files_per_project.max(1),
        concurrency: args.concurrency,
        requests: args.requests(),
        load_secs: args.load_secs(),
        ..ScaleFigures::default()
    };
    let poll = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;

    // A first start makes the data dir of a one-voter primary with the
    // default repositories and its Raft membership; the generator then
    // writes into it stopped, as an offline import does.
    eprintln!("scale: bootstrapping the primary");
    drop(Hoard::start_node(hoard_bin, &node_spec(&primary_dir, "primary", "")).await?);
    let data_dir = primary_dir.join("hoard-data");
    let blobs = blob_set(&data_dir).await?;

    let mut have = 0usize;
    for &projects in &sizes {
        eprintln!(
            "scale: {projects} projects, {} files",
            args.files_in(projects)
        );
        let t = Instant::now();
        let (from, to, a) = (have, projects, args.clone());
        let (data, set) = (data_dir.clone(), blobs.clone());
        let generated = tokio::task::spawn_blocking(move || generate(&data, &set, from, to, &a))
            .await
            .context("the generator thread")??;
        let generate_s = t.elapsed().as_secs_f64();
        have = projects;
        eprintln!(
            "  generated {generated} files in {generate_s:.1} s ({:.0} files/s)",
            generated as f64 / generate_s.max(1e-9)
        );
        fsck(hoard_bin, &data_dir, projects, &mut figures.notes)?;
        let mut s = measure_size(args, hoard_bin, &primary_dir, &dir, projects, &poll).await?;
        s.generated_files = generated;
        s.generate_s = generate_s;
        if !s.digest_ok {
            figures.notes.push(format!(
                "{projects} projects: the fresh replica's digest differs from the primary's"
            ));
        }
        figures.sizes.push(s);
    }
    figures.elapsed_s = started.elapsed().as_secs_f64();
    drop(work);
    Ok(figures)
}

fn node_spec<'a>(dir: &'a Path, id: &'a str, extra_toml: &'a str) -> NodeSpec<'a> {
    NodeSpec {
        id,
        dir,
        extra_toml,
        token_repo: None,
        env: &[],
    }
}

/// One of the few real blobs that every file's record points at.
#[derive(Clone)]
struct BlobRef {
    sha256: Sha256,
    size: u64,
    metadata: Sha256,
}

/// Stores `BLOBS` tiny real wheels and their METADATA in the stopped
/// primary's blob store.
async fn blob_set(data_dir: &Path) -> Result<Arc<Vec<BlobRef>>> {
    let store = BlobStore::open(data_dir)?;
    let mut staged: Vec<StagedBlob> = Vec::new();
    let mut set = Vec::new();
    for k in 0..BLOBS {
        let w = WheelSpec::new("scale-blob", &format!("1.0.{k}")).build();
        let file = store.stage_bytes_unsynced(&w.bytes)?;
        let meta = store.stage_bytes_unsynced(w.metadata.as_bytes())?;
        set.push(BlobRef {
            sha256: file.digests.sha256,
            size: w.bytes.len() as u64,
            metadata: meta.digests.sha256,
        });
        staged.push(file);
        staged.push(meta);
    }
    store.commit_batch(staged).await?;
    Ok(Arc::new(set))
}

fn project_name(i: usize) -> String {
    format!("{PREFIX}-{i:07}")
}

/// Applies projects `from..to` to the stopped node's index in
/// transactions of `--batch` events (one flush each), the events made on
/// another thread meanwhile. Returns the number of files added.
fn generate(
    data_dir: &Path,
    blobs: &[BlobRef],
    from: usize,
    to: usize,
    args: &ScaleArgs,
) -> Result<u64> {
    let batch = args.batch.max(1);
    let index = Index::open(&data_dir.join("index"))
        .with_context(|| format!("open the index of {}", data_dir.display()))?;
    let repo: RepoName = HOSTED.parse()?;
    if index.repo(&repo)?.is_none() {
        bail!("{} has no repository {HOSTED}", data_dir.display());
    }
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
    let total = args.files_in(to) - args.files_in(from);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(2);
    std::thread::scope(|scope| -> Result<u64> {
        scope.spawn(move || {
            let mut events = Vec::with_capacity(batch);
            for p in from..to {
                let project = project_name(p);
                let dist = project.replace('-', "_");
                for v in 0..args.files_of(p) {
                    let b = &blobs[(p + v) % blobs.len()];
                    let version = format!("1.0.{v}");
                    events.push(Event {
                        actor: ACTOR.to_owned(),
                        time_us: now,
                        user: None,
                        node: None,
                        change: Change::FileAdded {
                            repo: repo.clone(),
                            project: project.clone(),
                            display_name: project.clone(),
                            file: FileRecord {
                                filename: format!("{dist}-{version}-py3-none-any.whl"),
                                version,
                                sha256: b.sha256,
                                size: b.size,
                                packagetype: "bdist_wheel".to_owned(),
                                requires_python: None,
                                core_metadata: Some(b.metadata),
                            },
                            upload_time_us: None,
                        },
                    });
                    if events.len() >= batch {
                        let full = std::mem::replace(&mut events, Vec::with_capacity(batch));
                        if tx.send(full).is_err() {
                            return; // the applier stopped: its error is reported
                        }
                    }
                }
            }
            if !events.is_empty() {
                let _ = tx.send(events);
            }
        });
        let mut done = 0u64;
        let mut last_report = Instant::now();
        for events in rx {
            index.apply_batch(&events)?;
            index.flush()?;
            done += events.len() as u64;
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!("  {done} of {total} files");
            }
        }
        Ok(done)
    })
}

/// `hoard fsck` of the generated data dir: the shared blobs and the
/// offline-written changelog must pass it.
fn fsck(hoard_bin: &Path, data_dir: &Path, projects: usize, notes: &mut Vec<String>) -> Result<()> {
    let t = Instant::now();
    let out = std::process::Command::new(hoard_bin)
        .arg("fsck")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .context("run hoard fsck")?;
    // Its verdict is on stdout; stderr has its progress (and errors).
    let verdict = if out.status.success() {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', "; ")
    } else {
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ")
    };
    notes.push(format!(
        "`hoard fsck` of the primary's data dir at {projects} projects ({:.1} s): {} — {verdict}",
        t.elapsed().as_secs_f64(),
        if out.status.success() {
            "clean"
        } else {
            "**failed**"
        },
    ));
    Ok(())
}

/// Starts the primary on the generated data dir and a fresh replica, and
/// measures them; both are stopped at the end, the replica's dir removed.
async fn measure_size(
    args: &ScaleArgs,
    hoard_bin: &Path,
    primary_dir: &Path,
    dir: &Path,
    projects: usize,
    poll: &reqwest::Client,
) -> Result<SizeFigures> {
    let mut s = SizeFigures {
        projects,
        files: args.files_in(projects),
        ..SizeFigures::default()
    };
    let t = Instant::now();
    let primary = Hoard::start_node(hoard_bin, &node_spec(primary_dir, "primary", "")).await?;
    s.primary_start_s = t.elapsed().as_secs_f64();
    let status = primary.status().await?;
    s.events = status_u64(&status, "applied_serial")?;
    let digest = status["digest"].clone();

    let replica_dir = dir.join(format!("replica-{projects}"));
    let toml = replica_toml(primary.grpc, args.fetch_concurrency);
    let t = Instant::now();
    let mut replica = Hoard::spawn_node(hoard_bin, &node_spec(&replica_dir, "replica", &toml))?;
    replica.proc.wait_ready(replica.addr, "/+status").await?;
    s.replica_ready_s = t.elapsed().as_secs_f64();
    let (rstatus, done) = wait_applied(poll, replica.addr, s.events).await?;
    s.catch_up_s = done.duration_since(t).as_secs_f64();
    s.digest_ok = rstatus["digest"] == digest;
    eprintln!(
        "  primary up in {:.1} s; replica caught up with {} events in {:.1} s",
        s.primary_start_s, s.events, s.catch_up_s
    );
    let rpid = replica.proc.pid();
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    (s.idle_rss_kib, s.catch_up_hwm_kib) = memory_kib(rpid).unwrap_or_default();
    s.primary_idle_rss_kib = memory_kib(primary.proc.pid()).map_or(0, |(rss, _)| rss);

    // Under load: VmRSS sampled all along.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new(0u64));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, _)) = memory_kib(rpid) {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = (*p).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let addr = replica.addr;
    s.root_plain = root_page(addr, false, args.root_samples).await?;
    s.root_gzip = root_page(addr, true, args.root_samples).await?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ projects as u64);
    s.page_once_html = pages_once(addr, HTML_ACCEPT, projects, args, &mut rng).await?;
    s.page_once_json = pages_once(addr, JSON_ACCEPT, projects, args, &mut rng).await?;
    s.page_repeat_html = pages_repeated(addr, HTML_ACCEPT, projects, args, &mut rng).await?;
    s.page_repeat_json = pages_repeated(addr, JSON_ACCEPT, projects, args, &mut rng).await?;
    stop.store(true, Ordering::Relaxed);
    sampler.await.context("the RSS sampler")?;
    s.load_rss_kib = *peak.lock().unwrap_or_else(|e| e.into_inner());
    s.hwm_kib = memory_kib(rpid).map_or(0, |(_, hwm)| hwm);
    eprintln!(
        "  replica: idle {:.1} MiB, under load ≤ {:.1} MiB; page p50 {} ms once, {} ms repeated (HTML)",
        s.idle_rss_kib as f64 / 1024.0,
        s.load_rss_kib as f64 / 1024.0,
        fmt_ms(s.page_once_html.p50_ms),
        fmt_ms(s.page_repeat_html.p50_ms)
    );

    // Stopped first, so that sled has written what it keeps in memory.
    let (pdata, rdata) = (primary.data_dir.clone(), replica.data_dir.clone());
    drop(replica);
    drop(primary);
    s.primary_dir = data_dir_use(&pdata);
    s.replica_dir = data_dir_use(&rdata);
    std::fs::remove_dir_all(&replica_dir)
        .with_context(|| format!("remove {}", replica_dir.display()))?;
    Ok(s)
}

/// A small xorshift generator: random projects, reproducible per size.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn project_path(i: usize) -> String {
    format!("/{HOSTED}/simple/{}/", project_name(i))
}

/// Each of `args.requests()` random projects asked once, `concurrency` at
/// a time on keep-alive connections. The load generator asks one path
/// again and again, so this loop is its own; a page asked once is
/// rendered from the index, not served from the page cache.
async fn pages_once(
    addr: std::net::SocketAddr,
    accept: &'static str,
    projects: usize,
    args: &ScaleArgs,
    rng: &mut Rng,
) -> Result<Latency> {
    let projects = args.page_projects(projects);
    let n = args.requests().min(projects);
    // Distinct projects: a partial Fisher–Yates shuffle of all of them
    // would cost memory at 500k; rejection of repeats is cheap here.
    let mut seen = std::collections::HashSet::new();
    let mut picks = Vec::with_capacity(n);
    while picks.len() < n {
        let p = rng.below(projects);
        if seen.insert(p) {
            picks.push(p);
        }
    }
    let picks = Arc::new(picks);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (picks, next) = (picks.clone(), next.clone());
        tasks.spawn(async move {
            let mut conn = crate::load::connect(addr).await?;
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&p) = picks.get(i) else {
                    return Ok::<_, anyhow::Error>(lat);
                };
                let t = Instant::now();
                get(&mut conn, addr, &project_path(p), accept, false).await?;
                let us = t.elapsed().as_micros();
                lat.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        all.extend(r.context("a page task")??);
    }
    let window = t0.elapsed();
    all.sort_unstable();
    Ok(Latency::of_sorted_us(&all, window))
}

/// The load generator on `concurrency` random projects (one connection
/// each), all in one window: the page cache's path.
async fn pages_repeated(
    addr: std::net::SocketAddr,
    accept: &'static str,
    projects: usize,
    args: &ScaleArgs,
    rng: &mut Rng,
) -> Result<Latency> {
    let projects = args.page_projects(projects);
    let mut targets = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let mut t = Target {
            addr,
            path: project_path(rng.below(projects)),
            accept: Some(accept.to_owned()),
            accept_encoding: None,
            expect_len: 0,
        };
        t.expect_len = load::probe(&t, None).await?.len;
        targets.push(t);
    }
    let plan = Plan {
        concurrency: 1,
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs_f64(args.load_secs()),
    };
    let (from, end) = load::window(plan);
    let mut runs = tokio::task::JoinSet::new();
    for t in targets {
        runs.spawn(async move { load::run(&t, plan, from, end).await });
    }
    let mut all: Option<Measured> = None;
    while let Some(r) = runs.join_next().await {
        let m = r.context("a load task")??;
        if m.errors > 0 {
            bail!(
                "{} errors on the project pages: {}",
                m.errors,
                m.first_error.unwrap_or_default()
            );
        }
        match all.as_mut() {
            // Side by side in one window, not one after the other: the
            // window is counted once.
            Some(a) => {
                let window = a.window;
                a.merge(m);
                a.window = window;
            }
            None => all = Some(m),
        }
    }
    Ok(all.map(|m| Latency::of_measured(&m)).unwrap_or_default())
}

/// The hosted repository's root page, `samples` times, one at a time.
async fn root_page(addr: std::net::SocketAddr, gzip: bool, samples: usize) -> Result<RootPage> {
    let path = format!("/{HOSTED}/simple/");
    let (mut headers, mut ttfb, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut out = RootPage {
        samples,
        ..RootPage::default()
    };
    let mut conn = crate::load::connect(addr).await?;
    for _ in 0..samples.max(1) {
        let got = get(&mut conn, addr, &path, HTML_ACCEPT, gzip).await?;
        headers.push(got.headers.as_secs_f64() * 1e3);
        ttfb.push(got.first_byte.as_secs_f64() * 1e3);
        total.push(got.total.as_secs_f64() * 1e3);
        out.gzip = got.gzip;
        out.bytes = got.bytes;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    out.first_ttfb_ms = ttfb.first().copied().unwrap_or(f64::NAN);
    out.first_total_ms = total.first().copied().unwrap_or(f64::NAN);
    out.headers_ms = median(headers);
    out.ttfb_ms = median(ttfb);
    out.total_ms = median(total);
    Ok(out)
}

/// What one `GET` took.
struct Got {
    headers: Duration,
    first_byte: Duration,
    total: Duration,
    bytes: u64,
    gzip: bool,
}

/// One `GET` that must answer 200; times from the request's start.
async fn get(
    conn: &mut SendRequest<Empty<Bytes>>,
    addr: std::net::SocketAddr,
    path: &str,
    accept: &str,
    gzip: bool,
) -> Result<Got> {
    let t = Instant::now();
    conn.ready().await.context("the connection closed")?;
    let mut req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::ACCEPT, accept);
    if gzip {
        req = req.header(http::header::ACCEPT_ENCODING, "gzip");
    }
    let resp = conn.send_request(req.body(Empty::<Bytes>::new())?).await?;
    let headers = t.elapsed();
    if resp.status() != http::StatusCode::OK {
        bail!("GET {path}: {}", resp.status());
    }
    let gzip = resp
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let mut body = resp.into_body();
    let (mut bytes, mut first_byte) = (0u64, None);
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            first_byte.get_or_insert_with(|| t.elapsed());
            bytes += d.len() as u64;
        }
    }
    let total = t.elapsed();
    Ok(Got {
        headers,
        first_byte: first_byte.unwrap_or(total),
        total,
        bytes,
        gzip,
    })
}

/// Like `du`: apparent bytes and allocated blocks of a tree.
pub(crate) fn disk_use(dir: &Path) -> DiskUse {
    let mut u = DiskUse::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    u.bytes += m.len();
                    u.allocated += m.blocks() * 512;
                    u.files += 1;
                }
                Err(_) => {}
            }
        }
    }
    u
}

fn data_dir_use(data_dir: &Path) -> DataDir {
    DataDir {
        index: disk_use(&data_dir.join("index")),
        blobs: disk_use(&data_dir.join("blobs")),
        total: disk_use(data_dir),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

fn lat_cell(l: &Latency) -> String {
    format!("{} / {}", fmt_ms(l.p50_ms), fmt_ms(l.p99_ms))
}

pub fn markdown(f: &ScaleFigures, hoard_bin: &Path) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# hoard scale benchmark, {}\n", now_utc());
    let _ = writeln!(w, "## Summary\n");
    let (first, last) = match (f.sizes.first(), f.sizes.last()) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            let _ = writeln!(w, "No size was measured.");
            return s;
        }
    };
    if let Some([oh, oj, rh, rj]) = f.flatness() {
        let worst = oh.max(oj).max(rh).max(rj);
        let _ = writeln!(
            w,
            "- **project-page latency, {} → {} projects** (target: within {FLAT_TARGET}×): p50 ratio, largest / smallest: asked once (rendered) HTML **{oh:.2}×**, JSON **{oj:.2}×**; asked again and again (page cache) HTML **{rh:.2}×**, JSON **{rj:.2}×** — {}",
            first.projects,
            last.projects,
            if worst <= FLAT_TARGET { "**met**" } else { "**not met**" }
        );
    }
    match f.idle_rss_10k_mib() {
        Some(m) => {
            let _ = writeln!(
                w,
                "- **idle replica RSS at 10,000 projects**: **{m:.1} MiB** (target: under {IDLE_RSS_TARGET_MIB} MiB: {}; {:.2}× the target)",
                if m < IDLE_RSS_TARGET_MIB { "**met**" } else { "**not met**" },
                m / IDLE_RSS_TARGET_MIB
            );
        }
        None => {
            let _ = writeln!(
                w,
                "- idle replica RSS at 10,000 projects: not measured (no such size in this run)"
            );
        }
    }
    let _ = writeln!(
        w,
        "- **data dir bytes per file** at {} files: index **{:.0} B/file** on the primary, {:.0} B/file on the replica (allocated; the blobs are shared by design here, see below)",
        last.files,
        last.index_bytes_per_file(),
        last.replica_index_bytes_per_file()
    );
    let _ = writeln!(
        w,
        "- **root page** at {} projects: {} (plain) / {} (gzip) bytes; the first request (rendered) TTFB {} ms, total {} ms; then (cached) time to first byte {} ms / {} ms (plain / gzip), total {} ms / {} ms",
        last.projects,
        human(last.root_plain.bytes),
        human(last.root_gzip.bytes),
        fmt_ms(last.root_plain.first_ttfb_ms),
        fmt_ms(last.root_plain.first_total_ms),
        fmt_ms(last.root_plain.ttfb_ms),
        fmt_ms(last.root_gzip.ttfb_ms),
        fmt_ms(last.root_plain.total_ms),
        fmt_ms(last.root_gzip.total_ms)
    );
    let _ = writeln!(
        w,
        "- **catch-up of a fresh replica** at {} events: **{:.1} s** ({:.0} events/s)",
        last.events,
        last.catch_up_s,
        last.catch_up_events_per_s()
    );
    let _ = writeln!(w, "- the whole run: {:.0} s", f.elapsed_s);

    let _ = writeln!(w, "\n## Per size\n");
    let _ = write!(w, "| | ");
    for z in &f.sizes {
        let _ = write!(w, "{} projects | ", z.projects);
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "|---|{}", "--:|".repeat(f.sizes.len()));
    let row = |w: &mut String, name: &str, cell: &dyn Fn(&SizeFigures) -> String| {
        let _ = write!(w, "| {name} | ");
        for z in &f.sizes {
            let _ = write!(w, "{} | ", cell(z));
        }
        let _ = writeln!(w);
    };
    row(w, "files (events)", &|z| {
        format!("{} ({})", z.files, z.events)
    });
    row(w, "generated: new files, s (files/s)", &|z| {
        format!(
            "{}, {:.1} s ({:.0}/s)",
            z.generated_files,
            z.generate_s,
            z.generate_files_per_s()
        )
    });
    row(w, "primary start → `/+status` (s)", &|z| {
        format!("{:.2}", z.primary_start_s)
    });
    row(w, "**fresh replica catch-up** (s)", &|z| {
        format!("**{:.1}**", z.catch_up_s)
    });
    row(w, "catch-up events/s", &|z| {
        format!("{:.0}", z.catch_up_events_per_s())
    });
    row(w, "replica digest = primary's", &|z| {
        if z.digest_ok { "yes" } else { "**no**" }.to_string()
    });
    row(
        w,
        &format!(
            "**project page, asked once, HTML** p50 / p99 (ms), {} at a time",
            f.concurrency
        ),
        &|z| format!("**{}**", lat_cell(&z.page_once_html)),
    );
    row(w, "project page, asked once, JSON p50 / p99 (ms)", &|z| {
        lat_cell(&z.page_once_json)
    });
    row(
        w,
        "project page, asked once, HTML: requests, max (ms), req/s",
        &|z| {
            let l = &z.page_once_html;
            format!("{}, {}, {:.0}", l.requests, fmt_ms(l.max_ms), l.req_per_s)
        },
    );
    row(w, "**project page, repeated, HTML** p50 / p99 (ms)", &|z| {
        format!("**{}**", lat_cell(&z.page_repeat_html))
    });
    row(w, "project page, repeated, JSON p50 / p99 (ms)", &|z| {
        lat_cell(&z.page_repeat_json)
    });
    row(
        w,
        "project page, repeated, HTML: requests, max (ms), req/s",
        &|z| {
            let l = &z.page_repeat_html;
            format!("{}, {}, {:.0}", l.requests, fmt_ms(l.max_ms), l.req_per_s)
        },
    );
    row(w, "root page bytes, plain / gzip", &|z| {
        format!(
            "{} / {}",
            human(z.root_plain.bytes),
            human(z.root_gzip.bytes)
        )
    });
    row(w, "**root page TTFB**, plain / gzip (ms)", &|z| {
        format!(
            "**{} / {}**",
            fmt_ms(z.root_plain.ttfb_ms),
            fmt_ms(z.root_gzip.ttfb_ms)
        )
    });
    row(w, "**root page total**, plain / gzip (ms)", &|z| {
        format!(
            "**{} / {}**",
            fmt_ms(z.root_plain.total_ms),
            fmt_ms(z.root_gzip.total_ms)
        )
    });
    row(
        w,
        "root page first request (not cached yet): TTFB / total, plain; gzip (ms)",
        &|z| {
            format!(
                "{} / {}; {} / {}",
                fmt_ms(z.root_plain.first_ttfb_ms),
                fmt_ms(z.root_plain.first_total_ms),
                fmt_ms(z.root_gzip.first_ttfb_ms),
                fmt_ms(z.root_gzip.first_total_ms)
            )
        },
    );
    row(w, "root page response headers, plain (ms)", &|z| {
        fmt_ms(z.root_plain.headers_ms)
    });
    row(w, "root page sent gzip when asked", &|z| {
        if z.root_gzip.gzip { "yes" } else { "no" }.to_string()
    });
    row(w, "**replica VmRSS idle** (MiB)", &|z| {
        format!("**{}**", mib(z.idle_rss_kib))
    });
    row(w, "replica VmHWM after catch-up (MiB)", &|z| {
        mib(z.catch_up_hwm_kib)
    });
    row(w, "primary VmRSS at that moment (MiB)", &|z| {
        mib(z.primary_idle_rss_kib)
    });
    row(w, "replica VmRSS under the page load, peak (MiB)", &|z| {
        mib(z.load_rss_kib)
    });
    row(w, "replica VmHWM at the end (MiB)", &|z| mib(z.hwm_kib));
    row(w, "primary index (allocated)", &|z| {
        human(z.primary_dir.index.allocated)
    });
    row(w, "**primary index bytes per file**", &|z| {
        format!("**{:.0}**", z.index_bytes_per_file())
    });
    row(w, "replica index (allocated)", &|z| {
        human(z.replica_dir.index.allocated)
    });
    row(w, "replica index bytes per file", &|z| {
        format!("{:.0}", z.replica_index_bytes_per_file())
    });
    row(w, "blobs, primary / replica (files, allocated)", &|z| {
        format!(
            "{} {} / {} {}",
            z.primary_dir.blobs.files,
            human(z.primary_dir.blobs.allocated),
            z.replica_dir.blobs.files,
            human(z.replica_dir.blobs.allocated)
        )
    });
    row(w, "whole data dir, primary / replica (allocated)", &|z| {
        format!(
            "{} / {}",
            human(z.primary_dir.total.allocated),
            human(z.replica_dir.total.allocated)
        )
    });

    let _ = writeln!(w, "\n## What was measured\n");
    let _ = writeln!(
        w,
        "- **The index.** For each size, projects `{PREFIX}-0000000` … of the hosted repository `{HOSTED}` (the default configuration's), the first {} with {} files each and the rest with {} (versions 1.0.0 …, wheels), are applied to the stopped one-voter primary's index with `Index::apply_batch`: FileAdded events, thousands per transaction, one flush each — the path of `hoard import --data-dir`. The sizes nest: each size adds its new projects to the same data dir. Every file's record (name, version, filename, sha256, size, core metadata) points at one of {BLOBS} tiny real wheels (and their METADATA) in the blob store: content-addressed, so many files share a blob, and a download returns another project's wheel. The index is what grows, as it would; the blobs are not what is measured.",
        f.full_projects, f.files_per_project, f.top_files_per_project,
    );
    if last.projects > f.full_projects && f.top_files_per_project < f.files_per_project {
        let all = last.projects as f64 * f.files_per_project as f64;
        let _ = writeln!(
            w,
            "  Why fewer files beyond the first {}: a fresh replica caught up at {:.0} events/s here (the table), so {} × {} files would take about {:.0} minutes to catch up alone, past this benchmark's 15 minutes.",
            f.full_projects,
            last.catch_up_events_per_s(),
            last.projects,
            f.files_per_project,
            all / last.catch_up_events_per_s().max(1.0) / 60.0,
        );
    }
    let _ = writeln!(
        w,
        "- **Catch-up.** The primary starts on the data dir; a replica with an empty data dir (`role = \"replica\"`, `fetch_concurrency` as given) starts; the time is from its process start to its answer to `GET /+status` with `X-Hoard-Min-Serial` = the primary's serial. It fetches each distinct blob once."
    );
    let _ = writeln!(
        w,
        "- **Project pages, on the replica.** Pages are asked of random projects among the first {} (those with {} files), at every size, so that every size serves the same pages out of a bigger index. *Asked once*: {} distinct random projects per format (or every one, if fewer), {} requests in flight on keep-alive connections (hyper); each page is rendered from the index — what a resolver's first visit costs. *Repeated*: the load generator (`load.rs`, closed loop, one keep-alive connection per project) on {} random projects at once, {:.0} s per format after a 0.5 s warm-up — the page cache's path. HTML is `Accept: text/html`, JSON `Accept: application/vnd.pypi.simple.v1+json`; no `Accept-Encoding`.",
        f.full_projects, f.files_per_project, f.requests, f.concurrency, f.concurrency, f.load_secs
    );
    let _ = writeln!(
        w,
        "- **Root page** (`/{HOSTED}/simple/`, HTML), on the replica, one request at a time, the median of {} samples (and the first one alone: rendered, not yet cached): time to the response's headers, to the first body bytes (TTFB) and to the last; plain and with `Accept-Encoding: gzip`. It is asked before the project pages.",
        first.root_plain.samples
    );
    let _ = writeln!(
        w,
        "- **Memory**: the replica's VmRSS from `/proc` after it caught up and settled (idle), and sampled every 50 ms while the root and project pages were asked (peak); VmHWM."
    );
    let _ = writeln!(
        w,
        "- **Data dirs**: a walk of `index/` (sled) and `blobs/` after both nodes stopped, allocated blocks (as `du`), divided by the files listed."
    );
    let _ = writeln!(w, "\n## How this was run\n");
    let _ = write!(
        w,
        "{}",
        how_run(&command_line(), &git_description(), hoard_bin)
    );
    let _ = writeln!(
        w,
        "- settings: files per project {} for the first {} projects, {} beyond; requests asked once per format {}, concurrency {}, load generator {:.0} s per format",
        f.files_per_project, f.full_projects, f.top_files_per_project, f.requests, f.concurrency, f.load_secs
    );
    let _ = writeln!(
        w,
        "- nodes: `hoard serve` processes on loopback ports, data dirs in one temp dir on the same disk; hoard logs at `info`; the machine is shared and noisy: read the ratios within this run"
    );
    if !f.notes.is_empty() {
        let _ = writeln!(w, "\n## Notes\n");
        for n in &f.notes {
            let _ = writeln!(w, "- {n}");
        }
    }
    s
}

/// The curves over the index size (x: projects, log10).
pub fn plot(f: &ScaleFigures, path: &Path) -> Result<()> {
    let x = |z: &SizeFigures| (z.projects as f64).log10();
    let series = |name: &str, y: &dyn Fn(&SizeFigures) -> f64| Series {
        name: name.to_owned(),
        points: f.sizes.iter().map(|z| (x(z), y(z))).collect(),
    };
    let x_desc = "projects (log10)".to_owned();
    let charts = vec![
        Chart {
            title: "project page p50 (ms)".into(),
            x_desc: x_desc.clone(),
            y_desc: "ms".into(),
            series: vec![
                series("once, HTML", &|z| z.page_once_html.p50_ms),
                series("once, JSON", &|z| z.page_once_json.p50_ms),
                series("repeated, HTML", &|z| z.page_repeat_html.p50_ms),
                series("repeated, JSON", &|z| z.page_repeat_json.p50_ms),
            ],
            mark: Mark::Lines,
        },
        Chart {
            title: "root page (ms)".into(),
            x_desc: x_desc.clone(),
            y_desc: "ms".into(),
            series: vec![
                series("TTFB, plain", &|z| z.root_plain.ttfb_ms),
                series("total, plain", &|z| z.root_plain.total_ms),
                series("TTFB, gzip", &|z| z.root_gzip.ttfb_ms),
                series("total, gzip", &|z| z.root_gzip.total_ms),
            ],
            mark: Mark::Lines,
        },
        Chart {
            title: "replica memory (MiB)".into(),
            x_desc: x_desc.clone(),
            y_desc: "MiB".into(),
            series: vec![
                series("VmRSS idle", &|z| z.idle_rss_kib as f64 / 1024.0),
                series("VmRSS under load", &|z| z.load_rss_kib as f64 / 1024.0),
                series("VmHWM", &|z| z.hwm_kib as f64 / 1024.0),
            ],
            mark: Mark::Lines,
        },
        Chart {
            title: "catch-up (s) and index bytes per file / 100".into(),
            x_desc,
            y_desc: "s, B/100".into(),
            series: vec![
                series("catch-up s", &|z| z.catch_up_s),
                series("index B/file / 100", &|z| z.index_bytes_per_file() / 100.0),
            ],
            mark: Mark::Lines,
        },
    ];
    plots::write_png(path, &charts, 2)
}
