//! The Redis engine: every counter lives in Redis and one Lua script decides and updates a
//! verification's meters atomically, so limits and credits are exact across nodes. One
//! round trip per verification (`EVALSHA`).
//!
//! Key layout, under the configured prefix: `<prefix>:<meter>:w` (a hash of window starts
//! and counts, expiring with its longest window), `<prefix>:<meter>:c` (a key's balance),
//! `<prefix>:<meter>:cap` (an organisation's spending) and `<prefix>:<meter>:i:<key>` (an
//! idempotent verification's answer, for 24 hours). All of a script's keys are passed as
//! `KEYS`. It needs a single Redis primary (or Sentinel); Redis Cluster is not supported,
//! because one charge touches several meters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::usage::{
    CapUsage, CreditAdjustment, Credits, Decision, Outcome, RateStatus, RateWindow,
};
use keyward_core::Timestamp;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{ChargeRequest, EngineError, UsageEngine, IDEMPOTENCY_WINDOW_MS};
use crate::metrics::Metrics;

static CHARGE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("charge.lua")));
static SWAP_CREDITS: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("swap_credits.lua")));

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Prepended to every key, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// How long a command may take before Redis counts as unreachable.
    pub timeout: Duration,
}

pub struct RedisEngine {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    up: AtomicBool,
    metrics: Arc<Metrics>,
}

impl RedisEngine {
    /// Sets up the connection without waiting for it: a node starts even while Redis is
    /// down, and [`RedisEngine::watch`] notices when it answers.
    pub fn connect(settings: &RedisSettings, metrics: Arc<Metrics>) -> Result<Self, String> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|error| format!("invalid REDIS_URL: {error}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| format!("cannot set up the Redis connection: {error}"))?;
        Ok(Self {
            connection,
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            up: AtomicBool::new(false),
            metrics,
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(super) fn mark_down(&self, error: &EngineError) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "Redis stopped answering");
        }
        self.metrics.redis_up.set(0);
    }

    /// Pings Redis every `interval`, marking it up or down; runs until the engine is dropped.
    pub async fn watch(engine: std::sync::Weak<Self>, interval: Duration) {
        loop {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let mut connection = engine.connection.clone();
            let answered = tokio::time::timeout(
                engine.timeout,
                redis::cmd("PING").query_async::<String>(&mut connection),
            )
            .await;
            match answered {
                Ok(Ok(_)) => {
                    if !engine.up.swap(true, Ordering::Relaxed) {
                        tracing::info!("Redis answers: usage counters are shared");
                    }
                    engine.metrics.redis_up.set(1);
                }
                Ok(Err(error)) => engine.mark_down(&EngineError::Unreachable(error.to_string())),
                Err(_) => engine.mark_down(&EngineError::Unreachable("timed out".to_owned())),
            }
            drop(engine);
            tokio::time::sleep(interval).await;
        }
    }

    fn key(&self, meter: &str, part: &str) -> String {
        format!("{}:{meter}:{part}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, EngineError> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(EngineError::Unreachable(error.to_string())),
            Err(_) => Err(EngineError::Unreachable("timed out".to_owned())),
        }
    }

    /// Sets `name` unless it exists, to expire after `ttl`: `true` when this call set it.
    pub async fn set_once(&self, name: &str, ttl: Duration) -> Result<bool, EngineError> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("SET");
        command
            .arg(format!("{}:{name}", self.prefix))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let set = command.query_async::<Option<String>>(&mut connection);
        match tokio::time::timeout(self.timeout, set).await {
            Ok(Ok(reply)) => Ok(reply.is_some()),
            Ok(Err(error)) => Err(EngineError::Unreachable(error.to_string())),
            Err(_) => Err(EngineError::Unreachable("timed out".to_owned())),
        }
    }

    async fn read_credits(&self, meter: &str) -> Result<Option<(i64, i64)>, EngineError> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("HMGET");
        command.arg(self.key(meter, "c")).arg("r").arg("t");
        let read = command.query_async::<(Option<i64>, Option<i64>)>(&mut connection);
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok((Some(remaining), Some(at)))) => Ok(Some((remaining, at))),
            Ok(Ok(_)) => Ok(None),
            Ok(Err(error)) => Err(EngineError::Unreachable(error.to_string())),
            Err(_) => Err(EngineError::Unreachable("timed out".to_owned())),
        }
    }
}

fn push_windows(invocation: &mut redis::ScriptInvocation<'_>, windows: &[RateWindow]) {
    for window in windows {
        invocation.arg(window.limit).arg(window.period_ms);
    }
}

fn decision_from_reply(reply: &[i64]) -> Result<Decision, EngineError> {
    let [outcome, retry_at, has_rate, limit, remaining, reset_at, period, has_credits, credits] =
        *reply
    else {
        return Err(EngineError::Unreachable(
            "unexpected reply from the charge script".to_owned(),
        ));
    };
    Ok(Decision {
        outcome: match outcome {
            0 => Outcome::Allowed,
            1 => Outcome::RateLimited {
                retry_at: Timestamp::from_millis(retry_at),
            },
            _ => Outcome::UsageExceeded,
        },
        rate: (has_rate == 1).then(|| RateStatus {
            limit: u64::try_from(limit).unwrap_or(0),
            remaining: u64::try_from(remaining).unwrap_or(0),
            reset_at: Timestamp::from_millis(reset_at),
            period_ms: period,
        }),
        credits_remaining: (has_credits == 1).then_some(credits),
    })
}

#[async_trait]
impl UsageEngine for RedisEngine {
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<Decision, EngineError> {
        let organization = request.organization;
        let org_meter = organization.map_or(request.meter, |org| org.meter);
        let mut invocation = CHARGE.prepare_invoke();
        invocation
            .key(self.key(request.meter, "w"))
            .key(self.key(request.meter, "c"))
            .key(self.key(org_meter, "w"))
            .key(self.key(org_meter, "cap"))
            .key(match request.idempotency_key {
                Some(key) => self.key(request.meter, &format!("i:{key}")),
                None => self.key(request.meter, "i"),
            });
        let org_windows = organization.map_or(&[][..], |org| org.windows);
        invocation
            .arg(request.now.as_millis())
            .arg(request.cost.max(0))
            .arg(if request.idempotency_key.is_some() {
                IDEMPOTENCY_WINDOW_MS
            } else {
                0
            })
            .arg(request.windows.len())
            .arg(org_windows.len());
        push_windows(&mut invocation, request.windows);
        push_windows(&mut invocation, org_windows);
        match request.credits {
            Some(credits) => {
                let (amount, period_start) = match credits.refill {
                    Some(refill) => (
                        refill.amount,
                        refill.period.start_of(request.now).as_millis(),
                    ),
                    None => (-1, 0),
                };
                invocation
                    .arg(1)
                    .arg(credits.remaining)
                    .arg(credits.refilled_at.as_millis())
                    .arg(amount)
                    .arg(period_start);
            }
            None => {
                invocation.arg(0).arg(0).arg(0).arg(-1).arg(0);
            }
        }
        match organization.and_then(|org| org.cap) {
            Some(cap) => {
                let period_start = cap
                    .period
                    .map_or(-1, |period| period.start_of(request.now).as_millis());
                invocation
                    .arg(1)
                    .arg(cap.cap)
                    .arg(cap.spent)
                    .arg(cap.period_start.as_millis())
                    .arg(period_start);
            }
            None => {
                invocation.arg(0).arg(0).arg(0).arg(0).arg(-1);
            }
        }
        let reply: Vec<i64> = self.run(invocation).await?;
        decision_from_reply(&reply)
    }

    async fn adjust_credits(
        &self,
        meter: &str,
        stored: Option<Credits>,
        adjustment: Option<CreditAdjustment>,
        now: Timestamp,
    ) -> Result<Option<Credits>, EngineError> {
        // Read, decide with the core's rules, and swap if nothing changed meanwhile.
        loop {
            let live = self.read_credits(meter).await?;
            let current = match (live, stored) {
                (Some((remaining, at)), Some(stored)) => Some(Credits {
                    remaining,
                    refilled_at: Timestamp::from_millis(at),
                    refill: stored.refill,
                }),
                (_, stored) => stored,
            };
            let adjusted = adjustment
                .map(|adjustment| adjustment.apply(current, now))
                .transpose()?;
            let (expected_remaining, expected_at) = match live {
                Some((remaining, at)) => (remaining.to_string(), at.to_string()),
                None => (String::new(), String::new()),
            };
            let (new_remaining, new_at) = match adjusted {
                Some(credits) => (
                    credits.remaining.to_string(),
                    credits.refilled_at.as_millis().to_string(),
                ),
                None => (String::new(), String::new()),
            };
            let mut invocation = SWAP_CREDITS.prepare_invoke();
            invocation
                .key(self.key(meter, "c"))
                .arg(expected_remaining)
                .arg(expected_at)
                .arg(new_remaining)
                .arg(new_at);
            let swapped: i64 = self.run(invocation).await?;
            if swapped == 1 {
                return Ok(adjusted);
            }
        }
    }

    async fn balances(
        &self,
        credit_meters: &[String],
        cap_meters: &[String],
    ) -> Result<(Vec<Option<Credits>>, Vec<Option<CapUsage>>), EngineError> {
        let mut pipeline = redis::pipe();
        for meter in credit_meters {
            pipeline
                .cmd("HMGET")
                .arg(self.key(meter, "c"))
                .arg("r")
                .arg("t");
        }
        for meter in cap_meters {
            pipeline
                .cmd("HMGET")
                .arg(self.key(meter, "cap"))
                .arg("s")
                .arg("p");
        }
        let mut connection = self.connection.clone();
        let replies: Vec<(Option<i64>, Option<i64>)> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(|error| EngineError::Unreachable(error.to_string()))?;
        let (credit_replies, cap_replies) = replies.split_at(credit_meters.len());
        Ok((
            credit_replies
                .iter()
                .map(|reply| match *reply {
                    (Some(remaining), Some(at)) => Some(Credits {
                        remaining,
                        refill: None,
                        refilled_at: Timestamp::from_millis(at),
                    }),
                    _ => None,
                })
                .collect(),
            cap_replies
                .iter()
                .map(|reply| match *reply {
                    (Some(spent), Some(start)) => Some(CapUsage {
                        // Only `spent` and `period_start` are written back.
                        cap: 0,
                        period: None,
                        spent,
                        period_start: Timestamp::from_millis(start),
                    }),
                    _ => None,
                })
                .collect(),
        ))
    }
}
