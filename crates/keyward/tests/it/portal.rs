//! Customer portal sessions (SPEC §4.10) against the real server: links made by a backend's
//! key for one customer, opened once, and refused when asked for beyond the maker's scopes.

use serde_json::{json, Value};

use crate::testkit::{Api, TestServer};

/// The one-time code at the end of a link.
fn code_of(link: &Value) -> String {
    let url = link["url"].as_str().unwrap();
    url.rsplit_once("/portal/enter/").unwrap().1.to_owned()
}

async fn redeem(api: &Api, code: &str) -> crate::testkit::Reply {
    api.post("/api/v1/portal/sessions/redeem", json!({ "code": code }))
        .await
}

#[tokio::test]
async fn a_link_opens_once_for_the_customer_it_names() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("reports", &["read", "write"]).await;
    let link = api
        .post(
            "/api/v1/portal/sessions",
            json!({"owner_user_id": "usr_1", "app": "reports", "permissions": ["read"],
                   "return_url": "https://app.example.com/settings"}),
        )
        .await
        .assert_status(201)
        .clone();
    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/portal/enter/", server.base)),
        "{url}"
    );
    let code = code_of(&link);
    assert_eq!(code.len(), 64, "256 random bits");
    assert!(link["expires_at"].as_str().is_some());

    // The code is a bearer secret of its own: nothing keeps it but its hash.
    let audit = api
        .get("/api/v1/audit-log?action=portal_session.create")
        .await;
    let entry = &audit.assert_status(200)["data"][0];
    assert_eq!(entry["details"]["owner_user_id"], "usr_1");
    assert!(!audit.body.to_string().contains(&code));

    let anyone = Api::new(&server.base, "");
    let opened = redeem(&anyone, &code).await;
    let session = opened.assert_status(200);
    assert!(session["id"].as_str().unwrap().starts_with("ps_"));
    assert_eq!(session["app"], "reports");
    assert_eq!(session["owner_user_id"], "usr_1");
    assert_eq!(session["permissions"], json!(["read"]));
    assert_eq!(session["return_url"], "https://app.example.com/settings");
    assert_eq!(session["shows_usage"], true);
    redeem(&anyone, &code)
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "portal_link_not_found");
    redeem(&anyone, &"0".repeat(64)).await.assert_error(
        404,
        "NOT_FOUND_ERROR",
        "portal_link_not_found",
    );
    server.stop().await;
}

#[tokio::test]
async fn links_are_refused_beyond_the_makers_scopes_and_for_bad_return_urls() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("reports", &["read"]).await;
    let reader = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "reader", "scopes": ["keys:read"]}),
        )
        .await
        .assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = |extra: Value| {
        let mut body = json!({"owner_user_id": "usr_1", "app": "reports"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    Api::new(&server.base, &reader)
        .post("/api/v1/portal/sessions", body(json!({})))
        .await
        .assert_error(403, "PERMISSION_ERROR", "insufficient_scope");
    for (extra, code) in [
        (
            json!({"return_url": "http://app.example.com/"}),
            "invalid_return_url",
        ),
        (
            json!({"return_url": "javascript:alert(1)"}),
            "invalid_return_url",
        ),
        (
            json!({"return_url": "https://user:pw@app.example.com/"}),
            "invalid_return_url",
        ),
        (json!({"return_url": "/relative"}), "invalid_return_url"),
        (json!({"permissions": ["admin"]}), "invalid_permissions"),
        (json!({"max_keys": 0}), "invalid_max_keys"),
        (json!({"owner_user_id": " "}), "invalid_owner_user_id"),
    ] {
        api.post("/api/v1/portal/sessions", body(extra.clone()))
            .await
            .assert_error(422, "VALIDATION_ERROR", code);
    }
    api.post("/api/v1/portal/sessions", body(json!({"app": "nope"})))
        .await
        .assert_error(404, "NOT_FOUND_ERROR", "app_not_found");
    api.post(
        "/api/v1/portal/sessions",
        body(json!({"organization_id": "org_nope"})),
    )
    .await
    .assert_error(404, "NOT_FOUND_ERROR", "organization_not_found");

    // A session ends with the key that made it: its link no longer opens.
    let maker = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "backend", "scopes": ["keys:write"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let link = Api::new(&server.base, maker["secret"].as_str().unwrap())
        .post("/api/v1/portal/sessions", body(json!({})))
        .await
        .assert_status(201)
        .clone();
    let opened = redeem(&api, &code_of(&link)).await;
    assert_eq!(
        opened.assert_status(200)["shows_usage"],
        true,
        "keys:write reads usage too"
    );
    let second = Api::new(&server.base, maker["secret"].as_str().unwrap())
        .post("/api/v1/portal/sessions", body(json!({})))
        .await
        .assert_status(201)
        .clone();
    api.post(
        &format!("/api/v1/root-keys/{}/revoke", maker["id"].as_str().unwrap()),
        json!({}),
    )
    .await
    .assert_status(200);
    redeem(&api, &code_of(&second)).await.assert_error(
        404,
        "NOT_FOUND_ERROR",
        "portal_link_not_found",
    );
    server.stop().await;
}
