//! `raftmq bench e2e`: produce and consume at once. Each message carries its send time (unix
//! microseconds) in the user property `bench-sent-us`; latency runs from there to its receipt by a
//! long-polling pull consumer (one task per queue, starting at the queue's end offset).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use tonic::transport::Channel;

use super::consume::query_offset;
use super::report::Line;
use super::{E2eArgs, SENT_AT_PROPERTY};
use crate::cli::client::{self, check_status, request};
use crate::v2::messaging_service_client::MessagingServiceClient;
use crate::v2::{Code, MessageQueue, PullMessageRequest, QueryOffsetPolicy, pull_message_response};

struct Shared {
    received: AtomicU64,
    producers_done: AtomicBool,
    target: AtomicU64,
    last_receipt_us: AtomicU64,
}

async fn consume_queue(mut messaging: MessagingServiceClient<Channel>, client_id: String, queue: MessageQueue, mut next: u64, shared: Arc<Shared>, idle: Duration) -> anyhow::Result<(hdrhistogram::Histogram<u64>, u64)> {
    let mut hist = super::new_histogram();
    let mut without_stamp = 0u64;
    loop {
        if shared.producers_done.load(Ordering::Acquire) {
            let received = shared.received.load(Ordering::Acquire);
            let idle_for = super::unix_micros().saturating_sub(shared.last_receipt_us.load(Ordering::Acquire));
            if received >= shared.target.load(Ordering::Acquire) || idle_for >= idle.as_micros() as u64 {
                return Ok((hist, without_stamp));
            }
        }
        let pull = PullMessageRequest {
            group: None,
            message_queue: Some(queue.clone()),
            offset: next as i64,
            batch_size: crate::limits::PULL_BATCH_MAX as i32,
            filter_expression: None,
            long_polling_timeout: Some(prost_types::Duration { seconds: 0, nanos: 500_000_000 }),
        };
        let mut stream = messaging.pull_message(request(&client_id, pull)).await?.into_inner();
        let mut got = 0u64;
        while let Some(frame) = stream.next().await {
            match frame.context("pull stream broke")?.content {
                Some(pull_message_response::Content::Status(s)) if s.code == Code::MessageNotFound as i32 => {}
                Some(pull_message_response::Content::Status(s)) => check_status(Some(&s), "pull")?,
                Some(pull_message_response::Content::Message(m)) => {
                    let now = super::unix_micros();
                    match m.user_properties.get(SENT_AT_PROPERTY).and_then(|v| v.parse::<u64>().ok()) {
                        Some(sent) => hist.saturating_record(now.saturating_sub(sent).max(1)),
                        None => without_stamp += 1,
                    }
                    got += 1;
                }
                Some(pull_message_response::Content::NextOffset(n)) => next = next.max(n as u64),
                None => {}
            }
        }
        if got > 0 {
            shared.received.fetch_add(got, Ordering::AcqRel);
            shared.last_receipt_us.store(super::unix_micros(), Ordering::Release);
        }
    }
}

pub async fn run(args: E2eArgs) -> anyhow::Result<()> {
    let idle = crate::cli::parse_duration(&args.idle_timeout)?;
    args.load.validate()?;
    if args.load.create_topic {
        super::create_topic(&args.common.endpoint, &args.common.topic, args.load.queues).await?;
    }
    let targets = super::target_endpoints(&args.common.endpoint, args.load.any_node).await?;
    let channel = super::connect_one(&targets[0]).await?;
    let client_id = client::new_client_id();
    let mut messaging = client::messaging(channel);
    let queues = super::route(&mut messaging, &client_id, &args.common.topic).await?;
    let shared = Arc::new(Shared { received: AtomicU64::new(0), producers_done: AtomicBool::new(false), target: AtomicU64::new(u64::MAX), last_receipt_us: AtomicU64::new(super::unix_micros()) });
    let mut consumers = Vec::new();
    for queue in queues.iter().cloned() {
        let end = query_offset(&mut messaging, &client_id, &queue, QueryOffsetPolicy::End).await?;
        let (messaging, client_id, shared) = (messaging.clone(), client_id.clone(), shared.clone());
        consumers.push(tokio::spawn(consume_queue(messaging, client_id, queue, end, shared, idle)));
    }
    let mut load = args.load.clone();
    load.create_topic = false;
    let started = Instant::now();
    let sent = super::produce::send_load(&args.common, &load, true, "e2e").await?;
    shared.target.store(sent.acked, Ordering::Release);
    shared.last_receipt_us.fetch_max(super::unix_micros(), Ordering::AcqRel);
    shared.producers_done.store(true, Ordering::Release);
    let mut hist = super::new_histogram();
    let mut without_stamp = 0;
    for c in consumers {
        let (h, w) = c.await??;
        hist.add(&h)?;
        without_stamp += w;
    }
    let seconds = started.elapsed().as_secs_f64();
    let received = shared.received.load(Ordering::Acquire);
    let mut line = Line::new();
    super::produce::common_fields(&mut line, &args.common, &args.load, sent.acked, sent.seconds, &hist);
    line.put("flush", args.common.flush_label.clone())
        .put("batch", args.load.batch as u64)
        .put("mode", "e2e")
        .latency("send_", &sent.hist)
        .put("received", received)
        .put("received_without_timestamp", without_stamp)
        .put("e2e_seconds", super::report::round3(seconds))
        .put("errors", sent.failed_requests)
        .put("note", args.common.note.clone());
    line.print();
    if sent.failed_requests > 0 {
        bail!("{} send requests failed", sent.failed_requests);
    }
    if received < sent.acked {
        bail!("received {received} of {} acknowledged messages", sent.acked);
    }
    Ok(())
}
