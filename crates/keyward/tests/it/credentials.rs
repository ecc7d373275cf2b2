//! Browser-safe and backend credentials (issue 6): JWT public keys against a real JWKS
//! server on loopback, client public keys with signed user tokens, HMAC-signed workspace
//! keys, `verify-request`, and end-user self-service. Tokens are signed for real.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyward_core::signature::{body_digest, SignedRequest};
use keyward_server::tokens::jwks::JwksSettings;
use keyward_server::ServerConfig;
use serde_json::{json, Value};

use crate::testkit::{metric, Api, TestServer};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An ES256 key pair: signs tokens, and publishes itself as a JWK.
pub(crate) struct EcKey {
    pub(crate) encoding: EncodingKey,
    pub(crate) jwk: Value,
    pub(crate) public_pem: String,
}

pub(crate) fn ec_key(kid: &str) -> EcKey {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let der = pair.public_key().as_der().unwrap();
    EcKey {
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": B64URL.encode(&point[1..33]), "y": B64URL.encode(&point[33..65])}),
        public_pem: format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(der.as_ref())
        ),
    }
}

pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn claims(extra: Value) -> Value {
    let mut base = json!({"sub": "usr_1", "iss": "https://issuer.example", "aud": "acme-api",
        "iat": now(), "exp": now() + 600});
    for (name, value) in extra.as_object().unwrap() {
        if value.is_null() {
            base.as_object_mut().unwrap().remove(name);
        } else {
            base[name] = value.clone();
        }
    }
    base
}

/// A JWKS endpoint that counts its fetches and can be made to misbehave.
#[derive(Clone, Default)]
struct JwksServer {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicU64>,
    /// 0 normal, 1 slow, 2 huge, 3 garbage, 4 redirect loop.
    mode: Arc<AtomicU8>,
    base: String,
}

impl JwksServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut server = JwksServer {
            base: format!("http://{}", listener.local_addr().unwrap()),
            ..JwksServer::default()
        };
        let state = server.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    use axum::response::IntoResponse;
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    match state.mode.load(Ordering::SeqCst) {
                        1 => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            "{}".into_response()
                        }
                        2 => "x".repeat(10 * 1024 * 1024).into_response(),
                        3 => "<html>not a key set</html>".into_response(),
                        4 => (
                            axum::http::StatusCode::FOUND,
                            [(axum::http::header::LOCATION, "/jwks")],
                        )
                            .into_response(),
                        _ => {
                            axum::Json(json!({"keys": *state.keys.lock().unwrap()})).into_response()
                        }
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server.base.push_str("/jwks");
        server
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn server_allowing_loopback_jwks() -> TestServer {
    TestServer::start_with(ServerConfig {
        cors_origins: vec!["https://app.example.com".to_owned()],
        jwks: JwksSettings {
            allow_private: true,
            timeout: Duration::from_millis(700),
            min_refetch_interval: Duration::from_millis(300),
            ..JwksSettings::default()
        },
        ..ServerConfig::default()
    })
    .await
}

pub(crate) async fn verify_request(api: &Api, headers: Value) -> Value {
    api.post(
        "/api/v1/verify-request",
        json!({"method": "GET", "path": "/orders", "headers": headers}),
    )
    .await
    .assert_status(200)
    .clone()
}

pub(crate) async fn jwt_verdict(api: &Api, public_key: &str, token: &str) -> Value {
    verify_request(
        api,
        json!({"X-API-Key": public_key, "Authorization": format!("Bearer {token}")}),
    )
    .await
}

pub(crate) fn assert_refused(verdict: &Value, reason: &str) {
    assert_eq!(verdict["valid"], false, "{verdict:#}");
    assert_eq!(verdict["reason"], reason, "{verdict:#}");
    assert_eq!(verdict["status"], 401, "{verdict:#}");
}

#[tokio::test]
async fn jwt_public_keys_check_end_user_tokens_against_a_jwks() {
    let server = server_allowing_loopback_jwks().await;
    let api = server.api();
    let jwks = JwksServer::start().await;
    let signer = ec_key("k1");
    jwks.keys.lock().unwrap().push(signer.jwk.clone());
    let created = api
        .post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "jwks_url": jwks.base, "issuer": "https://issuer.example",
                "audience": "acme-api", "algorithms": ["ES256", "EdDSA"]}),
        )
        .await;
    let public_key = created.assert_status(201)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(public_key.starts_with("pk_jwt_") && public_key.len() == 39);

    let good = sign(
        Algorithm::ES256,
        Some("k1"),
        &signer.encoding,
        &claims(json!({
        "permissions": ["read:orders"]})),
    );
    let verdict = jwt_verdict(&api, &public_key, &good).await;
    assert_eq!(verdict["valid"], true, "{verdict:#}");
    assert_eq!(verdict["credential_type"], "jwt");
    assert_eq!(verdict["subject"], "usr_1");
    assert_eq!(verdict["permissions"], json!(["read:orders"]));
    // A repeated token is answered from the token cache.
    let fetched = jwks.fetches();
    assert_eq!(jwt_verdict(&api, &public_key, &good).await["valid"], true);
    assert_eq!(jwks.fetches(), fetched);
    let needs_write = api
        .post(
            "/api/v1/verify-request",
            json!({"method": "GET", "path": "/", "permissions": "write:orders",
            "headers": {"x-api-key": public_key, "authorization": format!("Bearer {good}")}}),
        )
        .await;
    assert_eq!(needs_write.body["code"], "INSUFFICIENT_PERMISSIONS");

    let es = |extra: Value| {
        sign(
            Algorithm::ES256,
            Some("k1"),
            &signer.encoding,
            &claims(extra),
        )
    };
    for (token, reason) in [
        (es(json!({"exp": now() - 120})), "token_expired"),
        (es(json!({"nbf": now() + 300})), "token_not_yet_valid"),
        (es(json!({"iat": now() + 300})), "token_not_yet_valid"),
        (es(json!({"exp": null})), "token_missing_claim"),
        (
            es(json!({"iss": "https://evil.example"})),
            "token_issuer_mismatch",
        ),
        (es(json!({"aud": "other-api"})), "token_audience_mismatch"),
    ] {
        assert_refused(&jwt_verdict(&api, &public_key, &token).await, reason);
    }
    // `alg: none`, an HMAC signed with the public key's own bytes (key confusion), and
    // RS256 against an ES256/EdDSA-only key.
    let body = B64URL.encode(claims(json!({})).to_string());
    let unsigned = format!("{}.{body}.", B64URL.encode(r#"{"alg":"none","typ":"JWT"}"#));
    let confused = sign(
        Algorithm::HS256,
        Some("k1"),
        &EncodingKey::from_secret(signer.public_pem.as_bytes()),
        &claims(json!({})),
    );
    let rs256 = format!(
        "{}.{body}.c2ln",
        B64URL.encode(r#"{"alg":"RS256","kid":"k1"}"#)
    );
    for token in [&unsigned, &confused, &rs256] {
        assert_refused(
            &jwt_verdict(&api, &public_key, token).await,
            "token_algorithm_not_allowed",
        );
    }
    let mut forged = good.clone();
    forged.replace_range(forged.len() - 6.., "AAAAAA");
    assert_refused(
        &jwt_verdict(&api, &public_key, &forged).await,
        "token_invalid_signature",
    );
    let other_signer = ec_key("k1");
    let impostor = sign(
        Algorithm::ES256,
        Some("k1"),
        &other_signer.encoding,
        &claims(json!({})),
    );
    assert_refused(
        &jwt_verdict(&api, &public_key, &impostor).await,
        "token_invalid_signature",
    );
    assert_refused(
        &verify_request(&api, json!({"X-API-Key": public_key})).await,
        "token_missing",
    );
    // Truncated or garbage public keys are unknown, whatever the token.
    for bad in [
        &public_key[..public_key.len() - 1],
        "pk_jwt_",
        "pk_jwt_ZZZZ",
        "pk_jwt_0123456789abcdef0123456789abcdef",
    ] {
        assert_refused(&jwt_verdict(&api, bad, &good).await, "invalid_api_key");
    }

    // The JWKS rotates: a token with the new `kid` is accepted at once, after one re-fetch,
    // however recent the last fetch.
    let rotated = ec_key("k2");
    jwks.keys.lock().unwrap().push(rotated.jwk.clone());
    let before = jwks.fetches();
    let fresh = sign(
        Algorithm::ES256,
        Some("k2"),
        &rotated.encoding,
        &claims(json!({})),
    );
    assert_eq!(jwt_verdict(&api, &public_key, &fresh).await["valid"], true);
    assert_eq!(jwks.fetches(), before + 1);
    // A flood of unknown `kid`s: re-fetches stay throttled (one at most, per interval).
    let before = jwks.fetches();
    let floods = (0..30).map(|n| {
        let token = sign(
            Algorithm::ES256,
            Some(&format!("unknown-{n}")),
            &rotated.encoding,
            &claims(json!({})),
        );
        let (api, public_key) = (api.clone(), public_key.clone());
        tokio::spawn(async move { jwt_verdict(&api, &public_key, &token).await })
    });
    for flood in floods {
        assert_refused(&flood.await.unwrap(), "token_unknown_kid");
    }
    assert!(
        jwks.fetches() <= before + 1,
        "{} re-fetches",
        jwks.fetches() - before
    );

    // Deleting the key refuses even tokens already verified.
    let id = created.body["id"].as_str().unwrap();
    api.delete(&format!("/api/v1/public-keys/{id}"))
        .await
        .assert_status(200);
    assert_refused(
        &jwt_verdict(&api, &public_key, &good).await,
        "invalid_api_key",
    );
    server.stop().await;
}

/// Issue 19, item 5: a key published after Keyward's last fetch is trusted at once, and
/// 10,000 tokens with random `kid`s still cause at most one fetch per interval.
#[tokio::test]
async fn a_new_jwks_key_is_trusted_at_once_while_random_kids_stay_throttled() {
    let jwks = JwksServer::start().await;
    let first = ec_key("k1");
    jwks.keys.lock().unwrap().push(first.jwk.clone());
    let server = TestServer::start_with(ServerConfig {
        jwks: JwksSettings {
            allow_private: true,
            min_refetch_interval: Duration::from_secs(60),
            ..JwksSettings::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let api = server.api();
    let public_key = api
        .create_public_key(json!({"type": "jwt", "jwks_url": jwks.base, "algorithms": ["ES256"]}))
        .await;
    let token = |key: &EcKey, kid: &str| {
        sign(
            Algorithm::ES256,
            Some(kid),
            &key.encoding,
            &claims(json!({})),
        )
    };
    assert_eq!(
        jwt_verdict(&api, &public_key, &token(&first, "k1")).await["valid"],
        true
    );
    assert_eq!(jwks.fetches(), 1);

    // Published a moment after that fetch, well within the interval: trusted at once.
    let published = ec_key("k2");
    jwks.keys.lock().unwrap().push(published.jwk.clone());
    let verdict = jwt_verdict(&api, &public_key, &token(&published, "k2")).await;
    assert_eq!(verdict["valid"], true, "{verdict:#}");
    assert_eq!(jwks.fetches(), 2);

    // 10,000 tokens with random `kid`s, 64 at a time, against a second public key on the
    // same key set (its own URL, so its own cache entry): the first unknown `kid` re-fetches
    // once, the rest of the interval none.
    let flooded = api
        .create_public_key(
            json!({"type": "jwt", "jwks_url": format!("{}?flooded", jwks.base),
                "algorithms": ["ES256"]}),
        )
        .await;
    assert_eq!(
        jwt_verdict(&api, &flooded, &token(&first, "k1")).await["valid"],
        true
    );
    let before = jwks.fetches();
    let random: Arc<Vec<String>> = Arc::new(
        (0..10_000)
            .map(|n| token(&published, &format!("random-{n}-{}", rand::random::<u64>())))
            .collect(),
    );
    let workers = (0..64).map(|worker| {
        let (api, flooded, random) = (api.clone(), flooded.clone(), Arc::clone(&random));
        tokio::spawn(async move {
            for token in random.iter().skip(worker).step_by(64) {
                assert_refused(
                    &jwt_verdict(&api, &flooded, token).await,
                    "token_unknown_kid",
                );
            }
        })
    });
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(
        jwks.fetches() - before,
        1,
        "fetches caused by 10,000 random kids"
    );
    server.stop().await;
}

#[tokio::test]
async fn misbehaving_or_private_jwks_servers_are_refused() {
    let server = server_allowing_loopback_jwks().await;
    let api = server.api();
    let jwks = JwksServer::start().await;
    let signer = ec_key("k1");
    let token = sign(
        Algorithm::ES256,
        Some("k1"),
        &signer.encoding,
        &claims(json!({})),
    );
    for mode in [1u8, 2, 3, 4] {
        jwks.mode.store(mode, Ordering::SeqCst);
        // A key of its own per case, so that no throttle or cache carries over.
        let public_key = api.create_public_key(json!({"type": "jwt", "jwks_url": format!("{}?case={mode}", jwks.base), "algorithms": ["ES256"]})).await;
        let started = std::time::Instant::now();
        let answer = api
            .post(
                "/api/v1/verify-request",
                json!({"method": "GET", "path": "/",
                "headers": {"x-api-key": public_key, "authorization": format!("Bearer {token}")}}),
            )
            .await;
        answer.assert_error(503, "SERVICE_UNAVAILABLE", "jwks_unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "mode {mode} took {:?}",
            started.elapsed()
        );
    }
    server.stop().await;

    // Without the operator's leave, loopback and link-local JWKS are refused: as a literal
    // at creation, and as a name that resolves to loopback at fetch time.
    let strict = TestServer::start().await;
    let api = strict.api();
    for url in [
        "http://127.0.0.1:9/jwks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/jwks",
        "file:///etc/passwd",
    ] {
        api.post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "jwks_url": url, "algorithms": ["RS256"]}),
        )
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_jwks_url");
    }
    let public_key = api.create_public_key(json!({"type": "jwt", "jwks_url": format!("http://localhost:{}/jwks", jwks.base.rsplit(':').next().unwrap().trim_end_matches("/jwks")), "algorithms": ["ES256"]})).await;
    let fetched = jwks.fetches();
    api.post(
        "/api/v1/verify-request",
        json!({"method": "GET", "path": "/",
        "headers": {"x-api-key": public_key, "authorization": format!("Bearer {token}")}}),
    )
    .await
    .assert_error(503, "SERVICE_UNAVAILABLE", "jwks_unavailable");
    assert_eq!(
        jwks.fetches(),
        fetched,
        "nothing reached the private address"
    );
    // HMAC algorithms and `none` can never be allowed.
    for algorithms in [json!(["HS256"]), json!(["none"]), json!([])] {
        api.post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "public_key": signer.public_pem, "algorithms": algorithms}),
        )
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_algorithms");
    }
    strict.stop().await;
}

pub(crate) fn user_token(signing_key: &EncodingKey, kid: &str, extra: Value) -> String {
    let mut claims = json!({"entity_type": "subscriber", "entity_id": "sub_42",
        "iat": now(), "exp": now() + 600, "scope": {"tenant_id": "acme"}});
    for (name, value) in extra.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    sign(Algorithm::ES256, Some(kid), signing_key, &claims)
}

#[tokio::test]
async fn client_public_keys_take_signed_user_tokens_scoped_to_a_tenant() {
    let server = TestServer::start().await;
    let api = server.api();
    let signing = api
        .post("/api/v1/signing-keys", json!({"name": "backend"}))
        .await;
    let body = signing.assert_status(201).clone();
    let pem = body["private_key_pem"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        B64.decode(body["private_key_base64"].as_str().unwrap())
            .unwrap(),
        pem.as_bytes()
    );
    let listed = api.get("/api/v1/signing-keys").await;
    assert!(
        !listed.body.to_string().contains("PRIVATE"),
        "the private key is shown once"
    );
    let kid = body["id"].as_str().unwrap().to_owned();
    let signer = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();

    let public_key = api.create_public_key(json!({"type": "client"})).await;
    assert!(public_key.starts_with("pk_live_"));
    let with = |token: &str, tenant: Option<&str>| {
        let mut headers =
            json!({"X-API-Key": public_key, "Authorization": format!("Bearer {token}")});
        if let Some(tenant) = tenant {
            headers["X-Tenant-Id"] = json!(tenant);
        }
        headers
    };
    // `live` has enhanced security on: the public key alone is not enough.
    assert_refused(
        &verify_request(&api, json!({"X-API-Key": public_key})).await,
        "token_missing",
    );
    let token = user_token(&signer, &kid, json!({}));
    let verdict = verify_request(&api, with(&token, Some("acme"))).await;
    assert_eq!(verdict["valid"], true, "{verdict:#}");
    assert_eq!(verdict["credential_type"], "client_public_key");
    assert_eq!(
        (verdict["subject"].as_str(), verdict["tenant"].as_str()),
        (Some("sub_42"), Some("acme"))
    );
    let other_tenant = verify_request(&api, with(&token, Some("globex"))).await;
    assert_eq!(other_tenant["code"], "TENANT_MISMATCH", "{other_tenant:#}");
    assert_eq!(other_tenant["status"], 403);
    let untenanted = user_token(&signer, &kid, json!({"scope": null}));
    assert_eq!(
        verify_request(&api, with(&untenanted, None)).await["tenant"],
        "default"
    );
    assert_refused(
        &verify_request(
            &api,
            with(
                &user_token(&signer, &kid, json!({"entity_type": "admin"})),
                None,
            ),
        )
        .await,
        "token_invalid_entity_type",
    );
    assert_refused(
        &verify_request(
            &api,
            with(
                &user_token(&signer, &kid, json!({"exp": now() - 100})),
                None,
            ),
        )
        .await,
        "token_expired",
    );
    let stranger = ec_key(&kid);
    assert_refused(
        &verify_request(
            &api,
            with(&user_token(&stranger.encoding, &kid, json!({})), None),
        )
        .await,
        "token_invalid_signature",
    );

    // Deleting the signing key refuses its tokens at once, cached or not.
    api.delete(&format!("/api/v1/signing-keys/{kid}"))
        .await
        .assert_status(200);
    assert_refused(
        &verify_request(&api, with(&token, Some("acme"))).await,
        "token_unknown_kid",
    );

    // With enhanced security off (development only), the public key alone identifies the
    // environment.
    api.patch("/api/v1/environment", json!({"enhanced_security": false}))
        .await
        .assert_status(200);
    let verdict = verify_request(&api, json!({"X-API-Key": public_key})).await;
    assert_eq!(verdict["valid"], true, "{verdict:#}");
    assert!(verdict.get("subject").is_none());

    // Rotation with a grace period keeps the previous value working for a while.
    let id = api.get("/api/v1/public-keys").await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = api
        .post(
            &format!("/api/v1/public-keys/{id}/rotate"),
            json!({"expire_previous_in_seconds": 60}),
        )
        .await;
    let new_key = rotated.assert_status(200)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_key, public_key);
    for key in [&public_key, &new_key] {
        assert_eq!(
            verify_request(&api, json!({"X-API-Key": key})).await["valid"],
            true
        );
    }
    api.post(&format!("/api/v1/public-keys/{id}/rotate"), json!({}))
        .await
        .assert_status(200);
    assert_refused(
        &verify_request(&api, json!({"X-API-Key": new_key})).await,
        "invalid_api_key",
    );
    server.stop().await;
}

/// Signs a request to Keyward with a workspace key.
pub(crate) fn signed(
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    key: &str,
    secret: &str,
    ts: i64,
) -> String {
    let digest = body_digest(body);
    let signature = SignedRequest {
        method,
        path,
        query,
        timestamp: ts,
        body_sha256: &digest,
    }
    .sign(secret.as_bytes());
    format!("KW-HMAC-SHA256 key={key}, ts={ts}, sig={signature}")
}

#[tokio::test]
async fn workspace_keys_sign_backend_requests_once() {
    let server = TestServer::start().await;
    let api = server.api();
    let created = api
        .post("/api/v1/workspace-keys", json!({"name": "billing backend"}))
        .await;
    let body = created.assert_status(201).clone();
    let (key, secret) = (
        body["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    );
    assert!(key.starts_with("wk_") && secret.starts_with("wksec_live_"));
    assert!(!api
        .get("/api/v1/workspace-keys")
        .await
        .body
        .to_string()
        .contains(&secret));
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method,
                path_and_query: &str,
                body: &'static str,
                authorization: String| {
        let request = http
            .request(method, format!("{}{path_and_query}", server.base))
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let ts = now();
    let list = signed("GET", "/api/v1/apps", "limit=5", b"", &key, &secret, ts);
    let (status, _) = call(
        reqwest::Method::GET,
        "/api/v1/apps?limit=5",
        "",
        list.clone(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, replay) = call(reqwest::Method::GET, "/api/v1/apps?limit=5", "", list).await;
    assert_eq!(
        (status, replay["error"]["code"].as_str()),
        (401, Some("signature_replayed"))
    );
    let stale = signed("GET", "/api/v1/apps", "", b"", &key, &secret, ts - 301);
    let (status, answer) = call(reqwest::Method::GET, "/api/v1/apps", "", stale).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("signature_expired"))
    );
    let app = br#"{"name":"Signed","slug":"signed","permissions":[]}"#;
    let over_other_body = signed(
        "POST",
        "/api/v1/apps",
        "",
        br#"{"name":"Other"}"#,
        &key,
        &secret,
        ts,
    );
    let body_text: &'static str = std::str::from_utf8(app).unwrap();
    let (status, answer) = call(
        reqwest::Method::POST,
        "/api/v1/apps",
        body_text,
        over_other_body,
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    let over_other_path = signed("POST", "/api/v1/keys", "", app, &key, &secret, ts);
    let (status, _) = call(
        reqwest::Method::POST,
        "/api/v1/apps",
        body_text,
        over_other_path,
    )
    .await;
    assert_eq!(status, 401);
    let good = signed("POST", "/api/v1/apps", "", app, &key, &secret, ts);
    let (status, answer) = call(reqwest::Method::POST, "/api/v1/apps", body_text, good).await;
    assert_eq!(status, 201, "{answer:#}");
    let audit = api.get("/api/v1/audit-log?action=app.create").await;
    assert_eq!(
        audit.body["data"][0]["actor"],
        key.as_str(),
        "{:#}",
        audit.body
    );

    // verify-request checks a gateway's signed request the same way.
    let gateway = |authorization: String| {
        json!({"method": "POST", "path": "/orders", "query": "x=1",
        "body_sha256": body_digest(b"{}"), "headers": {"Authorization": authorization}})
    };
    let signature = signed("POST", "/orders", "x=1", b"{}", &key, &secret, now());
    let valid_count = r#"keyward_verifications_total{outcome="VALID"}"#;
    let valid_before = metric(&server.base, valid_count).await.unwrap_or(0.0);
    let verdict = api
        .post("/api/v1/verify-request", gateway(signature.clone()))
        .await;
    assert_eq!(verdict.body["valid"], true, "{:#}", verdict.body);
    assert_eq!(verdict.body["credential_type"], "workspace_key");
    // Counted once, like every verdict.
    assert_eq!(
        metric(&server.base, valid_count).await,
        Some(valid_before + 1.0)
    );
    let replayed = api.post("/api/v1/verify-request", gateway(signature)).await;
    assert_eq!(replayed.body["reason"], "signature_replayed");

    // Rotation with a grace period: both secrets sign until the old one ends.
    let rotated = api
        .post(
            &format!("/api/v1/workspace-keys/{key}/rotate"),
            json!({"expire_previous_in_seconds": 60}),
        )
        .await;
    let new_secret = rotated.assert_status(200)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    for (n, secret) in [&secret, &new_secret].into_iter().enumerate() {
        let path = format!("/api/v1/apps?limit={}", n + 1);
        let auth = signed(
            "GET",
            "/api/v1/apps",
            &format!("limit={}", n + 1),
            b"",
            &key,
            secret,
            now(),
        );
        assert_eq!(call(reqwest::Method::GET, &path, "", auth).await.0, 200);
    }
    api.delete(&format!("/api/v1/workspace-keys/{key}"))
        .await
        .assert_status(200);
    let auth = signed("GET", "/api/v1/apps", "", b"", &key, &new_secret, now());
    let (status, answer) = call(reqwest::Method::GET, "/api/v1/apps", "", auth).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    server.stop().await;
}

#[tokio::test]
async fn end_users_manage_only_their_own_keys() {
    let server = TestServer::start().await;
    let api = server.api();
    api.post(
        "/api/v1/apps",
        json!({"name": "Orders", "slug": "orders", "permissions": ["read:orders"]}),
    )
    .await
    .assert_status(201);
    api.post(
        "/api/v1/rate-limit-schemes",
        json!({"slug": "per-user", "windows": [{"limit": 3, "period_seconds": 60}]}),
    )
    .await
    .assert_status(201);
    let signer = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(signer.as_ref()).unwrap();
    let jwk =
        json!({"kty": "OKP", "crv": "Ed25519", "x": B64URL.encode(pair.public_key().as_ref())});
    let encoding = EncodingKey::from_ed_der(signer.as_ref());
    let public_key = api
        .create_public_key(json!({"type": "jwt", "public_key": jwk.to_string(),
            "algorithms": ["EdDSA"], "self_service_app": "orders", "max_keys_per_user": 2,
            "rate_limit_scheme": "per-user"}))
        .await;
    let token_of = |user: &str| {
        sign(
            Algorithm::EdDSA,
            None,
            &encoding,
            &json!({"sub": user, "exp": now() + 600}),
        )
    };
    let (alice, bob) = (token_of("alice"), token_of("bob"));
    let http = reqwest::Client::new();
    let me = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{}/api/v1/me/keys{path}", server.base))
            .header("x-api-key", &public_key)
            .bearer_auth(token)
            .header("content-type", "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, first) = me(
        reqwest::Method::POST,
        "",
        &alice,
        Some(json!({"name": "laptop"})),
    )
    .await;
    assert_eq!(status, 201, "{first:#}");
    assert_eq!(first["owner_user_id"], "alice");
    assert_eq!(first["permissions"], json!(["read:orders"]));
    let secret = first["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        me(
            reqwest::Method::POST,
            "",
            &alice,
            Some(json!({"name": "phone"}))
        )
        .await
        .0,
        201
    );
    let (status, full) = me(
        reqwest::Method::POST,
        "",
        &alice,
        Some(json!({"name": "third"})),
    )
    .await;
    assert_eq!(
        (status, full["error"]["code"].as_str()),
        (409, Some("max_keys_reached"))
    );
    let (_, listed) = me(reqwest::Method::GET, "", &alice, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert!(
        !listed.to_string().contains(&secret),
        "lists never show secrets"
    );
    let (_, bobs) = me(reqwest::Method::GET, "", &bob, None).await;
    assert_eq!(bobs["data"], json!([]));
    let id = first["id"].as_str().unwrap();
    for action in ["rotate", "revoke"] {
        let (status, answer) = me(
            reqwest::Method::POST,
            &format!("/{id}/{action}"),
            &bob,
            Some(json!({})),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (404, Some("key_not_found")),
            "{action}"
        );
    }
    let (status, rotated) = me(
        reqwest::Method::POST,
        &format!("/{id}/rotate"),
        &alice,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_eq!(
        me(
            reqwest::Method::POST,
            &format!("/{id}/revoke"),
            &alice,
            Some(json!({}))
        )
        .await
        .0,
        200
    );
    let verdict = api
        .post("/api/v1/keys/verify", json!({"key": new_secret}))
        .await;
    assert_eq!(verdict.body["code"], "KEY_REVOKED");

    // A bad token is refused precisely, and never echoed.
    let expired = sign(
        Algorithm::EdDSA,
        None,
        &encoding,
        &json!({"sub": "alice", "exp": now() - 120}),
    );
    let (status, answer) = me(reqwest::Method::GET, "", &expired, None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
    assert_eq!(answer["error"]["type"], "AUTHENTICATION_ERROR");
    assert!(!answer.to_string().contains(&expired[..40]));
    // Browsers may call it from an allowed origin.
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/me/keys", server.base),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "x-api-key,authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );

    // Each end user has a rate limit of their own.
    for _ in 0..3 {
        assert_eq!(jwt_verdict(&api, &public_key, &bob).await["valid"], true);
    }
    assert_eq!(
        jwt_verdict(&api, &public_key, &bob).await["code"],
        "RATE_LIMITED"
    );
    assert_eq!(
        jwt_verdict(&api, &public_key, &token_of("carol")).await["valid"],
        true
    );
    server.stop().await;
}
