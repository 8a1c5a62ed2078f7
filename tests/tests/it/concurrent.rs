//! Concurrent uploads: dense serials, nothing lost, one winner per filename.

use std::sync::{Arc, Barrier};

use hoard_testkit::artifacts::WheelSpec;
use hoard_testkit::{wheel, Auth, Node, Upload};

use crate::simple_api::json_page;
use crate::store::blob_names;

#[test]
fn parallel_uploads_are_all_listed_with_dense_serials() {
    let node = Arc::new(Node::start_default());
    let token = node.create_token("pypi", "upload");
    let before = node.serial();
    let threads = 6;
    let per_thread = 5;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (node, token, barrier) = (node.clone(), token.clone(), barrier.clone());
            std::thread::spawn(move || {
                let files: Vec<_> = (0..per_thread)
                    .map(|i| wheel("para-pkg", &format!("{t}.{i}")))
                    .collect();
                barrier.wait();
                for f in &files {
                    node.upload_ok("pypi", &token, &Upload::of(f));
                }
                files
            })
        })
        .collect();
    let files: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(node.serial(), before + (threads * per_thread) as u64);
    let page = json_page(&node, "pypi", "para-pkg");
    let listed = page["files"].as_array().unwrap();
    assert_eq!(listed.len(), files.len());
    for f in &files {
        assert!(
            listed.iter().any(|l| l["filename"] == f.filename.as_str()
                && l["hashes"]["sha256"] == f.sha256().as_str()),
            "{} missing",
            f.filename
        );
    }
    assert_eq!(node.status()["counts"]["files"], files.len() as u64);
}

#[test]
fn racing_uploads_of_one_filename_have_one_winner() {
    let node = Arc::new(Node::start_default());
    let token = node.create_token("pypi", "upload");
    let before = node.store_snapshot();
    let n = 6;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (node, token, barrier) = (node.clone(), token.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut spec = WheelSpec::new("race-pkg", "1.0");
                spec.extra_files.push((
                    format!("race_pkg/v{i}.py"),
                    format!("i = {i}\n").into_bytes(),
                ));
                let a = spec.build();
                barrier.wait();
                let resp = node.upload("pypi", &Auth::Basic(token), &Upload::of(&a));
                (resp.status().as_u16(), a.sha256())
            })
        })
        .collect();
    let results: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<&String> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, sha)| sha)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one upload wins: {results:?}");
    assert!(
        results.iter().all(|(s, _)| *s == 200 || *s == 409),
        "the others get 409: {results:?}"
    );
    let after = node.store_snapshot();
    assert_eq!(after.serial, before.serial + 1);
    assert!(node.tmp_files().is_empty());
    let page = json_page(&node, "pypi", "race-pkg");
    assert_eq!(page["files"].as_array().unwrap().len(), 1);
    assert_eq!(page["files"][0]["hashes"]["sha256"], winners[0].as_str());
    // The losers' bytes are not kept: the only blobs are the winner's file
    // and core metadata.
    let meta_sha = page["files"][0]["core-metadata"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let orphans: Vec<String> = blob_names(&node)
        .into_iter()
        .filter(|b| b != winners[0] && *b != meta_sha)
        .collect();
    assert!(
        orphans.is_empty(),
        "{} blobs of refused (409) uploads were left in blobs/: {orphans:?}",
        orphans.len()
    );
}
