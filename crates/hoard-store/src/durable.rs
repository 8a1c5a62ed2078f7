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
