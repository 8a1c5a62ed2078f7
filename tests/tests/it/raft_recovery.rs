//! Disaster recovery with real processes: two of three voters killed, a
//! replica promoted with `hoard promote --force` into a new epoch, the old
//! voters fenced (the survivor at once, the killed ones when they come
//! back), and `hoard rejoin` bringing each back as a voter of the new epoch.

use std::collections::BTreeMap;
use std::time::Duration;

use hoard_testkit::cluster::{
    assert_serves_all, client, status_of, upload, upload_ok, wait_converged, wait_for,
};
use hoard_testkit::voters::{Uploader, Voters};
use hoard_testkit::{sha256_hex, wheel, Node, NodeOpts};
use serde_json::{json, Value};

/// The Raft id the promoted replica takes: no voter ever had it.
const PROMOTED_ID: u64 = 4;

fn wait_fenced(node: &Node, epoch: u64) -> Value {
    wait_for(
        Duration::from_secs(30),
        &format!("{} reports that epoch {epoch} fenced it", node.opts.node_id),
        || {
            let s = status_of(node).ok()?;
            (s["health"] == "fenced" && s["fenced_by"]["epoch"].as_u64() == Some(epoch))
                .then_some(s)
        },
    )
}

/// Three voters, replicas `replica_ids` following them, and five uploads
/// of `project` applied on every node.
struct Outage {
    voters: Voters,
    leader: usize,
    replicas: Vec<Node>,
    token: String,
    expected: BTreeMap<String, String>,
}

fn outage(project: &str, replica_ids: &[&str]) -> Outage {
    let voters = Voters::start(3);
    let leader = voters.wait_leader(Duration::from_secs(20), None);
    let upstreams: Vec<String> = voters.nodes.iter().map(Node::grpc_addr).collect();
    let replicas: Vec<Node> = replica_ids
        .iter()
        .map(|id| Node::start(NodeOpts::replica(id, &upstreams)))
        .collect();
    let token = voters.nodes[leader].create_token("pypi", "upload");
    let http = client();
    let mut expected = BTreeMap::new();
    for i in 0..5 {
        let a = wheel(project, &format!("0.{i}"));
        upload_ok(&http, &voters.nodes[leader].url(), &token, &a);
        expected.insert(a.filename.clone(), sha256_hex(&a.bytes));
    }
    let nodes: Vec<&Node> = voters.nodes.iter().chain(&replicas).collect();
    wait_converged(&nodes, Duration::from_secs(30));
    Outage {
        voters,
        leader,
        replicas,
        token,
        expected,
    }
}

#[test]
fn a_replica_promoted_by_force_writes_and_the_old_voters_rejoin_after_hoard_rejoin() {
    let _heavy = hoard_testkit::heavy_test();
    // The second replica follows the voters only: it moves to the new
    // epoch once a voter of it serves the changelog.
    let Outage {
        mut voters,
        leader,
        replicas,
        token,
        mut expected,
    } = outage("dr-pkg", &["r1", "r2"]);
    let [replica, bystander] = <[Node; 2]>::try_from(replicas).ok().unwrap();
    let http = client();
    let old_epoch = status_of(&voters.nodes[leader]).unwrap()["epoch"]
        .as_u64()
        .unwrap();
    assert_eq!(old_epoch, 1);
    assert_eq!(status_of(&replica).unwrap()["epoch"], json!(old_epoch));

    // Two of three voters die, the leader among them: no quorum is left.
    let killed = [leader, (leader + 1) % 3];
    let survivor = (leader + 2) % 3;
    for &i in &killed {
        voters.nodes[i].kill9();
    }

    let promoting = std::time::Instant::now();
    let out = replica.cli_ok(&[
        "promote",
        &PROMOTED_ID.to_string(),
        "--force",
        "--url",
        &replica.url(),
        "--token",
        &replica.admin_token(),
    ]);
    eprintln!("promote --force: {out}");
    assert!(
        out.contains("leads epoch 2") && out.contains("up to serial"),
        "promote --force printed: {out}"
    );
    let s = status_of(&replica).unwrap();
    assert_eq!(s["role"], "leader", "{s:#}");
    assert_eq!(s["epoch"], 2, "{s:#}");
    assert_eq!(s["voters"], json!([PROMOTED_ID]), "{s:#}");
    assert_ne!(s["cluster_id"], json!(null));

    // The promoted replica takes writes, with the tokens it already held.
    for i in 0..3 {
        let a = wheel("dr-pkg", &format!("1.{i}"));
        upload_ok(&http, &replica.url(), &token, &a);
        expected.insert(a.filename.clone(), sha256_hex(&a.bytes));
        if i == 0 {
            eprintln!(
                "from `hoard promote --force` to the first acknowledged upload: {:?}",
                promoting.elapsed()
            );
        }
    }
    assert_serves_all(&replica, "dr-pkg", &expected);

    // The surviving voter is fenced, and sends writes to the new leader.
    wait_fenced(&voters.nodes[survivor], 2);
    // `hoard status` is the container health check: non-zero on the fenced
    // node, zero on the new leader.
    let fenced =
        voters.nodes[survivor].cli(&["status", "--node", "--url", &voters.nodes[survivor].url()]);
    assert_eq!(
        fenced.status.code(),
        Some(1),
        "hoard status of a fenced node: {fenced:?}"
    );
    assert!(
        String::from_utf8_lossy(&fenced.stderr).contains("health is fenced"),
        "hoard status of a fenced node: {fenced:?}"
    );
    replica.cli_ok(&["status", "--node", "--url", &replica.url()]);
    let redirected = wheel("dr-pkg", "9.9");
    let up = upload(&http, &voters.nodes[survivor].url(), &token, &redirected).unwrap();
    assert_eq!(up.status, 307, "a fenced voter answered {up:?}");
    assert!(
        up.location
            .as_deref()
            .is_some_and(|l| l.starts_with(&replica.url())),
        "a fenced voter redirected to {:?}",
        up.location
    );

    // The killed voters come back with their old state: they are refused
    // and fenced, and never lead the old epoch again.
    for &i in &killed {
        voters.nodes[i].restart();
    }
    for &i in &killed {
        let s = wait_fenced(&voters.nodes[i], 2);
        assert_eq!(s["epoch"], old_epoch, "{s:#}");
    }
    // They hold nothing of the new epoch before they rejoin.
    let new_serial = status_of(&replica).unwrap()["applied_serial"].clone();
    for node in &voters.nodes {
        let s = status_of(node).unwrap();
        assert!(s["applied_serial"].as_u64() < new_serial.as_u64(), "{s:#}");
    }

    // `hoard rejoin` resets each from the new leader; then they converge.
    for node in &voters.nodes {
        let out = node.cli_ok(&[
            "rejoin",
            "--url",
            &node.url(),
            "--token",
            &node.admin_token(),
            "--wait",
            "120",
        ]);
        eprintln!("rejoin {}: {out}", node.opts.node_id);
        assert!(
            out.contains("a voter of epoch 2 again"),
            "rejoin printed: {out}"
        );
    }
    let a = wheel("dr-pkg", "2.0");
    upload_ok(&http, &replica.url(), &token, &a);
    expected.insert(a.filename.clone(), sha256_hex(&a.bytes));

    let mut nodes: Vec<&Node> = voters.nodes.iter().collect();
    nodes.push(&replica);
    wait_converged(&nodes, Duration::from_secs(60));
    eprintln!("the old voters' logs on the new epoch:");
    for node in &voters.nodes {
        for line in node
            .log()
            .lines()
            .filter(|l| l.contains("fenced") || l.contains("rejoin"))
        {
            eprintln!("  {}: {line}", node.opts.node_id);
        }
    }
    for node in &nodes {
        assert_serves_all(node, "dr-pkg", &expected);
        let s = status_of(node).unwrap();
        assert_eq!(s["epoch"], 2, "{s:#}");
        assert_eq!(s["health"], "ok", "{s:#}");
        assert_eq!(s["voters"], json!([1, 2, 3, PROMOTED_ID]), "{s:#}");
        assert_eq!(s["leader_id"], json!(PROMOTED_ID), "{s:#}");
    }
    // The bystander replica goes on from its serial in the new epoch.
    let mut with_bystander = nodes.clone();
    with_bystander.push(&bystander);
    wait_converged(&with_bystander, Duration::from_secs(60));
    assert_serves_all(&bystander, "dr-pkg", &expected);
    let s = status_of(&bystander).unwrap();
    assert_eq!(
        (&s["epoch"], &s["health"]),
        (&json!(2), &json!("ok")),
        "{s:#}"
    );
    nodes.push(&bystander);

    // The redirected upload was never written anywhere.
    for node in &nodes {
        assert!(
            !hoard_testkit::cluster::served(node, "dr-pkg").contains_key(&redirected.filename),
            "{} lists the upload that a fenced voter redirected",
            node.opts.node_id
        );
    }
}

#[test]
fn a_replica_promoted_in_place_of_a_dead_voter_leads_and_no_upload_is_lost() {
    let _heavy = hoard_testkit::heavy_test();
    let mut voters = Voters::start(3);
    let leader = voters.wait_leader(Duration::from_secs(20), None);
    let upstreams: Vec<String> = voters.nodes.iter().map(Node::grpc_addr).collect();
    let replica = Node::start(NodeOpts::replica("r1", &upstreams));
    let first = &voters.nodes[leader];
    // Cluster-wide commands take a global admin token (replicated to all).
    let admin = first
        .cli_ok(&[
            "token",
            "create",
            "--perm",
            "admin",
            "--label",
            "on-call",
            "--url",
            &first.url(),
            "--token",
            &first.admin_token(),
        ])
        .trim()
        .to_owned();
    let token = first.create_token("pypi", "upload");
    let mut urls = voters.urls();
    urls.push(replica.url());
    let uploader = Uploader::start(urls, token, "handover-pkg");
    uploader.wait_acked(0, 10, Duration::from_secs(60));

    // A follower dies for good; the replica takes its place and leads.
    let dead = (leader + 1) % 3;
    voters.nodes[dead].kill9();
    let dead_id = (dead + 1).to_string();
    let out = replica.cli_ok(&[
        "promote",
        &PROMOTED_ID.to_string(),
        "--replace",
        &dead_id,
        "--url",
        &replica.url(),
        "--token",
        &admin,
        "--wait",
        "120",
    ]);
    eprintln!("promote: {out}");
    assert!(
        out.contains(&format!("node {PROMOTED_ID} leads now")),
        "{out}"
    );
    let before = uploader.acked();
    uploader.wait_acked(before, 10, Duration::from_secs(60));
    let log = uploader.finish();
    assert!(
        log.unexpected.is_empty(),
        "uploads got answers that are neither success nor retryable: {:#?}",
        log.unexpected
    );

    let live: Vec<&Node> = voters
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dead)
        .map(|(_, n)| n)
        .chain([&replica])
        .collect();
    wait_converged(&live, Duration::from_secs(60));
    let mut expected_voters: Vec<u64> = (1..=3).filter(|i| *i != dead as u64 + 1).collect();
    expected_voters.push(PROMOTED_ID);
    for node in &live {
        assert_serves_all(node, "handover-pkg", &log.acked);
        let s = status_of(node).unwrap();
        assert_eq!(s["leader_id"], json!(PROMOTED_ID), "{s:#}");
        assert_eq!(s["voters"], json!(expected_voters), "{s:#}");
        assert_eq!(s["epoch"], 1, "{s:#}");
    }
}

/// POSTs a node-local admin endpoint; it answers 202 and restarts.
fn post_local(node: &Node, endpoint: &str, body: Value) -> Value {
    let resp = node
        .http()
        .post(format!("{}/+admin/local/{endpoint}", node.url()))
        .bearer_auth(node.admin_token())
        .json(&body)
        .send()
        .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    assert_eq!(status, 202, "{endpoint} answered {status}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn kill_9_right_after_a_forced_promotion_or_a_rejoin_is_accepted_loses_nothing() {
    let _heavy = hoard_testkit::heavy_test();
    let Outage {
        mut voters,
        leader,
        replicas,
        token,
        mut expected,
    } = outage("crash-pkg", &["r1"]);
    let mut replica = replicas.into_iter().next().unwrap();
    let http = client();
    let killed = [leader, (leader + 1) % 3];
    for &i in &killed {
        voters.nodes[i].kill9();
    }

    // The forced promotion is accepted, and the process dies somewhere in
    // its restart: the next start finishes the new epoch.
    post_local(&replica, "force-promote", json!({ "id": PROMOTED_ID }));
    std::thread::sleep(Duration::from_millis(60));
    replica.kill9();
    replica.restart();
    wait_for(Duration::from_secs(30), "the replica leads epoch 2", || {
        let s = status_of(&replica).ok()?;
        (s["role"] == "leader" && s["epoch"] == 2).then_some(())
    });
    let a = wheel("crash-pkg", "1.0");
    upload_ok(&http, &replica.url(), &token, &a);
    expected.insert(a.filename.clone(), sha256_hex(&a.bytes));

    // One lost voter is prepared while it is stopped: it joins the new
    // epoch at its next start, without running the old one first.
    let prepared = killed[1];
    let config = voters.nodes[prepared].config_path();
    let out = voters.nodes[prepared].cli_ok(&[
        "rejoin",
        "--config",
        config.to_str().unwrap(),
        "--leader",
        &replica.url(),
    ]);
    assert!(
        out.contains("will join epoch 2"),
        "rejoin --leader printed: {out}"
    );
    for &i in &killed {
        voters.nodes[i].restart();
    }
    // The others are fenced and rejoin while they run; a rejoin is
    // accepted and the process dies in its reset or catch-up, each at
    // another point: the next start resets (or goes on) and joins.
    for (i, (node, delay_ms)) in voters.nodes.iter_mut().zip([0, 40, 150]).enumerate() {
        if i == prepared {
            continue;
        }
        wait_fenced(node, 2);
        post_local(node, "rejoin", json!({}));
        std::thread::sleep(Duration::from_millis(delay_ms));
        node.kill9();
        node.restart();
    }
    let mut nodes: Vec<&Node> = voters.nodes.iter().collect();
    nodes.push(&replica);
    wait_for(
        Duration::from_secs(60),
        "every old voter votes again",
        || {
            nodes
                .iter()
                .all(|n| {
                    status_of(n).is_ok_and(|s| {
                        s["voters"] == json!([1, 2, 3, PROMOTED_ID]) && s.get("pending").is_none()
                    })
                })
                .then_some(())
        },
    );
    wait_converged(&nodes, Duration::from_secs(60));
    for node in &nodes {
        assert_serves_all(node, "crash-pkg", &expected);
        let s = status_of(node).unwrap();
        assert_eq!(
            (&s["epoch"], &s["health"]),
            (&json!(2), &json!("ok")),
            "{s:#}"
        );
    }
    assert!(
        !voters.nodes[prepared].log().contains("fenced:"),
        "the voter prepared while stopped ran the old epoch and was fenced"
    );
}
