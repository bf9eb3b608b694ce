//! A commitlog record is one Raft log entry.
//!
//! On disk (little endian):
//! ```text
//! +---------+---------+---------+----------+------+-----------------+
//! | len u32 | crc u32 | term u64| index u64| kind | payload ...     |
//! +---------+---------+---------+----------+------+-----------------+
//!   len = RECORD_HEADER_LEN + payload.len(); crc = crc32c(term..end of payload)
//! ```
use bytes::Bytes;

use crate::LogIndex;
use crate::limits::RECORD_PAYLOAD_BYTES_MAX;

pub const RECORD_HEADER_LEN: usize = 4 + 4 + 8 + 8 + 1;

/// Byte range covered by the checksum starts after len and crc.
const CRC_START: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub term: u64,
    pub index: crate::LogIndex,
    /// Opaque to the store (the raft crate uses it for blank / normal / membership).
    pub kind: u8,
    pub payload: Bytes,
}

/// Why bytes did not decode as a record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the frame needs: a torn write, or simply the end of the data.
    Incomplete,
    /// The framing or the checksum is wrong.
    Corrupt(&'static str),
}

impl Record {
    /// Bytes this record takes on disk.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload.len()
    }

    /// Appends the on-disk form of this record to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        let len = self.encoded_len();
        // The payload limit is enforced by callers; this guards the u32 length field itself.
        assert!(len <= u32::MAX as usize, "record of {len} bytes cannot be framed");
        let start = buf.len();
        buf.reserve(len);
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]); // crc, filled in below once the covered bytes exist
        buf.extend_from_slice(&self.term.to_le_bytes());
        buf.extend_from_slice(&self.index.0.to_le_bytes());
        buf.push(self.kind);
        buf.extend_from_slice(&self.payload);
        let crc = crc32c::crc32c(&buf[start + CRC_START..]);
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(buf.len() - start, len, "encoder wrote a wrong length");
    }

    /// Convenience: the encoded bytes of one record.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut buf);
        buf
    }

    /// Decodes the record at the start of `buf` (trailing bytes are ignored), copying the payload.
    pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
        let len = check_frame(buf)?;
        Ok(Self::from_checked(buf, Bytes::copy_from_slice(&buf[RECORD_HEADER_LEN..len])))
    }

    /// Like `decode`, but the payload shares `buf`'s memory.
    pub fn decode_bytes(buf: &Bytes) -> Result<Record, DecodeError> {
        let len = check_frame(buf)?;
        Ok(Self::from_checked(buf, buf.slice(RECORD_HEADER_LEN..len)))
    }

    fn from_checked(buf: &[u8], payload: Bytes) -> Record {
        Record { term: read_u64(buf, 8), index: LogIndex(read_u64(buf, 16)), kind: buf[24], payload }
    }
}

/// The frame length announced by the bytes at the start of `buf`, if it is plausible.
/// Needs only the first 4 bytes, so a scanner can learn how much more to read.
pub fn frame_len(buf: &[u8]) -> Result<usize, DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Incomplete);
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len < RECORD_HEADER_LEN {
        return Err(DecodeError::Corrupt("length below header size"));
    }
    if len > RECORD_HEADER_LEN + RECORD_PAYLOAD_BYTES_MAX {
        return Err(DecodeError::Corrupt("length over the record limit"));
    }
    Ok(len)
}

/// Verifies framing and checksum of the record at the start of `buf`; returns its length.
fn check_frame(buf: &[u8]) -> Result<usize, DecodeError> {
    let len = frame_len(buf)?;
    if buf.len() < len {
        return Err(DecodeError::Incomplete);
    }
    let stored = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[CRC_START..len]) != stored {
        return Err(DecodeError::Corrupt("checksum mismatch"));
    }
    Ok(len)
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (any::<u64>(), any::<u64>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(
            |(term, index, kind, payload)| Record { term, index: LogIndex(index), kind, payload: payload.into() },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        // Goal: encoding then decoding (copying and zero-copy) gives back the same record and length.
        #[test]
        fn round_trip(record in arb_record(), trailing in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut buf = record.encode();
            prop_assert_eq!(buf.len(), record.encoded_len());
            buf.extend_from_slice(&trailing);
            prop_assert_eq!(Record::decode(&buf).unwrap(), record.clone());
            prop_assert_eq!(Record::decode_bytes(&Bytes::from(buf)).unwrap(), record);
        }

        // Goal: flipping any single byte of an encoded record is detected, never decoded as a record.
        #[test]
        fn single_byte_corruption_detected(record in arb_record(), at in any::<prop::sample::Index>(), xor in 1u8..=255) {
            let mut buf = record.encode();
            let i = at.index(buf.len());
            buf[i] ^= xor;
            prop_assert!(Record::decode(&buf).is_err(), "corruption at byte {} went unnoticed", i);
        }

        // Goal: any truncation of an encoded record reads as incomplete (a torn write), never as a record.
        #[test]
        fn truncation_detected(record in arb_record(), at in any::<prop::sample::Index>()) {
            let buf = record.encode();
            let cut = at.index(buf.len());
            prop_assert_eq!(Record::decode(&buf[..cut]), Err(DecodeError::Incomplete));
        }
    }
}
