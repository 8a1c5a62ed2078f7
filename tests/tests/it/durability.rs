//! Restarts, and kill -9 in the middle of uploads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoard_testkit::artifacts::{normalize, WheelSpec};
use hoard_testkit::{sdist, sha256_hex, wheel, Artifact, Node, Upload};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;

use crate::simple_api::{file_url, json_page};

/// Every file of `project` that the JSON page lists, with its sha256, and
/// check that each downloads with that sha256 (a node never lists a file
/// that it cannot serve).
fn listed_and_served(node: &Node, project: &str) -> BTreeMap<String, String> {
    let resp = node
        .http()
        .get(format!("{}/pypi/simple/{project}/", node.url()))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .unwrap();
    if resp.status().as_u16() == 404 {
        return BTreeMap::new();
    }
    let page_url = resp.url().clone();
    assert_eq!(resp.status().as_u16(), 200);
    let page: Value = resp.json().unwrap();
    let mut out = BTreeMap::new();
    for f in page["files"].as_array().expect("files array") {
        let filename = f["filename"].as_str().unwrap().to_string();
        let sha = f["hashes"]["sha256"].as_str().unwrap().to_string();
        let url = page_url.join(f["url"].as_str().unwrap()).unwrap();
        let body = node.http().get(url.clone()).send().unwrap();
        assert_eq!(body.status().as_u16(), 200, "GET {url} of a listed file");
        let bytes = body.bytes().unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            sha,
            "{filename}: downloaded bytes vs listed sha256"
        );
        out.insert(filename, sha);
    }
    out
}

#[test]
fn data_survives_a_graceful_restart() {
    let mut node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let admin = node.admin_token();
    let name = "restart-pkg";
    let files: Vec<Artifact> = vec![
        wheel(name, "1.0.0"),
        sdist(name, "1.0.0"),
        wheel(name, "2.0.0"),
    ];
    for f in &files {
        node.upload_ok("pypi", &token, &Upload::of(f));
    }
    let status_before = node.status();
    let listed_before = listed_and_served(&node, name);
    let html_before = node.get(&format!("/pypi/simple/{name}/")).text().unwrap();

    let (graceful, exit) = node.stop();
    assert!(graceful, "hoard did not exit within 15 s of SIGTERM");
    assert!(exit.success(), "hoard exited with {exit} after SIGTERM");
    let fsck = node.fsck();
    assert!(
        fsck.status.success(),
        "fsck after a clean stop: {}",
        hoard_testkit::node::describe_failure(&std::process::Command::new("hoard fsck"), &fsck)
    );

    node.restart();
    let status_after = node.status();
    assert_eq!(
        status_after["applied_serial"],
        status_before["applied_serial"]
    );
    assert_eq!(status_after["counts"], status_before["counts"]);
    assert_eq!(
        node.admin_token(),
        admin,
        "the admin token changed on restart"
    );
    let listed_after = listed_and_served(&node, name);
    assert_eq!(listed_after, listed_before);
    for f in &files {
        assert_eq!(
            listed_after.get(&f.filename),
            Some(&f.sha256()),
            "{}",
            f.filename
        );
    }
    let html_after = node.get(&format!("/pypi/simple/{name}/")).text().unwrap();
    assert_eq!(
        html_after, html_before,
        "the HTML page changed across a restart"
    );
    // Core metadata is still served.
    let page = json_page(&node, "pypi", name);
    let whl = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["filename"] == files[0].filename.as_str())
        .unwrap();
    let meta = node
        .http()
        .get(format!("{}.metadata", file_url(&node, "pypi", name, whl)))
        .send()
        .unwrap();
    assert_eq!(meta.status().as_u16(), 200);
    assert_eq!(meta.text().unwrap(), files[0].metadata);

    // The upload token is still valid, and serials go on densely.
    let serial = node.serial();
    node.upload_ok("pypi", &token, &Upload::of(&wheel(name, "3.0.0")));
    assert_eq!(node.serial(), serial + 1);
}

/// Upload with reqwest's own multipart encoder; Ok(true) when acknowledged
/// with 200.
fn reqwest_upload(
    client: &reqwest::blocking::Client,
    node_url: &str,
    token: &str,
    a: &Artifact,
    sha256: &str,
) -> Result<bool, reqwest::Error> {
    let form = Form::new()
        .text(":action", "file_upload")
        .text("protocol_version", "1")
        .text("metadata_version", "2.1")
        .text("name", a.name.clone())
        .text("version", a.version.clone())
        .text("filetype", "bdist_wheel")
        .text("pyversion", "py3")
        .text("sha256_digest", sha256.to_string())
        .part(
            "content",
            Part::bytes(a.bytes.clone())
                .file_name(a.filename.clone())
                .mime_str("application/octet-stream")?,
        );
    let resp = client
        .post(format!("{node_url}/pypi/"))
        .basic_auth("__token__", Some(token))
        .multipart(form)
        .send()?;
    Ok(resp.status().as_u16() == 200)
}

#[test]
fn kill_9_during_uploads_loses_no_acknowledged_upload() {
    const ROUNDS: usize = 5;
    let mut node = Node::start_default();
    let token = node.create_token("pypi", "upload");
    let name = "crash-pkg";
    let project = normalize(name);
    // Built up front, so that the uploader sends back to back and a kill
    // lands while the node is busy (3 MiB of incompressible padding each:
    // streaming, hashing and fsyncing one takes a while).
    let build = |v: usize| {
        let a = WheelSpec::new(name, &format!("{v}.0.0"))
            .padding(3 << 20, v as u64)
            .build();
        let sha = a.sha256();
        (a, sha)
    };
    let count = ROUNDS * 6;
    let t = Instant::now();
    let (evens, odds) = std::thread::scope(|s| {
        let evens = s.spawn(|| (0..count).step_by(2).map(build).collect::<Vec<_>>());
        let odds = s.spawn(|| (1..count).step_by(2).map(build).collect::<Vec<_>>());
        (evens.join().unwrap(), odds.join().unwrap())
    });
    let mut all: Vec<(Artifact, String)> = evens.into_iter().chain(odds).collect();
    all.sort_by_key(|(a, _)| {
        a.version
            .split('.')
            .next()
            .unwrap()
            .parse::<usize>()
            .unwrap()
    });
    let wheels = Arc::new(all);
    eprintln!("built {count} wheels in {:?}", t.elapsed());
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    // The index of the upload being sent now.
    let sending = Arc::new(AtomicUsize::new(usize::MAX));
    let mut next = 0usize;
    let mut leftovers_seen = 0;

    for round in 0..ROUNDS {
        let url = node.url();
        let uploader = {
            let (acked, sending, token, wheels) = (
                acked.clone(),
                sending.clone(),
                token.clone(),
                wheels.clone(),
            );
            let start = next;
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                let mut i = start;
                while i < wheels.len() {
                    let (a, sha) = &wheels[i];
                    sending.store(i, Ordering::SeqCst);
                    match reqwest_upload(&client, &url, &token, a, sha) {
                        Ok(true) => acked
                            .lock()
                            .unwrap()
                            .push((a.filename.clone(), sha.clone())),
                        Ok(false) => panic!("upload {} refused", a.filename),
                        Err(_) => break, // the node is gone
                    }
                    i += 1;
                }
                i
            })
        };
        // Let a few uploads through, then kill at some moment during the
        // next one.
        let target = next + 2 + round % 3;
        let wait_until = Instant::now() + Duration::from_secs(60);
        while sending.load(Ordering::SeqCst) != target && Instant::now() < wait_until {
            std::thread::sleep(Duration::from_micros(200));
        }
        assert_eq!(
            sending.load(Ordering::SeqCst),
            target,
            "the uploader stalled"
        );
        std::thread::sleep(Duration::from_millis([0, 5, 15, 30, 60][round]));
        node.kill9();
        next = uploader.join().unwrap();
        let acked_now = acked.lock().unwrap().clone();

        let leftovers = node.tmp_files().len();
        leftovers_seen += leftovers;
        let fsck = node.fsck();
        assert!(
            fsck.status.success(),
            "round {round}: hoard fsck after kill -9 is not clean:\n{}",
            hoard_testkit::node::describe_failure(&std::process::Command::new("hoard fsck"), &fsck)
        );

        node.restart();
        let listed = listed_and_served(&node, &project);
        for (filename, sha) in &acked_now {
            assert_eq!(
                listed.get(filename),
                Some(sha),
                "round {round}: acknowledged upload {filename} is missing or different after kill -9"
            );
        }
        eprintln!(
            "round {round}: {} acknowledged, {} listed, {leftovers} temp files after the kill",
            acked_now.len(),
            listed.len()
        );
        // Only the upload in flight at each kill may be there without an ack.
        assert!(
            listed.len() <= acked_now.len() + 1 + round,
            "round {round}: {} listed, {} acknowledged",
            listed.len(),
            acked_now.len()
        );
        assert!(
            node.tmp_files().is_empty(),
            "temp files left after a restart"
        );
    }
    eprintln!("{leftovers_seen} temp files were found after kills in all");
}
