//! raftmq: the binary's library. Message semantics, the client-facing gRPC services, the admin
//! API, configuration and the CLI. Storage and Raft live in the `store` and `raft` crates.

pub mod admin;
pub mod admin_service;
pub mod broker;
pub mod channels;
pub mod cli;
pub mod config;
pub mod cork;
pub mod dev;
pub mod limits;
pub mod members;
pub mod messaging;
pub mod router;
pub mod server;
pub mod status;

pub mod v2 {
    tonic::include_proto!("apache.rocketmq.v2");
}

pub mod admin_pb {
    tonic::include_proto!("raftmq.admin");
}

pub mod router_pb {
    tonic::include_proto!("raftmq.router");
}
