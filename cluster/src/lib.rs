//! raftmq-cluster: routing over broker groups (the NameServer stand-in).
//!
//! For now one group serves every topic: a route is the group's name and its nodes' client
//! endpoints. Multi-group placement and the router service come with the routing issue.

/// The client-facing view of one broker group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRoute {
    pub group: String,
    /// `host:port` of every node's client endpoint, sorted so every node reports the same list.
    pub endpoints: Vec<String>,
}

impl GroupRoute {
    pub fn new(group: impl Into<String>, mut endpoints: Vec<String>) -> Self {
        endpoints.sort();
        endpoints.dedup();
        GroupRoute { group: group.into(), endpoints }
    }
}
