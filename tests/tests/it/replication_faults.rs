//! Read replicas under faults (issue 4, "Bad input and faults"): kill -9
//! during catch-up, a blob with wrong bytes on an upstream, and a full
//! disk. (A gap or a repeated serial in the event stream is covered by
//! `crates/hoard-cluster/tests/follower.rs` with a scripted upstream.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hoard_testkit::artifacts::WheelSpec;
use hoard_testkit::cluster::{
    self, assert_serves_exactly, download, listed, status_of, upload_ok, wait_applied,
    wait_converged,
};
use hoard_testkit::node::describe_failure;
use hoard_testkit::{sha256_hex, wheel, Artifact, Node, NodeOpts};

const CONVERGE: Duration = Duration::from_secs(90);

fn primary() -> Node {
    Node::start(NodeOpts {
        node_id: "p".to_string(),
        ..NodeOpts::default()
    })
}

/// `count` wheels of `name` with `size` bytes of incompressible padding
/// each (built on both cores).
fn padded_wheels(name: &str, count: usize, size: usize) -> Vec<Artifact> {
    let build = |i: usize| {
        WheelSpec::new(name, &format!("{i}.0"))
            .padding(size, i as u64 + 1)
            .build()
    };
    let (evens, odds) = std::thread::scope(|s| {
        let evens = s.spawn(|| (0..count).step_by(2).map(build).collect::<Vec<_>>());
        let odds = s.spawn(|| (1..count).step_by(2).map(build).collect::<Vec<_>>());
        (evens.join().unwrap(), odds.join().unwrap())
    });
    let mut all: Vec<Artifact> = evens.into_iter().chain(odds).collect();
    all.sort_by_key(|a| {
        a.version
            .split('.')
            .next()
            .unwrap()
            .parse::<usize>()
            .unwrap()
    });
    all
}

fn expected(files: &[Artifact]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|a| (a.filename.clone(), a.sha256()))
        .collect()
}

fn fsck_ok(node: &Node, when: &str) {
    let out = node.fsck();
    assert!(
        out.status.success(),
        "hoard fsck of {} {when}: {}",
        node.opts.node_id,
        describe_failure(&std::process::Command::new("hoard fsck"), &out)
    );
}

/// kill -9 of a fresh replica while it catches up (slowly: big blobs, one
/// fetch at a time), then a restart: it converges, and everything it lists
/// downloads with the right bytes.
///
/// (150 files of 512 KiB, fetched one at a time: long enough to kill the
/// replica mid-way, short enough to keep the suite fast.)
#[test]
fn replica_killed_during_catch_up_converges_after_restart() {
    const FILES: usize = 150;
    let p = primary();
    let token = p.create_token("pypi", "upload");
    let name = "catchup-pkg";
    let t = Instant::now();
    let files = padded_wheels(name, FILES, 512 << 10);
    eprintln!("built {FILES} wheels in {:?}", t.elapsed());
    let t = Instant::now();
    let http = cluster::client();
    for f in &files {
        upload_ok(&http, &p.url(), &token, f);
    }
    let target = p.serial();
    eprintln!("uploaded in {:?}; primary at serial {target}", t.elapsed());

    let t = Instant::now();
    let mut r =
        Node::start(NodeOpts::replica("r1", &[p.grpc_addr()]).config("fetch_concurrency = 1"));
    // Kill it once it has applied some files, but not all.
    let mut seen = None;
    while t.elapsed() < Duration::from_secs(60) {
        let s = status_of(&r).expect("replica /+status");
        let applied = s["applied_serial"].as_u64().unwrap();
        assert!(
            applied < target,
            "the replica caught up before it could be killed ({:?}): make catch-up slower",
            t.elapsed()
        );
        // Kill it once it has fetched a few files' worth of blobs: some may
        // be applied, others fetched but not yet applied, one half-written.
        let fetched = s["blob_bytes_fetched"].as_u64().unwrap_or(0);
        if fetched > 8 * (512 << 10) {
            assert_eq!(s["upstream_serial"], target, "{s:#}");
            assert_eq!(s["lag_events"], target - applied, "{s:#}");
            seen = Some(applied);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let before_kill = seen.expect("the replica fetched too little within 60 s");
    r.kill9();
    eprintln!(
        "killed the replica at applied serial >= {before_kill} of {target}, {:?} after its start",
        t.elapsed()
    );

    let log_len = r.log().len();
    let t2 = Instant::now();
    r.restart();
    let after = r.serial();
    eprintln!("after the restart, the replica is at serial {after} (was >= {before_kill})");
    let (serial, _) = wait_converged(&[&p, &r], CONVERGE);
    assert_eq!(serial, target);
    let behind = t2.elapsed();
    eprintln!("converged {behind:?} after the restart");
    // Progress lines come every 5 s while behind.
    if behind > Duration::from_secs(7) {
        assert!(
            r.log()[log_len..].contains("catching up"),
            "the replica was behind for {behind:?} after its restart and logged no \
             \"catching up\" progress line"
        );
    }
    let t = Instant::now();
    assert_serves_exactly(&r, name, &expected(&files));
    eprintln!("downloaded and checked all in {:?}", t.elapsed());
    let t = Instant::now();
    r.stop();
    fsck_ok(&r, "after it converged");
    eprintln!("fsck in {:?}", t.elapsed());
}

/// `<data_dir>/blobs/ab/cd/<sha256>`
fn blob_path(node: &Node, sha: &str) -> std::path::PathBuf {
    node.data_dir()
        .join("blobs")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(sha)
}

/// A blob whose bytes do not match its sha256 on the first upstream: the
/// replica discards that copy and fetches it from the next upstream.
#[test]
fn a_corrupt_blob_on_an_upstream_is_fetched_again_from_the_next() {
    let p = primary();
    let token = p.create_token("pypi", "upload");
    let name = "rot-pkg";
    let files: Vec<Artifact> = (0..3)
        .map(|i| {
            WheelSpec::new(name, &format!("{i}.0"))
                .padding(64 << 10, i)
                .build()
        })
        .collect();
    let http = cluster::client();
    let mut last = 0;
    for f in &files {
        last = upload_ok(&http, &p.url(), &token, f);
    }
    let a = Node::start(NodeOpts::replica("a", &[p.grpc_addr()]));
    wait_applied(&a, last, CONVERGE);
    // Rot on A: the same length with other bytes, and a shorter file.
    let same_len = blob_path(&a, &files[0].sha256());
    let shorter = blob_path(&a, &files[1].sha256());
    for path in [&same_len, &shorter] {
        assert!(path.is_file(), "A has no blob at {}", path.display());
    }
    let mut bytes = std::fs::read(&same_len).unwrap();
    for b in bytes.iter_mut().skip(1000).take(100) {
        *b ^= 0x5a;
    }
    std::fs::write(&same_len, &bytes).unwrap();
    std::fs::write(&shorter, b"not the wheel").unwrap();

    let b = Node::start(NodeOpts::replica("b", &[a.grpc_addr(), p.grpc_addr()]));
    wait_converged(&[&p, &a, &b], CONVERGE);
    for f in &files {
        let on_disk = std::fs::read(blob_path(&b, &f.sha256())).unwrap();
        assert_eq!(
            sha256_hex(&on_disk),
            f.sha256(),
            "B stored {} with other bytes",
            f.filename
        );
    }
    assert_serves_exactly(&b, name, &expected(&files));
    // B followed A (so it asked A for the blobs first) and is healthy.
    let s = b.status();
    assert_eq!(s["upstream"], a.grpc_addr().as_str(), "{s:#}");
    assert_eq!(s["health"], "ok", "{s:#}");
}

/// A replica's disk fills up: it stops applying, says so in `/+status`,
/// keeps serving what it has, and resumes when there is space again, with
/// nothing corrupted.
#[test]
fn a_replica_with_a_full_disk_reports_it_keeps_serving_and_resumes() {
    const FILES: usize = 50;
    let p = primary();
    let token = p.create_token("pypi", "upload");
    let name = "full-pkg";
    let http = cluster::client();
    let first = wheel(name, "0.1");
    let first_serial = upload_ok(&http, &p.url(), &token, &first);

    let mut r = Node::prepare(NodeOpts::replica("r", &[p.grpc_addr()]));
    r.mount_tmpfs_data_dir("40m");
    r.launch();
    wait_applied(&r, first_serial, CONVERGE);

    // 50 MiB into a 40 MiB disk.
    let big = padded_wheels(name, FILES, 1 << 20);
    let mut last = 0;
    for f in &big {
        last = upload_ok(&http, &p.url(), &token, f);
    }
    let s = cluster::wait_for(CONVERGE, "the replica reports itself unhealthy", || {
        status_of(&r).ok().filter(|s| s["health"] == "unhealthy")
    });
    eprintln!("unhealthy: {s:#}");
    assert!(
        s["problem"].as_str().is_some_and(|p| !p.is_empty()),
        "an unhealthy replica names its problem: {s:#}"
    );
    let stuck = s["applied_serial"].as_u64().unwrap();
    assert!(stuck < last, "{s:#}");
    // It keeps serving what it has: everything it lists, and the first file.
    std::thread::sleep(Duration::from_secs(1));
    let files = listed(r.http(), &r.url(), name).unwrap();
    assert!(files.iter().any(|f| f.filename == first.filename));
    for f in &files {
        let bytes = download(r.http(), &f.url)
            .unwrap_or_else(|e| panic!("a full replica lists {} but: {e:#}", f.filename));
        assert_eq!(sha256_hex(&bytes), f.sha256, "{}", f.filename);
    }
    let s = r.status();
    assert_eq!(s["health"], "unhealthy", "{s:#}");
    assert!(s["applied_serial"].as_u64().unwrap() < last, "{s:#}");

    // Space again: it resumes and converges.
    r.resize_tmpfs_data_dir("400m");
    let t = Instant::now();
    wait_converged(&[&p, &r], CONVERGE);
    eprintln!("converged {:?} after the resize", t.elapsed());
    let s = cluster::wait_for(Duration::from_secs(15), "health turns ok", || {
        status_of(&r).ok().filter(|s| s["health"] == "ok")
    });
    assert!(s["problem"].is_null(), "{s:#}");
    let mut all = big;
    all.push(first);
    assert_serves_exactly(&r, name, &expected(&all));
    let (by_itself, exit) = r.stop();
    assert!(
        by_itself && exit.success(),
        "the replica's SIGTERM exit: {exit}"
    );
    fsck_ok(&r, "after its disk filled up and it resumed");
}

/// A replica's index meets a full disk: sled keeps that write error for as
/// long as the database stays open, so the replica says so, keeps serving
/// what it has, and restarts in place (same pid) once the disk takes
/// writes again; it then follows on from its last flush and converges.
/// Only blob-less events are sent (yank and unyank with a long reason), so
/// that sled, not a blob, is what meets the full disk.
#[test]
fn a_replica_whose_index_meets_a_full_disk_restarts_in_place_once_there_is_room() {
    let p = primary();
    let token = p.create_token("pypi", "upload");
    let name = "sled-full";
    let http = cluster::client();
    let first = wheel(name, "1.0");
    let first_serial = upload_ok(&http, &p.url(), &token, &first);

    let mut r = Node::prepare(NodeOpts::replica("r", &[p.grpc_addr()]));
    r.mount_tmpfs_data_dir("64m");
    r.launch();
    wait_applied(&r, first_serial, CONVERGE);
    let pid = r.pid();

    let filler = r.data_dir().join("filler");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    let admin = p.admin_token();
    let reason = "r".repeat(4096);
    let mut last = first_serial;
    for i in 0..300 {
        let body = serde_json::json!({
            "repo": "pypi", "project": name, "version": "1.0",
            "reason": reason, "undo": i % 2 == 1,
        });
        let resp = http
            .post(format!("{}/+admin/yank", p.url()))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().unwrap());
        last = p.serial();
    }
    let s = cluster::wait_for(CONVERGE, "the replica reports its index stopped", || {
        status_of(&r).ok().filter(|s| {
            s["problem"]
                .as_str()
                .is_some_and(|p| p.contains("stopped taking writes"))
        })
    });
    eprintln!("unhealthy: {s:#}");
    assert_eq!(s["health"], "unhealthy", "{s:#}");
    assert!(s["applied_serial"].as_u64().unwrap() < last, "{s:#}");
    // It still serves what it has, and stays put while the disk is full.
    let files = listed(r.http(), &r.url(), name).unwrap();
    assert_eq!(files.len(), 1);
    let bytes = download(r.http(), &files[0].url).unwrap();
    assert_eq!(sha256_hex(&bytes), first.sha256());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(r.pid(), pid);
    assert_eq!(r.status()["health"], "unhealthy");

    std::fs::remove_file(&filler).unwrap();
    let t = Instant::now();
    wait_converged(&[&p, &r], CONVERGE);
    eprintln!("converged {:?} after the disk was freed", t.elapsed());
    assert!(r.is_running() && r.pid() == pid, "it restarts in place");
    assert!(
        r.log().contains("restarting in place"),
        "{}",
        r.log_tail(30)
    );
    let s = r.status();
    assert_eq!(s["health"], "ok", "{s:#}");
    let (by_itself, exit) = r.stop();
    assert!(
        by_itself && exit.success(),
        "the replica's SIGTERM exit: {exit}"
    );
    fsck_ok(&r, "after its index met a full disk and it restarted");
}
