//! Random-operation model test: CommitLog on SimFs against a plain in-memory model.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::SystemTime;

use bytes::Bytes;
use proptest::prelude::*;
use raftmq_store::{CommitLog, CommitLogConfig, LogIndex, LogState, Record, RetentionPolicy, SimFs, StoreError};

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: usize,
        payload_len: usize,
        term_bump: bool,
        gap: u64,
    },
    /// Keep up to a point chosen by `at` (per mille) between the lowest allowed and the last index.
    TruncateAfter {
        at: u16,
    },
    /// Purge to a point chosen by `at` (per mille) up to the last index plus `beyond`.
    Purge {
        at: u16,
        beyond: u64,
    },
    RetainBytes {
        max_total_bytes: u64,
    },
    Reopen,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..6, 0usize..600, any::<bool>(), 0u64..3).prop_map(|(count, payload_len, term_bump, gap)| Op::Append { count, payload_len, term_bump, gap }),
        2 => (0u16..=1000).prop_map(|at| Op::TruncateAfter { at }),
        2 => (0u16..=1000, prop_oneof![4 => Just(0u64), 1 => 1u64..20]).prop_map(|(at, beyond)| Op::Purge { at, beyond }),
        2 => (0u64..30_000).prop_map(|max_total_bytes| Op::RetainBytes { max_total_bytes }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Reset),
    ]
}

#[derive(Default)]
struct Model {
    /// Physically present records.
    records: BTreeMap<u64, Record>,
    purged: Option<(u64, u64)>,
    term: u64,
}

impl Model {
    fn last_record(&self) -> Option<u64> {
        self.records.keys().next_back().copied()
    }

    fn has_unpurged(&self) -> bool {
        self.last_record().is_some_and(|last| self.purged.is_none_or(|(p, _)| last > p))
    }

    fn state(&self) -> LogState {
        let last = if self.has_unpurged() {
            self.records.values().next_back().map(|r| (r.index, r.term))
        } else {
            self.purged.map(|(i, t)| (LogIndex(i), t))
        };
        LogState {
            purged: self.purged.map(|(i, t)| (LogIndex(i), t)),
            last,
            first_retained: self.records.keys().next().map(|&i| LogIndex(i)),
        }
    }

    fn next_index(&self, gap: u64) -> u64 {
        if self.has_unpurged() { self.last_record().unwrap() + 1 } else { self.purged.map_or(0, |(p, _)| p + 1) + gap }
    }
}

fn config() -> CommitLogConfig {
    CommitLogConfig { segment_size_bytes: 4096, record_payload_bytes_max: 1024, ..CommitLogConfig::default() }
}

fn open(sim: &SimFs) -> CommitLog {
    CommitLog::open(Arc::new(sim.clone()), PathBuf::from("/log"), config()).unwrap()
}

fn pick(lo: u64, hi: u64, per_mille: u16) -> u64 {
    lo + (hi - lo) * per_mille as u64 / 1000
}

fn apply(log: &mut CommitLog, sim: &SimFs, model: &mut Model, op: &Op) {
    match *op {
        Op::Append { count, payload_len, term_bump, gap } => {
            model.term += term_bump as u64;
            let first = model.next_index(gap);
            let records: Vec<Record> = (first..first + count as u64)
                .map(|i| Record {
                    term: model.term,
                    index: LogIndex(i),
                    kind: 1,
                    payload: Bytes::from(vec![(i % 251) as u8; payload_len]),
                })
                .collect();
            let (tx, rx) = mpsc::channel();
            log.append(&records, Box::new(move |r| tx.send(r).unwrap())).unwrap();
            rx.recv().unwrap().unwrap();
            model.records.extend(records.into_iter().map(|r| (r.index.0, r)));
        }
        Op::TruncateAfter { at } => {
            let Some(last) = model.last_record() else { return };
            let lo = model.purged.map_or(0, |(p, _)| p);
            if lo >= last {
                return; // nothing after the purge point to truncate
            }
            let keep = pick(lo, last, at);
            let keep = if model.purged.is_none() && keep == 0 { None } else { Some(keep) };
            log.truncate_after(keep.map(LogIndex)).unwrap();
            model.records.retain(|&i, _| keep.is_some_and(|k| i <= k));
        }
        Op::Purge { at, beyond } => {
            let lo = model.purged.map_or(0, |(p, _)| p);
            let hi = model.last_record().unwrap_or(lo).max(lo) + beyond;
            let index = pick(lo, hi, at);
            let term = model.records.get(&index).map_or(model.term, |r| r.term);
            if model.purged.is_some_and(|(p, t)| p == index && t != term) {
                return; // re-purging the same index under another term is not a thing Raft does
            }
            log.purge(LogIndex(index), term).unwrap();
            model.purged = Some((index, term));
        }
        Op::RetainBytes { max_total_bytes } => {
            let policy = RetentionPolicy { max_age: None, max_total_bytes: Some(max_total_bytes) };
            let report = log.enforce_retention(&policy, SystemTime::now()).unwrap();
            let first = report.first_retained.map_or(u64::MAX, |f| f.0);
            let dropped: Vec<u64> = model.records.range(..first).map(|(&i, _)| i).collect();
            for index in dropped {
                let purged = model.purged.map(|(p, _)| p);
                assert!(
                    purged.is_some_and(|p| index <= p),
                    "retention deleted unpurged record {index} (purged {purged:?})"
                );
                model.records.remove(&index);
            }
        }
        Op::Reopen => {
            *log = CommitLog::open(Arc::new(sim.clone()), PathBuf::from("/log"), config()).unwrap();
        }
        Op::Reset => {
            log.reset().unwrap();
            *model = Model { term: model.term, ..Model::default() };
        }
    }
}

fn check(log: &CommitLog, model: &Model) {
    let state = log.state();
    assert_eq!(state, model.state());
    if let (Some((p, _)), Some((l, _))) = (state.purged, state.last) {
        assert!(p <= l, "purged {p:?} after last {l:?}");
    }
    for (index, record) in &model.records {
        assert_eq!(log.read(LogIndex(*index)).unwrap().as_ref(), Some(record));
    }
    if let Some(last) = model.last_record() {
        let end = last.max(model.purged.map_or(0, |(p, _)| p));
        assert_eq!(log.read(LogIndex(end + 1)).unwrap(), None);
        let first = *model.records.keys().next().unwrap();
        for index in first..=last {
            // A gap exists only where an append followed a purge point with a larger index:
            // purged indexes read as compacted, the ones the caller skipped as absent.
            if !model.records.contains_key(&index) {
                let result = log.read(LogIndex(index));
                if model.purged.is_some_and(|(p, _)| index <= p) {
                    assert!(matches!(result, Err(StoreError::Compacted { .. })), "gap index {index}: {result:?}");
                } else {
                    assert_eq!(result.unwrap(), None, "skipped index {index}");
                }
            }
        }
        // A range read from the first record returns a dense prefix of the model.
        let range = log.read_range(LogIndex(first), LogIndex(last + 1), 5000).unwrap();
        assert!(!range.is_empty());
        for (k, record) in range.iter().enumerate() {
            assert_eq!(Some(record), model.records.get(&(first + k as u64)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // Goal: after every random operation (append, truncate, purge, retention, reopen, reset) the
    // log's state and reads agree with a simple model; purged <= last; retention never deletes an
    // unpurged record.
    #[test]
    fn commitlog_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let sim = SimFs::new();
        let mut log = open(&sim);
        let mut model = Model::default();
        for op in &ops {
            apply(&mut log, &sim, &mut model, op);
            check(&log, &model);
        }
    }
}
