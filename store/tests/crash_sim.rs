//! Crash simulation: random operations on SimFs, power cuts at random points, `crash(seed)`,
//! reopen, and checks that nothing acknowledged was lost and nothing invalid came back.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::SystemTime;

use bytes::Bytes;
use raftmq_store::{
    CommitLog, CommitLogConfig, FileSystem, LogIndex, Record, RetentionPolicy, SimFs, StoreError, VoteFile,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ITERATIONS: u64 = 300;
const CYCLES: usize = 3;
const LOG_DIR: &str = "/node/log";
const VOTE_PATH: &str = "/node/vote";

/// What the test did, in order; replayed with the callbacks' outcomes once the cycle is over.
enum Event {
    Append { seq: u64, records: Vec<Record>, ok: bool },
    Truncate { keep: Option<u64>, ok: bool },
    Purge { point: (u64, u64), ok: bool },
    Retention { first_retained: Option<u64> },
    Reset { ok: bool },
    Sync { ok: bool },
}

/// What must (or may) be found after the crash.
#[derive(Default, Clone)]
struct Expectation {
    /// Acknowledged durable: present and byte-identical unless purged and deleted.
    acked: BTreeMap<u64, Record>,
    /// Every version that may legally be found at an index.
    candidates: BTreeMap<u64, Vec<Record>>,
    purge_ok: Option<(u64, u64)>,
    /// A purge (or reset) that was in flight: its outcome may or may not have reached the disk.
    purge_in_flight: Option<Option<(u64, u64)>>,
    vote_ok: Option<Vec<u8>>,
    vote_in_flight: Option<Vec<u8>>,
}

impl Expectation {
    fn replay(&mut self, events: &[Event], acks: &HashMap<u64, bool>) {
        // Records appended without error and not truncated since: a successful sync acks them.
        let mut current: BTreeMap<u64, Record> = self.acked.clone();
        for event in events {
            match event {
                Event::Append { seq, records, ok } => {
                    for r in records {
                        self.candidates.entry(r.index.0).or_default().push(r.clone());
                        if *ok {
                            current.insert(r.index.0, r.clone());
                        }
                        if acks.get(seq) == Some(&true) {
                            self.acked.insert(r.index.0, r.clone());
                        }
                    }
                }
                Event::Truncate { keep, ok } => {
                    let kept = |i: &u64| keep.is_some_and(|k| *i <= k);
                    // Even a failed truncation may have removed some of the suffix.
                    self.acked.retain(|i, _| kept(i));
                    if *ok {
                        current.retain(|i, _| kept(i));
                        self.candidates.retain(|i, _| kept(i));
                    }
                }
                Event::Purge { point, ok } => {
                    if *ok {
                        self.purge_ok = Some(*point);
                    } else {
                        self.purge_in_flight = Some(Some(*point));
                    }
                }
                Event::Retention { first_retained } => {
                    let first = first_retained.unwrap_or(u64::MAX);
                    self.acked.retain(|i, _| *i >= first);
                }
                Event::Reset { ok } => {
                    self.acked.clear();
                    if *ok {
                        current.clear();
                        self.candidates.clear();
                        self.purge_ok = None;
                    } else {
                        self.purge_in_flight = Some(None);
                    }
                }
                Event::Sync { ok } => {
                    if *ok {
                        self.acked.extend(current.iter().map(|(i, r)| (*i, r.clone())));
                    }
                }
            }
        }
    }
}

fn config() -> CommitLogConfig {
    CommitLogConfig { segment_size_bytes: 4096, record_payload_bytes_max: 1024, ..CommitLogConfig::default() }
}

fn fs(sim: &SimFs) -> Arc<dyn FileSystem> {
    Arc::new(sim.clone())
}

/// Runs random operations until they are done or the power is cut.
fn run_cycle(
    rng: &mut StdRng,
    log: &CommitLog,
    vote: &VoteFile,
    expect: &mut Expectation,
    term: &mut u64,
    vote_counter: &mut u64,
) -> (Vec<Event>, Arc<Mutex<HashMap<u64, bool>>>) {
    let acks: Arc<Mutex<HashMap<u64, bool>>> = Arc::default();
    let mut events = Vec::new();
    for seq in 0..rng.random_range(5..30u64) {
        let state = log.state();
        let failed = match rng.random_range(0..20) {
            0..=11 => {
                *term += rng.random_bool(0.2) as u64;
                let first = match state.last {
                    Some((last, _)) if state.last == state.purged => last.0 + 1 + rng.random_range(0..3),
                    Some((last, _)) => last.0 + 1,
                    None => rng.random_range(0..5),
                };
                let records: Vec<Record> = (first..first + rng.random_range(1..6))
                    .map(|i| {
                        let payload: Vec<u8> = (0..rng.random_range(0..400)).map(|_| rng.random()).collect();
                        Record { term: *term, index: LogIndex(i), kind: rng.random(), payload: Bytes::from(payload) }
                    })
                    .collect();
                let (tx, rx) = mpsc::channel();
                let acks = acks.clone();
                let callback = Box::new(move |r: Result<(), StoreError>| {
                    acks.lock().unwrap().insert(seq, r.is_ok());
                    let _ = tx.send(());
                });
                let ok = log.append(&records, callback).is_ok();
                if ok && rng.random_bool(0.5) {
                    rx.recv().unwrap();
                }
                events.push(Event::Append { seq, records, ok });
                !ok
            }
            12..=13 => {
                let Some((last, _)) = state.last else { continue };
                let lo = state.purged.map_or(state.first_retained.map_or(0, |f| f.0.saturating_sub(1)), |(p, _)| p.0);
                let keep = if state.purged.is_none() && rng.random_bool(0.1) {
                    None
                } else {
                    Some(rng.random_range(lo..=last.0))
                };
                let ok = log.truncate_after(keep.map(LogIndex)).is_ok();
                events.push(Event::Truncate { keep, ok });
                !ok
            }
            14..=15 => {
                let lo = state.purged.map_or(0, |(p, _)| p.0);
                let hi = state.last.map_or(lo, |(l, _)| l.0.max(lo)) + rng.random_range(0..3);
                let index = rng.random_range(lo..=hi);
                let point = (index, log.read(LogIndex(index)).ok().flatten().map_or(*term, |r| r.term));
                if state.purged.is_some_and(|(p, t)| p.0 == point.0 && t != point.1) {
                    continue;
                }
                let ok = log.purge(LogIndex(point.0), point.1).is_ok();
                events.push(Event::Purge { point, ok });
                !ok
            }
            16 => {
                let policy = RetentionPolicy { max_age: None, max_total_bytes: Some(rng.random_range(0..20_000)) };
                match log.enforce_retention(&policy, SystemTime::now()) {
                    Ok(report) => {
                        events.push(Event::Retention { first_retained: report.first_retained.map(|f| f.0) });
                        false
                    }
                    Err(_) => true,
                }
            }
            17 => {
                if rng.random_bool(0.7) {
                    continue; // resets are rare
                }
                let ok = log.reset().is_ok();
                events.push(Event::Reset { ok });
                !ok
            }
            18 => {
                let ok = log.sync().is_ok();
                events.push(Event::Sync { ok });
                !ok
            }
            _ => {
                *vote_counter += 1;
                let bytes = format!("vote-{vote_counter}").into_bytes();
                let ok = vote.save(&bytes).is_ok();
                if ok {
                    expect.vote_ok = Some(bytes);
                    expect.vote_in_flight = None;
                } else {
                    expect.vote_in_flight = Some(bytes);
                }
                !ok
            }
        };
        if failed {
            break; // the power is cut: nothing more can succeed until the crash
        }
    }
    (events, acks)
}

/// Reads every present record and checks it against the expectation; returns them.
fn verify(log: &CommitLog, vote: &VoteFile, expect: &Expectation, context: &str) -> BTreeMap<u64, Record> {
    let state = log.state();
    let purged = state.purged.map(|(i, t)| (i.0, t));
    let allowed_purges: Vec<Option<(u64, u64)>> =
        [Some(expect.purge_ok), expect.purge_in_flight].into_iter().flatten().collect();
    assert!(allowed_purges.contains(&purged), "{context}: purged {purged:?} not in {allowed_purges:?}");
    let purged_index = purged.map(|(i, _)| i);

    let top = expect.candidates.keys().next_back().copied().unwrap_or(0).max(purged_index.unwrap_or(0)) + 5;
    let mut present = BTreeMap::new();
    if let Some(first) = state.first_retained {
        for index in first.0..=top {
            match log.read(LogIndex(index)) {
                Ok(Some(record)) => {
                    present.insert(index, record);
                }
                Ok(None) | Err(StoreError::Compacted { .. }) => {}
                Err(e) => panic!("{context}: read {index}: {e}"),
            }
        }
    }
    assert_eq!(present.keys().next().copied(), state.first_retained.map(|f| f.0), "{context}: first_retained");
    for (index, record) in &present {
        let versions = expect.candidates.get(index).map(Vec::as_slice).unwrap_or_default();
        assert!(versions.contains(record), "{context}: record {index} was never written in this form");
        if let Some(acked) = expect.acked.get(index) {
            assert_eq!(acked, record, "{context}: acked record {index} changed");
        }
    }
    for pair in present.keys().collect::<Vec<_>>().windows(2) {
        let (a, b) = (*pair[0], *pair[1]);
        assert!(
            b == a + 1 || purged_index.is_some_and(|p| a <= p),
            "{context}: hole between {a} and {b} (purged {purged:?})"
        );
    }
    for index in expect.acked.keys() {
        if !present.contains_key(index) {
            let deleted_purged =
                purged_index.is_some_and(|p| *index <= p) && state.first_retained.is_none_or(|f| *index < f.0);
            assert!(
                deleted_purged,
                "{context}: acked record {index} lost (purged {purged:?}, first {:?})",
                state.first_retained
            );
        }
    }
    let last_present = present.iter().next_back().map(|(i, r)| (LogIndex(*i), r.term));
    let expected_last = match (last_present, state.purged) {
        (Some((l, t)), Some((p, _))) if l > p => Some((l, t)),
        (Some(_), Some(p)) | (None, Some(p)) => Some(p),
        (last, None) => last,
    };
    assert_eq!(state.last, expected_last, "{context}: state.last");

    let loaded = vote.load().unwrap();
    let allowed_votes = [expect.vote_ok.clone(), expect.vote_in_flight.clone()];
    assert!(
        loaded == allowed_votes[0] || (loaded.is_some() && loaded == allowed_votes[1]),
        "{context}: vote went backwards: {loaded:?}"
    );
    present
}

// Goal: under random crashes (including power cuts in the middle of appends, truncations, purges,
// retention, resets and vote saves), every flush-acknowledged record survives byte-identical,
// no torn or never-written record is returned, the log has no holes, and the vote never goes back.
#[test]
fn crash_simulation() {
    let mut acked_checked = 0;
    for iteration in 0..ITERATIONS {
        let mut rng = StdRng::seed_from_u64(iteration);
        let sim = SimFs::new();
        let mut expect = Expectation::default();
        let (mut term, mut vote_counter) = (1u64, 0u64);
        for cycle in 0..CYCLES {
            let context = format!("iteration {iteration} cycle {cycle}");
            let log = CommitLog::open(fs(&sim), PathBuf::from(LOG_DIR), config())
                .unwrap_or_else(|e| panic!("{context}: open: {e}"));
            let vote = VoteFile::open(fs(&sim), PathBuf::from(VOTE_PATH)).unwrap();
            let present = verify(&log, &vote, &expect, &context);
            acked_checked += expect.acked.len();
            // Everything found after recovery is durable: it is the new baseline.
            expect = Expectation {
                candidates: present.iter().map(|(i, r)| (*i, vec![r.clone()])).collect(),
                acked: present,
                purge_ok: log.state().purged.map(|(i, t)| (i.0, t)),
                purge_in_flight: None,
                vote_ok: vote.load().unwrap(),
                vote_in_flight: None,
            };
            if rng.random_bool(0.6) {
                sim.cut_power_after(rng.random_range(0..80));
            }
            let (events, acks) = run_cycle(&mut rng, &log, &vote, &mut expect, &mut term, &mut vote_counter);
            sim.crash(rng.random());
            drop(log); // its flusher's last attempt fails on the dead handles
            let acks = acks.lock().unwrap().clone();
            expect.replay(&events, &acks);
        }
        let log = CommitLog::open(fs(&sim), PathBuf::from(LOG_DIR), config()).unwrap();
        let vote = VoteFile::open(fs(&sim), PathBuf::from(VOTE_PATH)).unwrap();
        verify(&log, &vote, &expect, &format!("iteration {iteration} final"));
    }
    // Guards against the test going vacuous (e.g. power always cut before anything is acked).
    assert!(acked_checked > ITERATIONS as usize * 20, "only {acked_checked} acknowledged records were checked");
}
