//! The apply path: `StateMachine::apply` of Send commands (consume-queue appends pointing into the
//! commitlog, the redb metadata write), on a temp dir laid out like `RaftNode::start` lays out a
//! data dir. The entries are appended to the commitlog first (async flush, not timed) because the
//! state machine points the consume queues at their records.
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use openraft::EntryPayload;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use raftmq_raft::command::{AdminCommand, Command, MessageHeader, SendCommandBuilder, TopicConfig};
use raftmq_raft::log_store::entry_to_record;
use raftmq_raft::state_machine::StateMachine;
use raftmq_raft::types::{Entry, LogId};
use raftmq_raft::EncodedCommand;
use raftmq_store::{CommitLog, CommitLogConfig, ConsumeQueueSet, FileSystem, FlushPolicy, RealFs};

struct Fixture {
    _dir: tempfile::TempDir,
    log: Arc<CommitLog>,
    sm: StateMachine,
    next_index: u64,
}

fn append(log: &CommitLog, entries: &[Entry]) {
    let records: Vec<_> = entries.iter().map(entry_to_record).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    log.append(&records, Box::new(move |r| drop(tx.send(r)))).expect("append");
    rx.recv().expect("flush callback").expect("flushed");
}

fn entry(index: u64, command: EncodedCommand) -> Entry {
    Entry::new(LogId::new_term_index(1, index), EntryPayload::Normal(command))
}

async fn apply(sm: &mut StateMachine, entries: Vec<Entry>) {
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.expect("apply");
}

fn fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs);
    let config = CommitLogConfig { flush: FlushPolicy::Async, ..CommitLogConfig::default() };
    let log = Arc::new(CommitLog::open(fs.clone(), dir.path().join("commitlog"), config).expect("commitlog"));
    let queues = ConsumeQueueSet::open(fs, dir.path().join("consumequeue")).expect("queues");
    let mut sm = StateMachine::open(log.clone(), queues, &dir.path().join("metadata.redb")).expect("state machine");
    let create = entry(1, Command::admin(&AdminCommand::CreateTopic(TopicConfig { name: "bench".into(), queue_count: 8 })));
    append(&log, std::slice::from_ref(&create));
    rt.block_on(apply(&mut sm, vec![create]));
    Fixture { _dir: dir, log, sm, next_index: 2 }
}

fn send_command(queue_id: u32, messages: usize, size: usize) -> EncodedCommand {
    let body = vec![b'x'; size];
    let mut builder = SendCommandBuilder::new("bench", queue_id, 1_700_000_000_000, messages * (size + 128));
    for i in 0..messages {
        let header = MessageHeader {
            message_id: format!("{i:032X}"),
            born_timestamp_ms: 1_700_000_000_000,
            born_host: "bench".into(),
            store_timestamp_ms: 1_700_000_000_000,
            message_type: 1,
            ..Default::default()
        };
        builder.push(&header, &body);
    }
    builder.finish()
}

fn bench_apply(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("apply_send");
    group.sample_size(20);
    // (entries per apply call, messages per Send command): one entry of one message, a Raft batch
    // of 16 single-message entries, one entry carrying a 32-message client batch.
    for (entries, messages) in [(1usize, 1usize), (16, 1), (1, 32)] {
        let mut f = fixture(&rt);
        group.throughput(Throughput::Elements((entries * messages) as u64));
        group.bench_function(BenchmarkId::new(format!("{entries}x{messages}msg"), "1KiB"), |b| {
            b.iter_batched(
                || {
                    let batch: Vec<Entry> = (0..entries)
                        .map(|i| entry(f.next_index + i as u64, send_command((f.next_index as u32 + i as u32) % 8, messages, 1024)))
                        .collect();
                    append(&f.log, &batch);
                    f.next_index += entries as u64;
                    batch
                },
                |batch| rt.block_on(apply(&mut f.sm, batch)),
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
