//! The serving side of the Raft RPCs: check the caller's cluster and
//! epoch, decode, hand to openraft, encode the result (errors as text:
//! the caller only logs them and retries). Plus the two calls of a new
//! epoch: `Fence` and `Join`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use hoard_proto::v1::raft_server::Raft as RaftService;
use hoard_proto::v1::{
    FenceReply, FenceRequest, JoinReply, JoinRequest, RaftReply, RaftRequest, SnapshotChunk,
};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use super::codec::{SnapshotMeta, Vote};
use super::node::RaftNode;
use super::state_machine::{Snapshot, SnapshotFile};
use super::{NodeInfo, Raft, TypeConfig};
use crate::epoch::{Admission, Epoch};
use crate::net;

#[derive(Clone)]
pub(crate) struct RaftRpc {
    pub(crate) node: Arc<RaftNode>,
    pub(crate) raft: Raft,
    pub(crate) epoch: Arc<Epoch>,
    /// Where received snapshots are written.
    pub(crate) snapshot_dir: PathBuf,
}

impl RaftRpc {
    /// Lets a Raft call through only from a node of this node's epoch.
    #[allow(clippy::result_large_err)]
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.node.net().check_sender(req)?;
        match self.epoch.admit(req.metadata())? {
            Admission::Current => Ok(()),
            Admission::Superseded => Err(Status::failed_precondition(
                "this node was superseded by the caller's epoch; it takes no Raft calls until `hoard rejoin`",
            )),
        }
    }

    /// Decodes a Raft call that speaks as the member `speaker(&call)`
    /// (the leader or candidate its vote names), and lets it through only
    /// if the caller may speak for that member ([`RaftRpc::check_speaker`]).
    #[allow(clippy::result_large_err)]
    fn decode<T: DeserializeOwned>(
        &self,
        req: Request<RaftRequest>,
        speaker: impl Fn(&T) -> u64,
    ) -> Result<T, Status> {
        self.admit(&req)?;
        let certified = certified_node(&req);
        let call: T = serde_json::from_slice(&req.into_inner().json)
            .map_err(|e| Status::invalid_argument(format!("undecodable Raft request: {e}")))?;
        self.check_speaker(certified.as_deref(), speaker(&call))?;
        Ok(call)
    }

    /// With cluster TLS, a caller speaks only for the member recorded
    /// under its certificate's name: a replica, which holds a cluster
    /// certificate to follow the changelog, cannot vote or append entries
    /// as a voter. A member recorded without a name, or not known here
    /// yet (a new learner's first entries), is not checked.
    #[allow(clippy::result_large_err)]
    fn check_speaker(&self, certified: Option<&str>, raft_id: u64) -> Result<(), Status> {
        let Some(caller) = certified else {
            return Ok(());
        };
        let member = self
            .node
            .view()
            .borrow()
            .nodes
            .get(&raft_id)
            .and_then(|n| n.name.clone());
        match member {
            Some(member) if member != caller => {
                tracing::warn!(
                    caller,
                    raft_id,
                    member = %member,
                    "refused a Raft call from a node that speaks for another member"
                );
                Err(Status::permission_denied(format!(
                    "node {caller:?} speaks as Raft member {raft_id}, which is {member:?}"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The caller's node id, from its certificate (with cluster TLS).
fn certified_node<T>(req: &Request<T>) -> Option<String> {
    req.extensions()
        .get::<crate::tls::PeerInfo>()
        .and_then(|p| p.node_id.clone())
}

fn reply<T: Serialize, E: std::fmt::Display>(
    result: Result<T, E>,
) -> Result<Response<RaftReply>, Status> {
    let result = result.map_err(|e| e.to_string());
    let json = serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply { json }))
}

type ReplyStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<RaftReply, Status>> + Send>>;

#[tonic::async_trait]
impl RaftService for RaftRpc {
    type StreamAppendStream = ReplyStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        self.admit(&request)?;
        let certified = certified_node(&request);
        let from = request
            .metadata()
            .get(net::FROM_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let net = self.node.net().clone();
        let rpc = self.clone();
        // An undecodable request, or one that speaks for another member,
        // ends the input, and with it the replies:
        // the leader sees the stream end early and sends again. So does a
        // partition of the fault layer, which is asked for every message.
        let input = tokio_stream::StreamExt::map_while(request.into_inner(), move |item| {
            if from.as_deref().is_some_and(|f| net.partitioned_from(f)) {
                return None;
            }
            let item = item.ok()?;
            match serde_json::from_slice::<AppendEntriesRequest<TypeConfig>>(&item.json) {
                Ok(req) => rpc
                    .check_speaker(certified.as_deref(), req.vote.leader_id.node_id)
                    .ok()
                    .map(|()| req),
                Err(e) => {
                    tracing::warn!(error = %e, "an undecodable streamed AppendEntries request");
                    None
                }
            }
        });
        let replies = self.raft.stream_append(input).map(|result| {
            let result = result.map_err(|fatal| fatal.to_string());
            serde_json::to_vec(&result)
                .map(|json| RaftReply { json })
                .map_err(|e| Status::internal(e.to_string()))
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let call = self.decode(request, |r: &AppendEntriesRequest<TypeConfig>| {
            r.vote.leader_id.node_id
        })?;
        reply(self.raft.append_entries(call).await)
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let call = self.decode(request, |r: &VoteRequest<TypeConfig>| {
            r.vote.leader_id.node_id
        })?;
        reply(self.raft.vote(call).await)
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let call = self.decode(request, |r: &VoteRequest<TypeConfig>| {
            r.vote.leader_id.node_id
        })?;
        reply(self.raft.pre_vote(call).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let call = self.decode(request, |r: &TransferLeaderRequest<TypeConfig>| {
            r.from_leader().leader_id.node_id
        })?;
        reply(self.raft.handle_transfer_leader(call).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        self.admit(&request)?;
        let certified = certified_node(&request);
        let mut stream = request.into_inner();
        let path = self
            .snapshot_dir
            .join(format!("recv-{:016x}.tmp", rand::random::<u64>()));
        let guard = RemoveOnDrop(Some(path.clone()));
        let mut file = std::fs::File::create(&path)
            .map_err(|e| Status::internal(format!("create {}: {e}", path.display())))?;
        let mut header: Option<(Vote, SnapshotMeta)> = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if header.is_none() {
                header = Some(serde_json::from_slice(&chunk.header).map_err(|e| {
                    Status::invalid_argument(format!("undecodable snapshot header: {e}"))
                })?);
            }
            file.write_all(&chunk.data)
                .map_err(|e| Status::internal(format!("write {}: {e}", path.display())))?;
        }
        let (vote, meta) =
            header.ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))?;
        self.check_speaker(certified.as_deref(), vote.leader_id.node_id)?;
        file.sync_all()
            .map_err(|e| Status::internal(format!("fsync {}: {e}", path.display())))?;
        let file = std::fs::File::open(&path)
            .map_err(|e| Status::internal(format!("reopen {}: {e}", path.display())))?;
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotFile {
                path: path.clone(),
                file,
            },
        };
        let result = self.raft.install_full_snapshot(vote, snapshot).await;
        drop(guard);
        reply(result)
    }

    async fn fence(&self, request: Request<FenceRequest>) -> Result<Response<FenceReply>, Status> {
        self.node.net().check_sender(&request)?;
        if self.epoch.identity().is_none() {
            // A node that belongs to no cluster yet is not told one by a
            // fence (an old epoch's start-up probe may call it).
            return Ok(Response::new(FenceReply {
                outcome: "not a member".into(),
            }));
        }
        let outcome = match self.epoch.admit(request.metadata())? {
            Admission::Current => "current",
            Admission::Superseded => "fenced",
        };
        Ok(Response::new(FenceReply {
            outcome: outcome.into(),
        }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        self.admit(&request)?;
        // The joining node is who its certificate says.
        let name = certified_node(&request);
        let req = request.into_inner();
        let info = NodeInfo {
            grpc_addr: req.grpc_addr,
            http_url: req.http_url,
            name,
        };
        match self.node.accept_join(req.raft_id, info) {
            Ok(accepted) => Ok(Response::new(accepted)),
            Err(reason) => Err(Status::failed_precondition(reason)),
        }
    }
}

/// Deletes a received snapshot file unless the state machine took it.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Gone already when installed (renamed to the current snapshot).
            let _ = std::fs::remove_file(path);
        }
    }
}
