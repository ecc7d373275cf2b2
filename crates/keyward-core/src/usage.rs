//! Usage control maths: rate-limit windows, credits with refills, and organisation caps,
//! decided together and all-or-nothing.
//!
//! Every engine (in-process, or Redis for a cluster) keeps the same state and must reach the
//! same decision as [`charge`]; this module is the definition.
//!
//! **Rate limits are fixed windows aligned to the Unix epoch**: "10 per second" means at most
//! 10 requests between `…000` and `…999` ms, and `reset_at` is the window's end. Counts are
//! exact and cheap to keep anywhere (one counter per window), and the `RateLimit` headers
//! mean what people expect. Like every fixed-window limiter, a client may spend one window's
//! quota at its very end and the next one's at the start of the next.
//!
//! **Credits** are a key's own balance. A refill *sets* the balance to `amount` at the first
//! check after each UTC day or month boundary (unused credits do not accumulate).
//! **An organisation's cap** bounds what all its keys spend together, per period if one is
//! set.
//!
//! **All-or-nothing.** A request refused by any limit consumes nothing from any other: rate
//! windows are checked first, credits and the cap after, and state changes only when
//! everything passes.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

const DAY_MS: i64 = 86_400_000;

/// One limit of a rate-limit scheme: at most `limit` requests per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateWindow {
    pub limit: u64,
    pub period_ms: i64,
}

impl RateWindow {
    fn start_of(self, now: Timestamp) -> i64 {
        now.as_millis().div_euclid(self.period_ms.max(1)) * self.period_ms.max(1)
    }

    /// The count at `now`: zero once the window `count` belongs to has ended.
    fn current(self, count: WindowCount, now: Timestamp) -> WindowCount {
        let window_start = self.start_of(now);
        WindowCount {
            window_start,
            used: if count.window_start == window_start {
                count.used
            } else {
                0
            },
        }
    }
}

/// The count a window has reached: `used` requests in the window starting at `window_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WindowCount {
    pub window_start: i64,
    pub used: u64,
}

/// A calendar period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Monthly,
}

impl Period {
    /// The start of the period containing `at`: midnight, or midnight on the 1st.
    pub fn start_of(self, at: Timestamp) -> Timestamp {
        let day = at.as_millis().div_euclid(DAY_MS);
        let first_day = match self {
            Self::Daily => day,
            Self::Monthly => {
                let (year, month, _) = civil_from_days(day);
                days_from_civil(year, month, 1)
            }
        };
        Timestamp::from_millis(first_day * DAY_MS)
    }

    /// The start of the period after the one containing `at`.
    pub fn next_start(self, at: Timestamp) -> Timestamp {
        let this = self.start_of(at).as_millis();
        let within_next = match self {
            Self::Daily => this + DAY_MS,
            // Any day of the next month: no month is longer than 31 days.
            Self::Monthly => this + 32 * DAY_MS,
        };
        self.start_of(Timestamp::from_millis(within_next))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Monthly => "monthly",
        }
    }
}

/// A key's credits, with an optional refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credits {
    pub remaining: i64,
    pub refill: Option<Refill>,
    /// The start of the period of the last refill (or of the balance being set).
    pub refilled_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refill {
    pub period: Period,
    pub amount: i64,
}

impl Credits {
    /// The balance at `now`, refilled if a period boundary has passed since the last refill.
    pub fn at(self, now: Timestamp) -> Self {
        match self.refill {
            Some(refill) => {
                let period_start = refill.period.start_of(now);
                if period_start > self.refilled_at {
                    Self {
                        remaining: refill.amount,
                        refilled_at: period_start,
                        ..self
                    }
                } else {
                    self
                }
            }
            None => self,
        }
    }
}

/// When a verification refused for credits (`UsageExceeded`) could next pass: the key's
/// next refill when its own balance (`remaining`, after the decision) cannot pay `cost`,
/// else the start of the organisation cap's next period. `None` when neither comes back by
/// itself (no refill, a cap for all time): only adding credits helps.
pub fn credits_return_at(
    credits: Option<Credits>,
    remaining: Option<i64>,
    cap: Option<CapUsage>,
    cost: i64,
    now: Timestamp,
) -> Option<Timestamp> {
    match credits {
        Some(credits) if remaining.unwrap_or(credits.remaining) < cost => {
            credits.refill.map(|refill| refill.period.next_start(now))
        }
        _ => cap
            .and_then(|cap| cap.period)
            .map(|period| period.next_start(now)),
    }
}

/// What an organisation's keys have spent together against its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapUsage {
    pub cap: i64,
    /// `None`: the cap is for all time.
    pub period: Option<Period>,
    pub spent: i64,
    /// The start of the period `spent` belongs to.
    pub period_start: Timestamp,
}

impl CapUsage {
    pub fn at(self, now: Timestamp) -> Self {
        match self.period {
            Some(period) => {
                let start = period.start_of(now);
                if start > self.period_start {
                    Self {
                        spent: 0,
                        period_start: start,
                        ..self
                    }
                } else {
                    self
                }
            }
            None => self,
        }
    }

    pub fn remaining(self) -> i64 {
        (self.cap - self.spent).max(0)
    }
}

/// Everything one verification must pass, with the state it reads and, when allowed, updates.
#[derive(Debug)]
pub struct Meters<'a> {
    /// The key's windows and its organisation's, in any order.
    pub windows: &'a mut [(RateWindow, WindowCount)],
    pub credits: Option<&'a mut Credits>,
    pub cap: Option<&'a mut CapUsage>,
    /// Credits this verification costs (rate windows always count one request).
    pub cost: i64,
}

/// The tightest rate window after a check: what the `RateLimit` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub limit: u64,
    pub remaining: u64,
    pub reset_at: Timestamp,
    pub period_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// A rate window is full; nothing was counted anywhere.
    RateLimited {
        retry_at: Timestamp,
    },
    /// Credits or the organisation's cap cannot pay; nothing was counted anywhere.
    UsageExceeded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// `None` when there is no rate window.
    pub rate: Option<RateStatus>,
    /// The key's balance after the decision, when it has credits.
    pub credits_remaining: Option<i64>,
}

/// Decides a verification against every meter; see the module documentation.
pub fn charge(meters: Meters<'_>, now: Timestamp) -> Decision {
    let cost = meters.cost.max(0);
    // Counts as they would be after this request, window by window.
    let proposed: Vec<WindowCount> = meters
        .windows
        .iter()
        .map(|(window, count)| {
            let current = window.current(*count, now);
            WindowCount {
                used: current.used.saturating_add(1),
                ..current
            }
        })
        .collect();
    let status = |count: &WindowCount, window: &RateWindow| RateStatus {
        limit: window.limit,
        remaining: window.limit.saturating_sub(count.used),
        reset_at: Timestamp::from_millis(count.window_start + window.period_ms),
        period_ms: window.period_ms,
    };

    let full: Vec<usize> = proposed
        .iter()
        .zip(meters.windows.iter())
        .enumerate()
        .filter(|(_, (count, (window, _)))| count.used > window.limit)
        .map(|(index, _)| index)
        .collect();
    let credits = meters.credits.as_ref().map(|credits| credits.at(now));
    if !full.is_empty() {
        // Retry once every full window has reset; report the one that resets last.
        let (index, reset) = full
            .iter()
            .map(|&index| {
                let (window, _) = &meters.windows[index];
                (index, proposed[index].window_start + window.period_ms)
            })
            .max_by_key(|(_, reset)| *reset)
            .unwrap_or((full[0], now.as_millis()));
        let (window, _) = &meters.windows[index];
        let mut shown = status(&proposed[index], window);
        shown.remaining = 0;
        return Decision {
            outcome: Outcome::RateLimited {
                retry_at: Timestamp::from_millis(reset),
            },
            rate: Some(shown),
            credits_remaining: credits.map(|c| c.remaining),
        };
    }

    let cap = meters.cap.as_ref().map(|cap| cap.at(now));
    let credits_short = credits.is_some_and(|c| c.remaining < cost);
    let cap_short = cap.is_some_and(|c| c.spent.saturating_add(cost) > c.cap);
    let tightest = proposed
        .iter()
        .zip(meters.windows.iter())
        .map(|(count, (window, _))| status(count, window))
        .min_by_key(|status| (status.remaining, std::cmp::Reverse(status.reset_at)));
    if credits_short || cap_short {
        // Nothing counted: report the windows as they stand, before this request.
        let rate = meters
            .windows
            .iter()
            .map(|(window, count)| status(&window.current(*count, now), window))
            .min_by_key(|status| (status.remaining, std::cmp::Reverse(status.reset_at)));
        return Decision {
            outcome: Outcome::UsageExceeded,
            rate,
            credits_remaining: credits.map(|c| c.remaining),
        };
    }

    for ((_, count), new) in meters.windows.iter_mut().zip(proposed) {
        *count = new;
    }
    let mut credits_remaining = None;
    if let (Some(stored), Some(mut current)) = (meters.credits, credits) {
        current.remaining -= cost;
        credits_remaining = Some(current.remaining);
        *stored = current;
    }
    if let (Some(stored), Some(mut current)) = (meters.cap, cap) {
        current.spent += cost;
        *stored = current;
    }
    Decision {
        outcome: Outcome::Allowed,
        rate: tightest,
        credits_remaining,
    }
}

/// How a call changes a key's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceChange {
    Keep,
    Set(i64),
    Increment(i64),
    /// Never below zero.
    Decrement(i64),
}

/// A change to a key's credits: its balance and, when `Some`, its refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditAdjustment {
    pub balance: BalanceChange,
    pub refill: Option<Option<Refill>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdjustmentError {
    #[error("the key has no credits to change; set `remaining` first")]
    NoCredits,
}

impl CreditAdjustment {
    /// The credits after the change, from the balance at `now` (refilled if due). Setting
    /// a balance starts the refill period afresh, so a refill never overwrites it before the
    /// next boundary.
    pub fn apply(
        self,
        current: Option<Credits>,
        now: Timestamp,
    ) -> Result<Credits, AdjustmentError> {
        let current = current.map(|credits| credits.at(now));
        let mut credits = match (self.balance, current) {
            (BalanceChange::Set(remaining), current) => Credits {
                remaining,
                refill: current.and_then(|c| c.refill),
                refilled_at: now,
            },
            (_, None) => return Err(AdjustmentError::NoCredits),
            (BalanceChange::Keep, Some(current)) => current,
            (BalanceChange::Increment(amount), Some(current)) => Credits {
                remaining: current.remaining.saturating_add(amount),
                ..current
            },
            (BalanceChange::Decrement(amount), Some(current)) => Credits {
                remaining: current.remaining.saturating_sub(amount).max(0),
                ..current
            },
        };
        if let Some(refill) = self.refill {
            credits.refill = refill;
        }
        if let Some(refill) = credits.refill {
            // The balance stands for the current period: the first refill is at the next
            // boundary.
            credits.refilled_at = credits.refilled_at.max(refill.period.start_of(now));
        }
        Ok(credits)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    #[test]
    fn credits_come_back_at_the_next_refill_or_cap_period() {
        use super::*;
        // 2026-01-31T12:00:00Z
        let now = Timestamp::from_millis(1_769_860_800_000);
        let day = Timestamp::from_millis(1_769_904_000_000); // 2026-02-01T00:00:00Z
        assert_eq!(Period::Daily.next_start(now), day);
        assert_eq!(Period::Monthly.next_start(now), day);
        assert_eq!(
            Period::Monthly.next_start(day),
            Timestamp::from_millis(1_772_323_200_000) // 2026-03-01
        );
        let credits = |refill: Option<Period>| Credits {
            remaining: 0,
            refill: refill.map(|period| Refill { period, amount: 10 }),
            refilled_at: now,
        };
        let cap = CapUsage {
            cap: 5,
            period: Some(Period::Monthly),
            spent: 5,
            period_start: now,
        };
        assert_eq!(
            credits_return_at(Some(credits(Some(Period::Daily))), Some(0), None, 1, now),
            Some(day)
        );
        assert_eq!(
            credits_return_at(Some(credits(None)), Some(0), Some(cap), 1, now),
            None
        );
        // The key could pay: the organisation's cap refused.
        assert_eq!(
            credits_return_at(Some(credits(None)), Some(3), Some(cap), 1, now),
            Some(day)
        );
        assert_eq!(credits_return_at(None, None, None, 1, now), None);
    }

    use proptest::prelude::*;

    use super::*;

    const SECOND: RateWindow = RateWindow {
        limit: 3,
        period_ms: 1_000,
    };
    const MINUTE: RateWindow = RateWindow {
        limit: 5,
        period_ms: 60_000,
    };

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    fn ms(date: &str) -> i64 {
        // "YYYY-MM-DD" at midnight UTC.
        let parts: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
        days_from_civil(parts[0], parts[1] as u32, parts[2] as u32) * DAY_MS
    }

    #[test]
    fn calendar_conversions_agree() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(
            civil_from_days(days_from_civil(2000, 3, 1) - 1),
            (2000, 2, 29)
        );
        assert_eq!(
            civil_from_days(days_from_civil(1900, 3, 1) - 1),
            (1900, 2, 28)
        );
    }

    #[test]
    fn periods_start_at_utc_midnight_and_on_the_first() {
        let noon = ms("2026-01-31") + 12 * 3_600_000;
        assert_eq!(Period::Daily.start_of(at(noon)), at(ms("2026-01-31")));
        assert_eq!(Period::Monthly.start_of(at(noon)), at(ms("2026-01-01")));
        assert_eq!(
            Period::Monthly.start_of(at(ms("2024-03-01") - 1)),
            at(ms("2024-02-01"))
        );
    }

    #[test]
    fn a_window_allows_its_limit_then_refuses_until_it_resets() {
        let mut windows = [(SECOND, WindowCount::default())];
        for expected_remaining in [2, 1, 0] {
            let decision = charge(meters(&mut windows, None, None, 1), at(10_100));
            assert_eq!(decision.outcome, Outcome::Allowed);
            assert_eq!(decision.rate.unwrap().remaining, expected_remaining);
            assert_eq!(decision.rate.unwrap().reset_at, at(11_000));
        }
        let refused = charge(meters(&mut windows, None, None, 1), at(10_999));
        assert_eq!(
            refused.outcome,
            Outcome::RateLimited {
                retry_at: at(11_000)
            }
        );
        let next = charge(meters(&mut windows, None, None, 1), at(11_000));
        assert_eq!(next.outcome, Outcome::Allowed);
    }

    fn meters<'a>(
        windows: &'a mut [(RateWindow, WindowCount)],
        credits: Option<&'a mut Credits>,
        cap: Option<&'a mut CapUsage>,
        cost: i64,
    ) -> Meters<'a> {
        Meters {
            windows,
            credits,
            cap,
            cost,
        }
    }

    #[test]
    fn a_refusal_by_one_window_counts_nothing_in_the_other() {
        let mut windows = [
            (SECOND, WindowCount::default()),
            (MINUTE, WindowCount::default()),
        ];
        for _ in 0..3 {
            charge(meters(&mut windows, None, None, 1), at(0));
        }
        let before = windows;
        let refused = charge(meters(&mut windows, None, None, 1), at(500));
        assert!(matches!(refused.outcome, Outcome::RateLimited { .. }));
        assert_eq!(windows, before, "the minute window was not charged");
    }

    #[test]
    fn credits_are_spent_only_when_everything_passes() {
        let mut credits = Credits {
            remaining: 2,
            refill: None,
            refilled_at: at(0),
        };
        let mut cap = CapUsage {
            cap: 10,
            period: None,
            spent: 9,
            period_start: at(0),
        };
        let mut windows = [(SECOND, WindowCount::default())];
        // The cap cannot pay 2: nothing is spent, and the window is not counted.
        let refused = charge(
            meters(&mut windows, Some(&mut credits), Some(&mut cap), 2),
            at(0),
        );
        assert_eq!(refused.outcome, Outcome::UsageExceeded);
        assert_eq!((credits.remaining, cap.spent, windows[0].1.used), (2, 9, 0));
        let allowed = charge(
            meters(&mut windows, Some(&mut credits), Some(&mut cap), 1),
            at(0),
        );
        assert_eq!(allowed.outcome, Outcome::Allowed);
        assert_eq!(allowed.credits_remaining, Some(1));
        assert_eq!(
            (credits.remaining, cap.spent, windows[0].1.used),
            (1, 10, 1)
        );
    }

    #[test]
    fn a_rate_limited_request_spends_no_credit() {
        let mut credits = Credits {
            remaining: 10,
            refill: None,
            refilled_at: at(0),
        };
        let mut windows = [(
            RateWindow {
                limit: 1,
                period_ms: 1_000,
            },
            WindowCount::default(),
        )];
        charge(meters(&mut windows, Some(&mut credits), None, 1), at(0));
        let refused = charge(meters(&mut windows, Some(&mut credits), None, 1), at(1));
        assert!(matches!(refused.outcome, Outcome::RateLimited { .. }));
        assert_eq!(credits.remaining, 9);
    }

    #[test]
    fn refills_set_the_balance_at_each_boundary() {
        let mut credits = Credits {
            remaining: 1,
            refill: Some(Refill {
                period: Period::Monthly,
                amount: 100,
            }),
            refilled_at: at(ms("2026-01-01")),
        };
        let end_of_january = ms("2026-02-01") - 1;
        let spent = charge(
            meters(&mut [], Some(&mut credits), None, 1),
            at(end_of_january),
        );
        assert_eq!(spent.credits_remaining, Some(0));
        let refused = charge(
            meters(&mut [], Some(&mut credits), None, 1),
            at(end_of_january),
        );
        assert_eq!(refused.outcome, Outcome::UsageExceeded);
        // On the 1st the balance is the refill amount, not added to what was left.
        let february = charge(
            meters(&mut [], Some(&mut credits), None, 1),
            at(ms("2026-02-01")),
        );
        assert_eq!(february.credits_remaining, Some(99));
        assert_eq!(credits.refilled_at, at(ms("2026-02-01")));
    }

    #[test]
    fn adjustments_set_increment_and_decrement() {
        let now = at(ms("2026-03-10"));
        let refill = Refill {
            period: Period::Daily,
            amount: 100,
        };
        let set = |balance| CreditAdjustment {
            balance,
            refill: None,
        };
        assert_eq!(
            set(BalanceChange::Increment(1)).apply(None, now),
            Err(AdjustmentError::NoCredits)
        );
        let created = CreditAdjustment {
            balance: BalanceChange::Set(10),
            refill: Some(Some(refill)),
        }
        .apply(None, now)
        .unwrap();
        assert_eq!(created.remaining, 10);
        // The set balance lasts until the next boundary, not until the next check.
        assert_eq!(created.at(now.plus_seconds(3600)).remaining, 10);
        assert_eq!(created.at(at(ms("2026-03-11"))).remaining, 100);
        let more = set(BalanceChange::Increment(5))
            .apply(Some(created), now)
            .unwrap();
        assert_eq!(more.remaining, 15);
        let less = set(BalanceChange::Decrement(50))
            .apply(Some(more), now)
            .unwrap();
        assert_eq!(less.remaining, 0, "never below zero");
        let unrefilled = CreditAdjustment {
            balance: BalanceChange::Keep,
            refill: Some(None),
        }
        .apply(Some(less), now)
        .unwrap();
        assert_eq!(unrefilled.refill, None);
    }

    #[test]
    fn periodic_caps_reset() {
        let mut cap = CapUsage {
            cap: 1,
            period: Some(Period::Daily),
            spent: 1,
            period_start: at(ms("2026-05-01")),
        };
        let today = ms("2026-05-01") + 5;
        assert_eq!(
            charge(meters(&mut [], None, Some(&mut cap), 1), at(today)).outcome,
            Outcome::UsageExceeded
        );
        let tomorrow = ms("2026-05-02");
        assert_eq!(
            charge(meters(&mut [], None, Some(&mut cap), 1), at(tomorrow)).outcome,
            Outcome::Allowed
        );
    }

    proptest! {
        /// However requests arrive, no window ever lets more than its limit through, and a
        /// refused request changes nothing.
        #[test]
        fn windows_never_exceed_their_limits(gaps in proptest::collection::vec(0i64..400, 1..200)) {
            let mut windows = [(SECOND, WindowCount::default()), (MINUTE, WindowCount::default())];
            let mut now = 0;
            let mut allowed_at = Vec::new();
            for gap in gaps {
                now += gap;
                let before = windows;
                let decision = charge(meters(&mut windows, None, None, 1), at(now));
                match decision.outcome {
                    Outcome::Allowed => allowed_at.push(now),
                    _ => prop_assert_eq!(windows, before),
                }
            }
            for (window, _) in windows {
                let mut per_window = std::collections::HashMap::new();
                for t in &allowed_at {
                    *per_window.entry(t.div_euclid(window.period_ms)).or_insert(0u64) += 1;
                }
                prop_assert!(per_window.values().all(|&n| n <= window.limit));
            }
        }

        #[test]
        fn calendar_round_trips(days in -1_000_000i64..1_000_000) {
            let (year, month, day) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(year, month, day), days);
        }
    }
}
