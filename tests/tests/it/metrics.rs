//! `/+metrics`: the Prometheus families an operator scrapes are there, on
//! a voter and on a replica, and they move as uploads and downloads happen.

use std::time::Duration;

use hoard_testkit::cluster::{client, download, listed, upload_ok, wait_applied, wait_for};
use hoard_testkit::{wheel, Auth, Node, NodeOpts, Upload};

/// The scraped text of `node`'s `/+metrics`.
pub fn scrape(node: &Node) -> String {
    let resp = node.get("/+metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    resp.text().unwrap()
}

/// The value of the sample `series` (a name with its labels, exactly as
/// exposed), if the scrape has it.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Prometheus's own linter (`promtool check metrics`, from Debian's
/// `prometheus`, installed on first use) finds nothing to say: names,
/// units, `_total` suffixes, help texts.
fn assert_promtool_lints_clean(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(hoard_testkit::tools::promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics ({}):\n{}{}\non:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every family is declared with its type, as Prometheus expects.
fn assert_family(text: &str, name: &str, kind: &str) {
    let line = format!("# TYPE {name} {kind}");
    assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
}

#[test]
fn metrics_families_are_present_and_move_with_uploads_and_downloads() {
    let mut p = Node::start(NodeOpts {
        node_id: "metrics-p".into(),
        ..NodeOpts::default()
    });
    let token = p.create_token("pypi", "upload");
    // The blob store is counted by a walk just after start.
    let before = wait_for(Duration::from_secs(10), "the blob store counted", || {
        let text = scrape(&p);
        sample(&text, "hoard_store_blobs").is_some().then_some(text)
    });
    for (name, kind) in [
        ("hoard_http_requests_total", "counter"),
        ("hoard_http_request_duration_seconds", "histogram"),
        ("hoard_applied_serial", "gauge"),
        ("hoard_files", "gauge"),
        ("hoard_data_dir_free_bytes", "gauge"),
        ("hoard_store_blobs", "gauge"),
        ("hoard_store_blob_bytes", "gauge"),
        ("hoard_raft_term", "gauge"),
        ("hoard_raft_is_leader", "gauge"),
        ("hoard_raft_commit_index", "gauge"),
        ("hoard_mirror_upstream_errors_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
    ] {
        assert_family(&before, name, kind);
    }
    assert_eq!(value(&before, "hoard_raft_is_leader"), 1.0);
    assert!(value(&before, "hoard_raft_term") >= 1.0);
    assert!(value(&before, "hoard_data_dir_free_bytes") > 0.0);
    assert!(value(&before, "process_resident_memory_bytes") > 0.0);
    let stored = r#"hoard_uploads_total{format="pypi",result="stored"}"#;
    let refused = r#"hoard_uploads_total{format="pypi",result="refused"}"#;
    let committed = r#"hoard_raft_proposals_total{result="committed"}"#;
    let upload_200 = r#"hoard_http_requests_total{method="POST",route="pypi_upload",status="200"}"#;
    let stored_before = sample(&before, stored).unwrap_or(0.0);
    let committed_before = sample(&before, committed).unwrap_or(0.0);

    let http = client();
    let wheels = [wheel("metered", "1.0"), wheel("metered", "2.0")];
    for w in &wheels {
        upload_ok(&http, &p.url(), &token, w);
    }
    let bad = p.upload(
        "pypi",
        &Auth::Basic("not-a-token".into()),
        &Upload::of(&wheel("metered", "3.0")),
    );
    assert!(bad.status().is_client_error(), "{}", bad.status());

    let after = scrape(&p);
    assert_promtool_lints_clean(&after);
    assert_eq!(value(&after, stored) - stored_before, 2.0, "{after}");
    assert_eq!(value(&after, refused), 1.0, "{after}");
    assert_eq!(value(&after, upload_200), 2.0, "{after}");
    assert!(
        value(&after, committed) - committed_before >= 2.0,
        "{after}"
    );
    assert!(value(&after, "hoard_applied_serial") > value(&before, "hoard_applied_serial"));
    assert_eq!(value(&after, "hoard_files"), 2.0);
    // Each wheel, and its core metadata, is a blob.
    assert_eq!(
        value(&after, "hoard_store_blobs") - value(&before, "hoard_store_blobs"),
        4.0,
        "{after}"
    );
    assert!(
        value(&after, "hoard_store_blob_bytes") - value(&before, "hoard_store_blob_bytes")
            > sent_bytes(&wheels),
        "{after}"
    );
    let body_bytes = r#"hoard_http_request_body_bytes_total{route="pypi_upload"}"#;
    let sent = wheels.iter().map(|w| w.bytes.len()).sum::<usize>();
    assert!(value(&after, body_bytes) >= sent as f64, "{after}");
    assert_eq!(
        value(
            &after,
            r#"hoard_http_request_duration_seconds_count{method="POST",route="pypi_upload"}"#
        ),
        3.0
    );

    // A replica: its replication families, and the bytes it serves.
    let r = Node::start(NodeOpts::replica("metrics-r", &[p.grpc_addr()]));
    wait_applied(&r, p.serial(), Duration::from_secs(60));
    let files = listed(r.http(), &r.url(), "metered").unwrap();
    assert_eq!(files.len(), 2);
    let mut served = 0;
    for f in &files {
        served += download(r.http(), &f.url).unwrap().len();
    }
    let replica = scrape(&r);
    assert_promtool_lints_clean(&replica);
    for (name, kind) in [
        ("hoard_replica_upstream_serial", "gauge"),
        ("hoard_replica_lag_events", "gauge"),
        ("hoard_replica_lag_seconds", "gauge"),
        ("hoard_replica_pending_blobs", "gauge"),
        ("hoard_replica_blob_bytes_fetched_total", "counter"),
        ("hoard_replica_reconnects_total", "counter"),
        ("hoard_replica_healthy", "gauge"),
    ] {
        assert_family(&replica, name, kind);
    }
    assert_eq!(value(&replica, "hoard_replica_healthy"), 1.0);
    assert_eq!(value(&replica, "hoard_replica_lag_events"), 0.0);
    assert_eq!(
        value(&replica, "hoard_replica_upstream_serial"),
        value(&replica, "hoard_applied_serial")
    );
    assert!(value(&replica, "hoard_replica_blob_bytes_fetched_total") >= sent as f64);
    assert_eq!(
        value(
            &replica,
            r#"hoard_http_response_body_bytes_total{route="pypi_file"}"#
        ),
        served as f64,
        "{replica}"
    );
    assert!(
        sample(&replica, "hoard_raft_term").is_none(),
        "a replica is not in the Raft group"
    );
    assert_eq!(
        value(&replica, "hoard_store_blobs"),
        value(&after, "hoard_store_blobs"),
        "{replica}"
    );

    // After a restart the walk finds what the commits counted.
    p.restart();
    let again = wait_for(Duration::from_secs(10), "the blob store counted", || {
        let text = scrape(&p);
        sample(&text, "hoard_store_blobs").is_some().then_some(text)
    });
    for name in ["hoard_store_blobs", "hoard_store_blob_bytes"] {
        assert_eq!(value(&again, name), value(&after, name), "{name}");
    }
}

fn sent_bytes(wheels: &[hoard_testkit::Artifact]) -> f64 {
    wheels.iter().map(|w| w.bytes.len() as f64).sum()
}
