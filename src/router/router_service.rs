//! raftmq.router on the router: broker registrations (the heartbeat) and topic placement.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use raftmq_cluster::NodeRegistration;
use raftmq_cluster::limits::TOPICS_PER_NODE_MAX;
use tonic::{Request, Response, Status};

use super::RouterState;
use crate::router_pb::router_server::Router;
use crate::router_pb::*;

pub struct RouterServiceImpl {
    pub state: Arc<RouterState>,
}

/// The registry's view of a registration; the admin API is reached at the sender's IP.
fn to_registration(request: RegisterRequest, from: SocketAddr) -> Result<NodeRegistration, Status> {
    if request.topics.len() > TOPICS_PER_NODE_MAX {
        return Err(Status::invalid_argument(format!("registration rejected: {} topics; at most {TOPICS_PER_NODE_MAX}", request.topics.len())));
    }
    let admin_port = u16::try_from(request.admin_port).unwrap_or(0);
    let mut topics = std::collections::BTreeMap::new();
    for t in request.topics {
        topics.insert(t.topic, t.queues);
    }
    Ok(NodeRegistration {
        group: request.group,
        node_id: request.node_id,
        role: request.role,
        term: request.term,
        leader_id: request.leader_id,
        client_endpoint: request.client_endpoint,
        admin_endpoint: SocketAddr::new(from.ip(), admin_port).to_string(),
        last_log_index: request.last_log_index,
        committed: request.committed,
        applied: request.applied,
        max_body_bytes: request.max_body_bytes,
        topics,
    })
}

#[tonic::async_trait]
impl Router for RouterServiceImpl {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let from = request.remote_addr().ok_or_else(|| Status::internal("the router cannot see the registering node's address"))?;
        let registration = to_registration(request.into_inner(), from)?;
        let mut registry = self.state.registry.lock();
        registry.register(registration, Instant::now()).map_err(|e| Status::invalid_argument(format!("registration rejected: {e}")))?;
        Ok(Response::new(RegisterResponse { node_timeout_ms: registry.node_timeout().as_millis() as u64 }))
    }

    async fn place_topic(&self, request: Request<PlaceTopicRequest>) -> Result<Response<PlaceTopicResponse>, Status> {
        let request = request.into_inner();
        let placed = super::placement::place_topic(&self.state, &request.topic, request.queues, &request.groups).await;
        Ok(Response::new(match placed {
            Ok(groups) => PlaceTopicResponse { code: 0, message: "OK".into(), groups },
            Err(e) => PlaceTopicResponse { code: e.code as i32, message: e.message, groups: vec![] },
        }))
    }
}
