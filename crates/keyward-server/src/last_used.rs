//! `last_used_at`, written in batches off the hot path.
//!
//! Verification only queues the key (its first use at once, then at most once every ten
//! minutes, [`REFRESH_MS`]; see [`CachedKey::last_used_queued_at`]); a background task
//! coalesces the queue and writes one transaction per flush interval. On shutdown the task
//! drains the queue and writes what is left.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::Timestamp;
use keyward_store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::verification::CachedKey;

const QUEUE_CAPACITY: usize = 65_536;

/// How stale a used key's `last_used_at` may be (AWS allows its access keys' four hours).
/// Each refresh is a row update, so their rate is the keys in use divided by this: refreshed
/// every second, a million keys in use cost tens of thousands of updates a second and a third
/// of verification's throughput on two cores (docs/benchmarks.md, issue 19).
pub const REFRESH_MS: i64 = 10 * 60_000;

#[derive(Debug, Clone)]
pub struct LastUsedRecorder {
    queue: mpsc::Sender<(Arc<CachedKey>, Timestamp)>,
    /// How long after queueing a key's use the next one is queued.
    refresh_ms: i64,
    metrics: Arc<Metrics>,
}

impl LastUsedRecorder {
    /// Starts the writer task. It ends, after a final write, once every recorder is dropped.
    pub fn start(
        store: Arc<dyn Store>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> (Self, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(write_batches(store, receiver, interval));
        let recorder = Self {
            queue,
            refresh_ms: i64::try_from(interval.as_millis())
                .unwrap_or(i64::MAX)
                .max(REFRESH_MS),
            metrics,
        };
        (recorder, task)
    }

    /// Notes a successful verification. Never waits.
    pub fn record(&self, entry: &Arc<CachedKey>, now: Timestamp) {
        let queued_at = entry.last_used_queued_at.load(Ordering::Relaxed);
        if now.as_millis().saturating_sub(queued_at) < self.refresh_ms {
            return;
        }
        entry
            .last_used_queued_at
            .store(now.as_millis(), Ordering::Relaxed);
        if self.queue.try_send((Arc::clone(entry), now)).is_err() {
            // Only a stalled storage fills the queue; count what it costs, and let the next
            // use try again rather than wait out the refresh.
            entry
                .last_used_queued_at
                .store(queued_at, Ordering::Relaxed);
            self.metrics.last_used_dropped.inc();
        }
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<(Arc<CachedKey>, Timestamp)>,
    interval: Duration,
) {
    let mut pending: HashMap<String, Timestamp> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = receiver.recv() => match received {
                Some((entry, at)) => {
                    let latest = pending.entry(entry.id().to_owned()).or_insert(at);
                    *latest = (*latest).max(at);
                }
                None => break,
            },
            _ = ticker.tick() => flush(store.as_ref(), &mut pending).await,
        }
    }
    flush(store.as_ref(), &mut pending).await;
}

async fn flush(store: &dyn Store, pending: &mut HashMap<String, Timestamp>) {
    if pending.is_empty() {
        return;
    }
    let batch: Vec<(String, Timestamp)> = pending.drain().collect();
    if let Err(error) = store.record_last_used(&batch).await {
        tracing::warn!(%error, keys = batch.len(), "could not write last_used_at; will retry");
        for (id, at) in batch {
            let latest = pending.entry(id).or_insert(at);
            *latest = (*latest).max(at);
        }
    }
}
