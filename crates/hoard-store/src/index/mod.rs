//! The index: sled trees derived from the changelog, which is kept in the
//! same database. `Index::apply` is the only function that changes them.
//!
//! - `state`: the read-model types;
//! - `keys`: how each tree is keyed, and typed access to its values;
//! - `changelog`: the events as stored, their format, the digest;
//! - `apply`: the one transaction that applies an event;
//! - `read`: queries, as of a serial;
//! - `snapshot`: the state machine as a file, for Raft.

mod apply;
mod changelog;
mod keys;
mod read;
mod repo_cache;
mod snapshot;
mod stamps;

pub use snapshot::ExportedState;
pub use stamps::PageStamp;
mod state;

use std::path::{Path, PathBuf};

use crate::flusher::Flusher;
use crate::raft_log::RaftLog;
use crate::StoreError;

pub use changelog::ReceivedEvent;
pub use read::{GenericEntry, RepoUsage};
pub use state::{
    Counts, DeprecationChange, FileState, GenericFileState, MirrorOrigin, NpmMirrorOrigin,
    NpmPackageState, NpmVersionState, OwnersState, ProjectState, Rejection, RepoState, TagChange,
    TarballState, TokenState, UserState, YankChange,
};

use hoard_core::{RepoName, Serial, Sha256};
use keys::{
    decode, digest_from, serial_from, APPLIED, COUNTS, DIGEST, INSTALLING, RAFT_APPLIED,
    RAFT_MEMBERSHIP,
};

/// sled's page cache, unless configured. sled's default, 1 GiB, filled
/// during a catch-up and stayed: an idle replica of 10,000 projects held
/// 171 MiB (26 MiB after a restart); with 32 MiB, 83 MiB; with 8 MiB,
/// 58 MiB, for pages rendered about a fifth slower at that size
/// (`hoard-bench scale --quick`). Hot pages are served from the server's
/// page cache, not from here.
pub const DEFAULT_INDEX_CACHE_BYTES: u64 = 8 << 20;

/// Where the Raft state machine stands, in hoard-cluster's encoding.
pub struct RaftPosition<'a> {
    /// The log id of the entry being applied.
    pub applied: &'a [u8],
    /// The membership, when the entry changes it.
    pub membership: Option<&'a [u8]>,
}

/// The Raft position as stored: `None` before the first entry.
pub struct StoredRaftPosition {
    pub applied: Option<Vec<u8>>,
    pub membership: Option<Vec<u8>>,
}

pub struct Index {
    dir: PathBuf,
    db: sled::Db,
    flusher: Flusher,
    changelog: sled::Tree,
    meta: sled::Tree,
    repos: sled::Tree,
    projects: sled::Tree,
    files: sled::Tree,
    tokens: sled::Tree,
    npm_packages: sled::Tree,
    npm_versions: sled::Tree,
    users: sled::Tree,
    owners: sled::Tree,
    generic_files: sled::Tree,
    generic_dirs: sled::Tree,
    /// Held by every write to the state trees, and by an export: sled's
    /// iterators see no single point in time across trees, so an export
    /// keeps writes out while it reads.
    state_gate: std::sync::Mutex<()>,
    /// What each cached page depends on, moved by every apply.
    stamps: stamps::PageStamps,
    repo_cache: repo_cache::RepoCache,
}

impl Index {
    /// Opens the index in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Index::open_with_cache(dir, DEFAULT_INDEX_CACHE_BYTES)
    }

    /// [`Index::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Locked(dir.display().to_string())
                }
                sled::Error::Io(io) if io.to_string().contains("lock") => {
                    StoreError::Locked(dir.display().to_string())
                }
                other => StoreError::Sled(other),
            })?;
        let mut index = Index {
            flusher: Flusher::spawn(db.clone())?,
            changelog: db.open_tree("changelog")?,
            meta: db.open_tree("meta")?,
            repos: db.open_tree("repos")?,
            projects: db.open_tree("projects")?,
            files: db.open_tree("files")?,
            tokens: db.open_tree("tokens")?,
            npm_packages: db.open_tree("npm_packages")?,
            npm_versions: db.open_tree("npm_versions")?,
            users: db.open_tree("users")?,
            owners: db.open_tree("owners")?,
            generic_files: db.open_tree("generic_files")?,
            generic_dirs: db.open_tree("generic_dirs")?,
            state_gate: std::sync::Mutex::new(()),
            stamps: stamps::PageStamps::default(),
            repo_cache: repo_cache::RepoCache::default(),
            db,
            dir: dir.to_owned(),
        };
        if index.meta.get(INSTALLING)?.is_some() {
            // A crash in the middle of installing a snapshot: what is
            // there is neither the old state nor the new one. Start empty,
            // so that Raft installs a snapshot again.
            tracing::warn!(
                "an interrupted snapshot install left the index half-written; resetting it"
            );
            index.clear_state()?;
            index.db.flush()?;
            index.meta.remove(INSTALLING)?;
            index.db.flush()?;
        }
        index.stamps = stamps::PageStamps::new(index.applied_serial()?);
        Ok(index)
    }

    /// Keeps other writers of the state trees (and exports) out.
    pub(crate) fn lock_state(&self) -> std::sync::MutexGuard<'_, ()> {
        self.state_gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory the index lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Raft log kept in this database.
    pub fn raft_log(&self) -> Result<RaftLog, StoreError> {
        RaftLog::open(&self.db, self.flusher.clone())
    }

    /// The one thread that flushes this database.
    pub fn flusher(&self) -> &Flusher {
        &self.flusher
    }

    /// The Raft position of the state machine: the last applied log id
    /// and the membership, as they were stored by [`Index::apply_raft`].
    pub fn raft_position(&self) -> Result<StoredRaftPosition, StoreError> {
        Ok(StoredRaftPosition {
            applied: self.meta.get(RAFT_APPLIED)?.map(|v| v.to_vec()),
            membership: self.meta.get(RAFT_MEMBERSHIP)?.map(|v| v.to_vec()),
        })
    }

    /// Forgets the Raft position and keeps every event: a forced
    /// promotion starts a new Raft group over the index as it is.
    /// Durable when this returns.
    pub async fn forget_raft_position(&self) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(RAFT_APPLIED);
        batch.remove(RAFT_MEMBERSHIP);
        self.meta.apply_batch(batch)?;
        self.flusher.flush().await
    }

    /// Empties the whole state machine (blobs are not in it), for a node
    /// that rejoins from a new leader. Durable when this returns; a crash
    /// half-way resets the index at the next open.
    pub async fn reset(&self) -> Result<(), StoreError> {
        self.stamps.unsettle();
        self.meta.insert(INSTALLING, b"1")?;
        self.flusher.flush().await?;
        self.clear_state()?;
        self.flusher.flush().await?;
        self.meta.remove(INSTALLING)?;
        self.flusher.flush().await?;
        self.stamps.settle(self.applied_serial()?);
        Ok(())
    }

    /// The stamp of a page at `view` that shows `project` of `repos` (of
    /// several, for a virtual repository), or their index page for `None`:
    /// pages rendered at views with the same stamp are the same bytes.
    pub fn page_stamp(&self, repos: &[RepoName], project: Option<&str>, view: Serial) -> PageStamp {
        self.stamps.stamp(repos, project, view)
    }

    fn set_raft_position(&self, position: &RaftPosition<'_>) -> Result<(), StoreError> {
        let _gate = self.lock_state();
        let mut batch = sled::Batch::default();
        batch.insert(RAFT_APPLIED, position.applied);
        if let Some(m) = position.membership {
            batch.insert(RAFT_MEMBERSHIP, m);
        }
        self.meta.apply_batch(batch)?;
        Ok(())
    }

    /// Empties every state tree. `meta` goes last and keeps the
    /// install marker, so that sled's background flush can never persist
    /// a state without it before the reset is complete.
    fn clear_state(&self) -> Result<(), StoreError> {
        self.repo_cache.invalidate();
        for (name, tree) in self.state_trees()? {
            if name != "meta" {
                tree.clear()?;
            }
        }
        let mut batch = sled::Batch::default();
        for key in self.meta.iter().keys() {
            let key = key?;
            if key != INSTALLING {
                batch.remove(key);
            }
        }
        self.meta.apply_batch(batch)?;
        Ok(())
    }

    pub fn applied_serial(&self) -> Result<Serial, StoreError> {
        serial_from(self.meta.get(APPLIED)?)
    }

    /// The chained digest of every event applied so far.
    pub fn digest(&self) -> Result<Sha256, StoreError> {
        Ok(Sha256::from_bytes(digest_from(self.meta.get(DIGEST)?)?))
    }

    pub fn counts(&self) -> Result<Counts, StoreError> {
        match self.meta.get(COUNTS)? {
            Some(bytes) => decode("meta", &bytes),
            None => Ok(Counts::default()),
        }
    }

    /// Makes everything applied so far durable. Blocking: call it from a
    /// writer thread or `spawn_blocking`, never concurrently from async
    /// tasks (sled 0.34's `flush_async` can deadlock).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_core::{Change, Event};

    fn event() -> Event {
        Event {
            actor: "a".into(),
            time_us: 1,
            user: None,
            node: None,
            change: Change::TokenRevoked {
                hash: hoard_core::Sha256::of(b"x"),
            },
        }
    }

    #[test]
    fn corrupt_meta_is_an_error_not_a_zero() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.applied_serial().unwrap(), Serial::ZERO);
        index.meta.insert(APPLIED, &b"abc"[..]).unwrap();
        index.meta.insert(DIGEST, &b"short"[..]).unwrap();
        assert!(matches!(
            index.applied_serial(),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(index.digest(), Err(StoreError::Corrupt(_))));
        // And apply refuses to build on it.
        assert!(matches!(
            index.apply(Serial(1), &event()),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn events_carry_their_format_and_round_trip() {
        let encoded = ReceivedEvent::encode(event());
        let text = std::str::from_utf8(encoded.bytes()).unwrap();
        assert!(text.starts_with(r#"{"v":1,"#), "{text}");
        let back = ReceivedEvent::decode(encoded.bytes().to_vec()).unwrap();
        assert_eq!(back.event(), &event());
    }

    #[test]
    fn a_newer_format_is_refused_with_a_clear_message() {
        let text = String::from_utf8(ReceivedEvent::encode(event()).bytes().to_vec())
            .unwrap()
            .replace(r#""v":1"#, r#""v":2"#);
        let err = ReceivedEvent::decode(text.into_bytes()).err().unwrap();
        assert!(err.to_string().contains("newer than this node"), "{err}");
    }

    #[test]
    fn an_unknown_kind_is_refused_with_a_clear_message() {
        let text = r#"{"v":1,"actor":"a","time_us":1,"change":{"type":"teleported"}}"#;
        let err = ReceivedEvent::decode(text.as_bytes().to_vec())
            .err()
            .unwrap();
        assert!(err.to_string().contains("upgrade this node"), "{err}");
    }
}
