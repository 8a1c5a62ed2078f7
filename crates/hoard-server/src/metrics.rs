//! `/+metrics` in the Prometheus text format. Requests, uploads and Raft
//! proposals are counted as they happen (the `prometheus` crate's
//! registry); the node's state (serials, lag, Raft, disk) is read when
//! scraped. Labels are bounded: a route is a kind of endpoint, never a
//! path.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use crate::node::{Node, NodeRole};

/// Upstream answers come from across a WAN, and files take a while.
const UPSTREAM_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Request latency buckets, in seconds: from a cached page to a large
/// upload.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What a request was, for the `route` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Landing,
    Status,
    Metrics,
    Audit,
    Admin,
    Ui,
    RepoRoot,
    SimpleIndex,
    SimpleProject,
    PypiFile,
    PypiUpload,
    NpmPackument,
    NpmTarball,
    NpmPublish,
    NpmUnpublish,
    NpmApi,
    /// A generic repository's file (GET or HEAD), or a directory listing.
    GenericFile,
    GenericListing,
    GenericUpload,
    Other,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Landing => "landing",
            Route::Status => "status",
            Route::Metrics => "metrics",
            Route::Audit => "audit",
            Route::Admin => "admin",
            Route::Ui => "ui",
            Route::RepoRoot => "repo_root",
            Route::SimpleIndex => "simple_index",
            Route::SimpleProject => "simple_project",
            Route::PypiFile => "pypi_file",
            Route::PypiUpload => "pypi_upload",
            Route::NpmPackument => "npm_packument",
            Route::NpmTarball => "npm_tarball",
            Route::NpmPublish => "npm_publish",
            Route::NpmUnpublish => "npm_unpublish",
            Route::NpmApi => "npm_api",
            Route::GenericFile => "generic_file",
            Route::GenericListing => "generic_listing",
            Route::GenericUpload => "generic_upload",
            Route::Other => "other",
        }
    }

    /// The upload format, for the routes that store artifacts.
    fn upload_format(self) -> Option<&'static str> {
        match self {
            Route::PypiUpload => Some("pypi"),
            Route::NpmPublish => Some("npm"),
            Route::GenericUpload => Some("generic"),
            _ => None,
        }
    }

    /// A request below a generic repository, whose paths have any shape.
    pub fn of_generic(method: &Method, path: &str) -> Route {
        if method == Method::PUT {
            Route::GenericUpload
        } else if path.ends_with('/') {
            Route::GenericListing
        } else {
            Route::GenericFile
        }
    }

    /// Classifies a request by the shape of its path alone: the same
    /// shapes the PyPI and npm handlers serve, without looking anything up.
    pub fn of(method: &Method, path: &str) -> Route {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let segs = match segs.as_slice() {
            [repo, "+at", _serial, rest @ ..] if !repo.starts_with('+') => {
                std::iter::once(*repo).chain(rest.iter().copied()).collect()
            }
            _ => segs,
        };
        match segs.as_slice() {
            [""] => Route::Landing,
            ["+status"] | ["+status", "cluster"] => Route::Status,
            ["+metrics"] => Route::Metrics,
            ["+audit"] => Route::Audit,
            ["+admin", ..] => Route::Admin,
            ["+ui", ..] => Route::Ui,
            [s, ..] if s.starts_with('+') => Route::Other,
            [_repo] | [_repo, ""] if method == Method::POST => Route::PypiUpload,
            [_repo] | [_repo, ""] => Route::RepoRoot,
            [_repo, "simple"] | [_repo, "simple", ""] => Route::SimpleIndex,
            [_repo, "simple", _project] | [_repo, "simple", _project, ""] => Route::SimpleProject,
            [_repo, "files", _, ..] => Route::PypiFile,
            [_repo, "-", ..] => Route::NpmApi,
            [_repo, rest @ ..] if rest.contains(&"-") && !rest.contains(&"-rev") => {
                Route::NpmTarball
            }
            [_repo, rest @ ..] if method == Method::DELETE || rest.contains(&"-rev") => {
                Route::NpmUnpublish
            }
            [_, _] | [_, _, _] if method == Method::PUT => Route::NpmPublish,
            [_, _] | [_, _, _] => Route::NpmPackument,
            _ => Route::Other,
        }
    }
}

/// The `method` label: the methods hoard serves, and "other".
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// What an upload's answer means, for `hoard_uploads_total`.
fn upload_result(status: u16) -> &'static str {
    match status {
        200..=299 => "stored",
        300..=399 => "forwarded",
        400..=499 => "refused",
        _ => "failed",
    }
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    uploads: IntCounterVec,
    proposals: IntCounterVec,
    elections: IntCounter,
    upstream_seconds: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new().expect("metric names and labels are static and valid")
    }
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "hoard_http_requests_total",
                "HTTP requests answered, by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "hoard_http_request_duration_seconds",
                "Time from a request's headers to its response's headers.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let request_bytes = IntCounterVec::new(
            Opts::new(
                "hoard_http_request_body_bytes_total",
                "Request body bytes received, as declared by Content-Length.",
            ),
            &["route"],
        )?;
        let response_bytes = IntCounterVec::new(
            Opts::new(
                "hoard_http_response_body_bytes_total",
                "Response body bytes served (as their length or Content-Length declares).",
            ),
            &["route"],
        )?;
        let uploads = IntCounterVec::new(
            Opts::new(
                "hoard_uploads_total",
                "Uploads (twine) and publishes (npm), by format and result: stored, refused, failed, or forwarded to the leader.",
            ),
            &["format", "result"],
        )?;
        let proposals = IntCounterVec::new(
            Opts::new(
                "hoard_raft_proposals_total",
                "Events this node proposed to Raft, by result.",
            ),
            &["result"],
        )?;
        let elections = IntCounter::new(
            "hoard_raft_term_changes_total",
            "Raft terms this node has seen begin since it started (elections).",
        )?;
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "hoard_mirror_upstream_request_duration_seconds",
                "Time an upstream took to answer a mirror's request (a page, or a whole file), by kind and outcome.",
            )
            .buckets(UPSTREAM_BUCKETS.to_vec()),
            &["kind", "result"],
        )?;
        registry.register(Box::new(upstream_seconds.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(request_bytes.clone()))?;
        registry.register(Box::new(response_bytes.clone()))?;
        registry.register(Box::new(uploads.clone()))?;
        registry.register(Box::new(proposals.clone()))?;
        registry.register(Box::new(elections.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            requests,
            request_seconds,
            request_bytes,
            response_bytes,
            uploads,
            proposals,
            elections,
            upstream_seconds,
        })
    }

    /// Counts one answered request.
    pub fn record(&self, exchange: Exchange) {
        let route = exchange.route.as_str();
        let method = method_label(&exchange.method);
        let status = exchange.status.to_string();
        self.requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.request_seconds
            .with_label_values(&[route, method])
            .observe(exchange.seconds);
        if exchange.request_bytes > 0 {
            self.request_bytes
                .with_label_values(&[route])
                .inc_by(exchange.request_bytes);
        }
        if let Some(bytes) = exchange.response_bytes {
            self.response_bytes
                .with_label_values(&[route])
                .inc_by(bytes);
        }
        if let Some(format) = exchange.route.upload_format() {
            self.uploads
                .with_label_values(&[format, upload_result(exchange.status)])
                .inc();
        }
    }

    /// Counts one Raft proposal by its result: `committed`, `rejected`,
    /// `not_leader`, `unavailable` or `failed`.
    pub fn record_proposal(&self, result: &str) {
        self.proposals.with_label_values(&[result]).inc();
    }

    /// Times one upstream request of a mirror: `kind` is `page` or
    /// `file`, `ok` whether it succeeded (a 404 or a 304 is an answer).
    pub fn record_upstream(&self, kind: &str, ok: bool, seconds: f64) {
        self.upstream_seconds
            .with_label_values(&[kind, if ok { "ok" } else { "error" }])
            .observe(seconds);
    }

    /// Counts a new Raft term seen by this node.
    pub fn record_term_change(&self) {
        self.elections.inc();
    }
}

/// One answered request, as counted.
pub struct Exchange {
    pub route: Route,
    pub method: Method,
    pub status: u16,
    pub seconds: f64,
    pub request_bytes: u64,
    pub response_bytes: Option<u64>,
}

pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let mut encoded = Vec::new();
    if TextEncoder::new()
        .encode(&node.metrics.registry.gather(), &mut encoded)
        .is_ok()
    {
        out.push_str(&String::from_utf8_lossy(&encoded));
    }
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
            "Mirrored files and metadata fetched and stored (cache misses filled).",
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
        (
            "hoard_page_cache_hits_total",
            "Index pages and packuments served from the page cache.",
            &node.page_cache.hits,
        ),
        (
            "hoard_page_cache_renders_total",
            "Index pages and packuments rendered (page cache misses).",
            &node.page_cache.renders,
        ),
    ] {
        counter_line(&mut out, name, help, counter);
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
        gauge(
            &mut out,
            "hoard_projects",
            "PyPI projects in the index.",
            counts.projects as f64,
        );
        gauge(
            &mut out,
            "hoard_npm_packages",
            "npm packages in the index.",
            counts.npm_packages as f64,
        );
    }
    if let Some((count, bytes)) = node.blobs.stats() {
        gauge(
            &mut out,
            "hoard_store_blobs",
            "Blobs (files, tarballs, metadata) in this node's blob store.",
            count as f64,
        );
        gauge(
            &mut out,
            "hoard_store_blob_bytes",
            "Bytes of the blobs in this node's blob store.",
            bytes as f64,
        );
    }
    if let Some((free, size)) = disk_space(node.data_dir()) {
        gauge(
            &mut out,
            "hoard_data_dir_free_bytes",
            "Bytes free for hoard on the data dir's file system.",
            free as f64,
        );
        gauge(
            &mut out,
            "hoard_data_dir_size_bytes",
            "Size of the data dir's file system.",
            size as f64,
        );
    }
    match &node.role {
        NodeRole::Replica(follower) => {
            let status = follower.status();
            let applied = node.applied_serial();
            gauge(
                &mut out,
                "hoard_replica_upstream_serial",
                "The newest serial the upstream has told this replica of.",
                status.upstream_serial.max(applied.0) as f64,
            );
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
            let _ = writeln!(
                out,
                "# HELP hoard_replica_blob_bytes_fetched_total Blob bytes fetched since start.\n\
                 # TYPE hoard_replica_blob_bytes_fetched_total counter\n\
                 hoard_replica_blob_bytes_fetched_total {}",
                status.blob_bytes_fetched
            );
            let _ = writeln!(
                out,
                "# HELP hoard_replica_reconnects_total Times the replica subscribed to an upstream again.\n\
                 # TYPE hoard_replica_reconnects_total counter\n\
                 hoard_replica_reconnects_total {}",
                status.reconnects
            );
            gauge(
                &mut out,
                "hoard_replica_healthy",
                "1 unless something stops the replica from applying.",
                if status.problem.is_none() { 1.0 } else { 0.0 },
            );
        }
        NodeRole::Voter { raft, .. } => {
            let view = raft.view().borrow().clone();
            gauge(
                &mut out,
                "hoard_raft_term",
                "The Raft term this node is in.",
                view.term as f64,
            );
            gauge(
                &mut out,
                "hoard_raft_leader_id",
                "The Raft id of the leader this node knows of (0: none).",
                view.leader_id.unwrap_or(0) as f64,
            );
            gauge(
                &mut out,
                "hoard_raft_is_leader",
                "1 while this node leads.",
                if view.leader_id == Some(view.node_id) {
                    1.0
                } else {
                    0.0
                },
            );
            gauge(
                &mut out,
                "hoard_raft_commit_index",
                "The Raft log index committed by the cluster, as this node knows it.",
                view.commit_index as f64,
            );
            gauge(
                &mut out,
                "hoard_raft_voters",
                "Voters in the Raft membership.",
                view.voters.len() as f64,
            );
            gauge(
                &mut out,
                "hoard_raft_healthy",
                "1 unless the Raft core has stopped.",
                if view.problem.is_none() { 1.0 } else { 0.0 },
            );
        }
    }
    out
}

/// Bytes available to an unprivileged writer, and the file system's size.
fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

fn counter_line(out: &mut String, name: &str, help: &str, counter: &AtomicU64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
        counter.load(Ordering::Relaxed)
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_told_apart_by_the_shape_of_their_paths() {
        let cases = [
            (Method::GET, "/", Route::Landing),
            (Method::GET, "/+status", Route::Status),
            (Method::GET, "/+metrics", Route::Metrics),
            (Method::POST, "/+admin/yank", Route::Admin),
            (Method::GET, "/+nothing", Route::Other),
            (Method::GET, "/+ui/pypi/requests", Route::Ui),
            (Method::POST, "/pypi/", Route::PypiUpload),
            (Method::GET, "/pypi/", Route::RepoRoot),
            (Method::GET, "/pypi/simple/", Route::SimpleIndex),
            (Method::GET, "/pypi/simple/requests/", Route::SimpleProject),
            (
                Method::GET,
                "/pypi/+at/12/simple/requests/",
                Route::SimpleProject,
            ),
            (
                Method::GET,
                "/pypi/files/ab/cd/x-1.0-py3-none-any.whl",
                Route::PypiFile,
            ),
            (Method::GET, "/npm/left-pad", Route::NpmPackument),
            (Method::GET, "/npm/@acme%2fwidget", Route::NpmPackument),
            (Method::GET, "/npm/@acme/widget", Route::NpmPackument),
            (Method::GET, "/npm/+at/3/left-pad", Route::NpmPackument),
            (Method::PUT, "/npm/@acme%2fwidget", Route::NpmPublish),
            (
                Method::GET,
                "/npm/left-pad/-/left-pad-1.0.0.tgz",
                Route::NpmTarball,
            ),
            (
                Method::GET,
                "/npm/@acme/widget/-/widget-1.0.0.tgz",
                Route::NpmTarball,
            ),
            (
                Method::DELETE,
                "/npm/left-pad/-rev/3-abc",
                Route::NpmUnpublish,
            ),
            (Method::PUT, "/npm/left-pad/-rev/3-abc", Route::NpmUnpublish),
            (Method::GET, "/npm/-/v1/search", Route::NpmApi),
            (
                Method::PUT,
                "/npm/-/user/org.couchdb.user:ann",
                Route::NpmApi,
            ),
            (Method::GET, "/npm/left-pad/1.0.0", Route::NpmPackument),
        ];
        for (method, path, route) in cases {
            assert_eq!(Route::of(&method, path), route, "{method} {path}");
        }
    }

    #[test]
    fn a_recorded_request_shows_in_the_families() {
        let metrics = Metrics::default();
        metrics.record(Exchange {
            route: Route::PypiUpload,
            method: Method::POST,
            status: 200,
            seconds: 0.01,
            request_bytes: 1234,
            response_bytes: Some(3),
        });
        metrics.record_proposal("committed");
        let mut encoded = Vec::new();
        TextEncoder::new()
            .encode(&metrics.registry.gather(), &mut encoded)
            .unwrap();
        let text = String::from_utf8(encoded).unwrap();
        for line in [
            r#"hoard_http_requests_total{method="POST",route="pypi_upload",status="200"} 1"#,
            r#"hoard_http_request_duration_seconds_count{method="POST",route="pypi_upload"} 1"#,
            r#"hoard_http_request_body_bytes_total{route="pypi_upload"} 1234"#,
            r#"hoard_http_response_body_bytes_total{route="pypi_upload"} 3"#,
            r#"hoard_uploads_total{format="pypi",result="stored"} 1"#,
            r#"hoard_raft_proposals_total{result="committed"} 1"#,
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(line), "{line} is missing from:\n{text}");
        }
    }
}
