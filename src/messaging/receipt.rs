//! Receipt handles: which delivery a received message came from, opaque to clients.
//!
//! A handle names (queue, offset, nonce) in one broker group, consumer group and topic, plus the
//! time it becomes visible again (for the client's information only). The state machine decides
//! whether a handle is still current (see raft/src/consumer.rs); the checksum here only tells a
//! handle made by this group for this (consumer group, topic) from a malformed or foreign one.
use raftmq_raft::consumer::DeliveryRef;

use crate::status::ApiError;
use crate::v2::Code;

const PREFIX: &str = "rq1";
/// queue u32 + offset u64 + nonce u64 + visible_at i64 + crc u32.
const BODY_BYTES: usize = 4 + 8 + 8 + 8 + 4;
pub const HANDLE_CHARS_MAX: usize = PREFIX.len() + 2 * BODY_BYTES;

/// Where a handle belongs; a handle from anywhere else is foreign.
pub struct Scope<'a> {
    pub broker_group: &'a str,
    pub consumer_group: &'a str,
    pub topic: &'a str,
}

fn checksum(scope: &Scope<'_>, fields: &[u8]) -> u32 {
    let mut crc = 0;
    for part in [scope.broker_group.as_bytes(), b"\0", scope.consumer_group.as_bytes(), b"\0", scope.topic.as_bytes(), b"\0", fields] {
        crc = crc32c::crc32c_append(crc, part);
    }
    crc
}

pub fn encode(scope: &Scope<'_>, delivery: DeliveryRef, visible_at_ms: i64) -> String {
    let mut bytes = Vec::with_capacity(BODY_BYTES);
    bytes.extend_from_slice(&delivery.queue_id.to_be_bytes());
    bytes.extend_from_slice(&delivery.offset.to_be_bytes());
    bytes.extend_from_slice(&delivery.nonce.to_be_bytes());
    bytes.extend_from_slice(&visible_at_ms.to_be_bytes());
    let crc = checksum(scope, &bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    format!("{PREFIX}{}", hex::encode(bytes))
}

pub fn decode(scope: &Scope<'_>, handle: &str) -> Result<DeliveryRef, ApiError> {
    let invalid = |why: &str| ApiError::new(Code::InvalidReceiptHandle, format!("receipt handle {:?} is {why}", truncate(handle)));
    let hex_part = handle.strip_prefix(PREFIX).ok_or_else(|| invalid("malformed"))?;
    let bytes = hex::decode(hex_part).map_err(|_| invalid("malformed"))?;
    if bytes.len() != BODY_BYTES {
        return Err(invalid("malformed"));
    }
    let (fields, crc) = bytes.split_at(BODY_BYTES - 4);
    if checksum(scope, fields).to_be_bytes() != crc {
        return Err(invalid(&format!("not from consumer group {} on topic {} in this broker group", scope.consumer_group, scope.topic)));
    }
    let u64_at = |at: usize| u64::from_be_bytes(fields[at..at + 8].try_into().expect("8 bytes"));
    Ok(DeliveryRef { queue_id: u32::from_be_bytes(fields[0..4].try_into().expect("4 bytes")), offset: u64_at(4), nonce: u64_at(12) })
}

fn truncate(handle: &str) -> &str {
    match handle.char_indices().nth(HANDLE_CHARS_MAX) {
        Some((at, _)) => &handle[..at],
        None => handle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: Scope<'static> = Scope { broker_group: "g1", consumer_group: "billing", topic: "orders" };

    // Goal: a handle round-trips; malformed, altered or foreign handles are INVALID_RECEIPT_HANDLE.
    #[test]
    fn handles_round_trip_and_foreign_ones_are_refused() {
        let delivery = DeliveryRef { queue_id: 3, offset: 42, nonce: 1234 };
        let handle = encode(&SCOPE, delivery, 99);
        assert_eq!(decode(&SCOPE, &handle).unwrap(), delivery);
        let other_group = Scope { consumer_group: "other", ..SCOPE };
        let other_topic = Scope { topic: "other", ..SCOPE };
        let other_broker = Scope { broker_group: "g2", ..SCOPE };
        for scope in [&other_group, &other_topic, &other_broker] {
            assert_eq!(decode(scope, &handle).unwrap_err().code, Code::InvalidReceiptHandle);
        }
        let mut altered = handle.clone().into_bytes();
        let last = altered.len() - 9;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        for bad in [String::from_utf8(altered).unwrap(), String::new(), "rq1zz".into(), "x".repeat(10_000), handle[..handle.len() - 2].into()] {
            assert_eq!(decode(&SCOPE, &bad).unwrap_err().code, Code::InvalidReceiptHandle, "{bad:.40}");
        }
    }
}
