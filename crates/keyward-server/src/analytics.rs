//! Usage analytics (issue 8): every verification's outcome, counted per key and minute off
//! the hot path, and written as minute, hour and day counts in batches.
//!
//! Verification only sends a small record into a bounded queue (never waits). One task adds
//! the records up by (key, outcome, minute) and writes the sums once a second; what storage
//! refuses is kept and retried. At shutdown the queue is drained and written. Records that
//! find the queue full, or sums beyond the pending bound while storage is down, are counted
//! in `keyward_usage_records_dropped_total`, never dropped silently.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::analytics::Granularity;
use keyward_core::model::Tenancy;
use keyward_core::verify::VerifyCode;
use keyward_core::Timestamp;
use keyward_store::{Store, UsageCount};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::verification::CachedKey;

const QUEUE_CAPACITY: usize = 65_536;
/// How long a busy writer lets the queue fill between takes (65,536 in 10 ms is 6.5 million
/// verifications a second).
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// Distinct (key, outcome, minute) sums held between writes (about 300 bytes each), while
/// storage does not take them.
const MAX_PENDING: usize = 500_000;
/// Sums written at once, before the interval ends, when this many accumulate: with a great
/// many distinct keys verified, waiting for the tick would hold, then copy, hundreds of
/// thousands of them (measured: 150 MB of a node's memory at 10,000 distinct keys a second).
const WRITE_AT: usize = 20_000;

/// What a verification was about.
#[derive(Debug)]
pub(crate) enum Subject {
    /// A key that was found (whatever the verdict on it).
    Key(Arc<CachedKey>),
    /// No key was found; the caller's environment is what is known.
    Unknown(Tenancy),
    /// Another credential (a public key), by id.
    Credential { tenancy: Tenancy, id: String },
}

#[derive(Debug)]
struct Record {
    subject: Subject,
    code: VerifyCode,
    at: Timestamp,
}

/// Hands verification outcomes to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct UsageRecorder {
    queue: Option<mpsc::Sender<Record>>,
    metrics: Arc<Metrics>,
}

impl UsageRecorder {
    /// Starts the writer, which ends after a final write once every recorder is dropped.
    /// Disabled, it records nothing and starts nothing.
    pub fn start(
        store: Arc<dyn Store>,
        settings: &crate::AnalyticsSettings,
        metrics: Arc<Metrics>,
    ) -> (Self, Option<JoinHandle<()>>) {
        if !settings.enabled {
            return (
                Self {
                    queue: None,
                    metrics,
                },
                None,
            );
        }
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(write_counts(
            store,
            receiver,
            settings.flush_interval,
            settings.per_key,
            Arc::clone(&metrics),
        ));
        (
            Self {
                queue: Some(queue),
                metrics,
            },
            Some(task),
        )
    }

    /// Notes one verification's outcome. Never waits.
    pub(crate) fn record(&self, subject: Subject, code: VerifyCode, at: Timestamp) {
        let Some(queue) = &self.queue else { return };
        if queue.try_send(Record { subject, code, at }).is_err() {
            self.metrics.usage_records_dropped.inc();
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.queue.is_some()
    }
}

/// What one sum is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CountKey {
    tenancy: Tenancy,
    key_id: String,
    app_id: String,
    organization_id: String,
    code: VerifyCode,
    minute: i64,
}

impl CountKey {
    /// `per_key` off, a key's verifications count only towards its app and organisation.
    fn of(record: Record, per_key: bool) -> Self {
        let minute = Granularity::Minute.bucket_start(record.at).as_millis();
        let key_id_of = |id: &str| {
            if per_key {
                id.to_owned()
            } else {
                String::new()
            }
        };
        let (tenancy, key_id, app_id, organization_id) = match record.subject {
            Subject::Key(entry) => (
                entry.tenancy().clone(),
                key_id_of(entry.id()),
                entry.app_id().to_owned(),
                entry.organization_id().unwrap_or_default().to_owned(),
            ),
            Subject::Unknown(tenancy) => (tenancy, String::new(), String::new(), String::new()),
            Subject::Credential { tenancy, id } => {
                (tenancy, key_id_of(&id), String::new(), String::new())
            }
        };
        Self {
            tenancy,
            key_id,
            app_id,
            organization_id,
            code: record.code,
            minute,
        }
    }
}

async fn write_counts(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<Record>,
    interval: Duration,
    per_key: bool,
    metrics: Arc<Metrics>,
) {
    let mut pending: HashMap<CountKey, i64> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let add = |pending: &mut HashMap<CountKey, i64>, record: Record| {
        let key = CountKey::of(record, per_key);
        if let Some(count) = pending.get_mut(&key) {
            *count += 1;
        } else if pending.len() < MAX_PENDING {
            pending.insert(key, 1);
        } else {
            metrics.usage_records_dropped.inc();
        }
    };
    // Once woken by a record, the writer takes what else is queued, then sleeps a moment
    // before it listens again: a writer that listened all the time would be woken, and
    // scheduled, by every verification (measured: a tenth of a cached verification's CPU
    // at full load). Busy, it wakes a hundred times a second; idle, not at all.
    let mut storage_answered = true;
    loop {
        tokio::select! {
            received = receiver.recv() => {
                let Some(record) = received else { break };
                add(&mut pending, record);
                while let Ok(record) = receiver.try_recv() {
                    add(&mut pending, record);
                    if storage_answered && pending.len() >= WRITE_AT {
                        storage_answered = flush(store.as_ref(), &mut pending).await;
                    }
                }
                tokio::time::sleep(DRAIN_EVERY).await;
            },
            _ = ticker.tick() => storage_answered = flush(store.as_ref(), &mut pending).await,
        }
    }
    flush(store.as_ref(), &mut pending).await;
    // Shutting down with storage unavailable: what could not be written is reported.
    let lost: i64 = pending.values().sum();
    if lost > 0 {
        tracing::error!(lost, "usage counts could not be written before shutdown");
        metrics
            .usage_records_dropped
            .inc_by(u64::try_from(lost).unwrap_or(0));
    }
}

/// Writes the sums; on failure they stay pending for the next tick. Whether storage took
/// them.
async fn flush(store: &dyn Store, pending: &mut HashMap<CountKey, i64>) -> bool {
    if pending.is_empty() {
        return true;
    }
    let counts: Vec<UsageCount> = pending
        .iter()
        .map(|(key, count)| UsageCount {
            tenancy: key.tenancy.clone(),
            key_id: key.key_id.clone(),
            app_id: key.app_id.clone(),
            organization_id: key.organization_id.clone(),
            outcome: key.code.as_str().to_owned(),
            at: Timestamp::from_millis(key.minute),
            count: *count,
        })
        .collect();
    match store.add_usage(&counts).await {
        Ok(()) => {
            // Dropped rather than cleared: a burst's capacity is not kept for good.
            *pending = HashMap::new();
            true
        }
        Err(error) => {
            tracing::warn!(%error, sums = counts.len(), "writing usage counts failed; retrying");
            false
        }
    }
}

/// Forgets counts past their retention, hourly.
pub(crate) async fn purge_loop(
    store: Arc<dyn Store>,
    settings: crate::AnalyticsSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(3600));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let millis = |duration: Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticks.tick() => {}
        }
        let now = crate::clock::now();
        let purged = store
            .purge_usage(
                now.plus_millis(-millis(settings.minute_retention)),
                now.plus_millis(-millis(settings.rollup_retention)),
            )
            .await;
        if let Err(error) = purged {
            tracing::warn!(%error, "purging old usage counts failed");
        }
    }
}
