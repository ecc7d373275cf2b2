//! Prometheus metrics, served at `/metrics`.

use keyward_core::verify::VerifyCode;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type OutcomeLabels = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// One counter per outcome, made up front so counting is a single atomic add.
    verifications: [Counter; VerifyCode::EVERY.len()],
    pub cache_entries: Gauge,
    pub cache_trusted: Gauge,
    /// What the verification cache's entries weigh, and its bound, in approximate bytes.
    pub cache_weighted_bytes: Gauge,
    pub cache_max_bytes: Gauge,
    pub cache_counters: crate::verification::cache::CacheCounters,
    /// The filter of known credentials: its size, whether it answers, and what it did.
    pub filter_bytes: Gauge,
    pub filter_ready: Gauge,
    pub filter_counters: crate::verification::known::FilterCounters,
    pub last_used_dropped: Counter,
    /// Verification outcomes not counted in usage analytics (queue full, storage down long).
    pub usage_records_dropped: Counter,
    /// Verifications counted towards their app, organisation and environment but not their
    /// key, because too many per-key sums were waiting for storage.
    pub usage_key_counts_folded: Counter,
    pub propagation_lapses: Counter,
    /// 1 while Redis answers; 0 while it does not, and also when no Redis is configured
    /// (`/readyz` tells the two apart).
    pub redis_up: Gauge,
    pub usage_fallbacks: UsageFallbacks,
    /// Credit balances the in-process engine holds.
    pub usage_live_balances: Gauge,
    pub stream: StreamMetrics,
    pub connections: ConnectionMetrics,
    pub webhooks: WebhookMetrics,
}

/// Webhook deliveries made by this node, and leak reports it handled.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    pub delivered: Counter,
    pub failed_attempts: Counter,
    pub endpoints_disabled: Counter,
    /// Deliveries in flight on this node.
    pub in_flight: Gauge,
    pub leaks_reported: Counter,
}

/// TCP connections to the server (`serve.rs`).
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    /// Closed at once because `max_connections` were open.
    pub refused: Counter,
    /// Closed for sending no complete request head in time, or for not reading what they
    /// were sent.
    pub timed_out: Counter,
}

/// The WebSocket event stream.
#[derive(Debug, Default)]
pub struct StreamMetrics {
    pub sockets: Gauge,
    /// Every WebSocket upgrade, accepted or not.
    pub connections: Counter,
    pub events_published: Counter,
    /// Alerts not recorded because their queue was full or storage refused them.
    pub alerts_dropped: Counter,
    /// Events a slow socket missed (the socket was told with `lagged`).
    pub events_missed: Counter,
}

/// Charges decided by the fallback while Redis was unreachable, by what they involved.
#[derive(Debug, Default)]
pub struct UsageFallbacks {
    pub credits: Counter,
    pub rate_limits: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyward");
        let by_outcome = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "verifications",
            "Key verifications by outcome code",
            by_outcome.clone(),
        );
        let verifications = VerifyCode::EVERY.map(|code| {
            by_outcome
                .get_or_create(&vec![("outcome", code.as_str())])
                .clone()
        });
        let usage_live_balances = Gauge::default();
        registry.register(
            "usage_live_balances",
            "Credit balances held by this node's in-process usage engine: those charged \
             since they were last written back, or within the idle time",
            usage_live_balances.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "verify_cache_entries",
            "Secrets held in this node's verification cache",
            cache_entries.clone(),
        );
        let cache_trusted = Gauge::default();
        registry.register(
            "verify_cache_trusted",
            "1 while this node's cache may answer; 0 while it verifies from storage because \
             it may have missed another node's change",
            cache_trusted.clone(),
        );
        let cache_weighted_bytes = Gauge::default();
        registry.register(
            "verify_cache_weighted_bytes",
            "What the verification cache's entries weigh, in approximate bytes",
            cache_weighted_bytes.clone(),
        );
        let cache_max_bytes = Gauge::default();
        registry.register(
            "verify_cache_max_bytes",
            "The verification cache's bound, in approximate bytes (KEYWARD_CACHE_MAX_BYTES)",
            cache_max_bytes.clone(),
        );
        let cache_counters = crate::verification::cache::CacheCounters::default();
        registry.register(
            "verify_cache_hits",
            "Look-ups the verification cache answered",
            cache_counters.hits.clone(),
        );
        registry.register(
            "verify_cache_misses",
            "Look-ups the verification cache could not answer (storage was asked)",
            cache_counters.misses.clone(),
        );
        registry.register(
            "verify_cache_evictions",
            "Entries dropped to keep the verification cache within its bound",
            cache_counters.evictions.clone(),
        );
        registry.register(
            "verify_storage_reads",
            "Credentials verification read from storage: what neither the cache nor the \
             filter of known credentials could answer",
            cache_counters.storage_reads.clone(),
        );
        let filter_bytes = Gauge::default();
        registry.register(
            "verify_filter_bytes",
            "Memory held by the filter of known credentials (two while one is rebuilt)",
            filter_bytes.clone(),
        );
        let filter_ready = Gauge::default();
        registry.register(
            "verify_filter_ready",
            "1 while the filter of known credentials answers; 0 while it is built, when \
             unknown secrets are looked up in storage",
            filter_ready.clone(),
        );
        let filter_counters = crate::verification::known::FilterCounters::default();
        registry.register(
            "verify_filter_refusals",
            "Look-ups the filter of known credentials refused without a storage read",
            filter_counters.refusals.clone(),
        );
        registry.register(
            "verify_filter_builds",
            "Builds of the filter of known credentials from storage",
            filter_counters.builds.clone(),
        );
        let propagation_lapses = Counter::default();
        registry.register(
            "cluster_propagation_lapses",
            "Changes that waited for another node's lease to end instead of its acknowledgement",
            propagation_lapses.clone(),
        );
        let last_used_dropped = Counter::default();
        registry.register(
            "last_used_dropped",
            "last_used_at updates dropped because the write queue was full",
            last_used_dropped.clone(),
        );
        let usage_records_dropped = Counter::default();
        registry.register(
            "usage_records_dropped",
            "Verification outcomes left out of usage analytics because their queue was full \
             or storage stayed unavailable",
            usage_records_dropped.clone(),
        );
        let usage_key_counts_folded = Counter::default();
        registry.register(
            "usage_key_counts_folded",
            "Verifications counted in usage analytics towards their app, organization and \
             environment but not their key, because too many per-key sums were waiting for \
             storage",
            usage_key_counts_folded.clone(),
        );
        let redis_up = Gauge::default();
        registry.register(
            "redis_up",
            "1 while Redis answers and usage counters are shared by every node; 0 while this \
             node falls back (see the usage fallback settings)",
            redis_up.clone(),
        );
        let fallbacks = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "usage_fallbacks",
            "Charges decided while Redis was unreachable, by what they involved",
            fallbacks.clone(),
        );
        // One statement each: `get_or_create` holds the family's lock until the statement ends.
        let credits = fallbacks.get_or_create(&vec![("kind", "credits")]).clone();
        let rate_limits = fallbacks
            .get_or_create(&vec![("kind", "rate_limits")])
            .clone();
        let usage_fallbacks = UsageFallbacks {
            credits,
            rate_limits,
        };
        let stream = StreamMetrics::default();
        registry.register(
            "ws_sockets",
            "Open WebSocket sessions",
            stream.sockets.clone(),
        );
        registry.register(
            "ws_connections",
            "WebSocket connections opened, whatever became of them",
            stream.connections.clone(),
        );
        registry.register(
            "events_published",
            "Events and alerts this node has passed to its sockets",
            stream.events_published.clone(),
        );
        registry.register(
            "alerts_dropped",
            "Alerts not recorded, because their queue was full or storage failed",
            stream.alerts_dropped.clone(),
        );
        registry.register(
            "ws_events_missed",
            "Events slow sockets fell behind on (each socket was sent `lagged`)",
            stream.events_missed.clone(),
        );
        let webhooks = WebhookMetrics::default();
        for (name, help, counter) in [
            (
                "webhook_deliveries",
                "Webhook deliveries this node made that the endpoint accepted",
                &webhooks.delivered,
            ),
            (
                "webhook_failed_attempts",
                "Webhook attempts that failed (status, timeout, refused address)",
                &webhooks.failed_attempts,
            ),
            (
                "webhook_endpoints_disabled",
                "Endpoints this node turned off after they kept failing",
                &webhooks.endpoints_disabled,
            ),
            (
                "leaks_reported",
                "Leak reports about a live key (GitHub and report-leak)",
                &webhooks.leaks_reported,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "webhook_deliveries_in_flight",
            "Webhook attempts under way on this node",
            webhooks.in_flight.clone(),
        );
        let connections = ConnectionMetrics::default();
        registry.register(
            "connections_open",
            "Open TCP connections, WebSocket sessions included",
            connections.open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed on arrival because the connection limit was reached",
            connections.refused.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed for sending no complete request head in time, or for not \
             reading their responses",
            connections.timed_out.clone(),
        );
        Self {
            registry,
            stream,
            webhooks,
            connections,
            redis_up,
            usage_fallbacks,
            usage_live_balances,
            verifications,
            cache_entries,
            cache_trusted,
            cache_weighted_bytes,
            cache_max_bytes,
            cache_counters,
            filter_bytes,
            filter_ready,
            filter_counters,
            last_used_dropped,
            usage_records_dropped,
            usage_key_counts_folded,
            propagation_lapses,
        }
    }

    pub fn count_verification(&self, code: VerifyCode) {
        self.verifications[code as usize].inc();
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            tracing::error!("could not encode metrics");
        }
        text
    }
}
