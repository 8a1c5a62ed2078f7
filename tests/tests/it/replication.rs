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

use hoard_tests::artifacts::{module_name, normalize, WheelSpec};
use hoard_tests::cluster::{
    self, assert_serves_exactly, listed, status_of, upload_ok, wait_applied, wait_converged,
    wait_for,
};
use hoard_tests::node::{describe_failure, run_ok};
use hoard_tests::tools::isolate_python_env;
use hoard_tests::{sha256_hex, wheel, Artifact, Cluster, Node, NodeOpts};

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
    assert_eq!(sp["role"], "primary");
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
