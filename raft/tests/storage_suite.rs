// Goal: run openraft's own storage conformance suite against the real commitlog-backed LogStore and StateMachine.
use std::io;
use std::sync::Arc;

use openraft::{ErrorSubject, ErrorVerb, StorageError};
use openraft::testing::log::{StoreBuilder, Suite};
use raftmq_raft::TypeConfig;
use raftmq_raft::log_store::{LogStore, to_io};
use raftmq_raft::state_machine::StateMachine;
use raftmq_store::{CommitLog, CommitLogConfig, ConsumeQueueSet, FileSystem, FlushPolicy, RealFs, VoteFile};
use tempfile::TempDir;

/// Builds a fresh store per suite case, laid out as `RaftNode::start` lays out a data dir; the
/// returned `TempDir` is the guard that keeps the directory alive for the case.
struct CommitLogStoreBuilder;

fn open_err(error: io::Error) -> StorageError<TypeConfig> {
    StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, error)
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for CommitLogStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(open_err)?;
        let fs: Arc<dyn FileSystem> = Arc::new(RealFs);
        let config = CommitLogConfig { flush: FlushPolicy::Sync, ..CommitLogConfig::default() };
        let store_err = |e| open_err(to_io(e));
        let log = Arc::new(CommitLog::open(fs.clone(), dir.path().join("commitlog"), config).map_err(store_err)?);
        let vote = Arc::new(VoteFile::open(fs.clone(), dir.path().join("vote")).map_err(store_err)?);
        let queues = ConsumeQueueSet::open(fs, dir.path().join("consumequeue")).map_err(store_err)?;
        let state_machine =
            StateMachine::open(log.clone(), queues, &dir.path().join("metadata.redb")).map_err(open_err)?;
        Ok((dir, LogStore::new(log, vote), state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(CommitLogStoreBuilder).await
}
