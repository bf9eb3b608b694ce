//! Topic placement: a topic gets its queues in each selected group (every live group by
//! default) through that group's own admin CreateTopic, which a follower forwards to its leader.
//! Each group numbers its queues 0..n, so the topic has n queues per group in routes.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use raftmq_cluster::limits::GROUPS_MAX;

use super::RouterState;
use crate::admin_pb::CreateTopicRequest;
use crate::limits::{QUEUES_DEFAULT, QUEUES_MAX};
use crate::status::{self, ApiError};
use crate::v2::Code;

const CREATE_TIMEOUT: Duration = Duration::from_secs(10);
/// After creating, how long to wait for the groups' next registrations to show the topic (so
/// that a client asking for the route right after `topic create` finds it).
const VISIBLE_WAIT_MAX: Duration = Duration::from_secs(5);
const VISIBLE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Creates the topic in the groups; Ok(the groups that have it). Checks everything first, so a
/// bad request creates nothing.
pub async fn place_topic(state: &RouterState, topic: &str, queues: u32, groups: &[String]) -> Result<Vec<String>, ApiError> {
    status::check_topic_name(topic)?;
    let queues = if queues == 0 { QUEUES_DEFAULT } else { queues };
    if queues > QUEUES_MAX {
        return Err(ApiError::bad_request(format!("{queues} queues; a topic has at most {QUEUES_MAX} per group")));
    }
    if groups.len() > GROUPS_MAX {
        return Err(ApiError::bad_request(format!("{} groups named; at most {GROUPS_MAX}", groups.len())));
    }
    let live: Vec<String> = state.registry.lock().groups(Instant::now()).into_iter().map(|(g, _)| g).collect();
    if live.is_empty() {
        return Err(ApiError::unavailable("no broker group is registered with this router yet; start brokers with --routers"));
    }
    let selected: BTreeSet<String> = if groups.is_empty() { live.iter().cloned().collect() } else { groups.iter().cloned().collect() };
    if let Some(unknown) = selected.iter().find(|g| !live.contains(g)) {
        return Err(ApiError::bad_request(format!("group {unknown:?} has no live node registered here; live groups: {}", live.join(", "))));
    }
    let results = futures::future::join_all(selected.iter().map(|g| create_in_group(state, g, topic, queues))).await;
    let (mut placed, mut failed) = (Vec::new(), Vec::new());
    for (group, result) in selected.iter().zip(results) {
        match result {
            Ok(()) => placed.push(group.clone()),
            Err(e) => failed.push((group.clone(), e)),
        }
    }
    wait_visible(state, topic, &placed).await;
    match failed.first() {
        None => Ok(placed),
        Some((_, first)) => {
            let detail: Vec<String> = failed.iter().map(|(g, e)| format!("{g}: {}", e.message)).collect();
            Err(ApiError::new(first.code, format!("created on [{}]; failed on {}", placed.join(", "), detail.join("; "))))
        }
    }
}

/// Asks the group's nodes, leader first, until one answers; a business error ends the search.
async fn create_in_group(state: &RouterState, group: &str, topic: &str, queues: u32) -> Result<(), ApiError> {
    let mut nodes = state.registry.lock().groups(Instant::now()).into_iter().find(|(g, _)| g == group).map(|(_, n)| n).unwrap_or_default();
    nodes.sort_by_key(|n| n.role != "leader");
    let mut last = ApiError::unavailable(format!("group {group} has no live node"));
    for node in nodes {
        let channel = state.channels.get(&node.admin_endpoint)?;
        let mut request = tonic::Request::new(CreateTopicRequest { topic: topic.to_string(), queues });
        request.set_timeout(CREATE_TIMEOUT);
        match crate::cli::client::admin(channel).create_topic(request).await {
            Ok(response) => match response.into_inner().status {
                Some(s) if s.code == 0 => return Ok(()),
                Some(s) if s.code == Code::HaNotAvailable as i32 => last = ApiError::unavailable(s.message),
                Some(s) => return Err(ApiError::new(Code::try_from(s.code).unwrap_or(Code::InternalServerError), s.message)),
                None => last = ApiError::internal(format!("node {} of {group} answered without a status", node.node_id)),
            },
            Err(e) => last = ApiError::unavailable(format!("node {} of {group} at {}: {}", node.node_id, node.admin_endpoint, e.message())),
        }
    }
    Err(last)
}

async fn wait_visible(state: &RouterState, topic: &str, groups: &[String]) {
    let deadline = tokio::time::Instant::now() + VISIBLE_WAIT_MAX;
    while tokio::time::Instant::now() < deadline {
        let route = state.registry.lock().route(topic, Instant::now());
        if groups.iter().all(|g| route.iter().any(|r| &r.route.group == g)) {
            return;
        }
        tokio::time::sleep(VISIBLE_POLL_INTERVAL).await;
    }
}
