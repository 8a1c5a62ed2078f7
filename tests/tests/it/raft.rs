//! Raft with real processes: kill -9 of the leader during a stream of
//! uploads, a leader cut off from the other voters, a planned handover,
//! kill -9 of a follower, a new voter catching up through a snapshot, and
//! a single node grown into three voters.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hoard_testkit::cluster::{assert_serves_all, status_of, upload_ok, wait_converged, wait_for};
use hoard_testkit::voters::{admin_post, Uploader, Voters, WriteLog};
use hoard_testkit::{wheel, Node, NodeOpts};
use serde_json::json;

fn check_log(log: &WriteLog) {
    assert!(
        log.unexpected.is_empty(),
        "uploads got answers that are neither success nor retryable: {:#?}",
        log.unexpected
    );
    assert!(!log.acked.is_empty(), "no upload was acknowledged");
}

#[test]
fn leader_killed_three_times_during_uploads_loses_no_acknowledged_upload() {
    let _heavy = hoard_testkit::heavy_test();
    let mut voters = Voters::start(3);
    let leader = voters.wait_leader(Duration::from_secs(20), None);
    let token = voters.nodes[leader].create_token("pypi", "upload");
    let uploader = Uploader::start(voters.urls(), token, "failover-pkg");
    for round in 1..=3 {
        let leader = voters.wait_leader(Duration::from_secs(30), None);
        uploader.wait_acked(uploader.acked(), 10, Duration::from_secs(60));
        let before = uploader.acked();
        let killed = Instant::now();
        voters.nodes[leader].kill9();
        let new_leader = voters.wait_leader(Duration::from_secs(30), Some(leader));
        let elected = killed.elapsed();
        // Uploads go on against the new leader.
        uploader.wait_acked(before, 5, Duration::from_secs(60));
        eprintln!(
            "round {round}: killed v{}, v{} elected after {elected:?}, uploads resumed after {:?}",
            leader + 1,
            new_leader + 1,
            killed.elapsed()
        );
        // The old leader, restarted, rejoins as a follower.
        voters.nodes[leader].restart();
        let id = leader as u64 + 1;
        wait_for(
            Duration::from_secs(30),
            "the restarted leader follows",
            || {
                let s = status_of(&voters.nodes[leader]).ok()?;
                (s["role"] == "follower" && s["leader_id"].as_u64().is_some_and(|l| l != id))
                    .then_some(())
            },
        );
    }
    let log = uploader.finish();
    check_log(&log);
    eprintln!(
        "{} uploads acknowledged, {} retried answers",
        log.acked.len(),
        log.retried
    );
    let nodes: Vec<&Node> = voters.nodes.iter().collect();
    let (serial, _digest) = wait_converged(&nodes, Duration::from_secs(60));
    assert!(
        serial as usize > log.acked.len(),
        "serial {serial} for {} uploads",
        log.acked.len()
    );
    for node in &nodes {
        assert_serves_all(node, "failover-pkg", &log.acked);
    }
}

#[test]
fn planned_promotion_moves_leadership_and_loses_no_upload() {
    let voters = Voters::start(3);
    let leader = voters.wait_leader(Duration::from_secs(20), None);
    let token = voters.nodes[leader].create_token("pypi", "upload");
    let uploader = Uploader::start(voters.urls(), token, "promote-pkg");
    uploader.wait_acked(0, 10, Duration::from_secs(60));
    let target = (leader + 1) % 3;
    let old = &voters.nodes[leader];
    let out = old.cli_ok(&[
        "promote",
        &(target + 1).to_string(),
        "--url",
        &old.url(),
        "--token",
        &old.admin_token(),
    ]);
    eprintln!("promote: {out}");
    assert_eq!(
        voters.wait_leader(Duration::from_secs(20), Some(leader)),
        target
    );
    let before = uploader.acked();
    uploader.wait_acked(before, 10, Duration::from_secs(60));
    let log = uploader.finish();
    check_log(&log);
    let nodes: Vec<&Node> = voters.nodes.iter().collect();
    wait_converged(&nodes, Duration::from_secs(60));
    for node in &nodes {
        assert_serves_all(node, "promote-pkg", &log.acked);
    }
}

#[test]
fn a_single_node_grows_to_three_voters_and_keeps_its_data() {
    // `hoard serve` as a user starts it: one voter, with data.
    let first = Node::start(NodeOpts {
        node_id: "solo".into(),
        ..NodeOpts::default()
    });
    let token = first.create_token("pypi", "upload");
    let http = hoard_testkit::cluster::client();
    let mut expected = BTreeMap::new();
    for i in 0..5 {
        let a = wheel("grow-pkg", &format!("0.{i}"));
        upload_ok(&http, &first.url(), &token, &a);
        expected.insert(a.filename.clone(), hoard_testkit::sha256_hex(&a.bytes));
    }
    let mut others = Vec::new();
    for id in 2..=3 {
        let node = Node::start(
            NodeOpts {
                node_id: format!("grow{id}"),
                ..NodeOpts::default()
            }
            .config(format!("raft_id = {id}"))
            .config("bootstrap = false"),
        );
        let out = first.cli_ok(&[
            "members",
            "add",
            "--id",
            &id.to_string(),
            "--grpc",
            &node.grpc_addr(),
            "--http",
            &node.url(),
            "--url",
            &first.url(),
            "--token",
            &first.admin_token(),
        ]);
        assert!(out.contains("\"voters\""), "members add printed {out}");
        others.push(node);
    }
    let members = admin_post(&first, "members/list", &json!({})).unwrap();
    let voters: Vec<u64> = members["voters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(voters, [1, 2, 3], "{members:#}");
    // A write after the growth reaches all three.
    let a = wheel("grow-pkg", "1.0");
    upload_ok(&http, &first.url(), &token, &a);
    expected.insert(a.filename.clone(), hoard_testkit::sha256_hex(&a.bytes));
    let mut nodes: Vec<&Node> = vec![&first];
    nodes.extend(others.iter());
    wait_converged(&nodes, Duration::from_secs(30));
    for node in &nodes {
        assert_serves_all(node, "grow-pkg", &expected);
        let s = status_of(node).unwrap();
        assert_eq!(s["voters"], json!([1, 2, 3]), "{s:#}");
    }
}

#[test]
fn a_leader_cut_off_from_the_other_voters_stops_acknowledging_and_follows_after_the_heal() {
    let voters = Voters::start(3);
    let leader = voters.wait_leader(Duration::from_secs(20), None);
    let token = voters.nodes[leader].create_token("pypi", "upload");
    let uploader = Uploader::start(voters.urls(), token.clone(), "partition-pkg");
    uploader.wait_acked(0, 10, Duration::from_secs(60));

    let cut = Instant::now();
    voters.partition(leader, true);
    let majority: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new_leader = voters.wait_leader_among(Duration::from_secs(30), &majority);
    eprintln!(
        "v{} cut off; v{} elected on the majority side after {:?}",
        leader + 1,
        new_leader + 1,
        cut.elapsed()
    );
    let before = uploader.acked();
    uploader.wait_acked(before, 10, Duration::from_secs(60));

    // The cut-off leader acknowledged nothing once the election timeout
    // (1 s) had passed: it cannot reach a majority for the blobs or the
    // entry. Writes that were in flight at the cut get their answer a
    // little later, hence the margin.
    let old_url = voters.nodes[leader].url();
    let late: Vec<Duration> = uploader
        .acks()
        .iter()
        .filter(|(at, url)| *url == old_url && *at > cut)
        .map(|(at, _)| at.duration_since(cut))
        .collect();
    assert!(
        late.iter().all(|d| *d < Duration::from_secs(2)),
        "the cut-off leader acknowledged writes {late:?} after the cut"
    );
    // A write sent straight to it now is refused with a retryable status.
    let probe = hoard_testkit::cluster::upload(
        &hoard_testkit::cluster::client(),
        &old_url,
        &token,
        &wheel("partition-probe", "1.0"),
    );
    if let Ok(up) = probe {
        assert!(
            up.status == 503 || up.status == 307,
            "a write to the cut-off leader answered {} {}",
            up.status,
            up.body
        );
    }

    voters.partition(leader, false);
    wait_for(
        Duration::from_secs(30),
        "the old leader follows after the heal",
        || {
            let s = status_of(&voters.nodes[leader]).ok()?;
            (s["role"] == "follower").then_some(())
        },
    );
    let before = uploader.acked();
    uploader.wait_acked(before, 5, Duration::from_secs(60));
    let log = uploader.finish();
    check_log(&log);
    let nodes: Vec<&Node> = voters.nodes.iter().collect();
    wait_converged(&nodes, Duration::from_secs(60));
    for node in &nodes {
        assert_serves_all(node, "partition-pkg", &log.acked);
    }
}

/// Creates `n` tokens through the admin API, from a few threads: each is
/// one event, and the cheapest way to a long changelog.
fn make_events(node: &Node, n: usize) {
    let url = format!("{}/+admin/tokens", node.url());
    let admin = node.admin_token();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (url, admin) = (url.clone(), admin.clone());
            s.spawn(move || {
                let http = hoard_testkit::cluster::client();
                for i in (t..n).step_by(4) {
                    let resp = http
                        .post(&url)
                        .bearer_auth(&admin)
                        .json(&json!({ "repo": "pypi", "perm": "read", "label": format!("t{i}") }))
                        .send()
                        .expect("create a token");
                    assert_eq!(
                        resp.status().as_u16(),
                        200,
                        "{}",
                        resp.text().unwrap_or_default()
                    );
                }
            });
        }
    });
}

#[test]
fn a_voter_added_after_5000_events_catches_up_through_a_snapshot() {
    let first = Node::start(
        NodeOpts {
            node_id: "snap1".into(),
            ..NodeOpts::default()
        }
        .config("raft_id = 1")
        .config("raft = { snapshot_every = 1000, keep_after_snapshot = 100 }"),
    );
    let token = first.create_token("pypi", "upload");
    let http = hoard_testkit::cluster::client();
    let mut expected = BTreeMap::new();
    for i in 0..20 {
        let a = wheel("snapshot-pkg", &format!("0.{i}"));
        upload_ok(&http, &first.url(), &token, &a);
        expected.insert(a.filename.clone(), hoard_testkit::sha256_hex(&a.bytes));
    }
    make_events(&first, 5000);
    let serial = first.serial();
    assert!(serial >= 5000, "serial {serial}");
    // The log has been purged behind the snapshot by now, so the new voter
    // cannot replay it from the start.
    wait_for(
        Duration::from_secs(30),
        "a snapshot on the first voter",
        || {
            first
                .data_dir()
                .join("snapshots/current.snap")
                .is_file()
                .then_some(())
        },
    );

    let second = Node::start(
        NodeOpts {
            node_id: "snap2".into(),
            ..NodeOpts::default()
        }
        .config("raft_id = 2")
        .config("bootstrap = false"),
    );
    let body = json!({ "id": 2, "grpc_addr": second.grpc_addr(), "http_url": second.url() });
    admin_post(&first, "members/add", &body).expect("add the second voter");
    wait_converged(&[&first, &second], Duration::from_secs(60));
    let s = status_of(&second).unwrap();
    assert!(
        s["snapshots_installed"].as_u64().unwrap_or(0) >= 1,
        "the new voter caught up without installing a snapshot: {s:#}"
    );
    assert_eq!(s["role"], "follower", "{s:#}");
    // Every file it lists, it serves: the snapshot's blobs were fetched.
    assert_serves_all(&second, "snapshot-pkg", &expected);
}

#[test]
fn a_follower_killed_during_an_upload_burst_converges_after_a_restart() {
    let mut voters = Voters::start(3);
    let leader = voters.wait_leader(Duration::from_secs(20), None);
    let token = voters.nodes[leader].create_token("pypi", "upload");
    let uploader = Uploader::start(voters.urls(), token, "follower-kill-pkg");
    uploader.wait_acked(0, 20, Duration::from_secs(60));
    let follower = (leader + 1) % 3;
    voters.nodes[follower].kill9();
    // The two others are a majority: uploads go on.
    let before = uploader.acked();
    uploader.wait_acked(before, 20, Duration::from_secs(60));
    voters.nodes[follower].restart();
    let before = uploader.acked();
    uploader.wait_acked(before, 20, Duration::from_secs(60));
    let log = uploader.finish();
    check_log(&log);
    let nodes: Vec<&Node> = voters.nodes.iter().collect();
    wait_converged(&nodes, Duration::from_secs(60));
    for node in &nodes {
        assert_serves_all(node, "follower-kill-pkg", &log.acked);
    }
}
