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

    pub fn read_bytes(&self, position: CommitLogPosition, len: u32) -> Result<Option<Bytes>, StoreError> {
        let position = position.0;
        // Segments are ordered by base; anything before the first one was deleted by retention.
        let after = self.segments.partition_point(|s| s.base <= position);
        let Some(segment) = after.checked_sub(1).map(|number| &self.segments[number]) else {
            return Ok(None);
        };
        let in_segment = position - segment.base;
        if segment.entry_containing(in_segment, len).is_none() {
            return Err(StoreError::Invalid(format!("{len} bytes at position {position} are not inside one record")));
        }
        let mut buf = vec![0; len as usize];
        crate::fs::read_exact_at(&*segment.file, &mut buf, in_segment).map_err(|e| StoreError::io("read bytes", e))?;
        Ok(Some(Bytes::from(buf)))
    }
}
