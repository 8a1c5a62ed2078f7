//! The blob store: content-addressed, immutable bytes. Every blob is
//! streamed into the node's local `tmp/` while it is hashed, checked, and
//! only then handed to the [`BlobBackend`] that keeps it under its address
//! (the data dir's `blobs/`, or object storage). A crash at any point
//! leaves either no blob or a whole one; leftovers in `tmp/` are swept at
//! open.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use blake2::digest::consts::U32;
use blake2::Blake2b;
use futures_util::StreamExt as _;
use hoard_core::{Sha256, Sha256Hasher};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha512};

use crate::blob_backend::{BlobBackend, BlobByteStream, Staged, StoredObject};
use crate::blob_fs::FsBlobs;
use crate::durable::io_err;
use crate::StoreError;

/// Which digests to compute besides sha256 while a blob streams in: the
/// ones that clients declare and that we must check (twine sends md5 and
/// blake2b-256, npm sends sha1 and sha512).
#[derive(Clone, Copy, Debug, Default)]
pub struct ExtraDigests {
    pub md5: bool,
    pub blake2b_256: bool,
    pub sha1: bool,
    pub sha512: bool,
}

/// The digests of a staged blob, hex or raw as the protocols need them.
#[derive(Clone, Debug)]
pub struct BlobDigests {
    pub sha256: Sha256,
    pub md5: Option<[u8; 16]>,
    pub blake2b_256: Option<[u8; 32]>,
    pub sha1: Option<[u8; 20]>,
    pub sha512: Option<[u8; 64]>,
}

/// In a data dir whose blobs a backend keeps elsewhere: where.
const ELSEWHERE_MARKER: &str = "blobs-elsewhere";

#[derive(Clone, Debug)]
pub struct BlobStore {
    backend: Arc<dyn BlobBackend>,
    tmp: PathBuf,
    stats: Arc<BlobStats>,
}

/// How many blobs the store holds and their bytes: counted once by
/// [`BlobStore::count`] (a listing of the backend), and kept up to date
/// by every commit. Blobs are never deleted.
#[derive(Debug, Default)]
struct BlobStats {
    count: AtomicU64,
    bytes: AtomicU64,
    counted: AtomicBool,
}

impl BlobStore {
    /// The store of a data dir with its blobs in the data dir's `blobs/`.
    /// Refused for a data dir whose blobs a node keeps elsewhere: what
    /// opened it here would list files without their blobs.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let marker = data_dir.join(ELSEWHERE_MARKER);
        if let Ok(where_) = fs::read_to_string(&marker) {
            return Err(StoreError::BlobsElsewhere {
                data_dir: data_dir.display().to_string(),
                backend: where_.trim().to_owned(),
            });
        }
        let backend = FsBlobs::open(data_dir.join("blobs"))?;
        BlobStore::with_backend(data_dir, Arc::new(backend))
    }

    /// The store of a data dir with its blobs kept by `backend`. Opens
    /// (creating if needed) the data dir's `tmp/`, and sweeps temp files
    /// that a crash left behind. Only one process may own a data dir; the
    /// index's lock guarantees that.
    pub fn with_backend(
        data_dir: &Path,
        backend: Arc<dyn BlobBackend>,
    ) -> Result<Self, StoreError> {
        let tmp = data_dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        if !backend.is_local() {
            // Tools that open the data dir alone (an offline import, fsck
            // without the configuration) learn that its blobs are not here.
            crate::durable::write_file_durable(
                &data_dir.join(ELSEWHERE_MARKER),
                format!("{}\n", backend.describe()).as_bytes(),
                0o644,
            )?;
        }
        for entry in fs::read_dir(&tmp).map_err(io_err("read", &tmp))? {
            let entry = entry.map_err(io_err("read", &tmp))?;
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing temp file left by an earlier run");
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
        Ok(BlobStore {
            backend,
            tmp,
            stats: Arc::default(),
        })
    }

    /// Where the blobs are kept, for logs and status.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// The blobs held and their bytes, once [`BlobStore::count`] has run.
    pub fn stats(&self) -> Option<(u64, u64)> {
        let s = &self.stats;
        s.counted.load(Ordering::Acquire).then(|| {
            (
                s.count.load(Ordering::Relaxed),
                s.bytes.load(Ordering::Relaxed),
            )
        })
    }

    /// Lists the backend once to count what it holds. Commits count
    /// themselves meanwhile; a blob stored after the listing started is
    /// left to its commit's count.
    pub async fn count(&self) -> Result<(u64, u64), StoreError> {
        let started = std::time::SystemTime::now();
        let (mut count, mut bytes) = (0u64, 0u64);
        for object in self.list().await? {
            if object.sha256.is_none() || object.stored_at.is_some_and(|t| t >= started) {
                continue;
            }
            count += 1;
            bytes += object.size;
        }
        let s = &self.stats;
        s.count.fetch_add(count, Ordering::Relaxed);
        s.bytes.fetch_add(bytes, Ordering::Relaxed);
        s.counted.store(true, Ordering::Release);
        Ok((count, bytes))
    }

    /// The blob as a file on this machine, where the backend keeps files.
    pub fn local_path(&self, sha: &Sha256) -> Option<PathBuf> {
        self.backend.local_path(sha)
    }

    pub async fn contains(&self, sha: &Sha256) -> Result<bool, StoreError> {
        Ok(self.backend.size_of(sha).await?.is_some())
    }

    /// The size of a stored blob, or `None` if it is not stored.
    pub async fn size_of(&self, sha: &Sha256) -> Result<Option<u64>, StoreError> {
        self.backend.size_of(sha).await
    }

    /// `len` bytes of a stored blob from `start`.
    pub async fn read(
        &self,
        sha: &Sha256,
        start: u64,
        len: u64,
    ) -> Result<BlobByteStream, StoreError> {
        self.backend.read(sha, start, len).await
    }

    /// A URL that downloads the blob for `ttl` without hoard, where the
    /// backend can sign one.
    pub async fn presigned_get(
        &self,
        sha: &Sha256,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        self.backend.presigned_get(sha, ttl).await
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Starts a new blob in `tmp/`. The file is created with the first
    /// bytes written to it.
    pub async fn writer(&self, extra: ExtraDigests) -> Result<BlobWriter, StoreError> {
        let name = format!("{:016x}.part", rand::random::<u64>());
        Ok(BlobWriter {
            file: None,
            pending: Vec::new(),
            guard: TempFile(Some(self.tmp.join(name))),
            len: 0,
            sha256: Sha256Hasher::new(),
            md5: extra.md5.then(Md5::new),
            blake2b_256: extra.blake2b_256.then(Blake2b::<U32>::new),
            sha1: extra.sha1.then(Sha1::new),
            sha512: extra.sha512.then(Sha512::new),
        })
    }

    /// Stores a small blob held in memory (core metadata, say).
    pub async fn put_bytes(&self, bytes: &[u8]) -> Result<Sha256, StoreError> {
        let staged = self.stage_bytes(bytes).await?;
        self.commit(staged).await
    }

    /// Stages a small blob held in memory, for the writer to publish.
    pub async fn stage_bytes(&self, bytes: &[u8]) -> Result<StagedBlob, StoreError> {
        let mut writer = self.writer(ExtraDigests::default()).await?;
        writer.write(bytes).await?;
        writer.finish().await
    }

    /// Hands a staged blob to the backend, which keeps it at its address.
    /// Durable when this returns. If the blob already exists the staged
    /// copy is dropped.
    pub async fn commit(&self, staged: StagedBlob) -> Result<Sha256, StoreError> {
        let sha = staged.digests.sha256;
        let added = self.backend.publish(staged.as_staged()).await?;
        if added {
            self.stats.count.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes.fetch_add(staged.size, Ordering::Relaxed);
        }
        // Dropping the guard removes the staged file, if a backend left it.
        drop(staged);
        Ok(sha)
    }

    /// Copies `src` into `tmp/` while hashing it, without an fsync: for a
    /// bulk import, which makes a whole batch durable at once with
    /// [`BlobStore::commit_batch`]. Blocking.
    pub fn stage_file_unsynced(&self, src: &Path) -> Result<StagedBlob, StoreError> {
        let mut input = fs::File::open(src).map_err(io_err("open", src))?;
        self.stage_unsynced(&mut input, src)
    }

    /// [`BlobStore::stage_file_unsynced`] for bytes in memory (a wheel's
    /// core metadata). Blocking.
    pub fn stage_bytes_unsynced(&self, bytes: &[u8]) -> Result<StagedBlob, StoreError> {
        self.stage_unsynced(&mut &bytes[..], Path::new("(in memory)"))
    }

    fn stage_unsynced(
        &self,
        input: &mut impl Read,
        source: &Path,
    ) -> Result<StagedBlob, StoreError> {
        use std::io::Write as _;
        let name = format!("{:016x}.part", rand::random::<u64>());
        let path = self.tmp.join(name);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let guard = TempFile(Some(path));
        let mut hasher = Sha256Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(io_err("read", source))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(io_err("write", guard.path()))?;
            size += n as u64;
        }
        Ok(StagedBlob {
            guard,
            size,
            digests: BlobDigests {
                sha256: hasher.finish(),
                md5: None,
                blake2b_256: None,
                sha1: None,
                sha512: None,
            },
        })
    }

    /// Hands a batch of unsynced staged blobs to the backend, which makes
    /// them durable together (the filesystem with one `syncfs`). Nothing
    /// may name these blobs before this returns.
    pub async fn commit_batch(&self, staged: Vec<StagedBlob>) -> Result<(), StoreError> {
        let batch: Vec<Staged<'_>> = staged.iter().map(StagedBlob::as_staged).collect();
        let added = self.backend.publish_batch(&batch).await?;
        for (blob, added) in staged.iter().zip(added) {
            if added {
                self.stats.count.fetch_add(1, Ordering::Relaxed);
                self.stats.bytes.fetch_add(blob.size, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Re-reads a stored blob and says whether it matches its address.
    pub async fn verify(&self, sha: &Sha256) -> Result<bool, StoreError> {
        let Some(size) = self.backend.size_of(sha).await? else {
            return Ok(false);
        };
        let mut bytes = self.backend.read(sha, 0, size).await?;
        let mut hasher = Sha256Hasher::new();
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(|source| StoreError::Io {
                context: format!("read blob {sha}"),
                source,
            })?;
            hasher.update(&chunk);
        }
        Ok(hasher.finish() == *sha)
    }

    /// Puts a copy of the blob at `dest` (a new file, fsynced; its
    /// directory is the caller's to sync): a hard link where the blob is a
    /// file on the same filesystem, else its bytes. Returns the size and
    /// whether it was linked.
    pub async fn export_to(&self, sha: &Sha256, dest: &Path) -> Result<(u64, bool), StoreError> {
        if let Some(src) = self.backend.local_path(sha) {
            // A link where the filesystem allows, else the kernel's copy
            // (copy_file_range): no bytes through this process.
            let dest = dest.to_owned();
            return tokio::task::spawn_blocking(move || -> Result<(u64, bool), StoreError> {
                if fs::hard_link(&src, &dest).is_ok() {
                    let size = fs::metadata(&dest).map_err(io_err("stat", &dest))?.len();
                    return Ok((size, true));
                }
                let size = fs::copy(&src, &dest).map_err(io_err("copy to", &dest))?;
                fs::File::open(&dest)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("fsync", &dest))?;
                Ok((size, false))
            })
            .await
            .map_err(|e| StoreError::Io {
                context: "blob export task".into(),
                source: std::io::Error::other(e),
            })?;
        }
        let size =
            self.backend.size_of(sha).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("blob {sha} is listed but not stored"))
            })?;
        let mut bytes = self.backend.read(sha, 0, size).await?;
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .await
            .map_err(io_err("create", dest))?;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(|source| StoreError::Io {
                context: format!("read blob {sha}"),
                source,
            })?;
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
                .await
                .map_err(io_err("write", dest))?;
        }
        out.sync_all().await.map_err(io_err("fsync", dest))?;
        Ok((size, false))
    }

    /// Every object the backend holds, with the digest its name claims (or
    /// `None` for a name that is not a blob's address).
    pub async fn list(&self) -> Result<Vec<StoredObject>, StoreError> {
        self.backend.list().await
    }
}

/// Deletes its temp file on drop, so that an upload that fails half-way
/// (or a task that is cancelled) leaves nothing behind. A file that the
/// backend renamed into place is simply no longer there to delete.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("temp file is armed")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// A blob being streamed into `tmp/`, hashed as it goes. Bytes are
/// gathered up to [`WRITE_BATCH`] and written with one trip to a blocking
/// thread: tokio's `File` made one per chunk, and a catch-up's small blobs
/// spent more time in those hand-overs than in the copy.
pub struct BlobWriter {
    /// Created by the first write to disk.
    file: Option<fs::File>,
    pending: Vec<u8>,
    guard: TempFile,
    len: u64,
    sha256: Sha256Hasher,
    md5: Option<Md5>,
    blake2b_256: Option<Blake2b<U32>>,
    sha1: Option<Sha1>,
    sha512: Option<Sha512>,
}

/// The most bytes a [`BlobWriter`] holds before writing them out.
const WRITE_BATCH: usize = 512 * 1024;

impl BlobWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.sha256.update(chunk);
        if let Some(h) = &mut self.md5 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.blake2b_256 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(chunk);
        }
        self.len += chunk.len() as u64;
        self.pending.extend_from_slice(chunk);
        if self.pending.len() >= WRITE_BATCH {
            self.write_out(false).await?;
        }
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes what is pending (creating the file first, if this is the
    /// first write), and with `sync` fsyncs the file, in one blocking call.
    async fn write_out(&mut self, sync: bool) -> Result<(), StoreError> {
        let file = self.file.take();
        let pending = std::mem::take(&mut self.pending);
        let path = self.guard.path().to_owned();
        let (file, mut pending) = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut file = match file {
                Some(f) => f,
                None => fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io_err("create", &path))?,
            };
            file.write_all(&pending).map_err(io_err("write", &path))?;
            if sync {
                file.sync_all().map_err(io_err("fsync", &path))?;
            }
            Ok::<_, StoreError>((file, pending))
        })
        .await
        .map_err(|e| StoreError::Io {
            context: "blob writer task".into(),
            source: std::io::Error::other(e),
        })??;
        pending.clear();
        self.file = Some(file);
        self.pending = pending;
        Ok(())
    }

    /// Writes out and fsyncs the temp file. The blob is not at its address
    /// yet: inspect it with [`StagedBlob::path`], then `BlobStore::commit`.
    pub async fn finish(mut self) -> Result<StagedBlob, StoreError> {
        self.write_out(true).await?;
        Ok(self.into_staged())
    }

    /// Writes out the temp file without an fsync, for
    /// [`BlobStore::commit_batch`], which makes a batch durable at once.
    pub async fn finish_unsynced(mut self) -> Result<StagedBlob, StoreError> {
        self.write_out(false).await?;
        Ok(self.into_staged())
    }

    fn into_staged(self) -> StagedBlob {
        StagedBlob {
            guard: self.guard,
            size: self.len,
            digests: BlobDigests {
                sha256: self.sha256.finish(),
                md5: self.md5.map(|h| h.finalize().into()),
                blake2b_256: self.blake2b_256.map(|h| h.finalize().into()),
                sha1: self.sha1.map(|h| h.finalize().into()),
                sha512: self.sha512.map(|h| h.finalize().into()),
            },
        }
    }
}

/// A complete blob in `tmp/` (fsynced, unless staged for a batch), not yet
/// visible at its address.
/// Dropping it deletes it.
pub struct StagedBlob {
    guard: TempFile,
    pub size: u64,
    pub digests: BlobDigests,
}

impl StagedBlob {
    pub fn path(&self) -> &Path {
        self.guard.path()
    }

    fn as_staged(&self) -> Staged<'_> {
        Staged {
            path: self.guard.path(),
            sha256: self.digests.sha256,
            size: self.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_files(store: &BlobStore) -> usize {
        fs::read_dir(store.tmp_dir()).unwrap().count()
    }

    #[tokio::test]
    async fn a_batch_is_staged_unsynced_and_committed_with_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let src = dir.path().join("source.bin");
        fs::write(&src, b"from a file").unwrap();
        let staged = vec![
            store.stage_file_unsynced(&src).unwrap(),
            store.stage_bytes_unsynced(b"in memory").unwrap(),
            store.stage_bytes_unsynced(b"in memory").unwrap(),
        ];
        assert_eq!(staged[0].digests.sha256, Sha256::of(b"from a file"));
        assert_eq!(tmp_files(&store), 3);
        store.commit_batch(staged).await.unwrap();
        for bytes in [&b"from a file"[..], b"in memory"] {
            assert!(store.verify(&Sha256::of(bytes)).await.unwrap());
        }
        // The duplicate's staged copy is gone, not left in tmp/.
        assert_eq!(tmp_files(&store), 0);
        let reopened = BlobStore::open(dir.path()).unwrap();
        assert_eq!(reopened.stats(), None);
        assert_eq!(reopened.count().await.unwrap(), (2, 20));
        assert_eq!(reopened.stats(), Some((2, 20)));
    }

    #[tokio::test]
    async fn put_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let sha = store.put_bytes(b"hello").await.unwrap();
        assert_eq!(sha, Sha256::of(b"hello"));
        assert!(store.contains(&sha).await.unwrap());
        assert!(store.verify(&sha).await.unwrap());
        let path = store.local_path(&sha).unwrap();
        assert_eq!(fs::read(path).unwrap(), b"hello");
        let mut read = store.read(&sha, 1, 3).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = read.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, b"ell");
        // Same bytes again: no second copy, no leftovers.
        store.put_bytes(b"hello").await.unwrap();
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].sha256, listed[0].size), (Some(sha), 5));
        assert_eq!(tmp_files(&store), 0);
    }

    #[tokio::test]
    async fn extra_digests_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = store
            .writer(ExtraDigests {
                md5: true,
                blake2b_256: true,
                sha1: true,
                sha512: true,
            })
            .await
            .unwrap();
        w.write(b"hel").await.unwrap();
        w.write(b"lo").await.unwrap();
        let staged = w.finish().await.unwrap();
        assert_eq!(
            hex::encode(staged.digests.md5.unwrap()),
            "5d41402abc4b2a76b9719d911017c592"
        );
        assert_eq!(
            hex::encode(staged.digests.sha1.unwrap()),
            "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
        );
        assert_eq!(staged.size, 5);
        assert_eq!(tmp_files(&store), 1);
        drop(staged);
        assert_eq!(tmp_files(&store), 0);
        assert!(store.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn open_sweeps_temp_files_and_verify_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let sha = store.put_bytes(b"payload").await.unwrap();
        fs::write(store.tmp_dir().join("left.part"), b"partial").unwrap();
        fs::write(store.local_path(&sha).unwrap(), b"tampered").unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(tmp_files(&store), 0);
        assert!(!store.verify(&sha).await.unwrap());
    }
}
