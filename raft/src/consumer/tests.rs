//! The consumer-group rules, applied to in-memory queues.
use super::*;

/// One topic "t" whose queues hold messages with the given tag hashes.
struct Queues(Vec<Vec<u64>>);

impl QueueView for Queues {
    fn range(&self, _topic: &str, queue_id: u32) -> (u64, u64) {
        (0, self.0[queue_id as usize].len() as u64)
    }
    fn tag_hashes(&self, _topic: &str, queue_id: u32, from: u64, max: usize) -> std::io::Result<Vec<(u64, u64)>> {
        let queue = &self.0[queue_id as usize];
        Ok(queue.iter().enumerate().skip(from as usize).take(max).map(|(o, h)| (o as u64, *h)).collect())
    }
}

struct Fixture {
    state: ConsumerState,
    queues: Queues,
    index: u64,
}

impl Fixture {
    fn new(queues: Vec<Vec<u64>>) -> Fixture {
        Fixture { state: ConsumerState::default(), queues: Queues(queues), index: 0 }
    }

    fn apply(&mut self, command: ConsumerCommand) -> ConsumerResponse {
        self.index += 1;
        let count = self.queues.0.len() as u32;
        self.state.apply(&mut ConsumerChanges::default(), self.index, command, |t| (t == "t").then_some(count), &self.queues).unwrap()
    }

    fn pop(&mut self, max: u32, now_ms: i64, tags: Option<Vec<u64>>) -> Vec<Delivery> {
        let queue_ids = (0..self.queues.0.len() as u32).collect();
        let pop = PopCommand {
            group: "g".into(),
            topic: "t".into(),
            queue_ids,
            max,
            invisible_ms: 1000,
            now_ms,
            tag_hashes: tags,
            create_group: true,
        };
        match self.apply(ConsumerCommand::Pop(pop)) {
            ConsumerResponse::Popped(d) => d,
            other => panic!("pop answered {other:?}"),
        }
    }

    fn ack(&mut self, deliveries: &[Delivery]) -> Vec<Result<(), HandleRefusal>> {
        let deliveries = deliveries.iter().map(|d| DeliveryRef { queue_id: d.queue_id, offset: d.offset, nonce: d.nonce }).collect();
        match self.apply(ConsumerCommand::Ack { group: "g".into(), topic: "t".into(), deliveries }) {
            ConsumerResponse::Acked(outcomes) => outcomes,
            other => panic!("ack answered {other:?}"),
        }
    }
}

fn offsets(deliveries: &[Delivery]) -> Vec<(u32, u64, u32)> {
    deliveries.iter().map(|d| (d.queue_id, d.offset, d.attempt)).collect()
}

// Goal: each message is handed out once; an acked message never again; an unacked one again
// after its invisible time, with the attempt counted up and a new handle.
#[test]
fn acked_messages_stay_acked_and_unacked_ones_come_back() {
    let mut f = Fixture::new(vec![vec![0; 3], vec![0; 2]]);
    let first = f.pop(10, 0, None);
    assert_eq!(offsets(&first), vec![(0, 0, 1), (0, 1, 1), (0, 2, 1), (1, 0, 1), (1, 1, 1)]);
    assert!(f.pop(10, 999, None).is_empty(), "nothing is visible before the invisible time passes");
    assert_eq!(f.ack(&first[..2]), vec![Ok(()), Ok(())]);
    let again = f.pop(10, 1000, None);
    assert_eq!(offsets(&again), vec![(0, 2, 2), (1, 0, 2), (1, 1, 2)]);
    // The first handles of redelivered messages are stale now; the acked ones stay acked.
    assert_eq!(f.ack(&first[2..3]), vec![Err(HandleRefusal::Superseded)]);
    assert_eq!(f.ack(&first[..1]), vec![Ok(())], "a retried ack of an acked message holds");
    assert_eq!(f.ack(&again), vec![Ok(()), Ok(()), Ok(())]);
    assert!(f.pop(10, 1_000_000, None).is_empty());
    let cursor = &f.state.cursors[&("g".to_string(), "t".to_string(), 0)];
    assert_eq!(cursor.acked_below(), 3);
}

// Goal: a tag filter hands out exactly the matching messages and skips the rest for the group.
#[test]
fn filter_skips_non_matching_messages() {
    let mut f = Fixture::new(vec![vec![1, 2, 1, 3, 1]]);
    let got = f.pop(10, 0, Some(vec![1, 3]));
    assert_eq!(offsets(&got), vec![(0, 0, 1), (0, 2, 1), (0, 3, 1), (0, 4, 1)]);
    f.ack(&got);
    assert!(f.pop(10, 10_000, None).is_empty(), "skipped messages are not handed out later");
}

// Goal: a handle never delivered, or superseded by ChangeInvisible, is refused and changes nothing.
#[test]
fn change_invisible_makes_a_new_handle_and_stales_the_old() {
    let mut f = Fixture::new(vec![vec![0; 1]]);
    let d = f.pop(1, 0, None)[0];
    let r = DeliveryRef { queue_id: 0, offset: 0, nonce: d.nonce };
    let changed = match f.apply(ConsumerCommand::ChangeInvisible { group: "g".into(), topic: "t".into(), delivery: r, invisible_ms: 5000, now_ms: 500 }) {
        ConsumerResponse::InvisibleChanged(Ok(new)) => new,
        other => panic!("{other:?}"),
    };
    assert_eq!(changed.visible_at_ms, 5500);
    assert!(f.pop(1, 1000, None).is_empty(), "the extension holds past the first invisible time");
    assert_eq!(f.ack(&[d]), vec![Err(HandleRefusal::Superseded)]);
    let before = f.state.clone();
    let never = Delivery { offset: 7, ..d };
    assert_eq!(f.ack(&[never]), vec![Err(HandleRefusal::NeverDelivered)]);
    assert_eq!(f.state, before, "a refused ack changes nothing");
    assert_eq!(f.ack(&[changed]), vec![Ok(())]);
}

// Goal: after max attempts a delivery is marked exhausted (the leader dead-letters it).
#[test]
fn exhausted_after_max_attempts() {
    let mut f = Fixture::new(vec![vec![0; 1]]);
    f.apply(ConsumerCommand::PutGroup(GroupConfig { max_delivery_attempts: 2, ..GroupConfig::new("g") }));
    let attempts: Vec<(u32, bool)> = (0..3).map(|i| f.pop(1, i * 1000, None)).map(|d| (d[0].attempt, d[0].exhausted)).collect();
    assert_eq!(attempts, vec![(1, false), (2, false), (3, true)]);
}

// Goal: a FIFO group gets a queue's next messages only after the in-flight ones are acked,
// and redeliveries come back in queue order.
#[test]
fn fifo_group_waits_for_acks_in_order() {
    let mut f = Fixture::new(vec![vec![0; 4]]);
    f.apply(ConsumerCommand::PutGroup(GroupConfig { fifo: true, ..GroupConfig::new("g") }));
    let first = f.pop(2, 0, None);
    assert_eq!(offsets(&first), vec![(0, 0, 1), (0, 1, 1)]);
    assert!(f.pop(2, 10, None).is_empty());
    f.ack(&first[..1]);
    assert!(f.pop(2, 10, None).is_empty(), "offset 1 is still in flight");
    assert_eq!(offsets(&f.pop(2, 1000, None)), vec![(0, 1, 2)]);
}

// Goal: the long poll's readiness agrees with what a pop would hand out.
#[test]
fn poll_reports_ready_and_wake_time() {
    let mut f = Fixture::new(vec![vec![0; 1]]);
    assert_eq!(f.state.poll("g", "t", &[0], 0, &f.queues), PollState::Ready);
    f.pop(1, 0, None);
    assert_eq!(f.state.poll("g", "t", &[0], 10, &f.queues), PollState::Wait { wake_at_ms: Some(1000) });
    assert_eq!(f.state.poll("g", "t", &[0], 1000, &f.queues), PollState::Ready);
}

// Goal: acks and pops on an unknown group are refused without creating it (pops may create it).
#[test]
fn unknown_group_is_refused() {
    let mut f = Fixture::new(vec![vec![0; 1]]);
    let r = f.apply(ConsumerCommand::Ack { group: "nope".into(), topic: "t".into(), deliveries: vec![] });
    assert_eq!(r, ConsumerResponse::GroupNotFound);
    assert!(f.state.groups.is_empty());
}
