//! Send batching on the leader: the sends of concurrent requests become one Raft entry per
//! (topic, queue) instead of one entry each.
//!
//! Why: on a loaded leader most of the cost of a small send is per entry, not per byte: the
//! proposal through openraft, the log append and its flush wake-up, the apply, replication.
//! Requests queue here while `BATCHES_IN_FLIGHT` batches are being committed; the next batch
//! takes everything queued. An idle leader proposes a lone request at once (no timer, no added
//! latency); a busy one proposes fewer, larger entries.
//!
//! What a client sees is unchanged: each request's messages are contiguous in their queue, in
//! the order of the request, and its answer names its own offsets. A request's messages all go to
//! one queue: FIFO ones to their message group's queue, others to the batch's queue for that
//! topic (round robin per batch, so queues still share the load over time). A failed entry fails
//! every request in it with the same error (nothing of it was applied, or nothing is known, as
//! for a lone request).
use std::sync::{Arc, Weak};

use bytes::Bytes;
use raftmq_raft::CommandResponse;
use raftmq_raft::command::SendCommandBuilder;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::broker::{Broker, ProposeError};
use crate::status::ApiError;
use crate::v2::Code;

/// Batches being committed at once. One: while a batch commits, everything that arrives waits and
/// goes in the next. The broker is CPU-bound under load (three nodes and their clients share a
/// few cores), and each entry costs a proposal, an append, an fsync per node under the sync
/// policy and a replication round whatever its size, so fewer, larger entries beat pipelining
/// small ones. Measured (three nodes and the bench on 2 cores, 1 KiB, alternating runs): sync
/// (64,1) 16.1-17.9k msgs/s with 4 in flight (8.7 messages an entry, ~3,500 fsyncs/s in all),
/// 20.0k with 1 (25 an entry, ~2,300 fsyncs/s), p99 7.7 -> 6.2 ms; sync (16,1) +11-14%, sync
/// (16,32) +8-30%; async and batch-32 cases within noise.
const BATCHES_IN_FLIGHT: usize = 1;
/// Most requests taken into one batch.
const BATCH_REQUESTS_MAX: usize = 1024;

/// The messages of one SendMessage request, validated and encoded (see `command::encode_message`).
pub struct SendPart {
    pub topic: String,
    pub queue_count: u32,
    /// FIFO messages name their queue; others take the batch's.
    pub queue_id: Option<u32>,
    pub store_timestamp_ms: i64,
    pub count: u32,
    pub messages: Bytes,
}

/// Where a request's messages went.
pub struct Placed {
    pub queue_id: u32,
    pub first_offset: u64,
}

struct Queued {
    part: SendPart,
    reply: oneshot::Sender<Result<Placed, ProposeError>>,
}

pub struct Batcher {
    queue: mpsc::Sender<Queued>,
}

impl Batcher {
    /// `capacity` bounds the requests waiting for a batch; more are refused on arrival.
    pub fn start(broker: Weak<Broker>, capacity: usize) -> Batcher {
        let (queue, requests) = mpsc::channel(capacity);
        tokio::spawn(run(broker, requests));
        Batcher { queue }
    }

    pub async fn send(&self, part: SendPart) -> Result<Placed, ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Queued { part, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ApiError::new(
                    Code::TooManyRequests,
                    "too many requests in flight; slow down",
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    ApiError::unavailable("the node is shutting down")
                }
            })?;
        answer
            .await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?
    }
}

/// Requests of one batch bound for one (topic, queue): one entry.
struct Entry {
    topic: String,
    queue_id: u32,
    builder: SendCommandBuilder,
    replies: Vec<(u32, oneshot::Sender<Result<Placed, ProposeError>>)>,
}

async fn run(broker: Weak<Broker>, mut requests: mpsc::Receiver<Queued>) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = requests.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_REQUESTS_MAX {
            match requests.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let entries = group(&broker, batch);
        tokio::spawn(async move {
            let _slot = slot;
            futures::future::join_all(entries.into_iter().map(|entry| commit(&broker, entry)))
                .await;
        });
    }
}

/// Groups a batch into entries: one per (topic, queue), split where an entry would pass the
/// record size limit.
fn group(broker: &Broker, batch: Vec<Queued>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    // The queue each topic's non-FIFO requests take in this batch.
    let mut batch_queue: Vec<(String, u32)> = Vec::new();
    for Queued { part, reply } in batch {
        let queue_id = part.queue_id.unwrap_or_else(|| {
            match batch_queue.iter().find(|(t, _)| *t == part.topic) {
                Some((_, q)) => *q,
                None => {
                    let q = (broker.next_round_robin() % u64::from(part.queue_count)) as u32;
                    batch_queue.push((part.topic.clone(), q));
                    q
                }
            }
        });
        let fits = |e: &Entry| {
            e.topic == part.topic
                && e.queue_id == queue_id
                && e.builder.len() + part.messages.len() <= crate::limits::RECORD_PAYLOAD_BYTES_MAX
        };
        let entry = match entries.iter().position(fits) {
            Some(i) => &mut entries[i],
            None => {
                let capacity =
                    part.messages.len() + raftmq_raft::command::send_overhead(&part.topic);
                entries.push(Entry {
                    topic: part.topic.clone(),
                    queue_id,
                    builder: SendCommandBuilder::new(
                        &part.topic,
                        queue_id,
                        part.store_timestamp_ms,
                        capacity,
                    ),
                    replies: Vec::new(),
                });
                entries.last_mut().expect("just pushed")
            }
        };
        entry.builder.push_encoded(part.count, &part.messages);
        entry.replies.push((part.count, reply));
    }
    entries
}

async fn commit(broker: &Broker, entry: Entry) {
    let queue_id = entry.queue_id;
    let outcome = match broker.propose(entry.builder.finish()).await {
        Ok(CommandResponse::Sent { first_offset, .. }) => Ok(first_offset),
        Ok(CommandResponse::Rejected(reason)) => Err(ProposeError::Api(ApiError::new(
            Code::TopicNotFound,
            reason,
        ))),
        Ok(other) => Err(ProposeError::Api(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        )))),
        Err(e) => Err(e),
    };
    let mut next = outcome.as_ref().map(|first| *first).unwrap_or(0);
    for (count, reply) in entry.replies {
        let answer = match &outcome {
            Ok(_) => Ok(Placed {
                queue_id,
                first_offset: next,
            }),
            Err(e) => Err(e.clone()),
        };
        next += u64::from(count);
        let _ = reply.send(answer);
    }
}
