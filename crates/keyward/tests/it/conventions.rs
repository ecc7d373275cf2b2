//! SPEC §3 conventions that every endpoint shares.

use reqwest::Method;
use serde_json::json;

use crate::testkit::{send, TestServer};

#[tokio::test]
async fn every_response_has_a_request_id_and_api_version() {
    let server = TestServer::start().await;
    let api = server.api();
    for reply in [
        api.get("/healthz").await,
        api.get("/api/v1/apps").await,
        api.get("/api/v1/nope").await,
        api.get("/api/v1/keys/key_missing").await,
        api.post("/api/v1/apps", json!({})).await,
    ] {
        let request_id = reply.headers["x-request-id"].to_str().unwrap();
        assert!(
            request_id.starts_with("req_") && request_id.len() == 16,
            "{request_id}"
        );
        assert!(request_id[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(reply.headers["api-version"], "1.0");
    }
    api.get("/api/v1/nope")
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "route_not_found");
    server.stop().await;
}

#[tokio::test]
async fn a_well_formed_request_id_is_kept_and_a_bad_one_replaced() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let kept = send(
        http.get(format!("{}/healthz", server.base))
            .header("x-request-id", "req_0123456789ab"),
    )
    .await;
    assert_eq!(kept.headers["x-request-id"], "req_0123456789ab");
    let replaced = send(
        http.get(format!("{}/healthz", server.base))
            .header("x-request-id", "evil\"id"),
    )
    .await;
    assert_ne!(replaced.headers["x-request-id"], "evil\"id");
    server.stop().await;
}

#[tokio::test]
async fn non_json_writes_get_415_before_the_handler() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    for (method, path) in [
        (Method::POST, "/api/v1/apps"),
        (Method::POST, "/api/v1/keys/verify"),
        (Method::DELETE, "/api/v1/apps/whatever"),
        (Method::PATCH, "/api/v1/environment"),
    ] {
        // No credentials at all: 415 comes first, so the handler (and auth) never ran.
        let reply = send(
            http.request(method.clone(), format!("{}{path}", server.base))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
        reply.assert_error(415, "UNSUPPORTED_MEDIA_TYPE", "unsupported_media_type");
        let reply = send(
            http.request(method, format!("{}{path}", server.base))
                .body("{}"),
        )
        .await;
        reply.assert_error(415, "UNSUPPORTED_MEDIA_TYPE", "unsupported_media_type");
    }
    server.stop().await;
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            Method::OPTIONS,
            format!("{}/api/v1/keys/verify", server.base),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
    };
    let allowed = send(preflight("https://app.example.com")).await;
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let refused = send(preflight("https://evil.example.net")).await;
    assert!(refused.headers.get("access-control-allow-origin").is_none());
    // A browser client reads the request id and how long to back off.
    let answer = send(
        http.get(format!("{}/api/v1/apps", server.base))
            .header("origin", "https://app.example.com"),
    )
    .await;
    let exposed = answer.headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for header in [
        "x-request-id",
        "retry-after",
        "ratelimit",
        "ratelimit-policy",
    ] {
        assert!(
            exposed.split(',').any(|name| name.trim() == header),
            "{exposed}"
        );
    }
    // Caches must key answers by origin, preflights and answers alike, and only once.
    for headers in [&allowed.headers, &refused.headers, &answer.headers] {
        let vary: Vec<_> = headers.get_all("vary").iter().collect();
        assert_eq!(
            vary,
            ["origin, access-control-request-method, access-control-request-headers"]
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn lists_are_cursor_paginated() {
    let server = TestServer::start().await;
    let api = server.api();
    for index in 0..5 {
        api.create_app(&format!("app-{index}"), &[]).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/apps?limit=2&cursor={cursor}"),
            None => "/api/v1/apps?limit=2".to_owned(),
        };
        let page = api.get(&path).await.assert_status(200).clone();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(
            data.iter()
                .map(|app| app["slug"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["app-4", "app-3", "app-2", "app-1", "app-0"],
        "newest first, each once"
    );
    api.get("/api/v1/apps?limit=0")
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_limit");
    api.get("/api/v1/apps?limit=101")
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_limit");
    api.get("/api/v1/apps?colour=red")
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_query");
    server.stop().await;
}

#[tokio::test]
async fn operations_endpoints() {
    let server = TestServer::start().await;
    let api = server.api();
    assert_eq!(api.get("/healthz").await.assert_status(200)["status"], "ok");
    assert_eq!(
        api.get("/readyz").await.assert_status(200)["status"],
        "ready"
    );

    let app = api.create_app("ops", &[]).await;
    let key = api.create_key("ops", json!({"name": "k"})).await;
    api.verify(key["secret"].as_str().unwrap(), None).await;
    api.verify("kw_live_garbage", None).await;
    let metrics = send(api.http.get(format!("{}/metrics", server.base))).await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains("keyward_verifications_total{outcome=\"VALID\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("keyward_verifications_total{outcome=\"INVALID_KEY\"} 1"),
        "{text}"
    );
    assert!(app["id"].as_str().unwrap().starts_with("app_"));

    let openapi = api.get("/openapi.json").await.assert_status(200).clone();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = openapi["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/apps", &["get", "post"][..]),
        ("/api/v1/apps/{slug}", &["get", "patch", "delete"]),
        ("/api/v1/apps/{slug}/keys", &["get", "post"]),
        ("/api/v1/keys/{id}", &["get", "patch", "delete"]),
        ("/api/v1/keys/{id}/revoke", &["post"]),
        ("/api/v1/keys/{id}/rotate", &["post"]),
        ("/api/v1/keys/verify", &["post"]),
        ("/api/v1/root-keys", &["get", "post"]),
        ("/api/v1/root-keys/{id}/revoke", &["post"]),
        ("/api/v1/environment", &["get", "patch"]),
        ("/api/v1/audit-log", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths[path].get(*method).is_some(),
                "{method} {path} missing from OpenAPI"
            );
        }
    }
    // Generators (openapi-typescript) refuse a document whose operation ids repeat.
    let mut operation_ids = std::collections::HashSet::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            if let Some(id) = operation.get("operationId") {
                assert!(
                    operation_ids.insert(id.clone()),
                    "{method} {path}: {id} repeats"
                );
            }
        }
    }
    // The socket's messages, for SDKs to generate their types from.
    for schema in [
        "ServerMessage",
        "ClientMessage",
        "Event",
        "EventKey",
        "Session",
    ] {
        assert!(
            openapi["components"]["schemas"].get(schema).is_some(),
            "{schema} missing from OpenAPI"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn readiness_follows_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _database) = keyward_store::testing::fresh_database(dir.path()).await;
    let keyward_server::Opened { server, store, .. } = keyward_server::Server::open(
        &keyward_store::StoreOptions {
            url,
            max_connections: 2,
            acquire_timeout: std::time::Duration::from_secs(1),
            node_id: keyward_store::StoreOptions::new_node_id(),
        },
        keyward_server::ServerConfig::default(),
        keyward_store::cluster::ClusterOptions::default(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.run(listener, std::future::pending()));
    let http = reqwest::Client::new();
    send(http.get(format!("{base}/readyz")))
        .await
        .assert_status(200);
    store.close().await;
    send(http.get(format!("{base}/readyz"))).await.assert_error(
        503,
        "SERVICE_UNAVAILABLE",
        "storage_unavailable",
    );
    send(http.get(format!("{base}/healthz")))
        .await
        .assert_status(200);
}
