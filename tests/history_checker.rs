//! The fault tests' history checks must be able to fail: feed them bad histories.
mod common;

use common::{Read, Sent, check_history, check_producer_order};

fn read(queue_id: u32, offset: u64, body: &str) -> Read {
    Read { queue_id, offset, body: body.into() }
}

fn sent(body: &str, offset: u64) -> Sent {
    Sent { body: body.into(), offset }
}

fn producer_of(body: &str) -> (String, u64) {
    let (p, s) = body.rsplit_once('-').unwrap();
    (p.into(), s.parse().unwrap())
}

// Goal: a good history passes, so the failures below are about the faults fed in.
#[test]
fn a_good_history_passes() {
    let acked = [sent("p0-0", 0), sent("p0-1", 1)];
    let reads = [read(0, 0, "p0-0"), read(0, 1, "p0-1"), read(1, 0, "p0-2")];
    check_history(&acked, &reads).unwrap();
    check_producer_order(&acked, &reads, producer_of).unwrap();
}

// Goal: an acknowledged message that is never read is reported lost.
#[test]
fn a_lost_write_is_reported() {
    let err = check_history(&[sent("p0-0", 0), sent("p0-1", 1)], &[read(0, 0, "p0-0")]).unwrap_err();
    assert!(err.contains("lost"), "{err}");
}

// Goal: a message stored twice is reported as a duplicate.
#[test]
fn a_duplicate_is_reported() {
    let err = check_history(&[sent("p0-0", 0)], &[read(0, 0, "p0-0"), read(1, 0, "p0-0")]).unwrap_err();
    assert!(err.contains("stored 2 times"), "{err}");
}

// Goal: two different messages at one (queue, offset) are reported (divergent readers).
#[test]
fn a_conflicting_slot_is_reported() {
    let err = check_history(&[], &[read(0, 0, "a-0"), read(0, 0, "b-0")]).unwrap_err();
    assert!(err.contains("holds both"), "{err}");
}

// Goal: a hole in a queue's offsets is reported.
#[test]
fn a_gap_is_reported() {
    let err = check_history(&[], &[read(0, 0, "a-0"), read(0, 2, "a-1")]).unwrap_err();
    assert!(err.contains("not dense"), "{err}");
}

// Goal: an acknowledged offset that differs from where the message is stored is reported.
#[test]
fn a_moved_message_is_reported() {
    let err = check_history(&[sent("a-0", 1)], &[read(0, 0, "a-0")]).unwrap_err();
    assert!(err.contains("acknowledged at offset"), "{err}");
}

// Goal: a producer's messages stored out of send order in one queue are reported.
#[test]
fn a_reordering_is_reported() {
    let acked = [sent("p0-0", 1), sent("p0-1", 0)];
    let reads = [read(0, 1, "p0-0"), read(0, 0, "p0-1")];
    let err = check_producer_order(&acked, &reads, producer_of).unwrap_err();
    assert!(err.contains("not after"), "{err}");
}
