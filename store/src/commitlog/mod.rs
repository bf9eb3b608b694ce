//! The segmented commitlog. API contract here; the implementation is in the submodules:
//! `segment` (file format, per-segment index), `index_file` (a sealed segment's index, persisted so
//! open need not scan it), `recovery` (open: load or scan), `log_core` (lookups and reads), `mutate`
//! (append, truncate, purge, retention, reset), `flusher` (group commit), `page_cache` (what of the
//! log leaves the page cache), `meta` (the persisted purge point).
//!
//! To ensure correctness:
//! - no holes: each appended record's index is last + 1 (or, on an empty log, any index > purged);
//! - a flush callback fires only after its records are durable under the flush policy;
//! - truncation is suffix-only (`truncate_after`), purge only moves the logical start.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::RwLock;

use crate::limits::{
    PAGE_CACHE_TAIL_BYTES_DEFAULT, RECORD_PAYLOAD_BYTES_DEFAULT, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES,
    SEGMENT_SIZE_BYTES_DEFAULT, SEGMENT_SIZE_BYTES_MAX, SEGMENT_SIZE_BYTES_MIN,
};
use crate::{CommitLogPosition, FileSystem, LogIndex, RECORD_HEADER_LEN, Record, StoreError};

mod flusher;
mod index_file;
mod log_core;
mod meta;
mod mutate;
mod page_cache;
mod recovery;
mod segment;

#[cfg(test)]
mod index_file_tests;
#[cfg(test)]
mod tests;

/// When an append counts as done.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Callbacks fire after fdatasync (group commit). The default.
    #[default]
    Sync,
    /// Callbacks fire once the bytes are written (page cache); a background flusher syncs later.
    Async,
}

#[derive(Clone, Debug)]
pub struct CommitLogConfig {
    pub segment_size_bytes: u64,
    pub flush: FlushPolicy,
    /// Async policy: how often the background flusher syncs.
    pub async_flush_interval: Duration,
    /// Largest payload `append` accepts; a maximal record must fit one segment (checked at open).
    pub record_payload_bytes_max: usize,
    /// How much of the end of the log stays in the page cache: older bytes are dropped from it
    /// after they are synced (see `page_cache`). None leaves the page cache to the kernel.
    pub page_cache_tail_bytes: Option<u64>,
}

impl Default for CommitLogConfig {
    fn default() -> Self {
        CommitLogConfig {
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            flush: FlushPolicy::Sync,
            async_flush_interval: Duration::from_millis(10),
            record_payload_bytes_max: RECORD_PAYLOAD_BYTES_DEFAULT,
            page_cache_tail_bytes: Some(PAGE_CACHE_TAIL_BYTES_DEFAULT),
        }
    }
}

impl CommitLogConfig {
    fn validate(&self) -> Result<(), StoreError> {
        let invalid = |what: String| Err(StoreError::Invalid(what));
        if !(SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&self.segment_size_bytes) {
            return invalid(format!(
                "segment_size_bytes {} outside [{SEGMENT_SIZE_BYTES_MIN}, {SEGMENT_SIZE_BYTES_MAX}]",
                self.segment_size_bytes
            ));
        }
        if !(1..=RECORD_PAYLOAD_BYTES_MAX).contains(&self.record_payload_bytes_max) {
            return invalid(format!(
                "record_payload_bytes_max {} outside [1, {RECORD_PAYLOAD_BYTES_MAX}]",
                self.record_payload_bytes_max
            ));
        }
        // A record never spans segments, so the largest one must fit an empty segment.
        let largest_record_bytes = SEGMENT_HEADER_BYTES + (RECORD_HEADER_LEN + self.record_payload_bytes_max) as u64;
        if largest_record_bytes > self.segment_size_bytes {
            return invalid(format!(
                "a record with a {} byte payload does not fit a {} byte segment",
                self.record_payload_bytes_max, self.segment_size_bytes
            ));
        }
        if self.flush == FlushPolicy::Async && self.async_flush_interval.is_zero() {
            return invalid("async_flush_interval must be positive".into());
        }
        Ok(())
    }
}

/// Called once, from the flusher thread, when the records of one `append` are durable (or failed).
/// If `append` itself returns an error, the callback is dropped without being called.
pub type FlushCallback = Box<dyn FnOnce(Result<(), StoreError>) + Send + 'static>;

/// What Raft needs to know about the log.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LogState {
    /// (index, term) of the last purged record: the logical start is purged + 1.
    pub purged: Option<(LogIndex, u64)>,
    /// (index, term) of the last record, or `purged` if the log holds nothing after it.
    pub last: Option<(LogIndex, u64)>,
    /// Lowest index whose record is still physically present (retention has not deleted it).
    pub first_retained: Option<LogIndex>,
}

#[derive(Clone, Debug, Default)]
pub struct RetentionPolicy {
    pub max_age: Option<Duration>,
    pub max_total_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    /// First index still retained afterwards.
    pub first_retained: Option<LogIndex>,
}

pub struct CommitLog {
    core: RwLock<log_core::LogCore>,
    flusher: flusher::Flusher,
}

impl CommitLog {
    /// Opens (creating if needed) the log in `dir`, cutting a torn tail. Sealed segments with a
    /// valid index file are loaded from it; the others, and always the last one, are scanned.
    pub fn open(fs: Arc<dyn FileSystem>, dir: PathBuf, config: CommitLogConfig) -> Result<CommitLog, StoreError> {
        config.validate()?;
        fs.create_dir_all(&dir).map_err(|e| StoreError::io("create commitlog directory", e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent).map_err(|e| StoreError::io("sync parent directory", e))?;
        }
        let purged = meta::load(&*fs, &dir)?;
        let segments = recovery::recover(&*fs, &dir, purged)?;
        let flusher = flusher::Flusher::start(config.flush, config.async_flush_interval)?;
        let core = log_core::LogCore { fs, dir, config, segments, purged, base_when_empty: 0 };
        Ok(CommitLog { core: RwLock::new(core), flusher })
    }

    /// An I/O error during a mutation leaves the files in an unknown state: the log is failed
    /// from then on. Other errors (bad arguments) leave it untouched.
    fn guard<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error @ StoreError::Io { .. }) = &result {
            self.flusher.fail(error.clone());
        }
        result
    }

    /// Writes records (page cache) and returns at once; `on_flushed` fires when they are durable.
    pub fn append(&self, records: &[Record], on_flushed: FlushCallback) -> Result<(), StoreError> {
        let mut core = self.core.write();
        self.flusher.check()?;
        let files = self.guard(core.append(records))?;
        let drops = core.cache_drops();
        // Registered under the log lock, so callbacks fire in append order.
        self.flusher.register(files, drops, on_flushed);
        Ok(())
    }

    /// Blocks until everything appended so far is durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.flusher.sync()
    }

    pub fn state(&self) -> LogState {
        self.core.read().state()
    }

    pub fn read(&self, index: LogIndex) -> Result<Option<Record>, StoreError> {
        self.core.read().read(index.0)
    }

    /// Records in [start, end) up to about `max_bytes` (at least one record if any is in range).
    pub fn read_range(&self, start: LogIndex, end: LogIndex, max_bytes: usize) -> Result<Vec<Record>, StoreError> {
        self.core.read().read_range(start.0, end.0, max_bytes)
    }

    /// Start position of the record with this index.
    pub fn position(&self, index: LogIndex) -> Option<CommitLogPosition> {
        self.core.read().position(index.0)
    }

    /// `len` bytes at `position` (inside one record); None if retention deleted it.
    pub fn read_bytes(&self, position: CommitLogPosition, len: u32) -> Result<Option<Bytes>, StoreError> {
        Ok(self.read_many(&[(position, len)])?.pop().flatten())
    }

    /// The bytes of several (position, len) ranges, each as `read_bytes` would return it, read
    /// with as few system calls as their placement allows (see `LogCore::read_many`).
    pub fn read_many(&self, ranges: &[(CommitLogPosition, u32)]) -> Result<Vec<Option<Bytes>>, StoreError> {
        self.core.read().read_many(ranges)
    }

    /// Deletes every record after `last_kept` (all if None), durably, before returning.
    /// `last_kept` may not be below the purge point (use `reset` to drop everything).
    pub fn truncate_after(&self, last_kept: Option<LogIndex>) -> Result<(), StoreError> {
        // Pending callbacks fire before the records they cover can disappear.
        self.flusher.sync()?;
        let mut core = self.core.write();
        self.flusher.check()?;
        self.guard(core.truncate_after(last_kept))
    }

    /// Moves the logical start to `index` + 1, durably. Files stay until retention deletes them.
    pub fn purge(&self, index: LogIndex, term: u64) -> Result<(), StoreError> {
        let mut core = self.core.write();
        self.flusher.check()?;
        self.guard(core.purge(index, term))
    }

    /// Deletes whole segments that are purged and too old / over size.
    pub fn enforce_retention(&self, policy: &RetentionPolicy, now: SystemTime) -> Result<RetentionReport, StoreError> {
        let mut core = self.core.write();
        self.flusher.check()?;
        self.guard(core.enforce_retention(policy, now))
    }

    /// Deletes everything (records, purge point) durably: the log is empty and accepts any first index.
    pub fn reset(&self) -> Result<(), StoreError> {
        self.flusher.sync()?;
        let mut core = self.core.write();
        self.flusher.check()?;
        self.guard(core.reset())
    }

    /// Total bytes of the segment files (headers included).
    pub fn size_bytes(&self) -> u64 {
        self.core.read().segments.iter().map(|s| s.write_position).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.core.read().segments.len()
    }
}
