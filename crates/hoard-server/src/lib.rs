//! hoard's HTTP server and a node's wiring: one handler per protocol
//! (PyPI, admin), routing, authentication, status, and the shared state a
//! node serves from. hyper stays inside this crate.

mod admin;
mod body;
pub mod config;
mod download;
mod error;
mod forward;
mod http;
mod keyed_lock;
mod metrics;
mod node;
mod npm;
mod page_cache;
mod pypi;
mod range;

pub use crate::http::serve;
pub use config::{ConfigError, NodeConfig, ReplicaWrites, RepoConfig, Role, UserConfig};
pub use error::ApiError;
pub use node::{generate_token, Node, NodeError, NodeRole, Principal};
