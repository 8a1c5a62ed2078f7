//! hoard's HTTP server and a node's wiring: one handler per protocol
//! (PyPI, npm, generic files, admin), routing, authentication, status, and the shared
//! state a node serves from (a Raft voter or a replica). Writes go through
//! the cluster's `Writer`; errors map to HTTP in `error.rs`. hyper stays
//! inside this crate.

mod accounts;
mod admin;
mod audit;
mod auth;
pub mod backup;
mod body;
pub mod config;
mod download;
mod error;
mod forward;
mod generic;
mod http;
mod https;
mod keyed_lock;
mod limits;
mod metrics;
mod mirror;
mod node;
mod npm;
mod page_cache;
mod pypi;
mod range;
mod session;
mod simple_index;
pub mod survey;
mod ui;
mod virtual_repo;

pub use crate::http::serve;
pub use config::{
    BlobsConfig, BlobsKind, ClusterTlsConfig, ConfigError, HttpsConfig, NodeConfig, ReplicaWrites,
    RepoConfig, Role, UserConfig,
};
pub use error::ApiError;
pub use generic::CHECKSUM_HEADER;
pub use node::{generate_token, Node, NodeError, NodeRole, Principal, TokenScope};
pub use pypi::UPLOAD_TIME_HEADER;
