//! PullMessage (a long poll from an offset) and the offset queries.
use std::time::Duration;

use raftmq_raft::command::TopicConfig;

use crate::broker::Broker;
use crate::limits::{LONG_POLL_MS_MAX, PULL_BATCH_MAX};
use crate::messaging::convert::{Placement, to_wire};
use crate::messaging::filter::TagFilter;
use crate::status::{self, ApiError};
use crate::v2::{
    Code, MessageQueue, PullMessageRequest, PullMessageResponse, QueryOffsetPolicy, QueryOffsetRequest,
    QueryOffsetResponse, Resource, pull_message_response,
};

/// A topic named by a request: legal name (ILLEGAL_TOPIC) and existing here (TOPIC_NOT_FOUND).
pub fn existing_topic(broker: &Broker, name: &str) -> Result<TopicConfig, ApiError> {
    status::check_topic_name(name)?;
    broker.state().topic(name).ok_or_else(|| ApiError::new(Code::TopicNotFound, format!("topic {name} does not exist")))
}

/// Validates a queue reference: the topic exists and the queue id is in range, or is -1 ("any
/// queue", returned as None) where `any_queue` allows it.
pub fn check_queue_ref(broker: &Broker, queue: Option<&MessageQueue>, any_queue: bool) -> Result<(Resource, TopicConfig, Option<u32>), ApiError> {
    let queue = queue.ok_or_else(|| ApiError::bad_request("message_queue is required"))?;
    let topic = queue.topic.clone().ok_or_else(|| ApiError::new(Code::IllegalTopic, "topic is required"))?;
    let config = existing_topic(broker, &topic.name)?;
    match queue.id {
        -1 if any_queue => Ok((topic, config, None)),
        id if id >= 0 && (id as u32) < config.queue_count => Ok((topic, config, Some(id as u32))),
        id => Err(ApiError::bad_request(format!("queue {id} does not exist; topic {} has {} queues", topic.name, config.queue_count))),
    }
}

/// Validates a reference to one queue (see `check_queue_ref`).
pub fn check_queue(broker: &Broker, queue: Option<&MessageQueue>) -> Result<(Resource, u32), ApiError> {
    let (topic, _, id) = check_queue_ref(broker, queue, false)?;
    Ok((topic, id.expect("any_queue is off")))
}

/// The frames of one pull: status, messages, next offset.
pub async fn pull_message(broker: &Broker, request: PullMessageRequest) -> Result<Vec<PullMessageResponse>, ApiError> {
    if let Some(group) = &request.group {
        status::check_name(&group.name, "consumer group", crate::limits::GROUP_NAME_BYTES_MAX, Code::IllegalConsumerGroup)?;
    }
    let (topic, queue_id) = check_queue(broker, request.message_queue.as_ref())?;
    if request.offset < 0 {
        return Err(ApiError::new(Code::IllegalOffset, format!("offset {} is negative", request.offset)));
    }
    let batch = match request.batch_size {
        n if n <= 0 => 32,
        n => (n as usize).min(PULL_BATCH_MAX),
    };
    let filter = TagFilter::parse(request.filter_expression.as_ref())?;
    let wait_ms = request
        .long_polling_timeout
        .map(|d| (d.seconds.max(0) as u64) * 1000 + (d.nanos.max(0) as u64) / 1_000_000)
        .unwrap_or(0)
        .min(LONG_POLL_MS_MAX);
    let state = broker.state();
    let from = request.offset as u64;
    let mut applied = state.subscribe_applied();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let (min, next) = loop {
        let (min, next) = state.queue_range(&topic.name, queue_id);
        if from < next || tokio::time::Instant::now() >= deadline {
            break (min, next);
        }
        if tokio::time::timeout_at(deadline, applied.changed()).await.is_err() {
            break state.queue_range(&topic.name, queue_id);
        }
    };
    if from > next {
        return Err(ApiError::new(Code::IllegalOffset, format!("offset {from} is past the queue's end {next}")));
    }
    let from = from.max(min);
    let read = state.read_queue(&topic.name, queue_id, from, batch).map_err(ApiError::internal)?;
    let next_offset = read.last().map(|m| m.queue_offset + 1).unwrap_or(from);
    let mut frames = Vec::with_capacity(read.len() + 2);
    let store_host = broker.config.advertise.as_str();
    let messages: Vec<_> = read
        .into_iter()
        .filter(|m| filter.matches(m.message.header.tag.as_deref()))
        .map(|m| to_wire(m.message, Placement { topic: &topic, queue_id, queue_offset: m.queue_offset, store_host }))
        .collect();
    let head = if messages.is_empty() { status::status(Code::MessageNotFound, "no new message") } else { status::ok() };
    frames.push(PullMessageResponse { content: Some(pull_message_response::Content::Status(head)) });
    frames.extend(messages.into_iter().map(|m| PullMessageResponse { content: Some(pull_message_response::Content::Message(m)) }));
    frames.push(PullMessageResponse { content: Some(pull_message_response::Content::NextOffset(next_offset as i64)) });
    Ok(frames)
}

pub fn query_offset(broker: &Broker, request: QueryOffsetRequest) -> Result<QueryOffsetResponse, ApiError> {
    let (topic, queue_id) = check_queue(broker, request.message_queue.as_ref())?;
    let (min, next) = broker.state().queue_range(&topic.name, queue_id);
    let offset = match QueryOffsetPolicy::try_from(request.query_offset_policy).unwrap_or(QueryOffsetPolicy::Beginning) {
        QueryOffsetPolicy::Beginning => min,
        QueryOffsetPolicy::End => next,
        QueryOffsetPolicy::Timestamp => {
            let ts = request.timestamp.as_ref().ok_or_else(|| ApiError::bad_request("policy TIMESTAMP needs a timestamp"))?;
            first_offset_at_or_after(broker, &topic.name, queue_id, min, next, crate::messaging::convert::ms_from_timestamp(ts))?
        }
    };
    Ok(QueryOffsetResponse { status: Some(status::ok()), offset: offset as i64 })
}

/// Binary search over store timestamps. The leader stamps them at proposal, so they grow with the
/// queue offset up to clock steps between leaders; the answer is then approximate, as in RocketMQ.
fn first_offset_at_or_after(broker: &Broker, topic: &str, queue_id: u32, min: u64, next: u64, ms: i64) -> Result<u64, ApiError> {
    let (mut low, mut high) = (min, next);
    while low < high {
        let mid = low + (high - low) / 2;
        let stamp = broker
            .state()
            .read_queue(topic, queue_id, mid, 1)
            .map_err(ApiError::internal)?
            .first()
            .map(|m| m.message.header.store_timestamp_ms)
            .unwrap_or(i64::MAX);
        if stamp < ms { low = mid + 1 } else { high = mid }
    }
    Ok(low)
}
