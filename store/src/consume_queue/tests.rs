use super::*;
use crate::SimFs;

fn entry(n: u64) -> ConsumeQueueEntry {
    ConsumeQueueEntry { position: CommitLogPosition(n * 100), size: n as u32 + 1, tag_hash: n ^ 0xABCD }
}

// Goal: append/read/truncate/reopen round trip, offset checks, and the cut of a partial tail entry.
#[test]
fn append_read_truncate_reopen_partial_tail() {
    let sim = SimFs::new();
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    let dir = PathBuf::from("/cq");
    let set = ConsumeQueueSet::open(fs.clone(), dir.clone()).unwrap();
    let queue = set.queue("orders", 3).unwrap();
    for n in 0..10 {
        queue.append(QueueOffset(n), entry(n)).unwrap();
    }
    assert!(matches!(
        queue.append(QueueOffset(5), entry(5)),
        Err(StoreError::OffsetNotConsecutive { expected: 10, got: 5 })
    ));
    let read = queue.read(QueueOffset(4), 3).unwrap();
    assert_eq!(read, (4..7).map(|n| (QueueOffset(n), entry(n))).collect::<Vec<_>>());
    assert_eq!(queue.read(QueueOffset(8), 100).unwrap().len(), 2);
    assert!(queue.read(QueueOffset(20), 5).unwrap().is_empty());
    queue.truncate_to(QueueOffset(7)).unwrap();
    assert_eq!(queue.next_offset(), QueueOffset(7));
    set.sync_dirty().unwrap();
    assert!(set.queue("a/b", 0).is_err());
    set.queue("other", 0).unwrap();
    assert_eq!(set.list().unwrap(), vec![("orders".to_string(), 3), ("other".to_string(), 0)]);

    // A torn append leaves 7 entries plus 9 bytes.
    let file = fs.open(&dir.join("orders/3.cq"), false).unwrap();
    file.write_all_at(&[0xEE; 9], 7 * ENTRY_BYTES).unwrap();
    drop((queue, set));
    let set = ConsumeQueueSet::open(fs.clone(), dir.clone()).unwrap();
    let queue = set.queue("orders", 3).unwrap();
    assert_eq!(queue.next_offset(), QueueOffset(7));
    assert_eq!(
        queue.read(QueueOffset(0), 100).unwrap(),
        (0..7).map(|n| (QueueOffset(n), entry(n))).collect::<Vec<_>>()
    );
    queue.append(QueueOffset(7), entry(7)).unwrap();

    set.clear().unwrap();
    assert!(set.list().unwrap().is_empty());
    assert_eq!(set.queue("orders", 3).unwrap().next_offset(), QueueOffset(0));
}

// Goal: synced entries of a queue survive a crash (file creation included); unsynced may not.
#[test]
fn synced_entries_survive_crash() {
    for seed in 0..50 {
        let sim = SimFs::new();
        let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
        let set = ConsumeQueueSet::open(fs.clone(), "/cq".into()).unwrap();
        let queue = set.queue("t", 1).unwrap();
        for n in 0..5 {
            queue.append(QueueOffset(n), entry(n)).unwrap();
        }
        set.sync_dirty().unwrap();
        for n in 5..8 {
            queue.append(QueueOffset(n), entry(n)).unwrap();
        }
        sim.crash(seed);
        let set = ConsumeQueueSet::open(fs, "/cq".into()).unwrap();
        let queue = set.queue("t", 1).unwrap();
        let next = queue.next_offset().0;
        assert!((5..=8).contains(&next), "seed {seed}: next {next}");
        let read = queue.read(QueueOffset(0), 5).unwrap();
        assert_eq!(read, (0..5).map(|n| (QueueOffset(n), entry(n))).collect::<Vec<_>>());
    }
}

fn entries(range: std::ops::Range<u64>) -> Vec<(QueueOffset, ConsumeQueueEntry)> {
    range.map(|n| (QueueOffset(n), entry(n))).collect()
}

fn open_set(sim: &SimFs) -> ConsumeQueueSet {
    ConsumeQueueSet::open(Arc::new(sim.clone()), "/cq".into()).unwrap()
}

// Goal: a reset queue starts at its base (min == next == base), appends continue there, reads below min start at min, handles handed out earlier see the reset, and it all survives a reopen.
#[test]
fn reset_queue_in_place_and_reopen() {
    let sim = SimFs::new();
    let set = open_set(&sim);
    let old_handle = set.queue("t", 0).unwrap();
    for n in 0..6 {
        old_handle.append(QueueOffset(n), entry(n)).unwrap();
    }
    assert_eq!(old_handle.min_offset(), QueueOffset(0));
    let queue = set.reset_queue("t", 0, QueueOffset(1000)).unwrap();
    assert!(Arc::ptr_eq(&queue, &old_handle));
    for handle in [&queue, &old_handle] {
        assert_eq!((handle.min_offset(), handle.next_offset()), (QueueOffset(1000), QueueOffset(1000)));
        assert!(handle.read(QueueOffset(0), 100).unwrap().is_empty());
    }
    assert!(matches!(
        old_handle.append(QueueOffset(6), entry(6)),
        Err(StoreError::OffsetNotConsecutive { expected: 1000, got: 6 })
    ));
    for n in 1000..1004 {
        old_handle.append(QueueOffset(n), entry(n)).unwrap();
    }
    assert_eq!(queue.read(QueueOffset(3), 2).unwrap(), entries(1000..1002));
    assert_eq!(queue.read(QueueOffset(1002), 100).unwrap(), entries(1002..1004));
    assert!(queue.read(QueueOffset(1004), 100).unwrap().is_empty());
    assert!(matches!(queue.truncate_to(QueueOffset(999)), Err(StoreError::Invalid(_))));
    queue.truncate_to(QueueOffset(1003)).unwrap();
    set.sync_dirty().unwrap();
    // The data file holds only the entries from the base.
    assert_eq!(sim.open(Path::new("/cq/t/0.cq"), false).unwrap().len().unwrap(), 3 * ENTRY_BYTES);
    assert_eq!(set.list().unwrap(), vec![("t".to_string(), 0)]);
    drop((queue, old_handle, set));

    let set = open_set(&sim);
    let queue = set.queue("t", 0).unwrap();
    assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(1000), QueueOffset(1003)));
    assert_eq!(queue.read(QueueOffset(0), 100).unwrap(), entries(1000..1003));
    // Resetting a queue that was never opened creates it at its base; a lower base is allowed.
    let fresh = set.reset_queue("u", 7, QueueOffset(5)).unwrap();
    assert_eq!((fresh.min_offset(), fresh.next_offset()), (QueueOffset(5), QueueOffset(5)));
    set.reset_queue("t", 0, QueueOffset(2)).unwrap();
    assert_eq!(queue.next_offset(), QueueOffset(2));
    // clear removes data and meta files: the queues come back empty at 0.
    set.clear().unwrap();
    assert!(queue.read(QueueOffset(0), 1).is_err(), "a handle from before clear must fail");
    assert!(!sim.exists(Path::new("/cq/t/0.cqmeta")));
    let queue = set.queue("t", 0).unwrap();
    assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(0), QueueOffset(0)));
}

// Goal: truncate_front hides entries below the new min (reads start there, offsets stay real), never rewrites the data file, is durable, only moves forward, clamps to next and empties the file when nothing is left.
#[test]
fn truncate_front_moves_min_lazily() {
    let sim = SimFs::new();
    let set = open_set(&sim);
    let queue = set.queue("t", 1).unwrap();
    for n in 0..10 {
        queue.append(QueueOffset(n), entry(n)).unwrap();
    }
    queue.truncate_front(QueueOffset(4)).unwrap();
    assert_eq!(queue.min_offset(), QueueOffset(4));
    assert_eq!(queue.read(QueueOffset(0), 3).unwrap(), entries(4..7));
    assert_eq!(queue.read(QueueOffset(5), 100).unwrap(), entries(5..10));
    queue.truncate_front(QueueOffset(2)).unwrap();
    assert_eq!(queue.min_offset(), QueueOffset(4), "min never moves back");
    assert!(matches!(queue.truncate_to(QueueOffset(3)), Err(StoreError::Invalid(_))));
    queue.truncate_to(QueueOffset(4)).unwrap();
    assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(4), QueueOffset(4)));
    for n in 4..10 {
        queue.append(QueueOffset(n), entry(n)).unwrap();
    }
    queue.truncate_front(QueueOffset(6)).unwrap();
    // Lazy: the entries below min stay in the file.
    assert_eq!(sim.open(Path::new("/cq/t/1.cq"), false).unwrap().len().unwrap(), 10 * ENTRY_BYTES);
    // Everything went (and beyond next: clamped), so the file is emptied; next does not move.
    let set2 = open_set(&sim);
    assert_eq!(set2.queue("t", 1).unwrap().read(QueueOffset(0), 100).unwrap(), entries(6..10));
    drop(set2);
    queue.truncate_front(QueueOffset(50)).unwrap();
    assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(10), QueueOffset(10)));
    assert_eq!(sim.open(Path::new("/cq/t/1.cq"), false).unwrap().len().unwrap(), 0);
    queue.append(QueueOffset(10), entry(10)).unwrap();
    set.sync_dirty().unwrap();
    sim.crash(3);
    let set = open_set(&sim);
    let queue = set.queue("t", 1).unwrap();
    assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(10), QueueOffset(11)));
    assert_eq!(queue.read(QueueOffset(0), 100).unwrap(), entries(10..11));
}

/// The old format by hand: bare 20-byte entries, `position u64 | size u32 | tag hash u64` LE.
fn legacy_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    for n in 0..3u64 {
        bytes.extend_from_slice(&(n * 100).to_le_bytes());
        bytes.extend_from_slice(&(n as u32 + 1).to_le_bytes());
        bytes.extend_from_slice(&(n ^ 0xABCD).to_le_bytes());
    }
    assert_eq!(bytes.len(), 60);
    bytes
}

// Goal: golden test: a queue written the old way (a bare file of 20-byte entries, no meta) opens with base and min 0, on SimFs and on the real file system.
#[test]
fn legacy_queue_without_meta_opens_at_zero() {
    let sim = SimFs::new();
    sim.create_dir_all(Path::new("/cq/old")).unwrap();
    let file = sim.open(Path::new("/cq/old/2.cq"), true).unwrap();
    file.write_all_at(&legacy_bytes(), 0).unwrap();
    file.sync_data().unwrap();
    let real_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(real_dir.path().join("old")).unwrap();
    std::fs::write(real_dir.path().join("old/2.cq"), legacy_bytes()).unwrap();
    let sets = [
        ConsumeQueueSet::open(Arc::new(sim.clone()), "/cq".into()).unwrap(),
        ConsumeQueueSet::open(Arc::new(crate::RealFs), real_dir.path().into()).unwrap(),
    ];
    for set in sets {
        assert_eq!(set.list().unwrap(), vec![("old".to_string(), 2)]);
        let queue = set.queue("old", 2).unwrap();
        assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(0), QueueOffset(3)));
        assert_eq!(queue.read(QueueOffset(0), 10).unwrap(), entries(0..3));
        queue.append(QueueOffset(3), entry(3)).unwrap();
        queue.truncate_front(QueueOffset(1)).unwrap();
        assert_eq!(queue.read(QueueOffset(0), 10).unwrap(), entries(1..4));
    }
}

// Goal: golden test of the meta format: hand-written meta bytes (version 1, flags, base, min) give that base and min; a pending-reset flag empties the data file on open; damage is refused.
#[test]
fn meta_file_golden() {
    fn framed(contents: &[u8]) -> Vec<u8> {
        let mut out = (contents.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc32c::crc32c(contents).to_le_bytes());
        out.extend_from_slice(contents);
        out
    }
    fn meta(flags: u8, base: u64, min: u64) -> Vec<u8> {
        let mut contents = vec![1, flags];
        contents.extend_from_slice(&base.to_le_bytes());
        contents.extend_from_slice(&min.to_le_bytes());
        framed(&contents)
    }
    let write = |sim: &SimFs, path: &str, bytes: &[u8]| {
        let file = sim.open(Path::new(path), true).unwrap();
        file.write_all_at(bytes, 0).unwrap();
        file.sync_data().unwrap();
    };
    let sim = SimFs::new();
    sim.create_dir_all(Path::new("/cq/t")).unwrap();
    write(&sim, "/cq/t/0.cq", &legacy_bytes());
    write(&sim, "/cq/t/0.cqmeta", &meta(0, 500, 501));
    write(&sim, "/cq/t/1.cq", &legacy_bytes());
    write(&sim, "/cq/t/1.cqmeta", &meta(1, 70, 70));
    write(&sim, "/cq/t/2.cq", &legacy_bytes());
    write(&sim, "/cq/t/2.cqmeta", &meta(0, 10, 9));
    let set = open_set(&sim);
    let queue = set.queue("t", 0).unwrap();
    assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(501), QueueOffset(503)));
    let read = queue.read(QueueOffset(0), 10).unwrap();
    assert_eq!(read, vec![(QueueOffset(501), entry(1)), (QueueOffset(502), entry(2))]);
    let queue = set.queue("t", 1).unwrap();
    assert_eq!((queue.min_offset(), queue.next_offset()), (QueueOffset(70), QueueOffset(70)));
    assert_eq!(sim.open(Path::new("/cq/t/1.cq"), false).unwrap().len().unwrap(), 0);
    assert!(matches!(set.queue("t", 2), Err(StoreError::Corrupt { .. })), "min below base");
    // Our encoder writes exactly the documented bytes.
    set.reset_queue("t", 0, QueueOffset(0x0102)).unwrap();
    let file = sim.open(Path::new("/cq/t/0.cqmeta"), false).unwrap();
    let mut bytes = vec![0; file.len().unwrap() as usize];
    read_exact_at(&*file, &mut bytes, 0).unwrap();
    assert_eq!(bytes, meta(0, 0x0102, 0x0102));
}

/// Appends entries 0..5 synced, then 5..7 unsynced, to queue ("t", 0).
fn queue_with_entries(sim: &SimFs) -> ConsumeQueueSet {
    let set = open_set(sim);
    let queue = set.queue("t", 0).unwrap();
    for n in 0..5 {
        queue.append(QueueOffset(n), entry(n)).unwrap();
    }
    queue.truncate_front(QueueOffset(1)).unwrap();
    set.sync_dirty().unwrap();
    for n in 5..7 {
        queue.append(QueueOffset(n), entry(n)).unwrap();
    }
    set
}

/// The old queue after a crash: min 1, the synced entries 1..5, maybe (torn or garbage)
/// unsynced entries up to 7.
fn is_old_queue(queue: &ConsumeQueue) -> bool {
    let next = queue.next_offset().0;
    queue.min_offset() == QueueOffset(1)
        && (5..=7).contains(&next)
        && queue.read(QueueOffset(0), 4).unwrap() == entries(1..5)
}

// Goal: reset_queue interrupted by a power cut at every step (then a random crash) leaves either the old queue or the new empty one at its base, never a mix; once reset_queue returned Ok, always the new one.
#[test]
fn reset_queue_crash_is_all_or_nothing() {
    let (mut old_seen, mut new_seen) = (0, 0);
    for cut_after in 0..16 {
        for seed in 0..40 {
            let sim = SimFs::new();
            let set = queue_with_entries(&sim);
            sim.cut_power_after(cut_after);
            let reset_ok = set.reset_queue("t", 0, QueueOffset(777)).is_ok();
            if reset_ok && seed % 2 == 0 {
                // Appends after the reset, unsynced: they may be lost but never mixed.
                let queue = set.queue("t", 0).unwrap();
                let _ = queue.append(QueueOffset(777), entry(777));
            }
            sim.crash(seed * 31 + cut_after);
            let set = open_set(&sim);
            let queue = set.queue("t", 0).unwrap();
            let is_new = queue.min_offset() == QueueOffset(777)
                && queue.next_offset() >= QueueOffset(777)
                && queue.next_offset() <= QueueOffset(778)
                && queue.read(QueueOffset(0), 10).unwrap().len() as u64 == queue.next_offset().0 - 777;
            let is_old = is_old_queue(&queue);
            assert!(is_new ^ is_old, "cut {cut_after} seed {seed}: neither old nor new queue");
            assert!(!reset_ok || is_new, "cut {cut_after} seed {seed}: acknowledged reset lost");
            if is_new {
                new_seen += 1
            } else {
                old_seen += 1
            }
            // The queue works after recovery.
            let next = queue.next_offset();
            queue.append(next, entry(next.0)).unwrap();
            queue.sync().unwrap();
        }
    }
    assert!(old_seen > 0 && new_seen > 0, "old {old_seen} new {new_seen}");
}

// Goal: truncate_front interrupted by a power cut at every step (then a random crash) leaves the min old or new, with every synced entry from that min intact; once it returned Ok, the new min.
#[test]
fn truncate_front_crash_keeps_old_or_new_min() {
    let (mut old_seen, mut new_seen) = (0, 0);
    for cut_after in 0..8 {
        for seed in 0..40 {
            let sim = SimFs::new();
            let set = queue_with_entries(&sim);
            sim.cut_power_after(cut_after);
            let ok = set.queue("t", 0).unwrap().truncate_front(QueueOffset(6)).is_ok();
            sim.crash(seed * 17 + cut_after);
            let set = open_set(&sim);
            let queue = set.queue("t", 0).unwrap();
            let next = queue.next_offset().0;
            if queue.min_offset() == QueueOffset(6) {
                // The data was synced before the meta named min 6.
                assert_eq!(
                    queue.read(QueueOffset(0), 10).unwrap(),
                    entries(6..next),
                    "cut {cut_after} seed {seed}"
                );
                assert_eq!(next, 7, "cut {cut_after} seed {seed}");
                new_seen += 1;
            } else {
                assert!(!ok, "cut {cut_after} seed {seed}: acknowledged truncate_front lost");
                assert!(is_old_queue(&queue), "cut {cut_after} seed {seed}: min {:?}", queue.min_offset());
                old_seen += 1;
            }
        }
    }
    assert!(old_seen > 0 && new_seen > 0, "old {old_seen} new {new_seen}");
}

// Goal: clear interrupted at every step never brings old entries back under the wrong base: each queue is either intact (base and entries) or empty at 0.
#[test]
fn clear_crash_never_mixes_base_and_entries() {
    for cut_after in 0..8 {
        for seed in 0..20 {
            let sim = SimFs::new();
            let set = open_set(&sim);
            let queue = set.reset_queue("t", 0, QueueOffset(40)).unwrap();
            for n in 40..43 {
                queue.append(QueueOffset(n), entry(n)).unwrap();
            }
            set.sync_dirty().unwrap();
            sim.cut_power_after(cut_after);
            let cleared = set.clear().is_ok();
            sim.crash(seed);
            let set = open_set(&sim);
            let queue = set.queue("t", 0).unwrap();
            let range = (queue.min_offset().0, queue.next_offset().0);
            if range == (0, 0) {
                assert!(!sim.exists(Path::new("/cq/t/0.cqmeta")) || !cleared);
            } else {
                assert!(!cleared, "cut {cut_after} seed {seed}: a cleared queue came back");
                assert_eq!(range, (40, 43), "cut {cut_after} seed {seed}");
                assert_eq!(queue.read(QueueOffset(0), 10).unwrap(), entries(40..43));
            }
        }
    }
}

// Goal: entries waiting in the in-memory tail read like written ones, across the file/tail
// boundary; truncation inside the tail and below it; a sync writes the tail (seen by a reopen).
#[test]
fn tail_reads_truncates_and_syncs_like_the_file() {
    let sim = SimFs::new();
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    let dir = PathBuf::from("/cq");
    let set = ConsumeQueueSet::open(fs.clone(), dir.clone()).unwrap();
    let queue = set.queue("t", 0).unwrap();
    let per_tail = (TAIL_BYTES_MAX / CONSUME_QUEUE_ENTRY_BYTES) as u64 + 1;
    let total = per_tail * 2 + 50;
    for n in 0..total {
        queue.append(QueueOffset(n), entry(n)).unwrap();
    }
    let file_len = fs.open(&dir.join("t/0.cq"), false).unwrap().len().unwrap();
    assert!(file_len > 0 && file_len < total * ENTRY_BYTES, "part written, part in the tail: {file_len}");
    let written = file_len / ENTRY_BYTES;
    for (from, max) in [(0, total as usize), (written - 3, 10), (written, 5), (total - 2, 10)] {
        let expected: Vec<_> = (from..(from + max as u64).min(total)).map(|n| (QueueOffset(n), entry(n))).collect();
        assert_eq!(queue.read(QueueOffset(from), max).unwrap(), expected, "read from {from}");
    }
    queue.truncate_to(QueueOffset(total - 10)).unwrap();
    assert_eq!(fs.open(&dir.join("t/0.cq"), false).unwrap().len().unwrap(), file_len, "a cut inside the tail leaves the file");
    queue.truncate_to(QueueOffset(written - 5)).unwrap();
    for n in written - 5..written + 20 {
        queue.append(QueueOffset(n), entry(n + 1000)).unwrap();
    }
    set.sync_dirty().unwrap();
    drop((queue, set));
    let set = ConsumeQueueSet::open(fs, dir).unwrap();
    let queue = set.queue("t", 0).unwrap();
    assert_eq!(queue.next_offset(), QueueOffset(written + 20));
    let expected = vec![(QueueOffset(written - 6), entry(written - 6)), (QueueOffset(written - 5), entry(written - 5 + 1000))];
    assert_eq!(queue.read(QueueOffset(written - 6), 2).unwrap(), expected);
}
