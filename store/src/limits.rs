//! Limits of the store, with their relations checked at compile time.

/// Hard cap on a record payload (a batch of messages), whatever the configuration says. The
/// decoder also uses it to reject absurd frame lengths read from a damaged file.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Default per-log payload limit (`CommitLogConfig::record_payload_bytes_max`). The binary limits
/// a record payload to 16 MiB; bodies are limited lower, in the binary.
pub const RECORD_PAYLOAD_BYTES_DEFAULT: usize = 16 * 1024 * 1024;
/// Smallest segment. Small enough for tests (64 KiB segments with small payload limits); `open`
/// additionally checks that a maximal record of the configured limit fits one segment.
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 4 * 1024;
/// Largest segment: positions inside a segment are kept as u32 in the in-memory index.
pub const SEGMENT_SIZE_BYTES_MAX: u64 = u32::MAX as u64;
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Default `CommitLogConfig::page_cache_tail_bytes`: the end of the log kept in the page cache,
/// a few seconds of writes at full speed, so replication and consumers that keep up read memory.
pub const PAGE_CACHE_TAIL_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Bytes at the start of every segment file (magic, version, base, creation time).
pub const SEGMENT_HEADER_BYTES: u64 = 24;
pub const CONSUME_QUEUE_ENTRY_BYTES: usize = 20;

const RECORD_FRAME_BYTES_DEFAULT: u64 = (crate::RECORD_HEADER_LEN + RECORD_PAYLOAD_BYTES_DEFAULT) as u64;
const RECORD_FRAME_BYTES_MAX: u64 = (crate::RECORD_HEADER_LEN + RECORD_PAYLOAD_BYTES_MAX) as u64;

const _: () = assert!(SEGMENT_SIZE_BYTES_DEFAULT >= SEGMENT_SIZE_BYTES_MIN);
const _: () = assert!(SEGMENT_SIZE_BYTES_DEFAULT <= SEGMENT_SIZE_BYTES_MAX);
const _: () = assert!(RECORD_PAYLOAD_BYTES_DEFAULT <= RECORD_PAYLOAD_BYTES_MAX);
// The defaults must be a valid configuration: a maximal default record fits a default segment.
const _: () = assert!(SEGMENT_HEADER_BYTES + RECORD_FRAME_BYTES_DEFAULT <= SEGMENT_SIZE_BYTES_DEFAULT);
// Even a hard-cap record fits a maximal segment, and its frame length fits the u32 len field.
const _: () = assert!(SEGMENT_HEADER_BYTES + RECORD_FRAME_BYTES_MAX <= SEGMENT_SIZE_BYTES_MAX);
const _: () = assert!(RECORD_FRAME_BYTES_MAX <= u32::MAX as u64);
// The smallest segment still holds a header and a record with a non-trivial payload.
const _: () = assert!(SEGMENT_SIZE_BYTES_MIN >= SEGMENT_HEADER_BYTES + crate::RECORD_HEADER_LEN as u64 + 1024);
