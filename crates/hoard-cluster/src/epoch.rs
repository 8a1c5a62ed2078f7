//! Which cluster, and which epoch of it, a node belongs to; whether a
//! newer epoch has fenced it; and the start-up steps that a forced
//! promotion or a rejoin leaves for the next start.
//!
//! A forced promotion (`hoard promote --force`) makes one node the only
//! voter of a new epoch: a new cluster id, with the epoch one higher.
//! Every Raft RPC carries the sender's cluster id and epoch in its
//! metadata. A node of the old epoch is refused, and learns from the
//! refusal (or from the new leader's `Fence` call) that it is fenced: it
//! stops voting, replicating and writing, and says so in its status and
//! log until `hoard rejoin` resets it from the new leader.
//!
//! The state is one small JSON file in the data dir, written durably on
//! every change: it must survive a restart, or a fenced node would wake
//! up as a voter of the old epoch again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Status;

use crate::ClusterError;

const CLUSTER_HEADER: &str = "x-hoard-cluster";
const EPOCH_HEADER: &str = "x-hoard-epoch";
const CONTACT_GRPC_HEADER: &str = "x-hoard-contact-grpc";
const CONTACT_URL_HEADER: &str = "x-hoard-contact-url";
const SINCE_HEADER: &str = "x-hoard-epoch-since";
const PREVIOUS_HEADER: &str = "x-hoard-epoch-previous";
/// Set on a refusal that tells the caller a newer epoch superseded it;
/// the other headers then describe that epoch.
const SUPERSEDED_HEADER: &str = "x-hoard-superseded";

const STATE_FILE: &str = "cluster-state.json";

/// One epoch of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    pub cluster_id: String,
    pub epoch: u64,
    /// The last serial of the epoch this one continues (0 for the first):
    /// history up to it is shared with that epoch, and what follows is not.
    #[serde(default)]
    pub since_serial: u64,
    /// The cluster id of the epoch this one continues.
    #[serde(default)]
    pub previous: Option<String>,
}

impl std::fmt::Display for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} (cluster {})", self.epoch, self.cluster_id)
    }
}

impl ClusterIdentity {
    /// The first epoch of a new cluster.
    pub fn first() -> ClusterIdentity {
        ClusterIdentity::named(random_id(), 1)
    }

    /// An epoch with no predecessor.
    pub fn named(cluster_id: String, epoch: u64) -> ClusterIdentity {
        ClusterIdentity {
            cluster_id,
            epoch,
            since_serial: 0,
            previous: None,
        }
    }

    /// The epoch after this one, which holds its history up to `serial`.
    pub fn successor(&self, serial: u64) -> ClusterIdentity {
        ClusterIdentity {
            cluster_id: random_id(),
            epoch: self.epoch + 1,
            since_serial: serial,
            previous: Some(self.cluster_id.clone()),
        }
    }

    /// Whether both name the same epoch of the same cluster.
    pub fn same_epoch(&self, other: &ClusterIdentity) -> bool {
        self.cluster_id == other.cluster_id && self.epoch == other.epoch
    }
}

fn random_id() -> String {
    let id: [u8; 8] = rand::random();
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The epoch that superseded this node, and whom to ask about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedBy {
    pub identity: ClusterIdentity,
    /// A node of the new epoch (its leader, when the fence came from it).
    pub contact_grpc: String,
    pub contact_url: String,
}

/// What the next start must do before Raft starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum PendingStep {
    /// After a forced promotion: forget the Raft log (the index stays),
    /// start a one-voter group of the new epoch, snapshot it and purge
    /// the log, so that every later member starts from the whole index.
    NewEpoch,
    /// After `hoard rejoin`, or a replica's planned promotion: empty the
    /// index and the Raft log (blobs stay), then join through `contacts`
    /// (gRPC addresses of members; any of them names the leader).
    Reset { contacts: Vec<String> },
    /// After the reset: ask the leader to add this node until it votes.
    Join { contacts: Vec<String> },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ClusterState {
    identity: Option<ClusterIdentity>,
    fenced: Option<FencedBy>,
    /// Makes this node a voter with this Raft id, whatever its
    /// configuration says: a promoted replica stays a voter.
    voter_id: Option<u64>,
    pending: Option<PendingStep>,
    /// The old epoch's nodes that the new leader has still to fence.
    fence_targets: Vec<String>,
}

/// How this node is reached, for the headers of its calls.
#[derive(Clone, Debug)]
pub struct Contact {
    pub grpc_addr: String,
    pub http_url: String,
}

/// A node's cluster identity and fencing state, shared by the Raft
/// network, its RPC service, the writer and the status page.
pub struct Epoch {
    path: PathBuf,
    me: Contact,
    state: Mutex<ClusterState>,
    /// On a replica: the identity its upstream's heartbeats carry.
    observed: Mutex<Option<ClusterIdentity>>,
    /// Becomes true when a newer epoch fences this node.
    fenced_tx: tokio::sync::watch::Sender<bool>,
}

/// How an incoming call relates to this node's epoch.
pub(crate) enum Admission {
    Current,
    /// The caller is of a newer epoch; this node is fenced now.
    Superseded,
}

impl Epoch {
    pub fn open(data_dir: &Path, me: Contact) -> Result<Arc<Epoch>, ClusterError> {
        let path = data_dir.join(STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ClusterError::Raft(format!("{} is not valid: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ClusterState::default(),
            Err(e) => {
                return Err(ClusterError::Store(hoard_store::StoreError::Io {
                    context: format!("read {}", path.display()),
                    source: e,
                }))
            }
        };
        let fenced = state.fenced.is_some();
        let epoch = Arc::new(Epoch {
            path,
            me,
            state: Mutex::new(state),
            observed: Mutex::new(None),
            fenced_tx: tokio::sync::watch::Sender::new(fenced),
        });
        if let Some(f) = epoch.fenced() {
            tracing::error!(by = %f.identity, leader = %f.contact_url, "this node is fenced: a newer epoch superseded it; run `hoard rejoin` to reset it from the new leader");
        }
        Ok(epoch)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state and writes it durably before returning; on a
    /// write failure the change is undone.
    fn update<T>(&self, change: impl FnOnce(&mut ClusterState) -> T) -> Result<T, ClusterError> {
        let mut state = self.state();
        let before = state.clone();
        let out = change(&mut state);
        let bytes = serde_json::to_vec_pretty(&*state)
            .map_err(|e| ClusterError::Raft(format!("encoding the cluster state: {e}")))?;
        if let Err(e) = hoard_store::write_file_durable(&self.path, &bytes, 0o644) {
            *state = before;
            return Err(e.into());
        }
        Ok(out)
    }

    pub fn identity(&self) -> Option<ClusterIdentity> {
        self.state().identity.clone()
    }

    /// The identity this node holds history of: its own, or on a replica
    /// the one its upstream reported.
    pub fn known_identity(&self) -> Option<ClusterIdentity> {
        self.identity().or_else(|| {
            self.observed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    pub fn fenced(&self) -> Option<FencedBy> {
        self.state().fenced.clone()
    }

    /// Becomes true when a newer epoch fences this node.
    pub(crate) fn watch_fenced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.fenced_tx.subscribe()
    }

    pub fn voter_id(&self) -> Option<u64> {
        self.state().voter_id
    }

    pub fn pending(&self) -> Option<PendingStep> {
        self.state().pending.clone()
    }

    pub(crate) fn set_pending(&self, step: Option<PendingStep>) -> Result<(), ClusterError> {
        self.update(|s| s.pending = step)
    }

    pub(crate) fn fence_targets(&self) -> Vec<String> {
        self.state().fence_targets.clone()
    }

    pub(crate) fn fence_target_done(&self, addr: &str) -> Result<(), ClusterError> {
        self.update(|s| s.fence_targets.retain(|a| a != addr))
    }

    pub(crate) fn adopt(&self, identity: ClusterIdentity) -> Result<(), ClusterError> {
        tracing::info!(%identity, "this node belongs to {identity} now");
        self.update(|s| s.identity = Some(identity))
    }

    /// Records the identity that an upstream's heartbeat carries.
    pub fn observe(&self, identity: ClusterIdentity) {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        if observed.as_ref().is_none_or(|o| o.epoch <= identity.epoch) {
            *observed = Some(identity);
        }
    }

    fn fence(&self, by: FencedBy) {
        if self.fenced().is_some() {
            return;
        }
        tracing::error!(by = %by.identity, leader = %by.contact_url, "fenced: {} superseded this node's epoch; it no longer votes or writes. Run `hoard rejoin` to reset it from the new leader", by.identity);
        if let Err(e) = self.update(|s| s.fenced = Some(by.clone())) {
            // Fenced for this run all the same: the state is in memory.
            tracing::error!(error = %e, "could not record the fence durably");
            self.state().fenced = Some(by);
        }
        self.fenced_tx.send_replace(true);
    }

    /// Starts a new epoch with this node as its only voter, at the next
    /// start (a forced promotion). `fence` lists the old epoch's nodes.
    pub fn begin_new_epoch(
        &self,
        voter_id: u64,
        fence: Vec<String>,
        last_serial: u64,
    ) -> Result<ClusterIdentity, ClusterError> {
        if let Some(f) = self.fenced() {
            return Err(ClusterError::Raft(format!(
                "this node is fenced by {}: it cannot start an epoch; run `hoard rejoin`",
                f.identity
            )));
        }
        let identity = match self.known_identity() {
            Some(old) => old.successor(last_serial),
            // History from before cluster identities: call it epoch 1.
            None => ClusterIdentity::named(random_id(), 1).successor(last_serial),
        };
        let me = self.me.grpc_addr.clone();
        self.update(|s| {
            s.identity = Some(identity.clone());
            s.voter_id = Some(voter_id);
            s.pending = Some(PendingStep::NewEpoch);
            s.fence_targets = fence.into_iter().filter(|a| *a != me).collect();
        })?;
        Ok(identity)
    }

    /// Records where the new epoch's history starts, once the node holds
    /// no more of the old one than it will keep (at its restart).
    pub(crate) fn record_epoch_start(&self, last_serial: u64) -> Result<(), ClusterError> {
        self.update(|s| {
            if let Some(identity) = &mut s.identity {
                identity.since_serial = last_serial;
            }
        })
    }

    /// Resets this fenced node at the next start and has it join the
    /// epoch that fenced it, as a voter with `voter_id`.
    pub fn begin_rejoin(&self, voter_id: u64) -> Result<FencedBy, ClusterError> {
        let Some(by) = self.fenced() else {
            return Err(ClusterError::Raft(
                "this node is not fenced by a newer epoch: there is nothing to rejoin".into(),
            ));
        };
        self.update(|s| {
            s.identity = Some(by.identity.clone());
            s.fenced = None;
            s.voter_id = Some(voter_id);
            s.fence_targets.clear();
            s.pending = Some(PendingStep::Reset {
                contacts: vec![by.contact_grpc.clone()],
            });
        })?;
        self.fenced_tx.send_replace(false);
        Ok(by)
    }

    /// For a node that is stopped: make its next start reset it and join
    /// `identity` through `contact_grpc`, as voter `voter_id`, without
    /// ever running the old epoch again (`hoard rejoin --leader`).
    pub fn prepare_rejoin(
        &self,
        identity: ClusterIdentity,
        voter_id: u64,
        contact_grpc: String,
    ) -> Result<(), ClusterError> {
        if self
            .identity()
            .is_some_and(|mine| mine.epoch >= identity.epoch)
        {
            return Err(ClusterError::Raft(format!(
                "this node is of {}, not older than {identity}: there is nothing to rejoin",
                self.identity().map_or_else(String::new, |i| i.to_string())
            )));
        }
        self.update(|s| {
            s.identity = Some(identity);
            s.fenced = None;
            s.voter_id = Some(voter_id);
            s.fence_targets.clear();
            s.pending = Some(PendingStep::Reset {
                contacts: vec![contact_grpc],
            });
        })
    }

    /// Has this replica join its upstreams' Raft group as a voter with
    /// `voter_id`, at the next start: its index is emptied (blobs stay)
    /// and rebuilt from the leader, because a replica's serials do not
    /// say where in the Raft log it stands.
    pub fn begin_join(
        &self,
        voter_id: u64,
        contacts: Vec<String>,
    ) -> Result<ClusterIdentity, ClusterError> {
        let Some(identity) = self.known_identity() else {
            return Err(ClusterError::Raft(
                "no upstream has reported its cluster id and epoch yet; wait until this replica follows one".into(),
            ));
        };
        self.update(|s| {
            s.identity = Some(identity.clone());
            s.voter_id = Some(voter_id);
            s.pending = Some(PendingStep::Reset { contacts });
        })?;
        Ok(identity)
    }

    /// Names this node's cluster, epoch and address on an outgoing call.
    pub(crate) fn attach(&self, metadata: &mut MetadataMap) {
        if let Some(identity) = self.known_identity() {
            insert_identity(metadata, &identity);
        }
        insert(metadata, CONTACT_GRPC_HEADER, &self.me.grpc_addr);
        insert(metadata, CONTACT_URL_HEADER, &self.me.http_url);
    }

    /// Decides whether an incoming call may go on. A caller of a newer
    /// epoch fences this node; a caller of an older one is refused with
    /// a status that fences it.
    #[allow(clippy::result_large_err)]
    pub(crate) fn admit(&self, metadata: &MetadataMap) -> Result<Admission, Status> {
        let theirs = identity_in(metadata);
        if let Some(f) = self.fenced() {
            if theirs.as_ref().is_some_and(|t| t.same_epoch(&f.identity)) {
                return Ok(Admission::Superseded);
            }
            return Err(superseded(
                &f,
                format!(
                    "this node was superseded by {} (leader {}); it takes no Raft calls",
                    f.identity, f.contact_url
                ),
            ));
        }
        let Some(theirs) = theirs else {
            return Err(Status::failed_precondition(
                "the caller sent no cluster id and epoch",
            ));
        };
        let Some(mine) = self.identity() else {
            // A new node, not yet a member: it joins whoever adds it.
            self.adopt(theirs)
                .map_err(|e| Status::internal(e.to_string()))?;
            return Ok(Admission::Current);
        };
        if theirs.same_epoch(&mine) {
            return Ok(Admission::Current);
        }
        if theirs.epoch > mine.epoch {
            self.fence(FencedBy {
                identity: theirs,
                contact_grpc: header(metadata, CONTACT_GRPC_HEADER).unwrap_or_default(),
                contact_url: header(metadata, CONTACT_URL_HEADER).unwrap_or_default(),
            });
            return Ok(Admission::Superseded);
        }
        if theirs.epoch < mine.epoch {
            let by = FencedBy {
                identity: mine.clone(),
                contact_grpc: self.me.grpc_addr.clone(),
                contact_url: self.me.http_url.clone(),
            };
            tracing::warn!(caller = ?header(metadata, CONTACT_GRPC_HEADER), "refused a call from {theirs}: this cluster is at {mine}");
            return Err(superseded(
                &by,
                format!(
                    "the caller is of {theirs}, superseded by {mine}: run `hoard rejoin` on it"
                ),
            ));
        }
        Err(Status::failed_precondition(format!(
            "the caller belongs to another cluster ({theirs}); this node is of {mine}"
        )))
    }

    /// Decides whether a replica that holds history up to `since`, of the
    /// epoch its metadata names, may follow this node. A replica of the
    /// epoch before this one may, as long as its history is a prefix of
    /// this one's; a replica of a newer epoch must not follow this stale
    /// node.
    #[allow(clippy::result_large_err)]
    pub(crate) fn admit_subscriber(
        &self,
        metadata: &MetadataMap,
        since: u64,
    ) -> Result<(), Status> {
        let (Some(theirs), Some(mine)) = (identity_in(metadata), self.known_identity()) else {
            // Either side knows no cluster yet: nothing to check against.
            return Ok(());
        };
        if theirs.same_epoch(&mine) {
            return Ok(());
        }
        if theirs.epoch > mine.epoch {
            return Err(Status::failed_precondition(format!(
                "this node holds {mine}, older than the follower's {theirs}: follow a node of the newer epoch"
            )));
        }
        if mine.previous.as_deref() == Some(theirs.cluster_id.as_str())
            && theirs.epoch + 1 == mine.epoch
        {
            if since <= mine.since_serial {
                return Ok(());
            }
            return Err(Status::failed_precondition(format!(
                "this follower holds serials up to {since} of {theirs}, but {mine} continues that history only up to serial {}: \
                 its later serials differ. Rebuild the follower (start it with an empty data dir) to follow this cluster",
                mine.since_serial
            )));
        }
        Err(Status::failed_precondition(format!(
            "the follower's history ({theirs}) is not one this node continues ({mine}); rebuild the follower with an empty data dir"
        )))
    }

    /// Learns from a refused call that a newer epoch superseded this node.
    pub(crate) fn learn_from(&self, status: &Status) {
        let metadata = status.metadata();
        if header(metadata, SUPERSEDED_HEADER).is_none() {
            return;
        }
        let Some(theirs) = identity_in(metadata) else {
            return;
        };
        if self
            .identity()
            .is_some_and(|mine| theirs.epoch > mine.epoch)
        {
            self.fence(FencedBy {
                identity: theirs,
                contact_grpc: header(metadata, CONTACT_GRPC_HEADER).unwrap_or_default(),
                contact_url: header(metadata, CONTACT_URL_HEADER).unwrap_or_default(),
            });
        }
    }
}

fn insert(metadata: &mut MetadataMap, key: &'static str, value: &str) {
    if let Ok(value) = MetadataValue::try_from(value) {
        metadata.insert(key, value);
    }
}

fn header(metadata: &MetadataMap, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn insert_identity(metadata: &mut MetadataMap, identity: &ClusterIdentity) {
    insert(metadata, CLUSTER_HEADER, &identity.cluster_id);
    insert(metadata, EPOCH_HEADER, &identity.epoch.to_string());
    insert(metadata, SINCE_HEADER, &identity.since_serial.to_string());
    if let Some(previous) = &identity.previous {
        insert(metadata, PREVIOUS_HEADER, previous);
    }
}

fn identity_in(metadata: &MetadataMap) -> Option<ClusterIdentity> {
    Some(ClusterIdentity {
        cluster_id: header(metadata, CLUSTER_HEADER)?,
        epoch: header(metadata, EPOCH_HEADER)?.parse().ok()?,
        since_serial: header(metadata, SINCE_HEADER)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        previous: header(metadata, PREVIOUS_HEADER),
    })
}

/// A refusal that tells the caller which epoch superseded it.
fn superseded(by: &FencedBy, message: String) -> Status {
    let mut metadata = MetadataMap::new();
    insert(&mut metadata, SUPERSEDED_HEADER, "1");
    insert_identity(&mut metadata, &by.identity);
    insert(&mut metadata, CONTACT_GRPC_HEADER, &by.contact_grpc);
    insert(&mut metadata, CONTACT_URL_HEADER, &by.contact_url);
    Status::with_metadata(tonic::Code::FailedPrecondition, message, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch_in(dir: &Path, grpc: &str) -> Arc<Epoch> {
        Epoch::open(
            dir,
            Contact {
                grpc_addr: grpc.into(),
                http_url: format!("http://{grpc}"),
            },
        )
        .unwrap()
    }

    fn call_from(sender: &Epoch) -> MetadataMap {
        let mut m = MetadataMap::new();
        sender.attach(&mut m);
        m
    }

    #[test]
    fn a_newer_epoch_fences_the_old_one_in_both_directions() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let old_a = epoch_in(dirs[0].path(), "a:1");
        let old_b = epoch_in(dirs[1].path(), "b:1");
        let first = ClusterIdentity::first();
        old_a.adopt(first.clone()).unwrap();
        old_b.adopt(first.clone()).unwrap();
        assert!(matches!(
            old_a.admit(&call_from(&old_b)),
            Ok(Admission::Current)
        ));

        let promoted = epoch_in(dirs[2].path(), "c:1");
        promoted.observe(first.clone());
        let second = promoted.begin_new_epoch(9, vec!["a:1".into()], 7).unwrap();
        assert_eq!(second.epoch, 2);
        assert_ne!(second.cluster_id, first.cluster_id);

        // The new leader's call fences the old node...
        assert!(matches!(
            old_a.admit(&call_from(&promoted)),
            Ok(Admission::Superseded)
        ));
        assert_eq!(old_a.fenced().unwrap().identity, second);
        // ...which then refuses its old peer, and the refusal fences it.
        let refusal = match old_a.admit(&call_from(&old_b)) {
            Err(status) => status,
            Ok(_) => panic!("a fenced node admitted an old-epoch call"),
        };
        old_b.learn_from(&refusal);
        assert_eq!(old_b.fenced().unwrap().contact_url, "http://c:1");

        // An old-epoch caller is refused by the new epoch as well.
        let refusal = match promoted.admit(&call_from(&epoch_in(dirs[0].path(), "a:1"))) {
            Err(status) => status,
            Ok(_) => panic!("the new epoch admitted an old-epoch call"),
        };
        assert_eq!(refusal.code(), tonic::Code::FailedPrecondition);

        // The fence survives a restart; rejoin clears it.
        let reopened = epoch_in(dirs[0].path(), "a:1");
        assert_eq!(reopened.fenced().unwrap().identity, second);
        reopened.begin_rejoin(1).unwrap();
        let reopened = epoch_in(dirs[0].path(), "a:1");
        assert!(reopened.fenced().is_none());
        assert_eq!(reopened.identity(), Some(second));
        assert!(matches!(
            reopened.pending(),
            Some(PendingStep::Reset { .. })
        ));
    }

    #[test]
    fn another_cluster_of_the_same_epoch_is_refused_without_a_fence() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = epoch_in(d1.path(), "a:1");
        let b = epoch_in(d2.path(), "b:1");
        a.adopt(ClusterIdentity::first()).unwrap();
        b.adopt(ClusterIdentity::first()).unwrap();
        let refusal = match a.admit(&call_from(&b)) {
            Err(status) => status,
            Ok(_) => panic!("admitted another cluster"),
        };
        b.learn_from(&refusal);
        assert!(a.fenced().is_none() && b.fenced().is_none());
    }

    #[test]
    fn a_new_node_adopts_the_identity_of_the_first_caller() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = epoch_in(d1.path(), "a:1");
        leader.adopt(ClusterIdentity::first()).unwrap();
        let joiner = epoch_in(d2.path(), "b:1");
        assert!(matches!(
            joiner.admit(&call_from(&leader)),
            Ok(Admission::Current)
        ));
        assert_eq!(joiner.identity(), leader.identity());
        assert_eq!(epoch_in(d2.path(), "b:1").identity(), leader.identity());
    }

    #[test]
    fn a_replica_of_the_old_epoch_may_follow_the_new_one_only_with_a_prefix_of_its_history() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let old = ClusterIdentity::first();
        let replica = epoch_in(d1.path(), "r:1");
        replica.observe(old.clone());
        let leader = epoch_in(d2.path(), "l:1");
        leader.observe(old.clone());
        leader.begin_new_epoch(4, Vec::new(), 0).unwrap();
        leader.record_epoch_start(100).unwrap();

        let call = call_from(&replica);
        assert!(leader.admit_subscriber(&call, 100).is_ok());
        let refusal = leader.admit_subscriber(&call, 101).unwrap_err();
        assert!(
            refusal.message().contains("Rebuild"),
            "{}",
            refusal.message()
        );

        // The replica learns the new epoch, and then refuses to go back.
        replica.observe(leader.identity().unwrap());
        assert!(leader.admit_subscriber(&call_from(&replica), 150).is_ok());
        let stale = epoch_in(tempfile::tempdir().unwrap().path(), "s:1");
        stale.observe(old);
        assert!(stale.admit_subscriber(&call_from(&replica), 150).is_err());
        // An unrelated cluster's replica is refused.
        let stranger = epoch_in(tempfile::tempdir().unwrap().path(), "x:1");
        stranger.observe(ClusterIdentity::first());
        assert!(leader.admit_subscriber(&call_from(&stranger), 1).is_err());
    }
}
