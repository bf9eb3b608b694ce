//! raftmq-cluster: routing over broker groups (the NameServer stand-in).
//!
//! A route is a list of groups, each with its live nodes' client endpoints and the topic's queue
//! count in that group. [`registry::Registry`] builds it from the registrations that broker
//! nodes send every second or so; it is pure data (time is passed in), so the router service in
//! the binary and the unit tests drive it alike.
pub mod limits;
pub mod registry;

pub use registry::{NodeRegistration, Registry, RegistryError, TopicGroupRoute};

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
