//! TLS: node-to-node mutual TLS with a cluster CA made by `hoard cert`
//! (peers without a certificate from it, with one from another CA, or
//! one that `allowed_nodes` no longer lists, get nothing: no changelog,
//! no blob, no Raft), three Raft voters over it, the
//! loopback-only default without it, and HTTPS for pip, uv, twine and npm
//! with the cluster CA as their CA bundle.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hoard_testkit::cluster::{wait_applied, wait_converged, wait_for};
use hoard_testkit::node::{describe_failure, run_ok};
use hoard_testkit::npm::{Npm, NPM_REPO};
use hoard_testkit::tls::{NodeCert, TestCa};
use hoard_testkit::tools::{hoard_bin, isolate_python_env, py_tools};
use hoard_testkit::voters::{admin_post, Voters};
use hoard_testkit::{wheel, Node, NodeOpts, RepoSpec, Upload};
use serde_json::json;

/// A replica of `leader` with these TLS settings.
fn replica(id: &str, leader: &Node, tls: Option<(&hoard_testkit::tls::NodeCert, &[&str])>) -> Node {
    let mut opts = NodeOpts::replica(id, &[leader.grpc_addr()]);
    if let Some((cert, allowed)) = tls {
        opts = opts.cluster_tls(cert, allowed);
    }
    Node::start(opts)
}

/// How many times the leader's log says `what`.
fn said(leader: &Node, what: &str) -> usize {
    leader.log().matches(what).count()
}

/// The leader refuses `replica` (its log says `leader_says` more often
/// than the `before` times it did), and the replica applies nothing.
fn assert_refused(leader: &Node, replica: &Node, leader_says: &str, before: usize) {
    wait_for(Duration::from_secs(20), leader_says, || {
        (said(leader, leader_says) > before).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(replica.serial(), 0, "a refused replica applied events");
    let status = replica.status();
    assert_ne!(status["upstream_connected"], true, "{status}");
}

#[test]
fn only_nodes_with_a_certificate_from_the_cluster_ca_replicate() {
    let ca = TestCa::new();
    let leader =
        Node::start(NodeOpts::default().cluster_tls(&ca.issue("n1"), &["n1", "r1", "liar"]));
    let token = leader.create_token("pypi", "upload");
    let a = wheel("over-tls", "1.0");
    leader.upload_ok("pypi", &token, &Upload::of(&a));

    // A replica with its own certificate from the cluster CA: it
    // subscribes, fetches the blob, and serves the file.
    let good = replica("r1", &leader, Some((&ca.issue("r1"), &[])));
    wait_applied(&good, leader.serial(), Duration::from_secs(30));
    let page = good.get("/pypi/simple/over-tls/").text().unwrap();
    assert!(page.contains(&a.filename), "{page}");

    // No certificate at all: refused at the handshake.
    let refused = "refused a node-to-node connection";
    let before = said(&leader, refused);
    let plain = replica("r2", &leader, None);
    assert_refused(&leader, &plain, refused, before);
    drop(plain);

    // A certificate from another CA, in the name of an allowed node.
    let other = TestCa::new();
    let before = said(&leader, refused);
    let forged = replica("r1", &leader, Some((&other.issue("r1"), &[])));
    assert_refused(&leader, &forged, refused, before);
    assert!(
        forged.log().contains("invalid peer certificate"),
        "{}",
        forged.log_tail(20)
    );
    drop(forged);

    // A valid certificate that allowed_nodes does not list (a removed node).
    let removed = replica("r3", &leader, Some((&ca.issue("r3"), &[])));
    assert_refused(&leader, &removed, "\"r3\" is not in allowed_nodes", 0);
    drop(removed);

    // A node that claims to be another one than its certificate says.
    let liar_cert = ca.issue("liar");
    let liar =
        Node::start(NodeOpts::replica("r1", &[leader.grpc_addr()]).cluster_tls(&liar_cert, &[]));
    assert_refused(
        &leader,
        &liar,
        "refused a subscriber that names another node",
        0,
    );

    // The good replica was never held up by the others.
    let b = wheel("over-tls", "2.0");
    leader.upload_ok("pypi", &token, &Upload::of(&b));
    wait_applied(&good, leader.serial(), Duration::from_secs(30));
}

#[test]
fn without_cluster_tls_grpc_stays_on_loopback_unless_insecure_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exposed.toml");
    std::fs::write(
        &config,
        format!(
            "grpc_listen = \"0.0.0.0:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let mut cmd = Command::new("timeout");
    cmd.arg("30")
        .arg(hoard_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("HOARD_INSECURE_CLUSTER");
    let out = cmd.output().expect("run hoard serve");
    assert!(!out.status.success(), "{}", describe_failure(&cmd, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("insecure_cluster"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "it opened its data dir");

    // Said explicitly, it runs, and says what it is doing.
    let node = Node::start(
        NodeOpts::default()
            .env("HOARD_GRPC_LISTEN", "0.0.0.0:0")
            .top_level("insecure_cluster = true"),
    );
    assert!(
        node.log().contains("node-to-node traffic is plaintext"),
        "{}",
        node.log_tail(20)
    );
}

#[test]
fn pip_uv_twine_and_npm_work_over_https_with_the_cluster_ca() {
    let ca = TestCa::new();
    let cert = ca.issue("n1");
    let ca_pem = ca.ca_pem();
    let node = Node::start(
        NodeOpts::default()
            .repo(RepoSpec::pypi("pypi"))
            .repo(RepoSpec::npm(NPM_REPO))
            .https(&cert),
    );
    assert!(node.url().starts_with("https://"));
    let token = node.create_token("pypi", "upload");
    let a = wheel("secure-demo", "1.0.0");
    let dir = tempfile::tempdir().unwrap();
    let path = a.write_to(dir.path());

    let tools = py_tools();
    let mut cmd = Command::new(&tools.twine);
    isolate_python_env(&mut cmd)
        .arg("upload")
        .arg("--repository-url")
        .arg(format!("{}/pypi/", node.url()))
        .args(["-u", "__token__", "-p", &token])
        .args(["--non-interactive", "--disable-progress-bar", "--cert"])
        .arg(&ca_pem)
        .arg(&path);
    let out = cmd.output().expect("run twine");
    assert!(out.status.success(), "{}", describe_failure(&cmd, &out));

    let index = format!("{}/pypi/simple/", node.url());
    let pip_dest = dir.path().join("pip");
    let mut cmd = Command::new(tools.venv.join("bin").join("python"));
    isolate_python_env(&mut cmd)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--cert",
        ])
        .arg(&ca_pem)
        .arg("--index-url")
        .arg(&index)
        .arg("--dest")
        .arg(&pip_dest)
        .arg("secure-demo==1.0.0");
    run_ok(&mut cmd);
    assert!(pip_dest.join(&a.filename).exists());

    // uv reads the CA bundle from SSL_CERT_FILE.
    let venv = dir.path().join("uv-venv");
    let mut cmd = Command::new(&tools.uv);
    isolate_python_env(&mut cmd).arg("venv").arg(&venv);
    run_ok(&mut cmd);
    let mut cmd = Command::new(&tools.uv);
    isolate_python_env(&mut cmd)
        .env("SSL_CERT_FILE", &ca_pem)
        .env("VIRTUAL_ENV", &venv)
        .args(["pip", "install", "--no-cache", "--index-url"])
        .arg(&index)
        .arg("secure-demo==1.0.0");
    run_ok(&mut cmd);

    // npm with --cafile: publish and install.
    let npm_token = node.create_token(NPM_REPO, "upload");
    let mut npm = Npm::with_token(&node, &npm_token);
    let cafile = format!("--cafile={}", ca_pem.display());
    let pkg = npm.package("hoard-secure-pkg", "1.0.0", &[], "");
    let out = npm.run(&pkg, &["publish", &cafile]);
    assert!(out.success(), "{out}");
    let project = npm.project();
    let out = npm.run(&project, &["install", "hoard-secure-pkg", &cafile]);
    assert!(out.success(), "{out}");

    // Without the CA, clients refuse the certificate.
    let out = npm.run(
        &project,
        &[
            "view",
            "hoard-secure-pkg",
            "version",
            "--fetch-retries=0",
            "--prefer-online",
        ],
    );
    assert!(
        !out.success(),
        "npm trusted a certificate it had no CA for: {out}"
    );

    // SIGHUP reloads the certificate; connections keep being served.
    let pid = node.pid().expect("running") as i32;
    // SAFETY: kill(2) with a pid we started and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for(Duration::from_secs(10), "the reload", || {
        node.log()
            .contains("reloaded the HTTPS certificate")
            .then_some(())
    });
    assert_eq!(node.get("/+status").status().as_u16(), 200);
}

/// Calls `service/method` on a node's gRPC port with curl (a real TLS and
/// HTTP/2 client) presenting `cert`, if any. `Ok(http status)` once the
/// connection went through, `Err(curl's message)` when it was refused.
fn grpc_call(
    node: &Node,
    ca: &Path,
    cert: Option<&NodeCert>,
    method: &str,
) -> Result<String, String> {
    let empty = node.root().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    grpc_call_with(node, ca, cert, method, &empty, &[])
}

/// The protobuf `RaftRequest { json }`.
fn raft_request(json: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0a];
    let mut len = json.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(json);
    out
}

/// A gRPC message frame: uncompressed, length-prefixed.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// [`grpc_call`] with the request body in the file `body`, and `headers`
/// (gRPC metadata, `name: value`).
fn grpc_call_with(
    node: &Node,
    ca: &Path,
    cert: Option<&NodeCert>,
    method: &str,
    body: &Path,
    headers: &[String],
) -> Result<String, String> {
    let url = format!("https://{}/hoard.v1.{method}", node.grpc_addr());
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http2", "--max-time", "10", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("--cacert")
        .arg(ca);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    if let Some(cert) = cert {
        cmd.arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key);
    }
    let out = cmd.arg(&url).output().expect("run curl");
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && code != "000" {
        Ok(code)
    } else {
        Err(format!(
            "curl {url}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn raft_voters_talk_over_mutual_tls_and_refuse_peers_without_a_cluster_certificate() {
    let _heavy = hoard_testkit::heavy_test();
    let ca = TestCa::new();
    // `probe` is this test, calling the voters' services as a member would.
    let names = ["v1", "v2", "v3", "probe"];
    let mut voters = Voters::start_with(3, |i, opts| {
        opts.cluster_tls(&ca.issue(&format!("v{i}")), &names)
    });
    let leader = voters.wait_leader(Duration::from_secs(30), None);
    let token = voters.nodes[leader].create_token("pypi", "upload");
    let a = wheel("raft-over-tls", "1.0");
    voters.nodes[leader].upload_ok("pypi", &token, &Upload::of(&a));
    let nodes: Vec<&Node> = voters.nodes.iter().collect();
    wait_converged(&nodes, Duration::from_secs(30));

    // An election over TLS: kill -9 of the leader, a new one takes writes.
    voters.nodes[leader].kill9();
    let new_leader = voters.wait_leader(Duration::from_secs(30), Some(leader));
    let b = wheel("raft-over-tls", "2.0");
    voters.nodes[new_leader].upload_ok("pypi", &token, &Upload::of(&b));
    voters.nodes[leader].restart();
    let nodes: Vec<&Node> = voters.nodes.iter().collect();
    wait_converged(&nodes, Duration::from_secs(60));
    for node in &nodes {
        let page = node.get("/pypi/simple/raft-over-tls/").text().unwrap();
        assert!(page.contains(&b.filename), "{page}");
    }

    // Raft, changelog and blob RPCs, straight at a voter's gRPC port.
    let voter = &voters.nodes[(new_leader + 1) % 3];
    let member = ca.issue("probe");
    let other_ca = TestCa::new();
    let forged = other_ca.issue("v2");
    let removed = ca.issue("v9");
    for method in [
        "Raft/Vote",
        "Raft/AppendEntries",
        "Changelog/Subscribe",
        "Blobs/Get",
    ] {
        // The control: a member's certificate gets through to the service.
        let through = grpc_call(voter, &ca.ca_pem(), Some(&member), method);
        assert_eq!(
            through.as_deref(),
            Ok("200"),
            "{method} with a member's certificate"
        );
        for (what, cert) in [
            ("no certificate", None),
            ("a certificate from another CA", Some(&forged)),
            ("a certificate allowed_nodes does not list", Some(&removed)),
        ] {
            let refused = grpc_call(voter, &ca.ca_pem(), cert, method);
            assert!(
                refused.is_err(),
                "{method} with {what} got through: {refused:?}"
            );
        }
    }
    assert!(
        voter.log().contains("refused a node-to-node connection"),
        "{}",
        voter.log_tail(20)
    );

    // A member's certificate speaks only for that member: `probe`,
    // appending entries as the leader, is refused.
    let status = voters.nodes[new_leader].status();
    let ae = json!({
        "vote": {"leader_id": {"term": status["term"], "node_id": new_leader + 1}, "committed": true},
        "prev_log_id": null, "entries": [], "leader_commit": null,
    })
    .to_string();
    let frame = grpc_frame(&raft_request(ae.as_bytes()));
    let body = voter.root().join("append-entries.bin");
    std::fs::write(&body, frame).unwrap();
    // The cluster's id and epoch, as members send them.
    let identity = [
        format!(
            "x-hoard-cluster: {}",
            status["cluster_id"].as_str().unwrap()
        ),
        format!("x-hoard-epoch: {}", status["epoch"]),
    ];
    let answer = grpc_call_with(
        voter,
        &ca.ca_pem(),
        Some(&member),
        "Raft/AppendEntries",
        &body,
        &identity,
    );
    assert_eq!(answer.as_deref(), Ok("200"));
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        voter
            .log()
            .contains("refused a Raft call from a node that speaks for another member")
            .then_some(())
    });
    // With cluster TLS, a member cannot be added unbound.
    let unbound = admin_post(
        &voters.nodes[new_leader],
        "members/add",
        &json!({"id": 9, "grpc_addr": "127.0.0.1:1", "http_url": "http://127.0.0.1:1"}),
    );
    assert!(
        unbound.as_ref().is_err_and(|e| e.contains("--node-id")),
        "{unbound:?}"
    );
    // The group is unharmed.
    let c = wheel("raft-over-tls", "3.0");
    let leader = voters.wait_leader(Duration::from_secs(30), None);
    voters.nodes[leader].upload_ok("pypi", &token, &Upload::of(&c));
}
