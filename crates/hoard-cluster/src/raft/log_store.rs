//! openraft's log storage over [`hoard_store::RaftLog`]: entries are
//! durable before `IOFlushed` fires, and a vote before `save_vote` returns
//! (the store's one flusher thread does both, with group commit).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use hoard_store::{RaftLog, StoreError};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::codec::{self, Entry, LogId, Vote};
use super::TypeConfig;

#[derive(Clone)]
pub(crate) struct LogStore {
    log: RaftLog,
}

impl LogStore {
    pub(crate) fn new(log: RaftLog) -> Self {
        LogStore { log }
    }
}

pub(crate) fn io(e: StoreError) -> io::Error {
    io::Error::other(e.to_string())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.entries(start..end))
            .await
            .map_err(io::Error::other)?
            .map_err(io)?
            .iter()
            .map(|bytes| codec::decode_entry(bytes))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.log
            .vote()
            .map_err(io)?
            .map(|b| codec::decode_vote(&b))
            .transpose()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = self
            .log
            .purged()
            .map_err(io)?
            .map(|b| codec::decode_log_id(&b))
            .transpose()?;
        let last = match self.log.last_entry().map_err(io)? {
            Some(bytes) => Some(codec::decode_entry(&bytes)?.log_id()),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.log
            .save_vote(&codec::encode_vote(vote))
            .await
            .map_err(io)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let bytes = committed.as_ref().map(codec::encode_log_id);
        self.log.save_committed(bytes.as_deref()).map_err(io)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.log
            .committed()
            .map_err(io)?
            .map(|b| codec::decode_log_id(&b))
            .transpose()
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| (e.log_id().index, codec::encode_entry(&e)))
            .collect();
        self.log
            .append(encoded, move |result| callback.io_completed(result))
            .map_err(io)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.log
            .truncate_after(last_log_id.map(|id| id.index))
            .await
            .map_err(io)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.log
            .purge(log_id.index, &codec::encode_log_id(&log_id))
            .await
            .map_err(io)
    }
}
