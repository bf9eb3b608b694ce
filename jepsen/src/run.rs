//! One test: a fresh topic, producers sending unique values synchronously at a target rate,
//! consumers of one consumer group receiving and acking (see `consume`), a nemesis generator with
//! quiet periods, then a final heal, a wait for the group to converge, the drain of the consumer
//! group, the final reads of every node, the checkers and the report.
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use rand::Rng;
use rand::seq::IndexedRandom;
use raftmq::admin_pb::{ClusterStatusRequest, CreateTopicRequest, LogDigestRequest, NodeStatus, ReadLocalRequest};
use raftmq::cli::client;
use raftmq::v2::{MessageQueue, PullMessageRequest, Resource, SendMessageRequest, pull_message_response};
use tonic::transport::Channel;

use crate::consume;
use crate::history::{Digest, F, FinalState, NEMESIS, NodeState, Op, Read, Type};
use crate::nemesis::{Docker, NodeRef};

#[derive(Clone, Debug)]
pub struct Config {
    pub time: Duration,
    pub nemeses: Vec<String>,
    pub rate: f64,
    pub concurrency: usize,
    /// Consumer workers, all in one consumer group.
    pub consumers: usize,
    /// The invisible duration a receive asks for (an unacked message comes back after it).
    pub invisible: Duration,
    /// How long a receive waits for a message.
    pub long_poll: Duration,
    /// The share of first deliveries a consumer leaves unacked (a consumer crash).
    pub skip_ack: f64,
    /// How long the drain after the final heal may take.
    pub drain_timeout: Duration,
    pub queues: u32,
    pub nodes: Vec<NodeRef>,
    pub compose: String,
    pub quiet: (f64, f64),
    pub hold: (f64, f64),
    pub op_timeout: Duration,
    pub recover_timeout: Duration,
}

pub const NEMESES: [&str; 5] = ["kill", "pause", "partition", "restart", "wipe"];

#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}

pub(crate) async fn connect(addr: &str) -> anyhow::Result<Channel> {
    let (_, channel) = tokio::time::timeout(Duration::from_secs(3), client::connect(addr)).await.context("connect timed out")??;
    Ok(channel)
}

pub(crate) fn resource(name: &str) -> Resource {
    Resource { resource_namespace: String::new(), name: name.into() }
}

/// A queue of the topic; -1 = any queue (receives).
pub(crate) fn queue(topic: &str, id: i32) -> MessageQueue {
    MessageQueue { topic: Some(resource(topic)), id, ..Default::default() }
}

/// A worker's connection: one node at a time, starting at `process % nodes`, moving to the next
/// node after an error (a dead or cut-off node must not stall the worker).
pub(crate) struct Conn {
    endpoints: Vec<String>,
    node: usize,
    channel: Option<Channel>,
}

impl Conn {
    pub(crate) fn new(cfg: &Config, process: u32) -> Conn {
        let endpoints: Vec<String> = cfg.nodes.iter().map(|n| n.endpoint.clone()).collect();
        Conn { node: process as usize % endpoints.len(), endpoints, channel: None }
    }
    pub(crate) fn addr(&self) -> String {
        self.endpoints[self.node].clone()
    }
    pub(crate) async fn channel(&mut self) -> anyhow::Result<Channel> {
        if let Some(c) = &self.channel {
            return Ok(c.clone());
        }
        let c = connect(&self.endpoints[self.node]).await?;
        self.channel = Some(c.clone());
        Ok(c)
    }
    /// Drops the connection and moves on to the next node.
    pub(crate) fn next(&mut self) {
        self.channel = None;
        self.node = (self.node + 1) % self.endpoints.len();
    }
}

/// How one send ended.
enum Outcome {
    Ok(u64),
    Fail(String),
    Info(String),
}

async fn send_one(channel: Channel, topic: &str, value: &str, timeout: Duration) -> Outcome {
    let message = client::normal_message(topic, value.as_bytes().to_vec().into(), client::new_message_id(), "raftmq-jepsen");
    let mut request = client::request("raftmq-jepsen", SendMessageRequest { messages: vec![message] });
    request.set_timeout(timeout);
    match tokio::time::timeout(timeout + Duration::from_millis(500), client::messaging(channel).send_message(request)).await {
        Err(_) => Outcome::Info("timeout".into()),
        // A gRPC error may come after the request reached the leader: indeterminate.
        Ok(Err(status)) => Outcome::Info(format!("{:?}: {}", status.code(), status.message())),
        Ok(Ok(response)) => {
            let response = response.into_inner();
            let code = response.status.as_ref().map(|s| s.code).unwrap_or(0);
            if code == raftmq::v2::Code::Ok as i32 {
                match response.entries.first() {
                    Some(e) => Outcome::Ok(e.offset as u64),
                    None => Outcome::Info("OK without an entry".into()),
                }
            } else if (40000..50000).contains(&code) {
                // Rejected before proposing (validation, topic not found, too many requests).
                Outcome::Fail(format!("{code}: {}", response.status.map(|s| s.message).unwrap_or_default()))
            } else {
                // Proposal outcome unknown (not confirmed, leader changed while forwarding, ...).
                Outcome::Info(format!("{code}: {}", response.status.map(|s| s.message).unwrap_or_default()))
            }
        }
    }
}

async fn producer(process: u32, cfg: Arc<Config>, topic: Arc<String>, rec: Recorder, stop: Arc<AtomicBool>) {
    let mut conn = Conn::new(&cfg, process);
    let interval = Duration::from_secs_f64(cfg.concurrency as f64 / cfg.rate.max(0.001));
    let mut next = Instant::now() + interval.mul_f64(rand::rng().random::<f64>());
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next.into()).await;
        next = (next + interval).max(Instant::now());
        let value = format!("p{process}-{seq}");
        seq += 1;
        let addr = conn.addr();
        rec.record(Op::new(process, Type::Invoke, F::Send, rec.now()).value(&value).node(&addr));
        let ch = match conn.channel().await {
            Ok(c) => c,
            Err(e) => {
                // Nothing was sent: a definite failure.
                rec.record(Op::new(process, Type::Fail, F::Send, rec.now()).value(&value).node(&addr).error(format!("connect: {e}")));
                conn.next();
                continue;
            }
        };
        match send_one(ch, &topic, &value, cfg.op_timeout).await {
            Outcome::Ok(offset) => rec.record(Op::new(process, Type::Ok, F::Send, rec.now()).value(&value).offset(offset).node(&addr)),
            Outcome::Fail(e) => {
                rec.record(Op::new(process, Type::Fail, F::Send, rec.now()).value(&value).node(&addr).error(e));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Outcome::Info(e) => {
                rec.record(Op::new(process, Type::Info, F::Send, rec.now()).value(&value).node(&addr).error(e));
                conn.next();
            }
        }
    }
}

/// Pulls up to `batch` messages of one queue from `from`; returns them and the next offset.
async fn pull(channel: Channel, topic: &str, q: u32, from: u64, timeout: Duration) -> anyhow::Result<(Vec<Read>, u64)> {
    let request = PullMessageRequest { message_queue: Some(queue(topic, q as i32)), offset: from as i64, batch_size: 256, ..Default::default() };
    let mut request = client::request("raftmq-jepsen", request);
    request.set_timeout(timeout);
    let work = async {
        let mut stream = client::messaging(channel).pull_message(request).await?.into_inner();
        let mut out = Vec::new();
        let mut next = from;
        while let Some(frame) = stream.next().await {
            match frame?.content {
                Some(pull_message_response::Content::Message(m)) => {
                    let offset = m.system_properties.and_then(|p| p.queue_offset).context("message without a queue offset")? as u64;
                    out.push(Read { queue: q, offset, value: String::from_utf8_lossy(&m.body).into_owned() });
                    next = next.max(offset + 1);
                }
                Some(pull_message_response::Content::NextOffset(n)) => next = next.max(n as u64),
                Some(pull_message_response::Content::Status(s)) => {
                    if s.code != 20000 && s.code != 40401 {
                        bail!("pull: {} {}", s.code, s.message);
                    }
                }
                None => {}
            }
        }
        Ok((out, next))
    };
    tokio::time::timeout(timeout + Duration::from_millis(500), work).await.context("pull timed out")?
}

async fn status_via(addr: &str) -> anyhow::Result<Vec<NodeStatus>> {
    let channel = connect(addr).await?;
    let mut request = tonic::Request::new(ClusterStatusRequest {});
    request.set_timeout(Duration::from_secs(2));
    Ok(client::admin(channel).cluster_status(request).await?.into_inner().nodes)
}

/// The leader's node id, as any reachable node sees it.
pub async fn leader(nodes: &[NodeRef]) -> Option<u64> {
    for n in nodes {
        if let Ok(status) = status_via(&n.endpoint).await {
            if let Some(l) = status.iter().find(|s| s.role == "leader") {
                return Some(l.id);
            }
        }
    }
    None
}

/// Waits until every node answers, one leads and each has applied what the leader committed.
pub async fn wait_converged(nodes: &[NodeRef], timeout: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        let mut own = Vec::new();
        for n in nodes {
            if let Ok(status) = status_via(&n.endpoint).await {
                if let Some(me) = status.into_iter().find(|s| s.id == n.id) {
                    own.push(me);
                }
            }
        }
        if let Some(l) = own.iter().find(|s| s.role == "leader") {
            if own.len() == nodes.len()
                && own.iter().all(|s| (s.role == "leader" || s.role == "follower") && s.applied >= l.committed && s.leader_id == l.id)
            {
                return Ok(start.elapsed());
            }
        }
        last = format!("{:?}", own.iter().map(|s| (s.id, s.role.clone(), s.applied, s.committed)).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("the group did not converge within {timeout:?}; last seen (id, role, applied, committed): {last}")
}

pub(crate) async fn read_all_via(addr: &str, topic: &str, queues: u32) -> anyhow::Result<Vec<Read>> {
    let mut out = Vec::new();
    for q in 0..queues {
        let mut from = 0;
        loop {
            let (reads, next) = pull(connect(addr).await?, topic, q, from, Duration::from_secs(10)).await?;
            if reads.is_empty() {
                break;
            }
            out.extend(reads);
            from = next;
        }
    }
    Ok(out)
}

async fn node_state(addr: &str, topic: &str, queues: u32) -> anyhow::Result<NodeState> {
    let mut admin = client::admin(connect(addr).await?);
    let mut state = NodeState { node: addr.to_string(), ..Default::default() };
    for queue_id in 0..queues {
        let mut from = 0;
        loop {
            let r = admin.read_local(ReadLocalRequest { topic: topic.into(), queue_id, from_offset: from, max_messages: 1000 }).await?.into_inner();
            if let Some(s) = r.status.filter(|s| s.code != 0) {
                bail!("read local: {}", s.message);
            }
            if r.messages.is_empty() {
                break;
            }
            for m in r.messages {
                state.local.push(Read { queue: queue_id, offset: m.queue_offset, value: String::from_utf8_lossy(&m.body).into_owned() });
            }
            from = r.next_offset;
        }
    }
    let mut from = 0;
    loop {
        let r = admin.log_digest(LogDigestRequest { from_index: from, max_records: 5000 }).await?.into_inner();
        let Some(last) = r.records.last() else { break };
        from = last.index + 1;
        state.digests.extend(r.records.into_iter().map(|d| Digest { index: d.index, term: d.term, kind: d.kind, crc: d.crc, len: d.len }));
    }
    Ok(state)
}

fn pick<T: Copy>(items: &[T]) -> T {
    *items.choose(&mut rand::rng()).expect("non-empty")
}

/// Injects one fault; returns its description and how to heal it.
async fn inject(kind: &str, docker: &mut Docker, ids: &[u64]) -> anyhow::Result<(String, Vec<(&'static str, u64)>)> {
    let leader = leader(&docker.nodes).await;
    let leader_or_random = |rng_leader: bool| if rng_leader { leader.unwrap_or_else(|| pick(ids)) } else { pick(ids) };
    let target_leader = rand::rng().random_bool(0.5);
    let who = |id: u64, is_leader: bool| format!("n{id}{}", if is_leader && leader == Some(id) { " (leader)" } else { "" });
    Ok(match kind {
        "kill" => {
            let mut mode = pick(&["leader", "random", "majority"]);
            if mode == "leader" && leader.is_none() {
                mode = "leader (none known, so a random node)";
            }
            let victims: Vec<u64> = match mode {
                "leader" | "leader (none known, so a random node)" => vec![leader_or_random(true)],
                "random" => vec![pick(ids)],
                _ => {
                    let first = leader_or_random(true);
                    let mut rest: Vec<u64> = ids.iter().copied().filter(|i| *i != first).collect();
                    rest.truncate(ids.len() / 2);
                    std::iter::once(first).chain(rest).collect()
                }
            };
            for &v in &victims {
                docker.kill(v).await?;
            }
            let names: Vec<String> = victims.iter().map(|&v| who(v, true)).collect();
            (format!("kill -9 {mode}: {}", names.join(", ")), victims.iter().map(|&v| ("start", v)).collect())
        }
        "pause" => {
            let v = leader_or_random(target_leader);
            docker.pause(v).await?;
            (format!("pause {}", who(v, true)), vec![("unpause", v)])
        }
        "partition" => {
            let v = leader_or_random(target_leader);
            docker.isolate(v).await?;
            (format!("partition: isolate {} from the other two (minority | majority)", who(v, true)), vec![("reconnect", v)])
        }
        "restart" => {
            for &v in ids {
                docker.kill(v).await?;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            for &v in ids {
                docker.start(v).await?;
            }
            ("restart all: kill -9 every node, start them again".to_string(), vec![])
        }
        "wipe" => {
            // Wiping is one node's disk loss: the other two must hold everything first (wiping a
            // node while another still catches up would be a majority's loss, beyond the model).
            wait_converged(&docker.nodes, Duration::from_secs(60)).await.context("not wiping: the group has not converged")?;
            let v = leader_or_random(target_leader);
            let volumes = docker.wipe(v).await?;
            (format!("wipe {}: container and volume {} removed", who(v, true), volumes.trim()), vec![("recreate", v)])
        }
        other => bail!("unknown nemesis {other:?}; use {}", NEMESES.join(",")),
    })
}

async fn heal(docker: &mut Docker, steps: &[(&'static str, u64)]) -> anyhow::Result<()> {
    for &(step, id) in steps {
        match step {
            "start" => docker.start(id).await?,
            "unpause" => docker.unpause(id).await?,
            "reconnect" => docker.reconnect(id).await?,
            "recreate" => docker.recreate(id).await?,
            _ => unreachable!(),
        }
    }
    Ok(())
}

fn secs_between((lo, hi): (f64, f64)) -> Duration {
    Duration::from_secs_f64(if hi > lo { rand::rng().random_range(lo..hi) } else { lo })
}

/// The whole test. Returns the history and the final state.
pub async fn run(cfg: Config, log: impl Fn(String) + Send + Sync + 'static) -> anyhow::Result<(Vec<Op>, FinalState)> {
    let log = Arc::new(log);
    let cfg = Arc::new(cfg);
    let mut docker = if cfg.nemeses.is_empty() { None } else { Some(Docker::new(&cfg.compose, cfg.nodes.clone()).await?) };
    if let Some(d) = docker.as_mut() {
        d.heal_all().await;
    }
    let waited = wait_converged(&cfg.nodes, cfg.recover_timeout).await.context("the cluster is not healthy before the test")?;
    log(format!("cluster healthy (waited {:.1}s)", waited.as_secs_f64()));

    let topic = Arc::new(format!("jepsen-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis()));
    // A fresh group too (created by its first receive; a new group starts at the queue's start).
    let group = Arc::new(format!("{topic}-group"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result: anyhow::Result<()> = async {
            let r = client::admin(connect(&cfg.nodes[0].endpoint).await?)
                .create_topic(CreateTopicRequest { topic: topic.to_string(), queues: cfg.queues })
                .await?
                .into_inner();
            match r.status {
                Some(s) if s.code != 0 => bail!("{}", s.message),
                _ => Ok(()),
            }
        }
        .await;
        match result {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e.context("create the test topic")),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    // Every node must know the topic before the clock starts.
    wait_converged(&cfg.nodes, cfg.recover_timeout).await?;
    log(format!("topic {topic} with {} queues; {}s at {} sends/s, {} producers, {} consumers in group {group}, nemeses {:?}", cfg.queues, cfg.time.as_secs(), cfg.rate, cfg.concurrency, cfg.consumers, cfg.nemeses));

    let rec = Recorder { start: Instant::now(), ops: Arc::new(Mutex::new(Vec::new())) };
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..cfg.concurrency as u32 {
        tasks.push(tokio::spawn(producer(p, cfg.clone(), topic.clone(), rec.clone(), stop.clone())));
    }
    // Consumers stop on their own flag: they keep running through the final heal to drain the group.
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for c in 0..cfg.consumers as u32 {
        consumers.push(tokio::spawn(consume::consumer(1000 + c, cfg.clone(), topic.clone(), group.clone(), rec.clone(), stop_consumers.clone())));
    }

    // The generator: quiet, fault, hold, heal, ... until the time is up.
    let end = rec.start + cfg.time;
    let ids: Vec<u64> = cfg.nodes.iter().map(|n| n.id).collect();
    let mut turn = 0;
    if let Some(docker) = docker.as_mut() {
        loop {
            let quiet = secs_between(cfg.quiet);
            if Instant::now() + quiet + Duration::from_secs_f64(cfg.hold.0) >= end {
                break;
            }
            tokio::time::sleep(quiet).await;
            let kind = cfg.nemeses[turn % cfg.nemeses.len()].clone();
            turn += 1;
            let t = rec.now();
            match inject(&kind, docker, &ids).await {
                Ok((what, steps)) => {
                    rec.record(Op::new(NEMESIS, Type::Invoke, F::Nemesis, t).value(&what));
                    log(format!("t={:.1}s fault: {what}", t as f64 / 1e6));
                    if !steps.is_empty() {
                        let hold = secs_between(cfg.hold).min(end.saturating_duration_since(Instant::now()));
                        tokio::time::sleep(hold).await;
                    }
                    let healed = heal(docker, &steps).await;
                    rec.record(Op::new(NEMESIS, Type::Ok, F::Nemesis, rec.now()).value(format!("heal: {what}")));
                    log(format!("t={:.1}s healed{}", rec.now() as f64 / 1e6, healed.err().map(|e| format!(" (error: {e:#})")).unwrap_or_default()));
                }
                Err(e) => {
                    log(format!("t={:.1}s {kind} could not be injected: {e:#}", t as f64 / 1e6));
                    docker.heal_all().await;
                }
            }
        }
    }
    tokio::time::sleep_until(end.into()).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(cfg.op_timeout * 3, t).await.is_err() {
            // A stuck producer must not send after the workload ended.
            abort.abort();
        }
    }
    log(format!("workload done at t={:.1}s; healing and draining", rec.now() as f64 / 1e6));

    // Final heal and drain.
    if let Some(d) = docker.as_mut() {
        d.heal_all().await;
    }
    let waited = wait_converged(&cfg.nodes, cfg.recover_timeout).await;
    match &waited {
        Ok(w) => log(format!("converged {:.1}s after the heal", w.as_secs_f64())),
        Err(e) => log(format!("WARNING: {e:#}")),
    }
    // The drain: the group must take everything the log holds (nothing is sent any more).
    let mut target = None;
    for n in &cfg.nodes {
        match read_all_via(&n.endpoint, &topic, cfg.queues).await {
            Ok(reads) => {
                target = Some(reads.into_iter().map(|r| r.value).collect::<HashSet<String>>());
                break;
            }
            Err(e) => log(format!("reading the topic via {} for the drain failed: {e:#}", n.endpoint)),
        }
    }
    match &target {
        Some(target) => {
            consume::drain(&rec, &cfg, target, cfg.drain_timeout, &*log).await;
        }
        None => log("WARNING: no node could be read for the drain; not draining".into()),
    }
    // Consumers stop before the nodes are read, so that every node's log ends at the same index.
    stop_consumers.store(true, Ordering::Relaxed);
    for c in consumers {
        let abort = c.abort_handle();
        if tokio::time::timeout(cfg.long_poll + cfg.op_timeout * 3, c).await.is_err() {
            abort.abort();
        }
    }
    if let Err(e) = wait_converged(&cfg.nodes, cfg.recover_timeout).await {
        log(format!("WARNING after the drain: {e:#}"));
    }
    let mut fin = FinalState::default();
    for n in &cfg.nodes {
        match read_all_via(&n.endpoint, &topic, cfg.queues).await {
            Ok(reads) => fin.reads.push((n.endpoint.clone(), reads)),
            Err(e) => log(format!("final read via {} failed: {e:#}", n.endpoint)),
        }
        fin.nodes.push(node_state(&n.endpoint, &topic, cfg.queues).await.unwrap_or_else(|e| NodeState {
            node: n.endpoint.clone(),
            error: Some(format!("{e:#}")),
            ..Default::default()
        }));
    }
    if fin.reads.is_empty() {
        bail!("no node could be read after the final heal");
    }
    Ok((rec.ops(), fin))
}
