//! Where committed blobs are kept. [`BlobStore`](crate::BlobStore) stages
//! and hashes every blob in the node's local `tmp/`; a backend then makes
//! a finished file durable under its content address, and reads it back.
//! The filesystem backend ([`FsBlobs`](crate::FsBlobs)) keeps them in the
//! data dir; others keep them in object storage.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use hoard_core::Sha256;

use crate::StoreError;

/// A stored blob's bytes as they are read.
pub type BlobByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// One object a backend holds, as its listing shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredObject {
    /// Where it is: a path, or an object key.
    pub location: String,
    /// The digest that its name claims; `None` for a name that is not a
    /// blob's address.
    pub sha256: Option<Sha256>,
    pub size: u64,
    /// When it arrived at its address, where the backend knows.
    pub stored_at: Option<SystemTime>,
}

/// A staged file for [`BlobBackend::publish`]: complete, hashed, and
/// (unless published in a batch) fsynced.
#[derive(Clone, Copy, Debug)]
pub struct Staged<'a> {
    pub path: &'a Path,
    pub sha256: Sha256,
    pub size: u64,
}

#[async_trait::async_trait]
pub trait BlobBackend: fmt::Debug + Send + Sync + 'static {
    /// What and where this is, for logs and `hoard status`.
    fn describe(&self) -> String;

    /// Whether the blobs are files in the data dir.
    fn is_local(&self) -> bool {
        false
    }

    /// Makes `staged` the blob at its address, durable when this returns,
    /// and visible there only once complete. Returns `false` when the
    /// blob was already there (content-addressed: the same bytes). The
    /// staged file itself is the caller's to delete.
    async fn publish(&self, staged: Staged<'_>) -> Result<bool, StoreError>;

    /// [`BlobBackend::publish`] for many files that were written without
    /// an fsync: for a bulk import, which makes a batch durable at once.
    /// Returns, in order, whether each was new.
    async fn publish_batch(&self, staged: &[Staged<'_>]) -> Result<Vec<bool>, StoreError> {
        let mut added = Vec::with_capacity(staged.len());
        for blob in staged {
            sync_file(blob.path).await?;
            added.push(self.publish(*blob).await?);
        }
        Ok(added)
    }

    /// The size of the blob, or `None` if it is not stored.
    async fn size_of(&self, sha: &Sha256) -> Result<Option<u64>, StoreError>;

    /// `len` bytes of the blob from `start` (which the caller has checked
    /// against its size).
    async fn read(&self, sha: &Sha256, start: u64, len: u64) -> Result<BlobByteStream, StoreError>;

    /// Every object under the backend's root, sorted by location.
    async fn list(&self) -> Result<Vec<StoredObject>, StoreError>;

    /// The blob as a file on this machine, where it is one: the fast path
    /// for serving it.
    fn local_path(&self, _sha: &Sha256) -> Option<PathBuf> {
        None
    }

    /// A URL that downloads the blob without credentials for `ttl`, where
    /// the backend can sign one: the bytes then never pass through hoard.
    async fn presigned_get(
        &self,
        _sha: &Sha256,
        _ttl: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}

async fn sync_file(path: &Path) -> Result<(), StoreError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(crate::durable::io_err("open", path))?;
    file.sync_all()
        .await
        .map_err(crate::durable::io_err("fsync", path))
}
