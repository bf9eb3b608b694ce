//! `RaftLogStorage` over the commitlog: the Raft log *is* the commitlog (no second copy).
//!
//! To ensure correctness (openraft's storage contract, and ours):
//! - entries are appended in index order without holes: `CommitLog::append` asserts last + 1;
//! - `append` returns once the bytes are written; openraft's `IOFlushed` fires from the store's
//!   flusher only after they are durable under the group's flush policy;
//! - the vote is durable when `save_vote` returns, and is written only after every earlier log
//!   write is durable (so a crash cannot keep a vote whose justifying entries were lost);
//! - truncation is suffix-only and durable before returning.
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend, RaftLogReader};
use raftmq_store::{CommitLog, LogIndex, Record, StoreError, VoteFile};

use crate::types::{Entry, EncodedCommand, LogId, TypeConfig, Vote};

pub const KIND_BLANK: u8 = 0;
pub const KIND_NORMAL: u8 = 1;
pub const KIND_MEMBERSHIP: u8 = 2;

/// The most bytes one `try_get_log_entries` call returns (replication batches stay bounded).
const READ_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

pub fn to_io(error: StoreError) -> io::Error {
    io::Error::other(error)
}

/// Encodes an openraft entry as a commitlog record.
pub fn entry_to_record(entry: &Entry) -> Record {
    let (kind, payload) = match &entry.payload {
        EntryPayload::Blank => (KIND_BLANK, Bytes::new()),
        EntryPayload::Normal(command) => (KIND_NORMAL, command.0.clone()),
        EntryPayload::Membership(membership) => {
            (KIND_MEMBERSHIP, Bytes::from(bincode::serialize(membership).expect("membership serializes")))
        }
    };
    Record { term: entry.log_id.leader_id.term, index: LogIndex(entry.log_id.index), kind, payload }
}

pub fn record_to_entry(record: Record) -> io::Result<Entry> {
    let log_id = LogId::new_term_index(record.term, record.index.0);
    let payload = match record.kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(EncodedCommand(record.payload)),
        KIND_MEMBERSHIP => EntryPayload::Membership(
            bincode::deserialize(&record.payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
        ),
        other => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown record kind {other}"))),
    };
    Ok(Entry::new(log_id, payload))
}

/// The log storage handed to openraft; cheap to clone (readers share it).
#[derive(Clone)]
pub struct LogStore {
    log: Arc<CommitLog>,
    vote: Arc<VoteFile>,
}

impl LogStore {
    pub fn new(log: Arc<CommitLog>, vote: Arc<VoteFile>) -> Self {
        LogStore { log, vote }
    }
}

fn range_to_indexes<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(i) => i + 1,
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = range_to_indexes(&range);
        let state = self.log.state();
        // Entries at or below the purge point are gone as far as Raft is concerned (openraft
        // allows a range's start to be missing when purged), even if retention kept the bytes.
        let start = start.max(state.purged.map_or(0, |(i, _)| i.0 + 1)).max(state.first_retained.map_or(0, |i| i.0));
        let last = state.last.map(|(i, _)| i.0 + 1).unwrap_or(0);
        let end = end.min(last);
        let mut entries = Vec::new();
        let mut next = start;
        while next < end {
            let records =
                self.log.read_range(LogIndex(next), LogIndex(end), READ_BATCH_BYTES_MAX).map_err(to_io)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                assert_eq!(record.index.0, next, "commitlog returned a hole");
                next += 1;
                entries.push(record_to_entry(record)?);
            }
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.vote.load().map_err(to_io)? {
            None => Ok(None),
            Some(bytes) => bincode::deserialize(&bytes).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        let state = self.log.state();
        let start = start.max(state.purged.map_or(0, |(i, _)| i.0 + 1)).max(state.first_retained.map_or(0, |i| i.0));
        if start >= end {
            return Ok(Vec::new());
        }
        let records = self.log.read_range(LogIndex(start), LogIndex(end), READ_BATCH_BYTES_MAX).map_err(to_io)?;
        records.into_iter().map(record_to_entry).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.log.state();
        let to_log_id = |(index, term): (LogIndex, u64)| LogId::new_term_index(term, index.0);
        Ok(LogState { last_purged_log_id: state.purged.map(to_log_id), last_log_id: state.last.map(to_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Order the vote after earlier log writes (see the module comment).
        self.log.sync().map_err(to_io)?;
        let bytes = bincode::serialize(vote).map_err(io::Error::other)?;
        self.vote.save(&bytes).map_err(to_io)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<Record> = entries.into_iter().map(|e| entry_to_record(&e)).collect();
        self.log
            .append(&records, Box::new(move |result| callback.io_completed(result.map_err(to_io))))
            .map_err(to_io)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.log.truncate_after(last_log_id.map(|id| LogIndex(id.index))).map_err(to_io)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.log.purge(LogIndex(log_id.index), log_id.leader_id.term).map_err(to_io)
    }
}
