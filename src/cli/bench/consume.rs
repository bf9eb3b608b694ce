//! `raftmq bench consume`: read every queue from its first offset to the end offset seen at the
//! start, checking that the offsets are dense and the count is right.
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use tonic::transport::Channel;

use super::ConsumeBenchArgs;
use super::report::{Line, round2, round3};
use crate::cli::client::{self, check_status, request};
use crate::v2::messaging_service_client::MessagingServiceClient;
use crate::v2::{Code, MessageQueue, PullMessageRequest, QueryOffsetPolicy, QueryOffsetRequest, pull_message_response};

/// What one queue's read found.
#[derive(Default, Debug)]
struct QueueRead {
    begin: u64,
    end: u64,
    read: u64,
    bytes: u64,
    /// Offsets that were not the expected next one (a gap or a repeat).
    out_of_order: u64,
    first_problem: Option<String>,
}

pub async fn query_offset(messaging: &mut MessagingServiceClient<Channel>, client_id: &str, queue: &MessageQueue, policy: QueryOffsetPolicy) -> anyhow::Result<u64> {
    let response = messaging
        .query_offset(request(client_id, QueryOffsetRequest { message_queue: Some(queue.clone()), query_offset_policy: policy as i32, timestamp: None }))
        .await?
        .into_inner();
    check_status(response.status.as_ref(), "offset query")?;
    Ok(response.offset.max(0) as u64)
}

async fn read_queue(mut messaging: MessagingServiceClient<Channel>, client_id: String, queue: MessageQueue, pull_batch: i32, bar: indicatif::ProgressBar) -> anyhow::Result<QueueRead> {
    let begin = query_offset(&mut messaging, &client_id, &queue, QueryOffsetPolicy::Beginning).await?;
    let end = query_offset(&mut messaging, &client_id, &queue, QueryOffsetPolicy::End).await?;
    let mut r = QueueRead { begin, end, ..Default::default() };
    // Pull from offset 0: the server starts at the queue's first remaining message.
    let (mut next, mut expected) = (0u64, begin);
    while expected < end {
        let pull = PullMessageRequest { group: None, message_queue: Some(queue.clone()), offset: next as i64, batch_size: pull_batch, filter_expression: None, long_polling_timeout: None };
        let mut stream = messaging.pull_message(request(&client_id, pull)).await?.into_inner();
        let mut got = 0u64;
        let mut next_offset = None;
        while let Some(frame) = stream.next().await {
            match frame.context("pull stream broke")?.content {
                Some(pull_message_response::Content::Status(s)) if s.code == Code::MessageNotFound as i32 => {}
                Some(pull_message_response::Content::Status(s)) => check_status(Some(&s), "pull")?,
                Some(pull_message_response::Content::Message(m)) => {
                    let offset = m.system_properties.as_ref().and_then(|p| p.queue_offset).unwrap_or(-1);
                    if offset != expected as i64 {
                        r.out_of_order += 1;
                        r.first_problem.get_or_insert(format!("queue {}: expected offset {expected}, got {offset}", queue.id));
                    }
                    expected = (offset.max(expected as i64) + 1) as u64;
                    r.read += 1;
                    r.bytes += m.body.len() as u64;
                    got += 1;
                }
                Some(pull_message_response::Content::NextOffset(n)) => next_offset = Some(n as u64),
                None => {}
            }
        }
        bar.inc(got);
        match next_offset {
            Some(n) if n > next => next = n,
            _ => {
                r.first_problem.get_or_insert(format!("queue {}: no progress at offset {next} (end {end})", queue.id));
                break;
            }
        }
    }
    Ok(r)
}

pub async fn run(args: ConsumeBenchArgs) -> anyhow::Result<()> {
    let targets = super::target_endpoints(&args.common.endpoint, args.any_node).await?;
    let channel = super::connect_one(&targets[0]).await?;
    let client_id = client::new_client_id();
    let mut messaging = client::messaging(channel);
    let queues = super::route(&mut messaging, &client_id, &args.common.topic).await?;
    if queues.is_empty() {
        bail!("topic {} has no queues", args.common.topic);
    }
    let parallel = if args.parallel == 0 { queues.len() } else { args.parallel };
    let bar = super::progress(None, "consume");
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel));
    let start = Instant::now();
    // Readers share `connections` connections round robin (one HTTP/2 connection is one writer
    // task on the server and one reader task here: 8 queues over one are bound by those two).
    let mut channels = vec![messaging];
    for _ in 1..args.connections.max(1).min(queues.len()) {
        channels.push(client::messaging(super::connect_one(&targets[0]).await?));
    }
    let mut tasks = Vec::new();
    for (i, queue) in queues.iter().cloned().enumerate() {
        let messaging = channels[i % channels.len()].clone();
        let (client_id, bar, limit) = (client_id.clone(), bar.clone(), limit.clone());
        let pull_batch = args.pull_batch;
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await?;
            read_queue(messaging, client_id, queue, pull_batch, bar).await
        }));
    }
    let channels_used = channels.len();
    drop(channels);
    let mut reads = Vec::new();
    for task in tasks {
        reads.push(task.await??);
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    bar.finish_and_clear();
    let read: u64 = reads.iter().map(|r| r.read).sum();
    let bytes: u64 = reads.iter().map(|r| r.bytes).sum();
    let in_queues: u64 = reads.iter().map(|r| r.end - r.begin).sum();
    let out_of_order: u64 = reads.iter().map(|r| r.out_of_order).sum();
    let problems: Vec<&String> = reads.iter().filter_map(|r| r.first_problem.as_ref()).collect();
    let ok = read == in_queues && out_of_order == 0 && problems.is_empty() && (args.expect == 0 || read == args.expect);
    let size = if read > 0 { bytes / read } else { 0 };
    let mut line = Line::new();
    line.put("system", args.common.system.clone())
        .put("replicas", args.common.replicas)
        .put("size", size)
        .put("messages", read)
        .put("seconds", round3(seconds))
        .put("msgs_per_s", round2(read as f64 / seconds))
        .put("mb_per_s", round2(bytes as f64 / 1e6 / seconds))
        .put("flush", args.common.flush_label.clone())
        .put("mode", "consume")
        .put("queues", queues.len() as u64)
        .put("pull_batch", args.pull_batch as i64)
        .put("connections", channels_used as u64)
        .put("in_queues", in_queues)
        .put("expected", args.expect)
        .put("offset_gaps", out_of_order)
        .put("ok", ok)
        .put("note", args.common.note.clone());
    line.print();
    if !ok {
        for p in &problems {
            eprintln!("[bench] {p}");
        }
        bail!("verification failed: read {read}, queues hold {in_queues}, expected {}, offsets out of order {out_of_order}", args.expect);
    }
    Ok(())
}
