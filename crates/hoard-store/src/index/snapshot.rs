//! Snapshots of the state machine: every index tree (the changelog
//! included, no blob bytes, no Raft log) streamed to a file, and installed
//! from one.

use std::collections::BTreeMap;
use std::path::Path;

use super::keys::INSTALLING;
use super::Index;
use crate::StoreError;

/// The trees a snapshot carries: the whole state machine, and nothing of
/// the Raft log.
pub(super) const STATE_TREES: &[&str] = &[
    "changelog",
    "meta",
    "repos",
    "projects",
    "files",
    "tokens",
    "npm_packages",
    "npm_versions",
    "users",
    "owners",
    "generic_files",
    "generic_dirs",
];

const SNAPSHOT_MAGIC: &[u8; 8] = b"hoardsn1";

/// What [`Index::export_point_in_time`] wrote.
#[derive(Clone, Debug)]
pub struct ExportedState {
    pub serial: hoard_core::Serial,
    pub digest: hoard_core::Sha256,
    /// The snapshot file's size.
    pub bytes: u64,
    /// Every blob the state lists as stored, sorted.
    pub blobs: Vec<hoard_core::Sha256>,
}
/// The largest key or value a snapshot may carry (index values are small
/// JSON records; an npm manifest with its readme is the largest).
const MAX_SNAPSHOT_RECORD: usize = 64 << 20;

impl Index {
    pub(super) fn state_trees(&self) -> Result<Vec<(String, sled::Tree)>, StoreError> {
        STATE_TREES
            .iter()
            .map(|name| Ok((name.to_string(), self.db.open_tree(name)?)))
            .collect()
    }

    /// Writes the whole state machine (every index tree, the changelog
    /// included; no blob bytes, no Raft log) to `path`, streaming, as of
    /// one point in time: writes wait meanwhile. Returns its size.
    pub fn export_snapshot(&self, path: &Path) -> Result<u64, StoreError> {
        let _gate = self.lock_state();
        self.export_snapshot_locked(path)
    }

    /// [`Index::export_snapshot`], with what a backup records of that point
    /// in time: the serial, the digest, and every blob the state lists.
    pub fn export_point_in_time(&self, path: &Path) -> Result<ExportedState, StoreError> {
        let _gate = self.lock_state();
        let bytes = self.export_snapshot_locked(path)?;
        Ok(ExportedState {
            serial: self.applied_serial()?,
            digest: self.digest()?,
            bytes,
            blobs: self.listed_blobs()?,
        })
    }

    fn export_snapshot_locked(&self, path: &Path) -> Result<u64, StoreError> {
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
        let _gate = self.lock_state();
        self.stamps.unsettle();
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
        self.repo_cache.invalidate();
        Ok(())
    }

    /// Every blob that the state lists as stored: files, their core
    /// metadata, npm tarballs and generic files; sorted, each once.
    pub fn listed_blobs(&self) -> Result<Vec<hoard_core::Sha256>, StoreError> {
        let mut out = Vec::new();
        for file in self.all_files() {
            out.extend(file?.stored_blobs());
        }
        for tarball in self.all_npm_tarballs() {
            out.push(tarball?.1);
        }
        for file in self.all_generic_files() {
            out.push(file?.sha256);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Ends a snapshot install that [`Index::import_snapshot`] began: the
    /// index is whole (blobs included). Durable when this returns.
    pub async fn finish_snapshot_install(&self) -> Result<(), StoreError> {
        self.meta.remove(INSTALLING)?;
        self.flusher.flush().await?;
        self.stamps.settle(self.applied_serial()?);
        Ok(())
    }
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
