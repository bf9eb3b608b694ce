//! QueryRoute: every queue of the topic, served by this group's nodes (reported as broker id 0,
//! the only id the official clients use).
use std::net::IpAddr;

use crate::broker::Broker;
use crate::status::{self, ApiError};
use crate::v2::{Address, AddressScheme, Broker as WireBroker, Code, Endpoints, MessageQueue, MessageType, Permission, QueryRouteRequest, QueryRouteResponse};

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

pub fn query_route(broker: &Broker, request: QueryRouteRequest) -> Result<QueryRouteResponse, ApiError> {
    let topic = request.topic.ok_or_else(|| ApiError::new(Code::IllegalTopic, "topic is required"))?;
    status::check_topic_name(&topic.name)?;
    let config = broker
        .state()
        .topic(&topic.name)
        .ok_or_else(|| ApiError::new(Code::TopicNotFound, format!("topic {} does not exist; create it with `raftmq topic create`", topic.name)))?;
    let route = broker.group_route();
    let wire_broker = WireBroker { name: route.group, id: 0, endpoints: Some(endpoints(&route.endpoints)) };
    let message_queues = (0..config.queue_count)
        .map(|id| MessageQueue {
            topic: Some(topic.clone()),
            id: id as i32,
            permission: Permission::ReadWrite as i32,
            broker: Some(wire_broker.clone()),
            accept_message_types: vec![MessageType::Normal as i32, MessageType::Fifo as i32],
        })
        .collect();
    Ok(QueryRouteResponse { status: Some(status::ok()), message_queues })
}
