//! A bounded page-cache footprint: once the log has grown `page_cache_tail_bytes` past a range,
//! the flusher advises the kernel to drop that range's pages after its next sync.
//!
//! Why: every byte appended lands in a page-cache page, and on our bench VMs (Firecracker, whose
//! balloon reports free guest pages back to the host) a page the kernel takes from free memory is
//! costly to fill the first time: writing 100 MiB into a new file cost 1.5 ms of CPU per MiB,
//! into pages just freed by dropping another file's cache 0.2 ms, overwriting cached pages 0.06
//! ms. Left alone, the commitlog keeps taking fresh pages until memory is full; under sync flush
//! the copy into them was half the followers' CPU at batch-32 load. With a 256 MiB tail the
//! full bench matrix (two runs each way, ABBA) went: sync batch-32 78k -> 106k msgs/s, sync
//! (16,32) 39k -> 53k; the async cases and read-back were unchanged. Readers of the tail
//! (replication, consumers keeping up) still read memory; a consumer further behind reads from
//! disk, as it would once memory had filled up anyway.
use std::sync::Arc;

use crate::StoreFile;

use super::log_core::LogCore;

/// Least part of a segment handed out at once, so the flusher makes one fadvise call per this
/// many bytes written rather than one per append.
const CACHE_DROP_STEP_BYTES: u64 = 8 * 1024 * 1024;

/// A range of one file whose pages may leave the page cache once it is synced.
pub(super) struct CacheDrop {
    pub file: Arc<dyn StoreFile>,
    pub offset: u64,
    pub len: u64,
}

impl CacheDrop {
    /// Advisory: a failure costs memory, never data, so it is logged and forgotten.
    pub fn run(&self) {
        if let Err(error) = self.file.drop_cache(self.offset, self.len) {
            tracing::debug!(%error, offset = self.offset, len = self.len, "dropping commitlog pages from the page cache failed");
        }
    }
}

impl LogCore {
    /// The ranges now more than `page_cache_tail_bytes` behind the end of the log that were not
    /// handed out before, marked as handed out.
    pub fn cache_drops(&mut self) -> Vec<CacheDrop> {
        let mut drops = Vec::new();
        let Some(tail) = self.config.page_cache_tail_bytes else { return drops };
        let Some(end) = self.segments.back().map(|s| s.base + s.write_position) else { return drops };
        let Some(threshold) = end.checked_sub(tail) else { return drops };
        for segment in self.segments.iter_mut().rev() {
            if segment.cache_dropped_to >= segment.write_position && segment.base + segment.write_position <= threshold {
                // Older segments were handed out whole before this one.
                break;
            }
            let upto = threshold.saturating_sub(segment.base).min(segment.write_position);
            let whole_rest = upto == segment.write_position;
            if upto > segment.cache_dropped_to && (whole_rest || upto - segment.cache_dropped_to >= CACHE_DROP_STEP_BYTES) {
                drops.push(CacheDrop { file: segment.file.clone(), offset: segment.cache_dropped_to, len: upto - segment.cache_dropped_to });
                segment.cache_dropped_to = upto;
            }
        }
        drops
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::CACHE_DROP_STEP_BYTES;
    use crate::commitlog::tests::{DIR, record};
    use crate::commitlog::{CommitLog, CommitLogConfig};
    use crate::{LogIndex, SimFs};

    const MIB: u64 = 1024 * 1024;
    const TAIL: u64 = 3 * MIB;

    fn open(tail: Option<u64>) -> CommitLog {
        let config = CommitLogConfig {
            segment_size_bytes: 20 * MIB,
            record_payload_bytes_max: MIB as usize,
            page_cache_tail_bytes: tail,
            ..CommitLogConfig::default()
        };
        CommitLog::open(Arc::new(SimFs::new()), PathBuf::from(DIR), config).unwrap()
    }

    /// Appends records `from..=to` of ~`size` bytes one by one, as `CommitLog::append` would, and
    /// checks every range handed out: it starts where its segment's last one ended (no hole, no
    /// byte twice) and lies at least `TAIL` behind the end of the log. `dropped` tracks the
    /// extent handed out per segment base.
    fn append_checked(log: &CommitLog, from: u64, to: u64, size: usize, dropped: &mut BTreeMap<u64, u64>) {
        for index in from..=to {
            let mut core = log.core.write();
            core.append(&[record(index, 1, size)]).unwrap();
            let end = core.segments.back().map(|s| s.base + s.write_position).unwrap();
            for drop in core.cache_drops() {
                let base = core.segments.iter().find(|s| Arc::ptr_eq(&s.file, &drop.file)).unwrap().base;
                let done = dropped.entry(base).or_insert(0);
                assert_eq!(drop.offset, *done, "a range of segment {base} must start where its last one ended");
                assert!(drop.len > 0);
                assert!(base + drop.offset + drop.len + TAIL <= end, "dropped within the tail");
                *done = drop.offset + drop.len;
            }
        }
    }

    // Goal: everything more than the tail (plus one step) behind the end of the log is handed out
    // to leave the page cache, exactly once, in pieces of at least a step inside the active
    // segment; nothing of the tail ever is.
    #[test]
    fn drops_everything_behind_the_tail_once() {
        let log = open(Some(TAIL));
        let mut dropped = BTreeMap::new();
        // ~60 MiB over three 20 MiB segments.
        append_checked(&log, 1, 240, 256 * 1024, &mut dropped);
        let core = log.core.read();
        let end = core.segments.back().map(|s| s.base + s.write_position).unwrap();
        assert!(core.segments.len() >= 3);
        for segment in &core.segments {
            let done = dropped.get(&segment.base).copied().unwrap_or(0);
            if segment.base + segment.write_position + TAIL <= end {
                assert_eq!(done, segment.write_position, "segment {} is behind the tail: all of it goes", segment.base);
            } else {
                let behind = (end - TAIL).saturating_sub(segment.base);
                assert!(behind - done < CACHE_DROP_STEP_BYTES, "at most a step behind the tail is left in the cache");
            }
        }
    }

    // Goal: after a truncation into ranges already dropped, the re-appended bytes are handed out
    // again once they fall behind the tail (the mark never stays past the write position).
    #[test]
    fn truncation_moves_the_mark_back() {
        let log = open(Some(TAIL));
        let mut dropped = BTreeMap::new();
        append_checked(&log, 1, 60, 256 * 1024, &mut dropped);
        log.truncate_after(Some(LogIndex(10))).unwrap();
        {
            let core = log.core.read();
            let active = core.segments.back().unwrap();
            assert!(active.cache_dropped_to <= active.write_position);
            dropped.insert(active.base, active.cache_dropped_to);
        }
        append_checked(&log, 11, 70, 256 * 1024, &mut dropped);
        let core = log.core.read();
        let active = core.segments.back().unwrap();
        assert!(active.cache_dropped_to + TAIL + CACHE_DROP_STEP_BYTES > active.write_position);
        assert!(active.cache_dropped_to > 0);
    }

    // Goal: with no tail configured the page cache is left to the kernel.
    #[test]
    fn no_tail_no_drops() {
        let log = open(None);
        for index in 1..=60 {
            let mut core = log.core.write();
            core.append(&[record(index, 1, 256 * 1024)]).unwrap();
            assert!(core.cache_drops().is_empty());
        }
    }
}
