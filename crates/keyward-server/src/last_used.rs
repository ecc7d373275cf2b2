//! `last_used_at`, written in batches off the hot path.
//!
//! Verification only queues the key (at most once per key per interval, see
//! [`CachedKey::last_used_queued_at`]); a background task coalesces the queue and writes one
//! transaction per interval. On shutdown the task drains the queue and writes what is left.

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

#[derive(Debug, Clone)]
pub struct LastUsedRecorder {
    queue: mpsc::Sender<(Arc<CachedKey>, Timestamp)>,
    interval_ms: i64,
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
            interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX),
            metrics,
        };
        (recorder, task)
    }

    /// Notes a successful verification. Never waits.
    pub fn record(&self, entry: &Arc<CachedKey>, now: Timestamp) {
        let queued_at = entry.last_used_queued_at.load(Ordering::Relaxed);
        if now.as_millis().saturating_sub(queued_at) < self.interval_ms {
            return;
        }
        entry
            .last_used_queued_at
            .store(now.as_millis(), Ordering::Relaxed);
        if self.queue.try_send((Arc::clone(entry), now)).is_err() {
            // Only a stalled storage fills the queue; count what it costs.
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
