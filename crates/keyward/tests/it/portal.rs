//! Customer portal sessions (SPEC §4.10) against the real server: links made by a backend's
//! key for one customer, opened once, and refused when asked for beyond the maker's scopes.

use serde_json::{json, Value};

use crate::dashboard::Browser;
use crate::testkit::{Api, TestServer};

/// A portal link for `body`, asked for with `api`'s key.
pub async fn portal_link(api: &Api, body: Value) -> Value {
    api.post("/api/v1/portal/sessions", body)
        .await
        .assert_status(201)
        .clone()
}

/// A root key with `keys:write` (and `extra` fields), as a team's backend holds: the key
/// as the API described it, and a client that calls with it.
async fn backend_key(api: &Api, extra: Value) -> (Value, Api) {
    let mut body = json!({"name": "backend", "scopes": ["keys:write"]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let maker = api
        .post("/api/v1/root-keys", body)
        .await
        .assert_status(201)
        .clone();
    let backend = Api::new(&api.base, maker["secret"].as_str().unwrap());
    (maker, backend)
}

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
    let link = portal_link(
        &api,
        json!({"owner_user_id": "usr_1", "app": "reports", "permissions": ["read"],
                   "return_url": "https://app.example.com/settings"}),
    )
    .await;
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

    // A link checker's HEAD does not spend it.
    let checked = reqwest::Client::new()
        .head(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(checked.status(), 200);

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
        (json!({"permissions": ["admin"]}), "permission_not_in_app"),
        (json!({"max_keys": 0}), "invalid_max_keys"),
        (json!({"owner_user_id": " "}), "invalid_field"),
        (json!({"owner_user_id": "usr\u{7}"}), "invalid_field"),
        (json!({"owner_user_id": "u".repeat(201)}), "invalid_field"),
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
    let (maker, backend) = backend_key(&api, json!({})).await;
    let link = portal_link(&backend, body(json!({}))).await;
    let opened = redeem(&api, &code_of(&link)).await;
    assert_eq!(
        opened.assert_status(200)["shows_usage"],
        true,
        "keys:write reads usage too"
    );
    let second = portal_link(&backend, body(json!({}))).await;
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

/// Opens a portal link in a fresh browser, which then holds the session's cookie.
async fn open_portal(server: &TestServer, body: Value) -> Browser {
    let link = portal_link(&server.api(), body).await;
    let mut browser = Browser::new(&server.base);
    let entered = browser
        .get(&format!("/portal/enter/{}", code_of(&link)))
        .await;
    assert_eq!(entered.status, 303, "{}", entered.html);
    assert_eq!(entered.location(), "/portal");
    assert_eq!(entered.headers["referrer-policy"], "no-referrer");
    let cookie = entered.set_cookies().join("\n");
    for attribute in [
        "kw_portal=",
        "Path=/portal",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    browser
}

#[tokio::test]
async fn the_portal_shows_and_changes_only_the_customers_own_keys() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("reports", &["read", "write"]).await;
    api.create_app("billing", &["read"]).await;
    let theirs = api
        .create_key(
            "reports",
            json!({"name": "someone else's", "owner_user_id": "usr_2"}),
        )
        .await;
    let other_app = api
        .create_key(
            "billing",
            json!({"name": "billing key", "owner_user_id": "usr_1"}),
        )
        .await;
    let mine = api
        .create_key(
            "reports",
            json!({"name": "my old key", "owner_user_id": "usr_1"}),
        )
        .await;

    let mut browser = open_portal(
        &server,
        json!({"owner_user_id": "usr_1", "app": "reports",
               "return_url": "https://app.example.com/settings"}),
    )
    .await;
    let page = browser.get("/portal").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("my old key"));
    assert!(!page.html.contains("someone else"));
    assert!(!page.html.contains("billing key"));
    assert!(page
        .html
        .contains("href=\"https://app.example.com/settings\""));
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let csrf = page.csrf();

    // Another customer's key, and the customer's own key of another app, do not exist here.
    for key in [&theirs, &other_app] {
        let id = key["id"].as_str().unwrap();
        assert_eq!(browser.get(&format!("/portal/keys/{id}")).await.status, 404);
        let refused = browser
            .post(&format!("/portal/keys/{id}/revoke"), &[("csrf", &csrf)])
            .await;
        assert_eq!(refused.status, 404, "{}", refused.html);
        assert_eq!(
            api.verify_code(key["secret"].as_str().unwrap()).await,
            "VALID"
        );
    }

    // Every change needs the session's CSRF token.
    let forged = browser
        .post(
            "/portal/keys",
            &[("csrf", "0".repeat(32).as_str()), ("name", "x")],
        )
        .await;
    assert_eq!(forged.status, 403);

    // A key made here, its name escaped and its secret shown once.
    let made = browser
        .post(
            "/portal/keys",
            &[
                ("csrf", &csrf),
                ("name", "<script>alert(1)</script>"),
                ("permission", "read"),
            ],
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.html);
    assert!(!made.html.contains("<script>alert(1)"));
    assert!(made.html.contains("&#60;script&#62;") || made.html.contains("&lt;script&gt;"));
    let secret = made.input("secret");
    let verdict = api.verify(&secret, Some("read")).await;
    assert_eq!(verdict["code"], "VALID", "{verdict:#}");
    assert_eq!(verdict["owner_user_id"], "usr_1");
    assert_eq!(verdict["permissions"], json!(["read"]));
    let list = browser.get("/portal").await;
    assert!(!list.html.contains(&secret), "a secret shows once");
    let audit = api.get("/api/v1/audit-log?action=key.create").await;
    let actor = audit.assert_status(200)["data"][0]["actor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        actor.starts_with("ps_") && actor.ends_with(":usr_1"),
        "{actor}"
    );

    // A permission beyond the session's is refused.
    let beyond = browser
        .post(
            "/portal/keys",
            &[("csrf", &csrf), ("name", "more"), ("permission", "admin")],
        )
        .await;
    assert!(
        beyond.html.contains("not a permission you may give"),
        "{}",
        beyond.html
    );

    // Revoked from the portal: refused at once.
    let id = mine["id"].as_str().unwrap();
    let confirm = browser.get(&format!("/portal/keys/{id}/revoke")).await;
    assert!(confirm.html.contains("Revoke my old key?"));
    let revoked = browser
        .post(&format!("/portal/keys/{id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(revoked.location(), "/portal?done=revoked");
    assert_eq!(
        api.verify_code(mine["secret"].as_str().unwrap()).await,
        "KEY_REVOKED"
    );

    // Signed out: the session is over, even for a copy of its cookie.
    let copied = browser.clone_cookies();
    let out = browser.post("/portal/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 200);
    let mut thief = Browser::with_cookies(&server.base, copied);
    assert_eq!(thief.get("/portal").await.status, 401);
    server.stop().await;
}

#[tokio::test]
async fn an_unused_link_expires_and_a_customer_holds_at_most_max_keys() {
    let server = TestServer::start_with(keyward_server::ServerConfig {
        portal: keyward_server::PortalSettings {
            link_lifetime: std::time::Duration::from_millis(300),
            ..Default::default()
        },
        ..keyward_server::ServerConfig::default()
    })
    .await;
    let api = server.api();
    api.create_app("reports", &["read"]).await;
    let stale = portal_link(&api, json!({"owner_user_id": "usr_1", "app": "reports"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let mut late = Browser::new(&server.base);
    let spent = late
        .get(&format!("/portal/enter/{}", code_of(&stale)))
        .await;
    assert_eq!(spent.status, 404);
    assert!(spent.html.contains("This link no longer works"));
    assert!(!late.has_cookie("kw_portal"));

    // One key at most: the second is refused on the page, in words.
    let link = portal_link(
        &api,
        json!({"owner_user_id": "usr_1", "app": "reports", "max_keys": 1}),
    )
    .await;
    let mut browser = Browser::new(&server.base);
    let entered = browser
        .get(&format!("/portal/enter/{}", code_of(&link)))
        .await;
    assert_eq!(entered.status, 303);
    let csrf = browser.get("/portal").await.csrf();
    let first = browser
        .post("/portal/keys", &[("csrf", &csrf), ("name", "one")])
        .await;
    assert_eq!(first.status, 200, "{}", first.html);
    let second = browser
        .post("/portal/keys", &[("csrf", &csrf), ("name", "two")])
        .await;
    assert!(
        second.html.contains("class=\"notice error\""),
        "{}",
        second.html
    );
    let keys = api
        .get("/api/v1/apps/reports/keys?owner_user_id=usr_1")
        .await;
    assert_eq!(keys.assert_status(200)["data"].as_array().unwrap().len(), 1);

    // A session of the test environment says so.
    let test_api = server.api_with(&server.test_key);
    test_api.create_app("reports", &["read"]).await;
    let test_link = portal_link(
        &test_api,
        json!({"owner_user_id": "usr_1", "app": "reports"}),
    )
    .await;
    let mut tester = Browser::new(&server.base);
    tester
        .get(&format!("/portal/enter/{}", code_of(&test_link)))
        .await;
    assert!(tester.get("/portal").await.html.contains("Test keys"));
    server.stop().await;
}

#[tokio::test]
async fn a_session_naming_an_organization_sees_only_its_keys_and_ends_with_its_maker() {
    let server = TestServer::start().await;
    let api = server.api();
    for organization in ["org_a", "org_b"] {
        api.put(&format!("/api/v1/organizations/{organization}"), json!({}))
            .await
            .assert_status(200);
    }
    api.create_app("reports", &["read"]).await;
    let in_a = api
        .create_key(
            "reports",
            json!({"name": "team a key", "owner_user_id": "usr_1", "organization_id": "org_a"}),
        )
        .await;
    let in_b = api
        .create_key(
            "reports",
            json!({"name": "team b key", "owner_user_id": "usr_1", "organization_id": "org_b"}),
        )
        .await;
    let (maker, backend) = backend_key(&api, json!({})).await;
    let link = portal_link(
        &backend,
        json!({"owner_user_id": "usr_1", "app": "reports", "organization_id": "org_a"}),
    )
    .await;
    let mut browser = Browser::new(&server.base);
    browser
        .get(&format!("/portal/enter/{}", code_of(&link)))
        .await;
    let page = browser.get("/portal").await;
    assert!(page.html.contains("team a key"), "{}", page.html);
    assert!(!page.html.contains("team b key"));
    let other = in_b["id"].as_str().unwrap();
    assert_eq!(
        browser.get(&format!("/portal/keys/{other}")).await.status,
        404
    );
    let mine = in_a["id"].as_str().unwrap();
    assert_eq!(
        browser.get(&format!("/portal/keys/{mine}")).await.status,
        200
    );
    let made = browser
        .post("/portal/keys", &[("csrf", &page.csrf()), ("name", "new")])
        .await;
    let verdict = api.verify(&made.input("secret"), None).await;
    assert_eq!(verdict["organization_id"], "org_a", "{verdict:#}");

    // Its maker revoked, the open session is over.
    api.post(
        &format!("/api/v1/root-keys/{}/revoke", maker["id"].as_str().unwrap()),
        json!({}),
    )
    .await
    .assert_status(200);
    let over = browser.get("/portal").await;
    assert_eq!(over.status, 401);
    assert!(over.html.contains("Your session has ended"));
    server.stop().await;
}

/// A customer's calls are the session maker's: a rate-limited backend key cannot lend its
/// customers more calls than it has.
#[tokio::test]
async fn a_customers_calls_count_against_the_makers_limit() {
    let server = TestServer::start().await;
    let api = server.api();
    api.post(
        "/api/v1/rate-limit-schemes",
        json!({"slug": "backend", "windows": [{"limit": 3, "period_seconds": 86_400}]}),
    )
    .await
    .assert_status(201);
    api.create_app("reports", &["read"]).await;
    let (_, backend) = backend_key(&api, json!({"rate_limit_scheme": "backend"})).await;
    // The maker's own call: 1 of 3.
    let link = portal_link(
        &backend,
        json!({"owner_user_id": "usr_1", "app": "reports"}),
    )
    .await;
    let mut browser = Browser::new(&server.base);
    browser
        .get(&format!("/portal/enter/{}", code_of(&link)))
        .await;
    // The customer's list: 2 and 3 of 3; the next is refused, and so is the maker.
    for _ in 0..2 {
        assert_eq!(browser.get("/portal").await.status, 200);
    }
    assert_eq!(browser.get("/portal").await.status, 429);
    backend.get("/api/v1/apps/reports/keys").await.assert_error(
        429,
        "RATE_LIMIT_ERROR",
        "rate_limited",
    );
    server.stop().await;
}
