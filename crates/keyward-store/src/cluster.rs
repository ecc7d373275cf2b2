//! Cache coherence across the nodes that share one PostgreSQL database.
//!
//! Every node keeps a verification cache. A change that a cache must forget is numbered,
//! recorded and announced (`NOTIFY`) in the transaction of the change itself
//! (`keyward_publish_invalidation`, migration 0002). Each node applies announcements in order
//! and acknowledges them. The node that made the change returns only once every other node
//! has acknowledged, or once that node's lease has surely run out.
//!
//! A node trusts its cache only under a **lease**. A heartbeat reads the latest number under a
//! share lock, records the node in `cluster_nodes` and sends the node a ping over its own
//! notification connection. Notifications arrive in commit order, so by the time the ping
//! arrives every change numbered at or below the heartbeat's read has been applied, and the
//! node may trust its cache until `lease` after the heartbeat started. When the connection
//! drops, trust ends at once; it returns only after the node has reconnected, caught up from
//! `cache_invalidations` and received a fresh ping. A node that hangs simply lets its lease
//! run out. In every case a node that may have missed a change verifies from storage (and
//! answers 503 when storage is unreachable) instead of answering from its cache: the design
//! fails safe, never open. ARCHITECTURE.md has the argument in full.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_core::KeyHash;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor, Row};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::StoreResult;

const INVALIDATION_CHANNEL: &str = "keyward_invalidation";
const ACK_CHANNEL: &str = "keyward_ack";
/// NOTIFY payloads must stay under 8000 bytes; longer lists are read from the table.
const MAX_PAYLOAD_BYTES: usize = 7_800;
/// Acknowledgements kept per node.
const RECENT_ACKS: usize = 16;
/// Announcements whose nonce a node remembers, to tell a repeat from a new history.
const REMEMBERED_NONCES: usize = 1024;

/// How far this node has applied the announcements, and the nonces of the latest ones: the
/// counter alone cannot tell its history from a new one after it went back (migration 0009).
#[derive(Debug, Default)]
struct History {
    seq: Option<u64>,
    nonces: VecDeque<(u64, i64)>,
}

impl History {
    fn record(&mut self, seq: u64, nonce: Option<i64>) {
        self.seq = Some(seq);
        if let Some(nonce) = nonce {
            self.nonces.push_back((seq, nonce));
            while self.nonces.len() > REMEMBERED_NONCES {
                self.nonces.pop_front();
            }
        }
    }

    fn nonce_of(&self, seq: u64) -> Option<i64> {
        self.nonces
            .iter()
            .rev()
            .find(|(remembered, _)| *remembered == seq)
            .map(|(_, nonce)| *nonce)
    }

    /// Whether an announcement numbered `seq` (at or below this node's number) with `nonce`
    /// belongs to another history than the one this node applied: its nonce differs from the
    /// one remembered, or none is remembered, since every number a repeat can carry (one
    /// announced between LISTEN and the catch-up) was recorded. An announcement without a
    /// nonce (from a node of the previous version) cannot tell.
    fn is_foreign(&self, seq: u64, nonce: Option<i64>) -> bool {
        match (nonce, self.nonce_of(seq)) {
            (None, _) => false,
            (Some(nonce), Some(known)) => nonce != known,
            (Some(_), None) => true,
        }
    }

    fn start_over(&mut self, seq: u64, nonce: Option<i64>) {
        self.nonces.clear();
        self.record(seq, nonce);
    }
}

/// An announcement's payload: `<seq><tail>;<nonce>` (`Stale::payload_tail`).
fn parse_announcement(payload: &str) -> Option<(u64, &str, Option<i64>)> {
    let (announcement, nonce) = match payload.rsplit_once(';') {
        Some((announcement, nonce)) => (announcement, nonce.parse::<i64>().ok()),
        None => (payload, None),
    };
    let (number, tail) = announcement.split_once(':').unwrap_or((announcement, ""));
    Some((number.parse().ok()?, tail, nonce))
}

/// What caches must forget after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// The secrets with these hashes.
    Secrets(Vec<KeyHash>),
    /// Everything, for changes that touch many keys at once (an app's deletion).
    Everything,
}

impl Stale {
    pub(crate) fn to_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Self::Secrets(hashes) => Some(hashes.iter().flat_map(|h| *h.as_bytes()).collect()),
            Self::Everything => None,
        }
    }

    fn from_bytes(bytes: Option<&[u8]>) -> Option<Self> {
        match bytes {
            None => Some(Self::Everything),
            Some(bytes) if bytes.len() % 32 == 0 => bytes
                .chunks(32)
                .map(KeyHash::from_slice)
                .collect::<Option<Vec<_>>>()
                .map(Self::Secrets),
            Some(_) => None,
        }
    }

    /// What follows the number in the NOTIFY payload: `:*`, `:<hex>,<hex>…`, or nothing when
    /// the list is too long to announce and must be read from the table.
    pub(crate) fn payload_tail(&self) -> String {
        match self {
            Self::Everything => ":*".to_owned(),
            Self::Secrets(hashes) if hashes.len() * 65 < MAX_PAYLOAD_BYTES => {
                let listed: Vec<String> = hashes.iter().map(|h| h.to_hex()).collect();
                format!(":{}", listed.join(","))
            }
            Self::Secrets(_) => String::new(),
        }
    }

    fn parse_payload_tail(tail: &str) -> Option<Self> {
        match tail {
            "*" => Some(Self::Everything),
            "" => Some(Self::Secrets(Vec::new())),
            listed => listed
                .split(',')
                .map(KeyHash::from_hex)
                .collect::<Option<Vec<_>>>()
                .map(Self::Secrets),
        }
    }
}

/// The cache a node keeps coherent with the cluster.
pub trait ClusterCache: Send + Sync + 'static {
    /// An announced change: what it made stale, and the hashes of what it created.
    fn forget(&self, stale: &Stale);
    /// This node may have missed announcements (its first start, a gap longer than the
    /// table keeps, the counter going back): everything it holds is forgotten, and whatever
    /// it learned of new credentials from announcements must be learned again from storage.
    fn lost_track(&self) {
        self.forget(&Stale::Everything);
    }
    /// The cache may answer until `deadline`, unless told otherwise before.
    fn trust_until(&self, deadline: std::time::Instant);
    /// The cache must not answer until trusted again.
    fn distrust(&self);
    /// Whether some node imported secrets in a foreign format (read on every heartbeat, so
    /// that every node starts looking them up soon after the first import anywhere).
    fn foreign_secrets(&self, present: bool);
}

/// An announced change: the nodes whose caches must hear of it before the change's call
/// returns, each with the moment its lease surely ends.
#[derive(Debug, Clone)]
pub struct Propagation {
    pub seq: u64,
    pub members: Vec<(String, Instant)>,
    /// Taken before the announcement was numbered: only acknowledgements that arrive after
    /// it can be about it (see `Cluster::await_propagation`).
    pub published_at: Instant,
}

/// The members `keyward_publish_invalidation` named, before the transaction committed.
#[derive(Debug)]
pub(crate) struct Announced {
    seq: u64,
    members: Vec<(String, i64)>,
    published_at: Instant,
}

impl Announced {
    /// `published_at` is read before the statement that numbers the announcement runs.
    pub(crate) fn from_rows(
        rows: &[sqlx::any::AnyRow],
        published_at: Instant,
    ) -> StoreResult<Self> {
        let mut seq = 0_i64;
        let mut members = Vec::new();
        for row in rows {
            seq = row.try_get("seq")?;
            let member: Option<String> = row.try_get("member")?;
            let remaining: Option<i64> = row.try_get("remaining_ms")?;
            if let (Some(member), Some(remaining)) = (member, remaining) {
                members.push((member, remaining));
            }
        }
        Ok(Self {
            seq: u64::try_from(seq).unwrap_or(0),
            members,
            published_at,
        })
    }

    /// Turns the remaining lease times into deadlines. Called after the commit, so that each
    /// deadline falls after the moment the database measured the remaining time; the margin
    /// covers millisecond rounding and clock-rate drift between machines.
    pub(crate) fn committed(self) -> Propagation {
        let now = Instant::now();
        let members = self
            .members
            .into_iter()
            .map(|(node, remaining_ms)| {
                let remaining = Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0));
                (
                    node,
                    now + remaining + remaining / 100 + Duration::from_millis(5),
                )
            })
            .collect();
        Propagation {
            seq: self.seq,
            members,
            published_at: self.published_at,
        }
    }
}

/// Timing of the coherence protocol.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How long one heartbeat lets a node trust its cache. It bounds how long a change can
    /// wait for a node that died or lost the database.
    pub lease: Duration,
    /// How often a node renews its lease; a few times per lease.
    pub heartbeat_interval: Duration,
    /// How long announcements stay in `cache_invalidations` for nodes catching up. A node
    /// away for longer empties its cache instead.
    pub retention: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(2),
            heartbeat_interval: Duration::from_millis(250),
            retention: Duration::from_secs(600),
        }
    }
}

/// How one propagation went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PropagationReport {
    /// Nodes that did not acknowledge in time: the call waited for their leases to end.
    pub lapsed: Vec<String>,
}

/// Where a change meets the caches that must forget what it touched: this node's at once,
/// and, once the node has joined a cluster, every other node's before the change's call
/// returns. A change is made and settled in one call, [`Coherence::settle`].
pub struct Coherence {
    cache: Arc<dyn ClusterCache>,
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// Told how many nodes a settlement waited out (their leases ended unacknowledged).
    on_lapses: Box<dyn Fn(usize) + Send + Sync>,
}

impl std::fmt::Debug for Coherence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coherence")
            .field("cluster", &self.cluster.get())
            .finish_non_exhaustive()
    }
}

impl Coherence {
    pub fn new(
        cache: Arc<dyn ClusterCache>,
        on_lapses: impl Fn(usize) + Send + Sync + 'static,
    ) -> Self {
        Self {
            cache,
            cluster: std::sync::OnceLock::new(),
            on_lapses: Box::new(on_lapses),
        }
    }

    /// Joins the cluster of nodes sharing the database at `url`; see [`Cluster::join`].
    pub async fn join(&self, url: &str, node_id: &str, options: ClusterOptions) -> StoreResult<()> {
        let cluster = Cluster::join(url, node_id, options, Arc::clone(&self.cache)).await?;
        if self.cluster.set(cluster).is_err() {
            tracing::warn!("this node already joined a cluster");
        }
        Ok(())
    }

    /// Leaves the cluster, if this node joined one.
    pub async fn leave(&self) {
        if let Some(cluster) = self.cluster.get() {
            cluster.leave().await;
        }
    }

    /// Waits for a change and settles it: once this returns, no cache on any node answers
    /// from what the change made stale. A commit whose outcome is unknown is settled as if
    /// made, then reported as [`StoreError::Unavailable`] (Keyward's changes are safe to
    /// repeat). Run it where the caller's going away cannot cancel it between the commit
    /// and the settling.
    pub async fn settle<T>(
        &self,
        change: impl std::future::Future<Output = StoreResult<crate::Changed<T>>>,
    ) -> StoreResult<crate::Changed<T>> {
        match change.await {
            Ok(changed) => {
                self.forget_everywhere(&changed.stale, changed.propagation.as_ref())
                    .await;
                Ok(changed)
            }
            Err(crate::StoreError::UncertainCommit {
                source,
                stale,
                propagation,
            }) => {
                self.forget_everywhere(&stale, propagation.as_ref()).await;
                Err(crate::StoreError::Unavailable(source))
            }
            Err(error) => Err(error),
        }
    }

    async fn forget_everywhere(&self, stale: &Stale, propagation: Option<&Propagation>) {
        self.cache.forget(stale);
        if let (Some(propagation), Some(cluster)) = (propagation, self.cluster.get()) {
            let report = cluster.await_propagation(propagation).await;
            if !report.lapsed.is_empty() {
                (self.on_lapses)(report.lapsed.len());
            }
        }
    }
}

/// This node's part in the cluster: see the module documentation.
pub struct Cluster {
    node_id: String,
    pool: PgPool,
    /// Where each listening session connects: every session opens a pool of its own, so
    /// that a connection that died in silence, whose `UNLISTEN *` on drop may wait for TCP
    /// to give up, never holds the slot the next session needs.
    listener_connect: PgConnectOptions,
    lease: Duration,
    /// The current session's pool, closed when the node leaves.
    listener_pool: Mutex<Option<PgPool>>,
    /// Whether this node hears announcements now. A node that does not must let its lease
    /// run out rather than renew it, so that changes stop waiting for it (its cache is
    /// distrusted meanwhile).
    listening: std::sync::atomic::AtomicBool,
    /// Each node's latest acknowledgements, with when they arrived.
    acks: Mutex<HashMap<String, VecDeque<(u64, Instant)>>>,
    ack_arrived: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Heartbeats sent and not yet answered by their ping: number and start.
type PendingPings = Arc<Mutex<VecDeque<(u64, std::time::Instant)>>>;

impl Cluster {
    /// Joins the cluster of nodes sharing the database at `url` and starts keeping `cache`
    /// coherent. The cache stays distrusted until the first heartbeat's ping arrives.
    pub async fn join(
        url: &str,
        node_id: &str,
        options: ClusterOptions,
        cache: Arc<dyn ClusterCache>,
    ) -> StoreResult<Arc<Self>> {
        cache.distrust();
        // Named, so that an operator (or a test) can find this node's connections.
        let connect_options = PgConnectOptions::from_str(url)?
            .application_name(&format!("keyward_{node_id}"))
            .disable_statement_logging();
        let pool = protocol_pool(2, options.lease)
            .connect_with(connect_options.clone())
            .await?;
        let cluster = Arc::new(Self {
            node_id: node_id.to_owned(),
            pool,
            listener_connect: connect_options,
            lease: options.lease,
            listener_pool: Mutex::new(None),
            listening: std::sync::atomic::AtomicBool::new(false),
            acks: Mutex::new(HashMap::new()),
            ack_arrived: Notify::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let lease = options.lease;
        let (applied_tx, applied_rx) = watch::channel(0_u64);
        let pings: PendingPings = Arc::default();
        let listener = tokio::spawn(Self::listen(
            Arc::clone(&cluster),
            options.clone(),
            Arc::clone(&cache),
            applied_tx,
            Arc::clone(&pings),
        ));
        let heartbeat = tokio::spawn(Self::heartbeat(
            Arc::clone(&cluster),
            options,
            Arc::clone(&cache),
            applied_rx.clone(),
            pings,
        ));
        let acknowledger = tokio::spawn(Self::acknowledge(Arc::clone(&cluster), applied_rx, lease));
        cluster
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend([listener, heartbeat, acknowledger]);
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Waits until every node named by `propagation` has applied it, or its lease has ended.
    pub async fn await_propagation(&self, propagation: &Propagation) -> PropagationReport {
        let mut report = PropagationReport::default();
        for (node, lease_ends) in &propagation.members {
            loop {
                let arrived = self.ack_arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                if self.acknowledged_since(node, propagation.seq, propagation.published_at) {
                    break;
                }
                if Instant::now() >= *lease_ends {
                    report.lapsed.push(node.clone());
                    break;
                }
                tokio::select! {
                    () = &mut arrived => {}
                    () = tokio::time::sleep_until(*lease_ends) => {}
                }
            }
        }
        if !report.lapsed.is_empty() {
            tracing::warn!(
                nodes = ?report.lapsed,
                "nodes did not acknowledge a cache invalidation; waited for their leases to end"
            );
        }
        report
    }

    /// Whether `node` acknowledged `seq` or a later number after `since`. An older
    /// acknowledgement cannot be about a change numbered after it arrived: counted anyway, it
    /// would let a change return early after the counter went back (a node that applied 100
    /// in the lost history would seem to have applied the new 99).
    fn acknowledged_since(&self, node: &str, seq: u64, since: Instant) -> bool {
        self.acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(node)
            .is_some_and(|acks| {
                acks.iter()
                    .any(|(acked, arrived)| *acked >= seq && *arrived >= since)
            })
    }

    /// Stops this node's tasks and removes it from `cluster_nodes`, so that changes stop
    /// waiting for it.
    pub async fn leave(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        let removed = sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1")
            .bind(&self.node_id)
            .execute(&self.pool)
            .await;
        if let Err(error) = removed {
            tracing::warn!(%error, "could not leave the cluster; others wait out this lease");
        }
        self.pool.close().await;
        let listener_pool = self
            .listener_pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(listener_pool) = listener_pool {
            listener_pool.close().await;
        }
    }

    fn ping_channel(&self) -> String {
        format!("keyward_ping_{}", self.node_id)
    }

    /// Renews the lease: see the module documentation.
    async fn heartbeat(
        self: Arc<Self>,
        options: ClusterOptions,
        cache: Arc<dyn ClusterCache>,
        applied: watch::Receiver<u64>,
        pings: PendingPings,
    ) {
        let lease_ms = i64::try_from(options.lease.as_millis()).unwrap_or(i64::MAX);
        let retention_ms = i64::try_from(options.retention.as_millis()).unwrap_or(i64::MAX);
        let mut ticks = tokio::time::interval(options.heartbeat_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut number = 0_u64;
        let mut failing = false;
        loop {
            ticks.tick().await;
            if !self.listening.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            number += 1;
            {
                let mut pending = pings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                pending.push_back((number, std::time::Instant::now()));
                while pending.len() > 64 {
                    pending.pop_front();
                }
            }
            let applied_seq = i64::try_from(*applied.borrow()).unwrap_or(i64::MAX);
            // A heartbeat stuck on a silent network must not hold up the next one: dropping
            // it drops its connection, and the next tick starts afresh.
            let outcome = tokio::time::timeout(
                options.lease,
                self.beat(number, lease_ms, applied_seq, retention_ms),
            )
            .await
            .unwrap_or_else(|_| Err(timed_out()));
            if let Ok(foreign_secrets) = outcome {
                cache.foreign_secrets(foreign_secrets);
            }
            match outcome {
                Ok(_) if failing => {
                    tracing::info!("cluster heartbeat recovered");
                    failing = false;
                }
                Ok(_) => {}
                Err(error) if !failing => {
                    tracing::warn!(%error, "cluster heartbeat failed; the cache is distrusted when the lease ends");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    async fn beat(
        &self,
        number: u64,
        lease_ms: i64,
        applied_seq: i64,
        retention_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        // One statement, so the share lock is held for no round trip: a node that stalls
        // after sending it cannot keep other nodes' changes waiting on `cluster_state`. The
        // registration reads the locked row, so the lock is taken before it.
        let row = sqlx::query(
            "WITH held AS (SELECT singleton FROM cluster_state WHERE singleton = 1 FOR SHARE), \
             registered AS ( \
               INSERT INTO cluster_nodes (node_id, lease_ms, heartbeat_ms, applied_seq) \
               SELECT $1, $2, floor(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT, $3 FROM held \
               ON CONFLICT (node_id) DO UPDATE SET lease_ms = EXCLUDED.lease_ms, \
               heartbeat_ms = EXCLUDED.heartbeat_ms, applied_seq = EXCLUDED.applied_seq \
               RETURNING node_id) \
             SELECT pg_notify($4, $5)::TEXT AS ping, i.foreign_secrets FROM registered \
             LEFT JOIN installation i ON i.singleton = 1",
        )
        .bind(&self.node_id)
        .bind(lease_ms)
        .bind(applied_seq)
        .bind(self.ping_channel())
        .bind(number.to_string())
        .fetch_one(&self.pool)
        .await?;
        let foreign_secrets: Option<bool> = row.try_get("foreign_secrets")?;
        // Housekeeping, now and then, by whichever node gets there: announcements past their
        // retention, and nodes long gone (a node that comes back simply registers again).
        if number.is_multiple_of(64) {
            sqlx::query(
                "DELETE FROM cache_invalidations WHERE created_at < \
                 (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT - $1",
            )
            .bind(retention_ms)
            .execute(&self.pool)
            .await?;
            sqlx::query(
                "DELETE FROM cluster_nodes WHERE heartbeat_ms + 10 * lease_ms < \
                 (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT",
            )
            .execute(&self.pool)
            .await?;
        }
        Ok(foreign_secrets.unwrap_or(false))
    }

    /// Tells the other nodes how far this one has applied, coalescing bursts.
    async fn acknowledge(self: Arc<Self>, mut applied: watch::Receiver<u64>, timeout: Duration) {
        while applied.changed().await.is_ok() {
            let seq = *applied.borrow_and_update();
            let sent = tokio::time::timeout(
                timeout,
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(ACK_CHANNEL)
                    .bind(format!("{}:{seq}", self.node_id))
                    .execute(&self.pool),
            )
            .await;
            if !matches!(sent, Ok(Ok(_))) {
                // The next change, or the lease, settles it; avoid spinning while down.
                tokio::time::sleep(Duration::from_millis(100)).await;
                applied.mark_changed();
            }
        }
    }

    /// Receives announcements, acknowledgements and pings; reconnects when the connection
    /// drops, distrusting the cache until it has caught up.
    async fn listen(
        self: Arc<Self>,
        options: ClusterOptions,
        cache: Arc<dyn ClusterCache>,
        applied: watch::Sender<u64>,
        pings: PendingPings,
    ) {
        let mut history = History::default();
        let mut backoff = Duration::from_millis(50);
        loop {
            self.listening
                .store(false, std::sync::atomic::Ordering::SeqCst);
            cache.distrust();
            let session = async {
                // The notification connection has a pool of its own, so that it can never
                // take the slot heartbeats and acknowledgements need; a fresh one per session.
                let listener_pool =
                    protocol_pool(1, self.lease).connect_lazy_with(self.listener_connect.clone());
                *self
                    .listener_pool
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(listener_pool.clone());
                let mut listener = PgListener::connect_with(&listener_pool).await?;
                listener.ignore_pool_close_event(true);
                listener
                    .listen_all([INVALIDATION_CHANNEL, ACK_CHANNEL, &self.ping_channel()])
                    .await?;
                self.catch_up(&mut history, cache.as_ref(), &applied)
                    .await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let session = tokio::time::timeout(options.lease, session)
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            let mut listener = match session {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for cluster changes; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            self.listening
                .store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::debug!("listening for cluster changes");
            loop {
                // Pings arrive several times per lease; silence for two leases means the
                // connection died without saying so.
                let received = tokio::time::timeout(options.lease * 2, listener.try_recv()).await;
                let notification = match received {
                    Ok(Ok(Some(notification))) => notification,
                    Ok(Ok(None)) => {
                        tracing::warn!("lost the cluster notification connection; reconnecting");
                        break;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cluster notification connection failed");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!("the notification connection went silent; reconnecting");
                        break;
                    }
                };
                let handled = tokio::time::timeout(
                    options.lease,
                    self.handle(
                        &notification,
                        &mut history,
                        cache.as_ref(),
                        &applied,
                        &pings,
                        &options,
                    ),
                )
                .await
                .unwrap_or_else(|_| Err(timed_out()));
                if let Err(error) = handled {
                    tracing::warn!(%error, "cannot apply a cluster change; reconnecting");
                    break;
                }
            }
        }
    }

    async fn handle(
        &self,
        notification: &PgNotification,
        history: &mut History,
        cache: &dyn ClusterCache,
        applied: &watch::Sender<u64>,
        pings: &PendingPings,
        options: &ClusterOptions,
    ) -> Result<(), sqlx::Error> {
        let payload = notification.payload();
        match notification.channel() {
            INVALIDATION_CHANNEL => {
                let Some((seq, tail, nonce)) = parse_announcement(payload) else {
                    return Ok(());
                };
                let current = history.seq.unwrap_or(0);
                if seq <= current {
                    // A number seen before: a repeat of this history (announced between
                    // LISTEN and the catch-up), or the same number in a new one.
                    if history.is_foreign(seq, nonce) {
                        start_over(history, seq, nonce, cache, applied);
                    }
                    return Ok(());
                }
                let announced = (!tail.is_empty()).then(|| Stale::parse_payload_tail(tail));
                match announced {
                    Some(Some(stale)) if seq == current + 1 => {
                        cache.forget(&stale);
                        history.record(seq, nonce);
                        applied.send_replace(seq);
                    }
                    // A gap, an unreadable payload or a list too long to announce: read the
                    // table.
                    _ => self.catch_up(history, cache, applied).await?,
                }
            }
            ACK_CHANNEL => {
                if let Some((node, seq)) = payload.rsplit_once(':') {
                    if let Ok(seq) = seq.parse::<u64>() {
                        let mut acks = self
                            .acks
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let recent = acks.entry(node.to_owned()).or_default();
                        recent.push_back((seq, Instant::now()));
                        // Acknowledgements may arrive out of order (they leave over any
                        // connection of the pool): a few are kept, not just the last.
                        while recent.len() > RECENT_ACKS {
                            recent.pop_front();
                        }
                    }
                    self.ack_arrived.notify_waiters();
                }
            }
            _ => {
                // Our own ping: everything announced before its heartbeat is applied.
                let Ok(number) = payload.parse::<u64>() else {
                    return Ok(());
                };
                let started = pings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .find(|(sent, _)| *sent == number)
                    .map(|(_, started)| *started);
                if let Some(started) = started {
                    cache.trust_until(started + options.lease);
                }
            }
        }
        Ok(())
    }

    /// Applies every announcement after the history's number from the table, or empties the
    /// cache when they are no longer all there (first start, away longer than the retention)
    /// or when the table tells another history (the counter went back).
    async fn catch_up(
        &self,
        history: &mut History,
        cache: &dyn ClusterCache,
        applied: &watch::Sender<u64>,
    ) -> Result<(), sqlx::Error> {
        let from = history.seq;
        let state = sqlx::query(
            "SELECT s.invalidation_seq, at_from.nonce AS nonce_at_from FROM cluster_state s \
             LEFT JOIN cache_invalidations at_from ON at_from.seq = $1 \
             WHERE s.singleton = 1",
        )
        .bind(from.map_or(-1, |seq| i64::try_from(seq).unwrap_or(i64::MAX)))
        .fetch_one(&self.pool)
        .await?;
        let latest: i64 = state.try_get("invalidation_seq")?;
        let latest = u64::try_from(latest).unwrap_or(0);
        let nonce_at_from: Option<i64> = state.try_get("nonce_at_from")?;
        let Some(from) = from else {
            cache.lost_track();
            self.start_at(history, latest).await?;
            applied.send_replace(latest);
            return Ok(());
        };
        // The row at this node's own number is gone only past the retention: same history.
        let foreign = nonce_at_from.is_some() && history.is_foreign(from, nonce_at_from);
        if latest < from || foreign {
            warn_counter_went_back(from, latest);
            cache.lost_track();
            self.start_at(history, latest).await?;
            applied.send_replace(latest);
            return Ok(());
        }
        if latest == from {
            return Ok(());
        }
        let rows = sqlx::query(
            "SELECT seq, hashes, nonce FROM cache_invalidations WHERE seq > $1 AND seq <= $2 \
             ORDER BY seq",
        )
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::try_from(latest).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let complete = rows.len() as u64 == latest - from;
        if complete {
            for row in &rows {
                let hashes: Option<Vec<u8>> = row.try_get("hashes")?;
                match Stale::from_bytes(hashes.as_deref()) {
                    Some(stale) => cache.forget(&stale),
                    // Unreadable: whatever it created is unknown too.
                    None => cache.lost_track(),
                }
                let seq: i64 = row.try_get("seq")?;
                history.record(u64::try_from(seq).unwrap_or(0), row.try_get("nonce")?);
            }
        } else {
            cache.lost_track();
            self.start_at(history, latest).await?;
        }
        history.seq = Some(latest);
        applied.send_replace(latest);
        Ok(())
    }

    /// Follows the history from `latest` on, remembering the nonces of the numbers just
    /// below it: announcements made between LISTEN and this read arrive after it, and must be
    /// known for the repeats they are.
    async fn start_at(&self, history: &mut History, latest: u64) -> Result<(), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT seq, nonce FROM cache_invalidations WHERE seq > $1 AND seq <= $2 \
             ORDER BY seq",
        )
        .bind(i64::try_from(latest.saturating_sub(REMEMBERED_NONCES as u64)).unwrap_or(0))
        .bind(i64::try_from(latest).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        history.nonces.clear();
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            history.record(u64::try_from(seq).unwrap_or(0), row.try_get("nonce")?);
        }
        history.seq = Some(latest);
        Ok(())
    }
}

/// A pool for the protocol's own connections, with the session settings that end what a
/// stalled node leaves behind (see `sql::POSTGRES_SESSION_SETTINGS`).
fn protocol_pool(size: u32, lease: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(lease)
        .after_connect(|connection, _| {
            Box::pin(async move {
                connection
                    .execute(crate::sql::POSTGRES_SESSION_SETTINGS)
                    .await
                    .map(drop)
            })
        })
}

fn warn_counter_went_back(applied: u64, seq: u64) {
    tracing::warn!(
        seq,
        applied,
        "the change counter went back (a failover or a restore?): every cached credential \
         is forgotten"
    );
}

/// The counter went back (a failover to a replica that lost its last commits, a restore):
/// what this node applied may not have happened, and what happened it may have taken for
/// repeats. It forgets everything and follows the new history from `seq`; its
/// acknowledgement of `seq` tells the changes waiting for it.
fn start_over(
    history: &mut History,
    seq: u64,
    nonce: Option<i64>,
    cache: &dyn ClusterCache,
    applied: &watch::Sender<u64>,
) {
    warn_counter_went_back(history.seq.unwrap_or(0), seq);
    cache.lost_track();
    history.start_over(seq, nonce);
    applied.send_replace(seq);
}

/// A protocol call that took longer than a lease: its connection is dropped and the call is
/// treated as failed.
fn timed_out() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer from PostgreSQL within one lease",
    ))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(byte: u8) -> KeyHash {
        KeyHash::from_slice(&[byte; 32]).expect("32 bytes")
    }

    #[test]
    fn announcements_round_trip_through_payload_and_table() {
        let stale = Stale::Secrets(vec![hash(1), hash(2)]);
        let tail = stale.payload_tail();
        assert_eq!(
            Stale::parse_payload_tail(tail.trim_start_matches(':')),
            Some(stale.clone())
        );
        assert_eq!(
            Stale::from_bytes(stale.to_bytes().as_deref()),
            Some(stale.clone())
        );
        assert_eq!(Stale::Everything.payload_tail(), ":*");
        assert_eq!(Stale::from_bytes(None), Some(Stale::Everything));
    }

    #[test]
    fn announcements_carry_their_nonce_after_the_list() {
        let hex = hash(1).to_hex();
        assert_eq!(
            parse_announcement(&format!("7:{hex};42")),
            Some((7, hex.as_str(), Some(42)))
        );
        assert_eq!(parse_announcement("8:*;-5"), Some((8, "*", Some(-5))));
        assert_eq!(parse_announcement("9;1"), Some((9, "", Some(1))));
        // From a node of the previous version: no nonce.
        assert_eq!(parse_announcement("10:*"), Some((10, "*", None)));
        assert_eq!(parse_announcement("x;1"), None);
    }

    #[test]
    fn a_number_is_foreign_unless_its_remembered_nonce_matches() {
        let mut history = History::default();
        history.record(1, Some(11));
        history.record(2, None);
        assert!(!history.is_foreign(1, Some(11)), "a repeat");
        assert!(history.is_foreign(1, Some(12)), "another history");
        assert!(
            history.is_foreign(2, Some(99)),
            "a number whose nonce was never recorded"
        );
        assert!(history.is_foreign(0, Some(5)), "a number never seen");
        assert!(
            !history.is_foreign(1, None),
            "an announcement without a nonce cannot tell"
        );
        history.start_over(1, Some(12));
        assert!(!history.is_foreign(1, Some(12)));
        assert_eq!(history.seq, Some(1));
        for seq in 0..(REMEMBERED_NONCES as u64 + 10) {
            history.record(seq, Some(seq as i64));
        }
        assert_eq!(history.nonces.len(), REMEMBERED_NONCES);
    }

    #[test]
    fn long_lists_are_left_to_the_table() {
        let many = Stale::Secrets((0..200).map(|i| hash(i as u8)).collect());
        assert_eq!(many.payload_tail(), "");
        assert!(Stale::parse_payload_tail("zz").is_none());
    }
}
