//! raftmq-raft: openraft glue for raftmq.
//!
//! - `log_store`: `RaftLogStorage` over the store's commitlog (the Raft log *is* the commitlog);
//! - `state_machine`: applies entries (queue offsets, consume queues, metadata in redb);
//! - `network` / `peer_service`: the private peer gRPC API (client and server);
//! - `node`: assembles one Raft node, bootstraps or rejoins the group.
//! The crate never reaches up into the binary; message semantics live in `command` (the commands
//! that go through the log) and in the binary.

pub mod command;
pub mod consumer;
pub mod log_store;
pub mod metadata_table;
pub mod network;
pub mod node;
pub mod peer_service;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub mod pb {
    tonic::include_proto!("raftmq.peer");
}

pub use node::{NodeConfig, RaftNode};
pub use types::{CommandResponse, EncodedCommand, NodeId, PeerNode, Raft, TypeConfig};
