//! The consumers: workers of one consumer group receiving with ReceiveMessage (pop, long poll,
//! any queue of the topic) and acking what they get, and the drain after the final heal that lets
//! them run until the group has taken everything in the log.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use rand::Rng;
use raftmq::cli::client;
use raftmq::v2::{AckMessageEntry, AckMessageRequest, Code, ReceiveMessageRequest, receive_message_response};
use tonic::transport::Channel;

use crate::history::{Delivery, F, Op, Type};
use crate::run::{Config, Conn, Recorder, queue, resource};

/// Most messages one receive asks for.
const BATCH: i32 = 16;

/// One message handed out, with what its ack needs.
struct Received {
    delivery: Delivery,
    message_id: String,
    handle: String,
}

fn protobuf_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// A v2 status code as a completion: OK, definitely refused (4xxxx: checked before anything was
/// proposed, or a refused receipt handle), or unknown.
fn outcome(code: i32) -> Type {
    if code == Code::Ok as i32 {
        Type::Ok
    } else if (40000..50000).contains(&code) {
        Type::Fail
    } else {
        Type::Info
    }
}

fn received(m: raftmq::v2::Message) -> anyhow::Result<Received> {
    let p = m.system_properties.context("a message without system properties")?;
    let delivery = Delivery {
        value: String::from_utf8_lossy(&m.body).into_owned(),
        queue: p.queue_id as u32,
        offset: p.queue_offset.context("a message without a queue offset")? as u64,
        attempt: p.delivery_attempt.context("a message without a delivery attempt")? as u32,
    };
    Ok(Received { delivery, message_id: p.message_id, handle: p.receipt_handle.context("a message without a receipt handle")? })
}

/// One ReceiveMessage. Whatever arrived before an error is still returned: it was handed out.
async fn receive(channel: Channel, cfg: &Config, topic: &str, group: &str, client_id: &str) -> (Type, Vec<Received>, Option<String>) {
    let request = ReceiveMessageRequest {
        group: Some(resource(group)),
        message_queue: Some(queue(topic, -1)),
        batch_size: BATCH,
        invisible_duration: Some(protobuf_duration(cfg.invisible)),
        long_polling_timeout: Some(protobuf_duration(cfg.long_poll)),
        ..Default::default()
    };
    let timeout = cfg.long_poll + cfg.op_timeout;
    let mut request = client::request(client_id, request);
    request.set_timeout(timeout);
    let mut got = Vec::new();
    let mut status = None;
    let work = async {
        let mut stream = client::messaging(channel).receive_message(request).await?.into_inner();
        while let Some(frame) = stream.next().await {
            match frame?.content {
                Some(receive_message_response::Content::Message(m)) => got.push(received(m)?),
                Some(receive_message_response::Content::Status(s)) => status = Some(s),
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    let result = tokio::time::timeout(timeout + Duration::from_millis(500), work).await;
    match (result, status) {
        (Err(_), _) => (Type::Info, got, Some("timeout".into())),
        (Ok(Err(e)), _) => (Type::Info, got, Some(format!("{e:#}"))),
        (Ok(Ok(())), None) => (Type::Info, got, Some("no status".into())),
        // MESSAGE_NOT_FOUND: the long poll ended with nothing to take.
        (Ok(Ok(())), Some(s)) if s.code == Code::MessageNotFound as i32 => (Type::Ok, got, None),
        (Ok(Ok(())), Some(s)) => {
            let typ = outcome(s.code);
            (typ, got, (typ != Type::Ok).then(|| format!("{}: {}", s.code, s.message)))
        }
    }
}

/// One AckMessage for `items`; the outcome of each entry. A timeout or an error of the whole call
/// is indeterminate for every entry (the ack may have been applied).
async fn ack(channel: Channel, cfg: &Config, topic: &str, group: &str, client_id: &str, items: &[Received]) -> Vec<(Type, Option<String>)> {
    let entries = items.iter().map(|r| AckMessageEntry { message_id: r.message_id.clone(), receipt_handle: r.handle.clone(), ..Default::default() }).collect();
    let mut request = client::request(client_id, AckMessageRequest { group: Some(resource(group)), topic: Some(resource(topic)), entries });
    request.set_timeout(cfg.op_timeout);
    let all = |t: Type, e: String| items.iter().map(|_| (t, Some(e.clone()))).collect();
    match tokio::time::timeout(cfg.op_timeout + Duration::from_millis(500), client::messaging(channel).ack_message(request)).await {
        Err(_) => all(Type::Info, "timeout".into()),
        Ok(Err(status)) => all(Type::Info, format!("{:?}: {}", status.code(), status.message())),
        Ok(Ok(response)) => {
            let response = response.into_inner();
            let status = response.status.unwrap_or_default();
            if response.entries.len() != items.len() {
                // The call failed as a whole (group or topic refused, no leader, ...).
                return all(outcome(status.code), format!("{}: {}", status.code, status.message));
            }
            response
                .entries
                .into_iter()
                .map(|e| {
                    let s = e.status.unwrap_or_default();
                    let typ = outcome(s.code);
                    (typ, (typ != Type::Ok).then(|| format!("{}: {}", s.code, s.message)))
                })
                .collect()
        }
    }
}

/// A consumer worker: receive, record, ack every message (but leave a first delivery unacked with
/// probability `cfg.skip_ack`, like a consumer crashing mid-way, so that the broker's redelivery
/// after the invisible duration is exercised), record each entry's outcome, again until `stop`.
pub async fn consumer(process: u32, cfg: Arc<Config>, topic: Arc<String>, group: Arc<String>, rec: Recorder, stop: Arc<AtomicBool>) {
    let mut conn = Conn::new(&cfg, process);
    let client_id = format!("raftmq-jepsen-c{process}");
    while !stop.load(Ordering::Relaxed) {
        let addr = conn.addr();
        rec.record(Op::new(process, Type::Invoke, F::Receive, rec.now()).node(&addr));
        let channel = match conn.channel().await {
            Ok(c) => c,
            Err(e) => {
                rec.record(Op::new(process, Type::Fail, F::Receive, rec.now()).node(&addr).error(format!("connect: {e}")).delivered(vec![]));
                conn.next();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (typ, got, error) = receive(channel, &cfg, &topic, &group, &client_id).await;
        let mut op = Op::new(process, typ, F::Receive, rec.now()).node(&addr).delivered(got.iter().map(|r| r.delivery.clone()).collect());
        op.error = error;
        rec.record(op);
        match typ {
            Type::Info => conn.next(),
            Type::Fail => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => {}
        }
        let got: Vec<Received> = got.into_iter().filter(|r| r.delivery.attempt > 1 || !rand::rng().random_bool(cfg.skip_ack)).collect();
        if got.is_empty() {
            continue;
        }
        let addr = conn.addr();
        let t = rec.now();
        for r in &got {
            rec.record(Op::new(process, Type::Invoke, F::Ack, t).acking(&r.delivery).node(&addr));
        }
        let results = match conn.channel().await {
            Ok(channel) => ack(channel, &cfg, &topic, &group, &client_id, &got).await,
            // Nothing was sent: a definite failure (the messages come back after their invisible time).
            Err(e) => got.iter().map(|_| (Type::Fail, Some(format!("connect: {e}")))).collect(),
        };
        let t = rec.now();
        let mut broken = false;
        for (r, (typ, error)) in got.iter().zip(results) {
            let mut op = Op::new(process, typ, F::Ack, t).acking(&r.delivery).node(&addr);
            op.error = error;
            broken |= typ == Type::Info;
            rec.record(op);
        }
        if broken {
            conn.next();
        }
    }
}

/// After the final heal: lets the consumers run until every value in `target` (the log's content)
/// was acked OK, or was delivered and nothing has been delivered for longer than the invisible
/// duration (an indeterminate ack may have been applied, so such a value need not come back).
/// Gives up after `timeout`; what was never delivered is then reported lost by the checker.
pub async fn drain(rec: &Recorder, cfg: &Config, target: &HashSet<String>, timeout: Duration, log: &(dyn Fn(String) + Send + Sync)) -> bool {
    let start = tokio::time::Instant::now();
    let mut last_log = start;
    loop {
        let ops = rec.ops();
        let mut delivered: HashMap<&str, u64> = HashMap::new();
        for op in ops.iter().filter(|o| o.f == F::Receive) {
            for d in op.deliveries.iter().flatten() {
                delivered.insert(d.value.as_str(), op.time);
            }
        }
        let acked: HashSet<&str> = ops.iter().filter(|o| o.f == F::Ack && o.typ == Type::Ok).filter_map(|o| o.value.as_deref()).collect();
        let undelivered = target.iter().filter(|v| !delivered.contains_key(v.as_str())).count();
        let unacked = target.iter().filter(|v| !acked.contains(v.as_str())).count();
        let last_delivery = delivered.values().max().copied().unwrap_or(0);
        let quiet = Duration::from_micros(rec.now().saturating_sub(last_delivery));
        if unacked == 0 || (undelivered == 0 && quiet > cfg.invisible + Duration::from_secs(3)) {
            log(format!("drained in {:.1}s: {} values, {unacked} without an OK ack", start.elapsed().as_secs_f64(), target.len()));
            return true;
        }
        if start.elapsed() > timeout {
            log(format!("drain gave up after {timeout:?}: {undelivered} of {} values never delivered, {unacked} without an OK ack", target.len()));
            return false;
        }
        if last_log.elapsed() > Duration::from_secs(10) {
            last_log = tokio::time::Instant::now();
            log(format!("draining: {undelivered} of {} values not delivered yet, {unacked} without an OK ack", target.len()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
