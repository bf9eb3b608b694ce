//! One segment file `<dir>/<20-digit base position>.log` and its slice of the in-memory index.
//!
//! File layout: a 24-byte header (magic "RMQS", version u8, 3 zero bytes, base u64, created unix
//! millis u64; little endian) then records back to back. A record never spans two segments.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::fs::read_exact_at;
use crate::limits::SEGMENT_HEADER_BYTES;
use crate::{FileSystem, StoreError, StoreFile};

const MAGIC: &[u8; 4] = b"RMQS";
const VERSION: u8 = 1;
const SUFFIX: &str = ".log";

/// Where one record lies inside its segment.
#[derive(Copy, Clone, Debug)]
pub(super) struct IndexEntry {
    pub position_in_segment: u32,
    pub len_bytes: u32,
    pub term: u64,
}

impl IndexEntry {
    pub fn end_in_segment(&self) -> u64 {
        self.position_in_segment as u64 + self.len_bytes as u64
    }
}

pub(super) struct Segment {
    /// Global position (`CommitLogPosition`) of the file's byte 0.
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<dyn StoreFile>,
    /// Used for age-based retention: a segment stops receiving writes when its successor is created.
    pub created_unix_millis: u64,
    /// Header plus every record: where the next record goes.
    pub write_position: u64,
    /// Raft index of `entries[0]`; meaningless while `entries` is empty.
    pub first_index: u64,
    pub entries: Vec<IndexEntry>,
    /// Bytes below this were handed to the flusher to leave the page cache (see
    /// `LogCore::cache_drops`); never above `write_position`.
    pub cache_dropped_to: u64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct SegmentHeader {
    pub base: u64,
    pub created_unix_millis: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut out = [0; SEGMENT_HEADER_BYTES as usize];
        out[..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        out[8..16].copy_from_slice(&self.base.to_le_bytes());
        out[16..24].copy_from_slice(&self.created_unix_millis.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<SegmentHeader> {
        if bytes.len() < SEGMENT_HEADER_BYTES as usize
            || &bytes[..4] != MAGIC
            || bytes[4] != VERSION
            || bytes[5..8] != [0; 3]
        {
            return None;
        }
        let base = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let created_unix_millis = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        Some(SegmentHeader { base, created_unix_millis })
    }
}

pub(super) fn file_name(base: u64) -> String {
    format!("{base:020}{SUFFIX}")
}

/// The base position encoded in a segment file name, None for any other file.
pub(super) fn parse_file_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Segment {
    /// Creates the file with its header and fdatasyncs it. The caller fsyncs the directory.
    pub fn create(fs: &dyn FileSystem, dir: &Path, base: u64, created_unix_millis: u64) -> Result<Segment, StoreError> {
        let path = dir.join(file_name(base));
        if fs.exists(&path) {
            return Err(StoreError::Invalid(format!("segment {} already exists", path.display())));
        }
        let file = fs.open(&path, true).map_err(|e| StoreError::io("create segment", e))?;
        let header = SegmentHeader { base, created_unix_millis };
        file.write_all_at(&header.encode(), 0).map_err(|e| StoreError::io("write segment header", e))?;
        file.sync_data().map_err(|e| StoreError::io("sync segment header", e))?;
        Ok(Segment::opened(path, file, header))
    }

    /// An empty in-memory view of an existing file whose header is valid.
    pub fn opened(path: PathBuf, file: Arc<dyn StoreFile>, header: SegmentHeader) -> Segment {
        Segment {
            base: header.base,
            path,
            file,
            created_unix_millis: header.created_unix_millis,
            write_position: SEGMENT_HEADER_BYTES,
            first_index: 0,
            entries: Vec::new(),
            cache_dropped_to: 0,
        }
    }

    pub fn last_index(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.first_index + self.entries.len() as u64 - 1)
    }

    /// Position of `index` in `entries`, if this segment holds it.
    pub fn slot(&self, index: u64) -> Option<usize> {
        let slot = index.checked_sub(self.first_index)?;
        (slot < self.entries.len() as u64 && !self.entries.is_empty()).then_some(slot as usize)
    }

    /// Registers a record just written at `write_position`.
    pub fn push(&mut self, index: u64, entry: IndexEntry) {
        assert_eq!(entry.position_in_segment as u64, self.write_position, "records are contiguous in a segment");
        match self.last_index() {
            None => self.first_index = index,
            Some(last) => assert_eq!(index, last + 1, "indexes are consecutive inside a segment"),
        }
        self.write_position = entry.end_in_segment();
        self.entries.push(entry);
    }

    /// Forgets every record after `last_kept` (all if None); returns the new write position.
    /// The caller cuts the file to it.
    pub fn forget_after(&mut self, last_kept: Option<u64>) -> u64 {
        let kept = match last_kept {
            Some(k) if k >= self.first_index => (k - self.first_index + 1).min(self.entries.len() as u64) as usize,
            _ => 0,
        };
        self.entries.truncate(kept);
        self.write_position = self.entries.last().map_or(SEGMENT_HEADER_BYTES, IndexEntry::end_in_segment);
        self.cache_dropped_to = self.cache_dropped_to.min(self.write_position);
        self.write_position
    }

    /// The entry whose bytes contain [position_in_segment, +len), if any.
    pub fn entry_containing(&self, position_in_segment: u64, len: u32) -> Option<&IndexEntry> {
        let after = self.entries.partition_point(|e| e.position_in_segment as u64 <= position_in_segment);
        let entry = self.entries.get(after.checked_sub(1)?)?;
        (position_in_segment + len as u64 <= entry.end_in_segment()).then_some(entry)
    }

    /// The raw bytes of `count` consecutive records starting at `slot`, in one read.
    pub fn read_slots(&self, slot: usize, count: usize) -> Result<Bytes, StoreError> {
        let first = &self.entries[slot];
        let last = &self.entries[slot + count - 1];
        let mut buf = vec![0; (last.end_in_segment() - first.position_in_segment as u64) as usize];
        read_exact_at(&*self.file, &mut buf, first.position_in_segment as u64)
            .map_err(|e| StoreError::io("read records", e))?;
        Ok(Bytes::from(buf))
    }

    pub fn corrupt(&self, position_in_segment: u64, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            segment: self.path.display().to_string(),
            position: position_in_segment,
            reason: reason.into(),
        }
    }
}
