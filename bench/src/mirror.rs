//! `hoard-bench mirror`: one node with a hosted (`pypi-local`), a mirror
//! (`pypi-remote`, of the test kit's fixture upstream on loopback) and a
//! virtual (`all`, of both) PyPI repository.
//!
//! 1. Cold against warm: the first request of a project page (resp. a
//!    file) that hoard has not fetched from the upstream yet, and the same
//!    request again, one at a time, over many projects.
//! 2. Warm pages of a 3,000-file project: the virtual repository serving a
//!    mirrored project and a hosted one, and the mirror itself, side by
//!    side with the hosted repository serving a hosted project of the same
//!    size, under the load generator (PEP 691 JSON and HTML); and a small
//!    cached file, hosted against mirrored.
//!
//! The first fetch of the 3,000-file project is reported as one sample.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::Args;
use hoard_testkit::upstream::{FileOpts, FixtureUpstream};
use hoard_testkit::{sha256_hex, wheel, Artifact};

use crate::measure::{Endpoint, Plans};
use crate::report::{fmt_ms, fmt_num, now_utc, Report, Row};
use crate::servers::{self, Hoard, NodeSpec, HTML_ACCEPT, JSON_ACCEPT};
use crate::{command_line, git_description, Common};

const HOSTED: &str = "pypi-local";
const MIRROR: &str = "pypi-remote";
const VIRTUAL: &str = "all";
/// The big projects: the same length of name, so that their pages are
/// about the same size.
const HOSTED_PROJECT: &str = "bench-hosted";
const MIRROR_PROJECT: &str = "bench-mirror";
const COLD_PREFIX: &str = "bench-cold";
/// The mirror's `ttl_secs`: longer than the run, so that no page is
/// revalidated while it is measured (the report checks the upstream's
/// counter).
const TTL_SECS: u64 = 600;
/// What hoard's mirror asks the upstream for (hoard-pypi's
/// `UPSTREAM_ACCEPT`), for the direct requests to the upstream.
const UPSTREAM_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

const PAGE_JSON: &str = "page of 3,000 files, JSON";
const PAGE_HTML: &str = "page of 3,000 files, HTML";
const SMALL_FILE: &str = "small file, cached";

const S_HOSTED: &str = "pypi-local (hosted project)";
const S_VIRTUAL_HOSTED: &str = "all (hosted project)";
const S_VIRTUAL_MIRROR: &str = "all (mirrored project)";
const S_MIRROR: &str = "pypi-remote (mirrored project)";

#[derive(Args, Debug, Clone)]
pub struct MirrorArgs {
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Files of each of the two big projects (hosted and mirrored).
    #[arg(long, default_value_t = 3000)]
    pub files: usize,
    /// Projects of the cold/warm samples (one cold page and one cold file each).
    #[arg(long, default_value_t = 50)]
    pub cold_projects: usize,
    /// Files of each of those projects.
    #[arg(long, default_value_t = 3)]
    pub cold_files: usize,
    /// Concurrent uploads of the hosted project (not measured).
    #[arg(long, default_value_t = 4)]
    pub upload_concurrency: usize,
    /// Latency the fixture upstream adds to every answer, in ms (0: none,
    /// the upstream is only as far as loopback).
    #[arg(long, default_value_t = 0)]
    pub upstream_latency_ms: u64,
}

fn repos_toml(index_url: &str) -> String {
    format!(
        "\n[[repos]]\nname = \"{HOSTED}\"\nformat = \"pypi\"\nkind = \"hosted\"\n\
         \n[[repos]]\nname = \"{MIRROR}\"\nformat = \"pypi\"\nkind = \"mirror\"\n\
         upstreams = [{}]\nttl_secs = {TTL_SECS}\n\
         \n[[repos]]\nname = \"{VIRTUAL}\"\nformat = \"pypi\"\nkind = \"virtual\"\n\
         members = [\"{HOSTED}\", \"{MIRROR}\"]\nupload_to = \"{HOSTED}\"\n",
        serde_json::to_string(index_url).expect("json string")
    )
}

/// Quantile `q` of sorted durations, in ms.
fn q_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

/// p50, p90 and max of a sample, in ms.
struct Dist {
    n: usize,
    p50: f64,
    p90: f64,
    max: f64,
}

impl Dist {
    fn of(mut v: Vec<Duration>) -> Dist {
        v.sort();
        Dist {
            n: v.len(),
            p50: q_ms(&v, 0.5),
            p90: q_ms(&v, 0.9),
            max: q_ms(&v, 1.0),
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {} ms, p90 {} ms, max {} ms",
            fmt_ms(self.p50),
            fmt_ms(self.p90),
            fmt_ms(self.max)
        )
    }
}

/// One timed GET: (elapsed to the end of the body, body); fails unless 200.
async fn timed_get(
    client: &reqwest::Client,
    url: &str,
    accept: &str,
    gzip: bool,
) -> Result<(Duration, Bytes)> {
    let mut req = client.get(url).header("accept", accept);
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    let t0 = Instant::now();
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    let elapsed = t0.elapsed();
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok((elapsed, body))
}

/// The filenames and (absolute) URL paths of a PEP 691 JSON page served at
/// `page_path` on hoard.
fn json_files(page_path: &str, body: &[u8]) -> Result<Vec<(String, String)>> {
    let v: serde_json::Value =
        serde_json::from_slice(body).with_context(|| format!("the JSON page {page_path}"))?;
    let base = reqwest::Url::parse(&format!("http://hoard{page_path}"))?;
    let files = v["files"]
        .as_array()
        .with_context(|| format!("{page_path} has no files: {v}"))?;
    files
        .iter()
        .map(|f| {
            let name = f["filename"].as_str().context("a file without filename")?;
            let href = f["url"].as_str().context("a file without url")?;
            Ok((name.to_string(), base.join(href)?.path().to_string()))
        })
        .collect()
}

/// The cold and warm samples.
struct ColdWarm {
    page_cold: Dist,
    page_warm: Dist,
    file_cold: Dist,
    file_warm: Dist,
    /// The upstream's own answers to the same requests, asked directly.
    upstream_page: Dist,
    upstream_file: Dist,
    /// Upstream GETs of the cold pages and files beyond one each (a warm
    /// sample that went to the upstream).
    extra_upstream_hits: usize,
    file_bytes: usize,
}

/// The first fetch of the 3,000-file project (one sample each).
struct FirstFetch {
    cold: Duration,
    warm: Duration,
    upstream: Duration,
    upstream_gzip_bytes: usize,
    serial_before: u64,
    serial_after: u64,
}

/// Uploads of the hosted project (informative).
struct Uploads {
    n: usize,
    elapsed: Duration,
    concurrency: usize,
}

pub async fn run(common: &Common, args: &MirrorArgs, hoard_bin: PathBuf) -> Result<()> {
    let plans = Plans::new(
        args.concurrency,
        args.concurrency,
        common.warmup,
        common.duration,
    );
    let work = common.work_dir()?;
    let dir = work.path().to_path_buf();
    let mut notes = Vec::new();
    if common.baselines.iter().any(|b| b.trim() != "none") {
        notes.push(
            "this scenario has no external baseline: hoard's hosted repository is the reference"
                .to_string(),
        );
    }

    // 1. The fixture upstream: the cold projects and the big mirrored one.
    eprintln!(
        "fixture upstream: {} projects of {} files, and {MIRROR_PROJECT} with {} files",
        args.cold_projects, args.cold_files, args.files
    );
    let upstream = FixtureUpstream::start();
    let mut cold: Vec<(String, Artifact)> = Vec::with_capacity(args.cold_projects);
    for p in 0..args.cold_projects {
        let project = format!("{COLD_PREFIX}-{p:03}");
        let mut first = None;
        for v in 0..args.cold_files.max(1) {
            let a = wheel(&project, &format!("1.0.{v}"));
            upstream.add_wheel(&project, &a, FileOpts::default());
            first.get_or_insert(a);
        }
        cold.push((project, first.expect("one file at least")));
    }
    for v in 0..args.files {
        let a = wheel(MIRROR_PROJECT, &format!("1.0.{v}"));
        upstream.add_wheel(MIRROR_PROJECT, &a, FileOpts::default());
    }
    if args.upstream_latency_ms > 0 {
        upstream.set_latency(Duration::from_millis(args.upstream_latency_ms));
    }

    // 2. hoard, with the three repositories.
    eprintln!("starting {}", hoard_bin.display());
    let hoard = Hoard::start_node(
        &hoard_bin,
        &NodeSpec {
            id: "bench-mirror-1",
            dir: &dir,
            extra_toml: &repos_toml(&upstream.index_url()),
            token_repo: Some(HOSTED),
            env: &[],
        },
    )
    .await?;

    // 3. The hosted project: as many files, uploaded to pypi-local.
    eprintln!(
        "uploading {} wheels of {HOSTED_PROJECT} to /{HOSTED}/, {} at a time",
        args.files, args.upload_concurrency
    );
    let hosted: Arc<Vec<Artifact>> = Arc::new(
        (0..args.files)
            .map(|i| wheel(HOSTED_PROJECT, &format!("1.0.{i}")))
            .collect(),
    );
    let uploads = upload_hosted(&hoard, &hosted, args.upload_concurrency).await?;

    // 4. Cold against warm, one request at a time.
    eprintln!(
        "cold and warm samples over {} mirrored projects",
        args.cold_projects
    );
    let cw = cold_warm(&hoard, &upstream, &cold).await?;

    // 5. The first fetch of the big mirrored project (one sample).
    eprintln!("first fetch of {MIRROR_PROJECT} ({} files)", args.files);
    let first = first_fetch(&hoard, &upstream).await?;

    // 6. What the four big-page endpoints serve, checked.
    let big_pages = [
        (S_HOSTED, format!("/{HOSTED}/simple/{HOSTED_PROJECT}/")),
        (
            S_VIRTUAL_HOSTED,
            format!("/{VIRTUAL}/simple/{HOSTED_PROJECT}/"),
        ),
        (
            S_VIRTUAL_MIRROR,
            format!("/{VIRTUAL}/simple/{MIRROR_PROJECT}/"),
        ),
        (S_MIRROR, format!("/{MIRROR}/simple/{MIRROR_PROJECT}/")),
    ];
    let mut sizes = Vec::new();
    for (server, path) in &big_pages {
        let json = hoard.get(path, JSON_ACCEPT).await?;
        let listed = json_files(path, &json)?.len();
        if listed != args.files {
            bail!("{path} lists {listed} files, expected {}", args.files);
        }
        let html = hoard.get(path, HTML_ACCEPT).await?;
        if !std::str::from_utf8(&html).unwrap_or("").contains("<a ") {
            bail!("{path}: the HTML page has no links");
        }
        sizes.push((*server, path.clone(), json.len() as u64, html.len() as u64));
    }
    // The small cached files: a hosted one, and a mirrored one (fetched by
    // the cold samples) directly and through the virtual repository.
    let hosted_file = hosted.first().context("no hosted file")?;
    let (cold_project, cold_file) = cold.first().context("no cold project")?;
    let small_files = [
        (
            S_HOSTED,
            format!("/{HOSTED}/files/{HOSTED_PROJECT}/{}", hosted_file.filename),
            hosted_file,
        ),
        (
            S_MIRROR,
            format!("/{MIRROR}/files/{cold_project}/{}", cold_file.filename),
            cold_file,
        ),
        (
            S_VIRTUAL_MIRROR,
            format!("/{VIRTUAL}/files/{cold_project}/{}", cold_file.filename),
            cold_file,
        ),
    ];
    for (_, path, a) in &small_files {
        let got = hoard.get(path, "*/*").await?;
        if got.as_ref() != a.bytes.as_slice() {
            bail!("{path}: hoard served other bytes than {}", a.filename);
        }
    }

    // 7. The rows, side by side.
    let hits_before = upstream.requests();
    let mut rows: Vec<Row> = Vec::new();
    for (label, accept) in [(PAGE_JSON, JSON_ACCEPT), (PAGE_HTML, HTML_ACCEPT)] {
        for (server, path, json_len, html_len) in &sizes {
            let e = Endpoint {
                server,
                pid: hoard.proc.pid(),
                addr: hoard.addr,
                path: path.clone(),
                accept: accept.to_string(),
                accept_encoding: None,
                len: if accept == JSON_ACCEPT {
                    *json_len
                } else {
                    *html_len
                },
            };
            rows.push(crate::measure::row(label, &e, plans.pages).await?);
        }
    }
    for (server, path, a) in &small_files {
        let e = Endpoint {
            server,
            pid: hoard.proc.pid(),
            addr: hoard.addr,
            path: path.clone(),
            accept: "*/*".to_string(),
            accept_encoding: None,
            len: a.bytes.len() as u64,
        };
        rows.push(crate::measure::row(SMALL_FILE, &e, plans.download).await?);
    }
    let upstream_during_rows = upstream.requests() - hits_before;
    if upstream_during_rows > 0 {
        notes.push(format!(
            "the upstream got {upstream_during_rows} requests during the measured rows (a revalidation?): the mirrored rows include them"
        ));
    }
    if cw.extra_upstream_hits > 0 {
        notes.push(format!(
            "the cold/warm samples caused {} upstream requests beyond one per cold page and one per cold file: some warm samples may have gone to the upstream",
            cw.extra_upstream_hits
        ));
    }

    let summary = summary_md(args, &cw, &first, &rows, upstream_during_rows);
    let setup = setup_md(args, &uploads, &cw, &sizes, &small_files);
    let report = Report {
        title: "hoard mirror benchmark (PyPI)".into(),
        baselines_blurb: "the hosted repository pypi-local".into(),
        command: command_line(),
        hoard_bin,
        plans,
        plan_names: ("pages", "files"),
        client_threads: common.client_threads,
        server_lines: vec![format!(
            "fixture upstream: hoard-testkit's `FixtureUpstream` in the bench's own process (threads, HTTP/1.1 keep-alive, gzip pages), on loopback; added latency {} ms",
            args.upstream_latency_ms
        )],
        setup_md: setup,
        rows,
        notes,
        git: git_description(),
    };
    // The report's own summary compares a server named `hoard` with
    // baselines; this one compares repositories of one hoard, so it has
    // its own, followed by the report's tables and sections.
    let full = report.markdown();
    let rest = full
        .find("\n## Results")
        .map_or(full.as_str(), |i| &full[i + 1..]);
    let md = format!(
        "# hoard mirror benchmark (PyPI), {}\n\n{summary}\n{rest}",
        now_utc()
    );
    common.publish(&md, "mirror")?;
    drop(hoard);
    drop(upstream);
    drop(work);
    Ok(())
}

async fn upload_hosted(
    hoard: &Hoard,
    wheels: &Arc<Vec<Artifact>>,
    concurrency: usize,
) -> Result<Uploads> {
    let url = format!("http://{}/{HOSTED}/", hoard.addr);
    let concurrency = concurrency.max(1);
    let elapsed = servers::upload_all(hoard, &url, wheels, concurrency).await?;
    Ok(Uploads {
        n: wheels.len(),
        elapsed,
        concurrency,
    })
}

async fn cold_warm(
    hoard: &Hoard,
    upstream: &FixtureUpstream,
    cold: &[(String, Artifact)],
) -> Result<ColdWarm> {
    let base = format!("http://{}", hoard.addr);
    // One request first, so that the connection is open before the samples.
    hoard.get("/+status", "application/json").await?;
    let (mut page_cold, mut page_warm, mut file_cold, mut file_warm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut file_bytes = 0;
    for (project, first) in cold {
        let page = format!("/{MIRROR}/simple/{project}/");
        let (t, body) =
            timed_get(&hoard.client, &format!("{base}{page}"), JSON_ACCEPT, false).await?;
        page_cold.push(t);
        let (t, again) =
            timed_get(&hoard.client, &format!("{base}{page}"), JSON_ACCEPT, false).await?;
        page_warm.push(t);
        if again != body {
            bail!("{page}: the warm page differs from the cold one");
        }
        let files = json_files(&page, &body)?;
        let path = files
            .iter()
            .find(|(name, _)| *name == first.filename)
            .map(|(_, path)| path.clone())
            .with_context(|| format!("{page} does not list {}", first.filename))?;
        if !path.starts_with(&format!("/{MIRROR}/files/")) {
            bail!(
                "{page} links {} at {path}, not on the mirror",
                first.filename
            );
        }
        for out in [&mut file_cold, &mut file_warm] {
            let (t, bytes) =
                timed_get(&hoard.client, &format!("{base}{path}"), "*/*", false).await?;
            if sha256_hex(&bytes) != first.sha256() {
                bail!("{path}: hoard served other bytes than the upstream listed");
            }
            file_bytes = bytes.len();
            out.push(t);
        }
    }
    let extra_upstream_hits = cold
        .iter()
        .map(|(project, first)| {
            upstream.page_hits(project).saturating_sub(1)
                + upstream.file_hits(&first.filename).saturating_sub(1)
        })
        .sum();

    // The upstream's own answers to the same requests (what hoard's cold
    // request waits for, at least).
    let direct = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let (mut upstream_page, mut upstream_file) = (Vec::new(), Vec::new());
    for (project, first) in cold {
        let url = upstream.project_url(project);
        upstream_page.push(timed_get(&direct, &url, UPSTREAM_ACCEPT, true).await?.0);
        let url = upstream.file_url(&first.filename);
        upstream_file.push(timed_get(&direct, &url, "*/*", false).await?.0);
    }
    Ok(ColdWarm {
        page_cold: Dist::of(page_cold),
        page_warm: Dist::of(page_warm),
        file_cold: Dist::of(file_cold),
        file_warm: Dist::of(file_warm),
        upstream_page: Dist::of(upstream_page),
        upstream_file: Dist::of(upstream_file),
        extra_upstream_hits,
        file_bytes,
    })
}

async fn first_fetch(hoard: &Hoard, upstream: &FixtureUpstream) -> Result<FirstFetch> {
    let serial = |v: serde_json::Value| {
        v["applied_serial"]
            .as_u64()
            .with_context(|| format!("/+status has no applied_serial: {v}"))
    };
    let url = format!("http://{}/{MIRROR}/simple/{MIRROR_PROJECT}/", hoard.addr);
    let serial_before = serial(hoard.status().await?)?;
    let (cold, _) = timed_get(&hoard.client, &url, JSON_ACCEPT, false).await?;
    let serial_after = serial(hoard.status().await?)?;
    let (warm, _) = timed_get(&hoard.client, &url, JSON_ACCEPT, false).await?;
    let direct = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let (upstream_t, gz) = timed_get(
        &direct,
        &upstream.project_url(MIRROR_PROJECT),
        UPSTREAM_ACCEPT,
        true,
    )
    .await?;
    Ok(FirstFetch {
        cold,
        warm,
        upstream: upstream_t,
        upstream_gzip_bytes: gz.len(),
        serial_before,
        serial_after,
    })
}

fn find<'a>(rows: &'a [Row], scenario: &str, server: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.server == server)
}

fn per_cpu(r: &Row) -> f64 {
    if r.server_cpu_s <= 0.0 {
        f64::NAN
    } else {
        r.measured.requests as f64 / r.server_cpu_s
    }
}

/// "X req/s = **R×** reference" parts of one scenario, against `reference`.
fn ratios(rows: &[Row], scenario: &str, reference: &str, others: &[&str]) -> Option<String> {
    let h = find(rows, scenario, reference)?;
    let mut parts = Vec::new();
    let mut cpu = Vec::new();
    for o in others {
        let Some(r) = find(rows, scenario, o) else {
            continue;
        };
        parts.push(format!(
            "{o} {} req/s = **{:.2}×**",
            fmt_num(r.measured.req_per_s()),
            r.measured.req_per_s() / h.measured.req_per_s()
        ));
        cpu.push(format!("{o} {:.2}×", per_cpu(r) / per_cpu(h)));
    }
    Some(format!(
        "- **{scenario}**: {}; against {reference} {} req/s\n  - per CPU-second of the server (req per server CPU-s: {reference} {}): {}",
        parts.join(", "),
        fmt_num(h.measured.req_per_s()),
        fmt_num(per_cpu(h)),
        cpu.join(", ")
    ))
}

fn summary_md(
    args: &MirrorArgs,
    cw: &ColdWarm,
    first: &FirstFetch,
    rows: &[Row],
    upstream_during_rows: usize,
) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "## Summary\n");
    let _ = writeln!(
        w,
        "Each ratio compares figures measured one after the other in this run, on this machine, with the same client. They are reported, not asserted.\n"
    );
    let latency = if args.upstream_latency_ms == 0 {
        "no added latency".to_string()
    } else {
        format!("{} ms added to every answer", args.upstream_latency_ms)
    };
    let _ = writeln!(
        w,
        "Cold against warm, through the fixture upstream on loopback ({latency}); {} projects, one request at a time (JSON page, then a {}-byte wheel it lists):\n",
        cw.page_cold.n, cw.file_bytes
    );
    let _ = writeln!(
        w,
        "| request | cold (first, fetched from the upstream) | warm (the same again) | cold p50 / warm p50 | the upstream's own answer, asked directly |"
    );
    let _ = writeln!(w, "|---|---|---|--:|---|");
    for (what, c, wm, up) in [
        (
            format!("page `GET /{MIRROR}/simple/{{project}}/`"),
            &cw.page_cold,
            &cw.page_warm,
            &cw.upstream_page,
        ),
        (
            format!("file `GET /{MIRROR}/files/{{project}}/{{filename}}`"),
            &cw.file_cold,
            &cw.file_warm,
            &cw.upstream_file,
        ),
    ] {
        let _ = writeln!(
            w,
            "| {what} | {} | p50 {} ms (max {}) | **{:.1}×** | p50 {} ms |",
            c.line(),
            fmt_ms(wm.p50),
            fmt_ms(wm.max),
            c.p50 / wm.p50,
            fmt_ms(up.p50)
        );
    }
    let _ = writeln!(
        w,
        "\nWarm pages of a {}-file project, {} connections: the virtual repository `{VIRTUAL}` and the mirror `{MIRROR}` against the hosted repository `{HOSTED}` (target: virtual at least 0.9× hosted):\n",
        args.files, args.concurrency
    );
    let others = [S_VIRTUAL_MIRROR, S_VIRTUAL_HOSTED, S_MIRROR];
    for sc in [PAGE_JSON, PAGE_HTML] {
        if let Some(line) = ratios(rows, sc, S_HOSTED, &others) {
            let _ = writeln!(w, "{line}");
        }
    }
    if let Some(line) = ratios(rows, SMALL_FILE, S_HOSTED, &[S_MIRROR, S_VIRTUAL_MIRROR]) {
        let _ = writeln!(w, "{line}");
    }
    let _ = writeln!(
        w,
        "\nFirst fetch of the {}-file project (one sample, informative): `GET /{MIRROR}/simple/{MIRROR_PROJECT}/` took {} ms cold (the upstream's page, {} bytes gzip; its files recorded in {} events, serial {} → {}; then hoard's page rendered), {} ms warm right after; the upstream alone answered the same page in {} ms.",
        args.files,
        fmt_ms(first.cold.as_secs_f64() * 1e3),
        first.upstream_gzip_bytes,
        first.serial_after.saturating_sub(first.serial_before),
        first.serial_before,
        first.serial_after,
        fmt_ms(first.warm.as_secs_f64() * 1e3),
        fmt_ms(first.upstream.as_secs_f64() * 1e3)
    );
    let _ = writeln!(
        w,
        "\nUpstream requests during the measured rows: {upstream_during_rows} (the mirror's `ttl_secs = {TTL_SECS}` outlasts the run, so the warm rows never ask the upstream)."
    );
    s
}

fn setup_md(
    args: &MirrorArgs,
    up: &Uploads,
    cw: &ColdWarm,
    sizes: &[(&'static str, String, u64, u64)],
    small_files: &[(&'static str, String, &Artifact)],
) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "## Data and setup\n");
    let _ = writeln!(
        w,
        "- one node (`hoard serve`), fresh data dir; repositories `{HOSTED}` (hosted), `{MIRROR}` (mirror of the fixture upstream's `/simple/`, `ttl_secs = {TTL_SECS}`) and `{VIRTUAL}` (virtual: members `{HOSTED}`, `{MIRROR}`; `upload_to = \"{HOSTED}\"`)"
    );
    let _ = writeln!(
        w,
        "- fixture upstream: {} projects `{COLD_PREFIX}-000` … of {} small wheels each (for the cold samples), and `{MIRROR_PROJECT}` with {} wheels (1.0.0 … 1.0.{}); pages carry PEP 658 metadata and upload times",
        args.cold_projects,
        args.cold_files,
        args.files,
        args.files.saturating_sub(1)
    );
    let _ = writeln!(
        w,
        "- hosted project `{HOSTED_PROJECT}`: {} wheels (1.0.0 … 1.0.{}) uploaded with twine's legacy API to `POST /{HOSTED}/`, {} at a time, in {:.1} s ({:.0}/s; informative)",
        up.n,
        up.n.saturating_sub(1),
        up.concurrency,
        up.elapsed.as_secs_f64(),
        up.n as f64 / up.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "- cold samples: for each project, `GET /{MIRROR}/simple/{{project}}/` (`Accept: {JSON_ACCEPT}`) twice, then the first file it lists twice, one request at a time on one keep-alive connection; the upstream counted {} requests beyond one per cold page and file. Then the same pages and files straight from the upstream (pages with hoard's `Accept` and `Accept-Encoding: gzip`)",
        cw.extra_upstream_hits
    );
    let _ = writeln!(w, "- the pages measured (bytes):\n");
    let _ = writeln!(w, "  | server | path | JSON | HTML |\n  |---|---|--:|--:|");
    for (server, path, json, html) in sizes {
        let _ = writeln!(w, "  | {server} | `{path}` | {json} | {html} |");
    }
    let _ = writeln!(w, "\n- the small files measured:\n");
    let _ = writeln!(w, "  | server | path | bytes |\n  |---|---|--:|");
    for (server, path, a) in small_files {
        let _ = writeln!(w, "  | {server} | `{path}` | {} |", a.bytes.len());
    }
    s
}
