//! Measures how long `CommitLog::open` takes on a large log (issue 5: restart time).
//!
//! ```text
//! cargo run --release -p raftmq-store --example open_time -- fill <dir> <total bytes> [payload bytes]
//! cargo run --release -p raftmq-store --example open_time -- open <dir> [times]
//! ```
//! `fill` appends records (term 1, async flush, one sync at the end) with the default segment size
//! until the segments hold about `total bytes`. `open` opens the log `times` times (default 1) and
//! prints each duration. For a cold figure drop the page cache between runs (as root):
//! `sync; echo 3 > /proc/sys/vm/drop_caches`.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use raftmq_store::{CommitLog, CommitLogConfig, FileSystem, FlushPolicy, LogIndex, RealFs, Record};

fn open(dir: &Path, flush: FlushPolicy) -> CommitLog {
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs);
    CommitLog::open(fs, dir.to_path_buf(), CommitLogConfig { flush, ..CommitLogConfig::default() }).expect("open commitlog")
}

fn fill(dir: &Path, total_bytes: u64, payload_bytes: usize) {
    let log = open(dir, FlushPolicy::Async);
    let mut next = log.state().last.map_or(1, |(last, _)| last.0 + 1);
    let payload = Bytes::from(vec![b'x'; payload_bytes]);
    let started = Instant::now();
    // A roll (seal, new segment, index file) happens inside an append: the slowest append shows it.
    let mut slowest_append = std::time::Duration::ZERO;
    while log.size_bytes() < total_bytes {
        let records: Vec<Record> = (0..256)
            .map(|i| Record { term: 1, index: LogIndex(next + i), kind: 1, payload: payload.clone() })
            .collect();
        next += records.len() as u64;
        let append_started = Instant::now();
        log.append(&records, Box::new(|r| r.expect("flushed"))).expect("append");
        slowest_append = slowest_append.max(append_started.elapsed());
    }
    log.sync().expect("sync");
    println!(
        "filled {} bytes, {} records, {} segments in {:.1} s (slowest append {:.1} ms)",
        log.size_bytes(),
        next - 1,
        log.segment_count(),
        started.elapsed().as_secs_f64(),
        slowest_append.as_secs_f64() * 1000.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: open_time fill <dir> <total bytes> [payload bytes] | open_time open <dir> [times]";
    let (Some(command), Some(dir)) = (args.first(), args.get(1)) else { panic!("{usage}") };
    let dir = PathBuf::from(dir);
    match command.as_str() {
        "fill" => {
            let total_bytes = args.get(2).expect(usage).parse().expect("total bytes");
            let payload_bytes = args.get(3).map_or(1024, |p| p.parse().expect("payload bytes"));
            fill(&dir, total_bytes, payload_bytes);
        }
        "open" => {
            let times: usize = args.get(2).map_or(1, |t| t.parse().expect("times"));
            for _ in 0..times {
                let started = Instant::now();
                let log = open(&dir, FlushPolicy::Sync);
                let elapsed = started.elapsed();
                let state = log.state();
                println!(
                    "open: {:.3} s ({} bytes, {} segments, last {:?})",
                    elapsed.as_secs_f64(),
                    log.size_bytes(),
                    log.segment_count(),
                    state.last
                );
            }
        }
        _ => panic!("{usage}"),
    }
}
