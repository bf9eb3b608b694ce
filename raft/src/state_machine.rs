//! The state machine: applies committed entries in log order on every node.
//!
//! Applying a `Send` assigns each message its queue offset (the next one of its queue) and appends
//! a consume-queue entry pointing at the message's bytes inside the commitlog record; no message
//! is copied. Metadata and the applied id are then made durable together (see metadata_table.rs).
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use parking_lot::{Mutex, RwLock};
use raftmq_store::{CommitLog, ConsumeQueueEntry, ConsumeQueueSet, LogIndex, QueueOffset, RECORD_HEADER_LEN};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::command::{AdminCommand, Command, SendCommand, StoredMessage, TopicConfig};
use crate::metadata_table::{Changes, MetadataDb, MetadataTable};
use crate::types::{CommandResponse, LogId, SnapshotMeta, StoredMembership, TypeConfig};

pub type SnapshotData = Vec<u8>;
type Snapshot = openraft::Snapshot<crate::types::CommittedLeaderId, crate::types::NodeId, crate::types::PeerNode, SnapshotData>;

/// Stable 64-bit hash of a tag, stored in consume-queue entries for filtering.
pub fn tag_hash(tag: Option<&str>) -> u64 {
    tag.map(|t| crc32c::crc32c(t.as_bytes()) as u64 + 1).unwrap_or(0)
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
    snapshot: Mutex<Option<(SnapshotMeta, SnapshotData)>>,
}

#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<SmShared>,
}

/// What a snapshot carries: the metadata. Message bytes stay in the commitlog.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    topics: BTreeMap<String, TopicConfig>,
    queue_next: BTreeMap<(String, u32), u64>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl StateMachine {
    pub fn open(log: Arc<CommitLog>, queues: ConsumeQueueSet, db_path: &Path) -> io::Result<StateMachine> {
        let (db, table) = MetadataDb::open(db_path).map_err(io_err)?;
        // Cut consume-queue entries that redb does not know of: the log replay rewrites them.
        for (topic, queue_id) in queues.list().map_err(io_err)? {
            let next = table.queue_next.get(&(topic.clone(), queue_id)).copied().unwrap_or(0);
            queues.queue(&topic, queue_id).and_then(|q| q.truncate_to(QueueOffset(next))).map_err(io_err)?;
        }
        let applied = table.applied.map(|id| id.index).unwrap_or(0);
        let (applied_tx, _) = watch::channel(applied);
        let shared = SmShared { log, queues, db, table: RwLock::new(table), applied_tx, snapshot: Mutex::new(None) };
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

    /// (min, next) offsets of a queue; min is 0 until retention is wired to queues.
    pub fn queue_range(&self, topic: &str, queue_id: u32) -> (u64, u64) {
        let next = self.table.read().queue_next.get(&(topic.to_string(), queue_id)).copied().unwrap_or(0);
        (0, next)
    }

    pub fn applied(&self) -> Option<LogId> {
        self.table.read().applied
    }

    pub fn membership(&self) -> StoredMembership {
        self.table.read().membership.clone()
    }

    /// Wakes whenever the applied index moves (long polling waits on it).
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    pub fn commit_log(&self) -> &Arc<CommitLog> {
        &self.log
    }

    /// Up to `max` applied messages of (topic, queue) from `from`. Messages whose segment was
    /// deleted by retention are skipped.
    pub fn read_queue(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> io::Result<Vec<QueuedMessage>> {
        let (_, next) = self.queue_range(topic, queue_id);
        if from >= next {
            return Ok(Vec::new());
        }
        let max = max.min((next - from) as usize);
        let queue = self.queues.queue(topic, queue_id).map_err(io_err)?;
        let mut out = Vec::with_capacity(max);
        for (offset, entry) in queue.read(QueueOffset(from), max).map_err(io_err)? {
            if offset.0 >= next {
                break;
            }
            let Some(bytes) = self.log.read_bytes(entry.position, entry.size).map_err(io_err)? else { continue };
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
        let mut next = first_offset;
        for (at, bytes) in &send.messages {
            let message = StoredMessage::decode(bytes.clone()).map_err(io_err)?;
            let position = raftmq_store::CommitLogPosition(record_position.0 + (RECORD_HEADER_LEN + at) as u64);
            let entry = ConsumeQueueEntry {
                position,
                size: bytes.len() as u32,
                tag_hash: tag_hash(message.header.tag.as_deref()),
            };
            queue.append(QueueOffset(next), entry).map_err(io_err)?;
            next += 1;
        }
        table.queue_next.insert(key.clone(), next);
        changes.queues.insert(key);
        Ok(CommandResponse::Sent { queue_id: send.queue_id, first_offset, store_timestamp_ms: send.store_timestamp_ms })
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
                changes.topics.insert(name);
                CommandResponse::TopicDeleted
            }
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let table = self.shared.table.read().clone();
        let body = SnapshotBody { topics: table.topics, queue_next: table.queue_next };
        let data = bincode::serialize(&body).map_err(io_err)?;
        let meta = SnapshotMeta { last_log_id: table.applied, last_membership: table.membership };
        *self.shared.snapshot.lock() = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachine;

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
                    Err(e) => CommandResponse::Rejected(e.to_string()),
                },
            };
            table.applied = Some(entry.log_id);
            if let Some(responder) = responder {
                replies.push((responder, response));
            }
        }
        // Queues first, then redb: a queue is never shorter than redb says.
        shared.queues.sync_dirty().map_err(io_err)?;
        shared.db.persist(&table, &changes).map_err(io_err)?;
        let applied = table.applied.map(|id| id.index).unwrap_or(0);
        *shared.table.write() = table;
        shared.applied_tx.send_replace(applied);
        for (responder, response) in replies {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let body: SnapshotBody = bincode::deserialize(&snapshot).map_err(io_err)?;
        let table = MetadataTable {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            topics: body.topics,
            queue_next: body.queue_next,
        };
        self.shared.db.replace_all(&table).map_err(io_err)?;
        let applied = table.applied.map(|id| id.index).unwrap_or(0);
        *self.shared.table.write() = table;
        *self.shared.snapshot.lock() = Some((meta.clone(), snapshot));
        self.shared.applied_tx.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.shared.snapshot.lock().clone().map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

