//! Open: rebuilds the in-memory index from the segment files, cuts a torn tail, and refuses
//! (StoreError::Corrupt) anything a crash cannot explain.
//!
//! A sealed (non-last) segment with a valid index file (see `index_file`) is loaded from it
//! without reading its records; any other sealed segment is scanned, then indexed. The last
//! segment is always scanned, and loses its index file if it has one, since it is the one that
//! may have a torn tail and that appends go to. The rules below are those of the scan.
//!
//! What a crash can leave (the log fdatasyncs a segment before creating its successor, so only
//! the last segment ever has unsynced bytes):
//! - the last segment ending in an incomplete or garbage record, with nothing valid after it:
//!   a torn tail, cut off (set_len + fdatasync);
//! - a last segment whose header never became durable (file no longer than a header): removed.
//!
//! Everything else is corruption: a bad record in a non-last segment, a bad record followed by a
//! valid one, an index that breaks continuity, a bad header on a file longer than a header.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fs::read_exact_at;
use crate::limits::{SEGMENT_HEADER_BYTES, SEGMENT_SIZE_BYTES_MAX};
use crate::record::{DecodeError, frame_len};
use crate::{FileSystem, LogIndex, Record, StoreError, StoreFile};

use super::index_file;
use super::segment::{IndexEntry, Segment, SegmentHeader, parse_file_name};

/// Bytes read per refill while scanning.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// A read-ahead window over a file, so scanning does not issue one read per record.
struct Window<'a> {
    file: &'a dyn StoreFile,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> Window<'a> {
    fn new(file: &'a dyn StoreFile, file_len: u64) -> Self {
        Window { file, file_len, start: 0, buf: Vec::new() }
    }

    /// Up to `len` bytes at `position` (fewer only where the file ends).
    fn get(&mut self, position: u64, len: usize) -> Result<&[u8], StoreError> {
        let wanted_end = (position + len as u64).min(self.file_len);
        let buffered_end = self.start + self.buf.len() as u64;
        if position < self.start || wanted_end > buffered_end {
            let refill = (wanted_end - position).max(SCAN_CHUNK_BYTES as u64).min(self.file_len - position);
            self.start = position;
            self.buf.resize(refill as usize, 0);
            read_exact_at(self.file, &mut self.buf, position).map_err(|e| StoreError::io("scan segment", e))?;
        }
        let from = (position - self.start) as usize;
        Ok(&self.buf[from..from + (wanted_end - position) as usize])
    }

    fn decode_at(&mut self, position: u64) -> Result<Result<Record, DecodeError>, StoreError> {
        let len = match frame_len(self.get(position, 4)?) {
            Ok(len) => len,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Record::decode(self.get(position, len)?))
    }
}

/// Index continuity as the scan sees it.
struct Continuity {
    purged_index: Option<u64>,
    last_index: Option<u64>,
}

impl Continuity {
    /// A record's index must follow the previous one, except that a segment may start after a
    /// gap when everything before the gap is purged (an append after a purge point beyond the
    /// log's end; the purge point may have moved on since, even past the gap).
    fn accepts(&self, index: u64, first_in_segment: bool) -> bool {
        match self.last_index {
            None => true,
            Some(last) if index == last + 1 => true,
            Some(last) => first_in_segment && index > last && self.purged_index.is_some_and(|p| last <= p),
        }
    }
}

pub(super) fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
    purged: Option<(LogIndex, u64)>,
) -> Result<VecDeque<Segment>, StoreError> {
    let listing = fs.read_dir(dir).map_err(|e| StoreError::io("list commitlog directory", e))?;
    let mut bases: Vec<u64> = listing.iter().filter_map(|p| parse_file_name(p)).collect();
    bases.sort_unstable();
    remove_stray_index_files(fs, dir, &listing, &bases)?;
    let mut continuity = Continuity { purged_index: purged.map(|(i, _)| i.0), last_index: None };
    let mut segments: VecDeque<Segment> = VecDeque::new();
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let path = dir.join(super::segment::file_name(base));
        let file = fs.open(&path, false).map_err(|e| StoreError::io("open segment", e))?;
        let file_len = file.len().map_err(|e| StoreError::io("stat segment", e))?;
        if file_len > SEGMENT_SIZE_BYTES_MAX {
            return Err(StoreError::Corrupt {
                segment: path.display().to_string(),
                position: 0,
                reason: "segment file too large".into(),
            });
        }
        let Some(mut segment) = open_header(fs, dir, &path, file, file_len, base, is_last)? else { continue };
        if let Some(prev) = segments.back() {
            if prev.entries.is_empty() {
                return Err(prev.corrupt(0, "empty segment before the last one"));
            }
            if prev.base + prev.write_position > base {
                return Err(segment.corrupt(0, "segment overlaps its predecessor"));
            }
        }
        if is_last {
            // The active segment is written and cut: it never keeps an index file.
            index_file::remove(fs, dir, base)?;
            scan_records(&mut segment, file_len, is_last, &mut continuity)?;
        } else if !load_index(fs, dir, &mut segment, file_len, &mut continuity)? {
            scan_records(&mut segment, file_len, is_last, &mut continuity)?;
            // Sealed and just verified: index it, so the next open need not scan it. (An empty
            // one is corruption, reported with the next segment.)
            if !segment.entries.is_empty() {
                index_file::write_or_warn(fs, dir, &segment);
            }
        }
        segments.push_back(segment);
    }
    // A torn last segment was removed: its predecessor, loaded as a sealed segment, is now the
    // active one.
    if let Some(last) = segments.back()
        && bases.last() != Some(&last.base)
    {
        index_file::remove(fs, dir, last.base)?;
    }
    Ok(segments)
}

/// Fills a sealed segment's index from its index file, if that is valid and continues the log;
/// false if the segment must be scanned.
fn load_index(
    fs: &dyn FileSystem,
    dir: &Path,
    segment: &mut Segment,
    file_len: u64,
    continuity: &mut Continuity,
) -> Result<bool, StoreError> {
    let Some(loaded) = index_file::load(fs, dir, segment, file_len)? else { return Ok(false) };
    if !continuity.accepts(loaded.first_index, true) {
        // The scan reports this as corruption, at the record's position.
        return Ok(false);
    }
    continuity.last_index = Some(loaded.last_index());
    segment.first_index = loaded.first_index;
    segment.entries = loaded.entries;
    segment.write_position = file_len;
    Ok(true)
}

/// Removes temp files of interrupted index writes, and index files whose segment is gone. The
/// ordering in `index_file` leaves no such index file behind; should one come from elsewhere (a
/// copied directory), it must not meet a new segment that reuses its base (positions restart from
/// 0 after a `reset` and a restart).
fn remove_stray_index_files(
    fs: &dyn FileSystem,
    dir: &Path,
    listing: &[PathBuf],
    bases: &[u64],
) -> Result<(), StoreError> {
    let mut removed = false;
    for path in listing {
        let Some(base) = index_file::parse_file_name(path) else { continue };
        if path == &index_file::path(dir, base) && bases.binary_search(&base).is_ok() {
            continue;
        }
        tracing::info!(file = %path.display(), "removing an index temp file or an index file without a segment");
        fs.remove_file(path).map_err(|e| StoreError::io("remove stray index file", e))?;
        removed = true;
    }
    if removed {
        fs.sync_dir(dir).map_err(|e| StoreError::io("sync commitlog directory", e))?;
    }
    Ok(())
}

/// Validates the header; None when a last segment's creation was torn (the file is removed).
fn open_header(
    fs: &dyn FileSystem,
    dir: &Path,
    path: &Path,
    file: Arc<dyn StoreFile>,
    file_len: u64,
    base: u64,
    is_last: bool,
) -> Result<Option<Segment>, StoreError> {
    let mut bytes = vec![0; file_len.min(SEGMENT_HEADER_BYTES) as usize];
    read_exact_at(&*file, &mut bytes, 0).map_err(|e| StoreError::io("read segment header", e))?;
    match SegmentHeader::decode(&bytes) {
        Some(header) if header.base == base => Ok(Some(Segment::opened(path.to_path_buf(), file, header))),
        // The header is written and fdatasynced before any record, so a torn header means the file
        // never held a record: it can only be the last segment, no longer than a header.
        _ if is_last && file_len <= SEGMENT_HEADER_BYTES => {
            tracing::warn!(segment = %path.display(), "removing a segment whose creation was torn by a crash");
            fs.remove_file(path).map_err(|e| StoreError::io("remove torn segment", e))?;
            fs.sync_dir(dir).map_err(|e| StoreError::io("sync commitlog directory", e))?;
            Ok(None)
        }
        _ => Err(StoreError::Corrupt {
            segment: path.display().to_string(),
            position: 0,
            reason: "bad segment header".into(),
        }),
    }
}

fn scan_records(
    segment: &mut Segment,
    file_len: u64,
    is_last: bool,
    continuity: &mut Continuity,
) -> Result<(), StoreError> {
    let file = segment.file.clone();
    let mut window = Window::new(&*file, file_len);
    let mut position = SEGMENT_HEADER_BYTES;
    while position < file_len {
        let record = match window.decode_at(position)? {
            Ok(record) => record,
            Err(e) => return handle_bad_record(segment, &mut window, position, e, is_last),
        };
        let index = record.index.0;
        if !continuity.accepts(index, segment.entries.is_empty()) {
            return Err(
                segment.corrupt(position, format!("index {index} breaks continuity after {:?}", continuity.last_index))
            );
        }
        let len_bytes = record.encoded_len() as u32;
        segment.push(index, IndexEntry { position_in_segment: position as u32, len_bytes, term: record.term });
        continuity.last_index = Some(index);
        position += len_bytes as u64;
    }
    Ok(())
}

/// A record at `position` failed to decode: a torn tail if nothing valid follows in the last
/// segment, corruption otherwise.
fn handle_bad_record(
    segment: &Segment,
    window: &mut Window,
    position: u64,
    error: DecodeError,
    is_last: bool,
) -> Result<(), StoreError> {
    let reason = match error {
        DecodeError::Incomplete => "incomplete record",
        DecodeError::Corrupt(reason) => reason,
    };
    if !is_last {
        return Err(segment.corrupt(position, format!("{reason} in a sealed segment")));
    }
    if let Some(valid_at) = find_valid_record(window, position + 1)? {
        return Err(segment.corrupt(position, format!("{reason}, followed by a valid record at {valid_at}")));
    }
    tracing::warn!(segment = %segment.path.display(), position, reason, "cutting a torn tail");
    segment.file.set_len(position).map_err(|e| StoreError::io("cut torn tail", e))?;
    segment.file.sync_data().map_err(|e| StoreError::io("sync after cutting torn tail", e))?;
    Ok(())
}

/// The first position at or after `from` where a complete record with a valid checksum starts.
/// Tried at every byte, since the bad record's length field cannot be trusted.
fn find_valid_record(window: &mut Window, from: u64) -> Result<Option<u64>, StoreError> {
    let file_len = window.file_len;
    let mut position = from;
    while position + crate::RECORD_HEADER_LEN as u64 <= file_len {
        if window.decode_at(position)?.is_ok() {
            return Ok(Some(position));
        }
        position += 1;
    }
    Ok(None)
}
