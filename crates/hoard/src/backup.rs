//! `hoard backup --to DIR`: asks a running node to write a consistent copy
//! of itself into DIR (see `hoard_server::backup`), and shows its progress.
//! `hoard restore --from DIR --data-dir NEW`: builds a data dir from such a
//! copy, checking every byte, that starts at the backup's serial.

use std::io::BufRead as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use hoard_core::Sha256;
use hoard_server::backup::{
    BackupManifest, BACKUP_FORMAT, BACKUP_VERSION, BLOB_LIST_FILE, MANIFEST_FILE, SNAPSHOT_FILE,
};
use hoard_store::{BlobStore, Index, StagedBlob};
use serde_json::{json, Value};

use crate::cli::Target;
use crate::progress::Progress;

/// Staged blobs made durable together during a restore.
const RESTORE_BATCH: usize = 500;

pub async fn backup(target: &Target, to: &Path) -> anyhow::Result<ExitCode> {
    // The node writes the backup: the path is on its machine, so it must
    // not depend on where this command runs.
    let to = if to.is_absolute() {
        to.to_owned()
    } else {
        std::env::current_dir()?.join(to)
    };
    let url = format!("{}/+admin/local/backup", target.url()?);
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(target.token()?)
        .json(&json!({ "to": to }))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("{url} refused the backup ({status}): {}", text.trim());
    }
    let mut progress = Progress::new("backup", None);
    let mut pending = Vec::new();
    let mut response = response;
    let mut last: Option<Value> = None;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("{url} stopped answering"))?
    {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line)
                .with_context(|| format!("{url} answered a line that is not JSON"))?;
            match event["event"].as_str() {
                Some("index") => progress.println(&format!(
                    "index exported at serial {} ({} bytes); {} blobs to copy",
                    event["serial"], event["bytes"], event["blobs"]
                )),
                Some("blobs") => progress.update(
                    event["done"].as_u64().unwrap_or(0),
                    event["total"].as_u64(),
                    &format!("{} MiB", event["bytes"].as_u64().unwrap_or(0) / (1 << 20)),
                ),
                _ => last = Some(event),
            }
        }
    }
    progress.finish();
    let Some(last) = last else {
        bail!("{url} ended the backup without saying how it went");
    };
    if last["event"] != "done" {
        bail!(
            "the backup failed: {}",
            last["message"].as_str().unwrap_or("no reason given")
        );
    }
    println!(
        "backup of serial {} (digest {}) in {}: {} blobs, {} bytes ({} hard-linked, {} copied) in {:.1} s",
        last["serial"],
        last["digest"].as_str().unwrap_or_default(),
        to.display(),
        last["blobs"],
        last["bytes"],
        last["linked"],
        last["copied"],
        last["secs"].as_f64().unwrap_or_default(),
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let manifest_path = from.join(MANIFEST_FILE);
    let manifest: BackupManifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).with_context(|| {
            format!(
                "{} has no {MANIFEST_FILE}: not a hoard backup, or one that did not finish",
                from.display()
            )
        })?)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    if manifest.format != BACKUP_FORMAT || manifest.version != BACKUP_VERSION {
        bail!(
            "{} is a {} version {} backup; this hoard restores {BACKUP_FORMAT} version {BACKUP_VERSION}",
            from.display(),
            manifest.format,
            manifest.version
        );
    }
    if data_dir.join("index").exists() {
        bail!(
            "{} already holds an index: restore into a new data dir",
            data_dir.display()
        );
    }
    let snapshot = from.join(SNAPSHOT_FILE);
    let snapshot_sha256 = crate::export::sha256_of(&snapshot)
        .with_context(|| format!("reading {}", snapshot.display()))?;
    if snapshot_sha256 != manifest.snapshot_sha256 {
        bail!(
            "{} does not match the manifest's sha256",
            snapshot.display()
        );
    }
    let list = std::fs::read(from.join(BLOB_LIST_FILE))
        .with_context(|| format!("reading {}", from.join(BLOB_LIST_FILE).display()))?;
    if Sha256::of(&list).to_hex() != manifest.blob_list_sha256 {
        bail!("{BLOB_LIST_FILE} does not match the manifest's sha256");
    }
    let blobs = parse_blob_list(&list)?;
    if blobs.len() as u64 != manifest.blobs {
        bail!(
            "{BLOB_LIST_FILE} lists {} blobs; the manifest says {}",
            blobs.len(),
            manifest.blobs
        );
    }

    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let index = Index::open(&data_dir.join("index"))?;
    index.import_snapshot(&snapshot)?;
    let (serial, digest) = (index.applied_serial()?, index.digest()?);
    if serial.0 != manifest.serial || digest.to_hex() != manifest.digest {
        bail!(
            "the restored index is at serial {serial} with digest {digest}; the manifest says {} and {}",
            manifest.serial,
            manifest.digest
        );
    }
    let (_, problems) = index.verify_changelog()?;
    if let Some(problem) = problems.first() {
        bail!("the backup's changelog is not whole: {problem}");
    }
    eprintln!(
        "index restored at serial {serial}; copying and checking {} blobs",
        blobs.len()
    );

    let store = BlobStore::open(data_dir)?;
    let mut progress = Progress::bytes("restore", manifest.blob_bytes);
    let mut batch: Vec<StagedBlob> = Vec::new();
    let mut copied = 0u64;
    for (sha, size) in &blobs {
        let hex = sha.to_hex();
        let path = from
            .join("blobs")
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(&hex);
        let staged = store
            .stage_file_unsynced(&path)
            .with_context(|| format!("blob {hex} is missing from the backup"))?;
        if staged.digests.sha256 != *sha || staged.size != *size {
            bail!(
                "{} does not hold the blob it is named for (sha256 {}, {} bytes)",
                path.display(),
                staged.digests.sha256,
                staged.size
            );
        }
        copied += size;
        batch.push(staged);
        if batch.len() >= RESTORE_BATCH {
            store.commit_batch(std::mem::take(&mut batch)).await?;
            progress.update(copied, None, "");
        }
    }
    store.commit_batch(batch).await?;
    progress.finish();
    // Only now is the index whole: before, a crash resets it at the next
    // open, rather than leave it listing blobs that are not there.
    index.finish_snapshot_install().await?;
    println!(
        "restored serial {serial} (digest {digest}) into {}: {} blobs, {copied} bytes, checked, in {:.1} s",
        data_dir.display(),
        blobs.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "start it as a replica (role = \"replica\", upstreams = [...]) to catch up from serial {serial}"
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_blob_list(list: &[u8]) -> anyhow::Result<Vec<(Sha256, u64)>> {
    let mut out = Vec::new();
    for (n, line) in list.lines().enumerate() {
        let line = line?;
        let (sha, size) = line
            .split_once(' ')
            .with_context(|| format!("{BLOB_LIST_FILE} line {}: {line:?}", n + 1))?;
        let sha: Sha256 = sha
            .parse()
            .map_err(|e| anyhow::anyhow!("{BLOB_LIST_FILE} line {}: {e}", n + 1))?;
        let size: u64 = size
            .parse()
            .with_context(|| format!("{BLOB_LIST_FILE} line {}: size {size:?}", n + 1))?;
        out.push((sha, size));
    }
    Ok(out)
}
