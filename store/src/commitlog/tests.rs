//! Unit tests of the commitlog on SimFs (model and crash tests are in store/tests/).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::*;
use crate::{FileSystem, RECORD_HEADER_LEN, SimFs};

pub(super) const DIR: &str = "/log";

pub(super) fn config() -> CommitLogConfig {
    CommitLogConfig { segment_size_bytes: 4096, record_payload_bytes_max: 1024, ..CommitLogConfig::default() }
}

pub(super) fn record(index: u64, term: u64, payload_len: usize) -> Record {
    let payload: Vec<u8> = (0..payload_len).map(|i| (index as usize * 31 + i) as u8).collect();
    Record { term, index: LogIndex(index), kind: (index % 3) as u8, payload: payload.into() }
}

pub(super) fn open(sim: &SimFs) -> Result<CommitLog, StoreError> {
    CommitLog::open(Arc::new(sim.clone()), PathBuf::from(DIR), config())
}

/// Appends and waits for the flush callback.
pub(super) fn append_flushed(log: &CommitLog, records: &[Record]) -> Result<(), StoreError> {
    let (tx, rx) = mpsc::channel();
    log.append(records, Box::new(move |r| tx.send(r).unwrap()))?;
    rx.recv().unwrap()
}

/// The record `fill` writes at `index`: payload sizes vary so that segments fill unevenly.
pub(super) fn filled(index: u64, term: u64) -> Record {
    record(index, term, 100 + (index as usize % 7) * 50)
}

pub(super) fn fill(log: &CommitLog, from: u64, to: u64, term: u64) {
    let records: Vec<Record> = (from..=to).map(|i| filled(i, term)).collect();
    for batch in records.chunks(5) {
        append_flushed(log, batch).unwrap();
    }
}

pub(super) fn segment_files(sim: &SimFs) -> Vec<PathBuf> {
    let mut files = sim.read_dir(Path::new(DIR)).unwrap();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files
}

// Goal: records roll across small segments, read back identical (single, range, after reopen),
// and read_bytes returns exact payload slices.
#[test]
fn append_roll_read_reopen() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 120, 1);
    assert!(log.segment_count() > 5, "small segments roll");
    assert_eq!(segment_files(&sim).len(), log.segment_count());
    let check = |log: &CommitLog| {
        for i in 1..=120 {
            let expected = filled(i, 1);
            assert_eq!(log.read(LogIndex(i)).unwrap().unwrap(), expected);
            let position = log.position(LogIndex(i)).unwrap();
            let slice =
                log.read_bytes(CommitLogPosition(position.0 + RECORD_HEADER_LEN as u64 + 10), 20).unwrap().unwrap();
            assert_eq!(slice, expected.payload.slice(10..30));
        }
        let all = log.read_range(LogIndex(1), LogIndex(121), usize::MAX).unwrap();
        assert_eq!(all.iter().map(|r| r.index.0).collect::<Vec<_>>(), (1..=120).collect::<Vec<_>>());
        let some = log.read_range(LogIndex(10), LogIndex(121), 1000).unwrap();
        assert!(!some.is_empty() && some.iter().map(|r| r.encoded_len()).sum::<usize>() <= 1000);
        assert_eq!(log.read_range(LogIndex(10), LogIndex(121), 1).unwrap().len(), 1, "at least one record");
        assert_eq!(log.read(LogIndex(121)).unwrap(), None);
        assert_eq!(
            log.state(),
            LogState { purged: None, last: Some((LogIndex(120), 1)), first_retained: Some(LogIndex(1)) }
        );
    };
    check(&log);
    drop(log);
    check(&open(&sim).unwrap());
}

// Goal: read_bytes refuses ranges not inside one record, and returns None once retention deleted them.
#[test]
fn read_bytes_bounds_and_retention() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 60, 1);
    let p1 = log.position(LogIndex(1)).unwrap();
    let len1 = log.read(LogIndex(1)).unwrap().unwrap().encoded_len() as u32;
    assert!(log.read_bytes(p1, len1).unwrap().is_some());
    assert!(matches!(log.read_bytes(p1, len1 + 1), Err(StoreError::Invalid(_))));
    assert!(matches!(log.read_bytes(CommitLogPosition(0), 4), Err(StoreError::Invalid(_))), "segment header");
    assert!(matches!(log.read_bytes(CommitLogPosition(u64::MAX / 2), 4), Err(StoreError::Invalid(_))));
    log.purge(LogIndex(40), 1).unwrap();
    let report =
        log.enforce_retention(&RetentionPolicy { max_total_bytes: Some(0), max_age: None }, SystemTime::now()).unwrap();
    assert!(report.segments_deleted > 0);
    let first = report.first_retained.unwrap();
    assert!(first.0 > 1 && first.0 <= 41, "only purged segments go: {first:?}");
    assert_eq!(log.read_bytes(p1, len1).unwrap(), None);
    assert!(matches!(log.read(LogIndex(1)), Err(StoreError::Compacted { index: 1, .. })));
    assert_eq!(log.state().first_retained, Some(first));
}

// Goal: read_many returns, range by range, exactly what read_bytes returns: for neighbours in
// one record, ranges a few records apart (one coalesced read), ranges across segments, ranges out
// of order, and None for what retention deleted; a range outside a record fails the whole call.
#[test]
fn read_many_matches_single_reads() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 80, 1);
    // (range, the bytes it must return: a slice of the record's payload as `fill` wrote it).
    let payload = |i: u64, from: u64, len: u32| {
        let position = log.position(LogIndex(i)).unwrap();
        let range = (CommitLogPosition(position.0 + RECORD_HEADER_LEN as u64 + from), len);
        (range, filled(i, 1).payload.slice(from as usize..(from + u64::from(len)) as usize))
    };
    let mut wanted = vec![payload(3, 0, 10), payload(3, 10, 20), payload(4, 5, 30), payload(9, 0, 40)];
    wanted.extend((20..60).map(|i| payload(i, 1, 50)));
    wanted.extend([payload(2, 0, 8), payload(70, 3, 3), payload(70, 3, 3)]);
    let ranges: Vec<_> = wanted.iter().map(|(range, _)| *range).collect();
    let many = log.read_many(&ranges).unwrap();
    assert_eq!(many.len(), ranges.len());
    for ((range, expected), bytes) in wanted.iter().zip(&many) {
        assert_eq!(bytes.as_ref(), Some(expected), "at {range:?}");
        assert_eq!(bytes, &log.read_bytes(range.0, range.1).unwrap());
    }
    assert!(matches!(log.read_many(&[ranges[0], (ranges[1].0, 10_000)]), Err(StoreError::Invalid(_))));

    log.purge(LogIndex(50), 1).unwrap();
    let report =
        log.enforce_retention(&RetentionPolicy { max_total_bytes: Some(0), max_age: None }, SystemTime::now()).unwrap();
    assert!(report.segments_deleted > 0);
    let many = log.read_many(&ranges).unwrap();
    assert_eq!(many[0], None, "deleted by retention");
    let kept = many.iter().filter(|b| b.is_some()).count();
    assert!(kept > 0 && kept < ranges.len());
    for (&(position, len), bytes) in ranges.iter().zip(&many) {
        assert_eq!(bytes, &log.read_bytes(position, len).unwrap());
    }
}

// Goal: a bad record followed by valid ones, or damage in a sealed segment, makes open fail loudly.
#[test]
fn corruption_in_the_middle_fails_open() {
    for target in [SegmentTarget::Last, SegmentTarget::Sealed] {
        let sim = SimFs::new();
        let log = open(&sim).unwrap();
        fill(&log, 1, 60, 1);
        let files = segment_files(&sim);
        let path = match target {
            SegmentTarget::Last => files.last().unwrap().clone(),
            SegmentTarget::Sealed => files[0].clone(),
        };
        // The first record of the chosen segment; the last segment holds more than one.
        let first_record_position = crate::limits::SEGMENT_HEADER_BYTES + RECORD_HEADER_LEN as u64 + 3;
        drop(log);
        let file = sim.open(&path, false).unwrap();
        let mut byte = [0u8];
        file.read_at(&mut byte, first_record_position).unwrap();
        file.write_all_at(&[byte[0] ^ 0x40], first_record_position).unwrap();
        file.sync_data().unwrap();
        match open(&sim) {
            Err(StoreError::Corrupt { segment, .. }) => assert_eq!(segment, path.display().to_string()),
            other => panic!("{target:?}: expected Corrupt, got {:?}", other.map(|_| ())),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum SegmentTarget {
    Last,
    Sealed,
}

// Goal: garbage or a partial record at the end of the last segment is a torn tail: cut, and the log goes on.
#[test]
fn torn_tail_is_cut() {
    for garbage in [vec![0u8; 40], vec![0xA5; 7], record(61, 1, 300).encode()[..200].to_vec()] {
        let sim = SimFs::new();
        let log = open(&sim).unwrap();
        fill(&log, 1, 60, 1);
        let last = segment_files(&sim).pop().unwrap();
        drop(log);
        let file = sim.open(&last, false).unwrap();
        let len = file.len().unwrap();
        file.write_all_at(&garbage, len).unwrap();
        file.sync_data().unwrap();
        let log = open(&sim).unwrap();
        assert_eq!(file.len().unwrap(), len, "tail cut back");
        assert_eq!(log.state().last, Some((LogIndex(60), 1)));
        fill(&log, 61, 70, 2);
        assert_eq!(log.read(LogIndex(70)).unwrap().unwrap().term, 2);
    }
}

// Goal: a failed fdatasync fails the pending callback, every later append and sync (sticky).
#[test]
fn flush_error_is_sticky() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 5, 1);
    sim.cut_power_after(1); // the write goes through, the flusher's fdatasync fails
    let result = append_flushed(&log, &[record(6, 1, 10)]);
    assert!(matches!(result, Err(StoreError::Io { .. })), "{result:?}");
    assert!(matches!(log.append(&[record(7, 1, 10)], Box::new(|_| {})), Err(StoreError::Io { .. })));
    assert!(log.sync().is_err());
    assert!(log.truncate_after(Some(LogIndex(3))).is_err());
}

// Goal: callbacks fire in append order, with many appends in flight (group commit).
#[test]
fn callbacks_fire_in_order() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 1..=300u64 {
        let tx = tx.clone();
        log.append(&[record(i, 1, 20)], Box::new(move |r| tx.send((i, r.is_ok())).unwrap())).unwrap();
    }
    drop(tx);
    let fired: Vec<(u64, bool)> = rx.iter().take(300).collect();
    assert_eq!(fired, (1..=300).map(|i| (i, true)).collect::<Vec<_>>());
}

// Goal: under the Async policy an append's callback has fired when `append` returns (no hand-off
// to the flusher thread on the write path), in append order, from concurrent appenders too.
#[test]
fn async_policy_fires_callbacks_before_append_returns() {
    let sim = SimFs::new();
    let config =
        CommitLogConfig { flush: FlushPolicy::Async, async_flush_interval: Duration::from_secs(3600), ..config() };
    let log = Arc::new(CommitLog::open(Arc::new(sim.clone()), PathBuf::from(DIR), config).unwrap());
    let fired = Arc::new(std::sync::Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::Mutex::new(1u64));
    let appenders: Vec<_> = (0..4)
        .map(|_| {
            let (log, fired, next) = (log.clone(), fired.clone(), next.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    // The index is taken under a lock held across the append: appends in index order.
                    let mut next = next.lock().unwrap();
                    let i = *next;
                    let sink = fired.clone();
                    log.append(&[record(i, 1, 20)], Box::new(move |r| sink.lock().unwrap().push((i, r.is_ok()))))
                        .unwrap();
                    assert_eq!(fired.lock().unwrap().last(), Some(&(i, true)), "callback of {i} not fired yet");
                    *next += 1;
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.join().unwrap();
    }
    assert_eq!(*fired.lock().unwrap(), (1..=200).map(|i| (i, true)).collect::<Vec<_>>());
}

// Goal: Async policy fires callbacks before any fsync; sync() then makes everything durable.
#[test]
fn async_policy_and_sync() {
    let sim = SimFs::new();
    let config =
        CommitLogConfig { flush: FlushPolicy::Async, async_flush_interval: Duration::from_secs(3600), ..config() };
    let log = CommitLog::open(Arc::new(sim.clone()), PathBuf::from(DIR), config.clone()).unwrap();
    for i in 1..=50 {
        append_flushed(&log, &[record(i, 1, 50)]).unwrap();
    }
    log.sync().unwrap();
    sim.crash(5);
    drop(log);
    let log = CommitLog::open(Arc::new(sim.clone()), PathBuf::from(DIR), config).unwrap();
    assert_eq!(log.state().last, Some((LogIndex(50), 1)));
}

// Goal: truncate_after across segments is durable, and new records (new term) follow it.
#[test]
fn truncate_across_segments() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 80, 1);
    let segments_before = log.segment_count();
    log.truncate_after(Some(LogIndex(20))).unwrap();
    assert!(log.segment_count() < segments_before);
    assert_eq!(log.state().last, Some((LogIndex(20), 1)));
    assert!(matches!(
        log.append(&[record(22, 2, 1)], Box::new(|_| {})),
        Err(StoreError::IndexNotConsecutive { expected: 21, got: 22 })
    ));
    fill(&log, 21, 30, 2);
    sim.crash(1);
    drop(log);
    let log = open(&sim).unwrap();
    assert_eq!(log.state().last, Some((LogIndex(30), 2)));
    assert_eq!(log.read(LogIndex(21)).unwrap().unwrap(), filled(21, 2));
    log.truncate_after(None).unwrap();
    assert_eq!(log.state(), LogState::default());
    fill(&log, 7, 9, 3);
    assert_eq!(log.state().first_retained, Some(LogIndex(7)));
}

// Goal: a purge beyond the end (snapshot install) lets the next append jump, across reopen.
#[test]
fn purge_beyond_end_then_gap_append() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 10, 1);
    log.purge(LogIndex(100), 4).unwrap();
    assert_eq!(log.state().last, Some((LogIndex(100), 4)));
    assert!(matches!(log.purge(LogIndex(99), 4), Err(StoreError::Invalid(_))));
    assert!(matches!(log.truncate_after(Some(LogIndex(50))), Err(StoreError::Invalid(_))));
    assert!(matches!(
        log.append(&[record(100, 4, 1)], Box::new(|_| {})),
        Err(StoreError::IndexNotConsecutive { expected: 101, .. })
    ));
    fill(&log, 101, 110, 5);
    drop(log);
    let log = open(&sim).unwrap();
    let state = log.state();
    assert_eq!(state.purged, Some((LogIndex(100), 4)));
    assert_eq!(state.last, Some((LogIndex(110), 5)));
    assert!(matches!(log.read(LogIndex(50)), Err(StoreError::Compacted { first: 101, .. })));
    assert_eq!(log.read(LogIndex(5)).unwrap().unwrap().index, LogIndex(5), "purged records may still be read");
    assert_eq!(log.read_range(LogIndex(101), LogIndex(200), usize::MAX).unwrap().len(), 10);
    log.truncate_after(Some(LogIndex(100))).unwrap();
    assert_eq!(log.state().last, Some((LogIndex(100), 4)));
    fill(&log, 101, 102, 6);
}

// Goal: age-based retention deletes only purged, sealed segments older than max_age (by seal time).
#[test]
fn retention_by_age() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 60, 1);
    let policy = RetentionPolicy { max_age: Some(Duration::from_secs(3600)), max_total_bytes: None };
    let later = SystemTime::now() + Duration::from_secs(7200);
    assert_eq!(log.enforce_retention(&policy, later).unwrap().segments_deleted, 0, "nothing purged yet");
    assert_eq!(log.enforce_retention(&policy, SystemTime::now()).unwrap().segments_deleted, 0);
    log.purge(LogIndex(60), 1).unwrap();
    assert_eq!(log.enforce_retention(&policy, SystemTime::now()).unwrap().segments_deleted, 0, "too young");
    let segments_before = log.segment_count();
    let report = log.enforce_retention(&policy, later).unwrap();
    assert_eq!(log.segment_count(), 1, "all but the active segment");
    assert_eq!(report.segments_deleted, segments_before - 1);
    assert_eq!(segment_files(&sim).len(), 1);
    drop(log);
    let log = open(&sim).unwrap();
    assert_eq!(log.state().purged, Some((LogIndex(60), 1)));
    fill(&log, 61, 62, 1);
}

// Goal: reset durably empties the log and its purge point; any first index is then accepted.
#[test]
fn reset_then_any_index() {
    let sim = SimFs::new();
    let log = open(&sim).unwrap();
    fill(&log, 1, 40, 1);
    log.purge(LogIndex(10), 1).unwrap();
    log.reset().unwrap();
    assert_eq!(log.state(), LogState::default());
    assert_eq!(log.read(LogIndex(5)).unwrap(), None);
    fill(&log, 3, 5, 2);
    sim.crash(3);
    drop(log);
    let log = open(&sim).unwrap();
    assert_eq!(log.state(), LogState { purged: None, last: Some((LogIndex(5), 2)), first_retained: Some(LogIndex(3)) });
}

// Goal: configurations where a maximal record cannot fit a segment are refused; oversize payloads too.
#[test]
fn config_and_size_limits() {
    let sim = SimFs::new();
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    let bad =
        CommitLogConfig { segment_size_bytes: 4096, record_payload_bytes_max: 4096, ..CommitLogConfig::default() };
    assert!(matches!(CommitLog::open(fs.clone(), DIR.into(), bad), Err(StoreError::Invalid(_))));
    assert!(matches!(
        CommitLog::open(fs.clone(), DIR.into(), CommitLogConfig { segment_size_bytes: 100, ..config() }),
        Err(StoreError::Invalid(_))
    ));
    let log = open(&sim).unwrap();
    let too_big = Record { payload: Bytes::from(vec![0; 1025]), ..record(1, 1, 0) };
    assert!(matches!(log.append(&[too_big], Box::new(|_| {})), Err(StoreError::TooLarge { size: 1025, limit: 1024 })));
    // A maximal record fits, in a segment of its own if needed.
    fill(&log, 1, 1, 1);
    append_flushed(&log, &[Record { payload: Bytes::from(vec![7; 1024]), ..record(2, 1, 0) }]).unwrap();
    assert_eq!(log.read(LogIndex(2)).unwrap().unwrap().payload.len(), 1024);
}

// Goal: the real file system works end to end (append, fsync, reopen) in a temp directory.
#[test]
fn real_fs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn FileSystem> = Arc::new(crate::RealFs);
    let log = CommitLog::open(fs.clone(), dir.path().join("log"), config()).unwrap();
    fill(&log, 1, 50, 1);
    log.purge(LogIndex(20), 1).unwrap();
    drop(log);
    let log = CommitLog::open(fs, dir.path().join("log"), config()).unwrap();
    assert_eq!(
        log.state(),
        LogState { purged: Some((LogIndex(20), 1)), last: Some((LogIndex(50), 1)), first_retained: Some(LogIndex(1)) }
    );
    assert_eq!(log.read(LogIndex(33)).unwrap().unwrap(), filled(33, 1));
}

// Goal: appends, reads and syncs from several threads at once stay consistent (no error, no
// out-of-order callback, every record readable afterwards).
#[test]
fn concurrent_append_read_sync() {
    let sim = SimFs::new();
    let log = Arc::new(open(&sim).unwrap());
    let (tx, rx) = mpsc::channel();
    let appender = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 1..=400u64 {
                let tx = tx.clone();
                log.append(&[filled(i, 1)], Box::new(move |r| tx.send((i, r.is_ok())).unwrap())).unwrap();
            }
        })
    };
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                let last = log.state().last.map_or(0, |(i, _)| i.0);
                let records = log.read_range(LogIndex(1), LogIndex(last + 1), usize::MAX).unwrap();
                assert_eq!(records.len() as u64, last);
                log.sync().unwrap();
            }
        })
    };
    appender.join().unwrap();
    reader.join().unwrap();
    let fired: Vec<(u64, bool)> = rx.iter().take(400).collect();
    assert_eq!(fired, (1..=400).map(|i| (i, true)).collect::<Vec<_>>());
    log.sync().unwrap();
    sim.crash(9);
    drop(log);
    assert_eq!(open(&sim).unwrap().state().last, Some((LogIndex(400), 1)));
}
