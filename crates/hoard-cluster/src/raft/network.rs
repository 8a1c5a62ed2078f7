//! The client side of the Raft RPCs: one lazily connected channel per
//! peer, through the one network seam ([`crate::net`]), and a deadline on
//! every call.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::Stream;

use hoard_proto::v1::raft_client::RaftClient;
use hoard_proto::v1::{FenceRequest, JoinReply, JoinRequest, RaftRequest, SnapshotChunk};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::codec::Vote;
use super::state_machine::{Snapshot, SnapshotFile};
use super::{NodeInfo, TypeConfig};
use crate::epoch::Epoch;
use crate::net::{self, Net};
use crate::ClusterError;

/// Bytes of snapshot data per gRPC message.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// How long a follower may take to install a snapshot and fetch its blobs.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) rpc_timeout: Duration,
    pub(crate) epoch: Arc<Epoch>,
    pub(crate) net: Net,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Self::Network {
        Peer {
            target,
            addr: node.grpc_addr.clone(),
            channel: None,
            rpc_timeout: self.rpc_timeout,
            epoch: self.epoch.clone(),
            net: self.net.clone(),
        }
    }
}

pub(crate) struct Peer {
    target: u64,
    addr: String,
    channel: Option<Channel>,
    rpc_timeout: Duration,
    epoch: Arc<Epoch>,
    net: Net,
}

type RpcErr = RPCError<TypeConfig>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::new(&AnyError::error(e.to_string()))
}

fn network(e: impl std::fmt::Display) -> NetworkError<TypeConfig> {
    NetworkError::new(&AnyError::error(e.to_string()))
}

impl Peer {
    async fn client(&mut self) -> Result<RaftClient<Channel>, Unreachable<TypeConfig>> {
        if let Some(f) = self.epoch.fenced() {
            return Err(unreachable(format!(
                "fenced by {}: this node makes no Raft calls",
                f.identity
            )));
        }
        if self.net.partitioned_from(&self.addr) {
            return Err(unreachable(net::partition_error(&self.addr)));
        }
        if self.channel.is_none() {
            let channel = self.net.connect(&self.addr).await.map_err(unreachable)?;
            self.channel = Some(channel);
        }
        let channel = self.channel.clone().expect("connected above");
        Ok(RaftClient::new(channel))
    }

    /// One unary call with JSON payloads, bounded by the RPC deadline.
    async fn call<Req, Resp, F, Fut>(
        &mut self,
        req: &Req,
        ttl: Duration,
        send: F,
    ) -> Result<Resp, RpcErr>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, tonic::Request<RaftRequest>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<hoard_proto::v1::RaftReply>, tonic::Status>>,
    {
        let client = self.client().await?;
        let json = serde_json::to_vec(req).map_err(network)?;
        let deadline = ttl.min(self.rpc_timeout);
        let mut request = tonic::Request::new(RaftRequest { json });
        self.name_sender(&mut request);
        let reply = match tokio::time::timeout(deadline, send(client, request)).await {
            Err(_) => {
                return Err(RPCError::Unreachable(unreachable(format!(
                    "node {} ({}) did not answer within {deadline:?}",
                    self.target, self.addr
                ))))
            }
            Ok(Err(status)) => return Err(self.refused(status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, String> = serde_json::from_slice(&reply.json).map_err(network)?;
        result.map_err(|e| RPCError::Network(network(format!("node {}: {e}", self.target))))
    }
}

impl Peer {
    /// What a call that the peer answered with an error status means: a
    /// newer epoch may have fenced this node, and an unavailable peer may
    /// have restarted (reconnect next time).
    fn refused(&mut self, status: tonic::Status) -> RpcErr {
        self.epoch.learn_from(&status);
        if status.code() == tonic::Code::Unavailable {
            self.channel = None;
            return RPCError::Unreachable(unreachable(status));
        }
        RPCError::Network(network(status))
    }

    /// Names this node, its cluster and its epoch on the call.
    fn name_sender<T>(&self, request: &mut tonic::Request<T>) {
        self.net.name_sender(request.metadata_mut());
        self.epoch.attach(request.metadata_mut());
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotFile;

    /// Replication as one gRPC stream: requests go out as openraft makes
    /// them, without waiting for the previous reply. The deadline applies
    /// to the oldest request still unanswered, so an idle stream (nothing
    /// to replicate) never times out, and a follower that stops answering
    /// does within `rpc_timeout`.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RpcErr>>, RpcErr>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self.client().await?;
            let unanswered: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
            let sent = unanswered.clone();
            // The fault layer is asked for every message, not only when the
            // stream opens: a partition cuts a stream that is running.
            let (net, addr) = (self.net.clone(), self.addr.clone());
            let cut = (net.clone(), addr.clone());
            let requests = tokio_stream::StreamExt::map_while(input, move |req| {
                if net.partitioned_from(&addr) {
                    return None;
                }
                match serde_json::to_vec(&req) {
                    Ok(json) => {
                        lock(&sent).push_back(Instant::now());
                        Some(RaftRequest { json })
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot encode an AppendEntries request");
                        None
                    }
                }
            });
            let mut request = tonic::Request::new(requests);
            self.name_sender(&mut request);
            let opened =
                tokio::time::timeout(self.rpc_timeout, client.stream_append(request)).await;
            let replies = match opened {
                Err(_) => {
                    return Err(RPCError::Unreachable(unreachable(format!(
                        "node {} ({}) did not open the replication stream within {:?}",
                        self.target, self.addr, self.rpc_timeout
                    ))))
                }
                Ok(Err(status)) => return Err(self.refused(status)),
                Ok(Ok(replies)) => replies.into_inner(),
            };
            let (target, rpc_timeout) = (self.target, self.rpc_timeout);
            let replies = futures_util::stream::unfold(Some(replies), move |state| {
                let unanswered = unanswered.clone();
                let cut = cut.clone();
                async move {
                    let mut replies = state?;
                    let reply = loop {
                        tokio::select! {
                            reply = replies.message() => break reply,
                            () = tokio::time::sleep(rpc_timeout / 4) => {
                                if cut.0.partitioned_from(&cut.1) {
                                    let e = unreachable(net::partition_error(&cut.1));
                                    return Some((Err(RPCError::Unreachable(e)), None));
                                }
                                let late = lock(&unanswered)
                                    .front()
                                    .is_some_and(|sent| sent.elapsed() > rpc_timeout);
                                if late {
                                    let e = unreachable(format!(
                                        "node {target} did not answer a streamed AppendEntries within {rpc_timeout:?}"
                                    ));
                                    return Some((Err(RPCError::Unreachable(e)), None));
                                }
                            }
                        }
                    };
                    let item = match reply {
                        Ok(None) => return None,
                        Ok(Some(reply)) => {
                            lock(&unanswered).pop_front();
                            match serde_json::from_slice::<
                                Result<StreamAppendResult<TypeConfig>, String>,
                            >(&reply.json)
                            {
                                Ok(Ok(result)) => Ok(result),
                                Ok(Err(fatal)) => Err(RPCError::Network(network(format!(
                                    "node {target}: {fatal}"
                                )))),
                                Err(e) => Err(RPCError::Network(network(e))),
                            }
                        }
                        Err(status) => Err(RPCError::Network(network(status))),
                    };
                    let next = item.is_ok().then_some(replies);
                    Some((item, next))
                }
            });
            Ok(Box::pin(replies) as BoxStream<'s, _>)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcErr> {
        self.call(&rpc, option.hard_ttl(), |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcErr> {
        self.call(&rpc, option.hard_ttl(), |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcErr> {
        self.call(&rpc, option.hard_ttl(), |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcErr> {
        self.call(&req, option.hard_ttl(), |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client().await?;
        let header = serde_json::to_vec(&(vote, &snapshot.meta)).map_err(network)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let mut file = snapshot.snapshot.file;
        // Reading the file is blocking; the chunks go out as they are read.
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut header = Some(header);
            loop {
                let mut data = vec![0u8; SNAPSHOT_CHUNK];
                let n = file.read(&mut data)?;
                data.truncate(n);
                let chunk = SnapshotChunk {
                    header: header.take().unwrap_or_default(),
                    data,
                };
                if tx.blocking_send(chunk).is_err() || n == 0 {
                    return Ok(());
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut request = tonic::Request::new(stream);
        self.name_sender(&mut request);
        let call = client.install_snapshot(request);
        // The receiver fetches every blob the snapshot lists before it
        // answers, so this deadline is far longer than one RPC's.
        let deadline = SNAPSHOT_DEADLINE;
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            () = tokio::time::sleep(deadline) => {
                return Err(StreamingError::Unreachable(unreachable(format!(
                    "node {} did not install the snapshot within {deadline:?}",
                    self.target
                ))))
            }
            reply = call => match reply {
                Ok(reply) => reply.into_inner(),
                Err(status) => {
                    self.epoch.learn_from(&status);
                    return Err(network(status).into());
                }
            },
        };
        reader
            .await
            .map_err(network)?
            .map_err(|e| network(format!("reading the snapshot: {e}")))?;
        let result: Result<SnapshotResponse<TypeConfig>, String> =
            serde_json::from_slice(&reply.json).map_err(network)?;
        result.map_err(|e| StreamingError::Network(network(format!("node {}: {e}", self.target))))
    }
}

/// How long one `Fence` or `Join` call may take.
const EPOCH_CALL_DEADLINE: Duration = Duration::from_secs(2);

/// One `Fence` or `Join` call: named, bounded by its deadline, and read
/// for a refusal that fences this node.
async fn epoch_call<T, R, F, Fut>(
    net: &Net,
    epoch: &Epoch,
    addr: &str,
    message: T,
    call: F,
) -> Result<R, ClusterError>
where
    F: FnOnce(RaftClient<Channel>, tonic::Request<T>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    if epoch.fenced().is_some() {
        return Err(ClusterError::Raft("this node is fenced".into()));
    }
    let client = RaftClient::new(net.connect(addr).await?);
    let mut request = tonic::Request::new(message);
    request.set_timeout(EPOCH_CALL_DEADLINE);
    net.name_sender(request.metadata_mut());
    epoch.attach(request.metadata_mut());
    let reply = tokio::time::timeout(EPOCH_CALL_DEADLINE, call(client, request))
        .await
        .map_err(|_| ClusterError::Connect {
            addr: addr.to_owned(),
            message: format!("no answer within {EPOCH_CALL_DEADLINE:?}"),
        })?
        .map_err(|status| {
            epoch.learn_from(&status);
            ClusterError::Rpc {
                addr: addr.to_owned(),
                status,
            }
        })?;
    Ok(reply.into_inner())
}

/// Tells the node at `addr` that this node's epoch supersedes its own.
/// Returns its answer: `fenced`, or `current` if it has rejoined already.
pub(crate) async fn send_fence(
    net: &Net,
    epoch: &Epoch,
    addr: &str,
    leader_url: &str,
) -> Result<String, ClusterError> {
    let fence = FenceRequest {
        leader_url: leader_url.to_owned(),
    };
    let reply = epoch_call(net, epoch, addr, fence, |mut c, r| async move {
        c.fence(r).await
    })
    .await?;
    Ok(reply.outcome)
}

/// Asks the node at `addr` (the leader, hopefully) to add this node.
pub(crate) async fn send_join(
    net: &Net,
    epoch: &Epoch,
    addr: &str,
    join: JoinRequest,
) -> Result<JoinReply, ClusterError> {
    epoch_call(
        net,
        epoch,
        addr,
        join,
        |mut c, r| async move { c.join(r).await },
    )
    .await
}
