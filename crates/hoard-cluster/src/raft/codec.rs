//! hoard's own on-disk encoding of Raft log entries, votes, log ids and
//! memberships. openraft's serde derives are not a stable format, so what
//! the store keeps is these plain structs, as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use openraft::entry::RaftEntry;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::{EntryPayload, Membership, StoredMembership};
use serde::{Deserialize, Serialize};

use super::{NodeInfo, Proposal, TypeConfig};

pub(crate) type LogId = openraft::LogId<LeaderId<u64, u64>>;
pub(crate) type Vote = openraft::impls::Vote<LeaderId<u64, u64>>;
pub(crate) type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub(crate) type StoredMembershipOf = StoredMembership<LeaderId<u64, u64>, u64, NodeInfo>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct DiskLogId {
    term: u64,
    leader: u64,
    index: u64,
}

impl From<&LogId> for DiskLogId {
    fn from(id: &LogId) -> Self {
        DiskLogId {
            term: id.leader_id.term,
            leader: id.leader_id.node_id,
            index: id.index,
        }
    }
}

impl From<DiskLogId> for LogId {
    fn from(d: DiskLogId) -> Self {
        openraft::LogId {
            leader_id: LeaderId {
                term: d.term,
                node_id: d.leader,
            },
            index: d.index,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct DiskMembership {
    configs: Vec<BTreeSet<u64>>,
    /// Pairs, not a map: JSON map keys are strings, which a flattened
    /// (buffered) entry cannot turn back into numbers.
    nodes: Vec<(u64, NodeInfo)>,
}

impl DiskMembership {
    fn of(m: &Membership<u64, NodeInfo>) -> Self {
        DiskMembership {
            configs: m.get_joint_config().clone(),
            nodes: m.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        }
    }

    fn into_membership(self) -> io::Result<Membership<u64, NodeInfo>> {
        let nodes: BTreeMap<u64, NodeInfo> = self.nodes.into_iter().collect();
        Membership::new(self.configs, nodes).map_err(invalid)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum DiskPayload {
    Blank,
    Event { event: String },
    Membership { membership: DiskMembership },
}

#[derive(Debug, Serialize, Deserialize)]
struct DiskEntry {
    id: DiskLogId,
    #[serde(flatten)]
    payload: DiskPayload,
}

#[derive(Debug, Serialize, Deserialize)]
struct DiskVote {
    term: u64,
    node: u64,
    committed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct DiskStoredMembership {
    log_id: Option<DiskLogId>,
    membership: DiskMembership,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain structs serialize")
}

fn from_json<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("undecodable {what}: {e}")))
}

pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    let payload = match &entry.payload {
        EntryPayload::Blank => DiskPayload::Blank,
        EntryPayload::Normal(p) => DiskPayload::Event {
            event: p.event.clone(),
        },
        EntryPayload::Membership(m) => DiskPayload::Membership {
            membership: DiskMembership::of(m),
        },
    };
    to_json(&DiskEntry {
        id: DiskLogId::from(&entry.log_id),
        payload,
    })
}

pub(crate) fn decode_entry(bytes: &[u8]) -> io::Result<Entry> {
    let disk: DiskEntry = from_json("raft log entry", bytes)?;
    let log_id = LogId::from(disk.id);
    let payload = match disk.payload {
        DiskPayload::Blank => EntryPayload::Blank,
        DiskPayload::Event { event } => EntryPayload::Normal(Proposal { event }),
        DiskPayload::Membership { membership } => {
            EntryPayload::Membership(membership.into_membership()?)
        }
    };
    Ok(Entry::new(log_id, payload))
}

pub(crate) fn encode_log_id(id: &LogId) -> Vec<u8> {
    to_json(&DiskLogId::from(id))
}

pub(crate) fn decode_log_id(bytes: &[u8]) -> io::Result<LogId> {
    from_json::<DiskLogId>("raft log id", bytes).map(LogId::from)
}

pub(crate) fn encode_vote(vote: &Vote) -> Vec<u8> {
    to_json(&DiskVote {
        term: vote.leader_id.term,
        node: vote.leader_id.node_id,
        committed: vote.committed,
    })
}

pub(crate) fn decode_vote(bytes: &[u8]) -> io::Result<Vote> {
    let d: DiskVote = from_json("raft vote", bytes)?;
    Ok(openraft::impls::Vote {
        leader_id: LeaderId {
            term: d.term,
            node_id: d.node,
        },
        committed: d.committed,
    })
}

pub(crate) fn encode_membership(m: &StoredMembershipOf) -> Vec<u8> {
    to_json(&DiskStoredMembership {
        log_id: m.log_id().as_ref().map(DiskLogId::from),
        membership: DiskMembership::of(m.membership()),
    })
}

pub(crate) fn decode_membership(bytes: &[u8]) -> io::Result<StoredMembershipOf> {
    let d: DiskStoredMembership = from_json("raft membership", bytes)?;
    Ok(StoredMembership::new(
        d.log_id.map(LogId::from),
        d.membership.into_membership()?,
    ))
}

pub(crate) type SnapshotMeta = openraft::SnapshotMeta<LeaderId<u64, u64>, u64, NodeInfo>;

#[derive(Debug, Serialize, Deserialize)]
struct DiskSnapshotMeta {
    last_log_id: Option<DiskLogId>,
    membership: DiskStoredMembership,
}

pub(crate) fn encode_snapshot_meta(meta: &SnapshotMeta) -> Vec<u8> {
    to_json(&DiskSnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(DiskLogId::from),
        membership: DiskStoredMembership {
            log_id: meta.last_membership.log_id().as_ref().map(DiskLogId::from),
            membership: DiskMembership::of(meta.last_membership.membership()),
        },
    })
}

pub(crate) fn decode_snapshot_meta(bytes: &[u8]) -> io::Result<SnapshotMeta> {
    let d: DiskSnapshotMeta = from_json("snapshot meta", bytes)?;
    Ok(openraft::SnapshotMeta {
        last_log_id: d.last_log_id.map(LogId::from),
        last_membership: StoredMembership::new(
            d.membership.log_id.map(LogId::from),
            d.membership.membership.into_membership()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(term: u64, leader: u64, index: u64) -> LogId {
        DiskLogId {
            term,
            leader,
            index,
        }
        .into()
    }

    #[test]
    fn entries_round_trip() {
        let node = NodeInfo {
            grpc_addr: "127.0.0.1:1".into(),
            http_url: "http://127.0.0.1:2".into(),
            name: Some("n1".into()),
        };
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2])],
            BTreeMap::from([(1, node.clone()), (2, node)]),
        )
        .unwrap();
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(Proposal {
                event: r#"{"actor":"a"}"#.into(),
            }),
            EntryPayload::Membership(membership),
        ] {
            let entry = Entry::new(id(3, 1, 7), payload);
            let back = decode_entry(&encode_entry(&entry)).unwrap();
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn votes_round_trip() {
        let vote = openraft::impls::Vote {
            leader_id: LeaderId {
                term: 4,
                node_id: 2,
            },
            committed: true,
        };
        assert_eq!(decode_vote(&encode_vote(&vote)).unwrap(), vote);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_entry(b"{nope").is_err());
        assert!(decode_log_id(b"[]").is_err());
    }
}
