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
    pub last_used_dropped: Counter,
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
        let cache_entries = Gauge::default();
        registry.register(
            "verify_cache_entries",
            "Secrets held in this node's verification cache",
            cache_entries.clone(),
        );
        let last_used_dropped = Counter::default();
        registry.register(
            "last_used_dropped",
            "last_used_at updates dropped because the write queue was full",
            last_used_dropped.clone(),
        );
        Self {
            registry,
            verifications,
            cache_entries,
            last_used_dropped,
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
