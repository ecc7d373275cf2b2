//! What a cached API key costs in memory, against what the cache's weigher says it costs:
//! fills a `VerificationCache` with keys shaped like `bench/memory.py`'s and compares the
//! process's resident memory with the cache's weighted size. Used to keep the weigher, and
//! so `KEYWARD_CACHE_MAX_BYTES`, honest (docs/benchmarks.md, issue 19).
//!
//! `cargo run --release -p keyward-server --example cache_footprint [keys] [budget-bytes]`:
//! with a budget, the cache is bounded and the keys pass through it (evictions included),
//! and resident memory is compared with the budget instead.

use keyward_core::model::{ApiKey, Environment, Tenancy, UsagePolicy};
use keyward_core::{KeyHash, Timestamp};
use keyward_server::verification::cache::{CacheCounters, CachedKey, KeyGroups, VerificationCache};
use keyward_server::verification::known::{FilterCounters, KnownCredentials};

/// As `keyward` runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn memory_key(n: u64, groups: &KeyGroups) -> CachedKey {
    let tenancy = Tenancy {
        workspace_id: "ws_01JF7Q9W0M3XK2D5H8R4T6Y1ZC".to_owned(),
        environment: Environment::Live,
    };
    CachedKey::new(
        ApiKey {
            id: format!("key_mem{n}"),
            tenancy,
            app_id: "app_01JF7Q9W0M3XK2D5H8R4T6Y1ZD".to_owned(),
            app_slug: "memory".to_owned(),
            name: format!("memory {n}"),
            owner_user_id: Some(format!("usr_{n}")),
            organization_id: None,
            permissions: vec!["read".to_owned()],
            meta: serde_json::Map::new(),
            start: format!("memkey-{n}"),
            expires_at: None,
            enabled: true,
            revoked_at: None,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            last_used_at: None,
            credits: None,
            rate_limit_scheme: None,
            low_credits_threshold: None,
        },
        UsagePolicy::default(),
        None,
        0,
        groups,
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(300_000);
    let budget: Option<u64> = std::env::args().nth(2).and_then(|arg| arg.parse().ok());
    let cache = VerificationCache::new(
        budget.unwrap_or(u64::MAX / 2),
        CacheCounters::default(),
        KnownCredentials::new(FilterCounters::default()),
    );
    let before = rss_bytes();
    for n in 0..keys {
        let hash = KeyHash::of(&format!("memkey-{n}"));
        let _ = cache
            .get_or_load(hash, || async {
                Ok::<_, ()>(Some(memory_key(n, &cache.groups)))
            })
            .await;
    }
    let resident = rss_bytes().saturating_sub(before);
    let (weighted, _) = cache.weighted_bytes();
    if let Some(budget) = budget {
        println!(
            "{keys} keys through a {budget}-byte cache: {} held, weighing {weighted} bytes; \
             resident {resident} bytes ({:.2}× the budget)",
            cache.len(),
            resident as f64 / budget as f64
        );
        return;
    }
    // The keys alone, without the cache around them.
    let before = rss_bytes();
    let _alone: Vec<std::sync::Arc<CachedKey>> = (0..keys)
        .map(|n| std::sync::Arc::new(memory_key(n, &cache.groups)))
        .collect();
    let keys_alone = rss_bytes().saturating_sub(before);
    println!(
        "{keys} keys: resident {:.0} bytes each, weighed {:.0} bytes each ({:.2}× the weight)",
        resident as f64 / keys as f64,
        weighted as f64 / keys as f64,
        resident as f64 / weighted.max(1) as f64
    );
    println!(
        "of which the keys alone: {:.0} bytes each; the cache around them: {:.0}",
        keys_alone as f64 / keys as f64,
        resident.saturating_sub(keys_alone) as f64 / keys as f64
    );
}
