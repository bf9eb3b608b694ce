//! Consumer groups as the state machine keeps them: what each group has been handed, what it
//! acked, and what it committed.
//!
//! Everything that decides what a group sees next goes through the log as a `ConsumerCommand`
//! and is applied here, deterministically, on every node: a pop (which messages a receive hands
//! out, with the leader's clock stamped into the command), acks, invisibility changes and pull
//! consumers' committed offsets. So after a failover the new leader knows exactly which messages
//! were acked (never handed out again) and which were in flight (handed out again once their
//! invisible time passes).
//!
//! Per (group, topic, queue) a cursor holds `pop_next` (every offset below it was handed out at
//! least once, or skipped by the group's tag filter) and the in-flight deliveries. An offset below
//! `pop_next` that is not in flight is acked. A delivery's `nonce` is the log index of the command
//! that made it, so every delivery (and every invisibility change) has its own receipt handle.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Redelivered at most this often before the leader moves a message to the group's dead-letter
/// queue (RocketMQ's default for consumer groups).
pub const MAX_DELIVERY_ATTEMPTS_DEFAULT: u32 = 16;
/// In-flight deliveries per (group, topic, queue); a queue at the limit hands out only redeliveries.
pub const INFLIGHT_PER_QUEUE_MAX: usize = 65_536;
/// Consume-queue entries one pop may look at per queue (filtered-out ones included), so that a
/// pop's apply work is bounded.
pub const POP_SCAN_MAX: usize = 8_192;
/// Messages one pop may hand out.
pub const POP_BATCH_MAX: u32 = 1_024;

/// The dead-letter topic of a group, as in RocketMQ.
pub fn dead_letter_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    pub name: String,
    pub max_delivery_attempts: u32,
    /// Messages of a queue are handed out one in-flight batch at a time, in queue order.
    pub fifo: bool,
}

impl GroupConfig {
    pub fn new(name: impl Into<String>) -> GroupConfig {
        GroupConfig { name: name.into(), max_delivery_attempts: MAX_DELIVERY_ATTEMPTS_DEFAULT, fifo: false }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    /// The leader's wall clock (ms) from which the message may be handed out again.
    pub visible_at_ms: i64,
    /// 1 on first delivery.
    pub attempt: u32,
    pub nonce: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCursor {
    pub pop_next: u64,
    pub inflight: BTreeMap<u64, Inflight>,
    /// Set by pull consumers (UpdateOffset).
    pub committed: Option<u64>,
}

impl QueueCursor {
    /// Every offset below this one is acked (or skipped by the filter).
    pub fn acked_below(&self) -> u64 {
        // In-flight offsets are all below pop_next.
        self.inflight.keys().next().copied().unwrap_or(self.pop_next)
    }

    /// The in-flight delivery a receipt handle names; Ok(None) if that message is acked already
    /// (below pop_next and no longer in flight); otherwise why the handle is not current.
    pub fn delivery(&self, delivery: &DeliveryRef) -> Result<Option<&Inflight>, HandleRefusal> {
        match self.inflight.get(&delivery.offset) {
            Some(inflight) if inflight.nonce == delivery.nonce => Ok(Some(inflight)),
            Some(_) => Err(HandleRefusal::Superseded),
            None if delivery.offset < self.pop_next => Ok(None),
            None => Err(HandleRefusal::NeverDelivered),
        }
    }

    /// The earliest time an in-flight message becomes visible again.
    pub fn next_visible_at(&self) -> Option<i64> {
        self.inflight.values().map(|i| i.visible_at_ms).min()
    }
}

/// (group, topic, queue id).
pub type CursorKey = (String, String, u32);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerState {
    pub groups: BTreeMap<String, GroupConfig>,
    pub cursors: BTreeMap<CursorKey, QueueCursor>,
}

/// What one apply batch changed in `ConsumerState`, so that only that is written.
#[derive(Default)]
pub struct ConsumerChanges {
    pub groups: BTreeSet<String>,
    pub cursors: BTreeSet<CursorKey>,
}

/// Which delivery a receipt handle names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRef {
    pub queue_id: u32,
    pub offset: u64,
    pub nonce: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopCommand {
    pub group: String,
    pub topic: String,
    /// Queues to take from, in this order.
    pub queue_ids: Vec<u32>,
    pub max: u32,
    pub invisible_ms: u64,
    pub now_ms: i64,
    /// Tag hashes the group's filter accepts (see `state_machine::tag_hash`); None = every message.
    pub tag_hashes: Option<Vec<u64>>,
    /// Create the group with default settings if it does not exist.
    pub create_group: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerCommand {
    /// Creates the group, or updates its settings.
    PutGroup(GroupConfig),
    DeleteGroup { name: String },
    Pop(PopCommand),
    Ack { group: String, topic: String, deliveries: Vec<DeliveryRef> },
    ChangeInvisible { group: String, topic: String, delivery: DeliveryRef, invisible_ms: u64, now_ms: i64 },
    CommitOffset { group: String, topic: String, queue_id: u32, offset: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub queue_id: u32,
    pub offset: u64,
    pub attempt: u32,
    pub nonce: u64,
    pub visible_at_ms: i64,
    /// Past the group's max delivery attempts: the leader moves it to the dead-letter queue.
    pub exhausted: bool,
}

/// Why a receipt handle is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandleRefusal {
    /// The message was handed out again (or its invisibility changed) since this handle was made.
    Superseded,
    /// No such delivery ever happened.
    NeverDelivered,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerResponse {
    Done,
    Popped(Vec<Delivery>),
    Acked(Vec<Result<(), HandleRefusal>>),
    InvisibleChanged(Result<Delivery, HandleRefusal>),
    GroupNotFound,
    TopicNotFound,
}

/// What a pop reads of the queues: the state machine's view as of the entry being applied.
pub trait QueueView {
    /// (min, next) offsets of a queue.
    fn range(&self, topic: &str, queue_id: u32) -> (u64, u64);
    /// (offset, tag hash) of up to `max` entries from `from`.
    fn tag_hashes(&self, topic: &str, queue_id: u32, from: u64, max: usize) -> std::io::Result<Vec<(u64, u64)>>;
}

impl ConsumerState {
    /// Applies one command at log index `index`. `queue_count` is the topic's queue count, if the
    /// topic exists.
    pub fn apply(
        &mut self,
        changes: &mut ConsumerChanges,
        index: u64,
        command: ConsumerCommand,
        queue_count: impl Fn(&str) -> Option<u32>,
        queues: &dyn QueueView,
    ) -> std::io::Result<ConsumerResponse> {
        Ok(match command {
            ConsumerCommand::PutGroup(config) => {
                changes.groups.insert(config.name.clone());
                self.groups.insert(config.name.clone(), config);
                ConsumerResponse::Done
            }
            ConsumerCommand::DeleteGroup { name } => {
                if self.groups.remove(&name).is_none() {
                    return Ok(ConsumerResponse::GroupNotFound);
                }
                changes.groups.insert(name.clone());
                let doomed: Vec<CursorKey> = self.cursors.keys().filter(|(g, _, _)| *g == name).cloned().collect();
                for key in doomed {
                    self.cursors.remove(&key);
                    changes.cursors.insert(key);
                }
                ConsumerResponse::Done
            }
            ConsumerCommand::Pop(pop) => {
                if !self.groups.contains_key(&pop.group) {
                    if !pop.create_group {
                        return Ok(ConsumerResponse::GroupNotFound);
                    }
                    changes.groups.insert(pop.group.clone());
                    self.groups.insert(pop.group.clone(), GroupConfig::new(pop.group.clone()));
                }
                let Some(count) = queue_count(&pop.topic) else { return Ok(ConsumerResponse::TopicNotFound) };
                ConsumerResponse::Popped(self.pop(changes, index, &pop, count, queues)?)
            }
            ConsumerCommand::Ack { group, topic, deliveries } => {
                if !self.groups.contains_key(&group) {
                    return Ok(ConsumerResponse::GroupNotFound);
                }
                let outcomes = deliveries.iter().map(|d| self.ack(changes, &group, &topic, d)).collect();
                ConsumerResponse::Acked(outcomes)
            }
            ConsumerCommand::ChangeInvisible { group, topic, delivery, invisible_ms, now_ms } => {
                if !self.groups.contains_key(&group) {
                    return Ok(ConsumerResponse::GroupNotFound);
                }
                let key = (group, topic, delivery.queue_id);
                let outcome = match self.cursors.get_mut(&key) {
                    None => Err(HandleRefusal::NeverDelivered),
                    Some(cursor) => match cursor.delivery(&delivery) {
                        Ok(Some(_)) => {
                            let inflight = cursor.inflight.get_mut(&delivery.offset).expect("just found");
                            inflight.nonce = index;
                            inflight.visible_at_ms = now_ms.saturating_add(invisible_ms as i64);
                            let changed = Delivery {
                                queue_id: delivery.queue_id,
                                offset: delivery.offset,
                                attempt: inflight.attempt,
                                nonce: index,
                                visible_at_ms: inflight.visible_at_ms,
                                exhausted: false,
                            };
                            changes.cursors.insert(key);
                            Ok(changed)
                        }
                        // Acked already: there is nothing left to make invisible.
                        Ok(None) => Err(HandleRefusal::Superseded),
                        Err(why) => Err(why),
                    },
                };
                ConsumerResponse::InvisibleChanged(outcome)
            }
            ConsumerCommand::CommitOffset { group, topic, queue_id, offset } => {
                if !self.groups.contains_key(&group) {
                    return Ok(ConsumerResponse::GroupNotFound);
                }
                let key = (group, topic, queue_id);
                self.cursors.entry(key.clone()).or_default().committed = Some(offset);
                changes.cursors.insert(key);
                ConsumerResponse::Done
            }
        })
    }

    fn ack(&mut self, changes: &mut ConsumerChanges, group: &str, topic: &str, delivery: &DeliveryRef) -> Result<(), HandleRefusal> {
        let key = (group.to_string(), topic.to_string(), delivery.queue_id);
        let Some(cursor) = self.cursors.get_mut(&key) else { return Err(HandleRefusal::NeverDelivered) };
        // Ok(None): acked before (a retried ack); it will not be handed out again, so the ack holds.
        if cursor.delivery(delivery)?.is_some() {
            cursor.inflight.remove(&delivery.offset);
            changes.cursors.insert(key);
        }
        Ok(())
    }

    /// Hands out, queue by queue: first in-flight messages whose invisible time has passed
    /// (attempt + 1), then new messages matching the filter, up to `pop.max`.
    fn pop(&mut self, changes: &mut ConsumerChanges, index: u64, pop: &PopCommand, queue_count: u32, queues: &dyn QueueView) -> std::io::Result<Vec<Delivery>> {
        let config = self.groups.get(&pop.group).cloned().expect("group checked by the caller");
        let visible_at_ms = pop.now_ms.saturating_add(pop.invisible_ms as i64);
        let max = pop.max.min(POP_BATCH_MAX) as usize;
        let mut out = Vec::new();
        for &queue_id in pop.queue_ids.iter().filter(|&&q| q < queue_count) {
            if out.len() >= max {
                break;
            }
            let key = (pop.group.clone(), pop.topic.clone(), queue_id);
            let (min, next) = queues.range(&pop.topic, queue_id);
            // A new group starts at the earliest message still stored.
            let cursor = self.cursors.entry(key.clone()).or_insert_with(|| QueueCursor { pop_next: min, ..Default::default() });
            let before = cursor.clone();
            // Retention deleted what lies below `min`: nothing there can be handed out again.
            if cursor.pop_next < min {
                cursor.pop_next = min;
            }
            cursor.inflight.retain(|&offset, _| offset >= min);
            for (&offset, inflight) in cursor.inflight.iter_mut() {
                if out.len() >= max {
                    break;
                }
                if inflight.visible_at_ms > pop.now_ms {
                    // FIFO: nothing after a message that is still being processed.
                    if config.fifo {
                        break;
                    }
                    continue;
                }
                inflight.attempt += 1;
                inflight.nonce = index;
                inflight.visible_at_ms = visible_at_ms;
                out.push(Delivery {
                    queue_id,
                    offset,
                    attempt: inflight.attempt,
                    nonce: index,
                    visible_at_ms,
                    exhausted: inflight.attempt > config.max_delivery_attempts,
                });
            }
            let fifo_blocked = config.fifo && !cursor.inflight.is_empty();
            let mut scanned = 0;
            while !fifo_blocked
                && out.len() < max
                && cursor.pop_next < next
                && cursor.inflight.len() < INFLIGHT_PER_QUEUE_MAX
                && scanned < POP_SCAN_MAX
            {
                let want = (POP_SCAN_MAX - scanned).min((next - cursor.pop_next) as usize).min(512);
                let entries = queues.tag_hashes(&pop.topic, queue_id, cursor.pop_next, want)?;
                if entries.is_empty() {
                    break;
                }
                for (offset, hash) in entries {
                    if out.len() >= max || cursor.inflight.len() >= INFLIGHT_PER_QUEUE_MAX {
                        break;
                    }
                    scanned += 1;
                    cursor.pop_next = offset + 1;
                    if pop.tag_hashes.as_ref().is_some_and(|accepted| !accepted.contains(&hash)) {
                        continue;
                    }
                    cursor.inflight.insert(offset, Inflight { visible_at_ms, attempt: 1, nonce: index });
                    out.push(Delivery { queue_id, offset, attempt: 1, nonce: index, visible_at_ms, exhausted: false });
                }
            }
            if *cursor != before {
                changes.cursors.insert(key);
            }
        }
        Ok(out)
    }

    /// Forgets every cursor of a deleted topic.
    pub fn remove_topic(&mut self, changes: &mut ConsumerChanges, topic: &str) {
        let doomed: Vec<CursorKey> = self.cursors.keys().filter(|(_, t, _)| t == topic).cloned().collect();
        for key in doomed {
            self.cursors.remove(&key);
            changes.cursors.insert(key);
        }
    }

    /// Whether a pop of (group, topic) over `queue_ids` at `now_ms` could hand anything out, and
    /// otherwise when the earliest in-flight message becomes visible again. Used by the leader's
    /// long poll to decide when to propose a pop.
    pub fn poll(&self, group: &str, topic: &str, queue_ids: &[u32], now_ms: i64, queues: &dyn QueueView) -> PollState {
        let fifo = self.groups.get(group).is_some_and(|g| g.fifo);
        let mut wake_at: Option<i64> = None;
        for &queue_id in queue_ids {
            let (min, next) = queues.range(topic, queue_id);
            let Some(cursor) = self.cursors.get(&(group.to_string(), topic.to_string(), queue_id)) else {
                if min < next {
                    return PollState::Ready;
                }
                continue;
            };
            if let Some(at) = cursor.next_visible_at() {
                if at <= now_ms {
                    return PollState::Ready;
                }
                wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
            }
            let blocked = (fifo && !cursor.inflight.is_empty()) || cursor.inflight.len() >= INFLIGHT_PER_QUEUE_MAX;
            if !blocked && cursor.pop_next.max(min) < next {
                return PollState::Ready;
            }
        }
        PollState::Wait { wake_at_ms: wake_at }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollState {
    Ready,
    Wait { wake_at_ms: Option<i64> },
}

#[cfg(test)]
mod tests;
