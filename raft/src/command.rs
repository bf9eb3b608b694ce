//! The commands that go through the Raft log, and the stored form of a message.
//!
//! A command is encoded once by the proposer and travels as `EncodedCommand` bytes. A `Send`
//! command lays its messages out so that the state machine can point consume-queue entries
//! straight at each message's bytes inside the commitlog record:
//! ```text
//! Send:  [tag=1][topic len u16][topic][queue id u32][store ts i64][count u32]
//!        ( [message len u32][message bytes] ) * count
//! Admin: [tag=2][bincode(AdminCommand)]
//! Consumer: [tag=3][bincode(ConsumerCommand)]
//! message bytes: [header len u32][bincode(MessageHeader)][body]
//! ```
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::consumer::ConsumerCommand;
use crate::types::EncodedCommand;

const TAG_SEND: u8 = 1;
const TAG_ADMIN: u8 = 2;
const TAG_CONSUMER: u8 = 3;

/// Everything about a message but its body, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MessageHeader {
    pub message_id: String,
    pub tag: Option<String>,
    pub keys: Vec<String>,
    pub message_group: Option<String>,
    pub delivery_timestamp_ms: Option<i64>,
    pub born_timestamp_ms: i64,
    pub born_host: String,
    /// Set by the leader when it proposes the message.
    pub store_timestamp_ms: i64,
    /// apache.rocketmq.v2.MessageType as its number.
    pub message_type: i32,
    /// apache.rocketmq.v2.Encoding as its number (the body is stored as sent).
    pub body_encoding: i32,
    pub user_properties: Vec<(String, String)>,
}

/// A message as read back from the commitlog. `body` shares the record's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub header: MessageHeader,
    pub body: Bytes,
}

impl StoredMessage {
    pub fn encode_into(header: &MessageHeader, body: &[u8], out: &mut BytesMut) {
        let header_bytes = bincode::serialize(header).expect("message header serializes");
        out.put_u32_le(header_bytes.len() as u32);
        out.put_slice(&header_bytes);
        out.put_slice(body);
    }

    pub fn decode(mut bytes: Bytes) -> Result<StoredMessage, CommandError> {
        if bytes.len() < 4 {
            return Err(CommandError::Malformed("message shorter than its header length"));
        }
        let header_len = bytes.get_u32_le() as usize;
        if bytes.len() < header_len {
            return Err(CommandError::Malformed("message header truncated"));
        }
        let header_bytes = bytes.split_to(header_len);
        let header =
            bincode::deserialize(&header_bytes).map_err(|_| CommandError::Malformed("message header undecodable"))?;
        Ok(StoredMessage { header, body: bytes })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: String,
    pub queue_count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminCommand {
    CreateTopic(TopicConfig),
    DeleteTopic { name: String },
}

/// A decoded command. `Send` borrows nothing: message slices are `Bytes` views of the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Send(SendCommand),
    Admin(AdminCommand),
    Consumer(ConsumerCommand),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendCommand {
    pub topic: String,
    pub queue_id: u32,
    pub store_timestamp_ms: i64,
    /// Each message's encoded bytes and their position inside the command payload.
    pub messages: Vec<(usize, Bytes)>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CommandError {
    #[error("malformed command: {0}")]
    Malformed(&'static str),
}

/// Appends one message as a `Send` command lays it out: `[message len u32][message bytes]`.
pub fn encode_message(header: &MessageHeader, body: &[u8], out: &mut BytesMut) {
    let len_at = out.len();
    out.put_u32_le(0);
    StoredMessage::encode_into(header, body, out);
    let message_len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&message_len.to_le_bytes());
}

/// Bytes a `Send` command adds to its messages (tag, topic, queue id, timestamp, count).
pub fn send_overhead(topic: &str) -> usize {
    1 + 2 + topic.len() + 4 + 8 + 4
}

/// Builds a `Send` command message by message without re-copying.
pub struct SendCommandBuilder {
    buf: BytesMut,
    count_at: usize,
    count: u32,
}

impl SendCommandBuilder {
    pub fn new(topic: &str, queue_id: u32, store_timestamp_ms: i64, capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity + topic.len() + 32);
        buf.put_u8(TAG_SEND);
        buf.put_u16_le(topic.len() as u16);
        buf.put_slice(topic.as_bytes());
        buf.put_u32_le(queue_id);
        buf.put_i64_le(store_timestamp_ms);
        let count_at = buf.len();
        buf.put_u32_le(0);
        SendCommandBuilder { buf, count_at, count: 0 }
    }

    pub fn push(&mut self, header: &MessageHeader, body: &[u8]) {
        encode_message(header, body, &mut self.buf);
        self.count += 1;
    }

    /// Appends `count` messages already laid out by `encode_message` (a proposer merging the
    /// sends of several requests to one queue into one command).
    pub fn push_encoded(&mut self, count: u32, messages: &[u8]) {
        self.buf.put_slice(messages);
        self.count += count;
    }

    /// Bytes so far (the command's size once finished).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn finish(mut self) -> EncodedCommand {
        let count_at = self.count_at;
        self.buf[count_at..count_at + 4].copy_from_slice(&self.count.to_le_bytes());
        EncodedCommand(self.buf.freeze())
    }
}

impl Command {
    pub fn admin(command: &AdminCommand) -> EncodedCommand {
        Self::tagged(TAG_ADMIN, command)
    }

    pub fn consumer(command: &ConsumerCommand) -> EncodedCommand {
        Self::tagged(TAG_CONSUMER, command)
    }

    fn tagged(tag: u8, command: &impl Serialize) -> EncodedCommand {
        let mut buf = vec![tag];
        buf.extend(bincode::serialize(command).expect("command serializes"));
        EncodedCommand(Bytes::from(buf))
    }

    pub fn decode(payload: &Bytes) -> Result<Command, CommandError> {
        let mut cursor = payload.clone();
        let need = |cursor: &Bytes, n: usize| {
            if cursor.remaining() < n { Err(CommandError::Malformed("command truncated")) } else { Ok(()) }
        };
        need(&cursor, 1)?;
        match cursor.get_u8() {
            TAG_SEND => {
                need(&cursor, 2)?;
                let topic_len = cursor.get_u16_le() as usize;
                need(&cursor, topic_len + 4 + 8 + 4)?;
                let topic = String::from_utf8(cursor.split_to(topic_len).to_vec())
                    .map_err(|_| CommandError::Malformed("topic is not utf-8"))?;
                let queue_id = cursor.get_u32_le();
                let store_timestamp_ms = cursor.get_i64_le();
                let count = cursor.get_u32_le() as usize;
                let mut messages = Vec::with_capacity(count.min(4096));
                for _ in 0..count {
                    need(&cursor, 4)?;
                    let len = cursor.get_u32_le() as usize;
                    need(&cursor, len)?;
                    let at = payload.len() - cursor.remaining();
                    messages.push((at, cursor.split_to(len)));
                }
                if cursor.has_remaining() {
                    return Err(CommandError::Malformed("trailing bytes after messages"));
                }
                Ok(Command::Send(SendCommand { topic, queue_id, store_timestamp_ms, messages }))
            }
            TAG_ADMIN => bincode::deserialize(cursor.chunk())
                .map(Command::Admin)
                .map_err(|_| CommandError::Malformed("admin command undecodable")),
            TAG_CONSUMER => bincode::deserialize(cursor.chunk())
                .map(Command::Consumer)
                .map_err(|_| CommandError::Malformed("consumer command undecodable")),
            _ => Err(CommandError::Malformed("unknown command tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a Send command round-trips and each message slice sits at the position it claims.
    #[test]
    fn send_command_round_trips_with_positions() {
        let mut builder = SendCommandBuilder::new("orders", 3, 1234, 256);
        let header = MessageHeader { message_id: "m1".into(), tag: Some("t".into()), ..Default::default() };
        builder.push(&header, b"hello");
        builder.push(&MessageHeader { message_id: "m2".into(), ..Default::default() }, b"");
        let encoded = builder.finish();
        let Command::Send(send) = Command::decode(&encoded.0).unwrap() else { panic!("not a send") };
        assert_eq!((send.topic.as_str(), send.queue_id, send.store_timestamp_ms), ("orders", 3, 1234));
        assert_eq!(send.messages.len(), 2);
        for (at, bytes) in &send.messages {
            assert_eq!(&encoded.0[*at..*at + bytes.len()], &bytes[..]);
        }
        let first = StoredMessage::decode(send.messages[0].1.clone()).unwrap();
        assert_eq!(first.header, header);
        assert_eq!(&first.body[..], b"hello");
    }

    // Goal: messages encoded apart and merged with push_encoded decode like pushed ones.
    #[test]
    fn merged_messages_decode_like_pushed_ones() {
        let header = |id: &str| MessageHeader { message_id: id.into(), ..Default::default() };
        let mut pushed = SendCommandBuilder::new("t", 1, 7, 64);
        let mut part = BytesMut::new();
        for (id, body) in [("a", &b"x"[..]), ("b", b"yy"), ("c", b"")] {
            pushed.push(&header(id), body);
            encode_message(&header(id), body, &mut part);
        }
        let mut merged = SendCommandBuilder::new("t", 1, 7, 64);
        merged.push_encoded(3, &part);
        let merged = merged.finish();
        assert_eq!(merged.0.len(), send_overhead("t") + part.len());
        assert_eq!(merged, pushed.finish());
    }

    // Goal: a truncated command is reported as malformed, never half-decoded.
    #[test]
    fn truncated_command_is_malformed() {
        let mut builder = SendCommandBuilder::new("orders", 0, 0, 64);
        builder.push(&MessageHeader::default(), b"body");
        let encoded = builder.finish();
        for cut in 0..encoded.0.len() {
            assert!(Command::decode(&encoded.0.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
