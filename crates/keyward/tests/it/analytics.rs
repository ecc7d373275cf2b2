//! Usage analytics against the real server: every verification is counted, exactly, by key,
//! app, organization and outcome, at every granularity, and the counts survive a restart.

use std::time::Duration;

use serde_json::{json, Value};

use crate::testkit::{Api, ServerProcess, TestServer};

/// Waits until the usage query `query` reports `total` verifications (the counts are
/// written about once a second), then returns the report.
async fn usage_reaching(api: &Api, query: &str, total: i64) -> Value {
    let mut report = Value::Null;
    for _ in 0..100 {
        report = api
            .get(&format!("/api/v1/usage?{query}"))
            .await
            .assert_status(200)
            .clone();
        if report["total"] == total {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("usage never reached {total}: {report:#}");
}

#[tokio::test]
async fn every_verification_is_counted_exactly() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("counted", &["read", "write"]).await;
    api.create_app("other", &[]).await;
    let a = api
        .create_key(
            "counted",
            json!({"name": "a", "permissions": ["read"], "organization_id": "org_1"}),
        )
        .await;
    let b = api.create_key("counted", json!({"name": "b"})).await;
    let c = api.create_key("other", json!({"name": "c"})).await;
    let secret = |key: &Value| key["secret"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        assert_eq!(api.verify_code(&secret(&a)).await, "VALID");
    }
    for _ in 0..2 {
        let verdict = api.verify(&secret(&a), Some("write")).await;
        assert_eq!(verdict["code"], "INSUFFICIENT_PERMISSIONS");
    }
    for _ in 0..3 {
        api.verify_code(&secret(&b)).await;
    }
    api.verify_code(&secret(&c)).await;
    for _ in 0..4 {
        assert_eq!(
            api.verify_code("counted_live_nosuchkey").await,
            "INVALID_KEY"
        );
    }
    api.post(
        &format!("/api/v1/keys/{}/revoke", b["id"].as_str().unwrap()),
        json!({}),
    )
    .await
    .assert_status(200);
    assert_eq!(api.verify_code(&secret(&b)).await, "KEY_REVOKED");

    let everything = usage_reaching(&api, "granularity=minute", 16).await;
    assert_eq!(
        everything["outcomes"],
        json!({"VALID": 9, "INSUFFICIENT_PERMISSIONS": 2, "INVALID_KEY": 4, "KEY_REVOKED": 1})
    );
    let a_id = a["id"].as_str().unwrap();
    let by_key = usage_reaching(&api, &format!("key_id={a_id}"), 7).await;
    assert_eq!(
        by_key["outcomes"],
        json!({"VALID": 5, "INSUFFICIENT_PERMISSIONS": 2})
    );
    usage_reaching(&api, "app=counted", 11).await;
    usage_reaching(&api, "app=other", 1).await;
    usage_reaching(&api, "organization_id=org_1", 7).await;
    usage_reaching(&api, "outcome=INVALID_KEY", 4).await;
    // Every granularity counts the same verifications.
    for granularity in ["minute", "hour", "day"] {
        let report = usage_reaching(&api, &format!("granularity={granularity}"), 16).await;
        assert_eq!(report["granularity"], granularity);
        let summed: i64 = report["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|bucket| bucket["total"].as_i64().unwrap())
            .sum();
        assert_eq!(summed, 16);
    }
    // The busiest keys, most first, with the same filters; unknown keys are not listed.
    let b_id = b["id"].as_str().unwrap();
    let c_id = c["id"].as_str().unwrap();
    let top = api
        .get("/api/v1/usage/keys?granularity=minute")
        .await
        .assert_status(200)
        .clone();
    assert_eq!(
        top["data"],
        json!([
            {"key_id": a_id, "total": 7, "outcomes": {"VALID": 5, "INSUFFICIENT_PERMISSIONS": 2}},
            {"key_id": b_id, "total": 4, "outcomes": {"VALID": 3, "KEY_REVOKED": 1}},
            {"key_id": c_id, "total": 1, "outcomes": {"VALID": 1}},
        ])
    );
    let top_valid = api
        .get("/api/v1/usage/keys?app=counted&outcome=VALID&limit=1")
        .await
        .assert_status(200)
        .clone();
    assert_eq!(
        top_valid["data"],
        json!([{"key_id": a_id, "total": 5, "outcomes": {"VALID": 5}}])
    );
    // Another environment sees none of it.
    let test_api = server.api_with(&server.test_key);
    let other = test_api
        .get("/api/v1/usage")
        .await
        .assert_status(200)
        .clone();
    assert_eq!(other["total"], 0);
    server.stop().await;
}

#[tokio::test]
async fn without_per_key_counts_apps_and_organizations_still_count() {
    let server = TestServer::start_with(keyward_server::ServerConfig {
        analytics: keyward_server::AnalyticsSettings {
            flush_interval: Duration::from_millis(100),
            per_key: false,
            ..Default::default()
        },
        ..keyward_server::ServerConfig::default()
    })
    .await;
    let api = server.api();
    api.create_app("counted", &["read"]).await;
    let key = api
        .create_key("counted", json!({"name": "a", "organization_id": "org_1"}))
        .await;
    for _ in 0..3 {
        assert_eq!(
            api.verify_code(key["secret"].as_str().unwrap()).await,
            "VALID"
        );
    }
    assert_eq!(
        api.verify_code("counted_live_nosuchkey").await,
        "INVALID_KEY"
    );
    usage_reaching(&api, "granularity=minute", 4).await;
    usage_reaching(&api, "app=counted", 3).await;
    usage_reaching(&api, "organization_id=org_1&granularity=day", 3).await;
    // Written by now (the environment's total includes the same flush): nothing per key.
    let key_id = key["id"].as_str().unwrap();
    let by_key = api
        .get(&format!("/api/v1/usage?key_id={key_id}"))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(by_key["total"], 0, "{by_key:#}");
    let top = api
        .get("/api/v1/usage/keys")
        .await
        .assert_status(200)
        .clone();
    assert_eq!(top["data"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn bad_usage_queries_are_refused_clearly() {
    let server = TestServer::start().await;
    let api = server.api();
    for (query, status, code) in [
        ("granularity=week", 422, "invalid_granularity"),
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            422,
            "invalid_range",
        ),
        (
            "granularity=minute&from=2020-01-01T00:00:00Z",
            422,
            "range_too_large",
        ),
        ("outcome=valid", 422, "invalid_outcome"),
        ("key_id=", 422, "invalid_filter"),
        ("app=nope", 404, "app_not_found"),
        ("surprise=1", 422, "invalid_query"),
        ("from=yesterday", 422, "invalid_query"),
    ] {
        let reply = api.get(&format!("/api/v1/usage?{query}")).await;
        assert_eq!(reply.status.as_u16(), status, "{query}: {:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], code, "{query}");
    }
    for (path, code) in [
        ("/api/v1/usage?limit=5", "invalid_limit"),
        ("/api/v1/usage/keys?limit=0", "invalid_limit"),
        ("/api/v1/usage/keys?limit=101", "invalid_limit"),
        ("/api/v1/usage/keys?granularity=week", "invalid_granularity"),
    ] {
        let reply = api.get(path).await;
        assert_eq!(reply.status.as_u16(), 422, "{path}: {:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], code, "{path}");
    }
    let verifier = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "v", "scopes": ["verify"]}),
        )
        .await
        .assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .api_with(&verifier)
        .get("/api/v1/usage")
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    server.stop().await;
}

#[tokio::test]
async fn usage_counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), "first");
    let (live, _) = server.first_keys.clone().unwrap();
    let api = Api::new(&server.base, &live);
    api.create_app("durable", &[]).await;
    let key = api.create_key("durable", json!({"name": "k"})).await;
    for _ in 0..12 {
        api.verify_code(key["secret"].as_str().unwrap()).await;
    }
    // Stopped at once: the last second's counts are written by the graceful shutdown.
    assert!(server.terminate().success());
    let restarted = ServerProcess::start(dir.path(), "second");
    let api = Api::new(&restarted.base, &live);
    let report = api
        .get(&format!(
            "/api/v1/usage?key_id={}",
            key["id"].as_str().unwrap()
        ))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(report["outcomes"], json!({"VALID": 12}), "{report:#}");
}
