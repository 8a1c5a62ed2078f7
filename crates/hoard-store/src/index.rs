//! The index: sled trees derived from the changelog, which is kept in the
//! same database. `Index::apply` is the only function that changes them.

use std::collections::BTreeMap;
use std::path::Path;

use hoard_core::{
    Change, Event, FileRecord, NpmTarball, RepoName, RepoSettings, Serial, Sha256, TokenRecord,
};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::flusher::Flusher;
use crate::raft_log::RaftLog;
use crate::StoreError;

/// Why an event could not be applied. Deterministic: every node rejects the
/// same event for the same reason, and a rejected event takes no serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("repository {0} already exists")]
    RepoExists(RepoName),
    #[error("repository {0} does not exist")]
    RepoMissing(RepoName),
    #[error("file {0} already exists")]
    FileExists(String),
    #[error("file {0} does not exist")]
    FileMissing(String),
    #[error("token already exists")]
    TokenExists,
    #[error("token does not exist")]
    TokenMissing,
    #[error("{0} already exists")]
    VersionExists(String),
    #[error("{0} does not exist")]
    VersionMissing(String),
    #[error("package {0} does not exist")]
    PackageMissing(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoState {
    pub name: RepoName,
    pub settings: RepoSettings,
    pub created: Serial,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectState {
    /// The normalized name.
    pub name: String,
    pub display_name: String,
    pub created: Serial,
}

/// An event as another node's changelog stores it: decoded once, with
/// the bytes it was decoded from, which are what this node stores too.
pub struct ReceivedEvent {
    event: Event,
    bytes: Vec<u8>,
}

/// The format of events this node writes and understands. An event
/// carries it as `"v"`; a node refuses events of a newer format, or of a
/// kind it does not know, so that a mixed-version cluster fails loudly
/// instead of applying half of a change.
pub const EVENT_FORMAT: u32 = 1;

#[derive(Serialize)]
struct VersionedEvent<'a> {
    v: u32,
    #[serde(flatten)]
    event: &'a Event,
}

#[derive(Deserialize)]
struct EventVersion {
    #[serde(default)]
    v: Option<u32>,
}

fn encode_event(event: &Event) -> Vec<u8> {
    encode(&VersionedEvent {
        v: EVENT_FORMAT,
        event,
    })
}

fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    let version: EventVersion = decode("an incoming event", bytes)?;
    match version.v {
        Some(v) if v > EVENT_FORMAT => {
            return Err(StoreError::Corrupt(format!(
                "an event of format {v}, newer than this node's format {EVENT_FORMAT}: \
                 upgrade this node"
            )))
        }
        _ => {}
    }
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "an event this node cannot read (a kind it does not know? upgrade this node): {e}"
        ))
    })
}

impl ReceivedEvent {
    pub fn decode(bytes: Vec<u8>) -> Result<Self, StoreError> {
        let event = decode_event(&bytes)?;
        Ok(ReceivedEvent { event, bytes })
    }

    /// Encodes an event made on this node, as every node will store it.
    pub fn encode(event: Event) -> Self {
        let bytes = encode_event(&event);
        ReceivedEvent { event, bytes }
    }

    pub fn event(&self) -> &Event {
        &self.event
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// One yank or un-yank of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YankChange {
    pub serial: Serial,
    /// `Some(reason)` (possibly empty) when yanked, `None` when un-yanked.
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub record: FileRecord,
    pub added: Serial,
    pub upload_time_us: i64,
    pub uploader: String,
    /// Every yank change, oldest first, so that any past state can be read.
    pub yanks: Vec<YankChange>,
}

impl FileState {
    /// The yank reason in force at `at` (`None`: the latest state).
    pub fn yanked_at(&self, at: Option<Serial>) -> Option<&str> {
        self.yanks
            .iter()
            .rev()
            .find(|y| at.is_none_or(|at| y.serial <= at))
            .and_then(|y| y.reason.as_deref())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenState {
    pub record: TokenRecord,
    pub created: Serial,
    pub revoked: Option<Serial>,
}

/// One change of an npm dist-tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagChange {
    pub serial: Serial,
    pub time_us: i64,
    /// `None`: the tag was removed.
    pub version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NpmPackageState {
    /// The full name, `name` or `@scope/name`.
    pub name: String,
    pub created: Serial,
    pub created_us: i64,
    /// Every change of every tag, oldest first.
    pub tags: BTreeMap<String, Vec<TagChange>>,
}

impl NpmPackageState {
    /// The dist-tags in force at `at` (`None`: now).
    pub fn tags_at(&self, at: Option<Serial>) -> BTreeMap<String, String> {
        self.tags
            .iter()
            .filter_map(|(tag, changes)| {
                let change = changes
                    .iter()
                    .rev()
                    .find(|c| at.is_none_or(|at| c.serial <= at))?;
                Some((tag.clone(), change.version.clone()?))
            })
            .collect()
    }

    /// The time of the latest tag change at `at`.
    pub fn last_tag_change_us(&self, at: Option<Serial>) -> Option<i64> {
        self.tags
            .values()
            .flatten()
            .filter(|c| at.is_none_or(|at| c.serial <= at))
            .map(|c| c.time_us)
            .max()
    }
}

/// One deprecation or un-deprecation of an npm version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeprecationChange {
    pub serial: Serial,
    pub time_us: i64,
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NpmVersionState {
    pub version: String,
    /// The manifest as published, as JSON text.
    pub manifest: String,
    pub tarball: NpmTarball,
    pub published: Serial,
    pub time_us: i64,
    pub publisher: String,
    pub readme: Option<String>,
    pub description: Option<String>,
    pub deprecations: Vec<DeprecationChange>,
    /// When it was unpublished, if it was.
    pub unpublished: Option<Serial>,
}

impl NpmVersionState {
    /// Whether the version is listed at `at` (`None`: now).
    pub fn live_at(&self, at: Option<Serial>) -> bool {
        let published = at.is_none_or(|at| self.published <= at);
        let unpublished = self
            .unpublished
            .is_some_and(|u| at.is_none_or(|at| u <= at));
        published && !unpublished
    }

    pub fn deprecated_at(&self, at: Option<Serial>) -> Option<&str> {
        self.deprecations
            .iter()
            .rev()
            .find(|d| at.is_none_or(|at| d.serial <= at))
            .and_then(|d| d.message.as_deref())
    }

    /// The time of the latest change to this version at `at`.
    pub fn last_change_us(&self, at: Option<Serial>) -> i64 {
        self.deprecations
            .iter()
            .filter(|d| at.is_none_or(|at| d.serial <= at))
            .map(|d| d.time_us)
            .fold(self.time_us, i64::max)
    }
}

/// Totals kept up to date by `apply`, so that status pages cost nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub repos: u64,
    pub projects: u64,
    pub files: u64,
    pub tokens: u64,
    #[serde(default)]
    pub npm_packages: u64,
    #[serde(default)]
    pub npm_versions: u64,
}

const APPLIED: &[u8] = b"applied_serial";
const DIGEST: &[u8] = b"digest";
const COUNTS: &[u8] = b"counts";
/// The Raft log id of the last applied entry, as hoard-cluster encodes it.
const RAFT_APPLIED: &[u8] = b"raft_applied";
/// The last applied Raft membership, as hoard-cluster encodes it.
const RAFT_MEMBERSHIP: &[u8] = b"raft_membership";
/// Set while a snapshot is being installed: the trees are half-written.
const INSTALLING: &[u8] = b"installing_snapshot";

/// The trees a snapshot carries: the whole state machine, and nothing of
/// the Raft log.
const STATE_TREES: &[&str] = &[
    "changelog",
    "meta",
    "repos",
    "projects",
    "files",
    "tokens",
    "npm_packages",
    "npm_versions",
];

const SNAPSHOT_MAGIC: &[u8; 8] = b"hoardsn1";
/// The largest key or value a snapshot may carry (index values are small
/// JSON records; an npm manifest with its readme is the largest).
const MAX_SNAPSHOT_RECORD: usize = 64 << 20;

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
}

fn project_key(repo: &RepoName, project: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(repo.as_str().len() + project.len() + 1);
    key.extend_from_slice(repo.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(project.as_bytes());
    key
}

fn file_key(repo: &RepoName, project: &str, filename: &str) -> Vec<u8> {
    let mut key = project_key(repo, project);
    key.push(0);
    key.extend_from_slice(filename.as_bytes());
    key
}

fn repo_prefix(repo: &RepoName) -> Vec<u8> {
    let mut prefix = repo.as_str().as_bytes().to_vec();
    prefix.push(0);
    prefix
}

/// Index records that came into being at a serial, so that a view at an
/// earlier serial leaves them out.
trait Since {
    fn since(&self) -> Serial;
}

impl Since for ProjectState {
    fn since(&self) -> Serial {
        self.created
    }
}

impl Since for FileState {
    fn since(&self) -> Serial {
        self.added
    }
}

impl Since for NpmPackageState {
    fn since(&self) -> Serial {
        self.created
    }
}

impl Since for NpmVersionState {
    fn since(&self) -> Serial {
        self.published
    }
}

/// The record at `key` if it existed at `at` (`None`: now).
fn get_at<T: Since + for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    name: &str,
    key: &[u8],
    at: Option<Serial>,
) -> Result<Option<T>, StoreError> {
    match tree.get(key)? {
        Some(bytes) => {
            let value: T = decode(name, &bytes)?;
            Ok(at.is_none_or(|at| value.since() <= at).then_some(value))
        }
        None => Ok(None),
    }
}

/// The records under `prefix` that existed at `at`, in key order.
fn scan_at<T: Since + for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    name: &str,
    prefix: Vec<u8>,
    at: Option<Serial>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for value in tree.scan_prefix(prefix).values() {
        let value: T = decode(name, &value?)?;
        if at.is_none_or(|at| value.since() <= at) {
            out.push(value);
        }
    }
    Ok(out)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("index values serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(tree: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("undecodable value in {tree}: {e}")))
}

type TxResult<T> = Result<T, ConflictableTransactionError<ApplyAbort>>;

/// Why an `apply` transaction stopped without committing.
#[derive(Debug)]
enum ApplyAbort {
    Rejected(Rejection),
    Gap { applied: Serial, got: Serial },
    Corrupt(String),
}

fn tx_get<T: for<'de> Deserialize<'de>>(
    tree: &TransactionalTree,
    name: &str,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ConflictableTransactionError::Abort(ApplyAbort::Corrupt(format!(
                "undecodable value in {name}: {e}"
            )))
        }),
    }
}

fn reject<T>(r: Rejection) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(ApplyAbort::Rejected(r)))
}

/// A serial stored as 8 big-endian bytes; absent is zero. Anything else is
/// corruption, and says so: reading it as zero would restart the serials.
fn serial_from(bytes: Option<sled::IVec>) -> Result<Serial, StoreError> {
    match bytes {
        None => Ok(Serial::ZERO),
        Some(b) => <[u8; 8]>::try_from(b.as_ref())
            .map(|b| Serial(u64::from_be_bytes(b)))
            .map_err(|_| StoreError::Corrupt(format!("a serial of {} bytes, not 8", b.len()))),
    }
}

/// The stored chained digest; absent (nothing applied) is all zeros.
fn digest_from(bytes: Option<sled::IVec>) -> Result<[u8; 32], StoreError> {
    match bytes {
        None => Ok([0; 32]),
        Some(b) => <[u8; 32]>::try_from(b.as_ref())
            .map_err(|_| StoreError::Corrupt(format!("a digest of {} bytes, not 32", b.len()))),
    }
}

fn corrupt_in_tx(e: StoreError) -> ConflictableTransactionError<ApplyAbort> {
    ConflictableTransactionError::Abort(ApplyAbort::Corrupt(e.to_string()))
}

/// The chained digest after applying `event_bytes` at `serial`: equal on
/// two nodes exactly when they applied the same events.
fn chain_digest(prev: &[u8; 32], serial: Serial, event_bytes: &[u8]) -> [u8; 32] {
    let mut hasher = hoard_core::Sha256Hasher::new();
    hasher.update(prev);
    hasher.update(&serial.0.to_be_bytes());
    hasher.update(event_bytes);
    *hasher.finish().as_bytes()
}

impl Index {
    /// Opens the index in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(|e| match e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                StoreError::Locked(dir.display().to_string())
            }
            sled::Error::Io(io) if io.to_string().contains("lock") => {
                StoreError::Locked(dir.display().to_string())
            }
            other => StoreError::Sled(other),
        })?;
        let index = Index {
            flusher: Flusher::spawn(db.clone())?,
            changelog: db.open_tree("changelog")?,
            meta: db.open_tree("meta")?,
            repos: db.open_tree("repos")?,
            projects: db.open_tree("projects")?,
            files: db.open_tree("files")?,
            tokens: db.open_tree("tokens")?,
            npm_packages: db.open_tree("npm_packages")?,
            npm_versions: db.open_tree("npm_versions")?,
            db,
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
        Ok(index)
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

    /// Applies one committed Raft entry: its event (if it carries one)
    /// takes the next serial, and the Raft position is written in the same
    /// transaction, so a crash and a re-apply give the same serials. A
    /// rejected event takes no serial, but the position still moves.
    /// Returns the event's outcome, `None` for an entry without an event.
    pub fn apply_raft(
        &self,
        position: RaftPosition<'_>,
        event: Option<&ReceivedEvent>,
    ) -> Result<Option<Result<Serial, Rejection>>, StoreError> {
        if let Some(event) = event {
            let serial = self.applied_serial()?.next();
            match self.apply_tx(serial, &event.event, &event.bytes, Some(&position)) {
                Ok(()) => return Ok(Some(Ok(serial))),
                Err(StoreError::Rejected(r)) => {
                    self.set_raft_position(&position)?;
                    return Ok(Some(Err(r)));
                }
                Err(e) => return Err(e),
            }
        }
        self.set_raft_position(&position)?;
        Ok(None)
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
        self.meta.insert(INSTALLING, b"1")?;
        self.flusher.flush().await?;
        self.clear_state()?;
        self.flusher.flush().await?;
        self.meta.remove(INSTALLING)?;
        self.flusher.flush().await
    }

    fn set_raft_position(&self, position: &RaftPosition<'_>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(RAFT_APPLIED, position.applied);
        if let Some(m) = position.membership {
            batch.insert(RAFT_MEMBERSHIP, m);
        }
        self.meta.apply_batch(batch)?;
        Ok(())
    }

    fn state_trees(&self) -> Result<Vec<(String, sled::Tree)>, StoreError> {
        STATE_TREES
            .iter()
            .map(|name| Ok((name.to_string(), self.db.open_tree(name)?)))
            .collect()
    }

    /// Empties every state tree. `meta` goes last and keeps the
    /// install marker, so that sled's background flush can never persist
    /// a state without it before the reset is complete.
    fn clear_state(&self) -> Result<(), StoreError> {
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

    /// Writes the whole state machine (every index tree, the changelog
    /// included; no blob bytes, no Raft log) to `path`, streaming. The
    /// caller must keep `apply` from running meanwhile: sled iterators do
    /// not see one point in time across trees.
    pub fn export_snapshot(&self, path: &Path) -> Result<u64, StoreError> {
        use std::io::Write;
        let io = |source| StoreError::Io {
            context: format!("write snapshot {}", path.display()),
            source,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        out.write_all(SNAPSHOT_MAGIC).map_err(io)?;
        for (name, tree) in self.state_trees()? {
            for item in tree.iter() {
                let (k, v) = item?;
                write_record(&mut out, name.as_bytes(), &k, &v).map_err(io)?;
            }
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(file.metadata().map_err(io)?.len())
    }

    /// Replaces the whole state machine with a snapshot written by
    /// [`Index::export_snapshot`]. Durable when this returns, but still
    /// marked as an install in progress: until
    /// [`Index::finish_snapshot_install`], a crash resets the index at the
    /// next open. The caller fetches the blobs the snapshot lists in
    /// between, so that a node never wakes up listing files it lacks.
    pub fn import_snapshot(&self, path: &Path) -> Result<(), StoreError> {
        use std::io::Read;
        let io = |source| StoreError::Io {
            context: format!("read snapshot {}", path.display()),
            source,
        };
        let mut input = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(io)?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(StoreError::Corrupt(format!(
                "{} is not a hoard snapshot",
                path.display()
            )));
        }
        self.meta.insert(INSTALLING, b"1")?;
        self.db.flush()?;
        self.clear_state()?;
        let mut batches: BTreeMap<String, (sled::Batch, usize)> = BTreeMap::new();
        while let Some((tree, key, value)) = read_record(&mut input).map_err(io)? {
            let tree = String::from_utf8(tree)
                .ok()
                .filter(|t| STATE_TREES.contains(&t.as_str()))
                .ok_or_else(|| StoreError::Corrupt("snapshot names an unknown tree".into()))?;
            if tree == "meta" && key == INSTALLING {
                continue;
            }
            let entry = batches.entry(tree.clone()).or_default();
            entry.0.insert(key, value);
            entry.1 += 1;
            if entry.1 >= 4096 {
                let (batch, _) = std::mem::take(entry);
                self.db.open_tree(&tree)?.apply_batch(batch)?;
            }
        }
        for (tree, (batch, _)) in batches {
            self.db.open_tree(&tree)?.apply_batch(batch)?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// Ends a snapshot install that [`Index::import_snapshot`] began: the
    /// index is whole (blobs included). Durable when this returns.
    pub async fn finish_snapshot_install(&self) -> Result<(), StoreError> {
        self.meta.remove(INSTALLING)?;
        self.flusher.flush().await
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

    /// Applies one event atomically: the changelog entry, the index
    /// changes, the applied serial and the digest commit together or not
    /// at all. `serial` must follow the applied serial. Not durable until
    /// [`Index::flush`].
    pub fn apply(&self, serial: Serial, event: &Event) -> Result<(), StoreError> {
        self.apply_encoded(serial, event, &encode_event(event))
    }

    /// Applies an event received from another node, keeping its exact
    /// bytes so that both nodes' digests agree.
    pub fn apply_received(&self, serial: Serial, event: &ReceivedEvent) -> Result<(), StoreError> {
        self.apply_encoded(serial, &event.event, &event.bytes)
    }

    fn apply_encoded(
        &self,
        serial: Serial,
        event: &Event,
        event_bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.apply_tx(serial, event, event_bytes, None)
    }

    fn apply_tx(
        &self,
        serial: Serial,
        event: &Event,
        event_bytes: &[u8],
        raft: Option<&RaftPosition<'_>>,
    ) -> Result<(), StoreError> {
        let trees = (
            &self.changelog,
            &self.meta,
            &self.repos,
            &self.projects,
            &self.files,
            &self.tokens,
            &self.npm_packages,
            &self.npm_versions,
        );
        let result = trees.transaction(
            |(changelog, meta, repos, projects, files, tokens, npm_packages, npm_versions)| {
                let applied = serial_from(meta.get(APPLIED)?).map_err(corrupt_in_tx)?;
                if serial != applied.next() {
                    return Err(ConflictableTransactionError::Abort(ApplyAbort::Gap {
                        applied,
                        got: serial,
                    }));
                }
                let mut counts: Counts = tx_get(meta, "meta", COUNTS)?.unwrap_or_default();
                let trees = ApplyTrees {
                    repos,
                    projects,
                    files,
                    tokens,
                    npm_packages,
                    npm_versions,
                };
                apply_change(serial, event, &mut counts, &trees)?;

                let prev = digest_from(meta.get(DIGEST)?).map_err(corrupt_in_tx)?;
                changelog.insert(&serial.0.to_be_bytes(), event_bytes)?;
                meta.insert(APPLIED, &serial.0.to_be_bytes())?;
                meta.insert(DIGEST, &chain_digest(&prev, serial, event_bytes))?;
                meta.insert(COUNTS, encode(&counts))?;
                if let Some(raft) = raft {
                    meta.insert(RAFT_APPLIED, raft.applied)?;
                    if let Some(m) = raft.membership {
                        meta.insert(RAFT_MEMBERSHIP, m)?;
                    }
                }
                Ok(())
            },
        );
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(ApplyAbort::Rejected(r))) => Err(StoreError::Rejected(r)),
            Err(TransactionError::Abort(ApplyAbort::Gap { applied, got })) => {
                Err(StoreError::Gap { applied, got })
            }
            Err(TransactionError::Abort(ApplyAbort::Corrupt(msg))) => Err(StoreError::Corrupt(msg)),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    /// Makes everything applied so far durable. Blocking: call it from a
    /// writer thread or `spawn_blocking`, never concurrently from async
    /// tasks (sled 0.34's `flush_async` can deadlock).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// The event at `serial`, as stored.
    pub fn event(&self, serial: Serial) -> Result<Option<Event>, StoreError> {
        match self.changelog.get(serial.0.to_be_bytes())? {
            Some(bytes) => decode("changelog", &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` events after `since`, as stored, in serial order.
    pub fn raw_events(
        &self,
        since: Serial,
        limit: usize,
    ) -> Result<Vec<(Serial, Vec<u8>)>, StoreError> {
        self.changelog
            .range((since.0 + 1).to_be_bytes()..)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                Ok((serial_from(Some(key))?, value.to_vec()))
            })
            .collect()
    }

    /// Events after `since`, in serial order.
    pub fn events_since(
        &self,
        since: Serial,
    ) -> impl Iterator<Item = Result<(Serial, Event), StoreError>> + '_ {
        self.changelog
            .range((since.0 + 1).to_be_bytes()..)
            .map(|item| {
                let (key, value) = item?;
                let serial = serial_from(Some(key))?;
                Ok((serial, decode("changelog", &value)?))
            })
    }

    pub fn repo(&self, name: &RepoName) -> Result<Option<RepoState>, StoreError> {
        match self.repos.get(name.as_str())? {
            Some(bytes) => decode("repos", &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn repos(&self) -> Result<Vec<RepoState>, StoreError> {
        self.repos
            .iter()
            .values()
            .map(|v| decode("repos", &v?))
            .collect()
    }

    /// The projects of `repo` that existed at `at` (`None`: now).
    pub fn projects(
        &self,
        repo: &RepoName,
        at: Option<Serial>,
    ) -> Result<Vec<ProjectState>, StoreError> {
        scan_at(&self.projects, "projects", repo_prefix(repo), at)
    }

    pub fn project(
        &self,
        repo: &RepoName,
        project: &str,
        at: Option<Serial>,
    ) -> Result<Option<ProjectState>, StoreError> {
        get_at(&self.projects, "projects", &project_key(repo, project), at)
    }

    /// The files of a project that existed at `at` (`None`: now).
    pub fn files(
        &self,
        repo: &RepoName,
        project: &str,
        at: Option<Serial>,
    ) -> Result<Vec<FileState>, StoreError> {
        let mut prefix = project_key(repo, project);
        prefix.push(0);
        scan_at(&self.files, "files", prefix, at)
    }

    pub fn file(
        &self,
        repo: &RepoName,
        project: &str,
        filename: &str,
        at: Option<Serial>,
    ) -> Result<Option<FileState>, StoreError> {
        get_at(&self.files, "files", &file_key(repo, project, filename), at)
    }

    /// Every file of every repository, for fsck.
    pub fn all_files(&self) -> impl Iterator<Item = Result<FileState, StoreError>> + '_ {
        self.files.iter().values().map(|v| decode("files", &v?))
    }

    /// Walks the changelog: serials must be dense from 1 to the applied
    /// serial, every event must decode, and the chained digest must match.
    /// Returns the number of events and the problems found.
    pub fn verify_changelog(&self) -> Result<(u64, Vec<String>), StoreError> {
        let applied = self.applied_serial()?;
        let mut problems = Vec::new();
        let mut digest = [0u8; 32];
        let mut expected = Serial(1);
        let mut count = 0;
        for item in self.changelog.iter() {
            let (key, value) = item?;
            let serial = serial_from(Some(key))?;
            if serial != expected {
                problems.push(format!(
                    "changelog: expected serial {expected}, found {serial}"
                ));
            }
            if let Err(e) = serde_json::from_slice::<Event>(&value) {
                problems.push(format!("changelog: event {serial} does not decode: {e}"));
            }
            digest = chain_digest(&digest, serial, &value);
            expected = serial.next();
            count += 1;
        }
        if count != applied.0 {
            problems.push(format!(
                "changelog has {count} events but the applied serial is {applied}"
            ));
        }
        if Sha256::from_bytes(digest) != self.digest()? {
            problems.push("changelog digest does not match the recorded digest".into());
        }
        Ok((count, problems))
    }

    /// An npm package that existed at `at` (`None`: now).
    pub fn npm_package(
        &self,
        repo: &RepoName,
        package: &str,
        at: Option<Serial>,
    ) -> Result<Option<NpmPackageState>, StoreError> {
        get_at(
            &self.npm_packages,
            "npm_packages",
            &project_key(repo, package),
            at,
        )
    }

    /// Every npm package of `repo` that existed at `at`.
    pub fn npm_packages(
        &self,
        repo: &RepoName,
        at: Option<Serial>,
    ) -> Result<Vec<NpmPackageState>, StoreError> {
        scan_at(&self.npm_packages, "npm_packages", repo_prefix(repo), at)
    }

    /// Every version of a package ever published up to `at`, unpublished
    /// ones included (see [`NpmVersionState::live_at`]).
    pub fn npm_versions(
        &self,
        repo: &RepoName,
        package: &str,
        at: Option<Serial>,
    ) -> Result<Vec<NpmVersionState>, StoreError> {
        let mut prefix = project_key(repo, package);
        prefix.push(0);
        scan_at(&self.npm_versions, "npm_versions", prefix, at)
    }

    /// One version as it is now, unpublished or not.
    pub fn npm_version(
        &self,
        repo: &RepoName,
        package: &str,
        version: &str,
    ) -> Result<Option<NpmVersionState>, StoreError> {
        get_at(
            &self.npm_versions,
            "npm_versions",
            &file_key(repo, package, version),
            None,
        )
    }

    /// The blobs that every npm version references, for fsck.
    pub fn all_npm_tarballs(
        &self,
    ) -> impl Iterator<Item = Result<(String, Sha256), StoreError>> + '_ {
        self.npm_versions.iter().values().map(|v| {
            let state: NpmVersionState = decode("npm_versions", &v?)?;
            Ok((state.version, state.tarball.sha256))
        })
    }

    /// A live (not revoked) token by the hash of its secret.
    pub fn token(&self, hash: &Sha256) -> Result<Option<TokenState>, StoreError> {
        match self.tokens.get(hash.as_bytes())? {
            Some(bytes) => {
                let state: TokenState = decode("tokens", &bytes)?;
                Ok(state.revoked.is_none().then_some(state))
            }
            None => Ok(None),
        }
    }
}

struct ApplyTrees<'a> {
    repos: &'a TransactionalTree,
    projects: &'a TransactionalTree,
    files: &'a TransactionalTree,
    tokens: &'a TransactionalTree,
    npm_packages: &'a TransactionalTree,
    npm_versions: &'a TransactionalTree,
}

fn apply_change(
    serial: Serial,
    event: &Event,
    counts: &mut Counts,
    trees: &ApplyTrees<'_>,
) -> TxResult<()> {
    let ApplyTrees {
        repos,
        projects,
        files,
        tokens,
        npm_packages,
        npm_versions,
    } = trees;
    match &event.change {
        Change::RepoCreated { repo, settings } => {
            if repos.get(repo.as_str())?.is_some() {
                return reject(Rejection::RepoExists(repo.clone()));
            }
            let state = RepoState {
                name: repo.clone(),
                settings: settings.clone(),
                created: serial,
            };
            repos.insert(repo.as_str(), encode(&state))?;
            counts.repos += 1;
        }
        Change::RepoSettingsChanged { repo, settings } => {
            let Some(mut state) = tx_get::<RepoState>(repos, "repos", repo.as_str().as_bytes())?
            else {
                return reject(Rejection::RepoMissing(repo.clone()));
            };
            state.settings = settings.clone();
            repos.insert(repo.as_str(), encode(&state))?;
        }
        Change::FileAdded {
            repo,
            project,
            display_name,
            file,
        } => {
            if repos.get(repo.as_str())?.is_none() {
                return reject(Rejection::RepoMissing(repo.clone()));
            }
            let key = file_key(repo, project, &file.filename);
            if files.get(&key)?.is_some() {
                return reject(Rejection::FileExists(file.filename.clone()));
            }
            let pkey = project_key(repo, project);
            if projects.get(&pkey)?.is_none() {
                let state = ProjectState {
                    name: project.clone(),
                    display_name: display_name.clone(),
                    created: serial,
                };
                projects.insert(pkey, encode(&state))?;
                counts.projects += 1;
            }
            let state = FileState {
                record: file.clone(),
                added: serial,
                upload_time_us: event.time_us,
                uploader: event.actor.clone(),
                yanks: Vec::new(),
            };
            files.insert(key, encode(&state))?;
            counts.files += 1;
        }
        Change::FilesYanked {
            repo,
            project,
            filenames,
            reason,
        } => {
            for filename in filenames {
                let key = file_key(repo, project, filename);
                let Some(mut state) = tx_get::<FileState>(files, "files", &key)? else {
                    return reject(Rejection::FileMissing(filename.clone()));
                };
                state.yanks.push(YankChange {
                    serial,
                    reason: reason.clone(),
                });
                files.insert(key, encode(&state))?;
            }
        }
        Change::TokenCreated { token } => {
            if tokens.get(token.hash.as_bytes())?.is_some() {
                return reject(Rejection::TokenExists);
            }
            let state = TokenState {
                record: token.clone(),
                created: serial,
                revoked: None,
            };
            tokens.insert(token.hash.as_bytes(), encode(&state))?;
            counts.tokens += 1;
        }
        Change::TokenRevoked { hash } => {
            let Some(mut state) = tx_get::<TokenState>(tokens, "tokens", hash.as_bytes())? else {
                return reject(Rejection::TokenMissing);
            };
            if state.revoked.is_none() {
                state.revoked = Some(serial);
                tokens.insert(hash.as_bytes(), encode(&state))?;
                counts.tokens = counts.tokens.saturating_sub(1);
            }
        }
        Change::NpmPublished {
            repo,
            package,
            version,
            manifest,
            tarball,
            dist_tags,
            readme,
            description,
        } => {
            if repos.get(repo.as_str())?.is_none() {
                return reject(Rejection::RepoMissing(repo.clone()));
            }
            let vkey = file_key(repo, package, version);
            if npm_versions.get(&vkey)?.is_some() {
                return reject(Rejection::VersionExists(format!("{package}@{version}")));
            }
            let pkey = project_key(repo, package);
            let mut pkg = match tx_get::<NpmPackageState>(npm_packages, "npm_packages", &pkey)? {
                Some(pkg) => pkg,
                None => {
                    counts.npm_packages += 1;
                    NpmPackageState {
                        name: package.clone(),
                        created: serial,
                        created_us: event.time_us,
                        tags: BTreeMap::new(),
                    }
                }
            };
            for tag in dist_tags {
                pkg.tags.entry(tag.clone()).or_default().push(TagChange {
                    serial,
                    time_us: event.time_us,
                    version: Some(version.clone()),
                });
            }
            npm_packages.insert(pkey, encode(&pkg))?;
            let state = NpmVersionState {
                version: version.clone(),
                manifest: manifest.clone(),
                tarball: tarball.clone(),
                published: serial,
                time_us: event.time_us,
                publisher: event.actor.clone(),
                readme: readme.clone(),
                description: description.clone(),
                deprecations: Vec::new(),
                unpublished: None,
            };
            npm_versions.insert(vkey, encode(&state))?;
            counts.npm_versions += 1;
        }
        Change::NpmDistTagChanged {
            repo,
            package,
            tag,
            version,
        } => {
            set_dist_tags(
                serial,
                event.time_us,
                trees,
                repo,
                package,
                &[(tag.clone(), version.clone())],
            )?;
        }
        Change::NpmDeprecated {
            repo,
            package,
            changes,
        } => {
            for (version, message) in changes {
                let vkey = file_key(repo, package, version);
                let Some(mut state) =
                    tx_get::<NpmVersionState>(npm_versions, "npm_versions", &vkey)?
                else {
                    return reject(Rejection::VersionMissing(format!("{package}@{version}")));
                };
                state.deprecations.push(DeprecationChange {
                    serial,
                    time_us: event.time_us,
                    message: message.clone(),
                });
                npm_versions.insert(vkey, encode(&state))?;
            }
        }
        Change::NpmUnpublished {
            repo,
            package,
            versions,
            dist_tags,
        } => {
            for version in versions {
                let vkey = file_key(repo, package, version);
                let live = tx_get::<NpmVersionState>(npm_versions, "npm_versions", &vkey)?
                    .filter(|v| v.unpublished.is_none());
                let Some(mut state) = live else {
                    return reject(Rejection::VersionMissing(format!("{package}@{version}")));
                };
                state.unpublished = Some(serial);
                npm_versions.insert(vkey, encode(&state))?;
                counts.npm_versions = counts.npm_versions.saturating_sub(1);
            }
            set_dist_tags(serial, event.time_us, trees, repo, package, dist_tags)?;
        }
    }
    Ok(())
}

/// Sets (or with `None` removes) dist-tags of a package; a tag may only
/// point at a live version.
fn set_dist_tags(
    serial: Serial,
    time_us: i64,
    trees: &ApplyTrees<'_>,
    repo: &RepoName,
    package: &str,
    changes: &[(String, Option<String>)],
) -> TxResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let pkey = project_key(repo, package);
    let Some(mut pkg) = tx_get::<NpmPackageState>(trees.npm_packages, "npm_packages", &pkey)?
    else {
        return reject(Rejection::PackageMissing(package.to_owned()));
    };
    for (tag, version) in changes {
        if let Some(version) = version {
            let vkey = file_key(repo, package, version);
            let live = tx_get::<NpmVersionState>(trees.npm_versions, "npm_versions", &vkey)?
                .is_some_and(|v| v.unpublished.is_none());
            if !live {
                return reject(Rejection::VersionMissing(format!("{package}@{version}")));
            }
        }
        pkg.tags.entry(tag.clone()).or_default().push(TagChange {
            serial,
            time_us,
            version: version.clone(),
        });
    }
    trees.npm_packages.insert(pkey, encode(&pkg))?;
    Ok(())
}

fn write_record(
    out: &mut impl std::io::Write,
    tree: &[u8],
    key: &[u8],
    value: &[u8],
) -> std::io::Result<()> {
    for part in [tree, key, value] {
        out.write_all(&(part.len() as u32).to_be_bytes())?;
        out.write_all(part)?;
    }
    Ok(())
}

type Record = (Vec<u8>, Vec<u8>, Vec<u8>);

fn read_record(input: &mut impl std::io::Read) -> std::io::Result<Option<Record>> {
    let mut parts = Vec::with_capacity(3);
    for i in 0..3 {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if i == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len) as usize;
        // A snapshot comes from another node: a damaged length must not
        // become a huge allocation.
        if len > MAX_SNAPSHOT_RECORD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a snapshot record of {len} bytes (at most {MAX_SNAPSHOT_RECORD})"),
            ));
        }
        let mut part = vec![0u8; len];
        input.read_exact(&mut part)?;
        parts.push(part);
    }
    let value = parts.pop().unwrap_or_default();
    let key = parts.pop().unwrap_or_default();
    let tree = parts.pop().unwrap_or_default();
    Ok(Some((tree, key, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            actor: "a".into(),
            time_us: 1,
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
