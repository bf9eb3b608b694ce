//! One Raft node of a broker group: storage, openraft, the peer server, and the join logic.
//!
//! Joining, step by step:
//! 1. A data dir records its node id and group; opening another node's dir is refused.
//! 2. A node with Raft state (a log or a vote) just runs.
//! 3. A node with no Raft state may have lost its data, and with it a vote it cast: from its first
//!    instant (before peers can reach it) it refuses vote requests and does not campaign. It asks
//!    every peer for its state. If any peer is initialized and this node holds no `founder` marker
//!    (below), it is new or lost its data and must not vote until that cannot matter. It persists a `rejoining` marker, disables its own
//!    elections and refuses vote requests, and asks the leader to make it a learner. The leader
//!    promotes learners back to voters once they have caught up (`promote_caught_up_learners`).
//!    The node clears the marker once it sees itself a voter again after having been a learner.
//! 4. If every peer answers and none is initialized, the cluster is new: the lowest id first has
//!    every peer durably record a `founder` marker (PrepareBootstrap), then initializes the group
//!    with all configured peers as voters. A founder that sees the group initialized before the
//!    first entries reach it is therefore not mistaken for a node that lost its data; a node whose
//!    dir is wiped loses the marker with it.
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use raftmq_store::{CommitLog, CommitLogConfig, ConsumeQueueSet, FileSystem, FlushPolicy, RealFs, RetentionPolicy, VoteFile};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::log_store::LogStore;
use crate::network::{PEER_MESSAGE_BYTES_MAX, PeerNetworkFactory, peer_channel, peer_client};
use crate::pb::raft_peer_server::RaftPeerServer;
use crate::pb::{NodeStateRequest, PrepareBootstrapRequest, RejoinRequest};
use crate::peer_service::PeerService;
use crate::state_machine::{SmShared, StateMachine};
use crate::types::{NodeId, PeerNode, Raft};

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub group: String,
    pub data_dir: PathBuf,
    pub peer_listen: SocketAddr,
    /// Where clients reach this node (advertised in routes).
    pub client_addr: String,
    /// The port the client API listens on (peers forward calls to it at this node's peer host).
    pub client_listen_port: u16,
    /// Every member of the group (including this node).
    pub peers: BTreeMap<NodeId, PeerNode>,
    pub flush: FlushPolicy,
    pub segment_size_bytes: u64,
    /// See `CommitLogConfig::page_cache_tail_bytes`.
    pub page_cache_tail_bytes: Option<u64>,
    /// Largest record payload (one encoded command) the log accepts.
    pub record_payload_bytes_max: usize,
    /// A snapshot is built every this many applied entries; the log is then purged up to it.
    pub snapshot_interval_entries: u64,
    /// Which purged segments retention deletes (by age and total size).
    pub retention: RetentionPolicy,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data dir {dir} belongs to node {found_node} of group {found_group}, not node {node} of group {group}; use another --data-dir")]
    ForeignDataDir { dir: String, found_node: NodeId, found_group: String, node: NodeId, group: String },
    #[error("cannot listen for peers on {addr}: {reason}")]
    PeerListen { addr: SocketAddr, reason: String },
    #[error("{0}")]
    Storage(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Identity {
    node_id: NodeId,
    group: String,
}

pub struct RaftNode {
    pub config: NodeConfig,
    pub raft: Raft,
    pub state: Arc<SmShared>,
    pub rejoining: Arc<AtomicBool>,
    shutdown: parking_lot::Mutex<Option<oneshot::Sender<()>>>,
}

/// Writes a small file durably and atomically (temp file, fsync, rename, fsync of the directory).
pub(crate) fn write_file_durably(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

fn storage_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(e.to_string())
}

/// Checks (or records) which node a data dir belongs to. Returns true if the dir was new.
fn claim_data_dir(dir: &Path, node_id: NodeId, group: &str) -> Result<bool, NodeError> {
    std::fs::create_dir_all(dir).map_err(|e| storage_err(format!("cannot create data dir {}: {e}", dir.display())))?;
    let path = dir.join("node.json");
    let me = Identity { node_id, group: group.to_string() };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes).map_err(|e| storage_err(format!("{}: {e}", path.display())))?;
            if found != me {
                return Err(NodeError::ForeignDataDir {
                    dir: dir.display().to_string(),
                    found_node: found.node_id,
                    found_group: found.group,
                    node: node_id,
                    group: group.to_string(),
                });
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = serde_json::to_string(&me).expect("identity serializes");
            write_file_durably(&path, &text).map_err(storage_err)?;
            Ok(true)
        }
        Err(e) => Err(storage_err(format!("{}: {e}", path.display()))),
    }
}

impl RaftNode {
    pub async fn start(config: NodeConfig) -> Result<RaftNode, NodeError> {
        if !config.peers.contains_key(&config.node_id) {
            return Err(NodeError::Config(format!("node {} is not in its own peer list", config.node_id)));
        }
        // Bind first: a busy port must not leave the data dir claimed.
        let listener = tokio::net::TcpListener::bind(config.peer_listen)
            .await
            .map_err(|e| NodeError::PeerListen { addr: config.peer_listen, reason: e.to_string() })?;
        claim_data_dir(&config.data_dir, config.node_id, &config.group)?;

        let fs: Arc<dyn FileSystem> = Arc::new(RealFs);
        let log_config = CommitLogConfig {
            segment_size_bytes: config.segment_size_bytes,
            flush: config.flush,
            async_flush_interval: Duration::from_millis(100),
            record_payload_bytes_max: config.record_payload_bytes_max,
            page_cache_tail_bytes: config.page_cache_tail_bytes,
        };
        let log = Arc::new(CommitLog::open(fs.clone(), config.data_dir.join("commitlog"), log_config).map_err(storage_err)?);
        let vote = Arc::new(VoteFile::open(fs.clone(), config.data_dir.join("vote")).map_err(storage_err)?);
        let queues = ConsumeQueueSet::open(fs, config.data_dir.join("consumequeue")).map_err(storage_err)?;
        let state_machine =
            StateMachine::open(log.clone(), queues, &config.data_dir.join("metadata.redb")).map_err(storage_err)?;
        let state = state_machine.shared();
        let blank = log.state().last.is_none() && vote.load().map_err(storage_err)?.is_none();

        let raft_config = Config {
            cluster_name: config.group.clone(),
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            heartbeat_interval: config.heartbeat_interval_ms,
            // A snapshot carries the retained records (snapshot.rs), so purging the Raft log
            // never strands a lagging node; retention decides when bytes are deleted.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_interval_entries),
            max_in_snapshot_log_to_keep: SNAPSHOT_KEEP_ENTRIES.min(config.snapshot_interval_entries),
            max_payload_entries: 256,
            // A follower that lost its data comes back with an empty log: let the leader refill it.
            allow_log_reversion: Some(true),
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(|e| NodeError::Config(e.to_string()))?);
        let raft = Raft::new(config.node_id, raft_config, PeerNetworkFactory::default(), LogStore::new(log, vote), state_machine)
            .await
            .map_err(storage_err)?;

        // A node with no Raft state may have lost its data and its vote with it: it does not vote
        // from its first instant, before any peer traffic can initialize it (see module comment).
        let rejoin_marker = config.data_dir.join("rejoining");
        let founder_marker = config.data_dir.join("founder");
        let protected = rejoin_marker.exists() || (blank && !founder_marker.exists());
        let rejoining = Arc::new(AtomicBool::new(protected));
        if protected {
            raft.runtime_config().elect(false);
        }

        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let service = PeerService {
            node_id: config.node_id,
            group: config.group.clone(),
            client_addr: config.client_addr.clone(),
            client_listen_port: config.client_listen_port,
            raft: raft.clone(),
            rejoining: rejoining.clone(),
            founder_marker: founder_marker.clone(),
            rejoin_marker: rejoin_marker.clone(),
            staging_dir: config.data_dir.join("snapshot-incoming"),
        };
        let server = RaftPeerServer::new(service)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let incoming = crate::network::nodelay_incoming(listener);
        tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!("peer server stopped: {e}");
            }
        });

        let node = RaftNode { config, raft, state, rejoining, shutdown: parking_lot::Mutex::new(Some(shutdown_tx)) };
        node.spawn_join_worker(rejoin_marker, blank && !founder_marker.exists());
        node.spawn_promotion_worker();
        spawn_retention_worker(node.state.clone(), node.config.retention.clone());
        Ok(node)
    }

    fn spawn_join_worker(&self, rejoin_marker: PathBuf, blank_at_start: bool) {
        let raft = self.raft.clone();
        let config = self.config.clone();
        let rejoining = self.rejoining.clone();
        tokio::spawn(async move {
            if let Err(e) = join_worker(raft, config, rejoining, rejoin_marker, blank_at_start).await {
                tracing::error!("join worker failed: {e}");
            }
        });
    }

    /// On the leader: promote configured peers that are learners and have caught up.
    fn spawn_promotion_worker(&self) {
        let raft = self.raft.clone();
        let peers: BTreeSet<NodeId> = self.config.peers.keys().copied().collect();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(300));
            loop {
                tick.tick().await;
                if crate::types::current_metrics(&raft).running_state.is_err() {
                    return;
                }
                promote_caught_up_learners(&raft, &peers).await;
            }
        });
    }

    /// Stops Raft and the peer server (the data stays on disk), then checkpoints the state
    /// machine so that a clean restart has nothing to re-apply (a crash replays from the last
    /// periodic checkpoint instead).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        if let Some(tx) = self.shutdown.lock().take() {
            let _ = tx.send(());
        }
        if let Err(e) = self.state.checkpoint() {
            tracing::warn!("final checkpoint failed (the next start replays the log from the last one): {e}");
        }
    }
}

/// Entries kept in the Raft log after a snapshot, so slightly lagging followers catch up from the
/// log rather than by snapshot.
const SNAPSHOT_KEEP_ENTRIES: u64 = 1000;
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Deletes purged segments that are past the retention policy, off the async runtime.
fn spawn_retention_worker(state: Arc<SmShared>, policy: RetentionPolicy) {
    let state = Arc::downgrade(&state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else { return };
            let policy = policy.clone();
            let result = tokio::task::spawn_blocking(move || state.enforce_retention(&policy)).await;
            match result {
                Ok(Ok(Some(report))) if report.segments_deleted > 0 => tracing::info!(
                    "retention deleted {} segments ({} bytes); first retained index {:?}",
                    report.segments_deleted,
                    report.bytes_deleted,
                    report.first_retained.map(|i| i.0)
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!("retention failed: {e}"),
                Err(e) => tracing::error!("retention task failed: {e}"),
            }
        }
    });
}

/// How far (in entries) a learner may trail the leader's log and still be promoted.
const PROMOTION_LAG_ENTRIES_MAX: u64 = 64;

async fn promote_caught_up_learners(raft: &Raft, peers: &BTreeSet<NodeId>) {
    let metrics = crate::types::current_metrics(&raft);
    if metrics.state != ServerState::Leader {
        return;
    }
    let membership = metrics.membership_config.membership().clone();
    let last = metrics.last_log_index.unwrap_or(0);
    let Some(replication) = metrics.replication.as_ref() else { return };
    for learner in membership.learner_ids().filter(|id| peers.contains(id)).collect::<Vec<_>>() {
        let matched = replication.get(&learner).and_then(|m| m.as_ref()).map(|id| id.index).unwrap_or(0);
        if matched + PROMOTION_LAG_ENTRIES_MAX >= last && matched > 0 {
            let change = ChangeMembers::AddVoterIds([learner].into_iter().collect());
            match raft.change_membership(change, true).await {
                Ok(_) => tracing::info!(node = learner, "learner caught up: promoted to voter"),
                Err(e) => tracing::warn!(node = learner, "promotion failed: {e}"),
            }
        }
    }
}

async fn join_worker(
    raft: Raft,
    config: NodeConfig,
    rejoining: Arc<AtomicBool>,
    marker: PathBuf,
    blank_at_start: bool,
) -> Result<(), String> {
    let me = config.node_id;
    let founder = config.data_dir.join("founder");
    let lowest = *config.peers.keys().next().expect("peers is not empty");
    // Decided from what the node had at start (`blank_at_start`), never from `is_initialized`:
    // the leader's replication can initialize a wiped node before this worker first looks.
    let unfinished_founder = founder.exists() && !raft.is_initialized().await.map_err(|e| e.to_string())?;
    if (blank_at_start || unfinished_founder) && !marker.exists() {
        // No Raft state: a founding member of a new group, or a node that is new or lost its data.
        loop {
            if founder.exists() {
                // A founder never voted before the group existed (PrepareBootstrap lifted this too).
                lift_protection(&raft, &rejoining);
                // The lowest founder keeps trying to initialize until the group exists (it may
                // have stopped between preparing the founders and initializing).
                if me != lowest || raft.is_initialized().await.map_err(|e| e.to_string())? {
                    return Ok(());
                }
            }
            let mut answered = 0;
            let mut initialized = false;
            for (&id, peer) in config.peers.iter().filter(|(id, _)| **id != me) {
                let Ok(channel) = peer_channel(&peer.peer_addr) else { continue };
                let mut request = tonic::Request::new(NodeStateRequest {});
                request.set_timeout(Duration::from_millis(500));
                if let Ok(response) = peer_client(channel).node_state(request).await {
                    let state = response.into_inner();
                    if state.group != config.group {
                        tracing::error!(peer = id, "peer belongs to group {}, not {}", state.group, config.group);
                        continue;
                    }
                    answered += 1;
                    initialized |= state.initialized;
                }
            }
            // The founder marker is written before the group is initialized, so seeing an
            // initialized peer and no marker means this node is not a founder.
            if initialized && founder.exists() {
                return Ok(());
            }
            if initialized {
                write_file_durably(&marker, "rejoining after data loss\n").map_err(|e| e.to_string())?;
                tracing::warn!("this node has no Raft state but its group exists: rejoining as a learner");
                break;
            }
            if !initialized && answered == config.peers.len() - 1 && me == lowest {
                if !prepare_founders(&config).await {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                write_file_durably(&founder, "founding member of a new group").map_err(|e| e.to_string())?;
                lift_protection(&raft, &rejoining);
                let members: BTreeMap<NodeId, PeerNode> = config.peers.clone();
                match raft.initialize(members).await {
                    Ok(()) => tracing::info!("initialized a new group with {} voters", config.peers.len()),
                    Err(e) => tracing::warn!("initialize: {e}"),
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if !marker.exists() {
        return Ok(());
    }
    // Ask the leader to make us a learner, then wait to be promoted: to be a voter in a membership
    // entry after the one that demoted us.
    let mut demoted_at_index = None;
    loop {
        let metrics = crate::types::current_metrics(&raft);
        let membership_index = metrics.membership_config.log_id().map(|id| id.index).unwrap_or(0);
        let is_voter = metrics.membership_config.membership().voter_ids().any(|id| id == me);
        match demoted_at_index {
            Some(demoted) if is_voter && membership_index > demoted => {
                std::fs::remove_file(&marker).map_err(|e| e.to_string())?;
                lift_protection(&raft, &rejoining);
                tracing::info!("caught up and promoted: voting again");
                return Ok(());
            }
            Some(_) => {}
            None => demoted_at_index = request_rejoin(&config).await,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Lets the node vote and campaign again.
pub(crate) fn lift_protection(raft: &Raft, rejoining: &AtomicBool) {
    rejoining.store(false, Ordering::Release);
    raft.runtime_config().elect(true);
}

/// Has every other member record that it founds the group. True if all did.
async fn prepare_founders(config: &NodeConfig) -> bool {
    for peer in config.peers.iter().filter(|(id, _)| **id != config.node_id).map(|(_, p)| p) {
        let Ok(channel) = peer_channel(&peer.peer_addr) else { return false };
        let mut request = tonic::Request::new(PrepareBootstrapRequest { group: config.group.clone(), initiator: config.node_id });
        request.set_timeout(Duration::from_secs(2));
        match peer_client(channel).prepare_bootstrap(request).await {
            Ok(r) if r.get_ref().ready => {}
            Ok(r) => {
                tracing::warn!("peer {} refused to found the group: {}", peer.peer_addr, r.get_ref().error);
                return false;
            }
            Err(_) => return false,
        }
    }
    true
}

/// Sends Rejoin to every peer; only the leader accepts. Returns the demotion's membership index.
async fn request_rejoin(config: &NodeConfig) -> Option<u64> {
    for (&id, peer) in config.peers.iter().filter(|(id, _)| **id != config.node_id) {
        let Ok(channel) = peer_channel(&peer.peer_addr) else { continue };
        let mut request = tonic::Request::new(RejoinRequest { node_id: config.node_id, group: config.group.clone() });
        request.set_timeout(Duration::from_secs(3));
        if let Ok(response) = peer_client(channel).rejoin(request).await {
            let response = response.into_inner();
            if response.accepted {
                tracing::info!(leader = id, "the leader made this node a learner at log index {}", response.demoted_at_index);
                return Some(response.demoted_at_index);
            }
        }
    }
    None
}
