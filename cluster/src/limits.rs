//! Limits of the routing registry, checked when a registration arrives.

/// Most broker groups one router tracks.
pub const GROUPS_MAX: usize = 256;
/// Most nodes of one group (a Raft group of 3, with room for learners and replacements).
pub const NODES_PER_GROUP_MAX: usize = 16;
/// Most topics one registration lists.
pub const TOPICS_PER_NODE_MAX: usize = 10_000;
pub const GROUP_NAME_BYTES_MAX: usize = 64;
pub const TOPIC_NAME_BYTES_MAX: usize = 127;
pub const ENDPOINT_BYTES_MAX: usize = 255;
/// Queues of one topic in one group (as the broker's own limit).
pub const QUEUES_MAX: u32 = 32767;
/// Largest encoded registration: every topic name at its longest, with room for the rest.
pub const REGISTRATION_BYTES_MAX: usize = TOPICS_PER_NODE_MAX * (TOPIC_NAME_BYTES_MAX + 16) + 64 * 1024;

const _: () = assert!(REGISTRATION_BYTES_MAX <= 4 * 1024 * 1024);
