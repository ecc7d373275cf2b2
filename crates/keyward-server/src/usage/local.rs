//! The in-process engine: exact on one node, and each node's own counters in the fallback
//! while Redis is unreachable.
//!
//! One mutex guards every meter, so a verification that passes through a key's meter and
//! its organisation's sees and updates both at once (all-or-nothing). The critical section
//! is a few hash look-ups and the core's arithmetic: far below a microsecond.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use keyward_core::usage::{
    charge, CapUsage, CreditAdjustment, Credits, Decision, Meters, Outcome, RateWindow, WindowCount,
};
use keyward_core::Timestamp;

use super::{ChargeRequest, EngineError, UsageEngine, IDEMPOTENCY_WINDOW_MS};

#[derive(Debug, Default)]
pub struct LocalEngine {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per meter: each window's period and count.
    windows: HashMap<String, Vec<(i64, WindowCount)>>,
    credits: HashMap<String, Credits>,
    caps: HashMap<String, CapUsage>,
    /// Allowed decisions by meter and idempotency key, with when they are forgotten.
    replies: HashMap<(String, String), (Decision, i64)>,
}

fn count_for(counts: Option<&Vec<(i64, WindowCount)>>, window: RateWindow) -> WindowCount {
    counts
        .and_then(|counts| {
            counts
                .iter()
                .find(|(period, _)| *period == window.period_ms)
        })
        .map(|(_, count)| *count)
        .unwrap_or_default()
}

fn store_counts(
    windows: &mut HashMap<String, Vec<(i64, WindowCount)>>,
    meter: &str,
    counted: &[(RateWindow, WindowCount)],
) {
    if counted.is_empty() {
        return;
    }
    let fresh = counted
        .iter()
        .map(|(window, count)| (window.period_ms, *count));
    match windows.get_mut(meter) {
        Some(counts) => {
            counts.clear();
            counts.extend(fresh);
        }
        None => {
            windows.insert(meter.to_owned(), fresh.collect());
        }
    }
}

impl LocalEngine {
    /// Charges at once; the in-process engine never waits.
    pub fn charge_now(&self, request: &ChargeRequest<'_>) -> Decision {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = request.now;
        if let Some(key) = request.idempotency_key {
            // A tuple key cannot be borrowed as (&str, &str); retries are rare enough that
            // the allocation only matters on the path that uses it.
            let lookup = (request.meter.to_owned(), key.to_owned());
            if let Some((decision, until)) = state.replies.get(&lookup) {
                if *until > now.as_millis() {
                    return *decision;
                }
            }
        }
        let own = state.windows.get(request.meter);
        let org_counts = request
            .organization
            .and_then(|org| state.windows.get(org.meter));
        let own_len = request.windows.len();
        let mut counted: Vec<(RateWindow, WindowCount)> = request
            .windows
            .iter()
            .map(|&window| (window, count_for(own, window)))
            .chain(
                request
                    .organization
                    .into_iter()
                    .flat_map(|org| org.windows.iter())
                    .map(|&window| (window, count_for(org_counts, window))),
            )
            .collect();
        let mut credits = request.credits.map(|stored| {
            state
                .credits
                .get(request.meter)
                .map_or(stored, |live| Credits {
                    refill: stored.refill,
                    ..*live
                })
        });
        let mut cap = request.organization.and_then(|org| {
            org.cap.map(|stored| {
                state.caps.get(org.meter).map_or(stored, |live| CapUsage {
                    cap: stored.cap,
                    period: stored.period,
                    ..*live
                })
            })
        });
        let decision = charge(
            Meters {
                windows: &mut counted,
                credits: credits.as_mut(),
                cap: cap.as_mut(),
                cost: request.cost,
            },
            now,
        );
        if decision.outcome != Outcome::Allowed {
            return decision;
        }
        let (own_counted, org_counted) = counted.split_at(own_len);
        store_counts(&mut state.windows, request.meter, own_counted);
        if let Some(org) = request.organization {
            store_counts(&mut state.windows, org.meter, org_counted);
            if let Some(cap) = cap {
                match state.caps.get_mut(org.meter) {
                    Some(live) => *live = cap,
                    None => {
                        state.caps.insert(org.meter.to_owned(), cap);
                    }
                }
            }
        }
        if let Some(credits) = credits {
            match state.credits.get_mut(request.meter) {
                Some(live) => *live = credits,
                None => {
                    state.credits.insert(request.meter.to_owned(), credits);
                }
            }
        }
        if let Some(key) = request.idempotency_key {
            state.replies.insert(
                (request.meter.to_owned(), key.to_owned()),
                (decision, now.as_millis() + IDEMPOTENCY_WINDOW_MS),
            );
        }
        decision
    }

    /// Drops windows that have all ended and idempotency records past their time. Credit
    /// balances stay: they are the live truth until written back.
    pub fn sweep(&self, now: Timestamp) {
        let now = now.as_millis();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.windows.retain(|_, counts| {
            counts
                .iter()
                .any(|(period, count)| count.window_start + period > now)
        });
        state.replies.retain(|_, (_, until)| *until > now);
    }
}

#[async_trait]
impl UsageEngine for LocalEngine {
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<Decision, EngineError> {
        Ok(self.charge_now(request))
    }

    async fn adjust_credits(
        &self,
        meter: &str,
        stored: Option<Credits>,
        adjustment: Option<CreditAdjustment>,
        now: Timestamp,
    ) -> Result<Option<Credits>, EngineError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(adjustment) = adjustment else {
            state.credits.remove(meter);
            return Ok(None);
        };
        let current = stored.map(|stored| {
            state.credits.get(meter).map_or(stored, |live| Credits {
                refill: stored.refill,
                ..*live
            })
        });
        let adjusted = adjustment.apply(current, now)?;
        state.credits.insert(meter.to_owned(), adjusted);
        Ok(Some(adjusted))
    }

    async fn balances(
        &self,
        credit_meters: &[String],
        cap_meters: &[String],
    ) -> Result<(Vec<Option<Credits>>, Vec<Option<CapUsage>>), EngineError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok((
            credit_meters
                .iter()
                .map(|meter| state.credits.get(meter).copied())
                .collect(),
            cap_meters
                .iter()
                .map(|meter| state.caps.get(meter).copied())
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::OrganizationCharge;

    const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    fn request<'a>(windows: &'a [RateWindow], credits: Option<Credits>) -> ChargeRequest<'a> {
        ChargeRequest {
            meter: "key:k",
            windows,
            credits,
            organization: None,
            cost: 1,
            idempotency_key: None,
            now: NOW,
        }
    }

    #[test]
    fn the_live_balance_wins_over_the_stored_one() {
        let engine = LocalEngine::default();
        let stored = Credits {
            remaining: 2,
            refill: None,
            refilled_at: NOW,
        };
        let request = request(&[], Some(stored));
        assert_eq!(engine.charge_now(&request).credits_remaining, Some(1));
        // The cached record still says 2: the engine remembers 1.
        assert_eq!(engine.charge_now(&request).credits_remaining, Some(0));
        assert_eq!(engine.charge_now(&request).outcome, Outcome::UsageExceeded);
    }

    #[test]
    fn an_organisation_cap_is_shared_by_its_keys() {
        let engine = LocalEngine::default();
        let cap = CapUsage {
            cap: 3,
            period: None,
            spent: 0,
            period_start: NOW,
        };
        let mut allowed = 0;
        for key in ["key:a", "key:b", "key:c", "key:a", "key:b"] {
            let request = ChargeRequest {
                meter: key,
                organization: Some(OrganizationCharge {
                    meter: "org:w:live:o",
                    windows: &[],
                    cap: Some(cap),
                }),
                ..request(&[], None)
            };
            if engine.charge_now(&request).outcome == Outcome::Allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 3);
    }

    #[test]
    fn an_idempotent_retry_is_charged_once() {
        let engine = LocalEngine::default();
        let stored = Credits {
            remaining: 5,
            refill: None,
            refilled_at: NOW,
        };
        let retried = ChargeRequest {
            idempotency_key: Some("req-1"),
            ..request(&[], Some(stored))
        };
        let first = engine.charge_now(&retried);
        assert_eq!(engine.charge_now(&retried), first);
        assert_eq!(first.credits_remaining, Some(4));
        let other = ChargeRequest {
            idempotency_key: Some("req-2"),
            ..retried
        };
        assert_eq!(engine.charge_now(&other).credits_remaining, Some(3));
    }

    #[test]
    fn sweeping_forgets_ended_windows_only() {
        let engine = LocalEngine::default();
        let windows = [RateWindow {
            limit: 1,
            period_ms: 1000,
        }];
        assert_eq!(
            engine.charge_now(&request(&windows, None)).outcome,
            Outcome::Allowed
        );
        engine.sweep(NOW);
        assert!(matches!(
            engine.charge_now(&request(&windows, None)).outcome,
            Outcome::RateLimited { .. }
        ));
        engine.sweep(NOW.plus_seconds(1));
        assert!(engine.state.lock().unwrap().windows.is_empty());
    }
}
