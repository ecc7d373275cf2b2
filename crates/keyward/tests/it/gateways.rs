//! Keyward behind the proxies teams already run (SPEC §4.7): forward auth and Envoy's
//! ext_authz spoken to directly, then the shipped examples under `examples/gateways/` run by
//! the real nginx, Envoy (HTTP and gRPC), Traefik and Caddy in front of an upstream that
//! echoes what reached it.
//!
//! A proxy that is not installed is reported as skipped; with
//! `KEYWARD_TEST_PROXIES=required` (as `.ci/run` sets) its test fails instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use jsonwebtoken::{Algorithm, EncodingKey};
use keyward_server::tokens::jwks::JwksSettings;
use keyward_server::ServerConfig;
use serde_json::{json, Value};

use crate::credentials::{ec_key, now, sign, signed, user_token};
use crate::testkit::{send, Api, Reply, TestServer};

const AUTH: &str = "/api/v1/gateway/auth";

/// What the tests present: a proxy's root key and the client credentials of SPEC §4.4.
struct Fixture {
    /// A root key with the `verify` scope only, as a proxy is given.
    proxy_key: String,
    /// An API key with `read` (owner `usr_1`, organization `org_1`).
    reader: String,
    reader_id: String,
    /// An API key with `read` and `admin`.
    admin: String,
    /// Limited to one request a minute.
    limited: String,
    revoked: String,
    disabled: String,
    /// `pk_jwt_…` and an end user's token for it.
    jwt_public_key: String,
    jwt: String,
    /// `pk_live_…` and a signed user token for tenant `acme`.
    client_public_key: String,
    user_token: String,
}

impl Fixture {
    async fn new(api: &Api) -> Self {
        let proxy_key = api
            .post(
                "/api/v1/root-keys",
                json!({"name": "proxy", "scopes": ["verify"]}),
            )
            .await
            .assert_status(201)["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        api.create_app("orders", &["read", "admin"]).await;
        api.post(
            "/api/v1/rate-limit-schemes",
            json!({"slug": "one_a_minute", "windows": [{"limit": 1, "period_seconds": 60}]}),
        )
        .await
        .assert_status(201);
        let key = |body: Value| async move {
            let created = api.create_key("orders", body).await;
            (
                created["secret"].as_str().unwrap().to_owned(),
                created["id"].as_str().unwrap().to_owned(),
            )
        };
        let (reader, reader_id) = key(json!({"name": "reader", "permissions": ["read"],
            "owner_user_id": "usr_1", "organization_id": "org_1"}))
        .await;
        let (admin, _) = key(json!({"name": "admin", "permissions": ["read", "admin"]})).await;
        let (limited, _) =
            key(json!({"name": "limited", "rate_limit_scheme": "one_a_minute"})).await;
        let (revoked, revoked_id) = key(json!({"name": "revoked"})).await;
        api.post(&format!("/api/v1/keys/{revoked_id}/revoke"), json!({}))
            .await
            .assert_status(200);
        let (disabled, disabled_id) = key(json!({"name": "disabled"})).await;
        api.patch(
            &format!("/api/v1/keys/{disabled_id}"),
            json!({"enabled": false}),
        )
        .await
        .assert_status(200);

        let end_user_key = ec_key("gw");
        let jwt_public_key = api
            .create_public_key(json!({"type": "jwt", "public_key": end_user_key.public_pem,
                    "algorithms": ["ES256"]}))
            .await;
        let jwt = sign(
            Algorithm::ES256,
            Some("gw"),
            &end_user_key.encoding,
            &json!({"sub": "usr_jwt", "iat": now(), "exp": now() + 600}),
        );
        let signing = api
            .post("/api/v1/signing-keys", json!({"name": "backend"}))
            .await
            .assert_status(201)
            .clone();
        let signer =
            EncodingKey::from_ec_pem(signing["private_key_pem"].as_str().unwrap().as_bytes())
                .unwrap();
        let user_token = user_token(&signer, signing["id"].as_str().unwrap(), json!({}));
        let client_public_key = api.create_public_key(json!({"type": "client"})).await;
        Self {
            proxy_key,
            reader,
            reader_id,
            admin,
            limited,
            revoked,
            disabled,
            jwt_public_key,
            jwt,
            client_public_key,
            user_token,
        }
    }
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// A forward-auth request as a proxy sends it, straight to Keyward.
async fn forward_auth(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

fn assert_refusal(reply: &Reply, status: u16, code: &str) {
    let error_type = match status {
        401 => "AUTHENTICATION_ERROR",
        403 => "PERMISSION_ERROR",
        429 => "RATE_LIMIT_ERROR",
        503 => "SERVICE_UNAVAILABLE",
        _ => "VALIDATION_ERROR",
    };
    reply.assert_error(status, error_type, code);
    // The envelope again as a header, for proxies that drop the body (nginx).
    let in_header: Value =
        serde_json::from_str(reply.headers["keyward-error"].to_str().unwrap()).unwrap();
    assert_eq!(in_header, reply.body);
    if status == 401 {
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
    }
    if status == 429 {
        let retry: u64 = reply.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // A minute's window at most; credits that refill daily, a day at most.
        assert!((1..=86_400).contains(&retry), "{retry}");
    }
    for identity in ["keyward-key-id", "keyward-credential-type"] {
        assert!(
            !reply.headers.contains_key(identity),
            "{identity} on a refusal"
        );
    }
}

#[tokio::test]
async fn forward_auth_answers_with_identity_headers_or_the_envelope() {
    let server = TestServer::start().await;
    let api = server.api();
    let f = Fixture::new(&api).await;
    let proxy = bearer(&f.proxy_key);
    let reader = bearer(&f.reader);
    let with_proxy = |extra: &[(&'static str, String)]| {
        let mut headers = vec![("keyward-authorization", proxy.clone())];
        headers.extend(extra.iter().cloned());
        headers
    };
    let ask =
        |method: reqwest::Method, path: &'static str, headers: Vec<(&'static str, String)>| {
            let server = &server;
            async move {
                let borrowed: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(name, value)| (*name, value.as_str()))
                    .collect();
                forward_auth(server, method, path, &borrowed).await
            }
        };

    // Allowed: 200, empty body, the identity as headers; absent values are absent headers.
    let allowed = ask(
        reqwest::Method::GET,
        AUTH,
        with_proxy(&[("authorization", reader.clone())]),
    )
    .await;
    assert_eq!(allowed.status, 200, "{:#}", allowed.body);
    assert_eq!(allowed.body, Value::Null);
    let header = |reply: &Reply, name: &str| {
        reply
            .headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header(&allowed, "keyward-key-id"),
        Some(f.reader_id.clone())
    );
    assert_eq!(
        header(&allowed, "keyward-owner-id").as_deref(),
        Some("usr_1")
    );
    assert_eq!(
        header(&allowed, "keyward-organization-id").as_deref(),
        Some("org_1")
    );
    assert_eq!(
        header(&allowed, "keyward-environment").as_deref(),
        Some("live")
    );
    assert_eq!(
        header(&allowed, "keyward-permissions-granted").as_deref(),
        Some("read")
    );
    assert_eq!(
        header(&allowed, "keyward-credential-type").as_deref(),
        Some("api_key")
    );
    assert_eq!(header(&allowed, "keyward-subject"), None);
    assert_eq!(header(&allowed, "keyward-tenant"), None);
    // X-API-Key works as well as a bearer token.
    let by_header = ask(
        reqwest::Method::GET,
        AUTH,
        with_proxy(&[("x-api-key", f.reader.clone())]),
    )
    .await;
    assert_eq!(by_header.status, 200);

    // The proxy's own key: missing, a client's key in its place, or without `verify`.
    assert_refusal(
        &ask(
            reqwest::Method::GET,
            AUTH,
            vec![("authorization", reader.clone())],
        )
        .await,
        401,
        "invalid_api_key",
    );
    assert_refusal(
        &ask(
            reqwest::Method::GET,
            AUTH,
            vec![
                ("keyward-authorization", reader.clone()),
                ("authorization", reader.clone()),
            ],
        )
        .await,
        401,
        "invalid_api_key",
    );
    let reading_root = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "not a proxy", "scopes": ["keys:read"]}),
        )
        .await
        .assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_refusal(
        &ask(
            reqwest::Method::GET,
            AUTH,
            vec![
                ("keyward-authorization", bearer(&reading_root)),
                ("authorization", reader.clone()),
            ],
        )
        .await,
        403,
        "insufficient_scope",
    );

    // The client's credential, refused with the status of SPEC §4.2.
    for (credential, status, code) in [
        (None, 401, "invalid_api_key"),
        (
            Some("Bearer kw_live_nonsense".to_owned()),
            401,
            "invalid_api_key",
        ),
        (Some(bearer(&f.revoked)), 403, "key_revoked"),
        (Some(bearer(&f.disabled)), 403, "key_disabled"),
    ] {
        let mut headers = with_proxy(&[]);
        if let Some(credential) = credential {
            headers.push(("authorization", credential));
        }
        assert_refusal(
            &ask(reqwest::Method::GET, AUTH, headers).await,
            status,
            code,
        );
    }
    // What the route needs, from the proxy.
    assert_refusal(
        &ask(
            reqwest::Method::GET,
            AUTH,
            with_proxy(&[
                ("authorization", reader.clone()),
                ("keyward-permissions", "admin".to_owned()),
            ]),
        )
        .await,
        403,
        "insufficient_permissions",
    );
    let admin = ask(
        reqwest::Method::GET,
        AUTH,
        with_proxy(&[
            ("authorization", bearer(&f.admin)),
            ("keyward-permissions", "read AND admin".to_owned()),
        ]),
    )
    .await;
    assert_eq!(admin.status, 200);
    assert_eq!(
        header(&admin, "keyward-permissions-granted").as_deref(),
        Some("admin,read")
    );
    ask(
        reqwest::Method::GET,
        AUTH,
        with_proxy(&[
            ("authorization", reader.clone()),
            ("keyward-permissions", "read AND (".to_owned()),
        ]),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_permission_query");
    ask(
        reqwest::Method::GET,
        AUTH,
        with_proxy(&[
            ("authorization", reader.clone()),
            ("keyward-credits-cost", "-1".to_owned()),
        ]),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "invalid_credits_cost");

    // Rate limits: the key's RateLimit headers for the upstream, then 429 with Retry-After.
    let first = ask(
        reqwest::Method::GET,
        AUTH,
        with_proxy(&[("authorization", bearer(&f.limited))]),
    )
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(
        header(&first, "ratelimit")
            .as_deref()
            .map(|v| v.contains("r=0")),
        Some(true)
    );
    assert!(header(&first, "ratelimit-policy")
        .unwrap()
        .contains("q=1;w=60"));
    let limited = ask(
        reqwest::Method::GET,
        AUTH,
        with_proxy(&[("authorization", bearer(&f.limited))]),
    )
    .await;
    assert_refusal(&limited, 429, "rate_limited");
    assert!(limited.headers.contains_key("ratelimit"));
    let retry = |reply: &Reply| -> u64 {
        reply.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(retry(&limited) <= 60);

    // Credits: the route's cost is spent; out of credits is 429 too, with the time until the
    // next refill, or a day when nothing refills them.
    for (refill, most) in [
        (Some(json!({"interval": "daily", "amount": 5})), 86_400),
        (None, 86_400),
    ] {
        let mut credits = json!({"remaining": 3});
        if let Some(refill) = refill.clone() {
            credits["refill"] = refill;
        }
        let secret = api
            .create_key("orders", json!({"name": "metered", "credits": credits}))
            .await["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        let metered = |cost: &'static str| {
            with_proxy(&[
                ("authorization", bearer(&secret)),
                ("keyward-credits-cost", cost.to_owned()),
            ])
        };
        assert_eq!(
            ask(reqwest::Method::GET, AUTH, metered("3")).await.status,
            200
        );
        let spent = ask(reqwest::Method::GET, AUTH, metered("1")).await;
        assert_refusal(&spent, 429, "usage_exceeded");
        let seconds = retry(&spent);
        if refill.is_some() {
            assert!((1..=most).contains(&seconds), "{seconds}");
        } else {
            assert_eq!(seconds, most);
        }
    }

    // End users: a JWT, and a signed user token with its tenant.
    let jwt = ask(
        reqwest::Method::GET,
        AUTH,
        with_proxy(&[
            ("x-api-key", f.jwt_public_key.clone()),
            ("authorization", bearer(&f.jwt)),
        ]),
    )
    .await;
    assert_eq!(jwt.status, 200, "{:#}", jwt.body);
    assert_eq!(
        header(&jwt, "keyward-credential-type").as_deref(),
        Some("jwt")
    );
    assert_eq!(header(&jwt, "keyward-subject").as_deref(), Some("usr_jwt"));
    let tenant = |tenant: &'static str| {
        with_proxy(&[
            ("x-api-key", f.client_public_key.clone()),
            ("authorization", bearer(&f.user_token)),
            ("x-tenant-id", tenant.to_owned()),
        ])
    };
    let acme = ask(reqwest::Method::GET, AUTH, tenant("acme")).await;
    assert_eq!(acme.status, 200, "{:#}", acme.body);
    assert_eq!(header(&acme, "keyward-tenant").as_deref(), Some("acme"));
    assert_eq!(header(&acme, "keyward-subject").as_deref(), Some("sub_42"));
    assert_refusal(
        &ask(reqwest::Method::GET, AUTH, tenant("globex")).await,
        403,
        "tenant_mismatch",
    );
    let expired = sign(
        Algorithm::ES256,
        Some("gw"),
        &ec_key("other").encoding,
        &json!({"sub": "usr_jwt", "iat": now() - 900, "exp": now() - 600}),
    );
    assert_eq!(
        ask(
            reqwest::Method::GET,
            AUTH,
            with_proxy(&[
                ("x-api-key", f.jwt_public_key.clone()),
                ("authorization", bearer(&expired)),
            ]),
        )
        .await
        .status,
        401
    );

    // Envoy's HTTP service: the original method, and the path below the prefix. No 415 for a
    // body that is not JSON, and an OPTIONS is a request to check, not a CORS preflight.
    let envoy = forward_auth(
        &server,
        reqwest::Method::POST,
        "/api/v1/gateway/auth/orders/7?expand=1",
        &[
            ("keyward-authorization", &proxy),
            ("authorization", &reader),
            ("content-type", "text/plain"),
        ],
    )
    .await;
    assert_eq!(envoy.status, 200, "{:#}", envoy.body);
    let preflight = forward_auth(
        &server,
        reqwest::Method::OPTIONS,
        "/api/v1/gateway/auth/orders",
        &[
            ("keyward-authorization", &proxy),
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_refusal(&preflight, 401, "invalid_api_key");
    assert!(!preflight
        .headers
        .contains_key("access-control-allow-origin"));
    server.stop().await;
}

#[tokio::test]
async fn forward_auth_checks_workspace_signatures_over_the_original_request() {
    let server = TestServer::start().await;
    let api = server.api();
    let f = Fixture::new(&api).await;
    let proxy = bearer(&f.proxy_key);
    let workspace = api
        .post("/api/v1/workspace-keys", json!({"name": "billing"}))
        .await
        .assert_status(201)
        .clone();
    let (key, secret) = (
        workspace["id"].as_str().unwrap().to_owned(),
        workspace["secret"].as_str().unwrap().to_owned(),
    );
    // Envoy with the body forwarded (`with_request_body`): the digest is the body's.
    let body = br#"{"amount": 10}"#;
    let signature = signed("POST", "/orders", "x=1", body, &key, &secret, now());
    let envoy = |signature: String, body: &'static [u8]| {
        let request = reqwest::Client::new()
            .post(format!("{}{AUTH}/orders?x=1", server.base))
            .header("keyward-authorization", &proxy)
            .header("authorization", signature)
            .body(body);
        send(request)
    };
    let allowed = envoy(signature.clone(), body).await;
    assert_eq!(allowed.status, 200, "{:#}", allowed.body);
    assert_eq!(allowed.headers["keyward-credential-type"], "workspace_key");
    assert_eq!(allowed.headers["keyward-key-id"], key.as_str());
    assert_refusal(&envoy(signature, body).await, 401, "signature_replayed");
    let tampered = signed("POST", "/orders", "x=1", body, &key, &secret, now());
    assert_refusal(
        &envoy(tampered, br#"{"amount": 99}"#).await,
        401,
        "invalid_signature",
    );
    // Forward auth without the body (nginx, Traefik, Caddy): the original method and URI
    // from the proxy's headers; a request without a body verifies.
    let get = signed("DELETE", "/orders/7", "", b"", &key, &secret, now());
    let reply = forward_auth(
        &server,
        reqwest::Method::GET,
        AUTH,
        &[
            ("keyward-authorization", &proxy),
            ("authorization", &get),
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "/orders/7"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{:#}", reply.body);
    let elsewhere = signed("DELETE", "/orders/7", "", b"", &key, &secret, now());
    assert_refusal(
        &forward_auth(
            &server,
            reqwest::Method::GET,
            AUTH,
            &[
                ("keyward-authorization", &proxy),
                ("authorization", &elsewhere),
                ("x-original-method", "DELETE"),
                ("x-original-uri", "/orders/8"),
            ],
        )
        .await,
        401,
        "invalid_signature",
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Envoy's gRPC ext_authz, spoken to directly.

fn check_request(
    headers: &[(&str, &str)],
    path: &str,
    extensions: &[(&str, &str)],
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: path.to_owned(),
                    headers: headers
                        .iter()
                        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: extensions
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            ..Default::default()
        }),
    }
}

async fn grpc_client(server: &TestServer) -> AuthorizationClient<tonic::transport::Channel> {
    AuthorizationClient::connect(format!("http://{}", server.grpc.expect("grpc listener")))
        .await
        .expect("connect to ext_authz")
}

fn with_metadata<T>(message: T, proxy_key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = proxy_key {
        request
            .metadata_mut()
            .insert("keyward-authorization", bearer(key).parse().unwrap());
    }
    request
}

/// The denied answer's status and envelope, or the allowed answer's headers.
fn decision(response: &CheckResponse) -> Result<HashMap<String, String>, (i32, Value)> {
    match response.http_response.as_ref().expect("an HTTP response") {
        HttpResponse::OkResponse(ok) => {
            assert_eq!(response.status.as_ref().unwrap().code, 0);
            let mut headers: HashMap<String, String> = ok
                .headers
                .iter()
                .map(|option| {
                    let header = option.header.as_ref().unwrap();
                    (header.key.clone(), header.value.clone())
                })
                .collect();
            for removed in &ok.headers_to_remove {
                headers.insert(format!("-{removed}"), String::new());
            }
            Ok(headers)
        }
        HttpResponse::DeniedResponse(denied) => {
            assert_ne!(response.status.as_ref().unwrap().code, 0);
            let body: Value = serde_json::from_str(&denied.body).unwrap();
            Err((denied.status.as_ref().unwrap().code, body))
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn ext_authz_over_grpc_allows_refuses_and_survives_bad_calls() {
    let server = TestServer::start_with_ext_authz(ServerConfig {
        jwks: JwksSettings {
            allow_private: true,
            ..JwksSettings::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let api = server.api();
    let f = Fixture::new(&api).await;
    let mut client = grpc_client(&server).await;
    let reader = bearer(&f.reader);
    let check = |headers: &[(&str, &str)], extensions: &[(&str, &str)], key: Option<&str>| {
        with_metadata(check_request(headers, "/orders?x=1", extensions), key)
    };

    let allowed = client
        .check(check(
            &[("authorization", &reader)],
            &[],
            Some(&f.proxy_key),
        ))
        .await
        .unwrap()
        .into_inner();
    let headers = decision(&allowed).expect("allowed");
    assert_eq!(headers["keyward-key-id"], f.reader_id);
    assert_eq!(headers["keyward-owner-id"], "usr_1");
    assert_eq!(headers["keyward-credential-type"], "api_key");
    // What Keyward did not set is removed, so a client's forgery never reaches the upstream.
    for removed in [
        "-keyward-subject",
        "-keyward-tenant",
        "-keyward-authorization",
    ] {
        assert!(headers.contains_key(removed), "{removed}: {headers:?}");
    }

    let (status, envelope) = decision(
        &client
            .check(check(
                &[("authorization", "Bearer kw_live_x")],
                &[],
                Some(&f.proxy_key),
            ))
            .await
            .unwrap()
            .into_inner(),
    )
    .unwrap_err();
    assert_eq!(
        (status, envelope["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    // Requirements come from the route's context extensions, never from the client.
    let (status, envelope) = decision(
        &client
            .check(check(
                &[("authorization", &reader), ("keyward-permissions", "")],
                &[("keyward-permissions", "admin")],
                Some(&f.proxy_key),
            ))
            .await
            .unwrap()
            .into_inner(),
    )
    .unwrap_err();
    assert_eq!(
        (status, envelope["error"]["code"].as_str()),
        (403, Some("insufficient_permissions"))
    );
    // The root key only counts in the call's metadata.
    let proxy = bearer(&f.proxy_key);
    let (status, _) = decision(
        &client
            .check(check(
                &[
                    ("authorization", &reader),
                    ("keyward-authorization", &proxy),
                ],
                &[],
                None,
            ))
            .await
            .unwrap()
            .into_inner(),
    )
    .unwrap_err();
    assert_eq!(status, 401);

    // A CheckRequest without an HTTP request, and bytes that are no CheckRequest at all.
    let empty = client
        .check(with_metadata(CheckRequest::default(), Some(&f.proxy_key)))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    let garbage = send_garbage(&server).await;
    assert_ne!(garbage, tonic::Code::Ok);

    // A deadline: a JWKS that never answers, asked with a 300 ms deadline.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks", hanging.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            held.push(socket);
        }
    });
    let slow_key = api
        .create_public_key(json!({"type": "jwt", "jwks_url": jwks_url, "algorithms": ["ES256"]}))
        .await;
    let token = bearer(&f.jwt);
    let mut late = check(
        &[("x-api-key", &slow_key), ("authorization", &token)],
        &[],
        Some(&f.proxy_key),
    );
    late.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = client.check(late).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The service goes on answering.
    assert!(decision(
        &client
            .check(check(
                &[("authorization", &reader)],
                &[],
                Some(&f.proxy_key)
            ))
            .await
            .unwrap()
            .into_inner()
    )
    .is_ok());
    server.stop().await;
}

/// A message whose field 1 is a number where CheckRequest has a message.
#[derive(Clone, PartialEq, prost::Message)]
struct NotACheckRequest {
    #[prost(uint64, tag = "1")]
    attributes: u64,
}

async fn send_garbage(server: &TestServer) -> tonic::Code {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<NotACheckRequest, CheckResponse> =
        tonic_prost::ProstCodec::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.auth.v3.Authorization/Check",
    );
    match grpc
        .unary(
            tonic::Request::new(NotACheckRequest { attributes: 7 }),
            path,
            codec,
        )
        .await
    {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

// ---------------------------------------------------------------------------------------
// The shipped examples, run by the real proxies.

/// The upstream API: counts what reaches it and echoes the headers it got.
struct Upstream {
    address: String,
    hits: Arc<AtomicU64>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let hits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let seen: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str().to_owned(),
                            json!(String::from_utf8_lossy(value.as_bytes())),
                        )
                    })
                    .collect();
                axum::Json(json!({"upstream": true, "headers": seen}))
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { address, hits }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyKind {
    Nginx,
    EnvoyHttp,
    EnvoyGrpc,
    Traefik,
    Caddy,
}

impl ProxyKind {
    fn example(self) -> &'static str {
        match self {
            ProxyKind::Nginx => "nginx",
            ProxyKind::EnvoyHttp => "envoy-http",
            ProxyKind::EnvoyGrpc => "envoy-grpc",
            ProxyKind::Traefik => "traefik",
            ProxyKind::Caddy => "caddy",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            ProxyKind::Nginx => "nginx",
            ProxyKind::EnvoyHttp | ProxyKind::EnvoyGrpc => "envoy",
            ProxyKind::Traefik => "traefik",
            ProxyKind::Caddy => "caddy",
        }
    }
}

/// A proxy started from its shipped example, stopped by PID when dropped.
struct Proxy {
    kind: ProxyKind,
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gateways")
}

impl Proxy {
    /// The example, with only its addresses and root-key placeholder replaced; `None` (and a
    /// line saying so) when the proxy is not installed here.
    async fn start(
        kind: ProxyKind,
        server: &TestServer,
        upstream: &Upstream,
        proxy_key: &str,
    ) -> Option<Self> {
        let Some(binary) = find_binary(kind.binary()) else {
            if std::env::var("KEYWARD_TEST_PROXIES").as_deref() == Ok("required") {
                panic!("{} is required but not installed", kind.binary());
            }
            println!(
                "skipped: the {} example ({} is not installed)",
                kind.example(),
                kind.binary()
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let keyward = server.base.trim_start_matches("http://").to_owned();
        let grpc = server
            .grpc
            .map(|address| address.to_string())
            .unwrap_or_else(|| "127.0.0.1:1".to_owned());
        let admin = format!("127.0.0.1:{}", free_port());
        let source = examples_dir().join(kind.example());
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|extension| extension == "md") {
                continue;
            }
            let mut filled = std::fs::read_to_string(&path).unwrap();
            // Addresses as `host:port`, or as Envoy writes them (`port_value: N`).
            for (shipped, here) in [
                ("127.0.0.1:8080", keyward.as_str()),
                ("127.0.0.1:8081", grpc.as_str()),
                ("127.0.0.1:9000", upstream.address.as_str()),
                ("127.0.0.1:8000", &format!("127.0.0.1:{port}")),
                ("127.0.0.1:9901", admin.as_str()),
            ] {
                let (shipped_port, port_here) = (
                    shipped.rsplit(':').next().unwrap(),
                    here.rsplit(':').next().unwrap(),
                );
                filled = filled.replace(shipped, here).replace(
                    &format!("port_value: {shipped_port}"),
                    &format!("port_value: {port_here}"),
                );
            }
            let filled = filled.replace("KEYWARD_GATEWAY_ROOT_KEY", proxy_key);
            std::fs::write(dir.path().join(path.file_name().unwrap()), filled).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let mut command = Command::new(&binary);
        command.current_dir(dir.path());
        match kind {
            ProxyKind::Nginx => {
                let pid = dir.path().join("nginx.pid");
                command.args([
                    "-p",
                    dir.path().to_str().unwrap(),
                    "-c",
                    "nginx.conf",
                    "-g",
                    &format!("daemon off; pid {};", pid.display()),
                ]);
            }
            ProxyKind::EnvoyHttp | ProxyKind::EnvoyGrpc => {
                command.args([
                    "-c",
                    "envoy.yaml",
                    "--disable-hot-restart",
                    "--log-level",
                    "warn",
                ]);
            }
            ProxyKind::Traefik => {
                command.arg("--configFile=traefik.yml");
            }
            ProxyKind::Caddy => {
                command
                    .args(["run", "--config", "Caddyfile", "--adapter", "caddyfile"])
                    .env("HOME", dir.path())
                    .env("XDG_DATA_HOME", dir.path())
                    .env("XDG_CONFIG_HOME", dir.path());
            }
        }
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let proxy = Self {
            kind,
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        proxy.wait_ready().await;
        Some(proxy)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Until the proxy answers through to Keyward (any answer but a connection error).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            if let Ok(response) = http.get(format!("{}/ready", self.base)).send().await {
                // Traefik answers 404 until it has loaded its routes.
                if response.status() != 404 && response.status() != 502 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the {} example did not start:\n{}",
                self.kind.example(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request).await
    }
}

/// Everything SPEC §4.7 and issue 20 ask of a proxy in front of Keyward.
async fn exercise(kind: ProxyKind) {
    let server = TestServer::start_with_ext_authz(ServerConfig::default()).await;
    let api = server.api();
    let f = Fixture::new(&api).await;
    let upstream = Upstream::start().await;
    let Some(proxy) = Proxy::start(kind, &server, &upstream, &f.proxy_key).await else {
        server.stop().await;
        return;
    };
    let context = |what: &str, reply: &Reply| {
        format!(
            "{}: {what}: {} {:#}\n{}",
            kind.example(),
            reply.status,
            reply.body,
            proxy.log()
        )
    };
    let reader = bearer(&f.reader);

    // A valid key reaches the upstream with its identity; the client's forgeries do not.
    let before = upstream.hits();
    let allowed = proxy
        .get(
            "/orders?page=2",
            &[
                ("authorization", &reader),
                ("keyward-key-id", "key_forged"),
                ("keyward-subject", "usr_forged"),
                ("keyward-authorization", "Bearer forged"),
            ],
        )
        .await;
    assert_eq!(allowed.status, 200, "{}", context("valid key", &allowed));
    assert_eq!(upstream.hits(), before + 1);
    let seen = &allowed.body["headers"];
    assert_eq!(
        seen["keyward-key-id"],
        f.reader_id.as_str(),
        "{}",
        context("identity", &allowed)
    );
    assert_eq!(seen["keyward-owner-id"], "usr_1");
    assert_eq!(seen["keyward-organization-id"], "org_1");
    assert_eq!(seen["keyward-environment"], "live");
    assert_eq!(seen["keyward-credential-type"], "api_key");
    assert_eq!(seen["keyward-permissions-granted"], "read");
    assert!(
        seen.get("keyward-subject").is_none(),
        "{}",
        context("forged subject", &allowed)
    );
    let leaked = seen.to_string();
    assert!(
        !leaked.contains(&f.proxy_key),
        "the proxy's root key reached the upstream"
    );
    assert!(
        !leaked.contains("forged"),
        "{}",
        context("forged headers", &allowed)
    );

    // Refusals: the status, the envelope, and the upstream never reached.
    let refused = |what: &'static str, reply: Reply, status: u16, code: &str| {
        assert_eq!(reply.status.as_u16(), status, "{}", context(what, &reply));
        assert_eq!(
            reply.body["error"]["code"],
            code,
            "{}",
            context(what, &reply)
        );
        if status == 401 {
            assert_eq!(
                reply.headers["www-authenticate"],
                "Bearer",
                "{}",
                context(what, &reply)
            );
        }
        if status == 429 {
            assert!(
                reply.headers.contains_key("retry-after"),
                "{}",
                context(what, &reply)
            );
        }
    };
    let before = upstream.hits();
    refused(
        "no key",
        proxy.get("/orders", &[]).await,
        401,
        "invalid_api_key",
    );
    refused(
        "malformed key",
        proxy
            .get("/orders", &[("authorization", "Bearer nonsense")])
            .await,
        401,
        "invalid_api_key",
    );
    refused(
        "unknown key",
        proxy
            .get(
                "/orders",
                &[("x-api-key", "kw_live_0000000000000000000000000000")],
            )
            .await,
        401,
        "invalid_api_key",
    );
    refused(
        "revoked key",
        proxy
            .get("/orders", &[("authorization", &bearer(&f.revoked))])
            .await,
        403,
        "key_revoked",
    );
    refused(
        "disabled key",
        proxy
            .get("/orders", &[("authorization", &bearer(&f.disabled))])
            .await,
        403,
        "key_disabled",
    );
    // An expired key: made to end a moment from now.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let expiring = api
        .create_key(
            "orders",
            json!({"name": "brief", "expires_at": soon.format(&time::format_description::well_known::Rfc3339).unwrap()}),
        )
        .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    refused(
        "expired key",
        proxy
            .get("/orders", &[("authorization", &bearer(&expiring))])
            .await,
        403,
        "key_expired",
    );
    // The /admin route needs `admin`, whatever the client says it needs.
    refused(
        "missing permission",
        proxy
            .get(
                "/admin/users",
                &[("authorization", &reader), ("keyward-permissions", "")],
            )
            .await,
        403,
        "insufficient_permissions",
    );
    assert_eq!(
        upstream.hits(),
        before,
        "a refused request reached the upstream"
    );
    let admin = proxy
        .get("/admin/users", &[("authorization", &bearer(&f.admin))])
        .await;
    assert_eq!(admin.status, 200, "{}", context("admin", &admin));

    // Rate limits: the first passes, the second gets 429 with Retry-After.
    let limited = bearer(&f.limited);
    let first = proxy.get("/orders", &[("authorization", &limited)]).await;
    assert_eq!(first.status, 200, "{}", context("limited, first", &first));
    refused(
        "rate limited",
        proxy.get("/orders", &[("authorization", &limited)]).await,
        429,
        "rate_limited",
    );

    // End users: a JWT with its public key, and a signed user token with its tenant.
    let jwt = bearer(&f.jwt);
    let end_user = proxy
        .get(
            "/orders",
            &[("x-api-key", &f.jwt_public_key), ("authorization", &jwt)],
        )
        .await;
    assert_eq!(end_user.status, 200, "{}", context("jwt", &end_user));
    assert_eq!(end_user.body["headers"]["keyward-credential-type"], "jwt");
    assert_eq!(end_user.body["headers"]["keyward-subject"], "usr_jwt");
    let token = bearer(&f.user_token);
    let tenant = |tenant: &'static str| {
        let (key, token) = (f.client_public_key.clone(), token.clone());
        let proxy = &proxy;
        async move {
            proxy
                .get(
                    "/orders",
                    &[
                        ("x-api-key", &key),
                        ("authorization", &token),
                        ("x-tenant-id", tenant),
                    ],
                )
                .await
        }
    };
    let acme = tenant("acme").await;
    assert_eq!(acme.status, 200, "{}", context("tenant", &acme));
    assert_eq!(acme.body["headers"]["keyward-tenant"], "acme");
    refused(
        "wrong tenant",
        tenant("globex").await,
        403,
        "tenant_mismatch",
    );

    // Revoke, then request: refused at once.
    let still = proxy.get("/orders", &[("authorization", &reader)]).await;
    assert_eq!(still.status, 200);
    api.post(&format!("/api/v1/keys/{}/revoke", f.reader_id), json!({}))
        .await
        .assert_status(200);
    refused(
        "revoked just now",
        proxy.get("/orders", &[("authorization", &reader)]).await,
        403,
        "key_revoked",
    );

    // Keyward stopped: the proxy fails closed and the upstream is never reached.
    let admin_key = bearer(&f.admin);
    server.stop().await;
    let before = upstream.hits();
    let down = proxy.get("/orders", &[("authorization", &admin_key)]).await;
    assert!(
        down.status.is_server_error() || down.status == 403,
        "{}",
        context("keyward down", &down)
    );
    assert_eq!(
        upstream.hits(),
        before,
        "{}",
        context("keyward down", &down)
    );
}

#[tokio::test]
async fn nginx_example_guards_the_upstream() {
    exercise(ProxyKind::Nginx).await;
}

#[tokio::test]
async fn envoy_http_example_guards_the_upstream() {
    exercise(ProxyKind::EnvoyHttp).await;
}

#[tokio::test]
async fn envoy_grpc_example_guards_the_upstream() {
    exercise(ProxyKind::EnvoyGrpc).await;
}

#[tokio::test]
async fn traefik_example_guards_the_upstream() {
    exercise(ProxyKind::Traefik).await;
}

#[tokio::test]
async fn caddy_example_guards_the_upstream() {
    exercise(ProxyKind::Caddy).await;
}
