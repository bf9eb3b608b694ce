//! `raftmq bench produce`: acknowledged sends, latency from send to SEND_OK per request.
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;

use super::report::{Line, round2, round3};
use super::{Common, Load, MessageFactory, ProduceArgs};
use super::wire::WireChannel;
use crate::cli::client;
use crate::v2::{Code, SendMessageRequest, SendMessageResponse};

pub struct LoadResult {
    pub acked: u64,
    /// Failed requests, and the messages they carried.
    pub failed_requests: u64,
    pub failed_messages: u64,
    pub hist: Histogram<u64>,
    pub seconds: f64,
    pub first_error: Option<String>,
}

impl Load {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.producers == 0 || self.window == 0 || self.batch == 0 || self.size == 0 {
            bail!("--producers, --window, --batch and --size must be > 0");
        }
        if self.batch > crate::limits::BATCH_MESSAGES_MAX {
            bail!("--batch {} is over the server's limit of {} messages per request", self.batch, crate::limits::BATCH_MESSAGES_MAX);
        }
        if self.messages == Some(0) {
            bail!("--messages must be > 0");
        }
        Ok(())
    }
}

/// Runs the producers of `load` to completion. `received` (e2e) is not touched here.
pub async fn send_load(common: &Common, load: &Load, with_timestamp: bool, progress_label: &str) -> anyhow::Result<LoadResult> {
    load.validate()?;
    let duration = load.duration.as_deref().map(crate::cli::parse_duration).transpose()?;
    if load.create_topic {
        super::create_topic(&common.endpoint, &common.topic, load.queues).await?;
    }
    let targets = super::target_endpoints(&common.endpoint, load.any_node).await?;
    let client_id = client::new_client_id();
    // One connection per producer, spread round-robin over the targets.
    let mut channels = Vec::with_capacity(load.producers);
    for i in 0..load.producers {
        channels.push(WireChannel::connect(&targets[i % targets.len()], &client_id).await?);
    }
    let total = match (load.messages, duration) {
        (Some(n), _) => Some(n),
        (None, None) => Some(100_000),
        (None, Some(_)) => None,
    };
    let bar = super::progress(total, progress_label);
    let barrier = Arc::new(tokio::sync::Barrier::new(load.producers + 1));
    let mut tasks = Vec::with_capacity(load.producers);
    for (i, channel) in channels.into_iter().enumerate() {
        let count = match total {
            None => u64::MAX,
            Some(n) => n / load.producers as u64 + u64::from((i as u64) < n % load.producers as u64),
        };
        let mut factory = MessageFactory::new(&common.topic, load.size, i);
        factory.with_timestamp = with_timestamp;
        let (window, batch, barrier, bar) = (load.window, load.batch, barrier.clone(), bar.clone());
        let deadline = duration;
        tasks.push(tokio::spawn(async move {
            let mut hist = super::new_histogram();
            let mut inflight = FuturesUnordered::new();
            let (mut sent, mut acked, mut failed_requests, mut failed_messages) = (0u64, 0u64, 0u64, 0u64);
            let mut first_error = None;
            barrier.wait().await;
            let start = Instant::now();
            loop {
                let open = sent < count && deadline.is_none_or(|d| start.elapsed() < d);
                while open && inflight.len() < window && sent < count {
                    if deadline.is_some_and(|d| start.elapsed() >= d) {
                        break;
                    }
                    let n = (count - sent).min(batch as u64) as usize;
                    let messages = factory.batch(sent, n);
                    let mut channel = channel.clone();
                    let t0 = Instant::now();
                    inflight.push(async move {
                        let result = channel.unary::<_, SendMessageResponse>("SendMessage", &SendMessageRequest { messages }).await;
                        (result, t0.elapsed(), n as u64)
                    });
                    sent += n as u64;
                }
                let Some((result, latency, n)) = inflight.next().await else { break };
                let outcome = match result {
                    Ok(response) => {
                        match response.status {
                            Some(s) if s.code == Code::Ok as i32 => Ok(()),
                            Some(s) => Err(format!("send failed: code {} {}", s.code, s.message)),
                            None => Err("send failed: no status".to_string()),
                        }
                    }
                    Err(e) => Err(format!("send failed: {e:#}")),
                };
                match outcome {
                    Ok(()) => {
                        hist.saturating_record(latency.as_micros().max(1) as u64);
                        acked += n;
                        bar.inc(n);
                    }
                    Err(e) => {
                        failed_requests += 1;
                        failed_messages += n;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (acked, failed_requests, failed_messages, hist, first_error)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut result = LoadResult { acked: 0, failed_requests: 0, failed_messages: 0, hist: super::new_histogram(), seconds: 0.0, first_error: None };
    for task in tasks {
        let (acked, failed_requests, failed_messages, hist, first_error) = task.await?;
        result.acked += acked;
        result.failed_requests += failed_requests;
        result.failed_messages += failed_messages;
        result.hist.add(&hist)?;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    result.seconds = start.elapsed().as_secs_f64().max(1e-9);
    bar.finish_and_clear();
    if let Some(e) = &result.first_error {
        eprintln!("[bench] {} of the requests failed; first: {e}", result.failed_requests);
    }
    Ok(result)
}

/// The fields every sending mode prints first (same names and order as the NATS bench).
pub fn common_fields(line: &mut Line, common: &Common, load: &Load, acked: u64, seconds: f64, hist: &Histogram<u64>) {
    line.put("system", common.system.clone())
        .put("replicas", common.replicas)
        .put("size", load.size as u64)
        .put("publishers", load.producers as u64)
        .put("window", load.window as u64)
        .put("messages", acked)
        .put("seconds", round3(seconds))
        .put("msgs_per_s", round2(acked as f64 / seconds))
        .put("mb_per_s", round2(acked as f64 * load.size as f64 / 1e6 / seconds))
        .latency("", hist);
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let result = send_load(&args.common, &args.load, false, "produce").await?;
    let mut line = Line::new();
    common_fields(&mut line, &args.common, &args.load, result.acked, result.seconds, &result.hist);
    line.put("flush", args.common.flush_label.clone())
        .put("batch", args.load.batch as u64)
        .put("mode", "produce")
        .put("queues", args.load.queues)
        .put("leader_direct", !args.load.any_node)
        .put("errors", result.failed_requests)
        .put("error_messages", result.failed_messages)
        .put("note", args.common.note.clone());
    line.print();
    if result.failed_requests > 0 {
        bail!("{} send requests failed ({} messages)", result.failed_requests, result.failed_messages);
    }
    Ok(())
}
