//! On a broker node: registers with every configured router every REGISTER_INTERVAL_MS (the
//! registration is the heartbeat). Routers drop a node they have not heard from within their
//! node timeout, so a dead node leaves routes by itself.
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use raftmq_cluster::limits::{REGISTRATION_BYTES_MAX, TOPICS_PER_NODE_MAX};

use crate::broker::Broker;
use crate::router_pb::router_client::RouterClient;
use crate::router_pb::{RegisterRequest, TopicQueues};

pub const REGISTER_INTERVAL_MS: u64 = 1000;
/// Below the interval, so that a slow router never delays the next round.
const REGISTER_TIMEOUT: Duration = Duration::from_millis(800);

fn registration(broker: &Broker) -> RegisterRequest {
    let status = crate::admin_service::node_status(broker);
    let mut topics = broker.state().topics();
    if topics.len() > TOPICS_PER_NODE_MAX {
        tracing::warn!("{} topics; routers learn only the first {TOPICS_PER_NODE_MAX}", topics.len());
        topics.truncate(TOPICS_PER_NODE_MAX);
    }
    RegisterRequest {
        group: status.group,
        node_id: status.id,
        role: status.role,
        term: status.term,
        leader_id: status.leader_id,
        client_endpoint: status.endpoint,
        admin_port: u32::from(broker.config.listen.port()),
        last_log_index: status.last_log_index,
        committed: status.committed,
        applied: status.applied,
        max_body_bytes: broker.config.max_body_bytes as u64,
        topics: topics.into_iter().map(|t| TopicQueues { topic: t.name, queues: t.queue_count }).collect(),
    }
}

async fn register_once(broker: &Broker, router: &str, request: RegisterRequest) -> Result<(), String> {
    let channel = broker.channel_to(router).map_err(|e| e.message)?;
    let mut call = tonic::Request::new(request);
    call.set_timeout(REGISTER_TIMEOUT);
    let mut client = RouterClient::new(channel).max_encoding_message_size(REGISTRATION_BYTES_MAX);
    client.register(call).await.map(|_| ()).map_err(|e| e.message().to_string())
}

pub fn spawn(broker: &Arc<Broker>) {
    if !broker.config.routers.is_empty() {
        tokio::spawn(run(Arc::downgrade(broker)));
    }
}

async fn run(broker: Weak<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(REGISTER_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Logged on change only: a router that is down would otherwise fill the log every second.
    let mut last_outcome: HashMap<String, Result<(), String>> = HashMap::new();
    loop {
        tick.tick().await;
        let Some(broker) = broker.upgrade() else { return };
        let request = registration(&broker);
        let calls = broker.config.routers.iter().map(|router| register_once(&broker, router, request.clone()));
        let outcomes = futures::future::join_all(calls).await;
        for (router, outcome) in broker.config.routers.iter().zip(outcomes) {
            if last_outcome.get(router) != Some(&outcome) {
                match &outcome {
                    Ok(()) => tracing::info!("registered with router {router}"),
                    Err(e) => tracing::warn!("cannot register with router {router}: {e}"),
                }
                last_outcome.insert(router.clone(), outcome);
            }
        }
    }
}
