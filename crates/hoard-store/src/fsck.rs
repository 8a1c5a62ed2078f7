//! Offline consistency check of a data dir: every listed file has its blob
//! with the right bytes, every blob matches its address, and the changelog
//! is dense and matches the recorded digest.

use std::collections::{HashMap, HashSet};

use hoard_core::Sha256;

use crate::{BlobStore, Index, StoreError};

#[derive(Debug, Default)]
pub struct FsckReport {
    pub events: u64,
    pub files: u64,
    pub blobs: u64,
    /// Blobs that nothing lists: left by an upload that died before its
    /// event was committed. Harmless; kept for a later identical upload.
    pub orphans: Vec<Sha256>,
    /// Real problems: anything here means the store is not clean.
    pub problems: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the changelog, that every listed file has its blob with its
/// size, and (with `rehash`) that every blob's bytes match its address;
/// `progress` is called with a line now and then.
pub async fn fsck(
    index: &Index,
    blobs: &BlobStore,
    rehash: bool,
    mut progress: impl FnMut(&str),
) -> Result<FsckReport, StoreError> {
    let mut report = FsckReport::default();

    // One listing answers "is it there" for every file below: on object
    // storage, far cheaper than asking for each blob.
    progress(&format!("listing the blobs ({})", blobs.describe()));
    let listing = blobs.list().await?;
    let present: HashMap<Sha256, u64> = listing
        .iter()
        .filter_map(|o| o.sha256.map(|sha| (sha, o.size)))
        .collect();

    progress("checking the changelog");
    let (events, problems) = index.verify_changelog()?;
    report.events = events;
    report.problems.extend(problems);

    progress("checking that every listed file has its blob");
    let mut referenced = HashSet::new();
    for file in index.all_files() {
        let file = file?;
        report.files += 1;
        let r = &file.record;
        // A mirrored file is listed before its bytes are fetched.
        let stored = file.stored_blobs();
        for (what, sha) in std::iter::once(("file", r.sha256))
            .chain(r.core_metadata.map(|m| ("metadata", m)))
            .filter(|(_, sha)| stored.contains(sha))
        {
            referenced.insert(sha);
            match present.get(&sha) {
                None => report
                    .problems
                    .push(format!("{} ({what}): blob {sha} is missing", r.filename)),
                Some(&size) if what == "file" && size != r.size => report.problems.push(format!(
                    "{}: blob {sha} holds {size} bytes, the file has {}",
                    r.filename, r.size
                )),
                Some(_) => {}
            }
        }
    }

    for tarball in index.all_npm_tarballs() {
        let (what, sha) = tarball?;
        report.files += 1;
        referenced.insert(sha);
        if !present.contains_key(&sha) {
            report
                .problems
                .push(format!("npm {what}: blob {sha} is missing"));
        }
    }

    for file in index.all_generic_files() {
        let file = file?;
        report.files += 1;
        referenced.insert(file.sha256);
        match present.get(&file.sha256) {
            None => report
                .problems
                .push(format!("{}: blob {} is missing", file.path, file.sha256)),
            Some(&size) if size != file.size => report.problems.push(format!(
                "{}: blob {} holds {size} bytes, the file has {}",
                file.path, file.sha256, file.size
            )),
            Some(_) => {}
        }
    }

    progress(if rehash {
        "re-hashing blobs"
    } else {
        "checking the blobs' names (re-hash them with --deep)"
    });
    let total = listing.len();
    for (i, object) in listing.into_iter().enumerate() {
        report.blobs += 1;
        match object.sha256 {
            None => report
                .problems
                .push(format!("{}: not a blob address", object.location)),
            Some(sha) => {
                if rehash && !blobs.verify(&sha).await? {
                    report
                        .problems
                        .push(format!("blob {sha}: content does not match its sha256"));
                }
                if !referenced.contains(&sha) {
                    report.orphans.push(sha);
                }
            }
        }
        if (i + 1) % 1000 == 0 {
            progress(&format!("re-hashed {} of {total} blobs", i + 1));
        }
    }
    Ok(report)
}
