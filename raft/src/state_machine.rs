//! The state machine: applies committed entries in log order on every node.
//!
//! Applying a `Send` assigns each message its queue offset (the next one of its queue) and appends
//! a consume-queue entry pointing at the message's bytes inside the commitlog record; no message
//! is copied. Metadata and the applied id are then made durable together (see metadata_table.rs).
use std::io;
use std::path::Path;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use parking_lot::{Mutex, RwLock};
use raftmq_store::{CommitLog, ConsumeQueueEntry, ConsumeQueueSet, LogIndex, QueueOffset, RECORD_HEADER_LEN};
use tokio::sync::watch;

use crate::command::{AdminCommand, Command, SendCommand, StoredMessage, TopicConfig};
use crate::consumer::{ConsumerCommand, ConsumerResponse, ConsumerState, PollState, QueueCursor, QueueView};
use crate::metadata_table::{Changes, MetadataDb, MetadataTable, QueueKey};
pub use crate::snapshot::SnapshotData;
use crate::snapshot::SnapshotBody;
use crate::types::{CommandResponse, LogId, SnapshotMeta, StoredMembership, TypeConfig};

type Snapshot = openraft::Snapshot<crate::types::CommittedLeaderId, crate::types::NodeId, crate::types::PeerNode, SnapshotData>;

/// Stable 64-bit hash of a tag, stored in consume-queue entries for filtering.
pub fn tag_hash(tag: Option<&str>) -> u64 {
    tag.map(|t| crc32c::crc32c(t.as_bytes()) as u64 + 1).unwrap_or(0)
}

/// The consume-queue entries of a `Send` command whose record starts at `record_position`: each
/// points straight at its message's bytes inside the record.
pub fn queue_entries(record_position: raftmq_store::CommitLogPosition, send: &SendCommand) -> io::Result<Vec<ConsumeQueueEntry>> {
    send.messages
        .iter()
        .map(|(at, bytes)| {
            let message = StoredMessage::decode(bytes.clone()).map_err(io_err)?;
            Ok(ConsumeQueueEntry {
                position: raftmq_store::CommitLogPosition(record_position.0 + (RECORD_HEADER_LEN + at) as u64),
                size: bytes.len() as u32,
                tag_hash: tag_hash(message.header.tag.as_deref()),
            })
        })
        .collect()
}

/// A message read back from a queue.
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    pub queue_offset: u64,
    pub message: StoredMessage,
}

/// State shared by the state machine and the readers in the service layer.
pub struct SmShared {
    log: Arc<CommitLog>,
    queues: ConsumeQueueSet,
    db: MetadataDb,
    table: RwLock<MetadataTable>,
    applied_tx: watch::Sender<u64>,
    /// The latest snapshot built or installed here (its records are in this node's log).
    snapshot: Mutex<Option<(SnapshotMeta, SnapshotBody)>>,
    /// Present while a snapshot install is replacing the log, queues and metadata.
    installing_marker: std::path::PathBuf,
    /// Snapshot sends reading this node's log; retention waits while any is running.
    snapshot_readers: Arc<std::sync::atomic::AtomicUsize>,
    /// When the derived state was last made durable (see metadata_table.rs).
    last_checkpoint: Mutex<std::time::Instant>,
    /// Rows changed by applies since the last checkpoint: redb is written only at checkpoints
    /// (the in-memory table serves everything in between; a crash replays the log from the
    /// checkpoint's applied id).
    unsaved: Mutex<Changes>,
}

/// How often apply makes the derived state durable; a crash replays at most this much log.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps retention off while alive (see `SmShared::hold_retention`).
pub struct RetentionHold(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for RetentionHold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// File beside metadata.redb that marks an install in progress.
const INSTALLING_MARKER: &str = "snapshot-installing";

/// The queues as consumer-group logic sees them: next offsets from a metadata table (the one
/// being applied, or the shared one), entries and start offsets from the consume queues.
struct QueuesAt<'a> {
    queues: &'a ConsumeQueueSet,
    queue_next: &'a std::collections::BTreeMap<QueueKey, u64>,
}

impl QueueView for QueuesAt<'_> {
    fn range(&self, topic: &str, queue_id: u32) -> (u64, u64) {
        let next = self.queue_next.get(&(topic.to_string(), queue_id)).copied().unwrap_or(0);
        let min = if next == 0 { 0 } else { self.queues.queue(topic, queue_id).map(|q| q.min_offset().0).unwrap_or(0) };
        (min.min(next), next)
    }

    fn tag_hashes(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> io::Result<Vec<(u64, u64)>> {
        let next = self.queue_next.get(&(topic.to_string(), queue_id)).copied().unwrap_or(0);
        let queue = self.queues.queue(topic, queue_id).map_err(io_err)?;
        let entries = queue.read(QueueOffset(from), max).map_err(io_err)?;
        Ok(entries.into_iter().filter(|(o, _)| o.0 < next).map(|(o, e)| (o.0, e.tag_hash)).collect())
    }
}

#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<SmShared>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl StateMachine {
    pub fn open(log: Arc<CommitLog>, queues: ConsumeQueueSet, db_path: &Path) -> io::Result<StateMachine> {
        let (db, mut table) = MetadataDb::open(db_path).map_err(io_err)?;
        let installing = db_path.with_file_name(INSTALLING_MARKER);
        if installing.exists() {
            // A snapshot install was cut short: log, queues and metadata may disagree. Drop them
            // all (the vote stays, so this is no data-loss rejoin) and catch up again.
            tracing::warn!("an interrupted snapshot install left partial state: discarding it to catch up again");
            log.reset().map_err(io_err)?;
            queues.clear().map_err(io_err)?;
            table = MetadataTable::default();
            db.replace_all(&table).map_err(io_err)?;
            db.clear_snapshot().map_err(io_err)?;
            std::fs::remove_file(&installing)?;
        }
        // Cut consume-queue entries that redb does not know of: the log replay rewrites them.
        for (topic, queue_id) in queues.list().map_err(io_err)? {
            let next = table.queue_next.get(&(topic.clone(), queue_id)).copied().unwrap_or(0);
            queues.queue(&topic, queue_id).and_then(|q| q.truncate_to(QueueOffset(next))).map_err(io_err)?;
        }
        let applied = table.applied.map(|id| id.index).unwrap_or(0);
        let (applied_tx, _) = watch::channel(applied);
        let installing_marker = installing;
        let snapshot = db.load_snapshot().map_err(io_err)?;
        let shared = SmShared {
            log,
            queues,
            db,
            table: RwLock::new(table),
            applied_tx,
            snapshot: Mutex::new(snapshot),
            installing_marker,
            snapshot_readers: Arc::default(),
            last_checkpoint: Mutex::new(std::time::Instant::now()),
            unsaved: Mutex::default(),
        };
        Ok(StateMachine { shared: Arc::new(shared) })
    }

    pub fn shared(&self) -> Arc<SmShared> {
        self.shared.clone()
    }
}

impl SmShared {
    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.table.read().topics.get(name).cloned()
    }

    pub fn topics(&self) -> Vec<TopicConfig> {
        self.table.read().topics.values().cloned().collect()
    }

    /// Consumer groups and their cursors as applied here.
    pub fn consumers(&self) -> ConsumerState {
        self.table.read().consumers.clone()
    }

    pub fn group(&self, name: &str) -> Option<crate::consumer::GroupConfig> {
        self.table.read().consumers.groups.get(name).cloned()
    }

    /// Up to `max` groups in name order, and whether more exist.
    pub fn groups(&self, max: usize) -> (Vec<crate::consumer::GroupConfig>, bool) {
        let table = self.table.read();
        let groups = &table.consumers.groups;
        (groups.values().take(max).cloned().collect(), groups.len() > max)
    }

    /// Up to `max` of a group's cursors as ((topic, queue id), cursor), in topic and queue order.
    pub fn cursors_of(&self, group: &str, max: usize) -> Vec<((String, u32), QueueCursor)> {
        let table = self.table.read();
        table
            .consumers
            .cursors
            .range((group.to_string(), String::new(), 0)..)
            .take_while(|((g, _, _), _)| g == group)
            .take(max)
            .map(|((_, topic, queue_id), cursor)| ((topic.clone(), *queue_id), cursor.clone()))
            .collect()
    }

    pub fn cursor(&self, group: &str, topic: &str, queue_id: u32) -> Option<QueueCursor> {
        self.table.read().consumers.cursors.get(&(group.to_string(), topic.to_string(), queue_id)).cloned()
    }

    /// Whether a pop could hand anything out now (see `ConsumerState::poll`).
    pub fn poll_group(&self, group: &str, topic: &str, queue_ids: &[u32], now_ms: i64) -> PollState {
        let table = self.table.read();
        table.consumers.poll(group, topic, queue_ids, now_ms, &QueuesAt { queues: &self.queues, queue_next: &table.queue_next })
    }

    /// The message at (topic, queue, offset), if it is applied and still stored.
    pub fn read_message(&self, topic: &str, queue_id: u32, offset: u64) -> io::Result<Option<StoredMessage>> {
        let read = self.read_queue(topic, queue_id, offset, 1)?;
        Ok(read.into_iter().find(|m| m.queue_offset == offset).map(|m| m.message))
    }

    /// (min, next) offsets of a queue: min is where this node's queue starts (a node that caught
    /// up from a snapshot holds only the retained messages).
    pub fn queue_range(&self, topic: &str, queue_id: u32) -> (u64, u64) {
        let next = self.table.read().queue_next.get(&(topic.to_string(), queue_id)).copied().unwrap_or(0);
        let min = self.queues.queue(topic, queue_id).map(|q| q.min_offset().0).unwrap_or(0);
        (min.min(next), next)
    }

    pub fn queue(&self, topic: &str, queue_id: u32) -> io::Result<Arc<raftmq_store::ConsumeQueue>> {
        self.queues.queue(topic, queue_id).map_err(io_err)
    }

    pub fn reset_queue(&self, topic: &str, queue_id: u32, base: u64) -> io::Result<()> {
        self.queues.reset_queue(topic, queue_id, QueueOffset(base)).map(|_| ()).map_err(io_err)
    }

    pub fn sync_queues(&self) -> io::Result<()> {
        self.queues.sync_dirty().map_err(io_err)
    }

    /// Wakes whenever the applied index moves (long polling waits on it).
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    pub fn commit_log(&self) -> &Arc<CommitLog> {
        &self.log
    }

    /// True (and restarts the clock) when apply should make its batch durable.
    fn checkpoint_due(&self) -> bool {
        let mut last = self.last_checkpoint.lock();
        if last.elapsed() < CHECKPOINT_INTERVAL {
            return false;
        }
        *last = std::time::Instant::now();
        true
    }

    /// Makes everything applied so far durable: queues, then a durable redb commit of every row
    /// changed since the last checkpoint. Call it between applies (the state-machine worker, or
    /// after Raft stopped). Racing an apply is still safe: redb then records the table before
    /// that apply, below what the synced queues hold, and open cuts the queues back to it.
    pub fn checkpoint(&self) -> io::Result<()> {
        self.queues.sync_dirty().map_err(io_err)?;
        let changes = std::mem::take(&mut *self.unsaved.lock());
        self.db.persist(&self.table.read(), &changes).map_err(io_err)?;
        *self.last_checkpoint.lock() = std::time::Instant::now();
        Ok(())
    }

    /// Holds retention off until the returned guard drops (a snapshot send reads the log).
    pub fn hold_retention(&self) -> RetentionHold {
        self.snapshot_readers.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        RetentionHold(self.snapshot_readers.clone())
    }

    /// Deletes purged segments past the policy, unless a snapshot send is reading the log.
    pub fn enforce_retention(&self, policy: &raftmq_store::RetentionPolicy) -> io::Result<Option<raftmq_store::RetentionReport>> {
        let _hold = self.hold_retention();
        if self.snapshot_readers.load(std::sync::atomic::Ordering::Acquire) > 1 {
            return Ok(None);
        }
        let report = self.log.enforce_retention(policy, std::time::SystemTime::now()).map_err(io_err)?;
        if report.segments_deleted > 0 {
            self.advance_queue_starts()?;
        }
        Ok(Some(report))
    }

    /// Moves each queue's start past entries whose bytes retention deleted, so that reads and
    /// offset queries begin at the first message that still exists.
    fn advance_queue_starts(&self) -> io::Result<()> {
        let Some(first) = self.log.state().first_retained else { return Ok(()) };
        let Some(first_position) = self.log.position(first) else { return Ok(()) };
        for (topic, queue_id) in self.queues.list().map_err(io_err)? {
            let queue = self.queue(&topic, queue_id)?;
            let start = crate::snapshot::first_offset_at_or_after(&queue, first_position.0)?;
            queue.truncate_front(QueueOffset(start)).map_err(io_err)?;
        }
        Ok(())
    }

    /// Up to `max` applied messages of (topic, queue) from `from`. Messages whose segment was
    /// deleted by retention are skipped.
    pub fn read_queue(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> io::Result<Vec<QueuedMessage>> {
        let (min, next) = self.queue_range(topic, queue_id);
        let from = from.max(min);
        if from >= next {
            return Ok(Vec::new());
        }
        let max = max.min((next - from) as usize);
        let queue = self.queues.queue(topic, queue_id).map_err(io_err)?;
        let mut entries = queue.read(QueueOffset(from), max).map_err(io_err)?;
        entries.retain(|(offset, _)| offset.0 < next);
        // One read for messages that lie together in the log (a batch's, a queue's run).
        let ranges: Vec<_> = entries.iter().map(|(_, entry)| (entry.position, entry.size)).collect();
        let mut out = Vec::with_capacity(entries.len());
        for ((offset, _), bytes) in entries.into_iter().zip(self.log.read_many(&ranges).map_err(io_err)?) {
            // None: retention deleted it while we looked.
            let Some(bytes) = bytes else { continue };
            out.push(QueuedMessage { queue_offset: offset.0, message: StoredMessage::decode(bytes).map_err(io_err)? });
        }
        Ok(out)
    }

    fn apply_send(&self, table: &mut MetadataTable, changes: &mut Changes, index: u64, send: SendCommand) -> io::Result<CommandResponse> {
        let Some(topic) = table.topics.get(&send.topic) else {
            return Ok(CommandResponse::Rejected(format!("topic {} does not exist", send.topic)));
        };
        if send.queue_id >= topic.queue_count {
            return Ok(CommandResponse::Rejected(format!("queue {} out of range", send.queue_id)));
        }
        let record_position = self
            .log
            .position(LogIndex(index))
            .ok_or_else(|| io_err(format!("applied entry {index} is not in the commitlog")))?;
        let key = (send.topic.clone(), send.queue_id);
        let first_offset = table.queue_next.get(&key).copied().unwrap_or(0);
        let queue = self.queues.queue(&send.topic, send.queue_id).map_err(io_err)?;
        let entries = queue_entries(record_position, &send)?;
        queue.append_batch(QueueOffset(first_offset), &entries).map_err(io_err)?;
        let next = first_offset + entries.len() as u64;
        table.queue_next.insert(key.clone(), next);
        changes.queues.insert(key);
        Ok(CommandResponse::Sent { queue_id: send.queue_id, first_offset, store_timestamp_ms: send.store_timestamp_ms })
    }

    fn apply_consumer(&self, table: &mut MetadataTable, changes: &mut Changes, index: u64, command: ConsumerCommand) -> io::Result<CommandResponse> {
        let MetadataTable { topics, queue_next, consumers, .. } = table;
        let view = QueuesAt { queues: &self.queues, queue_next };
        let queue_count = |topic: &str| topics.get(topic).map(|t| t.queue_count);
        let response: ConsumerResponse = consumers.apply(&mut changes.consumers, index, command, queue_count, &view)?;
        Ok(CommandResponse::Consumer(response))
    }

    fn apply_admin(table: &mut MetadataTable, changes: &mut Changes, command: AdminCommand) -> CommandResponse {
        match command {
            AdminCommand::CreateTopic(config) => {
                if let Some(existing) = table.topics.get(&config.name) {
                    if existing.queue_count > config.queue_count {
                        return CommandResponse::Rejected("a topic's queue count cannot shrink".into());
                    }
                }
                changes.topics.insert(config.name.clone());
                table.topics.insert(config.name.clone(), config);
                CommandResponse::TopicCreated
            }
            AdminCommand::DeleteTopic { name } => {
                if table.topics.remove(&name).is_none() {
                    return CommandResponse::Rejected(format!("topic {name} does not exist"));
                }
                table.consumers.remove_topic(&mut changes.consumers, &name);
                changes.topics.insert(name);
                CommandResponse::TopicDeleted
            }
        }
    }
}

/// A snapshot whose durable work is already done; openraft builds it on a task of its own.
pub struct PreparedSnapshot {
    meta: SnapshotMeta,
    data: Option<SnapshotData>,
}

impl RaftSnapshotBuilder<TypeConfig> for PreparedSnapshot {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = self.data.take().ok_or_else(|| io_err("a prepared snapshot is built once"))?;
        Ok(Snapshot { meta: self.meta.clone(), snapshot: data })
    }
}

impl StateMachine {
    fn local_data(&self, body: SnapshotBody, last: Option<LogId>) -> SnapshotData {
        SnapshotData::Local { body, source: self.shared.clone(), last_index: last.map(|id| id.index).unwrap_or(0) }
    }

    /// Runs in openraft's state-machine worker, between applies: the durable applied index must
    /// never be behind a snapshot (openraft purges the log up to it, and a restart replays from
    /// the durable applied index), and no durable commit may race an apply batch whose queue
    /// entries are not synced yet. So the checkpoint and the snapshot's metadata are written here.
    fn prepare_snapshot(&self) -> io::Result<PreparedSnapshot> {
        self.shared.checkpoint()?;
        let table = self.shared.table.read().clone();
        let body = SnapshotBody { topics: table.topics, queue_next: table.queue_next, consumers: table.consumers };
        let meta = SnapshotMeta { last_log_id: table.applied, last_membership: table.membership };
        self.shared.db.save_snapshot(&meta, &body).map_err(io_err)?;
        *self.shared.snapshot.lock() = Some((meta.clone(), body.clone()));
        Ok(PreparedSnapshot { data: Some(self.local_data(body, meta.last_log_id)), meta })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = PreparedSnapshot;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let table = self.shared.table.read();
        Ok((table.applied, table.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + openraft::OptionalSend,
    {
        let shared = &self.shared;
        let mut replies = Vec::new();
        let mut changes = Changes::default();
        // Mutate a copy; it replaces the shared table once the batch is durable.
        let mut table = shared.table.read().clone();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let index = entry.log_id.index;
            if let Some(applied) = table.applied {
                assert!(index > applied.index, "apply went backwards: {index} after {}", applied.index);
            }
            let response = match entry.payload {
                EntryPayload::Blank => CommandResponse::None,
                EntryPayload::Membership(membership) => {
                    table.membership = StoredMembership::new(Some(entry.log_id), membership);
                    changes.membership = true;
                    CommandResponse::None
                }
                EntryPayload::Normal(command) => match Command::decode(&command.0) {
                    Ok(Command::Send(send)) => shared.apply_send(&mut table, &mut changes, index, send)?,
                    Ok(Command::Admin(admin)) => SmShared::apply_admin(&mut table, &mut changes, admin),
                    Ok(Command::Consumer(consumer)) => shared.apply_consumer(&mut table, &mut changes, index, consumer)?,
                    Err(e) => CommandResponse::Rejected(e.to_string()),
                },
            };
            table.applied = Some(entry.log_id);
            if let Some(responder) = responder {
                replies.push((responder, response));
            }
        }
        // The log already holds these entries durably; checkpoint the derived state only now and
        // then (queues first, then redb, so a queue is never shorter than the durable redb says).
        shared.unsaved.lock().merge(changes);
        let applied = table.applied.map(|id| id.index).unwrap_or(0);
        *shared.table.write() = table;
        if shared.checkpoint_due() {
            shared.checkpoint()?;
        }
        shared.applied_tx.send_replace(applied);
        for (responder, response) in replies {
            responder.send(response);
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<PreparedSnapshot> {
        match self.prepare_snapshot() {
            Ok(prepared) => Some(prepared),
            Err(e) => {
                tracing::error!("cannot prepare a snapshot: {e}");
                None
            }
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.prepare_snapshot().unwrap_or_else(|e| {
            tracing::error!("cannot prepare a snapshot: {e}");
            PreparedSnapshot { meta: SnapshotMeta::default(), data: None }
        })
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let shared = self.shared.clone();
        let body = snapshot.body().clone();
        crate::node::write_file_durably(&self.shared.installing_marker, "snapshot install in progress")?;
        // Disk work: the records go into the log and the queues are rebuilt.
        let installed = tokio::task::spawn_blocking(move || crate::snapshot::install_records(&shared, &snapshot).map(|()| snapshot))
            .await
            .map_err(io_err)??;
        if let SnapshotData::Staged { path, .. } = &installed {
            let _ = std::fs::remove_file(path);
        }
        let table = MetadataTable {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            topics: body.topics.clone(),
            queue_next: body.queue_next.clone(),
            consumers: body.consumers.clone(),
        };
        self.shared.db.replace_all(&table).map_err(io_err)?;
        *self.shared.unsaved.lock() = Changes::default();
        self.shared.db.save_snapshot(meta, &body).map_err(io_err)?;
        std::fs::remove_file(&self.shared.installing_marker)?;
        let applied = table.applied.map(|id| id.index).unwrap_or(0);
        *self.shared.table.write() = table;
        *self.shared.snapshot.lock() = Some((meta.clone(), body));
        self.shared.applied_tx.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let current = self.shared.snapshot.lock().clone();
        Ok(current.map(|(meta, body)| {
            let data = self.local_data(body, meta.last_log_id);
            Snapshot { meta, snapshot: data }
        }))
    }
}
