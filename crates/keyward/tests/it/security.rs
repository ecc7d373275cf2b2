//! Attacks on Keyward's own authority (issue 17): scoped credentials that try to mint,
//! rotate or remove more power than they hold, a purged sandbox's credentials, secrets
//! pasted into the wrong field, and private keys offered as public ones. Each test is the
//! attack as an outsider would run it against the real server.

use jsonwebtoken::Algorithm;
use reqwest::Method;
use serde_json::{json, Value};

use crate::credentials::{ec_key, now, sign, signed};
use crate::testkit::{send, Api, Reply, TestServer};

/// A root key of the live environment holding exactly `scopes`.
async fn scoped(server: &TestServer, scopes: &[&str]) -> Api {
    let created = server
        .api()
        .post(
            "/api/v1/root-keys",
            json!({"name": format!("only {scopes:?}"), "scopes": scopes}),
        )
        .await;
    server.api_with(created.assert_status(201)["secret"].as_str().unwrap())
}

fn text(value: &Value, field: &str) -> String {
    value[field].as_str().expect(field).to_owned()
}

/// A signed call to Keyward's API with a workspace key.
async fn signed_call(
    base: &str,
    method: Method,
    path: &str,
    body: &Value,
    (key, secret): (&str, &str),
) -> Reply {
    let bytes = if method == Method::GET {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let authorization = signed(method.as_str(), path, "", &bytes, key, secret, now());
    send(
        reqwest::Client::new()
            .request(method, format!("{base}{path}"))
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .body(bytes),
    )
    .await
}

#[tokio::test]
async fn workspace_key_writers_cannot_take_over_stronger_workspace_keys() {
    let server = TestServer::start().await;
    let owner = server.api();
    let strong = owner
        .post("/api/v1/workspace-keys", json!({"name": "deploys"}))
        .await
        .assert_status(201)
        .clone();
    assert_eq!(strong["scopes"], json!(["*"]));
    let strong_id = text(&strong, "id");
    let writer = scoped(&server, &["workspace_keys:write"]).await;

    // Rotating the `*` key would hand its new secret to the writer; deleting it would take
    // it down. Both are refused, and the key keeps working with its own secret.
    writer
        .post(
            &format!("/api/v1/workspace-keys/{strong_id}/rotate"),
            json!({}),
        )
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    writer
        .delete(&format!("/api/v1/workspace-keys/{strong_id}"))
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    // Nor can it make one with scopes it lacks, by default (`*`) or by name.
    for body in [
        json!({"name": "copy"}),
        json!({"name": "copy", "scopes": ["root_keys:write"]}),
    ] {
        writer
            .post("/api/v1/workspace-keys", body)
            .await
            .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    }
    let still = signed_call(
        &server.base,
        Method::POST,
        "/api/v1/root-keys",
        &json!({"name": "made by the owner's key", "scopes": ["verify"]}),
        (&strong_id, &text(&strong, "secret")),
    )
    .await;
    still.assert_status(201);

    // What it holds, it may manage.
    let own = writer
        .post(
            "/api/v1/workspace-keys",
            json!({"name": "reader", "scopes": ["workspace_keys:read"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let own_id = text(&own, "id");
    writer
        .post(
            &format!("/api/v1/workspace-keys/{own_id}/rotate"),
            json!({}),
        )
        .await
        .assert_status(200);
    writer
        .delete(&format!("/api/v1/workspace-keys/{own_id}"))
        .await
        .assert_status(200);

    // A workspace key is held to the same rule as the root key that made it.
    let limited = owner
        .post(
            "/api/v1/workspace-keys",
            json!({"name": "limited", "scopes": ["workspace_keys:write"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let as_limited = (text(&limited, "id"), text(&limited, "secret"));
    signed_call(
        &server.base,
        Method::POST,
        &format!("/api/v1/workspace-keys/{strong_id}/rotate"),
        &json!({}),
        (&as_limited.0, &as_limited.1),
    )
    .await
    .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    server.stop().await;
}

#[tokio::test]
async fn public_and_signing_key_writers_cannot_impersonate_end_users() {
    let server = TestServer::start().await;
    let owner = server.api();
    owner.create_app("acme", &["read", "admin"]).await;
    let victim = owner
        .create_key(
            "acme",
            json!({"name": "victim", "owner_user_id": "usr_victim", "permissions": ["admin"]}),
        )
        .await;
    let victim_secret = text(&victim, "secret");

    // With only `public_keys:write`: a JWT key whose private half the attacker holds, made
    // for self-service on `acme`, would let it act as any end user.
    let attacker = scoped(&server, &["public_keys:write"]).await;
    let forged = ec_key("attacker");
    for body in [
        json!({"type": "jwt", "public_key": forged.public_pem, "algorithms": ["ES256"],
               "self_service_app": "acme"}),
        json!({"type": "jwt", "public_key": forged.public_pem, "algorithms": ["ES256"]}),
        json!({"type": "client", "self_service_app": "acme"}),
    ] {
        attacker
            .post("/api/v1/public-keys", body)
            .await
            .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    }
    // A client key that delegates nothing is within its scope.
    attacker
        .post("/api/v1/public-keys", json!({"type": "client"}))
        .await
        .assert_status(201);

    // The owner's own self-service keys cannot be rotated or removed by it either.
    let owners_jwt_key = owner
        .post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "public_key": ec_key("idp").public_pem,
                   "algorithms": ["ES256"], "self_service_app": "acme"}),
        )
        .await
        .assert_status(201)
        .clone();
    let id = text(&owners_jwt_key, "id");
    attacker
        .post(&format!("/api/v1/public-keys/{id}/rotate"), json!({}))
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    attacker
        .delete(&format!("/api/v1/public-keys/{id}"))
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");

    // With only `signing_keys:write`: a signing key would sign user tokens that the owner's
    // self-service client key accepts, for any subject.
    owner
        .post(
            "/api/v1/public-keys",
            json!({"type": "client", "self_service_app": "acme"}),
        )
        .await
        .assert_status(201);
    let signer = scoped(&server, &["signing_keys:write"]).await;
    signer
        .post("/api/v1/signing-keys", json!({"name": "mine"}))
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    let owners_signing_key = owner
        .post("/api/v1/signing-keys", json!({"name": "backend"}))
        .await
        .assert_status(201)
        .clone();
    signer
        .delete(&format!(
            "/api/v1/signing-keys/{}",
            text(&owners_signing_key, "id")
        ))
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    signer.get("/api/v1/signing-keys").await.assert_status(200);

    // The victim's key was never touched.
    assert_eq!(owner.verify_code(&victim_secret).await, "VALID");

    // The owner (`*`) can still make the trust anchors it means to, and they work.
    let idp = ec_key("idp-2");
    let anchor = owner
        .post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "public_key": idp.public_pem, "algorithms": ["ES256"],
                   "self_service_app": "acme"}),
        )
        .await
        .assert_status(201)
        .clone();
    let token = sign(
        Algorithm::ES256,
        None,
        &idp.encoding,
        &json!({"sub": "usr_new", "exp": now() + 600}),
    );
    let mine = send(
        reqwest::Client::new()
            .get(format!("{}/api/v1/me/keys", server.base))
            .header("x-api-key", text(&anchor, "key"))
            .bearer_auth(token),
    )
    .await;
    mine.assert_status(200);
    server.stop().await;
}

#[tokio::test]
async fn a_purged_sandbox_s_workspace_keys_stop_at_once() {
    let server = TestServer::start().await;
    let session = send(
        reqwest::Client::new()
            .post(format!("{}/api/v1/demo/session", server.base))
            .header("content-type", "application/json"),
    )
    .await;
    let demo = server.api_with(session.assert_status(201)["secret"].as_str().unwrap());
    let workspace_key = demo
        .post("/api/v1/workspace-keys", json!({"name": "sandbox backend"}))
        .await
        .assert_status(201)
        .clone();
    let credentials = (text(&workspace_key, "id"), text(&workspace_key, "secret"));
    let as_workspace_key = |path: &'static str, body: Value| {
        let base = server.base.clone();
        let credentials = credentials.clone();
        async move {
            let method = if body.is_null() {
                Method::GET
            } else {
                Method::POST
            };
            signed_call(&base, method, path, &body, (&credentials.0, &credentials.1)).await
        }
    };
    // Verified once, so this node has it cached.
    as_workspace_key("/api/v1/apps", Value::Null)
        .await
        .assert_status(200);
    demo.delete("/api/v1/demo/session").await.assert_status(204);

    // Another path than the cached call's, so no signature repeats.
    as_workspace_key("/api/v1/root-keys", Value::Null)
        .await
        .assert_error(401, "AUTHENTICATION_ERROR", "invalid_api_key");
    as_workspace_key(
        "/api/v1/apps",
        json!({"name": "after the purge", "slug": "ghost", "permissions": []}),
    )
    .await
    .assert_error(401, "AUTHENTICATION_ERROR", "invalid_api_key");
    demo.get("/api/v1/apps")
        .await
        .assert_error(401, "AUTHENTICATION_ERROR", "invalid_api_key");
    server.stop().await;
}

#[tokio::test]
async fn secrets_pasted_into_the_wrong_field_are_never_echoed() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("acme", &["read"]).await;
    let secret = text(
        &api.create_key("acme", json!({"name": "real"})).await,
        "secret",
    );
    let answers = [
        api.post(
            "/api/v1/root-keys",
            json!({"name": "x", "scopes": ["verify", secret]}),
        )
        .await,
        api.post(
            "/api/v1/workspace-keys",
            json!({"name": "x", "scopes": [secret]}),
        )
        .await,
        api.post(
            "/api/v1/apps/acme/keys",
            json!({"name": "x", "permissions": ["read", secret]}),
        )
        .await,
        api.post(
            "/api/v1/apps/acme/keys",
            json!({"name": "x", "permissions": [format!("{secret} extra")]}),
        )
        .await,
        api.post(
            "/api/v1/apps",
            json!({"name": "x", "slug": "x", "permissions": [format!("{secret}!")]}),
        )
        .await,
        api.post(
            "/api/v1/keys/verify",
            json!({"key": secret, "permissions": format!("read {secret}")}),
        )
        .await,
        api.post(
            "/api/v1/keys/verify",
            json!({"key": secret, "permissions": [format!("{secret} x")]}),
        )
        .await,
    ];
    for answer in &answers {
        assert!(
            answer.status.is_client_error(),
            "{} {:#}",
            answer.status,
            answer.body
        );
        assert!(
            !answer.body.to_string().contains(&secret[10..]),
            "echoed: {:#}",
            answer.body
        );
    }
    // The message still says where the problem is.
    let message = answers[0].assert_error(422, "VALIDATION_ERROR", "invalid_scope");
    assert!(message.contains("scopes[1]"), "{message}");
    let message = answers[2].assert_error(422, "VALIDATION_ERROR", "permission_not_in_app");
    assert!(message.contains("permissions[1]"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn private_keys_are_refused_as_public_keys_and_never_stored() {
    let server = TestServer::start().await;
    let api = server.api();
    let signing_key = api
        .post("/api/v1/signing-keys", json!({"name": "pair"}))
        .await
        .assert_status(201)
        .clone();
    let private_pem = text(&signing_key, "private_key_pem");
    let private_jwk = json!({"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"});
    let symmetric = json!({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"});
    for public_key in [
        json!(private_pem),
        json!(private_jwk.to_string()),
        json!(private_jwk),
        json!(symmetric.to_string()),
        json!({"keys": [symmetric]}),
    ] {
        let answer = api
            .post(
                "/api/v1/public-keys",
                json!({"type": "jwt", "public_key": public_key, "algorithms": ["ES256"]}),
            )
            .await;
        answer.assert_error(422, "VALIDATION_ERROR", "invalid_public_key");
        assert!(!answer.body.to_string().contains("jpsQnnGQ"));
    }
    let listed = api.get("/api/v1/public-keys").await;
    assert_eq!(listed.assert_status(200)["data"], json!([]));
    let audit = api.get("/api/v1/audit-log").await.body.to_string();
    assert!(!audit.contains("PRIVATE KEY") && !audit.contains("jpsQnnGQ"));

    // A JWK set may be given as an object, not only as a string.
    let idp = ec_key("kid-1");
    let set = json!({"keys": [idp.jwk]});
    let created = api
        .post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "public_key": set, "algorithms": ["ES256"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let token = sign(
        Algorithm::ES256,
        Some("kid-1"),
        &idp.encoding,
        &json!({"sub": "usr_1", "exp": now() + 600}),
    );
    let verdict = api
        .post(
            "/api/v1/verify-request",
            json!({"method": "GET", "path": "/", "headers": {
                "X-API-Key": text(&created, "key"), "Authorization": format!("Bearer {token}")}}),
        )
        .await;
    assert_eq!(verdict.body["valid"], true, "{:#}", verdict.body);
    server.stop().await;
}

/// An RSA key pair: a PKCS#8 signer and its public JWK members.
fn rsa_key() -> (jsonwebtoken::EncodingKey, Value) {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair;
    use base64::Engine as _;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let public = pair.public_key();
    let jwk = json!({"kty": "RSA",
        "n": url.encode(public.modulus().big_endian_without_leading_zero()),
        "e": url.encode(public.exponent().big_endian_without_leading_zero())});
    (
        jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        jwk,
    )
}

#[tokio::test]
async fn tokens_are_held_to_their_header_and_their_key_s_declared_algorithm() {
    use crate::credentials::{assert_refused, jwt_verdict};
    let server = TestServer::start().await;
    let api = server.api();
    let (rsa, mut rsa_jwk) = rsa_key();
    rsa_jwk["kid"] = json!("r1");
    rsa_jwk["alg"] = json!("PS256");
    let ec = ec_key("e1");
    let created = api
        .post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "public_key": json!({"keys": [rsa_jwk, ec.jwk]}).to_string(),
                   "algorithms": ["RS256", "PS256", "ES256"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let public_key = text(&created, "key");
    let claims = json!({"sub": "usr_1", "exp": now() + 600});

    // The JWK says PS256: an RS256 signature by the same key is refused, a PS256 one passes.
    let rs256 = sign(Algorithm::RS256, Some("r1"), &rsa, &claims);
    assert_refused(
        &jwt_verdict(&api, &public_key, &rs256).await,
        "token_key_mismatch",
    );
    let ps256 = sign(Algorithm::PS256, Some("r1"), &rsa, &claims);
    assert_eq!(jwt_verdict(&api, &public_key, &ps256).await["valid"], true);
    // A `kid` that names a key of another type says so.
    let wrong_type = sign(Algorithm::RS256, Some("e1"), &rsa, &claims);
    assert_refused(
        &jwt_verdict(&api, &public_key, &wrong_type).await,
        "token_key_mismatch",
    );
    let unknown = sign(Algorithm::ES256, Some("nobody"), &ec.encoding, &claims);
    assert_refused(
        &jwt_verdict(&api, &public_key, &unknown).await,
        "token_unknown_kid",
    );

    // A correctly signed token whose header makes an unknown extension critical is refused
    // (RFC 7515 §4.1.11).
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some("e1".to_owned());
    header.crit = Some(vec!["exp".to_owned()]);
    let critical = jsonwebtoken::encode(&header, &claims, &ec.encoding).unwrap();
    assert_refused(
        &jwt_verdict(&api, &public_key, &critical).await,
        "token_crit_unsupported",
    );
    let plain = sign(Algorithm::ES256, Some("e1"), &ec.encoding, &claims);
    assert_eq!(jwt_verdict(&api, &public_key, &plain).await["valid"], true);
    server.stop().await;
}

#[tokio::test]
async fn urls_that_reach_special_purpose_addresses_are_refused() {
    let server = TestServer::start().await;
    let api = server.api();
    for url in [
        "http://[::ffff:7f00:1]/jwks",
        "http://[::127.0.0.1]/jwks",
        "http://[64:ff9b::a9fe:a9fe]/latest",
        "http://[2002:7f00:1::1]/jwks",
        "http://[2001::1]/jwks",
        "http://[2001:db8::1]/jwks",
        "http://[fec0::1]/jwks",
        "http://[100::1]/jwks",
        "http://192.0.0.1/jwks",
        "http://240.0.0.1/jwks",
        "http://0x7f.1/jwks",
    ] {
        api.post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "jwks_url": url, "algorithms": ["ES256"]}),
        )
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_jwks_url");
    }
    server.stop().await;
}

#[tokio::test]
async fn demo_sandboxes_cannot_make_the_server_fetch() {
    let server = TestServer::start().await;
    let session = send(
        reqwest::Client::new()
            .post(format!("{}/api/v1/demo/session", server.base))
            .header("content-type", "application/json"),
    )
    .await;
    let demo = server.api_with(session.assert_status(201)["secret"].as_str().unwrap());
    demo.post(
        "/api/v1/public-keys",
        json!({"type": "jwt", "jwks_url": "https://example.com/jwks.json", "algorithms": ["ES256"]}),
    )
    .await
    .assert_error(403, "PERMISSION_ERROR", "fetches_not_allowed");
    // An inline key needs no fetch and is fine.
    demo.post(
        "/api/v1/public-keys",
        json!({"type": "jwt", "public_key": ec_key("demo").public_pem, "algorithms": ["ES256"]}),
    )
    .await
    .assert_status(201);
    // Other environments are unaffected.
    server
        .api()
        .post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "jwks_url": "https://example.com/jwks.json", "algorithms": ["ES256"]}),
        )
        .await
        .assert_status(201);
    server.stop().await;
}

#[tokio::test]
async fn signatures_cover_the_path_exactly_as_sent() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("acme", &[]).await;
    let created = api
        .post("/api/v1/workspace-keys", json!({"name": "backend"}))
        .await
        .assert_status(201)
        .clone();
    let (key, secret) = (text(&created, "id"), text(&created, "secret"));
    let get = |sent: &'static str, signed_over: &'static str| {
        let authorization = signed("GET", signed_over, "", b"", &key, &secret, now());
        let request = reqwest::Client::new()
            .get(format!("{}{sent}", server.base))
            .header("authorization", authorization);
        async move { send(request).await }
    };
    // `%61` is `a`: the route matches, but the signature must be over what was sent.
    get("/api/v1/apps/%61cme", "/api/v1/apps/acme")
        .await
        .assert_error(401, "AUTHENTICATION_ERROR", "invalid_signature");
    get("/api/v1/apps/%61cme", "/api/v1/apps/%61cme")
        .await
        .assert_status(200);
    get("/api/v1/apps/acme", "/api/v1/apps/%61cme")
        .await
        .assert_error(401, "AUTHENTICATION_ERROR", "invalid_signature");

    // verify-request takes the path as the gateway saw it, undecoded.
    let verdict = |path: &str, signed_over: &str| {
        let authorization = signed("GET", signed_over, "", b"", &key, &secret, now());
        let body =
            json!({"method": "GET", "path": path, "headers": {"Authorization": authorization}});
        let api = api.clone();
        async move { api.post("/api/v1/verify-request", body).await.body }
    };
    assert_eq!(
        verdict("/orders/%2Fx", "/orders//x").await["reason"],
        "invalid_signature"
    );
    assert_eq!(verdict("/orders/%2Fx", "/orders/%2Fx").await["valid"], true);
    server.stop().await;
}

#[tokio::test]
async fn usage_read_is_enough_for_usage_and_keys_read_still_is() {
    let server = TestServer::start().await;
    for (scopes, status) in [
        (&["usage:read"][..], 200),
        (&["keys:read"][..], 200),
        (&["keys:write"][..], 200),
        (&["apps:read"][..], 403),
    ] {
        let api = scoped(&server, scopes).await;
        for path in ["/api/v1/usage", "/api/v1/usage/keys"] {
            api.get(path).await.assert_status(status);
        }
    }
    // `usage:read` reaches usage, not the keys themselves.
    scoped(&server, &["usage:read"])
        .await
        .get("/api/v1/apps")
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    server.stop().await;
}

#[tokio::test]
async fn the_server_answers_a_client_s_close_frame() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start().await;
    let url = format!(
        "{}/ws?api-key={}",
        server.base.replacen("http://", "ws://", 1),
        server.live_key
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let welcome = socket.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("connected"));
    socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return Some(frame),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("an answer in time");
    let frame = reply.expect("a Close frame in reply, not a dropped connection");
    assert_eq!(frame.map(|frame| frame.code), Some(CloseCode::Normal));
    server.stop().await;
}

#[tokio::test]
async fn concurrent_self_service_requests_never_exceed_the_key_quota() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("acme", &["read"]).await;
    let idp = ec_key("idp");
    let public_key = text(
        api.post(
            "/api/v1/public-keys",
            json!({"type": "jwt", "public_key": idp.public_pem, "algorithms": ["ES256"],
                   "self_service_app": "acme", "max_keys_per_user": 2}),
        )
        .await
        .assert_status(201),
        "key",
    );
    let token = sign(
        Algorithm::ES256,
        None,
        &idp.encoding,
        &json!({"sub": "usr_racer", "exp": now() + 600}),
    );
    let http = reqwest::Client::new();
    let attempts = (0..12).map(|n| {
        let request = http
            .post(format!("{}/api/v1/me/keys", server.base))
            .header("x-api-key", &public_key)
            .bearer_auth(&token)
            .json(&json!({"name": format!("key {n}")}));
        async move { send(request).await }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let created = answers
        .iter()
        .filter(|answer| answer.status.as_u16() == 201)
        .count();
    assert_eq!(created, 2, "exactly the quota");
    for answer in answers
        .iter()
        .filter(|answer| answer.status.as_u16() != 201)
    {
        answer.assert_error(409, "CONFLICT_ERROR", "max_keys_reached");
    }
    server.stop().await;
}
