//! The raftmq admin API (topics, status, replica inspection), on every node's client port.
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use raftmq_raft::CommandResponse;
use raftmq_raft::command::{AdminCommand, Command, TopicConfig};
use raftmq_store::LogIndex;
use tonic::{Request, Response, Status};

use crate::admin_pb::admin_client::AdminClient;
use crate::admin_pb::admin_server::Admin;
use crate::admin_pb::*;
use crate::broker::{Broker, NotServed, ProposeError};
use crate::limits::{QUEUES_DEFAULT, QUEUES_MAX};
use crate::status::{self, ApiError};

const LOG_DIGEST_RECORDS_MAX: u32 = 10_000;
const READ_LOCAL_MAX: u32 = 10_000;

pub struct AdminServiceImpl {
    pub broker: Arc<Broker>,
}

fn admin_status(result: Result<(), ApiError>) -> Option<AdminStatus> {
    Some(match result {
        Ok(()) => AdminStatus { code: 0, message: "OK".into() },
        Err(e) => AdminStatus { code: e.code as i32, message: e.message },
    })
}

pub fn node_status(broker: &Broker) -> NodeStatus {
    let metrics = raftmq_raft::types::current_metrics(&broker.node.raft);
    let rejoining = broker.node.rejoining.load(std::sync::atomic::Ordering::Acquire);
    let role = match metrics.state {
        // Lost its data and is not voting until it is promoted again (see raft/src/node.rs).
        _ if rejoining => "rejoining",
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    NodeStatus {
        id: broker.config.node_id,
        role: role.into(),
        term: metrics.current_term,
        last_log_index: metrics.last_log_index.unwrap_or(0),
        committed: metrics.local_committed.map(|id| id.index).unwrap_or(0),
        applied: metrics.last_applied.map(|id| id.index).unwrap_or(0),
        endpoint: broker.config.advertise.clone(),
        leader_id: metrics.current_leader.unwrap_or(0),
        group: broker.config.group.clone(),
        error: String::new(),
    }
}

impl AdminServiceImpl {
    async fn create_topic_here(&self, request: &CreateTopicRequest) -> Result<(), ApiError> {
        status::check_topic_name(&request.topic)?;
        let queues = if request.queues == 0 { QUEUES_DEFAULT } else { request.queues };
        if queues > QUEUES_MAX {
            return Err(ApiError::bad_request(format!("{queues} queues; a topic has at most {QUEUES_MAX}")));
        }
        if let Some(existing) = self.broker.state().topic(&request.topic) {
            if existing.queue_count == queues {
                return Ok(());
            }
        }
        let command = Command::admin(&AdminCommand::CreateTopic(TopicConfig { name: request.topic.clone(), queue_count: queues }));
        match self.broker.propose(command).await {
            Ok(CommandResponse::TopicCreated) => Ok(()),
            Ok(CommandResponse::Rejected(reason)) => Err(ApiError::bad_request(reason)),
            Ok(other) => Err(ApiError::internal(format!("unexpected apply result {other:?}"))),
            Err(ProposeError::NotLeader) => Err(ApiError::unavailable("leadership moved; retry")),
            Err(ProposeError::Api(e)) => Err(e),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminServiceImpl {
    async fn create_topic(&self, request: Request<CreateTopicRequest>) -> Result<Response<CreateTopicResponse>, Status> {
        let forwarded = request.metadata().contains_key("x-raftmq-forwarded");
        let request = request.into_inner();
        let result = match self.broker.check_leader() {
            Ok(()) => self.create_topic_here(&request).await,
            Err(NotServed::Error(e)) => Err(e),
            Err(NotServed::Leader(_)) if forwarded => Err(ApiError::unavailable("leadership is moving; retry")),
            Err(NotServed::Leader(addr)) => {
                let channel = self.broker.channel_to(&addr).map_err(|e| Status::unavailable(e.message))?;
                let mut forward = Request::new(request);
                forward.metadata_mut().insert("x-raftmq-forwarded", tonic::metadata::MetadataValue::from_static("1"));
                forward.set_timeout(Duration::from_secs(10));
                return AdminClient::new(channel).create_topic(forward).await;
            }
        };
        Ok(Response::new(CreateTopicResponse { status: admin_status(result) }))
    }

    async fn transfer_leader(&self, request: Request<TransferLeaderRequest>) -> Result<Response<TransferLeaderResponse>, Status> {
        let to = request.get_ref().to_node_id;
        let result = if !self.broker.config.peers.contains_key(&to) {
            Err(ApiError::bad_request(format!("node {to} is not a member of group {}", self.broker.config.group)))
        } else {
            match self.broker.check_leader() {
                Ok(()) => self.broker.node.raft.trigger().transfer_leader(to).await.map_err(ApiError::internal),
                Err(NotServed::Error(e)) => Err(e),
                Err(NotServed::Leader(addr)) => {
                    let channel = self.broker.channel_to(&addr).map_err(|e| Status::unavailable(e.message))?;
                    return AdminClient::new(channel).transfer_leader(request.into_inner()).await;
                }
            }
        };
        Ok(Response::new(TransferLeaderResponse { status: admin_status(result) }))
    }

    async fn list_topics(&self, _request: Request<ListTopicsRequest>) -> Result<Response<ListTopicsResponse>, Status> {
        let state = self.broker.state();
        let topics = state
            .topics()
            .into_iter()
            .map(|t| TopicInfo {
                queue_offsets: (0..t.queue_count)
                    .map(|q| {
                        let (min, max) = state.queue_range(&t.name, q);
                        QueueInfo { queue_id: q, min_offset: min, max_offset: max }
                    })
                    .collect(),
                name: t.name,
                queues: t.queue_count,
            })
            .collect();
        Ok(Response::new(ListTopicsResponse { status: admin_status(Ok(())), topics }))
    }

    async fn get_node_status(&self, _request: Request<NodeStatusRequest>) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(node_status(&self.broker)))
    }

    async fn cluster_status(&self, _request: Request<ClusterStatusRequest>) -> Result<Response<ClusterStatusResponse>, Status> {
        let mut nodes = vec![node_status(&self.broker)];
        for &id in self.broker.config.peers.keys().filter(|id| **id != self.broker.config.node_id) {
            let unreachable = |error: String| NodeStatus { id, role: "unreachable".into(), error, group: self.broker.config.group.clone(), ..Default::default() };
            let Some(addr) = self.broker.forward_addr_of(id) else {
                nodes.push(unreachable("client address not known yet".into()));
                continue;
            };
            let status = match self.broker.channel_to(&addr) {
                Ok(channel) => {
                    let mut request = Request::new(NodeStatusRequest {});
                    request.set_timeout(Duration::from_millis(800));
                    match AdminClient::new(channel).get_node_status(request).await {
                        Ok(response) => response.into_inner(),
                        Err(e) => NodeStatus { endpoint: addr, ..unreachable(e.message().to_string()) },
                    }
                }
                Err(e) => unreachable(e.message),
            };
            nodes.push(status);
        }
        nodes.sort_by_key(|n| n.id);
        Ok(Response::new(ClusterStatusResponse { nodes }))
    }

    async fn read_local(&self, request: Request<ReadLocalRequest>) -> Result<Response<ReadLocalResponse>, Status> {
        let request = request.into_inner();
        let state = self.broker.state();
        let fail = |e: ApiError| Ok(Response::new(ReadLocalResponse { status: admin_status(Err(e)), ..Default::default() }));
        let Some(topic) = state.topic(&request.topic) else {
            return fail(ApiError::new(crate::v2::Code::TopicNotFound, format!("topic {} does not exist", request.topic)));
        };
        if request.queue_id >= topic.queue_count {
            return fail(ApiError::bad_request(format!("queue {} does not exist", request.queue_id)));
        }
        let max = request.max_messages.clamp(1, READ_LOCAL_MAX) as usize;
        let read = match state.read_queue(&request.topic, request.queue_id, request.from_offset, max) {
            Ok(read) => read,
            Err(e) => return fail(ApiError::internal(e)),
        };
        let next_offset = read.last().map(|m| m.queue_offset + 1).unwrap_or(request.from_offset);
        let messages = read
            .into_iter()
            .map(|m| LocalMessage {
                queue_id: request.queue_id,
                queue_offset: m.queue_offset,
                message_id: m.message.header.message_id,
                keys: m.message.header.keys,
                tag: m.message.header.tag.unwrap_or_default(),
                body: m.message.body.to_vec(),
            })
            .collect();
        Ok(Response::new(ReadLocalResponse { status: admin_status(Ok(())), messages, next_offset }))
    }

    async fn log_digest(&self, request: Request<LogDigestRequest>) -> Result<Response<LogDigestResponse>, Status> {
        let request = request.into_inner();
        let log = self.broker.state().commit_log();
        let state = log.state();
        let first = state.first_retained.map(|i| i.0).unwrap_or(0);
        let last = state.last.map(|(i, _)| i.0).unwrap_or(0);
        let from = request.from_index.max(first);
        let max = request.max_records.clamp(1, LOG_DIGEST_RECORDS_MAX) as u64;
        let mut records = Vec::new();
        let mut next = from;
        while next <= last && (records.len() as u64) < max {
            let end = (from + max).min(last + 1);
            let batch = log.read_range(LogIndex(next), LogIndex(end), 8 * 1024 * 1024).map_err(|e| Status::internal(e.to_string()))?;
            if batch.is_empty() {
                break;
            }
            for record in batch {
                next = record.index.0 + 1;
                let mut crc = crc32c::crc32c(&record.term.to_le_bytes());
                crc = crc32c::crc32c_append(crc, &record.index.0.to_le_bytes());
                crc = crc32c::crc32c_append(crc, &[record.kind]);
                crc = crc32c::crc32c_append(crc, &record.payload);
                records.push(LogRecordDigest { index: record.index.0, term: record.term, kind: record.kind as u32, crc, len: record.payload.len() as u32 });
            }
        }
        Ok(Response::new(LogDigestResponse { records, first_index: first, last_index: last }))
    }
}
