//! SendMessage: validate everything first (a rejected request writes nothing), encode the
//! messages, hand them to the batcher (one log entry per queue for all concurrent requests, see
//! batcher.rs), answer once they are committed and applied.
use bytes::BytesMut;
use raftmq_raft::command::{MessageHeader, encode_message, send_overhead};

use crate::broker::{Broker, ProposeError};
use crate::messaging::batcher::{Placed, SendPart};
use crate::limits::{BATCH_BYTES_MAX, BATCH_MESSAGES_MAX, KEYS_BYTES_MAX, PROPERTIES_BYTES_MAX, TAG_BYTES_MAX};
use crate::messaging::convert::{ms_from_timestamp, now_ms};
use crate::status::{self, ApiError};
use crate::v2::{Code, Encoding, Message, MessageType, SendMessageRequest, SendMessageResponse, SendResultEntry};

/// Delivery times further than this from now are absurd (RocketMQ's default max is 40 days).
const DELIVERY_HORIZON_MS: i64 = 40 * 24 * 3600 * 1000;

fn check_message(broker: &Broker, message: &Message, topic: &str) -> Result<(), ApiError> {
    let name = message.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
    if name != topic {
        return Err(ApiError::bad_request("all messages of one request must have the same topic"));
    }
    if message.body.is_empty() {
        return Err(ApiError::new(Code::MessageBodyEmpty, "message body is empty"));
    }
    let max = broker.config.max_body_bytes;
    if message.body.len() > max {
        return Err(ApiError::new(Code::MessageBodyTooLarge, format!("message body is {} bytes; the limit is {max}", message.body.len())));
    }
    let props = message.system_properties.as_ref().ok_or_else(|| ApiError::bad_request("system_properties is required"))?;
    if let Some(tag) = &props.tag {
        if tag.trim().is_empty() || tag.contains('|') || tag.len() > TAG_BYTES_MAX {
            return Err(ApiError::new(Code::IllegalMessageTag, format!("tag {tag:?} is illegal: it must be non-blank, without '|', at most {TAG_BYTES_MAX} bytes")));
        }
    }
    if props.keys.iter().any(|k| k.trim().is_empty()) || props.keys.iter().map(String::len).sum::<usize>() > KEYS_BYTES_MAX {
        return Err(ApiError::new(Code::IllegalMessageKey, "message keys must be non-blank and at most 4096 bytes in all"));
    }
    let property_bytes: usize = message.user_properties.iter().map(|(k, v)| k.len() + v.len()).sum();
    if property_bytes > PROPERTIES_BYTES_MAX {
        return Err(ApiError::new(Code::MessagePropertiesTooLarge, format!("user properties exceed {PROPERTIES_BYTES_MAX} bytes")));
    }
    if message.user_properties.keys().any(|k| k.is_empty()) {
        return Err(ApiError::new(Code::IllegalMessagePropertyKey, "a user property key is empty"));
    }
    if let Some(ts) = &props.delivery_timestamp {
        let at = ms_from_timestamp(ts);
        if at <= 0 || (at - now_ms()).abs() > DELIVERY_HORIZON_MS {
            return Err(ApiError::new(Code::IllegalDeliveryTime, format!("delivery timestamp {at} ms is absurd")));
        }
        return Err(ApiError::new(Code::NotImplemented, "delay messages are not supported yet"));
    }
    match MessageType::try_from(props.message_type).unwrap_or(MessageType::Unspecified) {
        MessageType::Normal | MessageType::Unspecified => {
            if props.message_group.is_some() {
                return Err(ApiError::new(Code::MessagePropertyConflictWithType, "a NORMAL message has no message group"));
            }
        }
        MessageType::Fifo => match &props.message_group {
            Some(group) if !group.trim().is_empty() => {}
            _ => return Err(ApiError::new(Code::IllegalMessageGroup, "a FIFO message needs a non-blank message group")),
        },
        other => return Err(ApiError::new(Code::NotImplemented, format!("{other:?} messages are not supported yet"))),
    }
    if Encoding::try_from(props.body_encoding).is_err() {
        return Err(ApiError::bad_request("unknown body encoding"));
    }
    Ok(())
}

/// Err(NotLeader): leadership moved before anything was written; forward the request.
pub async fn send_message(broker: &Broker, request: &SendMessageRequest) -> Result<SendMessageResponse, ProposeError> {
    let messages = &request.messages;
    let first = messages.first().ok_or_else(|| ApiError::bad_request("no messages in the request"))?;
    if messages.len() > BATCH_MESSAGES_MAX {
        return Err(ApiError::bad_request(format!("{} messages in one request; the limit is {BATCH_MESSAGES_MAX}", messages.len())).into());
    }
    let topic = first.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default();
    let config = crate::messaging::pull::existing_topic(broker, &topic)?;
    let total: usize = messages.iter().map(|m| m.body.len()).sum();
    if total > BATCH_BYTES_MAX {
        return Err(ApiError::new(Code::PayloadTooLarge, format!("the batch holds {total} bytes of bodies; the limit is {BATCH_BYTES_MAX}")).into());
    }
    for message in messages {
        check_message(broker, message, &topic)?;
    }
    let group = first.system_properties.as_ref().and_then(|p| p.message_group.clone());
    if messages.iter().any(|m| m.system_properties.as_ref().and_then(|p| p.message_group.clone()) != group) {
        return Err(ApiError::bad_request("all messages of one request must share the message group").into());
    }
    // FIFO: one message group always lands on one queue; otherwise the batcher picks one.
    let queue_id = group.as_ref().map(|group| crc32fast::hash(group.as_bytes()) % config.queue_count);
    let store_timestamp_ms = now_ms();
    let mut encoded = BytesMut::with_capacity(total + messages.len() * 128);
    let mut message_ids = Vec::with_capacity(messages.len());
    for message in messages {
        let props = message.system_properties.clone().unwrap_or_default();
        let mut user_properties: Vec<(String, String)> = message.user_properties.clone().into_iter().collect();
        user_properties.sort();
        let header = MessageHeader {
            message_id: props.message_id.clone(),
            tag: props.tag,
            keys: props.keys,
            message_group: props.message_group,
            delivery_timestamp_ms: None,
            born_timestamp_ms: props.born_timestamp.as_ref().map(ms_from_timestamp).unwrap_or(store_timestamp_ms),
            born_host: props.born_host,
            store_timestamp_ms,
            message_type: props.message_type,
            body_encoding: props.body_encoding,
            user_properties,
        };
        message_ids.push(props.message_id);
        encode_message(&header, &message.body, &mut encoded);
    }
    let command_len = encoded.len() + send_overhead(&topic);
    if command_len > crate::limits::RECORD_PAYLOAD_BYTES_MAX {
        return Err(ApiError::new(Code::PayloadTooLarge, format!("the batch encodes to {command_len} bytes; the limit is {}", crate::limits::RECORD_PAYLOAD_BYTES_MAX)).into());
    }
    let part = SendPart { topic, queue_count: config.queue_count, queue_id, store_timestamp_ms, count: messages.len() as u32, messages: encoded.freeze() };
    let Placed { first_offset, .. } = broker.sends.send(part).await?;
    let entries = message_ids
        .into_iter()
        .enumerate()
        .map(|(i, message_id)| SendResultEntry {
            status: Some(status::ok()),
            message_id,
            transaction_id: String::new(),
            offset: (first_offset + i as u64) as i64,
            recall_handle: String::new(),
        })
        .collect();
    Ok(SendMessageResponse { status: Some(status::ok()), entries })
}
