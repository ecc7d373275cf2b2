//! The filter of known credentials: a Bloom filter over every look-up hash in storage, so
//! that a well-formed secret that does not exist is refused from memory instead of costing a
//! storage read. A negative cache cannot do this: an attacker sends a fresh random key with a
//! valid checksum every time.
//!
//! A Bloom filter never forgets and never says "absent" for a hash it was given, so the one
//! way it could refuse a real credential is by never having been given its hash. Two rules
//! close that:
//! - every change that makes a look-up hash announces it ([`keyward_store::Stale`]) before
//!   its call returns, as a revocation does, and announcements reach [`KnownCredentials::learn`]
//!   on every node; revocations, rotations and deletions announce hashes too, which only adds
//!   hashes that exist or existed (a false positive, never a false negative);
//! - a filter answers only once built, and is built by a scan that starts after the filter
//!   it fills began hearing announcements. A hash committed before the scan is read by it;
//!   one committed after is announced into it. A node that lost track of announcements
//!   ([`keyward_store::cluster::ClusterCache::lost_track`]) drops its filter at once and
//!   builds another; until then it reads storage, as it does for its cache.
//!
//! Deleted credentials stay in the filter until the next build: they cost a storage read,
//! as every credential did before. The filter is sized for twice the hashes stored when it
//! is built, and rebuilt larger once that many have been added.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fastbloom::AtomicBloomFilter;
use keyward_core::KeyHash;
use keyward_store::{LookupScan, Store};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{watch, Notify};

/// One in a hundred unknown hashes still reaches storage (or the negative cache): about
/// 9.6 bits a hash.
const FALSE_POSITIVE_RATE: f64 = 0.01;
/// Room for growth in a filter built over few credentials, so that a young installation is
/// not rebuilt at every few creations.
const MIN_CAPACITY: u64 = 100_000;
/// Hashes read per storage page while building.
const SCAN_PAGE: u32 = 10_000;
/// How long a build that failed (storage unreachable) waits before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the filter counts, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct FilterCounters {
    /// Look-ups the filter answered "surely absent", with no storage read.
    pub refusals: Counter,
    /// Builds completed.
    pub builds: Counter,
}

struct Filter {
    bits: AtomicBloomFilter,
    capacity: u64,
    added: AtomicU64,
}

impl Filter {
    fn with_capacity(capacity: u64) -> Self {
        let capacity = capacity.max(MIN_CAPACITY);
        Self {
            bits: AtomicBloomFilter::with_false_pos(FALSE_POSITIVE_RATE)
                .expected_items(usize::try_from(capacity).unwrap_or(usize::MAX)),
            capacity,
            added: AtomicU64::new(0),
        }
    }

    fn add(&self, position: u64) {
        self.bits.insert_hash(position);
        self.added.fetch_add(1, Ordering::Relaxed);
    }

    fn is_full(&self) -> bool {
        self.added.load(Ordering::Relaxed) > self.capacity
    }

    fn bytes(&self) -> u64 {
        self.bits.num_bits() as u64 / 8
    }
}

#[derive(Default)]
struct Filters {
    /// Answers: every hash stored when its scan began, and every one announced since.
    ready: Option<Arc<Filter>>,
    /// Being built: hears announcements from before its scan begins.
    building: Option<Arc<Filter>>,
}

/// This node's filter of known credentials; see the module documentation.
pub struct KnownCredentials {
    filters: RwLock<Filters>,
    /// Builds asked for, and the number of the last build started: a build answers for
    /// what was asked before it started, not after.
    wanted: AtomicU64,
    started: AtomicU64,
    wake: Notify,
    /// Mixed into every position, so that each node's false positives differ.
    salt: u64,
    counters: FilterCounters,
}

impl std::fmt::Debug for KnownCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownCredentials")
            .field("ready", &self.is_ready())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl KnownCredentials {
    pub fn new(counters: FilterCounters) -> Self {
        Self {
            filters: RwLock::default(),
            wanted: AtomicU64::new(0),
            started: AtomicU64::new(0),
            wake: Notify::new(),
            salt: rand::random(),
            counters,
        }
    }

    fn position(&self, hash: &KeyHash) -> u64 {
        let bytes = hash.as_bytes();
        let mut first = [0_u8; 8];
        first.copy_from_slice(&bytes[..8]);
        // SHA-256 output is already uniform: its first bytes are the filter's hash.
        u64::from_le_bytes(first) ^ self.salt
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Filters> {
        self.filters
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Filters> {
        self.filters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `hash` surely has no credential. `false` means "maybe", and also "cannot
    /// tell" while no filter is built.
    pub fn surely_absent(&self, hash: &KeyHash) -> bool {
        let absent = self
            .read()
            .ready
            .as_ref()
            .is_some_and(|filter| !filter.bits.contains_hash(self.position(hash)));
        if absent {
            self.counters.refusals.inc();
        }
        absent
    }

    /// Adds announced hashes: new credentials' among them.
    pub fn learn(&self, hashes: &[KeyHash]) {
        let full = {
            let filters = self.read();
            for hash in hashes {
                let position = self.position(hash);
                for filter in filters.ready.iter().chain(filters.building.iter()) {
                    filter.add(position);
                }
            }
            filters
                .ready
                .as_ref()
                .is_some_and(|filter| filter.is_full())
        };
        if full {
            self.request_build();
        }
    }

    /// This node may have missed announcements: the filter stops answering at once, and a
    /// new one is built.
    pub fn lost_track(&self) {
        self.write().ready = None;
        self.request_build();
    }

    /// Asks for a build that starts after now.
    pub fn request_build(&self) {
        self.wanted
            .fetch_max(self.started.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn is_ready(&self) -> bool {
        self.read().ready.is_some()
    }

    /// What the filters hold in memory, the one being built included.
    pub fn bytes(&self) -> u64 {
        let filters = self.read();
        filters
            .ready
            .iter()
            .chain(filters.building.iter())
            .map(|filter| filter.bytes())
            .sum()
    }

    /// Builds the filter whenever one is asked for, until `stopped`.
    pub async fn keep_built(&self, store: Arc<dyn Store>, mut stopped: watch::Receiver<bool>) {
        loop {
            while self.wanted.load(Ordering::SeqCst) <= self.started.load(Ordering::SeqCst) {
                tokio::select! {
                    () = self.wake.notified() => {}
                    _ = stopped.changed() => return,
                }
            }
            let build = self.wanted.load(Ordering::SeqCst);
            self.started.store(build, Ordering::SeqCst);
            match self.build(store.as_ref()).await {
                Ok(filter) => {
                    let mut filters = self.write();
                    filters.building = None;
                    // A loss of track after this build started is not covered by it.
                    if self.wanted.load(Ordering::SeqCst) <= build {
                        filters.ready = Some(filter);
                        self.counters.builds.inc();
                    }
                }
                Err(error) => {
                    self.write().building = None;
                    tracing::warn!(%error, "cannot build the filter of known credentials; verifying unknown keys from storage meanwhile");
                    self.started.store(build - 1, Ordering::SeqCst);
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_AFTER) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        }
    }

    async fn build(&self, store: &dyn Store) -> Result<Arc<Filter>, keyward_store::StoreError> {
        let stored = store.count_lookup_hashes().await?;
        let filter = Arc::new(Filter::with_capacity(stored.saturating_mul(2)));
        // Hears announcements before the scan reads anything.
        self.write().building = Some(Arc::clone(&filter));
        let mut from = Some(LookupScan::default());
        while let Some(cursor) = from {
            let (hashes, next) = store.scan_lookup_hashes(&cursor, SCAN_PAGE).await?;
            for hash in &hashes {
                filter.add(self.position(hash));
            }
            from = next;
        }
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u32) -> KeyHash {
        KeyHash::of(&format!("secret-{n}"))
    }

    fn ready_with(known: &KnownCredentials, hashes: &[KeyHash]) {
        let filter = Arc::new(Filter::with_capacity(hashes.len() as u64 * 2));
        for hash in hashes {
            filter.add(known.position(hash));
        }
        known.write().ready = Some(filter);
    }

    #[test]
    fn nothing_is_refused_before_a_filter_is_built_or_after_track_is_lost() {
        let known = KnownCredentials::new(FilterCounters::default());
        assert!(!known.surely_absent(&hash(1)));
        ready_with(&known, &[hash(1)]);
        assert!(!known.surely_absent(&hash(1)));
        assert!(known.surely_absent(&hash(2)));
        known.lost_track();
        assert!(!known.surely_absent(&hash(2)), "no filter, no refusal");
        assert!(known.wanted.load(Ordering::SeqCst) > known.started.load(Ordering::SeqCst));
    }

    #[test]
    fn announced_hashes_are_known_to_the_filter_answering_and_the_one_being_built() {
        let known = KnownCredentials::new(FilterCounters::default());
        ready_with(&known, &[]);
        let building = Arc::new(Filter::with_capacity(10));
        known.write().building = Some(Arc::clone(&building));
        known.learn(&[hash(7)]);
        assert!(!known.surely_absent(&hash(7)));
        assert!(building.bits.contains_hash(known.position(&hash(7))));
    }

    #[test]
    fn random_unknown_hashes_are_refused_at_about_the_false_positive_rate() {
        let known = KnownCredentials::new(FilterCounters::default());
        let stored: Vec<KeyHash> = (0..50_000).map(hash).collect();
        ready_with(&known, &stored);
        assert!(stored.iter().all(|hash| !known.surely_absent(hash)));
        let passed = (0..100_000)
            .map(|n| hash(1_000_000 + n))
            .filter(|unknown| !known.surely_absent(unknown))
            .count();
        assert!(passed < 2_000, "{passed} of 100000 unknown hashes passed");
    }

    #[test]
    fn a_full_filter_asks_for_a_larger_one_and_keeps_answering() {
        let known = KnownCredentials::new(FilterCounters::default());
        ready_with(&known, &[]);
        let started = known.wanted.load(Ordering::SeqCst);
        let many: Vec<KeyHash> = (0..(MIN_CAPACITY as u32 + 1)).map(hash).collect();
        known.learn(&many);
        assert!(known.wanted.load(Ordering::SeqCst) > started);
        assert!(known.is_ready());
        assert!(!known.surely_absent(&many[0]));
    }
}
