//! `hoard-bench pypi`: one node's simple pages (HTML and PEP 691 JSON) and a
//! big wheel download, side by side with nginx and a hyper static server
//! serving the very same bytes, and devpi-server on its own pages.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use hoard_testkit::tools::workspace_root;
use hoard_testkit::{wheel, Artifact, WheelSpec};

use crate::measure::{Endpoint, Plans};
use crate::procs::Proc;
use crate::report::{Report, Row};
use crate::servers::{self, Hoard, StaticFiles, HTML_ACCEPT, JSON_ACCEPT};
use crate::{command_line, git_description, Common};

pub const PAGES_PROJECT: &str = "bench-pages";
pub const BIG_PROJECT: &str = "bench-big";

#[derive(Args, Debug, Clone)]
pub struct PypiArgs {
    /// Keep-alive connections for the simple-page scenarios.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Keep-alive connections for the download scenario.
    #[arg(long, default_value_t = 4)]
    pub download_concurrency: usize,
    /// Files (versions 1.0.0, 1.0.1, …) of the simple-page project.
    #[arg(long, default_value_t = 200)]
    pub files: usize,
    /// Size of the incompressible payload of the big wheel, in MB (10^6 bytes).
    #[arg(long, default_value_t = 50)]
    pub big_mb: usize,
    /// devpi-server binary (default: target/bench-tools/devpi/bin/devpi-server).
    #[arg(long)]
    pub devpi: Option<PathBuf>,
}

impl Default for PypiArgs {
    fn default() -> Self {
        PypiArgs {
            concurrency: 16,
            download_concurrency: 4,
            files: 200,
            big_mb: 50,
            devpi: None,
        }
    }
}

/// The fixture as uploaded (one sample each: informative, not a benchmark).
pub struct Uploads {
    /// The wheels of `bench-pages`, 1.0.0, 1.0.1, …
    pub small: Vec<Artifact>,
    /// Their upload times, sorted.
    pub upload_times: Vec<Duration>,
    pub small_total: Duration,
    /// The big wheel of `bench-big`.
    pub big: Artifact,
    pub big_upload: Duration,
}

/// Uploads `files` small wheels of `bench-pages` and one wheel of
/// `bench-big` with a `big_mb` MB incompressible member, one at a time.
pub async fn upload_fixture(hoard: &Hoard, files: usize, big_mb: usize) -> Result<Uploads> {
    eprintln!("uploading {files} wheels of {PAGES_PROJECT}");
    let mut upload_times = Vec::with_capacity(files);
    let small: Vec<Artifact> = (0..files)
        .map(|i| wheel(PAGES_PROJECT, &format!("1.0.{i}")))
        .collect();
    let t0 = Instant::now();
    for w in &small {
        upload_times.push(hoard.upload(w).await?.elapsed);
    }
    let small_total = t0.elapsed();
    upload_times.sort();
    eprintln!("building and uploading the {big_mb} MB wheel");
    let big = WheelSpec::new(BIG_PROJECT, "1.0.0")
        .padding(big_mb * 1_000_000, 42)
        .build();
    let big_upload = hoard.upload(&big).await?.elapsed;
    Ok(Uploads {
        small,
        upload_times,
        small_total,
        big,
        big_upload,
    })
}

/// The upload phase (one sample each: informative, not a benchmark).
struct Setup {
    pub files: usize,
    pub small_upload_total: Duration,
    pub small_upload_p50: Duration,
    pub small_upload_max: Duration,
    pub big_bytes: u64,
    pub big_upload: Duration,
    pub html_bytes: u64,
    pub json_bytes: u64,
    pub devpi_small_upload_total: Option<Duration>,
    pub devpi_big_upload: Option<Duration>,
    /// devpi's own pages of the same project: (HTML bytes, JSON bytes).
    pub devpi_pages: Option<(u64, Option<u64>)>,
}

/// One server that serves the three scenarios.
struct Server {
    name: &'static str,
    proc: Proc,
    addr: SocketAddr,
    html: String,
    json: String,
    wheel: String,
    html_len: u64,
    /// None: the server has no JSON page (the scenario is skipped for it).
    json_len: Option<u64>,
    wheel_len: u64,
}

#[derive(Clone, Copy)]
enum Scenario {
    Html,
    Json,
    Download,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::Html => "simple page, HTML",
            Scenario::Json => "simple page, JSON",
            Scenario::Download => "download big wheel",
        }
    }
}

pub async fn run(common: &Common, args: &PypiArgs, hoard_bin: PathBuf) -> Result<()> {
    let server_threads = common.server_threads();
    let plans = Plans::new(
        args.concurrency,
        args.download_concurrency,
        common.warmup,
        common.duration,
    );
    let work = common.work_dir()?;
    let dir = work.path().to_path_buf();

    // 1. hoard, with 200 small wheels of one project and one big wheel.
    eprintln!("starting {}", hoard_bin.display());
    let hoard = Hoard::start(&hoard_bin, &dir).await?;
    let Uploads {
        small,
        upload_times,
        small_total,
        big,
        big_upload,
    } = upload_fixture(&hoard, args.files, args.big_mb).await?;

    // 2. What hoard serves: the two pages and the wheel, checked.
    let page_path = format!("/pypi/simple/{PAGES_PROJECT}/");
    let html = hoard.get(&page_path, HTML_ACCEPT).await?;
    let json = hoard.get(&page_path, JSON_ACCEPT).await?;
    let listed = serde_json::from_slice::<serde_json::Value>(&json).context("hoard's JSON page")?
        ["files"]
        .as_array()
        .map_or(0, Vec::len);
    if listed != args.files {
        bail!(
            "hoard's JSON page lists {listed} files, expected {}",
            args.files
        );
    }
    if !std::str::from_utf8(&html).unwrap_or("").contains("<a ") {
        bail!(
            "hoard's HTML page has no links: {:?}",
            String::from_utf8_lossy(&html)
        );
    }
    let wheel_path = format!("/pypi/files/{BIG_PROJECT}/{}", big.filename);
    let served = hoard.get(&wheel_path, "*/*").await?;
    if served.as_ref() != big.bytes.as_slice() {
        bail!("hoard served different bytes for {}", big.filename);
    }
    drop(served);
    let files = StaticFiles::write(
        &dir,
        &[
            (servers::STATIC_HTML, &html),
            (servers::STATIC_JSON, &json),
            (servers::STATIC_WHEEL, &big.bytes),
        ],
    )?;

    let mut setup = Setup {
        files: args.files,
        small_upload_total: small_total,
        small_upload_p50: upload_times[upload_times.len() / 2],
        small_upload_max: *upload_times.last().unwrap_or(&Duration::ZERO),
        big_bytes: big.bytes.len() as u64,
        big_upload,
        html_bytes: html.len() as u64,
        json_bytes: json.len() as u64,
        devpi_small_upload_total: None,
        devpi_big_upload: None,
        devpi_pages: None,
    };

    // 3. The servers, side by side.
    let mut notes = Vec::new();
    let mut servers = vec![Server {
        name: "hoard",
        addr: hoard.addr,
        proc: hoard.proc,
        html: page_path.clone(),
        json: page_path.clone(),
        wheel: wheel_path.clone(),
        html_len: setup.html_bytes,
        json_len: Some(setup.json_bytes),
        wheel_len: setup.big_bytes,
    }];
    let mut nginx_version = None;
    let wants = |b: &str| common.wants(b);
    if wants("nginx") {
        match servers::find_nginx(common.nginx.as_deref()) {
            Some(bin) => {
                nginx_version = Some(servers::nginx_version(&bin));
                let (proc, addr) = servers::start_nginx(&bin, &dir, &files, server_threads).await?;
                servers.push(static_server("nginx", proc, addr, &setup));
            }
            None => notes.push(
                "nginx not found (apt-get install nginx): nginx baseline skipped".to_string(),
            ),
        }
    }
    if wants("hyper") {
        let (proc, addr) = servers::start_static(&dir, &files, server_threads).await?;
        servers.push(static_server("hyper-static", proc, addr, &setup));
    }
    for s in &servers[1..] {
        servers::verify_same_bytes(s.addr, &s.html, &html).await?;
        servers::verify_same_bytes(s.addr, &s.json, &json).await?;
        servers::verify_same_bytes(s.addr, &s.wheel, &big.bytes).await?;
    }
    let mut devpi_version = None;
    if wants("devpi") {
        match crate::devpi::find_devpi(args.devpi.as_deref(), &workspace_root()) {
            Some(bin) => {
                eprintln!("starting devpi-server and uploading the same wheels");
                let devpi = crate::devpi::Devpi::start(&bin, &dir).await?;
                let t0 = Instant::now();
                for w in &small {
                    devpi.upload(w).await?;
                }
                setup.devpi_small_upload_total = Some(t0.elapsed());
                setup.devpi_big_upload = Some(devpi.upload(&big).await?);
                let page = format!("{}/+simple/{PAGES_PROJECT}/", crate::devpi::DEVPI_INDEX);
                let (_, dhtml) = devpi.get(&page, HTML_ACCEPT).await?;
                let (ct, djson) = devpi.get(&page, JSON_ACCEPT).await?;
                let json_len = if ct.contains("json") {
                    Some(djson.len() as u64)
                } else {
                    notes.push(format!(
                        "devpi-server answered `Accept: {JSON_ACCEPT}` with {ct:?}: no JSON row for it"
                    ));
                    None
                };
                let wheel = devpi.file_path(BIG_PROJECT, &big.filename).await?;
                let (_, served) = devpi.get(&wheel, "*/*").await?;
                if served.as_ref() != big.bytes.as_slice() {
                    bail!("devpi-server served different bytes for {}", big.filename);
                }
                setup.devpi_pages = Some((dhtml.len() as u64, json_len));
                devpi_version = Some(devpi.version.clone());
                servers.push(Server {
                    name: "devpi-server",
                    proc: devpi.proc,
                    addr: devpi.addr,
                    html: page.clone(),
                    json: page,
                    wheel,
                    html_len: dhtml.len() as u64,
                    json_len,
                    wheel_len: setup.big_bytes,
                });
            }
            None => notes.push(
                "devpi-server not installed (python3 -m venv target/bench-tools/devpi && \
                 target/bench-tools/devpi/bin/pip install devpi-server): devpi baseline skipped"
                    .to_string(),
            ),
        }
    }
    drop(big);
    drop(small);

    let mut rows: Vec<Row> = Vec::new();
    for scenario in [Scenario::Html, Scenario::Json, Scenario::Download] {
        for s in &servers {
            let (path, accept, len, p) = match scenario {
                Scenario::Html => (&s.html, HTML_ACCEPT, s.html_len, plans.pages),
                Scenario::Json => match s.json_len {
                    Some(len) => (&s.json, JSON_ACCEPT, len, plans.pages),
                    None => continue,
                },
                Scenario::Download => (&s.wheel, "*/*", s.wheel_len, plans.download),
            };
            let e = Endpoint {
                server: s.name,
                pid: s.proc.pid(),
                addr: s.addr,
                path: path.clone(),
                accept: accept.to_string(),
                accept_encoding: None,
                len,
            };
            rows.push(crate::measure::row(scenario.label(), &e, p).await?);
        }
    }

    let mut server_lines = Vec::new();
    if let Some(v) = &nginx_version {
        server_lines.push(format!(
            "nginx {v}: {server_threads} worker processes, sendfile, open_file_cache, access log off"
        ));
    }
    if rows.iter().any(|r| r.server == "hyper-static") {
        server_lines.push(format!(
            "hyper-static: hyper 1 HTTP/1.1 serving the same files from memory, {server_threads} runtime threads"
        ));
    }
    if let Some(v) = &devpi_version {
        server_lines.push(format!(
            "devpi-server {v} (competitor; its defaults, `--offline-mode`, one index `root/bench` with no bases): it renders its own pages of the same files"
        ));
    }
    let report = Report {
        title: "hoard single-node benchmark (PyPI)".into(),
        baselines_blurb: "nginx and hyper-static serve the same bytes; devpi-server, a competitor, its own pages of the same files".into(),
        command: command_line(),
        hoard_bin,
        plans,
        plan_names: ("pages", "download"),
        client_threads: common.client_threads,
        server_lines,
        setup_md: setup.markdown(),
        rows,
        notes,
        git: git_description(),
    };
    common.publish(&report.markdown(), "single-node")?;
    drop(servers);
    drop(work);
    Ok(())
}

impl Setup {
    fn markdown(&self) -> String {
        let st = self;
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "## Data and uploads\n");
        let _ = writeln!(
            w,
            "- simple-page project `bench-pages`: {} wheels (1.0.0 … 1.0.{}); HTML page {} bytes, JSON page {} bytes",
            st.files,
            st.files.saturating_sub(1),
            st.html_bytes,
            st.json_bytes
        );
        let _ = writeln!(
            w,
            "- big wheel of `bench-big`: {} bytes (incompressible payload, stored)",
            st.big_bytes
        );
        let _ = writeln!(
            w,
            "- uploads (one sample each, informative): {} small wheels one at a time in {:.2} s ({:.0}/s; median {:.1} ms, max {:.1} ms); the big wheel in {:.2} s ({:.0} MB/s)",
            st.files,
            st.small_upload_total.as_secs_f64(),
            st.files as f64 / st.small_upload_total.as_secs_f64(),
            st.small_upload_p50.as_secs_f64() * 1e3,
            st.small_upload_max.as_secs_f64() * 1e3,
            st.big_upload.as_secs_f64(),
            st.big_bytes as f64 / 1e6 / st.big_upload.as_secs_f64()
        );
        if let (Some(total), Some(big)) = (st.devpi_small_upload_total, st.devpi_big_upload) {
            let _ = writeln!(
                w,
                "- devpi-server, same uploads: {} small wheels in {:.2} s ({:.0}/s); the big wheel in {:.2} s ({:.0} MB/s)",
                st.files,
                total.as_secs_f64(),
                st.files as f64 / total.as_secs_f64(),
                big.as_secs_f64(),
                st.big_bytes as f64 / 1e6 / big.as_secs_f64()
            );
        }
        if let Some((h, j)) = st.devpi_pages {
            let _ = writeln!(
                w,
                "- devpi-server's own pages of `bench-pages` (not the same bytes as hoard's): HTML {h} bytes, JSON {}",
                j.map_or("none".to_string(), |j| format!("{j} bytes"))
            );
        }
        s
    }
}

fn static_server(name: &'static str, proc: Proc, addr: SocketAddr, setup: &Setup) -> Server {
    let (html_len, json_len, wheel_len) = (setup.html_bytes, setup.json_bytes, setup.big_bytes);
    Server {
        name,
        proc,
        addr,
        html: servers::STATIC_HTML.to_string(),
        json: servers::STATIC_JSON.to_string(),
        wheel: servers::STATIC_WHEEL.to_string(),
        html_len,
        json_len: Some(json_len),
        wheel_len,
    }
}
