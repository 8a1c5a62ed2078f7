//! Read replicas (issue 4): a primary and replicas as real processes, the
//! changelog followed over gRPC (directly and through another replica),
//! reads on replicas, writes sent to a replica, `X-Hoard-Min-Serial`,
//! restarts of the primary, and `hoard demo`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoard_testkit::artifacts::{module_name, normalize, WheelSpec};
use hoard_testkit::cluster::{
    self, assert_serves_exactly, listed, status_of, upload_ok, wait_applied, wait_for,
};
use hoard_testkit::demo::{pid_gone, Demo};
use hoard_testkit::node::{describe_failure, run_ok};
use hoard_testkit::tools::isolate_python_env;
use hoard_testkit::{sha256_hex, wheel, Artifact, Cluster, Node, NodeOpts};

use crate::pypi_clients::{fresh_venv, imported_version, twine_upload};

const CONVERGE: Duration = Duration::from_secs(60);

/// `filename → sha256` of artifacts.
fn expected(files: &[Artifact]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|a| (a.filename.clone(), a.sha256()))
        .collect()
}

/// Done when: a primary and two replicas, B following A (with the primary as
/// B's second upstream); 200 uploads to the primary are listed and served
/// on both replicas, pip installs from B, and all three digests match.
#[test]
fn chained_replicas_serve_200_uploads_and_pip_installs_from_the_second() {
    let c = Cluster::start(2, true, |_, o| o);
    let (p, a, b) = (&c.primary, &c.replicas[0], &c.replicas[1]);
    let token = p.create_token("pypi", "upload");
    let name = "Chain_Pkg";
    let project = normalize(name);
    let files: Vec<Artifact> = (0..200).map(|i| wheel(name, &format!("1.0.{i}"))).collect();

    let t = Instant::now();
    let http = cluster::client();
    let mut last = 0;
    for f in &files {
        let serial = upload_ok(&http, &p.url(), &token, f);
        assert!(
            serial > last,
            "upload serials must increase: {serial} after {last}"
        );
        last = serial;
    }
    eprintln!("200 uploads in {:?}", t.elapsed());
    let (serial, digest) = c.wait_converged(CONVERGE);
    eprintln!(
        "converged at serial {serial} ({:?} after the start)",
        t.elapsed()
    );
    assert!(serial >= last);

    // B really follows A, and both say they are healthy and caught up.
    let sa = a.status();
    let sb = b.status();
    for (s, upstream) in [(&sa, p.grpc_addr()), (&sb, a.grpc_addr())] {
        assert_eq!(s["role"], "replica", "{s:#}");
        assert_eq!(s["upstream"], upstream.as_str(), "{s:#}");
        assert_eq!(s["health"], "ok", "{s:#}");
        assert!(s["problem"].is_null(), "{s:#}");
        assert_eq!(s["lag_events"], 0, "{s:#}");
        assert_eq!(s["pending_blobs"], 0, "{s:#}");
        assert_eq!(s["leader_url"], p.url().as_str(), "{s:#}");
        assert_eq!(s["digest"], digest.as_str());
    }
    let sp = p.status();
    assert_eq!(sp["role"], "leader");
    assert_eq!(sp["digest"], digest.as_str());
    assert_eq!(sp["counts"]["files"], sb["counts"]["files"]);

    let want = expected(&files);
    for node in [p, a, b] {
        assert_serves_exactly(node, &project, &want);
    }
    // Reads answer like the primary's, except for host-dependent URLs.
    for path in [
        format!("/pypi/simple/{project}/"),
        "/pypi/simple/".to_string(),
    ] {
        let on_p = p.get(&path).text().unwrap().replace(&p.url(), "URL");
        let on_b = b.get(&path).text().unwrap().replace(&b.url(), "URL");
        assert_eq!(
            on_b, on_p,
            "{path} differs between the primary and replica B"
        );
    }

    // pip, in a fresh venv, from replica B.
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    fresh_venv(&venv, true);
    let mut cmd = Command::new(venv.join("bin").join("python"));
    isolate_python_env(&mut cmd)
        .args(["-m", "pip", "install", "--no-cache-dir", "--index-url"])
        .arg(format!("{}/pypi/simple/", b.url()))
        .arg(name);
    run_ok(&mut cmd);
    assert_eq!(imported_version(&venv, &module_name(name)), "1.0.199");
    // pip's reads changed nothing anywhere.
    assert_eq!(c.wait_converged(CONVERGE), (serial, digest));
}

/// Done when: a restart of the primary (graceful, then kill -9, on the same
/// ports): the replicas keep serving meanwhile, reconnect, and go on.
#[test]
fn replicas_reconnect_after_the_primary_restarts() {
    let mut c = Cluster::start(2, false, |_, o| o);
    let token = c.primary.create_token("pypi", "upload");
    let name = "restart-primary-pkg";
    let http = cluster::client();
    let mut files = vec![wheel(name, "1.0.0")];
    upload_ok(&http, &c.primary.url(), &token, &files[0]);
    c.wait_converged(CONVERGE);

    for (round, graceful) in [(1, true), (2, false)] {
        if graceful {
            let (by_itself, status) = c.primary.stop();
            assert!(
                by_itself && status.success(),
                "the primary's SIGTERM exit: {status}"
            );
        } else {
            c.primary.kill9();
        }
        // The replicas notice, and keep serving what they have.
        for r in &c.replicas {
            wait_for(
                Duration::from_secs(15),
                "upstream_connected turns false",
                || {
                    status_of(r)
                        .ok()
                        .filter(|s| s["upstream_connected"] == false)
                },
            );
            assert_serves_exactly(r, name, &expected(&files));
        }
        c.primary.restart();
        let a = wheel(name, &format!("{}.0.0", round + 1));
        let serial = upload_ok(&http, &c.primary.url(), &token, &a);
        files.push(a);
        for r in &c.replicas {
            let s = wait_applied(r, serial, Duration::from_secs(30));
            assert_eq!(s["upstream_connected"], true, "{s:#}");
        }
        c.wait_converged(CONVERGE);
        for r in &c.replicas {
            assert_serves_exactly(r, name, &expected(&files));
        }
        eprintln!(
            "round {round} ({}): replicas went on",
            if graceful { "SIGTERM" } else { "kill -9" }
        );
    }
}

/// A proxying replica whose primary answers a write with a redirect (it no
/// longer leads, or `primary_url` names a follower) cannot send the body
/// again: it answers 503 with Retry-After and says why, instead of passing
/// on a 307 that twine and npm do not follow for an upload. Here its
/// `primary_url` names a redirecting replica, which answers every write so.
#[test]
fn a_proxied_write_that_meets_a_redirect_is_503_and_stores_nothing() {
    let p = Node::start(NodeOpts {
        node_id: "proxy-p".into(),
        ..NodeOpts::default()
    });
    let redirecting = Node::start(NodeOpts::replica("proxy-r1", &[p.grpc_addr()]));
    let proxying = Node::start(
        NodeOpts::replica("proxy-r2", &[p.grpc_addr()])
            .config("replica_writes = \"proxy\"")
            .config(format!("primary_url = {:?}", redirecting.url())),
    );
    let token = p.create_token("pypi", "upload");
    let before = p.serial();
    let http = cluster::client();
    let up = cluster::upload(&http, &proxying.url(), &token, &wheel("bounced", "1.0")).unwrap();
    assert_eq!(up.status, 503, "{}", up.body);
    assert!(
        up.body.contains("is not the leader") && up.body.contains("retry"),
        "{}",
        up.body
    );
    assert_eq!(p.serial(), before, "nothing was stored");
}

/// Done when: a write sent to a replica reaches the primary: `307` to the
/// primary's URL (the same path and query) that a client can re-send; and
/// twine through a replica in proxy mode, after which that replica lists the
/// file at once (read-your-writes).
#[test]
fn writes_sent_to_a_replica_reach_the_primary() {
    let c = Cluster::start(2, false, |i, o| {
        if i == 1 {
            o.config("replica_writes = \"proxy\"")
        } else {
            o
        }
    });
    let (p, redirecting, proxying) = (&c.primary, &c.replicas[0], &c.replicas[1]);
    let token = p.create_token("pypi", "upload");
    let name = "forwarded-pkg";
    let http = cluster::client();
    // Both replicas know the primary (from the heartbeats).
    c.wait_converged(CONVERGE);

    // Redirect mode: 307 with Location, nothing stored on the way.
    let a = wheel(name, "1.0.0");
    let up = cluster::upload(&http, &redirecting.url(), &token, &a).unwrap();
    assert_eq!(
        up.status, 307,
        "upload to a redirecting replica: {}",
        up.body
    );
    let location = up.location.expect("307 without Location");
    assert_eq!(location, format!("{}/pypi/", p.url()));
    assert_eq!(p.serial(), redirecting.serial(), "the 307 wrote nothing");
    let serial = upload_ok(&http, &location, &token, &a);
    wait_applied(redirecting, serial, Duration::from_secs(30));
    assert_serves_exactly(redirecting, name, &expected(std::slice::from_ref(&a)));
    // The query string is kept too, and any non-GET/HEAD method redirects.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let resp = http
            .request(
                method.parse().unwrap(),
                format!("{}/pypi/?x=1&y=%2F", redirecting.url()),
            )
            .body("")
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 307, "{method} on a replica");
        assert_eq!(
            resp.headers()["location"].to_str().unwrap(),
            format!("{}/pypi/?x=1&y=%2F", p.url()),
            "{method} on a replica"
        );
    }

    // Proxy mode, with twine (which does not follow redirects).
    let b = wheel(name, "2.0.0");
    let dir = tempfile::tempdir().unwrap();
    let path = b.write_to(dir.path());
    let out = twine_upload(proxying, &token, &[&path]);
    assert!(
        out.status.success(),
        "twine through a proxying replica: {}",
        describe_failure(&Command::new("twine"), &out)
    );
    // At once, without waiting: the replica answered only after applying.
    let files = listed(proxying.http(), &proxying.url(), name).unwrap();
    assert!(
        files.iter().any(|f| f.filename == b.filename),
        "right after twine's upload through it, the proxying replica does not list {}",
        b.filename
    );
    let both = expected(&[a, b]);
    assert_serves_exactly(proxying, name, &both);
    assert_serves_exactly(p, name, &both);
    c.wait_converged(CONVERGE);
    assert_serves_exactly(redirecting, name, &both);
}

/// Done when: `X-Hoard-Min-Serial` gives read-your-writes on a replica, and
/// a serial that does not come answers `503` with `Retry-After` after
/// `min_serial_wait_secs`.
#[test]
fn min_serial_header_gives_read_your_writes_on_a_replica() {
    let wait_1s = |o: NodeOpts| o.config("min_serial_wait_secs = 1");
    let c = Cluster::start_with(wait_1s(NodeOpts::default()), 1, false, |_, o| wait_1s(o));
    let (p, r) = (&c.primary, &c.replicas[0]);
    let token = p.create_token("pypi", "upload");
    let name = "ryw-pkg";
    let http = cluster::client();
    let mut files = Vec::new();
    for i in 0..10 {
        // Some padding, so that the replica has a blob to fetch.
        let a = WheelSpec::new(name, &format!("1.{i}"))
            .padding(256 << 10, i)
            .build();
        let serial = upload_ok(&http, &p.url(), &token, &a);
        let resp = http
            .get(format!("{}/pypi/simple/{name}/", r.url()))
            .header("accept", cluster::JSON_TYPE)
            .header("x-hoard-min-serial", serial.to_string())
            .send()
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "GET with X-Hoard-Min-Serial {serial}"
        );
        let seen = hoard_testkit::node::serial_header(&resp).unwrap();
        assert!(
            seen >= serial,
            "X-Hoard-Serial {seen} < the {serial} asked for"
        );
        let page: serde_json::Value = resp.json().unwrap();
        let file = page["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["filename"] == a.filename.as_str())
            .unwrap_or_else(|| panic!("{} not listed at serial {serial}: {page}", a.filename));
        let url = reqwest::Url::parse(&format!("{}/pypi/simple/{name}/", r.url()))
            .unwrap()
            .join(file["url"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            sha256_hex(&cluster::download(&http, &url).unwrap()),
            a.sha256()
        );
        files.push(a);
    }

    // A serial that does not come: 503 + Retry-After after about 1 s, on
    // the replica and on the primary alike.
    let far = p.serial() + 1000;
    for node in [r, p] {
        let t = Instant::now();
        let resp = http
            .get(format!("{}/pypi/simple/{name}/", node.url()))
            .header("x-hoard-min-serial", far.to_string())
            .send()
            .unwrap();
        let waited = t.elapsed();
        assert_eq!(
            resp.status().as_u16(),
            503,
            "{}: min serial {far}",
            node.opts.node_id
        );
        let retry = resp
            .headers()
            .get("retry-after")
            .unwrap_or_else(|| panic!("{}: 503 without Retry-After", node.opts.node_id));
        assert!(
            retry.to_str().unwrap().trim().parse::<u64>().is_ok(),
            "Retry-After {retry:?}"
        );
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{}: waited {waited:?} for min_serial_wait_secs = 1",
            node.opts.node_id
        );
    }
    assert_serves_exactly(r, name, &expected(&files));
}

/// Done when: across 1,000 uploads, a download from a replica made the
/// moment a file appears in the replica's listing never fails (a node never
/// lists a file that it cannot serve).
#[test]
fn a_file_listed_on_a_replica_downloads_at_once_across_1000_uploads() {
    let _heavy = hoard_testkit::heavy_test();
    const UPLOADS: usize = 1000;
    let c = Cluster::start(1, false, |_, o| o);
    let (p, r) = (&c.primary, &c.replicas[0]);
    let token = p.create_token("pypi", "upload");
    let name = "poll-pkg";
    let files: Vec<Artifact> = (0..UPLOADS)
        .map(|i| wheel(name, &format!("0.{i}")))
        .collect();
    let want = Arc::new(expected(&files));
    let done = Arc::new(AtomicBool::new(false));

    let poller = {
        let (want, done, base) = (want.clone(), done.clone(), r.url());
        std::thread::spawn(move || {
            let http = cluster::client();
            let mut seen = BTreeSet::new();
            let mut failures = Vec::new();
            let mut polls = 0u64;
            let mut done_at = None;
            while seen.len() < want.len() {
                if done.load(Ordering::SeqCst) && done_at.is_none() {
                    done_at = Some(Instant::now());
                }
                if done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
                    break;
                }
                polls += 1;
                let files = match listed(&http, &base, name) {
                    Ok(f) => f,
                    Err(e) => {
                        failures.push(format!("listing: {e:#}"));
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                for f in files {
                    if seen.contains(&f.filename) {
                        continue;
                    }
                    match cluster::download(&http, &f.url) {
                        Ok(bytes) if Some(&sha256_hex(&bytes)) == want.get(&f.filename) => {}
                        Ok(bytes) => failures.push(format!(
                            "{}: {} bytes with sha256 {}, uploaded {:?}",
                            f.filename,
                            bytes.len(),
                            sha256_hex(&bytes),
                            want.get(&f.filename)
                        )),
                        Err(e) => failures.push(format!("{}: {e:#}", f.filename)),
                    }
                    seen.insert(f.filename);
                }
            }
            (seen, failures, polls)
        })
    };

    let t = Instant::now();
    let http = cluster::client();
    for f in &files {
        upload_ok(&http, &p.url(), &token, f);
    }
    done.store(true, Ordering::SeqCst);
    eprintln!("{UPLOADS} uploads in {:?}", t.elapsed());
    let (seen, failures, polls) = poller.join().unwrap();
    eprintln!(
        "the poller saw {} files in {polls} polls, {} failures, {:?} after the first upload",
        seen.len(),
        failures.len(),
        t.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} downloads of just-listed files failed on the replica, e.g. {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let seen_all: BTreeSet<String> = want.keys().cloned().collect();
    assert_eq!(
        seen.len(),
        UPLOADS,
        "the replica never listed {:?}",
        seen_all.difference(&seen).take(10).collect::<Vec<_>>()
    );
    c.wait_converged(CONVERGE);
}

/// `hoard demo --voters 1 --replicas 2 --dir D`: cluster.json with three
/// working nodes, an upload to the primary reaches both replicas, and
/// SIGTERM stops every child.
#[test]
fn hoard_demo_starts_a_primary_and_two_replicas_and_stops_them() {
    let mut demo = Demo::start(1, 2);
    let nodes = demo.nodes.clone();
    assert_eq!(nodes.len(), 3, "{nodes:#?}");
    let roles: Vec<&str> = nodes.iter().map(|n| n["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["voter", "replica", "replica"], "{nodes:#?}");
    let http = cluster::client();
    for n in &nodes {
        for key in ["id", "http_url", "grpc_addr", "data_dir", "admin_token"] {
            assert!(
                n[key].as_str().is_some_and(|v| !v.is_empty()),
                "cluster.json node without {key}: {n}"
            );
        }
        assert!(Path::new(n["data_dir"].as_str().unwrap()).is_dir(), "{n}");
        let pid = n["pid"].as_u64().unwrap() as u32;
        assert!(!pid_gone(pid), "pid {pid} of {n} is not running");
        let status: serde_json::Value = http
            .get(format!("{}/+status", n["http_url"].as_str().unwrap()))
            .send()
            .unwrap()
            .json()
            .unwrap();
        // A voter's status says which kind of voter it is right now.
        let expected = match n["role"].as_str() {
            Some("voter") => "leader",
            other => other.unwrap_or_default(),
        };
        assert_eq!(status["role"], expected, "{status:#}");
    }
    let primary = nodes[0]["http_url"].as_str().unwrap();

    // An upload token from the primary's admin API, with its admin token.
    let out = run_ok(
        Command::new(hoard_testkit::tools::hoard_bin())
            .args([
                "token", "create", "--repo", "pypi", "--perm", "upload", "--label", "t",
            ])
            .args(["--url", primary, "--token"])
            .arg(nodes[0]["admin_token"].as_str().unwrap())
            .env_remove("HOARD_TOKEN"),
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let a = wheel("demo-cluster-pkg", "1.0.0");
    let serial = upload_ok(&http, primary, &token, &a);
    for n in &nodes[1..] {
        let url = n["http_url"].as_str().unwrap();
        let files = wait_for(
            Duration::from_secs(30),
            "the upload shows on a demo replica",
            || {
                let resp = http
                    .get(format!("{url}/+status"))
                    .send()
                    .ok()?
                    .json::<serde_json::Value>()
                    .ok()?;
                (resp["applied_serial"].as_u64()? >= serial)
                    .then(|| listed(&http, url, "demo-cluster-pkg").unwrap())
            },
        );
        assert_eq!(files.len(), 1, "{url}");
        let bytes = cluster::download(&http, &files[0].url).unwrap();
        assert_eq!(sha256_hex(&bytes), a.sha256(), "{url}");
    }

    // SIGTERM to the demo: it exits, and so does every child.
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(demo.child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = wait_for(
        Duration::from_secs(20),
        "hoard demo exits after SIGTERM",
        || demo.child.try_wait().unwrap(),
    );
    eprintln!("hoard demo exited with {status}");
    let pids = demo.pids();
    wait_for(
        Duration::from_secs(10),
        "every node of the demo is gone after SIGTERM",
        || pids.iter().all(|&p| pid_gone(p)).then_some(()),
    );
}

/// A fresh replica that catches up on 5,000 events logs progress lines
/// with the serial, the total, the rate and the time left, then one line
/// when it has caught up.
#[test]
fn a_catch_up_of_5000_events_logs_progress_with_the_serial_and_the_rate() {
    const EVENTS: u64 = 5_000;
    const WRITERS: usize = 4;
    let p = Node::start(NodeOpts {
        node_id: "progress-p".into(),
        ..NodeOpts::default()
    });
    let token = p.create_token("pypi", "upload");
    let http = cluster::client();
    for w in 0..WRITERS {
        upload_ok(
            &http,
            &p.url(),
            &token,
            &wheel(&format!("progress-{w}"), "1.0"),
        );
    }
    // Blob-less events, four writers at once: yank and unyank in turn.
    let admin = p.admin_token();
    let start = p.serial();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (http, admin, url) = (http.clone(), admin.clone(), p.url());
            s.spawn(move || {
                for i in 0..EVENTS / WRITERS as u64 {
                    let body = serde_json::json!({
                        "repo": "pypi", "project": format!("progress-{w}"),
                        "version": "1.0", "undo": i % 2 == 1,
                    });
                    let resp = http
                        .post(format!("{url}/+admin/yank"))
                        .bearer_auth(&admin)
                        .json(&body)
                        .send()
                        .unwrap();
                    assert_eq!(resp.status().as_u16(), 200);
                }
            });
        }
    });
    let total = p.serial();
    assert_eq!(total - start, EVENTS);

    let r = Node::start(
        NodeOpts::replica("progress-r", &[p.grpc_addr()]).env("HOARD_CATCH_UP_LOG_SECS", "0.05"),
    );
    wait_applied(&r, total, Duration::from_secs(120));
    let log = r.log();
    let progress: Vec<(u64, u64, f64)> = log
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("catching up: serial ")? + "catching up: serial ".len()..];
            let (serial, rest) = rest.split_once(" of ")?;
            let (of, rest) = rest.split_once(", ")?;
            let rate = rest.split_once(" events/s")?.0;
            rest.contains("MB/s, ETA ").then_some(())?;
            Some((serial.parse().ok()?, of.parse().ok()?, rate.parse().ok()?))
        })
        .collect();
    eprintln!("{progress:?}");
    assert!(
        progress
            .iter()
            .any(|&(serial, of, rate)| serial > 0 && serial < of && of == total && rate > 0.0),
        "no progress line with a serial part-way, the total {total} and a rate:\n{log}"
    );
    let serials: Vec<u64> = progress.iter().map(|p| p.0).collect();
    assert!(serials.is_sorted(), "progress goes forward: {serials:?}");
    assert!(
        log.lines().any(
            |l| l.contains(&format!("caught up: serial {total} in ")) && l.contains("events/s")
        ),
        "no caught-up line:\n{log}"
    );
}
