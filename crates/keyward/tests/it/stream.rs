//! `GET /ws` (SPEC §4.5) against the real server: authentication and its refusals, key events
//! in commit order, end-user scope, token expiry, resuming, slow sockets, alerts, limits,
//! heartbeats, and delivery across nodes sharing PostgreSQL.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use keyward_server::events::EventSettings;
use keyward_server::ServerConfig;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::credentials::{ec_key, now, sign};
use crate::testkit::{metric, Api, ServerProcess, TestServer};

const PATIENCE: Duration = Duration::from_secs(10);

/// A client socket, read message by message.
struct Socket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every text frame received, to check that no secret ever appears.
    transcript: String,
}

impl Socket {
    async fn open(base: &str, query: &str) -> Self {
        let url = format!("{}/ws?{query}", base.replacen("http://", "ws://", 1));
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        Self {
            stream,
            transcript: String::new(),
        }
    }

    /// Opens a session and checks the server's welcome.
    async fn connect(base: &str, query: &str) -> (Self, Value) {
        let mut socket = Self::open(base, query).await;
        let welcome = socket.next().await;
        assert_eq!(welcome["type"], "connected", "{welcome}");
        (socket, welcome)
    }

    /// The next JSON message; panics on close or silence.
    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("a message in time")
                .expect("the socket is open")
                .expect("a readable frame");
            match message {
                Message::Text(text) => {
                    self.transcript.push_str(&text);
                    return serde_json::from_str(&text).expect("JSON");
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next event, skipping nothing else: an unexpected message fails the test.
    async fn event(&mut self) -> Value {
        let message = self.next().await;
        assert_eq!(message["type"], "event", "{message}");
        message
    }

    /// Reads until the close frame; returns its code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.stream.next())
                .await
                .expect("a close in time");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Text(text))) => self.transcript.push_str(&text),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    async fn send(&mut self, message: Value) {
        self.stream
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("send");
    }

    async fn subscribe(&mut self, channel: &str) {
        self.send(json!({"type": "subscribe", "channel": channel}))
            .await;
        let reply = self.next().await;
        assert_eq!(
            reply,
            json!({"type": "subscribed", "channel": channel}),
            "{reply}"
        );
    }

    /// Nothing arrives within `wait`.
    /// Nothing but heartbeats arrives within `wait`.
    async fn silent_for(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(message) = tokio::time::timeout_at(deadline, self.stream.next()).await {
            match message {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn root_query(key: &str) -> String {
    format!("api-key={key}")
}

async fn server_with(events: EventSettings) -> TestServer {
    TestServer::start_with(ServerConfig {
        events,
        ..ServerConfig::default()
    })
    .await
}

/// A JWT public key (inline ES256) and a way to sign end-user tokens for it.
async fn jwt_public_key(api: &Api) -> (String, impl Fn(&str, i64) -> String) {
    let signer = ec_key("k1");
    let created = api
        .post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "public_key": signer.public_pem, "algorithms": ["ES256"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let key = created["key"].as_str().unwrap().to_owned();
    let token = move |subject: &str, expires_in: i64| {
        sign(
            Algorithm::ES256,
            None,
            &signer.encoding,
            &json!({"sub": subject, "iat": now(), "exp": now() + expires_in}),
        )
    };
    (key, token)
}

#[tokio::test]
async fn root_keys_follow_key_changes_in_commit_order() {
    let server = TestServer::start().await;
    let api = server.api();
    let (mut socket, welcome) = Socket::connect(&server.base, &root_query(&server.live_key)).await;
    assert_eq!(
        welcome["session"],
        json!({"credential_type": "api_key", "environment": "live"})
    );
    socket.subscribe("events").await;
    api.create_app("streamed", &["read"]).await;
    let key = api
        .create_key(
            "streamed",
            json!({"name": "first", "owner_user_id": "usr_1"}),
        )
        .await;
    let id = key["id"].as_str().unwrap();
    let mut secrets = vec![key["secret"].as_str().unwrap().to_owned()];
    api.patch(&format!("/api/v1/keys/{id}"), json!({"name": "renamed"}))
        .await
        .assert_status(200);
    let rotated = api
        .post(&format!("/api/v1/keys/{id}/rotate"), json!({}))
        .await
        .assert_status(200)
        .clone();
    secrets.push(rotated["secret"].as_str().unwrap().to_owned());
    api.post(&format!("/api/v1/keys/{id}/revoke"), json!({}))
        .await
        .assert_status(200);
    api.delete(&format!("/api/v1/keys/{id}")).await;

    let mut previous = 0;
    for (expected, name) in [
        ("key.created", "first"),
        ("key.updated", "renamed"),
        ("key.rotated", "renamed"),
        ("key.revoked", "renamed"),
        ("key.deleted", "renamed"),
    ] {
        let message = socket.event().await;
        assert_eq!(message["channel"], "events");
        let event = &message["event"];
        assert_eq!(event["type"], expected, "{event}");
        assert_eq!(event["key"]["id"], id);
        assert_eq!(event["key"]["name"], name);
        assert_eq!(event["key"]["owner_user_id"], "usr_1");
        assert_eq!(event["environment"], "live");
        assert!(event["created_at"].is_string());
        let number: u64 = event["id"].as_str().unwrap()["evt_".len()..]
            .parse()
            .unwrap();
        assert!(number > previous, "ids grow in commit order");
        previous = number;
    }
    socket
        .send(json!({"type": "unsubscribe", "channel": "events"}))
        .await;
    assert_eq!(socket.next().await["type"], "unsubscribed");
    let later = api.create_key("streamed", json!({"name": "unheard"})).await;
    secrets.push(later["secret"].as_str().unwrap().to_owned());
    socket.silent_for(Duration::from_millis(300)).await;
    for secret in &secrets {
        assert!(!socket.transcript.contains(secret.as_str()));
    }
    server.stop().await;
}

#[tokio::test]
async fn a_leak_report_is_heard_on_the_socket_without_the_secret() {
    let server = TestServer::start().await;
    let api = server.api();
    let (mut socket, _) = Socket::connect(&server.base, &root_query(&server.live_key)).await;
    socket.subscribe("events").await;
    api.create_app("leaky", &[]).await;
    let key = api.create_key("leaky", json!({"name": "exposed"})).await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    assert_eq!(socket.event().await["event"]["type"], "key.created");
    api.post(
        "/api/v1/keys/report-leak",
        json!({"key": secret, "url": "https://paste.example/x", "source": "gitleaks"}),
    )
    .await
    .assert_status(200);
    let leaked = socket.event().await;
    assert_eq!(leaked["channel"], "events");
    let event = &leaked["event"];
    assert_eq!(event["type"], "key.leaked", "{event}");
    assert_eq!(event["key"]["id"], key["id"]);
    assert_eq!(
        event["details"],
        json!({"url": "https://paste.example/x", "source": "gitleaks", "action": "revoked"})
    );
    assert_eq!(socket.event().await["event"]["type"], "key.revoked");
    assert!(!socket.transcript.contains(&secret));
    server.stop().await;
}

#[tokio::test]
async fn refused_credentials_get_auth_failed_then_4001() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("plain", &[]).await;
    let app_key = api.create_key("plain", json!({"name": "app key"})).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let verify_only = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "gateway", "scopes": ["verify"]}),
        )
        .await
        .assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "gone", "scopes": ["events:read"]}),
        )
        .await
        .assert_status(201)
        .clone();
    api.post(
        &format!(
            "/api/v1/root-keys/{}/revoke",
            revoked["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await
    .assert_status(200);
    let (public_key, token) = jwt_public_key(&api).await;
    let mut wrong_checksum = server.live_key.clone();
    wrong_checksum.pop();
    wrong_checksum.push(if server.live_key.ends_with('A') {
        'B'
    } else {
        'A'
    });
    let cases = [
        (String::new(), 401, "invalid_api_key"),
        (root_query("garbage"), 401, "invalid_api_key"),
        (root_query(&wrong_checksum), 401, "invalid_api_key"),
        (root_query(&app_key), 401, "invalid_api_key"),
        (root_query(&verify_only), 403, "insufficient_scope"),
        (
            root_query(revoked["secret"].as_str().unwrap()),
            403,
            "key_revoked",
        ),
        (root_query(&public_key), 401, "token_missing"),
        (
            format!("api-key={public_key}&token={}", token("usr_1", -120)),
            401,
            "token_expired",
        ),
        // Within the minute of skew HTTP allows, but a stream would end at once.
        (
            format!("api-key={public_key}&token={}", token("usr_1", -10)),
            401,
            "token_expired",
        ),
        (
            format!("api-key={public_key}&token=not.a.jwt"),
            401,
            "token_malformed",
        ),
        (
            format!("api-key={}&since=evt_x", server.live_key),
            422,
            "invalid_since",
        ),
    ];
    for (query, status, code) in cases {
        let mut socket = Socket::open(&server.base, &query).await;
        let message = socket.next().await;
        assert_eq!(message["type"], "auth_failed", "{query}: {message}");
        let error = &message["error"];
        assert_eq!(error["code"], code, "{query}: {message}");
        let expected_type = match status {
            401 => "AUTHENTICATION_ERROR",
            403 => "PERMISSION_ERROR",
            _ => "VALIDATION_ERROR",
        };
        assert_eq!(error["type"], expected_type, "{query}");
        assert!(error["request_id"].as_str().unwrap().starts_with("req_"));
        assert_eq!(socket.closed().await.0, 4001, "{query}");
        for secret in [&app_key, &verify_only, &public_key, &server.live_key] {
            assert!(!socket.transcript.contains(secret.as_str()), "{query}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn end_users_hear_only_of_their_own_keys() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("owned", &[]).await;
    let (public_key, token) = jwt_public_key(&api).await;
    let (mut alice, welcome) = Socket::connect(
        &server.base,
        &format!("api-key={public_key}&token={}", token("alice", 600)),
    )
    .await;
    assert_eq!(welcome["session"]["credential_type"], "jwt");
    assert_eq!(welcome["session"]["subject"], "alice");
    assert!(welcome["session"]["expires_at"].is_string());
    let (mut bob, _) = Socket::connect(
        &server.base,
        &format!("api-key={public_key}&token={}", token("bob", 600)),
    )
    .await;
    alice.subscribe("events").await;
    bob.subscribe("events").await;
    for owner in ["bob", "alice", "carol", "bob"] {
        api.create_key("owned", json!({"name": owner, "owner_user_id": owner}))
            .await;
    }
    api.create_key("owned", json!({"name": "nobody's"})).await;
    assert_eq!(
        alice.event().await["event"]["key"]["owner_user_id"],
        "alice"
    );
    for _ in 0..2 {
        assert_eq!(bob.event().await["event"]["key"]["owner_user_id"], "bob");
    }
    alice.silent_for(Duration::from_millis(300)).await;
    bob.silent_for(Duration::from_millis(100)).await;
    server.stop().await;
}

#[tokio::test]
async fn an_expiring_token_ends_the_session_with_4002() {
    let server = TestServer::start().await;
    let (public_key, token) = jwt_public_key(&server.api()).await;
    let (mut socket, _) = Socket::connect(
        &server.base,
        &format!("api-key={public_key}&token={}", token("alice", 2)),
    )
    .await;
    socket.subscribe("events").await;
    assert_eq!(socket.next().await, json!({"type": "token_expired"}));
    assert_eq!(socket.closed().await.0, 4002);
    server.stop().await;
}

#[tokio::test]
async fn resuming_from_the_last_event_loses_and_repeats_nothing() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("resumed", &[]).await;
    let (mut socket, _) = Socket::connect(&server.base, &root_query(&server.live_key)).await;
    socket.subscribe("events").await;
    api.create_key("resumed", json!({"name": "k0"})).await;
    let last_seen = socket.event().await["event"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(socket);
    for index in 1..=3 {
        api.create_key("resumed", json!({"name": format!("k{index}")}))
            .await;
    }
    let (mut socket, _) = Socket::connect(
        &server.base,
        &format!("{}&since={last_seen}", root_query(&server.live_key)),
    )
    .await;
    socket.subscribe("events").await;
    api.create_key("resumed", json!({"name": "k4"})).await;
    for index in 1..=4 {
        assert_eq!(
            socket.event().await["event"]["key"]["name"],
            format!("k{index}")
        );
    }
    socket.silent_for(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_slow_socket_is_told_what_it_missed() {
    let server = server_with(EventSettings {
        socket_queue: 4,
        ..EventSettings::default()
    })
    .await;
    let api = server.api();
    api.create_app("bulk", &[]).await;
    let (mut socket, _) = Socket::connect(&server.base, &root_query(&server.live_key)).await;
    socket.subscribe("events").await;
    // Each creation is heard before the next is made, so the queue never overflows here and
    // the node has relayed every creation before the burst below: a busy machine's relay lag
    // cannot mix creations into the burst.
    for index in 0..30 {
        api.create_key("bulk", json!({"name": format!("k{index}")}))
            .await;
        assert_eq!(socket.event().await["event"]["type"], "key.created");
    }
    // One transaction revokes all 30: they reach the node's queue in one burst.
    api.delete("/api/v1/apps/bulk").await;
    let mut received = 0_u64;
    let mut missed = 0_u64;
    while received + missed < 30 {
        let message = socket.next().await;
        match message["type"].as_str().unwrap() {
            "event" => {
                assert_eq!(message["event"]["type"], "key.revoked");
                received += 1;
            }
            "lagged" => missed += message["missed"].as_u64().unwrap(),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(missed > 0, "a queue of 4 cannot hold a burst of 30");
    assert_eq!(received + missed, 30);
    assert_eq!(
        metric(&server.base, "keyward_ws_events_missed_total").await,
        Some(missed as f64)
    );
    server.stop().await;
}

#[tokio::test]
async fn alerts_for_limits_credits_and_expiry_fire_once_each() {
    let server = server_with(EventSettings {
        sweep_interval: Duration::from_millis(200),
        ..EventSettings::default()
    })
    .await;
    let api = server.api();
    let (mut alerts, _) = Socket::connect(&server.base, &root_query(&server.live_key)).await;
    alerts.subscribe("alerts").await;
    let (mut events, _) = Socket::connect(&server.base, &root_query(&server.live_key)).await;
    events.subscribe("events").await;
    api.post(
        "/api/v1/rate-limit-schemes",
        json!({"slug": "one_a_minute", "windows": [{"limit": 1, "period_seconds": 60}]}),
    )
    .await
    .assert_status(201);
    api.create_app("metered", &[]).await;
    let limited = api
        .create_key(
            "metered",
            json!({"name": "limited", "rate_limit_scheme": "one_a_minute"}),
        )
        .await;
    let paid = api
        .create_key(
            "metered",
            json!({"name": "paid", "credits": {"remaining": 3}, "low_credits_threshold": 2}),
        )
        .await;
    assert_eq!(paid["low_credits_threshold"], 2);
    // A key without a threshold of its own takes its organisation's.
    api.put(
        "/api/v1/organizations/org_alerted",
        json!({"low_credits_threshold": 5}),
    )
    .await
    .assert_status(200);
    let org_paid = api
        .create_key(
            "metered",
            json!({"name": "org-paid", "organization_id": "org_alerted", "credits": {"remaining": 5}}),
        )
        .await;
    assert_eq!(
        api.verify_code(org_paid["secret"].as_str().unwrap()).await,
        "VALID"
    );
    let expires_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let expiring = api
        .create_key(
            "metered",
            json!({"name": "short-lived", "expires_at":
                expires_at.format(&time::format_description::well_known::Rfc3339).unwrap()}),
        )
        .await;
    for _ in 0..3 {
        api.verify_code(limited["secret"].as_str().unwrap()).await;
    }
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(api.verify_code(paid["secret"].as_str().unwrap()).await);
    }
    assert_eq!(codes, ["VALID", "VALID", "VALID", "USAGE_EXCEEDED"]);

    let mut seen = std::collections::BTreeMap::<String, Value>::new();
    let mut org_low = None;
    while seen.len() < 4 || org_low.is_none() {
        let message = alerts.event().await;
        assert_eq!(message["channel"], "alerts");
        let kind = message["event"]["type"].as_str().unwrap().to_owned();
        if message["event"]["key"]["id"] == org_paid["id"] {
            assert_eq!(kind, "credits.low");
            assert!(
                org_low.replace(message["event"].clone()).is_none(),
                "raised twice"
            );
            continue;
        }
        assert!(
            seen.insert(kind.clone(), message["event"].clone())
                .is_none(),
            "{kind} raised twice"
        );
    }
    assert_eq!(seen["rate_limit.exceeded"]["key"]["id"], limited["id"]);
    assert_eq!(seen["rate_limit.exceeded"]["details"]["limit"], 1);
    // What the verification cache does not hold is read from storage for the alert.
    for (kind, key) in [("rate_limit.exceeded", &limited), ("credits.low", &paid)] {
        assert_eq!(seen[kind]["key"]["name"], key["name"], "{kind}");
        assert_eq!(seen[kind]["key"]["start"], key["start"], "{kind}");
        assert_eq!(seen[kind]["key"]["created_at"], key["created_at"], "{kind}");
    }
    assert_eq!(seen["credits.low"]["key"]["id"], paid["id"]);
    assert_eq!(
        seen["credits.low"]["details"],
        json!({"remaining": 1, "threshold": 2})
    );
    assert_eq!(
        seen["credits.exhausted"]["details"],
        json!({"remaining": 0})
    );
    assert_eq!(seen["key.expiring"]["key"]["id"], expiring["id"]);
    assert_eq!(
        org_low.unwrap()["details"],
        json!({"remaining": 4, "threshold": 5})
    );
    // The events channel: four creations, then the expiry, raised once though every
    // sweep sees the key.
    for _ in 0..4 {
        assert_eq!(events.event().await["event"]["type"], "key.created");
    }
    let expired = events.event().await;
    assert_eq!(expired["event"]["type"], "key.expired");
    assert_eq!(expired["event"]["key"]["id"], expiring["id"]);
    events.silent_for(Duration::from_millis(600)).await;
    alerts.silent_for(Duration::from_millis(100)).await;
    server.stop().await;
}

#[tokio::test]
async fn connection_limits_close_with_a_reason() {
    let server = server_with(EventSettings {
        max_sockets_per_credential: 2,
        ..EventSettings::default()
    })
    .await;
    let query = root_query(&server.live_key);
    let (first, _) = Socket::connect(&server.base, &query).await;
    let (_second, _) = Socket::connect(&server.base, &query).await;
    let mut third = Socket::open(&server.base, &query).await;
    let (code, reason) = third.closed().await;
    assert_eq!(code, 1013);
    assert!(reason.contains("connection limit"), "{reason}");
    // Another credential is not affected, and a closed socket gives its place back.
    let (_other, _) = Socket::connect(&server.base, &root_query(&server.test_key)).await;
    drop(first);
    let mut admitted = false;
    for _ in 0..50 {
        let mut again = Socket::open(&server.base, &query).await;
        if again.next().await["type"] == "connected" {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a place came free when a socket closed");
    server.stop().await;
}

#[tokio::test]
async fn silent_peers_are_dropped() {
    let server = server_with(EventSettings {
        heartbeat_interval: Duration::from_millis(100),
        ..EventSettings::default()
    })
    .await;
    let sockets = || metric(&server.base, "keyward_ws_sockets");
    // A client that keeps reading answers pings and stays.
    let (mut live, _) = Socket::connect(&server.base, &root_query(&server.live_key)).await;
    live.subscribe("events").await;
    // A client that never reads never answers them.
    let (_silent, _) = Socket::connect(&server.base, &root_query(&server.live_key)).await;
    assert_eq!(sockets().await, Some(2.0));
    live.silent_for(Duration::from_millis(800)).await;
    assert_eq!(sockets().await, Some(1.0));
    server.stop().await;
}

#[tokio::test]
async fn events_reach_sockets_on_other_nodes() {
    let Ok(admin_url) = std::env::var(keyward_store::testing::DATABASE_URL_VARIABLE) else {
        eprintln!("skipped: set KEYWARD_TEST_DATABASE_URL to run the cross-node event test");
        return;
    };
    let database = keyward_store::testing::TestDatabase::create(&admin_url)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [("DATABASE_URL", database.url.as_str())];
    let a = ServerProcess::start_with_env(dir.path(), "a", &env);
    let (live, _) = a.first_keys.clone().unwrap();
    let b = ServerProcess::start_with_env(dir.path(), "b", &env);
    let (mut socket, _) = Socket::connect(&b.base, &root_query(&live)).await;
    socket.subscribe("events").await;
    let api = Api::new(&a.base, &live);
    api.create_app("shared", &[]).await;
    let key = api.create_key("shared", json!({"name": "made on a"})).await;
    let message = socket.event().await;
    assert_eq!(message["event"]["type"], "key.created");
    assert_eq!(message["event"]["key"]["id"], key["id"]);
}

#[tokio::test]
async fn hostile_client_messages_get_errors_not_crashes() {
    let server = TestServer::start().await;
    let (mut socket, _) = Socket::connect(&server.base, &root_query(&server.live_key)).await;
    for (message, code) in [
        (Message::Text("{not json".into()), "invalid_message"),
        (
            Message::Text(json!({"type": "subscribe"}).to_string().into()),
            "invalid_message",
        ),
        (
            Message::Text(
                json!({"type": "subscribe", "channel": "secrets", "extra": 1})
                    .to_string()
                    .into(),
            ),
            "invalid_message",
        ),
        (
            Message::Text(
                json!({"type": "subscribe", "channel": "secrets"})
                    .to_string()
                    .into(),
            ),
            "unknown_channel",
        ),
        (
            Message::Binary(vec![0, 159, 146, 150].into()),
            "unsupported_message",
        ),
    ] {
        socket.stream.send(message).await.unwrap();
        let reply = socket.next().await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["error"]["code"], code, "{reply}");
    }
    // Still serving after all that.
    socket.subscribe("events").await;
    // A message far beyond the protocol's size ends the connection, not the server.
    socket
        .stream
        .send(Message::Text("x".repeat(64 * 1024).into()))
        .await
        .unwrap();
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match socket.stream.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the oversized message closed the socket");
    let healthy = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_credential_ends_its_open_stream() {
    let server = server_with(EventSettings {
        credential_recheck: Duration::from_millis(100),
        ..EventSettings::default()
    })
    .await;
    let api = server.api();
    let watcher = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "watcher", "scopes": ["events:read"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let (mut socket, _) = Socket::connect(
        &server.base,
        &root_query(watcher["secret"].as_str().unwrap()),
    )
    .await;
    socket.subscribe("events").await;
    api.post(
        &format!(
            "/api/v1/root-keys/{}/revoke",
            watcher["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await
    .assert_status(200);
    let message = socket.next().await;
    assert_eq!(message["type"], "auth_failed", "{message}");
    assert_eq!(message["error"]["code"], "key_revoked");
    assert_eq!(socket.closed().await.0, 4001);
    server.stop().await;
}

#[tokio::test]
async fn resubscribing_replays_nothing_and_a_future_since_starts_live() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("again", &[]).await;
    api.create_key("again", json!({"name": "before"})).await;
    let (mut socket, _) = Socket::connect(
        &server.base,
        &format!("{}&since=evt_0", root_query(&server.live_key)),
    )
    .await;
    socket.subscribe("events").await;
    assert_eq!(socket.event().await["event"]["key"]["name"], "before");
    socket
        .send(json!({"type": "unsubscribe", "channel": "events"}))
        .await;
    assert_eq!(socket.next().await["type"], "unsubscribed");
    socket.subscribe("events").await;
    socket.subscribe("events").await;
    api.create_key("again", json!({"name": "after"})).await;
    assert_eq!(socket.event().await["event"]["key"]["name"], "after");
    socket.silent_for(Duration::from_millis(200)).await;

    let (mut ahead, _) = Socket::connect(
        &server.base,
        &format!(
            "{}&since=evt_9223372036854775807",
            root_query(&server.live_key)
        ),
    )
    .await;
    ahead.subscribe("events").await;
    api.create_key("again", json!({"name": "live"})).await;
    assert_eq!(ahead.event().await["event"]["key"]["name"], "live");
    server.stop().await;
}
