//! The verification cache: a secret's SHA-256 to what verifying its credential needs.
//!
//! Its one safety rule is in [`VerificationCache::get_or_load`]: a load that races an
//! invalidation must not put the old state back. Each invalidation bumps `epoch`; a loader
//! notes the epoch before reading storage and inserts only if no invalidation happened
//! meanwhile. The check and the insert hold `changes` for reading and an invalidation holds
//! it for writing, so that they are one step with respect to each other. Every change drops
//! the affected hashes before its call returns, so a revoked, rotated, disabled or deleted
//! credential is refused by this node the moment the call returns.
//!
//! On a shared database the cache answers only while this node's lease from the cluster
//! protocol holds ([`keyward_store::cluster`]); otherwise every verification reads storage.
//!
//! The cache is bounded in bytes (`quick_cache`: S3-FIFO-like admission, so a scan of cold
//! keys does not push out the hot ones; each entry weighed by what it holds): a node keeps
//! its hottest credentials however many exist. `quick_cache` was chosen over `moka` for its
//! bookkeeping, about 80 bytes an entry against 300, and a read that is one shared lock and
//! no queue: at a million cached keys the bookkeeping was most of the budget. Dropping an
//! entry is always safe, since a miss reads storage; only putting back an old state is not,
//! and the epoch rule forbids that whatever the cache evicts.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use keyward_core::model::{PublicKey, RootKey, WorkspaceKey};
use keyward_core::usage::RateWindow;
use keyward_core::{KeyHash, Timestamp};
use keyward_store::cluster::ClusterCache;
use keyward_store::Stale;
use prometheus_client::metrics::counter::Counter;
use secrecy::SecretString;

use super::cached_key::heap;
pub use super::cached_key::{CachedKey, KeyGroups};
use super::known::KnownCredentials;
use super::tokens::VerificationKey;

#[derive(Debug)]
pub struct CachedRootKey {
    pub key: RootKey,
    pub secret_expires_at: Option<Timestamp>,
    /// Its scheme's windows, limiting its calls to Keyward's API, on `meter`.
    pub windows: Vec<RateWindow>,
    pub meter: String,
}

/// A public key with what verifying its tokens needs, parsed once.
#[derive(Debug)]
pub struct CachedPublicKey {
    pub key: PublicKey,
    pub secret_expires_at: Option<Timestamp>,
    pub enhanced_security: bool,
    /// An inline JWT key, or the environment's signing keys for a client public key.
    pub verification_keys: Vec<VerificationKey>,
    /// Limits each subject's verifications.
    pub windows: Vec<RateWindow>,
}

/// A workspace key with its secrets opened, for checking HMAC signatures.
pub struct CachedWorkspaceKey {
    pub key: WorkspaceKey,
    /// The current secret, then a superseded one with the end of its grace period.
    pub secrets: Vec<(SecretString, Option<Timestamp>)>,
    /// Its scheme's windows, limiting its calls to Keyward's API, on `meter`.
    pub windows: Vec<RateWindow>,
    pub meter: String,
}

impl std::fmt::Debug for CachedWorkspaceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedWorkspaceKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The kinds of credential the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Key,
    Root,
    Public,
    Workspace,
}

/// One cached credential, or the knowledge that storage has none of a kind for the hash.
#[derive(Debug, Clone)]
pub enum Entry {
    Key(Arc<CachedKey>),
    Root(Arc<CachedRootKey>),
    Public(Arc<CachedPublicKey>),
    Workspace(Arc<CachedWorkspaceKey>),
    /// Storage was asked and had none: a repeated unknown secret the filter of known
    /// credentials let through (a false positive) is not read again. The credential's
    /// creation announces its hash, which drops this like any invalidation.
    Absent(Kind),
}

impl Entry {
    /// Roughly what the entry holds in memory, for the cache's bound: the structs, their
    /// text and lists, the cache's own bookkeeping. Calibrated against resident memory with
    /// `examples/cache_footprint.rs` (within a few per cent for a typical API key), so that
    /// the bound in bytes is one the process's memory follows.
    fn approximate_bytes(&self) -> usize {
        // The `Arc`'s counts around the cached struct.
        const ARC: usize = 16;
        let texts = |texts: &[&str]| texts.iter().map(|text| heap(text.len())).sum::<usize>();
        let windows = |windows: &[RateWindow]| heap(std::mem::size_of_val(windows));
        CACHE_SLOT_BYTES
            + match self {
                Entry::Key(cached) => ARC + cached.approximate_bytes(),
                Entry::Root(cached) => {
                    ARC + std::mem::size_of::<CachedRootKey>()
                        + texts(&[&cached.key.id, &cached.key.name, &cached.key.start])
                        + texts(&[&cached.key.tenancy.workspace_id, &cached.meter])
                        + windows(&cached.windows)
                }
                Entry::Public(cached) => {
                    ARC + std::mem::size_of::<CachedPublicKey>()
                    + std::mem::size_of_val(&cached.key)
                    + windows(&cached.windows)
                    // Parsed keys: a modulus or a point, and their JWK fields.
                    + cached.verification_keys.len() * 1024
                }
                Entry::Workspace(cached) => {
                    ARC + std::mem::size_of::<CachedWorkspaceKey>()
                        + std::mem::size_of_val(&cached.key)
                        + cached.secrets.len() * 128
                        + windows(&cached.windows)
                        + cached.meter.len()
                }
                Entry::Absent(_) => 0,
            }
    }
}

/// The cache's bookkeeping for one entry: its slot (the hash, the `Entry`, list links and
/// state: 64 bytes), its share of the index and of the ghost slots that remember recently
/// evicted hashes, and what the allocator keeps once entries churn. Measured by
/// `examples/cache_footprint.rs`: 73 bytes in a cache that never evicted, about 110 once
/// millions of keys have passed through it.
pub(crate) const CACHE_SLOT_BYTES: usize = 110;

/// The share of slots kept for the hashes of recently evicted entries, whose return the
/// cache admits straight to its main part.
const GHOST_SHARE: f64 = 0.1;

/// The entry a typical API key makes, for sizing the cache's index up front.
const TYPICAL_ENTRY_BYTES: u64 = 160;

/// Counts the entries the cache drops to stay within its bound, and drops up to two of them
/// after the cache's lock is released (as `quick_cache`'s default does).
#[derive(Clone)]
struct CountEvictions(Counter);

impl quick_cache::Lifecycle<KeyHash, Entry> for CountEvictions {
    type RequestState = [Option<Entry>; 2];

    fn on_evict(&self, state: &mut Self::RequestState, _: KeyHash, entry: Entry) {
        self.0.inc();
        if let Some(free) = state.iter_mut().find(|held| held.is_none()) {
            *free = Some(entry);
        }
    }
}

#[derive(Clone)]
struct WeighEntries;

impl quick_cache::Weighter<KeyHash, Entry> for WeighEntries {
    fn weight(&self, _: &KeyHash, entry: &Entry) -> u64 {
        entry.approximate_bytes() as u64
    }
}

type Entries = quick_cache::sync::Cache<
    KeyHash,
    Entry,
    WeighEntries,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

/// How the cache counts what it does, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct CacheCounters {
    pub hits: Counter,
    pub misses: Counter,
    /// Entries dropped to stay within the bound (not invalidations).
    pub evictions: Counter,
    /// Credentials read from storage by verification: what the cache and the filter of
    /// known credentials could not answer.
    pub storage_reads: Counter,
}

/// A kind of cached credential. A hash cached as another kind is, for this kind, a
/// credential that does not exist (a root key's secret presented as an API key, say).
pub trait Cached: Sized {
    const KIND: Kind;
    fn into_entry(self: Arc<Self>) -> Entry;
    fn of_entry(entry: &Entry) -> Option<&Arc<Self>>;
}

macro_rules! cached_kind {
    ($type:ty, $variant:ident) => {
        impl Cached for $type {
            const KIND: Kind = Kind::$variant;

            fn into_entry(self: Arc<Self>) -> Entry {
                Entry::$variant(self)
            }

            fn of_entry(entry: &Entry) -> Option<&Arc<Self>> {
                match entry {
                    Entry::$variant(cached) => Some(cached),
                    _ => None,
                }
            }
        }
    };
}

cached_kind!(CachedKey, Key);
cached_kind!(CachedRootKey, Root);
cached_kind!(CachedPublicKey, Public);
cached_kind!(CachedWorkspaceKey, Workspace);

/// What the cache alone can say about a hash.
pub enum Peek<R> {
    /// Cached: what the caller's judgement of the entry gave.
    Hit(R),
    /// No credential of this kind: cached as another kind, known to be absent, or surely
    /// absent by the filter of known credentials.
    Absent,
    /// Not cached, or the cache may not answer: storage must be asked.
    Miss,
}

pub struct VerificationCache {
    entries: Entries,
    /// Bumped by every invalidation, under `changes` held for writing.
    epoch: AtomicU64,
    /// Held for writing by an invalidation and for reading by a loader's check of `epoch` and
    /// its insert, so that no insert of an old state lands after an invalidation's removal.
    changes: RwLock<()>,
    max_bytes: u64,
    counters: CacheCounters,
    /// Until when the cache may answer, in milliseconds after `clock_base`; `ALWAYS` on a
    /// single node. A node that may have missed another node's change must not trust its
    /// cache, and verifies from storage instead (fail safe, never open).
    trusted_until: AtomicU64,
    clock_base: std::time::Instant,
    /// Whether imported secrets in other formats exist. Until they do, and while the filter
    /// of known credentials cannot answer, a string that is not a well-formed Keyward secret
    /// is refused without a look-up.
    foreign_secrets: AtomicBool,
    /// Every look-up hash in storage, approximately: answers for hashes not cached.
    pub known: KnownCredentials,
    /// What cached API keys share with their app's other keys, held once.
    pub groups: KeyGroups,
}

impl std::fmt::Debug for VerificationCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationCache")
            .field("entries", &self.entries.len())
            .field("weighted_bytes", &self.entries.weight())
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

const ALWAYS: u64 = u64::MAX;

/// The default bound: with a sixteenth for verified tokens (`tokens::TOKEN_CACHE_SHARE`),
/// it holds about a million API keys of a typical size.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

impl Default for VerificationCache {
    fn default() -> Self {
        Self::new(
            DEFAULT_MAX_BYTES,
            CacheCounters::default(),
            KnownCredentials::new(super::known::FilterCounters::default()),
        )
    }
}

impl VerificationCache {
    /// A cache that holds at most about `max_bytes` of credentials.
    pub fn new(max_bytes: u64, counters: CacheCounters, known: KnownCredentials) -> Self {
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(
                usize::try_from(max_bytes / TYPICAL_ENTRY_BYTES).unwrap_or(usize::MAX),
            )
            .weight_capacity(max_bytes)
            .ghost_allocation(GHOST_SHARE)
            .build()
            .expect("valid cache options");
        let entries = Entries::with_options(
            options,
            WeighEntries,
            quick_cache::DefaultHashBuilder::default(),
            CountEvictions(counters.evictions.clone()),
        );
        Self {
            entries,
            epoch: AtomicU64::new(0),
            changes: RwLock::new(()),
            max_bytes,
            counters,
            trusted_until: AtomicU64::new(ALWAYS),
            clock_base: std::time::Instant::now(),
            foreign_secrets: AtomicBool::new(false),
            known,
            groups: KeyGroups::default(),
        }
    }

    /// Whether the cache may answer now.
    pub fn is_trusted(&self) -> bool {
        let until = self.trusted_until.load(Ordering::SeqCst);
        until == ALWAYS || self.millis_since_base(std::time::Instant::now()) < until
    }

    fn millis_since_base(&self, at: std::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.clock_base).as_millis())
            .unwrap_or(ALWAYS - 1)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the entries weigh, by their approximate bytes, and the bound.
    pub fn weighted_bytes(&self) -> (u64, u64) {
        (self.entries.weight(), self.max_bytes)
    }

    pub(crate) fn foreign_secrets_present(&self) -> bool {
        self.foreign_secrets.load(Ordering::Relaxed)
    }

    /// Drops the given secrets.
    pub fn invalidate(&self, hashes: &[KeyHash]) {
        let _change = self.changes.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for hash in hashes {
            self.entries.remove(hash);
        }
    }

    /// Drops everything, for changes that touch many credentials at once.
    pub fn invalidate_all(&self) {
        let _change = self.changes.write().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    /// What the cache says about `hash` without storage, for the hot path.
    pub fn peek_with<T: Cached, R>(
        &self,
        hash: &KeyHash,
        judge: impl FnOnce(&Arc<T>) -> R,
    ) -> Peek<R> {
        if !self.is_trusted() {
            return Peek::Miss;
        }
        match self.look_up(hash, judge) {
            Lookup::Found(judged) => Peek::Hit(judged),
            Lookup::Absent => Peek::Absent,
            Lookup::Unknown => Peek::Miss,
        }
    }

    /// What memory says of `hash` as a `T`, on a trusted cache: the cache, then the filter of
    /// known credentials. `read` sees a cached credential in place.
    fn look_up<T: Cached, R>(&self, hash: &KeyHash, read: impl FnOnce(&Arc<T>) -> R) -> Lookup<R> {
        match self.entries.get(hash) {
            // Known to be absent as another kind only: storage must say about this one.
            Some(Entry::Absent(kind)) if kind != T::KIND => {}
            Some(entry) => {
                self.counters.hits.inc();
                return match T::of_entry(&entry) {
                    Some(cached) => Lookup::Found(read(cached)),
                    None => Lookup::Absent,
                };
            }
            None if self.known.surely_absent(hash) => return Lookup::Absent,
            None => {}
        }
        self.counters.misses.inc();
        Lookup::Unknown
    }

    /// The cached credential of `hash`, or else the one `load` reads from storage, cached
    /// unless an invalidation raced the load (see the module documentation). `None`: no
    /// such credential, or one of another kind.
    pub async fn get_or_load<T, E, Load>(
        &self,
        hash: KeyHash,
        load: impl FnOnce() -> Load,
    ) -> Result<Option<Arc<T>>, E>
    where
        T: Cached,
        Load: Future<Output = Result<Option<T>, E>>,
    {
        if self.is_trusted() {
            match self.look_up(&hash, Arc::clone) {
                Lookup::Found(cached) => return Ok(Some(cached)),
                Lookup::Absent => return Ok(None),
                Lookup::Unknown => {}
            }
        }
        let epoch_before_load = self.epoch.load(Ordering::SeqCst);
        self.counters.storage_reads.inc();
        let loaded = load().await?.map(Arc::new);
        if self.is_trusted() {
            let entry = match &loaded {
                Some(loaded) => Arc::clone(loaded).into_entry(),
                None => Entry::Absent(T::KIND),
            };
            let _insert = self.changes.read().unwrap_or_else(PoisonError::into_inner);
            // An invalidation that bumped the epoch has removed the hash already, or waits
            // to, after this.
            // An absence does not displace another kind's credential (a loader racing this
            // one may still put one in after the look: that costs a read, never a stale
            // answer).
            let displaces_a_credential = loaded.is_none()
                && self
                    .entries
                    .peek(&hash)
                    .is_some_and(|held| !matches!(held, Entry::Absent(_)));
            if self.epoch.load(Ordering::SeqCst) == epoch_before_load && !displaces_a_credential {
                self.entries.insert(hash, entry);
            }
        }
        Ok(loaded)
    }
}

/// What memory says of a hash: what was read of the credential found, or none.
enum Lookup<R> {
    Found(R),
    Absent,
    Unknown,
}

impl ClusterCache for VerificationCache {
    fn forget(&self, stale: &Stale) {
        match stale {
            Stale::Secrets(hashes) => {
                // New credentials are announced like changed ones: both are known from now.
                self.known.learn(hashes);
                self.invalidate(hashes);
            }
            // Announced by changes that create no credential.
            Stale::Everything => self.invalidate_all(),
        }
    }

    fn lost_track(&self) {
        self.known.lost_track();
        self.invalidate_all();
    }

    fn trust_until(&self, deadline: std::time::Instant) {
        // Rounded down, so the lease never lasts longer than granted.
        let until = self.millis_since_base(deadline).min(ALWAYS - 1);
        self.trusted_until.store(until, Ordering::SeqCst);
    }

    fn distrust(&self) {
        self.trusted_until.store(0, Ordering::SeqCst);
    }

    fn foreign_secrets(&self, present: bool) {
        self.foreign_secrets.store(present, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use keyward_core::model::{Environment, Tenancy};
    use keyward_core::scope::ScopeSet;
    use tokio::sync::oneshot;

    use super::*;

    fn root_key(revoked: bool) -> CachedRootKey {
        CachedRootKey {
            key: RootKey {
                id: "rk_1".to_owned(),
                tenancy: Tenancy {
                    workspace_id: "ws_1".to_owned(),
                    environment: Environment::Live,
                },
                name: "root".to_owned(),
                scopes: ScopeSet::all(),
                start: "sk_live_abcd".to_owned(),
                created_at: Timestamp::from_millis(0),
                revoked_at: revoked.then(|| Timestamp::from_millis(1)),
                rate_limit_scheme: None,
                limit_meter: None,
                expires_at: None,
            },
            secret_expires_at: None,
            windows: Vec::new(),
            meter: "calls:rk_1".to_owned(),
        }
    }

    /// A load that reads the state before a revoke, then stalls until the test lets it
    /// finish: the shape of a verification racing a revocation.
    async fn racing_load<F: FnOnce(&VerificationCache)>(revoke: F) -> Option<bool> {
        let cache = Arc::new(VerificationCache::default());
        let hash = KeyHash::of("sk_live_secret");
        let (loading, loaded) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let load = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move {
                cache
                    .get_or_load(hash, || async move {
                        let stale = root_key(false);
                        let _ = loading.send(());
                        let _ = released.await;
                        Ok::<_, ()>(Some(stale))
                    })
                    .await
            }
        });
        loaded.await.unwrap();
        revoke(&cache);
        release.send(()).unwrap();
        let answered = load.await.unwrap().unwrap().expect("the load's own answer");
        assert!(
            answered.key.revoked_at.is_none(),
            "the load answers what it read"
        );
        // What the cache holds now decides every later verification.
        match cache.peek_with::<CachedRootKey, _>(&hash, |cached| cached.key.revoked_at.is_some()) {
            Peek::Hit(revoked) => Some(revoked),
            Peek::Absent => panic!("another kind"),
            Peek::Miss => None,
        }
    }

    #[tokio::test]
    async fn a_revoke_that_races_a_load_is_never_undone() {
        let hash = KeyHash::of("sk_live_secret");
        assert_eq!(
            racing_load(|cache| cache.invalidate(&[hash])).await,
            None,
            "the stale load was not cached"
        );
        assert_eq!(racing_load(VerificationCache::invalidate_all).await, None);
        // An unrelated invalidation also keeps the load out: it cannot tell, and a miss
        // costs only a read.
        assert_eq!(
            racing_load(|cache| cache.invalidate(&[KeyHash::of("other")])).await,
            None
        );
    }

    #[tokio::test]
    async fn a_load_without_a_race_is_cached_and_kinds_stay_apart() {
        let cache = VerificationCache::default();
        let hash = KeyHash::of("sk_live_secret");
        let loaded = cache
            .get_or_load(hash, || async { Ok::<_, ()>(Some(root_key(true))) })
            .await
            .unwrap();
        assert!(loaded.is_some());
        assert!(matches!(
            cache.peek_with::<CachedRootKey, _>(&hash, |_| ()),
            Peek::Hit(())
        ));
        // The same hash asked as another kind is a credential that does not exist, and
        // storage is not asked.
        let as_api_key = cache
            .get_or_load::<CachedKey, (), _>(hash, || async { panic!("storage was asked") })
            .await
            .unwrap();
        assert!(as_api_key.is_none());
        assert!(matches!(
            cache.peek_with::<CachedKey, _>(&hash, |_| ()),
            Peek::Absent
        ));
    }

    #[tokio::test]
    async fn an_absence_is_remembered_for_its_kind_until_the_hash_is_announced() {
        let cache = VerificationCache::default();
        let hash = KeyHash::of("sk_live_not_yet");
        let none = cache
            .get_or_load::<CachedRootKey, (), _>(hash, || async { Ok(None) })
            .await
            .unwrap();
        assert!(none.is_none());
        // Asked again: memory answers.
        let again = cache
            .get_or_load::<CachedRootKey, (), _>(hash, || async { panic!("storage was asked") })
            .await
            .unwrap();
        assert!(again.is_none());
        // Another kind is not known to be absent: storage is asked, and an absence never
        // displaces a credential.
        let mut asked = false;
        cache
            .get_or_load::<CachedKey, (), _>(hash, || {
                asked = true;
                async { Ok(None) }
            })
            .await
            .unwrap();
        assert!(asked);
        // The credential's creation announces its hash: it is found at once.
        cache.forget(&Stale::Secrets(vec![hash]));
        let found = cache
            .get_or_load(hash, || async { Ok::<_, ()>(Some(root_key(false))) })
            .await
            .unwrap();
        assert!(found.is_some());
    }

    #[tokio::test]
    async fn an_untrusted_cache_neither_answers_nor_keeps() {
        let cache = VerificationCache::default();
        cache.distrust();
        let hash = KeyHash::of("sk_live_secret");
        cache
            .get_or_load(hash, || async { Ok::<_, ()>(Some(root_key(false))) })
            .await
            .unwrap();
        assert_eq!(cache.len(), 0);
        assert!(matches!(
            cache.peek_with::<CachedRootKey, _>(&hash, |_| ()),
            Peek::Miss
        ));
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bound_and_an_evicted_credential_is_read_again() {
        let counters = CacheCounters::default();
        let cache = VerificationCache::new(
            64 * 1024,
            counters.clone(),
            KnownCredentials::new(super::super::known::FilterCounters::default()),
        );
        let weight = Entry::Root(Arc::new(root_key(false))).approximate_bytes() as u64;
        let hashes: Vec<KeyHash> = (0..2_000).map(|n| KeyHash::of(&format!("k{n}"))).collect();
        for hash in &hashes {
            cache
                .get_or_load(*hash, || async { Ok::<_, ()>(Some(root_key(false))) })
                .await
                .unwrap();
        }
        let (weighted, bound) = cache.weighted_bytes();
        assert!(
            weighted <= bound,
            "{weighted} bytes held against a bound of {bound}"
        );
        assert!(cache.len() as u64 <= bound / weight + 1);
        assert!(counters.evictions.get() > 0);
        // Whatever was dropped is read again, in its current state: a credential revoked
        // meanwhile is never answered from a stale copy, cached or not.
        for hash in &hashes {
            cache.invalidate(&[*hash]);
            let reloaded = cache
                .get_or_load(*hash, || async { Ok::<_, ()>(Some(root_key(true))) })
                .await
                .unwrap()
                .expect("the credential");
            assert!(reloaded.key.revoked_at.is_some());
        }
    }

    #[test]
    fn a_single_node_always_trusts_its_cache() {
        assert!(VerificationCache::default().is_trusted());
    }

    #[test]
    fn trust_lasts_until_the_lease_ends_or_is_withdrawn() {
        let cache = VerificationCache::default();
        cache.distrust();
        assert!(!cache.is_trusted());
        cache.trust_until(Instant::now() + Duration::from_secs(60));
        assert!(cache.is_trusted());
        cache.distrust();
        assert!(!cache.is_trusted());
        // A lease that has already ended grants nothing.
        cache.trust_until(Instant::now() - Duration::from_millis(1));
        assert!(!cache.is_trusted());
        cache.trust_until(Instant::now() + Duration::from_millis(30));
        assert!(cache.is_trusted());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cache.is_trusted(), "the lease ran out by itself");
    }
}
