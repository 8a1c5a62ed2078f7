//! Online backup (`hoard backup`) of a node taking uploads, and restore
//! (`hoard restore`) into a new data dir that catches up as a replica.

use std::time::Duration;

use hoard_testkit::cluster::{self, wait_applied};
use hoard_testkit::node::output_text;
use hoard_testkit::voters::Uploader;
use hoard_testkit::{wheel, Node, NodeOpts};

/// The number after `word ` in `text` (`serial 123`).
fn number_after(text: &str, word: &str) -> u64 {
    let at = text
        .find(&format!("{word} "))
        .unwrap_or_else(|| panic!("no {word:?} in {text}"));
    text[at + word.len() + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {word:?} in {text}"))
}

/// Done when: a backup taken during a stream of uploads restores to a node
/// whose digest equals the source's at the backup's serial, and whose
/// fsck is clean; started as a replica, it catches up from that serial.
#[test]
fn a_backup_taken_during_uploads_restores_to_the_same_digest_and_catches_up() {
    let source = Node::start_default();
    let token = source.create_token("pypi", "upload");
    let http = cluster::client();
    for i in 0..20 {
        cluster::upload_ok(
            &http,
            &source.url(),
            &token,
            &wheel("before-pkg", &format!("1.0.{i}")),
        );
    }
    let uploader = Uploader::start(vec![source.url()], token.clone(), "during-pkg");
    uploader.wait_acked(0, 5, Duration::from_secs(60));

    let dir = tempfile::tempdir().unwrap();
    let backup_dir = dir.path().join("backup");
    let admin = source.admin_token();
    let out = source.cli(&[
        "backup",
        "--url",
        &source.url(),
        "--token",
        &admin,
        "--to",
        backup_dir.to_str().unwrap(),
    ]);
    let said = output_text(&out);
    assert!(out.status.success(), "hoard backup: {said}");
    let acked_during = uploader.acked();
    let log = uploader.finish();
    assert!(log.unexpected.is_empty(), "{:#?}", log.unexpected);
    eprintln!("hoard backup: {said}");
    let serial = number_after(&said, "serial");
    assert!(serial > 20, "{said}");
    assert!(
        said.contains("hard-linked"),
        "the summary says how blobs were copied: {said}"
    );
    assert!(
        source.serial() > serial || acked_during > 0,
        "uploads went on during the backup"
    );

    // A second backup into the same directory is refused: it is not empty.
    let again = source.cli(&[
        "backup",
        "--url",
        &source.url(),
        "--token",
        &admin,
        "--to",
        backup_dir.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        output_text(&again).contains("not empty"),
        "{}",
        output_text(&again)
    );

    // Restore into the data dir of a replica that has not started yet.
    let mut restored = Node::prepare(NodeOpts::replica("restored", &[source.grpc_addr()]));
    let out = restored.cli(&[
        "restore",
        "--from",
        backup_dir.to_str().unwrap(),
        "--data-dir",
        restored.data_dir().to_str().unwrap(),
    ]);
    let said_restore = output_text(&out);
    assert!(out.status.success(), "hoard restore: {said_restore}");
    eprintln!("hoard restore: {said_restore}");
    assert_eq!(
        number_after(&said_restore, "serial"),
        serial,
        "{said_restore}"
    );
    // fsck of the restored data dir: the changelog up to the backup's
    // serial, with its digest, and every blob it lists.
    let fsck = restored.fsck();
    assert!(fsck.status.success(), "fsck: {}", output_text(&fsck));
    assert!(
        output_text(&fsck).contains(&format!("checked {serial} events")),
        "{}",
        output_text(&fsck)
    );
    // Restoring again into the same data dir is refused.
    let twice = restored.cli(&[
        "restore",
        "--from",
        backup_dir.to_str().unwrap(),
        "--data-dir",
        restored.data_dir().to_str().unwrap(),
    ]);
    assert!(!twice.status.success());

    // Started as a replica, it follows from the backup's serial, and ends
    // with the source's digest: the digest chains every event, so equal
    // digests at the end mean the restored prefix was the source's.
    restored.launch();
    let last = source.serial();
    wait_applied(&restored, last, Duration::from_secs(60));
    assert!(
        restored.log().contains(&format!("since={serial}")),
        "the replica did not start from serial {serial}:\n{}",
        restored.log()
    );
    assert_eq!(restored.status()["digest"], source.status()["digest"]);
    for (filename, sha) in &log.acked {
        let project = "during-pkg";
        let files = cluster::listed(restored.http(), &restored.url(), project).unwrap();
        assert!(
            files
                .iter()
                .any(|f| &f.filename == filename && &f.sha256 == sha),
            "{filename} is not served by the restored replica"
        );
    }
}
