//! The peer network (client side): one cached tonic `Channel` per peer, Raft messages as bincode
//! inside `RaftPayload`, explicit message size limits, per-RPC deadlines from openraft.
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::base::{BoxFuture, BoxStream};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use serde::{Serialize, de::DeserializeOwned};
use tonic::transport::{Channel, Endpoint};

use crate::pb::RaftPayload;
use crate::pb::raft_peer_client::RaftPeerClient;
use crate::state_machine::SnapshotData;
use crate::types::{NodeId, PeerNode, TypeConfig, Vote};

/// Accepted connections with TCP_NODELAY set. tonic's `Server::tcp_nodelay` applies only to the
/// listeners tonic binds itself, not to an incoming stream we hand it; without it a small HTTP/2
/// frame written behind an unacknowledged one waits for the peer's delayed ACK (~40 ms on Linux).
pub fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Longest a whole snapshot transfer (stream and install) may take.
const SNAPSHOT_TRANSFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Largest peer message either side accepts: a full append batch or one snapshot chunk.
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Snapshot record batches buffered between the disk reader and the network.
const SNAPSHOT_BATCHES_IN_FLIGHT: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

pub fn encode<T: Serialize>(value: &T) -> RaftPayload {
    RaftPayload { data: Bytes::from(bincode::serialize(value).expect("raft message serializes")) }
}

pub fn decode<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, bincode::Error> {
    bincode::deserialize(&payload.data)
}

/// Opens a lazily connecting channel to `addr` (host:port).
pub fn peer_channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

pub fn peer_client(channel: Channel) -> RaftPeerClient<Channel> {
    RaftPeerClient::new(channel)
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
}

/// Hands out one client per peer; channels are cached so every RPC to a peer shares a connection.
#[derive(Clone, Default)]
pub struct PeerNetworkFactory {
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
}

impl PeerNetworkFactory {
    fn channel(&self, target: NodeId, node: &PeerNode) -> Option<Channel> {
        let key = (target, node.peer_addr.clone());
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(&key) {
            return Some(channel.clone());
        }
        let channel = peer_channel(&node.peer_addr).ok()?;
        channels.insert(key, channel.clone());
        Some(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerConnection {
        PeerConnection { target, client: self.channel(target, node).map(peer_client), addr: node.peer_addr.clone() }
    }
}

pub struct PeerConnection {
    target: NodeId,
    addr: String,
    client: Option<RaftPeerClient<Channel>>,
}

#[derive(Debug, thiserror::Error)]
#[error("peer {target} at {addr}: {message}")]
struct PeerError {
    target: NodeId,
    addr: String,
    message: String,
}

/// A failed call: the peer is down or unreachable, or answered with an error we can't use.
fn status_to_rpc_error(error: PeerError, code: tonic::Code) -> RPCError<TypeConfig> {
    match code {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&error))
        }
        _ => RPCError::Network(NetworkError::new(&error)),
    }
}

impl PeerConnection {
    fn error(&self, message: impl ToString) -> PeerError {
        PeerError { target: self.target, addr: self.addr.clone(), message: message.to_string() }
    }

    fn client(&self) -> Result<RaftPeerClient<Channel>, RPCError<TypeConfig>> {
        self.client.clone().ok_or_else(|| RPCError::Unreachable(Unreachable::new(&self.error("bad peer address"))))
    }

    fn rpc_error(&self, status: tonic::Status) -> RPCError<TypeConfig> {
        status_to_rpc_error(self.error(status.message()), status.code())
    }

    async fn unary<Req: Serialize, Resp: DeserializeOwned, F, Fut>(
        &self,
        request: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let mut tonic_request = tonic::Request::new(encode(request));
        tonic_request.set_timeout(option.hard_ttl());
        let response = call(self.client()?, tonic_request).await.map_err(|s| self.rpc_error(s))?;
        let result: Result<Resp, String> =
            decode(response.get_ref()).map_err(|e| RPCError::Network(NetworkError::new(&self.error(e))))?;
        result.map_err(|remote| RPCError::Network(NetworkError::new(&self.error(remote))))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&rpc, &option, |mut c, r| async move { c.append_entries(r).await }).await
    }

    /// Pipelined replication over one bidirectional gRPC stream: the leader keeps sending append
    /// requests without waiting, and the follower answers each in order once it is flushed.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + openraft::OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let mut client = self.client()?;
            let outbound = input.map(|request| encode(&request));
            let response = client.stream_append(tonic::Request::new(outbound)).await.map_err(|s| self.rpc_error(s))?;
            let (target, addr) = (self.target, self.addr.clone());
            let error = move |message: String| PeerError { target, addr: addr.clone(), message };
            let results = response.into_inner().map(move |item| match item {
                Ok(payload) => decode::<StreamAppendResult<TypeConfig>>(&payload)
                    .map_err(|e| RPCError::Network(NetworkError::new(&error(e.to_string())))),
                Err(status) => Err(status_to_rpc_error(error(status.message().to_string()), status.code())),
            });
            let results: BoxStream<'s, _> = Box::pin(results);
            Ok(results)
        })
    }

    async fn vote(&mut self, rpc: VoteRequest<TypeConfig>, option: RPCOption) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&rpc, &option, |mut c, r| async move { c.vote(r).await }).await
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<TypeConfig>, option: RPCOption) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&rpc, &option, |mut c, r| async move { c.pre_vote(r).await }).await
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(&request, &option, |mut c, r| async move { c.transfer_leader(r).await }).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::Snapshot<crate::types::CommittedLeaderId, NodeId, PeerNode, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client().map_err(|_| StreamingError::Unreachable(Unreachable::new(&self.error("bad peer address"))))?;
        let crate::snapshot::SnapshotData::Local { body, source, last_index } = snapshot.snapshot else {
            return Err(StreamingError::Network(NetworkError::new(&self.error("only a locally built snapshot can be sent"))));
        };
        let header = encode(&(vote, snapshot.meta.clone(), body));
        // Records are read from disk on a blocking thread and flow through a small bounded channel.
        let (tx, rx) = tokio::sync::mpsc::channel::<RaftPayload>(SNAPSHOT_BATCHES_IN_FLIGHT);
        tx.try_send(header).expect("a fresh channel has room for the header");
        tokio::task::spawn_blocking(move || {
            let result = crate::snapshot::read_chunks(&source, last_index, |chunk| tx.blocking_send(encode(&chunk)).is_ok());
            if let Err(e) = result {
                tracing::error!("reading the snapshot's records failed: {e}");
            }
        });
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        // openraft's snapshot timeout (`option`, 200 ms by default) is meant per chunk; this call
        // streams the whole snapshot and installs it, which takes as long as the retained data
        // needs. Cancellation comes through `cancel`; a dead peer through the transport.
        let _ = option;
        request.set_timeout(SNAPSHOT_TRANSFER_TIMEOUT);
        let call = client.install_snapshot(request);
        let response = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            response = call => response,
        };
        let response = response.map_err(|s| StreamingError::Unreachable(Unreachable::new(&self.error(s.message()))))?;
        let result: Result<SnapshotResponse<TypeConfig>, String> = decode(response.get_ref())
            .map_err(|e| StreamingError::Network(NetworkError::new(&self.error(e))))?;
        result.map_err(|remote| StreamingError::Network(NetworkError::new(&self.error(remote))))
    }
}
