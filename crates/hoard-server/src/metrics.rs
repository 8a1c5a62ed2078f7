//! `/+metrics` in the Prometheus text format: a few counters kept with
//! atomics, and gauges read from the node when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::node::{Node, NodeRole};

/// Request counters, by status class.
#[derive(Default)]
pub struct Metrics {
    responses: [AtomicU64; 5],
    request_micros: AtomicU64,
}

impl Metrics {
    pub fn record(&self, status: u16, micros: u64) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        self.request_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let m = &node.metrics;
    let _ = writeln!(
        out,
        "# HELP hoard_http_responses_total HTTP responses by status class."
    );
    let _ = writeln!(out, "# TYPE hoard_http_responses_total counter");
    for (i, count) in m.responses.iter().enumerate() {
        let _ = writeln!(
            out,
            "hoard_http_responses_total{{class=\"{}xx\"}} {}",
            i + 1,
            count.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP hoard_http_request_seconds_total Time spent answering requests."
    );
    let _ = writeln!(out, "# TYPE hoard_http_request_seconds_total counter");
    let _ = writeln!(
        out,
        "hoard_http_request_seconds_total {}",
        m.request_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let mc = &node.mirror.counters;
    for (name, help, counter) in [
        (
            "hoard_mirror_pages_fetched_total",
            "Mirror pages an upstream sent in full.",
            &mc.pages_fetched,
        ),
        (
            "hoard_mirror_pages_not_modified_total",
            "Mirror revalidations answered 304.",
            &mc.pages_not_modified,
        ),
        (
            "hoard_mirror_pages_not_found_total",
            "Upstream 404s for mirrored projects.",
            &mc.pages_not_found,
        ),
        (
            "hoard_mirror_upstream_errors_total",
            "Upstream requests that failed (timeouts, refusals, 5xx, bad pages).",
            &mc.upstream_errors,
        ),
        (
            "hoard_mirror_files_cached_total",
            "Mirrored files and metadata fetched and stored.",
            &mc.files_cached,
        ),
        (
            "hoard_mirror_digest_mismatches_total",
            "Upstream bytes refused for not matching the listed sha256.",
            &mc.digest_mismatches,
        ),
        (
            "hoard_mirror_stale_pages_total",
            "Mirror pages served stale because no upstream answered.",
            &mc.stale_pages,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
    }
    gauge(
        &mut out,
        "hoard_applied_serial",
        "The serial this node has applied.",
        node.applied_serial().0 as f64,
    );
    if let Ok(counts) = node.index.counts() {
        gauge(
            &mut out,
            "hoard_files",
            "PyPI files in the index.",
            counts.files as f64,
        );
        gauge(
            &mut out,
            "hoard_npm_versions",
            "npm versions in the index.",
            counts.npm_versions as f64,
        );
    }
    if let NodeRole::Replica(follower) = &node.role {
        let status = follower.status();
        let applied = node.applied_serial();
        gauge(
            &mut out,
            "hoard_replica_lag_events",
            "Events the upstream has that this replica has not applied.",
            status.upstream_serial.saturating_sub(applied.0) as f64,
        );
        gauge(
            &mut out,
            "hoard_replica_lag_seconds",
            "How far behind the upstream, in seconds.",
            status.lag_seconds(applied),
        );
        gauge(
            &mut out,
            "hoard_replica_pending_blobs",
            "Blobs being fetched.",
            status.pending_blobs as f64,
        );
        gauge(
            &mut out,
            "hoard_replica_blob_bytes_fetched",
            "Blob bytes fetched since start.",
            status.blob_bytes_fetched as f64,
        );
        gauge(
            &mut out,
            "hoard_replica_healthy",
            "1 unless something stops the replica from applying.",
            if status.problem.is_none() { 1.0 } else { 0.0 },
        );
    }
    out
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}
