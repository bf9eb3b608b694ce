//! The state machine's metadata, built by applying commands, and its durable copy in redb.
//!
//! redb holds the applied log id, the membership, topics, each queue's next offset and the
//! consumer groups with their cursors (see consumer.rs). The log is the source of truth, so the
//! state machine writes redb only at checkpoints, now and then (consume queues synced first, then
//! one durable transaction with every row changed since the last checkpoint), serves everything
//! from its in-memory table in between, and, after a crash, replays the log from the last
//! checkpoint's applied index; consume-queue entries past a queue's recorded next offset are cut
//! (the replay rewrites them). Because queues are synced before each durable commit, a queue is
//! never shorter than the durable redb says.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::command::TopicConfig;
use crate::consumer::{ConsumerChanges, ConsumerState, CursorKey};
use crate::types::{LogId, StoredMembership};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
/// Key: "<topic>/<queue id>", value: next queue offset.
const QUEUES: TableDefinition<&str, u64> = TableDefinition::new("queues");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// Key: bincode of the cursor key, value: bincode of the cursor.
const CURSORS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cursors");

#[derive(Debug, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct MetadataError(String);

fn err(e: impl std::fmt::Display) -> MetadataError {
    MetadataError(e.to_string())
}

pub type QueueKey = (String, u32);

/// In-memory metadata. `queue_next` holds every queue that has received a message.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MetadataTable {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    pub topics: BTreeMap<String, TopicConfig>,
    pub queue_next: BTreeMap<QueueKey, u64>,
    pub consumers: ConsumerState,
}

/// What applies changed since the last write, so that only that is written.
#[derive(Default)]
pub struct Changes {
    pub topics: BTreeSet<String>,
    pub queues: BTreeSet<QueueKey>,
    pub membership: bool,
    pub consumers: ConsumerChanges,
}

impl Changes {
    /// Adds `other`'s changed keys to these (rows are written from the table, so a key once
    /// named is enough).
    pub fn merge(&mut self, other: Changes) {
        self.topics.extend(other.topics);
        self.queues.extend(other.queues);
        self.membership |= other.membership;
        self.consumers.groups.extend(other.consumers.groups);
        self.consumers.cursors.extend(other.consumers.cursors);
    }
}

fn queue_key(topic: &str, queue_id: u32) -> String {
    format!("{topic}/{queue_id}")
}

pub struct MetadataDb {
    db: Database,
}

impl MetadataDb {
    pub fn open(path: &Path) -> Result<(MetadataDb, MetadataTable), MetadataError> {
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        {
            txn.open_table(META).map_err(err)?;
            txn.open_table(TOPICS).map_err(err)?;
            txn.open_table(QUEUES).map_err(err)?;
            txn.open_table(GROUPS).map_err(err)?;
            txn.open_table(CURSORS).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        let table = Self::load(&db)?;
        Ok((MetadataDb { db }, table))
    }

    fn load(db: &Database) -> Result<MetadataTable, MetadataError> {
        let txn = db.begin_read().map_err(err)?;
        let meta = txn.open_table(META).map_err(err)?;
        let mut table = MetadataTable::default();
        if let Some(v) = meta.get("applied").map_err(err)? {
            table.applied = bincode::deserialize(v.value()).map_err(err)?;
        }
        if let Some(v) = meta.get("membership").map_err(err)? {
            table.membership = bincode::deserialize(v.value()).map_err(err)?;
        }
        for row in txn.open_table(TOPICS).map_err(err)?.iter().map_err(err)? {
            let (name, value) = row.map_err(err)?;
            table.topics.insert(name.value().to_string(), bincode::deserialize(value.value()).map_err(err)?);
        }
        for row in txn.open_table(QUEUES).map_err(err)?.iter().map_err(err)? {
            let (key, value) = row.map_err(err)?;
            let key = key.value();
            let (topic, queue) = key.rsplit_once('/').ok_or_else(|| err("bad queue key"))?;
            let queue_id = queue.parse().map_err(err)?;
            table.queue_next.insert((topic.to_string(), queue_id), value.value());
        }
        for row in txn.open_table(GROUPS).map_err(err)?.iter().map_err(err)? {
            let (name, value) = row.map_err(err)?;
            table.consumers.groups.insert(name.value().to_string(), bincode::deserialize(value.value()).map_err(err)?);
        }
        for row in txn.open_table(CURSORS).map_err(err)?.iter().map_err(err)? {
            let (key, value) = row.map_err(err)?;
            let key: CursorKey = bincode::deserialize(key.value()).map_err(err)?;
            table.consumers.cursors.insert(key, bincode::deserialize(value.value()).map_err(err)?);
        }
        Ok(table)
    }

    /// Writes the applied id and every changed row in one durable transaction. The caller syncs
    /// consume queues first.
    pub fn persist(&self, table: &MetadataTable, changes: &Changes) -> Result<(), MetadataError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::Immediate).map_err(err)?;
        Self::write_rows(&txn, table, changes)?;
        txn.commit().map_err(err)
    }

    fn write_rows(txn: &redb::WriteTransaction, table: &MetadataTable, changes: &Changes) -> Result<(), MetadataError> {
        let mut meta = txn.open_table(META).map_err(err)?;
        meta.insert("applied", bincode::serialize(&table.applied).map_err(err)?.as_slice()).map_err(err)?;
        if changes.membership {
            meta.insert("membership", bincode::serialize(&table.membership).map_err(err)?.as_slice()).map_err(err)?;
        }
        let mut topics = txn.open_table(TOPICS).map_err(err)?;
        for name in &changes.topics {
            match table.topics.get(name) {
                Some(config) => {
                    topics.insert(name.as_str(), bincode::serialize(config).map_err(err)?.as_slice()).map_err(err)?;
                }
                None => {
                    topics.remove(name.as_str()).map_err(err)?;
                }
            }
        }
        let mut queues = txn.open_table(QUEUES).map_err(err)?;
        for key @ (topic, queue_id) in &changes.queues {
            match table.queue_next.get(key) {
                Some(next) => queues.insert(queue_key(topic, *queue_id).as_str(), *next).map_err(err)?,
                None => queues.remove(queue_key(topic, *queue_id).as_str()).map_err(err)?,
            };
        }
        let mut groups = txn.open_table(GROUPS).map_err(err)?;
        for name in &changes.consumers.groups {
            match table.consumers.groups.get(name) {
                Some(config) => groups.insert(name.as_str(), bincode::serialize(config).map_err(err)?.as_slice()).map(|_| ()),
                None => groups.remove(name.as_str()).map(|_| ()),
            }
            .map_err(err)?;
        }
        let mut cursors = txn.open_table(CURSORS).map_err(err)?;
        for key in &changes.consumers.cursors {
            let key_bytes = bincode::serialize(key).map_err(err)?;
            match table.consumers.cursors.get(key) {
                Some(cursor) => cursors.insert(key_bytes.as_slice(), bincode::serialize(cursor).map_err(err)?.as_slice()).map(|_| ()),
                None => cursors.remove(key_bytes.as_slice()).map(|_| ()),
            }
            .map_err(err)?;
        }
        Ok(())
    }

    /// The latest snapshot's metadata, kept so that a restarted node can still send it.
    pub fn save_snapshot(&self, meta: &crate::types::SnapshotMeta, body: &crate::snapshot::SnapshotBody) -> Result<(), MetadataError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::Immediate).map_err(err)?;
        {
            let mut table = txn.open_table(META).map_err(err)?;
            table.insert("snapshot", bincode::serialize(&(meta, body)).map_err(err)?.as_slice()).map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    pub fn clear_snapshot(&self) -> Result<(), MetadataError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::Immediate).map_err(err)?;
        txn.open_table(META).map_err(err)?.remove("snapshot").map_err(err)?;
        txn.commit().map_err(err)
    }

    pub fn load_snapshot(&self) -> Result<Option<(crate::types::SnapshotMeta, crate::snapshot::SnapshotBody)>, MetadataError> {
        let txn = self.db.begin_read().map_err(err)?;
        let meta = txn.open_table(META).map_err(err)?;
        match meta.get("snapshot").map_err(err)? {
            Some(v) => Ok(Some(bincode::deserialize(v.value()).map_err(err)?)),
            None => Ok(None),
        }
    }

    /// Replaces everything (snapshot install) in one transaction.
    pub fn replace_all(&self, table: &MetadataTable) -> Result<(), MetadataError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::Immediate).map_err(err)?;
        txn.delete_table(TOPICS).map_err(err)?;
        txn.delete_table(QUEUES).map_err(err)?;
        txn.delete_table(GROUPS).map_err(err)?;
        txn.delete_table(CURSORS).map_err(err)?;
        let changes = Changes {
            topics: table.topics.keys().cloned().collect(),
            queues: table.queue_next.keys().cloned().collect(),
            membership: true,
            consumers: ConsumerChanges {
                groups: table.consumers.groups.keys().cloned().collect(),
                cursors: table.consumers.cursors.keys().cloned().collect(),
            },
        };
        Self::write_rows(&txn, table, &changes)?;
        txn.commit().map_err(err)
    }
}
