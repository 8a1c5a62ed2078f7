//! `hoard status`: the cluster table, found from any node, and its exit
//! code when a node is down.

use std::time::Duration;

use hoard_testkit::cluster::{client, upload_ok, wait_converged, wait_for};
use hoard_testkit::voters::Voters;
use hoard_testkit::{wheel, Node, NodeOpts};
use serde_json::Value;

#[test]
fn hoard_status_lists_every_voter_and_replica_and_exits_1_when_a_voter_is_down() {
    let mut voters = Voters::start(3);
    let leader = voters.wait_leader(Duration::from_secs(20), None);
    let upstreams: Vec<String> = voters.nodes.iter().map(Node::grpc_addr).collect();
    let replica = Node::start(NodeOpts::replica("status-replica", &upstreams));
    let token = voters.nodes[leader].create_token("pypi", "upload");
    let serial = upload_ok(
        &client(),
        &voters.nodes[leader].url(),
        &token,
        &wheel("st", "1.0"),
    );
    let nodes: Vec<&Node> = voters.nodes.iter().chain([&replica]).collect();
    wait_converged(&nodes, Duration::from_secs(30));

    // From the replica, which knows only its leader's URL: the leader names
    // its members and its followers.
    let out = replica.cli_ok(&["status", "--url", &replica.url()]);
    eprintln!("{out}");
    let header = out.lines().next().unwrap_or_default();
    for column in ["NODE", "ROLE", "LEADER", "TERM", "APPLIED", "LAG", "HEALTH"] {
        assert!(header.contains(column), "no {column} column: {out}");
    }
    for id in ["v1", "v2", "v3", "status-replica"] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row for {id}: {out}"));
        assert!(
            row.contains(&serial.to_string()),
            "{id} not at serial {serial}: {row}"
        );
        assert!(row.contains(" ok "), "{id} not healthy: {row}");
    }
    let leader_id = &voters.nodes[leader].opts.node_id;
    let leader_row = out
        .lines()
        .find(|l| l.starts_with(&format!("{leader_id} ")))
        .unwrap();
    assert!(
        leader_row.contains("leader") && leader_row.contains('*'),
        "{leader_row}"
    );
    assert!(out.trim_end().ends_with("4 nodes, all healthy"), "{out}");

    // The same as JSON, from a follower voter.
    let follower = (leader + 1) % 3;
    let out = voters.nodes[follower].cli_ok(&[
        "status",
        "--json",
        "--url",
        &voters.nodes[follower].url(),
    ]);
    let survey: Value = serde_json::from_str(&out).expect("status --json prints JSON");
    assert_eq!(survey["healthy"], true, "{survey:#}");
    assert_eq!(
        survey["nodes"].as_array().map(Vec::len),
        Some(4),
        "{survey:#}"
    );

    // A voter dies: its row says so, and the command exits 1.
    let victim = (leader + 2) % 3;
    let victim_id = voters.nodes[victim].opts.node_id.clone();
    voters.nodes[victim].kill9();
    let out = wait_for(Duration::from_secs(20), "hoard status to exit 1", || {
        let o = replica.cli(&["status", "--url", &replica.url()]);
        (o.status.code() == Some(1)).then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    eprintln!("{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("{victim_id} ")))
        .unwrap_or_else(|| panic!("no row for the dead {victim_id}: {out}"));
    assert!(row.contains("unreachable"), "{row}");
    assert!(out.trim_end().ends_with("4 nodes, 1 not healthy"), "{out}");
}
