//! Bad input of every kind gets a fitting 4xx in the envelope: never a 500, never a panic.

use reqwest::Method;
use serde_json::json;

use crate::testkit::{send, TestServer};

#[tokio::test]
async fn malformed_bodies() {
    let server = TestServer::start().await;
    let api = server.api();
    let raw = |body: Vec<u8>| {
        api.http
            .post(format!("{}/api/v1/apps", server.base))
            .bearer_auth(&server.live_key)
            .header("content-type", "application/json")
            .body(body)
    };
    send(raw(b"{\"name\": ".to_vec()))
        .await
        .assert_error(400, "VALIDATION_ERROR", "invalid_json");
    send(raw(b"not json".to_vec()))
        .await
        .assert_error(400, "VALIDATION_ERROR", "invalid_json");
    send(raw(b"{} trailing".to_vec()))
        .await
        .assert_error(400, "VALIDATION_ERROR", "invalid_json");
    send(raw(Vec::new()))
        .await
        .assert_error(400, "VALIDATION_ERROR", "empty_body");
    send(raw(vec![0xff, 0xfe, 0x00]))
        .await
        .assert_error(400, "VALIDATION_ERROR", "invalid_json");
    let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(1024 * 1024 + 1));
    send(raw(huge.into_bytes()))
        .await
        .assert_error(413, "PAYLOAD_TOO_LARGE", "payload_too_large");

    let message = api
        .post(
            "/api/v1/apps",
            json!({"name": "x", "slug": "x", "colour": "red"}),
        )
        .await
        .assert_error(422, "VALIDATION_ERROR", "unknown_field");
    assert!(message.contains("colour"), "{message}");
    let message = api
        .post("/api/v1/apps", json!({"name": 5, "slug": "x"}))
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_field");
    assert!(message.contains("name"), "{message}");
    api.post("/api/v1/apps", json!({"slug": "x"}))
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_field");
    api.post("/api/v1/apps", json!([1, 2])).await.assert_error(
        422,
        "VALIDATION_ERROR",
        "invalid_field",
    );
    api.post("/api/v1/apps", json!({"name": "x", "slug": "Not A Slug"}))
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_field");
    api.post(
        "/api/v1/apps",
        json!({"name": "x", "slug": "x", "key_prefix": "sk"}),
    )
    .await
    .assert_error(422, "VALIDATION_ERROR", "reserved_key_prefix");
    server.stop().await;
}

#[tokio::test]
async fn a_secret_in_the_wrong_field_is_not_echoed() {
    let server = TestServer::start().await;
    let api = server.api();
    let message = api
        .post(
            "/api/v1/keys/verify",
            json!({"key": "x", "credits_cost": server.live_key}),
        )
        .await
        .assert_error(422, "VALIDATION_ERROR", "invalid_field");
    assert!(!message.contains(&server.live_key), "{message}");
    let mut as_field_name = serde_json::Map::new();
    as_field_name.insert(server.live_key.clone(), json!(1));
    let message = api
        .post(
            "/api/v1/keys/verify",
            serde_json::Value::Object(as_field_name),
        )
        .await
        .assert_error(422, "VALIDATION_ERROR", "unknown_field");
    assert!(!message.contains(&server.live_key), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn bad_authorization_headers_get_401() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/apps", server.base);
    let valid = server.live_key.clone();
    let mut wrong_checksum = valid.clone();
    let last = wrong_checksum.pop().unwrap();
    wrong_checksum.push(if last == 'a' { 'b' } else { 'a' });
    let long = "a".repeat(10 * 1024);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("no scheme", Some(valid.clone())),
        ("wrong scheme", Some(format!("Basic {valid}"))),
        ("empty", Some(String::new())),
        ("empty bearer", Some("Bearer ".to_owned())),
        ("10 KB", Some(format!("Bearer {long}"))),
        ("wrong checksum", Some(format!("Bearer {wrong_checksum}"))),
        (
            "truncated",
            Some(format!("Bearer {}", &valid[..valid.len() - 3])),
        ),
        ("wrong prefix", Some(format!("Bearer xx{}", &valid[2..]))),
        (
            "unknown but well formed",
            Some(format!(
                "Bearer {}",
                server.api().create_key_for_auth_test().await
            )),
        ),
    ];
    for (case, header) in cases {
        let mut request = http.get(&url);
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let reply = send(request).await;
        let message = reply.assert_error(401, "AUTHENTICATION_ERROR", "invalid_api_key");
        assert!(!message.contains(&valid), "{case}");
        assert_eq!(reply.headers["www-authenticate"], "Bearer", "{case}");
    }
    // Non-ASCII bytes in the header value.
    let reply = send(http.get(&url).header(
        "authorization",
        reqwest::header::HeaderValue::from_bytes(b"Bearer \xc3\xa9t\xc3\xa9").unwrap(),
    ))
    .await;
    reply.assert_error(401, "AUTHENTICATION_ERROR", "invalid_api_key");
    // An app key is not a root key.
    server.stop().await;
}

impl crate::testkit::Api {
    /// A key that is well formed, with a valid checksum, but was never issued as a root key:
    /// an app key of this server.
    async fn create_key_for_auth_test(&self) -> String {
        self.create_app("auth-test", &[]).await;
        let key = self
            .create_key("auth-test", json!({"name": "not root"}))
            .await;
        key["secret"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    let server = TestServer::start().await;
    let api = server.api();
    api.get("/api/v1/does-not-exist")
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "route_not_found");
    api.call(Method::PUT, "/api/v1/apps", Some(json!({})))
        .await
        .assert_error(405, "NOT_FOUND_ERROR", "method_not_allowed");
    server.stop().await;
}
