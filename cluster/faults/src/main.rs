//! The fault suite of hoard's compose cluster (`cluster/compose.yaml`).
//!
//! `hoard-faults run` brings the three-datacenter cluster up from nothing,
//! then runs each scenario (kills, partitions, a slow WAN, a full disk)
//! while clients upload and read on every node. After each, it checks the
//! history: no acknowledged write lost, one acknowledging node per term,
//! monotonic reads per node, equal digests once healed, and writes
//! accepted again in bounded time. `hoard-faults proxy` is the delaying
//! TCP forwarder that the slow-WAN scenario runs in a container.

mod docker;
mod history;
mod proxy;
mod scenarios;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use crate::docker::{nodes, Compose, VOTERS};
use crate::scenarios::{refresh_urls, wait_until, Report, Suite};
use crate::workload::{http_client, status, Shared};

#[derive(Parser)]
#[command(
    name = "hoard-faults",
    about = "hoard's fault suite against the compose cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring the compose cluster up and run the scenarios against it.
    Run {
        /// Shorter holds: one pass of each scenario for CI.
        #[arg(long)]
        quick: bool,
        /// Only these scenarios (repeatable).
        #[arg(long)]
        only: Vec<String>,
        /// The image to run (built by cluster/build-image.sh).
        #[arg(long, default_value = "hoard:latest")]
        image: String,
        #[arg(long, default_value = "cluster/compose.yaml")]
        compose: PathBuf,
        /// Where to write the results table (Markdown).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Leave the cluster running afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Forward TCP connections with a delay in each direction.
    Proxy {
        #[arg(long, default_value_t = 50)]
        delay_ms: u64,
        /// LISTEN=TARGET, e.g. 0.0.0.0:4041=172.20.0.3:4041 (repeatable).
        #[arg(long, required = true)]
        forward: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hoard-faults: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Proxy { delay_ms, forward } => {
            let pairs = forward
                .iter()
                .map(|f| {
                    f.split_once('=')
                        .map(|(l, t)| (l.to_owned(), t.to_owned()))
                        .with_context(|| format!("--forward {f}: use LISTEN=TARGET"))
                })
                .collect::<Result<Vec<_>>>()?;
            proxy::run(pairs, Duration::from_millis(delay_ms))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            quick,
            only,
            image,
            compose,
            results,
            keep,
        } => {
            let faults_dir = std::env::current_exe()?
                .parent()
                .context("the binary's directory")?
                .to_path_buf();
            let suite = Suite {
                compose: Compose::new(&compose, &image),
                image,
                faults_dir,
                hold: Duration::from_secs(if quick { 4 } else { 10 }),
            };
            let outcome = run_suite(&suite, quick, &only, results.as_deref());
            if !keep {
                if let Err(e) = suite.compose.down() {
                    eprintln!("hoard-faults: tearing the cluster down: {e:#}");
                }
            }
            outcome
        }
    }
}

fn run_suite(
    suite: &Suite,
    quick: bool,
    only: &[String],
    results: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let scenarios: Vec<_> = scenarios::all()
        .into_iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
        .collect();
    if scenarios.is_empty() {
        bail!("no scenario is called {only:?}");
    }
    eprintln!("bringing the compose cluster up");
    suite.compose.up_fresh()?;
    let shared = Shared::new(Default::default(), String::new());
    refresh_urls(&suite.compose, &shared)?;
    wait_for_cluster(&shared)?;
    let token = upload_token(&shared, &admin_token(&suite.compose)?)?;
    let urls = shared
        .urls
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let shared = Shared::new(urls, token);
    let smoke = twine_and_pip_through_replicas(&shared)?;
    // Enough for a fresh replica to take a moment over: the
    // kill-replica-catching-up scenario kills it halfway.
    if quick {
        preload(&shared, 400, 32 << 10)?;
    } else {
        preload(&shared, 600, 256 << 10)?;
    }

    let mut reports = Vec::new();
    for (tag, scenario) in scenarios.iter().enumerate() {
        let shared = shared.fresh();
        refresh_urls(&suite.compose, &shared)?;
        reports.push(suite.run(scenario, tag as u32 + 1, shared)?);
    }
    let mut table = run_header(&suite.image);
    table.push_str(&results_table(&reports, quick));
    table.push_str(&format!("\nBefore the scenarios: {smoke}.\n"));
    println!("{table}");
    if let Some(path) = results {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.verdict.passed()).collect();
    for report in &failed {
        eprintln!(
            "FAILED {}:\n{}",
            report.name,
            report.failure_detail.as_deref().unwrap_or_default()
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Waits until every node answers healthy and the group has three voters.
fn wait_for_cluster(shared: &Shared) -> Result<()> {
    let http = http_client(Duration::from_secs(1));
    let ready = wait_until(Duration::from_secs(180), || {
        for node in nodes() {
            let s = status(&http, &shared.url(node)?)?;
            if s["health"].as_str() != Some("ok") {
                return None;
            }
        }
        let s = status(&http, &shared.url(VOTERS[0])?)?;
        (s["voters"].as_array()?.len() == 3).then_some(())
    });
    ready.context("the cluster did not come up with three healthy voters within 180 s")
}

/// voter1's admin token, from its data volume.
fn admin_token(compose: &Compose) -> Result<String> {
    let path = compose.volume_path("voter1")?.join("admin-token");
    let token =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(token.trim().to_owned())
}

/// A cluster-wide upload token, made with voter1's admin token (which
/// only voter1 itself takes).
fn upload_token(shared: &Shared, admin: &str) -> Result<String> {
    let base = shared.url(VOTERS[0]).context("no address for voter1")?;
    let response = http_client(Duration::from_secs(10))
        .post(format!("{base}/+admin/tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"perm": "upload", "label": "fault-suite"}))
        .send()?;
    let status = response.status();
    let answer: serde_json::Value = response.json().context("token answer")?;
    answer["token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("creating an upload token: {status} {answer}"))
}

/// The real clients against the containers: twine uploads a wheel through
/// replica2 (which passes it to the leader), and pip installs it through
/// replica3.
fn twine_and_pip_through_replicas(shared: &Shared) -> Result<String> {
    use std::process::Command;
    let tools = hoard_testkit::tools::py_tools();
    let dir = tempfile::tempdir()?;
    let wheel = hoard_testkit::artifacts::wheel("fault-smoke", "1.0");
    let path = wheel.write_to(dir.path());
    // The ports compose publishes on 127.0.0.1 (pip trusts plain HTTP
    // only on localhost), as cluster/README.md uses them.
    let upload_via = "http://127.0.0.1:4121";
    let install_via = "http://127.0.0.1:4131";
    let mut twine = Command::new(&tools.twine);
    hoard_testkit::tools::isolate_python_env(&mut twine)
        .args(["upload", "--non-interactive", "--disable-progress-bar"])
        .arg("--repository-url")
        .arg(format!("{upload_via}/pypi/"))
        .args(["-u", "__token__", "-p", &shared.token])
        .arg(&path);
    let out = twine.output()?;
    if !out.status.success() {
        bail!(
            "twine upload through replica2 failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The replica lists the file once its bytes are on its own disk.
    let http = http_client(Duration::from_secs(2));
    wait_until(Duration::from_secs(30), || {
        let (_, files) = workload::list(&http, install_via, "fault-smoke").ok()?;
        files.contains_key(&wheel.filename).then_some(())
    })
    .context("replica3 never listed the uploaded wheel")?;
    let target = dir.path().join("site");
    let mut pip = Command::new(&tools.python3);
    hoard_testkit::tools::isolate_python_env(&mut pip)
        .args(["-m", "pip", "install", "--no-cache-dir", "--target"])
        .arg(&target)
        .arg("--index-url")
        .arg(format!("{install_via}/pypi/simple/"))
        .arg("fault-smoke==1.0");
    let out = pip.output()?;
    if !out.status.success() || !target.join("fault_smoke").join("__init__.py").is_file() {
        bail!(
            "pip install through replica3 failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("twine uploaded through replica2, pip installed through replica3");
    Ok("twine uploaded a wheel through replica2's container and pip installed it through replica3's".into())
}

/// Fills the index so that a fresh replica has something to catch up on.
fn preload(shared: &Shared, files: u32, size: usize) -> Result<()> {
    eprintln!("preloading {files} files of {} KiB", size >> 10);
    let http = http_client(Duration::from_secs(30));
    let leader = scenarios::leader(shared)?;
    let base = shared.url(leader).context("no leader address")?;
    for n in 0..files {
        let a = hoard_testkit::artifacts::WheelSpec::new("fault-preload", &format!("0.{n}"))
            .padding(size, u64::from(n))
            .build();
        let mp = hoard_testkit::http::Upload::of(&a).multipart();
        let response = http
            .post(format!("{base}/pypi/"))
            .basic_auth("__token__", Some(&shared.token))
            .header(reqwest::header::CONTENT_TYPE, mp.content_type())
            .body(mp.finish())
            .send()?;
        if !response.status().is_success() {
            bail!(
                "preload upload {} answered {}",
                a.filename,
                response.status()
            );
        }
    }
    Ok(())
}

/// What the run ran on: the date, the commit, the image, the machine.
fn run_header(image: &str) -> String {
    let out = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    let date = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default();
    let size: u64 = out(
        "docker",
        &["image", "inspect", "--format", "{{.Size}}", image],
    )
    .parse()
    .unwrap_or_default();
    format!(
        "# Fault suite results\n\n{date}, commit {}, image {image} ({} MiB), {} cores, load {}.\n\n",
        out("git", &["describe", "--always", "--dirty"]),
        size >> 20,
        out("nproc", &[]),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn results_table(reports: &[Report], quick: bool) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | fault | operations | acknowledged | lost | unknown | refused | new leader after | time to recover | verdict |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.notes,
            r.verdict.operations,
            r.verdict.acked,
            r.verdict.lost,
            r.unknown,
            r.refused,
            r.new_leader.map_or("-".into(), |s| format!("{s:.1} s")),
            r.recovery.map_or("-".into(), |s| format!("{s:.1} s")),
            if r.verdict.passed() {
                "pass"
            } else {
                "**fail**"
            }
        ));
    }
    out.push_str(
        "\nOperations are uploads and reads. *Unknown*: an upload with no answer within 5 s (it may or \
         may not have happened; the checker allows either). *Refused*: an upload answered with an error \
         (a 503 without a leader, a 502 from a replica whose leader is unreachable). *New leader after*: \
         from the fault to the first voter reporting a newer term as leader, as the status poller saw it \
         (every 200 ms, waiting up to 0.5 s on a node that does not answer). *Time to recover*: from \
         the fault to the first acknowledged upload that started after it.\n\n",
    );
    for r in reports {
        out.push_str(&format!("- **{}**: {}.\n", r.name, r.what));
    }
    out.push_str(&format!(
        "\n{} pass; each fault held {} s.\n",
        if quick { "Quick" } else { "Full" },
        if quick { 4 } else { 10 }
    ));
    out
}
