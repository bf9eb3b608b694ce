//! openraft's type configuration for raftmq.
//!
//! The log id is (term, index) (`leader_id_std`): a commitlog record carries exactly that.
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A proposed command, already encoded (see `command.rs`). Kept as bytes so that the leader
/// encodes it once and the log, the network and the followers only copy `Bytes` handles.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedCommand(pub Bytes);

impl fmt::Debug for EncodedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncodedCommand({} bytes)", self.0.len())
    }
}

impl fmt::Display for EncodedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying a command produced, returned to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    #[default]
    None,
    /// Messages appended to (topic, queue) at `first_offset`, `first_offset + 1`, ...
    Sent { queue_id: u32, first_offset: u64, store_timestamp_ms: i64 },
    TopicCreated,
    TopicDeleted,
    Consumer(crate::consumer::ConsumerResponse),
    /// The command was valid when proposed but not when applied (e.g. the topic was deleted).
    Rejected(String),
}

/// A member of the group: where peers and clients reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PeerNode {
    pub peer_addr: String,
    pub client_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer={} client={}", self.peer_addr, self.client_addr)
    }
}

pub type NodeId = u64;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = EncodedCommand,
        R = CommandResponse,
        NodeId = NodeId,
        Node = PeerNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
);

pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type CommittedLeaderId = openraft::vote::leader_id_std::CommittedLeaderId<u64>;
pub type LogId = openraft::LogId<CommittedLeaderId>;
pub type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
pub type Membership = openraft::Membership<NodeId, PeerNode>;
pub type StoredMembership = openraft::StoredMembership<CommittedLeaderId, NodeId, PeerNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<CommittedLeaderId, NodeId, PeerNode>;

/// A copy of the node's current Raft metrics.
pub fn current_metrics(raft: &Raft) -> openraft::RaftMetrics<TypeConfig> {
    with_metrics(raft, Clone::clone)
}

/// Reads the latest metrics in place (no copy; keep `read` short, it holds the watch's lock).
pub fn with_metrics<T>(raft: &Raft, read: impl FnOnce(&openraft::RaftMetrics<TypeConfig>) -> T) -> T {
    use openraft::async_runtime::watch::WatchReceiver;
    read(&raft.metrics().borrow_watched())
}
