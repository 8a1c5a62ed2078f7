//! `hoard-bench blobs`: the S3 blob backend next to the filesystem one, in
//! the same run: upload and download MB/s of big generic files through a
//! node whose blobs are in a bucket of a local S3 service (moto's server),
//! and through a node whose blobs are in its data dir, in alternating
//! rounds. Then `hoard backup` of a node holding about 1 GiB next to
//! `cp -a` + `sync` of its data dir, and the backup of the S3-backed node
//! (whose blobs come down from the bucket).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::Args;
use hoard_testkit::s3::S3Server;

use crate::procs::timed;
use crate::report;
use crate::servers::{Hoard, NodeSpec};
use crate::Common;

const REPO: &str = "files";
const BUCKET: &str = "bench-blobs";

#[derive(Args, Debug, Clone)]
pub struct BlobsArgs {
    /// Files per round and backend.
    #[arg(long, default_value_t = 4)]
    pub files: usize,
    /// Size of each file, in MiB.
    #[arg(long, default_value_t = 64)]
    pub size_mib: usize,
    /// Rounds per backend, alternating.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// What the filesystem node holds when it is backed up, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub backup_mib: usize,
}

/// Incompressible bytes, different for each seed.
fn payload(size: usize, seed: u64) -> Bytes {
    Bytes::from(hoard_testkit::artifacts::pseudo_random(size, seed))
}

async fn put(node: &Hoard, path: &str, body: Bytes) -> Result<()> {
    let url = format!("http://{}/{REPO}/{path}", node.addr);
    let resp = node
        .client
        .put(&url)
        .bearer_auth(&node.token)
        .body(body)
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    if !resp.status().is_success() {
        bail!("PUT {url}: {} {}", resp.status(), resp.text().await?);
    }
    Ok(())
}

async fn get_len(node: &Hoard, path: &str) -> Result<u64> {
    let url = format!("http://{}/{REPO}/{path}", node.addr);
    let mut resp = node
        .client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: {}", resp.status());
    }
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        n += chunk.len() as u64;
    }
    Ok(n)
}

fn mb_per_s(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / 1e6 / t.as_secs_f64()
}

fn backup(bin: &Path, node: &Hoard, to: &Path, env: &[(&str, &str)]) -> Result<(Duration, String)> {
    let admin = std::fs::read_to_string(node.data_dir.join("admin-token"))?;
    timed(
        Command::new(bin)
            .args(["backup", "--url", &format!("http://{}", node.addr)])
            .args(["--token", admin.trim()])
            .arg("--to")
            .arg(to)
            .envs(env.iter().copied())
            .env_remove("HOARD_TOKEN"),
    )
}

pub async fn run(common: &Common, args: &BlobsArgs, hoard_bin: std::path::PathBuf) -> Result<()> {
    let work = common.work_dir()?;
    let dir = work.path().to_path_buf();
    let s3 = tokio::task::spawn_blocking(S3Server::start).await?;
    s3.create_bucket(BUCKET);
    let credentials = S3Server::credentials();
    let repo_toml = format!("\n[[repos]]\nname = \"{REPO}\"\nformat = \"generic\"\n");
    let s3_toml = format!(
        "{}\n{repo_toml}",
        s3.blobs_config(BUCKET, ", timeout_secs = 120")
    );
    let (fs_dir, s3_dir) = (dir.join("fs"), dir.join("s3"));
    std::fs::create_dir_all(&fs_dir)?;
    std::fs::create_dir_all(&s3_dir)?;
    let fs_node = Hoard::start_node(
        &hoard_bin,
        &NodeSpec {
            id: "bench-blobs-fs",
            dir: &fs_dir,
            extra_toml: &repo_toml,
            token_repo: Some(REPO),
            env: &[],
        },
    )
    .await?;
    let s3_node = Hoard::start_node(
        &hoard_bin,
        &NodeSpec {
            id: "bench-blobs-s3",
            dir: &s3_dir,
            extra_toml: &s3_toml,
            token_repo: Some(REPO),
            env: &credentials,
        },
    )
    .await?;

    let size = args.size_mib << 20;
    let round_bytes = (args.files * size) as u64;
    // name → (upload MB/s, download MB/s) of each round.
    let mut figures: Vec<(&str, Vec<(f64, f64)>)> = vec![("fs", Vec::new()), ("s3", Vec::new())];
    let mut seed = 0u64;
    for round in 0..args.rounds {
        for (which, node) in [(0usize, &fs_node), (1, &s3_node)] {
            let bodies: Vec<Bytes> = (0..args.files)
                .map(|_| {
                    seed += 1;
                    payload(size, seed)
                })
                .collect();
            let t = Instant::now();
            for (i, body) in bodies.into_iter().enumerate() {
                put(node, &format!("r{round}/f{i}.bin"), body).await?;
            }
            let up = mb_per_s(round_bytes, t.elapsed());
            let t = Instant::now();
            let mut got = 0;
            for i in 0..args.files {
                got += get_len(node, &format!("r{round}/f{i}.bin")).await?;
            }
            if got != round_bytes {
                bail!("downloaded {got} bytes, uploaded {round_bytes}");
            }
            let down = mb_per_s(round_bytes, t.elapsed());
            eprintln!(
                "round {round} {}: upload {up:.0} MB/s, download {down:.0} MB/s",
                figures[which].0
            );
            figures[which].1.push((up, down));
        }
    }

    // Fill the fs node up to the backup size, then back it up next to cp -a.
    let mut held = (args.rounds * args.files * size) as u64;
    let mut extra = 0;
    while held < (args.backup_mib as u64) << 20 {
        seed += 1;
        put(&fs_node, &format!("fill/f{extra}.bin"), payload(size, seed)).await?;
        held += size as u64;
        extra += 1;
    }
    let (backup_fs, said_fs) = backup(&hoard_bin, &fs_node, &dir.join("backup-fs"), &[])?;
    eprintln!(
        "hoard backup (fs): {:.2} s: {}",
        backup_fs.as_secs_f64(),
        said_fs.trim()
    );
    let (cp_time, _) = timed(Command::new("bash").arg("-c").arg(format!(
        "cp -a {} {} && sync",
        fs_node.data_dir.display(),
        dir.join("cp-copy").display()
    )))?;
    eprintln!("cp -a + sync: {:.2} s", cp_time.as_secs_f64());
    // To another filesystem (a tmpfs) both copy every byte.
    let shm = tempfile::Builder::new()
        .prefix("hoard-bench-")
        .tempdir_in("/dev/shm")
        .context("a directory in /dev/shm")?;
    let (backup_copy, said_copy) = backup(&hoard_bin, &fs_node, &shm.path().join("backup"), &[])?;
    eprintln!(
        "hoard backup (fs, to a tmpfs): {:.2} s: {}",
        backup_copy.as_secs_f64(),
        said_copy.trim()
    );
    std::fs::remove_dir_all(shm.path().join("backup"))?;
    let (cp_copy, _) = timed(Command::new("bash").arg("-c").arg(format!(
        "cp -a {} {} && sync",
        fs_node.data_dir.display(),
        shm.path().join("cp-copy").display()
    )))?;
    eprintln!("cp -a + sync to a tmpfs: {:.2} s", cp_copy.as_secs_f64());
    drop(shm);
    let (backup_s3, said_s3) = backup(&hoard_bin, &s3_node, &dir.join("backup-s3"), &credentials)?;
    eprintln!(
        "hoard backup (s3): {:.2} s: {}",
        backup_s3.as_secs_f64(),
        said_s3.trim()
    );
    let s3_held = (args.rounds * args.files * size) as u64;

    let best =
        |v: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| v.iter().map(pick).fold(0.0, f64::max);
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(
        w,
        "# Blob backends: S3 next to the filesystem ({})\n",
        report::now_utc()
    );
    w.push_str(&report::how_run(
        &crate::command_line(),
        &crate::git_description(),
        &hoard_bin,
    ));
    let _ = writeln!(
        w,
        "- S3: moto's server (from PyPI, one Python process) on loopback, path-style, SigV4 with sha256 checksums; files over 8 MiB go up as multipart uploads of 8 MiB parts, two in flight\n\
         - each round: {} generic files of {} MiB PUT one after another through hoard (hashed into tmp/, then stored), then GET back in full; {} rounds per backend, alternating fs, s3; the best round of each is in the table\n",
        args.files, args.size_mib, args.rounds
    );
    let _ = writeln!(w, "| | fs | S3 | S3 / fs |");
    let _ = writeln!(w, "|---|--:|--:|--:|");
    for (label, pick) in [
        (
            "upload MB/s",
            (|f: &(f64, f64)| f.0) as fn(&(f64, f64)) -> f64,
        ),
        ("download MB/s", |f: &(f64, f64)| f.1),
    ] {
        let (fs, s3) = (best(&figures[0].1, pick), best(&figures[1].1, pick));
        let _ = writeln!(w, "| {label} | {fs:.0} | {s3:.0} | **{:.2}×** |", s3 / fs);
    }
    let _ = writeln!(w, "\nEvery round:\n");
    for (name, rounds) in &figures {
        for (i, (up, down)) in rounds.iter().enumerate() {
            let _ = writeln!(
                w,
                "- {name} round {i}: upload {up:.0} MB/s, download {down:.0} MB/s"
            );
        }
    }
    let _ = writeln!(w, "\n## Backup\n");
    let _ = writeln!(
        w,
        "| | data | time | / `cp -a` + `sync` |\n|---|--:|--:|--:|\n\
         | `cp -a` + `sync` of the fs node's data dir | {:.0} MiB | {:.2} s | 1.0× |\n\
         | `hoard backup`, fs node (blobs hard-linked) | {:.0} MiB | {:.2} s | **{:.2}×** |\n\
         | `cp -a` + `sync` to a tmpfs (another filesystem) | {:.0} MiB | {:.2} s | 1.0× |\n\
         | `hoard backup`, fs node, to a tmpfs (blobs copied) | {:.0} MiB | {:.2} s | **{:.2}×** of that |\n\
         | `hoard backup`, S3 node (blobs copied from the bucket) | {:.0} MiB | {:.2} s | {:.2}× (of less data) |",
        held as f64 / 1048576.0,
        cp_time.as_secs_f64(),
        held as f64 / 1048576.0,
        backup_fs.as_secs_f64(),
        backup_fs.as_secs_f64() / cp_time.as_secs_f64(),
        held as f64 / 1048576.0,
        cp_copy.as_secs_f64(),
        held as f64 / 1048576.0,
        backup_copy.as_secs_f64(),
        backup_copy.as_secs_f64() / cp_copy.as_secs_f64(),
        s3_held as f64 / 1048576.0,
        backup_s3.as_secs_f64(),
        backup_s3.as_secs_f64() / cp_time.as_secs_f64(),
    );
    let _ = writeln!(
        w,
        "\n- `hoard backup` (fs): {}\n- `hoard backup` (fs, to a tmpfs): {}\n- `hoard backup` (S3): {}\n\nOn the data dir's filesystem the backup hard-links every blob, so it costs the index export and a link per blob. To another filesystem it copies every byte, as `cp -a` does, and fsyncs each file. The S3 node's backup reads every blob from the service (moto, a Python process, is the bound there).",
        said_fs.trim(),
        said_copy.trim(),
        said_s3.trim()
    );
    drop(fs_node);
    drop(s3_node);
    drop(s3);
    common.publish(&md, "blobs")
}
