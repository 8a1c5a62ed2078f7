//! hoard's node-to-node layer: the Raft group of voters ([`RaftNode`],
//! openraft over the node's store), the [`Writer`] that every write goes
//! through, the gRPC services that stream the committed changelog and
//! blobs (`proto/hoard/v1`), and the replica [`Follower`] that applies
//! them locally. Every connection goes through [`net`], the one seam where
//! TLS and a simulated network plug in.

mod blob_fetch;
mod epoch;
mod follower;
pub mod net;
mod raft;
mod service;
mod subscribers;
pub mod tls;
mod writer;

pub use epoch::{ClusterIdentity, Contact, Epoch, FencedBy, PendingStep};
pub use follower::{Follower, FollowerConfig, FollowerStatus};
pub use net::Net;
pub use raft::{
    offline_write_refusal, ClusterView, Committed, NodeInfo, NodeRoleKind, ProposeError, RaftNode,
    RaftNodeConfig, RaftTuning, TuningError,
};
pub use service::{serve_grpc, ReplicationSource};
pub use subscribers::{Subscriber, Subscribers};
pub use tls::{ClusterTls, ClusterTlsFiles, PeerInfo};
pub use writer::{WriteError, Writer};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("{addr}: {status}")]
    Rpc { addr: String, status: tonic::Status },
    #[error("protocol error from {addr}: {message}")]
    Protocol { addr: String, message: String },
    #[error("blob {sha256} from {addr} does not match its sha256")]
    BlobMismatch { addr: String, sha256: String },
    #[error(transparent)]
    Store(#[from] hoard_store::StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cluster TLS: {0}")]
    Tls(String),
}
