//! The broker node as the services see it: its Raft node, leadership, proposals, the client
//! endpoints of its group, and channels to the leader for forwarding.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::ServerState;
use openraft::errors::{ClientWriteError, RaftError};
use parking_lot::RwLock;
use raftmq_raft::pb::NodeStateRequest;
use raftmq_raft::state_machine::SmShared;
use raftmq_raft::{CommandResponse, EncodedCommand, RaftNode};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::config::ServerConfig;
use crate::limits::PROPOSALS_IN_FLIGHT_MAX;
use crate::status::ApiError;
use crate::v2::Code;

/// How long a proposal waits for a leader's lapsed quorum lease to come back (about an election
/// timeout), and how often it retries meanwhile.
const LEASE_WAIT_MAX: Duration = Duration::from_millis(1000);
const LEASE_RETRY_INTERVAL: Duration = Duration::from_millis(20);
/// Peers and routers this node talks to, with room to spare.
const CHANNELS_MAX: usize = 64;

pub struct Broker {
    pub config: ServerConfig,
    pub node: RaftNode,
    /// Advertised client addresses of the group's nodes, learned from the peers (for routes).
    client_addrs: RwLock<BTreeMap<u64, String>>,
    /// Where this node reaches each peer's client API to forward calls: the peer's host (as in
    /// --peers) with its client listen port. Differs from the advertised address when clients
    /// come through NAT or published container ports.
    forward_addrs: RwLock<BTreeMap<u64, String>>,
    round_robin: AtomicU64,
    proposals: Semaphore,
    /// To peers' client APIs (forwarding) and to routers.
    channels: crate::channels::ChannelCache,
    /// Consumer-group clients this node heard from lately (for `raftmq group describe`).
    pub members: crate::members::Members,
    /// Merges concurrent sends into fewer log entries (see messaging/batcher.rs).
    pub sends: crate::messaging::batcher::Batcher,
}

/// Why a call can't be served here.
pub enum NotServed {
    /// Another node leads: forward to its client address.
    Leader(String),
    Error(ApiError),
}

impl Broker {
    pub fn new(config: ServerConfig, node: RaftNode) -> Arc<Broker> {
        let mut client_addrs = BTreeMap::new();
        client_addrs.insert(config.node_id, config.advertise.clone());
        let broker = Arc::new_cyclic(|weak| Broker {
            config,
            node,
            client_addrs: RwLock::new(client_addrs),
            forward_addrs: RwLock::new(BTreeMap::new()),
            round_robin: AtomicU64::new(0),
            proposals: Semaphore::new(PROPOSALS_IN_FLIGHT_MAX),
            channels: crate::channels::ChannelCache::new(CHANNELS_MAX),
            members: Default::default(),
            sends: crate::messaging::batcher::Batcher::start(weak.clone(), PROPOSALS_IN_FLIGHT_MAX),
        });
        tokio::spawn(discover_client_addrs(Arc::downgrade(&broker)));
        broker
    }

    pub fn state(&self) -> &Arc<SmShared> {
        &self.node.state
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.is_leader()
    }

    /// Ok(()) if this node leads; otherwise where to forward, or why nobody can serve.
    pub fn check_leader(&self) -> Result<(), NotServed> {
        // Read in place: this runs on every request, and a copy of the metrics allocates.
        let (state, current_leader) = raftmq_raft::types::with_metrics(&self.node.raft, |m| (m.state, m.current_leader));
        if state == ServerState::Leader {
            return Ok(());
        }
        let Some(leader) = current_leader else {
            return Err(NotServed::Error(ApiError::unavailable("the group has no leader right now; retry shortly")));
        };
        match self.forward_addrs.read().get(&leader) {
            Some(addr) if leader != self.config.node_id => Err(NotServed::Leader(addr.clone())),
            _ => Err(NotServed::Error(ApiError::unavailable(format!("leader {leader} is not reachable yet; retry shortly")))),
        }
    }

    /// This group as clients see it: its name and every node's client endpoint.
    pub fn group_route(&self) -> raftmq_cluster::GroupRoute {
        raftmq_cluster::GroupRoute::new(self.config.group.clone(), self.client_addrs.read().values().cloned().collect())
    }

    /// Where this node reaches another node's client API (admin fan-out, forwarding).
    pub fn forward_addr_of(&self, node_id: u64) -> Option<String> {
        self.forward_addrs.read().get(&node_id).cloned()
    }

    pub fn next_round_robin(&self) -> u64 {
        self.round_robin.fetch_add(1, Ordering::Relaxed)
    }

    /// Proposes a command and waits until it is committed and applied.
    pub async fn propose(&self, command: EncodedCommand) -> Result<CommandResponse, ProposeError> {
        let _permit = self
            .proposals
            .try_acquire()
            .map_err(|_| ProposeError::Api(ApiError::new(Code::TooManyRequests, "too many requests in flight; slow down")))?;
        let deadline = tokio::time::Instant::now() + LEASE_WAIT_MAX;
        loop {
            match self.node.raft.client_write(command.clone()).await {
                Ok(response) => return Ok(response.data),
                // Refused before anything was written. A leader whose quorum lease lapsed (just
                // elected, or a member just restarted) refuses writes for a moment: wait for the
                // lease while this node still leads; otherwise the caller forwards.
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))
                    if self.is_leader() && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(LEASE_RETRY_INTERVAL).await;
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => return Err(ProposeError::NotLeader),
                Err(e) => return Err(ProposeError::Api(ApiError::unavailable(format!("write not confirmed: {e}")))),
            }
        }
    }

    /// A cached channel to another node's client endpoint, or to a router.
    pub fn channel_to(&self, addr: &str) -> Result<Channel, ApiError> {
        self.channels.get(addr)
    }
}

#[derive(Clone)]
pub enum ProposeError {
    /// Leadership moved before the command was accepted: nothing was written; forward it.
    NotLeader,
    Api(ApiError),
}

impl From<ApiError> for ProposeError {
    fn from(e: ApiError) -> Self {
        ProposeError::Api(e)
    }
}

/// Keeps the map of peers' client addresses fresh (peers tell theirs over the peer API).
async fn discover_client_addrs(broker: std::sync::Weak<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(broker) = broker.upgrade() else { return };
        for (&id, peer_addr) in broker.config.peers.iter().filter(|(id, _)| **id != broker.config.node_id) {
            let Ok(channel) = broker.channel_to(peer_addr) else { continue };
            let mut request = tonic::Request::new(NodeStateRequest {});
            request.set_timeout(Duration::from_millis(500));
            if let Ok(response) = raftmq_raft::network::peer_client(channel).node_state(request).await {
                let state = response.into_inner();
                if !state.client_addr.is_empty() {
                    broker.client_addrs.write().insert(id, state.client_addr);
                }
                if let Some((host, _)) = peer_addr.rsplit_once(':') {
                    broker.forward_addrs.write().insert(id, format!("{host}:{}", state.client_listen_port));
                }
            }
        }
    }
}
