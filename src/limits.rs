//! Limits of the client API, checked on arrival. Relations are checked at compile time.

/// Default largest message body; configurable with `--max-body-bytes`.
pub const BODY_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// The configurable body limit can't go past this: a whole batch must fit one log record.
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most messages in one SendMessage request.
pub const BATCH_MESSAGES_MAX: usize = 1024;
/// Most bytes of bodies in one SendMessage request (it becomes one log record).
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Room for message headers (ids, keys, tags, properties) beside the bodies of one batch.
pub const BATCH_HEADER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest encoded command (one log record's payload): a maximal batch with its headers.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = BATCH_BYTES_MAX + BATCH_HEADER_BYTES_MAX;
/// Largest gRPC message the client API decodes (a maximal batch plus its headers).
pub const GRPC_MESSAGE_BYTES_MAX: usize = RECORD_PAYLOAD_BYTES_MAX;
pub const TOPIC_NAME_BYTES_MAX: usize = 127;
pub const GROUP_NAME_BYTES_MAX: usize = 255;
pub const QUEUES_DEFAULT: u32 = 8;
pub const QUEUES_MAX: u32 = 32767;
pub const TAG_BYTES_MAX: usize = 1024;
pub const KEYS_BYTES_MAX: usize = 4096;
pub const PROPERTIES_BYTES_MAX: usize = 16 * 1024;
/// Most messages one PullMessage returns.
pub const PULL_BATCH_MAX: usize = 1024;
/// Longest long poll we honour.
pub const LONG_POLL_MS_MAX: u64 = 30_000;
/// Most groups one ListGroups answer lists.
pub const GROUPS_LISTED_MAX: usize = 10_000;
/// Most queue rows one DescribeGroup answer lists (every queue of one topic always fits).
pub const GROUP_QUEUES_LISTED_MAX: usize = 32_768;
/// Largest max-delivery-attempts a group may be given.
pub const GROUP_DELIVERY_ATTEMPTS_MAX: u32 = 1_000;
/// In-flight proposals per node; more get TOO_MANY_REQUESTS.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 4096;

const _: () = assert!(BODY_BYTES_DEFAULT <= BODY_BYTES_MAX);
const _: () = assert!(BODY_BYTES_MAX <= BATCH_BYTES_MAX);
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX < raftmq_raft::network::PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= raftmq_store::limits::RECORD_PAYLOAD_BYTES_MAX);
const _: () = assert!(QUEUES_DEFAULT <= QUEUES_MAX);
const _: () = assert!(QUEUES_MAX as usize <= GROUP_QUEUES_LISTED_MAX);
const _: () = assert!(raftmq_raft::consumer::MAX_DELIVERY_ATTEMPTS_DEFAULT <= GROUP_DELIVERY_ATTEMPTS_MAX);
