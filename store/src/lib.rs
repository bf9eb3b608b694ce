//! raftmq-store: the commitlog that *is* the Raft log, consume queues over it, and the vote file.
//!
//! This crate knows nothing of Raft's algorithm, openraft, or gRPC. It stores opaque records that
//! carry a term, an index and a kind byte, and it promises durability through flush callbacks.
//! See README.md for the on-disk formats and the invariants.

mod atomic_file;
pub mod commitlog;
pub mod consume_queue;
pub mod error;
pub mod fs;
pub mod limits;
pub mod record;
mod rng;
pub mod types;
pub mod vote;

pub use commitlog::{
    CommitLog, CommitLogConfig, FlushCallback, FlushPolicy, LogState, RetentionPolicy, RetentionReport,
};
pub use consume_queue::{ConsumeQueue, ConsumeQueueEntry, ConsumeQueueSet};
pub use error::StoreError;
pub use fs::{FileSystem, RealFs, SimFs, StoreFile};
pub use record::{DecodeError, RECORD_HEADER_LEN, Record};
pub use types::{CommitLogPosition, LogIndex, QueueOffset};
pub use vote::VoteFile;
