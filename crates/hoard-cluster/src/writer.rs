//! The one seam every write goes through: make the blobs durable, then
//! commit the event through Raft. Handlers hand over staged blobs and an
//! event, and get a serial or a [`WriteError`] that says what the client
//! should do (fix the request, go to the leader, or retry).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hoard_core::{Event, Sha256};
use hoard_proto::v1::blobs_client::BlobsClient;
use hoard_proto::v1::PullRequest;
use hoard_store::{BlobStore, ReceivedEvent, Rejection, StagedBlob, StoreError};

use crate::raft::{Committed, ProposeError, RaftNode};

/// How long a proposal may wait to commit.
const COMMIT_DEADLINE: Duration = Duration::from_secs(10);

/// How long a voter may take to pull an upload's blobs.
const BLOB_PULL_DEADLINE: Duration = Duration::from_secs(60);

/// Whether `holders` is a majority of every configuration (an empty list
/// of configurations is never satisfied).
fn majority_in_every(configs: &[BTreeSet<u64>], holders: &BTreeSet<u64>) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|c| c.intersection(holders).count() * 2 > c.len())
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The index refused the event; every node refuses it alike.
    #[error("{0}")]
    Rejected(Rejection),
    /// Only the leader writes; this is where it is, if known.
    #[error("this node is not the leader")]
    NotLeader { leader_url: Option<String> },
    /// No write can commit right now (an election, no quorum): retry.
    #[error("{reason}")]
    Unavailable {
        retry_after: Duration,
        reason: String,
    },
    /// This node's storage failed (a full disk, say).
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Writer {
    raft: Arc<RaftNode>,
    blobs: BlobStore,
}

impl Writer {
    pub fn new(raft: Arc<RaftNode>, blobs: BlobStore) -> Self {
        Writer { raft, blobs }
    }

    /// Makes `staged` durable, then commits `event` and returns its serial
    /// once it is committed and applied on this node. A crash between the
    /// two steps leaves unlisted blobs (fsck reports them as orphans),
    /// never a listed file without its blob.
    pub async fn commit(
        &self,
        staged: Vec<StagedBlob>,
        event: Event,
    ) -> Result<Committed, WriteError> {
        if let Some(f) = self.raft.epoch().fenced() {
            // A newer epoch writes now; its leader takes the write.
            return Err(WriteError::NotLeader {
                leader_url: Some(f.contact_url).filter(|u| !u.is_empty()),
            });
        }
        if self.raft.view().borrow().role != crate::NodeRoleKind::Leader {
            // Cheap refusal before the blobs are published here.
            let leader_url = self.raft.view().borrow().leader_url.clone();
            return Err(self.not_leader(leader_url));
        }
        let mut shas = Vec::with_capacity(staged.len());
        for blob in staged {
            shas.push(self.blobs.commit(blob).await?);
        }
        if !shas.is_empty() {
            self.replicate_blobs(&shas).await?;
        }
        let event = ReceivedEvent::encode(event);
        // A leader cut off from its quorum never commits; answer before the
        // client gives up, so that it retries elsewhere. The entry may still
        // commit later: a retry of the same upload then finds identical
        // bytes and succeeds without a second event.
        let proposed = tokio::time::timeout(COMMIT_DEADLINE, self.raft.propose(&event))
            .await
            .unwrap_or_else(|_| {
                Err(ProposeError::Unavailable(format!(
                    "the write did not commit within {COMMIT_DEADLINE:?} (is a majority of voters reachable?); retry"
                )))
            });
        match proposed {
            Ok(committed) => Ok(committed),
            Err(ProposeError::Rejected(r)) => Err(WriteError::Rejected(r)),
            Err(ProposeError::NotLeader { leader_url }) => Err(self.not_leader(leader_url)),
            Err(ProposeError::Unavailable(reason)) => Err(WriteError::Unavailable {
                retry_after: Duration::from_secs(1),
                reason,
            }),
        }
    }

    /// Has the other voters pull `shas` from this node, and returns once a
    /// majority of every voter configuration holds them durably (this node
    /// counts). Pulls that are still running go on in the background, so
    /// the slower voters get the blobs too.
    async fn replicate_blobs(&self, shas: &[Sha256]) -> Result<(), WriteError> {
        let view = self.raft.view().borrow().clone();
        let me = view.node_id;
        let holders = BTreeSet::from([me]);
        if majority_in_every(&view.configs, &holders) {
            return Ok(());
        }
        let from = view
            .nodes
            .get(&me)
            .map(|n| n.grpc_addr.clone())
            .unwrap_or_default();
        let request = PullRequest {
            sha256s: shas.iter().map(Sha256::to_hex).collect(),
            from,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let net = self.raft.net().clone();
        let mut asked = 0;
        for (id, node) in &view.nodes {
            if *id == me || !view.voters.contains(id) {
                continue;
            }
            asked += 1;
            let (tx, addr, request, id, net) = (
                tx.clone(),
                node.grpc_addr.clone(),
                request.clone(),
                *id,
                net.clone(),
            );
            tokio::spawn(async move {
                let result = tokio::time::timeout(BLOB_PULL_DEADLINE, async {
                    let channel = net.shared_channel(&addr).await.map_err(|e| e.to_string())?;
                    BlobsClient::new(channel)
                        .pull(request)
                        .await
                        .map(|_| ())
                        .map_err(|s| s.message().to_owned())
                })
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {BLOB_PULL_DEADLINE:?}")));
                let _ = tx.send((id, result));
            });
        }
        drop(tx);
        let mut holders = holders;
        let mut failures = Vec::new();
        for _ in 0..asked {
            let Some((id, result)) = rx.recv().await else {
                break;
            };
            match result {
                Ok(()) => {
                    holders.insert(id);
                    if majority_in_every(&view.configs, &holders) {
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::warn!(voter = id, error = %e, "a voter could not pull an upload's blobs");
                    failures.push(format!("voter {id}: {e}"));
                }
            }
        }
        Err(WriteError::Unavailable {
            retry_after: Duration::from_secs(2),
            reason: format!(
                "the upload could not be stored on a majority of voters ({}); retry",
                failures.join("; ")
            ),
        })
    }

    fn not_leader(&self, leader_url: Option<String>) -> WriteError {
        match leader_url {
            Some(url) => WriteError::NotLeader {
                leader_url: Some(url),
            },
            None => WriteError::Unavailable {
                retry_after: Duration::from_secs(1),
                reason: "no leader is elected right now; retry shortly".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn majority_of_one_config() {
        let configs = vec![set(&[1, 2, 3])];
        assert!(!majority_in_every(&configs, &set(&[1])));
        assert!(majority_in_every(&configs, &set(&[1, 3])));
    }

    #[test]
    fn joint_config_needs_a_majority_of_each() {
        let configs = vec![set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert!(!majority_in_every(&configs, &set(&[1, 2, 3])));
        assert!(majority_in_every(&configs, &set(&[1, 3, 4])));
    }

    #[test]
    fn no_config_is_never_satisfied() {
        assert!(!majority_in_every(&[], &set(&[1])));
    }
}
