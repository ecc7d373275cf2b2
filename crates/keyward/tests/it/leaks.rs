//! Leaked keys (SPEC §4.9) against the real server: GitHub's signed reports (its key list
//! served by a local stand-in), `report-leak`, the environment's `leaked_key_action`, and
//! the patterns scanners match.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::testkit::{send, Api, Reply, TestServer};
use crate::webhooks::{endpoint, webhook_config, Receiver};

/// A P-256 key that signs reports as GitHub does, and its published form.
struct Signer {
    pair: EcdsaKeyPair,
    identifier: String,
}

impl Signer {
    fn new(identifier: &str) -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap();
        Self {
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
                .unwrap(),
            identifier: identifier.to_owned(),
        }
    }

    /// The SubjectPublicKeyInfo PEM, as GitHub's key list has it.
    fn public_pem(&self) -> String {
        // The fixed DER header of a P-256 SubjectPublicKeyInfo, then the point.
        let mut der = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        der.extend_from_slice(self.pair.public_key().as_ref());
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----\n")
    }

    fn sign(&self, body: &[u8]) -> String {
        let signature = self.pair.sign(&SystemRandom::new(), body).unwrap();
        base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
    }
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A stand-in for GitHub's key endpoint; counts its fetches.
struct KeyServer {
    url: String,
    fetches: Arc<AtomicU64>,
}

async fn key_server(signers: &[&Signer]) -> KeyServer {
    let keys: Vec<Value> = signers
        .iter()
        .map(|signer| {
            json!({"key_identifier": signer.identifier, "key": signer.public_pem(), "is_current": true})
        })
        .collect();
    let body = json!({ "public_keys": keys }).to_string();
    let fetches = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&fetches);
    let app = axum::Router::new().route(
        "/keys",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    KeyServer { url, fetches }
}

async fn start(keys_url: &str) -> TestServer {
    let mut config = webhook_config(Duration::from_secs(5), Duration::from_secs(3600));
    keys_url.clone_into(&mut config.github_scanning_keys_url);
    TestServer::start_with(config).await
}

/// POSTs a report as GitHub does, signed by `signer` (or with the given signature).
async fn github(server: &TestServer, body: &str, identifier: &str, signature: &str) -> Reply {
    send(
        reqwest::Client::new()
            .post(format!("{}/api/v1/secret-scanning/github", server.base))
            .header("content-type", "application/json")
            .header("github-public-key-identifier", identifier)
            .header("github-public-key-signature", signature)
            .body(body.to_owned()),
    )
    .await
}

fn report(tokens: &[&str]) -> String {
    let tokens: Vec<Value> = tokens
        .iter()
        .map(|token| {
            json!({"token": token, "type": "keyward_api_key",
                   "url": "https://github.com/octo/repo/blob/main/.env", "source": "content"})
        })
        .collect();
    Value::Array(tokens).to_string()
}

fn sha256_hex(text: &str) -> String {
    hex_bytes_to_text(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref(),
    )
}

fn hex_bytes_to_text(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn issue(api: &Api, app: &str) -> (String, String) {
    let key = api.create_key(app, json!({"name": "leaky"})).await;
    (
        key["id"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    )
}

/// A well-formed key with a valid checksum that Keyward never issued.
fn unknown_key(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    keyward_core::secret::IssuedSecret::generate(prefix, keyward_core::Environment::Live, &mut rng)
        .unwrap()
        .expose()
        .to_owned()
}

async fn audit_of(api: &Api, target: &str) -> Vec<Value> {
    api.get(&format!(
        "/api/v1/audit-log?action=key.report_leak&target={target}"
    ))
    .await
    .assert_status(200)["data"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_signed_github_report_revokes_live_keys_once_and_nothing_else() {
    let signer = Signer::new("github-key-1");
    let keys = key_server(&[&signer]).await;
    let server = start(&keys.url).await;
    let api = server.api();
    api.create_app("leaky", &[]).await;
    let (live_id, live) = issue(&api, "leaky").await;
    let (revoked_id, revoked) = issue(&api, "leaky").await;
    api.post(&format!("/api/v1/keys/{revoked_id}/revoke"), json!({}))
        .await
        .assert_status(200);
    let unknown = unknown_key("leaky");
    let mut wrong_checksum = live.clone();
    let last = wrong_checksum.pop().unwrap();
    wrong_checksum.push(if last == 'a' { 'b' } else { 'a' });
    let tokens = [
        live.as_str(),
        unknown.as_str(),
        revoked.as_str(),
        wrong_checksum.as_str(),
    ];
    let body = report(&tokens);

    // Unsigned, signed by another key, or naming an unknown key: 401, and nothing changes.
    let stranger = Signer::new("github-key-1");
    for (identifier, signature) in [
        ("github-key-1", stranger.sign(body.as_bytes())),
        ("github-key-1", signer.sign(b"another body")),
        ("github-key-1", "bm90IGEgc2lnbmF0dXJl".to_owned()),
        ("no-such-key", signer.sign(body.as_bytes())),
        ("github-key-1", String::new()),
    ] {
        github(&server, &body, identifier, &signature)
            .await
            .assert_error(401, "AUTHENTICATION_ERROR", "invalid_signature");
    }
    let unsigned = send(
        reqwest::Client::new()
            .post(format!("{}/api/v1/secret-scanning/github", server.base))
            .header("content-type", "application/json")
            .body(body.clone()),
    )
    .await;
    unsigned.assert_error(401, "AUTHENTICATION_ERROR", "invalid_signature");
    assert_eq!(api.verify_code(&live).await, "VALID");
    // Unknown identifiers re-fetch the list at most once a minute.
    github(
        &server,
        &body,
        "no-such-key-either",
        &signer.sign(body.as_bytes()),
    )
    .await
    .assert_status(401);
    assert!(
        keys.fetches.load(Ordering::SeqCst) <= 2,
        "a flood of unknown identifiers"
    );

    // Signed: the live key is revoked; the others are false positives and unchanged.
    let answer = github(
        &server,
        &body,
        "github-key-1",
        &signer.sign(body.as_bytes()),
    )
    .await;
    let labels = answer.assert_status(200).as_array().unwrap().clone();
    assert_eq!(labels.len(), 4);
    for (label, token) in labels.iter().zip(tokens) {
        assert_eq!(label["token_hash"], sha256_hex(token));
        assert_eq!(label["token_type"], "keyward_api_key");
    }
    let names: Vec<&str> = labels
        .iter()
        .map(|l| l["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "true_positive",
            "false_positive",
            "false_positive",
            "false_positive"
        ]
    );
    assert!(!answer.body.to_string().contains(&live));
    assert_eq!(api.verify_code(&live).await, "KEY_REVOKED");
    let entries = audit_of(&api, &live_id).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["actor"], "github_secret_scanning");
    assert_eq!(entries[0]["details"]["action"], "revoked");
    assert_eq!(
        entries[0]["details"]["url"],
        "https://github.com/octo/repo/blob/main/.env"
    );
    assert!(!entries[0].to_string().contains(&live));
    // A key revoked before the report: recorded, unchanged.
    let entries = audit_of(&api, &revoked_id).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["details"]["action"], "already_revoked");

    // A replay of the same report changes nothing and says so, in the answer and the log.
    let replay = github(
        &server,
        &body,
        "github-key-1",
        &signer.sign(body.as_bytes()),
    )
    .await;
    assert!(replay
        .assert_status(200)
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["label"] == "false_positive"));
    let entries = audit_of(&api, &live_id).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["details"]["action"], "already_revoked");
    server.stop().await;
}

#[tokio::test]
async fn five_hundred_tokens_in_one_report_are_all_revoked_within_seconds() {
    let signer = Signer::new("bulk");
    let keys = key_server(&[&signer]).await;
    let server = start(&keys.url).await;
    let api = server.api();
    api.create_app("bulk", &[]).await;
    let mut secrets = Vec::new();
    for _ in 0..500 {
        secrets.push(issue(&api, "bulk").await.1);
    }
    let tokens: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let body = report(&tokens);
    let started = Instant::now();
    let answer = github(&server, &body, "bulk", &signer.sign(body.as_bytes())).await;
    let took = started.elapsed();
    let labels = answer.assert_status(200).as_array().unwrap().clone();
    assert_eq!(labels.len(), 500);
    assert!(labels.iter().all(|l| l["label"] == "true_positive"));
    eprintln!("500 tokens answered in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    for secret in secrets.iter().step_by(25) {
        assert_eq!(api.verify_code(secret).await, "KEY_REVOKED");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_environment_decides_what_a_report_does_and_every_report_raises_key_leaked() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let server = start("http://127.0.0.1:9/unused").await;
    let api = server.api();
    let (_, webhook_secret) = endpoint(&api, &receiver.url(), json!(["key.leaked"])).await;
    receiver.set_secrets(&[&webhook_secret]).await;
    api.create_app("modes", &[]).await;
    assert_eq!(
        api.get("/api/v1/environment").await.assert_status(200)["leaked_key_action"],
        "revoke"
    );
    api.patch(
        "/api/v1/environment",
        json!({"leaked_key_action": "sometimes"}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_leaked_key_action");

    // notify: the key keeps working; the report is heard.
    api.patch(
        "/api/v1/environment",
        json!({"leaked_key_action": "notify"}),
    )
    .await
    .assert_status(200);
    let (notified_id, notified) = issue(&api, "modes").await;
    let answer = api
        .post(
            "/api/v1/keys/report-leak",
            json!({"key": notified, "url": "https://gist.example/1", "source": "trufflehog"}),
        )
        .await;
    assert_eq!(
        answer.assert_status(200).clone(),
        json!({"result": "notified", "key_id": notified_id})
    );
    assert_eq!(api.verify_code(&notified).await, "VALID");

    // disable: the key is refused until turned back on.
    api.patch(
        "/api/v1/environment",
        json!({"leaked_key_action": "disable"}),
    )
    .await
    .assert_status(200);
    let (disabled_id, disabled) = issue(&api, "modes").await;
    let answer = api
        .post("/api/v1/keys/report-leak", json!({"key": disabled}))
        .await;
    assert_eq!(answer.assert_status(200)["result"], "disabled");
    assert_eq!(api.verify_code(&disabled).await, "KEY_DISABLED");
    let key = api.get(&format!("/api/v1/keys/{disabled_id}")).await;
    assert_eq!(key.assert_status(200)["enabled"], false);

    // Unknown, another environment's, and wrong-checksum secrets change nothing.
    let test_api = server.api_with(&server.test_key);
    for secret in [
        unknown_key("modes"),
        notified.clone(),
        "modes_live_short".to_owned(),
    ] {
        let answer = test_api
            .post("/api/v1/keys/report-leak", json!({"key": secret}))
            .await;
        assert_eq!(
            answer.assert_status(200).clone(),
            json!({"result": "unknown"})
        );
    }
    assert_eq!(api.verify_code(&notified).await, "VALID");
    // A key that cannot write keys cannot report.
    let reader = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "r", "scopes": ["keys:read"]}),
        )
        .await;
    Api::new(
        &server.base,
        reader.assert_status(201)["secret"].as_str().unwrap(),
    )
    .post("/api/v1/keys/report-leak", json!({"key": notified}))
    .await
    .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");

    // Each report raised key.leaked on the webhook, with where and who, never the secret.
    let received = receiver
        .wait_for(Duration::from_secs(10), |r| r.len() >= 2)
        .await;
    let leaked: Vec<&Value> = received
        .iter()
        .filter(|d| d["type"] == "key.leaked")
        .collect();
    assert_eq!(leaked.len(), 2);
    let first = leaked
        .iter()
        .find(|d| d["data"]["key"]["id"] == notified_id.as_str())
        .expect("the notify report");
    assert_eq!(first["data"]["details"]["url"], "https://gist.example/1");
    assert_eq!(first["data"]["details"]["source"], "trufflehog");
    assert_eq!(first["data"]["details"]["action"], "notified");
    for delivery in &leaked {
        let raw = delivery["raw"].as_str().unwrap();
        assert!(
            !raw.contains(&notified) && !raw.contains(&disabled),
            "{raw}"
        );
    }

    // A root key reported as leaked is revoked (root keys have no "disabled").
    api.patch(
        "/api/v1/environment",
        json!({"leaked_key_action": "revoke"}),
    )
    .await
    .assert_status(200);
    let root = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "leaked", "scopes": ["keys:read"]}),
        )
        .await;
    let root_secret = root.assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = api
        .post("/api/v1/keys/report-leak", json!({"key": root_secret}))
        .await;
    assert_eq!(answer.assert_status(200)["result"], "revoked");
    Api::new(&server.base, &root_secret)
        .get("/api/v1/apps")
        .await
        .assert_error(403, "PERMISSION_ERROR", "key_revoked");
    server.stop().await;
}

#[tokio::test]
async fn patterns_match_every_key_prefix_in_use() {
    let server = TestServer::start().await;
    let api = server.api();
    api.post(
        "/api/v1/apps",
        json!({"name": "Acme", "slug": "acme", "key_prefix": "acme"}),
    )
    .await
    .assert_status(201);
    let (_, secret) = issue(&api, "acme").await;
    let patterns = api.get("/api/v1/secret-scanning/patterns").await;
    let data = patterns.assert_status(200)["data"]
        .as_array()
        .unwrap()
        .clone();
    let prefixes: Vec<&str> = data.iter().map(|p| p["prefix"].as_str().unwrap()).collect();
    assert!(
        prefixes.contains(&"sk") && prefixes.contains(&"acme"),
        "{prefixes:?}"
    );
    for pattern in &data {
        let regex = regex::Regex::new(pattern["regex"].as_str().unwrap()).unwrap();
        let sample = if pattern["prefix"] == "sk" {
            &server.live_key
        } else {
            &secret
        };
        let text = format!("API_KEY={sample}\n");
        assert_eq!(regex.find(&text).map(|m| m.as_str()), Some(sample.as_str()));
    }
    server.stop().await;
}
