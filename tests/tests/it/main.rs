//! hoard's black-box tests: each test starts real `hoard` processes (see
//! `hoard_testkit::Node`) and drives them over loopback HTTP, with real clients
//! where it matters (twine, pip, uv).
//!
//! Run: `cargo test -p hoard-tests` (set `HOARD_BIN` to test a prebuilt
//! binary). The Python tools are set up on first use by
//! `tests/tools/setup.sh`.

mod accounts;
mod backup;
mod bad_input;
mod cluster_status;
mod concurrent;
mod downloads;
mod durability;
mod export;
mod generic;
mod limits;
mod metrics;
mod mirror_npm;
mod mirror_pypi;
mod npm_bad_input;
mod npm_client;
mod pypi_clients;
mod raft;
mod raft_faults;
mod raft_recovery;
mod replication;
mod replication_faults;
mod replication_npm;
mod s3;
mod simple_api;
mod store;
mod tls;
mod web_ui;
mod yank;
