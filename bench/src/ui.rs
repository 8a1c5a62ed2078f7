//! `hoard-bench ui`: the web UI's pages on an index of 10,000 projects (a
//! wheel each), one request at a time on one keep-alive connection: p50,
//! p99 and max per page, side by side with nginx serving the same bytes
//! (each page saved from hoard). The target is every page under
//! 50 ms; the nginx column shows what the network and client cost alone.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use hoard_testkit::{wheel, Artifact};

use crate::report::{self, fmt_ms};
use crate::servers::{self, Hoard, NodeSpec, StaticFiles};
use crate::Common;

const HOSTED: &str = "pypi-local";
const PREFIX: &str = "bench-ui";
/// The target of issue 11, per page.
const TARGET_MS: f64 = 50.0;

#[derive(Args, Debug, Clone)]
pub struct UiArgs {
    /// Projects in the index, one wheel each.
    #[arg(long, default_value_t = 10_000)]
    pub projects: usize,
    /// Timed requests per page (after 10 untimed ones).
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Concurrent uploads while filling the index (not measured).
    #[arg(long, default_value_t = 8)]
    pub upload_concurrency: usize,
}

/// The pages measured: a name, and the path on hoard.
fn pages(projects: usize) -> Vec<(&'static str, String)> {
    let middle = format!("{PREFIX}-{:05}", projects / 2);
    let prefix = format!("{PREFIX}-{:04}", projects / 20);
    vec![
        ("home (repositories and counts)", "/+ui/".into()),
        (
            "search, a prefix (10 hits)",
            format!("/+ui/+search?q={prefix}"),
        ),
        (
            "search, a substring (every project; 200 shown)",
            "/+ui/+search?q=ui-".into(),
        ),
        (
            "project page, through the virtual repository",
            format!("/+ui/pypi/{middle}"),
        ),
        ("changelog, newest 50", "/+ui/+changelog".into()),
        (
            "changelog, filtered by a project (scans back)",
            format!("/+ui/+changelog?project={middle}"),
        ),
        ("cluster", "/+ui/+cluster".into()),
        (
            "repository page (every project listed)",
            format!("/+ui/{HOSTED}/"),
        ),
    ]
}

struct Dist {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Dist {
    fn of(mut v: Vec<Duration>) -> Dist {
        v.sort();
        let q = |q: f64| {
            v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        };
        Dist {
            p50: q(0.5),
            p99: q(0.99),
            max: q(1.0),
        }
    }
}

/// `samples` sequential GETs of `path` (after 10 untimed), each to the
/// end of its body.
async fn sample(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    samples: usize,
) -> Result<Dist> {
    let url = format!("http://{addr}{path}");
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + 10 {
        let t = Instant::now();
        let response = client.get(&url).send().await?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        response.bytes().await?;
        if i >= 10 {
            times.push(t.elapsed());
        }
    }
    Ok(Dist::of(times))
}

/// `samples` GETs of `path`, each right after a write (a yank or an
/// un-yank of one file): the first view of a new serial, which caches
/// nothing from the one before.
async fn sample_after_writes(
    client: &reqwest::Client,
    hoard: &Hoard,
    path: &str,
    samples: usize,
) -> Result<Dist> {
    let admin = std::fs::read_to_string(hoard.data_dir.join("admin-token"))
        .context("read the admin token")?;
    let url = format!("http://{}{path}", hoard.addr);
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let yank = serde_json::json!({
            "repo": HOSTED,
            "project": format!("{PREFIX}-00000"),
            "version": "1.0",
            "undo": i % 2 == 1,
        });
        let response = client
            .post(format!("http://{}/+admin/yank", hoard.addr))
            .bearer_auth(admin.trim())
            .json(&yank)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("yank: {}", response.status());
        }
        let t = Instant::now();
        let response = client.get(&url).send().await?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        response.bytes().await?;
        times.push(t.elapsed());
    }
    Ok(Dist::of(times))
}

pub async fn run(common: &Common, args: &UiArgs, hoard_bin: PathBuf) -> Result<()> {
    let work = common.work_dir()?;
    let dir = work.path().to_path_buf();
    eprintln!("starting {}", hoard_bin.display());
    let hoard = Hoard::start_node(
        &hoard_bin,
        &NodeSpec {
            id: "bench-ui-1",
            dir: &dir,
            extra_toml: "",
            token_repo: Some(HOSTED),
            env: &[],
        },
    )
    .await?;
    eprintln!(
        "uploading {} projects, {} at a time",
        args.projects, args.upload_concurrency
    );
    let wheels: Arc<Vec<Artifact>> = Arc::new(
        (0..args.projects)
            .map(|i| wheel(&format!("{PREFIX}-{i:05}"), "1.0"))
            .collect(),
    );
    let url = format!("http://{}/{HOSTED}/", hoard.addr);
    let filled = servers::upload_all(&hoard, &url, &wheels, args.upload_concurrency).await?;

    // The same bytes for nginx: each page as hoard rendered it.
    let pages = pages(args.projects);
    let mut bodies = Vec::new();
    for (i, (name, path)) in pages.iter().enumerate() {
        let body = hoard.get(path, "text/html").await?;
        if !std::str::from_utf8(&body).unwrap_or("").contains("</html>") {
            bail!("{name}: {path} is not a whole page");
        }
        bodies.push((format!("/page{i}.html"), body));
    }
    let nginx = match servers::find_nginx(common.nginx.as_deref()) {
        Some(bin) if common.wants("nginx") => {
            let files: Vec<(&str, &[u8])> = bodies
                .iter()
                .map(|(p, b)| (p.as_str(), b.as_ref()))
                .collect();
            let files = StaticFiles::write(&dir, &files)?;
            let (proc, addr) =
                servers::start_nginx(&bin, &dir, &files, common.server_threads()).await?;
            Some((proc, addr, servers::nginx_version(&bin)))
        }
        _ => None,
    };

    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()?;
    let mut rows = Vec::new();
    for (i, (name, path)) in pages.iter().enumerate() {
        eprintln!("measuring {name}: {path}");
        let ours = sample(&client, hoard.addr, path, args.samples).await?;
        let theirs = match &nginx {
            Some((_, addr, _)) => Some(sample(&client, *addr, &bodies[i].0, args.samples).await?),
            None => None,
        };
        rows.push((*name, path.clone(), bodies[i].1.len(), ours, theirs));
    }
    eprintln!("measuring the home page right after writes");
    let after_write = sample_after_writes(&client, &hoard, "/+ui/", args.samples.min(100)).await?;
    let home_theirs = rows
        .first()
        .and_then(|r| r.4.as_ref().map(|t| (t.p50, t.p99)));
    let home_bytes = rows.first().map_or(0, |r| r.2);

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(
        w,
        "# Web UI pages on a {}-project index ({})\n",
        args.projects,
        report::now_utc()
    );
    w.push_str(&report::how_run(
        &crate::command_line(),
        &crate::git_description(),
        &hoard_bin,
    ));
    let _ = writeln!(
        w,
        "- one node, fresh data dir; {} projects `{PREFIX}-00000` … in `{HOSTED}` (a wheel each), uploaded {} at a time in {:.1} s (informative)",
        args.projects,
        args.upload_concurrency,
        filled.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "- each page: {} timed GETs after 10 untimed ones, one at a time on one keep-alive connection, to the end of the body; then the same from {}, serving each page's bytes as hoard rendered them",
        args.samples,
        nginx
            .as_ref()
            .map_or("no baseline (nginx not found or not asked for)".to_owned(), |n| n.2.clone())
    );
    let _ = writeln!(w, "- the target: every page under {TARGET_MS} ms (p99)\n");
    let _ = writeln!(
        w,
        "| page | path | bytes | hoard p50 ms | hoard p99 ms | hoard max ms | nginx p50 ms | nginx p99 ms | hoard / nginx p50 | p99 under {TARGET_MS} ms |"
    );
    let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|---|");
    for (name, path, bytes, ours, theirs) in &rows {
        let (tp50, tp99, ratio) = match theirs {
            Some(t) => (
                fmt_ms(t.p50),
                fmt_ms(t.p99),
                format!("{:.1}×", ours.p50 / t.p50),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            w,
            "| {name} | `{path}` | {bytes} | {} | {} | {} | {tp50} | {tp99} | {ratio} | {} |",
            fmt_ms(ours.p50),
            fmt_ms(ours.p99),
            fmt_ms(ours.max),
            if ours.p99 < TARGET_MS {
                "yes"
            } else {
                "**no**"
            }
        );
    }
    let (tp50, tp99, ratio) = match home_theirs {
        Some((p50, p99)) => (
            fmt_ms(p50),
            fmt_ms(p99),
            format!("{:.1}×", after_write.p50 / p50),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let _ = writeln!(
        w,
        "| home, the first view after each write (counts and sizes rescanned) | `/+ui/` | {home_bytes} | {} | {} | {} | {tp50} | {tp99} | {ratio} | {} |",
        fmt_ms(after_write.p50),
        fmt_ms(after_write.p99),
        fmt_ms(after_write.max),
        if after_write.p99 < TARGET_MS { "yes" } else { "**no**" }
    );
    let _ = writeln!(
        w,
        "\nA repository's counts and size are kept per serial: the home page is a lookup until the next write, then one scan of each repository."
    );
    common.publish(&md, "ui")
}
