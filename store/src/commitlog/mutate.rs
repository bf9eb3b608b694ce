//! Mutations of `LogCore`: append (with rolling), truncation, purge, retention, reset.
//!
//! Crash-ordering rules kept here:
//! - a segment is fdatasynced before its successor is created, so only the last segment can have
//!   unsynced bytes (recovery treats damage anywhere else as corruption);
//! - segments are removed one at a time, each removal made durable (fsync dir) before the next,
//!   always from an end of the log, so a crash leaves a contiguous log;
//! - the purge point is durable before any purged segment is deleted;
//! - a sealed segment's index file is written after its successor exists, and removed durably
//!   before the segment is deleted, or cut or written as the active segment again (see
//!   `index_file`), so an index file never describes bytes that are gone.
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{LogIndex, Record, StoreError, StoreFile};

use super::log_core::LogCore;
use super::segment::{IndexEntry, Segment};
use super::{RetentionPolicy, RetentionReport, index_file, meta};

/// Records encoded for the active segment but not yet written.
struct Staged {
    bytes: Vec<u8>,
    entries: Vec<(u64, IndexEntry)>,
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl LogCore {
    fn validate_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        let first = records[0].index.0;
        for (i, record) in records.iter().enumerate() {
            let limit = self.config.record_payload_bytes_max;
            if record.payload.len() > limit {
                return Err(StoreError::TooLarge { size: record.payload.len(), limit });
            }
            let expected = first + i as u64;
            if record.index.0 != expected {
                return Err(StoreError::IndexNotConsecutive { expected, got: record.index.0 });
            }
        }
        if self.has_unpurged_records() {
            let expected = self.last_record().expect("has records").0 + 1;
            if first != expected {
                return Err(StoreError::IndexNotConsecutive { expected, got: first });
            }
        } else if let Some(purged) = self.purged_index()
            && first <= purged
        {
            return Err(StoreError::IndexNotConsecutive { expected: purged + 1, got: first });
        }
        Ok(())
    }

    /// Writes `records` (one write per segment touched); returns the files written.
    pub fn append(&mut self, records: &[Record]) -> Result<Vec<Arc<dyn StoreFile>>, StoreError> {
        let mut touched = Vec::new();
        let Some(first) = records.first() else { return Ok(touched) };
        self.validate_batch(records)?;
        // An index gap (allowed only over the purged prefix) always starts a new segment, so
        // indexes stay dense inside every segment.
        let gap = self.last_record().is_some_and(|(last, _)| first.index.0 != last + 1);
        let active_has_records = self.segments.back().is_some_and(|s| !s.entries.is_empty());
        if self.segments.is_empty() || (gap && active_has_records) {
            self.roll()?;
        }
        let mut staged = Staged { bytes: Vec::new(), entries: Vec::new() };
        for record in records {
            let len_bytes = record.encoded_len() as u64;
            let mut position = self.segments.back().expect("active segment").write_position + staged.bytes.len() as u64;
            if position + len_bytes > self.config.segment_size_bytes {
                self.write_staged(&mut staged, &mut touched)?;
                self.roll()?;
                position = self.segments.back().expect("active segment").write_position;
            }
            let entry =
                IndexEntry { position_in_segment: position as u32, len_bytes: len_bytes as u32, term: record.term };
            staged.entries.push((record.index.0, entry));
            record.encode_into(&mut staged.bytes);
        }
        self.write_staged(&mut staged, &mut touched)?;
        Ok(touched)
    }

    fn write_staged(&mut self, staged: &mut Staged, touched: &mut Vec<Arc<dyn StoreFile>>) -> Result<(), StoreError> {
        if staged.bytes.is_empty() {
            return Ok(());
        }
        let segment = self.segments.back_mut().expect("active segment");
        segment.file.write_all_at(&staged.bytes, segment.write_position).map_err(|e| StoreError::io("append", e))?;
        #[cfg(debug_assertions)]
        verify_written(segment, staged)?;
        for (index, entry) in staged.entries.drain(..) {
            segment.push(index, entry);
        }
        touched.push(segment.file.clone());
        staged.bytes.clear();
        Ok(())
    }

    /// Seals the active segment (fdatasync) and starts a new one (header synced, dir synced), then
    /// writes the sealed segment's index file. The index only speeds up `open`: failing to write
    /// it is logged, not returned (open scans a segment that has none).
    fn roll(&mut self) -> Result<(), StoreError> {
        if let Some(active) = self.segments.back() {
            active.file.sync_data().map_err(|e| StoreError::io("seal segment", e))?;
        }
        let segment = Segment::create(&*self.fs, &self.dir, self.next_base(), unix_millis(SystemTime::now()))?;
        self.fs.sync_dir(&self.dir).map_err(|e| StoreError::io("sync commitlog directory", e))?;
        self.segments.push_back(segment);
        if let Some(sealed) = self.segments.len().checked_sub(2).map(|number| &self.segments[number]) {
            index_file::write_or_warn(&*self.fs, &self.dir, sealed);
        }
        Ok(())
    }

    /// Removes the last segment file durably, its index file first (callers remove from an end,
    /// one at a time).
    fn remove_last_segment(&mut self) -> Result<(), StoreError> {
        let segment = self.segments.back().expect("a segment to remove");
        index_file::remove(&*self.fs, &self.dir, segment.base)?;
        self.fs.remove_file(&segment.path).map_err(|e| StoreError::io("remove segment", e))?;
        self.fs.sync_dir(&self.dir).map_err(|e| StoreError::io("sync commitlog directory", e))?;
        self.segments.pop_back();
        Ok(())
    }

    pub fn truncate_after(&mut self, last_kept: Option<LogIndex>) -> Result<(), StoreError> {
        let keep = last_kept.map(|k| k.0);
        if let Some(purged) = self.purged_index()
            && keep.is_none_or(|k| k < purged)
        {
            return Err(StoreError::Invalid(format!("cannot truncate after {keep:?}: purged up to {purged}")));
        }
        let Some((last, _)) = self.last_record() else { return Ok(()) };
        if keep.is_some_and(|k| k >= last) {
            return Ok(());
        }
        while self.segments.len() > 1 {
            let back = self.segments.back().expect("len > 1");
            if !back.entries.is_empty() && keep.is_some_and(|k| back.first_index <= k) {
                break;
            }
            self.remove_last_segment()?;
        }
        // The kept last segment is the active one from now on, and may be cut: its index file (if
        // it was sealed) goes first, durably. A crash before the cut leaves it intact and unindexed.
        let base = self.segments.back().expect("one segment is always kept").base;
        index_file::remove(&*self.fs, &self.dir, base)?;
        let segment = self.segments.back_mut().expect("one segment is always kept");
        let new_len = segment.forget_after(keep);
        segment.file.set_len(new_len).map_err(|e| StoreError::io("truncate segment", e))?;
        segment.file.sync_data().map_err(|e| StoreError::io("sync truncated segment", e))
    }

    pub fn purge(&mut self, index: LogIndex, term: u64) -> Result<(), StoreError> {
        match self.purged {
            Some((purged, _)) if index < purged => {
                return Err(StoreError::Invalid(format!("purge to {} would move back from {}", index.0, purged.0)));
            }
            Some(current) if current == (index, term) => return Ok(()),
            _ => {}
        }
        meta::store(&*self.fs, &self.dir, (index, term))?;
        self.purged = Some((index, term));
        Ok(())
    }

    pub fn enforce_retention(
        &mut self,
        policy: &RetentionPolicy,
        now: SystemTime,
    ) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        let mut total_bytes: u64 = self.segments.iter().map(|s| s.write_position).sum();
        if let Some(purged) = self.purged_index() {
            // Never the active (last) segment; only whole segments that are entirely purged.
            while self.segments.len() > 1 {
                let oldest = &self.segments[0];
                if oldest.last_index().is_some_and(|last| last > purged) {
                    break;
                }
                // A segment stops receiving writes when its successor is created: its age is that time's.
                let sealed_unix_millis = self.segments[1].created_unix_millis;
                let age = Duration::from_millis(unix_millis(now).saturating_sub(sealed_unix_millis));
                let too_old = policy.max_age.is_some_and(|max_age| age >= max_age);
                let too_big = policy.max_total_bytes.is_some_and(|max| total_bytes > max);
                if !(too_old || too_big) {
                    break;
                }
                index_file::remove(&*self.fs, &self.dir, oldest.base)?;
                self.fs.remove_file(&oldest.path).map_err(|e| StoreError::io("remove segment", e))?;
                self.fs.sync_dir(&self.dir).map_err(|e| StoreError::io("sync commitlog directory", e))?;
                let removed = self.segments.pop_front().expect("len > 1");
                total_bytes -= removed.write_position;
                report.segments_deleted += 1;
                report.bytes_deleted += removed.write_position;
            }
        }
        report.first_retained = self.first_record_index().map(LogIndex);
        Ok(report)
    }

    pub fn reset(&mut self) -> Result<(), StoreError> {
        self.base_when_empty = self.next_base();
        // From the back, so that a crash half-way leaves a prefix of the old log and its purge point.
        while !self.segments.is_empty() {
            self.remove_last_segment()?;
        }
        crate::atomic_file::remove(&*self.fs, &meta::path(&self.dir))?;
        self.purged = None;
        Ok(())
    }
}

/// Debug builds read every write back and check it decodes to what the index says. The read can
/// fail like any I/O (the crash simulation cuts power between the write and the read): that is an
/// error of the append, not a wrong write.
#[cfg(debug_assertions)]
fn verify_written(segment: &Segment, staged: &Staged) -> Result<(), StoreError> {
    let mut back = vec![0; staged.bytes.len()];
    crate::fs::read_exact_at(&*segment.file, &mut back, segment.write_position).map_err(|e| StoreError::io("read back a write", e))?;
    assert_eq!(back, staged.bytes, "write-back mismatch");
    let base = segment.write_position as usize;
    for (index, entry) in &staged.entries {
        let from = entry.position_in_segment as usize - base;
        let record = Record::decode(&back[from..from + entry.len_bytes as usize]).expect("written record decodes");
        assert_eq!((record.index.0, record.term), (*index, entry.term));
    }
    Ok(())
}
