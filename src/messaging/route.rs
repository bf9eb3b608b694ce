//! QueryRoute: every queue of the topic, in every group that has it. Routers and broker nodes
//! both answer it. A MessageQueue is (topic, group, queue id) as in RocketMQ: each group numbers
//! its own queues 0..n and lists its own nodes as broker id 0, the only id the official clients
//! use. A node with routers configured answers with a router's merged view, and with its own
//! group's route when no router answers (or a router does not know the topic yet).
use std::net::IpAddr;
use std::time::Duration;

use raftmq_cluster::{GroupRoute, TopicGroupRoute};

use crate::broker::Broker;
use crate::status::{self, ApiError};
use crate::v2::{
    Address, AddressScheme, Broker as WireBroker, Code, Endpoints, MessageQueue, MessageType, Permission, QueryRouteRequest,
    QueryRouteResponse, Resource,
};

/// How long a node waits for one router before trying the next (or answering alone).
const ROUTER_QUERY_TIMEOUT: Duration = Duration::from_millis(1000);

pub fn endpoints(addrs: &[String]) -> Endpoints {
    let addresses: Vec<Address> = addrs
        .iter()
        .filter_map(|a| a.rsplit_once(':'))
        .filter_map(|(host, port)| Some(Address { host: host.trim_matches(['[', ']']).to_string(), port: port.parse().ok()? }))
        .collect();
    let scheme = match addresses.first().and_then(|a| a.host.parse::<IpAddr>().ok()) {
        Some(IpAddr::V4(_)) => AddressScheme::IPv4,
        Some(IpAddr::V6(_)) => AddressScheme::IPv6,
        None => AddressScheme::DomainName,
    };
    Endpoints { scheme: scheme as i32, addresses }
}

/// The topic a QueryRoute asks for, if its name is legal.
pub fn requested_topic(request: &QueryRouteRequest) -> Result<Resource, ApiError> {
    let topic = request.topic.clone().ok_or_else(|| ApiError::new(Code::IllegalTopic, "topic is required"))?;
    status::check_topic_name(&topic.name)?;
    Ok(topic)
}

pub fn topic_not_found(topic: &str) -> ApiError {
    ApiError::new(Code::TopicNotFound, format!("topic {topic} does not exist; create it with `raftmq topic create`"))
}

/// The route over the given groups: each group's queues 0..n, served by that group's nodes.
pub fn route_response(topic: &Resource, groups: &[TopicGroupRoute]) -> QueryRouteResponse {
    let message_queues = groups
        .iter()
        .flat_map(|g| {
            let broker = WireBroker { name: g.route.group.clone(), id: 0, endpoints: Some(endpoints(&g.route.endpoints)) };
            (0..g.queues).map(move |id| MessageQueue {
                topic: Some(topic.clone()),
                id: id as i32,
                permission: Permission::ReadWrite as i32,
                broker: Some(broker.clone()),
                accept_message_types: vec![MessageType::Normal as i32, MessageType::Fifo as i32],
            })
        })
        .collect();
    QueryRouteResponse { status: Some(status::ok()), message_queues }
}

pub async fn query_route(broker: &Broker, request: QueryRouteRequest) -> Result<QueryRouteResponse, ApiError> {
    let topic = requested_topic(&request)?;
    if let Some(merged) = ask_routers(broker, &request).await {
        return Ok(merged);
    }
    let config = broker.state().topic(&topic.name).ok_or_else(|| topic_not_found(&topic.name))?;
    let own: GroupRoute = broker.group_route();
    Ok(route_response(&topic, &[TopicGroupRoute { route: own, queues: config.queue_count }]))
}

/// The first router's route that has the topic; None when no router is configured or answers.
async fn ask_routers(broker: &Broker, request: &QueryRouteRequest) -> Option<QueryRouteResponse> {
    // The node asks as itself: a route does not depend on which client wants it.
    let client_id = format!("raftmq-node-{}-{}", broker.config.group, broker.config.node_id);
    for router in &broker.config.routers {
        let Ok(channel) = broker.channel_to(router) else { continue };
        let mut call = crate::cli::client::request(&client_id, request.clone());
        call.set_timeout(ROUTER_QUERY_TIMEOUT);
        match crate::cli::client::messaging(channel).query_route(call).await {
            Ok(response) => {
                let response = response.into_inner();
                if response.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32) && !response.message_queues.is_empty() {
                    return Some(response);
                }
            }
            Err(e) => tracing::debug!("router {router} did not answer QueryRoute: {}", e.message()),
        }
    }
    None
}
