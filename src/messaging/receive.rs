//! ReceiveMessage (pop): a long poll on the leader that proposes a pop through the Raft log as
//! soon as the group has something to take (a new matching message, or an in-flight one whose
//! invisible time passed), so every node agrees on what was handed out (see raft/src/consumer.rs).
use std::time::Duration;

use raftmq_raft::command::{MessageHeader, SendCommandBuilder, StoredMessage};
use raftmq_raft::consumer::{ConsumerCommand, ConsumerResponse, Delivery, DeliveryRef, PollState, PopCommand, POP_BATCH_MAX};
use raftmq_raft::state_machine::tag_hash;

use crate::broker::{Broker, ProposeError};
use crate::messaging::convert::{Placement, now_ms, timestamp_from_ms, to_wire};
use crate::messaging::filter::TagFilter;
use crate::messaging::group::{ensure_group, group_name, propose};
use crate::messaging::pull::check_queue_ref;
use crate::messaging::receipt::{self, Scope};
use crate::status::{self, ApiError};
use crate::v2::{Code, ReceiveMessageRequest, ReceiveMessageResponse, Resource, receive_message_response};

/// Invisible duration when the request names none (push consumers renew automatically in
/// RocketMQ; we give them this long to process a message before it is handed out again).
pub const INVISIBLE_MS_DEFAULT: u64 = 30_000;
/// Longest invisible duration a receive or ChangeInvisibleDuration may ask for (RocketMQ: 12 h).
pub const INVISIBLE_MS_MAX: u64 = 12 * 3600 * 1000;
/// After a pop that handed nothing out although the poll said ready (all filtered out, or
/// raced by another consumer), wait this long before polling again.
const EMPTY_POP_BACKOFF: Duration = Duration::from_millis(5);

/// An invisible duration in ms, checked: `allow_zero` for ChangeInvisibleDuration (visible now).
pub fn invisible_ms(duration: Option<&prost_types::Duration>, allow_zero: bool) -> Result<Option<u64>, ApiError> {
    let Some(d) = duration else { return Ok(None) };
    let ms = (d.seconds as i128) * 1000 + (d.nanos as i128) / 1_000_000;
    if d.seconds < 0 || d.nanos < 0 || ms > INVISIBLE_MS_MAX as i128 || (ms == 0 && !allow_zero) {
        return Err(ApiError::new(
            Code::IllegalInvisibleTime,
            format!("invisible duration {}s {}ns is out of range (over 0 up to {} h)", d.seconds, d.nanos, INVISIBLE_MS_MAX / 3_600_000),
        ));
    }
    Ok(Some(ms as u64))
}

fn status_frame(status: crate::v2::Status) -> ReceiveMessageResponse {
    ReceiveMessageResponse { content: Some(receive_message_response::Content::Status(status)) }
}

/// The frames of a receive that failed before anything was handed out.
pub fn error_frames(e: ApiError) -> Vec<ReceiveMessageResponse> {
    vec![status_frame(e.status())]
}

/// Everything a receive needs, checked before anything is proposed.
struct Receive {
    group: String,
    topic: Resource,
    queue_ids: Vec<u32>,
    max: u32,
    invisible_ms: u64,
    filter: TagFilter,
    wait: Duration,
}

fn check(broker: &Broker, request: ReceiveMessageRequest) -> Result<Receive, ApiError> {
    let group = group_name(request.group.as_ref())?;
    let (topic, config, queue_id) = check_queue_ref(broker, request.message_queue.as_ref(), true)?;
    if request.batch_size <= 0 || request.batch_size as u32 > POP_BATCH_MAX {
        return Err(ApiError::bad_request(format!("batch_size {} is out of range (1 to {POP_BATCH_MAX})", request.batch_size)));
    }
    let filter = TagFilter::parse(request.filter_expression.as_ref())?;
    let invisible_ms = invisible_ms(request.invisible_duration.as_ref(), false)?.unwrap_or(INVISIBLE_MS_DEFAULT);
    // Every queue of the topic here, starting with the requested one (or the next in turn):
    // a consumer that asks an empty queue still gets what the others hold.
    let count = config.queue_count;
    let start = queue_id.unwrap_or_else(|| (broker.next_round_robin() % count as u64) as u32);
    let queue_ids = (0..count).map(|i| (start + i) % count).collect();
    let wait_ms = request
        .long_polling_timeout
        .map(|d| (d.seconds.max(0) as u64).saturating_mul(1000).saturating_add(d.nanos.max(0) as u64 / 1_000_000))
        .unwrap_or(0)
        .min(crate::limits::LONG_POLL_MS_MAX);
    Ok(Receive { group, topic, queue_ids, max: request.batch_size as u32, invisible_ms, filter, wait: Duration::from_millis(wait_ms) })
}

/// Serves a receive on the leader: the frames to stream back, or NotLeader to forward it.
pub async fn receive_message(broker: &Broker, request: ReceiveMessageRequest) -> Result<Vec<ReceiveMessageResponse>, ProposeError> {
    let receive = check(broker, request)?;
    ensure_group(broker, &receive.group).await?;
    let state = broker.state();
    let deadline = tokio::time::Instant::now() + receive.wait;
    let mut applied = state.subscribe_applied();
    loop {
        let now = now_ms();
        match state.poll_group(&receive.group, &receive.topic.name, &receive.queue_ids, now) {
            PollState::Ready => {
                let frames = pop(broker, &receive, now).await?;
                if !frames.is_empty() {
                    return Ok(frames);
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(EMPTY_POP_BACKOFF).await;
            }
            PollState::Wait { wake_at_ms } => {
                let mut until = deadline;
                if let Some(at) = wake_at_ms {
                    until = until.min(tokio::time::Instant::now() + Duration::from_millis((at - now).max(0) as u64));
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::select! {
                    _ = applied.changed() => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        }
    }
    Ok(vec![status_frame(status::status(Code::MessageNotFound, "no new message"))])
}

/// Proposes one pop; returns the frames of what it handed out (empty if nothing).
async fn pop(broker: &Broker, receive: &Receive, now: i64) -> Result<Vec<ReceiveMessageResponse>, ProposeError> {
    let tag_hashes = match &receive.filter {
        TagFilter::All => None,
        TagFilter::AnyOf(tags) => Some(tags.iter().map(|t| tag_hash(Some(t))).collect()),
    };
    let command = ConsumerCommand::Pop(PopCommand {
        group: receive.group.clone(),
        topic: receive.topic.name.clone(),
        queue_ids: receive.queue_ids.clone(),
        max: receive.max,
        invisible_ms: receive.invisible_ms,
        now_ms: now,
        tag_hashes,
        create_group: broker.config.auto_create_groups,
    });
    let ConsumerResponse::Popped(deliveries) = propose(broker, &receive.group, command).await? else {
        return Err(ProposeError::Api(ApiError::internal("a pop answered something else")));
    };
    let scope = Scope { broker_group: &broker.config.group, consumer_group: &receive.group, topic: &receive.topic.name };
    let mut messages = Vec::with_capacity(deliveries.len());
    // Handed out but not for the client: retention deleted it, or a tag-hash collision let it
    // through the filter. Acked at once so that nobody waits for it.
    let mut drop = Vec::new();
    for delivery in deliveries {
        let stored = broker.state().read_message(&receive.topic.name, delivery.queue_id, delivery.offset).map_err(ApiError::internal)?;
        let stored = match stored {
            Some(stored) if receive.filter.matches(stored.header.tag.as_deref()) => stored,
            Some(_) => {
                drop.push(delivery);
                continue;
            }
            None if delivery.offset < broker.state().queue_range(&receive.topic.name, delivery.queue_id).0 => {
                drop.push(delivery);
                continue;
            }
            None => {
                // Should not happen; left in flight, so it is handed out again later, never lost.
                tracing::warn!(topic = %receive.topic.name, queue = delivery.queue_id, offset = delivery.offset, "a popped message could not be read");
                continue;
            }
        };
        if delivery.exhausted {
            dead_letter(broker, &receive.group, &receive.topic.name, delivery, stored).await?;
            continue;
        }
        let handle = receipt::encode(&scope, DeliveryRef { queue_id: delivery.queue_id, offset: delivery.offset, nonce: delivery.nonce }, delivery.visible_at_ms);
        let mut message = to_wire(
            stored,
            Placement { topic: &receive.topic, queue_id: delivery.queue_id, queue_offset: delivery.offset, store_host: &broker.config.advertise },
        );
        if let Some(props) = message.system_properties.as_mut() {
            props.receipt_handle = Some(handle);
            props.delivery_attempt = Some(delivery.attempt as i32);
            props.invisible_duration = Some(prost_types::Duration { seconds: (receive.invisible_ms / 1000) as i64, nanos: ((receive.invisible_ms % 1000) * 1_000_000) as i32 });
        }
        messages.push(message);
    }
    if !drop.is_empty() {
        ack(broker, &receive.group, &receive.topic.name, &drop).await?;
    }
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let mut frames = Vec::with_capacity(messages.len() + 2);
    frames.push(status_frame(status::ok()));
    frames.extend(messages.into_iter().map(|m| ReceiveMessageResponse { content: Some(receive_message_response::Content::Message(m)) }));
    frames.push(ReceiveMessageResponse { content: Some(receive_message_response::Content::DeliveryTimestamp(timestamp_from_ms(now_ms()))) });
    Ok(frames)
}

async fn ack(broker: &Broker, group: &str, topic: &str, deliveries: &[Delivery]) -> Result<(), ProposeError> {
    let deliveries = deliveries.iter().map(|d| DeliveryRef { queue_id: d.queue_id, offset: d.offset, nonce: d.nonce }).collect();
    propose(broker, group, ConsumerCommand::Ack { group: group.into(), topic: topic.into(), deliveries }).await.map(|_| ())
}

/// Moves a message to the group's dead-letter topic (one queue, created on first use): a copy is
/// appended there, then the delivery is acked. A crash in between leaves it in flight, so it is
/// moved again later: at least once, never lost.
pub async fn dead_letter(broker: &Broker, group: &str, topic: &str, delivery: Delivery, stored: StoredMessage) -> Result<(), ProposeError> {
    let dlq = raftmq_raft::consumer::dead_letter_topic(group);
    if broker.state().topic(&dlq).is_none() {
        let create = raftmq_raft::command::AdminCommand::CreateTopic(raftmq_raft::command::TopicConfig { name: dlq.clone(), queue_count: 1 });
        broker.propose(raftmq_raft::command::Command::admin(&create)).await?;
    }
    let store_timestamp_ms = now_ms();
    let mut header: MessageHeader = stored.header;
    header.store_timestamp_ms = store_timestamp_ms;
    header.user_properties.push(("ORIGIN_TOPIC".into(), topic.into()));
    header.user_properties.push(("DELIVERY_ATTEMPTS".into(), (delivery.attempt - 1).to_string()));
    let mut builder = SendCommandBuilder::new(&dlq, 0, store_timestamp_ms, stored.body.len() + 512);
    builder.push(&header, &stored.body);
    match broker.propose(builder.finish()).await? {
        raftmq_raft::CommandResponse::Sent { .. } => ack(broker, group, topic, &[delivery]).await,
        other => Err(ProposeError::Api(ApiError::internal(format!("dead-lettering failed: {other:?}")))),
    }
}
