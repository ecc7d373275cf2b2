//! Usage control with Redis: exact limits and credits across three real nodes, and what a
//! node does while Redis is unreachable (and after it is back). Needs
//! `KEYWARD_TEST_REDIS_URL`; the three-node test also needs `KEYWARD_TEST_DATABASE_URL`.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use keyward_server::usage::{CreditFallback, RateLimitFallback, RedisSettings, UsageSettings};
use keyward_server::ServerConfig;
use serde_json::{json, Value};

use crate::testkit::{Api, Relay, ServerProcess, TestServer};
use crate::usage::quick_config;
use keyward_store::testing::{TestDatabase, DATABASE_URL_VARIABLE};

const LONG: u64 = 31 * 86_400;

pub fn redis_url() -> Option<String> {
    let url = std::env::var("KEYWARD_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("skipped: set KEYWARD_TEST_REDIS_URL to run the Redis tests");
    }
    url
}

fn fresh_prefix() -> String {
    format!("kwtest-{}", rand::random::<u64>())
}

async fn verify_code(api: &Api, secret: &str) -> (String, Value) {
    let answer = api
        .post("/api/v1/keys/verify", json!({"key": secret}))
        .await;
    let body = answer.assert_status(200).clone();
    (body["code"].as_str().unwrap().to_owned(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_sharing_redis_never_exceed_a_limit_or_overspend_credits() {
    let Some(redis) = redis_url() else { return };
    let Ok(admin_url) = std::env::var(DATABASE_URL_VARIABLE) else {
        eprintln!("skipped: set {DATABASE_URL_VARIABLE} to run the three-node Redis test");
        return;
    };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix();
    let mut nodes = Vec::new();
    let mut root_key = None;
    for name in ["a", "b", "c"] {
        let node = ServerProcess::start_with_env(
            dir.path(),
            name,
            &[
                ("DATABASE_URL", database.url.as_str()),
                ("REDIS_URL", redis.as_str()),
                ("KEYWARD_REDIS_KEY_PREFIX", prefix.as_str()),
                ("KEYWARD_NODE_ID", name),
                ("KEYWARD_CLUSTER_LEASE_MS", "1000"),
                ("KEYWARD_USAGE_WRITE_BACK_MS", "100"),
            ],
        );
        if let Some((live, _)) = &node.first_keys {
            root_key = Some(live.clone());
        }
        nodes.push(node);
    }
    let root_key = root_key.expect("the first node bootstraps");
    let apis: Vec<Api> = nodes.iter().map(|n| Api::new(&n.base, &root_key)).collect();
    for api in &apis {
        let deadline = Instant::now() + Duration::from_secs(15);
        while api.get("/readyz").await.body["redis"] != "up" {
            assert!(Instant::now() < deadline, "Redis never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let admin = &apis[0];
    admin
        .post(
            "/api/v1/rate-limit-schemes",
            json!({"slug": "tight", "windows": [{"limit": 20, "period_seconds": LONG}]}),
        )
        .await
        .assert_status(201);
    admin.create_app("shared", &[]).await;
    let limited = admin
        .create_key(
            "shared",
            json!({"name": "limited", "rate_limit_scheme": "tight"}),
        )
        .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let credits = 30;
    let paid = admin
        .create_key(
            "shared",
            json!({"name": "paid", "credits": {"remaining": credits}}),
        )
        .await;
    let (paid_id, paid) = (
        paid["id"].as_str().unwrap().to_owned(),
        paid["secret"].as_str().unwrap().to_owned(),
    );

    // 10× the limit, and 20× the credits, at once from all three nodes.
    let storm = |secret: String, total: usize| {
        let apis = apis.clone();
        async move {
            let calls = (0..total).map(|n| {
                let api = apis[n % apis.len()].clone();
                let secret = secret.clone();
                async move { verify_code(&api, &secret).await }
            });
            join_all(calls).await
        }
    };
    let rate_answers = storm(limited, 200).await;
    let accepted = rate_answers
        .iter()
        .filter(|(code, _)| code == "VALID")
        .count();
    assert_eq!(accepted, 20, "exactly the limit is accepted, across nodes");
    assert!(rate_answers
        .iter()
        .all(|(code, _)| code == "VALID" || code == "RATE_LIMITED"));

    let credit_answers = storm(paid, 20 * credits as usize).await;
    let accepted = credit_answers
        .iter()
        .filter(|(code, _)| code == "VALID")
        .count();
    assert_eq!(accepted, credits as usize, "exactly N credits are spent");
    let mut balances: Vec<i64> = credit_answers
        .iter()
        .filter(|(code, _)| code == "VALID")
        .map(|(_, body)| body["credits"]["remaining"].as_i64().unwrap())
        .collect();
    balances.sort_unstable();
    assert_eq!(
        balances,
        (0..credits).collect::<Vec<_>>(),
        "each credit once"
    );
    // Every node agrees the balance is 0, and storage learns it too.
    for api in &apis {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let key = api.get(&format!("/api/v1/keys/{paid_id}")).await;
            if key.body["credits"]["remaining"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{:#}", key.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(nodes);
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_credits_fail_closed_rate_limits_fall_back_and_both_recover() {
    let Some(redis) = redis_url() else { return };
    let target = redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let relay = Relay::start(target).await;
    let server = TestServer::start_with(ServerConfig {
        usage: UsageSettings {
            redis: Some(RedisSettings {
                url: format!("redis://127.0.0.1:{}", relay.port),
                key_prefix: fresh_prefix(),
                timeout: Duration::from_millis(200),
            }),
            rate_limit_fallback: RateLimitFallback::Local,
            credit_fallback: CreditFallback::Deny,
            ..UsageSettings::default()
        },
        ..quick_config()
    })
    .await;
    let api = server.api();
    let wait_for_redis = |up: bool| {
        let api = api.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let ready = api.get("/readyz").await;
                let expected = if up { "up" } else { "unreachable" };
                if ready.body["redis"] == expected {
                    assert_eq!(ready.body["status"], if up { "ready" } else { "degraded" });
                    return;
                }
                assert!(Instant::now() < deadline, "{:#}", ready.body);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for_redis(true).await;
    api.post(
        "/api/v1/rate-limit-schemes",
        json!({"slug": "five", "windows": [{"limit": 5, "period_seconds": LONG}]}),
    )
    .await
    .assert_status(201);
    api.create_app("outage", &[]).await;
    let limited = api
        .create_key(
            "outage",
            json!({"name": "limited", "rate_limit_scheme": "five"}),
        )
        .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid = api
        .create_key(
            "outage",
            json!({"name": "paid", "credits": {"remaining": 10}}),
        )
        .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(verify_code(&api, &limited).await.0, "VALID");
    assert_eq!(verify_code(&api, &limited).await.0, "VALID");
    let (_, body) = verify_code(&api, &paid).await;
    assert_eq!(body["credits"]["remaining"], 9);

    relay.cut();
    wait_for_redis(false).await;
    // Credits fail closed: never spent twice, never spent unseen.
    api.post("/api/v1/keys/verify", json!({"key": paid}))
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE", "usage_unavailable");
    // Rate limits fall back to this node's own counters: still at most five.
    let mut during = Vec::new();
    for _ in 0..7 {
        during.push(verify_code(&api, &limited).await.0);
    }
    assert_eq!(
        during.iter().filter(|c| *c == "VALID").count(),
        5,
        "{during:?}"
    );
    let metrics = api.get("/metrics").await;
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("keyward_redis_up 0"), "{text}");
    assert!(
        text.contains("keyward_usage_fallbacks_total{kind=\"credits\"} 1"),
        "{text}"
    );

    relay.restore();
    wait_for_redis(true).await;
    // Back on Redis: the shared counters carry on from where they were.
    let (code, body) = verify_code(&api, &paid).await;
    assert_eq!(code, "VALID");
    assert_eq!(body["credits"]["remaining"], 8);
    let after: Vec<String> = {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(verify_code(&api, &limited).await.0);
        }
        seen
    };
    assert_eq!(after, ["VALID", "VALID", "VALID", "RATE_LIMITED"]);
    server.stop().await;
}
