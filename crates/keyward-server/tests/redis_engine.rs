//! The Redis engine decides exactly as the core's maths (which the in-process engine runs):
//! the same random sequence of charges, with time passed in across day and month
//! boundaries, gets the same decisions from both. Needs `KEYWARD_TEST_REDIS_URL`.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::usage::{CapUsage, Credits, Period, RateWindow, Refill};
use keyward_core::Timestamp;
use keyward_server::metrics::Metrics;
use keyward_server::usage::{
    ChargeRequest, LocalEngine, OrganizationCharge, RedisEngine, RedisSettings, UsageEngine,
};
use rand::{Rng, SeedableRng};

fn redis_url() -> Option<String> {
    let url = std::env::var("KEYWARD_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("skipped: set KEYWARD_TEST_REDIS_URL to run the Redis engine tests");
    }
    url
}

#[tokio::test]
async fn redis_decides_as_the_core_does() {
    let Some(url) = redis_url() else { return };
    let prefix = format!("kwtest-{}", rand::random::<u64>());
    let redis = Arc::new(
        RedisEngine::connect(
            &RedisSettings {
                url,
                key_prefix: prefix,
                timeout: Duration::from_secs(2),
            },
            Arc::new(Metrics::new()),
        )
        .unwrap(),
    );
    let local = LocalEngine::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // 2026-03-31T23:58:00Z: the run crosses a day and a month boundary.
    let mut now = Timestamp::from_millis(1_775_001_480_000);
    let own = [
        RateWindow {
            limit: 4,
            period_ms: 1_000,
        },
        RateWindow {
            limit: 30,
            period_ms: 60_000,
        },
    ];
    let org_windows = [RateWindow {
        limit: 50,
        period_ms: 60_000,
    }];
    let credits = Credits {
        remaining: 40,
        refill: Some(Refill {
            period: Period::Daily,
            amount: 25,
        }),
        refilled_at: Timestamp::from_millis(0),
    };
    let cap = CapUsage {
        cap: 120,
        period: Some(Period::Monthly),
        spent: 0,
        period_start: Timestamp::from_millis(0),
    };
    let mut allowed = 0;
    for step in 0..600 {
        now = now.plus_millis(rng.gen_range(0..900));
        let meter = ["key:a", "key:b"][rng.gen_range(0..2)];
        let idempotency = format!("retry-{}", step / 2);
        let request = ChargeRequest {
            meter,
            windows: &own,
            credits: Some(credits),
            credits_generation: 0,
            organization: Some(OrganizationCharge {
                meter: "org:ws:live:o",
                windows: &org_windows,
                cap: Some(cap),
            }),
            cost: rng.gen_range(0..4),
            idempotency_key: rng.gen_bool(0.2).then_some(idempotency.as_str()),
            now,
        };
        let expected = local.charge(&request).await.unwrap();
        let decided = redis.charge(&request).await.unwrap();
        assert_eq!(decided, expected, "step {step} at {now:?}: {request:?}");
        if decided.outcome == keyward_core::usage::Outcome::Allowed {
            allowed += 1;
        }
    }
    // The sequence exercised every outcome, not only one.
    assert!(allowed > 50 && allowed < 550, "allowed {allowed}");
}
