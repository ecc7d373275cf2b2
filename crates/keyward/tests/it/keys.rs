//! The life of keys through the HTTP API: issue, verify, update, rotate, revoke, delete, with
//! environments, scopes and the audit log.

use serde_json::{json, Value};

use crate::testkit::{Api, TestServer};

fn secret(key: &Value) -> &str {
    key["secret"].as_str().expect("secret")
}

fn id(key: &Value) -> &str {
    key["id"].as_str().expect("id")
}

#[tokio::test]
async fn issue_list_verify_and_update() {
    let server = TestServer::start().await;
    let api = server.api();
    let app = api
        .create_app("acme-v2", &["read:data", "write:data", "admin"])
        .await;
    assert_eq!(app["key_prefix"], "kw");
    api.post("/api/v1/apps", json!({"name": "again", "slug": "acme-v2"}))
        .await
        .assert_error(409, "CONFLICT_ERROR", "app_slug_taken");
    api.post(
        "/api/v1/apps",
        json!({"name": "Acme", "slug": "acme", "key_prefix": "acme"}),
    )
    .await
    .assert_status(201);

    let key = api
        .create_key(
            "acme-v2",
            json!({"name": "Production", "owner_user_id": "usr_abc123", "organization_id": "org_abc123",
                   "permissions": ["read:data"], "meta": {"plan": "pro"}}),
        )
        .await;
    let secret = secret(&key);
    assert!(secret.starts_with("kw_live_"), "{secret}");
    assert_eq!(key["start"], secret[..12]);
    assert_eq!(key["status"], "active");
    let prefixed = api.create_key("acme", json!({"name": "acme key"})).await;
    assert!(prefixed["secret"]
        .as_str()
        .unwrap()
        .starts_with("acme_live_"));

    // Metadata never carries the secret.
    let fetched = api
        .get(&format!("/api/v1/keys/{}", id(&key)))
        .await
        .assert_status(200)
        .clone();
    assert!(fetched.get("secret").is_none());
    assert_eq!(fetched["meta"]["plan"], "pro");
    let listed = api
        .get("/api/v1/apps/acme-v2/keys")
        .await
        .assert_status(200)
        .clone();
    assert!(!listed.to_string().contains(secret));
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let by_owner = api
        .get("/api/v1/apps/acme-v2/keys?owner_user_id=nobody")
        .await
        .assert_status(200)
        .clone();
    assert!(by_owner["data"].as_array().unwrap().is_empty());
    // Search matches part of the name in any case, the start of `start`, or the id; LIKE's
    // wildcards are literal.
    let start = key["start"].as_str().unwrap();
    for (search, found) in [
        ("DUCTION", 1),
        (&start[..10], 1),
        (id(&key), 1),
        ("%25", 0),
        ("_", 0),
        ("nothing like it", 0),
    ] {
        let listed = api
            .get(&format!("/api/v1/apps/acme-v2/keys?search={search}"))
            .await
            .assert_status(200)
            .clone();
        assert_eq!(listed["data"].as_array().unwrap().len(), found, "{search}");
    }
    api.get(&format!(
        "/api/v1/apps/acme-v2/keys?search={}",
        "x".repeat(201)
    ))
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_search");

    let verdict = api
        .verify(secret, Some("read:data AND (write:data OR admin)"))
        .await;
    assert_eq!(verdict["code"], "INSUFFICIENT_PERMISSIONS");
    assert_eq!(verdict["status"], 403);
    assert_eq!(verdict["valid"], false);
    let verdict = api.verify(secret, Some("read:data")).await;
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["code"], "VALID");
    assert_eq!(verdict["status"], 200);
    assert_eq!(verdict["key_id"], id(&key));
    assert_eq!(verdict["app"], "acme-v2");
    assert_eq!(verdict["environment"], "live");
    assert_eq!(verdict["owner_user_id"], "usr_abc123");
    assert_eq!(verdict["organization_id"], "org_abc123");
    assert_eq!(verdict["permissions"], json!(["read:data"]));
    let list_form = api
        .post(
            "/api/v1/keys/verify",
            json!({"key": secret, "permissions": ["read:data", "admin"]}),
        )
        .await;
    assert_eq!(list_form.body["code"], "INSUFFICIENT_PERMISSIONS");
    api.post(
        "/api/v1/keys/verify",
        json!({"key": secret, "permissions": "read:data AND ("}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_permission_query");

    // Updates take effect on verification at once.
    let path = format!("/api/v1/keys/{}", id(&key));
    api.patch(
        &path,
        json!({"permissions": ["read:data", "admin"], "name": "Renamed"}),
    )
    .await
    .assert_status(200);
    assert_eq!(
        api.verify(secret, Some("read:data AND (write:data OR admin)"))
            .await["code"],
        "VALID"
    );
    api.patch(&path, json!({"enabled": false}))
        .await
        .assert_status(200);
    assert_eq!(api.verify_code(secret).await, "KEY_DISABLED");
    let disabled = api
        .get("/api/v1/apps/acme-v2/keys?status=disabled")
        .await
        .assert_status(200)
        .clone();
    assert_eq!(disabled["data"][0]["id"], id(&key));
    api.patch(&path, json!({"enabled": true, "owner_user_id": null}))
        .await
        .assert_status(200);
    let verdict = api.verify(secret, None).await;
    assert_eq!(verdict["code"], "VALID");
    assert!(verdict.get("owner_user_id").is_none());

    api.patch(&path, json!({"permissions": ["delete:everything"]}))
        .await
        .assert_error(422, "VALIDATION_ERROR", "permission_not_in_app");
    api.patch(
        "/api/v1/apps/acme-v2",
        json!({"permissions": ["read:data"]}),
    )
    .await
    .assert_error(409, "CONFLICT_ERROR", "permission_in_use");
    api.patch(
        "/api/v1/apps/acme-v2",
        json!({"permissions": ["read:data", "admin", "extra"]}),
    )
    .await
    .assert_status(200);
    server.stop().await;
}

#[tokio::test]
async fn creation_is_validated() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("strict", &["read"]).await;
    api.post(
        "/api/v1/apps/strict/keys",
        json!({"name": "x", "permissions": ["write"]}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "permission_not_in_app");
    api.post(
        "/api/v1/apps/strict/keys",
        json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_expires_at");
    api.post(
        "/api/v1/apps/strict/keys",
        json!({"name": "x", "expires_at": "yesterday"}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_field");
    api.post("/api/v1/apps/strict/keys", json!({"name": ""}))
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_field");
    api.post("/api/v1/apps/missing/keys", json!({"name": "x"}))
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "app_not_found");
    server.stop().await;
}

#[tokio::test]
async fn expiry_is_enforced_at_verification() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("short", &[]).await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(600);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let key = api
        .create_key("short", json!({"name": "brief", "expires_at": soon}))
        .await;
    assert_eq!(api.verify_code(secret(&key)).await, "VALID");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let verdict = api.verify(secret(&key), None).await;
    assert_eq!(verdict["code"], "KEY_EXPIRED");
    assert_eq!(verdict["status"], 403);
    server.stop().await;
}

#[tokio::test]
async fn rotation_revocation_and_deletion() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("life", &[]).await;
    let key = api.create_key("life", json!({"name": "rotating"})).await;
    let first = secret(&key).to_owned();
    assert_eq!(api.verify_code(&first).await, "VALID");

    // Without grace the old secret stops when the call returns.
    let rotated = api
        .post(&format!("/api/v1/keys/{}/rotate", id(&key)), json!({}))
        .await
        .assert_status(200)
        .clone();
    let second = secret(&rotated).to_owned();
    assert_eq!(rotated["id"], key["id"]);
    assert_eq!(rotated["name"], "rotating");
    assert_eq!(api.verify_code(&first).await, "INVALID_KEY");
    assert_eq!(api.verify_code(&second).await, "VALID");

    // With grace both work until it ends. An empty body is accepted too.
    let rotated = api
        .post(
            &format!("/api/v1/keys/{}/rotate", id(&key)),
            json!({"expire_previous_in_seconds": 1}),
        )
        .await
        .assert_status(200)
        .clone();
    let third = secret(&rotated).to_owned();
    assert_eq!(api.verify_code(&second).await, "VALID");
    assert_eq!(api.verify_code(&third).await, "VALID");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(api.verify_code(&second).await, "INVALID_KEY");
    assert_eq!(api.verify_code(&third).await, "VALID");
    api.post(
        &format!("/api/v1/keys/{}/rotate", id(&key)),
        json!({"expire_previous_in_seconds": 99_999_999}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_grace_period");

    let revoked = api
        .post(&format!("/api/v1/keys/{}/revoke", id(&key)), json!({}))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(revoked["status"], "revoked");
    let verdict = api.verify(&third, None).await;
    assert_eq!(verdict["code"], "KEY_REVOKED");
    assert_eq!(verdict["status"], 403);
    api.post(&format!("/api/v1/keys/{}/rotate", id(&key)), json!({}))
        .await
        .assert_error(409, "CONFLICT_ERROR", "key_revoked");

    let doomed = api.create_key("life", json!({"name": "doomed"})).await;
    assert_eq!(api.verify_code(secret(&doomed)).await, "VALID");
    api.delete(&format!("/api/v1/keys/{}", id(&doomed)))
        .await
        .assert_status(200);
    assert_eq!(api.verify_code(secret(&doomed)).await, "INVALID_KEY");
    api.get(&format!("/api/v1/keys/{}", id(&doomed)))
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "key_not_found");

    // Deleting an app revokes its keys.
    let survivor = api.create_key("life", json!({"name": "app goes"})).await;
    assert_eq!(api.verify_code(secret(&survivor)).await, "VALID");
    api.delete("/api/v1/apps/life").await.assert_status(200);
    assert_eq!(api.verify_code(secret(&survivor)).await, "KEY_REVOKED");
    api.get("/api/v1/apps/life")
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "app_not_found");
    api.create_app("life", &[]).await;
    server.stop().await;
}

#[tokio::test]
async fn environments_are_isolated() {
    let server = TestServer::start().await;
    let live = server.api();
    let test = server.api_with(&server.test_key);
    live.create_app("shared-slug", &[]).await;
    test.create_app("shared-slug", &[]).await;
    let live_key = live
        .create_key("shared-slug", json!({"name": "live"}))
        .await;
    let test_key = test
        .create_key("shared-slug", json!({"name": "test"}))
        .await;
    assert!(secret(&test_key).starts_with("kw_test_"));

    assert_eq!(test.verify_code(secret(&live_key)).await, "INVALID_KEY");
    assert_eq!(live.verify_code(secret(&test_key)).await, "INVALID_KEY");
    assert_eq!(test.verify_code(secret(&test_key)).await, "VALID");
    test.get(&format!("/api/v1/keys/{}", id(&live_key)))
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "key_not_found");
    test.post(&format!("/api/v1/keys/{}/revoke", id(&live_key)), json!({}))
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "key_not_found");
    assert_eq!(live.verify_code(secret(&live_key)).await, "VALID");
    let live_env = live
        .get("/api/v1/environment")
        .await
        .assert_status(200)
        .clone();
    let test_env = test
        .get("/api/v1/environment")
        .await
        .assert_status(200)
        .clone();
    assert_eq!(live_env["enhanced_security"], true);
    assert_eq!(test_env["enhanced_security"], false);
    let updated = test
        .patch("/api/v1/environment", json!({"enhanced_security": true}))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(updated["enhanced_security"], true);
    server.stop().await;
}

#[tokio::test]
async fn root_key_scopes_are_enforced() {
    let server = TestServer::start().await;
    let admin = server.api();
    admin.create_app("scoped", &[]).await;
    let reader = admin
        .post(
            "/api/v1/root-keys",
            json!({"name": "reader", "scopes": ["keys:read", "verify"]}),
        )
        .await
        .assert_status(201)
        .clone();
    assert!(secret(&reader).starts_with("sk_live_"));
    let reader_api = Api::new(&server.base, secret(&reader));
    reader_api
        .get("/api/v1/apps/scoped/keys")
        .await
        .assert_status(200);
    reader_api
        .post("/api/v1/apps/scoped/keys", json!({"name": "x"}))
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    reader_api.get("/api/v1/apps").await.assert_error(
        403,
        "PERMISSION_ERROR",
        "insufficient_scope",
    );
    // A root key cannot mint a stronger one.
    reader_api
        .post(
            "/api/v1/root-keys",
            json!({"name": "escalate", "scopes": ["*"]}),
        )
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    admin
        .post(
            "/api/v1/root-keys",
            json!({"name": "bad", "scopes": ["keys:everything"]}),
        )
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_scope");
    let listed = admin
        .get("/api/v1/root-keys")
        .await
        .assert_status(200)
        .clone();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(secret(&reader)));

    admin
        .post(
            &format!("/api/v1/root-keys/{}/revoke", id(&reader)),
            json!({}),
        )
        .await
        .assert_status(200);
    reader_api
        .get("/api/v1/apps/scoped/keys")
        .await
        .assert_error(403, "PERMISSION_ERROR", "key_revoked");

    // A key that manages root keys cannot take down a more powerful one.
    let manager = admin
        .post(
            "/api/v1/root-keys",
            json!({"name": "manager", "scopes": ["root_keys:write", "verify"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let manager_api = server.api_with(secret(&manager));
    let admin_id = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["scopes"] == json!(["*"]))
        .map(|key| key["id"].as_str().unwrap().to_owned())
        .unwrap();
    manager_api
        .post(&format!("/api/v1/root-keys/{admin_id}/revoke"), json!({}))
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    admin.get("/api/v1/apps").await.assert_status(200);
    let lesser = admin
        .post(
            "/api/v1/root-keys",
            json!({"name": "lesser", "scopes": ["verify"]}),
        )
        .await
        .assert_status(201)
        .clone();
    manager_api
        .post(
            &format!("/api/v1/root-keys/{}/revoke", id(&lesser)),
            json!({}),
        )
        .await
        .assert_status(200);
    server.stop().await;
}

#[tokio::test]
async fn mutations_are_audited_and_last_use_is_recorded() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("audited", &[]).await;
    let key = api.create_key("audited", json!({"name": "watched"})).await;
    let revoke = api
        .post(&format!("/api/v1/keys/{}/revoke", id(&key)), json!({}))
        .await;
    let revoke_request_id = revoke.headers["x-request-id"].to_str().unwrap().to_owned();

    let log = api
        .get("/api/v1/audit-log")
        .await
        .assert_status(200)
        .clone();
    let actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.revoke", "key.create", "app.create"]);
    let entry = &log["data"][0];
    assert_eq!(entry["target"], id(&key));
    assert_eq!(entry["request_id"], revoke_request_id.as_str());
    assert!(entry["actor"].as_str().unwrap().starts_with("rk_"));
    assert!(entry["created_at"].is_string());
    let filtered = api
        .get(&format!("/api/v1/audit-log?target={}", id(&key)))
        .await
        .assert_status(200)
        .clone();
    assert_eq!(filtered["data"].as_array().unwrap().len(), 2);

    let used = api.create_key("audited", json!({"name": "used"})).await;
    assert!(api.get(&format!("/api/v1/keys/{}", id(&used))).await.body["last_used_at"].is_null());
    for _ in 0..20 {
        assert_eq!(api.verify_code(secret(&used)).await, "VALID");
    }
    let mut last_used = serde_json::Value::Null;
    for _ in 0..50 {
        last_used =
            api.get(&format!("/api/v1/keys/{}", id(&used))).await.body["last_used_at"].clone();
        if !last_used.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        last_used.is_string(),
        "last_used_at was written in the background"
    );
    server.stop().await;
}

/// Issue 19, item 1: the verification cache stays within its bound by evicting, and an
/// eviction never weakens a revocation (a dropped entry is read again from storage).
#[tokio::test]
async fn a_bounded_cache_evicts_and_never_forgets_a_revocation() {
    let server = TestServer::start_with(keyward_server::ServerConfig {
        cache_max_bytes: 64 * 1024,
        ..keyward_server::ServerConfig::default()
    })
    .await;
    let api = server.api();
    api.create_app("many", &["read"]).await;
    let mut keys = Vec::new();
    for n in 0..300 {
        let key = api
            .create_key(
                "many",
                json!({"name": format!("key {n}"), "permissions": ["read"]}),
            )
            .await;
        keys.push((
            key["id"].as_str().unwrap().to_owned(),
            key["secret"].as_str().unwrap().to_owned(),
        ));
    }
    for (_, secret) in &keys {
        assert_eq!(api.verify_code(secret).await, "VALID");
    }
    let weighted = crate::testkit::metric(&server.base, "keyward_verify_cache_weighted_bytes")
        .await
        .unwrap();
    assert!(weighted <= 64.0 * 1024.0, "{weighted} bytes held");
    let evictions = crate::testkit::metric(&server.base, "keyward_verify_cache_evictions_total")
        .await
        .unwrap();
    assert!(evictions > 0.0, "300 keys fit in 64 KiB?");
    // Revoke every key, the ones evicted and the ones still cached: each is refused.
    for (id, _) in &keys {
        api.post(&format!("/api/v1/keys/{id}/revoke"), json!({}))
            .await
            .assert_status(200);
    }
    for (_, secret) in &keys {
        assert_eq!(api.verify_code(secret).await, "KEY_REVOKED");
    }
    server.stop().await;
}

/// Waits until a metric of the server reads `value`.
pub(crate) async fn wait_for_metric(base: &str, name: &str, value: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while crate::testkit::metric(base, name).await != Some(value) {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never reached {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Issue 19, item 2: a well-formed secret with a valid checksum that does not exist is
/// refused from memory, fresh on every request or repeated, as an API key to verify or as a
/// root key on a management route: storage is read only for the filter's false positives.
#[tokio::test]
async fn unknown_well_formed_secrets_are_refused_without_reading_storage() {
    use keyward_core::secret::{IssuedSecret, ROOT_KEY_PREFIX};
    use keyward_core::Environment;

    let server = TestServer::start().await;
    let api = server.api();
    wait_for_metric(&server.base, "keyward_verify_filter_ready", 1.0).await;
    api.create_app("acme", &[]).await;
    let real = api.create_key("acme", json!({"name": "real"})).await;
    assert_eq!(api.verify_code(secret(&real)).await, "VALID");
    let prefix = secret(&real).split("_live_").next().unwrap().to_owned();
    let reads = || crate::testkit::metric(&server.base, "keyward_verify_storage_reads_total");
    let refusals = || crate::testkit::metric(&server.base, "keyward_verify_filter_refusals_total");
    const FRESH: usize = 150;
    let mut rng = rand::rngs::OsRng;
    // On PostgreSQL a loaded machine can let the node's lease lapse for a moment, and then it
    // rightly reads storage for everything: a lapse spoils one attempt, a broken filter all.
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let (reads_before, refusals_before) = (reads().await.unwrap(), refusals().await.unwrap());
        for _ in 0..FRESH {
            let unknown = IssuedSecret::generate(&prefix, Environment::Live, &mut rng).unwrap();
            assert_eq!(api.verify_code(unknown.expose()).await, "INVALID_KEY");
            let root =
                IssuedSecret::generate(ROOT_KEY_PREFIX, Environment::Live, &mut rng).unwrap();
            let refused = server.api_with(root.expose()).get("/api/v1/apps").await;
            assert_eq!(refused.status.as_u16(), 401, "{:#}", refused.body);
        }
        let repeated = IssuedSecret::generate(&prefix, Environment::Live, &mut rng).unwrap();
        for _ in 0..50 {
            assert_eq!(api.verify_code(repeated.expose()).await, "INVALID_KEY");
        }
        let read = reads().await.unwrap() - reads_before;
        let refused = refusals().await.unwrap() - refusals_before;
        attempts.push((read, refused));
        // 1% of unknown hashes pass the filter (its false-positive rate), each read once.
        if read <= 12.0 && refused >= (2 * FRESH) as f64 * 0.95 {
            break;
        }
    }
    let (read, refused) = *attempts.last().unwrap();
    assert!(
        read <= 12.0 && refused >= (2 * FRESH) as f64 * 0.95,
        "storage reads and filter refusals for {} unknown secrets, by attempt: {attempts:?}",
        2 * FRESH + 50
    );
    // A secret made now is known at once, and the real key still verifies.
    let fresh = api.create_key("acme", json!({"name": "new"})).await;
    assert_eq!(api.verify_code(secret(&fresh)).await, "VALID");
    assert_eq!(api.verify_code(secret(&real)).await, "VALID");
    server.stop().await;
}
