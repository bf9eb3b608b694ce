//! Topic administration: create, grow, describe, delete. A topic's queue count only grows (the
//! state machine refuses a shrink too, for a racing pair of updates): a shrink would strand the
//! messages of the dropped queues.
use raftmq_raft::CommandResponse;
use raftmq_raft::command::{AdminCommand, Command, TopicConfig};
use raftmq_raft::state_machine::SmShared;

use super::propose;
use crate::admin_pb::{DescribeTopicResponse, QueueInfo, TopicInfo};
use crate::broker::Broker;
use crate::limits::{QUEUES_DEFAULT, QUEUES_MAX};
use crate::status::{self, ApiError};
use crate::v2::Code;

pub fn topic_not_found(name: &str) -> ApiError {
    ApiError::new(Code::TopicNotFound, format!("topic {name} does not exist"))
}

/// A topic with each queue's (min, max) offsets as applied here.
pub fn topic_info(state: &SmShared, topic: TopicConfig) -> TopicInfo {
    TopicInfo {
        queue_offsets: (0..topic.queue_count)
            .map(|q| {
                let (min, max) = state.queue_range(&topic.name, q);
                QueueInfo { queue_id: q, min_offset: min, max_offset: max }
            })
            .collect(),
        name: topic.name,
        queues: topic.queue_count,
    }
}

fn check_queue_count(queues: u32) -> Result<u32, ApiError> {
    let queues = if queues == 0 { QUEUES_DEFAULT } else { queues };
    if queues > QUEUES_MAX {
        return Err(ApiError::bad_request(format!("{queues} queues; a topic has at most {QUEUES_MAX}")));
    }
    Ok(queues)
}

/// Creates the topic, or grows it to `queues` (0 = the default). Idempotent.
pub async fn create(broker: &Broker, name: &str, queues: u32) -> Result<(), ApiError> {
    status::check_topic_name(name)?;
    let queues = check_queue_count(queues)?;
    put(broker, name, queues).await
}

/// Grows an existing topic to `queues`; a smaller count is refused, the same count is a no-op.
pub async fn update(broker: &Broker, name: &str, queues: u32) -> Result<(), ApiError> {
    status::check_topic_name(name)?;
    if queues == 0 {
        return Err(ApiError::bad_request("--queues must be at least 1"));
    }
    let queues = check_queue_count(queues)?;
    let existing = broker.state().topic(name).ok_or_else(|| topic_not_found(name))?;
    if queues < existing.queue_count {
        return Err(ApiError::bad_request(format!(
            "topic {name} has {} queues; a topic's queue count cannot shrink (asked for {queues})",
            existing.queue_count
        )));
    }
    put(broker, name, queues).await
}

async fn put(broker: &Broker, name: &str, queues: u32) -> Result<(), ApiError> {
    if broker.state().topic(name).is_some_and(|t| t.queue_count == queues) {
        return Ok(());
    }
    let command = Command::admin(&AdminCommand::CreateTopic(TopicConfig { name: name.to_string(), queue_count: queues }));
    match propose(broker, command).await? {
        CommandResponse::TopicCreated => Ok(()),
        CommandResponse::Rejected(reason) => Err(ApiError::bad_request(reason)),
        other => Err(ApiError::internal(format!("unexpected apply result {other:?}"))),
    }
}

pub fn describe(broker: &Broker, name: &str) -> Result<DescribeTopicResponse, ApiError> {
    status::check_topic_name(name)?;
    let state = broker.state();
    let topic = state.topic(name).ok_or_else(|| topic_not_found(name))?;
    Ok(DescribeTopicResponse {
        status: super::admin_status(Ok(())),
        topic: Some(topic_info(state, topic)),
        broker_group: broker.config.group.clone(),
    })
}

/// Deletes the topic and every group's cursors on it; its messages become unreachable.
pub async fn delete(broker: &Broker, name: &str) -> Result<(), ApiError> {
    status::check_topic_name(name)?;
    if broker.state().topic(name).is_none() {
        return Err(topic_not_found(name));
    }
    match propose(broker, Command::admin(&AdminCommand::DeleteTopic { name: name.to_string() })).await? {
        CommandResponse::TopicDeleted => Ok(()),
        // Deleted by a racing call since the check above.
        CommandResponse::Rejected(_) => Err(topic_not_found(name)),
        other => Err(ApiError::internal(format!("unexpected apply result {other:?}"))),
    }
}
