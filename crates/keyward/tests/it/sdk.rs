//! The Rust SDK against the real server: every client method, pagination as a stream, the
//! gateway layer in a small axum app, the event sockets (auth failure, token rotation,
//! token expiry, resuming without loss or repetition), webhook endpoints and leak reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use jsonwebtoken::Algorithm;
use keyward_sdk::proto::{
    CreateAppRequest, CreateKeyRequest, CreateMyKeyRequest, CreatePublicKeyRequest,
    CreateRateLimitSchemeRequest, CreateRootKeyRequest, CreateSigningKeyRequest,
    CreateWebhookEndpointRequest, CreateWorkspaceKeyRequest, ImportKeysRequest, ImportedKey,
    ListAuditParams, ListKeysParams, ListWebhookDeliveriesParams, PageParams,
    PutOrganizationRequest, RateWindow, ReportLeakRequest, RotateKeyRequest, UpdateAppRequest,
    UpdateEnvironmentRequest, UpdateKeyRequest, UpdateRateLimitSchemeRequest,
    UpdateWebhookEndpointRequest, VerifyKeyRequest, VerifyRequestRequest,
};
use keyward_sdk::{AlertsSocket, Client, Error, EventsSocket, SocketEvent, SocketOptions};
use serde_json::json;

use crate::credentials::{ec_key, now, sign};
use crate::testkit::{metric, TestServer};

fn client(server: &TestServer, key: &str) -> Client {
    Client::builder()
        .base_url(&server.base)
        .api_key(key)
        .build()
        .unwrap()
}

#[tokio::test]
async fn every_client_method_works_against_the_real_server() {
    let server = TestServer::start().await;
    let sdk = client(&server, &server.live_key);
    assert_eq!(sdk.health().await.unwrap().status, "ok");

    // Usage control.
    let window = |limit| RateWindow {
        limit,
        period_seconds: 60,
    };
    let scheme = sdk
        .create_rate_limit_scheme(&CreateRateLimitSchemeRequest {
            slug: "standard".into(),
            windows: vec![window(100)],
        })
        .await
        .unwrap();
    assert_eq!(scheme.slug, "standard");
    assert_eq!(
        sdk.list_rate_limit_schemes(&PageParams::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    let updated = sdk
        .update_rate_limit_scheme(
            "standard",
            &UpdateRateLimitSchemeRequest {
                windows: vec![window(50)],
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.windows[0].limit, 50);
    assert_eq!(
        sdk.get_rate_limit_scheme("standard").await.unwrap().windows[0].limit,
        50
    );
    let organization = sdk
        .put_organization(
            "org_1",
            &PutOrganizationRequest {
                credit_cap: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(organization.credit_cap, Some(1000));
    assert_eq!(sdk.get_organization("org_1").await.unwrap().id, "org_1");
    sdk.delete_organization("org_1").await.unwrap();

    // Apps and keys.
    let app = sdk
        .create_app(&CreateAppRequest {
            name: "Orders".into(),
            slug: "orders".into(),
            permissions: vec!["read".into(), "write".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sdk.get_app("orders").await.unwrap().id, app.id);
    sdk.update_app(
        "orders",
        &UpdateAppRequest {
            name: Some("Orders v2".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sdk.list_apps(&PageParams::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    let mut secrets = Vec::new();
    for index in 0..3 {
        let key = sdk
            .create_key(
                "orders",
                &CreateKeyRequest {
                    name: format!("k{index}"),
                    owner_user_id: Some("usr_1".into()),
                    permissions: Some(vec!["read".into()]),
                    rate_limit_scheme: Some("standard".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        secrets.push((key.key.id.clone(), key.secret));
    }
    let (id, secret) = secrets[0].clone();
    let verdict = sdk
        .verify_key(&VerifyKeyRequest {
            key: secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(verdict.valid, "{verdict:?}");
    assert_eq!(verdict.rate_limit.unwrap().limit, 50);
    let gateway = sdk
        .verify_request(&VerifyRequestRequest {
            method: "GET".into(),
            path: "/orders".into(),
            headers: [("x-api-key".to_owned(), secret.clone())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(gateway.credential_type.as_deref(), Some("api_key"));
    let usage = sdk
        .usage(&keyward_sdk::proto::UsageParams::default())
        .await
        .unwrap();
    assert_eq!(usage.granularity, "hour");
    sdk.update_key(
        &id,
        &UpdateKeyRequest {
            name: Some("renamed".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(sdk.get_key(&id).await.unwrap().name, "renamed");
    let rotated = sdk
        .rotate_key(&id, &RotateKeyRequest::default())
        .await
        .unwrap();
    assert_ne!(rotated.secret, secret);
    assert_eq!(sdk.revoke_key(&id).await.unwrap().status, "revoked");
    sdk.delete_key(&secrets[1].0).await.unwrap();
    let imported = sdk
        .import_keys(
            "orders",
            &ImportKeysRequest {
                keys: vec![ImportedKey {
                    hash: "ab".repeat(32),
                    start: "legacy".into(),
                    name: "imported".into(),
                    ..Default::default()
                }],
            },
        )
        .await
        .unwrap();
    assert_eq!(imported.imported, 1);
    let page = sdk
        .list_keys(
            "orders",
            &ListKeysParams {
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.data.len(), 1);
    // Pagination as a stream: every key, one per page.
    let streamed: Vec<_> = sdk
        .stream_keys(
            "orders",
            ListKeysParams {
                limit: Some(1),
                ..Default::default()
            },
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        streamed.len(),
        3,
        "two issued (one revoked) and one imported"
    );
    assert_eq!(
        sdk.stream_apps()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        sdk.stream_audit(ListAuditParams::default())
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
            > 5
    );

    // Root keys and the environment.
    let root = sdk
        .create_root_key(&CreateRootKeyRequest {
            name: "gateway".into(),
            scopes: vec!["verify".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(sdk
        .list_root_keys(&PageParams::default())
        .await
        .unwrap()
        .data
        .iter()
        .any(|key| key.id == root.key.id));
    sdk.revoke_root_key(&root.key.id).await.unwrap();
    let environment = sdk
        .update_environment(&UpdateEnvironmentRequest {
            enhanced_security: Some(true),
            leaked_key_action: None,
        })
        .await
        .unwrap();
    assert!(environment.enhanced_security);
    assert!(sdk.get_environment().await.unwrap().enhanced_security);

    // Credentials beyond secret keys.
    let signer = ec_key("k1");
    let public_key = sdk
        .create_public_key(&CreatePublicKeyRequest {
            key_type: "jwt".into(),
            public_key: Some(signer.public_pem.clone()),
            algorithms: Some(vec!["ES256".into()]),
            self_service_app: Some("orders".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        sdk.list_public_keys(&PageParams::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    let signing = sdk
        .create_signing_key(&CreateSigningKeyRequest::default())
        .await
        .unwrap();
    assert!(signing.private_key_pem.contains("PRIVATE KEY"));
    assert_eq!(
        sdk.list_signing_keys(&PageParams::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    sdk.delete_signing_key(&signing.key.id).await.unwrap();
    let workspace = sdk
        .create_workspace_key(&CreateWorkspaceKeyRequest::default())
        .await
        .unwrap();
    assert_eq!(
        sdk.list_workspace_keys(&PageParams::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    let rotated = sdk
        .rotate_workspace_key(&workspace.key.id, &RotateKeyRequest::default())
        .await
        .unwrap();
    assert_ne!(rotated.secret, workspace.secret);
    sdk.delete_workspace_key(&workspace.key.id).await.unwrap();

    // End-user self-service, with a public key and the end user's token.
    let token = sign(
        Algorithm::ES256,
        None,
        &signer.encoding,
        &json!({"sub": "usr_9", "iat": now(), "exp": now() + 600}),
    );
    let me = Client::builder()
        .base_url(&server.base)
        .api_key(&public_key.key)
        .jwt(token)
        .build()
        .unwrap();
    let mine = me
        .create_my_key(&CreateMyKeyRequest {
            name: "my key".into(),
            ..CreateMyKeyRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.key.owner_user_id.as_deref(), Some("usr_9"));
    assert_eq!(
        me.list_my_keys(&PageParams::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    me.rotate_my_key(&mine.key.id, &RotateKeyRequest::default())
        .await
        .unwrap();
    assert_eq!(
        me.revoke_my_key(&mine.key.id).await.unwrap().status,
        "revoked"
    );
    let rotated = sdk
        .rotate_public_key(&public_key.id, &RotateKeyRequest::default())
        .await
        .unwrap();
    assert_ne!(rotated.key, public_key.key);
    sdk.delete_public_key(&public_key.id).await.unwrap();

    // Cleanup calls last: they take what the others used.
    sdk.delete_app("orders").await.unwrap();
    sdk.delete_rate_limit_scheme("standard").await.unwrap();

    // A demo sandbox needs no key; its own key deletes it.
    let anonymous = Client::builder().base_url(&server.base).build().unwrap();
    let demo = anonymous.create_demo_session().await.unwrap();
    client(&server, &demo.secret)
        .delete_demo_session()
        .await
        .unwrap();
    let gone = client(&server, &demo.secret).get_environment().await;
    assert!(matches!(gone, Err(Error::Auth { .. })), "{gone:?}");
    server.stop().await;
}

/// A tiny service of a Keyward user, protected by the layer.
async fn protected_app(sdk: Client) -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/orders",
            get(
                |keyward_sdk::Verified(verdict): keyward_sdk::Verified| async move {
                    format!("orders for {}", verdict.owner_user_id.unwrap_or_default())
                },
            ),
        )
        .layer(keyward_sdk::KeywardLayer::new(sdk));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn the_layer_lets_valid_keys_through_and_answers_refusals_itself() {
    let server = TestServer::start().await;
    let api = server.api();
    api.post(
        "/api/v1/rate-limit-schemes",
        json!({"slug": "two", "windows": [{"limit": 2, "period_seconds": 60}]}),
    )
    .await
    .assert_status(201);
    api.create_app("shop", &[]).await;
    let key = api
        .create_key(
            "shop",
            json!({"name": "customer", "owner_user_id": "usr_7", "rate_limit_scheme": "two"}),
        )
        .await;
    let secret = key["secret"].as_str().unwrap();
    let base = protected_app(client(&server, &server.live_key)).await;
    let http = reqwest::Client::new();
    let get = |credential: Option<&str>| {
        let mut request = http.get(format!("{base}/orders"));
        if let Some(credential) = credential {
            request = request.header("x-api-key", credential);
        }
        async move { request.send().await.unwrap() }
    };

    let answer = get(Some(secret)).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "orders for usr_7");

    let missing = get(None).await;
    assert_eq!(missing.status(), 401);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["type"], "AUTHENTICATION_ERROR");

    assert_eq!(get(Some(secret)).await.status(), 200);
    let limited = get(Some(secret)).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.json::<serde_json::Value>().await.unwrap()["error"]["type"],
        "RATE_LIMIT_ERROR"
    );

    api.post(
        &format!("/api/v1/keys/{}/revoke", key["id"].as_str().unwrap()),
        json!({}),
    )
    .await
    .assert_status(200);
    let revoked = get(Some(secret)).await;
    assert_eq!(revoked.status(), 403);
    assert_eq!(
        revoked.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "key_revoked"
    );
    server.stop().await;
}

async fn ws_connections(server: &TestServer) -> Option<f64> {
    metric(&server.base, "keyward_ws_connections_total").await
}

async fn next(socket: &mut (impl futures_util::Stream<Item = SocketEvent> + Unpin)) -> SocketEvent {
    tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a socket event in time")
        .expect("the socket goes on")
}

fn fast_reconnects() -> SocketOptions {
    SocketOptions {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..SocketOptions::default()
    }
}

#[tokio::test]
async fn a_refused_socket_reports_then_stops_for_good() {
    let server = TestServer::start().await;
    let sdk = client(&server, "sk_live_thisisnotarealkeyatall000000");
    let mut socket = AlertsSocket::connect_with(&sdk, fast_reconnects());
    match next(&mut socket).await {
        SocketEvent::AuthFailed(error) => assert_eq!(error.code, "invalid_api_key"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next(&mut socket).await,
        SocketEvent::Disconnected {
            reconnecting: false,
            ..
        }
    ));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), socket.next())
            .await
            .is_ok_and(|end| end.is_none()),
        "the stream ends"
    );
    assert_eq!(
        ws_connections(&server).await,
        Some(1.0),
        "no second attempt"
    );
    server.stop().await;
}

#[tokio::test]
async fn sockets_take_fresh_tokens_and_resume_without_loss_or_repeats() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("mine", &[]).await;
    let signer = Arc::new(ec_key("k1"));
    let public_key = api
        .create_public_key(
            json!({"type": "jwt", "public_key": signer.public_pem, "algorithms": ["ES256"]}),
        )
        .await;
    // Each token lives 2 s; `get_jwt` counts how often it is asked.
    let asked = Arc::new(AtomicU64::new(0));
    let sdk = {
        let (signer, asked) = (Arc::clone(&signer), Arc::clone(&asked));
        Client::builder()
            .base_url(&server.base)
            .api_key(&public_key)
            .jwt("captured.but.overridden")
            .get_jwt(move || {
                let (signer, asked) = (Arc::clone(&signer), Arc::clone(&asked));
                async move {
                    asked.fetch_add(1, Ordering::SeqCst);
                    Ok(sign(
                        Algorithm::ES256,
                        None,
                        &signer.encoding,
                        &json!({"sub": "alice", "iat": now(), "exp": now() + 2}),
                    ))
                }
            })
            .build()
            .unwrap()
    };
    let mut socket = EventsSocket::connect_with(&sdk, fast_reconnects());
    assert!(
        matches!(next(&mut socket).await, SocketEvent::Connected(session) if session.subject.as_deref() == Some("alice")),
        "get_jwt wins over jwt"
    );
    // Keys keep coming while the token expires and the socket reconnects.
    let maker = {
        let api = server.api();
        tokio::spawn(async move {
            for index in 0..12 {
                api.create_key(
                    "mine",
                    json!({"name": format!("k{index}"), "owner_user_id": "alice"}),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut names = Vec::new();
    let (mut expired, mut connected) = (0, 1);
    while names.len() < 12 {
        match next(&mut socket).await {
            SocketEvent::Event(event) => names.push(event.key.expect("a key event").name),
            SocketEvent::TokenExpired => expired += 1,
            SocketEvent::Connected(_) => connected += 1,
            other => panic!("{other:?}"),
        }
    }
    maker.await.unwrap();
    let expected: Vec<String> = (0..12).map(|index| format!("k{index}")).collect();
    assert_eq!(
        names, expected,
        "each event once, in order, across reconnects"
    );
    assert!(expired >= 1 && connected >= 2, "{expired} {connected}");
    // A fresh token for every attempt: at least one per connection, and one more for any
    // attempt the server turned away (a loaded machine can refuse one with 1013).
    let asked = asked.load(Ordering::SeqCst);
    assert!(
        asked >= connected && asked <= connected + expired + 2,
        "a fresh token per connection: {asked} tokens for {connected} connections"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_workspace_key_signs_every_call_and_never_sends_its_secret() {
    let server = TestServer::start().await;
    let created = server
        .api()
        .post("/api/v1/workspace-keys", json!({"name": "backend"}))
        .await
        .assert_status(201)
        .clone();
    let (id, secret) = (
        created["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    let backend = Client::builder()
        .base_url(&server.base)
        .workspace_key(id, secret)
        .build()
        .unwrap();
    assert!(!format!("{backend:?}").contains(secret));
    // A body, a query, a path: each is covered by its own signature.
    backend
        .create_app(&CreateAppRequest {
            name: "Signed".into(),
            slug: "signed".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let page = backend
        .list_apps(&PageParams {
            limit: Some(5),
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(page.data.len(), 1);
    // The same request again and again within a second: each is signed afresh, never
    // refused as a replay.
    for _ in 0..5 {
        assert_eq!(backend.get_app("signed").await.unwrap().slug, "signed");
    }
    let forged = Client::builder()
        .base_url(&server.base)
        .workspace_key(id, "wksec_live_notthesecret")
        .build()
        .unwrap();
    let refused = forged.get_app("signed").await;
    assert!(
        matches!(&refused, Err(Error::Auth { code, .. }) if code == "invalid_signature"),
        "{refused:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn webhook_endpoints_and_leak_reports_through_the_sdk() {
    let server = TestServer::start().await;
    let sdk = client(&server, &server.live_key);

    // Deliveries to this address fail in the background; only the API is under test here.
    let created = sdk
        .create_webhook_endpoint(&CreateWebhookEndpointRequest {
            url: "https://example.com/hook".into(),
            events: Some(vec!["key.leaked".into()]),
            description: Some("leaks".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = created.endpoint.id.clone();
    assert!(id.starts_with("whe_"), "{id}");
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    assert!(created.endpoint.enabled);
    assert_eq!(created.endpoint.events, ["key.leaked"]);
    let listed = sdk
        .list_webhook_endpoints(&PageParams::default())
        .await
        .unwrap();
    assert_eq!(listed.data.len(), 1);
    assert_eq!(listed.data[0].id, id);
    assert!(!serde_json::to_string(&listed)
        .unwrap()
        .contains(&created.secret));
    let streamed: Vec<_> = sdk.stream_webhook_endpoints().try_collect().await.unwrap();
    assert_eq!(streamed.len(), 1);

    let updated = sdk
        .update_webhook_endpoint(
            &id,
            &UpdateWebhookEndpointRequest {
                events: Some(vec!["*".into()]),
                description: Some("everything".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.events.as_slice(), updated.description.as_str()),
        (["*".to_owned()].as_slice(), "everything")
    );
    assert_eq!(
        sdk.get_webhook_endpoint(&id).await.unwrap().description,
        "everything"
    );

    let rotated = sdk.rotate_webhook_secret(&id).await.unwrap();
    assert!(rotated.secret.starts_with("whsec_"), "{}", rotated.secret);
    assert_ne!(rotated.secret, created.secret);
    assert_eq!(rotated.endpoint.id, id);

    let queued = sdk.test_webhook_endpoint(&id).await.unwrap();
    assert!(queued.delivery_id.starts_with("whd_"), "{queued:?}");
    let deliveries = sdk
        .list_webhook_deliveries(&id, &ListWebhookDeliveriesParams::default())
        .await
        .unwrap();
    let test = deliveries
        .data
        .iter()
        .find(|delivery| delivery.id == queued.delivery_id)
        .unwrap_or_else(|| panic!("{deliveries:?}"));
    assert_eq!(
        (test.endpoint_id.as_str(), test.event_type.as_str()),
        (id.as_str(), "webhook.test")
    );
    let streamed: Vec<_> = sdk
        .stream_webhook_deliveries(&id)
        .try_collect()
        .await
        .unwrap();
    assert!(streamed
        .iter()
        .any(|delivery| delivery.id == queued.delivery_id));

    // A leaked key is revoked (the environment's default action) and stops verifying.
    sdk.create_app(&CreateAppRequest {
        name: "Leaky".into(),
        slug: "leaky".into(),
        key_prefix: Some("leaky".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let key = sdk
        .create_key(
            "leaky",
            &CreateKeyRequest {
                name: "pushed to GitHub".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let reported = sdk
        .report_leak(&ReportLeakRequest {
            key: key.secret.clone(),
            url: Some("https://github.com/acme/site/blob/main/.env".into()),
            source: Some("trufflehog".into()),
        })
        .await
        .unwrap();
    assert_eq!(reported.result, "revoked");
    assert_eq!(reported.key_id.as_deref(), Some(key.key.id.as_str()));
    let verdict = sdk
        .verify_key(&VerifyKeyRequest {
            key: key.secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!verdict.valid, "{verdict:?}");
    assert_eq!(verdict.code, "KEY_REVOKED");

    let patterns = sdk.secret_scanning_patterns().await.unwrap();
    for prefix in ["sk", "leaky"] {
        assert!(
            patterns.data.iter().any(|pattern| pattern.prefix == prefix),
            "{prefix} in {patterns:?}"
        );
    }

    sdk.delete_webhook_endpoint(&id).await.unwrap();
    let gone = sdk.get_webhook_endpoint(&id).await;
    assert!(
        matches!(gone, Err(Error::Http { status: 404, .. })),
        "{gone:?}"
    );
    assert!(sdk
        .list_webhook_endpoints(&PageParams::default())
        .await
        .unwrap()
        .data
        .is_empty());
    server.stop().await;
}
