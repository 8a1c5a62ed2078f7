//! A voter (or learner) of the Raft group: openraft started over the
//! node's store, the view of the cluster that the rest of the node reads
//! (`ClusterView`, a watch that changes at run time), and proposals.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hoard_core::Serial;
use hoard_proto::v1::raft_server::RaftServer;
use hoard_store::{BlobStore, Index, ReceivedEvent, Rejection};
use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::watch::WatchReceiver;
use openraft::{ChangeMembers, ServerState};
use serde::Serialize;
use tokio::sync::watch;

use super::log_store::LogStore;
use super::network::{send_fence, send_join, Network};
use super::service::RaftRpc;
use super::state_machine::StateMachine;
use super::{NodeInfo, Proposal, Raft, RaftTuning};
use crate::epoch::{ClusterIdentity, Epoch, PendingStep};
use crate::net::Net;
use crate::ClusterError;

/// How often the leader of a new epoch calls the old epoch's nodes that
/// it has not fenced yet: a restarted old voter must hear of the new
/// epoch before it can hold an election among its old peers.
const FENCE_RETRY: Duration = Duration::from_millis(250);
/// How often a rejoining node asks to be added.
const JOIN_RETRY: Duration = Duration::from_secs(1);
/// How long a new epoch's first start may take to elect itself and
/// snapshot the index.
const SEAL_WAIT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct RaftNodeConfig {
    pub id: u64,
    /// How the other nodes reach this one.
    pub info: NodeInfo,
    /// The cluster's name; nodes of another cluster are refused.
    pub cluster: String,
    pub tuning: RaftTuning,
    pub snapshot_dir: PathBuf,
    /// Initialize a one-voter group of this node on first start (the node
    /// is the cluster's first voter, not one that will be added later).
    pub bootstrap: bool,
}

/// What this node is in the cluster right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRoleKind {
    Leader,
    Follower,
    Learner,
    /// A voter in an election: it knows no leader yet.
    Candidate,
    /// Not in the Raft group: follows the changelog.
    Replica,
}

impl NodeRoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRoleKind::Leader => "leader",
            NodeRoleKind::Follower => "follower",
            NodeRoleKind::Learner => "learner",
            NodeRoleKind::Candidate => "candidate",
            NodeRoleKind::Replica => "replica",
        }
    }
}

/// The cluster as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    pub role: NodeRoleKind,
    pub node_id: u64,
    pub leader_id: Option<u64>,
    /// The leader's public HTTP URL: where writes go.
    pub leader_url: Option<String>,
    pub term: u64,
    /// The Raft log index committed by the cluster, as this node knows it.
    pub commit_index: u64,
    pub voters: BTreeSet<u64>,
    /// The voter sets a write must reach a majority of: one, or two
    /// during a membership change (joint consensus).
    pub configs: Vec<BTreeSet<u64>>,
    pub learners: BTreeSet<u64>,
    pub nodes: BTreeMap<u64, NodeInfo>,
    /// Set when the Raft core stopped (a storage failure, say).
    pub problem: Option<String>,
}

/// A committed event: its serial, and the term of the log entry that
/// carried it. Raft gives each term at most one leader, so the term names
/// the one node that acknowledged the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub serial: Serial,
    pub term: u64,
}

/// Why a proposal did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("rejected: {0}")]
    Rejected(Rejection),
    #[error("this node is not the leader")]
    NotLeader { leader_url: Option<String> },
    #[error("{0}")]
    Unavailable(String),
}

pub struct RaftNode {
    raft: Raft,
    membership_lock: tokio::sync::Mutex<()>,
    /// Nodes that asked to join and are being added now.
    joining: std::sync::Mutex<BTreeSet<u64>>,
    state_machine: StateMachine,
    view: watch::Receiver<ClusterView>,
    epoch: Arc<Epoch>,
    net: Net,
    config: RaftNodeConfig,
}

impl RaftNode {
    /// Starts Raft over the node's index. On the first start of a node
    /// with `bootstrap`, it becomes the only voter of a new group. First,
    /// it carries out what a forced promotion or a rejoin left for this
    /// start (see [`PendingStep`]).
    pub async fn start(
        config: RaftNodeConfig,
        index: Arc<Index>,
        blobs: BlobStore,
        epoch: Arc<Epoch>,
        net: Net,
    ) -> Result<Arc<RaftNode>, ClusterError> {
        let raft_config = config
            .tuning
            .openraft_config(&config.cluster)
            .validate()
            .map_err(|e| ClusterError::Raft(format!("invalid Raft settings: {e}")))?;
        let raft_log = index.raft_log()?;
        let new_epoch = epoch.pending() == Some(PendingStep::NewEpoch);
        match epoch.pending() {
            Some(PendingStep::NewEpoch) => {
                tracing::warn!(
                    serial = %index.applied_serial()?,
                    "forced promotion: starting a new epoch over this node's index; the old Raft log is dropped"
                );
                raft_log.clear().await?;
                index.forget_raft_position().await?;
                remove_snapshots(&config.snapshot_dir)?;
                epoch.record_epoch_start(index.applied_serial()?.0)?;
            }
            Some(PendingStep::Reset { contacts }) => {
                tracing::warn!(
                    through = ?contacts,
                    "joining: emptying the index and the Raft log (blobs stay); the leader sends them again"
                );
                index.reset().await?;
                raft_log.clear().await?;
                remove_snapshots(&config.snapshot_dir)?;
                epoch.set_pending(Some(PendingStep::Join { contacts }))?;
            }
            Some(PendingStep::Join { .. }) | None => {}
        }
        let joining = matches!(epoch.pending(), Some(PendingStep::Join { .. }));
        let bootstrap = (config.bootstrap && !joining) || new_epoch;
        // Until the metrics say who leads, missing blobs come from the
        // members the stored membership names: a restarted node re-applies
        // committed entries before it hears from anyone.
        let peers = stored_peers(&index, &config.info)?;
        if epoch.fenced().is_none() && epoch.identity().is_some() && epoch.pending().is_none() {
            probe_for_newer_epoch(&net, &epoch, &peers, &config.info.http_url).await;
        }
        let (sources_tx, sources_rx) = watch::channel(peers);
        let state_machine = StateMachine::new(
            index.clone(),
            blobs,
            config.snapshot_dir.clone(),
            sources_rx,
            net.clone(),
        )?;
        let log = LogStore::new(raft_log);
        let network = Network {
            rpc_timeout: Duration::from_millis(config.tuning.rpc_timeout_ms),
            epoch: epoch.clone(),
            net: net.clone(),
        };
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            network,
            log,
            state_machine.clone(),
        )
        .await
        .map_err(|e| ClusterError::Raft(format!("starting Raft: {e}")))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if bootstrap && !initialized {
            if epoch.identity().is_none() {
                epoch.adopt(ClusterIdentity::first())?;
            }
            tracing::info!(id = config.id, "initializing a new one-voter Raft group");
            let members = BTreeMap::from([(config.id, config.info.clone())]);
            raft.initialize(members)
                .await
                .map_err(|e| ClusterError::Raft(format!("initializing the group: {e}")))?;
        } else if initialized && epoch.identity().is_none() {
            // A data dir from before cluster identities: its cluster is
            // epoch 1 of the one the configuration names.
            epoch.adopt(ClusterIdentity::named(config.cluster.clone(), 1))?;
        }

        let (view_tx, view) = watch::channel(initial_view(config.id));
        tokio::spawn(watch_metrics(raft.clone(), view_tx, sources_tx));
        let node = Arc::new(RaftNode {
            raft,
            membership_lock: tokio::sync::Mutex::new(()),
            joining: std::sync::Mutex::new(BTreeSet::new()),
            state_machine,
            view,
            epoch,
            net,
            config,
        });
        let mut fenced = node.epoch.watch_fenced();
        let raft = node.raft.clone();
        tokio::spawn(async move {
            if fenced.wait_for(|f| *f).await.is_ok() {
                tracing::warn!("fenced: stopping Raft on this node");
                if let Err(e) = raft.shutdown().await {
                    tracing::warn!(error = %e, "stopping Raft");
                }
            }
        });
        if new_epoch {
            node.seal_new_epoch().await?;
            node.epoch.set_pending(None)?;
        }
        if !node.epoch.fence_targets().is_empty() {
            tokio::spawn(fence_old_epoch(node.clone()));
        }
        if joining {
            tokio::spawn(join_group(node.clone()));
        }
        Ok(node)
    }

    /// The first start of a new epoch: once this node leads its one-voter
    /// group, snapshot the index and purge the log. The log holds only
    /// the new epoch's entries, so a member added later must start from a
    /// snapshot (the whole index), never from the log.
    async fn seal_new_epoch(&self) -> Result<(), ClusterError> {
        let fail = |what: String| ClusterError::Raft(format!("starting the new epoch: {what}"));
        let wait = || self.raft.wait(Some(SEAL_WAIT));
        // Leading, with its own first entry applied: a snapshot then
        // covers the whole index and a log position to purge up to.
        let led = wait()
            .metrics(
                |m| {
                    m.state == ServerState::Leader
                        && m.last_log_index.is_some()
                        && m.last_applied.as_ref().map(|l| l.index) == m.last_log_index
                },
                "this node elects itself and applies its first entry",
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        let applied = led.last_applied.map_or(0, |l| l.index);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| fail(e.to_string()))?;
        wait()
            .metrics(
                |m| m.snapshot.as_ref().is_some_and(|s| s.index >= applied),
                "a snapshot of the index",
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        self.raft
            .trigger()
            .purge_log(applied)
            .await
            .map_err(|e| fail(e.to_string()))?;
        wait()
            .metrics(
                |m| m.purged.as_ref().is_some_and(|p| p.index >= applied),
                "the log purged up to the snapshot",
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        tracing::info!(
            epoch = ?self.epoch.identity(),
            serial = %*self.applied().borrow(),
            "this node leads a new epoch: members added from now on start from its snapshot"
        );
        Ok(())
    }

    /// The cluster identity and fencing state of this node.
    pub fn epoch(&self) -> &Arc<Epoch> {
        &self.epoch
    }

    /// The node-to-node network this node calls and answers through.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Handles a `Join` call: on the leader, starts adding the caller (as
    /// a learner, then a voter) unless that is under way; elsewhere,
    /// names the leader.
    pub(crate) fn accept_join(
        self: &Arc<Self>,
        id: u64,
        info: NodeInfo,
    ) -> Result<hoard_proto::v1::JoinReply, String> {
        let view = self.view.borrow().clone();
        if view.role != NodeRoleKind::Leader {
            let leader_grpc = view
                .leader_id
                .and_then(|l| view.nodes.get(&l))
                .map(|n| n.grpc_addr.clone())
                .unwrap_or_default();
            return Ok(hoard_proto::v1::JoinReply {
                accepted: false,
                leader_grpc,
            });
        }
        if id == self.id() {
            return Err(format!("raft id {id} is the leader's own"));
        }
        if let Some(name) = &info.name {
            if let Some((other, _)) = view
                .nodes
                .iter()
                .find(|(other, n)| **other != id && n.name.as_ref() == Some(name))
            {
                return Err(format!("node {name:?} is already member {other}"));
            }
        }
        if let Some(existing) = view.nodes.get(&id) {
            if existing.grpc_addr != info.grpc_addr {
                return Err(format!(
                    "raft id {id} belongs to the member at {}",
                    existing.grpc_addr
                ));
            }
        }
        let accepted = hoard_proto::v1::JoinReply {
            accepted: true,
            leader_grpc: String::new(),
        };
        if view.voters.contains(&id) {
            return Ok(accepted);
        }
        let first = self
            .joining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        if first {
            let node = self.clone();
            tokio::spawn(async move {
                tracing::info!(id, %info, "a node of the old epoch rejoins");
                if let Err(e) = node.add_member(id, info, false).await {
                    tracing::warn!(id, error = %e, "adding the rejoining node failed; it will ask again");
                }
                node.joining
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
        }
        Ok(accepted)
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    pub fn view(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// The serial of the last applied event: every event up to it is
    /// committed.
    pub fn applied(&self) -> watch::Receiver<Serial> {
        self.state_machine.applied()
    }

    /// Why this node cannot go on applying, if it cannot: Raft stopped, or
    /// a committed event names a blob that no member could send.
    pub fn problem(&self) -> Option<String> {
        self.view
            .borrow()
            .problem
            .clone()
            .or_else(|| self.state_machine.stuck())
    }

    pub fn snapshots_installed(&self) -> u64 {
        self.state_machine.snapshots_installed()
    }

    /// The gRPC service other voters call.
    pub fn rpc_service(self: &Arc<Self>) -> RaftServer<impl hoard_proto::v1::raft_server::Raft> {
        RaftServer::new(RaftRpc {
            node: self.clone(),
            raft: self.raft.clone(),
            epoch: self.epoch.clone(),
            snapshot_dir: self.state_machine.snapshot_dir().to_owned(),
        })
        .max_decoding_message_size(64 << 20)
    }

    /// Waits until some leader is known, for at most `wait`.
    pub async fn wait_for_leader(&self, wait: Duration) -> Option<u64> {
        let mut view = self.view.clone();
        let known = tokio::time::timeout(wait, view.wait_for(|v| v.leader_id.is_some()))
            .await
            .is_ok_and(|r| r.is_ok());
        if known {
            view.borrow().leader_id
        } else {
            None
        }
    }

    /// Commits one event through Raft and returns its serial once it is
    /// applied here. The entry is durable on a majority of voters then.
    pub async fn propose(&self, event: &ReceivedEvent) -> Result<Committed, ProposeError> {
        let proposal = Proposal {
            event: String::from_utf8(event.bytes().to_vec())
                .map_err(|_| ProposeError::Unavailable("an event that is not UTF-8 JSON".into()))?,
        };
        match self.raft.client_write(proposal).await {
            Ok(response) => match response.data.0 {
                Some(Ok(serial)) => Ok(Committed {
                    serial,
                    term: response.log_id.leader_id.term,
                }),
                Some(Err(rejection)) => Err(ProposeError::Rejected(rejection)),
                None => Err(ProposeError::Unavailable(
                    "the committed entry carried no event".into(),
                )),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader_url: f.leader_node.map(|n| n.http_url),
                })
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(ProposeError::Unavailable(
                    "leadership changed before the write committed; retry it".into(),
                ))
            }
            Err(e) => Err(ProposeError::Unavailable(format!(
                "the write did not commit: {e}"
            ))),
        }
    }

    /// Adds a node: first as a learner, which the leader brings up to date
    /// (blobs included, as it applies), then, unless `learner_only`, as a
    /// voter. Membership changes are serialized: one at a time.
    pub async fn add_member(
        &self,
        id: u64,
        info: NodeInfo,
        learner_only: bool,
    ) -> Result<(), ProposeError> {
        let _one_at_a_time = self.membership_lock.lock().await;
        tracing::info!(id, %info, "adding a learner");
        self.raft
            .add_learner(id, info, true)
            .await
            .map_err(membership_error)?;
        if !learner_only {
            tracing::info!(id, "promoting the learner to voter");
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        }
        Ok(())
    }

    /// Removes a voter or learner from the group.
    pub async fn remove_member(&self, id: u64) -> Result<(), ProposeError> {
        let _one_at_a_time = self.membership_lock.lock().await;
        let view = self.view.borrow().clone();
        if view.voters.contains(&id) {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    /// Hands leadership to `to` (a voter that holds the whole log) and
    /// waits, bounded, until the cluster reports it as the leader.
    pub async fn transfer_leadership(&self, to: u64, wait: Duration) -> Result<(), ProposeError> {
        if !self.view.borrow().voters.contains(&to) {
            return Err(ProposeError::Unavailable(format!(
                "node {to} is not a voter"
            )));
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))?;
        // openraft#2088: a failed transfer says nothing; watch the leader.
        let mut view = self.view.clone();
        let took_over = tokio::time::timeout(wait, view.wait_for(|v| v.leader_id == Some(to)))
            .await
            .is_ok_and(|r| r.is_ok());
        if took_over {
            Ok(())
        } else {
            Err(ProposeError::Unavailable(format!(
                "node {to} did not take leadership within {wait:?}"
            )))
        }
    }

    /// Waits until this node (the leader) has applied everything that was
    /// committed before the call.
    pub async fn barrier(&self) -> Result<(), ClusterError> {
        self.raft
            .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Raft(format!("waiting for the log to be applied: {e}")))
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "stopping Raft");
        }
    }
}

fn membership_error(
    e: RaftError<super::TypeConfig, ClientWriteError<super::TypeConfig>>,
) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
            leader_url: f.leader_node.map(|n| n.http_url),
        },
        other => ProposeError::Unavailable(format!("the membership change failed: {other}")),
    }
}

/// Why a stopped node's index may not take events written offline (a
/// bulk import), if it may not. Only a one-member Raft group's may: a
/// voter of a larger group would be ahead of its peers, and a replica
/// follows its upstream's changelog.
pub fn offline_write_refusal(index: &Index) -> Result<Option<String>, ClusterError> {
    let Some(bytes) = index.raft_position()?.membership else {
        return Ok(Some(
            "this data dir belongs to no Raft group: a replica follows its upstream, and a \
             node that never ran has no repositories yet; import through a running node \
             with --url"
                .to_owned(),
        ));
    };
    let membership = super::codec::decode_membership(&bytes)
        .map_err(|e| ClusterError::Raft(format!("the stored membership: {e}")))?;
    let members = membership.nodes().count();
    Ok((members != 1).then(|| {
        format!(
            "this node is one of {members} members of a Raft group: events written here alone \
             would put it ahead of the others; import through the leader with --url"
        )
    }))
}

/// The gRPC addresses of the other members, as this node last applied
/// the membership.
fn stored_peers(index: &Index, me: &NodeInfo) -> Result<Vec<String>, ClusterError> {
    let Some(bytes) = index.raft_position()?.membership else {
        return Ok(Vec::new());
    };
    let membership = super::codec::decode_membership(&bytes)
        .map_err(|e| ClusterError::Raft(format!("the stored membership: {e}")))?;
    Ok(membership
        .nodes()
        .map(|(_, n)| n.grpc_addr.clone())
        .filter(|addr| *addr != me.grpc_addr)
        .collect())
}

/// Removes the snapshots of an epoch that this node leaves.
fn remove_snapshots(dir: &std::path::Path) -> Result<(), ClusterError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ClusterError::Store(hoard_store::StoreError::Io {
            context: format!("remove {}", dir.display()),
            source,
        })),
    }
}

/// How long a restarting voter asks its old peers whether a newer epoch
/// superseded them.
const PROBE_WAIT: Duration = Duration::from_millis(1500);

/// Before a restarted voter starts Raft, asks its peers whether a newer
/// epoch fenced them (a peer that was fenced refuses it, and the refusal
/// fences this node too). Without it, two old voters that come back
/// together could elect a leader of the old epoch before the new leader
/// reaches them.
async fn probe_for_newer_epoch(net: &Net, epoch: &Epoch, peers: &[String], own_url: &str) {
    if peers.is_empty() {
        return;
    }
    let calls = peers
        .iter()
        .map(|addr| send_fence(net, epoch, addr, own_url));
    let _ = tokio::time::timeout(PROBE_WAIT, futures_util::future::join_all(calls)).await;
    if let Some(f) = epoch.fenced() {
        tracing::error!(by = %f.identity, "a peer reports that {} superseded this node's epoch", f.identity);
    }
}

/// On the leader of a new epoch: calls each node of the old epoch until
/// it has been told (it is fenced then, or has rejoined already).
async fn fence_old_epoch(node: Arc<RaftNode>) {
    let epoch = node.epoch.clone();
    let leader_url = node.config.info.http_url.clone();
    loop {
        let targets = epoch.fence_targets();
        if targets.is_empty() {
            tracing::info!("every node of the old epoch has been fenced");
            return;
        }
        let calls = targets.iter().map(|addr| {
            let (net, epoch, leader_url) = (&node.net, &epoch, &leader_url);
            async move { (addr, send_fence(net, epoch, addr, leader_url).await) }
        });
        for (addr, outcome) in futures_util::future::join_all(calls).await {
            match outcome {
                Ok(outcome) => {
                    tracing::info!(node = %addr, %outcome, "told a node of the old epoch");
                    if let Err(e) = epoch.fence_target_done(addr) {
                        tracing::warn!(error = %e, "recording a fenced node");
                    }
                }
                Err(e) => tracing::debug!(node = %addr, error = %e, "not fenced yet"),
            }
        }
        tokio::time::sleep(FENCE_RETRY).await;
    }
}

/// On a node that `hoard rejoin` or a replica's promotion reset: asks
/// the leader to add it, until it is a voter.
async fn join_group(node: Arc<RaftNode>) {
    let epoch = node.epoch.clone();
    let Some(PendingStep::Join { contacts }) = epoch.pending() else {
        return;
    };
    let mut contacts = contacts;
    let mut next = 0usize;
    let mut asked = 0u64;
    loop {
        let view = node.view.borrow().clone();
        if view.voters.contains(&node.id()) {
            match epoch.set_pending(None) {
                Ok(()) => {
                    tracing::info!(epoch = ?epoch.identity(), "joined: this node is a voter");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "recording the join"),
            }
        }
        let target = match view.leader_id.and_then(|l| view.nodes.get(&l)) {
            Some(leader) => leader.grpc_addr.clone(),
            None if contacts.is_empty() => {
                tracing::error!("no member to join through");
                return;
            }
            None => contacts[next % contacts.len()].clone(),
        };
        let join = hoard_proto::v1::JoinRequest {
            raft_id: node.id(),
            grpc_addr: node.config.info.grpc_addr.clone(),
            http_url: node.config.info.http_url.clone(),
        };
        match send_join(&node.net, &epoch, &target, join).await {
            Ok(reply) if reply.accepted => {
                if asked == 0 {
                    tracing::info!(leader = %target, "the leader is adding this node");
                }
                asked += 1;
            }
            Ok(reply) if !reply.leader_grpc.is_empty() => {
                if !contacts.contains(&reply.leader_grpc) {
                    contacts.insert(0, reply.leader_grpc);
                }
                next = 0;
            }
            Ok(_) => {
                tracing::debug!(node = %target, "no leader known there yet");
                next += 1;
            }
            Err(e) => {
                tracing::warn!(node = %target, error = %e, "asking to join");
                next += 1;
            }
        }
        tokio::time::sleep(JOIN_RETRY).await;
    }
}

fn initial_view(id: u64) -> ClusterView {
    ClusterView {
        role: NodeRoleKind::Learner,
        node_id: id,
        leader_id: None,
        leader_url: None,
        term: 0,
        commit_index: 0,
        voters: BTreeSet::new(),
        configs: Vec::new(),
        learners: BTreeSet::new(),
        nodes: BTreeMap::new(),
        problem: None,
    }
}

/// Keeps the cluster view and the list of blob sources up to date from
/// openraft's metrics. The metrics are cloned out of the watch at once:
/// holding the borrow can deadlock openraft.
async fn watch_metrics(
    raft: Raft,
    view: watch::Sender<ClusterView>,
    blob_sources: watch::Sender<Vec<String>>,
) {
    let mut metrics = raft.metrics();
    loop {
        let m = metrics.borrow_and_update().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let learners: BTreeSet<u64> = membership.learner_ids().collect();
        let nodes: BTreeMap<u64, NodeInfo> =
            membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let role = match m.state {
            ServerState::Leader => NodeRoleKind::Leader,
            ServerState::Follower => NodeRoleKind::Follower,
            ServerState::Candidate => NodeRoleKind::Candidate,
            ServerState::Learner | ServerState::Shutdown => NodeRoleKind::Learner,
        };
        let leader_url = m
            .current_leader
            .and_then(|id| nodes.get(&id))
            .map(|n| n.http_url.clone());
        let next = ClusterView {
            role,
            node_id: m.id,
            leader_id: m.current_leader,
            leader_url,
            term: m.current_term,
            commit_index: m.cluster_committed.map_or(0, |c| c.index),
            voters,
            configs: membership.get_joint_config().clone(),
            learners,
            problem: m.running_state.as_ref().err().map(|e| e.to_string()),
            nodes: nodes.clone(),
        };
        view.send_if_modified(|v| {
            let changed = *v != next;
            *v = next.clone();
            changed
        });
        // Missing blobs come from the leader first, then the other members.
        let mut sources: Vec<String> = Vec::new();
        if let Some(leader) = m.current_leader.and_then(|id| nodes.get(&id)) {
            sources.push(leader.grpc_addr.clone());
        }
        for (id, node) in &nodes {
            if *id != m.id && !sources.contains(&node.grpc_addr) {
                sources.push(node.grpc_addr.clone());
            }
        }
        blob_sources.send_if_modified(|s| {
            let changed = *s != sources;
            *s = sources;
            changed
        });
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
