//! A three-node raftmq group as real `raftmq server` processes on loopback, for fault tests, and
//! a `raftmq router` process for tests with several groups.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use raftmq::admin_pb::{ClusterStatusRequest, CreateTopicRequest, LogDigestRequest, LogRecordDigest, NodeStatus, ReadLocalRequest};
use raftmq::cli::client;
use raftmq::v2::{
    MessageQueue, PullMessageRequest, Resource, SendMessageRequest,
    pull_message_response,
};

pub struct Node {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    /// Kept after the test when RAFTMQ_TEST_KEEP is set (to read the node logs).
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    peers: String,
    pub group: String,
    /// Extra `raftmq server` flags for every node.
    extra_args: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An acknowledged or failed send.
#[derive(Clone, Debug)]
pub struct Sent {
    pub body: String,
    /// The queue offset the send was acknowledged with (the v2 reply carries no queue id).
    pub offset: u64,
}

/// A message as read back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Read {
    pub queue_id: u32,
    pub offset: u64,
    pub body: String,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra_args: &[&str]) -> Cluster {
        Self::start_group("g1", extra_args).await
    }

    /// A group named `group` (several can run side by side, e.g. behind one router).
    pub async fn start_group(group: &str, extra_args: &[&str]) -> Cluster {
        let mut dir = tempfile::tempdir().unwrap();
        if std::env::var_os("RAFTMQ_TEST_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("cluster data and logs kept in {}", dir.path().display());
        }
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            nodes.push(Node {
                id,
                client_addr: format!("127.0.0.1:{}", free_port()),
                peer_addr: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("node-{id}")),
                log_path: dir.path().join(format!("node-{id}.log")),
                child: None,
            });
        }
        let peers = nodes.iter().map(|n| format!("{}={}", n.id, n.peer_addr)).collect::<Vec<_>>().join(",");
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let mut cluster = Cluster { dir, nodes, peers, group: group.to_string(), extra_args };
        for id in 1..=3 {
            cluster.start_node(id);
        }
        cluster.wait_for_leader(Duration::from_secs(20)).await;
        cluster
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    pub fn start_node(&mut self, id: u64) {
        let peers = self.peers.clone();
        let group = self.group.clone();
        let extra_args = self.extra_args.clone();
        let node = &mut self.nodes[id as usize - 1];
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
            .args(["server", "--node-id", &id.to_string(), "--group", &group, "--listen", &node.client_addr])
            .args(["--peer-listen", &node.peer_addr, "--peers", &peers, "--segment-size-bytes", "33554432"])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(&extra_args)
            .env("RAFTMQ_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftmq server");
        node.child = Some(child);
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[id as usize - 1].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn wipe(&mut self, id: u64) {
        let node = &self.nodes[id as usize - 1];
        assert!(node.child.is_none(), "stop node {id} before wiping it");
        std::fs::remove_dir_all(&node.data_dir).unwrap();
    }

    pub fn endpoints(&self) -> String {
        self.nodes.iter().map(|n| n.client_addr.clone()).collect::<Vec<_>>().join(";")
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        let (_, channel) = client::connect(&self.node(id).client_addr).await.ok()?;
        let mut request = tonic::Request::new(ClusterStatusRequest {});
        request.set_timeout(Duration::from_secs(2));
        let nodes = client::admin(channel).cluster_status(request).await.ok()?.into_inner().nodes;
        nodes.into_iter().find(|n| n.id == id)
    }

    /// Waits until a running node is leader and every running node applied what the leader has.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut statuses = Vec::new();
            for id in self.running() {
                if let Some(s) = self.status(id).await {
                    statuses.push(s);
                }
            }
            if let Some(leader) = statuses.iter().find(|s| s.role == "leader") {
                if statuses.len() == self.running().len() && statuses.iter().all(|s| s.applied >= leader.committed && s.applied > 0) {
                    return leader.id;
                }
            }
            assert!(Instant::now() < deadline, "no leader with caught-up followers within {timeout:?}: {statuses:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log_path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!("--- node {} log tail ---\n{}", n.id, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn create_topic(&self, topic: &str, queues: u32) {
        let (_, channel) = client::connect(&self.endpoints()).await.unwrap();
        let response = client::admin(channel).create_topic(CreateTopicRequest { topic: topic.into(), queues }).await.unwrap().into_inner();
        assert_eq!(response.status.unwrap().code, 0);
    }

    /// One send through any live node (as a client would); Err = failed or indeterminate.
    pub async fn send(&self, topic: &str, body: &str) -> Result<Sent, String> {
        self.send_batch(topic, &[body.to_string()]).await.map(|mut sent| sent.remove(0))
    }

    /// One SendMessage request holding several messages (one log record).
    pub async fn send_batch(&self, topic: &str, bodies: &[String]) -> Result<Vec<Sent>, String> {
        let mut last_error = String::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            match send_to(&node.client_addr, topic, bodies).await {
                Ok(sent) => return Ok(sent),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Every message of the topic as this node has applied it (no forwarding).
    pub async fn read_local(&self, id: u64, topic: &str, queues: u32) -> Vec<Read> {
        let (_, channel) = client::connect(&self.node(id).client_addr).await.unwrap();
        let mut admin = client::admin(channel);
        let mut out = Vec::new();
        for queue_id in 0..queues {
            let mut from = 0;
            loop {
                let response = admin
                    .read_local(ReadLocalRequest { topic: topic.into(), queue_id, from_offset: from, max_messages: 1000 })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(response.status.as_ref().unwrap().code, 0, "{:?}", response.status);
                if response.messages.is_empty() {
                    break;
                }
                for m in response.messages {
                    out.push(Read { queue_id, offset: m.queue_offset, body: String::from_utf8(m.body).unwrap() });
                }
                from = response.next_offset;
            }
        }
        out
    }

    /// Every message of the topic through the v2 PullMessage API of node `id` (forwarded to the leader).
    pub async fn pull_all(&self, id: u64, topic: &str, queues: u32) -> Vec<Read> {
        pull_all_from(&self.node(id).client_addr, topic, 0..queues).await
    }

    /// The node's whole commitlog as (index, term, kind, crc, len) digests.
    pub async fn log_digest(&self, id: u64) -> Vec<LogRecordDigest> {
        let (_, channel) = client::connect(&self.node(id).client_addr).await.unwrap();
        let mut admin = client::admin(channel);
        let mut out: Vec<LogRecordDigest> = Vec::new();
        let mut from = 0;
        loop {
            let response = admin.log_digest(LogDigestRequest { from_index: from, max_records: 5000 }).await.unwrap().into_inner();
            if response.records.is_empty() {
                return out;
            }
            from = response.records.last().unwrap().index + 1;
            out.extend(response.records);
        }
    }
}

/// One SendMessage request to the first of `endpoints` (`a;b;c`) that accepts a connection;
/// Err = failed or indeterminate.
pub async fn send_to(endpoints: &str, topic: &str, bodies: &[String]) -> Result<Vec<Sent>, String> {
    let (_, channel) = client::connect(endpoints).await.map_err(|e| e.to_string())?;
    let messages = bodies
        .iter()
        .map(|body| client::normal_message(topic, body.as_bytes().to_vec().into(), client::new_message_id(), "fault-test"))
        .collect();
    let mut request = client::request("fault-test", SendMessageRequest { messages });
    request.set_timeout(Duration::from_secs(5));
    let response = client::messaging(channel).send_message(request).await.map_err(|e| e.to_string())?.into_inner();
    match response.status.as_ref().map(|s| s.code) {
        Some(code) if code == raftmq::v2::Code::Ok as i32 => Ok(bodies
            .iter()
            .zip(&response.entries)
            .map(|(body, entry)| Sent { body: body.clone(), offset: entry.offset as u64 })
            .collect()),
        _ => Err(format!("{:?}", response.status)),
    }
}

/// Every message of the topic's given queues through the v2 PullMessage API of `endpoints`.
pub async fn pull_all_from(endpoints: &str, topic: &str, queue_ids: impl IntoIterator<Item = u32>) -> Vec<Read> {
    let (_, channel) = client::connect(endpoints).await.unwrap();
    let mut messaging = client::messaging(channel);
    let mut out = Vec::new();
    for queue_id in queue_ids {
        let mut from = 0i64;
        loop {
            let queue = MessageQueue {
                topic: Some(Resource { resource_namespace: String::new(), name: topic.into() }),
                id: queue_id as i32,
                ..Default::default()
            };
            let pull = PullMessageRequest { message_queue: Some(queue), offset: from, batch_size: 512, ..Default::default() };
            let mut stream = messaging.pull_message(client::request("fault-test", pull)).await.unwrap().into_inner();
            let mut got = 0;
            while let Some(frame) = stream.next().await {
                match frame.unwrap().content {
                    Some(pull_message_response::Content::Message(m)) => {
                        let offset = m.system_properties.unwrap().queue_offset.unwrap() as u64;
                        out.push(Read { queue_id, offset, body: String::from_utf8(m.body.to_vec()).unwrap() });
                        got += 1;
                    }
                    Some(pull_message_response::Content::NextOffset(n)) => from = n,
                    Some(pull_message_response::Content::Status(s)) => {
                        assert!(s.code == 20000 || s.code == 40401, "pull failed: {s:?}");
                    }
                    None => {}
                }
            }
            if got == 0 {
                break;
            }
        }
    }
    out
}

/// A `raftmq router` process on a free loopback port.
pub struct Router {
    pub addr: String,
    pub log_path: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Router {
    pub fn start(node_timeout_ms: u64) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log_path = dir.path().join("router.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_raftmq"))
            .args(["router", "--listen", &addr, "--node-timeout-ms", &node_timeout_ms.to_string()])
            .env("RAFTMQ_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftmq router");
        Router { addr, log_path, child: Some(child), _dir: dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The nodes the router knows, every group's (an empty list while it is not up yet).
    pub async fn nodes(&self) -> Vec<NodeStatus> {
        let Ok((_, channel)) = client::connect(&self.addr).await else { return vec![] };
        match client::admin(channel).cluster_status(ClusterStatusRequest {}).await {
            Ok(response) => response.into_inner().nodes,
            Err(_) => vec![],
        }
    }

    pub async fn wait_for_nodes(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let nodes = self.nodes().await;
            if nodes.len() == count {
                return;
            }
            assert!(Instant::now() < deadline, "router knows {} nodes, not {count}: {nodes:?}\n{}", nodes.len(), self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// QueryRoute through the router, as a client asks it.
    pub async fn route(&self, topic: &str) -> raftmq::v2::QueryRouteResponse {
        query_route(&self.addr, topic).await
    }
}

pub async fn query_route(endpoint: &str, topic: &str) -> raftmq::v2::QueryRouteResponse {
    let (_, channel) = client::connect(endpoint).await.unwrap();
    let request = raftmq::v2::QueryRouteRequest { topic: Some(Resource { resource_namespace: String::new(), name: topic.into() }), endpoints: None };
    client::messaging(channel).query_route(client::request("router-test", request)).await.unwrap().into_inner()
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Checks what a user relies on: each (queue, offset) holds one message, offsets are dense from
/// 0, every acknowledged message is there exactly once at the offset it was acknowledged with.
pub fn check_history(acked: &[Sent], read: &[Read]) -> Result<(), String> {
    let mut by_slot: BTreeMap<(u32, u64), &str> = BTreeMap::new();
    let mut by_body: BTreeMap<&str, Vec<(u32, u64)>> = BTreeMap::new();
    for r in read {
        if let Some(other) = by_slot.insert((r.queue_id, r.offset), &r.body) {
            return Err(format!("queue {} offset {} holds both {other:?} and {:?}", r.queue_id, r.offset, r.body));
        }
        by_body.entry(&r.body).or_default().push((r.queue_id, r.offset));
    }
    let mut per_queue: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (queue, offset) in by_slot.keys() {
        per_queue.entry(*queue).or_default().push(*offset);
    }
    for (queue, offsets) in &per_queue {
        if offsets.iter().enumerate().any(|(i, o)| *o != i as u64) {
            return Err(format!("queue {queue} offsets are not dense from 0: {offsets:?}"));
        }
    }
    for (body, slots) in &by_body {
        if slots.len() > 1 {
            return Err(format!("message {body:?} is stored {} times: {slots:?}", slots.len()));
        }
    }
    for sent in acked {
        match by_body.get(sent.body.as_str()) {
            None => return Err(format!("acknowledged message {:?} is lost", sent.body)),
            Some(slots) if slots[0].1 != sent.offset => {
                return Err(format!("{:?} was acknowledged at offset {} but is at {:?}", sent.body, sent.offset, slots[0]));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Per producer, acknowledged messages appear in send order within each queue.
pub fn check_producer_order(acked: &[Sent], read: &[Read], producer_of: impl Fn(&str) -> (String, u64)) -> Result<(), String> {
    let slot: BTreeMap<&str, (u32, u64)> = read.iter().map(|r| (r.body.as_str(), (r.queue_id, r.offset))).collect();
    let mut last: BTreeMap<(String, u32), (u64, u64)> = BTreeMap::new();
    let mut ordered: Vec<&Sent> = acked.iter().collect();
    ordered.sort_by_key(|s| producer_of(&s.body));
    for sent in ordered {
        let (producer, seq) = producer_of(&sent.body);
        let Some(&(queue, offset)) = slot.get(sent.body.as_str()) else { continue };
        if let Some(&(prev_seq, prev_offset)) = last.get(&(producer.clone(), queue)) {
            if offset <= prev_offset {
                return Err(format!("producer {producer}: seq {seq} at offset {offset} is not after seq {prev_seq} at {prev_offset} in queue {queue}"));
            }
        }
        last.insert((producer, queue), (seq, offset));
    }
    Ok(())
}

impl Cluster {
    /// Sends `p0-{seq}` with rising `seq` until `count` are acknowledged. A failed send is
    /// indeterminate (it may have been written), so it is never retried with the same body.
    pub async fn send_acked(&self, topic: &str, seq: &mut u64, count: usize) -> Vec<Sent> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut acked = Vec::with_capacity(count);
        while acked.len() < count {
            let body = format!("p0-{seq}");
            *seq += 1;
            match self.send(topic, &body).await {
                Ok(sent) => acked.push(sent),
                Err(e) => {
                    assert!(Instant::now() < deadline, "sends kept failing: {e}\n{}", self.logs());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        acked
    }

    /// Waits until node `id` is a voter that has applied what the leader committed.
    pub async fn wait_for_voter(&self, id: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self.wait_for_leader(timeout).await;
            if let (Some(me), Some(l)) = (self.status(id).await, self.status(leader).await) {
                if (me.role == "follower" || me.role == "leader") && me.applied >= l.committed && !self.is_learner(id).await {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "node {id} did not become a caught-up voter\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn transfer_leader(&self, to: u64) {
        let (_, channel) = client::connect(&self.endpoints()).await.unwrap();
        let request = raftmq::admin_pb::TransferLeaderRequest { to_node_id: to };
        let _ = client::admin(channel).transfer_leader(request).await;
    }

    /// Waits until every running node holds and has applied exactly the leader's log.
    pub async fn wait_for_convergence(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self.wait_for_leader(timeout).await;
            let mut statuses = Vec::new();
            for id in self.running() {
                statuses.extend(self.status(id).await);
            }
            let target = statuses.iter().find(|s| s.id == leader).map(|s| s.last_log_index);
            if statuses.len() == self.running().len()
                && statuses.iter().all(|s| Some(s.last_log_index) == target && s.applied == s.last_log_index)
            {
                return leader;
            }
            assert!(Instant::now() < deadline, "nodes did not converge: {statuses:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn is_learner(&self, id: u64) -> bool {
        self.status(id).await.map(|s| s.role == "learner").unwrap_or(true)
    }
}
