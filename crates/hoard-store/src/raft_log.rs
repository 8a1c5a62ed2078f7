//! The Raft log and vote of a voter, kept in the node's sled database.
//!
//! Entries and the vote are opaque bytes here: hoard-cluster encodes them
//! in hoard's own format, so no openraft type reaches the store (and sled
//! stays swappable). Entries are keyed by their log index, big-endian, so
//! sled's order is the log's order.

use std::io;
use std::ops::Range;

use crate::flusher::Flusher;
use crate::StoreError;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";
const PURGED_INDEX: &[u8] = b"purged_index";

#[derive(Clone)]
pub struct RaftLog {
    entries: sled::Tree,
    state: sled::Tree,
    flusher: Flusher,
}

impl RaftLog {
    pub(crate) fn open(db: &sled::Db, flusher: Flusher) -> Result<Self, StoreError> {
        Ok(RaftLog {
            entries: db.open_tree("raft_log")?,
            state: db.open_tree("raft_state")?,
            flusher,
        })
    }

    /// The entries with indexes in `range` that are present, in order.
    /// Purged entries are never returned.
    pub fn entries(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>, StoreError> {
        let start = match self.purged_index()? {
            Some(purged) => range.start.max(purged + 1),
            None => range.start,
        };
        if start >= range.end {
            return Ok(Vec::new());
        }
        self.entries
            .range(start.to_be_bytes()..range.end.to_be_bytes())
            .values()
            .map(|v| Ok(v?.to_vec()))
            .collect()
    }

    /// The last entry in the log, if any is left after purging.
    pub fn last_entry(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries.last()?.map(|(_, v)| v.to_vec()))
    }

    /// The index of the last purged entry, if any.
    fn purged_index(&self) -> Result<Option<u64>, StoreError> {
        match self.state.get(PURGED_INDEX)? {
            None => Ok(None),
            Some(b) => <[u8; 8]>::try_from(b.as_ref())
                .map(|b| Some(u64::from_be_bytes(b)))
                .map_err(|_| StoreError::Corrupt("raft_state: purged index is not 8 bytes".into())),
        }
    }

    /// The id of the last purged entry, as the caller encoded it.
    pub fn purged(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state.get(PURGED)?.map(|v| v.to_vec()))
    }

    pub fn vote(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state.get(VOTE)?.map(|v| v.to_vec()))
    }

    /// Stores the vote; durable when this returns.
    pub async fn save_vote(&self, vote: &[u8]) -> Result<(), StoreError> {
        self.state.insert(VOTE, vote)?;
        self.flusher.flush().await
    }

    pub fn committed(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state.get(COMMITTED)?.map(|v| v.to_vec()))
    }

    /// Records the committed log id. Not flushed: losing it only means
    /// waiting for the leader to say it again.
    pub fn save_committed(&self, committed: Option<&[u8]>) -> Result<(), StoreError> {
        match committed {
            Some(c) => self.state.insert(COMMITTED, c)?,
            None => self.state.remove(COMMITTED)?,
        };
        Ok(())
    }

    /// Appends entries (index, bytes) and calls `on_durable` once they are
    /// on disk. The entries are readable at once; they count as written
    /// only when `on_durable` reports success.
    pub fn append(
        &self,
        entries: impl IntoIterator<Item = (u64, Vec<u8>)>,
        on_durable: impl FnOnce(io::Result<()>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (index, bytes) in entries {
            batch.insert(&index.to_be_bytes(), bytes);
        }
        self.entries.apply_batch(batch)?;
        self.flusher.after_flush(on_durable);
        Ok(())
    }

    /// Removes every entry with an index above `last_kept` (all of them
    /// with `None`); durable when this returns.
    pub async fn truncate_after(&self, last_kept: Option<u64>) -> Result<(), StoreError> {
        let from = match last_kept {
            Some(i) => i + 1,
            None => 0,
        };
        let mut batch = sled::Batch::default();
        for key in self.entries.range(from.to_be_bytes()..).keys() {
            batch.remove(key?);
        }
        self.entries.apply_batch(batch)?;
        self.flusher.flush().await
    }

    /// Removes the entries up to and including `index`, recording `id` as
    /// the last purged log id first, so that a crash half-way still knows
    /// where the log starts.
    pub async fn purge(&self, index: u64, id: &[u8]) -> Result<(), StoreError> {
        let mut marks = sled::Batch::default();
        marks.insert(PURGED, id);
        marks.insert(PURGED_INDEX, &index.to_be_bytes());
        self.state.apply_batch(marks)?;
        self.flusher.flush().await?;
        let mut batch = sled::Batch::default();
        for key in self.entries.range(..=index.to_be_bytes()).keys() {
            batch.remove(key?);
        }
        self.entries.apply_batch(batch)?;
        Ok(())
    }

    /// Forgets the log, the vote and the commit point: for a node that is
    /// reset to join a new cluster epoch. Durable when this returns.
    pub async fn clear(&self) -> Result<(), StoreError> {
        self.entries.clear()?;
        self.state.clear()?;
        self.flusher.flush().await
    }
}
