//! Consume queues: per (topic, queue id), a flat file of fixed-size entries pointing into the
//! commitlog. Offsets are dense from 0. Rebuildable from the commitlog.
//!
//! Entries carry no checksum: the file is derived data, and an entry that does not point inside a
//! commitlog record is rejected by `CommitLog::read_bytes`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::fs::read_exact_at;
use crate::limits::CONSUME_QUEUE_ENTRY_BYTES;
use crate::{CommitLogPosition, FileSystem, QueueOffset, StoreError, StoreFile};

const ENTRY_BYTES: u64 = CONSUME_QUEUE_ENTRY_BYTES as u64;
const SUFFIX: &str = ".cq";

/// One entry, 20 bytes on disk: position u64, size u32, tag hash u64 (little endian).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ConsumeQueueEntry {
    pub position: CommitLogPosition,
    pub size: u32,
    pub tag_hash: u64,
}

impl ConsumeQueueEntry {
    fn encode(&self) -> [u8; CONSUME_QUEUE_ENTRY_BYTES] {
        let mut out = [0; CONSUME_QUEUE_ENTRY_BYTES];
        out[..8].copy_from_slice(&self.position.0.to_le_bytes());
        out[8..12].copy_from_slice(&self.size.to_le_bytes());
        out[12..20].copy_from_slice(&self.tag_hash.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> ConsumeQueueEntry {
        ConsumeQueueEntry {
            position: CommitLogPosition(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))),
            size: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")),
            tag_hash: u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")),
        }
    }
}

pub struct ConsumeQueue {
    file: Arc<dyn StoreFile>,
    /// The next offset; held across each file operation so that reads, appends and truncations
    /// see whole entries.
    next: Mutex<QueueOffset>,
    /// Appended to since the last sync.
    dirty: AtomicBool,
}

impl ConsumeQueue {
    /// Opens the queue file, cutting a trailing partial entry (a torn append).
    fn open(fs: &dyn FileSystem, path: &Path) -> Result<ConsumeQueue, StoreError> {
        let file = fs.open(path, true).map_err(|e| StoreError::io("open consume queue", e))?;
        let file_len = file.len().map_err(|e| StoreError::io("stat consume queue", e))?;
        let whole_len = file_len - file_len % ENTRY_BYTES;
        if whole_len != file_len {
            tracing::warn!(queue = %path.display(), file_len, "cutting a partial consume queue entry");
            file.set_len(whole_len).map_err(|e| StoreError::io("cut consume queue tail", e))?;
            file.sync_data().map_err(|e| StoreError::io("sync consume queue", e))?;
        }
        Ok(ConsumeQueue { file, next: Mutex::new(QueueOffset(whole_len / ENTRY_BYTES)), dirty: AtomicBool::new(false) })
    }

    /// Offset the next append must use.
    pub fn next_offset(&self) -> QueueOffset {
        *self.next.lock()
    }

    /// Appends at `offset`, which must equal `next_offset()`. Not synced until `sync`.
    pub fn append(&self, offset: QueueOffset, entry: ConsumeQueueEntry) -> Result<(), StoreError> {
        let mut next = self.next.lock();
        if offset != *next {
            return Err(StoreError::OffsetNotConsecutive { expected: next.0, got: offset.0 });
        }
        self.file
            .write_all_at(&entry.encode(), offset.0 * ENTRY_BYTES)
            .map_err(|e| StoreError::io("append consume queue", e))?;
        next.0 += 1;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Up to `max` entries from `from`.
    pub fn read(&self, from: QueueOffset, max: usize) -> Result<Vec<(QueueOffset, ConsumeQueueEntry)>, StoreError> {
        let next = self.next.lock();
        let count = next.0.saturating_sub(from.0).min(max as u64) as usize;
        let mut bytes = vec![0; count * CONSUME_QUEUE_ENTRY_BYTES];
        read_exact_at(&*self.file, &mut bytes, from.0 * ENTRY_BYTES)
            .map_err(|e| StoreError::io("read consume queue", e))?;
        let entries = bytes.chunks_exact(CONSUME_QUEUE_ENTRY_BYTES).map(ConsumeQueueEntry::decode);
        Ok(entries.enumerate().map(|(i, entry)| (QueueOffset(from.0 + i as u64), entry)).collect())
    }

    /// Drops entries at and after `next`, durably.
    pub fn truncate_to(&self, next: QueueOffset) -> Result<(), StoreError> {
        let mut current = self.next.lock();
        if next >= *current {
            return Ok(());
        }
        self.file.set_len(next.0 * ENTRY_BYTES).map_err(|e| StoreError::io("truncate consume queue", e))?;
        self.file.sync_data().map_err(|e| StoreError::io("sync consume queue", e))?;
        *current = next;
        Ok(())
    }

    pub fn sync(&self) -> Result<(), StoreError> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let result = self.file.sync_data().map_err(|e| StoreError::io("sync consume queue", e));
            if result.is_err() {
                self.dirty.store(true, Ordering::Release);
            }
            return result;
        }
        Ok(())
    }
}

/// All consume queues under one directory (`<dir>/<topic>/<queue id>.cq`), opened lazily.
pub struct ConsumeQueueSet {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    queues: Mutex<HashMap<(String, u32), Arc<ConsumeQueue>>>,
}

/// Topics become directory names: refuse anything that is not one plain path component.
fn check_topic(topic: &str) -> Result<(), StoreError> {
    let bad =
        topic.is_empty() || topic == "." || topic == ".." || topic.contains(['/', '\\', '\0']) || topic.len() > 255;
    if bad {
        return Err(StoreError::Invalid(format!("topic name {topic:?} cannot be a directory name")));
    }
    Ok(())
}

impl ConsumeQueueSet {
    pub fn open(fs: Arc<dyn FileSystem>, dir: PathBuf) -> Result<ConsumeQueueSet, StoreError> {
        fs.create_dir_all(&dir).map_err(|e| StoreError::io("create consume queue directory", e))?;
        Ok(ConsumeQueueSet { fs, dir, queues: Mutex::new(HashMap::new()) })
    }

    fn queue_path(&self, topic: &str, queue_id: u32) -> PathBuf {
        self.dir.join(topic).join(format!("{queue_id}{SUFFIX}"))
    }

    pub fn queue(&self, topic: &str, queue_id: u32) -> Result<Arc<ConsumeQueue>, StoreError> {
        check_topic(topic)?;
        let mut queues = self.queues.lock();
        if let Some(queue) = queues.get(&(topic.to_string(), queue_id)) {
            return Ok(queue.clone());
        }
        let topic_dir = self.dir.join(topic);
        let path = self.queue_path(topic, queue_id);
        let existed = self.fs.exists(&path);
        if !self.fs.exists(&topic_dir) {
            self.fs.create_dir_all(&topic_dir).map_err(|e| StoreError::io("create topic directory", e))?;
            self.fs.sync_dir(&self.dir).map_err(|e| StoreError::io("sync consume queue directory", e))?;
        }
        let queue = Arc::new(ConsumeQueue::open(&*self.fs, &path)?);
        if !existed {
            // So that a later sync of the file is not lost with its directory entry.
            self.fs.sync_dir(&topic_dir).map_err(|e| StoreError::io("sync topic directory", e))?;
        }
        queues.insert((topic.to_string(), queue_id), queue.clone());
        Ok(queue)
    }

    /// Syncs every queue appended to since the last call.
    pub fn sync_dirty(&self) -> Result<(), StoreError> {
        let queues: Vec<Arc<ConsumeQueue>> = self.queues.lock().values().cloned().collect();
        queues.iter().try_for_each(|queue| queue.sync())
    }

    /// Every (topic, queue id) with a queue file on disk, sorted.
    pub fn list(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let mut found = Vec::new();
        for topic_dir in self.fs.read_dir(&self.dir).map_err(|e| StoreError::io("list consume queues", e))? {
            // Plain files at the top level are not topics; read_dir fails on them.
            let Ok(files) = self.fs.read_dir(&topic_dir) else { continue };
            let Some(topic) = topic_dir.file_name().and_then(|n| n.to_str()) else { continue };
            for file in files {
                let queue_id = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(SUFFIX))
                    .and_then(|id| id.parse().ok());
                if let Some(queue_id) = queue_id {
                    found.push((topic.to_string(), queue_id));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Removes every queue file (used before a rebuild). Handles obtained earlier must not be
    /// used afterwards. Topic directories stay (the FileSystem seam has no rmdir).
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut queues = self.queues.lock();
        queues.clear();
        let mut topic_dirs = Vec::new();
        for (topic, queue_id) in self.list()? {
            self.fs
                .remove_file(&self.queue_path(&topic, queue_id))
                .map_err(|e| StoreError::io("remove consume queue", e))?;
            topic_dirs.push(self.dir.join(topic));
        }
        topic_dirs.dedup();
        for topic_dir in topic_dirs {
            self.fs.sync_dir(&topic_dir).map_err(|e| StoreError::io("sync topic directory", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimFs;

    fn entry(n: u64) -> ConsumeQueueEntry {
        ConsumeQueueEntry { position: CommitLogPosition(n * 100), size: n as u32 + 1, tag_hash: n ^ 0xABCD }
    }

    // Goal: append/read/truncate/reopen round trip, offset checks, and the cut of a partial tail entry.
    #[test]
    fn append_read_truncate_reopen_partial_tail() {
        let sim = SimFs::new();
        let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
        let dir = PathBuf::from("/cq");
        let set = ConsumeQueueSet::open(fs.clone(), dir.clone()).unwrap();
        let queue = set.queue("orders", 3).unwrap();
        for n in 0..10 {
            queue.append(QueueOffset(n), entry(n)).unwrap();
        }
        assert!(matches!(
            queue.append(QueueOffset(5), entry(5)),
            Err(StoreError::OffsetNotConsecutive { expected: 10, got: 5 })
        ));
        let read = queue.read(QueueOffset(4), 3).unwrap();
        assert_eq!(read, (4..7).map(|n| (QueueOffset(n), entry(n))).collect::<Vec<_>>());
        assert_eq!(queue.read(QueueOffset(8), 100).unwrap().len(), 2);
        assert!(queue.read(QueueOffset(20), 5).unwrap().is_empty());
        queue.truncate_to(QueueOffset(7)).unwrap();
        assert_eq!(queue.next_offset(), QueueOffset(7));
        set.sync_dirty().unwrap();
        assert!(set.queue("a/b", 0).is_err());
        set.queue("other", 0).unwrap();
        assert_eq!(set.list().unwrap(), vec![("orders".to_string(), 3), ("other".to_string(), 0)]);

        // A torn append leaves 7 entries plus 9 bytes.
        let file = fs.open(&dir.join("orders/3.cq"), false).unwrap();
        file.write_all_at(&[0xEE; 9], 7 * ENTRY_BYTES).unwrap();
        drop((queue, set));
        let set = ConsumeQueueSet::open(fs.clone(), dir.clone()).unwrap();
        let queue = set.queue("orders", 3).unwrap();
        assert_eq!(queue.next_offset(), QueueOffset(7));
        assert_eq!(
            queue.read(QueueOffset(0), 100).unwrap(),
            (0..7).map(|n| (QueueOffset(n), entry(n))).collect::<Vec<_>>()
        );
        queue.append(QueueOffset(7), entry(7)).unwrap();

        set.clear().unwrap();
        assert!(set.list().unwrap().is_empty());
        assert_eq!(set.queue("orders", 3).unwrap().next_offset(), QueueOffset(0));
    }

    // Goal: synced entries of a queue survive a crash (file creation included); unsynced may not.
    #[test]
    fn synced_entries_survive_crash() {
        for seed in 0..50 {
            let sim = SimFs::new();
            let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
            let set = ConsumeQueueSet::open(fs.clone(), "/cq".into()).unwrap();
            let queue = set.queue("t", 1).unwrap();
            for n in 0..5 {
                queue.append(QueueOffset(n), entry(n)).unwrap();
            }
            set.sync_dirty().unwrap();
            for n in 5..8 {
                queue.append(QueueOffset(n), entry(n)).unwrap();
            }
            sim.crash(seed);
            let set = ConsumeQueueSet::open(fs, "/cq".into()).unwrap();
            let queue = set.queue("t", 1).unwrap();
            let next = queue.next_offset().0;
            assert!((5..=8).contains(&next), "seed {seed}: next {next}");
            let read = queue.read(QueueOffset(0), 5).unwrap();
            assert_eq!(read, (0..5).map(|n| (QueueOffset(n), entry(n))).collect::<Vec<_>>());
        }
    }
}
