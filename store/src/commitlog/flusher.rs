//! Group commit. `append` writes under the log lock and registers (files written, callback) here;
//! the flusher thread takes everything registered so far, fdatasyncs each dirty file once, then
//! fires the callbacks in registration order. A sync error is sticky: it fails every pending and
//! later callback and every later `sync`, because after a failed fsync the page cache state is
//! unknown (never pretend).
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::page_cache::CacheDrop;
use super::{FlushCallback, FlushPolicy};
use crate::{StoreError, StoreFile};

pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the flusher thread.
    work: Condvar,
    /// Wakes `sync` callers after a round.
    round_done: Condvar,
    policy: FlushPolicy,
    async_interval: Duration,
}

#[derive(Default)]
struct Queue {
    callbacks: Vec<FlushCallback>,
    dirty: Vec<Arc<dyn StoreFile>>,
    /// Ranges to drop from the page cache after the next sync (once clean, they can go).
    cache_drops: Vec<CacheDrop>,
    /// Writes registered so far, and how many of them are known durable.
    registered_writes: u64,
    durable_writes: u64,
    sync_requested: bool,
    failed: Option<StoreError>,
    shutdown: bool,
}

impl Queue {
    fn outcome(&self) -> Result<(), StoreError> {
        self.failed.clone().map_or(Ok(()), Err)
    }

    fn sync_due(&self, policy: FlushPolicy, last_sync: Instant, interval: Duration) -> bool {
        self.failed.is_none()
            && (self.sync_requested
                || self.shutdown
                || (policy == FlushPolicy::Sync && !self.callbacks.is_empty())
                || (!self.dirty.is_empty() && last_sync.elapsed() >= interval))
    }
}

fn same_file(a: &Arc<dyn StoreFile>, b: &Arc<dyn StoreFile>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

impl Flusher {
    pub fn start(policy: FlushPolicy, async_interval: Duration) -> Result<Flusher, StoreError> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            round_done: Condvar::new(),
            policy,
            async_interval,
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("raftmq-flusher".into())
            .spawn(move || run(&thread_shared))
            .map_err(|e| StoreError::io("spawn flusher thread", e))?;
        Ok(Flusher { shared, thread: Some(thread) })
    }

    /// Registers one append: `files` were written, `callback` fires once they are durable
    /// (Sync policy) or before this returns (Async policy); `drops` leave the page cache after
    /// the next sync.
    pub fn register(&self, files: Vec<Arc<dyn StoreFile>>, drops: Vec<CacheDrop>, callback: FlushCallback) {
        let mut queue = self.shared.queue.lock();
        queue.cache_drops.extend(drops);
        for file in files {
            if !queue.dirty.iter().any(|known| same_file(known, &file)) {
                queue.dirty.push(file);
            }
        }
        queue.registered_writes += 1;
        // Async policy: written is done, so the callback fires here, in the caller's thread.
        // Handing it to the flusher thread cost a thread wake-up on every append's path (leader
        // and followers alike: two per replicated write). Under this policy no callback is ever
        // queued, and the caller holds the log lock, so callbacks still fire in append order.
        if self.shared.policy == FlushPolicy::Async {
            let outcome = queue.outcome();
            drop(queue);
            fire(callback, outcome);
            return;
        }
        queue.callbacks.push(callback);
        self.shared.work.notify_one();
    }

    /// Blocks until every write registered before the call is durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut queue = self.shared.queue.lock();
        let target = queue.registered_writes;
        loop {
            queue.outcome()?;
            if queue.durable_writes >= target {
                return Ok(());
            }
            queue.sync_requested = true;
            self.shared.work.notify_one();
            self.shared.round_done.wait(&mut queue);
        }
    }

    /// The sticky failure, if any.
    pub fn check(&self) -> Result<(), StoreError> {
        self.shared.queue.lock().outcome()
    }

    /// Makes the log failed (an I/O error outside the flusher, e.g. a failed write).
    pub fn fail(&self, error: StoreError) {
        let mut queue = self.shared.queue.lock();
        queue.failed.get_or_insert(error);
        self.shared.work.notify_one();
        self.shared.round_done.notify_all();
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.queue.lock().shutdown = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    let mut last_sync = Instant::now();
    loop {
        let mut queue = shared.queue.lock();
        while !queue.shutdown
            && queue.callbacks.is_empty()
            && !queue.sync_due(shared.policy, last_sync, shared.async_interval)
        {
            if queue.dirty.is_empty() || queue.failed.is_some() {
                shared.work.wait(&mut queue);
            } else {
                shared.work.wait_until(&mut queue, last_sync + shared.async_interval);
            }
        }
        let sync_now = queue.sync_due(shared.policy, last_sync, shared.async_interval);
        let callbacks = mem::take(&mut queue.callbacks);
        let target = queue.registered_writes;
        let (dirty, drops) =
            if sync_now { (mem::take(&mut queue.dirty), mem::take(&mut queue.cache_drops)) } else { Default::default() };
        let shutdown = queue.shutdown;
        drop(queue);

        let result = if sync_now { sync_files(&dirty) } else { Ok(()) };
        let synced = result.is_ok();

        let mut queue = shared.queue.lock();
        match result {
            Ok(()) if sync_now => {
                queue.durable_writes = queue.durable_writes.max(target);
                queue.sync_requested = false;
                last_sync = Instant::now();
            }
            Ok(()) => {}
            Err(error) => {
                tracing::error!(%error, "commitlog flush failed; the log is now failed");
                queue.failed.get_or_insert(error);
            }
        }
        let outcome = queue.outcome();
        let finished = shutdown && queue.callbacks.is_empty();
        shared.round_done.notify_all();
        drop(queue);

        for callback in callbacks {
            fire(callback, outcome.clone());
        }
        // After the callbacks: nobody waits on this.
        if synced {
            drops.iter().for_each(CacheDrop::run);
        }
        if finished {
            return;
        }
    }
}

/// Runs one callback. A panicking callback must not kill the flusher (every later append would
/// hang) nor the appending thread.
fn fire(callback: FlushCallback, outcome: Result<(), StoreError>) {
    if catch_unwind(AssertUnwindSafe(|| callback(outcome))).is_err() {
        tracing::error!("a flush callback panicked");
    }
}

/// One fdatasync per dirty file; the first error stops the round.
fn sync_files(files: &[Arc<dyn StoreFile>]) -> Result<(), StoreError> {
    for file in files {
        file.sync_data().map_err(|e| StoreError::io("flush commitlog", e))?;
    }
    Ok(())
}
