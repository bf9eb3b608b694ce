//! Tests of the sealed segments' index files (`index_file.rs`) and of how open uses them.
use std::path::{Path, PathBuf};

use super::segment::parse_file_name;
use super::tests::{DIR, append_flushed, fill, filled, open, record, segment_files};
use super::*;
use crate::{FileSystem, RECORD_HEADER_LEN, SimFs};

fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// Every file of the log directory that is not a segment or the purge meta file.
fn other_files(sim: &SimFs) -> Vec<PathBuf> {
    let mut files = sim.read_dir(Path::new(DIR)).unwrap();
    files.retain(|p| parse_file_name(p).is_none() && !p.ends_with("commitlog.meta"));
    files
}

/// The invariant open and every mutation keep: one index file per sealed segment, none for the last.
fn assert_sealed_segments_indexed(sim: &SimFs) {
    let segments = segment_files(sim);
    let expected: Vec<PathBuf> = segments[..segments.len().saturating_sub(1)].iter().map(|s| index_path(s)).collect();
    assert_eq!(other_files(sim), expected);
}

fn base_of(segment: &Path) -> u64 {
    parse_file_name(segment).unwrap()
}

/// Indexes of the records in segment file number `number`.
fn indexes_in(log: &CommitLog, sim: &SimFs, number: usize) -> Vec<u64> {
    let segments = segment_files(sim);
    let start = base_of(&segments[number]);
    let end = segments.get(number + 1).map_or(u64::MAX, |s| base_of(s));
    let last = log.state().last.map_or(0, |(last, _)| last.0);
    (1..=last).filter(|&i| (start..end).contains(&log.position(LogIndex(i)).unwrap().0)).collect()
}

/// A record neither first nor last in segment `number`.
fn middle_record(log: &CommitLog, sim: &SimFs, number: usize) -> u64 {
    let indexes = indexes_in(log, sim, number);
    assert!(indexes.len() >= 3, "segment {number} holds {} records", indexes.len());
    indexes[indexes.len() / 2]
}

/// Flips a payload byte of the record at `position`; returns the segment file.
fn damage_record(sim: &SimFs, position: CommitLogPosition) -> PathBuf {
    let segment = segment_files(sim).into_iter().rev().find(|s| base_of(s) <= position.0).unwrap();
    flip_byte(sim, &segment, position.0 - base_of(&segment) + RECORD_HEADER_LEN as u64 + 3);
    segment
}

fn flip_byte(sim: &SimFs, path: &Path, position: u64) {
    let file = sim.open(path, false).unwrap();
    let mut byte = [0u8];
    file.read_at(&mut byte, position).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], position).unwrap();
    file.sync_data().unwrap();
}

fn read_file(sim: &SimFs, path: &Path) -> Vec<u8> {
    let file = sim.open(path, false).unwrap();
    let mut bytes = vec![0; file.len().unwrap() as usize];
    crate::fs::read_exact_at(&*file, &mut bytes, 0).unwrap();
    bytes
}

fn write_file(sim: &SimFs, path: &Path, bytes: &[u8]) {
    let file = sim.open(path, true).unwrap();
    file.set_len(0).unwrap();
    file.write_all_at(bytes, 0).unwrap();
    file.sync_data().unwrap();
    sim.sync_dir(Path::new(DIR)).unwrap();
}

fn assert_records(log: &CommitLog, expected: &[Record]) {
    let last = expected.last().unwrap().index.0;
    assert_eq!(log.read_range(LogIndex(1), LogIndex(last + 1), usize::MAX).unwrap(), expected);
    assert_eq!(log.state().last, Some((LogIndex(last), expected.last().unwrap().term)));
}

// Goal: reopening loads sealed segments from their index files without reading their middle
// records: a damaged middle record of a sealed segment goes unnoticed by open (the read of it
// still fails), and fails open once the index file is gone and the segment is scanned.
#[test]
fn reopen_loads_sealed_segments_from_index_files() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 120, 1);
    assert!(log.segment_count() > 5);
    assert_sealed_segments_indexed(&sim);
    let victim = middle_record(&log, &sim, 1);
    let position = log.position(LogIndex(victim)).unwrap();
    drop(log);
    let segment = damage_record(&sim, position);

    let log = open(&sim).expect("the index file is used: the damaged record is not read");
    assert_eq!(log.state().last, Some((LogIndex(120), 1)));
    assert_eq!(log.read(LogIndex(victim - 1)).unwrap().unwrap(), filled(victim - 1, 1));
    assert!(matches!(log.read(LogIndex(victim)), Err(StoreError::Corrupt { .. })), "reads verify checksums");
    assert_sealed_segments_indexed(&sim);
    drop(log);

    sim.remove_file(&index_path(&segment)).unwrap();
    match open(&sim) {
        Err(StoreError::Corrupt { segment: damaged, .. }) => assert_eq!(damaged, segment.display().to_string()),
        other => panic!("expected Corrupt from the scan, got {:?}", other.map(|_| ())),
    }
}

#[derive(Debug, Clone, Copy)]
enum IndexDamage {
    Checksum,
    Truncated,
    Empty,
    OtherSegments,
    /// The index of the segment's earlier contents: it was cut and rewritten with new terms.
    Stale,
}

// Goal: an index file that is damaged, truncated, another segment's, or stale (the segment was
// cut and rewritten since) is not used: open scans the segment (so it finds a damaged middle
// record), returns the right records, and writes a new index file that the next open uses.
#[test]
fn bad_index_file_falls_back_to_the_scan() {
    use IndexDamage::*;
    for damage in [Checksum, Truncated, Empty, OtherSegments, Stale] {
        for damage_middle_record in [false, true] {
            let context = format!("{damage:?}, damaged middle record: {damage_middle_record}");
            let sim = SimFs::new();
            let log = open(&sim).unwrap();
            fill(&log, 1, 120, 1);
            let segments = segment_files(&sim);
            let index = index_path(&segments[1]);
            let mut expected: Vec<Record> = (1..=120).map(|i| filled(i, 1)).collect();
            match damage {
                Checksum => flip_byte(&sim, &index, 60),
                Truncated => {
                    let file = sim.open(&index, false).unwrap();
                    file.set_len(file.len().unwrap() - 4).unwrap();
                    file.sync_data().unwrap();
                }
                Empty => write_file(&sim, &index, &[]),
                OtherSegments => write_file(&sim, &index, &read_file(&sim, &index_path(&segments[2]))),
                Stale => {
                    let old = read_file(&sim, &index);
                    let keep = middle_record(&log, &sim, 1);
                    log.truncate_after(Some(LogIndex(keep))).unwrap();
                    assert!(!sim.exists(&index), "a cut segment loses its index file first");
                    // Same record sizes, so the segment ends where it did, with other terms.
                    fill(&log, keep + 1, 120, 2);
                    assert_eq!(segment_files(&sim), segments);
                    write_file(&sim, &index, &old);
                    expected.truncate(keep as usize);
                    expected.extend((keep + 1..=120).map(|i| filled(i, 2)));
                }
            }
            let victim = middle_record(&log, &sim, 1);
            let position = log.position(LogIndex(victim)).unwrap();
            drop(log);
            if damage_middle_record {
                damage_record(&sim, position);
                assert!(matches!(open(&sim), Err(StoreError::Corrupt { .. })), "{context}: the scan finds it");
                continue;
            }
            let log = open(&sim).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_records(&log, &expected);
            assert_sealed_segments_indexed(&sim);
            drop(log);
            damage_record(&sim, position);
            let log = open(&sim).unwrap_or_else(|e| panic!("{context}: the rewritten index is used: {e}"));
            assert_eq!(log.state().last, Some((LogIndex(120), expected[119].term)), "{context}");
        }
    }
}

// Goal: truncating into a sealed segment (mid-segment, at its last record, at its first) removes
// its index file; appends then reseal it with a new index file, and reopening returns exactly
// the kept records followed by the new ones.
#[test]
fn truncate_into_sealed_segment_then_reopen() {
    for pick in [|v: &[u64]| v[v.len() / 2], |v: &[u64]| v[v.len() - 1], |v: &[u64]| v[0]] {
        let sim = SimFs::new();
        let log = open(&sim).unwrap();
        fill(&log, 1, 120, 1);
        let keep = pick(&indexes_in(&log, &sim, 2));
        log.truncate_after(Some(LogIndex(keep))).unwrap();
        assert_eq!(log.segment_count(), 3);
        assert_sealed_segments_indexed(&sim);
        fill(&log, keep + 1, 160, 2);
        assert!(log.segment_count() > 4);
        assert_sealed_segments_indexed(&sim);
        drop(log);
        let log = open(&sim).unwrap();
        let expected: Vec<Record> = (1..=160).map(|i| filled(i, if i <= keep { 1 } else { 2 })).collect();
        assert_records(&log, &expected);
        assert_sealed_segments_indexed(&sim);
    }
}

/// The index of the first record that `fill` puts into a new segment.
fn first_record_to_roll() -> u64 {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    (1..).find(|&i| append_flushed(&log, &[filled(i, 1)]).is_ok() && log.segment_count() == 2).unwrap()
}

// Goal: a power cut at any step of a roll (seal, successor creation, index file write) leaves a
// log that opens with every flushed record, an index file for each sealed segment, none for the
// last and no temp file.
#[test]
fn power_cut_during_roll() {
    let rolling = first_record_to_roll();
    for steps in 0..16 {
        for seed in 0..4 {
            let sim = SimFs::new();
            let log = open(&sim).unwrap();
            fill(&log, 1, rolling - 1, 1);
            sim.cut_power_after(steps);
            let flushed = append_flushed(&log, &[filled(rolling, 1)]).is_ok();
            sim.crash(steps * 100 + seed);
            drop(log);
            let log = open(&sim).unwrap_or_else(|e| panic!("steps {steps} seed {seed}: {e}"));
            let last = log.state().last.unwrap().0.0;
            assert!(last == rolling || (last == rolling - 1 && !flushed), "steps {steps} seed {seed}: last {last}");
            assert_records(&log, &(1..=last).map(|i| filled(i, 1)).collect::<Vec<_>>());
            assert_sealed_segments_indexed(&sim);
            fill(&log, last + 1, last + 40, 2);
            drop(log);
            assert_eq!(open(&sim).unwrap().state().last, Some((LogIndex(last + 40), 2)));
        }
    }
}

// Goal: a power cut at any step of a truncation into a sealed segment leaves a prefix of the old
// log (never a record described by a stale index file), and the log goes on correctly after it.
#[test]
fn power_cut_during_truncation_into_sealed_segment() {
    for steps in 0..60 {
        let sim = SimFs::new();
        let log = open(&sim).unwrap();
        fill(&log, 1, 120, 1);
        let keep = middle_record(&log, &sim, 1);
        sim.cut_power_after(steps);
        let truncated = log.truncate_after(Some(LogIndex(keep))).is_ok();
        sim.crash(steps);
        drop(log);
        let log = open(&sim).unwrap_or_else(|e| panic!("steps {steps}: {e}"));
        let last = log.state().last.unwrap().0.0;
        assert!(last >= keep && (!truncated || last == keep), "steps {steps}: last {last}");
        assert_records(&log, &(1..=last).map(|i| filled(i, 1)).collect::<Vec<_>>());
        assert_sealed_segments_indexed(&sim);
        fill(&log, last + 1, last + 60, 2);
        drop(log);
        let log = open(&sim).unwrap();
        let expected: Vec<Record> = (1..=last + 60).map(|i| filled(i, if i <= last { 1 } else { 2 })).collect();
        assert_records(&log, &expected);
    }
}

// Goal: the index file format stays what README.md documents (golden bytes built by hand from
// the spec), so index files written by this version keep loading.
#[test]
fn index_file_golden() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    let payloads = [(1, 10), (1, 20), (3, 5), (3, 1024), (3, 1024), (3, 1024)];
    for (i, (term, payload_len)) in payloads.iter().enumerate() {
        append_flushed(&log, &[record(i as u64 + 1, *term, *payload_len)]).unwrap();
    }
    assert_eq!(log.segment_count(), 1);
    append_flushed(&log, &[record(7, 3, 1024)]).unwrap();
    assert_eq!(log.segment_count(), 2, "the seventh record does not fit the first segment");
    let segment = &segment_files(&sim)[0];
    let header = read_file(&sim, segment);
    let lengths: Vec<u32> = payloads.iter().map(|(_, len)| (RECORD_HEADER_LEN + len) as u32).collect();

    let mut contents = b"RMQI".to_vec();
    contents.extend_from_slice(&[1, 0, 0, 0]);
    contents.extend_from_slice(&0u64.to_le_bytes()); // base
    contents.extend_from_slice(&header[16..24]); // created unix millis, as in the segment header
    contents.extend_from_slice(&(24 + lengths.iter().sum::<u32>() as u64).to_le_bytes());
    contents.extend_from_slice(&1u64.to_le_bytes()); // first index
    contents.extend_from_slice(&6u32.to_le_bytes()); // records
    contents.extend_from_slice(&2u32.to_le_bytes()); // term runs
    for len in &lengths {
        contents.extend_from_slice(&len.to_le_bytes());
    }
    for (slot, term) in [(0u32, 1u64), (2, 3)] {
        contents.extend_from_slice(&slot.to_le_bytes());
        contents.extend_from_slice(&term.to_le_bytes());
    }
    let mut golden = (contents.len() as u32).to_le_bytes().to_vec();
    golden.extend_from_slice(&crc32c::crc32c(&contents).to_le_bytes());
    golden.extend_from_slice(&contents);
    assert_eq!(read_file(&sim, &index_path(segment)), golden);

    // And a hand-written file loads: damage a middle record, which only the scan would notice.
    let position = log.position(LogIndex(3)).unwrap();
    drop(log);
    write_file(&sim, &index_path(segment), &golden);
    damage_record(&sim, position);
    let log = open(&sim).unwrap();
    assert_eq!(log.read(LogIndex(2)).unwrap().unwrap(), record(2, 1, 20));
    assert_eq!(log.read(LogIndex(6)).unwrap().unwrap(), record(6, 3, 1024));
}

// Goal: index files left without their segment, and temp files of interrupted index writes, are
// removed at open (a stray index must never meet a new segment that reuses its base).
#[test]
fn stray_index_files_are_removed() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 60, 1);
    let segments = segment_files(&sim);
    let index = read_file(&sim, &index_path(&segments[0]));
    drop(log);
    let stray = index_path(&PathBuf::from(DIR).join(super::segment::file_name(base_of(&segments[0]) + (1 << 40))));
    write_file(&sim, &stray, &index);
    let tmp = crate::atomic_file::tmp_path(&index_path(&segments[1]));
    write_file(&sim, &tmp, &index[..10]);
    let log = open(&sim).unwrap();
    assert!(!sim.exists(&stray) && !sim.exists(&tmp));
    assert_sealed_segments_indexed(&sim);
    assert_eq!(log.state().last, Some((LogIndex(60), 1)));
}

// Goal: a sealed segment left with no record (a header only) still fails open as corruption
// (the scan finds it empty), rather than being indexed.
#[test]
fn empty_sealed_segment_fails_open() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 60, 1);
    let segment = segment_files(&sim)[1].clone();
    drop(log);
    sim.remove_file(&index_path(&segment)).unwrap();
    let file = sim.open(&segment, false).unwrap();
    file.set_len(crate::limits::SEGMENT_HEADER_BYTES).unwrap();
    file.sync_data().unwrap();
    match open(&sim) {
        Err(StoreError::Corrupt { segment: damaged, reason, .. }) => {
            assert_eq!(damaged, segment.display().to_string(), "{reason}");
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}
