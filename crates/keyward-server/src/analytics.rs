//! Usage analytics (issue 8): every verification's outcome, counted per key and minute off
//! the hot path, and written as minute, hour and day counts in batches.
//!
//! Verification only sends a small record into a bounded queue (never waits). One task adds
//! the records up by (key, outcome, minute), and at every multiple of the write interval on
//! the wall clock hands the sums to a write of their own, in chunks of one transaction each,
//! while it goes on counting. What storage refuses is kept and retried at the next interval.
//! At shutdown the queue is drained and written.
//!
//! When storage does not keep up (a million keys in use, each verified a few times a minute,
//! on a small PostgreSQL), the sums waiting are bounded: past the bound, a verification
//! counts towards its app, organisation and environment but no longer its key
//! (`keyward_usage_key_counts_folded_total`), so those totals stay exact while memory stays
//! flat. Records that find the queue full, or that even that cannot hold, are counted in
//! `keyward_usage_records_dropped_total`, never dropped silently.

// A sum's key holds a cached key, whose counters change; it is hashed and compared by the
// entry's address alone (`CountedUnder`), which never changes.
#![allow(clippy::mutable_key_type)]

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use keyward_core::analytics::Granularity;
use keyward_core::model::Tenancy;
use keyward_core::verify::VerifyCode;
use keyward_core::Timestamp;
use keyward_store::{Store, UsageCount};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics::Metrics;
use crate::verification::CachedKey;

const QUEUE_CAPACITY: usize = 65_536;
/// How long a busy writer lets the queue fill between takes (65,536 in 10 ms is 6.5 million
/// verifications a second).
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// Distinct (key, outcome, minute) sums held between writes: 33 bytes each in the map (35 MB
/// at the bound), and as much again for those being written. Past it, new keys' sums are
/// folded into their app's.
const MAX_PENDING: usize = 900_000;
/// Room past the bound for the folded sums (one per app, organisation, outcome and minute);
/// past that, records are dropped and counted.
const FOLDED_ROOM: usize = 100_000;
/// Sums per transaction: a write of a million sums neither holds a million rows locked nor
/// builds all their rows at once.
const WRITE_CHUNK: usize = 10_000;

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

/// What a sum is counted under, besides its outcome and minute.
#[derive(Debug, Clone)]
enum CountedUnder {
    /// A key, known by its cache entry's address rather than by its ids: with a million keys
    /// in use a million sums wait between writes, and this way each is a pointer, not four
    /// strings. Holding the `Arc` keeps the address the entry's own. The same key under two
    /// entries (reloaded in between) makes two sums for the same rows, which add up.
    Key(Arc<CachedKey>),
    /// Anything else, by its ids (`""` for none).
    Ids(Box<Ids>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Ids {
    tenancy: Tenancy,
    key_id: String,
    app_id: String,
    organization_id: String,
}

impl PartialEq for CountedUnder {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Key(a), Self::Key(b)) => Arc::ptr_eq(a, b),
            (Self::Ids(a), Self::Ids(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for CountedUnder {}

impl Hash for CountedUnder {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Self::Key(entry) => Arc::as_ptr(entry).hash(state),
            Self::Ids(ids) => ids.hash(state),
        }
    }
}

impl CountedUnder {
    /// `per_key` off, a key's verifications count only towards its app and organisation.
    fn of(subject: Subject, per_key: bool) -> Self {
        let ids = |tenancy: Tenancy, key_id: &str, app_id: &str, organization_id: &str| {
            Self::Ids(Box::new(Ids {
                tenancy,
                key_id: if per_key {
                    key_id.to_owned()
                } else {
                    String::new()
                },
                app_id: app_id.to_owned(),
                organization_id: organization_id.to_owned(),
            }))
        };
        match subject {
            Subject::Key(entry) if per_key => Self::Key(entry),
            Subject::Key(entry) => ids(
                entry.tenancy().clone(),
                "",
                entry.app_id(),
                entry.organization_id().unwrap_or_default(),
            ),
            Subject::Unknown(tenancy) => ids(tenancy, "", "", ""),
            Subject::Credential { tenancy, id } => ids(tenancy, &id, "", ""),
        }
    }

    fn key_id(&self) -> &str {
        match self {
            Self::Key(entry) => entry.id(),
            Self::Ids(ids) => &ids.key_id,
        }
    }
}

/// What one sum is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CountKey {
    under: CountedUnder,
    code: VerifyCode,
    /// Minutes since the epoch: with the count, a sum fits in 32 bytes.
    minute: u32,
}

impl CountKey {
    fn new(record: Record, per_key: bool) -> Self {
        let minute = record.at.as_millis().div_euclid(MINUTE_MS);
        Self {
            under: CountedUnder::of(record.subject, per_key),
            code: record.code,
            minute: u32::try_from(minute).unwrap_or(0),
        }
    }

    /// The same sum counted towards the key's app, organisation and environment only.
    fn without_key(&self) -> Self {
        let ids = match &self.under {
            CountedUnder::Key(entry) => Ids {
                tenancy: entry.tenancy().clone(),
                key_id: String::new(),
                app_id: entry.app_id().to_owned(),
                organization_id: entry.organization_id().unwrap_or_default().to_owned(),
            },
            CountedUnder::Ids(ids) => Ids {
                key_id: String::new(),
                ..Ids::clone(ids)
            },
        };
        Self {
            under: CountedUnder::Ids(Box::new(ids)),
            code: self.code,
            minute: self.minute,
        }
    }

    fn usage_count(&self, count: u32) -> UsageCount {
        let (tenancy, key_id, app_id, organization_id) = match &self.under {
            CountedUnder::Key(entry) => (
                entry.tenancy(),
                entry.id(),
                entry.app_id(),
                entry.organization_id().unwrap_or_default(),
            ),
            CountedUnder::Ids(ids) => (
                &ids.tenancy,
                ids.key_id.as_str(),
                ids.app_id.as_str(),
                ids.organization_id.as_str(),
            ),
        };
        UsageCount {
            tenancy: tenancy.clone(),
            key_id: key_id.to_owned(),
            app_id: app_id.to_owned(),
            organization_id: organization_id.to_owned(),
            outcome: self.code.as_str().to_owned(),
            at: Timestamp::from_millis(i64::from(self.minute) * MINUTE_MS),
            count: i64::from(count),
        }
    }
}

const MINUTE_MS: i64 = Granularity::Minute.millis();

type Sums = HashMap<CountKey, u32>;

/// Adds `count` to the pending sums within their bound (see `MAX_PENDING`).
fn add(pending: &mut Sums, key: CountKey, count: u32, metrics: &Metrics) {
    if let Some(sum) = pending.get_mut(&key) {
        *sum = sum.saturating_add(count);
        return;
    }
    if pending.len() < MAX_PENDING {
        pending.insert(key, count);
        return;
    }
    let folded = key.without_key();
    if let Some(sum) = pending.get_mut(&folded) {
        *sum = sum.saturating_add(count);
    } else if pending.len() < MAX_PENDING + FOLDED_ROOM {
        pending.insert(folded, count);
    } else {
        metrics.usage_records_dropped.inc_by(u64::from(count));
        return;
    }
    metrics.usage_key_counts_folded.inc_by(u64::from(count));
}

async fn write_counts(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<Record>,
    interval: Duration,
    per_key: bool,
    metrics: Arc<Metrics>,
) {
    let mut pending = Sums::new();
    let count = |pending: &mut Sums, record: Record| {
        add(pending, CountKey::new(record, per_key), 1, &metrics);
    };
    // One write at a time, beside the counting: a million sums take PostgreSQL seconds, and
    // the queue would overflow if nobody emptied it meanwhile.
    let mut writes: JoinSet<Sums> = JoinSet::new();
    let mut last_write_failed = false;
    let mut next_write = next_multiple(interval);
    loop {
        tokio::select! {
            received = receiver.recv() => {
                let Some(record) = received else { break };
                count(&mut pending, record);
                // Once woken by a record, the writer takes what else is queued, then sleeps
                // a moment before it listens again: a writer that listened all the time
                // would be woken, and scheduled, by every verification (measured: a tenth
                // of a cached verification's CPU at full load). Busy, it wakes a hundred
                // times a second; idle, not at all.
                while let Ok(record) = receiver.try_recv() {
                    count(&mut pending, record);
                }
                if pending.len() >= MAX_PENDING && writes.is_empty() && !last_write_failed {
                    writes.spawn(write(Arc::clone(&store), std::mem::take(&mut pending)));
                }
                tokio::time::sleep(DRAIN_EVERY).await;
            },
            () = tokio::time::sleep_until(next_write) => {
                next_write = next_multiple(interval);
                if writes.is_empty() && !pending.is_empty() {
                    writes.spawn(write(Arc::clone(&store), std::mem::take(&mut pending)));
                }
            },
            Some(written) = writes.join_next() => {
                let unwritten = written.unwrap_or_else(|error| {
                    tracing::error!(%error, "a usage write ended abnormally");
                    Sums::new()
                });
                last_write_failed = !unwritten.is_empty();
                keep(&mut pending, unwritten, &metrics);
            },
        }
    }
    while let Some(written) = writes.join_next().await {
        keep(&mut pending, written.unwrap_or_default(), &metrics);
    }
    let unwritten = write(store, pending).await;
    // Shutting down with storage unavailable: what could not be written is reported.
    let lost: u64 = unwritten.values().map(|&count| u64::from(count)).sum();
    if lost > 0 {
        tracing::error!(lost, "usage counts could not be written before shutdown");
        metrics.usage_records_dropped.inc_by(lost);
    }
}

/// The next multiple of `interval` on the wall clock, so that with a write a minute every
/// minute's sums are written once, whole, and no minute is split over two writes.
fn next_multiple(interval: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + until_next_multiple(crate::clock::now(), interval)
}

fn until_next_multiple(now: Timestamp, interval: Duration) -> Duration {
    let interval_ms = i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let wait_ms = interval_ms - now.as_millis().rem_euclid(interval_ms);
    Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))
}

/// Puts sums a write could not take back with the pending ones, within the bound.
fn keep(pending: &mut Sums, unwritten: Sums, metrics: &Metrics) {
    for (key, count) in unwritten {
        add(pending, key, count, metrics);
    }
}

/// Writes the sums a chunk per transaction, in key order: each chunk then touches
/// neighbouring index pages, and writers on several nodes lock shared rows in the same
/// order. Returns what storage did not take.
async fn write(store: Arc<dyn Store>, sums: Sums) -> Sums {
    let mut sums: Vec<(CountKey, u32)> = sums.into_iter().collect();
    sums.sort_unstable_by(|(a, _), (b, _)| a.under.key_id().cmp(b.under.key_id()));
    let mut sums = sums.into_iter();
    loop {
        let chunk: Vec<(CountKey, u32)> = sums.by_ref().take(WRITE_CHUNK).collect();
        if chunk.is_empty() {
            return Sums::new();
        }
        let counts: Vec<UsageCount> = chunk
            .iter()
            .map(|(key, count)| key.usage_count(*count))
            .collect();
        if let Err(error) = store.add_usage(&counts).await {
            let unwritten: Sums = chunk.into_iter().chain(sums).collect();
            tracing::warn!(%error, sums = unwritten.len(), "writing usage counts failed; retrying");
            return unwritten;
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

#[cfg(test)]
mod tests {
    use keyward_core::model::Environment;

    use super::*;
    use crate::verification::cached_key::tests::{cached, key};

    #[test]
    fn writes_fall_on_multiples_of_the_interval() {
        let minute = Duration::from_secs(60);
        let at = |millis| Timestamp::from_millis(millis);
        assert_eq!(until_next_multiple(at(120_000), minute), minute);
        assert_eq!(
            until_next_multiple(at(121_500), minute),
            Duration::from_millis(58_500)
        );
        assert_eq!(
            until_next_multiple(at(179_999), minute),
            Duration::from_millis(1)
        );
        let tenth = Duration::from_millis(100);
        assert_eq!(
            until_next_multiple(at(1_234), tenth),
            Duration::from_millis(66)
        );
    }

    fn count_key(subject: Subject, per_key: bool) -> CountKey {
        CountKey {
            under: CountedUnder::of(subject, per_key),
            code: VerifyCode::Valid,
            minute: 1,
        }
    }

    #[test]
    fn a_key_is_summed_by_its_cache_entry_and_written_by_its_ids() {
        let entry = Arc::new(cached(key(1)));
        let same_entry = count_key(Subject::Key(Arc::clone(&entry)), true);
        assert_eq!(
            same_entry,
            count_key(Subject::Key(Arc::clone(&entry)), true)
        );
        // The key loaded again into another entry sums apart, into the same rows.
        let reloaded = count_key(Subject::Key(Arc::new(cached(key(1)))), true);
        assert_ne!(same_entry, reloaded);
        assert_eq!(same_entry.usage_count(3), reloaded.usage_count(3));
        let written = same_entry.usage_count(3);
        assert_eq!(
            (
                written.key_id.as_str(),
                written.app_id.as_str(),
                written.outcome.as_str()
            ),
            ("key_1", "app_1", "VALID")
        );
        assert_eq!(
            (written.at, written.count),
            (Timestamp::from_millis(60_000), 3)
        );
    }

    #[test]
    fn without_per_key_counts_the_keys_of_an_app_sum_together() {
        let one = count_key(Subject::Key(Arc::new(cached(key(1)))), false);
        let two = count_key(Subject::Key(Arc::new(cached(key(2)))), false);
        assert_eq!(one, two);
        assert_eq!(one.usage_count(1).key_id, "");
        let tenancy = Tenancy {
            workspace_id: "ws_1".to_owned(),
            environment: Environment::Live,
        };
        let credential = |per_key| {
            count_key(
                Subject::Credential {
                    tenancy: tenancy.clone(),
                    id: "pk_1".to_owned(),
                },
                per_key,
            )
            .usage_count(1)
            .key_id
        };
        assert_eq!(
            (credential(true).as_str(), credential(false).as_str()),
            ("pk_1", "")
        );
    }

    #[test]
    fn past_the_bound_a_key_counts_towards_its_app_only() {
        let metrics = Metrics::new();
        let mut pending = Sums::new();
        let busy = Arc::new(cached(key(1)));
        for minute in 0..u32::try_from(MAX_PENDING).unwrap() {
            let sum = CountKey {
                minute,
                ..count_key(Subject::Key(Arc::clone(&busy)), true)
            };
            add(&mut pending, sum, 1, &metrics);
        }
        // A sum already pending still adds up under its key.
        add(
            &mut pending,
            count_key(Subject::Key(Arc::clone(&busy)), true),
            2,
            &metrics,
        );
        assert_eq!(pending[&count_key(Subject::Key(busy), true)], 3);
        let late = count_key(Subject::Key(Arc::new(cached(key(2)))), true);
        add(&mut pending, late.clone(), 1, &metrics);
        add(&mut pending, late.clone(), 4, &metrics);
        assert!(!pending.contains_key(&late));
        assert_eq!(pending[&late.without_key()], 5);
        assert_eq!(late.without_key().usage_count(5).app_id, "app_1");
        assert_eq!(pending.len(), MAX_PENDING + 1);
        assert_eq!(metrics.usage_key_counts_folded.get(), 5);
        assert_eq!(metrics.usage_records_dropped.get(), 0);
    }

    #[test]
    fn a_pending_sum_stays_small() {
        // A million of them wait between two writes a minute apart.
        assert!(std::mem::size_of::<(CountKey, u32)>() <= 32);
    }
}
