//! `raftmq router`: the routing service (NameServer stand-in). Broker nodes register with it
//! every second or so ([`registration_worker`]); it keeps them in a `raftmq_cluster::Registry`
//! (memory only, so a restarted router is whole again after one round) and serves, on one port:
//! - apache.rocketmq.v2 QueryRoute (every live group that has the topic), Heartbeat, Telemetry
//!   and NotifyClientTermination, so a client may use the router as its access point; data calls
//!   go to the broker endpoints listed in routes ([`messaging_service`]);
//! - raftmq.router Register and PlaceTopic ([`router_service`], [`placement`]);
//! - the part of raftmq.admin that makes sense without data: CreateTopic (on every live group)
//!   and ClusterStatus (every group) ([`admin_service`]), so the CLI works against a router.
pub mod admin_service;
pub mod messaging_service;
pub mod placement;
pub mod registration_worker;
pub mod router_service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use raftmq_cluster::Registry;
use raftmq_cluster::limits::{GROUPS_MAX, NODES_PER_GROUP_MAX, REGISTRATION_BYTES_MAX};

use crate::admin_pb::admin_server::AdminServer;
use crate::channels::ChannelCache;
use crate::router_pb::router_server::RouterServer;
use crate::v2::messaging_service_server::MessagingServiceServer;

pub const NODE_TIMEOUT_MS_DEFAULT: u64 = 5000;
pub const ROUTER_LISTEN_DEFAULT: &str = "127.0.0.1:8080";

#[derive(clap::Args, Debug, Clone)]
pub struct RouterArgs {
    /// Address to listen on for clients (QueryRoute), broker registrations and admin calls.
    #[arg(long, env = "RAFTMQ_ROUTER_LISTEN", default_value = ROUTER_LISTEN_DEFAULT)]
    pub listen: SocketAddr,
    /// A broker node not heard from for this long (ms) drops out of routes; nodes register every second.
    #[arg(long, env = "RAFTMQ_NODE_TIMEOUT_MS", default_value_t = NODE_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(registration_worker::REGISTER_INTERVAL_MS * 2..=600_000))]
    pub node_timeout_ms: u64,
}

/// What the router's services share.
pub struct RouterState {
    pub registry: Mutex<Registry>,
    /// To the broker nodes' admin APIs (topic placement).
    pub channels: ChannelCache,
}

impl RouterState {
    pub fn new(node_timeout: Duration) -> Arc<RouterState> {
        Arc::new(RouterState {
            registry: Mutex::new(Registry::new(node_timeout)),
            channels: ChannelCache::new(GROUPS_MAX * NODES_PER_GROUP_MAX),
        })
    }

    /// The smallest body limit of the live nodes (what a client may send to every group).
    pub fn max_body_bytes(&self) -> usize {
        let registry = self.registry.lock();
        let smallest = registry.groups(Instant::now()).iter().flat_map(|(_, nodes)| nodes.iter().map(|n| n.max_body_bytes)).filter(|&b| b > 0).min();
        smallest.map_or(crate::limits::BODY_BYTES_DEFAULT, |b| (b as usize).min(crate::limits::BODY_BYTES_MAX))
    }
}

pub struct RunningRouter {
    pub state: Arc<RouterState>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

impl RunningRouter {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.served.await;
    }
}

pub async fn start(args: RouterArgs) -> anyhow::Result<RunningRouter> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is another raftmq router or program using it?)", args.listen))?;
    let state = RouterState::new(Duration::from_millis(args.node_timeout_ms));
    let messaging = MessagingServiceServer::new(messaging_service::RouterMessagingService { state: state.clone() });
    let admin = AdminServer::new(admin_service::RouterAdminService { state: state.clone() });
    let router = RouterServer::new(router_service::RouterServiceImpl { state: state.clone() })
        .max_decoding_message_size(REGISTRATION_BYTES_MAX);
    let services = tonic::transport::Server::builder().add_service(messaging).add_service(admin).add_service(router);
    let (stop, served) = crate::server::spawn_serving(listener, services, "router server");
    tracing::info!("raftmq router listening on {} (node timeout {} ms)", args.listen, args.node_timeout_ms);
    Ok(RunningRouter { state, stop, served })
}
