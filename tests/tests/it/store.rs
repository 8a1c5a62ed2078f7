//! What lands on disk: blobs at their address, no plain tokens, and
//! `hoard fsck` noticing damage.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use hoard_testkit::node::{count_files, describe_failure};

use hoard_testkit::{sdist, wheel, Node, Upload};

fn blob_path(node: &Node, sha: &str) -> PathBuf {
    node.data_dir()
        .join("blobs")
        .join(&sha[0..2])
        .join(&sha[2..4])
        .join(sha)
}

/// The names of the files under `<data>/blobs/` (sha256 hex strings).
pub fn blob_names(node: &Node) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![node.data_dir().join("blobs")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn an_upload_is_a_blob_at_its_address_and_one_event() {
    let node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let before = node.store_snapshot();
    let blobs_before = blob_names(&node);
    let a = wheel("blob-pkg", "1.0");
    node.upload_ok("pypi", &token, &Upload::of(&a));
    let after = node.store_snapshot();
    assert_eq!(after.serial, before.serial + 1);
    let path = blob_path(&node, &a.sha256());
    assert_eq!(
        fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        a.bytes,
        "the blob at blobs/ab/cd/<sha256> holds the file"
    );
    // New blobs: the file, and perhaps its core metadata (also by address).
    let meta_sha = hoard_testkit::sha256_hex(a.metadata.as_bytes());
    let new: BTreeSet<String> = blob_names(&node)
        .difference(&blobs_before)
        .cloned()
        .collect();
    assert!(new.contains(&a.sha256()));
    for sha in &new {
        assert!(
            *sha == a.sha256() || *sha == meta_sha,
            "an unexpected blob {sha} after one upload"
        );
        assert_eq!(
            hoard_testkit::sha256_hex(&fs::read(blob_path(&node, sha)).unwrap()),
            *sha,
            "blob {sha} holds other bytes"
        );
    }
    assert!(
        node.tmp_files().is_empty(),
        "temp files after a good upload"
    );
    // The same file again adds nothing.
    node.upload_ok("pypi", &token, &Upload::of(&a));
    assert_eq!(node.store_snapshot(), after);
    // An sdist adds its one blob.
    let sd = sdist("blob-pkg", "1.0");
    let before = blob_names(&node);
    node.upload_ok("pypi", &token, &Upload::of(&sd));
    let new: Vec<String> = blob_names(&node).difference(&before).cloned().collect();
    assert_eq!(new, vec![sd.sha256()]);
}

#[test]
fn tokens_are_stored_only_as_hashes() {
    let node = Node::start_default();
    let upload = node.create_token("pypi", "upload");
    let read = node.create_token("pypi", "read");
    node.upload_ok("pypi", &upload, &Upload::of(&wheel("tok-pkg", "1.0")));
    let mut files = Vec::new();
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    walk(&node.data_dir(), &mut files);
    assert!(!files.is_empty());
    for path in files {
        if path.file_name().is_some_and(|n| n == "admin-token") {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        for t in [&upload, &read] {
            assert!(
                !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
                "a token is stored in plain text in {}",
                path.display()
            );
        }
    }
}

#[test]
fn fsck_finds_a_damaged_or_missing_blob() {
    let mut node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let a = wheel("fsck-pkg", "1.0");
    let b = sdist("fsck-pkg", "1.0");
    node.upload_ok("pypi", &token, &Upload::of(&a));
    node.upload_ok("pypi", &token, &Upload::of(&b));
    let (graceful, _) = node.stop();
    assert!(graceful);
    let out = node.fsck();
    assert!(
        out.status.success(),
        "clean store: {}",
        describe_failure(&std::process::Command::new("hoard fsck"), &out)
    );

    // Flip a byte of one blob.
    let path = blob_path(&node, &a.sha256());
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let out = node.fsck();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "fsck passed a corrupted blob: {report}"
    );
    assert!(
        report.contains(&a.sha256()),
        "the report names the blob: {report}"
    );

    // Remove the other blob (and restore the first).
    bytes[10] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let blobs_before = count_files(&node.data_dir().join("blobs"));
    fs::remove_file(blob_path(&node, &b.sha256())).unwrap();
    assert_eq!(
        count_files(&node.data_dir().join("blobs")),
        blobs_before - 1
    );
    let out = node.fsck();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "fsck passed a missing blob: {report}"
    );
    assert!(
        report.contains(&b.sha256()) || report.contains(&b.filename),
        "the report names the missing file: {report}"
    );
}

#[test]
fn json_logs() {
    let node = Node::start(hoard_testkit::NodeOpts {
        log_format: Some("json".into()),
        ..Default::default()
    });
    let _ = node.get("/pypi/simple/");
    let log = node.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("===== hoard-tests"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty(), "the node logged nothing");
    for l in lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.is_object()),
            "log_format = \"json\" but this line is not a JSON object: {l}"
        );
    }
}
