//! Webhook delivery (SPEC §4.8): every node runs a [`DeliveryWorker`] that claims due
//! deliveries from the outbox storage keeps, POSTs them signed as Standard Webhooks says, and
//! settles each attempt: delivered, retried later with backoff, or failed; an endpoint that
//! keeps failing is turned off with a `webhook.disabled` alert.
//!
//! A slow or dead endpoint never delays the others: a node has at most `per_endpoint` of one
//! endpoint's deliveries in flight at a time (claims take only what is left of that), and
//! attempts run concurrently up to `concurrency`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_core::webhook::{
    response_excerpt, signature_header, RetryPolicy, WebhookAttempt, WebhookSecret,
    DEFAULT_DISABLE_AFTER_MS, RESPONSE_EXCERPT_BYTES,
};
use keyward_core::Timestamp;
use keyward_store::{ClaimedDelivery, DeliveryContent, DeliverySettlement, Store};
use rand::Rng as _;
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::crypto::MasterKey;
use crate::metrics::Metrics;
use crate::outbound::{self, OutboundError};
use crate::{clock, convert};

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Whether this node runs a delivery worker. Off, it still queues deliveries (in the
    /// events' transactions) for the nodes that do: an operator can keep API nodes free of
    /// outbound traffic.
    pub deliver: bool,
    /// Any 2xx within this is a success (SPEC: 15 s).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// An endpoint whose every attempt failed for this long is turned off.
    pub disable_after: Duration,
    /// Lets endpoints be private, loopback or link-local addresses
    /// (`KEYWARD_ALLOW_PRIVATE_URLS`).
    pub allow_private: bool,
    /// Attempts under way on this node at once.
    pub concurrency: usize,
    /// Attempts under way on this node for one endpoint at once (claims take at most this
    /// many of one endpoint, and skip an endpoint that has this many in flight).
    pub per_endpoint: u32,
    /// How often other nodes' deliveries (and retries coming due) are looked for; this
    /// node's own are claimed as soon as their transaction commits.
    pub poll_interval: Duration,
    /// How long settled deliveries stay in the log.
    pub retention: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            deliver: true,
            timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            disable_after: Duration::from_millis(DEFAULT_DISABLE_AFTER_MS.unsigned_abs()),
            allow_private: false,
            concurrency: 64,
            per_endpoint: 8,
            poll_interval: Duration::from_millis(500),
            retention: Duration::from_secs(30 * 86_400),
        }
    }
}

impl WebhookSettings {
    /// How long a claim is this node's: past the attempt's timeout, so a node that died
    /// mid-attempt leaves its deliveries due again soon after.
    fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(5)
    }
}

/// What this node is delivering, by endpoint: how many attempts, and since when the endpoint
/// has answered none of them (`None` once one ended).
#[derive(Default)]
struct InFlight(Mutex<HashMap<String, EndpointInFlight>>);

#[derive(Default)]
struct EndpointInFlight {
    count: u32,
    silent_since: Option<Instant>,
    /// This node paused the endpoint for this silence already.
    paused: bool,
}

impl InFlight {
    fn counts(&self) -> Vec<(String, u32)> {
        let counts = self.0.lock().expect("in-flight lock");
        counts
            .iter()
            .map(|(id, endpoint)| (id.clone(), endpoint.count))
            .collect()
    }

    fn start(&self, endpoint_id: &str) {
        let mut counts = self.0.lock().expect("in-flight lock");
        let endpoint = counts.entry(endpoint_id.to_owned()).or_default();
        endpoint.count += 1;
        endpoint.silent_since.get_or_insert_with(Instant::now);
    }

    fn finish(&self, endpoint_id: &str) {
        let mut counts = self.0.lock().expect("in-flight lock");
        if let Some(endpoint) = counts.get_mut(endpoint_id) {
            endpoint.count -= 1;
            endpoint.silent_since = (endpoint.count > 0).then(Instant::now);
            endpoint.paused = false;
            if endpoint.count == 0 {
                counts.remove(endpoint_id);
            }
        }
    }

    /// Endpoints that have answered nothing for `after` while attempts were out, not yet
    /// paused for it (and marks them paused).
    fn newly_stalled(&self, after: Duration) -> Vec<String> {
        let mut counts = self.0.lock().expect("in-flight lock");
        counts
            .iter_mut()
            .filter(|(_, endpoint)| {
                !endpoint.paused
                    && endpoint
                        .silent_since
                        .is_some_and(|since| since.elapsed() >= after)
            })
            .map(|(id, endpoint)| {
                endpoint.paused = true;
                id.clone()
            })
            .collect()
    }
}

/// Clients pinned to an endpoint host's checked addresses, kept for a minute so deliveries
/// reuse connections; the addresses are checked again when the client is renewed.
#[derive(Default)]
struct Clients(Mutex<HashMap<String, (Instant, reqwest::Client)>>);

const CLIENT_TTL: Duration = Duration::from_secs(60);

impl Clients {
    async fn for_url(
        &self,
        url: &reqwest::Url,
        settings: &WebhookSettings,
    ) -> Result<reqwest::Client, OutboundError> {
        let origin = url.origin().ascii_serialization();
        if let Some((made, client)) = self.0.lock().expect("clients lock").get(&origin) {
            if made.elapsed() < CLIENT_TTL {
                return Ok(client.clone());
            }
        }
        let client = outbound::pinned_client(url, settings.allow_private, settings.timeout).await?;
        let mut clients = self.0.lock().expect("clients lock");
        clients.retain(|_, (made, _)| made.elapsed() < CLIENT_TTL);
        clients.insert(origin, (Instant::now(), client.clone()));
        Ok(client)
    }
}

pub struct DeliveryWorker {
    store: Arc<dyn Store>,
    settings: WebhookSettings,
    master_key: Arc<MasterKey>,
    metrics: Arc<Metrics>,
    in_flight: InFlight,
    clients: Clients,
    /// Woken when an attempt ends, so the claim loop can take more.
    slot_freed: Notify,
    /// Attempts made, on their way to storage in batches ([`settle_loop`]).
    settlements: mpsc::Sender<DeliverySettlement>,
}

/// An endpoint silent for this long while attempts are out is paused (or half its timeout,
/// if that is shorter).
const STALL_AFTER: Duration = Duration::from_secs(1);

/// The most events one queueing transaction turns into deliveries.
const EVENTS_PER_QUEUEING: u32 = 500;

/// The most attempts one settling transaction records.
const SETTLE_BATCH: usize = 256;

/// How long the worker waits after a wake-up before it claims, and the settler after the
/// first attempt of a batch ends, to gather more into one transaction.
const COALESCE: Duration = Duration::from_millis(5);

/// Writes attempts to storage as they end: each transaction takes every attempt that ended
/// meanwhile, so a busy node commits once per batch, not once per delivery, and an idle one
/// adds no delay.
async fn settle_loop(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    mut settlements: mpsc::Receiver<DeliverySettlement>,
) {
    let mut batch = Vec::with_capacity(SETTLE_BATCH);
    while settlements.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
        // Attempts end in bursts (a claim starts several at once): wait for the rest of the
        // burst, so that it costs one commit.
        tokio::time::sleep(COALESCE).await;
        let room = SETTLE_BATCH.saturating_sub(batch.len());
        if room > 0 {
            while let Ok(more) = settlements.try_recv() {
                batch.push(more);
                if batch.len() >= SETTLE_BATCH {
                    break;
                }
            }
        }
        match store.settle_webhook_deliveries(&batch).await {
            Ok(disabled) => {
                for endpoint_id in disabled {
                    metrics.webhooks.endpoints_disabled.inc();
                    tracing::warn!(
                        endpoint_id,
                        "turned off a webhook endpoint that kept failing"
                    );
                }
            }
            // The leases bring the deliveries back; a receiver may see one twice, with the
            // same webhook-id.
            Err(error) => tracing::warn!(%error, "recording webhook attempts failed"),
        }
        batch.clear();
    }
}

impl DeliveryWorker {
    pub fn start(
        store: Arc<dyn Store>,
        settings: WebhookSettings,
        master_key: Arc<MasterKey>,
        metrics: Arc<Metrics>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let (settlements, settled) = mpsc::channel(4 * SETTLE_BATCH);
        tokio::spawn(settle_loop(
            Arc::clone(&store),
            Arc::clone(&metrics),
            settled,
        ));
        let worker = Arc::new(Self {
            store,
            settings,
            master_key,
            metrics,
            in_flight: InFlight::default(),
            clients: Clients::default(),
            slot_freed: Notify::new(),
            settlements,
        });
        tokio::spawn(worker.run(stop))
    }

    async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let queued = self.store.deliveries_queued();
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut last_purge = Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            self.queue_recorded_events().await;
            self.pause_stalled().await;
            self.claim_and_start(&slots).await;
            if last_purge.elapsed() > Duration::from_secs(3600) {
                last_purge = Instant::now();
                self.purge().await;
            }
            tokio::select! {
                () = queued.notified() => {}
                () = self.slot_freed.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = stop.changed() => return,
            }
            // A claim is a write: gather what a burst of commits queued into one, at the
            // cost of a few milliseconds of latency.
            tokio::time::sleep(COALESCE).await;
        }
    }

    /// Turns the events recorded since (on any node) into deliveries, in batches, until it
    /// has caught up: a key's own transaction writes only its event, however many endpoints
    /// take it.
    async fn queue_recorded_events(&self) {
        loop {
            match self
                .store
                .queue_webhook_deliveries(clock::now(), EVENTS_PER_QUEUEING)
                .await
            {
                Ok(covered) if covered >= EVENTS_PER_QUEUEING => {}
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(%error, "queueing webhook deliveries failed; retrying soon");
                    return;
                }
            }
        }
    }

    /// An endpoint that answers nothing while attempts are out (it hangs) has its waiting
    /// deliveries held until those attempts' leases end, instead of them sitting due, in
    /// front of every other endpoint's work, until the timeouts come back as failures.
    async fn pause_stalled(&self) {
        let after = (self.settings.timeout / 2).min(STALL_AFTER);
        for endpoint_id in self.in_flight.newly_stalled(after) {
            let until = clock::now().plus_millis(millis(self.settings.lease()));
            if let Err(error) = self.store.pause_webhook_endpoint(&endpoint_id, until).await {
                tracing::warn!(%error, endpoint_id, "pausing a stalled webhook endpoint failed");
            }
        }
    }

    /// Claims what is due, as long as slots are free and claims come back full.
    async fn claim_and_start(self: &Arc<Self>, slots: &Arc<Semaphore>) {
        loop {
            let free = slots.available_permits().min(100);
            if free == 0 {
                return;
            }
            let now = clock::now();
            let lease_until = now.plus_millis(millis(self.settings.lease()));
            let in_flight = self.in_flight.counts();
            let limit = u32::try_from(free).unwrap_or(100);
            let claimed = match self
                .store
                .claim_webhook_deliveries(
                    now,
                    lease_until,
                    self.settings.per_endpoint,
                    &in_flight,
                    limit,
                )
                .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "claiming webhook deliveries failed; retrying soon");
                    return;
                }
            };
            let full = claimed.len() >= free;
            for delivery in claimed {
                let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
                    // Cannot happen (claims are bounded by free slots); the lease brings
                    // the delivery back if it ever does.
                    break;
                };
                self.in_flight.start(&delivery.endpoint.id);
                self.metrics.webhooks.in_flight.inc();
                let worker = Arc::clone(self);
                tokio::spawn(async move {
                    let endpoint_id = delivery.endpoint.id.clone();
                    worker.attempt(delivery).await;
                    worker.in_flight.finish(&endpoint_id);
                    worker.metrics.webhooks.in_flight.dec();
                    drop(permit);
                    worker.slot_freed.notify_one();
                });
            }
            if !full {
                return;
            }
        }
    }

    async fn purge(&self) {
        let before = clock::now().plus_millis(-millis(self.settings.retention));
        if let Err(error) = self.store.purge_webhook_deliveries(before).await {
            tracing::warn!(%error, "purging old webhook deliveries failed");
        }
    }

    async fn attempt(&self, delivery: ClaimedDelivery) {
        let started = Instant::now();
        let attempted_at = clock::now();
        // The whole attempt, name resolution included, within the timeout: the lease
        // counts on it.
        let outcome =
            tokio::time::timeout(self.settings.timeout, self.post(&delivery, attempted_at))
                .await
                .unwrap_or_else(|_| Err("timed out".to_owned()));
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (succeeded, attempt) = match outcome {
            Ok((status, body)) => {
                let succeeded = (200..300).contains(&status);
                (
                    succeeded,
                    WebhookAttempt {
                        attempted_at,
                        status: Some(status),
                        latency_ms,
                        error: (!succeeded).then(|| {
                            if (300..400).contains(&status) {
                                format!("answered {status}; redirects are not followed")
                            } else {
                                format!("answered {status}")
                            }
                        }),
                        response_excerpt: Some(response_excerpt(&body))
                            .filter(|excerpt| !excerpt.is_empty()),
                    },
                )
            }
            Err(error) => (
                false,
                WebhookAttempt {
                    attempted_at,
                    status: None,
                    latency_ms,
                    error: Some(error),
                    response_excerpt: None,
                },
            ),
        };
        let now = clock::now();
        let retry_at = if succeeded || matches!(delivery.content, DeliveryContent::Forgotten) {
            None
        } else {
            self.settings
                .retry
                .delay_after(delivery.attempts + 1, rand::thread_rng().gen())
                .map(|delay| now.plus_millis(delay))
        };
        if succeeded {
            self.metrics.webhooks.delivered.inc();
        } else {
            self.metrics.webhooks.failed_attempts.inc();
        }
        let settlement = DeliverySettlement {
            delivery_id: delivery.id.clone(),
            endpoint_id: delivery.endpoint.id.clone(),
            claim: delivery.claim,
            attempt,
            succeeded,
            retry_at,
            disable_after_ms: millis(self.settings.disable_after),
            now,
        };
        if self.settlements.send(settlement).await.is_err() {
            tracing::warn!("the webhook settler has stopped; the lease brings the delivery back");
        }
    }

    /// One signed POST: the endpoint's status and the start of its answer, or why there was
    /// none. Errors name no secret and no payload.
    async fn post(
        &self,
        delivery: &ClaimedDelivery,
        now: Timestamp,
    ) -> Result<(u16, Vec<u8>), String> {
        let secrets: Vec<WebhookSecret> = delivery
            .sealed_secrets
            .iter()
            .filter_map(|sealed| self.master_key.open(sealed, &delivery.endpoint.id))
            .filter_map(|plain| String::from_utf8(plain).ok())
            .filter_map(|text| WebhookSecret::parse(&text))
            .collect();
        if secrets.is_empty() {
            return Err("the signing secret cannot be opened (was the master key changed?)".into());
        }
        let body = payload(&delivery.content).ok_or_else(|| FORGOTTEN.to_owned())?;
        let timestamp = now.as_millis().div_euclid(1000);
        let signature = signature_header(&secrets, &delivery.id, timestamp, &body);
        let url = outbound::check_url(&delivery.endpoint.url, self.settings.allow_private)
            .map_err(|error| error.to_string())?;
        let client = self
            .clients
            .for_url(&url, &self.settings)
            .await
            .map_err(|error| error.to_string())?;
        let response = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, "Keyward-Webhooks/1")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|error| outbound::unreachable(error).to_string())?;
        let status = response.status().as_u16();
        let excerpt = tokio::time::timeout(
            self.settings.timeout,
            outbound::read_prefix(response, RESPONSE_EXCERPT_BYTES),
        )
        .await
        .unwrap_or_default();
        Ok((status, excerpt))
    }
}

/// The body of a delivery: `{type, timestamp, data}`, `data` being the event as `/ws` sends
/// it. The same bytes on every attempt.
pub fn payload(content: &DeliveryContent) -> Option<Vec<u8>> {
    let body = match content {
        DeliveryContent::Forgotten => return None,
        DeliveryContent::Event(event) => keyward_proto::WebhookPayload {
            event_type: event.kind.as_str().to_owned(),
            timestamp: convert::datetime(event.created_at),
            data: serde_json::to_value(convert::event(event)).unwrap_or_default(),
        },
        DeliveryContent::Test {
            details,
            created_at,
        } => keyward_proto::WebhookPayload {
            event_type: keyward_core::webhook::TEST_EVENT_TYPE.to_owned(),
            timestamp: convert::datetime(*created_at),
            data: details.clone(),
        },
    };
    serde_json::to_vec(&body).ok()
}

/// Why a delivery whose event has been purged fails for good.
const FORGOTTEN: &str = "the event is no longer kept (past the event retention window)";

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
