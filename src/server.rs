//! Runs one broker node: its Raft node (peer port) and the client port (v2 + admin).
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use raftmq_raft::{NodeConfig, PeerNode, RaftNode};

use crate::admin_pb::admin_server::AdminServer;
use crate::admin_service::AdminServiceImpl;
use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::limits::GRPC_MESSAGE_BYTES_MAX;
use crate::messaging::MessagingServiceImpl;
use crate::v2::messaging_service_server::MessagingServiceServer;

pub struct RunningServer {
    pub broker: Arc<Broker>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.served.await;
        self.broker.node.shutdown().await;
    }
}

pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    // Bind the client port first so that a busy port fails before anything is opened.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for clients on {} (is another raftmq or program using it?)", config.listen))?;
    let peers: BTreeMap<u64, PeerNode> =
        config.peers.iter().map(|(&id, addr)| (id, PeerNode { peer_addr: addr.clone(), client_addr: String::new() })).collect();
    let node_config = NodeConfig {
        node_id: config.node_id,
        group: config.group.clone(),
        data_dir: config.data_dir.clone(),
        peer_listen: config.peer_listen,
        client_addr: config.advertise.clone(),
        client_listen_port: config.listen.port(),
        peers,
        flush: config.flush,
        segment_size_bytes: config.segment_size_bytes,
        page_cache_tail_bytes: config.page_cache_tail_bytes,
        record_payload_bytes_max: crate::limits::RECORD_PAYLOAD_BYTES_MAX,
        snapshot_interval_entries: config.snapshot_interval_entries,
        retention: config.retention.clone(),
        // Failover time is about an election timeout plus ~0.6 s (README, Performance): 200-400 ms
        // keeps the median under 1 s; the 50 ms heartbeat leaves 4 missed beats before an election.
        election_timeout_min_ms: 200,
        election_timeout_max_ms: 400,
        heartbeat_interval_ms: 50,
    };
    let node = RaftNode::start(node_config).await?;
    let broker = Broker::new(config.clone(), node);
    crate::router::registration_worker::spawn(&broker);
    let messaging = MessagingServiceServer::new(MessagingServiceImpl { broker: broker.clone() })
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
    let admin = AdminServer::new(AdminServiceImpl { broker: broker.clone() });
    let services = tonic::transport::Server::builder().add_service(messaging).add_service(admin);
    let (stop, served) = spawn_serving(listener, services, "client server");
    tracing::info!(
        node = config.node_id,
        group = %config.group,
        flush = ?config.flush,
        "raftmq node serving clients on {} (advertised as {}), peers on {}",
        config.listen,
        config.advertise,
        config.peer_listen
    );
    if !config.routers.is_empty() {
        tracing::info!("registering with routers {}", config.routers.join(", "));
    }
    Ok(RunningServer { broker, stop, served })
}

/// Serves `services` on `listener` until the returned sender fires (or is dropped).
pub fn spawn_serving(
    listener: tokio::net::TcpListener,
    services: tonic::transport::server::Router,
    what: &'static str,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Answers that become ready together leave in one write (see cork.rs).
    let incoming = futures::StreamExt::map(raftmq_raft::network::nodelay_incoming(listener), |stream| stream.map(crate::cork::Corked::new));
    let served = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = services.serve_with_incoming_shutdown(incoming, shutdown).await {
            tracing::error!("{what} stopped: {e}");
        }
    });
    (stop, served)
}
