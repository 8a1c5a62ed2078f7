//! `hoard-bench import`: `hoard import` of a directory of generated wheels
//! into a fresh node, next to `sha256sum` of the same files on every core
//! (the limit: an import must at least read and hash every byte). The
//! issue's target is the import within 2× of that.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use hoard_testkit::WheelSpec;

use crate::procs::timed;
use crate::report;
use crate::servers::{Hoard, NodeSpec};
use crate::{ncpu, Common};

const REPO: &str = "pypi-local";

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// Wheels to import.
    #[arg(long, default_value_t = 10_000)]
    pub files: usize,
    /// Incompressible bytes in each wheel.
    #[arg(long, default_value_t = 32 * 1024)]
    pub padding: usize,
    /// `hoard import --jobs`.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
}

/// Drops the page cache's copy of the files where that is allowed (root),
/// so both sides read from the same place; says which it was.
fn drop_caches() -> &'static str {
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    if synced && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok() {
        "page cache dropped before each side"
    } else {
        "page cache warm (could not drop it)"
    }
}

pub async fn run(common: &Common, args: &ImportArgs, hoard_bin: PathBuf) -> Result<()> {
    let work = common.work_dir()?;
    let dir = work.path().to_path_buf();
    let source = dir.join("wheels");
    std::fs::create_dir_all(&source)?;
    eprintln!(
        "writing {} wheels of {} padding bytes",
        args.files, args.padding
    );
    let mut bytes = 0u64;
    for i in 0..args.files {
        let a = WheelSpec::new(&format!("bench-import-{}", i % 500), &format!("1.{i}"))
            .padding(args.padding, i as u64)
            .build();
        bytes += a.bytes.len() as u64;
        let sub = source.join(format!("{:02}", i % 50));
        std::fs::create_dir_all(&sub)?;
        a.write_to(&sub);
    }
    let mb = bytes as f64 / 1e6;

    // The limit: every byte read and hashed, on every core.
    let cache_hash = drop_caches();
    let (hash_time, _) = timed(Command::new("bash").arg("-c").arg(format!(
        "find {} -name '*.whl' -print0 | xargs -0 -n 200 -P {} sha256sum > /dev/null",
        source.display(),
        ncpu()
    )))?;
    eprintln!("sha256sum: {:.2} s", hash_time.as_secs_f64());

    let hoard = Hoard::start_node(
        &hoard_bin,
        &NodeSpec {
            id: "bench-import-1",
            dir: &dir,
            extra_toml: "",
            token_repo: Some(REPO),
            env: &[],
        },
    )
    .await?;
    let cache_import = drop_caches();
    let (import_time, summary) = timed(
        Command::new(&hoard_bin)
            .args(["import", "--url", &format!("http://{}", hoard.addr)])
            .args(["--repo", REPO, "--jobs", &args.jobs.to_string()])
            .args(["--token", &hoard.token])
            .arg(&source)
            .env_remove("HOARD_TOKEN"),
    )?;
    eprintln!(
        "hoard import: {:.2} s: {}",
        import_time.as_secs_f64(),
        summary.trim()
    );
    if !summary.contains(&format!("{} file(s)", args.files)) {
        bail!("the import did not take every file: {summary}");
    }
    drop(hoard);

    // The same files, written offline into a fresh, stopped node's store
    // in batches (`hoard import --data-dir`).
    let offline_dir = dir.join("offline");
    std::fs::create_dir_all(&offline_dir)?;
    let offline = Hoard::start_node(
        &hoard_bin,
        &NodeSpec {
            id: "bench-import-2",
            dir: &offline_dir,
            extra_toml: "",
            token_repo: Some(REPO),
            env: &[],
        },
    )
    .await?;
    let data_dir = offline.data_dir.clone();
    drop(offline);
    let cache_offline = drop_caches();
    let (offline_time, offline_summary) = timed(
        Command::new(&hoard_bin)
            .args(["import", "--repo", REPO, "--jobs", &ncpu().to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg(&source)
            .env_remove("HOARD_TOKEN"),
    )?;
    eprintln!(
        "hoard import --data-dir: {:.2} s: {}",
        offline_time.as_secs_f64(),
        offline_summary.trim()
    );
    if !offline_summary.contains(&format!("{} file(s)", args.files)) {
        bail!("the offline import did not take every file: {offline_summary}");
    }

    let rate = |t: Duration| {
        format!(
            "{:.0} files/s, {:.1} MB/s",
            args.files as f64 / t.as_secs_f64(),
            mb / t.as_secs_f64()
        )
    };
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(
        w,
        "# Import of {} wheels ({})\n",
        args.files,
        report::now_utc()
    );
    w.push_str(&report::how_run(
        &crate::command_line(),
        &crate::git_description(),
        &hoard_bin,
    ));
    let _ = writeln!(
        w,
        "- {} wheels of 500 projects, {:.1} MB in all ({} incompressible bytes each), in 50 directories",
        args.files, mb, args.padding
    );
    let _ = writeln!(
        w,
        "- `sha256sum` of every file with `xargs -P {}` ({cache_hash}); `hoard import --jobs {}` into a fresh node on the same machine ({cache_import}): every file hashed by the importer, sent through the upload API, validated, hashed again, stored (fsync) and committed as an event (fsync); `hoard import --data-dir --jobs {}` into another fresh node's stopped store ({cache_offline}): every file copied while hashed and validated, 500 files per batch made durable with one syncfs, applied in one transaction and flushed once, while the next batch is read and checked\n",
        ncpu(),
        args.jobs,
        ncpu()
    );
    let _ = writeln!(w, "| | time | rate | / sha256sum |");
    let _ = writeln!(w, "|---|--:|---|--:|");
    let _ = writeln!(
        w,
        "| `sha256sum`, every core (the limit) | {:.2} s | {} | 1.0× |",
        hash_time.as_secs_f64(),
        rate(hash_time)
    );
    let _ = writeln!(
        w,
        "| `hoard import` | {:.2} s | {} | **{:.1}×** |",
        import_time.as_secs_f64(),
        rate(import_time),
        import_time.as_secs_f64() / hash_time.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "| `hoard import --data-dir` (offline, batched) | {:.2} s | {} | **{:.1}×** |",
        offline_time.as_secs_f64(),
        rate(offline_time),
        offline_time.as_secs_f64() / hash_time.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "\nThe issue's target is 2×. Online, each file is one upload and one commit; offline, a batch of 500 files costs one syncfs, one transaction and one flush, and the next batch is read and hashed meanwhile."
    );
    common.publish(&md, "import")
}
