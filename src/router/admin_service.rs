//! The part of raftmq.admin a router can answer without holding data: CreateTopic (placed on
//! every live group) and ClusterStatus (every group's nodes as last registered, at most one
//! registration interval old). The rest reads a node's own data: call a broker node for it.
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::RouterState;
use crate::admin_pb::admin_server::Admin;
use crate::admin_pb::*;

pub struct RouterAdminService {
    pub state: Arc<RouterState>,
}

fn per_group(what: &str) -> Status {
    Status::unimplemented(format!("{what} acts on one broker group; call a broker node of that group (see `raftmq cluster status`)"))
}

fn needs_broker(what: &str) -> Status {
    Status::unimplemented(format!("{what} reads a node's own data; a router has none: call a broker node's endpoint"))
}

#[tonic::async_trait]
impl Admin for RouterAdminService {
    async fn create_topic(&self, request: Request<CreateTopicRequest>) -> Result<Response<CreateTopicResponse>, Status> {
        let request = request.into_inner();
        let placed = super::placement::place_topic(&self.state, &request.topic, request.queues, &[]).await;
        let status = match placed {
            Ok(_) => AdminStatus { code: 0, message: "OK".into() },
            Err(e) => AdminStatus { code: e.code as i32, message: e.message },
        };
        Ok(Response::new(CreateTopicResponse { status: Some(status) }))
    }

    async fn cluster_status(&self, _request: Request<ClusterStatusRequest>) -> Result<Response<ClusterStatusResponse>, Status> {
        let groups = self.state.registry.lock().groups(Instant::now());
        let nodes = groups
            .into_iter()
            .flat_map(|(_, nodes)| nodes)
            .map(|n| NodeStatus {
                id: n.node_id,
                role: n.role,
                term: n.term,
                last_log_index: n.last_log_index,
                committed: n.committed,
                applied: n.applied,
                endpoint: n.client_endpoint,
                leader_id: n.leader_id,
                group: n.group,
                error: String::new(),
            })
            .collect();
        Ok(Response::new(ClusterStatusResponse { nodes }))
    }

    async fn list_topics(&self, _request: Request<ListTopicsRequest>) -> Result<Response<ListTopicsResponse>, Status> {
        Err(needs_broker("topic list (with queue offsets)"))
    }

    async fn get_node_status(&self, _request: Request<NodeStatusRequest>) -> Result<Response<NodeStatus>, Status> {
        Err(needs_broker("node status"))
    }

    async fn read_local(&self, _request: Request<ReadLocalRequest>) -> Result<Response<ReadLocalResponse>, Status> {
        Err(needs_broker("read-local"))
    }

    async fn log_digest(&self, _request: Request<LogDigestRequest>) -> Result<Response<LogDigestResponse>, Status> {
        Err(needs_broker("log digest"))
    }

    async fn transfer_leader(&self, _request: Request<TransferLeaderRequest>) -> Result<Response<TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("leadership belongs to one group: call a node of that group"))
    }

    // Topic changes other than placement, and consumer groups, live in one broker group each.
    async fn update_topic(&self, _request: Request<UpdateTopicRequest>) -> Result<Response<AdminResult>, Status> {
        Err(per_group("topic update"))
    }

    async fn describe_topic(&self, _request: Request<DescribeTopicRequest>) -> Result<Response<DescribeTopicResponse>, Status> {
        Err(per_group("topic describe"))
    }

    async fn delete_topic(&self, _request: Request<DeleteTopicRequest>) -> Result<Response<AdminResult>, Status> {
        Err(per_group("topic delete"))
    }

    async fn create_group(&self, _request: Request<CreateGroupRequest>) -> Result<Response<AdminResult>, Status> {
        Err(per_group("group create"))
    }

    async fn list_groups(&self, _request: Request<ListGroupsRequest>) -> Result<Response<ListGroupsResponse>, Status> {
        Err(per_group("group list"))
    }

    async fn describe_group(&self, _request: Request<DescribeGroupRequest>) -> Result<Response<DescribeGroupResponse>, Status> {
        Err(per_group("group describe"))
    }

    async fn delete_group(&self, _request: Request<DeleteGroupRequest>) -> Result<Response<AdminResult>, Status> {
        Err(per_group("group delete"))
    }

    async fn local_members(&self, _request: Request<LocalMembersRequest>) -> Result<Response<LocalMembersResponse>, Status> {
        Err(needs_broker("local members"))
    }
}
