//! `hoard-bench`: benchmarks of hoard, each measured side by side with a
//! baseline in the same run where one makes sense. See README.md.
//!
//! - `pypi` (the default): simple pages and a big download on one node, next
//!   to nginx, a hyper static server and devpi-server.
//! - `npm`: abbreviated and full packuments of a 300-version package and a
//!   20 MB tarball, next to nginx and the hyper static server.
//! - `replication`: a replica's lag behind upload acknowledgements, the
//!   catch-up of a fresh replica (next to `cp -r` of the blob dir), and the
//!   replica's memory.
//! - `failover`: kill -9 of a three-voter leader to the first acknowledged
//!   upload on the new one, and upload latency of one voter against three.
//! - `mirror`: a PyPI mirror of a local fixture upstream: cold against warm
//!   pages and files, and warm pages of a 3,000-file project through the
//!   virtual repository next to the hosted one.
//! - `import`: `hoard import` of 10,000 wheels next to `sha256sum` of the
//!   same files on every core.
//! - `ui`: the web UI's pages on a 10,000-project index, one request at a
//!   time, next to nginx serving the same bytes.
//! - `blobs`: upload and download MB/s with S3 blobs (a local moto server)
//!   next to blobs on disk, and `hoard backup` of 1 GiB next to `cp -a`.
//! - `suite`: the figures of the performance issue one after the other
//!   (reusing the scenarios above), into one results file with plots;
//!   `bench/run` builds, installs the baselines and runs it.

mod blobs;
mod devpi;
mod failover;
mod import;
mod load;
mod measure;
mod mirror;
mod npm;
mod plots;
mod procs;
mod publish_memory;
mod pypi;
mod replication;
mod report;
mod scale;
mod servers;
mod suite;
mod ui;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use hoard_testkit::tools::workspace_root;

#[derive(Parser, Debug)]
#[command(
    name = "hoard-bench",
    about = "Benchmarks of hoard, side by side with baselines (run `hoard-bench <scenario> --help`)"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// Options of every scenario (before or after the scenario's name).
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The hoard binary to run (a release build).
    #[arg(long, env = "HOARD_BIN", global = true)]
    pub hoard_bin: Option<PathBuf>,
    /// Measurement window per scenario and server, in seconds.
    #[arg(long, default_value_t = 10.0, global = true)]
    pub duration: f64,
    /// Warm-up before each measurement window, in seconds.
    #[arg(long, default_value_t = 2.0, global = true)]
    pub warmup: f64,
    /// Threads of the load generator's runtime (it shares the machine with
    /// the server under test).
    #[arg(long, default_value_t = 1, global = true)]
    pub client_threads: usize,
    /// Baselines to run: any of `nginx`, `hyper` (static servers of the same
    /// bytes), `devpi` (pypi only: a competitor, if installed)
    /// (comma-separated), or `none`.
    #[arg(
        long,
        default_value = "nginx,hyper,devpi",
        value_delimiter = ',',
        global = true
    )]
    pub baselines: Vec<String>,
    /// nginx binary (default: found on PATH or in /usr/sbin).
    #[arg(long, global = true)]
    pub nginx: Option<PathBuf>,
    /// Worker processes of nginx / threads of the hyper static server
    /// (default: the number of CPUs, like hoard's runtime).
    #[arg(long, global = true)]
    pub server_threads: Option<usize>,
    /// Where to write the results file (default: bench/results).
    #[arg(long, global = true)]
    pub out_dir: Option<PathBuf>,
    /// Print the results only; write no file.
    #[arg(long, global = true)]
    pub no_write: bool,
    /// Keep the temp dir (hoard's data, logs, nginx config) after the run.
    #[arg(long, global = true)]
    pub keep: bool,
}

impl Common {
    pub fn wants(&self, baseline: &str) -> bool {
        self.baselines.iter().any(|x| x.trim() == baseline)
    }

    pub fn server_threads(&self) -> usize {
        self.server_threads.unwrap_or_else(ncpu)
    }

    /// Prints `md` and writes it to `<out_dir>/<date>-<suffix>.md`.
    pub fn publish(&self, md: &str, suffix: &str) -> Result<()> {
        println!("{md}");
        if !self.no_write {
            let out_dir = self
                .out_dir
                .clone()
                .unwrap_or_else(|| workspace_root().join("bench/results"));
            std::fs::create_dir_all(&out_dir)?;
            let path = out_dir.join(format!("{}-{suffix}.md", report::today()));
            std::fs::write(&path, md)?;
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }

    /// A temp dir for the run's files, removed at the end unless `--keep`.
    pub fn work_dir(&self) -> Result<WorkDir> {
        let tmp = tempfile::Builder::new().prefix("hoard-bench-").tempdir()?;
        eprintln!("hoard-bench: working in {}", tmp.path().display());
        Ok(WorkDir {
            tmp: Some(tmp),
            keep: self.keep,
        })
    }
}

/// The run's temp dir; kept on drop with `--keep`.
pub struct WorkDir {
    tmp: Option<tempfile::TempDir>,
    keep: bool,
}

impl WorkDir {
    pub fn path(&self) -> &Path {
        self.tmp.as_ref().map_or(Path::new("."), |t| t.path())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            if let Some(t) = self.tmp.take() {
                eprintln!("kept {}", t.keep().display());
            }
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// PyPI simple pages and a big wheel download on one node, side by side
    /// with nginx, a hyper static server and devpi-server (the default).
    Pypi(pypi::PypiArgs),
    /// npm packuments (abbreviated and full) of a package with many versions
    /// and a big tarball, side by side with nginx and a hyper static server.
    Npm(npm::NpmArgs),
    /// A primary and replicas: lag from upload acknowledgement to
    /// visibility on a replica, catch-up of a fresh replica (next to `cp -r`
    /// of the blob dir), and the replica's memory.
    Replication(replication::ReplicationArgs),
    /// Raft: kill -9 of the leader of three voters to the first
    /// acknowledged upload on the new leader (p50/p99 over trials), and
    /// upload latency and rate of one voter against three.
    Failover(failover::FailoverArgs),
    /// A PyPI mirror of a local fixture upstream, with a hosted and a
    /// virtual repository: cold against warm pages and files, and warm
    /// pages of a 3,000-file project through the virtual repository next to
    /// the hosted one.
    Mirror(mirror::MirrorArgs),
    /// The node's extra peak memory during an `npm publish` of a big
    /// tarball, side by side with a twine upload of the same size.
    PublishMemory(publish_memory::PublishMemoryArgs),
    /// `hoard import` of a directory of 10,000 wheels into a fresh node,
    /// next to `sha256sum` of the same files on every core.
    Import(import::ImportArgs),
    /// The web UI's pages on an index of 10,000 projects, one request at
    /// a time, side by side with nginx serving the same bytes.
    Ui(ui::UiArgs),
    /// Upload and download MB/s with blobs in a bucket of a local S3
    /// service next to blobs on disk, and `hoard backup` of a 1 GiB node
    /// next to `cp -a`.
    Blobs(blobs::BlobsArgs),
    /// The figures of the performance issue, one after the other, into one
    /// results file (`bench/results/<date>-<commit>.md`) with PNG plots;
    /// `--quick` for small data and short windows.
    Suite(suite::SuiteArgs),
    /// The index at 1k → 500k projects (made synthetically): project-page
    /// latency, root page, replica memory and catch-up, data dir per file.
    Scale(scale::ScaleArgs),
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

pub fn ncpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::ServeStatic {
        listen,
        root,
        threads,
    }) = &cli.cmd
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
        .worker_threads(cli.common.client_threads.max(1))
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
        let work = async {
            let hoard_bin = resolve_hoard_bin(cli.common.hoard_bin.as_deref())?;
            if hoard_bin.components().any(|c| c.as_os_str() == "debug") {
                eprintln!(
                    "warning: {} looks like a debug build; figures will not be meaningful",
                    hoard_bin.display()
                );
            }
            match &cli.cmd {
                None => pypi::run(&cli.common, &pypi::PypiArgs::default(), hoard_bin).await,
                Some(Cmd::Pypi(a)) => pypi::run(&cli.common, a, hoard_bin).await,
                Some(Cmd::Npm(a)) => npm::run(&cli.common, a, hoard_bin).await,
                Some(Cmd::Replication(a)) => replication::run(&cli.common, a, hoard_bin).await,
                Some(Cmd::Failover(a)) => failover::run(&cli.common, a, hoard_bin).await,
                Some(Cmd::Mirror(a)) => mirror::run(&cli.common, a, hoard_bin).await,
                Some(Cmd::PublishMemory(a)) => publish_memory::run(&cli.common, a, hoard_bin).await,
                Some(Cmd::Ui(a)) => ui::run(&cli.common, a, hoard_bin).await,
                Some(Cmd::Import(a)) => import::run(&cli.common, a, hoard_bin).await,
                Some(Cmd::Blobs(a)) => blobs::run(&cli.common, a, hoard_bin).await,
                Some(Cmd::Suite(a)) => suite::run(&cli.common, a, hoard_bin).await,
                Some(Cmd::Scale(a)) => scale::command(&cli.common, a, hoard_bin).await,
                Some(Cmd::ServeStatic { .. }) => Ok(()),
            }
        };
        tokio::select! {
            r = work => r,
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

pub fn resolve_hoard_bin(explicit: Option<&Path>) -> Result<PathBuf> {
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
            v.push(workspace_root().join("target/release/hoard"));
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

/// The command as typed (arguments shell-quoted when needed), with
/// HOARD_BIN if it was set.
pub fn command_line() -> String {
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

pub fn git_description() -> String {
    let dir = workspace_root();
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
