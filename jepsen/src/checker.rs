//! Checkers over a history and the state read back after the final heal.
//!
//! - lost: acknowledged but not in the log read back after the heal, or (when the history has a
//!   consumer group) in the log but never delivered to the group; split by when the send ran:
//!   before the first fault, within a fault window, or after (between windows or after the heal);
//! - unexpected: read or delivered but never sent;
//! - duplicates: one value at more than one (queue, offset) (redelivery of one message is not a
//!   duplicate: the group's consumption is at least once, so redeliveries are only counted);
//! - offsets: one value per (queue, offset) across deliveries and every node; a value read at the
//!   offset it was acknowledged with; dense offsets per queue;
//! - order: in each queue, a send acknowledged before another was invoked has the lower offset;
//! - divergence: each node's own messages and commitlog digests agree with the others;
//! - ack safety: a value whose ack returned OK is never delivered again by a receive invoked after
//!   that OK (a receive that was already running may race the ack and still get it);
//! - unavailability: the longest time without an acknowledged send.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Delivery, F, FinalState, Op, Read, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Before,
    Within,
    After,
}

/// How an acknowledged send was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Not in the log read back after the final heal.
    NotInLog,
    /// In the log, but no receive of the group ever handed it out.
    NeverDelivered,
}

/// The consumer group's figures (information, except what feeds lost and ack safety).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Consumption {
    pub receives: usize,
    /// Messages handed out, counting every redelivery.
    pub deliveries: usize,
    /// Distinct values handed out.
    pub delivered: usize,
    /// Deliveries of a value beyond its first (allowed: at least once).
    pub redeliveries: usize,
    /// Of those, deliveries by a receive invoked before an OK ack of the value completed.
    pub raced_acks: usize,
    pub acks: usize,
    pub acks_ok: usize,
    pub acks_failed: usize,
    pub acks_indeterminate: usize,
    /// Distinct values with an OK ack.
    pub acked: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub start: u64,
    pub end: u64,
    pub what: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Analysis {
    pub valid: bool,
    /// Sends invoked.
    pub operations: usize,
    pub acknowledged: usize,
    pub failed: usize,
    pub indeterminate: usize,
    /// Indeterminate sends that were read (they happened).
    pub indeterminate_read: usize,
    /// Distinct values read back.
    pub read: usize,
    pub lost: Vec<(String, Phase, Loss)>,
    pub lost_before: usize,
    pub lost_within: usize,
    pub lost_after: usize,
    /// Of the lost: in the log but never delivered to the consumer group.
    pub lost_undelivered: usize,
    /// None: the history has no consumer group (no receives).
    pub consumption: Option<Consumption>,
    pub unexpected: Vec<String>,
    pub duplicates: Vec<String>,
    pub offset_errors: Vec<String>,
    pub order_errors: Vec<String>,
    pub divergence: Vec<String>,
    /// None: the history holds no acks (not applicable).
    pub ack_safety: Option<Vec<String>>,
    pub faults: Vec<Window>,
    /// Longest time in microseconds without an acknowledged send, and when it started.
    pub longest_unavailable_us: u64,
    pub longest_unavailable_at: u64,
    /// Every stretch of at least one second without an acknowledged send: (start, end).
    pub unavailable_windows: Vec<(u64, u64)>,
}

/// Fault windows from the nemesis ops (invoke = start, the next ok = heal). A fault never healed
/// lasts until the end of the history.
pub fn fault_windows(history: &[Op]) -> Vec<Window> {
    let end = history.iter().map(|o| o.time).max().unwrap_or(0);
    let mut windows = Vec::new();
    let mut open: Option<(u64, String)> = None;
    for op in history.iter().filter(|o| o.f == F::Nemesis) {
        match op.typ {
            Type::Invoke => {
                if let Some((start, what)) = open.take() {
                    windows.push(Window { start, end: op.time, what });
                }
                open = Some((op.time, op.value.clone().unwrap_or_default()));
            }
            _ => {
                if let Some((start, what)) = open.take() {
                    windows.push(Window { start, end: op.time, what });
                }
            }
        }
    }
    if let Some((start, what)) = open {
        windows.push(Window { start, end, what });
    }
    windows
}

struct Send {
    invoke: u64,
    complete: Option<(Type, u64, Option<u64>)>,
}

pub fn check(history: &[Op], fin: &FinalState) -> Analysis {
    let mut a = Analysis { faults: fault_windows(history), ..Default::default() };

    // Sends: pair each invoke with its completion (same process, same value).
    let mut sends: HashMap<&str, Send> = HashMap::new();
    for op in history.iter().filter(|o| o.f == F::Send) {
        let Some(v) = op.value.as_deref() else { continue };
        match op.typ {
            Type::Invoke => {
                sends.insert(v, Send { invoke: op.time, complete: None });
            }
            t => {
                if let Some(s) = sends.get_mut(v) {
                    s.complete = Some((t, op.time, op.offset));
                }
            }
        }
    }
    a.operations = sends.len();
    for s in sends.values() {
        match s.complete.map(|c| c.0) {
            Some(Type::Ok) => a.acknowledged += 1,
            Some(Type::Fail) => a.failed += 1,
            _ => a.indeterminate += 1,
        }
    }

    // Every observation of (queue, offset, value): deliveries, final reads, each node's own data.
    let mut observations: Vec<(&Read, String)> = Vec::new();
    let receipts = receipts(history);
    let live: Vec<(Read, String)> = receipts
        .iter()
        .map(|r| (Read { queue: r.delivery.queue, offset: r.delivery.offset, value: r.delivery.value.clone() }, format!("consumer {}", r.process)))
        .collect();
    for (r, who) in &live {
        observations.push((r, who.clone()));
    }
    for (who, reads) in &fin.reads {
        for r in reads {
            observations.push((r, format!("final read via {who}")));
        }
    }
    for n in &fin.nodes {
        for r in &n.local {
            observations.push((r, format!("node {} local", n.node)));
        }
    }

    let mut by_slot: BTreeMap<(u32, u64), BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    let mut by_value: BTreeMap<&str, BTreeSet<(u32, u64)>> = BTreeMap::new();
    for (r, who) in &observations {
        by_slot.entry((r.queue, r.offset)).or_default().entry(r.value.as_str()).or_default().push(who.as_str());
        by_value.entry(r.value.as_str()).or_default().insert((r.queue, r.offset));
    }
    a.read = by_value.len();
    for ((q, o), values) in &by_slot {
        if values.len() > 1 {
            let detail: Vec<String> = values.iter().map(|(v, who)| format!("{v:?} (seen by {})", who.first().unwrap_or(&"?"))).collect();
            a.offset_errors.push(format!("queue {q} offset {o} holds {} values: {}", values.len(), detail.join(", ")));
        }
    }
    for (v, slots) in &by_value {
        if slots.len() > 1 {
            a.duplicates.push(format!("{v:?} is at {} places: {:?}", slots.len(), slots));
        }
        if !sends.contains_key(v) {
            a.unexpected.push((*v).to_string());
        }
    }
    // Dense offsets per queue, from each queue's lowest offset seen.
    let mut per_queue: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (q, o) in by_slot.keys() {
        per_queue.entry(*q).or_default().push(*o);
    }
    for (q, offsets) in &per_queue {
        let first = offsets[0];
        let missing: Vec<u64> = offsets.windows(2).flat_map(|w| (w[0] + 1)..w[1]).take(5).collect();
        if !missing.is_empty() {
            a.offset_errors.push(format!("queue {q} (from offset {first}) has holes, first missing offsets {missing:?}"));
        }
    }

    // Lost and acknowledged-offset mismatches. "Read back" means by the final reads or a node.
    let final_values: HashSet<&str> = fin.reads.iter().flat_map(|(_, r)| r.iter().map(|r| r.value.as_str())).collect();
    let has_group = history.iter().any(|o| o.f == F::Receive);
    let delivered: HashSet<&str> = receipts.iter().map(|r| r.delivery.value.as_str()).collect();
    let mut lost: Vec<(u64, String, Phase, Loss)> = Vec::new();
    for (v, s) in &sends {
        let Some((t, done, offset)) = s.complete else { continue };
        match t {
            Type::Ok => {
                let loss = if !final_values.contains(v) {
                    Some(Loss::NotInLog)
                } else if has_group && !delivered.contains(v) {
                    Some(Loss::NeverDelivered)
                } else {
                    None
                };
                if let Some(loss) = loss {
                    lost.push((s.invoke, v.to_string(), phase_of(&a.faults, s.invoke, done), loss));
                }
                if let (Some(offset), Some(slots)) = (offset, by_value.get(v)) {
                    if !slots.iter().any(|(_, o)| *o == offset) {
                        a.offset_errors.push(format!("{v:?} was acknowledged at offset {offset} but read at {slots:?}"));
                    }
                }
            }
            Type::Info => {
                if by_value.contains_key(v) {
                    a.indeterminate_read += 1;
                }
            }
            _ => {}
        }
    }
    lost.sort();
    for (_, v, p, loss) in lost {
        match p {
            Phase::Before => a.lost_before += 1,
            Phase::Within => a.lost_within += 1,
            Phase::After => a.lost_after += 1,
        }
        a.lost_undelivered += (loss == Loss::NeverDelivered) as usize;
        a.lost.push((v, p, loss));
    }
    // A failed send that was read is also unexpected: the client was told it was not written.
    for (v, s) in &sends {
        if matches!(s.complete, Some((Type::Fail, _, _))) && by_value.contains_key(v) {
            a.unexpected.push(format!("{v} (its send failed definitely, yet it was read)"));
        }
    }
    a.unexpected.sort();

    // Real-time order per queue: if A was acknowledged before B was invoked, offset(A) < offset(B).
    let mut in_queue: BTreeMap<u32, Vec<(u64, u64, u64, &str)>> = BTreeMap::new(); // (offset, invoke, ok, value)
    for (v, s) in &sends {
        if let (Some((Type::Ok, done, _)), Some(slots)) = (s.complete, by_value.get(v)) {
            if let Some((q, o)) = slots.iter().next() {
                in_queue.entry(*q).or_default().push((*o, s.invoke, done, v));
            }
        }
    }
    for (q, mut entries) in in_queue {
        entries.sort();
        // Walk from the highest offset down, keeping the earliest acknowledgement seen above.
        let mut earliest_above: Option<(u64, u64, &str)> = None; // (ok time, offset, value)
        for &(o, invoke, done, v) in entries.iter().rev() {
            if let Some((ok_time, above, other)) = earliest_above {
                if ok_time < invoke && a.order_errors.len() < 20 {
                    a.order_errors.push(format!(
                        "queue {q}: {other:?} was acknowledged (t={ok_time}us) before {v:?} was sent (t={invoke}us) but is at offset {above} > {o}"
                    ));
                }
            }
            if earliest_above.is_none_or(|(t, _, _)| done < t) {
                earliest_above = Some((done, o, v));
            }
        }
    }

    a.divergence = divergence(fin);

    if has_group {
        let (consumption, violations) = ack_safety(history, &receipts);
        a.consumption = Some(consumption);
        a.ack_safety = Some(violations);
    }

    // Unavailability: gaps between acknowledgements, from the first invoke to the last send event.
    let mut oks: Vec<u64> = sends.values().filter_map(|s| match s.complete {
        Some((Type::Ok, t, _)) => Some(t),
        _ => None,
    }).collect();
    oks.sort_unstable();
    let start = sends.values().map(|s| s.invoke).min();
    let end = history.iter().filter(|o| o.f == F::Send).map(|o| o.time).max();
    if let (Some(start), Some(end)) = (start, end) {
        let mut points = vec![start];
        points.extend(oks);
        points.push(end);
        for w in points.windows(2) {
            let gap = w[1].saturating_sub(w[0]);
            if gap > a.longest_unavailable_us {
                a.longest_unavailable_us = gap;
                a.longest_unavailable_at = w[0];
            }
            if gap >= 1_000_000 {
                a.unavailable_windows.push((w[0], w[1]));
            }
        }
    }

    a.valid = a.lost.is_empty()
        && a.unexpected.is_empty()
        && a.duplicates.is_empty()
        && a.offset_errors.is_empty()
        && a.order_errors.is_empty()
        && a.divergence.is_empty()
        && a.ack_safety.as_ref().is_none_or(|e| e.is_empty());
    a
}

/// One delivery with the receive that brought it: who, when it was invoked and completed, via
/// which node.
struct Receipt<'a> {
    process: u32,
    invoked: u64,
    completed: u64,
    node: &'a str,
    delivery: &'a Delivery,
}

/// Every delivery, paired with its receive's invoke (a process runs one operation at a time, so a
/// completion belongs to the process's latest invoke). Deliveries of an indeterminate or failed
/// receive count too: they were handed out.
fn receipts(history: &[Op]) -> Vec<Receipt<'_>> {
    let mut invoked: HashMap<u32, u64> = HashMap::new();
    let mut out = Vec::new();
    for op in history.iter().filter(|o| o.f == F::Receive) {
        if op.typ == Type::Invoke {
            invoked.insert(op.process, op.time);
            continue;
        }
        let start = invoked.remove(&op.process).unwrap_or(0);
        for d in op.deliveries.iter().flatten() {
            out.push(Receipt { process: op.process, invoked: start, completed: op.time, node: op.node.as_deref().unwrap_or("?"), delivery: d });
        }
    }
    out
}

/// The group's figures, and every delivery by a receive invoked after an OK ack of its value.
fn ack_safety(history: &[Op], receipts: &[Receipt]) -> (Consumption, Vec<String>) {
    let mut c = Consumption { receives: history.iter().filter(|o| o.f == F::Receive && o.typ == Type::Invoke).count(), ..Default::default() };
    // The earliest OK ack of each value.
    let mut acked: HashMap<&str, &Op> = HashMap::new();
    for op in history.iter().filter(|o| o.f == F::Ack) {
        match op.typ {
            Type::Invoke => c.acks += 1,
            Type::Ok => {
                c.acks_ok += 1;
                if let Some(v) = op.value.as_deref() {
                    let first = acked.entry(v).or_insert(op);
                    if op.time < first.time {
                        *first = op;
                    }
                }
            }
            Type::Fail => c.acks_failed += 1,
            Type::Info => c.acks_indeterminate += 1,
        }
    }
    c.acked = acked.len();
    c.deliveries = receipts.len();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut violations = Vec::new();
    for r in receipts {
        let v = r.delivery.value.as_str();
        if !seen.insert(v) {
            c.redeliveries += 1;
        }
        let Some(ack) = acked.get(v) else { continue };
        if r.invoked > ack.time {
            violations.push(format!(
                "{v:?} (queue {} offset {}) was acked OK at t={}us by consumer {} via {} (attempt {}), then delivered again (attempt {}) to consumer {} via {} by a receive invoked at t={}us, completed at t={}us",
                r.delivery.queue,
                r.delivery.offset,
                ack.time,
                ack.process,
                ack.node.as_deref().unwrap_or("?"),
                ack.attempt.map_or("?".into(), |a| a.to_string()),
                r.delivery.attempt,
                r.process,
                r.node,
                r.invoked,
                r.completed
            ));
        } else if r.completed > ack.time {
            c.raced_acks += 1;
        }
    }
    c.delivered = seen.len();
    (c, violations)
}

fn phase_of(faults: &[Window], invoke: u64, done: u64) -> Phase {
    if faults.iter().any(|w| invoke <= w.end && done >= w.start) {
        Phase::Within
    } else if faults.first().is_none_or(|w| done < w.start) {
        Phase::Before
    } else {
        Phase::After
    }
}

/// Nodes must agree after healing: the same messages at the same places as the final reads (the
/// leader's view), and the same commitlog records where their retained logs overlap, ending at the
/// same index.
pub fn divergence(fin: &FinalState) -> Vec<String> {
    let mut out = Vec::new();
    let reference: BTreeMap<(u32, u64), &str> = fin
        .reads
        .iter()
        .flat_map(|(_, r)| r.iter().map(|r| ((r.queue, r.offset), r.value.as_str())))
        .collect();
    for n in &fin.nodes {
        if let Some(e) = &n.error {
            out.push(format!("node {} could not be read after healing: {e}", n.node));
            continue;
        }
        let local: BTreeMap<(u32, u64), &str> = n.local.iter().map(|r| ((r.queue, r.offset), r.value.as_str())).collect();
        let missing: Vec<_> = reference.iter().filter(|(k, _)| !local.contains_key(k)).take(3).collect();
        let missing_count = reference.keys().filter(|k| !local.contains_key(k)).count();
        if missing_count > 0 {
            out.push(format!("node {} lacks {missing_count} messages the others have, e.g. {missing:?}", n.node));
        }
        let extra_count = local.keys().filter(|k| !reference.contains_key(k)).count();
        let differ: Vec<_> = local.iter().filter(|(k, v)| reference.get(k).is_some_and(|r| r != *v)).take(3).collect();
        if extra_count > 0 && !reference.is_empty() {
            out.push(format!("node {} has {extra_count} messages the others lack", n.node));
        }
        if !differ.is_empty() {
            out.push(format!("node {} holds different messages at {:?}", n.node, differ));
        }
    }
    // Commitlogs: equal records at common indexes, equal last index.
    let logs: Vec<(&str, BTreeMap<u64, &crate::history::Digest>)> =
        fin.nodes.iter().filter(|n| n.error.is_none()).map(|n| (n.node.as_str(), n.digests.iter().map(|d| (d.index, d)).collect())).collect();
    for i in 0..logs.len() {
        for j in (i + 1)..logs.len() {
            let (na, la) = &logs[i];
            let (nb, lb) = &logs[j];
            if let Some((index, da)) = la.iter().find(|(k, da)| lb.get(k).is_some_and(|db| db != *da)) {
                out.push(format!("commitlogs of {na} and {nb} differ at index {index}: {:?} vs {:?}", da, lb[index]));
            }
            let (ea, eb) = (la.keys().next_back(), lb.keys().next_back());
            if ea != eb {
                out.push(format!("commitlog of {na} ends at {ea:?}, of {nb} at {eb:?}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Digest, NodeState, Op};

    fn send(p: u32, v: &str, invoke: u64, done: u64, t: Type, offset: u64) -> Vec<Op> {
        vec![Op::new(p, Type::Invoke, F::Send, invoke).value(v), Op::new(p, t, F::Send, done).value(v).offset(offset)]
    }
    fn r(q: u32, o: u64, v: &str) -> Read {
        Read { queue: q, offset: o, value: v.into() }
    }
    fn digests(n: u64) -> Vec<Digest> {
        (1..=n).map(|i| Digest { index: i, term: 1, kind: 1, crc: i as u32 * 7, len: 10 }).collect()
    }
    /// Three nodes that all hold `reads` and the same log.
    fn fin(reads: Vec<Read>) -> FinalState {
        FinalState {
            reads: vec![("n1".into(), reads.clone())],
            nodes: (1..=3).map(|i| NodeState { node: format!("n{i}"), local: reads.clone(), digests: digests(5), error: None }).collect(),
        }
    }
    /// a (q0 @0), b (q1 @0), c (q0 @1): sequential sends by one process.
    fn good() -> (Vec<Op>, Vec<Read>) {
        let mut h = Vec::new();
        h.extend(send(0, "a", 10, 20, Type::Ok, 0));
        h.extend(send(0, "b", 30, 40, Type::Ok, 0));
        h.push(Op::new(crate::history::NEMESIS, Type::Invoke, F::Nemesis, 45).value("kill n1"));
        h.extend(send(0, "c", 50, 60, Type::Ok, 1));
        h.extend(send(1, "d", 55, 3_000_000, Type::Info, 0));
        h.push(Op::new(crate::history::NEMESIS, Type::Ok, F::Nemesis, 3_000_100).value("kill n1"));
        h.extend(send(0, "e", 3_000_200, 3_000_300, Type::Fail, 0));
        (h, vec![r(0, 0, "a"), r(1, 0, "b"), r(0, 1, "c")])
    }

    #[test]
    fn a_good_history_is_valid() {
        let (h, reads) = good();
        let a = check(&h, &fin(reads));
        assert!(a.valid, "{a:#?}");
        assert_eq!((a.operations, a.acknowledged, a.failed, a.indeterminate), (5, 3, 1, 1));
        assert!(a.ack_safety.is_none(), "no acks: not applicable");
        assert_eq!(a.faults.len(), 1);
        assert!(a.longest_unavailable_us >= 2_900_000, "{}", a.longest_unavailable_us);
        assert_eq!(a.unavailable_windows.len(), 1);
    }

    #[test]
    fn an_indeterminate_send_may_or_may_not_be_read() {
        let (h, mut reads) = good();
        reads.push(r(1, 1, "d"));
        let a = check(&h, &fin(reads));
        assert!(a.valid, "{a:#?}");
        assert_eq!(a.indeterminate_read, 1);
    }

    #[test]
    fn a_lost_write_is_reported_with_its_phase() {
        let (h, _) = good();
        // c was acknowledged during the fault and is gone; a was acknowledged before it.
        let reads = vec![r(1, 0, "b")];
        let mut f = fin(reads);
        f.nodes.iter_mut().for_each(|n| n.local = vec![r(1, 0, "b")]);
        let a = check(&h, &f);
        assert!(!a.valid);
        assert_eq!(a.lost.len(), 2, "{:?}", a.lost);
        assert_eq!((a.lost_before, a.lost_within, a.lost_after), (1, 1, 0));
        assert!(a.lost.contains(&("c".into(), Phase::Within, Loss::NotInLog)));
    }

    #[test]
    fn a_duplicate_is_reported() {
        let (h, mut reads) = good();
        reads.push(r(1, 1, "a"));
        let a = check(&h, &fin(reads));
        assert!(!a.valid);
        assert_eq!(a.duplicates.len(), 1, "{a:#?}");
        assert!(a.duplicates[0].contains("\"a\""));
    }

    #[test]
    fn an_unexpected_value_and_a_read_failed_send_are_reported() {
        let (h, mut reads) = good();
        reads.push(r(1, 1, "never-sent"));
        reads.push(r(1, 2, "e"));
        let a = check(&h, &fin(reads));
        assert!(!a.valid);
        assert_eq!(a.unexpected.len(), 2, "{:?}", a.unexpected);
    }

    #[test]
    fn a_reordering_is_reported() {
        // a was acknowledged before c was sent, both in queue 0, yet c is at the lower offset.
        let mut h = Vec::new();
        h.extend(send(0, "a", 10, 20, Type::Ok, 1));
        h.extend(send(0, "c", 50, 60, Type::Ok, 0));
        let reads = vec![r(0, 1, "a"), r(0, 0, "c")];
        let a = check(&h, &fin(reads));
        assert!(!a.valid);
        assert_eq!(a.order_errors.len(), 1, "{a:#?}");
        // Concurrent sends may land in either order.
        let mut h = Vec::new();
        h.extend(send(0, "a", 10, 60, Type::Ok, 1));
        h.extend(send(1, "c", 20, 50, Type::Ok, 0));
        let a = check(&h, &fin(vec![r(0, 1, "a"), r(0, 0, "c")]));
        assert!(a.valid, "{a:#?}");
    }

    #[test]
    fn two_values_at_one_offset_and_holes_and_wrong_ack_offsets_are_reported() {
        let (h, reads) = good();
        // A live reader saw another value at queue 0 offset 1 (where the final read has c).
        let mut h2 = h.clone();
        // A consumer was handed another value at queue 0 offset 1 (where the final read has c).
        h2.extend(receive(1000, 90, 100, &[("a", 0, 0, 1), ("b", 1, 0, 1), ("b", 0, 1, 1), ("c", 0, 1, 1)]));
        let a = check(&h2, &fin(reads.clone()));
        assert!(!a.valid);
        assert!(a.offset_errors.iter().any(|e| e.contains("queue 0 offset 1 holds 2 values")), "{:?}", a.offset_errors);

        // c read at offset 2 of queue 0 (a hole at 1, and not where it was acknowledged).
        let reads = vec![r(0, 0, "a"), r(1, 0, "b"), r(0, 2, "c")];
        let a = check(&h, &fin(reads));
        assert!(!a.valid);
        assert!(a.offset_errors.iter().any(|e| e.contains("holes")), "{:?}", a.offset_errors);
        assert!(a.offset_errors.iter().any(|e| e.contains("acknowledged at offset 1")), "{:?}", a.offset_errors);
    }

    #[test]
    fn a_divergent_node_is_reported() {
        let (h, reads) = good();
        // Node 3 misses c and holds x at queue 0 offset 1 instead.
        let mut f = fin(reads.clone());
        f.nodes[2].local = vec![r(0, 0, "a"), r(1, 0, "b")];
        let a = check(&h, &f);
        assert!(!a.valid);
        assert!(a.divergence.iter().any(|d| d.contains("node n3 lacks 1")), "{:?}", a.divergence);

        // Same messages, but node 2's commitlog differs at index 4 and node 1's is shorter.
        let mut f = fin(reads);
        f.nodes[1].digests[3].crc ^= 1;
        f.nodes[0].digests.pop();
        let a = check(&h, &f);
        assert!(!a.valid);
        assert!(a.divergence.iter().any(|d| d.contains("n2") && d.contains("differ at index 4")), "{:?}", a.divergence);
        assert!(a.divergence.iter().any(|d| d.contains("ends at Some(4)")), "{:?}", a.divergence);

        // An unreadable node is divergent too.
        let (h, reads) = good();
        let mut f = fin(reads);
        f.nodes[0].error = Some("connection refused".into());
        assert!(!check(&h, &f).valid);
    }

    /// A receive by consumer `p` handing out (value, queue, offset, attempt).
    fn receive(p: u32, invoke: u64, done: u64, got: &[(&str, u32, u64, u32)]) -> Vec<Op> {
        let deliveries = got.iter().map(|&(v, q, o, attempt)| Delivery { value: v.into(), queue: q, offset: o, attempt }).collect();
        vec![Op::new(p, Type::Invoke, F::Receive, invoke).node("n1"), Op::new(p, Type::Ok, F::Receive, done).node("n1").delivered(deliveries)]
    }
    /// Consumer `p` acks the delivery of `v` at (queue, offset) and attempt; it completes with `t`.
    fn ack(p: u32, (v, q, o, attempt): (&str, u32, u64, u32), invoke: u64, done: u64, t: Type) -> Vec<Op> {
        let d = Delivery { value: v.into(), queue: q, offset: o, attempt };
        vec![Op::new(p, Type::Invoke, F::Ack, invoke).acking(&d), Op::new(p, t, F::Ack, done).acking(&d)]
    }
    const A1: (&str, u32, u64, u32) = ("a", 0, 0, 1);
    const A2: (&str, u32, u64, u32) = ("a", 0, 0, 2);
    /// The good history consumed: consumer 1000 gets a, b and c once and acks them.
    fn consumed() -> (Vec<Op>, Vec<Read>) {
        let (mut h, reads) = good();
        h.extend(receive(1000, 3_000_400, 3_000_500, &[A1, ("b", 1, 0, 1), ("c", 0, 1, 1)]));
        h.extend(ack(1000, A1, 3_000_600, 3_000_700, Type::Ok));
        h.extend(ack(1000, ("b", 1, 0, 1), 3_000_600, 3_000_700, Type::Ok));
        h.extend(ack(1000, ("c", 0, 1, 1), 3_000_600, 3_000_700, Type::Ok));
        (h, reads)
    }

    #[test]
    fn a_consumed_history_is_valid_and_counted() {
        let (h, reads) = consumed();
        let a = check(&h, &fin(reads));
        assert!(a.valid, "{a:#?}");
        assert_eq!(a.ack_safety.as_ref().map(Vec::len), Some(0));
        let c = a.consumption.unwrap();
        assert_eq!((c.receives, c.deliveries, c.delivered, c.redeliveries, c.acks_ok, c.acked), (1, 3, 3, 0, 3, 3));
    }

    #[test]
    fn a_delivery_after_an_ok_ack_is_an_ack_safety_violation() {
        let (mut h, reads) = consumed();
        // a's ack returned OK at 3_000_700; another consumer's receive, invoked later, gets it again.
        h.extend(receive(1001, 3_000_800, 3_000_900, &[A2]));
        let a = check(&h, &fin(reads));
        assert!(!a.valid);
        let v = a.ack_safety.unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("\"a\"") && v[0].contains("t=3000700us") && v[0].contains("consumer 1001"), "{v:?}");
    }

    #[test]
    fn redeliveries_of_unacked_or_racing_messages_are_allowed() {
        let (mut h, reads) = good();
        // a is handed to 1000 and not acked (a crash); after its invisible time 1001 gets it again
        // and acks it. 1000's late ack of the first delivery is refused (superseded handle).
        h.extend(receive(1000, 3_000_400, 3_000_500, &[A1, ("b", 1, 0, 1), ("c", 0, 1, 1)]));
        h.extend(ack(1000, ("b", 1, 0, 1), 3_000_600, 3_000_700, Type::Ok));
        h.extend(ack(1000, ("c", 0, 1, 1), 3_000_600, 3_000_700, Type::Ok));
        h.extend(receive(1001, 13_000_000, 13_000_100, &[A2]));
        h.extend(ack(1000, A1, 13_000_050, 13_000_150, Type::Fail));
        // A third delivery by a receive already running when 1001's ack returned OK: a race.
        h.extend(receive(1002, 13_000_120, 13_000_300, &[("a", 0, 0, 3)]));
        h.extend(ack(1001, A2, 13_000_150, 13_000_200, Type::Ok));
        h.extend(ack(1002, ("a", 0, 0, 3), 13_000_400, 13_000_500, Type::Fail));
        let a = check(&h, &fin(reads));
        assert!(a.valid, "{a:#?}");
        let c = a.consumption.unwrap();
        assert_eq!((c.deliveries, c.delivered, c.redeliveries, c.raced_acks), (5, 3, 2, 1));
        assert_eq!((c.acks_ok, c.acks_failed, c.acked), (3, 2, 3));
    }

    #[test]
    fn an_acknowledged_send_never_delivered_to_the_group_is_lost() {
        let (mut h, reads) = good();
        // c is in every node's log, but the group only ever got a and b.
        h.extend(receive(1000, 3_000_400, 3_000_500, &[A1, ("b", 1, 0, 1)]));
        h.extend(ack(1000, A1, 3_000_600, 3_000_700, Type::Ok));
        let a = check(&h, &fin(reads));
        assert!(!a.valid);
        assert_eq!(a.lost, vec![("c".to_string(), Phase::Within, Loss::NeverDelivered)]);
        assert_eq!(a.lost_undelivered, 1);
    }

    #[test]
    fn history_round_trips_through_jsonl() {
        let (h, _) = good();
        let dir = std::env::temp_dir().join(format!("raftmq-jepsen-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        crate::history::write_history(&path, &h).unwrap();
        assert_eq!(crate::history::read_history(&path).unwrap(), h);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
