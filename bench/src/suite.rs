//! `hoard-bench suite`: the figures of the performance issue, one after the
//! other, each next to its baseline in the same run, into one results file
//! (`bench/results/<date>-<short commit>.md`) with PNG plots beside it.
//!
//! It reuses the scenarios' own code (the PyPI and npm fixtures, the lag and
//! catch-up of `replication`, the trials of `failover`) and measures every
//! side-by-side comparison in alternating rounds (A B A B), so that a drift
//! of the shared machine during the run hits both systems alike.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use hoard_testkit::tools::workspace_root;
use hoard_testkit::wheel;

use crate::devpi::{self, Devpi, DevpiReplica};
use crate::failover::{self, FailoverArgs};
use crate::load::Plan;
use crate::measure::{alternating, Endpoint};
use crate::plots::{self, Chart, Mark, Series};
use crate::procs::Proc;
use crate::replication::{self, quantile, ReplicationArgs};
use crate::report::{fmt_ms, fmt_num, now_utc, today, Row};
use crate::scale::{self, ScaleArgs};
use crate::servers::{self, StaticFiles, HTML_ACCEPT, JSON_ACCEPT};
use crate::{command_line, git_description, npm, pypi, Common};

#[derive(Args, Debug, Clone)]
pub struct SuiteArgs {
    /// Small data and short windows: the whole suite in under 5 minutes on
    /// 2 cores (the full run takes under 30).
    #[arg(long)]
    pub quick: bool,
}

/// Sizes, durations and concurrency of a run: quick or full.
struct Settings {
    quick: bool,
    warmup: f64,
    duration: f64,
    /// Alternating rounds of each side-by-side row.
    rounds: usize,
    concurrency: usize,
    download_concurrency: usize,
    /// Files of the simple-page project.
    files: usize,
    /// Other projects (one wheel each), so that the root index lists some.
    root_projects: usize,
    big_mb: usize,
    lag_uploads: usize,
    /// devpi's lag uploads: its upload time grows with a project's
    /// versions (about 2 s each past 800 of them), so fewer.
    devpi_lag_uploads: usize,
    /// Events on the leader when the fresh replica starts.
    events: u64,
    /// Projects the catch-up uploads are spread over (about 10 versions
    /// each, which devpi takes at its usual pace).
    catch_up_projects: usize,
    big_files: usize,
    big_kib: usize,
    latency_uploads: usize,
    upload_concurrency: usize,
    failover_trials: usize,
    npm_versions: usize,
    tarball_mb: usize,
}

impl Settings {
    fn new(quick: bool) -> Settings {
        if quick {
            Settings {
                quick,
                warmup: 0.5,
                duration: 1.5,
                rounds: 2,
                concurrency: 16,
                download_concurrency: 4,
                files: 200,
                root_projects: 20,
                big_mb: 50,
                lag_uploads: 200,
                devpi_lag_uploads: 200,
                events: 1000,
                catch_up_projects: 100,
                big_files: 100,
                big_kib: 1100,
                latency_uploads: 50,
                upload_concurrency: 8,
                failover_trials: 3,
                npm_versions: 100,
                tarball_mb: 20,
            }
        } else {
            Settings {
                quick,
                warmup: 1.0,
                duration: 4.0,
                rounds: 2,
                concurrency: 16,
                download_concurrency: 4,
                files: 200,
                root_projects: 200,
                big_mb: 50,
                lag_uploads: 1000,
                devpi_lag_uploads: 200,
                events: 10_000,
                catch_up_projects: 1000,
                big_files: 1000,
                big_kib: 1100,
                latency_uploads: 300,
                upload_concurrency: 8,
                failover_trials: 6,
                npm_versions: 300,
                tarball_mb: 20,
            }
        }
    }

    fn plan(&self, concurrency: usize) -> Plan {
        Plan {
            concurrency,
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
        }
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(
            w,
            "- mode: **{}**",
            if self.quick {
                "quick (`--quick`)"
            } else {
                "full"
            }
        );
        let _ = writeln!(
            w,
            "- load rows: {} alternating rounds (A B A B) per row, each {} s warm-up + {} s measured; pages {} connections, downloads {} connections; HTTP/1.1 keep-alive, closed loop, load generator on the same machine",
            self.rounds, self.warmup, self.duration, self.concurrency, self.download_concurrency
        );
        let _ = writeln!(
            w,
            "- PyPI data: `{}` with {} files, {} more projects of one file for the root index, a {} MB wheel",
            pypi::PAGES_PROJECT,
            self.files,
            self.root_projects,
            self.big_mb
        );
        let _ = writeln!(
            w,
            "- lag: {} sequential uploads (devpi: {}); catch-up: {} events over {} projects, {} of them {} KiB wheels",
            self.lag_uploads,
            self.devpi_lag_uploads,
            self.events,
            self.catch_up_projects,
            self.big_files,
            self.big_kib
        );
        let _ = writeln!(
            w,
            "- uploads: {} sequential (latency) and {} from {} clients (rate), per cluster and round; failover: {} kill -9 trials",
            self.latency_uploads,
            self.latency_uploads,
            self.upload_concurrency,
            self.failover_trials
        );
        let _ = writeln!(
            w,
            "- npm: {} versions of the packument's package, a {} MB tarball",
            self.npm_versions, self.tarball_mb
        );
        s
    }
}

/// Whether a figure meets the issue's target.
#[derive(Clone, Copy, PartialEq)]
enum Verdict {
    Met,
    NotMet,
    /// The issue sets no target for it: reported only.
    NoTarget,
    /// Not measured by this run (yet, or it failed).
    NotMeasured,
}

impl Verdict {
    fn of(met: bool) -> Verdict {
        if met {
            Verdict::Met
        } else {
            Verdict::NotMet
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Met => "**met**",
            Verdict::NotMet => "**not met**",
            Verdict::NoTarget => "(no target)",
            Verdict::NotMeasured => "not measured yet",
        }
    }
}

/// One row of the summary table, and its section of details.
struct Figure {
    number: &'static str,
    what: String,
    hoard: String,
    baseline: String,
    ratio: Option<f64>,
    target: String,
    verdict: Verdict,
    details: String,
}

/// The load-average triple from /proc/loadavg.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn short_commit() -> String {
    std::process::Command::new("git")
        .arg("-C")
        .arg(workspace_root())
        .args(["rev-parse", "--short=7", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "nocommit".into())
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn find_row<'a>(rows: &'a [Row], scenario: &str, server: &str) -> Result<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.server == server)
        .with_context(|| format!("no row {scenario} / {server}"))
}

/// The table of side-by-side rows of one figure, markdown.
fn rows_table(rows: &[Row]) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "| row | server | req/s | MB/s | ≈ bytes/response | gzip responses | p50 ms | p99 ms | server CPU (cores) | per server CPU-s | errors |"
    );
    let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let m = &r.measured;
        let per_response = if m.requests > 0 {
            format!("{:.0}", m.bytes as f64 / m.requests as f64)
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {per_response} | {} of {} | {} | {} | {:.2} | {} | {} |",
            r.scenario,
            r.server,
            fmt_num(m.req_per_s()),
            fmt_num(m.mb_per_s()),
            m.gzip_responses,
            m.requests,
            fmt_ms(m.latency_ms(0.5)),
            fmt_ms(m.latency_ms(0.99)),
            r.cores(r.server_cpu_s),
            fmt_num(r.per_server_cpu()),
            m.errors
        );
    }
    s
}

/// What a page row asks for.
struct PageRow {
    label: &'static str,
    hoard_path: &'static str,
    static_path: &'static str,
    accept: &'static str,
    gzip: bool,
}

const ROOT_PATH: &str = "/pypi/simple/";
const PROJECT_PATH: &str = "/pypi/simple/bench-pages/";

const PAGE_ROWS: [PageRow; 8] = [
    PageRow {
        label: "root index, HTML",
        hoard_path: ROOT_PATH,
        static_path: "/root.html",
        accept: HTML_ACCEPT,
        gzip: false,
    },
    PageRow {
        label: "root index, JSON",
        hoard_path: ROOT_PATH,
        static_path: "/root.json",
        accept: JSON_ACCEPT,
        gzip: false,
    },
    PageRow {
        label: "200-file project, HTML",
        hoard_path: PROJECT_PATH,
        static_path: "/page.html",
        accept: HTML_ACCEPT,
        gzip: false,
    },
    PageRow {
        label: "200-file project, JSON",
        hoard_path: PROJECT_PATH,
        static_path: "/page.json",
        accept: JSON_ACCEPT,
        gzip: false,
    },
    PageRow {
        label: "root index, HTML, gzip",
        hoard_path: ROOT_PATH,
        static_path: "/root.html",
        accept: HTML_ACCEPT,
        gzip: true,
    },
    PageRow {
        label: "root index, JSON, gzip",
        hoard_path: ROOT_PATH,
        static_path: "/root.json",
        accept: JSON_ACCEPT,
        gzip: true,
    },
    PageRow {
        label: "200-file project, HTML, gzip",
        hoard_path: PROJECT_PATH,
        static_path: "/page.html",
        accept: HTML_ACCEPT,
        gzip: true,
    },
    PageRow {
        label: "200-file project, JSON, gzip",
        hoard_path: PROJECT_PATH,
        static_path: "/page.json",
        accept: JSON_ACCEPT,
        gzip: true,
    },
];

const DOWNLOAD_ROW: &str = "download 50 MB wheel";

/// Everything a run produced: the figures, and the raw data of the plots.
#[derive(Default)]
struct Collected {
    figures: Vec<Figure>,
    page_rows: Vec<Row>,
    devpi_page_rows: Vec<Row>,
    scale: Option<scale::ScaleFigures>,
    lag_ms: Vec<f64>,
    ack_ms: Vec<f64>,
    notes: Vec<String>,
}

pub async fn run(common: &Common, args: &SuiteArgs, hoard_bin: PathBuf) -> Result<()> {
    let t0 = Instant::now();
    let load_start = load_average();
    // Read at the start: the results are of the checkout that was built,
    // even if a commit lands while the run goes on.
    let stem = format!("{}-{}", today(), short_commit());
    let git = git_description();
    let set = Settings::new(args.quick);
    let work = common.work_dir()?;
    let dir = work.path().to_path_buf();
    let nginx = servers::find_nginx(common.nginx.as_deref());
    let mut out = Collected::default();
    if nginx.is_none() {
        out.notes.push(
            "nginx not found (bench/run installs Debian's package): the nginx columns are empty"
                .into(),
        );
    }

    eprintln!("== figures 1, 2, 3, 5, 6: a leader with a replica");
    if let Err(e) =
        leader_and_replica(common, &set, &hoard_bin, &dir, nginx.as_deref(), &mut out).await
    {
        eprintln!("error: {e:#}");
        out.notes.push(format!(
            "figures 1, 2, 3, 5 and 6 stopped with an error: {e:#}"
        ));
    }
    eprintln!("== figure 4: upload acknowledgement, 1 voter against 3");
    match uploads(&set, &hoard_bin, &dir).await {
        Ok(f) => out.figures.push(f),
        Err(e) => out.notes.push(format!("figure 4 failed: {e:#}")),
    }
    eprintln!("== figure 7: failover");
    match failover_figure(&set, &hoard_bin, &dir).await {
        Ok(f) => out.figures.push(f),
        Err(e) => out.notes.push(format!("figure 7 failed: {e:#}")),
    }
    eprintln!("== figure 9: npm");
    match npm_figures(common, &set, &hoard_bin, &dir, nginx.as_deref()).await {
        Ok(f) => out.figures.extend(f),
        Err(e) => out.notes.push(format!("figure 9 failed: {e:#}")),
    }
    eprintln!("== figure 8: scale");
    match scale::run(common, &scale_args(set.quick), &hoard_bin).await {
        Ok(f) => out.scale = Some(f),
        Err(e) => out.notes.push(format!("figure 8 failed: {e:#}")),
    }

    let out_dir = common
        .out_dir
        .clone()
        .unwrap_or_else(|| workspace_root().join("bench/results"));
    let mut plot_links = Vec::new();
    if !common.no_write {
        std::fs::create_dir_all(&out_dir)?;
        match write_plots(&out_dir, &stem, &out) {
            Ok(links) => plot_links = links,
            Err(e) => out.notes.push(format!("the plots were not drawn: {e:#}")),
        }
    }
    if let Some(f) = out.scale.take() {
        let png = format!("{stem}-scale.png");
        let plotted = !common.no_write && scale::plot(&f, &out_dir.join(&png)).is_ok();
        out.figures.push(scale_figure(
            &f,
            &hoard_bin,
            plotted.then_some(png.as_str()),
        ));
    }
    out.figures.sort_by_key(|f| figure_order(f.number));
    let md = markdown(
        &set,
        &hoard_bin,
        &out,
        &plot_links,
        &load_start,
        &git,
        t0.elapsed(),
    );
    println!("{md}");
    if !common.no_write {
        let path = out_dir.join(format!("{stem}.md"));
        std::fs::write(&path, &md)?;
        eprintln!("wrote {}", path.display());
    }
    drop(work);
    Ok(())
}

/// `hoard-bench scale` as the suite runs it: 1k → 500k projects, or 1k and
/// 10k with `--quick`.
fn scale_args(quick: bool) -> ScaleArgs {
    ScaleArgs {
        quick,
        sizes: None,
        files_per_project: 10,
        full_projects: 10_000,
        top_files_per_project: 1,
        batch: 10_000,
        // The full suite asks fewer pages than `scale` alone, to stay
        // within its 30 minutes.
        requests: (!quick).then_some(1000),
        concurrency: 8,
        load_secs: (!quick).then_some(3.0),
        root_samples: 5,
        idle_secs: 5,
        fetch_concurrency: 8,
    }
}

/// Figure 8 from a `scale` run; its whole report goes into the details.
fn scale_figure(f: &scale::ScaleFigures, hoard_bin: &Path, png: Option<&str>) -> Figure {
    let flat = f.flatness();
    let worst = flat.map(|[a, b, c, d]| a.max(b).max(c).max(d));
    let rss = f.idle_rss_10k_mib();
    let (first, last) = (f.sizes.first(), f.sizes.last());
    // The report's own headings go below the suite's.
    let mut details = String::new();
    for line in scale::markdown(f, hoard_bin).lines().skip(1) {
        if line.starts_with('#') {
            details.push_str("###");
        }
        details.push_str(line);
        details.push('\n');
    }
    if let Some(png) = png {
        let _ = writeln!(details, "\n![the scale curves]({png})");
    }
    let sizes = f
        .sizes
        .iter()
        .map(|s| s.projects.to_string())
        .collect::<Vec<_>>()
        .join(" → ");
    Figure {
        number: "8",
        what: format!("scale: {sizes} projects"),
        hoard: match (flat, last) {
            (Some([oh, oj, rh, rj]), Some(l)) => format!(
                "page p50 largest / smallest: once {oh:.2}× / {oj:.2}× (HTML / JSON), cached {rh:.2}× / {rj:.2}×; idle replica at 10k: {}; root page at {}: first {} ms, cached {} ms; index {:.0} B/file",
                rss.map_or("n/a".into(), |m| format!("{m:.0} MiB")),
                l.projects,
                fmt_ms(l.root_plain.first_total_ms),
                fmt_ms(l.root_plain.total_ms),
                l.index_bytes_per_file()
            ),
            _ => "no size measured".into(),
        },
        baseline: first.map_or("—".into(), |s| format!("the same at {} projects", s.projects)),
        ratio: worst,
        target: "page latency within 1.5× (ratio = the worst); idle replica < 64 MiB at 10k".into(),
        verdict: match (worst, rss) {
            (Some(w), Some(m)) => Verdict::of(w <= 1.5 && m < 64.0),
            _ => Verdict::NotMeasured,
        },
        details,
    }
}

/// Figures in the issue's order; the ones not measured at the end.
fn figure_order(number: &str) -> (u32, String) {
    let n = number
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(99);
    let last = if number.contains("devpi") { 100 } else { n };
    (last, number.to_string())
}

/// Figures 1, 2, 3 on a replica of a leader, then 5 (lag) and 6 (catch-up)
/// with the same two nodes.
async fn leader_and_replica(
    common: &Common,
    set: &Settings,
    hoard_bin: &Path,
    dir: &Path,
    nginx: Option<&Path>,
    out: &mut Collected,
) -> Result<()> {
    let fetch_concurrency = 8;
    let (leader, replica, poll) =
        replication::primary_with_replica(hoard_bin, dir, ["leader", "replica"], fetch_concurrency)
            .await?;

    eprintln!("uploading {} one-file projects", set.root_projects);
    for i in 0..set.root_projects {
        leader
            .upload(&wheel(&format!("bench-root-{i:04}"), "1.0.0"))
            .await?;
    }
    let fixture = pypi::upload_fixture(&leader, set.files, set.big_mb).await?;
    let serial = replication::status_u64(&leader.status().await?, "applied_serial")?;
    replication::wait_applied(&poll, replica.addr, serial).await?;
    let mut devpi = match devpi::find_devpi(None, &workspace_root()) {
        Some(bin) => match DevpiPair::start(&bin, dir, set, &fixture).await {
            Ok(pair) => Some(pair),
            Err(e) => {
                eprintln!("devpi: {e:#}");
                out.notes
                    .push(format!("the devpi-server pair did not start: {e:#}"));
                None
            }
        },
        None => {
            out.notes.push(
                "devpi-server not found (bench/run installs it with tests/tools/setup-devpi.sh): no devpi columns".into(),
            );
            None
        }
    };

    // What the replica serves, identity and gzip; the static twins.
    let mut static_files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut gzip_sources = Vec::new();
    for row in PAGE_ROWS.iter().filter(|r| !r.gzip) {
        let plain = replica.get(row.hoard_path, row.accept).await?;
        // hoard may answer the first `Accept-Encoding: gzip` request of a
        // page unencoded and compress it for the next ones: ask a few times.
        let mut variant = None;
        for _ in 0..10 {
            let (encoded, gzipped) = replica
                .get_encoded(row.hoard_path, row.accept, "gzip")
                .await?;
            if gzipped {
                variant = Some(encoded);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // nginx serves hoard's own compressed bytes when hoard has them;
        // else the same page compressed here, at gzip's best level.
        let gz = match variant {
            Some(encoded) => {
                gzip_sources.push(format!("`{}`: hoard's gzip variant", row.static_path));
                encoded.to_vec()
            }
            None => {
                gzip_sources.push(format!(
                    "`{}`: hoard sent no gzip variant in 10 requests; compressed by the bench (level 9)",
                    row.static_path
                ));
                gzip(&plain)?
            }
        };
        static_files.push((format!("{}.gz", row.static_path), gz));
        static_files.push((row.static_path.to_string(), plain.to_vec()));
    }
    let wheel_path = format!("/pypi/files/{}/{}", pypi::BIG_PROJECT, fixture.big.filename);
    let served = replica.get(&wheel_path, "*/*").await?;
    if served.as_ref() != fixture.big.bytes.as_slice() {
        bail!("the replica served other bytes for {wheel_path}");
    }
    drop(served);
    static_files.push((servers::STATIC_WHEEL.to_string(), fixture.big.bytes.clone()));
    let refs: Vec<(&str, &[u8])> = static_files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let files = StaticFiles::write(dir, &refs)?;
    let nginx = match nginx {
        Some(bin) => {
            let (proc, addr) =
                servers::start_nginx(bin, dir, &files, common.server_threads()).await?;
            for (path, bytes) in static_files.iter().filter(|(p, _)| !p.ends_with(".gz")) {
                servers::verify_same_bytes(addr, path, bytes).await?;
            }
            Some((proc, addr, servers::nginx_version(bin)))
        }
        None => None,
    };
    // A bare hyper server of this bench (the same runtime and hyper as
    // hoard, the same bytes from memory) on the project pages: what any
    // hyper server pays per request, next to what nginx pays.
    let hyper_static = if common.wants("hyper") {
        let (proc, addr) = servers::start_static(dir, &files, common.server_threads()).await?;
        for (path, bytes) in static_files.iter().filter(|(p, _)| p.starts_with("/page.")) {
            servers::verify_same_bytes(addr, path, bytes).await?;
        }
        Some((proc, addr))
    } else {
        None
    };
    let len_of = |path: &str| -> u64 {
        static_files
            .iter()
            .find(|(p, _)| p == path)
            .map_or(0, |(_, b)| b.len() as u64)
    };

    // Figures 1 and 2: every page row, A B A B.
    let endpoints = |row: &PageRow, plain_len: u64| -> Vec<Endpoint> {
        let accept_encoding = row.gzip.then(|| "gzip".to_string());
        let mut v = vec![Endpoint {
            server: "hoard replica",
            pid: replica.proc.pid(),
            addr: replica.addr,
            path: row.hoard_path.into(),
            accept: row.accept.into(),
            accept_encoding: accept_encoding.clone(),
            len: plain_len,
        }];
        if let Some((proc, addr, _)) = &nginx {
            v.push(Endpoint {
                server: "nginx",
                pid: proc.pid(),
                addr: *addr,
                path: row.static_path.into(),
                accept: row.accept.into(),
                accept_encoding: accept_encoding.clone(),
                len: plain_len,
            });
        }
        if let Some((proc, addr)) = hyper_static
            .as_ref()
            .filter(|_| !row.gzip && row.static_path.starts_with("/page."))
        {
            v.push(Endpoint {
                server: "hyper-static",
                pid: proc.pid(),
                addr: *addr,
                path: row.static_path.into(),
                accept: row.accept.into(),
                accept_encoding,
                len: plain_len,
            });
        }
        v
    };
    for row in &PAGE_ROWS {
        let e = endpoints(row, len_of(row.static_path));
        out.page_rows
            .extend(alternating(row.label, &e, set.plan(set.concurrency), set.rounds).await?);
    }
    drop(hyper_static);
    let mut nginx_line = nginx.as_ref().map_or(String::new(), |(_, _, v)| {
        format!(
            "nginx {v}: {} worker processes, sendfile, open_file_cache, `gzip_static on` over `.gz` files of the same bytes, access log off.",
            common.server_threads()
        )
    });
    if common.wants("hyper") {
        nginx_line.push_str(&format!(
            " hyper-static (project pages only): a bare hyper server of this bench, on the same tokio runtime and hyper as hoard, {} threads, answering with the same bytes from memory: what a hyper server pays per request before any work of its own.",
            common.server_threads()
        ));
    }
    out.figures.push(page_figure(
        "1",
        "simple pages, requests/s (root index and a 200-file project, HTML and JSON), on the replica",
        &out.page_rows,
        false,
        &format!(
            "hoard: the **replica** of a leader (both `hoard serve` on loopback), serving `{ROOT_PATH}` (the root index: {} projects) and `{PROJECT_PATH}` ({} files) by `Accept`. {nginx_line} Each row: {} connections.\n",
            set.root_projects + 2,
            set.files,
            set.concurrency
        ),
    )?);
    out.figures.push(page_figure(
        "2",
        "the same pages with `Accept-Encoding: gzip`",
        &out.page_rows,
        true,
        &format!(
            "Every request sends `Accept-Encoding: gzip`, as pip and uv do. \"bytes/response\" and \"gzip responses\" show what each side sent. The `.gz` files nginx serves: {}.\n",
            gzip_sources.join("; ")
        ),
    )?);

    // The same project page on a devpi replica (its own bytes of the
    // same files), A B A B.
    if let Some(d) = &devpi {
        for (label, accept) in [(DEVPI_HTML_ROW, HTML_ACCEPT), (DEVPI_JSON_ROW, JSON_ACCEPT)] {
            let path = format!("{}/+simple/{}/", devpi::DEVPI_INDEX, pypi::PAGES_PROJECT);
            let (ct, body) = d.replica.get(&path, accept).await?;
            if accept == JSON_ACCEPT && !ct.contains("json") {
                out.notes.push(format!(
                    "devpi-server answered `Accept: {JSON_ACCEPT}` with {ct:?}: no JSON row for it"
                ));
                continue;
            }
            let e = [
                Endpoint {
                    server: "hoard replica",
                    pid: replica.proc.pid(),
                    addr: replica.addr,
                    path: PROJECT_PATH.into(),
                    accept: accept.into(),
                    accept_encoding: None,
                    len: len_of(if accept == JSON_ACCEPT {
                        "/page.json"
                    } else {
                        "/page.html"
                    }),
                },
                Endpoint {
                    server: "devpi replica",
                    pid: d.replica.proc.pid(),
                    addr: d.replica.addr,
                    path,
                    accept: accept.into(),
                    accept_encoding: None,
                    len: body.len() as u64,
                },
            ];
            out.devpi_page_rows
                .extend(alternating(label, &e, set.plan(set.concurrency), set.rounds).await?);
        }
        out.figures.push(devpi_pages_figure(
            &out.devpi_page_rows,
            &d.primary.version,
            set,
        )?);
    }

    // Figure 3: the 50 MB download.
    let big_len = fixture.big.bytes.len() as u64;
    let mut e = vec![Endpoint {
        server: "hoard replica",
        pid: replica.proc.pid(),
        addr: replica.addr,
        path: wheel_path.clone(),
        accept: "*/*".into(),
        accept_encoding: None,
        len: big_len,
    }];
    if let Some((proc, addr, _)) = &nginx {
        e.push(Endpoint {
            server: "nginx",
            pid: proc.pid(),
            addr: *addr,
            path: servers::STATIC_WHEEL.into(),
            accept: "*/*".into(),
            accept_encoding: None,
            len: big_len,
        });
    }
    let rows = alternating(
        DOWNLOAD_ROW,
        &e,
        set.plan(set.download_concurrency),
        set.rounds,
    )
    .await?;
    out.figures.push(download_figure(
        "3",
        &format!("download of a {} MB wheel from the replica", set.big_mb),
        &rows,
        &format!(
            "`GET {wheel_path}` on the replica against nginx's `sendfile` of the same file, {} connections.\n",
            set.download_concurrency
        ),
    )?);
    drop(nginx);
    drop(fixture);

    // Figure 5: lag, on the same two nodes.
    eprintln!("== figure 5: replication lag");
    let lag = replication::measure_lag(&leader, &replica, &poll, set.lag_uploads).await?;
    let devpi_lag = match &devpi {
        Some(d) => Some(
            devpi::measure_lag(&d.primary, &d.replica, set.devpi_lag_uploads, |i| {
                wheel(replication::LAG_PROJECT, &format!("1.0.{i}"))
            })
            .await?,
        ),
        None => None,
    };
    out.figures.push(lag_figure(&lag, devpi_lag.as_ref()));
    out.lag_ms = lag.lag_ms.clone();
    out.ack_ms = lag.ack_ms.clone();

    // Figure 6: catch-up of a fresh replica, against `cp -a` + `sync`.
    eprintln!("== figure 6: catch-up");
    let rargs = ReplicationArgs {
        lag_uploads: set.lag_uploads,
        events: set.events,
        big_files: set.big_files,
        big_kib: set.big_kib,
        projects: set.catch_up_projects,
        prep_concurrency: 4,
        fetch_concurrency,
        sample_ms: 100,
        idle_secs: 1,
    };
    let prep = replication::prepare(&leader, &replica, &poll, &rargs).await?;
    if let Some(d) = &mut devpi {
        // The very same uploads: then both primaries hold the same files.
        eprintln!("devpi: the same {} uploads", prep.uploads);
        let (uploads, big, projects, big_kib) =
            (prep.uploads, prep.big, rargs.projects, set.big_kib);
        d.prep = Some(
            d.primary
                .upload_many(uploads, rargs.prep_concurrency, move |i| {
                    replication::catch_up_wheel(i, uploads, big, projects, big_kib)
                })
                .await?,
        );
        d.replica
            .wait_serial(d.primary.serial().await?, Duration::from_secs(600))
            .await?;
    }
    // The following replicas stop, so that they take no CPU from the catch-up.
    drop(replica);
    let devpi = devpi.map(DevpiPair::into_primary);
    let c = replication::measure_catch_up(common, &rargs, hoard_bin, &leader, dir, &poll).await?;
    out.figures.push(catch_up_figure(&prep, &c));
    drop(leader);
    if let Some((primary, prep_time)) = devpi {
        let d = devpi::measure_catch_up(&primary, dir).await?;
        out.figures.push(devpi_catch_up_figure(&c, &d, prep_time));
    }
    Ok(())
}

const DEVPI_HTML_ROW: &str = "200-file project, HTML, vs devpi";
const DEVPI_JSON_ROW: &str = "200-file project, JSON, vs devpi";

/// A devpi-server primary with a replica that follows it, given the same
/// uploads as hoard's leader.
struct DevpiPair {
    primary: Devpi,
    replica: DevpiReplica,
    /// How long the catch-up data set took to upload (4 at a time).
    prep: Option<Duration>,
}

impl DevpiPair {
    /// Starts the primary, uploads the root projects and the fixture as
    /// hoard got them, then starts the replica and waits for it.
    async fn start(
        bin: &Path,
        dir: &Path,
        set: &Settings,
        fixture: &pypi::Uploads,
    ) -> Result<DevpiPair> {
        eprintln!("devpi: a primary and a replica, with the same uploads");
        let primary = Devpi::start(bin, dir).await?;
        primary
            .upload_many(set.root_projects, 4, |i| {
                wheel(&format!("bench-root-{i:04}"), "1.0.0")
            })
            .await?;
        for w in &fixture.small {
            primary.upload(w).await?;
        }
        primary.upload(&fixture.big).await?;
        let replica = DevpiReplica::start(&primary, dir, "devpi-replica").await?;
        Ok(DevpiPair {
            primary,
            replica,
            prep: None,
        })
    }

    /// Stops the replica; the primary stays for the catch-up.
    fn into_primary(self) -> (Devpi, Option<Duration>) {
        (self.primary, self.prep)
    }
}

/// The project page on hoard's replica against devpi's replica.
fn devpi_pages_figure(rows: &[Row], version: &str, set: &Settings) -> Result<Figure> {
    let h = find_row(rows, DEVPI_HTML_ROW, "hoard replica")?;
    let d = find_row(rows, DEVPI_HTML_ROW, "devpi replica")?;
    let mut details = format!(
        "devpi-server {version}: a primary (`--role primary`, `--offline-mode`, one index `root/bench` with no bases) and a replica (`--primary-url`), given the same uploads as hoard's leader; its replica serves its own pages of the same 200 files (other bytes than hoard's). Same load as figure 1: {} connections, A B A B.\n\n",
        set.concurrency
    );
    details.push_str(&rows_table(rows));
    let _ = writeln!(
        details,
        "\nhoard / devpi, requests/s (per server CPU-second):\n"
    );
    for r in rows.iter().filter(|r| r.server == "hoard replica") {
        if let Ok(b) = find_row(rows, r.scenario, "devpi replica") {
            let _ = writeln!(
                details,
                "- {}: **{:.0}×** ({:.0}×)",
                r.scenario,
                ratio(r.figure(), b.figure()).unwrap_or(f64::NAN),
                ratio(r.per_server_cpu(), b.per_server_cpu()).unwrap_or(f64::NAN)
            );
        }
    }
    Ok(Figure {
        number: "1 vs devpi",
        what: "the 200-file project page on hoard's replica and on a devpi-server replica".into(),
        hoard: format!(
            "HTML: {} req/s, p50 {} / p99 {} ms",
            fmt_num(h.figure()),
            fmt_ms(h.measured.latency_ms(0.5)),
            fmt_ms(h.measured.latency_ms(0.99))
        ),
        baseline: format!(
            "devpi replica {} req/s, p50 {} / p99 {} ms",
            fmt_num(d.figure()),
            fmt_ms(d.measured.latency_ms(0.5)),
            fmt_ms(d.measured.latency_ms(0.99))
        ),
        ratio: ratio(h.figure(), d.figure()),
        target: "none (figure 1's target is nginx)".into(),
        verdict: Verdict::NoTarget,
        details,
    })
}

/// Catch-up of a fresh replica: hoard's (figure 6) against devpi's, on the
/// same uploads.
fn devpi_catch_up_figure(
    c: &replication::CatchUp,
    d: &devpi::DevpiCatchUp,
    prep: Option<Duration>,
) -> Figure {
    let speed = ratio(d.done_sync_s, c.done_s);
    let details = format!(
        "devpi's primary got the same uploads as hoard's leader (the catch-up set {} at a time, in {}). After hoard's fresh replica (figure 6), a fresh devpi replica started on an empty serverdir: the time is from its process start until its `/+status` serial equals the primary's and its `+files` holds as many files and bytes as the primary's (devpi fetches files in background threads after the metadata), then a `sync`, since devpi does not fsync the files it fetches.\n\n| | hoard | devpi |\n|---|--:|--:|\n| events (serials) | {} | {} |\n| files | {} | {} |\n| MB | {:.0} | {:.0} |\n| catch-up | **{:.2} s** (durable) | {:.2} s, **{:.2} s** with `sync` |\n| CPU: fresh replica / primary during it | {:.1} s / {:.1} s | {:.1} s / {:.1} s |\n| replica RSS after it, idle | {:.0} MiB | {:.0} MiB |\n",
        4,
        prep.map_or("n/a".into(), |p| format!("{:.1} s", p.as_secs_f64())),
        c.events,
        d.serial,
        c.blob_files,
        d.files,
        c.blob_bytes as f64 / 1e6,
        d.bytes as f64 / 1e6,
        c.done_s,
        d.done_s,
        d.done_sync_s,
        c.replica_cpu_s,
        c.primary_cpu_s,
        d.replica_cpu_s,
        d.primary_cpu_s,
        c.idle_rss as f64 / 1024.0,
        d.idle_rss_kib as f64 / 1024.0,
    );
    Figure {
        number: "6 vs devpi",
        what: "catch-up of a fresh replica, the same uploads, hoard against devpi-server".into(),
        hoard: format!("{:.2} s", c.done_s),
        baseline: format!(
            "devpi replica {:.2} s ({:.2} s + `sync`)",
            d.done_s, d.done_sync_s
        ),
        ratio: speed,
        target: "≥ 10× devpi's speed".into(),
        verdict: speed.map_or(Verdict::NotMeasured, |s| {
            Verdict::of(s >= 10.0 && c.digest_ok)
        }),
        details,
    }
}

/// Figure 1 (identity) or 2 (gzip) from the page rows.
fn page_figure(
    number: &'static str,
    what: &str,
    rows: &[Row],
    gzip: bool,
    intro: &str,
) -> Result<Figure> {
    let rows: Vec<Row> = rows
        .iter()
        .filter(|r| r.scenario.ends_with("gzip") == gzip)
        .cloned()
        .collect();
    let headline = PAGE_ROWS
        .iter()
        .rfind(|r| r.gzip == gzip)
        .map(|r| r.label)
        .unwrap_or_default();
    let h = find_row(&rows, headline, "hoard replica")?;
    let mut details = intro.to_string();
    details.push('\n');
    details.push_str(&rows_table(&rows));
    let Ok(n) = find_row(&rows, headline, "nginx") else {
        return Ok(Figure {
            number,
            what: what.into(),
            hoard: format!("{headline}: {} req/s", fmt_num(h.figure())),
            baseline: "nginx: not run".into(),
            ratio: None,
            target: "≥ 1.0× nginx's req/s".into(),
            verdict: Verdict::NotMeasured,
            details,
        });
    };
    // The target holds for every page: the verdict takes the worst ratio.
    let mut worst: Option<(f64, &str)> = None;
    let _ = writeln!(
        details,
        "\nhoard / nginx, requests/s (per server CPU-second):\n"
    );
    for r in rows.iter().filter(|r| r.server == "hoard replica") {
        if let Ok(b) = find_row(&rows, r.scenario, "nginx") {
            if let Some(x) = ratio(r.figure(), b.figure()) {
                let per_cpu = ratio(r.per_server_cpu(), b.per_server_cpu()).unwrap_or(f64::NAN);
                let _ = writeln!(details, "- {}: **{x:.2}×** ({per_cpu:.2}×)", r.scenario);
                if worst.is_none_or(|(w, _)| x < w) {
                    worst = Some((x, r.scenario));
                }
            }
        }
    }
    let r = ratio(h.figure(), n.figure());
    let verdict = worst.map_or(Verdict::NotMeasured, |(w, _)| Verdict::of(w >= 1.0));
    let bytes = |r: &Row| {
        if gzip {
            format!(
                ", {} B/resp{}",
                r.measured.bytes / r.measured.requests.max(1),
                if r.measured.gzip_responses > 0 {
                    " gzip"
                } else {
                    " identity"
                }
            )
        } else {
            String::new()
        }
    };
    Ok(Figure {
        number,
        what: what.into(),
        hoard: format!(
            "{headline}: {} req/s, p50 {} / p99 {} ms{}",
            fmt_num(h.figure()),
            fmt_ms(h.measured.latency_ms(0.5)),
            fmt_ms(h.measured.latency_ms(0.99)),
            bytes(h)
        ),
        baseline: format!(
            "nginx {} req/s, p50 {} / p99 {} ms{}",
            fmt_num(n.figure()),
            fmt_ms(n.measured.latency_ms(0.5)),
            fmt_ms(n.measured.latency_ms(0.99)),
            bytes(n)
        ),
        ratio: r,
        target: format!(
            "≥ 1.0× nginx's req/s on every page (worst here: {})",
            worst.map_or("n/a".into(), |(w, s)| format!("{w:.2}× {s}"))
        ),
        verdict,
        details,
    })
}

/// A download figure (3, or npm's tarball): MB/s and MB per server CPU-second.
fn download_figure(number: &'static str, what: &str, rows: &[Row], intro: &str) -> Result<Figure> {
    let hoard = rows
        .iter()
        .find(|r| r.server.starts_with("hoard"))
        .context("no hoard row")?;
    let mut details = intro.to_string();
    details.push('\n');
    details.push_str(&rows_table(rows));
    let nginx = rows.iter().find(|r| r.server == "nginx");
    let (tput, cpu) = nginx.map_or((None, None), |n| {
        (
            ratio(hoard.figure(), n.figure()),
            ratio(hoard.per_server_cpu(), n.per_server_cpu()),
        )
    });
    let verdict = match (tput, cpu) {
        (Some(t), Some(c)) => Verdict::of(t >= 0.9 && c >= 0.9),
        _ => Verdict::NotMeasured,
    };
    Ok(Figure {
        number,
        what: what.into(),
        hoard: format!(
            "{} MB/s, {} MB per server CPU-s",
            fmt_num(hoard.figure()),
            fmt_num(hoard.per_server_cpu())
        ),
        baseline: nginx.map_or("nginx: not run".into(), |n| {
            format!(
                "nginx {} MB/s, {} MB per CPU-s",
                fmt_num(n.figure()),
                fmt_num(n.per_server_cpu())
            )
        }),
        ratio: tput,
        target: format!(
            "≥ 0.9× nginx's MB/s and MB per CPU-s (per CPU-s here: {})",
            cpu.map_or("n/a".into(), |c| format!("{c:.2}×"))
        ),
        verdict,
        details,
    })
}

fn lag_figure(lag: &replication::LagResult, devpi: Option<&devpi::DevpiLag>) -> Figure {
    let mut v = lag.lag_ms.clone();
    v.sort_by(f64::total_cmp);
    let mut a = lag.ack_ms.clone();
    a.sort_by(f64::total_cmp);
    let p99 = quantile(&v, 0.99);
    let mut details = format!(
        "{} wheels uploaded one at a time to the leader; before each, a `GET /+status` with `X-Hoard-Min-Serial` of its serial is already waiting on the replica: the lag is from the end of the upload's response to the replica's answer (see `hoard-bench replication`).\n\n| | min | p50 | p90 | p99 | max |\n|---|--:|--:|--:|--:|--:|\n",
        lag.uploads
    );
    for (name, x) in [
        ("lag, ack → applied on the replica (ms)", &v),
        ("upload, request → ack (ms)", &a),
        (
            "`GET /+status` round trip on the replica (ms)",
            &lag.status_rtt_replica_ms,
        ),
    ] {
        details.push_str(&replication::quantiles_row(name, x));
    }
    let devpi_p99 = devpi.map(|d| {
        let mut dl = d.lag_ms.clone();
        dl.sort_by(f64::total_cmp);
        let mut da = d.ack_ms.clone();
        da.sort_by(f64::total_cmp);
        let _ = writeln!(
            details,
            "\ndevpi-server, the first {} of these uploads to its primary (`X-Devpi-Auth` session token; devpi's upload time grows with a project's versions, to about 2 s past 800): devpi has no request that waits for a serial, so its replica's `/+status` is asked back to back from the acknowledgement until its serial reaches `X-Devpi-Serial` of the upload; a sample can be late by up to one round trip (row 3). Its replica lists the file then; it may fetch the file itself later.\n\n| | min | p50 | p90 | p99 | max |\n|---|--:|--:|--:|--:|--:|",
            d.lag_ms.len()
        );
        for (name, x) in [
            ("devpi: lag, ack → serial on the replica (ms)", &dl),
            ("devpi: upload, request → ack (ms)", &da),
            ("devpi: `GET /+status` round trip on the replica (ms)", &d.status_rtt_ms),
        ] {
            details.push_str(&replication::quantiles_row(name, x));
        }
        (quantile(&dl, 0.5), quantile(&dl, 0.99), quantile(&dl, 1.0))
    });
    let _ = writeln!(
        details,
        "\n- downloads of each new file from the replica right after: {} failed of {}{}",
        lag.download_failures,
        lag.uploads,
        lag.first_download_failure
            .as_ref()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
    Figure {
        number: "5",
        what: format!(
            "replication lag, ack → visible on the replica, {} uploads",
            lag.uploads
        ),
        hoard: format!(
            "p50 {} ms, p99 {} ms, max {} ms",
            fmt_ms(quantile(&v, 0.5)),
            fmt_ms(p99),
            fmt_ms(quantile(&v, 1.0))
        ),
        baseline: devpi_p99.map_or("devpi replica: not run".into(), |(p50, p99, max)| {
            format!(
                "devpi replica p50 {} ms, p99 {} ms, max {} ms",
                fmt_ms(p50),
                fmt_ms(p99),
                fmt_ms(max)
            )
        }),
        // hoard's p99 over devpi's: the target is at most 0.1.
        ratio: devpi_p99.and_then(|(_, d, _)| ratio(p99, d)),
        target: "p99 ≤ 3 ms and ≤ a tenth of devpi's (ratio = hoard's p99 / devpi's)".into(),
        verdict: Verdict::of(p99 <= 3.0 && devpi_p99.is_none_or(|(_, d, _)| p99 <= d / 10.0)),
        details,
    }
}

fn catch_up_figure(prep: &replication::Prep, c: &replication::CatchUp) -> Figure {
    let mb = c.blob_bytes as f64 / 1e6;
    let speed = ratio(c.cp_sync_s, c.done_s);
    let details = format!(
        "The leader got {} more uploads ({} of them big; {:.2} GB in {:.1} s, 4 at a time; not a benchmark); the replica of figures 1–5 followed them live and was stopped. Then `sync`, and a fresh replica with an empty data dir started: the time is from its process start until it answers `X-Hoard-Min-Serial` of the leader's serial; its digest {} the leader's. Baseline, same disk, right after: `cp -a` of the leader's `blobs/` dir, then `sync`.\n\n| | value |\n|---|--:|\n| events | {} |\n| blobs | {} files, {:.0} MB |\n| catch-up | **{:.2} s** ({:.0} events/s, {:.0} MB/s) |\n| `cp -a` | {:.2} s |\n| `cp -a` + `sync` | {:.2} s ({:.0} MB/s) |\n| CPU: fresh replica / leader during it | {:.1} s / {:.1} s |\n| fresh replica's data dir / leader's | {:.0} MB / {:.0} MB |\n",
        prep.uploads,
        prep.big,
        prep.bytes as f64 / 1e9,
        prep.elapsed.as_secs_f64(),
        if c.digest_ok { "equals" } else { "**differs from**" },
        c.events,
        c.blob_files,
        mb,
        c.done_s,
        c.events as f64 / c.done_s,
        mb / c.done_s,
        c.cp_s,
        c.cp_sync_s,
        c.cp_bytes as f64 / 1e6 / c.cp_sync_s,
        c.replica_cpu_s,
        c.primary_cpu_s,
        c.replica_data_bytes as f64 / 1e6,
        c.primary_data_bytes as f64 / 1e6,
    );
    Figure {
        number: "6",
        what: format!(
            "catch-up of a fresh replica, {} events, {mb:.0} MB of blobs",
            c.events
        ),
        hoard: format!("{:.2} s ({:.0} MB/s)", c.done_s, mb / c.done_s),
        baseline: format!("`cp -a` + `sync` {:.2} s", c.cp_sync_s),
        ratio: speed,
        target: "≥ 0.5× the speed of `cp -a` + `sync` (within 2×); devpi: see \"6 vs devpi\""
            .into(),
        verdict: match (speed, c.digest_ok) {
            (Some(s), true) => Verdict::of(s >= 0.5),
            (_, false) => Verdict::NotMet,
            (None, true) => Verdict::NotMeasured,
        },
        details,
    }
}

/// Figure 4: upload acknowledgement on 1 voter and on 3, A B A B.
async fn uploads(set: &Settings, hoard_bin: &Path, dir: &Path) -> Result<Figure> {
    let fargs = FailoverArgs {
        trials: 0,
        uploads: set.latency_uploads,
        concurrency: set.upload_concurrency,
        baseline_bin: None,
    };
    let mut lat: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..set.rounds.max(1) {
        for (i, voters) in [1, 3].into_iter().enumerate() {
            let m = failover::upload_latency(
                hoard_bin,
                voters,
                &dir.join(format!("uploads-{voters}-{round}")),
                &fargs,
            )
            .await?;
            eprintln!(
                "  {voters} voter(s), round {round}: p50 {} ms, {:.0} uploads/s",
                fmt_ms(failover::percentile(&m.sorted, 0.5).as_secs_f64() * 1e3),
                m.per_sec
            );
            lat[i].extend(m.sorted);
            rates[i].push(m.per_sec);
        }
    }
    let mut cols = Vec::new();
    let mut details = format!(
        "The leader of a fresh `hoard demo --voters N` per round; {} sequential uploads (latency), then {} from {} concurrent clients (rate); {} rounds, alternating 1 and 3 voters.\n\n| cluster | p50 ms | p99 ms | max ms | uploads/s (mean of rounds) |\n|---|--:|--:|--:|--:|\n",
        set.latency_uploads,
        set.latency_uploads,
        set.upload_concurrency,
        set.rounds
    );
    for (i, name) in ["1 voter", "3 voters"].into_iter().enumerate() {
        lat[i].sort();
        let ms = |q: f64| failover::percentile(&lat[i], q).as_secs_f64() * 1e3;
        let rate = rates[i].iter().sum::<f64>() / rates[i].len().max(1) as f64;
        let _ = writeln!(
            details,
            "| {name} | {} | {} | {} | {rate:.0} |",
            fmt_ms(ms(0.5)),
            fmt_ms(ms(0.99)),
            fmt_ms(ms(1.0))
        );
        cols.push((ms(0.5), ms(0.99), rate));
    }
    Ok(Figure {
        number: "4",
        what: "upload acknowledgement latency and uploads/s, 3 voters against 1".into(),
        hoard: format!(
            "3 voters: p50 {} / p99 {} ms, {:.0} uploads/s",
            fmt_ms(cols[1].0),
            fmt_ms(cols[1].1),
            cols[1].2
        ),
        baseline: format!(
            "1 voter: p50 {} / p99 {} ms, {:.0} uploads/s",
            fmt_ms(cols[0].0),
            fmt_ms(cols[0].1),
            cols[0].2
        ),
        ratio: ratio(cols[1].0, cols[0].0),
        target: "none set (ratio: p50 of 3 voters / 1 voter)".into(),
        verdict: Verdict::NoTarget,
        details,
    })
}

/// Figure 7: kill -9 of a three-voter leader to the first acknowledged
/// upload on the new one.
async fn failover_figure(set: &Settings, hoard_bin: &Path, dir: &Path) -> Result<Figure> {
    let mut elected = Vec::new();
    let mut acked = Vec::new();
    for n in 0..set.failover_trials {
        let (e, a) = failover::failover_trial(hoard_bin, dir, n).await?;
        eprintln!(
            "  trial {n}: elected after {} ms, first ack after {} ms",
            fmt_ms(e.as_secs_f64() * 1e3),
            fmt_ms(a.as_secs_f64() * 1e3)
        );
        elected.push(e);
        acked.push(a);
    }
    elected.sort();
    acked.sort();
    let ms = |v: &[Duration], q: f64| failover::percentile(v, q).as_secs_f64() * 1e3;
    let mut details = format!(
        "{} trials, each on a fresh `hoard demo --voters 3`: one upload, kill -9 of the leader, then uploads to the two others until one is acknowledged (see `hoard-bench failover`). Election settings: hoard's defaults.\n\n| | p50 | p99 | max |\n|---|--:|--:|--:|\n",
        set.failover_trials
    );
    for (what, v) in [
        ("new leader in /+status (ms)", &elected),
        ("first acknowledged upload (ms)", &acked),
    ] {
        let _ = writeln!(
            details,
            "| {what} | {} | {} | {} |",
            fmt_ms(ms(v, 0.5)),
            fmt_ms(ms(v, 0.99)),
            fmt_ms(ms(v, 1.0))
        );
    }
    let max_acked = ms(&acked, 1.0);
    Ok(Figure {
        number: "7",
        what: "failover: kill -9 of the leader of 3 voters → first acknowledged upload".into(),
        hoard: format!(
            "p50 {} ms, max {} ms (leader seen: p50 {} ms)",
            fmt_ms(ms(&acked, 0.5)),
            fmt_ms(max_acked),
            fmt_ms(ms(&elected, 0.5))
        ),
        baseline: "—".into(),
        ratio: None,
        target: "a new leader within a few seconds (design §6): max ≤ 5 s".into(),
        verdict: Verdict::of(max_acked <= 5000.0),
        details,
    })
}

/// Figure 9: npm's abbreviated packument and a tarball, against nginx.
async fn npm_figures(
    common: &Common,
    set: &Settings,
    hoard_bin: &Path,
    dir: &Path,
    nginx: Option<&Path>,
) -> Result<Vec<Figure>> {
    let dir = dir.join("npm");
    std::fs::create_dir_all(&dir)?;
    let args = npm::NpmArgs {
        concurrency: set.concurrency,
        download_concurrency: set.download_concurrency,
        versions: set.npm_versions,
        tarball_mb: set.tarball_mb,
        cold_samples: 3,
    };
    let p = npm::prepare(&args, hoard_bin, &dir).await?;
    let nginx: Option<(Proc, std::net::SocketAddr)> = match nginx {
        Some(bin) => {
            let (proc, addr) =
                servers::start_nginx(bin, &dir, &p.files, common.server_threads()).await?;
            servers::verify_same_bytes(addr, npm::STATIC_ABBREVIATED, &p.abbreviated).await?;
            servers::verify_same_bytes(addr, npm::STATIC_TARBALL, &p.big).await?;
            Some((proc, addr))
        }
        None => None,
    };
    let endpoints = |hoard_path: &str, static_path: &str, accept: &str, len: u64| {
        let mut v = vec![Endpoint {
            server: "hoard",
            pid: p.hoard.proc.pid(),
            addr: p.hoard.addr,
            path: hoard_path.into(),
            accept: accept.into(),
            accept_encoding: None,
            len,
        }];
        if let Some((proc, addr)) = &nginx {
            v.push(Endpoint {
                server: "nginx",
                pid: proc.pid(),
                addr: *addr,
                path: static_path.into(),
                accept: accept.into(),
                accept_encoding: None,
                len,
            });
        }
        v
    };
    let e = endpoints(
        &p.pkg_path,
        npm::STATIC_ABBREVIATED,
        npm::ABBREVIATED_ACCEPT,
        p.abbreviated.len() as u64,
    );
    let packument = alternating(
        "abbreviated packument",
        &e,
        set.plan(set.concurrency),
        set.rounds,
    )
    .await?;
    let e = endpoints(
        &p.tarball_path,
        npm::STATIC_TARBALL,
        "*/*",
        p.big.len() as u64,
    );
    let tarball = alternating(
        "download tarball",
        &e,
        set.plan(set.download_concurrency),
        set.rounds,
    )
    .await?;

    let h = find_row(&packument, "abbreviated packument", "hoard")?;
    let n = find_row(&packument, "abbreviated packument", "nginx").ok();
    let r = n.and_then(|n| ratio(h.figure(), n.figure()));
    let mut details = format!(
        "`GET {}` with npm 10's `Accept` ({} versions, {} bytes) on one node, against nginx serving the same bytes; {} connections.\n\n",
        p.pkg_path,
        set.npm_versions,
        p.abbreviated.len(),
        set.concurrency
    );
    details.push_str(&rows_table(&packument));
    let _ = write!(details, "\n{}", p.setup_md);
    let packument_figure = Figure {
        number: "9",
        what: format!(
            "npm abbreviated packument, requests/s ({} versions)",
            set.npm_versions
        ),
        hoard: format!(
            "{} req/s, p50 {} / p99 {} ms",
            fmt_num(h.figure()),
            fmt_ms(h.measured.latency_ms(0.5)),
            fmt_ms(h.measured.latency_ms(0.99))
        ),
        baseline: n.map_or("nginx: not run".into(), |n| {
            format!("nginx {} req/s", fmt_num(n.figure()))
        }),
        ratio: r,
        target: "≥ 1.0× nginx's req/s (as for pages)".into(),
        verdict: r.map_or(Verdict::NotMeasured, |r| Verdict::of(r >= 1.0)),
        details,
    };
    let tarball_figure = download_figure(
        "9b",
        &format!("npm tarball download, {} MB", set.tarball_mb),
        &tarball,
        &format!(
            "`GET {}` against nginx's `sendfile` of the same file, {} connections.\n",
            p.tarball_path, set.download_concurrency
        ),
    )?;
    drop(nginx);
    Ok(vec![packument_figure, tarball_figure])
}

/// Draws the plots; returns (title, file name) of each, for the links.
fn write_plots(out_dir: &Path, stem: &str, out: &Collected) -> Result<Vec<(String, String)>> {
    let mut links = Vec::new();
    if !out.page_rows.is_empty() {
        let charts: Vec<Chart> = PAGE_ROWS
            .iter()
            .map(|p| Chart {
                title: p.label.to_string(),
                x_desc: "latency (ms)".into(),
                y_desc: "% of requests".into(),
                series: out
                    .page_rows
                    .iter()
                    .filter(|r| r.scenario == p.label)
                    .map(|r| Series {
                        name: r.server.to_string(),
                        points: plots::cdf_ms(&r.measured.latencies_us),
                    })
                    .collect(),
                mark: Mark::Lines,
            })
            .collect();
        let name = format!("{stem}-pages-latency.png");
        plots::write_png(&out_dir.join(&name), &charts, 4)?;
        links.push((
            "Figures 1 and 2: latency distributions (CDF to p99) of the page rows, hoard's replica and nginx".to_string(),
            name,
        ));
    }
    if !out.lag_ms.is_empty() {
        let per_upload = |v: &[f64]| -> Vec<(f64, f64)> {
            v.iter()
                .enumerate()
                .map(|(i, x)| ((i + 1) as f64, *x))
                .collect()
        };
        let chart = Chart {
            title: "Figure 5: replication lag per upload".into(),
            x_desc: "upload (in order)".into(),
            y_desc: "ms".into(),
            series: vec![
                Series {
                    name: "lag: ack → applied on the replica".into(),
                    points: per_upload(&out.lag_ms),
                },
                Series {
                    name: "upload: request → ack".into(),
                    points: per_upload(&out.ack_ms),
                },
            ],
            mark: Mark::Dots,
        };
        let name = format!("{stem}-lag.png");
        plots::write_png(&out_dir.join(&name), &[chart], 1)?;
        links.push((
            "Figure 5: replication lag (and the upload's own latency) per upload, over the run"
                .to_string(),
            name,
        ));
    }
    Ok(links)
}

fn machine() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".into(), |(_, v)| v.trim().to_string());
    format!(
        "{} CPUs ({cpu}), {mem} RAM, Linux {}",
        crate::ncpu(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    )
}

fn markdown(
    set: &Settings,
    hoard_bin: &Path,
    out: &Collected,
    plots: &[(String, String)],
    load_start: &str,
    git: &str,
    elapsed: Duration,
) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "# hoard benchmark suite, {} ({} run)\n",
        now_utc(),
        if set.quick { "quick" } else { "full" }
    );
    let _ = writeln!(
        w,
        "Each ratio compares two systems measured in alternating rounds of the same run on the same machine; the absolute figures move with the machine's load, the ratios much less. Figures of issue 10; `bench/run{}` made this file.\n",
        if set.quick { " --quick" } else { "" }
    );
    let _ = writeln!(w, "## Summary\n");
    s.push_str(&summary_table(&out.figures));
    let w = &mut s;
    if !plots.is_empty() {
        let _ = writeln!(w, "\n## Plots\n");
        for (title, file) in plots {
            let _ = writeln!(w, "- {title}: [{file}]({file})");
        }
    }
    for f in &out.figures {
        let _ = writeln!(w, "\n## Figure {}: {}\n", f.number, f.what);
        let _ = writeln!(w, "{}", f.details.trim_end());
    }
    let _ = writeln!(w, "\n## Machine and settings\n");
    let _ = writeln!(w, "- machine: {}", machine());
    let _ = writeln!(
        w,
        "- load average: {load_start} at the start, {} at the end; the run took {:.0} s",
        load_average(),
        elapsed.as_secs_f64()
    );
    let _ = writeln!(w, "- git commit at the start of the run: {git}");
    let _ = writeln!(w, "- command: `{}`", command_line());
    let _ = writeln!(w, "- hoard: `{}`; nodes log at `info`", hoard_bin.display());
    s.push_str(&set.markdown());
    if !out.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &out.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// The summary table: one row per figure.
fn summary_table(figures: &[Figure]) -> String {
    let mut s = String::from(
        "| figure | what | hoard | baseline | ratio | target | met? |\n|---|---|---|---|--:|---|---|\n",
    );
    for f in figures {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.number,
            f.what,
            f.hoard,
            f.baseline,
            f.ratio.map_or("—".into(), |r| format!("{r:.2}×")),
            f.target,
            f.verdict.label()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_sort_in_the_issue_order_with_devpi_last() {
        let mut v = ["9b", "1, 5, 6 vs devpi", "8", "9", "10", "1", "2"];
        v.sort_by_key(|n| figure_order(n));
        assert_eq!(v, ["1", "2", "8", "9", "9b", "10", "1, 5, 6 vs devpi"]);
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read as _;
        let gz = gzip(b"hello hello hello").expect("gzip");
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut back)
            .expect("gunzip");
        assert_eq!(back, "hello hello hello");
    }
}
