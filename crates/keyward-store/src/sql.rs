//! The SQL implementation of [`Store`], on SQLite (embedded, the default) or PostgreSQL, through
//! sqlx's runtime-selected `Any` driver, so that one body of queries serves both backends.
//! What differs (schema types, row locks, the writer pool) is named by [`Backend`].
//!
//! Queries use `$N` placeholders, numbered in order of first use, which every backend accepts.
//!
//! This file holds the connection, what differs between backends, and the protocol every
//! change follows (`begin_change` holds the environment and the actor; `finish_change`
//! commits and names what caches must forget). Each subject has a module of its own: `keys`,
//! `apps`, `workspace` (bootstrap, environments, root keys), `credentials`, `usage`,
//! `sandbox`, `events`, `analytics` and `audit`. They share `rows` (rows to records),
//! `query` (statements built at run time, and the keyset pagination every list uses) and
//! `secrets` (hashed secrets of every kind of credential).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::model::{Environment, Tenancy};
use keyward_core::Timestamp;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

use crate::cluster::{Announced, Stale};
use crate::{Change, Changed, Forbidden, Store, StoreError, StoreResult};

mod analytics;
mod apps;
mod audit;
mod credentials;
pub(crate) mod events;
mod keys;
mod leaks;
mod portal;
mod query;
mod rows;
mod sandbox;
mod secrets;
mod usage;
mod webhooks;
mod workspace;

// What the subject modules share, named here so each can take it from `super`.
use apps::app_in_tx;
use audit::audit;
use query::*;
use rows::*;
use secrets::*;
use workspace::insert_root_key;

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
    /// The larger of two numbers.
    fn greatest(self, left: &str, right: &str) -> String {
        match self {
            Self::Sqlite => format!("MAX({left}, {right})"),
            Self::Postgres => format!("GREATEST({left}, {right})"),
        }
    }

    /// `column`, a non-negative number, as 16 zero-padded digits (so text sorts as numbers).
    fn padded_number(self, column: &str) -> String {
        match self {
            Self::Sqlite => format!("printf('%016d', {column})"),
            Self::Postgres => format!("lpad(CAST({column} AS TEXT), 16, '0')"),
        }
    }

    /// Locks rows against other writers but not against inserts that reference them
    /// (PostgreSQL's foreign-key checks take `KEY SHARE`, which `FOR UPDATE` would block).
    fn lock_rows_keeping_keys(self, table: &str) -> String {
        match self {
            Self::Sqlite => String::new(),
            Self::Postgres => format!(" FOR NO KEY UPDATE OF {table}"),
        }
    }

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
/// key (`wk_…`), the public key an end user acts through (`<pk id>:<subject>`), or the
/// portal session a customer acts through (`<ps id>:<owner_user_id>`).
fn actor_row_query(actor: &str) -> Option<&'static str> {
    if actor.starts_with("rk_") {
        Some("SELECT a.id FROM root_keys a WHERE a.id = $1 AND a.revoked_at IS NULL")
    } else if actor.starts_with("wk_") {
        Some("SELECT a.id FROM workspace_keys a WHERE a.id = $1")
    } else if actor.starts_with("ps_") {
        Some(portal::LIVE_PORTAL_SESSION)
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
    /// Woken after a commit that may have recorded events, for this node's webhook worker
    /// (which queues their deliveries).
    deliveries_queued: std::sync::Arc<tokio::sync::Notify>,
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
            deliveries_queued: std::sync::Arc::default(),
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
        let actor_id = change.actor.split(':').next().unwrap_or_default();
        self.hold_live_actor(&mut tx, &change.actor, actor_id)
            .await?;
        // A customer portal session acts for its maker: the session must be open, and its
        // maker held like any actor, so that revoking the maker is ordered with this change.
        if change.actor.starts_with("ps_") {
            let session = sqlx::query(
                "SELECT created_by FROM portal_sessions WHERE id = $1 \
                 AND redeemed_at IS NOT NULL AND expires_at > $2",
            )
            .bind(actor_id)
            .bind(change.now.as_millis())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotPermitted(Forbidden::ActorRevoked))?;
            let maker: String = sqlx::Row::try_get(&session, "created_by")?;
            self.hold_live_actor(&mut tx, &maker, &maker).await?;
        }
        Ok(tx)
    }

    /// Refuses unless `actor` (a credential, by its id `actor_id`) is live, and holds its row
    /// against revocation until `tx` ends. Actors that are not credentials pass.
    async fn hold_live_actor(
        &self,
        tx: &mut Transaction<'_>,
        actor: &str,
        actor_id: &str,
    ) -> StoreResult<()> {
        let Some(query) = actor_row_query(actor) else {
            return Ok(());
        };
        let live = sqlx::query(&format!("{query}{}", self.backend.lock("a", Lock::Shared)))
            .bind(actor_id)
            .fetch_optional(&mut **tx)
            .await?;
        if live.is_none() {
            return Err(StoreError::NotPermitted(Forbidden::ActorRevoked));
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
                let published_at = tokio::time::Instant::now();
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
                Some(Announced::from_rows(&rows, published_at)?)
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
        self.deliveries_queued.notify_one();
        Ok(Changed {
            record,
            stale,
            propagation: announced.map(Announced::committed),
        })
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
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

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestDatabase, DATABASE_URL_VARIABLE};

    /// A stalled node's locks are released only if its sessions carry the timeout.
    #[tokio::test]
    async fn every_postgres_session_ends_transactions_left_idle() {
        let Ok(admin_url) = std::env::var(DATABASE_URL_VARIABLE) else {
            eprintln!("skipped: set {DATABASE_URL_VARIABLE} to check PostgreSQL sessions");
            return;
        };
        let database = TestDatabase::create(&admin_url).await.unwrap();
        let store = SqlStore::connect(&StoreOptions {
            url: database.url.clone(),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            node_id: StoreOptions::new_node_id(),
        })
        .await
        .unwrap();
        let mut tx = store.writer.begin().await.unwrap();
        let timeout: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(timeout, "2s");
        // Left idle inside the transaction, the session is ended by the server.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(sqlx::query("SELECT 1").execute(&mut *tx).await.is_err());
        drop(tx);
        store.close().await;
    }
}
