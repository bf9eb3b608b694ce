//! One newtype per kind of position, so that a Raft index is never mistaken for a byte position or
//! a queue offset.

/// A Raft log index. Never shown to clients.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogIndex(pub u64);

/// A byte position in the commitlog's global address space (segment base + position in segment).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CommitLogPosition(pub u64);

/// A message's offset within one (topic, queue): dense, assigned at apply; starts at 0, or at the
/// base a queue was reset to (a node that caught up from a snapshot), see `ConsumeQueue::min_offset`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QueueOffset(pub u64);
