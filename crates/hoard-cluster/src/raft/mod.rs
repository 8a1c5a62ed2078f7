//! The Raft group of voters (openraft). Every openraft type stays in this
//! module: the rest of hoard sees a [`RaftNode`], a [`Writer`](crate::Writer)
//! and a [`ClusterView`].
//!
//! The log lives in the node's sled database ([`hoard_store::RaftLog`]) in
//! hoard's own encoding (`codec`); the state machine is the index itself,
//! through the same `apply` that replicas use. Entries carry events only,
//! never blob bytes.

mod codec;
mod log_store;
mod network;
mod node;
mod service;
mod state_machine;
mod tuning;

use std::fmt;

use hoard_core::Serial;
use hoard_store::Rejection;
use serde::{Deserialize, Serialize};

pub use node::{
    offline_write_refusal, ClusterView, Committed, NodeRoleKind, ProposeError, RaftNode,
    RaftNodeConfig,
};
pub use tuning::{RaftTuning, TuningError};

/// Where a voter or learner is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The gRPC address other nodes connect to.
    pub grpc_addr: String,
    /// The public HTTP URL: where writes are redirected.
    pub http_url: String,
    /// The node's id (`node_id`), which with cluster TLS is its
    /// certificate's common name: a peer whose certificate names another
    /// node cannot speak for this member. `None` for a member added
    /// without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (grpc {})", self.http_url, self.grpc_addr)
    }
}

/// One proposed event, as the JSON text that every node stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub event: String,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event of {} bytes", self.event.len())
    }
}

/// What applying a committed entry did: the event's serial, or why the
/// index rejected it (deterministically, on every node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome(pub Option<Result<Serial, Rejection>>);

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposal,
        R = ApplyOutcome,
        NodeId = u64,
        Node = NodeInfo,
);

pub(crate) type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;

#[cfg(test)]
mod suite;
