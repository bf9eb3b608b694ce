//! The raftmq admin API (topics, consumer groups, status, replica inspection), on every node's
//! client port. Topic and group logic lives in src/admin/.
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use raftmq_store::{LogIndex, StoreError};
use tonic::{Request, Response, Status};

use crate::admin_pb::admin_client::AdminClient;
use crate::admin_pb::admin_server::Admin;
use crate::admin_pb::*;
use crate::admin::forward::{self, FromStatus};
use crate::admin::{admin_status, groups, topics};
use crate::broker::{Broker, NotServed};
use crate::status::ApiError;

const LOG_DIGEST_RECORDS_MAX: u32 = 10_000;
const READ_LOCAL_MAX: u32 = 10_000;

pub struct AdminServiceImpl {
    pub broker: Arc<Broker>,
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

#[tonic::async_trait]
impl Admin for AdminServiceImpl {
    async fn create_topic(&self, request: Request<CreateTopicRequest>) -> Result<Response<CreateTopicResponse>, Status> {
        let local = |b: Arc<Broker>, r: CreateTopicRequest| async move { Ok(CreateTopicResponse::from_result(topics::create(&b, &r.topic, r.queues).await)) };
        forward::on_leader(&self.broker, request, local, |mut c, r| async move { c.create_topic(r).await }).await
    }

    async fn update_topic(&self, request: Request<UpdateTopicRequest>) -> Result<Response<AdminResult>, Status> {
        let local = |b: Arc<Broker>, r: UpdateTopicRequest| async move { Ok(AdminResult::from_result(topics::update(&b, &r.topic, r.queues).await)) };
        forward::on_leader(&self.broker, request, local, |mut c, r| async move { c.update_topic(r).await }).await
    }

    async fn describe_topic(&self, request: Request<DescribeTopicRequest>) -> Result<Response<DescribeTopicResponse>, Status> {
        let local = |b: Arc<Broker>, r: DescribeTopicRequest| async move { topics::describe(&b, &r.topic) };
        forward::on_leader(&self.broker, request, local, |mut c, r| async move { c.describe_topic(r).await }).await
    }

    async fn delete_topic(&self, request: Request<DeleteTopicRequest>) -> Result<Response<AdminResult>, Status> {
        let local = |b: Arc<Broker>, r: DeleteTopicRequest| async move { Ok(AdminResult::from_result(topics::delete(&b, &r.topic).await)) };
        forward::on_leader(&self.broker, request, local, |mut c, r| async move { c.delete_topic(r).await }).await
    }

    async fn create_group(&self, request: Request<CreateGroupRequest>) -> Result<Response<AdminResult>, Status> {
        let local = |b: Arc<Broker>, r: CreateGroupRequest| async move {
            Ok(AdminResult::from_result(groups::create(&b, &r.group, r.max_delivery_attempts, r.fifo).await))
        };
        forward::on_leader(&self.broker, request, local, |mut c, r| async move { c.create_group(r).await }).await
    }

    async fn list_groups(&self, request: Request<ListGroupsRequest>) -> Result<Response<ListGroupsResponse>, Status> {
        let local = |b: Arc<Broker>, _| async move { Ok(groups::list(&b)) };
        forward::on_leader(&self.broker, request, local, |mut c, r| async move { c.list_groups(r).await }).await
    }

    async fn describe_group(&self, request: Request<DescribeGroupRequest>) -> Result<Response<DescribeGroupResponse>, Status> {
        let local = |b: Arc<Broker>, r: DescribeGroupRequest| async move { groups::describe(&b, &r.group, &r.topic).await };
        forward::on_leader(&self.broker, request, local, |mut c, r| async move { c.describe_group(r).await }).await
    }

    async fn delete_group(&self, request: Request<DeleteGroupRequest>) -> Result<Response<AdminResult>, Status> {
        let local = |b: Arc<Broker>, r: DeleteGroupRequest| async move { Ok(AdminResult::from_result(groups::delete(&b, &r.group).await)) };
        forward::on_leader(&self.broker, request, local, |mut c, r| async move { c.delete_group(r).await }).await
    }

    async fn local_members(&self, request: Request<LocalMembersRequest>) -> Result<Response<LocalMembersResponse>, Status> {
        Ok(Response::new(LocalMembersResponse { members: groups::local_members(&self.broker, &request.get_ref().group) }))
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
        let topics = state.topics().into_iter().map(|t| topics::topic_info(state, t)).collect();
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
            return fail(topics::topic_not_found(&request.topic));
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
        let mut first = state.first_retained.map(|i| i.0).unwrap_or(0);
        let last = state.last.map(|(i, _)| i.0).unwrap_or(0);
        let from = request.from_index.max(first);
        let max = request.max_records.clamp(1, LOG_DIGEST_RECORDS_MAX) as u64;
        let mut records = Vec::new();
        let mut next = from;
        while next <= last && (records.len() as u64) < max {
            // What is left of this page's budget, from where the read now is.
            let end = (next + max - records.len() as u64).min(last + 1);
            let batch = match log.read_range(LogIndex(next), LogIndex(end), 8 * 1024 * 1024) {
                Ok(batch) => batch,
                // Retention or a purge moved the start of the log while we read it: the digest
                // describes what the log holds now: drop what went and go on from its new start.
                Err(StoreError::Compacted { first: now_first, .. }) if now_first > next => {
                    records.clear();
                    first = now_first;
                    next = now_first;
                    continue;
                }
                Err(e) => return Err(Status::internal(e.to_string())),
            };
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
