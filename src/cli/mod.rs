//! The `raftmq` command line: server, dev, and the client commands.
pub mod bench;
pub mod client;
pub mod commands;
pub mod group;
pub mod pop;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::ServerArgs;

#[derive(Parser, Debug)]
#[command(name = "raftmq", version, about = "A RocketMQ-family message broker whose Raft log is the commitlog")]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Subcommand, Debug)]
pub enum CliCommand {
    /// Run one broker node.
    Server(ServerArgs),
    /// Run a router: brokers register with it (--routers); clients may use it as their endpoint.
    Router(crate::router::RouterArgs),
    /// Run a router (127.0.0.1:8080) and a three-node group (client ports 8081-8083) in this process.
    Dev {
        #[arg(long, default_value = "raftmq-data", env = "RAFTMQ_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, default_value = "sync", value_parser = ["sync", "async"], env = "RAFTMQ_FLUSH")]
        flush: String,
    },
    /// Create, grow, list, describe and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Create, list, describe (offsets, lag, members) and delete consumer groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Send messages.
    Send(SendArgs),
    /// Read messages: pull them (or read one node's copy with --local), or with --group pop and
    /// ack them as that consumer group.
    Consume(ConsumeArgs),
    /// Benchmarks: produce, consume, e2e, failover (one JSON line on stdout per run).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Cluster status.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    Create {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        topic: String,
        /// Queues per group.
        #[arg(long, default_value_t = crate::limits::QUEUES_DEFAULT)]
        queues: u32,
        /// Groups to place the topic on, e.g. g1,g2 (needs a router endpoint; default: every live group).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Grow a topic to more queues (a queue count never shrinks).
    Update {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        queues: u32,
    },
    List {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        json: bool,
    },
    /// A topic's queues with their min and max offsets.
    Describe {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic, and every consumer group's position on it.
    Delete {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        topic: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a consumer group (fails if it exists).
    Create {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        group: String,
        /// Deliveries of a message before it moves to the group's dead-letter topic %DLQ%GROUP.
        #[arg(long, default_value_t = raftmq_raft::consumer::MAX_DELIVERY_ATTEMPTS_DEFAULT)]
        max_delivery_attempts: u32,
        /// Hand out each queue's messages in order, one in-flight batch at a time.
        #[arg(long)]
        fifo: bool,
    },
    List {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        json: bool,
    },
    /// Per queue: pop and acked offsets, in-flight count, committed offset, max offset and lag;
    /// and the clients seen in the last 30 s.
    Describe {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        group: String,
        /// Also list this topic's queues that the group has not read yet.
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a consumer group and its positions.
    Delete {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        group: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    #[arg(long)]
    pub endpoint: String,
    #[arg(long)]
    pub topic: String,
    /// Message body; with --count N, "-{i}" is appended to each.
    #[arg(long, default_value = "hello")]
    pub body: String,
    #[arg(long)]
    pub keys: Option<String>,
    #[arg(long)]
    pub tag: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub count: u64,
}

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[arg(long)]
    pub endpoint: String,
    #[arg(long)]
    pub topic: String,
    /// earliest, or latest.
    #[arg(long, default_value = "earliest", value_parser = ["earliest", "latest"])]
    pub from: String,
    /// Stop once no message arrived for this long (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s")]
    pub until_idle: String,
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
    pub output: String,
    /// Read the pointed-at node's own applied data instead of going through the leader.
    #[arg(long, conflicts_with = "group")]
    pub local: bool,
    /// Pop consumption as this consumer group: each message is printed, then acked.
    #[arg(long)]
    pub group: Option<String>,
    /// With --group: only messages whose tag is one of these (`a || b`); default all.
    #[arg(long, requires = "group")]
    pub tag_filter: Option<String>,
    /// With --group: stop after this many messages.
    #[arg(long, requires = "group")]
    pub max: Option<u64>,
    /// With --group: how long a received message stays hidden from the group before it is handed
    /// out again unless acked (default 30s).
    #[arg(long, requires = "group")]
    pub invisible: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    Status {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        json: bool,
    },
    /// Hand leadership to another (caught-up) node of the group.
    TransferLeader {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        to: u64,
    },
}

/// Parses `2s`, `500ms`, `1m`.
pub fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| anyhow::anyhow!("duration {text:?} is not like 2s, 500ms or 1m"))?;
    Ok(match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" | "" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n * 60),
        _ => anyhow::bail!("duration {text:?} has an unknown unit; use ms, s or m"),
    })
}
