//! Online backup: `POST /+admin/local/backup {"to": DIR}` writes a
//! consistent copy of this node into DIR while it goes on serving and
//! taking writes. The index is exported as of one serial (writes wait only
//! while it is read); then every blob that serial lists is hard-linked
//! where the filesystem allows, else copied (from any backend); the
//! manifest is written last, so a backup without one is incomplete.
//!
//! The answer streams progress as JSON lines (`application/x-ndjson`),
//! the last of which says `done` or `error`.
//!
//! ```text
//! DIR/index.snapshot   the state machine at `serial` (Index::export_snapshot)
//! DIR/blobs.list       "<sha256> <size>" for each blob, sorted
//! DIR/blobs/ab/cd/<sha256>
//! DIR/manifest.json    written last
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::http::HandlerResult;
use crate::node::{Node, Principal};

/// The manifest's `format`.
pub const BACKUP_FORMAT: &str = "hoard-backup";
pub const BACKUP_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const SNAPSHOT_FILE: &str = "index.snapshot";
pub const BLOB_LIST_FILE: &str = "blobs.list";

/// What `manifest.json` records of a backup.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: String,
    pub version: u32,
    pub node_id: String,
    /// The serial that the index snapshot is at.
    pub serial: u64,
    /// The changelog digest at that serial.
    pub digest: String,
    pub created_unix: u64,
    pub snapshot_bytes: u64,
    pub snapshot_sha256: String,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub blob_list_sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    /// An absolute path on the node's machine: a new or empty directory.
    to: PathBuf,
}

pub async fn handle(node: &Arc<Node>, principal: &Principal, body: &[u8]) -> HandlerResult {
    if !principal.is_global_admin() {
        return Err(ApiError::forbidden("a backup needs a global admin token"));
    }
    let req: BackupRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid backup request: {e}")))?;
    let dir = req.to;
    if !dir.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "the backup directory must be an absolute path on the node's machine, not {}",
            dir.display()
        )));
    }
    prepare_dir(&dir)?;
    let (tx, rx) = mpsc::channel::<serde_json::Value>(16);
    let node = node.clone();
    tokio::spawn(async move {
        let report = tx.clone();
        let last = match write_backup(&node, &dir, &report).await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "backup failed");
                json!({"event": "error", "message": e})
            }
        };
        let _ = tx.send(last).await;
    });
    let lines = tokio_stream::wrappers::ReceiverStream::new(rx).map(|line| {
        let mut text = line.to_string();
        text.push('\n');
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(text)))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(lines)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// Creates `dir` (or takes it if empty) with its `blobs/`.
fn prepare_dir(dir: &Path) -> Result<(), ApiError> {
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "cannot read {}: {e}",
                dir.display()
            )))
        }
    };
    if !empty {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} is not empty: a backup goes into a new or empty directory",
                dir.display()
            ),
        ));
    }
    std::fs::create_dir_all(dir.join("blobs"))
        .map_err(|e| ApiError::bad_request(format!("cannot create {}: {e}", dir.display())))
}

async fn write_backup(
    node: &Node,
    dir: &Path,
    report: &mpsc::Sender<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let started = Instant::now();
    let snapshot = dir.join(SNAPSHOT_FILE);
    let index = node.index.clone();
    let path = snapshot.clone();
    let state = tokio::task::spawn_blocking(move || index.export_point_in_time(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("exporting the index: {e}"))?;
    let snapshot_sha256 = sha256_file(&snapshot).await?;
    let _ = report
        .send(json!({
            "event": "index",
            "serial": state.serial.0,
            "digest": state.digest.to_hex(),
            "bytes": state.bytes,
            "blobs": state.blobs.len(),
        }))
        .await;
    tracing::info!(
        dir = %dir.display(),
        serial = state.serial.0,
        blobs = state.blobs.len(),
        "backup: index exported"
    );

    let total = state.blobs.len() as u64;
    let (mut done, mut bytes, mut linked) = (0u64, 0u64, 0u64);
    let mut list = String::new();
    let mut last_report = Instant::now();
    for sha in &state.blobs {
        let hex = sha.to_hex();
        let parent = dir.join("blobs").join(&hex[0..2]).join(&hex[2..4]);
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| format!("create {}: {e}", parent.display()))?;
        let (size, was_linked) = node
            .blobs
            .export_to(sha, &parent.join(&hex))
            .await
            .map_err(|e| format!("blob {sha}: {e}"))?;
        done += 1;
        bytes += size;
        linked += u64::from(was_linked);
        list.push_str(&format!("{hex} {size}\n"));
        if last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            let _ = report
                .send(json!({"event": "blobs", "done": done, "total": total, "bytes": bytes}))
                .await;
        }
    }
    let list_path = dir.join(BLOB_LIST_FILE);
    hoard_store::write_file_durable(&list_path, list.as_bytes(), 0o644)
        .map_err(|e| e.to_string())?;
    // The blobs' directories (and the snapshot's) in one go.
    sync_filesystem(dir)?;

    let manifest = BackupManifest {
        format: BACKUP_FORMAT.to_owned(),
        version: BACKUP_VERSION,
        node_id: node.config.node_id.clone(),
        serial: state.serial.0,
        digest: state.digest.to_hex(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        snapshot_bytes: state.bytes,
        snapshot_sha256,
        blobs: done,
        blob_bytes: bytes,
        blob_list_sha256: hoard_core::Sha256::of(list.as_bytes()).to_hex(),
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    hoard_store::write_file_durable(&dir.join(MANIFEST_FILE), &text, 0o644)
        .map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        dir = %dir.display(),
        serial = manifest.serial,
        blobs = done,
        bytes,
        linked,
        secs,
        "backup written"
    );
    Ok(json!({
        "event": "done",
        "dir": dir,
        "serial": manifest.serial,
        "digest": manifest.digest,
        "blobs": done,
        "bytes": bytes,
        "linked": linked,
        "copied": done - linked,
        "secs": secs,
    }))
}

async fn sha256_file(path: &Path) -> Result<String, String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut file =
            std::fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        let mut hasher = hoard_core::Sha256Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            if n == 0 {
                return Ok(hasher.finish().to_hex());
            }
            hasher.update(&buf[..n]);
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// One `syncfs` of the filesystem that holds `dir`: every file and
/// directory written there made durable at once.
fn sync_filesystem(dir: &Path) -> Result<(), String> {
    let root = std::fs::File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    // SAFETY: syncfs on a descriptor we own and keep open for the call.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&root)) } != 0 {
        return Err(format!(
            "syncfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
