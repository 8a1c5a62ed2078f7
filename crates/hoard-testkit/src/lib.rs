//! `hoard-testkit`: the dev-only harness shared by the black-box tests
//! (`tests/`, package `hoard-tests`) and the benchmarks (`bench/`). Not
//! published; nothing in the product depends on it.
//!
//! It owns what both need to exercise a real `hoard`: starting nodes and
//! clusters (blocking, panicking on failure, for tests), building the
//! artifacts that clients upload (wheels, sdists, npm tarballs and publish
//! documents, incompressible padding), and the clients that talk to a node
//! (HTTP uploads, raw requests, PEP 503 pages, the Python and npm tools).
//!
//! - [`tools`]: locating the workspace, the `hoard` binary and the Python
//!   tools.
//! - [`node`]: [`node::Node`], one `hoard serve` process with its own temp dir
//!   and ports.
//! - [`cluster`]: a primary and replicas ([`cluster::Cluster`]), waiting
//!   for nodes to agree, uploads that report their serial.
//! - [`demo`]: `hoard demo`, a local cluster of child processes.
//! - [`voters`]: Raft voters, partitions and a background uploader.
//! - [`artifacts`]: building wheels, sdists and broken/hostile files.
//! - [`npm`]: npm tarballs, publish documents, and the real npm client.
//! - [`http`]: a multipart builder and a raw HTTP/1.1 client for requests that
//!   an ordinary client refuses to send (cut bodies, lying Content-Length).
//! - [`simple`]: reading PEP 503 pages.
//! - [`upstream`]: a fixture package index for mirror tests, with faults
//!   and exact request counters.
//! - [`npm_upstream`]: its npm counterpart, a fixture registry serving
//!   packuments and tarballs.
//! - [`tls`]: a cluster CA and node certificates from `hoard cert`.
//! - [`fuzz`]: property and fuzz tests with a time budget, and their
//!   regression files.

pub mod artifacts;
pub mod cluster;
pub mod demo;
pub mod fuzz;
pub mod http;
pub mod node;
pub mod npm;
pub mod npm_upstream;
pub mod s3;
pub mod simple;
pub mod tls;
pub mod tools;
pub mod upstream;
pub mod voters;

pub use artifacts::{sdist, wheel, Artifact, WheelSpec};
pub use cluster::Cluster;
pub use http::{Auth, Multipart, RawResponse, Upload};
pub use node::{Node, NodeOpts, RepoSpec, StoreSnapshot};

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Hex sha256 of a file, read in blocks (for files too big to hold).
pub fn sha256_file(path: &std::path::Path) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    std::io::copy(&mut file, &mut hasher)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(hasher.finalize())
}

/// Hex md5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// A name unique within this test process, for projects and files.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Held by the tests that load the machine the most (many processes, a
/// thousand uploads, random kills), so that two of them never run at once
/// on CI's two cores; the others still run beside them.
pub fn heavy_test() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}
