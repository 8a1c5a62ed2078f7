//! `hoard-bench`: a single-node benchmark of hoard, measured side by side
//! with static file servers that serve the very same bytes. See README.md.

mod load;
mod procs;
mod report;
mod servers;
mod wheel;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use crate::load::{Plan, Target};
use crate::procs::{cpu_seconds_self, cpu_seconds_tree, Proc};
use crate::report::{Report, Row, Setup};
use crate::servers::{Hoard, StaticFiles, HTML_ACCEPT, JSON_ACCEPT};

const PAGES_PROJECT: &str = "bench-pages";
const BIG_PROJECT: &str = "bench-big";

#[derive(Parser, Debug)]
#[command(
    name = "hoard-bench",
    about = "Benchmark one hoard node (simple pages, downloads) side by side with static servers"
)]
struct Args {
    /// The hoard binary to run (a release build).
    #[arg(long, env = "HOARD_BIN")]
    hoard_bin: Option<PathBuf>,
    /// Keep-alive connections for the simple-page scenarios.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Keep-alive connections for the download scenario.
    #[arg(long, default_value_t = 4)]
    download_concurrency: usize,
    /// Measurement window per scenario and server, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up before each measurement window, in seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Files (versions 1.0.0, 1.0.1, …) of the simple-page project.
    #[arg(long, default_value_t = 200)]
    files: usize,
    /// Size of the incompressible payload of the big wheel, in MB (10^6 bytes).
    #[arg(long, default_value_t = 50)]
    big_mb: usize,
    /// Threads of the load generator's runtime (it shares the machine with
    /// the server under test).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Baselines to run: any of `nginx`, `hyper` (static servers of the same
    /// bytes), `devpi` (a competitor, if installed) (comma-separated), or `none`.
    #[arg(long, default_value = "nginx,hyper,devpi", value_delimiter = ',')]
    baselines: Vec<String>,
    /// devpi-server binary (default: target/bench-tools/devpi/bin/devpi-server).
    #[arg(long)]
    devpi: Option<PathBuf>,
    /// nginx binary (default: found on PATH or in /usr/sbin).
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// Worker processes of nginx / threads of the hyper static server
    /// (default: the number of CPUs, like hoard's runtime).
    #[arg(long)]
    server_threads: Option<usize>,
    /// Where to write `<date>-single-node.md`.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Print the results only; write no file.
    #[arg(long)]
    no_write: bool,
    /// Keep the temp dir (hoard's data, logs, nginx config) after the run.
    #[arg(long)]
    keep: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Internal: the in-memory static baseline server.
    #[command(hide = true)]
    ServeStatic {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Cmd::ServeStatic {
        listen,
        root,
        threads,
    }) = &args.cmd
    {
        return match servers::serve_static(*listen, root, *threads) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("serve-static: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        tokio::select! {
            r = run(&args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn resolve_hoard_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => {
            let mut v = Vec::new();
            if let Ok(exe) = std::env::current_exe() {
                if let Some(dir) = exe.parent() {
                    v.push(dir.join("hoard"));
                }
            }
            v.push(PathBuf::from("target/release/hoard"));
            v.push(workspace_dir().join("target/release/hoard"));
            v
        }
    };
    for c in &candidates {
        if c.is_file() {
            return Ok(std::fs::canonicalize(c)?);
        }
    }
    bail!(
        "no hoard binary at {:?}: build it with `cargo build --release -p hoard`, \
         or pass --hoard-bin / HOARD_BIN",
        candidates
    )
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

async fn run(args: &Args) -> Result<()> {
    let hoard_bin = resolve_hoard_bin(args.hoard_bin.as_deref())?;
    if hoard_bin.components().any(|c| c.as_os_str() == "debug") {
        eprintln!(
            "warning: {} looks like a debug build; figures will not be meaningful",
            hoard_bin.display()
        );
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server_threads = args.server_threads.unwrap_or(ncpu);
    let plan = Plan {
        concurrency: args.concurrency,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let dl_plan = Plan {
        concurrency: args.download_concurrency,
        ..plan
    };

    let tmp = tempfile::Builder::new().prefix("hoard-bench-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    eprintln!("hoard-bench: working in {}", dir.display());

    // 1. hoard, with 200 small wheels of one project and one big wheel.
    eprintln!("starting {}", hoard_bin.display());
    let hoard = Hoard::start(&hoard_bin, &dir).await?;
    eprintln!("uploading {} wheels of {PAGES_PROJECT}", args.files);
    let mut upload_times = Vec::with_capacity(args.files);
    let small: Vec<wheel::Wheel> = (0..args.files)
        .map(|i| wheel::build(PAGES_PROJECT, &format!("1.0.{i}"), None, false))
        .collect();
    let t0 = Instant::now();
    for w in &small {
        upload_times.push(hoard.upload(w).await?);
    }
    let small_total = t0.elapsed();
    upload_times.sort();
    eprintln!("building and uploading the {} MB wheel", args.big_mb);
    let payload = wheel::random_bytes(args.big_mb * 1_000_000, 42);
    let big = wheel::build(BIG_PROJECT, "1.0.0", Some(&payload), true);
    drop(payload);
    let big_upload = hoard.upload(&big).await?;

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
    let files = StaticFiles::write(&dir, &html, &json, &big.bytes)?;

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
    let wants = |b: &str| args.baselines.iter().any(|x| x.trim() == b);
    if wants("nginx") {
        match servers::find_nginx(args.nginx.as_deref()) {
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
        match servers::find_devpi(args.devpi.as_deref(), &workspace_dir()) {
            Some(bin) => {
                eprintln!("starting devpi-server and uploading the same wheels");
                let devpi = servers::Devpi::start(&bin, &dir).await?;
                let t0 = Instant::now();
                for w in &small {
                    devpi.upload(w).await?;
                }
                setup.devpi_small_upload_total = Some(t0.elapsed());
                setup.devpi_big_upload = Some(devpi.upload(&big).await?);
                let page = format!("{}/+simple/{PAGES_PROJECT}/", servers::DEVPI_INDEX);
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

    let mut rows = Vec::new();
    for scenario in [Scenario::Html, Scenario::Json, Scenario::Download] {
        for s in &servers {
            let (path, accept, len, p) = match scenario {
                Scenario::Html => (&s.html, HTML_ACCEPT, s.html_len, plan),
                Scenario::Json => match s.json_len {
                    Some(len) => (&s.json, JSON_ACCEPT, len, plan),
                    None => continue,
                },
                Scenario::Download => (&s.wheel, "*/*", s.wheel_len, dl_plan),
            };
            let target = Target {
                addr: s.addr,
                path: path.clone(),
                accept: Some(accept.to_string()),
                expect_len: len,
            };
            eprintln!(
                "{} / {}: {} connections, {:.0} s warm-up + {:.0} s",
                scenario.label(),
                s.name,
                p.concurrency,
                p.warmup.as_secs_f64(),
                p.duration.as_secs_f64()
            );
            load::probe(&target).await?;
            let (from, end) = load::window(p);
            let pid = s.proc.pid();
            let sampler = async move {
                tokio::time::sleep_until(from.into()).await;
                let a = (cpu_seconds_tree(pid), cpu_seconds_self());
                tokio::time::sleep_until(end.into()).await;
                let b = (cpu_seconds_tree(pid), cpu_seconds_self());
                (b.0 - a.0, b.1 - a.1)
            };
            let (m, (server_cpu, client_cpu)) =
                tokio::join!(load::run(&target, p, from, end), sampler);
            let m = m?;
            let row = Row {
                scenario: scenario.label(),
                server: s.name,
                concurrency: p.concurrency,
                measured: m,
                server_cpu_s: server_cpu,
                client_cpu_s: client_cpu,
            };
            eprintln!("  {}", row.one_line());
            rows.push(row);
        }
    }

    let report = Report {
        command: command_line(args),
        hoard_bin,
        nginx_version,
        devpi_version,
        plan,
        dl_plan,
        client_threads: args.client_threads,
        server_threads,
        setup,
        rows,
        notes,
        git: git_description(),
    };
    let md = report.markdown();
    println!("{md}");
    if !args.no_write {
        let out_dir = args
            .out_dir
            .clone()
            .unwrap_or_else(|| workspace_dir().join("bench/results"));
        std::fs::create_dir_all(&out_dir)?;
        let path = out_dir.join(format!("{}-single-node.md", report::today()));
        std::fs::write(&path, &md)?;
        eprintln!("wrote {}", path.display());
    }
    drop(servers);
    if args.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
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

/// The command as typed (arguments shell-quoted when needed), with
/// HOARD_BIN if it was set.
fn command_line(_args: &Args) -> String {
    let quote = |s: String| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c))
        {
            s
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut parts: Vec<String> = Vec::new();
    if let Ok(b) = std::env::var("HOARD_BIN") {
        parts.push(format!("HOARD_BIN={}", quote(b)));
    }
    parts.extend(std::env::args().map(quote));
    parts.join(" ")
}

fn git_description() -> String {
    let dir = workspace_dir();
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit} (with uncommitted changes in the working tree)")
            } else {
                commit
            }
        }
        None => "unknown (not a git checkout)".to_string(),
    }
}
