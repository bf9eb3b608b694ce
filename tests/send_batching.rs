//! The leader merges the sends of concurrent requests into shared log entries (send batching,
//! src/messaging/batcher.rs). What a client relies on must not change: each acknowledged message
//! sits at the offset its answer named, a request's messages are contiguous in one queue in
//! request order, and FIFO messages stay on their message group's queue in send order.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, Read, check_history};
use raftmq::cli::client;
use raftmq::v2::{MessageType, SendMessageRequest};

const TOPIC: &str = "batched";
const QUEUES: u32 = 4;
const SENDERS: usize = 48;
const REQUESTS_PER_SENDER: usize = 15;

/// One request's acknowledged messages: (body, offset).
type Acked = Vec<(String, u64)>;

async fn send(endpoint: &str, bodies: &[String], group: Option<&str>) -> Acked {
    let (_, channel) = client::connect(endpoint).await.unwrap();
    let messages = bodies
        .iter()
        .map(|body| {
            let mut message = client::normal_message(TOPIC, body.as_bytes().to_vec().into(), client::new_message_id(), "batch-test");
            if let Some(group) = group {
                let props = message.system_properties.as_mut().unwrap();
                props.message_type = MessageType::Fifo as i32;
                props.message_group = Some(group.to_string());
            }
            message
        })
        .collect();
    let mut request = client::request("batch-test", SendMessageRequest { messages });
    request.set_timeout(Duration::from_secs(10));
    let response = client::messaging(channel).send_message(request).await.unwrap().into_inner();
    assert_eq!(response.status.as_ref().unwrap().code, raftmq::v2::Code::Ok as i32, "{:?}", response.status);
    bodies.iter().cloned().zip(response.entries.iter().map(|e| e.offset as u64)).collect()
}

// Goal: under many concurrent senders the leader writes fewer log entries than requests (merging
// happens), and every request still gets its own, correct, contiguous offsets; FIFO groups keep
// their queue and their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_share_entries_and_keep_their_offsets() {
    let cluster = Cluster::start().await;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    cluster.create_topic(TOPIC, QUEUES).await;
    let endpoint = cluster.node(leader).client_addr.clone();
    let entries_before = cluster.log_digest(leader).await.len();

    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut requests = Vec::new();
            for request in 0..REQUESTS_PER_SENDER {
                // Every fourth sender is a FIFO producer of its own message group, one message per
                // request, each sent after the previous one was acknowledged.
                let fifo = sender % 4 == 0;
                let count = if fifo { 1 } else { 1 + (sender + request) % 3 };
                let bodies: Vec<String> = (0..count).map(|m| format!("s{sender}-r{request}-m{m}")).collect();
                let group = fifo.then(|| format!("group-{sender}"));
                requests.push(send(&endpoint, &bodies, group.as_deref()).await);
            }
            requests
        }));
    }
    let mut requests: Vec<Acked> = Vec::new();
    for task in tasks {
        requests.extend(task.await.unwrap());
    }
    let read = cluster.pull_all(leader, TOPIC, QUEUES).await;

    let acked: Vec<common::Sent> =
        requests.iter().flatten().map(|(body, offset)| common::Sent { body: body.clone(), offset: *offset }).collect();
    check_history(&acked, &read).unwrap();
    let slot: BTreeMap<&str, &Read> = read.iter().map(|r| (r.body.as_str(), r)).collect();
    for request in &requests {
        let queues: Vec<u32> = request.iter().map(|(body, _)| slot[body.as_str()].queue_id).collect();
        assert!(queues.windows(2).all(|w| w[0] == w[1]), "one request, several queues: {request:?} in {queues:?}");
        let offsets: Vec<u64> = request.iter().map(|(_, offset)| *offset).collect();
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "a request's offsets are not contiguous: {request:?}");
    }
    for sender in (0..SENDERS).filter(|s| s % 4 == 0) {
        let group = format!("group-{sender}");
        let expected_queue = crc32fast::hash(group.as_bytes()) % QUEUES;
        let mut last = None;
        for request in 0..REQUESTS_PER_SENDER {
            let r = slot[format!("s{sender}-r{request}-m0").as_str()];
            assert_eq!(r.queue_id, expected_queue, "{group} left its queue");
            assert!(last.is_none_or(|l| r.offset > l), "{group}: request {request} is not after the one before");
            last = Some(r.offset);
        }
    }
    let entries = cluster.log_digest(leader).await.len() - entries_before;
    assert!(entries < requests.len(), "{entries} log entries for {} requests: no send was batched", requests.len());
    eprintln!("{} requests became {entries} log entries", requests.len());
}
