//! Between the v2 wire types and the stored message form.
use prost_types::Timestamp;
use raftmq_raft::command::{MessageHeader, StoredMessage};

use crate::v2::{Digest, DigestType, Encoding, Message, Resource, SystemProperties};

pub fn timestamp_from_ms(ms: i64) -> Timestamp {
    Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn ms_from_timestamp(ts: &Timestamp) -> i64 {
    ts.seconds.saturating_mul(1000).saturating_add(ts.nanos as i64 / 1_000_000)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Where a stored message sits, for its system properties.
pub struct Placement<'a> {
    pub topic: &'a Resource,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub store_host: &'a str,
}

pub fn to_wire(stored: StoredMessage, at: Placement<'_>) -> Message {
    let MessageHeader {
        message_id,
        tag,
        keys,
        message_group,
        delivery_timestamp_ms,
        born_timestamp_ms,
        born_host,
        store_timestamp_ms,
        message_type,
        body_encoding,
        user_properties,
    } = stored.header;
    let body_encoding = if body_encoding == Encoding::Gzip as i32 { body_encoding } else { Encoding::Identity as i32 };
    let system_properties = SystemProperties {
        tag,
        keys,
        message_id,
        body_digest: Some(Digest { r#type: DigestType::Crc32 as i32, checksum: format!("{:08X}", crc32fast::hash(&stored.body)) }),
        body_encoding,
        message_type,
        born_timestamp: Some(timestamp_from_ms(born_timestamp_ms)),
        born_host,
        store_timestamp: Some(timestamp_from_ms(store_timestamp_ms)),
        store_host: at.store_host.to_string(),
        delivery_timestamp: delivery_timestamp_ms.map(timestamp_from_ms),
        queue_id: at.queue_id as i32,
        queue_offset: Some(at.queue_offset as i64),
        delivery_attempt: Some(1),
        message_group,
        ..Default::default()
    };
    Message {
        topic: Some(at.topic.clone()),
        user_properties: user_properties.into_iter().collect(),
        system_properties: Some(system_properties),
        body: stored.body,
    }
}
