//! Scopes no wider than their names (issue 25): weakening `live`, the schemes that limit root
//! and workspace keys, limits that follow every credential a limited key makes, sandbox-wide
//! demo limits, and a `keys:write` dashboard session. Trust anchors and `usage:read` are in
//! `security.rs`.

use keyward_core::usage::RateWindow;
use keyward_server::{DemoSettings, ServerConfig};
use reqwest::Method;
use serde_json::{json, Value};

use crate::credentials::{now, signed};
use crate::dashboard::Browser;
use crate::testkit::{send, Api, Reply, TestServer};

async fn root_key(api: &Api, body: Value) -> Api {
    let created = api.post("/api/v1/root-keys", body).await;
    Api::new(
        &api.base,
        created.assert_status(201)["secret"].as_str().unwrap(),
    )
}

async fn scheme(api: &Api, slug: &str, limit: u64) {
    api.post(
        "/api/v1/rate-limit-schemes",
        json!({"slug": slug, "windows": [{"limit": limit, "period_seconds": 86_400}]}),
    )
    .await
    .assert_status(201);
}

async fn signed_get(base: &str, path: &str, key: &Value) -> Reply {
    let id = key["id"].as_str().unwrap();
    let secret = key["secret"].as_str().unwrap();
    // Each call names another page size, so no two signatures are the same.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let query = format!("limit={}", call % 100 + 1);
    let authorization = signed("GET", path, &query, b"", id, secret, now());
    send(
        reqwest::Client::new()
            .request(Method::GET, format!("{base}{path}?{query}"))
            .header("authorization", authorization),
    )
    .await
}

#[tokio::test]
async fn only_star_turns_enhanced_security_off_in_live() {
    let server = TestServer::start().await;
    let owner = server.api();
    let live_admin = root_key(
        &owner,
        json!({"name": "env", "scopes": ["environment:write"]}),
    )
    .await;
    live_admin
        .patch("/api/v1/environment", json!({"enhanced_security": false}))
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    live_admin
        .patch("/api/v1/environment", json!({"enhanced_security": true}))
        .await
        .assert_status(200);
    assert_eq!(
        owner.get("/api/v1/environment").await.body["enhanced_security"],
        true
    );
    // In `test` it is a development switch, and the scope's own.
    let test_admin = root_key(
        &server.api_with(&server.test_key),
        json!({"name": "env", "scopes": ["environment:write"]}),
    )
    .await;
    test_admin
        .patch("/api/v1/environment", json!({"enhanced_security": false}))
        .await
        .assert_status(200);
    owner
        .patch("/api/v1/environment", json!({"enhanced_security": false}))
        .await
        .assert_status(200);
    server.stop().await;
}

#[tokio::test]
async fn schemes_that_limit_root_keys_are_changed_only_with_power_over_them() {
    let server = TestServer::start().await;
    let owner = server.api();
    scheme(&owner, "automation", 1000).await;
    root_key(
        &owner,
        json!({"name": "deploys", "scopes": ["*"], "rate_limit_scheme": "automation"}),
    )
    .await;
    let throttle = json!({"windows": [{"limit": 1, "period_seconds": 86_400}]});
    // `apps:write` governs apps' schemes, not the keys this one limits.
    let apps = root_key(&owner, json!({"name": "apps", "scopes": ["apps:write"]})).await;
    apps.patch("/api/v1/rate-limit-schemes/automation", throttle.clone())
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    // Nor does `root_keys:write` reach a `*` key.
    let manager = root_key(
        &owner,
        json!({"name": "manager", "scopes": ["apps:write", "root_keys:write", "verify"]}),
    )
    .await;
    manager
        .patch("/api/v1/rate-limit-schemes/automation", throttle.clone())
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    // Over keys it holds the power of, it may.
    scheme(&owner, "verifiers", 1000).await;
    root_key(
        &owner,
        json!({"name": "gateway", "scopes": ["verify"], "rate_limit_scheme": "verifiers"}),
    )
    .await;
    manager
        .patch("/api/v1/rate-limit-schemes/verifiers", throttle.clone())
        .await
        .assert_status(200);
    // A limited key never loosens its own limit, whatever else it holds.
    scheme(&owner, "tight", 1000).await;
    let limited = root_key(
        &owner,
        json!({"name": "limited", "scopes": ["apps:write", "root_keys:write"],
               "rate_limit_scheme": "tight"}),
    )
    .await;
    limited
        .patch(
            "/api/v1/rate-limit-schemes/tight",
            json!({"windows": [{"limit": 1_000_000, "period_seconds": 1}]}),
        )
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    // Schemes that limit only API keys stay `apps:write`'s.
    scheme(&owner, "customers", 10).await;
    apps.patch("/api/v1/rate-limit-schemes/customers", throttle)
        .await
        .assert_status(200);
    server.stop().await;
}

#[tokio::test]
async fn credentials_a_limited_key_makes_share_its_limit() {
    let server = TestServer::start().await;
    let owner = server.api();
    scheme(&owner, "five", 5).await;
    scheme(&owner, "loose", 1_000_000).await;
    let limited = root_key(
        &owner,
        json!({"name": "limited", "scopes": ["root_keys:write", "workspace_keys:write",
               "apps:read"], "rate_limit_scheme": "five"}),
    )
    .await;
    // Calls 1 to 3: two copies, and an attempt at a looser one.
    let copy = limited
        .post(
            "/api/v1/root-keys",
            json!({"name": "copy", "scopes": ["apps:read"]}),
        )
        .await
        .assert_status(201)
        .clone();
    assert_eq!(copy["rate_limit_scheme"], "five");
    let signer = limited
        .post(
            "/api/v1/workspace-keys",
            json!({"name": "signer", "scopes": ["apps:read"]}),
        )
        .await
        .assert_status(201)
        .clone();
    assert_eq!(signer["rate_limit_scheme"], "five");
    limited
        .post(
            "/api/v1/root-keys",
            json!({"name": "escape", "scopes": ["apps:read"], "rate_limit_scheme": "loose"}),
        )
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    // Calls 4 and 5, by the copy and by a signed request: one budget for all three.
    let copy_api = Api::new(&server.base, copy["secret"].as_str().unwrap());
    copy_api.get("/api/v1/apps").await.assert_status(200);
    signed_get(&server.base, "/api/v1/apps", &signer)
        .await
        .assert_status(200);
    let refused = limited.get("/api/v1/apps").await;
    refused.assert_error(429, "RATE_LIMIT_ERROR", "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
    copy_api
        .get("/api/v1/apps")
        .await
        .assert_error(429, "RATE_LIMIT_ERROR", "rate_limited");
    signed_get(&server.base, "/api/v1/apps", &signer)
        .await
        .assert_error(429, "RATE_LIMIT_ERROR", "rate_limited");

    // Nor can it take over a key with another limit by rotating it: that hands it the
    // key's secret, and the key's budget with it.
    let unlimited = owner
        .post(
            "/api/v1/workspace-keys",
            json!({"name": "unlimited", "scopes": ["apps:read"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let writer = root_key(
        &owner,
        json!({"name": "writer", "scopes": ["workspace_keys:write", "apps:read"],
               "rate_limit_scheme": "loose"}),
    )
    .await;
    writer
        .post(
            &format!(
                "/api/v1/workspace-keys/{}/rotate",
                unlimited["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");

    // `*` decides for what it makes: an unlimited key, or one with a scheme of its own.
    let free = owner
        .post(
            "/api/v1/root-keys",
            json!({"name": "free", "scopes": ["apps:read"]}),
        )
        .await
        .assert_status(201)
        .clone();
    assert_eq!(free["rate_limit_scheme"], Value::Null);
    let own = owner
        .post(
            "/api/v1/workspace-keys",
            json!({"name": "limited signer", "scopes": ["apps:read"], "rate_limit_scheme": "five"}),
        )
        .await
        .assert_status(201)
        .clone();
    for _ in 0..5 {
        signed_get(&server.base, "/api/v1/apps", &own)
            .await
            .assert_status(200);
    }
    signed_get(&server.base, "/api/v1/apps", &own)
        .await
        .assert_error(429, "RATE_LIMIT_ERROR", "rate_limited");
    server.stop().await;
}

#[tokio::test]
async fn a_demo_sandbox_has_one_budget_for_everything_it_makes() {
    let server = TestServer::start_with(ServerConfig {
        demo: DemoSettings {
            api_windows: vec![RateWindow {
                limit: 4,
                period_ms: 86_400_000,
            }],
            ..DemoSettings::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let session = send(
        reqwest::Client::new()
            .post(format!("{}/api/v1/demo/session", server.base))
            .header("content-type", "application/json"),
    )
    .await;
    let demo = server.api_with(session.assert_status(201)["secret"].as_str().unwrap());
    // Calls 1 and 2 make a root key and a workspace key, each with every scope.
    let second = root_key(&demo, json!({"name": "second", "scopes": ["*"]})).await;
    let signer = demo
        .post("/api/v1/workspace-keys", json!({"name": "signer"}))
        .await
        .assert_status(201)
        .clone();
    second.get("/api/v1/apps").await.assert_status(200);
    signed_get(&server.base, "/api/v1/apps", &signer)
        .await
        .assert_status(200);
    for refused in [
        demo.get("/api/v1/apps").await,
        second.get("/api/v1/apps").await,
        signed_get(&server.base, "/api/v1/apps", &signer).await,
    ] {
        refused.assert_error(429, "RATE_LIMIT_ERROR", "rate_limited");
    }
    // Opening an event stream is a call too: asked to come back later (1013).
    {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let url = format!(
            "{}/ws?api-key={}",
            server.base.replacen("http://", "ws://", 1),
            session.body["secret"].as_str().unwrap()
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
            .await
            .expect("an answer");
        match closed {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1013),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_keys_write_session_reaches_the_new_key_form() {
    let server = TestServer::start().await;
    let owner = server.api();
    owner.create_app("acme", &["read:data", "write:data"]).await;
    let issuer = owner
        .post(
            "/api/v1/root-keys",
            json!({"name": "issuer", "scopes": ["keys:write"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let mut browser = Browser::new(&server.base);
    browser.sign_in(issuer["secret"].as_str().unwrap()).await;
    let form = browser.get("/dashboard/apps/acme/keys/new").await;
    assert_eq!(form.status, 200, "{}", form.html);
    assert!(
        form.html.contains("write:data"),
        "the app's permissions are offered"
    );
    let created = browser
        .post(
            "/dashboard/apps/acme/keys",
            &[
                ("csrf", &form.csrf()),
                ("name", "From the form"),
                ("permissions", "read:data"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.html);
    assert!(created.html.contains("kw_live_"), "the secret, shown once");
    server.stop().await;
}

#[tokio::test]
async fn apps_that_self_service_hands_out_are_changed_only_with_keys_write() {
    let server = TestServer::start().await;
    let owner = server.api();
    owner.create_app("portal", &["read"]).await;
    owner.create_app("plain", &["read"]).await;
    owner
        .post(
            "/api/v1/public-keys",
            json!({"type": "client", "self_service_app": "portal"}),
        )
        .await
        .assert_status(201);
    let apps = root_key(&owner, json!({"name": "apps", "scopes": ["apps:write"]})).await;
    // Every self-service key gets all of its app's permissions: widening them, or deleting
    // the app and making another under its slug, is issuing keys.
    apps.patch(
        "/api/v1/apps/portal",
        json!({"permissions": ["read", "admin"]}),
    )
    .await
    .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    apps.delete("/api/v1/apps/portal").await.assert_error(
        403,
        "PERMISSION_ERROR",
        "insufficient_scope",
    );
    owner.delete("/api/v1/apps/portal").await.assert_status(200);
    apps.post(
        "/api/v1/apps",
        json!({"name": "Again", "slug": "portal", "permissions": ["admin"]}),
    )
    .await
    .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    // Apps no public key delegates stay `apps:write`'s.
    apps.patch(
        "/api/v1/apps/plain",
        json!({"permissions": ["read", "admin"]}),
    )
    .await
    .assert_status(200);
    let both = root_key(
        &owner,
        json!({"name": "both", "scopes": ["apps:write", "keys:write"]}),
    )
    .await;
    both.post(
        "/api/v1/apps",
        json!({"name": "Again", "slug": "portal", "permissions": ["read"]}),
    )
    .await
    .assert_status(201);
    server.stop().await;
}
