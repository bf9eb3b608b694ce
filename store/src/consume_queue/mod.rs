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
/// Appended entries wait in memory (the queue's tail) until this many bytes are pending, a sync,
/// or an operation that needs the file. One write per ~400 entries instead of one per append:
/// a queue is derived from the commitlog and rebuilt from it after a crash (see the state
/// machine's checkpoint), so entries need not reach the file before they are synced anyway.
const TAIL_BYTES_MAX: usize = 8 * 1024;

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
    /// Encoded entries from `next - tail entries` up to `next`, not written to the file yet.
    tail: Vec<u8>,
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

    /// The first offset held only in memory (== `next` when the tail is empty).
    fn written(&self) -> QueueOffset {
        QueueOffset(self.next.0 - (self.tail.len() as u64) / ENTRY_BYTES)
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
        let state = QueueState { base: meta.base, min: meta.min, next, tail: Vec::new(), broken: None };
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

    /// Appends at `offset`, which must equal `next_offset()`. Readable at once; written to the
    /// file when the tail fills (`TAIL_BYTES_MAX`) and durable after `sync`.
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
        for entry in entries {
            state.tail.extend_from_slice(&entry.encode());
        }
        state.next.0 += entries.len() as u64;
        self.dirty.store(true, Ordering::Release);
        if state.tail.len() >= TAIL_BYTES_MAX {
            self.write_tail(&mut state)?;
        }
        Ok(())
    }

    /// Writes the in-memory tail to the file. A failed write leaves the queue broken: what the
    /// file holds is unknown, and the next restart rebuilds the queue from the commitlog.
    fn write_tail(&self, state: &mut QueueState) -> Result<(), StoreError> {
        if state.tail.is_empty() {
            return Ok(());
        }
        let position = state.byte_position(state.written());
        if let Err(e) = self.file.write_all_at(&state.tail, position) {
            let error = StoreError::io("append consume queue", e);
            state.broken = Some(error.clone());
            return Err(error);
        }
        state.tail.clear();
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
        // Entries below `written` come from the file, the rest from the tail.
        let written = state.written();
        let from_file = written.0.saturating_sub(from.0).min(count as u64) as usize * CONSUME_QUEUE_ENTRY_BYTES;
        if from_file > 0 {
            read_exact_at(&*self.file, &mut bytes[..from_file], state.byte_position(from))
                .map_err(|e| StoreError::io("read consume queue", e))?;
        }
        if from_file < bytes.len() {
            let tail_start = (from.0 + (from_file / CONSUME_QUEUE_ENTRY_BYTES) as u64 - written.0) as usize * CONSUME_QUEUE_ENTRY_BYTES;
            let rest = bytes.len() - from_file;
            bytes[from_file..].copy_from_slice(&state.tail[tail_start..tail_start + rest]);
        }
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
        let written = state.written();
        if next >= written {
            // Only unwritten entries go: the file is untouched.
            state.tail.truncate(((next.0 - written.0) * ENTRY_BYTES) as usize);
            state.next = next;
            return Ok(());
        }
        state.tail.clear();
        state.next = written;
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
        self.write_tail(&mut state)?;
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
                *state = QueueState { base, min: base, next: base, tail: Vec::new(), broken: None };
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
        {
            // A broken queue's tail is moot: the queue is rebuilt before it is used again.
            let mut state = self.state.lock();
            if state.broken.is_none() {
                self.write_tail(&mut state)?;
            }
        }
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
mod tests;
