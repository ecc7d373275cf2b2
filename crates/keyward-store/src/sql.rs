//! The SQL implementation of [`Store`], on SQLite (embedded, the default) or PostgreSQL, through
//! sqlx's runtime-selected `Any` driver, so that one body of queries serves both backends.
//! What differs (schema types, row locks, the writer pool) is named by [`Backend`].
//!
//! Queries use `$N` placeholders, numbered in order of first use, which every backend accepts.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
mod analytics;
mod credentials;
pub(crate) mod events;
mod sandbox;
mod usage;

use keyward_core::event::{EventType, NewEvent};
use keyward_core::model::{
    ApiKey, App, AuditEntry, Environment, EnvironmentSettings, KeyStatus, RootKey, SecretRecord,
    Tenancy,
};
use keyward_core::scope::ScopeSet;
use keyward_core::usage::{Credits, Refill};
use keyward_core::{KeyHash, Timestamp};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, ConnectOptions, Executor, Row};

use crate::cluster::{Announced, Stale};
use crate::{
    AppPatch, AuditFilter, Bootstrap, Change, Changed, Conflict, Forbidden, FoundKey, FoundRootKey,
    KeyFilter, KeyImport, KeyPatch, Page, PageRequest, Store, StoreError, StoreResult,
};

type Transaction<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// WAL lets readers run beside the writer; `synchronous = FULL` makes every acknowledged
/// commit survive a crash of the process or of the machine.
const SQLITE_PRAGMAS: [&str; 4] = [
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
];

/// Settings of every PostgreSQL session Keyward opens. Keyward never leaves a transaction
/// idle on purpose, so a session idle inside one for two seconds belongs to a node that
/// stalled (partitioned, paused, its host gone): the server ends it and releases its row
/// locks, so other nodes' changes wait for it at most that long. The keepalives let the
/// server notice a vanished host in seconds instead of the system's two hours.
pub(crate) const POSTGRES_SESSION_SETTINGS: &str =
    "SET idle_in_transaction_session_timeout = '2s'; \
     SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
     SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000";

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How to reach storage.
#[derive(Clone)]
pub struct StoreOptions {
    /// `sqlite://…` (see [`SqlStore::sqlite_url`]) or `postgres://…`.
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// This process's identity in a cluster (see [`crate::cluster`]);
    /// [`StoreOptions::cluster_member_id`].
    pub node_id: String,
}

impl StoreOptions {
    /// This process's identity in a cluster: the node's name and a random incarnation, so
    /// that a restarted node (or two given the same name by mistake) are never taken for
    /// each other.
    pub fn cluster_member_id(name: Option<&str>) -> String {
        let random = Self::new_node_id();
        format!("{}-{}", name.unwrap_or(&random[8..]), &random[..8])
    }

    /// A fresh node name: 16 hex digits, unique for all practical purposes.
    pub fn new_node_id() -> String {
        use std::hash::{BuildHasher, Hasher};
        // Two independently seeded SipHash keys give 64 unpredictable bits without pulling
        // a random-number crate into storage.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        format!("{:016x}", hasher.finish())
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("StoreOptions")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// An exact, case-sensitive substring test (`LIKE` ignores case on SQLite and treats `_`
    /// as a wildcard).
    fn contains_text(self, column: &str, needle: &str) -> String {
        match self {
            Self::Sqlite => format!("instr({column}, {needle}) > 0"),
            Self::Postgres => format!("strpos({column}, {needle}) > 0"),
        }
    }

    /// Joins the values of `expression` in a group into one text, separated by `separator`.
    fn text_aggregate(self, expression: &str, separator: &str) -> String {
        match self {
            Self::Sqlite => format!("group_concat({expression}, '{separator}')"),
            Self::Postgres => format!("string_agg({expression}, '{separator}')"),
        }
    }

    /// Locks the rows a read-modify-write transaction reads. SQLite has no row locks and
    /// needs none: its single writer connection serialises every write transaction.
    fn lock_rows(self, table: &str) -> String {
        self.lock(table, Lock::Exclusive)
    }

    fn lock(self, table: &str, lock: Lock) -> String {
        match (self, lock) {
            (Self::Sqlite, _) => String::new(),
            (Self::Postgres, Lock::Exclusive) => format!(" FOR UPDATE OF {table}"),
            (Self::Postgres, Lock::Shared) => format!(" FOR SHARE OF {table}"),
        }
    }
}

/// How a write transaction holds a row it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Against every other writer: the transaction changes the row.
    Exclusive,
    /// Against changes only: the transaction depends on the row, like other readers of it.
    Shared,
}

/// The query that finds a change's actor while it is live: a root key (`rk_…`), a workspace
/// key (`wk_…`), or the public key an end user acts through (`<pk id>:<subject>`).
fn actor_row_query(actor: &str) -> Option<&'static str> {
    if actor.starts_with("rk_") {
        Some("SELECT a.id FROM root_keys a WHERE a.id = $1 AND a.revoked_at IS NULL")
    } else if actor.starts_with("wk_") {
        Some("SELECT a.id FROM workspace_keys a WHERE a.id = $1")
    } else if actor.starts_with("pk") && actor.contains(':') {
        Some("SELECT a.id FROM public_keys a WHERE a.id = $1")
    } else {
        None
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct SqlStore {
    /// Reads run here, concurrently.
    reader: AnyPool,
    /// Writes run here. On SQLite this pool has a single connection, so writers queue in
    /// the pool instead of failing with "database is locked"; on PostgreSQL it is the
    /// reader pool.
    writer: AnyPool,
    backend: Backend,
    /// This process's name among the nodes sharing the database.
    node_id: String,
    /// Woken after a commit that may have recorded events, so this node's stream needs no
    /// polling for its own changes (other nodes' arrive by `NOTIFY`).
    events_committed: std::sync::Arc<tokio::sync::Notify>,
}

impl SqlStore {
    /// The URL of the embedded database inside `data_dir`.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("keyward.db").display()
        )
    }

    /// Connects and brings the schema up to date.
    pub async fn connect(options: &StoreOptions) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(&options.url).ok_or_else(|| {
            StoreError::Corrupt(
                "unsupported database URL: use sqlite://… or postgres://…".to_owned(),
            )
        })?;
        let connect_options = AnyConnectOptions::from_str(&options.url)
            .map_err(StoreError::from)?
            .disable_statement_logging();
        let pool = |size: u32| {
            AnyPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(options.acquire_timeout)
                .after_connect(move |connection, _| {
                    Box::pin(async move {
                        match backend {
                            Backend::Sqlite => {
                                for pragma in SQLITE_PRAGMAS {
                                    connection.execute(pragma).await?;
                                }
                            }
                            Backend::Postgres => {
                                connection.execute(POSTGRES_SESSION_SETTINGS).await?;
                            }
                        }
                        Ok(())
                    })
                })
                .connect_with(connect_options.clone())
        };
        let (reader, writer) = match backend {
            Backend::Sqlite => {
                let writer = pool(1).await?;
                SQLITE_MIGRATIONS.run(&writer).await?;
                (pool(options.max_connections.max(1)).await?, writer)
            }
            Backend::Postgres => {
                let shared = pool(options.max_connections.max(2)).await?;
                POSTGRES_MIGRATIONS.run(&shared).await?;
                (shared.clone(), shared)
            }
        };
        Ok(Self {
            reader,
            writer,
            backend,
            node_id: options.node_id.clone(),
            events_committed: std::sync::Arc::default(),
        })
    }

    /// Whether other nodes may share this database, so that changes must reach their caches.
    pub fn is_shared(&self) -> bool {
        self.backend == Backend::Postgres
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Begins a change's transaction holding its environment's row, so that a change in an
    /// environment that is gone (a purged demo sandbox) is refused, and a purge waits for
    /// the changes already under way and then removes what they made. `Exclusive` is for
    /// the one change that writes the row itself.
    async fn begin_change(&self, change: &Change, lock: Lock) -> StoreResult<Transaction<'_>> {
        let mut tx = self.writer.begin().await?;
        let held = sqlx::query(&format!(
            "SELECT environment FROM environments WHERE workspace_id = $1 AND environment = $2{}",
            self.backend.lock("environments", lock)
        ))
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Err(StoreError::NotFound("environment"));
        }
        // The credential asking must still be live: a request let in just before its key's
        // revocation returned must not make anything (a successor, above all) after it.
        // Revocation locks the same row exclusively, so the two are ordered.
        if let Some(query) = actor_row_query(&change.actor) {
            let actor_id = change.actor.split(':').next().unwrap_or_default();
            let live = sqlx::query(&format!("{query}{}", self.backend.lock("a", Lock::Shared)))
                .bind(actor_id)
                .fetch_optional(&mut *tx)
                .await?;
            if live.is_none() {
                return Err(StoreError::NotPermitted(Forbidden::ActorRevoked));
            }
        }
        Ok(tx)
    }

    /// At most `quota` active keys of `key`'s owner in its app, counted where concurrent
    /// creations cannot both pass: SQLite's one writer, or an advisory lock on the owner.
    async fn require_below_quota(
        &self,
        tx: &mut Transaction<'_>,
        key: &ApiKey,
        quota: u32,
        now: Timestamp,
    ) -> StoreResult<()> {
        let owner = key.owner_user_id.as_deref().unwrap_or_default();
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("key-quota:{}:{owner}", key.app_id))
                .execute(&mut **tx)
                .await?;
        }
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE app_id = $1 AND owner_user_id = $2 \
             AND revoked_at IS NULL AND enabled = $3 \
             AND (expires_at IS NULL OR expires_at > $4)",
        )
        .bind(&key.app_id)
        .bind(owner)
        .bind(true)
        .bind(now.as_millis())
        .fetch_one(&mut **tx)
        .await?;
        if active >= i64::from(quota) {
            return Err(StoreError::Conflict(Conflict::MaxKeysReached(quota)));
        }
        Ok(())
    }

    /// Announces in `tx` what caches must forget, commits, and describes the change.
    async fn finish_change<T>(
        &self,
        mut tx: Transaction<'_>,
        record: T,
        stale: Stale,
        now: Timestamp,
    ) -> StoreResult<Changed<T>> {
        let announced = match self.backend {
            // One process owns an SQLite database: its own cache is the only one.
            Backend::Sqlite => None,
            Backend::Postgres => {
                let rows = sqlx::query(
                    "SELECT seq, member, remaining_ms \
                     FROM keyward_publish_invalidation($1, $2, $3, $4)",
                )
                .bind(stale.to_bytes())
                .bind(now.as_millis())
                .bind(stale.payload_tail())
                .bind(&self.node_id)
                .fetch_all(&mut *tx)
                .await?;
                Some(Announced::from_rows(&rows)?)
            }
        };
        if let Err(error) = tx.commit().await {
            // The commit may have reached the database before the connection failed: the
            // caller must treat the change as possibly made, and caches as possibly stale.
            return Err(StoreError::UncertainCommit {
                source: error,
                stale,
                propagation: announced.map(Announced::committed),
            });
        }
        self.events_committed.notify_one();
        Ok(Changed {
            record,
            stale,
            propagation: announced.map(Announced::committed),
        })
    }

    /// Records an event about a key in the change's own transaction, so that it exists if and
    /// only if the change does.
    async fn record_key_event(
        &self,
        tx: &mut Transaction<'_>,
        change: &Change,
        kind: EventType,
        key: &ApiKey,
    ) -> StoreResult<()> {
        events::record(
            tx,
            self.backend,
            &[NewEvent::about(&change.tenancy, kind, key)],
            change.now,
        )
        .await
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

const KEY_SELECT: &str =
    "SELECT k.id, k.workspace_id, k.environment, k.app_id, a.slug AS app_slug, \
     k.name, k.owner_user_id, k.organization_id, k.permissions, k.meta, k.start, k.expires_at, \
     k.enabled, k.revoked_at, k.created_at, k.updated_at, k.last_used_at, \
     k.rate_limit_scheme, k.credits_remaining, k.credits_refill_period, \
     k.credits_refill_amount, k.credits_refilled_at, k.low_credits_threshold \
     FROM api_keys k JOIN apps a ON a.id = k.app_id";

/// A key with the secret it was found by, and its app's scheme.
const KEY_BY_HASH: &str =
    "SELECT k.id, k.workspace_id, k.environment, k.app_id, a.slug AS app_slug, \
     k.name, k.owner_user_id, k.organization_id, k.permissions, k.meta, k.start, k.expires_at, \
     k.enabled, k.revoked_at, k.created_at, k.updated_at, k.last_used_at, \
     k.rate_limit_scheme, k.credits_remaining, k.credits_refill_period, \
     k.credits_refill_amount, k.credits_refilled_at, k.low_credits_threshold, \
     a.rate_limit_scheme AS app_rate_limit_scheme, \
     s.hash, s.expires_at AS secret_expires_at \
     FROM secrets s JOIN api_keys k ON k.id = s.credential_id JOIN apps a ON a.id = k.app_id \
     WHERE s.hash = $1";

const APP_SELECT: &str = "SELECT id, workspace_id, environment, name, slug, permissions, \
     rate_limit_scheme, organization_id, key_prefix, created_at, updated_at FROM apps";

const ROOT_KEY_SELECT: &str = "SELECT r.id, r.workspace_id, r.environment, r.name, r.scopes, \
     r.start, r.created_at, r.revoked_at, r.rate_limit_scheme, r.limit_meter, r.expires_at \
     FROM root_keys r";

/// A root key with the secret it was found by.
const ROOT_KEY_BY_HASH: &str = "SELECT r.id, r.workspace_id, r.environment, r.name, r.scopes, \
     r.start, r.created_at, r.revoked_at, r.rate_limit_scheme, r.limit_meter, r.expires_at, \
     s.hash, \
     s.expires_at AS secret_expires_at \
     FROM secrets s JOIN root_keys r ON r.id = s.credential_id WHERE s.hash = $1";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unreadable {what}"))
}

fn timestamp(row: &AnyRow, column: &str) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_millis(row.try_get::<i64, _>(column)?))
}

fn optional_timestamp(row: &AnyRow, column: &str) -> StoreResult<Option<Timestamp>> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .map(Timestamp::from_millis))
}

/// Booleans are native on PostgreSQL and integers on SQLite, whose booleans `Any` cannot read.
fn flag(row: &AnyRow, column: &str) -> StoreResult<bool> {
    match row.try_get::<bool, _>(column) {
        Ok(value) => Ok(value),
        Err(_) => Ok(row.try_get::<i64, _>(column)? != 0),
    }
}

fn tenancy_from_row(row: &AnyRow) -> StoreResult<Tenancy> {
    let environment: String = row.try_get("environment")?;
    Ok(Tenancy {
        workspace_id: row.try_get("workspace_id")?,
        environment: Environment::parse(&environment).ok_or_else(|| corrupt("environment"))?,
    })
}

fn json_list(row: &AnyRow, column: &str) -> StoreResult<Vec<String>> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| corrupt(column))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn app_from_row(row: &AnyRow) -> StoreResult<App> {
    Ok(App {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        name: row.try_get("name")?,
        slug: row.try_get("slug")?,
        permissions: json_list(row, "permissions")?,
        rate_limit_scheme: row.try_get("rate_limit_scheme")?,
        organization_id: row.try_get("organization_id")?,
        key_prefix: row.try_get("key_prefix")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> StoreResult<ApiKey> {
    let meta: String = row.try_get("meta")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        app_id: row.try_get("app_id")?,
        app_slug: row.try_get("app_slug")?,
        name: row.try_get("name")?,
        owner_user_id: row.try_get("owner_user_id")?,
        organization_id: row.try_get("organization_id")?,
        permissions: json_list(row, "permissions")?,
        meta: serde_json::from_str(&meta).map_err(|_| corrupt("meta"))?,
        start: row.try_get("start")?,
        expires_at: optional_timestamp(row, "expires_at")?,
        enabled: flag(row, "enabled")?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
        last_used_at: optional_timestamp(row, "last_used_at")?,
        credits: credits_from_row(row)?,
        rate_limit_scheme: row.try_get("rate_limit_scheme")?,
        low_credits_threshold: row.try_get("low_credits_threshold")?,
    })
}

fn credits_from_row(row: &AnyRow) -> StoreResult<Option<Credits>> {
    let Some(remaining) = row.try_get::<Option<i64>, _>("credits_remaining")? else {
        return Ok(None);
    };
    let period: Option<String> = row.try_get("credits_refill_period")?;
    let amount: Option<i64> = row.try_get("credits_refill_amount")?;
    let refill = match (period, amount) {
        (Some(period), Some(amount)) => Some(Refill {
            period: usage::period(&period)?,
            amount,
        }),
        _ => None,
    };
    Ok(Some(Credits {
        remaining,
        refill,
        refilled_at: optional_timestamp(row, "credits_refilled_at")?
            .unwrap_or(Timestamp::from_millis(0)),
    }))
}

fn root_key_from_row(row: &AnyRow) -> StoreResult<RootKey> {
    let names = json_list(row, "scopes")?;
    let scopes =
        ScopeSet::parse(names.iter().map(String::as_str)).map_err(|_| corrupt("scopes"))?;
    Ok(RootKey {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        name: row.try_get("name")?,
        scopes,
        start: row.try_get("start")?,
        created_at: timestamp(row, "created_at")?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
        rate_limit_scheme: row.try_get("rate_limit_scheme")?,
        limit_meter: row.try_get("limit_meter")?,
        expires_at: optional_timestamp(row, "expires_at")?,
    })
}

fn secret_from_row(row: &AnyRow) -> StoreResult<SecretRecord> {
    let bytes: Vec<u8> = row.try_get("hash")?;
    Ok(SecretRecord {
        hash: KeyHash::from_slice(&bytes).ok_or_else(|| corrupt("hash"))?,
        expires_at: optional_timestamp(row, "secret_expires_at")?,
    })
}

/// Which of `tenancies` still have their environment, each held (a share lock on
/// PostgreSQL) until the transaction ends, so that a sandbox purge cannot interleave with a
/// writer that adds rows for it. Taken in sorted order, so concurrent writers never wait on
/// each other in a cycle.
async fn hold_live_environments<'t>(
    tx: &mut Transaction<'_>,
    backend: Backend,
    tenancies: impl IntoIterator<Item = &'t Tenancy>,
) -> StoreResult<std::collections::HashSet<Tenancy>> {
    let sorted: std::collections::BTreeSet<(&str, &str)> = tenancies
        .into_iter()
        .map(|tenancy| (tenancy.workspace_id.as_str(), tenancy.environment.as_str()))
        .collect();
    let mut live = std::collections::HashSet::new();
    for (workspace_id, environment) in sorted {
        let held = sqlx::query(&format!(
            "SELECT environment FROM environments WHERE workspace_id = $1 AND environment = $2{}",
            backend.lock("environments", Lock::Shared)
        ))
        .bind(workspace_id)
        .bind(environment)
        .fetch_optional(&mut **tx)
        .await?;
        if held.is_some() {
            if let Some(environment) = Environment::parse(environment) {
                live.insert(Tenancy {
                    workspace_id: workspace_id.to_owned(),
                    environment,
                });
            }
        }
    }
    Ok(live)
}

/// Trims a page fetched with one extra row and names the cursor of the next one.
fn paginate<T>(mut items: Vec<T>, limit: u32, id: impl Fn(&T) -> &str) -> Page<T> {
    let limit = limit as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| id(last).to_owned())
    } else {
        None
    };
    Page { items, next_cursor }
}

async fn audit(
    tx: &mut Transaction<'_>,
    change: &Change,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, workspace_id, environment, actor, action, target, \
         request_id, details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&change.audit_id)
    .bind(&change.tenancy.workspace_id)
    .bind(change.tenancy.environment.as_str())
    .bind(&change.actor)
    .bind(action)
    .bind(target)
    .bind(&change.request_id)
    .bind(details.to_string())
    .bind(change.now.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_secret(
    tx: &mut Transaction<'_>,
    hash: KeyHash,
    credential_id: &str,
    expires_at: Option<Timestamp>,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO secrets (hash, credential_id, expires_at) VALUES ($1, $2, $3)")
        .bind(hash.as_bytes().to_vec())
        .bind(credential_id)
        .bind(expires_at.map(Timestamp::as_millis))
        .execute(&mut **tx)
        .await
        .map_err(StoreError::conflict_if_duplicate(Conflict::SecretExists))?;
    Ok(())
}

/// Every secret of a credential, as what caches must forget when it changes.
async fn secret_hashes(tx: &mut Transaction<'_>, credential_id: &str) -> StoreResult<Stale> {
    let secrets = secrets_of(tx, credential_id).await?;
    Ok(Stale::Secrets(secrets.iter().map(|s| s.hash).collect()))
}

async fn secrets_of(
    tx: &mut Transaction<'_>,
    credential_id: &str,
) -> StoreResult<Vec<SecretRecord>> {
    let rows = sqlx::query(
        "SELECT hash, expires_at AS secret_expires_at FROM secrets WHERE credential_id = $1",
    )
    .bind(credential_id)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(secret_from_row).collect()
}

/// Ends a credential's current secrets at `previous_expire_at` (or at once), for a rotation.
/// A grace period can shorten a previous secret's life, never lengthen it. Returns every
/// secret the credential had, which caches must forget.
async fn supersede_secrets(
    tx: &mut Transaction<'_>,
    credential_id: &str,
    previous_expire_at: Option<Timestamp>,
    now: Timestamp,
) -> StoreResult<Vec<KeyHash>> {
    let previous = secrets_of(tx, credential_id).await?;
    for secret in &previous {
        let still_in_grace = secret.expires_at.is_none_or(|end| end > now);
        let end = match (previous_expire_at, secret.expires_at) {
            (Some(grace), Some(existing)) => Some(grace.min(existing)),
            (grace, None) => grace,
            (None, Some(_)) => None,
        };
        match end {
            Some(end) if still_in_grace => {
                sqlx::query("UPDATE secrets SET expires_at = $1 WHERE hash = $2")
                    .bind(end.as_millis())
                    .bind(secret.hash.as_bytes().to_vec())
                    .execute(&mut **tx)
                    .await?;
            }
            _ => {
                sqlx::query("DELETE FROM secrets WHERE hash = $1")
                    .bind(secret.hash.as_bytes().to_vec())
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(previous.iter().map(|secret| secret.hash).collect())
}

/// Reads a key inside a write transaction, locked against concurrent writers.
async fn key_in_tx(
    tx: &mut Transaction<'_>,
    backend: Backend,
    tenancy: &Tenancy,
    id: &str,
) -> StoreResult<ApiKey> {
    let row = sqlx::query(&format!(
        "{KEY_SELECT} WHERE k.id = $1 AND k.workspace_id = $2 AND k.environment = $3{}",
        backend.lock_rows("k")
    ))
    .bind(id)
    .bind(&tenancy.workspace_id)
    .bind(tenancy.environment.as_str())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("key"))?;
    key_from_row(&row)
}

async fn write_key(tx: &mut Transaction<'_>, key: &ApiKey) -> StoreResult<()> {
    let credits = CreditColumns::of(key.credits.as_ref());
    sqlx::query(
        "UPDATE api_keys SET name = $1, owner_user_id = $2, organization_id = $3, \
         permissions = $4, meta = $5, start = $6, expires_at = $7, enabled = $8, \
         revoked_at = $9, updated_at = $10, rate_limit_scheme = $12, credits_remaining = $13, \
         credits_refill_period = $14, credits_refill_amount = $15, credits_refilled_at = $16, \
         low_credits_threshold = $17 WHERE id = $11",
    )
    .bind(&key.name)
    .bind(&key.owner_user_id)
    .bind(&key.organization_id)
    .bind(to_json(&key.permissions))
    .bind(to_json(&key.meta))
    .bind(&key.start)
    .bind(key.expires_at.map(Timestamp::as_millis))
    .bind(key.enabled)
    .bind(key.revoked_at.map(Timestamp::as_millis))
    .bind(key.updated_at.as_millis())
    .bind(&key.id)
    .bind(&key.rate_limit_scheme)
    .bind(credits.remaining)
    .bind(credits.refill_period)
    .bind(credits.refill_amount)
    .bind(credits.refilled_at)
    .bind(key.low_credits_threshold)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A key's credits as its four nullable columns.
struct CreditColumns {
    remaining: Option<i64>,
    refill_period: Option<&'static str>,
    refill_amount: Option<i64>,
    refilled_at: Option<i64>,
}

impl CreditColumns {
    fn of(credits: Option<&Credits>) -> Self {
        Self {
            remaining: credits.map(|c| c.remaining),
            refill_period: credits.and_then(|c| c.refill).map(|r| r.period.as_str()),
            refill_amount: credits.and_then(|c| c.refill).map(|r| r.amount),
            refilled_at: credits.map(|c| c.refilled_at.as_millis()),
        }
    }
}

/// Reads an app inside a write transaction, locked against concurrent writers.
async fn app_in_tx(
    tx: &mut Transaction<'_>,
    backend: Backend,
    lock: Lock,
    tenancy: &Tenancy,
    slug: &str,
) -> StoreResult<App> {
    let row = sqlx::query(&format!(
        "{APP_SELECT} WHERE workspace_id = $1 AND environment = $2 AND slug = $3 \
         AND deleted_at IS NULL{}",
        backend.lock("apps", lock)
    ))
    .bind(&tenancy.workspace_id)
    .bind(tenancy.environment.as_str())
    .bind(slug)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("app"))?;
    app_from_row(&row)
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn bootstrap(&self, bootstrap: &Bootstrap) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO installation (singleton, workspace_id, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(&bootstrap.workspace_id)
        .bind(bootstrap.now.as_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(false);
        }
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&bootstrap.workspace_id)
            .bind(&bootstrap.workspace_name)
            .bind(bootstrap.now.as_millis())
            .execute(&mut *tx)
            .await?;
        for settings in &bootstrap.environments {
            sqlx::query(
                "INSERT INTO environments (workspace_id, environment, enhanced_security, \
                 updated_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&settings.workspace_id)
            .bind(settings.environment.as_str())
            .bind(settings.enhanced_security)
            .bind(settings.updated_at.as_millis())
            .execute(&mut *tx)
            .await?;
        }
        for (key, hash) in &bootstrap.root_keys {
            insert_root_key(&mut tx, key, *hash).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn environment(&self, tenancy: &Tenancy) -> StoreResult<EnvironmentSettings> {
        let row = sqlx::query(
            "SELECT workspace_id, environment, enhanced_security, updated_at FROM environments \
             WHERE workspace_id = $1 AND environment = $2",
        )
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("environment"))?;
        environment_from_row(&row)
    }

    async fn update_environment(
        &self,
        change: &Change,
        enhanced_security: Option<bool>,
    ) -> StoreResult<Changed<EnvironmentSettings>> {
        if let Some(on) = enhanced_security {
            change.require_power_over(
                change
                    .tenancy
                    .environment
                    .scopes_to_set_enhanced_security(on),
            )?;
        }
        let mut tx = self.begin_change(change, Lock::Exclusive).await?;
        if let Some(enhanced_security) = enhanced_security {
            let updated = sqlx::query(
                "UPDATE environments SET enhanced_security = $1, updated_at = $2 \
                 WHERE workspace_id = $3 AND environment = $4",
            )
            .bind(enhanced_security)
            .bind(change.now.as_millis())
            .bind(&change.tenancy.workspace_id)
            .bind(change.tenancy.environment.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(StoreError::NotFound("environment"));
            }
        }
        audit(
            &mut tx,
            change,
            "environment.update",
            change.tenancy.environment.as_str(),
            serde_json::json!({ "enhanced_security": enhanced_security }),
        )
        .await?;
        let row = sqlx::query(
            "SELECT workspace_id, environment, enhanced_security, updated_at FROM environments \
             WHERE workspace_id = $1 AND environment = $2",
        )
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("environment"))?;
        let settings = environment_from_row(&row)?;
        self.finish_change(tx, settings, Stale::Everything, change.now)
            .await
    }

    async fn create_root_key(
        &self,
        change: &Change,
        key: &RootKey,
        hash: KeyHash,
    ) -> StoreResult<()> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        usage::require_scheme(
            &mut tx,
            self.backend,
            &key.tenancy,
            key.rate_limit_scheme.as_deref(),
        )
        .await?;
        change.require_power_over(key.scopes)?;
        insert_root_key(&mut tx, key, hash).await?;
        audit(
            &mut tx,
            change,
            "root_key.create",
            &key.id,
            serde_json::json!({ "name": key.name, "scopes": key.scopes.to_names() }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_root_key(&self, hash: KeyHash) -> StoreResult<Option<FoundRootKey>> {
        let row = sqlx::query(ROOT_KEY_BY_HASH)
            .bind(hash.as_bytes().to_vec())
            .fetch_optional(&self.reader)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let key = root_key_from_row(&row)?;
        let windows = match &key.rate_limit_scheme {
            Some(slug) => usage::scheme_windows(&self.reader, &key.tenancy, slug).await?,
            None => Vec::new(),
        };
        Ok(Some(FoundRootKey {
            key,
            secret: secret_from_row(&row)?,
            windows,
        }))
    }

    async fn list_root_keys(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<RootKey>> {
        let rows = sqlx::query(&format!(
            "{ROOT_KEY_SELECT} WHERE r.workspace_id = $1 AND r.environment = $2 AND r.id < $3 \
             ORDER BY r.id DESC LIMIT $4"
        ))
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .bind(cursor_bound(page))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
        .await?;
        let keys = rows
            .iter()
            .map(root_key_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(keys, page.limit, |key| &key.id))
    }

    async fn revoke_root_key(&self, change: &Change, id: &str) -> StoreResult<Changed<RootKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let row = sqlx::query(&format!(
            "{ROOT_KEY_SELECT} WHERE r.id = $1 AND r.workspace_id = $2 AND r.environment = $3{}",
            self.backend.lock_rows("r")
        ))
        .bind(id)
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("root key"))?;
        let mut key = root_key_from_row(&row)?;
        change.require_power_over(key.scopes)?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(change.now);
            sqlx::query("UPDATE root_keys SET revoked_at = $1 WHERE id = $2")
                .bind(change.now.as_millis())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            audit(
                &mut tx,
                change,
                "root_key.revoke",
                id,
                serde_json::json!({}),
            )
            .await?;
        }
        let stale = secret_hashes(&mut tx, id).await?;
        self.finish_change(tx, key, stale, change.now).await
    }

    async fn create_app(&self, change: &Change, app: &App) -> StoreResult<()> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        require_power_over_self_service(&mut tx, change, &app.slug).await?;
        usage::require_scheme(
            &mut tx,
            self.backend,
            &app.tenancy,
            app.rate_limit_scheme.as_deref(),
        )
        .await?;
        sqlx::query(
            "INSERT INTO apps (id, workspace_id, environment, name, slug, permissions, \
             organization_id, key_prefix, created_at, updated_at, rate_limit_scheme) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&app.id)
        .bind(&app.tenancy.workspace_id)
        .bind(app.tenancy.environment.as_str())
        .bind(&app.name)
        .bind(&app.slug)
        .bind(to_json(&app.permissions))
        .bind(&app.organization_id)
        .bind(&app.key_prefix)
        .bind(app.created_at.as_millis())
        .bind(app.updated_at.as_millis())
        .bind(&app.rate_limit_scheme)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::conflict_if_duplicate(Conflict::AppSlugTaken))?;
        audit(
            &mut tx,
            change,
            "app.create",
            &app.id,
            serde_json::json!({ "slug": app.slug, "name": app.name }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn app_by_slug(&self, tenancy: &Tenancy, slug: &str) -> StoreResult<App> {
        let row = sqlx::query(&format!(
            "{APP_SELECT} WHERE workspace_id = $1 AND environment = $2 AND slug = $3 \
             AND deleted_at IS NULL"
        ))
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .bind(slug)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("app"))?;
        app_from_row(&row)
    }

    async fn list_apps(&self, tenancy: &Tenancy, page: &PageRequest) -> StoreResult<Page<App>> {
        let rows = sqlx::query(&format!(
            "{APP_SELECT} WHERE workspace_id = $1 AND environment = $2 AND deleted_at IS NULL \
             AND id < $3 ORDER BY id DESC LIMIT $4"
        ))
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .bind(cursor_bound(page))
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.reader)
        .await?;
        let apps = rows
            .iter()
            .map(app_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(apps, page.limit, |app| &app.id))
    }

    async fn update_app(
        &self,
        change: &Change,
        slug: &str,
        patch: &AppPatch,
    ) -> StoreResult<Changed<App>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut app = app_in_tx(
            &mut tx,
            self.backend,
            Lock::Exclusive,
            &change.tenancy,
            slug,
        )
        .await?;
        if let Some(name) = &patch.name {
            app.name.clone_from(name);
        }
        if patch
            .permissions
            .as_ref()
            .is_some_and(|permissions| *permissions != app.permissions)
        {
            require_power_over_self_service(&mut tx, change, slug).await?;
        }
        if let Some(permissions) = &patch.permissions {
            let removed: Vec<&String> = app
                .permissions
                .iter()
                .filter(|held| !permissions.contains(held))
                .collect();
            for permission in removed {
                // Names are validated to exclude quotes, so a quoted name matches one whole JSON
                // string, case-sensitively and with no wildcards.
                let in_use = sqlx::query(&format!(
                    "SELECT 1 FROM api_keys WHERE app_id = $1 AND revoked_at IS NULL \
                     AND {} LIMIT 1",
                    self.backend.contains_text("permissions", "$2")
                ))
                .bind(&app.id)
                .bind(format!("\"{permission}\""))
                .fetch_optional(&mut *tx)
                .await?;
                if in_use.is_some() {
                    return Err(StoreError::Conflict(Conflict::PermissionInUse));
                }
            }
            app.permissions.clone_from(permissions);
        }
        let scheme_changed = patch
            .rate_limit_scheme
            .as_ref()
            .is_some_and(|scheme| *scheme != app.rate_limit_scheme);
        if let Some(scheme) = &patch.rate_limit_scheme {
            usage::require_scheme(&mut tx, self.backend, &change.tenancy, scheme.as_deref())
                .await?;
            app.rate_limit_scheme.clone_from(scheme);
        }
        app.updated_at = change.now;
        sqlx::query(
            "UPDATE apps SET name = $1, permissions = $2, updated_at = $3, \
             rate_limit_scheme = $5 WHERE id = $4",
        )
        .bind(&app.name)
        .bind(to_json(&app.permissions))
        .bind(app.updated_at.as_millis())
        .bind(&app.id)
        .bind(&app.rate_limit_scheme)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "app.update",
            &app.id,
            serde_json::json!({
                "name": patch.name,
                "permissions": patch.permissions,
                "rate_limit_scheme": patch.rate_limit_scheme,
            }),
        )
        .await?;
        // Cached keys carry their app's limits.
        let stale = if scheme_changed {
            Stale::Everything
        } else {
            Stale::Secrets(Vec::new())
        };
        self.finish_change(tx, app, stale, change.now).await
    }

    async fn delete_app(&self, change: &Change, slug: &str) -> StoreResult<Changed<App>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        require_power_over_self_service(&mut tx, change, slug).await?;
        let app = app_in_tx(
            &mut tx,
            self.backend,
            Lock::Exclusive,
            &change.tenancy,
            slug,
        )
        .await?;
        sqlx::query("UPDATE apps SET deleted_at = $1 WHERE id = $2")
            .bind(change.now.as_millis())
            .bind(&app.id)
            .execute(&mut *tx)
            .await?;
        let revoked_keys: Vec<NewEvent> = sqlx::query(&format!(
            "{KEY_SELECT} WHERE k.app_id = $1 AND k.revoked_at IS NULL"
        ))
        .bind(&app.id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| {
            let mut key = key_from_row(row)?;
            key.revoked_at = Some(change.now);
            Ok(NewEvent::about(
                &change.tenancy,
                EventType::KeyRevoked,
                &key,
            ))
        })
        .collect::<StoreResult<_>>()?;
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1, updated_at = $1 \
             WHERE app_id = $2 AND revoked_at IS NULL",
        )
        .bind(change.now.as_millis())
        .bind(&app.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        audit(
            &mut tx,
            change,
            "app.delete",
            &app.id,
            serde_json::json!({ "slug": app.slug, "revoked_keys": revoked }),
        )
        .await?;
        events::record(&mut tx, self.backend, &revoked_keys, change.now).await?;
        self.finish_change(tx, app, Stale::Everything, change.now)
            .await
    }

    async fn create_key(
        &self,
        change: &Change,
        key: &ApiKey,
        hash: KeyHash,
        owner_quota: Option<u32>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        if let Some(quota) = owner_quota {
            self.require_below_quota(&mut tx, key, quota, change.now)
                .await?;
        }
        // The caller read the app before this transaction; it must still exist, and stay so
        // until the key is in (an app's deletion revokes the keys it can see).
        let app_exists = sqlx::query(&format!(
            "SELECT id FROM apps WHERE id = $1 AND deleted_at IS NULL{}",
            self.backend.lock("apps", Lock::Shared)
        ))
        .bind(&key.app_id)
        .fetch_optional(&mut *tx)
        .await?;
        if app_exists.is_none() {
            return Err(StoreError::NotFound("app"));
        }
        usage::require_scheme(
            &mut tx,
            self.backend,
            &key.tenancy,
            key.rate_limit_scheme.as_deref(),
        )
        .await?;
        let credits = CreditColumns::of(key.credits.as_ref());
        sqlx::query(
            "INSERT INTO api_keys (id, workspace_id, environment, app_id, name, owner_user_id, \
             organization_id, permissions, meta, start, expires_at, enabled, revoked_at, \
             created_at, updated_at, last_used_at, rate_limit_scheme, credits_remaining, \
             credits_refill_period, credits_refill_amount, credits_refilled_at, \
             low_credits_threshold) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22)",
        )
        .bind(&key.id)
        .bind(&key.tenancy.workspace_id)
        .bind(key.tenancy.environment.as_str())
        .bind(&key.app_id)
        .bind(&key.name)
        .bind(&key.owner_user_id)
        .bind(&key.organization_id)
        .bind(to_json(&key.permissions))
        .bind(to_json(&key.meta))
        .bind(&key.start)
        .bind(key.expires_at.map(Timestamp::as_millis))
        .bind(key.enabled)
        .bind(key.revoked_at.map(Timestamp::as_millis))
        .bind(key.created_at.as_millis())
        .bind(key.updated_at.as_millis())
        .bind(key.last_used_at.map(Timestamp::as_millis))
        .bind(&key.rate_limit_scheme)
        .bind(credits.remaining)
        .bind(credits.refill_period)
        .bind(credits.refill_amount)
        .bind(credits.refilled_at)
        .bind(key.low_credits_threshold)
        .execute(&mut *tx)
        .await?;
        insert_secret(&mut tx, hash, &key.id, None).await?;
        audit(
            &mut tx,
            change,
            "key.create",
            &key.id,
            serde_json::json!({ "app": key.app_slug, "name": key.name }),
        )
        .await?;
        events::record(
            &mut tx,
            self.backend,
            &[NewEvent::about(&change.tenancy, EventType::KeyCreated, key)],
            change.now,
        )
        .await?;
        tx.commit().await?;
        self.events_committed.notify_one();
        Ok(())
    }

    async fn import_keys(
        &self,
        change: &Change,
        app_slug: &str,
        keys: &[KeyImport],
    ) -> StoreResult<Vec<bool>> {
        let mut inserted = vec![false; keys.len()];
        if keys.is_empty() {
            return Ok(inserted);
        }
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        // Share-locked: the app cannot be deleted or changed while its keys arrive, and
        // several batches can arrive at once.
        let app = app_in_tx(
            &mut tx,
            self.backend,
            Lock::Shared,
            &change.tenancy,
            app_slug,
        )
        .await?;
        if keys.iter().any(|import| import.key.app_id != app.id) {
            return Err(StoreError::Conflict(Conflict::AppChanged));
        }
        // Secrets first: the unique hash decides which keys are new. Statements stay at a
        // few hundred parameters: SQLite binds them in time quadratic in their number.
        let mut new_ids = std::collections::HashSet::new();
        for chunk in keys.chunks(IMPORT_ROWS_PER_STATEMENT) {
            let mut secrets =
                FilteredQuery::new("INSERT INTO secrets (hash, credential_id, expires_at) VALUES ");
            secrets.push_rows(chunk.iter().map(|import| {
                [
                    Param::Bytes(import.hash.as_bytes().to_vec()),
                    Param::Text(import.key.id.clone()),
                    Param::OptionalInt(None),
                ]
            }));
            secrets.push(" ON CONFLICT (hash) DO NOTHING RETURNING credential_id");
            for row in secrets.fetch_all(&mut *tx).await? {
                new_ids.insert(row.try_get::<String, _>("credential_id")?);
            }
        }
        for (index, import) in keys.iter().enumerate() {
            inserted[index] = new_ids.contains(&import.key.id);
        }
        let fresh: Vec<&KeyImport> = keys
            .iter()
            .zip(&inserted)
            .filter_map(|(import, &new)| new.then_some(import))
            .collect();
        for chunk in fresh.chunks(IMPORT_ROWS_PER_STATEMENT) {
            let mut rows = FilteredQuery::new(
                "INSERT INTO api_keys (id, workspace_id, environment, app_id, name, \
                 owner_user_id, organization_id, permissions, meta, start, expires_at, enabled, \
                 revoked_at, created_at, updated_at, last_used_at) VALUES ",
            );
            rows.push_rows(chunk.iter().map(|import| {
                let key = &import.key;
                [
                    Param::Text(key.id.clone()),
                    Param::Text(key.tenancy.workspace_id.clone()),
                    Param::Text(key.tenancy.environment.as_str().to_owned()),
                    Param::Text(key.app_id.clone()),
                    Param::Text(key.name.clone()),
                    Param::OptionalText(key.owner_user_id.clone()),
                    Param::OptionalText(key.organization_id.clone()),
                    Param::Text(to_json(&key.permissions)),
                    Param::Text(to_json(&key.meta)),
                    Param::Text(key.start.clone()),
                    Param::OptionalInt(key.expires_at.map(Timestamp::as_millis)),
                    Param::Bool(key.enabled),
                    Param::OptionalInt(key.revoked_at.map(Timestamp::as_millis)),
                    Param::Int(key.created_at.as_millis()),
                    Param::Int(key.updated_at.as_millis()),
                    Param::OptionalInt(key.last_used_at.map(Timestamp::as_millis)),
                ]
            }));
            rows.fetch_all(&mut *tx).await?;
        }
        if fresh.iter().any(|import| import.foreign_format) {
            sqlx::query("UPDATE installation SET foreign_secrets = $1 WHERE singleton = 1")
                .bind(true)
                .execute(&mut *tx)
                .await?;
        }
        audit(
            &mut tx,
            change,
            "key.import",
            &app.id,
            serde_json::json!({
                "app": app.slug,
                "imported": fresh.len(),
                "skipped": keys.len() - fresh.len(),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn foreign_secrets_present(&self) -> StoreResult<bool> {
        let row = sqlx::query("SELECT foreign_secrets FROM installation WHERE singleton = 1")
            .fetch_optional(&self.reader)
            .await?;
        row.map_or(Ok(false), |row| flag(&row, "foreign_secrets"))
    }

    async fn key(&self, tenancy: &Tenancy, id: &str) -> StoreResult<ApiKey> {
        let row = sqlx::query(&format!(
            "{KEY_SELECT} WHERE k.id = $1 AND k.workspace_id = $2 AND k.environment = $3"
        ))
        .bind(id)
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("key"))?;
        key_from_row(&row)
    }

    async fn find_key(&self, hash: KeyHash) -> StoreResult<Option<FoundKey>> {
        let row = sqlx::query(KEY_BY_HASH)
            .bind(hash.as_bytes().to_vec())
            .fetch_optional(&self.reader)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let key = key_from_row(&row)?;
        let app_scheme: Option<String> = row.try_get("app_rate_limit_scheme")?;
        let policy = usage::policy_of(&self.reader, &key, app_scheme.as_deref()).await?;
        Ok(Some(FoundKey {
            key,
            secret: secret_from_row(&row)?,
            policy,
        }))
    }

    async fn list_keys(
        &self,
        tenancy: &Tenancy,
        app_id: &str,
        filter: &KeyFilter,
        page: &PageRequest,
        now: Timestamp,
    ) -> StoreResult<Page<ApiKey>> {
        let mut query = FilteredQuery::new(KEY_SELECT);
        query
            .push(" WHERE k.app_id = ")
            .bind(Param::Text(app_id.to_owned()));
        query
            .push(" AND k.workspace_id = ")
            .bind(Param::Text(tenancy.workspace_id.clone()));
        query
            .push(" AND k.environment = ")
            .bind(Param::Text(tenancy.environment.as_str().to_owned()));
        query
            .push(" AND k.id < ")
            .bind(Param::Text(cursor_bound(page)));
        if let Some(owner) = &filter.owner_user_id {
            query
                .push(" AND k.owner_user_id = ")
                .bind(Param::Text(owner.clone()));
        }
        if let Some(organization) = &filter.organization_id {
            query
                .push(" AND k.organization_id = ")
                .bind(Param::Text(organization.clone()));
        }
        if let Some(search) = &filter.search {
            let pattern = escape_like(&search.to_ascii_lowercase());
            query
                .push(" AND (LOWER(k.name) LIKE ")
                .bind(Param::Text(format!("%{pattern}%")));
            query
                .push(" ESCAPE '\\' OR k.start LIKE ")
                .bind(Param::Text(format!("{}%", escape_like(search))));
            query
                .push(" ESCAPE '\\' OR k.id = ")
                .bind(Param::Text(search.clone()));
            query.push(")");
        }
        // The same precedence as `ApiKey::status`: revoked, disabled, expired, active.
        match filter.status {
            None => {}
            Some(KeyStatus::Revoked) => {
                query.push(" AND k.revoked_at IS NOT NULL");
            }
            Some(KeyStatus::Disabled) => {
                query
                    .push(" AND k.revoked_at IS NULL AND k.enabled = ")
                    .bind(Param::Bool(false));
            }
            Some(KeyStatus::Expired) => {
                query
                    .push(" AND k.revoked_at IS NULL AND k.enabled = ")
                    .bind(Param::Bool(true));
                query
                    .push(" AND k.expires_at <= ")
                    .bind(Param::Int(now.as_millis()));
            }
            Some(KeyStatus::Active) => {
                query
                    .push(" AND k.revoked_at IS NULL AND k.enabled = ")
                    .bind(Param::Bool(true));
                query
                    .push(" AND (k.expires_at IS NULL OR k.expires_at > ")
                    .bind(Param::Int(now.as_millis()));
                query.push(")");
            }
        }
        query
            .push(" ORDER BY k.id DESC LIMIT ")
            .bind(Param::Int(i64::from(page.limit) + 1));
        let rows = query.fetch_all(&self.reader).await?;
        let keys = rows
            .iter()
            .map(key_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(keys, page.limit, |key| &key.id))
    }

    async fn update_key(
        &self,
        change: &Change,
        id: &str,
        patch: &KeyPatch,
    ) -> StoreResult<Changed<ApiKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut key = key_in_tx(&mut tx, self.backend, &change.tenancy, id).await?;
        if let Some(Some(scheme)) = &patch.rate_limit_scheme {
            usage::require_scheme(&mut tx, self.backend, &change.tenancy, Some(scheme)).await?;
        }
        patch.apply(&mut key);
        key.updated_at = change.now;
        write_key(&mut tx, &key).await?;
        audit(
            &mut tx,
            change,
            "key.update",
            id,
            serde_json::json!({
                "fields": patch_fields(patch),
                "enabled": patch.enabled,
            }),
        )
        .await?;
        self.record_key_event(&mut tx, change, EventType::KeyUpdated, &key)
            .await?;
        let stale = secret_hashes(&mut tx, id).await?;
        self.finish_change(tx, key, stale, change.now).await
    }

    async fn revoke_key(&self, change: &Change, id: &str) -> StoreResult<Changed<ApiKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut key = key_in_tx(&mut tx, self.backend, &change.tenancy, id).await?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(change.now);
            key.updated_at = change.now;
            write_key(&mut tx, &key).await?;
            audit(&mut tx, change, "key.revoke", id, serde_json::json!({})).await?;
            self.record_key_event(&mut tx, change, EventType::KeyRevoked, &key)
                .await?;
        }
        let stale = secret_hashes(&mut tx, id).await?;
        self.finish_change(tx, key, stale, change.now).await
    }

    async fn rotate_key(
        &self,
        change: &Change,
        id: &str,
        new_secret: (KeyHash, &str),
        previous_expire_at: Option<Timestamp>,
    ) -> StoreResult<Changed<ApiKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut key = key_in_tx(&mut tx, self.backend, &change.tenancy, id).await?;
        if key.revoked_at.is_some() {
            return Err(StoreError::Conflict(Conflict::KeyRevoked));
        }
        let mut affected = supersede_secrets(&mut tx, id, previous_expire_at, change.now).await?;
        insert_secret(&mut tx, new_secret.0, id, None).await?;
        new_secret.1.clone_into(&mut key.start);
        key.updated_at = change.now;
        write_key(&mut tx, &key).await?;
        audit(
            &mut tx,
            change,
            "key.rotate",
            id,
            serde_json::json!({
                "previous_expire_at": previous_expire_at.map(Timestamp::as_millis),
            }),
        )
        .await?;
        self.record_key_event(&mut tx, change, EventType::KeyRotated, &key)
            .await?;
        affected.push(new_secret.0);
        self.finish_change(tx, key, Stale::Secrets(affected), change.now)
            .await
    }

    async fn delete_key(&self, change: &Change, id: &str) -> StoreResult<Changed<ApiKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut key = key_in_tx(&mut tx, self.backend, &change.tenancy, id).await?;
        let stale = secret_hashes(&mut tx, id).await?;
        sqlx::query("DELETE FROM secrets WHERE credential_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            change,
            "key.delete",
            id,
            serde_json::json!({ "app": key.app_slug, "name": key.name }),
        )
        .await?;
        key.revoked_at.get_or_insert(change.now);
        self.record_key_event(&mut tx, change, EventType::KeyDeleted, &key)
            .await?;
        self.finish_change(tx, key, stale, change.now).await
    }

    async fn record_last_used(&self, uses: &[(String, Timestamp)]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        // One statement per chunk, never a transaction across round trips: a node that
        // stalls mid-batch must not hold key rows that other nodes' revocations wait for.
        // Rows are locked in id order, as every writer of many keys locks them, so that
        // batches and deletions never deadlock.
        for chunk in uses.chunks(BATCH_ROWS_PER_STATEMENT) {
            let mut update = FilteredQuery::new("WITH used (id, at) AS (VALUES ");
            update.push_rows(
                chunk
                    .iter()
                    .map(|(id, at)| [Param::Text(id.clone()), Param::Int(at.as_millis())]),
            );
            update.push(&format!(
                "), locked AS MATERIALIZED (SELECT k.id, used.at FROM api_keys k \
                 JOIN used ON used.id = k.id ORDER BY k.id{}) \
                 UPDATE api_keys SET last_used_at = locked.at FROM locked \
                 WHERE api_keys.id = locked.id \
                 AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < locked.at)",
                self.backend.lock_rows("k")
            ));
            update.fetch_all(&self.writer).await?;
        }
        Ok(())
    }

    async fn list_audit(
        &self,
        tenancy: &Tenancy,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        let mut query = FilteredQuery::new(
            "SELECT id, workspace_id, environment, actor, action, target, request_id, details, \
             created_at FROM audit_log WHERE workspace_id = ",
        );
        query.bind(Param::Text(tenancy.workspace_id.clone()));
        query
            .push(" AND environment = ")
            .bind(Param::Text(tenancy.environment.as_str().to_owned()));
        query
            .push(" AND id < ")
            .bind(Param::Text(cursor_bound(page)));
        if let Some(action) = &filter.action {
            query
                .push(" AND action = ")
                .bind(Param::Text(action.clone()));
        }
        if let Some(target) = &filter.target {
            query
                .push(" AND target = ")
                .bind(Param::Text(target.clone()));
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .bind(Param::Int(i64::from(page.limit) + 1));
        let rows = query.fetch_all(&self.reader).await?;
        let entries = rows
            .iter()
            .map(|row| {
                let details: String = row.try_get("details")?;
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    tenancy: tenancy_from_row(row)?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    request_id: row.try_get("request_id")?,
                    details: serde_json::from_str(&details).map_err(|_| corrupt("details"))?,
                    created_at: timestamp(row, "created_at")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(paginate(entries, page.limit, |entry| &entry.id))
    }
}

/// Rows per multi-row INSERT of an import.
const IMPORT_ROWS_PER_STATEMENT: usize = 100;
/// The same bound for the `last_used_at` and usage write-back batches.
const BATCH_ROWS_PER_STATEMENT: usize = 100;

/// A value for a [`FilteredQuery`].
enum Param {
    Text(String),
    OptionalText(Option<String>),
    Int(i64),
    OptionalInt(Option<i64>),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// SQL assembled from optional filters. sqlx's `QueryBuilder` writes the `Any` driver's `?`
/// placeholders, which PostgreSQL does not accept, so this numbers `$N` itself.
struct FilteredQuery {
    sql: String,
    params: Vec<Param>,
}

impl FilteredQuery {
    fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            params: Vec::new(),
        }
    }

    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    fn bind(&mut self, param: Param) -> &mut Self {
        self.params.push(param);
        self.sql.push_str(&format!("${}", self.params.len()));
        self
    }

    /// Appends `($1, $2), ($3, $4)…`: one tuple per row, for `VALUES` lists.
    fn push_rows<Row: IntoIterator<Item = Param>>(
        &mut self,
        rows: impl IntoIterator<Item = Row>,
    ) -> &mut Self {
        for (index, row) in rows.into_iter().enumerate() {
            self.push(if index == 0 { "(" } else { ", (" });
            for (position, value) in row.into_iter().enumerate() {
                if position > 0 {
                    self.push(", ");
                }
                self.bind(value);
            }
            self.push(")");
        }
        self
    }

    async fn fetch_all<'e, E>(self, executor: E) -> Result<Vec<AnyRow>, sqlx::Error>
    where
        E: Executor<'e, Database = sqlx::Any>,
    {
        let mut query = sqlx::query(&self.sql);
        for param in self.params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::OptionalText(text) => query.bind(text),
                Param::Int(number) => query.bind(number),
                Param::OptionalInt(number) => query.bind(number),
                Param::Bool(flag) => query.bind(flag),
                Param::Bytes(bytes) => query.bind(bytes),
            };
        }
        query.fetch_all(executor).await
    }
}

/// Ids sort by creation time, and every id sorts below `~`, so with no cursor the first page
/// starts at the newest record.
fn cursor_bound(page: &PageRequest) -> String {
    page.cursor.clone().unwrap_or_else(|| "~".to_owned())
}

fn patch_fields(patch: &KeyPatch) -> Vec<&'static str> {
    [
        ("name", patch.name.is_some()),
        ("owner_user_id", patch.owner_user_id.is_some()),
        ("permissions", patch.permissions.is_some()),
        ("meta", patch.meta.is_some()),
        ("expires_at", patch.expires_at.is_some()),
        ("enabled", patch.enabled.is_some()),
        ("credits", patch.credits.is_some()),
        ("rate_limit_scheme", patch.rate_limit_scheme.is_some()),
        (
            "low_credits_threshold",
            patch.low_credits_threshold.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect()
}

fn environment_from_row(row: &AnyRow) -> StoreResult<EnvironmentSettings> {
    let tenancy = tenancy_from_row(row)?;
    Ok(EnvironmentSettings {
        workspace_id: tenancy.workspace_id,
        environment: tenancy.environment,
        enhanced_security: flag(row, "enhanced_security")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

/// Self-service keys get every permission of their app, which a public key names by slug:
/// changing that app's permissions, or deleting it and making another under its slug,
/// changes what end users can issue themselves, which is `keys:write`'s power.
async fn require_power_over_self_service(
    tx: &mut Transaction<'_>,
    change: &Change,
    slug: &str,
) -> StoreResult<()> {
    let delegated = sqlx::query(
        "SELECT 1 FROM public_keys WHERE workspace_id = $1 AND environment = $2 \
         AND self_service_app = $3 LIMIT 1",
    )
    .bind(&change.tenancy.workspace_id)
    .bind(change.tenancy.environment.as_str())
    .bind(slug)
    .fetch_optional(&mut **tx)
    .await?;
    if delegated.is_some() {
        change.require_power_over(keyward_core::scope::Scope::KeysWrite.into())?;
    }
    Ok(())
}

async fn insert_root_key(
    tx: &mut Transaction<'_>,
    key: &RootKey,
    hash: KeyHash,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO root_keys (id, workspace_id, environment, name, scopes, start, created_at, \
         revoked_at, rate_limit_scheme, limit_meter, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&key.id)
    .bind(&key.tenancy.workspace_id)
    .bind(key.tenancy.environment.as_str())
    .bind(&key.name)
    .bind(to_json(&key.scopes.to_names()))
    .bind(&key.start)
    .bind(key.created_at.as_millis())
    .bind(key.revoked_at.map(Timestamp::as_millis))
    .bind(&key.rate_limit_scheme)
    .bind(&key.limit_meter)
    .bind(key.expires_at.map(Timestamp::as_millis))
    .execute(&mut **tx)
    .await?;
    insert_secret(tx, hash, &key.id, None).await
}

/// `text` as a literal inside a `LIKE … ESCAPE '\'` pattern.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
