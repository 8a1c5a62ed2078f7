//! Small helpers for crash-safe file handling.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::StoreError;

/// fsyncs a directory, making renames and creations inside it durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// Writes a small file atomically and durably: temp file, fsync, rename,
/// fsync the directory.
pub fn write_file_durable(path: &Path, contents: &[u8], mode: u32) -> Result<(), StoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    file.write_all(contents).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename", path))?;
    fsync_dir(dir)
}

/// Checks that `dir`'s file system takes `bytes` more, by writing and
/// syncing that much to a scratch file there and removing it. Free-space
/// figures (statvfs) can say yes while writes still fail (reserved blocks,
/// quotas, a tmpfs's size limit), so this asks the file system itself.
pub fn has_room(dir: &Path, bytes: usize) -> Result<(), StoreError> {
    use std::io::Write;

    const CHUNK: usize = 64 << 10;
    let probe = dir.join(".hoard-room-probe");
    let result = (|| {
        let mut file = File::create(&probe).map_err(io_err("create", &probe))?;
        let chunk = vec![0u8; CHUNK];
        let mut written = 0;
        while written < bytes {
            let n = CHUNK.min(bytes - written);
            file.write_all(&chunk[..n])
                .map_err(io_err("write", &probe))?;
            written += n;
        }
        file.sync_all().map_err(io_err("fsync", &probe))
    })();
    let _ = std::fs::remove_file(&probe);
    result
}

/// Builds a closure that wraps an `io::Error` with what we were doing.
pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        context: format!("{action} {}", path.display()),
        source,
    }
}
