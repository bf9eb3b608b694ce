//! The router's registry: what every live broker node last said about itself.
//!
//! Broker nodes re-register every second or so; a node not heard from within `node_timeout`
//! counts as gone and drops out of routes (no disk state: a restarted router is complete again
//! after one registration round). Every query takes `now`, so expiry is exact whether or not
//! [`Registry::expire`] has run; `register` sweeps, which bounds memory.
//!
//! A topic's route is the list of live groups that have it. Within a group:
//! - the endpoints are all its live nodes' advertised client addresses (clients may call any
//!   node; followers forward to the leader);
//! - the queue count comes from the live node that has applied the most, since the topic set is
//!   applied state and a lagging node may not list a new topic yet.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::GroupRoute;
use crate::limits::*;

/// One broker node's registration, as sent with every heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRegistration {
    pub group: String,
    pub node_id: u64,
    /// "leader", "follower", "candidate", "learner", "rejoining".
    pub role: String,
    pub term: u64,
    /// The leader this node knows of; 0 = none.
    pub leader_id: u64,
    /// The client address the node advertises in routes (`host:port`).
    pub client_endpoint: String,
    /// Where the router reaches the node's admin API (`host:port`).
    pub admin_endpoint: String,
    pub last_log_index: u64,
    pub committed: u64,
    pub applied: u64,
    pub max_body_bytes: u64,
    /// Topic name -> queue count in this group.
    pub topics: BTreeMap<String, u32>,
}

/// A topic's queues in one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicGroupRoute {
    pub route: GroupRoute,
    pub queues: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("group name {0:?} is invalid: use 1 to {GROUP_NAME_BYTES_MAX} characters of [%a-zA-Z0-9_-]")]
    BadGroup(String),
    #[error("node id 0 is reserved: broker nodes are numbered from 1")]
    BadNodeId,
    #[error("{what} {value:?} is not host:port (at most {ENDPOINT_BYTES_MAX} characters)")]
    BadEndpoint { what: &'static str, value: String },
    #[error("topic name {0:?} is invalid: use 1 to {TOPIC_NAME_BYTES_MAX} characters of [%a-zA-Z0-9_-]")]
    BadTopic(String),
    #[error("topic {topic} has {queues} queues: use 1 to {QUEUES_MAX}")]
    BadQueueCount { topic: String, queues: u32 },
    #[error("too many {what}: at most {max}")]
    Full { what: &'static str, max: usize },
}

struct Entry {
    registration: NodeRegistration,
    last_seen: Instant,
}

pub struct Registry {
    node_timeout: Duration,
    /// group -> node id -> latest registration.
    groups: BTreeMap<String, BTreeMap<u64, Entry>>,
}

/// `[%a-zA-Z0-9_-]{1,max}`: RocketMQ's pattern for topic and group names.
pub fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty() && name.len() <= max && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '%' | '_' | '-'))
}

/// `host:port` with a non-zero port and a host without spaces (`[v6]:port` too).
pub fn valid_endpoint(endpoint: &str) -> bool {
    let Some((host, port)) = endpoint.rsplit_once(':') else { return false };
    endpoint.len() <= ENDPOINT_BYTES_MAX
        && !host.is_empty()
        && !host.chars().any(|c| c.is_whitespace() || c == '/' || c == ';' || c == ',')
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

fn check(registration: &NodeRegistration) -> Result<(), RegistryError> {
    if !valid_name(&registration.group, GROUP_NAME_BYTES_MAX) {
        return Err(RegistryError::BadGroup(registration.group.clone()));
    }
    if registration.node_id == 0 {
        return Err(RegistryError::BadNodeId);
    }
    for (what, value) in [("client endpoint", &registration.client_endpoint), ("admin endpoint", &registration.admin_endpoint)] {
        if !valid_endpoint(value) {
            return Err(RegistryError::BadEndpoint { what, value: value.clone() });
        }
    }
    if registration.topics.len() > TOPICS_PER_NODE_MAX {
        return Err(RegistryError::Full { what: "topics in one registration", max: TOPICS_PER_NODE_MAX });
    }
    for (topic, &queues) in &registration.topics {
        if !valid_name(topic, TOPIC_NAME_BYTES_MAX) {
            return Err(RegistryError::BadTopic(topic.clone()));
        }
        if queues == 0 || queues > QUEUES_MAX {
            return Err(RegistryError::BadQueueCount { topic: topic.clone(), queues });
        }
    }
    Ok(())
}

impl Registry {
    pub fn new(node_timeout: Duration) -> Registry {
        Registry { node_timeout, groups: BTreeMap::new() }
    }

    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    fn live(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.last_seen) <= self.node_timeout
    }

    /// Records a node's registration; a rejected one changes nothing.
    pub fn register(&mut self, registration: NodeRegistration, now: Instant) -> Result<(), RegistryError> {
        check(&registration)?;
        self.expire(now);
        if !self.groups.contains_key(&registration.group) && self.groups.len() >= GROUPS_MAX {
            return Err(RegistryError::Full { what: "groups", max: GROUPS_MAX });
        }
        let nodes = self.groups.entry(registration.group.clone()).or_default();
        if !nodes.contains_key(&registration.node_id) && nodes.len() >= NODES_PER_GROUP_MAX {
            return Err(RegistryError::Full { what: "nodes in one group", max: NODES_PER_GROUP_MAX });
        }
        nodes.insert(registration.node_id, Entry { registration, last_seen: now });
        Ok(())
    }

    /// Forgets nodes not heard from within the timeout, and groups left without nodes.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.node_timeout;
        for nodes in self.groups.values_mut() {
            nodes.retain(|_, e| now.saturating_duration_since(e.last_seen) <= timeout);
        }
        self.groups.retain(|_, nodes| !nodes.is_empty());
    }

    /// Every live group with its live nodes (by node id), groups by name.
    pub fn groups(&self, now: Instant) -> Vec<(String, Vec<NodeRegistration>)> {
        self.groups
            .iter()
            .map(|(group, nodes)| {
                let live = nodes.values().filter(|e| self.live(e, now)).map(|e| e.registration.clone()).collect::<Vec<_>>();
                (group.clone(), live)
            })
            .filter(|(_, nodes)| !nodes.is_empty())
            .collect()
    }

    /// The topic's queues in every live group that has it, groups by name; empty if none has it.
    pub fn route(&self, topic: &str, now: Instant) -> Vec<TopicGroupRoute> {
        self.groups(now)
            .into_iter()
            .filter_map(|(group, nodes)| {
                let freshest = nodes.iter().max_by_key(|n| (n.applied, n.term))?;
                let queues = *freshest.topics.get(topic)?;
                let endpoints = nodes.iter().map(|n| n.client_endpoint.clone()).collect();
                Some(TopicGroupRoute { route: GroupRoute::new(group, endpoints), queues })
            })
            .collect()
    }

    /// The live node that leads `group` in the highest term, if one says so.
    pub fn leader(&self, group: &str, now: Instant) -> Option<NodeRegistration> {
        let nodes = self.groups.get(group)?;
        nodes
            .values()
            .filter(|e| self.live(e, now) && e.registration.role == "leader")
            .max_by_key(|e| e.registration.term)
            .map(|e| e.registration.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(group: &str, id: u64, topics: &[(&str, u32)]) -> NodeRegistration {
        NodeRegistration {
            group: group.into(),
            node_id: id,
            role: if id == 1 { "leader".into() } else { "follower".into() },
            term: 3,
            leader_id: 1,
            client_endpoint: format!("{group}-node{id}:8081"),
            admin_endpoint: format!("127.0.0.1:{}", 8080 + id),
            applied: 10,
            topics: topics.iter().map(|(t, q)| (t.to_string(), *q)).collect(),
            ..Default::default()
        }
    }

    fn endpoint(group: &str, id: u64) -> String {
        node(group, id, &[]).client_endpoint
    }

    // Goal: a topic placed on two groups routes to both, each with its own nodes and queue count.
    #[test]
    fn route_merges_the_groups_that_have_the_topic() {
        let now = Instant::now();
        let mut registry = Registry::new(Duration::from_secs(3));
        for id in 1..=3 {
            registry.register(node("g1", id, &[("orders", 4)]), now).unwrap();
            registry.register(node("g22", id, &[("orders", 2), ("only-g22", 1)]), now).unwrap();
        }
        let route = registry.route("orders", now);
        assert_eq!(route.len(), 2);
        assert_eq!(route[0].route.group, "g1");
        assert_eq!(route[0].queues, 4);
        assert_eq!(route[0].route.endpoints, (1..=3).map(|id| endpoint("g1", id)).collect::<Vec<_>>());
        assert_eq!(route[1].route.group, "g22");
        assert_eq!(route[1].queues, 2);
        assert_eq!(registry.route("only-g22", now).iter().map(|r| r.route.group.as_str()).collect::<Vec<_>>(), ["g22"]);
        assert!(registry.route("missing", now).is_empty());
        assert_eq!(registry.leader("g1", now).map(|n| n.node_id), Some(1));
    }

    // Goal: the queue count comes from the node that applied the most (a lagging node lacks new topics).
    #[test]
    fn freshest_node_decides_the_queue_count() {
        let now = Instant::now();
        let mut registry = Registry::new(Duration::from_secs(3));
        registry.register(node("g1", 1, &[]), now).unwrap();
        registry.register(NodeRegistration { applied: 11, ..node("g1", 2, &[("new", 5)]) }, now).unwrap();
        assert_eq!(registry.route("new", now)[0].queues, 5);
        assert_eq!(registry.route("new", now)[0].route.endpoints.len(), 2, "every live node serves the group");
    }

    // Goal: a node not heard from within the timeout drops out of routes; it is back after it registers again.
    #[test]
    fn silent_nodes_expire_and_come_back() {
        let start = Instant::now();
        let mut registry = Registry::new(Duration::from_secs(3));
        for id in 1..=3 {
            registry.register(node("g1", id, &[("orders", 1)]), start).unwrap();
        }
        let later = start + Duration::from_secs(2);
        registry.register(node("g1", 1, &[("orders", 1)]), later).unwrap();
        registry.register(node("g1", 2, &[("orders", 1)]), later).unwrap();
        let past_timeout = start + Duration::from_secs(4);
        assert_eq!(registry.route("orders", past_timeout)[0].route.endpoints, [endpoint("g1", 1), endpoint("g1", 2)]);
        registry.register(node("g1", 3, &[("orders", 1)]), past_timeout).unwrap();
        assert_eq!(registry.route("orders", past_timeout)[0].route.endpoints.len(), 3);
        // Everyone silent: the group is gone, from queries and (after a sweep) from memory.
        let much_later = past_timeout + Duration::from_secs(10);
        assert!(registry.route("orders", much_later).is_empty());
        assert!(registry.groups(much_later).is_empty());
        registry.expire(much_later);
        assert!(registry.groups.is_empty());
    }

    // Goal: bad registrations are rejected with a reason and change nothing.
    #[test]
    fn bad_registrations_are_rejected() {
        let now = Instant::now();
        let mut registry = Registry::new(Duration::from_secs(3));
        let good = node("g1", 1, &[("orders", 1)]);
        let cases = [
            (NodeRegistration { group: "".into(), ..good.clone() }, "group name"),
            (NodeRegistration { group: "g 1".into(), ..good.clone() }, "group name"),
            (NodeRegistration { node_id: 0, ..good.clone() }, "node id 0"),
            (NodeRegistration { client_endpoint: "nohost".into(), ..good.clone() }, "client endpoint"),
            (NodeRegistration { client_endpoint: "h:0".into(), ..good.clone() }, "client endpoint"),
            (NodeRegistration { client_endpoint: ":8081".into(), ..good.clone() }, "client endpoint"),
            (NodeRegistration { admin_endpoint: "h:99999".into(), ..good.clone() }, "admin endpoint"),
            (node("g1", 1, &[("bad/topic", 1)]), "topic name"),
            (node("g1", 1, &[("orders", 0)]), "queues"),
        ];
        for (bad, says) in cases {
            let error = registry.register(bad.clone(), now).unwrap_err().to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
        assert!(registry.groups(now).is_empty());
    }

    // Goal: the registry's size is bounded: past the limits, new groups and nodes are refused.
    #[test]
    fn limits_bound_groups_and_nodes() {
        let now = Instant::now();
        let mut registry = Registry::new(Duration::from_secs(3));
        for g in 0..GROUPS_MAX {
            registry.register(node(&format!("g{g}"), 1, &[]), now).unwrap();
        }
        assert!(matches!(registry.register(node("one-more", 1, &[]), now), Err(RegistryError::Full { .. })));
        for id in 2..=NODES_PER_GROUP_MAX as u64 {
            registry.register(node("g0", id, &[]), now).unwrap();
        }
        assert!(matches!(registry.register(node("g0", 99, &[]), now), Err(RegistryError::Full { .. })));
        // A known node may always re-register.
        registry.register(node("g0", 2, &[]), now).unwrap();
    }
}
