//! Usage control at run time: rate limits and credits charged by an engine, exact on one
//! node (in process) or across a cluster (Redis), with the core's maths as the definition
//! ([`keyward_core::usage::charge`]).
//!
//! Live counters belong to the engine. Credit balances and organisations' spending are
//! written back to storage every `write_back_interval` (and on shutdown), so that they
//! survive a restart of Keyward (in-process engine) or of Redis. See ARCHITECTURE.md, "Usage
//! control", for what a crash between two write-backs costs.

mod local;
mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::model::Tenancy;
use keyward_core::usage::{
    AdjustmentError, CapUsage, CreditAdjustment, Credits, Decision, Outcome, RateWindow,
};
use keyward_core::Timestamp;
use keyward_store::{Store, UsageWriteBack};

pub use self::local::LocalEngine;
pub use self::redis::{RedisEngine, RedisSettings};
use crate::metrics::Metrics;

/// How often a node checks that Redis answers (and notices that it is back).
const REDIS_WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// How long a verification's `idempotency_key` is remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// One verification's claim on the meters it passes through.
#[derive(Debug, Clone, Copy)]
pub struct ChargeRequest<'a> {
    /// The meter of the key (or root key, or client address) being charged.
    pub meter: &'a str,
    pub windows: &'a [RateWindow],
    /// The key's credits as storage knows them: where a meter starts, and the refill rule.
    /// `None`: the key is not charged credits.
    pub credits: Option<Credits>,
    /// [`Limiter::balance_generation`] read before `credits` was read from storage: the
    /// in-process engine refuses a balance older than its last forgetting
    /// ([`UsageError::StaleCredits`]).
    pub credits_generation: u64,
    pub organization: Option<OrganizationCharge<'a>>,
    pub cost: i64,
    pub idempotency_key: Option<&'a str>,
    pub now: Timestamp,
}

#[derive(Debug, Clone, Copy)]
pub struct OrganizationCharge<'a> {
    pub meter: &'a str,
    pub windows: &'a [RateWindow],
    /// The cap, and what storage last knew was spent.
    pub cap: Option<CapUsage>,
}

impl ChargeRequest<'_> {
    fn spends_credits(&self) -> bool {
        self.credits.is_some() || self.organization.is_some_and(|org| org.cap.is_some())
    }

    /// The same request with no credits or cap: only its rate windows.
    fn windows_only(&self) -> Self {
        Self {
            credits: None,
            organization: self
                .organization
                .map(|org| OrganizationCharge { cap: None, ..org }),
            ..*self
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the usage engine is unreachable: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Adjustment(#[from] AdjustmentError),
    /// The in-process engine forgot this meter's balance after writing it back, and the
    /// request's `credits` may be older than what was written.
    #[error("the balance given may be older than storage's")]
    StaleCredits,
}

/// Where counters live. Every engine decides as [`keyward_core::usage::charge`] does.
#[async_trait]
pub trait UsageEngine: Send + Sync {
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<Decision, EngineError>;

    /// Changes a key's balance atomically with respect to verifications; `None` removes its
    /// credits. `stored` is what storage holds, for a meter the engine has not seen.
    async fn adjust_credits(
        &self,
        meter: &str,
        stored: Option<Credits>,
        adjustment: Option<CreditAdjustment>,
        now: Timestamp,
    ) -> Result<Option<Credits>, EngineError>;

    /// Current balances and spending, for write-back; `None` for a meter the engine lacks.
    async fn balances(
        &self,
        credit_meters: &[String],
        cap_meters: &[String],
    ) -> Result<(Vec<Option<Credits>>, Vec<Option<CapUsage>>), EngineError>;
}

/// What a node does with a charge while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitFallback {
    /// Count in this node's memory: each node allows up to the limit.
    #[default]
    Local,
    /// Allow without counting.
    Allow,
    /// Refuse with 503.
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CreditFallback {
    /// Refuse with 503: a credit may never be spent twice.
    #[default]
    Deny,
    /// Allow without charging.
    Allow,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The engine is down and the fallback refuses.
    #[error("usage limits cannot be checked right now")]
    Unavailable,
    #[error(transparent)]
    Adjustment(#[from] AdjustmentError),
    /// The request's `credits` may be older than storage's: read them again and retry
    /// ([`EngineError::StaleCredits`]).
    #[error("the balance given may be older than storage's")]
    StaleCredits,
}

impl From<EngineError> for UsageError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Unreachable(_) => UsageError::Unavailable,
            EngineError::Adjustment(error) => UsageError::Adjustment(error),
            EngineError::StaleCredits => UsageError::StaleCredits,
        }
    }
}

pub fn key_meter(key_id: &str) -> String {
    format!("key:{key_id}")
}

pub fn organization_meter(tenancy: &Tenancy, organization_id: &str) -> String {
    format!(
        "org:{}:{}:{organization_id}",
        tenancy.workspace_id,
        tenancy.environment.as_str()
    )
}

/// Balances charged since the last write-back, by meter, with where they go in storage.
#[derive(Debug, Default)]
struct Dirty {
    /// Meter to key id.
    credits: HashMap<String, String>,
    /// Meter to organisation.
    caps: HashMap<String, (Tenancy, String)>,
}

/// The engine in use, its fallback, and the write-back of balances.
pub struct Limiter {
    local: Arc<LocalEngine>,
    redis: Option<Arc<RedisEngine>>,
    rate_limit_fallback: RateLimitFallback,
    credit_fallback: CreditFallback,
    dirty: Mutex<Dirty>,
    metrics: Arc<Metrics>,
    /// Set once a fallback has been logged, so an outage logs once, not per request.
    fallback_logged: AtomicBool,
}

/// How usage control is set up.
#[derive(Debug, Clone)]
pub struct UsageSettings {
    pub redis: Option<RedisSettings>,
    pub rate_limit_fallback: RateLimitFallback,
    pub credit_fallback: CreditFallback,
    /// How long the in-process engine keeps a written-back balance after its last charge. A
    /// key charged less often costs a storage read when it is charged again; the engine
    /// holds the balances charged within this time, not every key ever charged.
    pub balance_idle: Duration,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            redis: None,
            rate_limit_fallback: RateLimitFallback::default(),
            credit_fallback: CreditFallback::default(),
            balance_idle: Duration::from_secs(60),
        }
    }
}

impl Limiter {
    pub fn new(settings: &UsageSettings, metrics: Arc<Metrics>) -> Result<Self, String> {
        let redis = settings
            .redis
            .as_ref()
            .map(|redis| RedisEngine::connect(redis, Arc::clone(&metrics)).map(Arc::new))
            .transpose()?;
        if let Some(redis) = &redis {
            tokio::spawn(RedisEngine::watch(
                Arc::downgrade(redis),
                REDIS_WATCH_INTERVAL,
            ));
        }
        Ok(Self {
            local: Arc::new(LocalEngine::new(settings.balance_idle)),
            redis,
            rate_limit_fallback: settings.rate_limit_fallback,
            credit_fallback: settings.credit_fallback,
            dirty: Mutex::new(Dirty::default()),
            metrics,
            fallback_logged: AtomicBool::new(false),
        })
    }

    /// Whether counters are shared by every node (Redis), and whether it answers now.
    /// Records `name` in Redis for `ttl` unless it is there: `Some(true)` the first time,
    /// `Some(false)` after; `None` without Redis or while it does not answer.
    pub async fn set_once_shared(&self, name: &str, ttl: std::time::Duration) -> Option<bool> {
        let redis = self.redis.as_ref().filter(|redis| redis.is_up())?;
        match redis.set_once(name, ttl).await {
            Ok(first) => Some(first),
            Err(error) => {
                redis.mark_down(&error);
                None
            }
        }
    }

    pub fn redis_status(&self) -> Option<bool> {
        self.redis.as_ref().map(|redis| redis.is_up())
    }

    fn primary(&self) -> &dyn UsageEngine {
        match &self.redis {
            Some(redis) => redis.as_ref(),
            None => self.local.as_ref(),
        }
    }

    /// Bumped whenever the in-process engine forgets balances it wrote back; see
    /// [`ChargeRequest::credits_generation`].
    pub fn balance_generation(&self) -> u64 {
        self.local.balance_generation()
    }

    /// Balances the in-process engine holds.
    pub fn live_balances(&self) -> usize {
        self.local.live_balances()
    }

    /// Charges one request; see [`ChargeRequest`].
    pub async fn charge(&self, request: &ChargeRequest<'_>) -> Result<Decision, UsageError> {
        let decision = match &self.redis {
            None => self.local.charge_now(request)?,
            Some(redis) if redis.is_up() => match redis.charge(request).await {
                Ok(decision) => {
                    // Read first: a store on every verification would bounce the cache
                    // line between cores.
                    if self.fallback_logged.load(Ordering::Relaxed) {
                        self.fallback_logged.store(false, Ordering::Relaxed);
                    }
                    decision
                }
                Err(error) => {
                    redis.mark_down(&error);
                    self.fall_back(request)?
                }
            },
            Some(_) => self.fall_back(request)?,
        };
        if decision.outcome == Outcome::Allowed && request.spends_credits() {
            self.mark_dirty(request);
        }
        Ok(decision)
    }

    fn fall_back(&self, request: &ChargeRequest<'_>) -> Result<Decision, UsageError> {
        if !self.fallback_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                rate_limits = ?self.rate_limit_fallback,
                credits = ?self.credit_fallback,
                "Redis is unreachable: usage control falls back"
            );
        }
        let request = if request.spends_credits() {
            self.metrics.usage_fallbacks.credits.inc();
            match self.credit_fallback {
                CreditFallback::Deny => return Err(UsageError::Unavailable),
                CreditFallback::Allow => request.windows_only(),
            }
        } else {
            *request
        };
        self.metrics.usage_fallbacks.rate_limits.inc();
        match self.rate_limit_fallback {
            RateLimitFallback::Local => Ok(self.local.charge_now(&request)?),
            RateLimitFallback::Allow => Ok(Decision {
                outcome: Outcome::Allowed,
                rate: None,
                credits_remaining: None,
            }),
            RateLimitFallback::Deny => Err(UsageError::Unavailable),
        }
    }

    /// Storage was given a key's balance by another road (a credits change through the API):
    /// the next write-back writes the engine's balance again, which may be newer.
    pub fn balance_written_elsewhere(&self, key_id: &str) {
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        dirty.credits.insert(key_meter(key_id), key_id.to_owned());
    }

    fn mark_dirty(&self, request: &ChargeRequest<'_>) {
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        if request.credits.is_some() && !dirty.credits.contains_key(request.meter) {
            if let Some(key_id) = request.meter.strip_prefix("key:") {
                dirty
                    .credits
                    .insert(request.meter.to_owned(), key_id.to_owned());
            }
        }
        if let Some(org) = request.organization.filter(|org| org.cap.is_some()) {
            if !dirty.caps.contains_key(org.meter) {
                if let Some(owner) = parse_organization_meter(org.meter) {
                    dirty.caps.insert(org.meter.to_owned(), owner);
                }
            }
        }
    }

    /// Changes a key's credits (`None`: remove them); returns the balance to store.
    pub async fn adjust_credits(
        &self,
        key_id: &str,
        stored: Option<Credits>,
        adjustment: Option<CreditAdjustment>,
        now: Timestamp,
    ) -> Result<Option<Credits>, UsageError> {
        let meter = key_meter(key_id);
        let result = self
            .primary()
            .adjust_credits(&meter, stored, adjustment, now)
            .await;
        match result {
            Ok(credits) => Ok(credits),
            Err(EngineError::Adjustment(error)) => Err(error.into()),
            Err(EngineError::StaleCredits) => Err(UsageError::StaleCredits),
            Err(EngineError::Unreachable(reason)) => {
                tracing::warn!(%reason, "cannot change credits while Redis is unreachable");
                Err(UsageError::Unavailable)
            }
        }
    }

    /// Writes charged balances back to storage; keeps them for the next try on failure.
    pub async fn write_back(&self, store: &dyn Store) {
        let taken = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner));
        if taken.credits.is_empty() && taken.caps.is_empty() {
            return;
        }
        let credits: Vec<(String, String)> = taken.credits.into_iter().collect();
        let caps: Vec<(String, (Tenancy, String))> = taken.caps.into_iter().collect();
        let credit_meters: Vec<String> = credits.iter().map(|(meter, _)| meter.clone()).collect();
        let cap_meters: Vec<String> = caps.iter().map(|(meter, _)| meter.clone()).collect();
        let written = match self.primary().balances(&credit_meters, &cap_meters).await {
            Ok((balances, spending)) => {
                let usage = UsageWriteBack {
                    credits: credits
                        .iter()
                        .zip(balances)
                        .filter_map(|((_, id), balance)| balance.map(|b| (id.clone(), b)))
                        .collect(),
                    caps: caps
                        .iter()
                        .zip(spending)
                        .filter_map(|((_, (tenancy, id)), cap)| {
                            cap.map(|cap| (tenancy.clone(), id.clone(), cap))
                        })
                        .collect(),
                };
                store
                    .write_back_usage(&usage)
                    .await
                    .map(|()| usage)
                    .map_err(|e| e.to_string())
            }
            Err(error) => Err(error.to_string()),
        };
        match written {
            // Storage now holds these balances: the in-process engine may forget them.
            Ok(usage) if self.redis.is_none() => self.local.settle(&usage.credits),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "could not write usage back to storage; will retry");
                let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
                dirty.credits.extend(credits);
                dirty.caps.extend(caps);
            }
        }
    }

    /// Forgets expired windows, idempotency records and idle written-back balances of the
    /// in-process engine.
    pub fn sweep(&self, now: Timestamp) {
        self.local.sweep(now);
    }
}

fn parse_organization_meter(meter: &str) -> Option<(Tenancy, String)> {
    let rest = meter.strip_prefix("org:")?;
    let (workspace_id, rest) = rest.split_once(':')?;
    let (environment, id) = rest.split_once(':')?;
    Some((
        Tenancy {
            workspace_id: workspace_id.to_owned(),
            environment: keyward_core::Environment::parse(environment)?,
        },
        id.to_owned(),
    ))
}

/// Runs the write-back (and the in-process engine's sweep) every `interval`, and once more
/// when `stop` fires.
pub async fn write_back_loop(
    limiter: Arc<Limiter>,
    store: Arc<dyn Store>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                limiter.write_back(store.as_ref()).await;
                limiter.sweep(crate::clock::now());
            }
            _ = stop.changed() => break,
        }
    }
    limiter.write_back(store.as_ref()).await;
}
