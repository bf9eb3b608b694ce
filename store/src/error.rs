use std::sync::Arc;

/// Errors of the store. Variants say what the caller should do next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// An I/O call failed. Shared so that one failed fsync can fail every waiting callback.
    #[error("i/o error during {op}: {source}")]
    Io { op: &'static str, source: Arc<std::io::Error> },
    /// A record inside the synced prefix failed its checksum or framing: stop the node, never repair.
    #[error("corrupt record in segment {segment} at position {position}: {reason}")]
    Corrupt { segment: String, position: u64, reason: String },
    /// `append` was given an index that is not last + 1.
    #[error("log index not consecutive: expected {expected}, got {got}")]
    IndexNotConsecutive { expected: u64, got: u64 },
    /// The requested index was purged or deleted by retention.
    #[error("log index {index} is below the first retained index {first}")]
    Compacted { index: u64, first: u64 },
    /// A record or entry is over a limit.
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// A consume-queue append at the wrong offset.
    #[error("queue offset not consecutive: expected {expected}, got {got}")]
    OffsetNotConsecutive { expected: u64, got: u64 },
    /// The vote file would move backwards.
    #[error("vote reversal refused")]
    VoteReversal,
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl StoreError {
    pub fn io(op: &'static str, source: std::io::Error) -> Self {
        StoreError::Io { op, source: Arc::new(source) }
    }
}
