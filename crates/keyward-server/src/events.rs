//! The live stream behind `GET /ws` (SPEC §4.5): events and alerts leave storage in the order
//! their changes committed, are rendered once, and fan out to every socket of this node.
//!
//! - **Source of truth.** Key changes record their events in their own transaction; alerts and
//!   expiries are appended by this module. Storage numbers them in commit order across every
//!   node (`EventStore`).
//! - **Following.** One task per node reads what it has not yet published: woken by this
//!   node's commits, by PostgreSQL's `NOTIFY` for other nodes' commits, and by a slow poll
//!   that covers a lost notification connection.
//! - **Fan-out.** A `broadcast` channel: each socket's receiver is its bounded queue. A socket
//!   that falls behind loses the oldest events and is told how many (`lagged`); the server
//!   never waits for it.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use keyward_core::event::{Channel, Event, EventType, NewEvent};
use keyward_core::model::Tenancy;
use keyward_core::Timestamp;
use keyward_proto as wire;
use keyward_store::{expiry_dedup_key, EventAnnouncements, Store, StoreError};
use tokio::sync::{broadcast, mpsc, watch, Notify};

use crate::metrics::Metrics;
use crate::verification::CachedKey;
use crate::{clock, convert};

/// Settings of the event stream.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// How long events are kept for resuming (`?since=`).
    pub retention: Duration,
    /// How far ahead of a key's expiry `key.expiring` is raised. Shorter than `retention`,
    /// which remembers that it was.
    pub expiring_lead: Duration,
    /// How often expiries are looked for and old events purged.
    pub sweep_interval: Duration,
    /// Events a socket may fall behind by before it loses the oldest.
    pub socket_queue: usize,
    pub max_sockets: usize,
    pub max_sockets_per_credential: usize,
    /// Pings go out this often; a peer silent for two intervals is dropped.
    pub heartbeat_interval: Duration,
    /// How often storage is read when no notification came.
    pub poll_interval: Duration,
    /// How often an open session's credential is checked again (revoked, expired, scope
    /// removed); a cached check.
    pub credential_recheck: Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            expiring_lead: Duration::from_secs(24 * 3600),
            sweep_interval: Duration::from_secs(60),
            socket_queue: 1024,
            max_sockets: 10_000,
            max_sockets_per_credential: 100,
            heartbeat_interval: Duration::from_secs(20),
            poll_interval: Duration::from_secs(1),
            credential_recheck: Duration::from_secs(5),
        }
    }
}

/// An event on its way to sockets, rendered once for all of them.
#[derive(Debug)]
pub struct Delivery {
    pub event: Event,
    pub channel: Channel,
    /// The `{"type":"event",…}` text frame.
    pub frame: Utf8Bytes,
}

/// Alerts waiting to be recorded; beyond this many, new ones are dropped and counted.
const ALERT_QUEUE: usize = 10_000;
/// Events read from storage at a time.
const READ_BATCH: u32 = 500;

pub struct EventHub {
    sender: broadcast::Sender<Arc<Delivery>>,
    /// The number of the last event handed to sockets.
    published: AtomicI64,
    alerts: mpsc::Sender<KeyAlert>,
    /// The window end of the last `rate_limit.exceeded` raised per key, so a flood of refusals
    /// raises one alert per window.
    rate_alerts: DashMap<String, i64>,
    /// Set when the node joins a PostgreSQL cluster: other nodes' events are announced there.
    postgres_url: OnceLock<String>,
    /// Woken by those announcements (several coalesce into one read).
    announced: Arc<Notify>,
    /// The webhook worker's wake-up: other nodes' events are this node's to queue too.
    deliveries_queued: Arc<Notify>,
    /// Turns true when the server stops its background work.
    stop: watch::Receiver<bool>,
    sockets: AtomicUsize,
    sockets_by_credential: DashMap<String, usize>,
    /// Turns true when the server shuts down: every socket closes with 1001.
    closing: watch::Sender<bool>,
    pub(crate) settings: EventSettings,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

impl EventHub {
    /// Starts following `store`'s events and recording alerts; both tasks end when `stop`
    /// turns true or the hub is dropped.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        settings: EventSettings,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let (sender, _) = broadcast::channel(settings.socket_queue.max(1));
        let (alerts, alert_queue) = mpsc::channel(ALERT_QUEUE);
        let hub = Arc::new(Self {
            sender,
            published: AtomicI64::new(-1),
            alerts,
            rate_alerts: DashMap::new(),
            postgres_url: OnceLock::new(),
            announced: Arc::new(Notify::new()),
            deliveries_queued: store.deliveries_queued(),
            stop: stop.clone(),
            sockets: AtomicUsize::new(0),
            sockets_by_credential: DashMap::new(),
            closing: watch::channel(false).0,
            settings,
            metrics,
        });
        tokio::spawn(follow(
            Arc::downgrade(&hub),
            Arc::clone(&store),
            stop.clone(),
        ));
        tokio::spawn(record_alerts(
            alert_queue,
            Arc::clone(&store),
            Arc::clone(&hub.metrics),
        ));
        tokio::spawn(sweep(Arc::downgrade(&hub), store, stop));
        hub
    }

    /// The number of the last event handed to sockets, once known.
    pub(crate) fn published(&self) -> Option<i64> {
        Some(self.published.load(Ordering::Acquire)).filter(|seq| *seq >= 0)
    }

    /// Listens to PostgreSQL's announcements of other nodes' events, in a task of its own
    /// that reconnects with backoff, so that a lost connection never delays this node's own.
    pub(crate) fn follow_postgres(&self, database_url: &str) {
        if self.postgres_url.set(database_url.to_owned()).is_ok() {
            tokio::spawn(listen(
                database_url.to_owned(),
                [
                    Arc::clone(&self.announced),
                    Arc::clone(&self.deliveries_queued),
                ],
                self.stop.clone(),
            ));
        }
    }

    /// A new socket's queue. Created before a resuming socket reads its backlog, so that
    /// nothing published meanwhile is missed.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Delivery>> {
        self.sender.subscribe()
    }

    /// Claims a place for a socket of `credential`, or says which limit is reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        credential: String,
    ) -> Result<SocketPermit, &'static str> {
        if self.sockets.fetch_add(1, Ordering::AcqRel) >= self.settings.max_sockets {
            self.sockets.fetch_sub(1, Ordering::AcqRel);
            return Err("This server has reached its WebSocket connection limit");
        }
        let mut held = self
            .sockets_by_credential
            .entry(credential.clone())
            .or_insert(0);
        if *held >= self.settings.max_sockets_per_credential {
            drop(held);
            self.sockets.fetch_sub(1, Ordering::AcqRel);
            return Err("This credential has reached its WebSocket connection limit");
        }
        *held += 1;
        drop(held);
        self.metrics.stream.sockets.inc();
        Ok(SocketPermit {
            hub: Arc::clone(self),
            credential,
        })
    }

    /// Asks every socket to close: the server is shutting down.
    pub(crate) fn close_sockets(&self) {
        self.closing.send_replace(true);
    }

    /// Turns true when the server shuts down.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Claims a place before the socket's credential is known: only the total limit applies.
    pub(crate) fn has_room(&self) -> bool {
        self.sockets.load(Ordering::Acquire) < self.settings.max_sockets
    }

    /// Queues an alert to be recorded, without waiting: the verify path calls this.
    fn raise(&self, alert: KeyAlert) {
        if self.alerts.try_send(alert).is_err() {
            self.metrics.stream.alerts_dropped.inc();
        }
    }

    /// Raises `rate_limit.exceeded` once per key and window.
    pub(crate) fn rate_limited(&self, key: &CachedKey, limit: u64, reset_at: Timestamp) {
        let reset = reset_at.as_millis();
        // A flood of refusals takes this path on every request: the read answers it without
        // an allocation or a write lock; only the window's first refusal writes.
        if self
            .rate_alerts
            .get(key.id())
            .is_some_and(|previous| *previous == reset)
        {
            return;
        }
        if self
            .rate_alerts
            .insert(key.id().to_owned(), reset)
            .is_some_and(|previous| previous == reset)
        {
            return;
        }
        let mut alert = KeyAlert::about(key, EventType::RateLimitExceeded);
        alert.details.insert("limit".into(), limit.into());
        alert
            .details
            .insert("reset_at".into(), convert::rfc3339(reset_at).into());
        alert.dedup_key = Some(format!("rate_limit.exceeded:{}:{reset}", key.id()));
        self.raise(alert);
    }

    /// Raises `credits.low` (below `low_threshold`) or `credits.exhausted` when this charge
    /// crossed its line.
    pub(crate) fn charged(
        &self,
        key: &CachedKey,
        remaining: i64,
        cost: i64,
        low_threshold: Option<i64>,
    ) {
        let Some(kind) = keyward_core::event::credit_alert(remaining, cost, low_threshold) else {
            return;
        };
        let mut alert = KeyAlert::about(key, kind);
        alert.details.insert("remaining".into(), remaining.into());
        if let (EventType::CreditsLow, Some(threshold)) = (kind, low_threshold) {
            alert.details.insert("threshold".into(), threshold.into());
        }
        self.raise(alert);
    }

    fn publish(&self, event: Event) {
        self.published.store(event.seq, Ordering::Release);
        let channel = event.kind.channel();
        let message = wire::ServerMessage::Event {
            channel: channel.as_str().to_owned(),
            event: Box::new(convert::event(&event)),
        };
        let frame = match serde_json::to_string(&message) {
            Ok(text) => Utf8Bytes::from(text),
            Err(error) => {
                tracing::error!(%error, "an event could not be rendered");
                return;
            }
        };
        self.metrics.stream.events_published.inc();
        // No receiver is not an error: nobody is listening on this node.
        let _ = self.sender.send(Arc::new(Delivery {
            event,
            channel,
            frame,
        }));
    }
}

/// A socket's place under the connection limits, given back when the socket ends.
#[derive(Debug)]
pub(crate) struct SocketPermit {
    hub: Arc<EventHub>,
    credential: String,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.hub.sockets.fetch_sub(1, Ordering::AcqRel);
        self.hub
            .sockets_by_credential
            .remove_if_mut(&self.credential, |_, held| {
                *held -= 1;
                *held == 0
            });
        self.hub.metrics.stream.sockets.dec();
    }
}

/// Publishes every event storage has beyond what this node published, in order.
async fn follow(hub: Weak<EventHub>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    let committed = store.events_committed();
    let Some((mut poll, announced)) = hub.upgrade().map(|hub| {
        (
            tokio::time::interval(hub.settings.poll_interval),
            Arc::clone(&hub.announced),
        )
    }) else {
        return;
    };
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(hub) = hub.upgrade() else { return };
        if hub.published.load(Ordering::Acquire) < 0 {
            // Start from now: sockets that want history resume from storage.
            match store.last_event_seq().await {
                Ok(last) => hub.published.store(last, Ordering::Release),
                Err(error) => tracing::warn!(%error, "cannot read the event sequence yet"),
            }
        } else if let Err(error) = catch_up(&hub, store.as_ref()).await {
            tracing::warn!(%error, "reading new events failed; retrying");
        }
        drop(hub);
        tokio::select! {
            _ = stop.changed() => return,
            () = committed.notified() => {}
            () = announced.notified() => {}
            _ = poll.tick() => {}
        }
    }
}

/// Holds the connection that hears other nodes' events, reconnecting with backoff, and wakes
/// `announced` (this node's sockets and its webhook worker) for each; while it is down,
/// polls cover.
async fn listen(url: String, announced: [Arc<Notify>; 2], mut stop: watch::Receiver<bool>) {
    let announce = || announced.iter().for_each(|wake| wake.notify_one());
    let mut backoff = Duration::from_millis(250);
    loop {
        let connect =
            tokio::time::timeout(Duration::from_secs(5), EventAnnouncements::connect(&url));
        match connect.await {
            Ok(Ok(mut listener)) => {
                backoff = Duration::from_millis(250);
                // Announcements made while it was away are read by the next poll.
                announce();
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        heard = listener.next() => match heard {
                            Ok(()) => announce(),
                            Err(error) => {
                                tracing::warn!(%error, "the event notification connection failed; polling");
                                break;
                            }
                        },
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot listen for other nodes' events; polling")
            }
            Err(_) => tracing::warn!("listening for other nodes' events timed out; polling"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn catch_up(hub: &EventHub, store: &dyn Store) -> keyward_store::StoreResult<()> {
    loop {
        let after = hub.published.load(Ordering::Acquire);
        let batch = store.events_after(after, None, READ_BATCH).await?;
        let full = batch.len() == READ_BATCH as usize;
        for event in batch {
            hub.publish(event);
        }
        if !full {
            return Ok(());
        }
    }
}

/// An alert about a key, raised on the verify path. The key's snapshot is read from storage
/// when the alert is recorded: the verification cache does not hold what it shows (name,
/// `start`, creation time).
struct KeyAlert {
    tenancy: Tenancy,
    key_id: String,
    kind: EventType,
    details: serde_json::Map<String, serde_json::Value>,
    dedup_key: Option<String>,
}

impl KeyAlert {
    fn about(key: &CachedKey, kind: EventType) -> Self {
        Self {
            tenancy: key.tenancy().clone(),
            key_id: key.id().to_owned(),
            kind,
            details: serde_json::Map::new(),
            dedup_key: None,
        }
    }
}

/// Records queued alerts in batches.
async fn record_alerts(
    mut queue: mpsc::Receiver<KeyAlert>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) {
    let mut alerts = Vec::with_capacity(256);
    let mut batch = Vec::with_capacity(256);
    while queue.recv_many(&mut alerts, 256).await > 0 {
        for alert in alerts.drain(..) {
            match store.key(&alert.tenancy, &alert.key_id).await {
                Ok(key) => batch.push(NewEvent {
                    details: alert.details,
                    dedup_key: alert.dedup_key,
                    ..NewEvent::about(&alert.tenancy, alert.kind, &key)
                }),
                // Deleted since: no key left to alert about.
                Err(StoreError::NotFound(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, "reading an alert's key failed");
                    metrics.stream.alerts_dropped.inc();
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(error) = store.append_events(&batch, clock::now()).await {
            tracing::warn!(%error, alerts = batch.len(), "recording alerts failed");
            metrics.stream.alerts_dropped.inc_by(batch.len() as u64);
        }
        batch.clear();
    }
}

/// Raises `key.expiring` and `key.expired`, forgets old events and old rate-alert marks. Every
/// node runs it; storage records each expiry event once.
async fn sweep(hub: Weak<EventHub>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    let Some(interval) = hub.upgrade().map(|hub| hub.settings.sweep_interval) else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticks.tick() => {}
        }
        let Some(hub) = hub.upgrade() else { return };
        let now = clock::now();
        let settings = &hub.settings;
        let lead = duration_millis(settings.expiring_lead);
        let retention = duration_millis(settings.retention);
        let windows = [
            (EventType::KeyExpiring, now, now.plus_millis(lead)),
            (EventType::KeyExpired, now.plus_millis(-retention), now),
        ];
        for (kind, after, until) in windows {
            if let Err(error) = raise_expiries(store.as_ref(), kind, after, until, now).await {
                tracing::warn!(%error, event = kind.as_str(), "looking for expiries failed");
            }
        }
        // An hour past the window the sweep looks back over, so that a node whose clock runs
        // behind never finds an expiry whose event is already forgotten.
        let purge_before = now.plus_millis(-retention.saturating_add(3_600_000));
        if let Err(error) = store.purge_events(purge_before).await {
            tracing::warn!(%error, "purging old events failed");
        }
        hub.rate_alerts
            .retain(|_, reset_at| *reset_at > now.as_millis());
    }
}

async fn raise_expiries(
    store: &dyn Store,
    kind: EventType,
    after: Timestamp,
    until: Timestamp,
    now: Timestamp,
) -> keyward_store::StoreResult<()> {
    loop {
        let keys = store
            .keys_expiring_between(after, until, kind, READ_BATCH)
            .await?;
        let events: Vec<NewEvent> = keys
            .iter()
            .map(|key| {
                let mut event = NewEvent::about(&key.tenancy, kind, key);
                event.dedup_key = expiry_dedup_key(kind, key);
                event
            })
            .collect();
        store.append_events(&events, now).await?;
        if keys.len() < READ_BATCH as usize {
            return Ok(());
        }
    }
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
