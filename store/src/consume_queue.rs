//! Consume queues: per (topic, queue id), a flat file of fixed-size entries pointing into the
//! commitlog. Offsets are dense from the queue's base offset, which is 0 unless the queue was
//! reset (`ConsumeQueueSet::reset_queue`, a node catching up from a snapshot); retention moves the
//! queue's min offset forward (`ConsumeQueue::truncate_front`) without rewriting the file.
//! Rebuildable from the commitlog.
//!
//! Entries carry no checksum: the file is derived data, and an entry that does not point inside a
//! commitlog record is rejected by `CommitLog::read_bytes`.
//!
//! Base and min live in a small per-queue meta file (`<queue id>.cqmeta`, replaced atomically);
//! a queue without one has base = min = 0 (the format before base offsets existed). A reset
//! commits by writing a meta with a "reset pending" flag, then empties the data file, then clears
//! the flag; opening a queue whose meta has the flag set finishes the reset. See README.md.
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::atomic_file;
use crate::fs::read_exact_at;
use crate::limits::CONSUME_QUEUE_ENTRY_BYTES;
use crate::{CommitLogPosition, FileSystem, QueueOffset, StoreError, StoreFile};

const ENTRY_BYTES: u64 = CONSUME_QUEUE_ENTRY_BYTES as u64;
const SUFFIX: &str = ".cq";
/// The per-queue meta file is `<queue id>.cq` + this (so `<queue id>.cqmeta`).
const META_SUFFIX: &str = "meta";
const META_VERSION: u8 = 1;
const META_BYTES: usize = 18;
/// Meta flag: the data file must be emptied before the queue is used (a reset in progress).
const META_FLAG_RESET_PENDING: u8 = 1;

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
    fs: Arc<dyn FileSystem>,
    file: Arc<dyn StoreFile>,
    meta_path: PathBuf,
    /// Held across each file operation so that reads, appends, truncations and resets see whole
    /// entries and a consistent (base, min, next).
    state: Mutex<QueueState>,
    /// Appended to since the last sync.
    dirty: AtomicBool,
}

struct QueueState {
    /// Offset of the entry at byte 0 of the data file.
    base: QueueOffset,
    /// First readable offset: base <= min <= next.
    min: QueueOffset,
    /// The next offset.
    next: QueueOffset,
    /// Set when the in-memory view may disagree with the disk (a meta write or reset that failed
    /// half-way) or the queue was cleared: every operation returns this error. A successful
    /// `reset_queue` clears it (the reset is idempotent); otherwise reopen after a restart.
    broken: Option<StoreError>,
}

impl QueueState {
    fn check(&self) -> Result<(), StoreError> {
        match &self.broken {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Byte position of the entry for `offset` (offset >= base).
    fn byte_position(&self, offset: QueueOffset) -> u64 {
        debug_assert!(offset >= self.base);
        (offset.0 - self.base.0) * ENTRY_BYTES
    }
}

/// Contents of the meta file: `version u8 | flags u8 | base u64 | min u64` (little endian), framed
/// by `atomic_file` (length + crc32c).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct QueueMeta {
    reset_pending: bool,
    base: QueueOffset,
    min: QueueOffset,
}

impl QueueMeta {
    /// What a queue without a meta file has.
    const LEGACY: QueueMeta = QueueMeta { reset_pending: false, base: QueueOffset(0), min: QueueOffset(0) };

    fn encode(&self) -> [u8; META_BYTES] {
        let mut out = [0; META_BYTES];
        out[0] = META_VERSION;
        out[1] = if self.reset_pending { META_FLAG_RESET_PENDING } else { 0 };
        out[2..10].copy_from_slice(&self.base.0.to_le_bytes());
        out[10..18].copy_from_slice(&self.min.0.to_le_bytes());
        out
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<QueueMeta, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            segment: path.display().to_string(),
            position: 0,
            reason: reason.to_string(),
        };
        if bytes.len() != META_BYTES {
            return Err(corrupt("consume queue meta has the wrong length"));
        }
        if bytes[0] != META_VERSION {
            return Err(corrupt("unknown consume queue meta version"));
        }
        if bytes[1] & !META_FLAG_RESET_PENDING != 0 {
            return Err(corrupt("unknown consume queue meta flags"));
        }
        let meta = QueueMeta {
            reset_pending: bytes[1] & META_FLAG_RESET_PENDING != 0,
            base: QueueOffset(u64::from_le_bytes(bytes[2..10].try_into().expect("8 bytes"))),
            min: QueueOffset(u64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes"))),
        };
        if meta.min < meta.base {
            return Err(corrupt("consume queue meta has min below base"));
        }
        Ok(meta)
    }

    fn load(fs: &dyn FileSystem, path: &Path) -> Result<QueueMeta, StoreError> {
        match atomic_file::load(fs, path)? {
            Some(bytes) => QueueMeta::decode(path, &bytes),
            None => Ok(QueueMeta::LEGACY),
        }
    }

    /// Durable when it returns Ok (temp file, fdatasync, rename, directory fsync).
    fn save(&self, fs: &dyn FileSystem, path: &Path) -> Result<(), StoreError> {
        atomic_file::replace(fs, path, &self.encode())
    }
}

fn meta_path_of(data_path: &Path) -> PathBuf {
    let mut name = OsString::from(data_path.as_os_str());
    name.push(META_SUFFIX);
    PathBuf::from(name)
}

impl ConsumeQueue {
    /// Opens the queue file and its meta, finishing an interrupted reset and cutting a trailing
    /// partial entry (a torn append); the entries it finds are made durable.
    fn open(fs: Arc<dyn FileSystem>, path: &Path) -> Result<ConsumeQueue, StoreError> {
        let meta_path = meta_path_of(path);
        if !fs.exists(path) && fs.exists(&meta_path) {
            // `clear` removes data files (durably) before meta files: this meta belongs to a
            // cleared queue. Drop it before the data file is created again.
            tracing::warn!(queue = %path.display(), "removing the meta of a cleared consume queue");
            atomic_file::remove(&*fs, &meta_path)?;
        }
        let file = fs.open(path, true).map_err(|e| StoreError::io("open consume queue", e))?;
        let mut meta = QueueMeta::load(&*fs, &meta_path)?;
        if meta.reset_pending {
            // The reset committed (its meta is durable) but may not have emptied the data file.
            tracing::warn!(queue = %path.display(), base = meta.base.0, "finishing an interrupted consume queue reset");
            file.set_len(0).map_err(|e| StoreError::io("empty consume queue", e))?;
            file.sync_data().map_err(|e| StoreError::io("sync consume queue", e))?;
            meta.reset_pending = false;
            meta.save(&*fs, &meta_path)?;
        }
        let file_len = file.len().map_err(|e| StoreError::io("stat consume queue", e))?;
        let whole_len = file_len - file_len % ENTRY_BYTES;
        if whole_len != file_len {
            tracing::warn!(queue = %path.display(), file_len, "cutting a partial consume queue entry");
            file.set_len(whole_len).map_err(|e| StoreError::io("cut consume queue tail", e))?;
        }
        // What the queue counts from now on must be durable: entries an earlier process wrote
        // may still be only in the page cache, and this handle starts clean (not dirty).
        file.sync_data().map_err(|e| StoreError::io("sync consume queue", e))?;
        let next = QueueOffset(meta.base.0 + whole_len / ENTRY_BYTES);
        if meta.min > next {
            // truncate_front syncs the entries below the new min before the meta names it.
            return Err(StoreError::Corrupt {
                segment: path.display().to_string(),
                position: whole_len,
                reason: format!("consume queue min offset {} is above its last entry ({})", meta.min.0, next.0),
            });
        }
        let state = QueueState { base: meta.base, min: meta.min, next, broken: None };
        Ok(ConsumeQueue { fs, file, meta_path, state: Mutex::new(state), dirty: AtomicBool::new(false) })
    }

    /// Offset the next append must use.
    pub fn next_offset(&self) -> QueueOffset {
        self.state.lock().next
    }

    /// First offset the queue holds (RocketMQ's min offset); equals `next_offset()` when the
    /// queue is empty. 0 unless the queue was reset or truncated at the front.
    pub fn min_offset(&self) -> QueueOffset {
        self.state.lock().min
    }

    /// Appends at `offset`, which must equal `next_offset()`. Not synced until `sync`.
    pub fn append(&self, offset: QueueOffset, entry: ConsumeQueueEntry) -> Result<(), StoreError> {
        self.append_batch(offset, &[entry])
    }

    /// Appends consecutive entries from `first` (which must equal `next_offset()`) in one write.
    pub fn append_batch(&self, first: QueueOffset, entries: &[ConsumeQueueEntry]) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        state.check()?;
        if first != state.next {
            return Err(StoreError::OffsetNotConsecutive { expected: state.next.0, got: first.0 });
        }
        let mut bytes = Vec::with_capacity(entries.len() * CONSUME_QUEUE_ENTRY_BYTES);
        for entry in entries {
            bytes.extend_from_slice(&entry.encode());
        }
        self.file
            .write_all_at(&bytes, state.byte_position(first))
            .map_err(|e| StoreError::io("append consume queue", e))?;
        state.next.0 += entries.len() as u64;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Up to `max` entries from `from`, with their queue offsets. Starts at `min_offset()` if
    /// `from` is below it (those entries were removed by retention or precede a reset).
    pub fn read(&self, from: QueueOffset, max: usize) -> Result<Vec<(QueueOffset, ConsumeQueueEntry)>, StoreError> {
        let state = self.state.lock();
        state.check()?;
        let from = from.max(state.min);
        let count = state.next.0.saturating_sub(from.0).min(max as u64) as usize;
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut bytes = vec![0; count * CONSUME_QUEUE_ENTRY_BYTES];
        read_exact_at(&*self.file, &mut bytes, state.byte_position(from))
            .map_err(|e| StoreError::io("read consume queue", e))?;
        let entries = bytes.chunks_exact(CONSUME_QUEUE_ENTRY_BYTES).map(ConsumeQueueEntry::decode);
        Ok(entries.enumerate().map(|(i, entry)| (QueueOffset(from.0 + i as u64), entry)).collect())
    }

    /// Drops entries at and after `next`, durably. `next` below `min_offset()` is refused
    /// (`StoreError::Invalid`): the queue cannot hold offsets below its min; use `reset_queue`.
    pub fn truncate_to(&self, next: QueueOffset) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        state.check()?;
        if next >= state.next {
            return Ok(());
        }
        if next < state.min {
            return Err(StoreError::Invalid(format!(
                "cannot truncate a consume queue to {} below its min offset {}",
                next.0, state.min.0
            )));
        }
        self.file.set_len(state.byte_position(next)).map_err(|e| StoreError::io("truncate consume queue", e))?;
        self.file.sync_data().map_err(|e| StoreError::io("sync consume queue", e))?;
        state.next = next;
        Ok(())
    }

    /// Retention: makes entries below `new_min` unreadable, durably when it returns Ok. The
    /// entries stay in the file (only the meta changes), except that truncating everything
    /// (`new_min >= next_offset()`) empties the file with a reset at `next_offset()`. Never moves
    /// the min backwards (a lower `new_min` is a no-op) nor past `next_offset()` (clamped: the
    /// append point does not move; use `reset_queue` for that).
    pub fn truncate_front(&self, new_min: QueueOffset) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        state.check()?;
        if new_min <= state.min {
            return Ok(());
        }
        if new_min >= state.next {
            let next = state.next;
            return self.reset_locked(&mut state, next);
        }
        // The entries up to the new min must be durable before the meta names it, so that a crash
        // never leaves a min above the last entry. Unconditional: a concurrent `sync` may have
        // taken the dirty flag and not finished its fdatasync yet.
        self.dirty.store(false, Ordering::Release);
        if let Err(error) = self.file.sync_data() {
            self.dirty.store(true, Ordering::Release);
            return Err(StoreError::io("sync consume queue", error));
        }
        let meta = QueueMeta { reset_pending: false, base: state.base, min: new_min };
        if let Err(error) = meta.save(&*self.fs, &self.meta_path) {
            // The new meta may or may not be on disk.
            state.broken = Some(error.clone());
            return Err(error);
        }
        state.min = new_min;
        Ok(())
    }

    /// Replaces the queue, in place, by an empty one at `base`. Crash-safe: the first meta write
    /// is the commit point; `open` finishes a committed reset. On error the queue is left broken
    /// (the disk may hold either queue) until a reset succeeds or the node restarts.
    fn reset_locked(&self, state: &mut QueueState, base: QueueOffset) -> Result<(), StoreError> {
        let result = (|| {
            QueueMeta { reset_pending: true, base, min: base }.save(&*self.fs, &self.meta_path)?;
            self.file.set_len(0).map_err(|e| StoreError::io("empty consume queue", e))?;
            self.file.sync_data().map_err(|e| StoreError::io("sync consume queue", e))?;
            QueueMeta { reset_pending: false, base, min: base }.save(&*self.fs, &self.meta_path)
        })();
        match result {
            Ok(()) => {
                *state = QueueState { base, min: base, next: base, broken: None };
                self.dirty.store(false, Ordering::Release);
                Ok(())
            }
            Err(error) => {
                state.broken = Some(error.clone());
                Err(error)
            }
        }
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
        let queue = Arc::new(ConsumeQueue::open(self.fs.clone(), &path)?);
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

    /// Durably replaces (topic, queue id) by an empty queue whose min and next offsets are `base`
    /// (a node that caught up from a snapshot starts its queues where the leader's retained
    /// messages start); appends then continue at `base`. The queue object is reset in place, so
    /// every `Arc<ConsumeQueue>` handed out earlier sees the new, empty queue, never the old
    /// entries. Crash-safe: after a crash the queue is either the old one or the new empty one.
    /// On error the queue returns that error from every call until a reset succeeds.
    pub fn reset_queue(&self, topic: &str, queue_id: u32, base: QueueOffset) -> Result<Arc<ConsumeQueue>, StoreError> {
        let queue = self.queue(topic, queue_id)?;
        {
            let mut state = queue.state.lock();
            queue.reset_locked(&mut state, base)?;
        }
        Ok(queue)
    }

    /// Removes every queue (used before a rebuild): data files first, durably, then meta files,
    /// so that a crash never leaves old entries without their base (a meta without its data file
    /// is dropped on open). Handles obtained earlier fail from then on. Topic directories stay
    /// (the FileSystem seam has no rmdir).
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut queues = self.queues.lock();
        for queue in queues.values() {
            queue.state.lock().broken = Some(StoreError::Invalid("consume queue was cleared; get it again".into()));
        }
        queues.clear();
        let mut topic_dirs = Vec::new();
        for (topic, queue_id) in self.list()? {
            self.fs
                .remove_file(&self.queue_path(&topic, queue_id))
                .map_err(|e| StoreError::io("remove consume queue", e))?;
            topic_dirs.push(self.dir.join(topic));
        }
        topic_dirs.dedup();
        for topic_dir in &topic_dirs {
            self.fs.sync_dir(topic_dir).map_err(|e| StoreError::io("sync topic directory", e))?;
        }
        // Meta files (and torn temp files of their replacements), also of queues whose data file
        // an earlier, interrupted clear removed.
        let meta_suffix = format!("{SUFFIX}{META_SUFFIX}");
        for topic_dir in self.fs.read_dir(&self.dir).map_err(|e| StoreError::io("list consume queues", e))? {
            let Ok(files) = self.fs.read_dir(&topic_dir) else { continue };
            let mut removed = false;
            for file in files {
                let Some(name) = file.file_name().and_then(|n| n.to_str()) else { continue };
                let name = name.strip_suffix(".tmp").unwrap_or(name);
                if name.ends_with(&meta_suffix) {
                    self.fs.remove_file(&file).map_err(|e| StoreError::io("remove consume queue meta", e))?;
                    removed = true;
                }
            }
            if removed {
                self.fs.sync_dir(&topic_dir).map_err(|e| StoreError::io("sync topic directory", e))?;
            }
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

    fn entries(range: std::ops::Range<u64>) -> Vec<(QueueOffset, ConsumeQueueEntry)> {
        range.map(|n| (QueueOffset(n), entry(n))).collect()
    }

    fn open_set(sim: &SimFs) -> ConsumeQueueSet {
        ConsumeQueueSet::open(Arc::new(sim.clone()), "/cq".into()).unwrap()
    }

    // Goal: a reset queue starts at its base (min == next == base), appends continue there, reads below min start at min, handles handed out earlier see the reset, and it all survives a reopen.
    #[test]
    fn reset_queue_in_place_and_reopen() {
        let sim = SimFs::new();
        let set = open_set(&sim);
        let old_handle = set.queue("t", 0).unwrap();
        for n in 0..6 {
            old_handle.append(QueueOffset(n), entry(n)).unwrap();
        }
        assert_eq!(old_handle.min_offset(), QueueOffset(0));
        let queue = set.reset_queue("t", 0, QueueOffset(1000)).unwrap();
        assert!(Arc::ptr_eq(&queue, &old_handle));
        for handle in [&queue, &old_handle] {
            assert_eq!((handle.min_offset(), handle.next_offset()), (QueueOffset(1000), QueueOffset(1000)));
            assert!(handle.read(QueueOffset(0), 100).unwrap().is_empty());
        }
        assert!(matches!(
            old_handle.append(QueueOffset(6), entry(6)),
            Err(StoreError::OffsetNotConsecutive { expected: 1000, got: 6 })
        ));
        for n in 1000..1004 {
            old_handle.append(QueueOffset(n), entry(n)).unwrap();
        }
        assert_eq!(queue.read(QueueOffset(3), 2).unwrap(), entries(1000..1002));
        assert_eq!(queue.read(QueueOffset(1002), 100).unwrap(), entries(1002..1004));
        assert!(queue.read(QueueOffset(1004), 100).unwrap().is_empty());
        assert!(matches!(queue.truncate_to(QueueOffset(999)), Err(StoreError::Invalid(_))));
        queue.truncate_to(QueueOffset(1003)).unwrap();
        set.sync_dirty().unwrap();
        // The data file holds only the entries from the base.
        assert_eq!(sim.open(Path::new("/cq/t/0.cq"), false).unwrap().len().unwrap(), 3 * ENTRY_BYTES);
        assert_eq!(set.list().unwrap(), vec![("t".to_string(), 0)]);
        drop((queue, old_handle, set));

        let set = open_set(&sim);
        let queue = set.queue("t", 0).unwrap();
        assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(1000), QueueOffset(1003)));
        assert_eq!(queue.read(QueueOffset(0), 100).unwrap(), entries(1000..1003));
        // Resetting a queue that was never opened creates it at its base; a lower base is allowed.
        let fresh = set.reset_queue("u", 7, QueueOffset(5)).unwrap();
        assert_eq!((fresh.min_offset(), fresh.next_offset()), (QueueOffset(5), QueueOffset(5)));
        set.reset_queue("t", 0, QueueOffset(2)).unwrap();
        assert_eq!(queue.next_offset(), QueueOffset(2));
        // clear removes data and meta files: the queues come back empty at 0.
        set.clear().unwrap();
        assert!(queue.read(QueueOffset(0), 1).is_err(), "a handle from before clear must fail");
        assert!(!sim.exists(Path::new("/cq/t/0.cqmeta")));
        let queue = set.queue("t", 0).unwrap();
        assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(0), QueueOffset(0)));
    }

    // Goal: truncate_front hides entries below the new min (reads start there, offsets stay real), never rewrites the data file, is durable, only moves forward, clamps to next and empties the file when nothing is left.
    #[test]
    fn truncate_front_moves_min_lazily() {
        let sim = SimFs::new();
        let set = open_set(&sim);
        let queue = set.queue("t", 1).unwrap();
        for n in 0..10 {
            queue.append(QueueOffset(n), entry(n)).unwrap();
        }
        queue.truncate_front(QueueOffset(4)).unwrap();
        assert_eq!(queue.min_offset(), QueueOffset(4));
        assert_eq!(queue.read(QueueOffset(0), 3).unwrap(), entries(4..7));
        assert_eq!(queue.read(QueueOffset(5), 100).unwrap(), entries(5..10));
        queue.truncate_front(QueueOffset(2)).unwrap();
        assert_eq!(queue.min_offset(), QueueOffset(4), "min never moves back");
        assert!(matches!(queue.truncate_to(QueueOffset(3)), Err(StoreError::Invalid(_))));
        queue.truncate_to(QueueOffset(4)).unwrap();
        assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(4), QueueOffset(4)));
        for n in 4..10 {
            queue.append(QueueOffset(n), entry(n)).unwrap();
        }
        queue.truncate_front(QueueOffset(6)).unwrap();
        // Lazy: the entries below min stay in the file.
        assert_eq!(sim.open(Path::new("/cq/t/1.cq"), false).unwrap().len().unwrap(), 10 * ENTRY_BYTES);
        // Everything went (and beyond next: clamped), so the file is emptied; next does not move.
        let set2 = open_set(&sim);
        assert_eq!(set2.queue("t", 1).unwrap().read(QueueOffset(0), 100).unwrap(), entries(6..10));
        drop(set2);
        queue.truncate_front(QueueOffset(50)).unwrap();
        assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(10), QueueOffset(10)));
        assert_eq!(sim.open(Path::new("/cq/t/1.cq"), false).unwrap().len().unwrap(), 0);
        queue.append(QueueOffset(10), entry(10)).unwrap();
        set.sync_dirty().unwrap();
        sim.crash(3);
        let set = open_set(&sim);
        let queue = set.queue("t", 1).unwrap();
        assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(10), QueueOffset(11)));
        assert_eq!(queue.read(QueueOffset(0), 100).unwrap(), entries(10..11));
    }

    /// The old format by hand: bare 20-byte entries, `position u64 | size u32 | tag hash u64` LE.
    fn legacy_bytes() -> Vec<u8> {
        let mut bytes = Vec::new();
        for n in 0..3u64 {
            bytes.extend_from_slice(&(n * 100).to_le_bytes());
            bytes.extend_from_slice(&(n as u32 + 1).to_le_bytes());
            bytes.extend_from_slice(&(n ^ 0xABCD).to_le_bytes());
        }
        assert_eq!(bytes.len(), 60);
        bytes
    }

    // Goal: golden test: a queue written the old way (a bare file of 20-byte entries, no meta) opens with base and min 0, on SimFs and on the real file system.
    #[test]
    fn legacy_queue_without_meta_opens_at_zero() {
        let sim = SimFs::new();
        sim.create_dir_all(Path::new("/cq/old")).unwrap();
        let file = sim.open(Path::new("/cq/old/2.cq"), true).unwrap();
        file.write_all_at(&legacy_bytes(), 0).unwrap();
        file.sync_data().unwrap();
        let real_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(real_dir.path().join("old")).unwrap();
        std::fs::write(real_dir.path().join("old/2.cq"), legacy_bytes()).unwrap();
        let sets = [
            ConsumeQueueSet::open(Arc::new(sim.clone()), "/cq".into()).unwrap(),
            ConsumeQueueSet::open(Arc::new(crate::RealFs), real_dir.path().into()).unwrap(),
        ];
        for set in sets {
            assert_eq!(set.list().unwrap(), vec![("old".to_string(), 2)]);
            let queue = set.queue("old", 2).unwrap();
            assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(0), QueueOffset(3)));
            assert_eq!(queue.read(QueueOffset(0), 10).unwrap(), entries(0..3));
            queue.append(QueueOffset(3), entry(3)).unwrap();
            queue.truncate_front(QueueOffset(1)).unwrap();
            assert_eq!(queue.read(QueueOffset(0), 10).unwrap(), entries(1..4));
        }
    }

    // Goal: golden test of the meta format: hand-written meta bytes (version 1, flags, base, min) give that base and min; a pending-reset flag empties the data file on open; damage is refused.
    #[test]
    fn meta_file_golden() {
        fn framed(contents: &[u8]) -> Vec<u8> {
            let mut out = (contents.len() as u32).to_le_bytes().to_vec();
            out.extend_from_slice(&crc32c::crc32c(contents).to_le_bytes());
            out.extend_from_slice(contents);
            out
        }
        fn meta(flags: u8, base: u64, min: u64) -> Vec<u8> {
            let mut contents = vec![1, flags];
            contents.extend_from_slice(&base.to_le_bytes());
            contents.extend_from_slice(&min.to_le_bytes());
            framed(&contents)
        }
        let write = |sim: &SimFs, path: &str, bytes: &[u8]| {
            let file = sim.open(Path::new(path), true).unwrap();
            file.write_all_at(bytes, 0).unwrap();
            file.sync_data().unwrap();
        };
        let sim = SimFs::new();
        sim.create_dir_all(Path::new("/cq/t")).unwrap();
        write(&sim, "/cq/t/0.cq", &legacy_bytes());
        write(&sim, "/cq/t/0.cqmeta", &meta(0, 500, 501));
        write(&sim, "/cq/t/1.cq", &legacy_bytes());
        write(&sim, "/cq/t/1.cqmeta", &meta(1, 70, 70));
        write(&sim, "/cq/t/2.cq", &legacy_bytes());
        write(&sim, "/cq/t/2.cqmeta", &meta(0, 10, 9));
        let set = open_set(&sim);
        let queue = set.queue("t", 0).unwrap();
        assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(501), QueueOffset(503)));
        let read = queue.read(QueueOffset(0), 10).unwrap();
        assert_eq!(read, vec![(QueueOffset(501), entry(1)), (QueueOffset(502), entry(2))]);
        let queue = set.queue("t", 1).unwrap();
        assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(70), QueueOffset(70)));
        assert_eq!(sim.open(Path::new("/cq/t/1.cq"), false).unwrap().len().unwrap(), 0);
        assert!(matches!(set.queue("t", 2), Err(StoreError::Corrupt { .. })), "min below base");
        // Our encoder writes exactly the documented bytes.
        set.reset_queue("t", 0, QueueOffset(0x0102)).unwrap();
        let file = sim.open(Path::new("/cq/t/0.cqmeta"), false).unwrap();
        let mut bytes = vec![0; file.len().unwrap() as usize];
        read_exact_at(&*file, &mut bytes, 0).unwrap();
        assert_eq!(bytes, meta(0, 0x0102, 0x0102));
    }

    /// Appends entries 0..5 synced, then 5..7 unsynced, to queue ("t", 0).
    fn queue_with_entries(sim: &SimFs) -> ConsumeQueueSet {
        let set = open_set(sim);
        let queue = set.queue("t", 0).unwrap();
        for n in 0..5 {
            queue.append(QueueOffset(n), entry(n)).unwrap();
        }
        queue.truncate_front(QueueOffset(1)).unwrap();
        set.sync_dirty().unwrap();
        for n in 5..7 {
            queue.append(QueueOffset(n), entry(n)).unwrap();
        }
        set
    }

    /// The old queue after a crash: min 1, the synced entries 1..5, maybe (torn or garbage)
    /// unsynced entries up to 7.
    fn is_old_queue(queue: &ConsumeQueue) -> bool {
        let next = queue.next_offset().0;
        queue.min_offset() == QueueOffset(1)
            && (5..=7).contains(&next)
            && queue.read(QueueOffset(0), 4).unwrap() == entries(1..5)
    }

    // Goal: reset_queue interrupted by a power cut at every step (then a random crash) leaves either the old queue or the new empty one at its base, never a mix; once reset_queue returned Ok, always the new one.
    #[test]
    fn reset_queue_crash_is_all_or_nothing() {
        let (mut old_seen, mut new_seen) = (0, 0);
        for cut_after in 0..16 {
            for seed in 0..40 {
                let sim = SimFs::new();
                let set = queue_with_entries(&sim);
                sim.cut_power_after(cut_after);
                let reset_ok = set.reset_queue("t", 0, QueueOffset(777)).is_ok();
                if reset_ok && seed % 2 == 0 {
                    // Appends after the reset, unsynced: they may be lost but never mixed.
                    let queue = set.queue("t", 0).unwrap();
                    let _ = queue.append(QueueOffset(777), entry(777));
                }
                sim.crash(seed * 31 + cut_after);
                let set = open_set(&sim);
                let queue = set.queue("t", 0).unwrap();
                let is_new = queue.min_offset() == QueueOffset(777)
                    && queue.next_offset() >= QueueOffset(777)
                    && queue.next_offset() <= QueueOffset(778)
                    && queue.read(QueueOffset(0), 10).unwrap().len() as u64 == queue.next_offset().0 - 777;
                let is_old = is_old_queue(&queue);
                assert!(is_new ^ is_old, "cut {cut_after} seed {seed}: neither old nor new queue");
                assert!(!reset_ok || is_new, "cut {cut_after} seed {seed}: acknowledged reset lost");
                if is_new {
                    new_seen += 1
                } else {
                    old_seen += 1
                }
                // The queue works after recovery.
                let next = queue.next_offset();
                queue.append(next, entry(next.0)).unwrap();
                queue.sync().unwrap();
            }
        }
        assert!(old_seen > 0 && new_seen > 0, "old {old_seen} new {new_seen}");
    }

    // Goal: truncate_front interrupted by a power cut at every step (then a random crash) leaves the min old or new, with every synced entry from that min intact; once it returned Ok, the new min.
    #[test]
    fn truncate_front_crash_keeps_old_or_new_min() {
        let (mut old_seen, mut new_seen) = (0, 0);
        for cut_after in 0..8 {
            for seed in 0..40 {
                let sim = SimFs::new();
                let set = queue_with_entries(&sim);
                sim.cut_power_after(cut_after);
                let ok = set.queue("t", 0).unwrap().truncate_front(QueueOffset(6)).is_ok();
                sim.crash(seed * 17 + cut_after);
                let set = open_set(&sim);
                let queue = set.queue("t", 0).unwrap();
                let next = queue.next_offset().0;
                if queue.min_offset() == QueueOffset(6) {
                    // The data was synced before the meta named min 6.
                    assert_eq!(
                        queue.read(QueueOffset(0), 10).unwrap(),
                        entries(6..next),
                        "cut {cut_after} seed {seed}"
                    );
                    assert_eq!(next, 7, "cut {cut_after} seed {seed}");
                    new_seen += 1;
                } else {
                    assert!(!ok, "cut {cut_after} seed {seed}: acknowledged truncate_front lost");
                    assert!(is_old_queue(&queue), "cut {cut_after} seed {seed}: min {:?}", queue.min_offset());
                    old_seen += 1;
                }
            }
        }
        assert!(old_seen > 0 && new_seen > 0, "old {old_seen} new {new_seen}");
    }

    // Goal: clear interrupted at every step never brings old entries back under the wrong base: each queue is either intact (base and entries) or empty at 0.
    #[test]
    fn clear_crash_never_mixes_base_and_entries() {
        for cut_after in 0..8 {
            for seed in 0..20 {
                let sim = SimFs::new();
                let set = open_set(&sim);
                let queue = set.reset_queue("t", 0, QueueOffset(40)).unwrap();
                for n in 40..43 {
                    queue.append(QueueOffset(n), entry(n)).unwrap();
                }
                set.sync_dirty().unwrap();
                sim.cut_power_after(cut_after);
                let cleared = set.clear().is_ok();
                sim.crash(seed);
                let set = open_set(&sim);
                let queue = set.queue("t", 0).unwrap();
                let range = (queue.min_offset().0, queue.next_offset().0);
                if range == (0, 0) {
                    assert!(!sim.exists(Path::new("/cq/t/0.cqmeta")) || !cleared);
                } else {
                    assert!(!cleared, "cut {cut_after} seed {seed}: a cleared queue came back");
                    assert_eq!(range, (40, 43), "cut {cut_after} seed {seed}");
                    assert_eq!(queue.read(QueueOffset(0), 10).unwrap(), entries(40..43));
                }
            }
        }
    }
}
