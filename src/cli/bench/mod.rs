//! `raftmq bench`: produce, consume, e2e and failover benchmarks over our own v2 client code.
//!
//! Every mode prints ONE JSON line on stdout whose first fields match ../shared/bench/nats
//! (system, replicas, size, publishers, window, messages, seconds, msgs_per_s, mb_per_s, p50_us,
//! p90_us, p99_us, p999_us, max_us), followed by raftmq's extras (flush, batch, mode, ...).
//! A progress bar goes to stderr only when stderr is a terminal.
mod consume;
mod e2e;
mod failover;
mod produce;
mod report;
mod wire;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use tonic::transport::{Channel, Endpoint};

use super::client::{self, check_status, request};
use crate::admin_pb::{ClusterStatusRequest, CreateTopicRequest, NodeStatus};
use crate::v2::messaging_service_client::MessagingServiceClient;
use crate::v2::{Message, MessageQueue, QueryRouteRequest, Resource};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Acknowledged sends: P producers, each keeping at most W SendMessage requests in flight.
    Produce(ProduceArgs),
    /// Pull every queue of the topic from its first offset; verify the count and dense offsets.
    Consume(ConsumeBenchArgs),
    /// Produce and consume at once: latency from the send timestamp to receipt.
    E2e(E2eArgs),
    /// Steady sends while the leader is killed and restarted N times: time from kill to the next successful send.
    Failover(FailoverArgs),
}

/// Options every mode shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// host:port, or several separated by ';'.
    #[arg(long, default_value = "127.0.0.1:8081;127.0.0.1:8082;127.0.0.1:8083")]
    pub endpoint: String,
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// What the target cluster's flush policy is (the server does not report it); printed as "flush".
    #[arg(long, default_value = "unknown", value_parser = ["sync", "async", "unknown"])]
    pub flush_label: String,
    /// Value of the "system" field.
    #[arg(long, default_value = "raftmq")]
    pub system: String,
    /// Value of the "replicas" field (the group size).
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Free-form note copied into the JSON line.
    #[arg(long, default_value = "")]
    pub note: String,
}

/// The sending side of produce, e2e and failover.
#[derive(Args, Debug, Clone)]
pub struct Load {
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Producer tasks, each on its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// SendMessage requests in flight per producer.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Messages per SendMessage request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Total messages across all producers (default 100000 unless --duration is given).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Send for this long (e.g. 30s); with --messages too, stop at whichever comes first.
    #[arg(long)]
    pub duration: Option<String>,
    /// Queues of the topic when --create-topic creates it.
    #[arg(long, default_value_t = crate::limits::QUEUES_DEFAULT)]
    pub queues: u32,
    /// Create the topic first (idempotent when it exists with the same queue count).
    #[arg(long)]
    pub create_topic: bool,
    /// Spread the connections over the given endpoints instead of connecting to the leader.
    #[arg(long)]
    pub any_node: bool,
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: Load,
}

#[derive(Args, Debug)]
pub struct ConsumeBenchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Fail unless exactly this many messages are read (0: only check against the queues' offsets).
    #[arg(long, default_value_t = 0)]
    pub expect: u64,
    /// Messages per PullMessage request.
    #[arg(long, default_value_t = 1024)]
    pub pull_batch: i32,
    /// Queues pulled at once (0: all).
    #[arg(long, default_value_t = 0)]
    pub parallel: usize,
    /// Connections the queue readers share, round robin (at most one per queue).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Read through the leader (default) or through the first endpoint that answers.
    #[arg(long)]
    pub any_node: bool,
}

#[derive(Args, Debug)]
pub struct E2eArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: Load,
    /// Give up waiting for the last messages after this long without one.
    #[arg(long, default_value = "10s")]
    pub idle_timeout: String,
}

#[derive(Args, Debug)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Producer tasks sending steadily (window 1), rotating over the endpoints on failure.
    #[arg(long, default_value_t = 8)]
    pub producers: usize,
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// Shell command that kills a node; {id} is replaced by its node id.
    #[arg(long)]
    pub kill_cmd: String,
    /// Shell command that starts a killed node again; {id} is replaced by its node id.
    #[arg(long)]
    pub restart_cmd: String,
    /// Steady sending before each kill.
    #[arg(long, default_value = "2s")]
    pub settle: String,
    /// Per-send timeout (a send to a dead node fails over to the next endpoint after this).
    #[arg(long, default_value = "1s")]
    pub send_timeout: String,
    /// A trial fails when no send succeeds this long after the kill.
    #[arg(long, default_value = "30s")]
    pub trial_timeout: String,
    #[arg(long, default_value_t = crate::limits::QUEUES_DEFAULT)]
    pub queues: u32,
    #[arg(long)]
    pub create_topic: bool,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce(args) => produce::run(args).await,
        BenchCommand::Consume(args) => consume::run(args).await,
        BenchCommand::E2e(args) => e2e::run(args).await,
        BenchCommand::Failover(args) => failover::run(args).await,
    }
}

/// A lazily connecting channel to one `host:port`.
pub(crate) fn channel_to(addr: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("bad endpoint {addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// An eagerly connected channel to one `host:port` (its own TCP connection).
pub(crate) async fn connect_one(addr: &str) -> anyhow::Result<Channel> {
    client::connect(addr).await.map(|(_, channel)| channel)
}

/// The group's nodes as the first answering endpoint sees them.
pub(crate) async fn cluster_status(endpoints: &str) -> anyhow::Result<Vec<NodeStatus>> {
    let mut last = None;
    for addr in client::parse_endpoints(endpoints)? {
        let Ok(channel) = channel_to(&addr) else { continue };
        let mut req = tonic::Request::new(ClusterStatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        match client::admin(channel).cluster_status(req).await {
            Ok(response) => return Ok(response.into_inner().nodes),
            Err(e) => last = Some(format!("{addr}: {}", e.message())),
        }
    }
    bail!("no endpoint answered cluster status ({})", last.unwrap_or_default())
}

/// The endpoints to connect producers to: the leader's client address when it can be found
/// (no forwarding hop), else the given endpoints.
pub(crate) async fn target_endpoints(endpoints: &str, any_node: bool) -> anyhow::Result<Vec<String>> {
    let given = client::parse_endpoints(endpoints)?;
    if any_node {
        return Ok(given);
    }
    match cluster_status(endpoints).await {
        Ok(nodes) => match nodes.iter().find(|n| n.role == "leader" && !n.endpoint.is_empty()) {
            Some(leader) => Ok(vec![leader.endpoint.clone()]),
            None => {
                eprintln!("[bench] no leader in cluster status; spreading over the given endpoints");
                Ok(given)
            }
        },
        Err(e) => {
            eprintln!("[bench] cluster status failed ({e:#}); spreading over the given endpoints");
            Ok(given)
        }
    }
}

pub(crate) async fn create_topic(endpoints: &str, topic: &str, queues: u32) -> anyhow::Result<()> {
    let (_, channel) = client::connect(endpoints).await?;
    let response = client::admin(channel).create_topic(CreateTopicRequest { topic: topic.into(), queues }).await?.into_inner();
    match response.status {
        Some(s) if s.code == 0 => Ok(()),
        Some(s) => bail!("topic create failed: {}", s.message),
        None => bail!("topic create failed: no status"),
    }
}

pub(crate) async fn route(messaging: &mut MessagingServiceClient<Channel>, client_id: &str, topic: &str) -> anyhow::Result<Vec<MessageQueue>> {
    let response = messaging
        .query_route(request(client_id, QueryRouteRequest { topic: Some(resource(topic)), endpoints: None }))
        .await?
        .into_inner();
    check_status(response.status.as_ref(), "route query")?;
    let mut queues = response.message_queues;
    queues.sort_by_key(|q| q.id);
    queues.dedup_by_key(|q| q.id);
    Ok(queues)
}

pub(crate) fn resource(name: &str) -> Resource {
    Resource { resource_namespace: String::new(), name: name.into() }
}

/// Builds the messages of one request. Message ids are unique per process run
/// (pid, producer, sequence) without a random draw per message.
pub(crate) struct MessageFactory {
    topic: Resource,
    body: Bytes,
    prefix: u64,
    pub with_timestamp: bool,
}

pub(crate) const SENT_AT_PROPERTY: &str = "bench-sent-us";

impl MessageFactory {
    pub fn new(topic: &str, size: usize, producer: usize) -> MessageFactory {
        let body = Bytes::from((0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>());
        let prefix = ((std::process::id() as u64) << 32) | (producer as u64 & 0xFFFF_FFFF);
        MessageFactory { topic: resource(topic), body, prefix, with_timestamp: false }
    }

    pub fn batch(&self, first_seq: u64, count: usize) -> Vec<Message> {
        let now_us = if self.with_timestamp { Some(unix_micros()) } else { None };
        (0..count as u64)
            .map(|i| {
                let message_id = format!("{:016X}{:016X}", self.prefix, first_seq + i);
                let mut message = client::normal_message(&self.topic.name, self.body.clone(), message_id, "raftmq-bench");
                if let Some(us) = now_us {
                    message.user_properties.insert(SENT_AT_PROPERTY.into(), us.to_string());
                }
                message
            })
            .collect()
    }
}

pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub(crate) fn progress(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} {per_sec} eta {eta}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{msg} {spinner} {pos} {per_sec} {elapsed}").unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub(crate) fn new_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}
