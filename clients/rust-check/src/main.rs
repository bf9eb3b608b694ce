//! Round trip with the official RocketMQ Rust client (crate `rocketmq` 5.0.0) against raftmq.
//!
//! Goal: prove that a second official SDK, unchanged, can produce to and pop-consume from raftmq
//! with every field it sent intact.
//!
//! 1. A `Producer` sends N messages with distinct bodies, tags alternating `TagA`/`TagB`, two keys
//!    and two user properties each. The id the client generated before sending must come back in
//!    the send receipt (the server echoes the client's id).
//! 2. A `SimpleConsumer` in group G with filter `*` receives (long poll, batch 32, invisible 15 s)
//!    and acks until it holds all N or the deadline passes. Each message must be one we sent
//!    (looked up by body) with the same topic, tag, keys, properties and message id, delivered for
//!    the first time (delivery attempt 1), and no body may arrive twice.
//! 3. A second `SimpleConsumer` in group `G-tag` with filter `TagA` must receive exactly the TagA
//!    messages, never a TagB one, and then nothing more.
//!
//! Prints one summary line and exits 0, or prints every mismatch found and exits 1 (2 for usage).
//! `--tamper-expected-body` alters what the check expects for one message, so a run with it must
//! fail: scripts/rust-client.sh runs it that way as a negative control.
use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::{Message, MessageBuilder, MessageView};
use rocketmq::{Producer, SimpleConsumer};

const TAG_EVEN: &str = "TagA";
const TAG_ODD: &str = "TagB";
const RECEIVE_BATCH_MAX: i32 = 32;
const INVISIBLE_DURATION: Duration = Duration::from_secs(15);
/// The server holds an empty receive this long; the client waits this plus its request timeout.
const LONG_POLLING_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const COUNT_MAX: usize = 100_000;

const USAGE: &str = "usage: raftmq-rust-client-check --endpoint HOST:PORT[,HOST:PORT...] --topic T --group G \
                     --count N [--deadline-secs 60] [--produce-only] [--tamper-expected-body]";

struct Args {
    endpoint: String,
    topic: String,
    group: String,
    count: usize,
    deadline: Duration,
    produce_only: bool,
    tamper_expected_body: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut endpoint = None;
    let mut topic = None;
    let mut group = None;
    let mut count = None;
    let mut deadline = Duration::from_secs(60);
    let mut produce_only = false;
    let mut tamper_expected_body = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            // The Rust client separates several addresses with ','; accept raftmq's ';' too.
            "--endpoint" => endpoint = Some(value("--endpoint")?.replace(';', ",")),
            "--topic" => topic = Some(value("--topic")?),
            "--group" => group = Some(value("--group")?),
            "--count" => {
                let text = value("--count")?;
                let n: usize = text.parse().map_err(|_| format!("--count {text:?} is not a number"))?;
                if n < 2 || n > COUNT_MAX {
                    return Err(format!("--count must be within 2..={COUNT_MAX} (both tags need a message)"));
                }
                count = Some(n);
            }
            "--deadline-secs" => {
                let text = value("--deadline-secs")?;
                deadline = Duration::from_secs(text.parse().map_err(|_| format!("--deadline-secs {text:?} is not a number"))?);
            }
            "--produce-only" => produce_only = true,
            "--tamper-expected-body" => tamper_expected_body = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        endpoint: endpoint.ok_or("--endpoint is required")?,
        topic: topic.ok_or("--topic is required")?,
        group: group.ok_or("--group is required")?,
        count: count.ok_or("--count is required")?,
        deadline,
        produce_only,
        tamper_expected_body,
    })
}

/// What we sent, and so what a consumer must see.
#[derive(Clone, Debug)]
struct Expected {
    index: usize,
    message_id: String,
    tag: &'static str,
    keys: Vec<String>,
    properties: HashMap<String, String>,
}

fn client_option(args: &Args) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(args.endpoint.clone());
    option.set_enable_tls(false);
    option.set_timeout(REQUEST_TIMEOUT);
    option.set_long_polling_timeout(LONG_POLLING_TIMEOUT);
    option
}

/// Sends `count` messages; returns them keyed by body. Err on any send failure or id mismatch.
async fn produce(args: &Args, run_id: &str) -> Result<BTreeMap<Vec<u8>, Expected>, String> {
    let mut option = ProducerOption::default();
    option.set_topics(vec![args.topic.clone()]);
    let mut producer = Producer::new(option, client_option(args)).map_err(|e| format!("Producer::new: {e}"))?;
    producer.start().await.map_err(|e| format!("producer start (QueryRoute/Telemetry) failed: {e}"))?;

    let mut sent = BTreeMap::new();
    for index in 0..args.count {
        let body = format!("raftmq rust-client check {run_id} message #{index}").into_bytes();
        let tag = if index % 2 == 0 { TAG_EVEN } else { TAG_ODD };
        let keys = vec![format!("key-{run_id}-{index}"), format!("order-{index}")];
        let properties: HashMap<String, String> = [
            ("check-index".to_string(), index.to_string()),
            ("check-run".to_string(), run_id.to_string()),
        ]
        .into();
        let mut message = MessageBuilder::builder()
            .set_topic(args.topic.clone())
            .set_body(body.clone())
            .set_tag(tag)
            .set_keys(keys.clone())
            .set_properties(properties.clone())
            .build()
            .map_err(|e| format!("building message #{index}: {e}"))?;
        // The client generates the id; the server must echo it in the receipt.
        let generated_id = message.take_message_id();
        let receipt = producer.send(message).await.map_err(|e| format!("send of message #{index} failed: {e}"))?;
        if receipt.message_id() != generated_id {
            return Err(format!(
                "send of message #{index}: receipt message id {:?} is not the client's id {generated_id:?}",
                receipt.message_id()
            ));
        }
        let expected = Expected { index, message_id: generated_id, tag, keys, properties };
        if sent.insert(body, expected).is_some() {
            return Err(format!("message #{index}: body not distinct (bug in this check)"));
        }
    }
    let mut ids: Vec<&str> = sent.values().map(|e| e.message_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != args.count {
        return Err(format!("send receipts carry {} distinct message ids for {} messages", ids.len(), args.count));
    }
    producer.shutdown().await.map_err(|e| format!("producer shutdown (NotifyClientTermination) failed: {e}"))?;
    Ok(sent)
}

/// Everything wrong with one received message, compared with what was sent.
fn mismatches(topic: &str, message: &MessageView, expected: &Expected) -> Vec<String> {
    let mut problems = Vec::new();
    let what = format!("message #{} (id {})", expected.index, expected.message_id);
    if message.topic() != topic {
        problems.push(format!("{what}: topic {:?}, sent to {topic:?}", message.topic()));
    }
    if message.message_id() != expected.message_id {
        problems.push(format!("{what}: received with message id {:?}", message.message_id()));
    }
    if message.tag() != Some(expected.tag) {
        problems.push(format!("{what}: tag {:?}, sent {:?}", message.tag(), expected.tag));
    }
    if message.keys() != expected.keys.as_slice() {
        problems.push(format!("{what}: keys {:?}, sent {:?}", message.keys(), expected.keys));
    }
    if message.properties() != &expected.properties {
        problems.push(format!("{what}: user properties {:?}, sent {:?}", message.properties(), expected.properties));
    }
    if message.delivery_attempt() != 1 {
        problems.push(format!("{what}: delivery attempt {} on its first delivery", message.delivery_attempt()));
    }
    problems
}

struct Consumed {
    received: usize,
    acked: usize,
    receive_calls: usize,
}

/// Receives with `filter` in `group` and acks until every message of `wanted` arrived (or the
/// deadline); then one more receive must bring nothing. Every problem found is pushed to `problems`.
async fn consume(
    args: &Args,
    group: &str,
    filter: &str,
    sent: &BTreeMap<Vec<u8>, Expected>,
    wanted: &dyn Fn(&Expected) -> bool,
    problems: &mut Vec<String>,
) -> Result<Consumed, String> {
    let mut option = SimpleConsumerOption::default();
    option.set_topics(vec![args.topic.clone()]);
    option.set_consumer_group(group);
    let mut consumer = SimpleConsumer::new(option, client_option(args)).map_err(|e| format!("SimpleConsumer::new: {e}"))?;
    consumer.start().await.map_err(|e| format!("simple consumer {group} start failed: {e}"))?;
    let expression = FilterExpression::new(FilterType::Tag, filter);

    let want_total = sent.values().filter(|e| wanted(e)).count();
    let mut seen: HashMap<Vec<u8>, String> = HashMap::new();
    let mut stats = Consumed { received: 0, acked: 0, receive_calls: 0 };
    let deadline = Instant::now() + args.deadline;
    let mut finishing = false;
    loop {
        let messages = consumer
            .receive_with(args.topic.clone(), &expression, RECEIVE_BATCH_MAX, INVISIBLE_DURATION)
            .await
            .map_err(|e| format!("group {group} (filter {filter:?}): receive failed: {e}"))?;
        stats.receive_calls += 1;
        if messages.len() > RECEIVE_BATCH_MAX as usize {
            problems.push(format!("group {group}: one receive returned {} messages, asked for at most {RECEIVE_BATCH_MAX}", messages.len()));
        }
        if finishing && !messages.is_empty() {
            problems.push(format!("group {group} (filter {filter:?}): {} message(s) arrived after all expected ones were acked", messages.len()));
        }
        for message in messages {
            stats.received += 1;
            let body = message.body().to_vec();
            match sent.get(&body) {
                None => problems.push(format!(
                    "group {group}: received a body that was never sent: {:?} (id {})",
                    String::from_utf8_lossy(&body),
                    message.message_id()
                )),
                Some(expected) => {
                    if !wanted(expected) {
                        problems.push(format!(
                            "group {group} (filter {filter:?}): received message #{} with tag {:?}, which the filter excludes",
                            expected.index,
                            message.tag()
                        ));
                    }
                    problems.extend(mismatches(&args.topic, &message, expected));
                    if let Some(first_id) = seen.insert(body, message.message_id().to_string()) {
                        problems.push(format!(
                            "group {group}: message #{} arrived twice (ids {first_id} and {})",
                            expected.index,
                            message.message_id()
                        ));
                    }
                }
            }
            match consumer.ack(&message).await {
                Ok(()) => stats.acked += 1,
                Err(e) => problems.push(format!("group {group}: ack of {} failed: {e}", message.message_id())),
            }
        }
        if finishing {
            break;
        }
        let have = seen.keys().filter(|body| sent.get(*body).is_some_and(|e| wanted(e))).count();
        if have == want_total {
            // All here and acked: one more long poll must come back empty.
            finishing = true;
        } else if Instant::now() >= deadline {
            let mut missing: Vec<usize> =
                sent.iter().filter(|(body, e)| wanted(e) && !seen.contains_key(*body)).map(|(_, e)| e.index).collect();
            missing.sort();
            problems.push(format!(
                "group {group} (filter {filter:?}): only {have} of {want_total} messages arrived within {:?}; missing #{:?}",
                args.deadline,
                &missing[..missing.len().min(20)]
            ));
            break;
        }
    }
    consumer.shutdown().await.map_err(|e| format!("simple consumer {group} shutdown failed: {e}"))?;
    Ok(stats)
}

async fn run(args: Args) -> Result<String, Vec<String>> {
    let started = Instant::now();
    let run_id = format!("{:x}", SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    let mut sent = produce(&args, &run_id).await.map_err(|e| vec![e])?;
    let produced = format!("{} sent to {} (client ids echoed in receipts)", args.count, args.topic);
    if args.produce_only {
        return Ok(format!("{produced}; consume skipped (--produce-only); {:.1} s", started.elapsed().as_secs_f64()));
    }
    if args.tamper_expected_body {
        // Negative control: expect a body the server never had for message #0.
        let (body, expected) = sent.iter().find(|(_, e)| e.index == 0).map(|(b, e)| (b.clone(), e.clone())).unwrap();
        sent.remove(&body);
        let mut tampered = body;
        tampered.extend_from_slice(b" (tampered)");
        sent.insert(tampered, expected);
    }

    let mut problems = Vec::new();
    let all = consume(&args, &args.group, "*", &sent, &|_| true, &mut problems).await.map_err(|e| {
        problems.push(e);
        problems.clone()
    })?;
    if !problems.is_empty() {
        return Err(problems);
    }
    let tag_group = format!("{}-tag", args.group);
    let tagged = consume(&args, &tag_group, TAG_EVEN, &sent, &|e| e.tag == TAG_EVEN, &mut problems).await.map_err(|e| {
        problems.push(e);
        problems.clone()
    })?;
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(format!(
        "{produced}; group {} (filter *) received and acked {}/{} in {} receives; group {tag_group} (filter {TAG_EVEN}) \
         received and acked {} {TAG_EVEN} messages, no {TAG_ODD}; no duplicates, tags/keys/properties/ids intact; {:.1} s",
        args.group,
        all.acked,
        args.count,
        all.receive_calls,
        tagged.acked,
        started.elapsed().as_secs_f64()
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(summary) => {
            println!("rust-client-check OK: {summary}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in &problems {
                eprintln!("rust-client-check MISMATCH: {problem}");
            }
            println!("rust-client-check FAILED: {} problem(s), first: {}", problems.len(), problems[0]);
            ExitCode::FAILURE
        }
    }
}
