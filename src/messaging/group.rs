//! Consumer groups on the client API: names, existence (created on first use unless
//! `auto_create_groups` is off), consumer-command proposals, pull consumers' committed offsets
//! (UpdateOffset / GetOffset) and push consumers' QueryAssignment.
use raftmq_raft::CommandResponse;
use raftmq_raft::command::Command;
use raftmq_raft::consumer::{ConsumerCommand, ConsumerResponse, GroupConfig};

use crate::broker::{Broker, ProposeError};
use crate::messaging::pull::check_queue;
use crate::status::{self, ApiError};
use crate::v2::{
    Assignment, Code, GetOffsetRequest, GetOffsetResponse, MessageQueue, QueryAssignmentRequest, QueryAssignmentResponse,
    QueryRouteRequest, Resource, UpdateOffsetRequest, UpdateOffsetResponse,
};

/// The group's name, checked.
pub fn group_name(group: Option<&Resource>) -> Result<String, ApiError> {
    let name = group.map(|g| g.name.as_str()).unwrap_or("");
    status::check_group_name(name)?;
    Ok(name.to_string())
}

pub fn group_not_found(name: &str) -> ApiError {
    ApiError::new(Code::ConsumerGroupNotFound, format!("consumer group {name} does not exist; create it with `raftmq group create --group {name}`"))
}

/// Proposes a consumer command; group and topic refusals become their v2 codes.
pub async fn propose(broker: &Broker, group: &str, command: ConsumerCommand) -> Result<ConsumerResponse, ProposeError> {
    match broker.propose(Command::consumer(&command)).await? {
        CommandResponse::Consumer(ConsumerResponse::GroupNotFound) => Err(ProposeError::Api(group_not_found(group))),
        CommandResponse::Consumer(ConsumerResponse::TopicNotFound) => {
            Err(ProposeError::Api(ApiError::new(Code::TopicNotFound, "the topic was deleted")))
        }
        CommandResponse::Consumer(response) => Ok(response),
        other => Err(ProposeError::Api(ApiError::internal(format!("unexpected apply result {other:?}")))),
    }
}

/// Ok if the group exists, creating it when groups are created on first use.
pub async fn ensure_group(broker: &Broker, name: &str) -> Result<(), ProposeError> {
    if broker.state().group(name).is_some() {
        return Ok(());
    }
    if !broker.config.auto_create_groups {
        return Err(ProposeError::Api(group_not_found(name)));
    }
    propose(broker, name, ConsumerCommand::PutGroup(GroupConfig::new(name))).await.map(|_| ())
}

pub async fn update_offset(broker: &Broker, request: UpdateOffsetRequest) -> Result<UpdateOffsetResponse, ProposeError> {
    let group = group_name(request.group.as_ref())?;
    let (topic, queue_id) = check_queue(broker, request.message_queue.as_ref())?;
    let (_, next) = broker.state().queue_range(&topic.name, queue_id);
    if request.offset < 0 || request.offset as u64 > next {
        return Err(ProposeError::Api(ApiError::new(
            Code::IllegalOffset,
            format!("offset {} is outside the queue (0 to its end {next})", request.offset),
        )));
    }
    ensure_group(broker, &group).await?;
    let command = ConsumerCommand::CommitOffset { group: group.clone(), topic: topic.name, queue_id, offset: request.offset as u64 };
    propose(broker, &group, command).await?;
    Ok(UpdateOffsetResponse { status: Some(status::ok()) })
}

pub fn get_offset(broker: &Broker, request: GetOffsetRequest) -> Result<GetOffsetResponse, ApiError> {
    let group = group_name(request.group.as_ref())?;
    let (topic, queue_id) = check_queue(broker, request.message_queue.as_ref())?;
    if broker.state().group(&group).is_none() {
        return Err(group_not_found(&group));
    }
    match broker.state().cursor(&group, &topic.name, queue_id).and_then(|c| c.committed) {
        Some(offset) => Ok(GetOffsetResponse { status: Some(status::ok()), offset: offset as i64 }),
        None => Err(ApiError::new(Code::OffsetNotFound, format!("group {group} has committed no offset for this queue"))),
    }
}

/// Push consumers pop: each broker group serving the topic is one assignment with queue id -1,
/// which ReceiveMessage reads as "any queue of this group" (as RocketMQ's proxy does).
pub async fn query_assignment(broker: &Broker, request: QueryAssignmentRequest) -> Result<QueryAssignmentResponse, ApiError> {
    let group = group_name(request.group.as_ref())?;
    if broker.state().group(&group).is_none() && !broker.config.auto_create_groups {
        return Err(group_not_found(&group));
    }
    let route = crate::messaging::route::query_route(broker, QueryRouteRequest { topic: request.topic, endpoints: request.endpoints }).await?;
    let mut assignments: Vec<Assignment> = Vec::new();
    for queue in route.message_queues {
        let name = queue.broker.as_ref().map(|b| b.name.clone());
        if assignments.iter().any(|a| a.message_queue.as_ref().and_then(|q| q.broker.as_ref()).map(|b| b.name.clone()) == name) {
            continue;
        }
        assignments.push(Assignment { message_queue: Some(MessageQueue { id: -1, ..queue }) });
    }
    Ok(QueryAssignmentResponse { status: Some(status::ok()), assignments })
}
