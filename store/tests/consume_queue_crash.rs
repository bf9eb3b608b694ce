//! Consume queues with base / min offsets under crashes: random appends, syncs, truncations at
//! both ends, resets and reopens on SimFs, a power cut at a random point in most cycles, then
//! `crash(seed)`, reopen, and checks against a model of what must have survived.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use raftmq_store::{CommitLogPosition, ConsumeQueueEntry, ConsumeQueueSet, FileSystem, QueueOffset, SimFs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ITERATIONS: u64 = 300;
const CYCLES: usize = 4;
const TOPIC: &str = "orders";

fn open_set(sim: &SimFs) -> ConsumeQueueSet {
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    ConsumeQueueSet::open(fs, PathBuf::from("/node/cq")).unwrap()
}

/// What the process knows about the queue while no call has failed.
struct Model {
    min: u64,
    next: u64,
    /// Entries written at [min, next) (older ones are irrelevant: unreadable).
    entries: BTreeMap<u64, ConsumeQueueEntry>,
    /// Entries in [min, synced) are durable: a crash must keep them byte-identical.
    synced: u64,
}

/// The operation a power cut interrupted: its effect may or may not be on disk.
enum InFlight {
    None,
    TruncateTo(u64),
    TruncateFront(u64),
    Reset(u64),
}

// Goal: after any crash a queue's (min, next) and entries are those of the old queue or of the in-flight operation's result: acknowledged mins, resets and synced entries are never lost, and entries never show under another base.
#[test]
fn random_ops_and_crashes_keep_base_min_and_entries_consistent() {
    // How interrupted resets and front truncations ended: (rolled forward, left old).
    let (mut interrupted_new, mut interrupted_old) = (0, 0);
    for iteration in 0..ITERATIONS {
        let mut rng = StdRng::seed_from_u64(iteration);
        let sim = SimFs::new();
        let mut model = Model { min: 0, next: 0, entries: BTreeMap::new(), synced: 0 };
        let mut tag = 0u64;
        for cycle in 0..CYCLES {
            let context = format!("iteration {iteration} cycle {cycle}");
            let mut set = open_set(&sim);
            if rng.random_bool(0.6) {
                sim.cut_power_after(rng.random_range(0..40));
            }
            let mut in_flight = InFlight::None;
            for _ in 0..rng.random_range(1..12) {
                let Ok(queue) = set.queue(TOPIC, 0) else {
                    // Creating the queue (first cycle) can meet the power cut too.
                    assert!(sim.is_powered_off(), "{context}: queue creation failed without a power cut");
                    break;
                };
                let failed = match rng.random_range(0..100) {
                    0..40 => {
                        let mut failed = false;
                        for _ in 0..rng.random_range(1..5) {
                            tag += 1;
                            let entry =
                                ConsumeQueueEntry { position: CommitLogPosition(tag * 64), size: 10, tag_hash: tag };
                            if queue.append(QueueOffset(model.next), entry).is_err() {
                                failed = true;
                                break;
                            }
                            model.entries.insert(model.next, entry);
                            model.next += 1;
                        }
                        failed
                    }
                    40..55 => {
                        let ok = set.sync_dirty().is_ok();
                        if ok {
                            model.synced = model.next;
                        }
                        !ok
                    }
                    55..65 => {
                        let to = rng.random_range(model.min..=model.next);
                        let ok = queue.truncate_to(QueueOffset(to)).is_ok();
                        if ok {
                            model.next = to;
                            model.synced = model.synced.min(to);
                            model.entries.retain(|&n, _| n < to);
                        } else {
                            in_flight = InFlight::TruncateTo(to);
                        }
                        !ok
                    }
                    65..80 => {
                        let to = rng.random_range(model.min.saturating_sub(2)..=model.next + 3);
                        let ok = queue.truncate_front(QueueOffset(to)).is_ok();
                        if ok {
                            if to > model.min {
                                model.min = to.min(model.next);
                                model.synced = model.next;
                            }
                            model.entries.retain(|&n, _| n >= model.min);
                            assert_eq!(queue.min_offset(), QueueOffset(model.min), "{context}");
                        } else {
                            in_flight = InFlight::TruncateFront(to.min(model.next));
                        }
                        !ok
                    }
                    80..92 => {
                        let base = match rng.random_range(0..3) {
                            0 => model.next,
                            1 => rng.random_range(0..model.next + 1),
                            _ => model.next + rng.random_range(1..1_000_000),
                        };
                        let ok = set.reset_queue(TOPIC, 0, QueueOffset(base)).is_ok();
                        if ok {
                            model = Model { min: base, next: base, entries: BTreeMap::new(), synced: base };
                        } else {
                            in_flight = InFlight::Reset(base);
                        }
                        !ok
                    }
                    _ => {
                        // Reopen without a crash: everything synced is still there, and of the
                        // entries appended since, a prefix (those the queue wrote to its file;
                        // the rest waited in its in-memory tail).
                        drop(queue);
                        let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
                        let reopened = ConsumeQueueSet::open(fs, PathBuf::from("/node/cq"))
                            .and_then(|reopened| Ok((reopened.queue(TOPIC, 0)?, reopened)));
                        match reopened {
                            Ok((queue, reopened)) => {
                                // Open makes what it found durable.
                                set = reopened;
                                let next = queue.next_offset().0;
                                assert!(model.synced <= next && next <= model.next, "{context}: reopened at {next}");
                                model.next = next;
                                model.entries.retain(|&n, _| n < next);
                                model.synced = next;
                                assert_eq!(queue.min_offset().0, model.min, "{context}");
                                false
                            }
                            Err(_) => true,
                        }
                    }
                };
                if failed {
                    assert!(sim.is_powered_off(), "{context}: an operation failed without a power cut");
                    break;
                }
            }
            drop(set);
            sim.crash(iteration * 100 + cycle as u64);

            let set = open_set(&sim);
            let queue = set.queue(TOPIC, 0).unwrap();
            let (min, next) = (queue.min_offset().0, queue.next_offset().0);
            let is_reset_result = match in_flight {
                InFlight::Reset(base) => (min, next) == (base, base),
                InFlight::TruncateFront(to) if to >= model.next => (min, next) == (to, to),
                _ => false,
            };
            match in_flight {
                InFlight::Reset(_) | InFlight::TruncateFront(_) if is_reset_result || min != model.min => {
                    interrupted_new += 1
                }
                InFlight::Reset(_) | InFlight::TruncateFront(_) => interrupted_old += 1,
                _ => {}
            }
            if is_reset_result {
                model = Model { min, next, entries: BTreeMap::new(), synced: next };
                continue;
            }
            // Otherwise the old queue, maybe with the in-flight suffix truncation or min move.
            let mut synced = model.synced;
            let min_ok = match in_flight {
                InFlight::TruncateFront(to) => min == model.min || min == to,
                _ => min == model.min,
            };
            assert!(min_ok, "{context}: min {min}, expected {} ({:?})", model.min, in_flight_name(&in_flight));
            if let InFlight::TruncateTo(to) = in_flight {
                synced = synced.min(to);
            }
            let floor = synced.max(min);
            assert!(
                (floor..=model.next.max(min)).contains(&next),
                "{context}: next {next} not in {floor}..={}",
                model.next
            );
            let read = queue.read(QueueOffset(0), 1 << 20).unwrap();
            assert_eq!(read.len() as u64, next - min, "{context}");
            assert_eq!(read.first().map(|(o, _)| o.0), (next > min).then_some(min), "{context}");
            for (offset, entry) in read.iter().filter(|(o, _)| o.0 < floor) {
                assert_eq!(Some(entry), model.entries.get(&offset.0), "{context}: offset {}", offset.0);
            }
            // Entries past the synced floor may be torn or garbage: cut them, as the state machine does.
            queue.truncate_to(QueueOffset(floor)).unwrap();
            model.min = min;
            model.next = floor.min(next);
            model.entries.retain(|&n, _| n >= min && n < model.next);
            model.synced = model.next;
        }
    }
    assert!(interrupted_new > 5 && interrupted_old > 5, "new {interrupted_new} old {interrupted_old}");
}

fn in_flight_name(in_flight: &InFlight) -> &'static str {
    match in_flight {
        InFlight::None => "none",
        InFlight::TruncateTo(_) => "truncate_to",
        InFlight::TruncateFront(_) => "truncate_front",
        InFlight::Reset(_) => "reset",
    }
}

fn entry(offset: u64) -> ConsumeQueueEntry {
    ConsumeQueueEntry { position: CommitLogPosition(offset * 7), size: (offset % 1000) as u32, tag_hash: !offset }
}

// Goal: readers racing with resets, appends and front truncations only ever see contiguous real offsets at or above a min with the entries written at those offsets (never old entries under a new base).
#[test]
fn reads_racing_resets_never_see_a_mix() {
    let sim = SimFs::new();
    let set = Arc::new(open_set(&sim));
    let queue = set.queue(TOPIC, 1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (queue, stop) = (queue.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                // At least one read even if the writer finishes before this thread runs.
                while reads == 0 || !stop.load(Ordering::Relaxed) {
                    let from = queue.min_offset().0.saturating_sub(3);
                    let read = queue.read(QueueOffset(from), 64).unwrap();
                    for (i, (offset, found)) in read.iter().enumerate() {
                        assert_eq!(offset.0, read[0].0.0 + i as u64);
                        assert_eq!(*found, entry(offset.0), "offset {}", offset.0);
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..300u64 {
        let queue = if round % 10 == 0 {
            set.reset_queue(TOPIC, 1, QueueOffset(rng.random_range(0..1_000_000))).unwrap()
        } else {
            queue.clone()
        };
        let next = queue.next_offset().0;
        for n in next..next + 20 {
            queue.append(QueueOffset(n), entry(n)).unwrap();
        }
        if round % 3 == 0 {
            queue.truncate_front(QueueOffset(next + rng.random_range(0..25))).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
}
