//! Read replicas under faults (issue 4, "Bad input and faults"): kill -9
//! during catch-up, a blob with wrong bytes on an upstream, and a full
//! disk. (A gap or a repeated serial in the event stream is covered by
//! `crates/hoard-cluster/tests/follower.rs` with a scripted upstream.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hoard_tests::artifacts::{normalize, WheelSpec};
use hoard_tests::cluster::{
    self, assert_serves_exactly, download, listed, status_of, upload_ok, wait_applied,
    wait_converged,
};
use hoard_tests::node::describe_failure;
use hoard_tests::{sha256_hex, wheel, Artifact, Node, NodeOpts};

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
    all.sort_by_key(|a| a.version.split('.').next().unwrap().parse::<usize>().unwrap());
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
#[test]
fn replica_killed_during_catch_up_converges_after_restart() {
    const FILES: usize = 300;
    let p = primary();
    let token = p.create_token("pypi", "upload");
    let name = "catchup-pkg";
    let t = Instant::now();
    let files = padded_wheels(name, FILES, 1 << 20);
    eprintln!("built {FILES} wheels in {:?}", t.elapsed());
    let t = Instant::now();
    let http = cluster::client();
    for f in &files {
        upload_ok(&http, &p.url(), &token, f);
    }
    let target = p.serial();
    eprintln!("uploaded in {:?}; primary at serial {target}", t.elapsed());

    let t = Instant::now();
    let mut r = Node::start(
        NodeOpts::replica("r1", &[p.grpc_addr()]).config("fetch_concurrency = 1"),
    );
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
        if applied > 2 + FILES as u64 / 10 {
            assert_eq!(s["upstream_serial"], target, "{s:#}");
            assert_eq!(s["lag_events"], target - applied, "{s:#}");
            seen = Some(applied);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let before_kill = seen.expect("the replica applied nothing within 60 s");
    r.kill9();
    eprintln!(
        "killed the replica at applied serial >= {before_kill} of {target}, {:?} after its start",
        t.elapsed()
    );
    assert!(
        r.log().contains("catching up"),
        "the replica logged no \"catching up\" progress line"
    );

    r.restart();
    let after = r.serial();
    eprintln!("after the restart, the replica is at serial {after} (was >= {before_kill})");
    let (serial, _) = wait_converged(&[&p, &r], CONVERGE);
    assert_eq!(serial, target);
    eprintln!("converged {:?} after the first start", t.elapsed());
    let t = Instant::now();
    assert_serves_exactly(&r, name, &expected(&files));
    eprintln!("downloaded and checked all in {:?}", t.elapsed());
    let t = Instant::now();
    r.stop();
    fsck_ok(&r, "after it converged");
    eprintln!("fsck in {:?}", t.elapsed());
}
