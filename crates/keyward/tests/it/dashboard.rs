//! The dashboard over plain HTTP against the real server: sign-in and its cookie, CSRF on
//! every state change, secrets shown once, escaping, headers, environments, and a revoked
//! root key ending its session. The browser tests are in `browser.rs`.

use reqwest::header::{HeaderMap, COOKIE, HOST, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::json;

use crate::testkit::TestServer;

/// A browser without a browser: keeps the dashboard's cookies, follows no redirects.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub html: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    /// The page's CSRF token (every signed-in page has one in its header forms).
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self
            .html
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF token in {}", self.html))
            + marker.len();
        self.html[start..start + 32].to_owned()
    }

    /// The `value` of the input with this id.
    pub fn input(&self, id: &str) -> String {
        let marker = format!("id=\"{id}\"");
        let at = self
            .html
            .find(&marker)
            .unwrap_or_else(|| panic!("no #{id}"));
        let value = self.html[at..].find("value=\"").unwrap() + at + 7;
        let end = self.html[value..].find('"').unwrap() + value;
        self.html[value..end].to_owned()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect()
    }
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookies: Vec::new(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie_line = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = if cookie_line.is_empty() {
            request
        } else {
            request.header(COOKIE, cookie_line)
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        for line in headers.get_all(SET_COOKIE) {
            let line = line.to_str().unwrap();
            let (pair, attributes) = line.split_once(';').unwrap_or((line, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(kept, _)| kept != name);
            if !attributes.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let html = response.text().await.unwrap();
        Page {
            status,
            headers,
            html,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }

    pub async fn sign_in(&mut self, root_key: &str) -> Page {
        self.sign_in_at("/dashboard/sign-in", root_key).await
    }

    /// Signs in with the form at `path` (e.g. the one for another environment).
    pub async fn sign_in_at(&mut self, path: &str, root_key: &str) -> Page {
        let form = self.get(path).await;
        let csrf = form.csrf();
        self.post(
            "/dashboard/sign-in",
            &[("csrf", &csrf), ("root_key", root_key)],
        )
        .await
    }

    /// The cookies it holds, to hand to another browser (a stolen copy).
    pub fn clone_cookies(&self) -> Vec<(String, String)> {
        self.cookies.clone()
    }

    pub fn with_cookies(base: &str, cookies: Vec<(String, String)>) -> Self {
        Self {
            cookies,
            ..Self::new(base)
        }
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.cookies.iter().any(|(kept, _)| kept == name)
    }
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it() {
    let server = TestServer::start().await;
    let mut browser = Browser::new(&server.base);
    let page = browser.get("/dashboard/apps").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/sign-in");

    // A wrong key is refused on the form, and never echoed back.
    let refused = browser.sign_in("sk_live_notakey000000000000").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.html.contains("Keyward refused that key"));
    assert!(!refused.html.contains("sk_live_notakey"));
    let refused = browser.sign_in("kw_live_notarootkey").await;
    assert!(refused.html.contains("That is not a root key"));

    let signed_in = browser.sign_in(&server.live_key).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.html
    );
    assert_eq!(signed_in.location(), "/dashboard");
    let session = signed_in
        .set_cookies()
        .into_iter()
        .find(|cookie| cookie.starts_with("kw_session="))
        .unwrap();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/dashboard",
        "Max-Age=28800",
    ] {
        assert!(session.contains(attribute), "{session}");
    }
    // Plain HTTP on a loopback address: a Secure cookie would never come back.
    assert!(!session.contains("Secure"), "{session}");
    // The cookie is sealed: the key is not in it, in any encoding we can think of.
    assert!(!session.contains(&server.live_key));

    let overview = browser.get("/dashboard").await;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(overview.html.contains("<h1>Overview</h1>"));
    assert!(!overview.html.contains(&server.live_key));

    let csrf = overview.csrf();
    let out = browser
        .post("/dashboard/sign-out", &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(!browser.has_cookie("kw_session"));
    let page = browser.get("/dashboard/apps").await;
    assert_eq!(page.location(), "/dashboard/sign-in");
    server.stop().await;
}

#[tokio::test]
async fn cookies_are_secure_on_any_address_but_loopback() {
    let server = TestServer::start().await;
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/dashboard/sign-in", server.base))
        .header(HOST, "keyward.example")
        .send()
        .await
        .unwrap();
    let cookie = page.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    server.stop().await;
}

#[tokio::test]
async fn every_state_change_needs_the_session_csrf_token() {
    let server = TestServer::start().await;
    let mut browser = Browser::new(&server.base);
    browser.sign_in(&server.live_key).await;
    let page = browser.get("/dashboard/apps/new").await;
    let csrf = page.csrf();
    let app = [
        ("name", "Orders"),
        ("slug", "orders"),
        ("permissions", "read"),
    ];
    for token in [None, Some("0".repeat(32)), Some(csrf[..31].to_owned())] {
        let mut form = app.to_vec();
        if let Some(token) = &token {
            form.push(("csrf", token));
        }
        let refused = browser.post("/dashboard/apps", &form).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{token:?}");
        assert!(refused.html.contains("CSRF"));
    }
    // Nothing was made.
    let apps = server.api().get("/api/v1/apps").await;
    assert_eq!(apps.body["data"], json!([]));
    // Sign-out, environment switches and sign-in are state changes too.
    for path in ["/dashboard/sign-out", "/dashboard/environment"] {
        let refused = browser.post(path, &[("environment", "test")]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
    }
    let mut stranger = Browser::new(&server.base);
    let refused = stranger
        .post(
            "/dashboard/sign-in",
            &[("csrf", &csrf), ("root_key", &server.live_key)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!stranger.has_cookie("kw_session"));

    // With the token, the same form works.
    let mut form = app.to_vec();
    form.push(("csrf", &csrf));
    let made = browser.post("/dashboard/apps", &form).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.html);
    assert_eq!(made.location(), "/dashboard/apps/orders");
    // A form that is not a form is refused before anything is read.
    let not_a_form = reqwest::Client::new()
        .post(format!("{}/dashboard/apps", server.base))
        .header(COOKIE, format!("kw_session={}", cookie_value(&browser)))
        .header("content-type", "application/json")
        .body(format!("{{\"csrf\":\"{csrf}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_a_form.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

fn cookie_value(browser: &Browser) -> String {
    browser
        .cookies
        .iter()
        .find(|(name, _)| name == "kw_session")
        .map(|(_, value)| value.clone())
        .unwrap()
}

#[tokio::test]
async fn a_secret_is_shown_once_and_on_no_page_after() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("orders", &["read", "write"]).await;
    let mut browser = Browser::new(&server.base);
    browser.sign_in(&server.live_key).await;
    let form = browser.get("/dashboard/apps/orders/keys/new").await;
    let csrf = form.csrf();
    let revealed = browser
        .post(
            "/dashboard/apps/orders/keys",
            &[
                ("csrf", &csrf),
                ("name", "Checkout"),
                ("owner_user_id", "usr_1"),
                ("permissions", "read"),
                ("credits", "100"),
                ("refill_interval", "monthly"),
                ("refill_amount", "100"),
            ],
        )
        .await;
    assert_eq!(revealed.status, StatusCode::OK, "{}", revealed.html);
    assert!(revealed.html.contains("you will not see this again"));
    assert_eq!(revealed.headers.get("cache-control").unwrap(), "no-store");
    let secret = revealed.input("secret-1");
    assert!(secret.starts_with("kw_live_"), "{secret}");
    let verdict = api.verify(&secret, Some("read")).await;
    assert_eq!(verdict["code"], "VALID");
    assert_eq!(verdict["owner_user_id"], "usr_1");
    assert_eq!(verdict["credits"]["remaining"], 99);

    let key_id = verdict["key_id"].as_str().unwrap().to_owned();
    for path in [
        "/dashboard".to_owned(),
        "/dashboard/apps".to_owned(),
        "/dashboard/apps/orders".to_owned(),
        format!("/dashboard/keys/{key_id}"),
        format!("/dashboard/keys/{key_id}?range=1h"),
        "/dashboard/audit-log".to_owned(),
        "/dashboard/root-keys".to_owned(),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.html.contains(&secret), "{path} shows the secret");
        assert!(
            !page.html.contains(&server.live_key),
            "{path} shows the root key"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn names_users_chose_are_escaped() {
    let server = TestServer::start().await;
    let api = server.api();
    let hostile = "<script>alert(1)</script>";
    api.post(
        "/api/v1/apps",
        json!({"name": hostile, "slug": "hostile", "permissions": ["read"]}),
    )
    .await
    .assert_status(201);
    api.create_key(
        "hostile",
        json!({"name": hostile, "owner_user_id": "<b>bold</b>"}),
    )
    .await;
    let mut browser = Browser::new(&server.base);
    browser.sign_in(&server.live_key).await;
    for path in [
        "/dashboard/apps",
        "/dashboard/apps/hostile",
        "/dashboard/apps/hostile/keys/new",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(!page.html.contains(hostile), "{path}");
        assert!(!page.html.contains("<b>bold</b>"), "{path}");
        assert!(
            page.html
                .contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                || page.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {}",
            page.html
        );
        let policy = page.headers.get("content-security-policy").unwrap();
        assert!(policy.to_str().unwrap().contains("script-src 'self'"));
        assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY");
    }
    server.stop().await;
}

#[tokio::test]
async fn environments_switch_with_a_key_for_each_and_test_data_is_marked() {
    let server = TestServer::start().await;
    server.api().create_app("live-only", &[]).await;
    let mut browser = Browser::new(&server.base);
    browser.sign_in(&server.live_key).await;
    let live = browser.get("/dashboard/apps").await;
    assert!(live.html.contains("live-only"));
    assert!(!live.html.contains("Test data"));

    // No test key yet: the switch asks for one.
    let csrf = live.csrf();
    let switch = browser
        .post(
            "/dashboard/environment",
            &[("csrf", &csrf), ("environment", "test")],
        )
        .await;
    assert_eq!(switch.location(), "/dashboard/sign-in?environment=test");
    let form = browser.get(switch.location()).await;
    assert!(form
        .html
        .contains("for the <strong>test</strong> environment"));
    let signed_in = browser
        .sign_in_at(switch.location(), &server.test_key)
        .await;
    assert_eq!(signed_in.location(), "/dashboard");
    let test = browser.get("/dashboard/apps").await;
    assert!(test.html.contains("Test data"), "{}", test.html);
    assert!(!test.html.contains("live-only"));

    // Both keys are in the session now: the switch goes straight back.
    let csrf = test.csrf();
    let back = browser
        .post(
            "/dashboard/environment",
            &[("csrf", &csrf), ("environment", "live")],
        )
        .await;
    assert_eq!(back.location(), "/dashboard");
    let live = browser.get("/dashboard/apps").await;
    assert!(live.html.contains("live-only"));
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_root_key_ends_its_session() {
    let server = TestServer::start().await;
    let api = server.api();
    let operator = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "operator", "scopes": ["apps:read", "keys:read"]}),
        )
        .await
        .assert_status(201)
        .clone();
    let mut browser = Browser::new(&server.base);
    let signed_in = browser.sign_in(operator["secret"].as_str().unwrap()).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    // A page the key has no scope for says so, and the session stays.
    let refused = browser.get("/dashboard/root-keys").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(browser.has_cookie("kw_session"));

    api.post(
        &format!(
            "/api/v1/root-keys/{}/revoke",
            operator["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await
    .assert_status(200);
    let page = browser.get("/dashboard/apps").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/sign-in?reason=key_revoked");
    assert!(!browser.has_cookie("kw_session"));
    let sign_in = browser.get(page.location()).await;
    assert!(sign_in.html.contains("Your root key was revoked"));
    server.stop().await;
}

#[tokio::test]
async fn every_page_renders_for_a_full_root_key() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("orders", &["read"]).await;
    let key = api.create_key("orders", json!({"name": "k"})).await;
    let mut browser = Browser::new(&server.base);
    browser.sign_in(&server.live_key).await;
    let key_id = key["id"].as_str().unwrap();
    for path in [
        "/dashboard".to_owned(),
        "/dashboard/apps".to_owned(),
        "/dashboard/apps/new".to_owned(),
        "/dashboard/apps/orders".to_owned(),
        "/dashboard/apps/orders?status=revoked&search=k&owner_user_id=&organization_id=".to_owned(),
        "/dashboard/apps/orders/keys/new".to_owned(),
        format!("/dashboard/keys/{key_id}?range=30d"),
        "/dashboard/organizations".to_owned(),
        "/dashboard/organizations?id=org_1".to_owned(),
        "/dashboard/schemes".to_owned(),
        "/dashboard/root-keys".to_owned(),
        "/dashboard/public-keys".to_owned(),
        "/dashboard/signing-keys".to_owned(),
        "/dashboard/workspace-keys".to_owned(),
        "/dashboard/webhooks".to_owned(),
        "/dashboard/settings".to_owned(),
        "/dashboard/audit-log".to_owned(),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.html);
        assert!(page.html.contains("aria-current=\"page\""), "{path}");
    }
    for (path, status) in [
        ("/dashboard/apps/nope", StatusCode::NOT_FOUND),
        ("/dashboard/keys/key_nope", StatusCode::NOT_FOUND),
        ("/dashboard/no/such/page", StatusCode::NOT_FOUND),
        ("/dashboard/assets/nope.js", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(browser.get(path).await.status, status, "{path}");
    }
    let style = browser.get("/dashboard/assets/app.css").await;
    assert_eq!(style.status, StatusCode::OK);
    assert_eq!(
        style.headers.get("content-type").unwrap(),
        "text/css; charset=utf-8"
    );
    server.stop().await;
}

#[tokio::test]
async fn other_credentials_are_managed_and_their_secrets_shown_once() {
    let server = TestServer::start().await;
    let mut browser = Browser::new(&server.base);
    browser.sign_in(&server.live_key).await;
    let csrf = browser.get("/dashboard/signing-keys").await.csrf();

    let signing = browser
        .post(
            "/dashboard/signing-keys",
            &[("csrf", &csrf), ("name", "backend")],
        )
        .await;
    assert_eq!(signing.status, StatusCode::OK, "{}", signing.html);
    assert!(signing.html.contains("-----BEGIN PRIVATE KEY-----"));
    let base64 = signing.input("secret-2");
    assert!(!base64.is_empty());
    let listed = browser.get("/dashboard/signing-keys").await;
    assert!(listed.html.contains("backend"));
    assert!(!listed.html.contains("BEGIN PRIVATE KEY"));
    assert!(!listed.html.contains(&base64));

    let workspace = browser
        .post(
            "/dashboard/workspace-keys",
            &[("csrf", &csrf), ("name", "jobs"), ("scopes", "keys:read")],
        )
        .await;
    let secret = workspace.input("secret-2");
    assert!(!secret.is_empty());
    let listed = browser.get("/dashboard/workspace-keys").await;
    assert!(listed.html.contains("jobs"));
    assert!(!listed.html.contains(&secret));

    let root = browser
        .post(
            "/dashboard/root-keys",
            &[
                ("csrf", &csrf),
                ("name", "ci"),
                ("scopes", "keys:read"),
                ("scopes", "verify"),
            ],
        )
        .await;
    let root_secret = root.input("secret-1");
    assert!(root_secret.starts_with("sk_live_"));
    let reply = server.api_with(&root_secret).get("/api/v1/apps").await;
    reply.assert_error(403, "PERMISSION_ERROR", "insufficient_scope");

    let public = browser
        .post(
            "/dashboard/public-keys",
            &[("csrf", &csrf), ("key_type", "client"), ("name", "web")],
        )
        .await;
    assert_eq!(public.status, StatusCode::SEE_OTHER, "{}", public.html);
    let listed = browser.get("/dashboard/public-keys").await;
    assert!(listed.html.contains("pk_live_"));

    // A refusal from the API shows on the form's page, in words.
    let refused = browser
        .post(
            "/dashboard/schemes",
            &[("csrf", &csrf), ("slug", "tier"), ("windows", "10/0")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.html.contains("notice error"), "{}", refused.html);
    let made = browser
        .post(
            "/dashboard/schemes",
            &[
                ("csrf", &csrf),
                ("slug", "tier"),
                ("windows", "10/1, 1000/3600"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.html);
    let organization = browser
        .post(
            "/dashboard/organizations",
            &[
                ("csrf", &csrf),
                ("id", "org_acme"),
                ("rate_limit_scheme", "tier"),
                ("credit_cap", "500"),
                ("credit_period", "monthly"),
            ],
        )
        .await;
    assert_eq!(
        organization.status,
        StatusCode::SEE_OTHER,
        "{}",
        organization.html
    );
    let stored = server.api().get("/api/v1/organizations/org_acme").await;
    assert_eq!(stored.body["credit_cap"], 500);
    assert_eq!(stored.body["rate_limit_scheme"], "tier");

    let settings = browser
        .post(
            "/dashboard/settings",
            &[("csrf", &csrf), ("enhanced_security", "on")],
        )
        .await;
    assert_eq!(settings.status, StatusCode::SEE_OTHER);
    let environment = server.api().get("/api/v1/environment").await;
    assert_eq!(environment.body["enhanced_security"], true);
    server.stop().await;
}

#[tokio::test]
async fn webhook_endpoints_are_managed_and_their_secret_shown_once() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut browser = Browser::new(&server.base);
    browser.sign_in(&server.live_key).await;
    let list = browser.get("/dashboard/webhooks").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.html);
    assert!(list
        .html
        .contains("<a href=\"/dashboard/webhooks\" aria-current=\"page\">Webhooks</a>"));
    assert!(list.html.contains("No endpoints yet"));
    let csrf = list.csrf();

    // A URL the server refuses shows on the form, with what was typed kept.
    let refused = browser
        .post(
            "/dashboard/webhooks",
            &[
                ("csrf", &csrf),
                ("url", "http://127.0.0.1:9/hook"),
                ("description", "kept"),
                ("events", "key.leaked"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.html.contains("notice error"), "{}", refused.html);
    assert!(refused.html.contains("value=\"kept\""));
    assert!(refused.html.contains("value=\"key.leaked\" checked"));

    let hostile = "<script>alert(1)</script>";
    let revealed = browser
        .post(
            "/dashboard/webhooks",
            &[
                ("csrf", &csrf),
                ("url", "https://example.com/hook"),
                ("description", hostile),
                ("events", "key.revoked"),
                ("events", "key.leaked"),
            ],
        )
        .await;
    assert_eq!(revealed.status, StatusCode::OK, "{}", revealed.html);
    assert!(revealed.html.contains("you will not see this again"));
    assert_eq!(revealed.headers.get("cache-control").unwrap(), "no-store");
    let secret = revealed.input("secret-1");
    assert!(secret.starts_with("whsec_"), "{secret}");

    let stored = api.get("/api/v1/webhook-endpoints").await;
    let endpoint = &stored.assert_status(200)["data"][0];
    assert_eq!(endpoint["url"], "https://example.com/hook");
    assert_eq!(endpoint["events"], json!(["key.leaked", "key.revoked"]));
    let id = endpoint["id"].as_str().unwrap().to_owned();
    let page_path = format!("/dashboard/webhooks/{id}");

    let listed = browser.get("/dashboard/webhooks").await;
    assert!(listed.html.contains("https://example.com/hook"));
    assert!(listed.html.contains("key.leaked, key.revoked"));
    assert!(listed.html.contains(&page_path));
    for page in [&listed, &browser.get(&page_path).await] {
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        assert!(!page.html.contains(&secret));
        assert!(!page.html.contains(hostile));
        assert!(page.html.contains("&#60;script&#62;") || page.html.contains("&lt;script&gt;"));
    }

    // A test event, with the session's token only.
    let test_path = format!("{page_path}/test");
    let refused = browser.post(&test_path, &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let sent = browser.post(&test_path, &[("csrf", &csrf)]).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.html);
    assert_eq!(sent.location(), format!("{page_path}?done=test"));
    let shown = browser.get(sent.location()).await;
    assert!(
        shown.html.contains("A test event was queued"),
        "{}",
        shown.html
    );
    assert!(shown.html.contains("webhook.test"), "{}", shown.html);
    assert!(shown.html.contains("/deliveries/whd_"), "{}", shown.html);
    let deliveries = api
        .get(&format!("/api/v1/webhook-endpoints/{id}/deliveries"))
        .await;
    let delivery = deliveries.assert_status(200)["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let retried = browser
        .post(
            &format!("{page_path}/deliveries/{delivery}/retry"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(retried.location(), format!("{page_path}?done=retry"));

    // Rotation shows the new secret once, and neither secret shows after.
    let rotated = browser
        .post(&format!("{page_path}/rotate"), &[("csrf", &csrf)])
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.html);
    let new_secret = rotated.input("secret-1");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);

    let disabled = browser
        .post(&format!("{page_path}/disable"), &[("csrf", &csrf)])
        .await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER, "{}", disabled.html);
    let stored = api.get(&format!("/api/v1/webhook-endpoints/{id}")).await;
    assert_eq!(stored.assert_status(200)["enabled"], false);
    let shown = browser.get(disabled.location()).await;
    assert!(
        shown.html.contains("This endpoint is off"),
        "{}",
        shown.html
    );
    assert!(shown.html.contains("Enable endpoint"));
    assert!(!shown.html.contains(&secret) && !shown.html.contains(&new_secret));
    let listed = browser.get("/dashboard/webhooks").await;
    assert!(listed.html.contains("status-disabled"));

    let deleted = browser
        .post(&format!("{page_path}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        deleted.location(),
        "/dashboard/webhooks",
        "{}",
        deleted.html
    );
    assert_eq!(browser.get(&page_path).await.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn the_leaked_key_action_is_chosen_on_the_security_page() {
    let server = TestServer::start().await;
    let mut browser = Browser::new(&server.base);
    browser.sign_in(&server.live_key).await;
    let page = browser.get("/dashboard/settings").await;
    assert!(page.html.contains("<option value=\"revoke\" selected>"));
    let saved = browser
        .post(
            "/dashboard/settings",
            &[
                ("csrf", &page.csrf()),
                ("enhanced_security", "on"),
                ("leaked_key_action", "notify"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.html);
    let environment = server.api().get("/api/v1/environment").await;
    assert_eq!(environment.body["leaked_key_action"], "notify");
    let page = browser.get("/dashboard/settings").await;
    assert!(page.html.contains("<option value=\"notify\" selected>"));
    server.stop().await;
}
