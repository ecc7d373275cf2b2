//! The in-process engine: exact on one node, and each node's own counters in the fallback
//! while Redis is unreachable.
//!
//! One mutex guards every meter, so a verification that passes through a key's meter and
//! its organisation's sees and updates both at once (all-or-nothing). The critical section
//! is a few hash look-ups and the core's arithmetic: far below a microsecond.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use keyward_core::usage::{
    charge, CapUsage, CreditAdjustment, Credits, Decision, Meters, Outcome, RateWindow, WindowCount,
};
use keyward_core::Timestamp;

use super::{key_meter, ChargeRequest, EngineError, UsageEngine, IDEMPOTENCY_WINDOW_MS};

#[derive(Debug)]
pub struct LocalEngine {
    state: Mutex<State>,
    /// How long a written-back balance stays after its last charge.
    balance_idle_ms: i64,
    /// Bumped, under `state`'s lock, by every sweep that forgets a balance; the forgotten
    /// meters' slots in `State::forgotten_at` take its new value. A charge whose `credits`
    /// were read from storage before its meter's slot was last set, for a meter with no live
    /// balance, may carry a balance older than the one written back: it is refused as stale.
    forgotten: AtomicU64,
}

/// Slots of `State::forgotten_at`: meters share a slot by hash, so a forgotten balance makes
/// only the keys of its slot read their credits again.
const FORGOTTEN_SLOTS: usize = 4096;

fn forgotten_slot(meter: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meter.hash(&mut hasher);
    (hasher.finish() % FORGOTTEN_SLOTS as u64) as usize
}

impl Default for LocalEngine {
    fn default() -> Self {
        Self::new(super::UsageSettings::default().balance_idle)
    }
}

#[derive(Debug)]
struct State {
    /// Per meter: each window's period and count.
    windows: HashMap<String, Vec<(i64, WindowCount)>>,
    credits: HashMap<String, LiveCredits>,
    caps: HashMap<String, CapUsage>,
    /// Allowed decisions by meter and idempotency key, with when they are forgotten.
    replies: HashMap<(String, String), (Decision, i64)>,
    /// Per slot of meters, the generation at which a balance of one was last forgotten.
    forgotten_at: Vec<u64>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            windows: HashMap::new(),
            credits: HashMap::new(),
            caps: HashMap::new(),
            replies: HashMap::new(),
            forgotten_at: vec![0; FORGOTTEN_SLOTS],
        }
    }
}

/// A balance as charges left it.
#[derive(Debug, Clone, Copy)]
struct LiveCredits {
    balance: Credits,
    /// When a charge or an adjustment last changed it.
    changed_at: i64,
    /// Whether storage holds exactly this balance: written back, and unchanged since.
    settled: bool,
}

impl LiveCredits {
    fn changed(balance: Credits, now: Timestamp) -> Self {
        Self {
            balance,
            changed_at: now.as_millis(),
            settled: false,
        }
    }
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
    /// `balance_idle`: how long a written-back balance stays after its last charge.
    pub fn new(balance_idle: std::time::Duration) -> Self {
        Self {
            state: Mutex::default(),
            balance_idle_ms: i64::try_from(balance_idle.as_millis()).unwrap_or(i64::MAX),
            forgotten: AtomicU64::new(0),
        }
    }

    pub fn live_balances(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.credits.len()
    }

    pub fn balance_generation(&self) -> u64 {
        self.forgotten.load(Ordering::SeqCst)
    }

    /// Charges at once; the in-process engine never waits. Refuses `credits` that may be
    /// older than a balance it forgot ([`EngineError::StaleCredits`]).
    pub fn charge_now(&self, request: &ChargeRequest<'_>) -> Result<Decision, EngineError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = request.now;
        if let Some(key) = request.idempotency_key {
            // A tuple key cannot be borrowed as (&str, &str); retries are rare enough that
            // the allocation only matters on the path that uses it.
            let lookup = (request.meter.to_owned(), key.to_owned());
            if let Some((decision, until)) = state.replies.get(&lookup) {
                if *until > now.as_millis() {
                    return Ok(*decision);
                }
            }
        }
        let seeded = request.credits.is_some() && !state.credits.contains_key(request.meter);
        if seeded && request.credits_generation < state.forgotten_at[forgotten_slot(request.meter)]
        {
            return Err(EngineError::StaleCredits);
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
                    ..live.balance
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
            if let (true, Some(stored)) = (seeded, request.credits) {
                // Held although nothing was spent, so that a refused key's retries are not
                // each sent back to storage once its balance has been forgotten. Storage
                // holds it: it is no older than the meter's last forgetting.
                state.credits.insert(
                    request.meter.to_owned(),
                    LiveCredits {
                        balance: stored,
                        changed_at: now.as_millis(),
                        settled: true,
                    },
                );
            }
            return Ok(decision);
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
            let live = LiveCredits::changed(credits, now);
            match state.credits.get_mut(request.meter) {
                Some(held) => *held = live,
                None => {
                    state.credits.insert(request.meter.to_owned(), live);
                }
            }
        }
        if let Some(key) = request.idempotency_key {
            state.replies.insert(
                (request.meter.to_owned(), key.to_owned()),
                (decision, now.as_millis() + IDEMPOTENCY_WINDOW_MS),
            );
        }
        Ok(decision)
    }

    /// Notes balances storage now holds, by key id: each still equal is settled.
    pub fn settle(&self, written: &[(String, Credits)]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (key_id, balance) in written {
            if let Some(live) = state.credits.get_mut(&key_meter(key_id)) {
                // A charge since the read for the write-back has changed it, and marked it
                // to be written again.
                live.settled |= live.balance == *balance;
            }
        }
    }

    /// Drops windows that have all ended, idempotency records past their time, and settled
    /// balances idle for `balance_idle`. Unsettled balances stay: they are the live truth
    /// until written back.
    pub fn sweep(&self, now: Timestamp) {
        let now = now.as_millis();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.windows.retain(|_, counts| {
            counts
                .iter()
                .any(|(period, count)| count.window_start + period > now)
        });
        state.replies.retain(|_, (_, until)| *until > now);
        let idle = self.balance_idle_ms;
        let mut forgotten = Vec::new();
        state.credits.retain(|meter, live| {
            let keep = !live.settled || now - live.changed_at < idle;
            if !keep {
                forgotten.push(forgotten_slot(meter));
            }
            keep
        });
        if !forgotten.is_empty() {
            let generation = self.forgotten.fetch_add(1, Ordering::SeqCst) + 1;
            for slot in forgotten {
                state.forgotten_at[slot] = generation;
            }
        }
    }
}

#[async_trait]
impl UsageEngine for LocalEngine {
    async fn charge(&self, request: &ChargeRequest<'_>) -> Result<Decision, EngineError> {
        self.charge_now(request)
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
                ..live.balance
            })
        });
        let adjusted = adjustment.apply(current, now)?;
        state
            .credits
            .insert(meter.to_owned(), LiveCredits::changed(adjusted, now));
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
                .map(|meter| state.credits.get(meter).map(|live| live.balance))
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
            credits_generation: 0,
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
        assert_eq!(
            engine.charge_now(&request).unwrap().credits_remaining,
            Some(1)
        );
        // The cached record still says 2: the engine remembers 1.
        assert_eq!(
            engine.charge_now(&request).unwrap().credits_remaining,
            Some(0)
        );
        assert_eq!(
            engine.charge_now(&request).unwrap().outcome,
            Outcome::UsageExceeded
        );
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
            if engine.charge_now(&request).unwrap().outcome == Outcome::Allowed {
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
        let first = engine.charge_now(&retried).unwrap();
        assert_eq!(engine.charge_now(&retried).unwrap(), first);
        assert_eq!(first.credits_remaining, Some(4));
        let other = ChargeRequest {
            idempotency_key: Some("req-2"),
            ..retried
        };
        assert_eq!(
            engine.charge_now(&other).unwrap().credits_remaining,
            Some(3)
        );
    }

    #[test]
    fn sweeping_forgets_ended_windows_only() {
        let engine = LocalEngine::default();
        let windows = [RateWindow {
            limit: 1,
            period_ms: 1000,
        }];
        assert_eq!(
            engine.charge_now(&request(&windows, None)).unwrap().outcome,
            Outcome::Allowed
        );
        engine.sweep(NOW);
        assert!(matches!(
            engine.charge_now(&request(&windows, None)).unwrap().outcome,
            Outcome::RateLimited { .. }
        ));
        engine.sweep(NOW.plus_seconds(1));
        assert!(engine.state.lock().unwrap().windows.is_empty());
    }

    #[test]
    fn a_settled_idle_balance_is_forgotten_and_an_older_one_refused_after() {
        const IDLE_MS: i64 = 60_000;
        let engine = LocalEngine::new(std::time::Duration::from_millis(IDLE_MS as u64));
        let stored = Credits {
            remaining: 10,
            refill: None,
            refilled_at: NOW,
        };
        let generation = engine.balance_generation();
        let first = request(&[], Some(stored));
        assert_eq!(
            engine.charge_now(&first).unwrap().credits_remaining,
            Some(9)
        );
        // Unsettled: kept however long it idles.
        engine.sweep(NOW.plus_millis(IDLE_MS));
        assert_eq!(engine.state.lock().unwrap().credits.len(), 1);
        // Written back, then charged again before the write-back's answer: not settled.
        let written = Credits {
            remaining: 9,
            ..stored
        };
        assert_eq!(
            engine.charge_now(&first).unwrap().credits_remaining,
            Some(8)
        );
        engine.settle(&[("k".to_owned(), written)]);
        engine.sweep(NOW.plus_millis(2 * IDLE_MS));
        assert_eq!(engine.state.lock().unwrap().credits.len(), 1);
        // Settled, but charged within the idle time: kept.
        let written = Credits {
            remaining: 8,
            ..stored
        };
        engine.settle(&[("k".to_owned(), written)]);
        engine.sweep(NOW.plus_millis(IDLE_MS - 1));
        assert_eq!(engine.state.lock().unwrap().credits.len(), 1);
        // Settled and idle: forgotten.
        engine.sweep(NOW.plus_millis(IDLE_MS));
        assert!(engine.state.lock().unwrap().credits.is_empty());
        // The balance read before the forgetting says 10, storage says 8: refused, never
        // charged from 10 again.
        assert!(matches!(
            engine.charge_now(&first),
            Err(EngineError::StaleCredits)
        ));
        assert!(generation < engine.balance_generation());
        let fresh = ChargeRequest {
            credits: Some(written),
            credits_generation: engine.balance_generation(),
            ..first
        };
        assert_eq!(
            engine.charge_now(&fresh).unwrap().credits_remaining,
            Some(7)
        );
        // With a live balance again, a request carrying the old one is charged from the live
        // one.
        assert_eq!(
            engine.charge_now(&first).unwrap().credits_remaining,
            Some(6)
        );
    }

    #[test]
    fn forgetting_leaves_other_slots_alone_and_a_refused_key_is_held() {
        let engine = LocalEngine::new(std::time::Duration::ZERO);
        let before = engine.balance_generation();
        let one = Credits {
            remaining: 1,
            refill: None,
            refilled_at: NOW,
        };
        let spent = request(&[], Some(one));
        assert_eq!(engine.charge_now(&spent).unwrap().outcome, Outcome::Allowed);
        let empty = Credits {
            remaining: 0,
            ..one
        };
        engine.settle(&[("k".to_owned(), empty)]);
        engine.sweep(NOW);
        assert_eq!(engine.live_balances(), 0);
        // Another meter, in another slot, read before the forgetting: not stale.
        let other = (0..)
            .map(|n| format!("key:other{n}"))
            .find(|meter| forgotten_slot(meter) != forgotten_slot("key:k"))
            .unwrap();
        let unrelated = ChargeRequest {
            meter: &other,
            ..spent
        };
        assert_eq!(
            engine.charge_now(&unrelated).unwrap().outcome,
            Outcome::Allowed
        );
        // The forgotten meter, read before: stale. Read again, it is refused, and the refusal
        // is held so that the next retry does not go back to storage.
        assert!(matches!(
            engine.charge_now(&spent),
            Err(EngineError::StaleCredits)
        ));
        let fresh = ChargeRequest {
            credits: Some(empty),
            credits_generation: engine.balance_generation(),
            ..spent
        };
        assert!(before < fresh.credits_generation);
        assert_eq!(
            engine.charge_now(&fresh).unwrap().outcome,
            Outcome::UsageExceeded
        );
        assert_eq!(
            engine.charge_now(&spent).unwrap().outcome,
            Outcome::UsageExceeded
        );
    }
}
