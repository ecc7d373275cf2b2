//! Usage control over HTTP on one node (in-process engine): schemes, organisations, credits,
//! idempotent retries, root-key limits and their headers, demo sandboxes.

use std::time::{Duration, Instant};

use keyward_server::usage::UsageSettings;
use keyward_server::{DemoSettings, ServerConfig};
use serde_json::{json, Value};

use crate::testkit::{metric, send, Api, TestServer};

/// Windows this long never straddle a boundary during a test (they are aligned to the
/// epoch, and 31-day boundaries are rare).
const LONG: u64 = 31 * 86_400;

pub fn quick_config() -> ServerConfig {
    ServerConfig {
        last_used_flush_interval: Duration::from_millis(50),
        usage_write_back_interval: Duration::from_millis(50),
        ..ServerConfig::default()
    }
}

async fn scheme(api: &Api, slug: &str, windows: Value) {
    api.post(
        "/api/v1/rate-limit-schemes",
        json!({"slug": slug, "windows": windows}),
    )
    .await
    .assert_status(201);
}

async fn key_with(api: &Api, app: &str, body: Value) -> (String, String) {
    let created = api.create_key(app, body).await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

async fn verify(api: &Api, body: Value) -> Value {
    api.post("/api/v1/keys/verify", body)
        .await
        .assert_status(200)
        .clone()
}

async fn codes(api: &Api, secret: &str, times: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..times {
        let answer = verify(api, json!({"key": secret})).await;
        seen.push(answer["code"].as_str().unwrap().to_owned());
    }
    seen
}

/// Waits until the key at `path` shows `remaining` credits: the write-back reached storage.
async fn written_back(api: &Api, path: &str, remaining: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let key = api.get(path).await;
        if key.assert_status(200)["credits"]["remaining"] == remaining {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never written back: {:#}",
            key.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(codes: &[String], code: &str) -> usize {
    codes.iter().filter(|seen| *seen == code).count()
}

#[tokio::test]
async fn a_refusal_by_one_limit_consumes_nothing_from_the_others() {
    let server = TestServer::start_with(quick_config()).await;
    let api = server.api();
    scheme(&api, "two", json!([{"limit": 2, "period_seconds": LONG}])).await;
    scheme(&api, "three", json!([{"limit": 3, "period_seconds": LONG}])).await;
    api.put(
        "/api/v1/organizations/org_a",
        json!({"rate_limit_scheme": "three"}),
    )
    .await
    .assert_status(200);
    api.create_app("metered", &[]).await;
    let (_, limited) = key_with(
        &api,
        "metered",
        json!({"name": "a", "organization_id": "org_a", "rate_limit_scheme": "two",
               "credits": {"remaining": 10}}),
    )
    .await;
    let (_, other) = key_with(
        &api,
        "metered",
        json!({"name": "b", "organization_id": "org_a"}),
    )
    .await;

    let first = codes(&api, &limited, 5).await;
    assert_eq!(count(&first, "VALID"), 2, "{first:?}");
    assert_eq!(count(&first, "RATE_LIMITED"), 3, "{first:?}");
    // The three refusals counted nowhere: the organisation has exactly one request left,
    // and the key spent two credits, not five.
    let second = codes(&api, &other, 3).await;
    assert_eq!(count(&second, "VALID"), 1, "{second:?}");
    let answer = verify(&api, json!({"key": limited})).await;
    assert_eq!(answer["code"], "RATE_LIMITED");
    assert_eq!(answer["status"], 429);
    assert_eq!(answer["credits"]["remaining"], 8);
    assert_eq!(answer["rate_limit"]["remaining"], 0);
    // Both windows are full now and reset together; the organisation's is reported.
    assert_eq!(answer["rate_limit"]["limit"], 3);
    server.stop().await;
}

#[tokio::test]
async fn credits_are_spent_set_incremented_decremented_and_charged_once_per_retry() {
    let server = TestServer::start_with(quick_config()).await;
    let api = server.api();
    api.create_app("paid", &[]).await;
    let (id, secret) = key_with(
        &api,
        "paid",
        json!({"name": "k", "credits": {"remaining": 3, "refill": {"interval": "daily", "amount": 3}}}),
    )
    .await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let answer = verify(&api, json!({"key": secret})).await;
        assert_eq!(answer["code"], "VALID");
        remaining.push(answer["credits"]["remaining"].as_i64().unwrap());
    }
    assert_eq!(remaining, [2, 1, 0]);
    let exhausted = verify(&api, json!({"key": secret})).await;
    assert_eq!(exhausted["code"], "USAGE_EXCEEDED");
    assert_eq!(exhausted["status"], 429);
    assert_eq!(exhausted["valid"], false);
    assert_eq!(exhausted["credits"]["remaining"], 0);

    let path = format!("/api/v1/keys/{id}");
    let patched = api.patch(&path, json!({"credits": {"increment": 5}})).await;
    assert_eq!(patched.assert_status(200)["credits"]["remaining"], 5);
    assert_eq!(patched.body["credits"]["refill"]["amount"], 3);
    let patched = api.patch(&path, json!({"credits": {"decrement": 2}})).await;
    assert_eq!(patched.assert_status(200)["credits"]["remaining"], 3);
    let patched = api
        .patch(&path, json!({"credits": {"decrement": 50}}))
        .await;
    assert_eq!(patched.assert_status(200)["credits"]["remaining"], 0);
    let patched = api
        .patch(&path, json!({"credits": {"remaining": 10}}))
        .await;
    assert_eq!(patched.assert_status(200)["credits"]["remaining"], 10);
    api.patch(&path, json!({"credits": {"remaining": 1, "increment": 1}}))
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_credits_update");
    api.patch(&path, json!({"credits": {"remaining": -1}}))
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_field");

    let costly = verify(&api, json!({"key": secret, "credits_cost": 4})).await;
    assert_eq!(costly["credits"]["remaining"], 6);
    // A retried verification is charged once and answered the same.
    let retry = json!({"key": secret, "idempotency_key": "req-123"});
    let first = verify(&api, retry.clone()).await;
    let again = verify(&api, retry).await;
    assert_eq!(first["credits"]["remaining"], 5);
    assert_eq!(again["credits"]["remaining"], 5);
    let next = verify(&api, json!({"key": secret})).await;
    assert_eq!(next["credits"]["remaining"], 4);
    api.post(
        "/api/v1/keys/verify",
        json!({"key": secret, "idempotency_key": "has space"}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_idempotency_key");

    // The balance reaches storage by itself.
    written_back(&api, &path, 4).await;
    // `null` makes the key unlimited.
    let unlimited = api.patch(&path, json!({"credits": null})).await;
    assert_eq!(unlimited.assert_status(200)["credits"], Value::Null);
    let free = verify(&api, json!({"key": secret})).await;
    assert_eq!(free["code"], "VALID");
    assert!(free.get("credits").is_none(), "{free:#}");
    api.patch(&path, json!({"credits": {"increment": 1}}))
        .await
        .assert_error(409, "CONFLICT_ERROR", "no_credits");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_balance_is_forgotten_once_written_back_and_charged_from_storage_after() {
    let server = TestServer::start_with(ServerConfig {
        usage: UsageSettings {
            balance_idle: Duration::from_millis(100),
            ..UsageSettings::default()
        },
        ..quick_config()
    })
    .await;
    let api = server.api();
    api.create_app("metered", &[]).await;
    let (id, secret) = key_with(
        &api,
        "metered",
        json!({"name": "k", "credits": {"remaining": 10}}),
    )
    .await;
    // The first verification caches the key as storage had it then: 10 credits.
    for expected in [9, 8, 7] {
        let answer = verify(&api, json!({"key": secret})).await;
        assert_eq!(answer["credits"]["remaining"], expected);
    }
    // Written back and idle: the engine lets the balance go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&server.base, "keyward_usage_live_balances").await != Some(0.0) {
        assert!(Instant::now() < deadline, "the balance was never forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cached key still says 10; storage says 7, and is what is charged.
    let answer = verify(&api, json!({"key": secret})).await;
    assert_eq!(answer["credits"]["remaining"], 6);
    let answer = verify(&api, json!({"key": secret})).await;
    assert_eq!(answer["credits"]["remaining"], 5);
    written_back(&api, &format!("/api/v1/keys/{id}"), 5).await;
}

#[tokio::test]
async fn an_organisation_cap_is_shared_by_its_keys_and_spending_is_kept_when_it_changes() {
    let server = TestServer::start_with(quick_config()).await;
    let api = server.api();
    let org = api
        .put(
            "/api/v1/organizations/org_shared",
            json!({"credit_cap": 5, "credit_period": "monthly"}),
        )
        .await;
    assert_eq!(org.assert_status(200)["credit_cap"], 5);
    api.create_app("capped", &[]).await;
    let mut secrets = Vec::new();
    for name in ["a", "b", "c"] {
        let (_, secret) = key_with(
            &api,
            "capped",
            json!({"name": name, "organization_id": "org_shared"}),
        )
        .await;
        secrets.push(secret);
    }
    let mut allowed = 0;
    for round in 0..4 {
        for secret in &secrets {
            let answer = verify(&api, json!({"key": secret})).await;
            match answer["code"].as_str().unwrap() {
                "VALID" => allowed += 1,
                "USAGE_EXCEEDED" => assert!(round >= 1),
                other => panic!("unexpected {other}"),
            }
        }
    }
    assert_eq!(allowed, 5);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let org = api.get("/api/v1/organizations/org_shared").await;
        if org.body["credits_spent"] == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "{:#}", org.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Raising the cap takes effect at once, and what was spent stays spent.
    api.put(
        "/api/v1/organizations/org_shared",
        json!({"credit_cap": 6, "credit_period": "monthly"}),
    )
    .await
    .assert_status(200);
    let codes: Vec<String> = {
        let mut seen = Vec::new();
        for secret in &secrets {
            seen.push(
                verify(&api, json!({"key": secret})).await["code"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        seen
    };
    assert_eq!(count(&codes, "VALID"), 1, "{codes:?}");
    api.put(
        "/api/v1/organizations/org_shared",
        json!({"credit_period": "daily"}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_field");
    api.delete("/api/v1/organizations/org_shared")
        .await
        .assert_status(200);
    api.get("/api/v1/organizations/org_shared")
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "organization_not_found");
    assert_eq!(
        verify(&api, json!({"key": secrets[0]})).await["code"],
        "VALID"
    );
    server.stop().await;
}

#[tokio::test]
async fn schemes_are_managed_and_changes_apply_at_once() {
    let server = TestServer::start_with(quick_config()).await;
    let api = server.api();
    scheme(
        &api,
        "standard_tier",
        json!([{"limit": 1, "period_seconds": LONG}, {"limit": 100, "period_seconds": 1}]),
    )
    .await;
    api.post(
        "/api/v1/rate-limit-schemes",
        json!({"slug": "standard_tier", "windows": [{"limit": 1, "period_seconds": 1}]}),
    )
    .await
    .assert_error(409, "CONFLICT_ERROR", "rate_limit_scheme_exists");
    for bad in [
        json!([]),
        json!([{"limit": 0, "period_seconds": 1}]),
        json!([{"limit": 1, "period_seconds": 1}, {"limit": 2, "period_seconds": 1}]),
    ] {
        api.post(
            "/api/v1/rate-limit-schemes",
            json!({"slug": "bad", "windows": bad}),
        )
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_windows");
    }
    api.post(
        "/api/v1/apps",
        json!({"name": "x", "slug": "x", "rate_limit_scheme": "missing"}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "unknown_rate_limit_scheme");
    api.post(
        "/api/v1/apps",
        json!({"name": "Tiered", "slug": "tiered", "rate_limit_scheme": "standard_tier"}),
    )
    .await
    .assert_status(201);
    let (_, secret) = key_with(&api, "tiered", json!({"name": "k"})).await;
    let seen = codes(&api, &secret, 2).await;
    assert_eq!(seen, ["VALID", "RATE_LIMITED"]);
    let listed = api.get("/api/v1/rate-limit-schemes").await;
    assert_eq!(
        listed.assert_status(200)["data"][0]["slug"],
        "standard_tier"
    );
    assert_eq!(listed.body["data"][0]["windows"][0]["period_seconds"], LONG);
    // Widening the scheme lets the key through at once.
    api.patch(
        "/api/v1/rate-limit-schemes/standard_tier",
        json!({"windows": [{"limit": 3, "period_seconds": LONG}]}),
    )
    .await
    .assert_status(200);
    assert_eq!(
        codes(&api, &secret, 3).await,
        ["VALID", "VALID", "RATE_LIMITED"]
    );
    api.delete("/api/v1/rate-limit-schemes/standard_tier")
        .await
        .assert_error(409, "CONFLICT_ERROR", "rate_limit_scheme_in_use");
    api.patch("/api/v1/apps/tiered", json!({"rate_limit_scheme": null}))
        .await
        .assert_status(200);
    assert_eq!(codes(&api, &secret, 2).await, ["VALID", "VALID"]);
    api.delete("/api/v1/rate-limit-schemes/standard_tier")
        .await
        .assert_status(200);
    api.get("/api/v1/rate-limit-schemes/standard_tier")
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "rate_limit_scheme_not_found");
    server.stop().await;
}

#[tokio::test]
async fn root_keys_are_limited_with_ratelimit_headers_and_retry_after() {
    let server = TestServer::start_with(quick_config()).await;
    let api = server.api();
    scheme(
        &api,
        "api_tier",
        json!([{"limit": 3, "period_seconds": LONG}]),
    )
    .await;
    let created = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "limited", "scopes": ["apps:read"], "rate_limit_scheme": "api_tier"}),
        )
        .await;
    let limited = server.api_with(created.assert_status(201)["secret"].as_str().unwrap());
    assert_eq!(created.body["rate_limit_scheme"], "api_tier");
    for remaining in [2, 1, 0] {
        let answer = limited.get("/api/v1/apps").await;
        answer.assert_status(200);
        assert_eq!(
            answer.headers["ratelimit-policy"],
            format!("\"{LONG}s\";q=3;w={LONG}").as_str()
        );
        let header = answer.headers["ratelimit"].to_str().unwrap();
        assert!(
            header.starts_with(&format!("\"{LONG}s\";r={remaining};t=")),
            "{header}"
        );
    }
    let refused = limited.get("/api/v1/apps").await;
    refused.assert_error(429, "RATE_LIMIT_ERROR", "rate_limited");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=LONG).contains(&retry_after));
    assert!(refused.headers.contains_key("ratelimit"));
    // Unlimited keys carry no rate-limit headers.
    assert!(!api
        .get("/api/v1/apps")
        .await
        .headers
        .contains_key("ratelimit"));
    server.stop().await;
}

async fn open_session(base: &str, forwarded_for: Option<&str>) -> crate::testkit::Reply {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/api/v1/demo/session"))
        .header("content-type", "application/json");
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    send(request).await
}

/// The demo limit counts in fixed windows aligned to the minute: a phase that straddled a
/// boundary would start counting afresh halfway. Late in a minute, this waits for the next.
async fn within_one_minute_window() {
    let into_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 60_000;
    if into_minute > 45_000 {
        tokio::time::sleep(Duration::from_millis(60_100 - into_minute as u64)).await;
    }
}

#[tokio::test]
async fn demo_sessions_are_limited_per_client_and_forwarded_for_only_counts_from_trusted_proxies() {
    // No trusted proxy: the header is the client's own claim and is ignored.
    let server = TestServer::start_with(quick_config()).await;
    within_one_minute_window().await;
    for n in 0..5 {
        let forwarded = format!("203.0.113.{n}");
        let opened = open_session(&server.base, Some(&forwarded)).await;
        let body = opened.assert_status(201);
        assert!(body["secret"].as_str().unwrap().starts_with("sk_demo_"));
        assert_eq!(body["environment"], "demo");
    }
    let refused = open_session(&server.base, Some("203.0.113.99")).await;
    refused.assert_error(429, "RATE_LIMIT_ERROR", "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
    server.stop().await;

    // Behind a trusted proxy, each forwarded client has its own five.
    let server = TestServer::start_with(ServerConfig {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..quick_config()
    })
    .await;
    within_one_minute_window().await;
    for client in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..5 {
            open_session(&server.base, Some(client))
                .await
                .assert_status(201);
        }
    }
    open_session(&server.base, Some("198.51.100.1"))
        .await
        .assert_error(429, "RATE_LIMIT_ERROR", "rate_limited");
    // A client cannot dodge the limit by writing its own hop before the proxy's.
    open_session(&server.base, Some("1.1.1.1, 198.51.100.2"))
        .await
        .assert_error(429, "RATE_LIMIT_ERROR", "rate_limited");
    server.stop().await;
}

#[tokio::test]
async fn a_demo_sandbox_is_isolated_and_purged_on_delete() {
    let server = TestServer::start_with(quick_config()).await;
    let opened = open_session(&server.base, None).await;
    let demo = server.api_with(opened.assert_status(201)["secret"].as_str().unwrap());
    demo.create_app("sandbox-app", &[]).await;
    let key = demo.create_key("sandbox-app", json!({"name": "k"})).await;
    let secret = key["secret"].as_str().unwrap();
    assert!(secret.starts_with("kw_demo_"), "{secret}");
    assert_eq!(demo.verify_code(secret).await, "VALID");
    // Invisible from the installation's own environments, and theirs from it.
    server
        .api()
        .get("/api/v1/apps/sandbox-app")
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "app_not_found");
    assert_eq!(
        demo.get("/api/v1/apps").await.assert_status(200)["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A live key cannot end a sandbox.
    server
        .api()
        .delete("/api/v1/demo/session")
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "demo_session_not_found");
    demo.delete("/api/v1/demo/session").await.assert_status(204);
    demo.get("/api/v1/apps")
        .await
        .assert_error(401, "AUTHENTICATION_ERROR", "invalid_api_key");
    server.stop().await;
}

#[tokio::test]
async fn an_unused_sandbox_expires_and_is_swept() {
    let server = TestServer::start_with(ServerConfig {
        demo: DemoSettings {
            session_ttl: Duration::from_millis(1500),
            sweep_interval: Duration::from_millis(100),
            ..DemoSettings::default()
        },
        ..quick_config()
    })
    .await;
    let opened = open_session(&server.base, None).await;
    let demo = server.api_with(opened.assert_status(201)["secret"].as_str().unwrap());
    demo.get("/api/v1/apps").await.assert_status(200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = demo.get("/api/v1/apps").await;
        if answer.status == 401 {
            break;
        }
        // Between its end and the sweep, the key is refused as expired.
        if answer.status != 200 {
            answer.assert_error(403, "PERMISSION_ERROR", "key_expired");
        }
        assert!(Instant::now() < deadline, "the sandbox was never swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}
