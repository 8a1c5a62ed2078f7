//! `hoard import --data-dir D --repo R DIR`: a bulk import written
//! straight into a stopped node's store, for the first load of a large
//! tree. Every file is checked as an upload is (its filename, and a
//! wheel's `METADATA` against it, or an sdist's magic bytes), hashed and
//! copied on `--jobs` threads, and committed in batches:
//!
//! 1. each file of a batch is copied into `tmp/` while hashed, unsynced;
//! 2. the batch's blobs are renamed to their addresses and made durable
//!    together, with one `syncfs`;
//! 3. the batch's events are applied in one transaction, and the index
//!    is flushed once.
//!
//! An event never names a blob that is not durable, so a crash anywhere
//! leaves at most unlisted blobs; a re-run skips what is listed with the
//! same sha256, and completes the rest. Only a one-voter node's data dir
//! is written this way (see `hoard_cluster::offline_write_refusal`);
//! anything else imports through the leader (`--url`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context as _};
use hoard_core::{Change, Event, FileRecord, RepoFormat, RepoKind, RepoName};
use hoard_pypi::{
    check_sdist_magic, extract_wheel_metadata, normalize_project_name, parse_core_metadata,
    validate_upload, ComputedDigests, DistFilename, DistKind, UploadForm, ZipLimits,
};
use hoard_store::{BlobStore, Index, StagedBlob, StoreError};

use crate::progress::Progress;

/// Files per batch: one syncfs, one transaction and one flush each.
const BATCH: usize = 500;

/// The actor of the events an offline import writes.
const ACTOR: &str = "import";

/// One distribution, checked and staged, ready to be listed.
struct Prepared {
    path: PathBuf,
    project: String,
    display_name: String,
    record: FileRecord,
    file: StagedBlob,
    metadata: Option<StagedBlob>,
}

/// What became of one file before it is committed.
enum Checked {
    Ready(Box<Prepared>),
    Present,
    Refused(String),
}

pub fn import_offline(
    data_dir: &Path,
    repo: &str,
    dir: &Path,
    jobs: usize,
    keep_upload_times: bool,
) -> anyhow::Result<ExitCode> {
    let repo: RepoName = repo.parse()?;
    let index = match Index::open(&data_dir.join("index")) {
        Ok(index) => index,
        Err(StoreError::Locked(_)) => bail!(
            "{} is in use: a node is running on it; stop it first, or import through it with --url",
            data_dir.display()
        ),
        Err(e) => return Err(e.into()),
    };
    if let Some(why) = hoard_cluster::offline_write_refusal(&index)? {
        bail!("cannot import into {} offline: {why}", data_dir.display());
    }
    let mut state = index
        .repo(&repo)?
        .with_context(|| format!("{} has no repository {repo}", data_dir.display()))?;
    // Into a virtual repository's upload_to member, as an upload goes.
    if let RepoKind::Virtual(v) = &state.settings.kind {
        let member = v
            .upload_to
            .clone()
            .with_context(|| format!("{repo} is virtual and has no upload_to repository"))?;
        state = index
            .repo(&member)?
            .with_context(|| format!("{repo}'s upload_to repository {member} does not exist"))?;
    }
    let repo = state.name.clone();
    if state.settings.format != RepoFormat::Pypi || state.settings.kind != RepoKind::Hosted {
        bail!("an offline import goes into a hosted PyPI repository; {repo} is not one (import through a running node with --url)");
    }
    let blobs = BlobStore::open(data_dir)?;
    let found = crate::import::walk(dir)?;
    let times = if keep_upload_times {
        crate::import::source_times(dir)?
    } else {
        HashMap::new()
    };
    let total = (found.dists.len() + found.bad.len()) as u64;
    let mut progress = Progress::new("import", Some(total));
    let mut summary = crate::import::Summary::default();
    for (path, why) in found.bad {
        summary.refuse(&path, why, &progress);
    }
    let started = std::time::Instant::now();
    // Two stages side by side: while one batch is synced and committed,
    // the next is read, hashed and checked. A batch checked before the
    // one ahead of it is applied may repeat a filename of that one; the
    // commit sorts that out (see `commit_batch`).
    let (to_commit, batches) = std::sync::mpsc::sync_channel::<Vec<Prepared>>(1);
    // The committer's thread is not one of the runtime's: it may block on
    // the store's async calls.
    let runtime = tokio::runtime::Handle::current();
    let committed = std::thread::scope(|scope| -> anyhow::Result<Vec<BatchOutcome>> {
        let committer = scope.spawn(|| -> anyhow::Result<Vec<BatchOutcome>> {
            let mut outcomes = Vec::new();
            for ready in batches {
                outcomes.push(commit_batch(
                    &runtime, &index, &blobs, &repo, ready, &times,
                )?);
            }
            Ok(outcomes)
        });
        let mut checked_files = summary.done();
        for batch in found.dists.chunks(BATCH) {
            let mut ready = Vec::new();
            for (path, outcome) in check_batch(&index, &blobs, &repo, batch, jobs) {
                match outcome {
                    Ok(Checked::Ready(p)) => ready.push(*p),
                    Ok(Checked::Present) => summary.present += 1,
                    Ok(Checked::Refused(why)) => summary.refuse(&path, why, &progress),
                    Err(e) => return Err(e.context(format!("importing {}", path.display()))),
                }
            }
            let ready = drop_duplicates(ready, &mut summary, &progress);
            checked_files += batch.len();
            progress.update(checked_files as u64, Some(total), "");
            if to_commit.send(ready).is_err() {
                break; // the committer stopped: its error is below
            }
        }
        drop(to_commit);
        committer
            .join()
            .map_err(|_| anyhow::anyhow!("the commit thread panicked"))?
    })?;
    for outcome in committed {
        summary.imported += outcome.imported;
        summary.bytes += outcome.bytes;
        summary.present += outcome.present;
        for (path, why) in outcome.refused {
            summary.refuse(&path, why, &progress);
        }
    }
    progress.finish();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "imported into {repo}: {} file(s) ({} bytes), {} already present, {} refused ({:.0} files/s, offline)",
        summary.imported,
        summary.bytes,
        summary.present,
        summary.refused.len(),
        (summary.imported + summary.present) as f64 / secs,
    );
    for r in &summary.refused {
        println!("  refused: {r}");
    }
    Ok(if summary.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks and stages one batch on `jobs` threads, in the batch's order.
fn check_batch(
    index: &Index,
    blobs: &BlobStore,
    repo: &RepoName,
    batch: &[(PathBuf, DistFilename)],
    jobs: usize,
) -> Vec<(PathBuf, anyhow::Result<Checked>)> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<Checked>>>> =
        Mutex::new((0..batch.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((path, dist)) = batch.get(i) else {
                    return;
                };
                let outcome = check_one(index, blobs, repo, path, dist);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(outcome);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    batch
        .iter()
        .zip(results)
        .map(|((path, _), outcome)| {
            let outcome = outcome.unwrap_or_else(|| Err(anyhow::anyhow!("a checker thread died")));
            (path.clone(), outcome)
        })
        .collect()
}

/// One file, checked as an upload is and staged.
fn check_one(
    index: &Index,
    blobs: &BlobStore,
    repo: &RepoName,
    path: &Path,
    dist: &DistFilename,
) -> anyhow::Result<Checked> {
    let file = blobs.stage_file_unsynced(path)?;
    let project = normalize_project_name(&dist.name);
    if let Some(existing) = index.file(repo, &project, &dist.filename, None)? {
        return Ok(if existing.record.sha256 == file.digests.sha256 {
            Checked::Present
        } else {
            Checked::Refused(format!(
                "the repository has another file of this name (sha256 {})",
                existing.record.sha256
            ))
        });
    }
    let (metadata, name, requires_python) = match dist.kind {
        DistKind::Wheel => {
            let mut staged = std::fs::File::open(file.path())?;
            let bytes = match extract_wheel_metadata(&mut staged, dist, &ZipLimits::default()) {
                Ok(bytes) => bytes,
                Err(e) => return Ok(Checked::Refused(e.to_string())),
            };
            let meta = match parse_core_metadata(&bytes).and_then(|m| {
                m.check_matches(dist)?;
                Ok(m)
            }) {
                Ok(meta) => meta,
                Err(e) => return Ok(Checked::Refused(e.to_string())),
            };
            let staged_meta = blobs.stage_bytes_unsynced(&bytes)?;
            (Some(staged_meta), meta.name, meta.requires_python)
        }
        DistKind::Sdist => {
            use std::io::Read as _;
            let mut head = [0u8; 8];
            let n = std::fs::File::open(file.path())?.read(&mut head)?;
            if let Err(e) = check_sdist_magic(dist, &head[..n]) {
                return Ok(Checked::Refused(e.to_string()));
            }
            (None, dist.name.clone(), None)
        }
    };
    // The same checks as twine's upload form gets, from what the file says.
    let form = UploadForm {
        action: Some("file_upload".into()),
        protocol_version: Some("1".into()),
        name: Some(name),
        version: Some(dist.version.clone()),
        requires_python: requires_python.clone(),
        ..UploadForm::default()
    };
    let digests = ComputedDigests {
        sha256: file.digests.sha256.to_hex(),
        md5: String::new(),
        blake2_256: String::new(),
    };
    let upload = match validate_upload(&form, dist, &digests) {
        Ok(upload) => upload,
        Err(e) => return Ok(Checked::Refused(e.to_string())),
    };
    let record = FileRecord {
        filename: dist.filename.clone(),
        version: upload.version,
        sha256: file.digests.sha256,
        size: file.size,
        packagetype: dist.kind.packagetype().to_owned(),
        requires_python: requires_python.filter(|s| !s.trim().is_empty()),
        core_metadata: metadata.as_ref().map(|m| m.digests.sha256),
    };
    Ok(Checked::Ready(Box::new(Prepared {
        path: path.to_owned(),
        project: upload.project,
        display_name: upload.name,
        record,
        file,
        metadata,
    })))
}

/// The same filename twice in one batch (two copies in the tree): the
/// first is imported, the second is present or refused.
fn drop_duplicates(
    ready: Vec<Prepared>,
    summary: &mut crate::import::Summary,
    progress: &Progress,
) -> Vec<Prepared> {
    let mut seen: HashMap<String, hoard_core::Sha256> = HashMap::new();
    let mut kept = Vec::new();
    for p in ready {
        match seen.get(&p.record.filename) {
            Some(sha) if *sha == p.record.sha256 => summary.present += 1,
            Some(sha) => summary.refuse(
                &p.path,
                format!("another file of this name (sha256 {sha}) is in the tree"),
                progress,
            ),
            None => {
                seen.insert(p.record.filename.clone(), p.record.sha256);
                kept.push(p);
            }
        }
    }
    kept
}

/// What committing one batch did.
#[derive(Default)]
struct BatchOutcome {
    imported: usize,
    bytes: u64,
    present: usize,
    refused: Vec<(PathBuf, String)>,
}

/// Makes a batch's blobs durable (one syncfs), then applies its events
/// in one transaction and flushes the index once.
fn commit_batch(
    runtime: &tokio::runtime::Handle,
    index: &Index,
    blobs: &BlobStore,
    repo: &RepoName,
    ready: Vec<Prepared>,
    times: &HashMap<String, String>,
) -> anyhow::Result<BatchOutcome> {
    let mut outcome = BatchOutcome::default();
    if ready.is_empty() {
        return Ok(outcome);
    }
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
    let mut staged = Vec::new();
    let mut events = Vec::new();
    let mut imported = Vec::new();
    for p in ready {
        let upload_time_us = match times.get(&p.record.filename) {
            Some(text) => match time::OffsetDateTime::parse(
                text,
                &time::format_description::well_known::Rfc3339,
            ) {
                Ok(t) => Some(((t.unix_timestamp_nanos() / 1000) as i64).min(now)),
                // Not RFC 3339: the import's own time.
                Err(_) => None,
            },
            None => None,
        };
        imported.push((p.path.clone(), p.record.size));
        events.push(Event {
            actor: ACTOR.to_owned(),
            time_us: now,
            user: None,
            node: None,
            change: Change::FileAdded {
                repo: repo.clone(),
                project: p.project,
                display_name: p.display_name,
                file: p.record,
                upload_time_us,
            },
        });
        staged.push(p.file);
        staged.extend(p.metadata);
    }
    runtime.block_on(blobs.commit_batch(staged))?;
    match index.apply_batch(&events) {
        Ok(_) => {
            for (_, size) in &imported {
                outcome.imported += 1;
                outcome.bytes += size;
            }
        }
        // An event the index refuses: most often a file that a batch
        // before this one listed after this one was checked. Apply the
        // batch one by one, so the others still go in, and say what each
        // refused one was.
        Err(StoreError::Rejected(_)) => {
            for (event, (path, size)) in events.iter().zip(&imported) {
                let serial = index.applied_serial()?.next();
                match index.apply(serial, event) {
                    Ok(()) => {
                        outcome.imported += 1;
                        outcome.bytes += size;
                    }
                    Err(StoreError::Rejected(r)) => match already_listed(index, event)? {
                        true => outcome.present += 1,
                        false => outcome.refused.push((path.clone(), r.to_string())),
                    },
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(e) => return Err(e.into()),
    }
    index.flush()?;
    Ok(outcome)
}

/// Whether the file an event adds is listed already with the same bytes.
fn already_listed(index: &Index, event: &Event) -> anyhow::Result<bool> {
    let Change::FileAdded {
        repo,
        project,
        file,
        ..
    } = &event.change
    else {
        return Ok(false);
    };
    Ok(index
        .file(repo, project, &file.filename, None)?
        .is_some_and(|listed| listed.record.sha256 == file.sha256))
}
