//! The peer gRPC service (server side): hands Raft RPCs to the local openraft instance.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, StreamExt};
use openraft::ChangeMembers;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use crate::network::{decode, encode};
use crate::pb::raft_peer_server::RaftPeer;
use crate::pb::{
    NodeStateRequest, NodeStateResponse, PrepareBootstrapRequest, PrepareBootstrapResponse, RaftPayload, RejoinRequest,
    RejoinResponse,
};
use crate::types::{NodeId, Raft, SnapshotMeta, Vote};

pub struct PeerService {
    pub node_id: NodeId,
    pub group: String,
    pub client_addr: String,
    pub client_listen_port: u16,
    pub raft: Raft,
    /// Set while this node has lost its data and is not yet promoted again: it must not vote.
    pub rejoining: Arc<AtomicBool>,
    /// Written when this node is told it is a founding member of a new group (see node.rs).
    pub founder_marker: std::path::PathBuf,
    /// Present while this node rejoins after losing its data.
    pub rejoin_marker: std::path::PathBuf,
    /// Where incoming snapshots are staged.
    pub staging_dir: std::path::PathBuf,
}

fn bad_payload(e: bincode::Error) -> Status {
    Status::invalid_argument(format!("undecodable raft payload: {e}"))
}

fn reply<T: Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Result<Response<RaftPayload>, Status> {
    Ok(Response::new(encode(&result.map_err(|e| e.to_string()))))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request.get_ref()).map_err(bad_payload)?;
        reply(self.raft.append_entries(rpc).await)
    }

    type StreamAppendStream = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send + 'static>>;

    async fn stream_append(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        // The input ends at the first transport error or undecodable request; openraft then
        // finishes the stream after answering what it already took.
        let input = request
            .into_inner()
            .take_while(|item| futures::future::ready(item.is_ok()))
            .map(|item| decode(&item.expect("errors end the stream above")))
            .take_while(|decoded| futures::future::ready(decoded.is_ok()))
            .map(|decoded| decoded.expect("undecodable requests end the stream above"));
        let output = self.raft.stream_append(input).map(|item| match item {
            Ok(result) => Ok(encode(&result)),
            Err(fatal) => Err(Status::unavailable(format!("raft stopped: {fatal}"))),
        });
        Ok(Response::new(Box::pin(output)))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        if self.rejoining.load(Ordering::Acquire) {
            // A node that lost its vote answers no vote requests until it is promoted again.
            return Err(Status::unavailable("rejoining after data loss: not voting"));
        }
        let rpc = decode(request.get_ref()).map_err(bad_payload)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        if self.rejoining.load(Ordering::Acquire) {
            return Err(Status::unavailable("rejoining after data loss: not voting"));
        }
        let rpc = decode(request.get_ref()).map_err(bad_payload)?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<Streaming<RaftPayload>>) -> Result<Response<RaftPayload>, Status> {
        let mut stream = request.into_inner();
        let header = stream.next().await.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let (vote, meta, body): (Vote, SnapshotMeta, crate::snapshot::SnapshotBody) = decode(&header).map_err(bad_payload)?;
        // Stage the records on disk as they arrive; the state machine installs them from there.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = self.staging_dir.join(format!("{nanos}.snapshot"));
        let staged = async {
            let mut out = crate::snapshot::open_staging(&path)?;
            let mut ended = false;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|s| std::io::Error::other(s.to_string()))?;
                if ended {
                    return Err(std::io::Error::other("data after the snapshot's end marker"));
                }
                ended = crate::snapshot::is_end_chunk(&chunk.data)?;
                crate::snapshot::stage_batch(&mut out, &chunk.data)?;
            }
            if !ended {
                return Err(std::io::Error::other("the stream closed before the snapshot's end marker"));
            }
            std::io::Write::flush(&mut out)
        };
        if let Err(e) = staged.await {
            let _ = std::fs::remove_file(&path);
            return Err(Status::aborted(format!("snapshot transfer broke: {e}")));
        }
        let snapshot = openraft::Snapshot { meta, snapshot: crate::snapshot::SnapshotData::Staged { body, path: path.clone() } };
        let result = self.raft.install_full_snapshot(vote, snapshot).await;
        // Installed (the state machine removed it) or not needed: either way the file is done.
        let _ = std::fs::remove_file(&path);
        reply(result)
    }

    async fn transfer_leader(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request.get_ref()).map_err(bad_payload)?;
        reply(self.raft.handle_transfer_leader(rpc).await)
    }

    async fn node_state(&self, _request: Request<NodeStateRequest>) -> Result<Response<NodeStateResponse>, Status> {
        let metrics = crate::types::current_metrics(&self.raft);
        let initialized = self.raft.is_initialized().await.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(NodeStateResponse {
            node_id: self.node_id,
            initialized,
            leader_id: metrics.current_leader.unwrap_or(0),
            group: self.group.clone(),
            client_addr: self.client_addr.clone(),
            client_listen_port: self.client_listen_port as u32,
        }))
    }

    async fn prepare_bootstrap(&self, request: Request<PrepareBootstrapRequest>) -> Result<Response<PrepareBootstrapResponse>, Status> {
        let request = request.into_inner();
        let refuse = |error: String| Ok(Response::new(PrepareBootstrapResponse { ready: false, error }));
        if request.group != self.group {
            return refuse(format!("node is in group {}, not {}", self.group, request.group));
        }
        if self.raft.is_initialized().await.map_err(|e| Status::internal(e.to_string()))? || self.rejoin_marker.exists() {
            return refuse("this node already belongs to an initialized group".into());
        }
        if let Err(e) = crate::node::write_file_durably(&self.founder_marker, "founding member of a new group") {
            return refuse(format!("cannot record the founder marker: {e}"));
        }
        // A founder of a new group never voted: it may vote from now on.
        crate::node::lift_protection(&self.raft, &self.rejoining);
        tracing::info!(initiator = request.initiator, "recorded as a founding member of group {}", self.group);
        Ok(Response::new(PrepareBootstrapResponse { ready: true, error: String::new() }))
    }

    async fn rejoin(&self, request: Request<RejoinRequest>) -> Result<Response<RejoinResponse>, Status> {
        let request = request.into_inner();
        let refuse = |error: String| Ok(Response::new(RejoinResponse { accepted: false, error, demoted_at_index: 0 }));
        if request.group != self.group {
            return refuse(format!("node is in group {}, not {}", self.group, request.group));
        }
        if !self.raft.is_leader() {
            return refuse("not the leader".into());
        }
        let metrics = crate::types::current_metrics(&self.raft);
        let is_voter = metrics.membership_config.membership().voter_ids().any(|id| id == request.node_id);
        let mut demoted_at_index = metrics.membership_config.log_id().map(|id| id.index).unwrap_or(0);
        if is_voter {
            let change = ChangeMembers::RemoveVoters([request.node_id].into_iter().collect());
            match self.raft.change_membership(change, true).await {
                Ok(response) => demoted_at_index = response.log_id.index,
                Err(e) => return refuse(format!("demoting node {} failed: {e}", request.node_id)),
            }
            tracing::info!(node = request.node_id, "node lost its data: demoted to learner until it catches up");
        }
        Ok(Response::new(RejoinResponse { accepted: true, error: String::new(), demoted_at_index }))
    }
}
