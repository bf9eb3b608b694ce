//! The log's state under its lock: segments with their index slices, and the purge point.
//! Lookups and reads are here; mutations that reshape segments are in `mutate.rs`.
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::{CommitLogPosition, FileSystem, LogIndex, Record, StoreError};

use super::segment::Segment;
use super::{CommitLogConfig, LogState};

pub(super) struct LogCore {
    pub fs: Arc<dyn FileSystem>,
    pub dir: PathBuf,
    pub config: CommitLogConfig,
    /// Ordered by base; only the last one may hold no record.
    pub segments: VecDeque<Segment>,
    pub purged: Option<(LogIndex, u64)>,
    /// Base of the next segment when there is none (after `reset`), so positions are not reused.
    pub base_when_empty: u64,
}

impl LogCore {
    /// (index, term) of the last record physically present.
    pub fn last_record(&self) -> Option<(u64, u64)> {
        let segment = self.segments.iter().rev().find(|s| !s.entries.is_empty())?;
        let entry = segment.entries.last().expect("non-empty");
        Some((segment.last_index().expect("non-empty"), entry.term))
    }

    pub fn first_record_index(&self) -> Option<u64> {
        self.segments.iter().find(|s| !s.entries.is_empty()).map(|s| s.first_index)
    }

    pub fn purged_index(&self) -> Option<u64> {
        self.purged.map(|(index, _)| index.0)
    }

    /// Whether some record lies after the purge point (else any index > purged may come next).
    pub fn has_unpurged_records(&self) -> bool {
        self.last_record().is_some_and(|(last, _)| self.purged_index().is_none_or(|p| last > p))
    }

    pub fn state(&self) -> LogState {
        let last = if self.has_unpurged_records() {
            self.last_record().map(|(index, term)| (LogIndex(index), term))
        } else {
            self.purged
        };
        LogState { purged: self.purged, last, first_retained: self.first_record_index().map(LogIndex) }
    }

    pub fn next_base(&self) -> u64 {
        self.segments
            .back()
            .map_or(self.base_when_empty, |s| s.base + s.write_position.max(self.config.segment_size_bytes))
    }

    /// (segment number, slot) of the record with this index.
    pub fn locate(&self, index: u64) -> Option<(usize, usize)> {
        // Segments with records are ordered by first index; an empty one can only be last.
        let after = self.segments.partition_point(|s| !s.entries.is_empty() && s.first_index <= index);
        let number = after.checked_sub(1)?;
        Some((number, self.segments[number].slot(index)?))
    }

    /// What a read of an index that is not present returns.
    fn absent(&self, index: u64) -> Result<Option<Record>, StoreError> {
        if let Some(first) = self.first_record_index()
            && index < first
        {
            return Err(StoreError::Compacted { index, first });
        }
        if let Some(purged) = self.purged_index()
            && index <= purged
        {
            return Err(StoreError::Compacted { index, first: purged + 1 });
        }
        Ok(None)
    }

    pub fn read(&self, index: u64) -> Result<Option<Record>, StoreError> {
        match self.locate(index) {
            Some((number, slot)) => Ok(self.read_slots(number, slot, 1)?.pop()),
            None => self.absent(index),
        }
    }

    pub fn read_range(&self, start: u64, end: u64, max_bytes: usize) -> Result<Vec<Record>, StoreError> {
        let mut records = Vec::new();
        let mut total_bytes = 0usize;
        let mut next = start;
        while next < end {
            let Some((number, slot)) = self.locate(next) else {
                if records.is_empty() {
                    self.absent(next)?;
                }
                break;
            };
            let entries = &self.segments[number].entries;
            let mut count = 0;
            let mut budget_hit = false;
            while slot + count < entries.len() && next + (count as u64) < end {
                let len = entries[slot + count].len_bytes as usize;
                // At least one record, even if it alone is over the budget.
                if total_bytes + len > max_bytes && !(records.is_empty() && count == 0) {
                    budget_hit = true;
                    break;
                }
                total_bytes += len;
                count += 1;
            }
            if count > 0 {
                records.extend(self.read_slots(number, slot, count)?);
                next += count as u64;
            }
            if budget_hit || count == 0 {
                break;
            }
        }
        Ok(records)
    }

    /// Reads `count` records from one segment in one I/O, verifying every checksum and that each
    /// record is the one the index says.
    fn read_slots(&self, number: usize, slot: usize, count: usize) -> Result<Vec<Record>, StoreError> {
        let segment = &self.segments[number];
        let bytes = segment.read_slots(slot, count)?;
        let start = segment.entries[slot].position_in_segment as usize;
        let mut records = Vec::with_capacity(count);
        for (k, entry) in segment.entries[slot..slot + count].iter().enumerate() {
            let from = entry.position_in_segment as usize - start;
            let frame = bytes.slice(from..from + entry.len_bytes as usize);
            let record = Record::decode_bytes(&frame)
                .map_err(|e| segment.corrupt(entry.position_in_segment as u64, format!("read back: {e:?}")))?;
            let expected_index = segment.first_index + (slot + k) as u64;
            if record.index.0 != expected_index
                || record.term != entry.term
                || record.encoded_len() != entry.len_bytes as usize
            {
                return Err(
                    segment.corrupt(entry.position_in_segment as u64, format!("record is not index {expected_index}"))
                );
            }
            records.push(record);
        }
        Ok(records)
    }

    pub fn position(&self, index: u64) -> Option<CommitLogPosition> {
        let (number, slot) = self.locate(index)?;
        let segment = &self.segments[number];
        Some(CommitLogPosition(segment.base + segment.entries[slot].position_in_segment as u64))
    }

    /// The bytes of each range (each inside one record), in order; None for a range retention
    /// deleted. Ranges that lie close together in one segment are read with one pread (see
    /// `READ_GAP_BYTES_MAX`) and handed out as slices of it: a pull of 1,024 queued messages is
    /// then a handful of reads instead of 1,024 system calls.
    ///
    /// Example: ranges [100, 50) [150, 50) [4000, 50) [9000, 50) in one segment, with a 4 KiB
    /// gap limit: one read of [100, 4050) serves the first three, one of [9000, 9050) the last.
    pub fn read_many(&self, ranges: &[(CommitLogPosition, u32)]) -> Result<Vec<Option<Bytes>>, StoreError> {
        let mut runs: Vec<Run> = Vec::new();
        // The run that serves each range.
        let mut plan = Vec::with_capacity(ranges.len());
        for &(position, len) in ranges {
            let Some((segment, start)) = self.check_range(position, len)? else {
                plan.push(None);
                continue;
            };
            let end = start + u64::from(len);
            match runs.last_mut() {
                Some(run) if run.segment == segment && run.can_take(start, end) => run.end = end,
                _ => runs.push(Run { segment, start, end }),
            }
            plan.push(Some(runs.len() - 1));
        }
        let buffers = runs.iter().map(|run| self.read_run(run)).collect::<Result<Vec<_>, _>>()?;
        Ok(ranges
            .iter()
            .zip(plan)
            .map(|(&(position, len), run)| {
                run.map(|r| {
                    let (buffer, base) = &buffers[r];
                    let from = (position.0 - base) as usize;
                    buffer.slice(from..from + len as usize)
                })
            })
            .collect())
    }

    /// (segment number, position in it) of a range, None if retention deleted it; Err if the
    /// range is not inside one record.
    fn check_range(&self, position: CommitLogPosition, len: u32) -> Result<Option<(usize, u64)>, StoreError> {
        let position = position.0;
        // Segments are ordered by base; anything before the first one was deleted by retention.
        let after = self.segments.partition_point(|s| s.base <= position);
        let Some(number) = after.checked_sub(1) else {
            return Ok(None);
        };
        let segment = &self.segments[number];
        let in_segment = position - segment.base;
        if segment.entry_containing(in_segment, len).is_none() {
            return Err(StoreError::Invalid(format!("{len} bytes at position {position} are not inside one record")));
        }
        Ok(Some((number, in_segment)))
    }

    /// One run's bytes and the global position they start at.
    fn read_run(&self, run: &Run) -> Result<(Bytes, u64), StoreError> {
        let segment = &self.segments[run.segment];
        let mut buf = vec![0; (run.end - run.start) as usize];
        crate::fs::read_exact_at(&*segment.file, &mut buf, run.start).map_err(|e| StoreError::io("read bytes", e))?;
        Ok((Bytes::from(buf), segment.base + run.start))
    }
}

/// Bytes of one segment read at once for several ranges.
struct Run {
    segment: usize,
    start: u64,
    end: u64,
}

impl Run {
    /// Whether a range that starts at `start` and ends at `end` joins this run.
    fn can_take(&self, start: u64, end: u64) -> bool {
        start >= self.end && start - self.end <= READ_GAP_BYTES_MAX && end - self.start <= READ_RUN_BYTES_MAX
    }
}

/// Most bytes of other records a coalesced read may pass over between two ranges: copying them
/// from the page cache costs less than the system call a separate read would.
const READ_GAP_BYTES_MAX: u64 = 4096;
/// Longest coalesced read.
const READ_RUN_BYTES_MAX: u64 = 1024 * 1024;
