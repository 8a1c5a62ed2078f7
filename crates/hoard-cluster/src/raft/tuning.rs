//! Raft's timing and log-retention settings, in one flat struct with the
//! rules that keep them safe.

use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTuning {
    /// How often the leader heartbeats its followers, in ms.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in
    /// `[election_min_ms, election_max_ms)` starts an election.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// The fsync latency of an append that the timeouts are sized for, in
    /// ms: an election timeout must be at least 10× it, or a slow disk
    /// looks like a dead leader.
    pub append_fsync_ms: u64,
    /// Build a snapshot once this many entries were applied since the last.
    pub snapshot_every: u64,
    /// Entries kept in the log after a snapshot, for followers that are
    /// only slightly behind (they need no snapshot then).
    pub keep_after_snapshot: u64,
    /// Deadline of one Raft RPC, in ms (a snapshot chunk included).
    pub rpc_timeout_ms: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_min_ms: 500,
            election_max_ms: 1000,
            append_fsync_ms: 20,
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
            rpc_timeout_ms: 2_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    #[error("raft.heartbeat_ms ({heartbeat}) must be at most a third of raft.election_min_ms ({election_min})")]
    HeartbeatTooSlow { heartbeat: u64, election_min: u64 },
    #[error(
        "raft.election_min_ms ({election_min}) must be at least 10x raft.append_fsync_ms ({fsync})"
    )]
    ElectionTooShort { election_min: u64, fsync: u64 },
    #[error("raft.election_max_ms ({max}) must be greater than raft.election_min_ms ({min})")]
    ElectionRange { min: u64, max: u64 },
    #[error("raft.{0} must be greater than zero")]
    Zero(&'static str),
}

impl RaftTuning {
    pub fn validate(&self) -> Result<(), TuningError> {
        for (name, value) in [
            ("heartbeat_ms", self.heartbeat_ms),
            ("snapshot_every", self.snapshot_every),
            ("rpc_timeout_ms", self.rpc_timeout_ms),
        ] {
            if value == 0 {
                return Err(TuningError::Zero(name));
            }
        }
        if self.heartbeat_ms * 3 > self.election_min_ms {
            return Err(TuningError::HeartbeatTooSlow {
                heartbeat: self.heartbeat_ms,
                election_min: self.election_min_ms,
            });
        }
        if self.election_min_ms < self.append_fsync_ms * 10 {
            return Err(TuningError::ElectionTooShort {
                election_min: self.election_min_ms,
                fsync: self.append_fsync_ms,
            });
        }
        if self.election_max_ms <= self.election_min_ms {
            return Err(TuningError::ElectionRange {
                min: self.election_min_ms,
                max: self.election_max_ms,
            });
        }
        Ok(())
    }

    pub(crate) fn openraft_config(&self, cluster: &str) -> openraft::Config {
        openraft::Config {
            cluster_name: cluster.to_owned(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            install_snapshot_timeout: self.rpc_timeout_ms,
            ..openraft::Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        RaftTuning::default().validate().unwrap();
    }

    #[test]
    fn slow_heartbeat_is_refused() {
        let t = RaftTuning {
            heartbeat_ms: 200,
            ..RaftTuning::default()
        };
        assert!(matches!(
            t.validate(),
            Err(TuningError::HeartbeatTooSlow { .. })
        ));
    }

    #[test]
    fn election_shorter_than_ten_fsyncs_is_refused() {
        let t = RaftTuning {
            append_fsync_ms: 60,
            ..RaftTuning::default()
        };
        assert!(matches!(
            t.validate(),
            Err(TuningError::ElectionTooShort { .. })
        ));
    }
}
