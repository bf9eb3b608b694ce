//! Snapshots that carry what a node needs to serve every retained message.
//!
//! Message bytes live only in the commitlog, so a snapshot is the state machine's metadata at index
//! S plus the sender's retained records up to S. Each record comes with the consume-queue offset its
//! messages got on the sender (or none if the state machine rejected it), so the receiver rebuilds
//! exactly the sender's queues without replaying history it does not have:
//! ```text
//! sender:   header(vote, meta, body) | batch[(record F, offset?), ...] | ... | batch[..., (record S, offset?)]
//! receiver: stage the stream in a file -> openraft install -> reset log, append F..S, sync,
//!           reset each queue to its first offset in the range, append entries, sync, redb
//! ```
use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raftmq_store::{LogIndex, QueueOffset, Record, RECORD_HEADER_LEN};
use serde::{Deserialize, Serialize};

use crate::command::{Command, TopicConfig};
use crate::log_store::KIND_NORMAL;
use crate::state_machine::SmShared;

/// Records per batch on the wire and in the staging file, bounded by bytes too.
const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The state machine's metadata at the snapshot's index.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SnapshotBody {
    pub topics: BTreeMap<String, TopicConfig>,
    pub queue_next: BTreeMap<(String, u32), u64>,
    pub consumers: crate::consumer::ConsumerState,
}

/// A record as shipped in a snapshot, with the first queue offset its messages got (if applied).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SnapshotRecord {
    pub term: u64,
    pub index: u64,
    pub kind: u8,
    pub payload: Bytes,
    pub first_offset: Option<u64>,
}

/// One message of a snapshot stream after the header. A stream without `End` was cut short and
/// must not be installed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum SnapshotChunk {
    Batch(Vec<SnapshotRecord>),
    End { records: u64, last_index: u64 },
}

/// What openraft moves around as a snapshot's data.
pub enum SnapshotData {
    /// On the node that built it: metadata, records read from this node's log when sent.
    Local { body: SnapshotBody, source: Arc<SmShared>, last_index: u64 },
    /// On a receiver: metadata and the records staged in a file as they arrived.
    Staged { body: SnapshotBody, path: PathBuf },
}

impl SnapshotData {
    pub fn body(&self) -> &SnapshotBody {
        match self {
            SnapshotData::Local { body, .. } | SnapshotData::Staged { body, .. } => body,
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Reads this node's retained records up to `last_index` as chunks, each record annotated with
/// its first queue offset, and ends with `End`. Blocking (disk reads): run it off the async
/// runtime. Retention is held off meanwhile, so no record vanishes under the reader.
pub fn read_chunks(source: &SmShared, last_index: u64, mut emit: impl FnMut(SnapshotChunk) -> bool) -> std::io::Result<()> {
    let _hold = source.hold_retention();
    let mut records = 0u64;
    let mut last_sent = 0u64;
    read_batches(source, last_index, |batch| {
        records += batch.len() as u64;
        last_sent = batch.last().map(|r| r.index).unwrap_or(last_sent);
        emit(SnapshotChunk::Batch(batch))
    })?;
    emit(SnapshotChunk::End { records, last_index: last_sent });
    Ok(())
}

fn read_batches(source: &SmShared, last_index: u64, mut emit: impl FnMut(Vec<SnapshotRecord>) -> bool) -> std::io::Result<()> {
    let log = source.commit_log();
    let Some(first) = log.state().first_retained.map(|i| i.0) else { return Ok(()) };
    // Per queue, the next consume-queue offset to match against the records, in position order.
    let mut cursors: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut next = first;
    while next <= last_index {
        let records = log.read_range(LogIndex(next), LogIndex(last_index + 1), BATCH_BYTES_MAX).map_err(io_err)?;
        if records.is_empty() {
            return Err(io_err(format!("record {next} vanished while sending a snapshot")));
        }
        let mut batch = Vec::with_capacity(records.len());
        for record in records {
            next = record.index.0 + 1;
            let first_offset = applied_offset(source, &mut cursors, &record)?;
            batch.push(SnapshotRecord { term: record.term, index: record.index.0, kind: record.kind, payload: record.payload, first_offset });
        }
        if !emit(batch) {
            return Ok(());
        }
    }
    Ok(())
}

/// The offset at which the sender's queue holds this record's first message, if it does.
fn applied_offset(source: &SmShared, cursors: &mut BTreeMap<(String, u32), u64>, record: &Record) -> std::io::Result<Option<u64>> {
    if record.kind != KIND_NORMAL {
        return Ok(None);
    }
    let Ok(Command::Send(send)) = Command::decode(&record.payload) else { return Ok(None) };
    let Some((at, _)) = send.messages.first() else { return Ok(None) };
    let position = source.commit_log().position(record.index).ok_or_else(|| io_err("record without a position"))?;
    let expected = position.0 + (RECORD_HEADER_LEN + at) as u64;
    let key = (send.topic.clone(), send.queue_id);
    let queue = source.queue(&send.topic, send.queue_id)?;
    let cursor = match cursors.get(&key) {
        Some(cursor) => *cursor,
        None => first_offset_at_or_after(&queue, expected)?,
    };
    match queue.read(QueueOffset(cursor), 1).map_err(io_err)?.first() {
        Some((offset, entry)) if entry.position.0 == expected => {
            cursors.insert(key, offset.0 + send.messages.len() as u64);
            Ok(Some(offset.0))
        }
        // The state machine rejected this command: its messages are in no queue.
        _ => {
            cursors.insert(key, cursor);
            Ok(None)
        }
    }
}

/// Binary search: the first offset whose entry lies at or after `position` (entries ascend).
pub fn first_offset_at_or_after(queue: &raftmq_store::ConsumeQueue, position: u64) -> std::io::Result<u64> {
    let (mut low, mut high) = (queue.min_offset().0, queue.next_offset().0);
    while low < high {
        let mid = low + (high - low) / 2;
        let at = queue.read(QueueOffset(mid), 1).map_err(io_err)?.first().map(|(_, e)| e.position.0).unwrap_or(u64::MAX);
        if at < position { low = mid + 1 } else { high = mid }
    }
    Ok(low)
}

/// Appends a chunk to a staging file: [len u32][bincode(SnapshotChunk)].
pub fn stage_batch(out: &mut impl Write, batch: &[u8]) -> std::io::Result<()> {
    out.write_all(&(batch.len() as u32).to_le_bytes())?;
    out.write_all(batch)
}

pub fn open_staging(path: &Path) -> std::io::Result<BufWriter<std::fs::File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(BufWriter::new(std::fs::File::create(path)?))
}

/// Reads the batches of a staging file in order; fails unless it ends with a matching `End`.
pub fn read_staged(path: &Path, mut each: impl FnMut(Vec<SnapshotRecord>) -> std::io::Result<()>) -> std::io::Result<()> {
    let mut input = BufReader::new(std::fs::File::open(path)?);
    let mut records = 0u64;
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(io_err("the staged snapshot has no end marker: the transfer was cut short"));
            }
            Err(e) => return Err(e),
        }
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        input.read_exact(&mut buf)?;
        match bincode::deserialize(&buf).map_err(io_err)? {
            SnapshotChunk::Batch(batch) => {
                records += batch.len() as u64;
                each(batch)?;
            }
            SnapshotChunk::End { records: sent, .. } if sent == records => return Ok(()),
            SnapshotChunk::End { records: sent, .. } => {
                return Err(io_err(format!("the snapshot's end marker says {sent} records, {records} arrived")));
            }
        }
    }
}

/// Checks one incoming chunk (decodable) and says whether it is the end.
pub fn is_end_chunk(bytes: &[u8]) -> std::io::Result<bool> {
    match bincode::deserialize::<SnapshotChunk>(bytes).map_err(io_err)? {
        SnapshotChunk::Batch(_) => Ok(false),
        SnapshotChunk::End { .. } => Ok(true),
    }
}

/// Installs the snapshot's records into this node's log and queues (metadata is the caller's).
/// The log is replaced: afterwards it holds exactly the shipped records, ending at the snapshot.
pub fn install_records(target: &SmShared, data: &SnapshotData) -> std::io::Result<()> {
    let log = target.commit_log();
    log.reset().map_err(io_err)?;
    let body = data.body();
    let mut first_offsets: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut pending: Vec<(u64, SnapshotRecord)> = Vec::new();
    let mut install = |batch: Vec<SnapshotRecord>| -> std::io::Result<()> {
        let records: Vec<Record> = batch
            .iter()
            .map(|r| Record { term: r.term, index: LogIndex(r.index), kind: r.kind, payload: r.payload.clone() })
            .collect();
        log.append(&records, Box::new(|_| {})).map_err(io_err)?;
        for record in batch.into_iter().filter(|r| r.first_offset.is_some()) {
            if let Ok(Command::Send(send)) = Command::decode(&record.payload) {
                first_offsets.entry((send.topic, send.queue_id)).or_insert(record.first_offset.expect("filtered"));
                pending.push((record.index, record));
            }
        }
        Ok(())
    };
    match data {
        SnapshotData::Staged { path, .. } => read_staged(path, &mut install)?,
        SnapshotData::Local { source, last_index, .. } => {
            let mut failure = None;
            read_chunks(source, *last_index, |chunk| match chunk {
                SnapshotChunk::Batch(batch) => match install(batch) {
                    Ok(()) => true,
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                },
                SnapshotChunk::End { .. } => true,
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }
    log.sync().map_err(io_err)?;
    // Each queue starts where its first shipped message is, or is empty at its next offset.
    for ((topic, queue_id), next) in &body.queue_next {
        let base = first_offsets.get(&(topic.clone(), *queue_id)).copied().unwrap_or(*next);
        target.reset_queue(topic, *queue_id, base)?;
    }
    for (index, record) in pending {
        let Ok(Command::Send(send)) = Command::decode(&record.payload) else { continue };
        let position = log.position(LogIndex(index)).ok_or_else(|| io_err("installed record has no position"))?;
        let queue = target.queue(&send.topic, send.queue_id)?;
        let first_offset = record.first_offset.expect("only applied records are pending");
        let entries = crate::state_machine::queue_entries(position, &send)?;
        queue.append_batch(QueueOffset(first_offset), &entries).map_err(io_err)?;
    }
    target.sync_queues()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: u64) -> SnapshotRecord {
        SnapshotRecord { term: 1, index, kind: 0, payload: Bytes::new(), first_offset: None }
    }

    fn stage(path: &Path, chunks: &[SnapshotChunk]) {
        let mut out = open_staging(path).unwrap();
        for chunk in chunks {
            stage_batch(&mut out, &bincode::serialize(chunk).unwrap()).unwrap();
        }
        out.flush().unwrap();
    }

    // Goal: a staged snapshot is installable only if it ends with an end marker that counts every
    // record; a transfer cut short (no marker, or a marker with another count) is refused.
    #[test]
    fn a_cut_short_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let batch = SnapshotChunk::Batch(vec![record(5), record(6)]);
        stage(&path, &[batch.clone(), SnapshotChunk::End { records: 2, last_index: 6 }]);
        let mut seen = Vec::new();
        read_staged(&path, |b| {
            seen.extend(b.into_iter().map(|r| r.index));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![5, 6]);

        stage(&path, &[batch.clone()]);
        assert!(read_staged(&path, |_| Ok(())).unwrap_err().to_string().contains("no end marker"));
        stage(&path, &[batch, SnapshotChunk::End { records: 3, last_index: 7 }]);
        assert!(read_staged(&path, |_| Ok(())).unwrap_err().to_string().contains("3 records, 2 arrived"));
    }
}
