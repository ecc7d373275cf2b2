//! The verification hot path: parse, hash, look up in the in-memory cache, decide.
//!
//! The cache maps a secret's SHA-256 to what verification needs about its credential. A miss
//! loads from storage. Every mutation drops the affected hashes *before* its HTTP call returns,
//! so a revoked, rotated, disabled or deleted key is refused by this node the moment the call
//! returns.
//!
//! A miss that races a mutation must not put the pre-mutation state back into the cache. Each
//! invalidation bumps `epoch`; a loader notes the epoch before reading storage and inserts only
//! if no invalidation happened meanwhile, checked under the map's shard lock so that the check
//! and the insert are one step with respect to `invalidate`.
//!
//! On a shared database the cache answers only while this node's lease from the cluster
//! protocol holds ([`keyward_store::cluster`]); otherwise every verification reads storage.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use keyward_core::model::{
    ApiKey, JwtKeySource, PublicKey, PublicKeyKind, RootKey, Tenancy, UsagePolicy, WorkspaceKey,
};
use keyward_core::permission::PermissionQuery;
use keyward_core::secret::KeyFormatError;
use keyward_core::usage::RateWindow;
use keyward_core::verify::{decide, KeyFacts, VerifyCode};
use keyward_core::{KeyHash, ParsedKey, Timestamp};
use keyward_store::cluster::ClusterCache;
use keyward_store::{Stale, Store, StoreError};
use secrecy::SecretString;

/// What the cache holds for an API key's secret.
#[derive(Debug)]
pub struct CachedKey {
    pub key: ApiKey,
    /// What limits its verifications, resolved when it was loaded.
    pub policy: UsagePolicy,
    pub meters: crate::usage::KeyMeters,
    /// End of the grace period if this secret was superseded by a rotation.
    pub secret_expires_at: Option<Timestamp>,
    /// When this node last queued a `last_used_at` write for the key, to write at most one
    /// per interval however hot the key is.
    pub(crate) last_used_queued_at: AtomicI64,
}

#[derive(Debug)]
pub struct CachedRootKey {
    pub key: RootKey,
    pub secret_expires_at: Option<Timestamp>,
    /// Its scheme's windows, limiting its calls to Keyward's API.
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
    pub verification_keys: Vec<crate::tokens::VerificationKey>,
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

#[derive(Debug, Clone)]
enum Cached {
    Key(Arc<CachedKey>),
    Root(Arc<CachedRootKey>),
    Public(Arc<CachedPublicKey>),
    Workspace(Arc<CachedWorkspaceKey>),
}

impl ClusterCache for Verifier {
    fn forget(&self, stale: &Stale) {
        match stale {
            Stale::Secrets(hashes) => self.invalidate(hashes),
            Stale::Everything => self.invalidate_all(),
        }
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

/// The outcome of verifying an API key.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub code: VerifyCode,
    /// The key, when one was found in the caller's environment.
    pub key: Option<Arc<CachedKey>>,
}

impl Verdict {
    fn invalid() -> Self {
        Self {
            code: VerifyCode::InvalidKey,
            key: None,
        }
    }
}

/// What the in-memory path could tell.
#[derive(Debug)]
pub enum InMemory {
    Decided(Verdict),
    /// Well formed but not cached: storage must be asked about this hash.
    Miss(KeyHash),
}

/// How a root key failed to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKeyRefusal {
    /// Missing, malformed, unknown or past its grace period: 401.
    Invalid,
    /// Known but revoked: 403 `key_revoked`.
    Revoked,
    /// Past its end (a demo sandbox's key): 403 `key_expired`.
    Expired,
}

#[derive(Debug)]
pub struct Verifier {
    cache: DashMap<KeyHash, Cached>,
    epoch: AtomicU64,
    /// Until when the cache may answer, in milliseconds after `clock_base`; `ALWAYS` on a
    /// single node. A node that may have missed another node's change must not trust its
    /// cache, and verifies from storage instead (fail safe, never open).
    trusted_until: AtomicU64,
    clock_base: std::time::Instant,
    /// Whether imported secrets in other formats exist. Until they do, a string that is not
    /// a well-formed Keyward secret is refused without a look-up.
    foreign_secrets: AtomicBool,
}

const ALWAYS: u64 = u64::MAX;

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    pub fn new() -> Self {
        Self {
            cache: DashMap::new(),
            epoch: AtomicU64::new(0),
            trusted_until: AtomicU64::new(ALWAYS),
            clock_base: std::time::Instant::now(),
            foreign_secrets: AtomicBool::new(false),
        }
    }

    /// Whether the cache may answer now.
    pub fn cache_trusted(&self) -> bool {
        let until = self.trusted_until.load(Ordering::SeqCst);
        until == ALWAYS || self.millis_since_base(std::time::Instant::now()) < until
    }

    fn millis_since_base(&self, at: std::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.clock_base).as_millis())
            .unwrap_or(ALWAYS - 1)
    }

    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }

    /// Drops the given secrets from the cache.
    pub fn invalidate(&self, hashes: &[KeyHash]) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for hash in hashes {
            self.cache.remove(hash);
        }
    }

    /// Drops everything, for changes that touch many keys at once (an app's deletion).
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cache.clear();
    }

    /// Everything [`Verifier::verify_key`] can decide without storage: the format, the
    /// checksum, the environment, and the cache. This is the hot path.
    pub fn verify_in_memory(
        &self,
        tenancy: &Tenancy,
        presented: &str,
        required: Option<&PermissionQuery>,
        now: Timestamp,
    ) -> InMemory {
        let hash = match ParsedKey::parse(presented) {
            // Root keys are never verified as API keys, and a key names its environment:
            // neither needs a look-up to refuse.
            Ok(parsed) if parsed.is_root_key() || parsed.environment() != tenancy.environment => {
                return InMemory::Decided(Verdict::invalid());
            }
            Ok(parsed) => parsed.hash(),
            // Keyward's own shape with a wrong checksum is a typo, whatever was imported.
            Err(KeyFormatError::BadChecksum) => return InMemory::Decided(Verdict::invalid()),
            Err(_)
                if self.foreign_secrets.load(Ordering::Relaxed) && plausible_secret(presented) =>
            {
                KeyHash::of(presented)
            }
            Err(_) => return InMemory::Decided(Verdict::invalid()),
        };
        if !self.cache_trusted() {
            return InMemory::Miss(hash);
        }
        match self.cache.get(&hash).as_deref() {
            Some(Cached::Key(entry)) => InMemory::Decided(judge(tenancy, entry, required, now)),
            Some(_) => InMemory::Decided(Verdict::invalid()),
            None => InMemory::Miss(hash),
        }
    }

    /// Verifies an API key presented in `tenancy`'s environment.
    pub async fn verify_key(
        &self,
        store: &dyn Store,
        tenancy: &Tenancy,
        presented: &str,
        required: Option<&PermissionQuery>,
        now: Timestamp,
    ) -> Result<Verdict, StoreError> {
        let hash = match self.verify_in_memory(tenancy, presented, required, now) {
            InMemory::Decided(verdict) => return Ok(verdict),
            InMemory::Miss(hash) => hash,
        };
        let epoch = self.epoch.load(Ordering::SeqCst);
        let Some(found) = store.find_key(hash).await? else {
            return Ok(Verdict::invalid());
        };
        let entry = Arc::new(CachedKey {
            meters: crate::usage::KeyMeters::new(
                &found.key.id,
                &found.key.tenancy,
                found.key.organization_id.as_deref(),
            ),
            policy: found.policy,
            key: found.key,
            secret_expires_at: found.secret.expires_at,
            last_used_queued_at: AtomicI64::new(i64::MIN),
        });
        self.insert_unless_invalidated(hash, Cached::Key(Arc::clone(&entry)), epoch);
        Ok(judge(tenancy, &entry, required, now))
    }

    /// Authenticates a root key for a call to Keyward's own API.
    pub async fn authenticate_root(
        &self,
        store: &dyn Store,
        presented: &str,
        now: Timestamp,
    ) -> Result<Result<Arc<CachedRootKey>, RootKeyRefusal>, StoreError> {
        let Ok(parsed) = ParsedKey::parse(presented) else {
            return Ok(Err(RootKeyRefusal::Invalid));
        };
        if !parsed.is_root_key() {
            return Ok(Err(RootKeyRefusal::Invalid));
        }
        let hash = parsed.hash();
        let cached = if self.cache_trusted() {
            self.cache.get(&hash).map(|entry| entry.value().clone())
        } else {
            None
        };
        let entry = match cached {
            Some(Cached::Root(entry)) => entry,
            Some(_) => return Ok(Err(RootKeyRefusal::Invalid)),
            None => {
                let epoch = self.epoch.load(Ordering::SeqCst);
                let Some(found) = store.find_root_key(hash).await? else {
                    return Ok(Err(RootKeyRefusal::Invalid));
                };
                let entry = Arc::new(CachedRootKey {
                    meter: format!("calls:{}", found.key.call_limit().meter),
                    key: found.key,
                    secret_expires_at: found.secret.expires_at,
                    windows: found.windows,
                });
                self.insert_unless_invalidated(hash, Cached::Root(Arc::clone(&entry)), epoch);
                entry
            }
        };
        if entry.key.tenancy.environment != parsed.environment()
            || entry.secret_expires_at.is_some_and(|end| end <= now)
        {
            return Ok(Err(RootKeyRefusal::Invalid));
        }
        if entry.key.revoked_at.is_some() {
            return Ok(Err(RootKeyRefusal::Revoked));
        }
        if entry.key.expires_at.is_some_and(|end| end <= now) {
            return Ok(Err(RootKeyRefusal::Expired));
        }
        Ok(Ok(entry))
    }

    /// Finds a public key by its value (`pk_jwt_…`, `pk_live_…`). `None` for a value that is
    /// malformed, unknown, or past its rotation grace period.
    pub async fn find_public_key(
        &self,
        store: &dyn Store,
        presented: &str,
        now: Timestamp,
    ) -> Result<Option<Arc<CachedPublicKey>>, StoreError> {
        let well_formed = keyward_core::credential::is_jwt_public_key(presented)
            || ParsedKey::parse(presented).is_ok_and(|parsed| {
                parsed.prefix() == keyward_core::credential::CLIENT_PUBLIC_KEY_PREFIX
            });
        if !well_formed {
            return Ok(None);
        }
        let hash = KeyHash::of(presented);
        let entry = match self.cached(&hash) {
            Some(Cached::Public(entry)) => entry,
            Some(_) => return Ok(None),
            None => {
                let epoch = self.epoch.load(Ordering::SeqCst);
                let Some(found) = store.find_public_key(hash).await? else {
                    return Ok(None);
                };
                let verification_keys = match &found.key.kind {
                    PublicKeyKind::Jwt(jwt) => match &jwt.source {
                        JwtKeySource::Inline(text) => {
                            crate::tokens::parse_inline_keys(text).unwrap_or_default()
                        }
                        JwtKeySource::JwksUrl(_) => Vec::new(),
                    },
                    PublicKeyKind::Client => found
                        .signing_keys
                        .iter()
                        .filter_map(|signing_key| {
                            jsonwebtoken::DecodingKey::from_ec_pem(
                                signing_key.public_key_pem.as_bytes(),
                            )
                            .ok()
                            .map(|key| {
                                crate::tokens::VerificationKey {
                                    key_id: Some(signing_key.id.clone()),
                                    algorithm: Some(jsonwebtoken::Algorithm::ES256),
                                    key,
                                }
                            })
                        })
                        .collect(),
                };
                let entry = Arc::new(CachedPublicKey {
                    key: found.key,
                    secret_expires_at: found.secret.expires_at,
                    enhanced_security: found.enhanced_security,
                    verification_keys,
                    windows: found.windows,
                });
                self.insert_unless_invalidated(hash, Cached::Public(Arc::clone(&entry)), epoch);
                entry
            }
        };
        if entry.secret_expires_at.is_some_and(|end| end <= now) {
            return Ok(None);
        }
        Ok(Some(entry))
    }

    /// Finds a workspace key by id and opens its secrets with the master key.
    pub async fn find_workspace_key(
        &self,
        store: &dyn Store,
        master_key: &crate::crypto::MasterKey,
        id: &str,
    ) -> Result<Option<Arc<CachedWorkspaceKey>>, StoreError> {
        let hash = keyward_store::workspace_key_cache_hash(id);
        if let Some(cached) = self.cached(&hash) {
            return Ok(match cached {
                Cached::Workspace(entry) => Some(entry),
                _ => None,
            });
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let Some(found) = store.find_workspace_key(id).await? else {
            return Ok(None);
        };
        let mut secrets = Vec::with_capacity(found.secrets.len());
        for sealed in &found.secrets {
            let Some(plain) = master_key
                .open(&sealed.ciphertext, &found.key.id)
                .and_then(|bytes| String::from_utf8(bytes).ok())
            else {
                tracing::error!(
                    workspace_key = %found.key.id,
                    "a workspace secret does not open with this node's master key; \
                     every node needs the same KEYWARD_MASTER_KEY"
                );
                return Ok(None);
            };
            secrets.push((SecretString::from(plain), sealed.expires_at));
        }
        let entry = Arc::new(CachedWorkspaceKey {
            meter: format!("calls:{}", found.key.call_limit().meter),
            key: found.key,
            secrets,
            windows: found.windows,
        });
        self.insert_unless_invalidated(hash, Cached::Workspace(Arc::clone(&entry)), epoch);
        Ok(Some(entry))
    }

    fn cached(&self, hash: &KeyHash) -> Option<Cached> {
        if !self.cache_trusted() {
            return None;
        }
        self.cache.get(hash).map(|entry| entry.value().clone())
    }

    fn insert_unless_invalidated(&self, hash: KeyHash, value: Cached, epoch_before_load: u64) {
        if !self.cache_trusted() {
            return;
        }
        let slot = self.cache.entry(hash);
        if self.epoch.load(Ordering::SeqCst) == epoch_before_load {
            slot.insert(value);
        }
    }
}

/// Whether a string that is not a Keyward secret could be an imported one: printable ASCII
/// without spaces, of a length secrets have.
fn plausible_secret(presented: &str) -> bool {
    (8..=256).contains(&presented.len()) && presented.bytes().all(|byte| byte.is_ascii_graphic())
}

fn judge(
    tenancy: &Tenancy,
    entry: &Arc<CachedKey>,
    required: Option<&PermissionQuery>,
    now: Timestamp,
) -> Verdict {
    // Another workspace's key is as unknown as a key never issued.
    if entry.key.tenancy != *tenancy {
        return Verdict::invalid();
    }
    let facts = KeyFacts {
        secret_expires_at: entry.secret_expires_at,
        revoked: entry.key.revoked_at.is_some(),
        enabled: entry.key.enabled,
        expires_at: entry.key.expires_at,
        permissions: &entry.key.permissions,
    };
    let code = decide(&facts, required, now);
    Verdict {
        code,
        key: (code != VerifyCode::InvalidKey).then(|| Arc::clone(entry)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_single_node_always_trusts_its_cache() {
        assert!(Verifier::new().cache_trusted());
    }

    #[test]
    fn trust_lasts_until_the_lease_ends_or_is_withdrawn() {
        let verifier = Verifier::new();
        verifier.distrust();
        assert!(!verifier.cache_trusted());
        verifier.trust_until(Instant::now() + Duration::from_secs(60));
        assert!(verifier.cache_trusted());
        verifier.distrust();
        assert!(!verifier.cache_trusted());
        // A lease that has already ended grants nothing.
        verifier.trust_until(Instant::now() - Duration::from_millis(1));
        assert!(!verifier.cache_trusted());
        verifier.trust_until(Instant::now() + Duration::from_millis(30));
        assert!(verifier.cache_trusted());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!verifier.cache_trusted(), "the lease ran out by itself");
    }

    #[test]
    fn foreign_strings_are_refused_unread_until_foreign_secrets_exist() {
        let verifier = Verifier::new();
        let tenancy = Tenancy {
            workspace_id: "ws_1".to_owned(),
            environment: keyward_core::Environment::Live,
        };
        let now = Timestamp::from_millis(0);
        let foreign = "legacy_0123456789abcdef";
        assert!(matches!(
            verifier.verify_in_memory(&tenancy, foreign, None, now),
            InMemory::Decided(_)
        ));
        verifier.foreign_secrets(true);
        assert!(matches!(
            verifier.verify_in_memory(&tenancy, foreign, None, now),
            InMemory::Miss(hash) if hash == KeyHash::of(foreign)
        ));
        // Keyward's shape with a bad checksum, too short, or not printable: still refused
        // unread.
        let mut typo = keyward_core::secret::IssuedSecret::generate(
            "acme",
            keyward_core::Environment::Live,
            &mut rand::rngs::OsRng,
        )
        .unwrap()
        .expose()
        .to_owned();
        let last = typo.pop().unwrap();
        typo.push(if last == 'x' { 'y' } else { 'x' });
        assert!(matches!(
            verifier.verify_in_memory(&tenancy, &typo, None, now),
            InMemory::Decided(_)
        ));
        assert!(matches!(
            verifier.verify_in_memory(&tenancy, "short", None, now),
            InMemory::Decided(_)
        ));
        assert!(matches!(
            verifier.verify_in_memory(&tenancy, "has a space in it", None, now),
            InMemory::Decided(_)
        ));
    }
}
