//! The filesystem blob backend: `blobs/ab/cd/<sha256>` in the data dir.
//! A staged file is renamed to its address and the directory fsynced; a
//! crash leaves either no blob or a whole one.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use hoard_core::Sha256;

use crate::blob_backend::{BlobBackend, BlobByteStream, Staged, StoredObject};
use crate::durable::{fsync_dir, io_err};
use crate::StoreError;

/// Reads from a blob file this large at a time: one blocking-pool round
/// trip per chunk, and at most this much held per download in flight.
const READ_CHUNK: usize = 512 * 1024;

#[derive(Clone, Debug)]
pub struct FsBlobs {
    root: PathBuf,
}

impl FsBlobs {
    /// The blob directory at `root`, created if missing.
    pub fn open(root: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(&root).map_err(io_err("create", &root))?;
        Ok(FsBlobs { root })
    }

    pub fn path_of(&self, sha: &Sha256) -> PathBuf {
        let hex = sha.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    /// Creates `blobs/ab/cd` if missing, fsyncing each parent whose
    /// entries changed, so that the rename into it is reachable after a
    /// crash.
    fn ensure_dir_durable(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.is_dir() {
            return Ok(());
        }
        let mid = dir.parent().expect("blob dirs have a parent");
        if !mid.is_dir() {
            fs::create_dir_all(mid).map_err(io_err("create", mid))?;
            fsync_dir(&self.root)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => fsync_dir(mid),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err("create", dir)(e)),
        }
    }

    fn publish_blocking(&self, staged: &Path, sha: &Sha256) -> Result<bool, StoreError> {
        let dest = self.path_of(sha);
        if dest.is_file() {
            return Ok(false);
        }
        let dir = dest.parent().expect("blob paths have a parent");
        self.ensure_dir_durable(dir)?;
        fs::rename(staged, &dest).map_err(io_err("rename", &dest))?;
        fsync_dir(dir)?;
        Ok(true)
    }

    /// Renames every staged file into place, then makes the batch durable
    /// with one `syncfs` of the filesystem: the files' bytes, the new
    /// directories and the renames. One sync per batch instead of three per
    /// file is what makes a bulk import fast.
    fn publish_batch_blocking(
        &self,
        staged: &[(PathBuf, Sha256)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut added = Vec::with_capacity(staged.len());
        for (path, sha) in staged {
            let dest = self.path_of(sha);
            if dest.is_file() {
                added.push(false);
                continue;
            }
            let dir = dest.parent().expect("blob paths have a parent");
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
            fs::rename(path, &dest).map_err(io_err("rename", &dest))?;
            added.push(true);
        }
        let root = fs::File::open(&self.root).map_err(io_err("open", &self.root))?;
        // SAFETY: syncfs on a descriptor we own and keep open for the call.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&root)) } != 0 {
            return Err(io_err("syncfs", &self.root)(io::Error::last_os_error()));
        }
        Ok(added)
    }

    fn list_blocking(&self) -> Result<Vec<StoredObject>, StoreError> {
        use std::os::unix::fs::MetadataExt as _;
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
                let entry = entry.map_err(io_err("read", &dir))?;
                let path = entry.path();
                // A blob renamed away or a directory made meanwhile is
                // simply not counted.
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let sha = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse().ok())
                    .filter(|sha| self.path_of(sha) == path);
                // The rename into place sets ctime, not mtime.
                let stored_at = u64::try_from(meta.ctime()).ok().map(|secs| {
                    std::time::UNIX_EPOCH + std::time::Duration::new(secs, meta.ctime_nsec() as u32)
                });
                out.push(StoredObject {
                    location: path.display().to_string(),
                    sha256: sha,
                    size: meta.len(),
                    stored_at,
                });
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Up to [`READ_CHUNK`] bytes from `pos` (and before `end`), read with one
/// `pread` straight into the buffer that goes to the socket: tokio's
/// `File` read into a buffer of its own and copied from there. Blocking.
fn read_chunk(file: &fs::File, pos: u64, end: u64) -> io::Result<Bytes> {
    let want = end.saturating_sub(pos).min(READ_CHUNK as u64) as usize;
    let mut buf = vec![0u8; want];
    file.read_exact_at(&mut buf, pos)?;
    Ok(Bytes::from(buf))
}

/// What of the next chunk the page cache holds, read without blocking
/// (`preadv2` with `RWF_NOWAIT`), into a buffer that is not zeroed first;
/// `None` when the read would wait for the disk or the kernel cannot say.
/// A blocking-pool trip and a memset per chunk were a quarter of a
/// download's CPU (perf, `hoard-bench pypi`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn read_chunk_cached(file: &fs::File, pos: u64, end: u64) -> io::Result<Option<Bytes>> {
    use std::os::fd::AsRawFd as _;
    let want = end.saturating_sub(pos).min(READ_CHUNK as u64) as usize;
    let offset = i64::try_from(pos).map_err(io::Error::other)?;
    let mut buf: Vec<u8> = Vec::with_capacity(want);
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: want,
    };
    // SAFETY: the iovec covers `want` bytes of `buf`'s allocation, which
    // outlives the call; the kernel writes at most that many.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => Ok(None),
            _ => Err(e),
        };
    }
    if n == 0 {
        // Past the end (the file is shorter than it was), or nothing
        // cached at `pos`: the blocking read tells which.
        return Ok(None);
    }
    // SAFETY: the kernel wrote the first `n` (≤ `want`) bytes.
    unsafe { buf.set_len(n as usize) };
    Ok(Some(Bytes::from(buf)))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn read_chunk_cached(_: &fs::File, _: u64, _: u64) -> io::Result<Option<Bytes>> {
    Ok(None)
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Io {
            context: "blob store task".into(),
            source: io::Error::other(e),
        })?
}

#[async_trait::async_trait]
impl BlobBackend for FsBlobs {
    fn describe(&self) -> String {
        format!("fs {}", self.root.display())
    }

    fn is_local(&self) -> bool {
        true
    }

    async fn publish(&self, staged: Staged<'_>) -> Result<bool, StoreError> {
        let this = self.clone();
        let path = staged.path.to_owned();
        let sha = staged.sha256;
        blocking(move || this.publish_blocking(&path, &sha)).await
    }

    async fn publish_batch(&self, staged: &[Staged<'_>]) -> Result<Vec<bool>, StoreError> {
        let this = self.clone();
        let staged: Vec<(PathBuf, Sha256)> = staged
            .iter()
            .map(|s| (s.path.to_owned(), s.sha256))
            .collect();
        blocking(move || this.publish_batch_blocking(&staged)).await
    }

    async fn size_of(&self, sha: &Sha256) -> Result<Option<u64>, StoreError> {
        let path = self.path_of(sha);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }

    async fn read(&self, sha: &Sha256, start: u64, len: u64) -> Result<BlobByteStream, StoreError> {
        let path = self.path_of(sha);
        // The open and the first chunk in one trip to a blocking thread:
        // most blobs are one chunk. A range past the end stops at it.
        let (file, first, end) = blocking(move || {
            let file = fs::File::open(&path).map_err(io_err("open", &path))?;
            let size = file.metadata().map_err(io_err("stat", &path))?.len();
            let end = start.saturating_add(len).min(size);
            let first = read_chunk(&file, start, end).map_err(io_err("read", &path))?;
            Ok((Arc::new(file), first, end))
        })
        .await?;
        let next = start + first.len() as u64;
        let rest = futures_util::stream::try_unfold((file, next), move |(file, pos)| async move {
            if pos >= end {
                return Ok(None);
            }
            // From the page cache on this thread when it is there (most
            // downloads); from the disk on a blocking thread when not.
            let chunk = match read_chunk_cached(&file, pos, end)? {
                Some(chunk) => chunk,
                None => {
                    let reader = file.clone();
                    tokio::task::spawn_blocking(move || read_chunk(&reader, pos, end))
                        .await
                        .map_err(io::Error::other)??
                }
            };
            let next = pos + chunk.len() as u64;
            Ok(Some((chunk, (file, next))))
        });
        let first = futures_util::stream::iter((!first.is_empty()).then_some(Ok(first)));
        Ok(Box::pin(first.chain(rest)))
    }

    async fn list(&self) -> Result<Vec<StoredObject>, StoreError> {
        let this = self.clone();
        blocking(move || this.list_blocking()).await
    }

    fn local_path(&self, sha: &Sha256) -> Option<PathBuf> {
        Some(self.path_of(sha))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt as _;
    use std::os::fd::AsRawFd as _;

    /// Drops the file's pages from the page cache (they are clean).
    fn evict(path: &Path) {
        let file = fs::File::open(path).unwrap();
        file.sync_all().unwrap();
        // SAFETY: an advice call on a descriptor we own, kept open for it.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    }

    #[tokio::test]
    async fn a_blob_reads_the_same_from_the_page_cache_and_from_the_disk_in_any_range() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobs::open(dir.path().join("blobs")).unwrap();
        let bytes: Vec<u8> = (0..3 * READ_CHUNK + 1234)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let sha = Sha256::of(&bytes);
        let path = blobs.path_of(&sha);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &bytes).unwrap();
        let chunk = READ_CHUNK as u64;
        let total = bytes.len() as u64;
        let ranges = [(0, total), (chunk - 1, chunk + 2), (total - 1, 1), (5, 0)];
        for cached in [true, false] {
            for (start, len) in ranges {
                if !cached {
                    evict(&path);
                }
                let got: Vec<Bytes> = blobs
                    .read(&sha, start, len)
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap();
                assert!(got.iter().all(|c| c.len() <= READ_CHUNK));
                let (start, len) = (start as usize, len as usize);
                assert_eq!(
                    got.concat(),
                    &bytes[start..start + len],
                    "cached {cached}, {start}+{len}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_range_past_the_end_stops_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobs::open(dir.path().join("blobs")).unwrap();
        let bytes = vec![1u8; 2 * READ_CHUNK + 7];
        let sha = Sha256::of(&bytes);
        let path = blobs.path_of(&sha);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &bytes).unwrap();
        for start in [0, READ_CHUNK as u64 + 3, bytes.len() as u64] {
            let got: Vec<Bytes> = blobs
                .read(&sha, start, u64::MAX)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert_eq!(got.concat(), &bytes[start as usize..]);
        }
    }
}
