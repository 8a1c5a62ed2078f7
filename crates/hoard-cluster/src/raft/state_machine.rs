//! The Raft state machine: the node's index, changed only through
//! `Index::apply_raft`, which writes the Raft position in the same
//! transaction as the event. Before an event that names blobs is applied,
//! its blobs must be here: a node never lists a file it cannot serve, so a
//! follower fetches missing blobs from the other voters first.
//!
//! Snapshots are the index exported to a file (never held in memory, and
//! never carrying blob bytes); installing one swaps the whole index and
//! then fetches every blob it lists.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, TryStreamExt};
use hoard_core::{Serial, Sha256};
use hoard_store::{BlobStore, Index, RaftPosition, ReceivedEvent};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::{watch, Mutex};

use super::codec::{self, LogId, SnapshotMeta, StoredMembershipOf};
use super::log_store::io;
use super::{ApplyOutcome, TypeConfig};
use crate::net::Net;

pub(crate) type Snapshot = openraft::Snapshot<
    openraft::impls::leader_id_adv::LeaderId<u64, u64>,
    u64,
    super::NodeInfo,
    SnapshotFile,
>;

/// A snapshot's bytes: an open file, so that a newer snapshot replacing
/// it on disk does not disturb a transfer that is under way.
#[derive(Debug)]
pub struct SnapshotFile {
    pub(crate) path: PathBuf,
    pub(crate) file: std::fs::File,
}

struct Shared {
    index: Arc<Index>,
    blobs: BlobStore,
    snapshot_dir: PathBuf,
    applied: watch::Sender<Serial>,
    /// gRPC addresses to fetch missing blobs from, best first.
    blob_sources: watch::Receiver<Vec<String>>,
    /// Held while applying and while exporting: sled iterators do not see
    /// one point in time across trees.
    apply_lock: Mutex<()>,
    /// How many snapshots this node has installed (for tests and status).
    installed: AtomicU64,
    fetched_bytes: AtomicU64,
    /// Set while applying waits for a blob that no member could send.
    stuck: std::sync::Mutex<Option<String>>,
    net: Net,
}

#[derive(Clone)]
pub(crate) struct StateMachine {
    shared: Arc<Shared>,
}

const CURRENT: &str = "current.snap";
const CURRENT_META: &str = "current.meta";

impl StateMachine {
    pub(crate) fn new(
        index: Arc<Index>,
        blobs: BlobStore,
        snapshot_dir: PathBuf,
        blob_sources: watch::Receiver<Vec<String>>,
        net: Net,
    ) -> Result<Self, hoard_store::StoreError> {
        std::fs::create_dir_all(&snapshot_dir).map_err(|source| hoard_store::StoreError::Io {
            context: format!("create {}", snapshot_dir.display()),
            source,
        })?;
        let applied = watch::Sender::new(index.applied_serial()?);
        Ok(StateMachine {
            shared: Arc::new(Shared {
                index,
                blobs,
                snapshot_dir,
                applied,
                blob_sources,
                apply_lock: Mutex::new(()),
                installed: AtomicU64::new(0),
                fetched_bytes: AtomicU64::new(0),
                stuck: std::sync::Mutex::new(None),
                net,
            }),
        })
    }

    /// The serial of the last applied event.
    pub(crate) fn applied(&self) -> watch::Receiver<Serial> {
        self.shared.applied.subscribe()
    }

    pub(crate) fn snapshots_installed(&self) -> u64 {
        self.shared
            .installed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why applying is stuck right now, if it is.
    pub(crate) fn stuck(&self) -> Option<String> {
        self.shared
            .stuck
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_stuck(&self, why: Option<String>) {
        *self.shared.stuck.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    pub(crate) fn snapshot_dir(&self) -> &Path {
        &self.shared.snapshot_dir
    }

    /// Makes sure every blob in `blobs` is here, fetching the missing ones
    /// from the other voters. Retries until it succeeds: applying without
    /// them would list files this node cannot serve.
    async fn ensure_blobs(&self, blobs: &[Sha256]) {
        for sha in blobs {
            let mut attempt = 0u32;
            while !matches!(self.shared.blobs.contains(sha).await, Ok(true)) {
                let sources = self.shared.blob_sources.borrow().clone();
                let mut done = false;
                for addr in &sources {
                    let result = match self.shared.net.connect(addr).await {
                        Ok(ch) => {
                            crate::blob_fetch::fetch_blob(
                                &self.shared.blobs,
                                addr,
                                ch,
                                *sha,
                                &self.shared.fetched_bytes,
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(()) => {
                            done = true;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(%sha, source = %addr, error = %e, "fetching a blob for a committed event failed")
                        }
                    }
                }
                if done {
                    break;
                }
                attempt += 1;
                self.set_stuck(Some(format!(
                    "applying waits for blob {sha}, which no member could send yet (tried {sources:?})"
                )));
                if attempt % 10 == 1 {
                    tracing::warn!(%sha, ?sources, "a committed event names a blob that no voter could send yet; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200).saturating_mul(attempt.min(10)))
                    .await;
            }
            if attempt > 0 {
                self.set_stuck(None);
            }
        }
    }

    fn read_current(&self) -> io::Result<Option<(SnapshotMeta, SnapshotFile)>> {
        let meta_path = self.shared.snapshot_dir.join(CURRENT_META);
        let meta = match std::fs::read(&meta_path) {
            Ok(bytes) => codec::decode_snapshot_meta(&bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = self.shared.snapshot_dir.join(CURRENT);
        let file = std::fs::File::open(&path)?;
        Ok(Some((meta, SnapshotFile { path, file })))
    }

    /// Publishes `data` (a complete snapshot file in the snapshot dir) as
    /// the current snapshot: rename, then the meta file, each durably.
    fn publish(&self, data: &Path, meta: &SnapshotMeta) -> io::Result<()> {
        let dir = &self.shared.snapshot_dir;
        std::fs::rename(data, dir.join(CURRENT))?;
        hoard_store::write_file_durable(
            &dir.join(CURRENT_META),
            &codec::encode_snapshot_meta(meta),
            0o600,
        )
        .map_err(io)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembershipOf), io::Error> {
        let position = self.shared.index.raft_position().map_err(io)?;
        let applied = position
            .applied
            .map(|b| codec::decode_log_id(&b))
            .transpose()?;
        let membership = match position.membership {
            Some(b) => codec::decode_membership(&b)?,
            None => StoredMembershipOf::default(),
        };
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let _guard = self.shared.apply_lock.lock().await;
        // Answers and the applied serial wait for one flush at the end of
        // the batch: a node shows (and acknowledges) only what it would
        // still show after kill -9, so reads stay monotonic across crashes.
        let mut answers = Vec::new();
        let mut last_serial = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let applied = codec::encode_log_id(&log_id);
            let (event, membership) = match &entry.payload {
                EntryPayload::Blank => (None, None),
                EntryPayload::Normal(proposal) => {
                    let event = ReceivedEvent::decode(proposal.event.clone().into_bytes())
                        .map_err(|e| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "committed entry {log_id} holds an event this node cannot decode \
                                     (is it older than the leader?): {e}"
                                ),
                            )
                        })?;
                    (Some(event), None)
                }
                EntryPayload::Membership(m) => (
                    None,
                    Some(codec::encode_membership(&StoredMembershipOf::new(
                        Some(log_id),
                        m.clone(),
                    ))),
                ),
            };
            if let Some(event) = &event {
                self.ensure_blobs(&event.event().change.blobs()).await;
            }
            let outcome = self
                .shared
                .index
                .apply_raft(
                    RaftPosition {
                        applied: &applied,
                        membership: membership.as_deref(),
                    },
                    event.as_ref(),
                )
                .map_err(io)?;
            if let Some(Ok(serial)) = &outcome {
                last_serial = Some(*serial);
                tracing::debug!(%serial, %log_id, "applied");
            }
            if let Some(responder) = responder {
                answers.push((responder, outcome));
            }
        }
        if last_serial.is_some() {
            self.shared.index.flusher().flush().await.map_err(io)?;
        }
        if let Some(serial) = last_serial {
            self.shared.applied.send_replace(serial);
        }
        for (responder, outcome) in answers {
            responder.send(ApplyOutcome(outcome));
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let _guard = self.shared.apply_lock.lock().await;
        tracing::info!(last = ?meta.last_log_id, "installing a snapshot");
        let index = self.shared.index.clone();
        let path = snapshot.path.clone();
        drop(snapshot.file);
        tokio::task::spawn_blocking(move || index.import_snapshot(&path))
            .await
            .map_err(io::Error::other)?
            .map_err(io)?;
        // The snapshot's own position must match what openraft was told.
        let position = codec::encode_log_id(
            meta.last_log_id
                .as_ref()
                .ok_or_else(|| io::Error::other("a snapshot without a last log id"))?,
        );
        let membership = codec::encode_membership(&meta.last_membership);
        self.shared
            .index
            .apply_raft(
                RaftPosition {
                    applied: &position,
                    membership: Some(&membership),
                },
                None,
            )
            .map_err(io)?;
        self.shared.index.flusher().flush().await.map_err(io)?;
        // Every blob the snapshot lists, before this node counts it applied.
        let wanted = self.shared.index.listed_blobs().map_err(io)?;
        let mut missing: Vec<Sha256> = Vec::new();
        for sha in wanted {
            if !matches!(self.shared.blobs.contains(&sha).await, Ok(true)) {
                missing.push(sha);
            }
        }
        tracing::info!(
            missing = missing.len(),
            "fetching the blobs the snapshot lists"
        );
        self.ensure_blobs(&missing).await;
        // Only now may a restart keep this index: before, it resets it.
        self.shared
            .index
            .finish_snapshot_install()
            .await
            .map_err(io)?;
        self.publish(&snapshot.path, meta)?;
        let serial = self.shared.index.applied_serial().map_err(io)?;
        self.shared.applied.send_replace(serial);
        self.shared
            .installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(%serial, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .read_current()?
            .map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = self.shared.clone();
        let _guard = shared.apply_lock.lock().await;
        let (applied, membership) = self.applied_state().await?;
        let tmp = self
            .shared
            .snapshot_dir
            .join(format!("build-{:016x}.tmp", rand_u64()));
        let index = self.shared.index.clone();
        let tmp_path = tmp.clone();
        let bytes = tokio::task::spawn_blocking(move || index.export_snapshot(&tmp_path))
            .await
            .map_err(io::Error::other)?
            .map_err(io)?;
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
        };
        self.publish(&tmp, &meta)?;
        tracing::info!(last = ?meta.last_log_id, bytes, "built a snapshot");
        let (meta, snapshot) = self
            .read_current()?
            .ok_or_else(|| io::Error::other("the snapshot just built is gone"))?;
        Ok(Snapshot { meta, snapshot })
    }
}

fn rand_u64() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}
