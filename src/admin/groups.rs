//! Consumer-group administration: create, list, describe (per-queue positions and lag, and the
//! clients seen lately on any node of the group), delete. Group state itself lives in the state
//! machine (raft/src/consumer.rs); this reads it and proposes PutGroup / DeleteGroup.
use std::collections::BTreeMap;
use std::time::Duration;

use raftmq_raft::consumer::{ConsumerCommand, GroupConfig, MAX_DELIVERY_ATTEMPTS_DEFAULT, QueueCursor};

use super::proposal_error;
use super::topics::topic_not_found;
use crate::admin_pb::{DescribeGroupResponse, GroupInfo, GroupMember, GroupQueueState, ListGroupsResponse, LocalMembersRequest};
use crate::broker::Broker;
use crate::limits::{GROUP_DELIVERY_ATTEMPTS_MAX, GROUP_QUEUES_LISTED_MAX, GROUPS_LISTED_MAX};
use crate::messaging::group::{group_not_found, propose};
use crate::status::{self, ApiError};

/// How long a describe waits for another node's member list before leaving it out.
const MEMBERS_ASK_TIMEOUT: Duration = Duration::from_millis(800);

fn group_info(config: GroupConfig) -> GroupInfo {
    GroupInfo { name: config.name, max_delivery_attempts: config.max_delivery_attempts, fifo: config.fifo }
}

/// Creates a group; one that exists already is refused (delete it first to change its settings).
pub async fn create(broker: &Broker, name: &str, max_delivery_attempts: u32, fifo: bool) -> Result<(), ApiError> {
    status::check_group_name(name)?;
    let attempts = if max_delivery_attempts == 0 { MAX_DELIVERY_ATTEMPTS_DEFAULT } else { max_delivery_attempts };
    if attempts > GROUP_DELIVERY_ATTEMPTS_MAX {
        return Err(ApiError::bad_request(format!("max delivery attempts {attempts} is over the limit {GROUP_DELIVERY_ATTEMPTS_MAX}")));
    }
    if broker.state().group(name).is_some() {
        return Err(ApiError::bad_request(format!("consumer group {name} already exists")));
    }
    let config = GroupConfig { name: name.to_string(), max_delivery_attempts: attempts, fifo };
    propose(broker, name, ConsumerCommand::PutGroup(config)).await.map(|_| ()).map_err(proposal_error)
}

pub fn list(broker: &Broker) -> ListGroupsResponse {
    let (groups, truncated) = broker.state().groups(GROUPS_LISTED_MAX);
    ListGroupsResponse { status: super::admin_status(Ok(())), groups: groups.into_iter().map(group_info).collect(), truncated }
}

/// One queue's row: a queue the group never read starts where a new group would (its min offset).
fn queue_state(broker: &Broker, topic: String, queue_id: u32, cursor: Option<QueueCursor>) -> GroupQueueState {
    let (min, max) = broker.state().queue_range(&topic, queue_id);
    let cursor = cursor.unwrap_or_default();
    // Below `min` retention deleted everything: nothing there is left to ack.
    let acked = cursor.acked_below().max(min);
    GroupQueueState {
        topic,
        queue_id,
        pop_offset: cursor.pop_next.max(min),
        acked_offset: acked,
        inflight: cursor.inflight.range(min..).count() as u32,
        committed_offset: cursor.committed,
        min_offset: min,
        max_offset: max,
        lag: max.saturating_sub(acked),
    }
}

/// The group's settings, every queue it has read (and every queue of `topic`, if named), and its
/// members on every node that answers.
pub async fn describe(broker: &Broker, name: &str, topic: &str) -> Result<DescribeGroupResponse, ApiError> {
    status::check_group_name(name)?;
    let state = broker.state();
    let config = state.group(name).ok_or_else(|| group_not_found(name))?;
    let mut rows: BTreeMap<(String, u32), Option<QueueCursor>> =
        state.cursors_of(name, GROUP_QUEUES_LISTED_MAX + 1).into_iter().map(|(key, cursor)| (key, Some(cursor))).collect();
    if !topic.is_empty() {
        status::check_topic_name(topic)?;
        let count = state.topic(topic).ok_or_else(|| topic_not_found(topic))?.queue_count;
        for queue_id in 0..count {
            rows.entry((topic.to_string(), queue_id)).or_insert(None);
        }
    }
    // Over the limit, other topics' rows make room: every queue of the named topic fits.
    let excess = rows.len().saturating_sub(GROUP_QUEUES_LISTED_MAX);
    let doomed: Vec<(String, u32)> = rows.keys().rev().filter(|(t, _)| t != topic).take(excess).cloned().collect();
    for key in &doomed {
        rows.remove(key);
    }
    let truncated = excess > 0;
    let queues = rows.into_iter().map(|((topic, queue_id), cursor)| queue_state(broker, topic, queue_id, cursor)).collect();
    Ok(DescribeGroupResponse {
        status: super::admin_status(Ok(())),
        group: Some(group_info(config)),
        queues,
        members: members_everywhere(broker, name).await,
        truncated,
    })
}

pub async fn delete(broker: &Broker, name: &str) -> Result<(), ApiError> {
    status::check_group_name(name)?;
    if broker.state().group(name).is_none() {
        return Err(group_not_found(name));
    }
    propose(broker, name, ConsumerCommand::DeleteGroup { name: name.to_string() }).await.map(|_| ()).map_err(proposal_error)
}

/// The group's clients this node heard from lately.
pub fn local_members(broker: &Broker, group: &str) -> Vec<GroupMember> {
    broker
        .members
        .of(group)
        .into_iter()
        .map(|m| GroupMember {
            client_id: m.client_id,
            client_type: crate::v2::ClientType::try_from(m.client_type).unwrap_or(crate::v2::ClientType::Unspecified).as_str_name().to_string(),
            last_seen_ms_ago: m.last_seen_ago.as_millis() as u64,
            node_id: broker.config.node_id,
        })
        .collect()
}

/// Members as every node of the group knows them (clients talk to any node). A node that does not
/// answer in time is left out: membership is advisory.
async fn members_everywhere(broker: &Broker, group: &str) -> Vec<GroupMember> {
    let mut members = local_members(broker, group);
    for &id in broker.config.peers.keys().filter(|id| **id != broker.config.node_id) {
        let Some(addr) = broker.forward_addr_of(id) else { continue };
        let Ok(channel) = broker.channel_to(&addr) else { continue };
        let mut request = tonic::Request::new(LocalMembersRequest { group: group.to_string() });
        request.set_timeout(MEMBERS_ASK_TIMEOUT);
        match crate::admin_pb::admin_client::AdminClient::new(channel).local_members(request).await {
            Ok(response) => members.extend(response.into_inner().members),
            Err(e) => tracing::debug!("node {id} did not list the members of {group}: {}", e.message()),
        }
    }
    members.sort_by(|a, b| a.last_seen_ms_ago.cmp(&b.last_seen_ms_ago).then_with(|| a.client_id.cmp(&b.client_id)));
    members
}
