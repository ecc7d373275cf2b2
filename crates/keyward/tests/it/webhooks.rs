//! Webhooks (SPEC §4.8) against the real server and a real receiver that checks every
//! delivery with the published Standard Webhooks library (`webhook_receiver.py`, PyPI
//! `standardwebhooks`), never with Keyward's own code.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyward_core::webhook::RetryPolicy;
use keyward_server::webhooks::WebhookSettings;
use keyward_server::ServerConfig;
use serde_json::{json, Value};

use crate::testkit::{metric, Api, TestServer};

/// Whether the receiver can run: Python with `standardwebhooks`. CI requires it
/// (`KEYWARD_TEST_WEBHOOKS=required`); elsewhere its absence skips, saying so.
fn receiver_available() -> bool {
    let available = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !available {
        assert_ne!(
            std::env::var("KEYWARD_TEST_WEBHOOKS").as_deref(),
            Ok("required"),
            "python3 with the standardwebhooks package is required \
             (pip install -r scripts/test-requirements.txt)"
        );
        eprintln!("skipped: install python3's standardwebhooks to run the webhook tests");
    }
    available
}

/// A receiver process: `webhook_receiver.py`.
pub struct Receiver {
    child: Child,
    pub base: String,
    http: reqwest::Client,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// `None` (after saying so) when the receiver cannot run here.
    pub fn start() -> Option<Self> {
        if !receiver_available() {
            return None;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the receiver's port");
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening on <port>");
        Some(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        })
    }

    pub fn url(&self) -> String {
        format!("{}/hook", self.base)
    }

    async fn post(&self, path: &str, body: String) {
        let status = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .expect("receiver")
            .status();
        assert_eq!(status, 204);
    }

    pub async fn set_mode(&self, mode: &str) {
        self.post("/_mode", mode.to_owned()).await;
    }

    pub async fn set_secrets(&self, secrets: &[&str]) {
        self.post("/_secrets", secrets.join(" ")).await;
    }

    pub async fn state(&self) -> Value {
        self.http
            .get(format!("{}/_received", self.base))
            .send()
            .await
            .expect("receiver")
            .json()
            .await
            .expect("JSON")
    }

    /// The deliveries that verified, once `enough` says there are enough.
    pub async fn wait_for(
        &self,
        within: Duration,
        enough: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let state = self.state().await;
            let received = state["received"].as_array().cloned().unwrap_or_default();
            if enough(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver did not get enough in {within:?}: {state:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Events of `kind` among deliveries.
fn of_type<'a>(received: &'a [Value], kind: &str) -> Vec<&'a Value> {
    received.iter().filter(|d| d["type"] == kind).collect()
}

/// A server that may deliver to loopback receivers, fails fast and retries soon.
pub fn webhook_config(timeout: Duration, disable_after: Duration) -> ServerConfig {
    ServerConfig {
        last_used_flush_interval: Duration::from_millis(50),
        webhooks: WebhookSettings {
            allow_private: true,
            timeout,
            retry: RetryPolicy::with_first_delay_ms(50),
            disable_after,
            poll_interval: Duration::from_millis(100),
            ..WebhookSettings::default()
        },
        ..ServerConfig::default()
    }
}

/// Creates an endpoint; returns its id and secret.
pub async fn endpoint(api: &Api, url: &str, events: Value) -> (String, String) {
    let created = api
        .post(
            "/api/v1/webhook-endpoints",
            json!({"url": url, "events": events, "description": "test"}),
        )
        .await;
    let body = created.assert_status(201);
    (
        body["id"].as_str().expect("id").to_owned(),
        body["secret"].as_str().expect("secret").to_owned(),
    )
}

/// An endpoint's deliveries once none is pending (the receiver may record a delivery a
/// moment before Keyward records its answer).
async fn settled_deliveries(api: &Api, endpoint_id: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = api
            .get(&format!(
                "/api/v1/webhook-endpoints/{endpoint_id}/deliveries?limit=100"
            ))
            .await;
        let deliveries = log.assert_status(200)["data"].as_array().unwrap().clone();
        if deliveries.iter().all(|d| d["status"] != "pending") {
            return deliveries;
        }
        assert!(Instant::now() < deadline, "{deliveries:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first attempt of any of an endpoint's deliveries (a failing endpoint holds most of
/// them back while it probes with one).
async fn first_attempt(api: &Api, endpoint_id: &str) -> Value {
    let log = api
        .get(&format!(
            "/api/v1/webhook-endpoints/{endpoint_id}/deliveries?limit=100"
        ))
        .await;
    log.assert_status(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|delivery| delivery["history"].get(0).cloned())
        .expect("an attempt")
}

async fn issue_key(api: &Api, app: &str) -> (String, String) {
    let key = api.create_key(app, json!({"name": "k"})).await;
    (
        key["id"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn deliveries_are_signed_as_standard_webhooks_says_and_follow_a_key_s_life() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let server = TestServer::start_with(webhook_config(
        Duration::from_secs(5),
        Duration::from_secs(3600),
    ))
    .await;
    let api = server.api();
    let (endpoint_id, secret) = endpoint(
        &api,
        &receiver.url(),
        json!(["key.created", "key.rotated", "key.revoked"]),
    )
    .await;
    assert!(endpoint_id.starts_with("whe_"));
    assert!(secret.starts_with("whsec_"));
    receiver.set_secrets(&[&secret]).await;

    api.create_app("hooks", &[]).await;
    let (key_id, first_secret) = issue_key(&api, "hooks").await;
    // Not subscribed: never delivered.
    api.patch(
        &format!("/api/v1/keys/{key_id}"),
        json!({"name": "renamed"}),
    )
    .await
    .assert_status(200);
    let rotated = api
        .post(&format!("/api/v1/keys/{key_id}/rotate"), json!({}))
        .await;
    let second_secret = rotated.assert_status(200)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post(&format!("/api/v1/keys/{key_id}/revoke"), json!({}))
        .await
        .assert_status(200);

    let received = receiver
        .wait_for(Duration::from_secs(10), |r| r.len() >= 3)
        .await;
    let types: HashSet<&str> = received.iter().filter_map(|d| d["type"].as_str()).collect();
    assert_eq!(
        types,
        HashSet::from(["key.created", "key.rotated", "key.revoked"])
    );
    let ids: HashSet<&str> = received.iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids.len(), 3, "one webhook-id per delivery");
    for delivery in &received {
        assert!(delivery["id"].as_str().unwrap().starts_with("whd_"));
        assert_eq!(delivery["data"]["key"]["id"], key_id.as_str());
        assert_eq!(delivery["data"]["type"], delivery["type"]);
        assert!(delivery["data"]["id"].as_str().unwrap().starts_with("evt_"));
        let raw = delivery["raw"].as_str().unwrap();
        for secret in [&first_secret, &second_secret, &secret, &server.live_key] {
            assert!(
                !raw.contains(secret.as_str()),
                "a secret in a payload: {raw}"
            );
        }
    }
    assert_eq!(receiver.state().await["rejected"], 0);

    // The log: each delivery succeeded at its first attempt, with the endpoint's status.
    let deliveries = settled_deliveries(&api, &endpoint_id).await;
    assert_eq!(deliveries.len(), 3);
    for delivery in &deliveries {
        assert_eq!(delivery["status"], "succeeded", "{delivery:#}");
        assert_eq!(delivery["attempts"], 1);
        assert_eq!(delivery["history"][0]["status"], 200);
        assert!(ids.contains(delivery["id"].as_str().unwrap()));
    }
    // The endpoint as listed: never its secret.
    let listed = api.get("/api/v1/webhook-endpoints").await;
    assert!(!listed.assert_status(200).to_string().contains(&secret));
    assert_eq!(listed.body["data"][0]["id"], endpoint_id.as_str());

    // A test event reaches this endpoint whatever its filter.
    let queued = api
        .post(
            &format!("/api/v1/webhook-endpoints/{endpoint_id}/test"),
            json!({}),
        )
        .await;
    let test_id = queued.assert_status(202)["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let received = receiver
        .wait_for(Duration::from_secs(10), |r| {
            !of_type(r, "webhook.test").is_empty()
        })
        .await;
    let test = of_type(&received, "webhook.test")[0];
    assert_eq!(test["id"], test_id.as_str());
    assert_eq!(test["data"]["endpoint_id"], endpoint_id.as_str());

    // A manual retry sends the same delivery again, with the same id.
    api.post(
        &format!("/api/v1/webhook-endpoints/{endpoint_id}/deliveries/{test_id}/retry"),
        json!({}),
    )
    .await
    .assert_status(202);
    receiver
        .wait_for(Duration::from_secs(10), |r| {
            r.iter().filter(|d| d["id"] == test_id.as_str()).count() == 2
        })
        .await;
    assert!(metric(&server.base, "keyward_webhook_deliveries_total").await >= Some(5.0));
    server.stop().await;
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_every_event_under_one_id_each() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let server = TestServer::start_with(webhook_config(
        Duration::from_secs(5),
        Duration::from_secs(3600),
    ))
    .await;
    let api = server.api();
    let (endpoint_id, secret) = endpoint(&api, &receiver.url(), json!(["key.created"])).await;
    receiver.set_secrets(&[&secret]).await;
    receiver.set_mode("unavailable").await;
    api.create_app("down", &[]).await;
    let mut keys = HashSet::new();
    for _ in 0..10 {
        keys.insert(issue_key(&api, "down").await.0);
    }
    // The endpoint is probed, and backed off, while the receiver is down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.state().await["requests"].as_u64().unwrap() < 3 {
        assert!(
            Instant::now() < deadline,
            "no retries while the receiver was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.set_mode("ok").await;
    let received = receiver
        .wait_for(Duration::from_secs(30), |r| {
            let delivered: HashSet<&str> = r
                .iter()
                .filter_map(|d| d["data"]["key"]["id"].as_str())
                .collect();
            delivered.len() == 10
        })
        .await;
    // At least once, and every copy of an event under the same webhook-id.
    let mut ids_by_event: HashMap<&str, HashSet<&str>> = HashMap::new();
    for delivery in &received {
        ids_by_event
            .entry(delivery["data"]["id"].as_str().unwrap())
            .or_default()
            .insert(delivery["id"].as_str().unwrap());
        assert!(keys.contains(delivery["data"]["key"]["id"].as_str().unwrap()));
    }
    assert_eq!(ids_by_event.len(), 10);
    assert!(ids_by_event.values().all(|ids| ids.len() == 1));
    // The log shows the failed attempts, their status and a bounded excerpt (once the
    // last answers have been recorded).
    let deliveries = settled_deliveries(&api, &endpoint_id).await;
    assert_eq!(deliveries.len(), 10);
    assert!(deliveries.iter().all(|d| d["status"] == "succeeded"));
    let retried = deliveries
        .iter()
        .find(|d| d["attempts"].as_u64().unwrap() >= 2)
        .expect("a retried delivery");
    assert_eq!(retried["history"][0]["status"], 503);
    assert!(
        retried["history"][0]["response_excerpt"]
            .as_str()
            .unwrap()
            .len()
            <= 1024
    );
    server.stop().await;
}

#[tokio::test]
async fn hanging_redirecting_and_failing_endpoints_never_hold_the_others_up() {
    let (Some(hanging), Some(redirecting), Some(failing), Some(healthy)) = (
        Receiver::start(),
        Receiver::start(),
        Receiver::start(),
        Receiver::start(),
    ) else {
        return;
    };
    let server = TestServer::start_with(webhook_config(
        Duration::from_secs(1),
        Duration::from_secs(3),
    ))
    .await;
    let api = server.api();
    hanging.set_mode("hang").await;
    redirecting.set_mode("redirect").await;
    failing.set_mode("fail").await;
    let (hanging_id, _) = endpoint(&api, &hanging.url(), json!(["*"])).await;
    let (redirecting_id, _) = endpoint(&api, &redirecting.url(), json!(["key.created"])).await;
    let (failing_id, _) = endpoint(&api, &failing.url(), json!(["key.created"])).await;
    let (_, healthy_secret) = endpoint(&api, &healthy.url(), json!(["*"])).await;
    healthy.set_secrets(&[&healthy_secret]).await;

    api.create_app("mixed", &[]).await;
    let started = Instant::now();
    for _ in 0..12 {
        issue_key(&api, "mixed").await;
    }
    // More deliveries wait for the hanging endpoint than a node attempts for one endpoint at
    // once, and still the healthy one gets everything at once.
    healthy
        .wait_for(Duration::from_secs(5), |r| {
            of_type(r, "key.created").len() >= 12
        })
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the healthy endpoint waited for the others: {:?}",
        started.elapsed()
    );

    // The failing endpoint backs off, then is turned off; the healthy one hears of it.
    let received = healthy
        .wait_for(Duration::from_secs(30), |r| {
            of_type(r, "webhook.disabled")
                .iter()
                .any(|d| d["data"]["details"]["endpoint_id"] == failing_id.as_str())
        })
        .await;
    let alert = of_type(&received, "webhook.disabled")
        .into_iter()
        .find(|d| d["data"]["details"]["endpoint_id"] == failing_id.as_str())
        .unwrap();
    assert_eq!(alert["data"]["details"]["url"], failing.url());
    assert!(alert["data"].get("key").is_none(), "{alert:#}");
    let failing_endpoint = api
        .get(&format!("/api/v1/webhook-endpoints/{failing_id}"))
        .await;
    assert_eq!(failing_endpoint.assert_status(200)["enabled"], false);
    assert!(failing_endpoint.body["disabled_reason"].is_string());
    let log = api
        .get(&format!(
            "/api/v1/webhook-endpoints/{failing_id}/deliveries?limit=100"
        ))
        .await;
    let deliveries = log.assert_status(200)["data"].as_array().unwrap().clone();
    let most_tried = deliveries
        .iter()
        .max_by_key(|d| d["attempts"].as_u64().unwrap())
        .unwrap();
    let history = most_tried["history"].as_array().unwrap();
    assert!(history.len() >= 3, "{most_tried:#}");
    assert!(history.iter().all(|a| a["status"] == 500));
    let times: Vec<time::OffsetDateTime> = history
        .iter()
        .map(|a| {
            time::OffsetDateTime::parse(
                a["attempted_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    let gaps: Vec<time::Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Backoff: the waits grow (jitter and the endpoint's pause blur neighbours, not the trend).
    assert!(
        gaps.last() > gaps.first(),
        "the waits between attempts grow: {gaps:?}"
    );
    assert!(
        most_tried["history"][0]["response_excerpt"]
            .as_str()
            .unwrap()
            .len()
            <= 1024
    );

    // Redirects are not followed: the target never hears from Keyward.
    let first = first_attempt(&api, &redirecting_id).await;
    assert_eq!(first["status"], 302);
    assert!(
        first["error"].as_str().unwrap().contains("redirect"),
        "{first}"
    );
    assert_eq!(redirecting.state().await["redirected"], 0);

    // The hanging endpoint's attempts time out, and it is turned off too.
    let attempt = first_attempt(&api, &hanging_id).await;
    assert!(
        attempt["error"].as_str().unwrap().contains("timed out"),
        "{attempt}"
    );
    assert!(attempt["latency_ms"].as_i64().unwrap() < 3000, "{attempt}");
    assert!(metric(&server.base, "keyward_webhook_endpoints_disabled_total").await >= Some(1.0));
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_beside_the_new_one() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let server = TestServer::start_with(webhook_config(
        Duration::from_secs(5),
        Duration::from_secs(3600),
    ))
    .await;
    let api = server.api();
    let (endpoint_id, old) = endpoint(&api, &receiver.url(), json!(["key.created"])).await;
    let rotated = api
        .post(
            &format!("/api/v1/webhook-endpoints/{endpoint_id}/rotate-secret"),
            json!({}),
        )
        .await;
    let new = rotated.assert_status(200)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(new.starts_with("whsec_"));
    assert_ne!(new, old);
    api.create_app("rotation", &[]).await;

    // A receiver that still knows only the old secret accepts the delivery…
    receiver.set_secrets(&[&old]).await;
    issue_key(&api, "rotation").await;
    let received = receiver
        .wait_for(Duration::from_secs(10), |r| r.len() == 1)
        .await;
    assert_eq!(received[0]["signatures"], 2);
    // …and so does one that knows only the new one.
    receiver.set_secrets(&[&new]).await;
    issue_key(&api, "rotation").await;
    receiver
        .wait_for(Duration::from_secs(10), |r| r.len() == 2)
        .await;
    // A receiver with neither refuses it.
    receiver
        .set_secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
        .await;
    issue_key(&api, "rotation").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.state().await["rejected"] == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn endpoints_refuse_private_addresses_bad_filters_and_keys_that_cannot_read_events() {
    // The defaults: private, loopback and link-local addresses refused.
    let server = TestServer::start().await;
    let api = server.api();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
        "ftp://example.com/hook",
        "https://user:password@example.com/hook",
        "not a url",
    ] {
        let refused = api
            .post("/api/v1/webhook-endpoints", json!({"url": url}))
            .await;
        refused.assert_error(422, "VALIDATION_ERROR", "invalid_url");
    }
    for events in [
        json!([]),
        json!(["*", "key.created"]),
        json!(["key.exploded"]),
    ] {
        api.post(
            "/api/v1/webhook-endpoints",
            json!({"url": "https://example.com/hook", "events": events}),
        )
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_events");
    }
    let (id, _) = endpoint(&api, "https://example.com/hook", json!(["*"])).await;
    api.patch(
        &format!("/api/v1/webhook-endpoints/{id}"),
        json!({"url": "http://127.0.0.1/hook"}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_url");

    // An endpoint receives what the event stream shows: a key that cannot read the stream
    // cannot make one, nor point one elsewhere.
    let key = |scopes: Value| {
        let api = api.clone();
        async move {
            let created = api
                .post("/api/v1/root-keys", json!({"name": "k", "scopes": scopes}))
                .await;
            Api::new(
                &api.base,
                created.assert_status(201)["secret"].as_str().unwrap(),
            )
        }
    };
    let writer = key(json!(["webhooks:write"])).await;
    writer
        .post(
            "/api/v1/webhook-endpoints",
            json!({"url": "https://example.com/a"}),
        )
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    writer
        .patch(
            &format!("/api/v1/webhook-endpoints/{id}"),
            json!({"url": "https://attacker.example/hook"}),
        )
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    writer
        .get("/api/v1/webhook-endpoints")
        .await
        .assert_status(200);
    let reader = key(json!(["webhooks:read"])).await;
    reader
        .post(
            "/api/v1/webhook-endpoints",
            json!({"url": "https://example.com/a"}),
        )
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    key(json!(["webhooks:write", "events:read"]))
        .await
        .post(
            "/api/v1/webhook-endpoints",
            json!({"url": "https://example.com/b"}),
        )
        .await
        .assert_status(201);
    key(json!(["keys:write"]))
        .await
        .get("/api/v1/webhook-endpoints")
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");

    // Another environment's endpoint does not exist for this one.
    let test_api = server.api_with(&server.test_key);
    test_api
        .get(&format!("/api/v1/webhook-endpoints/{id}"))
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "webhook_endpoint_not_found");
    api.delete(&format!("/api/v1/webhook-endpoints/{id}"))
        .await
        .assert_status(204);
    api.get(&format!("/api/v1/webhook-endpoints/{id}"))
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "webhook_endpoint_not_found");

    // Anonymous demo sandboxes cannot make Keyward send requests.
    let session = reqwest::Client::new()
        .post(format!("{}/api/v1/demo/session", server.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    server
        .api_with(session["secret"].as_str().unwrap())
        .post(
            "/api/v1/webhook-endpoints",
            json!({"url": "https://example.com/c"}),
        )
        .await
        .assert_error(403, "PERMISSION_ERROR", "fetches_not_allowed");
    server.stop().await;
}
