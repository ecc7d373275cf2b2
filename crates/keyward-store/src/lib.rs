//! Keyward's storage: the [`Store`] trait, and its SQL implementation ([`SqlStore`]).
//!
//! Architecture invariant: storage knows records and transactions, not HTTP, caches or
//! secrets. It sees only SHA-256 hashes. Every mutation writes its audit entry in the same
//! transaction as the change, so an acknowledged change always has its audit trail.

pub mod cluster;
mod error;
mod sql;
pub mod testing;

use async_trait::async_trait;
use keyward_core::event::{Event, EventType, NewEvent};
use keyward_core::model::{
    ApiKey, App, AuditEntry, EnvironmentSettings, KeyStatus, Organization, PublicKey,
    RateLimitScheme, RootKey, SealedSecret, SecretRecord, SigningKey, Tenancy, UsagePolicy,
    WorkspaceKey,
};
use keyward_core::scope::ScopeSet;
use keyward_core::usage::{CapUsage, Credits, Period, RateWindow};
use keyward_core::{KeyHash, Timestamp};

pub use cluster::{Propagation, Stale};
pub use error::{Conflict, Forbidden, Reference, StoreError};
pub use sql::events::{expiry_dedup_key, EventAnnouncements, EVENTS_CHANNEL};
pub use sql::{SqlStore, StoreOptions};

pub type StoreResult<T> = Result<T, StoreError>;

/// Who makes a change, and when: what the audit entry records.
#[derive(Debug, Clone)]
pub struct Change {
    pub tenancy: Tenancy,
    /// The id of the credential that asked for the change, e.g. `rk_…`.
    pub actor: String,
    /// What that credential holds. A change to a credential that confers more is refused
    /// (`NotPermitted(Forbidden::InsufficientScope)`), checked under the credential's row lock.
    pub actor_scopes: ScopeSet,
    pub request_id: Option<String>,
    pub audit_id: String,
    pub now: Timestamp,
}

impl Change {
    /// Refuses a change to a credential that confers more than the change's actor holds.
    pub fn require_power_over(&self, conferred: ScopeSet) -> StoreResult<()> {
        if self.actor_scopes.covers(conferred) {
            Ok(())
        } else {
            Err(StoreError::NotPermitted(Forbidden::InsufficientScope))
        }
    }
}

/// A page request: up to `limit` records older than the record named by `cursor`.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub owner_user_id: Option<String>,
    pub organization_id: Option<String>,
    pub status: Option<KeyStatus>,
    /// Matches a key whose name contains it (ignoring ASCII case), whose `start` begins
    /// with it, or whose id it is.
    pub search: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub target: Option<String>,
}

/// Changes to an environment's settings; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct EnvironmentPatch {
    pub enhanced_security: Option<bool>,
    pub leaked_key_action: Option<keyward_core::leak::LeakedKeyAction>,
}

/// Changes to an app; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct AppPatch {
    pub name: Option<String>,
    pub permissions: Option<Vec<String>>,
    pub rate_limit_scheme: Option<Option<String>>,
}

/// Changes to a key; `None` keeps a field, `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub owner_user_id: Option<Option<String>>,
    pub permissions: Option<Vec<String>>,
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    pub expires_at: Option<Option<Timestamp>>,
    pub enabled: Option<bool>,
    /// The balance the usage engine settled on, when the call changed credits.
    pub credits: Option<Option<Credits>>,
    pub rate_limit_scheme: Option<Option<String>>,
    pub low_credits_threshold: Option<Option<i64>>,
}

impl KeyPatch {
    pub fn apply(&self, key: &mut ApiKey) {
        if let Some(name) = &self.name {
            key.name.clone_from(name);
        }
        if let Some(owner) = &self.owner_user_id {
            key.owner_user_id.clone_from(owner);
        }
        if let Some(permissions) = &self.permissions {
            key.permissions.clone_from(permissions);
        }
        if let Some(meta) = &self.meta {
            key.meta.clone_from(meta);
        }
        if let Some(expires_at) = self.expires_at {
            key.expires_at = expires_at;
        }
        if let Some(enabled) = self.enabled {
            key.enabled = enabled;
        }
        if let Some(credits) = self.credits {
            key.credits = credits;
        }
        if let Some(scheme) = &self.rate_limit_scheme {
            key.rate_limit_scheme.clone_from(scheme);
        }
        if let Some(threshold) = self.low_credits_threshold {
            key.low_credits_threshold = threshold;
        }
    }
}

/// What a first start creates.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub workspace_id: String,
    pub workspace_name: String,
    pub environments: Vec<EnvironmentSettings>,
    pub root_keys: Vec<(RootKey, KeyHash)>,
    pub now: Timestamp,
}

/// A key found by the hash of one of its secrets.
#[derive(Debug, Clone)]
pub struct FoundKey {
    pub key: ApiKey,
    pub secret: SecretRecord,
    /// The limits its verifications are charged against.
    pub policy: UsagePolicy,
}

#[derive(Debug, Clone)]
pub struct FoundRootKey {
    pub key: RootKey,
    pub secret: SecretRecord,
    /// Its scheme's windows; empty when it has none.
    pub windows: Vec<RateWindow>,
}

/// A change to credentials, with what verification caches must forget because of it.
#[derive(Debug, Clone)]
pub struct Changed<T> {
    pub record: T,
    /// Every secret the change touched (the credential's secrets before and after it).
    pub stale: Stale,
    /// On a shared database: the other nodes that must hear of the change before it is
    /// acknowledged (see [`cluster`]). `None` when this node is the only one.
    pub propagation: Option<Propagation>,
}

impl<T> Changed<T> {
    /// A change that turned out to change nothing: nothing to forget, no one to wait for.
    pub fn nothing(record: T) -> Self {
        Self {
            record,
            stale: Stale::Secrets(Vec::new()),
            propagation: None,
        }
    }
}

/// Where a scan of every credential's look-up hash goes on from: the secrets table by hash,
/// then the workspace keys by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupScan {
    SecretsAfter(Vec<u8>),
    WorkspaceKeysAfter(String),
}

impl Default for LookupScan {
    fn default() -> Self {
        Self::SecretsAfter(Vec::new())
    }
}

/// A key another system issued, brought in by `keyward import`.
#[derive(Debug, Clone)]
pub struct KeyImport {
    pub key: ApiKey,
    pub hash: KeyHash,
    /// The secret is not in Keyward's format (or only its hash is known).
    pub foreign_format: bool,
}

/// An organisation's configuration, as `PUT` gives it whole.
#[derive(Debug, Clone)]
pub struct OrganizationSettings {
    pub id: String,
    pub rate_limit_scheme: Option<String>,
    pub credit_cap: Option<i64>,
    pub credit_period: Option<Period>,
    pub low_credits_threshold: Option<i64>,
}

/// Balances a usage engine writes back to storage, to start again from after a restart.
#[derive(Debug, Clone, Default)]
pub struct UsageWriteBack {
    /// Key id and balance. A key whose credits were removed meanwhile is left alone.
    pub credits: Vec<(String, Credits)>,
    /// Organisation and what its keys have spent. The cap itself is not written.
    pub caps: Vec<(Tenancy, String, CapUsage)>,
}

/// Rate-limit schemes, organisations and the usage engine's write-back.
#[async_trait]
pub trait UsageStore: Send + Sync {
    async fn create_rate_limit_scheme(
        &self,
        change: &Change,
        scheme: &RateLimitScheme,
    ) -> StoreResult<()>;
    async fn rate_limit_scheme(
        &self,
        tenancy: &Tenancy,
        slug: &str,
    ) -> StoreResult<RateLimitScheme>;
    /// In slug order; the cursor is the last slug of the previous page.
    async fn list_rate_limit_schemes(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<RateLimitScheme>>;
    /// Changes every cached key that uses the scheme, so caches forget everything.
    async fn update_rate_limit_scheme(
        &self,
        change: &Change,
        slug: &str,
        windows: &[RateWindow],
    ) -> StoreResult<Changed<RateLimitScheme>>;
    /// Refused with `Conflict(Conflict::RateLimitSchemeInUse)` while anything refers to it.
    async fn delete_rate_limit_scheme(
        &self,
        change: &Change,
        slug: &str,
    ) -> StoreResult<Changed<RateLimitScheme>>;

    /// Creates or replaces an organisation's configuration; what it has spent is kept.
    async fn put_organization(
        &self,
        change: &Change,
        settings: &OrganizationSettings,
    ) -> StoreResult<Changed<Organization>>;
    async fn organization(&self, tenancy: &Tenancy, id: &str) -> StoreResult<Organization>;
    async fn delete_organization(
        &self,
        change: &Change,
        id: &str,
    ) -> StoreResult<Changed<Organization>>;

    /// Writes balances back, in one transaction, locking rows in a fixed order.
    async fn write_back_usage(&self, usage: &UsageWriteBack) -> StoreResult<()>;
}

/// A demo sandbox to create: a workspace of its own with a `demo` environment and a root key.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    pub workspace_id: String,
    pub root_key: RootKey,
    pub hash: KeyHash,
    pub expires_at: Timestamp,
    pub now: Timestamp,
}

/// Demo sandboxes (SPEC §4.3).
#[async_trait]
pub trait SandboxStore: Send + Sync {
    async fn create_sandbox(&self, sandbox: &NewSandbox) -> StoreResult<Changed<()>>;
    /// Deletes every row of the sandbox's workspace. `NotFound("demo session")` when it is
    /// not a sandbox (or is already gone).
    async fn purge_sandbox(&self, workspace_id: &str, now: Timestamp) -> StoreResult<Changed<()>>;
    /// Sandboxes that ended at or before `now`, oldest first.
    async fn expired_sandboxes(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<String>>;
}

/// A public key found by the hash of one of its values, with everything verifying a request
/// with it needs.
#[derive(Debug, Clone)]
pub struct FoundPublicKey {
    pub key: PublicKey,
    pub secret: SecretRecord,
    /// Whether its environment requires signed user tokens with client public keys.
    pub enhanced_security: bool,
    /// Its environment's signing keys, which sign user tokens.
    pub signing_keys: Vec<SigningKey>,
    /// Its scheme's windows, applied per subject; empty when it has none.
    pub windows: Vec<RateWindow>,
}

#[derive(Debug, Clone)]
pub struct FoundWorkspaceKey {
    pub key: WorkspaceKey,
    /// The current secret first, then a superseded one still in its grace period.
    pub secrets: Vec<SealedSecret>,
    /// Its scheme's windows, limiting its calls to Keyward's API.
    pub windows: Vec<RateWindow>,
}

/// Public keys, signing keys, workspace keys, and the HMAC signatures already accepted.
///
/// A change to signing keys or to an environment's settings makes caches forget everything:
/// each cached client public key carries its environment's signing keys and settings.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Stores the key and the hash of its value.
    async fn create_public_key(&self, change: &Change, key: &PublicKey)
        -> StoreResult<Changed<()>>;
    async fn public_key(&self, tenancy: &Tenancy, id: &str) -> StoreResult<PublicKey>;
    async fn list_public_keys(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<PublicKey>>;
    /// Gives the key a new value; the previous ones stop working at `previous_expire_at`,
    /// or at once.
    async fn rotate_public_key(
        &self,
        change: &Change,
        id: &str,
        new_value: &str,
        previous_expire_at: Option<Timestamp>,
    ) -> StoreResult<Changed<PublicKey>>;
    async fn delete_public_key(&self, change: &Change, id: &str)
        -> StoreResult<Changed<PublicKey>>;
    async fn find_public_key(&self, hash: KeyHash) -> StoreResult<Option<FoundPublicKey>>;

    async fn create_signing_key(
        &self,
        change: &Change,
        key: &SigningKey,
    ) -> StoreResult<Changed<()>>;
    async fn list_signing_keys(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<SigningKey>>;
    async fn delete_signing_key(
        &self,
        change: &Change,
        id: &str,
    ) -> StoreResult<Changed<SigningKey>>;

    async fn create_workspace_key(
        &self,
        change: &Change,
        key: &WorkspaceKey,
        sealed_secret: &[u8],
    ) -> StoreResult<Changed<()>>;
    async fn list_workspace_keys(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<WorkspaceKey>>;
    /// Seals in a new secret; the previous one keeps working until `previous_expire_at`.
    async fn rotate_workspace_key(
        &self,
        change: &Change,
        id: &str,
        start: &str,
        sealed_secret: &[u8],
        previous_expire_at: Option<Timestamp>,
    ) -> StoreResult<Changed<WorkspaceKey>>;
    async fn delete_workspace_key(
        &self,
        change: &Change,
        id: &str,
    ) -> StoreResult<Changed<WorkspaceKey>>;
    /// By its id, `wk_…`, which signed requests name.
    async fn find_workspace_key(&self, id: &str) -> StoreResult<Option<FoundWorkspaceKey>>;

    /// Records an accepted signature; `false` if it was recorded before (a replay).
    async fn remember_signature(&self, hash: KeyHash, expires_at: Timestamp) -> StoreResult<bool>;
    /// Drops signatures whose window has passed.
    async fn forget_signatures(&self, now: Timestamp) -> StoreResult<u64>;
}

/// The key under which caches hold a workspace key: it is looked up by id, not by a secret.
pub fn workspace_key_cache_hash(id: &str) -> KeyHash {
    KeyHash::of(&format!("workspace-key:{id}"))
}

/// Everything Keyward keeps. Implementations must be safe to share between nodes: every
/// method is one transaction.
/// Verifications of one kind in one minute, to be added to the usage counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub tenancy: Tenancy,
    /// `""` when no key was found.
    pub key_id: String,
    /// `""` when none.
    pub app_id: String,
    /// `""` when none.
    pub organization_id: String,
    /// A verification code, e.g. `VALID`.
    pub outcome: String,
    /// Any moment in the minute.
    pub at: Timestamp,
    pub count: i64,
}

/// A usage query: one environment, a time range, a granularity and optional filters.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub tenancy: Tenancy,
    pub granularity: keyward_core::analytics::Granularity,
    /// From the bucket holding `from`, up to `to` (exclusive).
    pub from: Timestamp,
    pub to: Timestamp,
    pub key_id: Option<String>,
    pub app_id: Option<String>,
    pub organization_id: Option<String>,
    pub outcome: Option<String>,
}

/// One bucket's count of one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePoint {
    pub bucket: Timestamp,
    pub outcome: String,
    pub count: i64,
}

/// One key's count of one outcome over a usage query's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsagePoint {
    pub key_id: String,
    pub outcome: String,
    pub count: i64,
}

/// Usage analytics (issue 8): counts kept per minute, hour and day.
#[async_trait]
pub trait AnalyticsStore: Send + Sync {
    /// Adds counts to their minute, hour and day, in one transaction.
    async fn add_usage(&self, counts: &[UsageCount]) -> StoreResult<()>;
    /// Counts per bucket and outcome, oldest first; buckets without any are left out.
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsagePoint>>;
    /// Counts per key and outcome over the whole range, in no particular order; counts not
    /// tied to a key (unknown keys) are left out.
    async fn usage_by_key(&self, query: &UsageQuery) -> StoreResult<Vec<KeyUsagePoint>>;
    /// Forgets minute counts before `minutes_before`, hour and day counts before
    /// `rollups_before`; returns how many rows went.
    async fn purge_usage(
        &self,
        minutes_before: Timestamp,
        rollups_before: Timestamp,
    ) -> StoreResult<u64>;
}

/// Which events a reader may see: one environment's, and of those only the ones about an end
/// user's own keys when `owner_user_id` is set.
#[derive(Debug, Clone, Copy)]
pub struct EventScope<'a> {
    pub tenancy: &'a Tenancy,
    pub owner_user_id: Option<&'a str>,
}

/// Events and alerts about keys (SPEC §4.5). Key changes record theirs in their own
/// transaction; this records the rest and reads them back in order.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Records events raised outside any change (alerts, expiries) in one transaction. One
    /// whose `dedup_key` is already recorded is skipped.
    async fn append_events(&self, events: &[NewEvent], now: Timestamp) -> StoreResult<()>;
    /// Woken after this process commits a change that may have recorded events.
    fn events_committed(&self) -> std::sync::Arc<tokio::sync::Notify>;
    /// Up to `limit` events numbered above `after`, oldest first: within `scope`, or of every
    /// workspace. A row this version cannot read is logged and skipped.
    async fn events_after(
        &self,
        after: i64,
        scope: Option<&EventScope<'_>>,
        limit: u32,
    ) -> StoreResult<Vec<Event>>;
    /// The number of the newest event committed or being committed (0 before the first).
    async fn last_event_seq(&self) -> StoreResult<i64>;
    /// The number of the oldest event still kept.
    async fn oldest_event_seq(&self) -> StoreResult<Option<i64>>;
    /// Forgets events recorded before `before`; returns how many.
    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64>;
    /// Live keys whose expiry falls in `(after, until]` and that have no `unreported` event
    /// for that expiry yet (see [`expiry_dedup_key`]), soonest first.
    async fn keys_expiring_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        unreported: EventType,
        limit: u32,
    ) -> StoreResult<Vec<ApiKey>>;
}

/// The workspace and its environments: the first start, environment settings, root keys.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates the first workspace unless one exists. `false` when another start did it first.
    async fn bootstrap(&self, bootstrap: &Bootstrap) -> StoreResult<Changed<bool>>;

    async fn environment(&self, tenancy: &Tenancy) -> StoreResult<EnvironmentSettings>;
    /// Caches forget everything: cached public keys carry their environment's settings.
    async fn update_environment(
        &self,
        change: &Change,
        patch: &EnvironmentPatch,
    ) -> StoreResult<Changed<EnvironmentSettings>>;

    async fn create_root_key(
        &self,
        change: &Change,
        key: &RootKey,
        hash: KeyHash,
    ) -> StoreResult<Changed<()>>;
    async fn find_root_key(&self, hash: KeyHash) -> StoreResult<Option<FoundRootKey>>;
    async fn list_root_keys(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<RootKey>>;
    /// Revokes a root key, provided the change's actor holds all of its scopes (a key cannot
    /// take down one more powerful than itself).
    async fn revoke_root_key(&self, change: &Change, id: &str) -> StoreResult<Changed<RootKey>>;
}

/// Apps: the categories keys belong to, with their permissions and default scheme.
#[async_trait]
pub trait AppStore: Send + Sync {
    async fn create_app(&self, change: &Change, app: &App) -> StoreResult<()>;
    async fn app_by_slug(&self, tenancy: &Tenancy, slug: &str) -> StoreResult<App>;
    async fn app_by_id(&self, tenancy: &Tenancy, id: &str) -> StoreResult<App>;
    async fn list_apps(&self, tenancy: &Tenancy, page: &PageRequest) -> StoreResult<Page<App>>;
    /// A changed scheme is a change to every cached key of the app.
    async fn update_app(
        &self,
        change: &Change,
        slug: &str,
        patch: &AppPatch,
    ) -> StoreResult<Changed<App>>;
    /// Deletes the app and revokes every key it has.
    async fn delete_app(&self, change: &Change, slug: &str) -> StoreResult<Changed<App>>;
}

/// API keys: issue, import, find, list, change, rotate, revoke, delete.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key. With `owner_quota`, refused (`MaxKeysReached`) when its owner
    /// already holds that many active keys of its app, counted in the same transaction.
    async fn create_key(
        &self,
        change: &Change,
        key: &ApiKey,
        hash: KeyHash,
        owner_quota: Option<u32>,
    ) -> StoreResult<Changed<()>>;
    /// Inserts imported keys into the app `app_slug` in one transaction, skipping every key
    /// whose secret is already known (so an import can be repeated). Returns, per key,
    /// whether it was inserted.
    async fn import_keys(
        &self,
        change: &Change,
        app_slug: &str,
        keys: &[KeyImport],
    ) -> StoreResult<Changed<Vec<bool>>>;
    /// Whether any imported secret is in a foreign format.
    async fn foreign_secrets_present(&self) -> StoreResult<bool>;
    /// How many look-up hashes credentials have: one per stored secret, one per workspace
    /// key ([`workspace_key_cache_hash`]).
    async fn count_lookup_hashes(&self) -> StoreResult<u64>;
    /// Up to `limit` look-up hashes from `from` on, in a fixed order, and where the scan goes
    /// on (`None` once it is done): what a node's filter of known credentials is built from.
    async fn scan_lookup_hashes(
        &self,
        from: &LookupScan,
        limit: u32,
    ) -> StoreResult<(Vec<KeyHash>, Option<LookupScan>)>;
    /// Drops the superseded secrets whose grace period ended before `now`: API keys' and
    /// root keys' hashes, and workspace keys' sealed previous secrets. None of them verifies
    /// any more, so no cache has to hear of it. Returns how many were dropped.
    async fn purge_ended_secrets(&self, now: Timestamp) -> StoreResult<u64>;
    async fn key(&self, tenancy: &Tenancy, id: &str) -> StoreResult<ApiKey>;
    async fn find_key(&self, hash: KeyHash) -> StoreResult<Option<FoundKey>>;
    async fn list_keys(
        &self,
        tenancy: &Tenancy,
        app_id: &str,
        filter: &KeyFilter,
        page: &PageRequest,
        now: Timestamp,
    ) -> StoreResult<Page<ApiKey>>;
    async fn update_key(
        &self,
        change: &Change,
        id: &str,
        patch: &KeyPatch,
    ) -> StoreResult<Changed<ApiKey>>;
    async fn revoke_key(&self, change: &Change, id: &str) -> StoreResult<Changed<ApiKey>>;
    /// Gives the key a new secret. Its previous secrets stop working at `previous_expire_at`,
    /// or at once when it is `None`.
    async fn rotate_key(
        &self,
        change: &Change,
        id: &str,
        new_secret: (KeyHash, &str),
        previous_expire_at: Option<Timestamp>,
    ) -> StoreResult<Changed<ApiKey>>;
    async fn delete_key(&self, change: &Change, id: &str) -> StoreResult<Changed<ApiKey>>;
    /// Records when keys were last used; an older time never overwrites a newer one.
    async fn record_last_used(&self, uses: &[(String, Timestamp)]) -> StoreResult<()>;
}

/// The audit log. Every change writes its entry in its own transaction.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn list_audit(
        &self,
        tenancy: &Tenancy,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEntry>>;
}

/// Changes to a webhook endpoint; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct WebhookEndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub events: Option<keyward_core::webhook::EventFilter>,
    pub enabled: Option<bool>,
}

/// What a delivery carries.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryContent {
    Event(Box<Event>),
    /// `POST …/{id}/test`.
    Test {
        details: serde_json::Value,
        created_at: Timestamp,
    },
    /// The event is no longer kept (a manual retry after the retention window).
    Forgotten,
}

/// A delivery this node has claimed: it is this node's to attempt until the lease ends.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// Also the `webhook-id` of every attempt.
    pub id: String,
    /// Which claim this is; only the latest settles the delivery.
    pub claim: i64,
    /// Attempts made before this one.
    pub attempts: u32,
    pub endpoint: keyward_core::webhook::WebhookEndpoint,
    /// The current signing secret, then the previous one while it still signs; sealed.
    pub sealed_secrets: Vec<Vec<u8>>,
    pub content: DeliveryContent,
}

/// How an attempt went, and what follows.
#[derive(Debug, Clone)]
pub struct DeliverySettlement {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub claim: i64,
    pub attempt: keyward_core::webhook::WebhookAttempt,
    pub succeeded: bool,
    /// When a failed delivery is tried again; `None` when it has had all its attempts.
    pub retry_at: Option<Timestamp>,
    /// An endpoint failing for this long is turned off (`webhook.disabled`).
    pub disable_after_ms: i64,
    pub now: Timestamp,
}

/// Webhook endpoints and their deliveries (SPEC §4.8).
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Refused unless the change's actor may read the events stream.
    async fn create_webhook_endpoint(
        &self,
        change: &Change,
        endpoint: &keyward_core::webhook::WebhookEndpoint,
        sealed_secret: &[u8],
    ) -> StoreResult<()>;
    async fn webhook_endpoint(
        &self,
        tenancy: &Tenancy,
        id: &str,
    ) -> StoreResult<keyward_core::webhook::WebhookEndpoint>;
    async fn list_webhook_endpoints(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<keyward_core::webhook::WebhookEndpoint>>;
    async fn update_webhook_endpoint(
        &self,
        change: &Change,
        id: &str,
        patch: &WebhookEndpointPatch,
    ) -> StoreResult<keyward_core::webhook::WebhookEndpoint>;
    async fn delete_webhook_endpoint(&self, change: &Change, id: &str) -> StoreResult<()>;
    /// The previous secret keeps signing until `previous_expires_at`.
    async fn rotate_webhook_secret(
        &self,
        change: &Change,
        id: &str,
        sealed_secret: &[u8],
        previous_expires_at: Timestamp,
    ) -> StoreResult<keyward_core::webhook::WebhookEndpoint>;
    async fn list_webhook_deliveries(
        &self,
        tenancy: &Tenancy,
        endpoint_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<keyward_core::webhook::WebhookDelivery>>;
    async fn webhook_delivery(
        &self,
        tenancy: &Tenancy,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> StoreResult<keyward_core::webhook::WebhookDelivery>;
    /// Due now, keeping its id.
    async fn retry_webhook_delivery(
        &self,
        change: &Change,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> StoreResult<()>;
    /// Queues a `webhook.test` delivery to this endpoint only; returns its id.
    async fn queue_test_delivery(&self, change: &Change, endpoint_id: &str) -> StoreResult<String>;
    /// Queues the deliveries of the next `limit` events recorded (on any node) since the
    /// last call: one per event and enabled endpoint of its environment that takes its type
    /// and existed when it was recorded. Returns how many events it covered; fewer than
    /// `limit` means it has caught up. The event log is the outbox: events are numbered in
    /// commit order and kept until they are covered, so a committed event always gets its
    /// deliveries, and a key's transaction writes one event row however many endpoints
    /// there are. One node at a time does this; the others find it busy and return 0.
    async fn queue_webhook_deliveries(&self, now: Timestamp, limit: u32) -> StoreResult<u32>;
    /// Claims up to `limit` due deliveries of enabled endpoints until `lease_until`, so that
    /// no endpoint has more than `per_endpoint` in flight on this node counting those already
    /// `in_flight` (endpoint id, attempts under way).
    async fn claim_webhook_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        per_endpoint: u32,
        in_flight: &[(String, u32)],
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records attempts and settles their deliveries, in one transaction; returns the
    /// endpoints this turned off.
    async fn settle_webhook_deliveries(
        &self,
        settlements: &[DeliverySettlement],
    ) -> StoreResult<Vec<String>>;
    /// Holds an endpoint's waiting deliveries (and those queued meanwhile) until `until`:
    /// the worker does so when its attempts there hang, so that its backlog never sits due
    /// in front of the other endpoints' work. Its next success releases them.
    async fn pause_webhook_endpoint(&self, endpoint_id: &str, until: Timestamp) -> StoreResult<()>;
    /// Forgets settled deliveries last changed before `before`.
    async fn purge_webhook_deliveries(&self, before: Timestamp) -> StoreResult<u64>;
    /// Woken when this node may have recorded events or queued deliveries.
    fn deliveries_queued(&self) -> std::sync::Arc<tokio::sync::Notify>;
}

/// A credential a leak report names, found by its secret's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeakedCredential {
    Key(String),
    RootKey(String),
}

#[derive(Debug, Clone)]
pub struct LeakedCredentialReport {
    pub credential: LeakedCredential,
    pub report: keyward_core::leak::LeakReport,
}

/// Leak reports (SPEC §4.9).
#[async_trait]
pub trait LeakStore: Send + Sync {
    /// Applies the environment's `leaked_key_action` to each reported credential of the
    /// change's environment, in one transaction; one outcome per report, in order.
    async fn report_leaks(
        &self,
        change: &Change,
        reports: &[LeakedCredentialReport],
    ) -> StoreResult<Changed<Vec<keyward_core::leak::LeakOutcome>>>;
}

/// Customer portal sessions (SPEC §4.10).
#[async_trait]
pub trait PortalStore: Send + Sync {
    /// Records a session whose link's one-time code hashes to `code_hash`, with an audit
    /// entry; `NotFound("app")` unless its app is in the change's environment.
    async fn create_portal_session(
        &self,
        change: &Change,
        session: &keyward_core::model::PortalSession,
        code_hash: &str,
    ) -> StoreResult<()>;
    /// The session a link's code opens, once, whichever node asks, before the code expires
    /// and while the session's creator is live; `NotFound` otherwise. The session then
    /// lasts until `until`.
    async fn redeem_portal_code(
        &self,
        code_hash: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<keyward_core::model::PortalSession>;
    /// A redeemed session that has not ended or expired, whose creator is live.
    async fn live_portal_session(
        &self,
        id: &str,
        now: Timestamp,
    ) -> StoreResult<keyward_core::model::PortalSession>;
    /// Ends a session (the customer signed out).
    async fn end_portal_session(&self, id: &str, now: Timestamp) -> StoreResult<()>;
    /// Forgets sessions (used or not) that ended before `before`; returns how many.
    async fn purge_portal_sessions(&self, before: Timestamp) -> StoreResult<u64>;
}

/// Everything Keyward keeps, by subject.
#[async_trait]
pub trait Store:
    WorkspaceStore
    + AppStore
    + KeyStore
    + AuditStore
    + UsageStore
    + SandboxStore
    + CredentialStore
    + EventStore
    + AnalyticsStore
    + WebhookStore
    + LeakStore
    + PortalStore
    + Send
    + Sync
    + 'static
{
    /// Whether storage answers.
    async fn ping(&self) -> StoreResult<()>;
}
