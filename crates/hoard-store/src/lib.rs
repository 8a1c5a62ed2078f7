//! hoard's storage on one node: the content-addressed [`BlobStore`] (with
//! its blobs kept by a [`BlobBackend`]: [`FsBlobs`], or object storage), the
//! sled [`Index`] with its changelog, the Raft log and vote ([`RaftLog`],
//! opaque bytes: no openraft types here), and the one [`Flusher`] thread
//! that makes sled durable for all of them.
//!
//! Every index change goes through `apply`: the Raft state machine calls
//! [`Index::apply_raft`], replicas [`Index::apply_received`]. The
//! [`LocalWriter`] (serials without Raft) remains as the baseline of tests
//! and benchmarks. Blob bytes live in files, never in sled, and sled types
//! never leave this crate.

mod blob;
mod blob_backend;
mod blob_fs;
mod blob_s3;
mod durable;
mod flusher;
mod fsck;
mod index;
mod raft_log;
mod writer;

pub use blob::{BlobDigests, BlobStore, BlobWriter, ExtraDigests, StagedBlob};
pub use blob_backend::{BlobBackend, BlobByteStream, Staged, StoredObject};
pub use blob_fs::FsBlobs;
pub use blob_s3::{S3Blobs, S3Settings};
pub use durable::{has_room, write_file_durable};
pub use flusher::Flusher;
pub use fsck::{fsck, FsckReport};
pub use index::{
    Counts, DeprecationChange, ExportedState, FileState, GenericEntry, GenericFileState, Index,
    MirrorOrigin, NpmMirrorOrigin, NpmPackageState, NpmVersionState, OwnersState, PageStamp,
    ProjectState, RaftPosition, ReceivedEvent, Rejection, RepoState, RepoUsage, StoredRaftPosition,
    TagChange, TarballState, TokenState, UserState, YankChange, DEFAULT_INDEX_CACHE_BYTES,
};
pub use raft_log::RaftLog;
pub use writer::LocalWriter;

use hoard_core::Serial;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("index: {0}")]
    Sled(#[from] sled::Error),
    #[error("index is corrupt: {0}")]
    Corrupt(String),
    #[error("the data dir {0} is in use by another hoard process (stop it, or use --url)")]
    Locked(String),
    #[error("event rejected: {0}")]
    Rejected(#[from] Rejection),
    #[error("serial {got} does not follow the applied serial {applied}")]
    Gap { applied: Serial, got: Serial },
    #[error("the index writer has stopped after an earlier failure")]
    WriterStopped,
    #[error(
        "the blobs of {data_dir} are kept in {backend}: give the node's configuration \
         (--config), which says how to reach them"
    )]
    BlobsElsewhere { data_dir: String, backend: String },
    /// The blob backend (object storage) failed or could not be reached.
    #[error("{context}: {source}")]
    Backend {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Whether the disk is full: the node should stop writing but go on
    /// serving what it has.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error() == Some(libc_enospc()),
            StoreError::Sled(sled::Error::Io(io)) => io.raw_os_error() == Some(libc_enospc()),
            _ => false,
        }
    }

    /// Whether the blob backend failed: the node goes on, and the client
    /// may try again later.
    pub fn is_backend_unavailable(&self) -> bool {
        matches!(self, StoreError::Backend { .. })
    }

    /// Whether the index will take no more writes in this process. sled
    /// 0.34 keeps the first I/O error it meets while writing its log (a
    /// full disk, say) and returns it from every later write and flush of
    /// that database, even once the cause is gone: only opening the index
    /// again, which recovers from the last flush, clears it.
    pub fn needs_reopen(&self) -> bool {
        matches!(self, StoreError::Sled(sled::Error::Io(_)))
    }
}

const fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}
