//! The content-addressed blob directory: `blobs/ab/cd/<sha256>`.
//!
//! A blob is streamed into `tmp/` while it is hashed, fsynced, renamed to
//! its address, and its directory fsynced. A crash at any point leaves
//! either no blob or a whole one; leftovers in `tmp/` are swept at open.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use blake2::digest::consts::U32;
use blake2::Blake2b;
use hoard_core::{Sha256, Sha256Hasher};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha512};
use tokio::io::AsyncWriteExt;

use crate::durable::{fsync_dir, io_err};
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

#[derive(Clone, Debug)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    stats: Arc<BlobStats>,
}

/// How many blobs the store holds and their bytes: counted once by
/// [`BlobStore::count`] (a walk of `blobs/`), and kept up to date by
/// every commit. Blobs are never deleted.
#[derive(Debug, Default)]
struct BlobStats {
    count: AtomicU64,
    bytes: AtomicU64,
    counted: AtomicBool,
}

impl BlobStore {
    /// Opens (creating if needed) the blob directory under `data_dir`, and
    /// sweeps temp files that a crash left behind. Only one process may
    /// own a data dir; the index's lock guarantees that.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let blobs = data_dir.join("blobs");
        let tmp = data_dir.join("tmp");
        for dir in [&blobs, &tmp] {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        for entry in fs::read_dir(&tmp).map_err(io_err("read", &tmp))? {
            let entry = entry.map_err(io_err("read", &tmp))?;
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing temp file left by an earlier run");
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
        Ok(BlobStore {
            blobs,
            tmp,
            stats: Arc::default(),
        })
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

    /// Walks `blobs/` once to count what it holds (a blocking walk: run
    /// it off the async threads). Commits count themselves meanwhile; a
    /// blob renamed into place during the walk has a newer ctime (rename
    /// sets it), and the walk leaves it to the commit's count.
    pub fn count(&self) -> Result<(u64, u64), StoreError> {
        use std::os::unix::fs::MetadataExt as _;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let (mut count, mut bytes) = (0u64, 0u64);
        for (path, sha) in self.list()? {
            if sha.is_none() {
                continue;
            }
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if meta.ctime() > started {
                continue;
            }
            count += 1;
            bytes += meta.len();
        }
        let s = &self.stats;
        s.count.fetch_add(count, Ordering::Relaxed);
        s.bytes.fetch_add(bytes, Ordering::Relaxed);
        s.counted.store(true, Ordering::Release);
        Ok((count, bytes))
    }

    pub fn path_of(&self, sha: &Sha256) -> PathBuf {
        let hex = sha.to_hex();
        self.blobs.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    pub fn contains(&self, sha: &Sha256) -> bool {
        self.path_of(sha).is_file()
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Starts a new blob in `tmp/`.
    pub async fn writer(&self, extra: ExtraDigests) -> Result<BlobWriter, StoreError> {
        let name = format!("{:016x}.part", rand::random::<u64>());
        let path = self.tmp.join(name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(io_err("create", &path))?;
        Ok(BlobWriter {
            file,
            guard: TempFile(Some(path)),
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

    /// Moves a staged blob to its address. Durable when this returns: the
    /// file was fsynced by `finish`, and the rename's directory is fsynced
    /// here. If the blob already exists the staged copy is dropped.
    pub async fn commit(&self, staged: StagedBlob) -> Result<Sha256, StoreError> {
        let sha = staged.digests.sha256;
        let dest = self.path_of(&sha);
        let blobs = self.blobs.clone();
        let stats = self.stats.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            if dest.is_file() {
                return Ok(()); // content-addressed: same address, same bytes
            }
            let dir = dest.parent().expect("blob paths have a parent");
            ensure_dir_durable(&blobs, dir)?;
            let src = staged.guard.path();
            fs::rename(src, &dest).map_err(io_err("rename", &dest))?;
            fsync_dir(dir)?;
            staged.guard.disarm();
            stats.count.fetch_add(1, Ordering::Relaxed);
            stats.bytes.fetch_add(staged.size, Ordering::Relaxed);
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Io {
            context: "blob commit task".into(),
            source: io::Error::other(e),
        })??;
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

    /// Moves staged blobs to their addresses, then makes the whole batch
    /// durable with one `syncfs` of the store's filesystem: the files'
    /// bytes, the new directories and the renames. One sync per batch
    /// instead of three per file is what makes a bulk import fast; nothing
    /// may name these blobs before this returns. Blocking.
    pub fn commit_batch(&self, staged: Vec<StagedBlob>) -> Result<(), StoreError> {
        let mut added = Vec::new();
        for blob in staged {
            let dest = self.path_of(&blob.digests.sha256);
            if dest.is_file() {
                continue; // content-addressed: the staged copy is dropped
            }
            let dir = dest.parent().expect("blob paths have a parent");
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
            fs::rename(blob.guard.path(), &dest).map_err(io_err("rename", &dest))?;
            added.push(blob.size);
            blob.guard.disarm();
        }
        let root = fs::File::open(&self.blobs).map_err(io_err("open", &self.blobs))?;
        // SAFETY: syncfs on a descriptor we own and keep open for the call.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&root)) } != 0 {
            return Err(io_err("syncfs", &self.blobs)(io::Error::last_os_error()));
        }
        for size in added {
            self.stats.count.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes.fetch_add(size, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Re-hashes a stored blob and says whether it matches its address.
    pub fn verify(&self, sha: &Sha256) -> Result<bool, StoreError> {
        let path = self.path_of(sha);
        let mut file = fs::File::open(&path).map_err(io_err("open", &path))?;
        let mut hasher = Sha256Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf).map_err(io_err("read", &path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finish() == *sha)
    }

    /// Every file under `blobs/`, as (path, the digest its name claims).
    /// A name that is not a digest is reported with `None`.
    pub fn list(&self) -> Result<Vec<(PathBuf, Option<Sha256>)>, StoreError> {
        let mut out = Vec::new();
        let mut stack = vec![self.blobs.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
                let entry = entry.map_err(io_err("read", &dir))?;
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let sha = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.parse().ok())
                        .filter(|sha| self.path_of(sha) == path);
                    out.push((path, sha));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Creates `blobs/ab/cd` if missing, fsyncing each parent whose entries
/// changed, so that the rename into it is reachable after a crash.
fn ensure_dir_durable(blobs: &Path, dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mid = dir.parent().expect("blob dirs have a parent");
    if !mid.is_dir() {
        fs::create_dir_all(mid).map_err(io_err("create", mid))?;
        fsync_dir(blobs)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fsync_dir(mid),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("create", dir)(e)),
    }
}

/// Deletes its temp file on drop unless disarmed, so an upload that fails
/// half-way (or a task that is cancelled) leaves nothing behind.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("temp file is armed")
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// A blob being streamed into `tmp/`, hashed as it goes.
pub struct BlobWriter {
    file: tokio::fs::File,
    guard: TempFile,
    len: u64,
    sha256: Sha256Hasher,
    md5: Option<Md5>,
    blake2b_256: Option<Blake2b<U32>>,
    sha1: Option<Sha1>,
    sha512: Option<Sha512>,
}

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
        self.file
            .write_all(chunk)
            .await
            .map_err(io_err("write", self.guard.path()))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flushes and fsyncs the temp file. The blob is not at its address
    /// yet: inspect it with [`StagedBlob::path`], then `BlobStore::commit`.
    pub async fn finish(mut self) -> Result<StagedBlob, StoreError> {
        self.file
            .flush()
            .await
            .map_err(io_err("flush", self.guard.path()))?;
        self.file
            .sync_all()
            .await
            .map_err(io_err("fsync", self.guard.path()))?;
        Ok(StagedBlob {
            guard: self.guard,
            size: self.len,
            digests: BlobDigests {
                sha256: self.sha256.finish(),
                md5: self.md5.map(|h| h.finalize().into()),
                blake2b_256: self.blake2b_256.map(|h| h.finalize().into()),
                sha1: self.sha1.map(|h| h.finalize().into()),
                sha512: self.sha512.map(|h| h.finalize().into()),
            },
        })
    }
}

/// A complete, fsynced blob in `tmp/`, not yet visible at its address.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_files(store: &BlobStore) -> usize {
        fs::read_dir(store.tmp_dir()).unwrap().count()
    }

    #[test]
    fn a_batch_is_staged_unsynced_and_committed_with_one_sync() {
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
        store.commit_batch(staged).unwrap();
        for bytes in [&b"from a file"[..], b"in memory"] {
            assert!(store.verify(&Sha256::of(bytes)).unwrap());
        }
        // The duplicate's staged copy is gone, not left in tmp/.
        assert_eq!(tmp_files(&store), 0);
        assert_eq!(store.count().unwrap(), (2, 20));
    }

    #[tokio::test]
    async fn put_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let sha = store.put_bytes(b"hello").await.unwrap();
        assert_eq!(sha, Sha256::of(b"hello"));
        assert!(store.contains(&sha));
        assert!(store.verify(&sha).unwrap());
        assert_eq!(fs::read(store.path_of(&sha)).unwrap(), b"hello");
        // Same bytes again: no second copy, no leftovers.
        store.put_bytes(b"hello").await.unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
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
        assert!(store.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn open_sweeps_temp_files_and_verify_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let sha = store.put_bytes(b"payload").await.unwrap();
        fs::write(store.tmp_dir().join("left.part"), b"partial").unwrap();
        fs::write(store.path_of(&sha), b"tampered").unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(tmp_files(&store), 0);
        assert!(!store.verify(&sha).unwrap());
    }
}
