//! `raftmq consume --group G`: pop consumption as a SimpleConsumer would do it, with our own v2
//! client: ReceiveMessage (long poll) hands out messages that stay invisible to the group for
//! `--invisible`; each is printed and then acked, so a crash of the CLI between the two leaves the
//! message to be handed out again (at least once).
use std::time::{Duration, Instant};

use anyhow::bail;

use super::ConsumeArgs;
use super::client::{self, check_status, request};
use super::commands::print_message;
use crate::v2::{
    AckMessageEntry, AckMessageRequest, ClientType, Code, FilterExpression, HeartbeatRequest, FilterType, MessageQueue, ReceiveMessageRequest, Resource, receive_message_response,
};

/// Messages asked for per receive (the server's telemetry default for consumers).
const RECEIVE_BATCH_MAX: u64 = crate::messaging::telemetry::RECEIVE_BATCH_SIZE as u64;
/// Longest long poll one receive asks for; --until-idle is checked between receives.
const LONG_POLL_MAX: Duration = Duration::from_secs(10);
/// Room beyond the long poll for the call itself.
const CALL_SLACK: Duration = Duration::from_secs(10);
const INVISIBLE_DEFAULT: &str = "30s";

fn resource(name: &str) -> Option<Resource> {
    Some(Resource { resource_namespace: String::new(), name: name.to_string() })
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

pub async fn consume(args: &ConsumeArgs, group: &str) -> anyhow::Result<()> {
    let idle = super::parse_duration(&args.until_idle)?;
    let invisible = super::parse_duration(args.invisible.as_deref().unwrap_or(INVISIBLE_DEFAULT))?;
    if invisible.is_zero() {
        bail!("--invisible must be more than 0 (e.g. 30s)");
    }
    if args.max == Some(0) {
        bail!("--max must be at least 1");
    }
    let filter = FilterExpression { r#type: FilterType::Tag as i32, expression: args.tag_filter.clone().unwrap_or_else(|| "*".into()) };
    let (_, channel) = client::connect(&args.endpoint).await?;
    let client_id = client::new_client_id();
    let mut messaging = client::messaging(channel);
    // As RocketMQ clients do: the node then lists this CLI as a member of the group.
    let heartbeat = HeartbeatRequest { group: resource(group), client_type: ClientType::SimpleConsumer as i32 };
    check_status(messaging.heartbeat(request(&client_id, heartbeat)).await?.into_inner().status.as_ref(), "heartbeat")?;
    let mut consumed = 0u64;
    let mut last_message = Instant::now();
    loop {
        let want = match args.max {
            Some(max) if consumed >= max => return Ok(()),
            // Never pop more than --max leaves: the rest would stay invisible to the group.
            Some(max) => (max - consumed).min(RECEIVE_BATCH_MAX),
            None => RECEIVE_BATCH_MAX,
        };
        let long_poll = idle.saturating_sub(last_message.elapsed()).min(LONG_POLL_MAX);
        let receive = ReceiveMessageRequest {
            group: resource(group),
            message_queue: Some(MessageQueue { topic: resource(&args.topic), id: -1, ..Default::default() }),
            filter_expression: Some(filter.clone()),
            batch_size: want as i32,
            invisible_duration: Some(proto_duration(invisible)),
            auto_renew: false,
            long_polling_timeout: Some(proto_duration(long_poll)),
            attempt_id: None,
        };
        let mut call = request(&client_id, receive);
        call.set_timeout(long_poll + CALL_SLACK);
        let mut stream = messaging.receive_message(call).await?.into_inner();
        let mut messages = Vec::new();
        while let Some(frame) = stream.message().await? {
            match frame.content {
                Some(receive_message_response::Content::Status(s)) if s.code == Code::MessageNotFound as i32 => {}
                Some(receive_message_response::Content::Status(s)) => check_status(Some(&s), "receive")?,
                Some(receive_message_response::Content::Message(m)) => messages.push(m),
                Some(receive_message_response::Content::DeliveryTimestamp(_)) | None => {}
            }
        }
        if messages.is_empty() {
            if last_message.elapsed() >= idle {
                return Ok(());
            }
            continue;
        }
        let mut entries = Vec::with_capacity(messages.len());
        for m in messages {
            let props = m.system_properties.unwrap_or_default();
            let tag = props.tag.as_deref().unwrap_or("");
            print_message(props.queue_id as u32, props.queue_offset.unwrap_or(-1) as u64, &props.message_id, &props.keys, tag, &m.body);
            entries.push(AckMessageEntry { message_id: props.message_id, receipt_handle: props.receipt_handle.unwrap_or_default(), lite_topic: None });
        }
        consumed += entries.len() as u64;
        let ack = AckMessageRequest { group: resource(group), topic: resource(&args.topic), entries };
        let response = messaging.ack_message(request(&client_id, ack)).await?.into_inner();
        check_status(response.status.as_ref(), "ack")?;
        last_message = Instant::now();
    }
}
