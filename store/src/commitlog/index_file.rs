//! The index file of a sealed segment, `<dir>/<20-digit base>.idx`: the segment's slice of the
//! in-memory index, so that `open` loads it instead of reading and checksumming every record.
//!
//! On disk (little endian), framed like the purge meta file:
//! ```text
//! len u32 | crc32c(contents) u32 | contents
//! contents: "RMQI" | version u8 = 1 | 3 zero bytes | base u64 | created unix millis u64
//!           | segment length u64 | first index u64 | record count u32 | term run count u32
//!           | record count x (record length u32) | term run count x (first slot u32, term u64)
//! ```
//! Records are back to back from the end of the segment header, so their lengths give their
//! positions; a term run says that the records from `first slot` on (up to the next run) carry
//! `term`.
//!
//! Invariant: an index file exists only for a segment that is sealed (fdatasynced, not the last
//! one) and describes exactly the segment's bytes, which a sealed segment keeps until it is
//! deleted or cut. Crash ordering that keeps it:
//! - written after the segment's seal (fdatasync) and after its successor exists: `<path>.tmp`,
//!   fdatasync, rename, fsync the directory. A crash before the rename leaves no index (the
//!   segment is scanned at open, and the index written then); a torn `.tmp` is never read;
//! - removed, durably (unlink + fsync the directory), *before* its segment is deleted (truncation,
//!   retention, reset) and before its segment becomes the active one again and is cut or written
//!   (truncation back into it, or open finding it last). A crash in between leaves an intact
//!   segment without an index, which is scanned. So no index can outlive, or describe other bytes
//!   than, the segment it was written for, even when a later segment reuses the same base;
//! - open removes stray `.idx` files (no segment) and `.idx.tmp` files, and never trusts the index
//!   of the last segment (it removes it, then scans the segment).
//!
//! At open, an index is used only if its checksum, base, creation time, segment length and record
//! lengths agree with the segment, and the first and last records it names decode (checksum ok)
//! with the index, term and length it gives. Anything else: the segment is scanned as before (and
//! corruption found by the scan fails the open, as before). Records in the middle are not read at
//! open; every read verifies its record's checksum.
use std::path::{Path, PathBuf};

use crate::fs::read_exact_at;
use crate::limits::{RECORD_PAYLOAD_BYTES_MAX, SEGMENT_HEADER_BYTES};
use crate::{FileSystem, RECORD_HEADER_LEN, Record, StoreError};

use super::segment::{IndexEntry, Segment};

const MAGIC: &[u8; 4] = b"RMQI";
const VERSION: u8 = 1;
const SUFFIX: &str = ".idx";
const FRAME_BYTES: usize = 8;
const FIXED_BYTES: usize = 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4;
const LENGTH_BYTES: usize = 4;
const TERM_RUN_BYTES: usize = 4 + 8;

pub(super) fn path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{SUFFIX}"))
}

/// The base named by an index file (`.idx`) or its temp file (`.idx.tmp`), None for other files.
pub(super) fn parse_file_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".tmp").unwrap_or(name).strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The index file's bytes (frame included) for a sealed segment.
fn encode(segment: &Segment) -> Vec<u8> {
    let count = segment.entries.len();
    assert!(count > 0, "only a segment holding records is sealed");
    let mut runs: Vec<(u32, u64)> = Vec::new();
    for (slot, entry) in segment.entries.iter().enumerate() {
        if runs.last().is_none_or(|&(_, term)| term != entry.term) {
            runs.push((slot as u32, entry.term));
        }
    }
    let mut out = Vec::with_capacity(FRAME_BYTES + FIXED_BYTES + count * LENGTH_BYTES + runs.len() * TERM_RUN_BYTES);
    out.extend_from_slice(&[0; FRAME_BYTES]); // len and crc, filled in below
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&segment.base.to_le_bytes());
    out.extend_from_slice(&segment.created_unix_millis.to_le_bytes());
    out.extend_from_slice(&segment.write_position.to_le_bytes());
    out.extend_from_slice(&segment.first_index.to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    let mut position = SEGMENT_HEADER_BYTES;
    for entry in &segment.entries {
        assert_eq!(entry.position_in_segment as u64, position, "records are contiguous in a segment");
        position += entry.len_bytes as u64;
        out.extend_from_slice(&entry.len_bytes.to_le_bytes());
    }
    assert_eq!(position, segment.write_position, "the index covers the whole segment");
    for (slot, term) in runs {
        out.extend_from_slice(&slot.to_le_bytes());
        out.extend_from_slice(&term.to_le_bytes());
    }
    let contents_len = (out.len() - FRAME_BYTES) as u32;
    let crc = crc32c::crc32c(&out[FRAME_BYTES..]);
    out[..4].copy_from_slice(&contents_len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Writes the index file of `segment`, which must be sealed (fdatasynced and no longer the last
/// segment). Durable when it returns Ok.
pub(super) fn write(fs: &dyn FileSystem, dir: &Path, segment: &Segment) -> Result<(), StoreError> {
    crate::atomic_file::replace_bytes(fs, &path(dir, segment.base), &encode(segment))
}

/// Like `write`, for callers to whom the index is only an optimisation (a failed write leaves a
/// segment that open scans): logs the error instead of returning it.
pub(super) fn write_or_warn(fs: &dyn FileSystem, dir: &Path, segment: &Segment) {
    if let Err(error) = write(fs, dir, segment) {
        tracing::warn!(segment = %segment.path.display(), %error, "could not write the segment's index file");
    }
}

/// Removes the index file of the segment at `base`, if any, durably.
pub(super) fn remove(fs: &dyn FileSystem, dir: &Path, base: u64) -> Result<(), StoreError> {
    crate::atomic_file::remove(fs, &path(dir, base))
}

/// What an index file says about its segment.
pub(super) struct Loaded {
    pub first_index: u64,
    pub entries: Vec<IndexEntry>,
}

impl Loaded {
    pub fn last_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64 - 1
    }
}

/// The index of `segment` (a sealed segment just opened, `file_len` bytes long), if it has an
/// index file that agrees with it; None (after logging why) if it must be scanned instead.
pub(super) fn load(fs: &dyn FileSystem, dir: &Path, segment: &Segment, file_len: u64) -> Result<Option<Loaded>, StoreError> {
    let path = path(dir, segment.base);
    if !fs.exists(&path) {
        tracing::info!(segment = %segment.path.display(), "no index file: scanning the segment");
        return Ok(None);
    }
    match read_checked(fs, &path, segment, file_len)? {
        Ok(loaded) => Ok(Some(loaded)),
        Err(reason) => {
            tracing::warn!(segment = %segment.path.display(), reason, "index file not used: scanning the segment");
            Ok(None)
        }
    }
}

/// The index file at `path` if it agrees with `segment`, else why not.
fn read_checked(
    fs: &dyn FileSystem,
    path: &Path,
    segment: &Segment,
    file_len: u64,
) -> Result<Result<Loaded, &'static str>, StoreError> {
    let file = fs.open(path, false).map_err(|e| StoreError::io("open index file", e))?;
    let index_len = file.len().map_err(|e| StoreError::io("stat index file", e))?;
    if let Err(reason) = check_len(index_len, file_len) {
        return Ok(Err(reason));
    }
    let mut bytes = vec![0; index_len as usize];
    read_exact_at(&*file, &mut bytes, 0).map_err(|e| StoreError::io("read index file", e))?;
    let loaded = match decode(&bytes, segment, file_len) {
        Ok(loaded) => loaded,
        Err(reason) => return Ok(Err(reason)),
    };
    Ok(check_records(segment, &loaded)?.map(|()| loaded))
}

/// Bounds an index file's length by what a segment of `segment_len` bytes can need, before
/// anything is allocated for it.
fn check_len(index_len: u64, segment_len: u64) -> Result<(), &'static str> {
    let records_max = segment_len.saturating_sub(SEGMENT_HEADER_BYTES) / RECORD_HEADER_LEN as u64;
    let index_len_max = (FRAME_BYTES + FIXED_BYTES) as u64 + records_max * (LENGTH_BYTES + TERM_RUN_BYTES) as u64;
    if index_len < (FRAME_BYTES + FIXED_BYTES) as u64 || index_len > index_len_max {
        return Err("index file length out of range");
    }
    Ok(())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks the frame and that the contents describe `segment` (`segment_len` bytes long).
fn decode(bytes: &[u8], segment: &Segment, segment_len: u64) -> Result<Loaded, &'static str> {
    if u32_at(bytes, 0) as usize != bytes.len() - FRAME_BYTES {
        return Err("length field does not match the file length");
    }
    let contents = &bytes[FRAME_BYTES..];
    if crc32c::crc32c(contents) != u32_at(bytes, 4) {
        return Err("checksum mismatch");
    }
    if &contents[..4] != MAGIC || contents[4..8] != [VERSION, 0, 0, 0] {
        return Err("bad magic or version");
    }
    if u64_at(contents, 8) != segment.base || u64_at(contents, 16) != segment.created_unix_millis {
        return Err("written for another segment (base or creation time differs)");
    }
    if u64_at(contents, 24) != segment_len {
        return Err("segment length differs");
    }
    let first_index = u64_at(contents, 32);
    let count = u32_at(contents, 40) as usize;
    let run_count = u32_at(contents, 44) as usize;
    if count == 0 || run_count == 0 || first_index.checked_add(count as u64 - 1).is_none() {
        return Err("no records or index overflow");
    }
    if contents.len() as u64 != (FIXED_BYTES + count * LENGTH_BYTES) as u64 + (run_count * TERM_RUN_BYTES) as u64 {
        return Err("record or term run count does not match the file length");
    }
    let lengths = &contents[FIXED_BYTES..FIXED_BYTES + count * LENGTH_BYTES];
    let runs = &contents[FIXED_BYTES + count * LENGTH_BYTES..];
    let run_at = |r: usize| (u32_at(runs, r * TERM_RUN_BYTES) as usize, u64_at(runs, r * TERM_RUN_BYTES + 4));
    if run_at(0).0 != 0 || (1..run_count).any(|r| run_at(r).0 <= run_at(r - 1).0) || run_at(run_count - 1).0 >= count
    {
        return Err("term runs out of order");
    }
    let frame_max = (RECORD_HEADER_LEN + RECORD_PAYLOAD_BYTES_MAX) as u32;
    let mut entries = Vec::with_capacity(count);
    let mut position = SEGMENT_HEADER_BYTES;
    let mut run = 0;
    for slot in 0..count {
        let len_bytes = u32_at(lengths, slot * LENGTH_BYTES);
        if !(RECORD_HEADER_LEN as u32..=frame_max).contains(&len_bytes) {
            return Err("record length out of range");
        }
        if position + len_bytes as u64 > segment_len {
            return Err("records run past the segment's end");
        }
        if run + 1 < run_count && run_at(run + 1).0 == slot {
            run += 1;
        }
        // `segment_len` was checked against SEGMENT_SIZE_BYTES_MAX, so positions fit u32.
        entries.push(IndexEntry { position_in_segment: position as u32, len_bytes, term: run_at(run).1 });
        position += len_bytes as u64;
    }
    if position != segment_len {
        return Err("records do not fill the segment");
    }
    Ok(Loaded { first_index, entries })
}

/// Reads the first and last records the index names: both must decode (checksum ok) and be the
/// index, term and length the index says. Cheap evidence that the index fits the segment.
fn check_records(segment: &Segment, loaded: &Loaded) -> Result<Result<(), &'static str>, StoreError> {
    let ends = [(0, loaded.first_index), (loaded.entries.len() - 1, loaded.last_index())];
    for (slot, index) in ends {
        let entry = &loaded.entries[slot];
        let mut bytes = vec![0; entry.len_bytes as usize];
        read_exact_at(&*segment.file, &mut bytes, entry.position_in_segment as u64)
            .map_err(|e| StoreError::io("read a record named by an index file", e))?;
        match Record::decode(&bytes) {
            Ok(record)
                if record.index.0 == index
                    && record.term == entry.term
                    && record.encoded_len() == entry.len_bytes as usize => {}
            Ok(_) => return Ok(Err("a record is not the one the index names")),
            Err(_) => return Ok(Err("a record the index names does not decode")),
        }
    }
    Ok(Ok(()))
}
