//! raftmq-store micro benchmarks on a temp dir: commitlog append with group commit (sync and async
//! flush), read by index, consume-queue append and read, record encode/decode.
use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use raftmq_store::{
    CommitLog, CommitLogConfig, CommitLogPosition, ConsumeQueueEntry, ConsumeQueueSet, FileSystem, FlushPolicy, LogIndex,
    QueueOffset, RealFs, Record,
};

fn record(index: u64, size: usize) -> Record {
    Record { term: 1, index: LogIndex(index), kind: 1, payload: Bytes::from(vec![b'x'; size]) }
}

fn open_log(dir: &std::path::Path, flush: FlushPolicy) -> CommitLog {
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs);
    CommitLog::open(fs, dir.join("commitlog"), CommitLogConfig { flush, ..CommitLogConfig::default() }).expect("open commitlog")
}

/// `appends` calls of `per_append` records each, issued back to back; waits for every flush
/// callback (group commit may cover several appends with one fdatasync).
fn append_and_wait(log: &CommitLog, next: &mut u64, appends: usize, per_append: usize, size: usize) {
    let (tx, rx) = mpsc::channel();
    for _ in 0..appends {
        let records: Vec<Record> = (0..per_append as u64).map(|i| record(*next + i, size)).collect();
        *next += per_append as u64;
        let tx = tx.clone();
        log.append(&records, Box::new(move |r| drop(tx.send(r)))).expect("append");
    }
    drop(tx);
    for r in rx {
        r.expect("flushed");
    }
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("commitlog_append");
    group.sample_size(20);
    for (flush, name) in [(FlushPolicy::Sync, "sync"), (FlushPolicy::Async, "async")] {
        // (appends in flight, records per append): one at a time, 32 concurrent appends (group
        // commit), one append of a 32-record batch.
        for (appends, per_append) in [(1usize, 1usize), (32, 1), (1, 32)] {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = open_log(dir.path(), flush);
            let mut next = 1;
            group.throughput(Throughput::Elements((appends * per_append) as u64));
            group.bench_function(BenchmarkId::new(name, format!("{appends}x{per_append}rec_1KiB")), |b| {
                b.iter(|| append_and_wait(&log, &mut next, appends, per_append, 1024))
            });
        }
    }
    group.finish();
}

fn bench_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open_log(dir.path(), FlushPolicy::Async);
    let count = 20_000u64;
    let mut next = 1;
    append_and_wait(&log, &mut next, (count / 100) as usize, 100, 1024);
    let mut group = c.benchmark_group("commitlog_read");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("by_index_1KiB", |b| {
        b.iter(|| {
            i = (i * 6364136223846793005 + 1442695040888963407) % count;
            log.read(LogIndex(i + 1)).expect("read").expect("present")
        })
    });
    group.throughput(Throughput::Elements(32));
    group.bench_function("range_32_1KiB", |b| {
        b.iter(|| {
            i = (i + 32) % (count - 32);
            log.read_range(LogIndex(i + 1), LogIndex(i + 33), usize::MAX).expect("read range")
        })
    });
    group.finish();
}

fn bench_consume_queue(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs);
    let set = ConsumeQueueSet::open(fs, dir.path().join("consumequeue")).expect("open queues");
    let queue = set.queue("bench", 0).expect("queue");
    let entry = |o: u64| ConsumeQueueEntry { position: CommitLogPosition(o * 1100), size: 1024, tag_hash: 0 };
    let mut group = c.benchmark_group("consume_queue");
    group.throughput(Throughput::Elements(1));
    let mut next = 0u64;
    group.bench_function("append", |b| {
        b.iter(|| {
            queue.append(QueueOffset(next), entry(next)).expect("append");
            next += 1;
        })
    });
    let filled = next.max(1);
    group.throughput(Throughput::Elements(32));
    let mut from = 0u64;
    group.bench_function("read_32", |b| {
        b.iter(|| {
            from = (from + 32) % filled;
            queue.read(QueueOffset(from), 32).expect("read")
        })
    });
    group.finish();
}

fn bench_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for size in [128usize, 1024, 32 * 1024] {
        let r = record(42, size);
        let encoded = Bytes::from(r.encode());
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("encode", size), |b| {
            let mut buf = Vec::with_capacity(r.encoded_len());
            b.iter(|| {
                buf.clear();
                r.encode_into(&mut buf);
                buf.len()
            })
        });
        group.bench_function(BenchmarkId::new("decode_bytes", size), |b| b.iter(|| Record::decode_bytes(&encoded).expect("decode")));
    }
    group.finish();
}

criterion_group!(benches, bench_append, bench_read, bench_consume_queue, bench_record);
criterion_main!(benches);
