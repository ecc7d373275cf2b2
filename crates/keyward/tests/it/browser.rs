//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver): sign in,
//! create an app, generate a key and verify it, rotate it, watch its usage chart draw,
//! revoke it, sign out; at desktop and phone widths, with screenshots under
//! `target/dashboard-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test says it was
//! skipped, unless `KEYWARD_TEST_BROWSER=required` (as `.ci/run` sets it), when it fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::testkit::{Api, TestServer};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    process: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// chromedriver, or why there is none.
async fn start_driver() -> Option<Driver> {
    let required = std::env::var("KEYWARD_TEST_BROWSER").is_ok_and(|value| value == "required");
    let present =
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists();
    if !present {
        assert!(
            !required,
            "KEYWARD_TEST_BROWSER=required but {CHROMEDRIVER} or {CHROMIUM} is missing \
             (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "skipped: the browser tests need Debian's chromium and chromium-driver \
             (.ci/run installs them)"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let process = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        process,
        url: format!("http://127.0.0.1:{port}"),
        _profile: tempfile::tempdir().unwrap(),
    };
    for _ in 0..100 {
        if reqwest::get(format!("{}/status", driver.url)).await.is_ok() {
            return Some(driver);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start on port {port}");
}

async fn open_browser(driver: &Driver) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// The element, once the page has it: a click that submits a form returns before the next
/// page has loaded.
async fn element(browser: &Client, locator: Locator<'_>) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(locator)
        .await
        .unwrap_or_else(|error| panic!("no {locator:?}: {error}"))
}

async fn fill(browser: &Client, id: &str, text: &str) {
    let field = element(browser, Locator::Id(id)).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(browser: &Client, css: &str) {
    element(browser, Locator::Css(css))
        .await
        .click()
        .await
        .unwrap();
}

async fn value_of(browser: &Client, id: &str) -> String {
    element(browser, Locator::Id(id))
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap()
}

async fn path_of(browser: &Client) -> String {
    let url = browser.current_url().await.unwrap();
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Waits until the browser is at `expected` (path and query), and fails if it never gets
/// there.
async fn arrive(browser: &Client, expected: &str) {
    let mut at = String::new();
    for _ in 0..100 {
        at = path_of(browser).await;
        if at == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the browser is at {at}, not {expected}");
}

/// Whether the page fits its window's width, with nothing to scroll sideways.
async fn fits_width(browser: &Client) -> bool {
    browser
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            Vec::new(),
        )
        .await
        .unwrap()
        == json!(true)
}

/// Rotates the key whose page is open, with no grace: the old secret is refused at once, the
/// new one (read from `#secret_field`) is verified `valid` times with `read` and `denied`
/// times with `write`, for the usage chart to show.
async fn rotate_on_page(
    browser: &Client,
    api: &Api,
    secret: &str,
    secret_field: &str,
    (valid, denied): (usize, usize),
) -> String {
    click(browser, "details:has(#confirm-rotate) summary").await;
    click(browser, "#confirm-rotate").await;
    let rotated = value_of(browser, secret_field).await;
    assert_ne!(rotated, secret);
    assert_ne!(api.verify_code(secret).await, "VALID");
    for _ in 0..valid {
        assert_eq!(api.verify_code(&rotated).await, "VALID");
    }
    for _ in 0..denied {
        let verdict = api.verify(&rotated, Some("write")).await;
        assert_eq!(verdict["code"], "INSUFFICIENT_PERMISSIONS");
    }
    rotated
}

/// Reloads `url` until its usage chart draws both valid and denied verifications (analytics
/// are flushed in the background).
async fn wait_for_chart(browser: &Client, url: &str) {
    for _ in 0..50 {
        browser.goto(url).await.unwrap();
        let valid = browser
            .find_all(Locator::Css("svg.chart rect.s-valid"))
            .await
            .unwrap();
        let denied = browser
            .find_all(Locator::Css("svg.chart rect.s-denied"))
            .await
            .unwrap();
        if !valid.is_empty() && !denied.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the usage chart at {url} never showed the verifications");
}

#[tokio::test]
async fn the_dashboard_works_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let server = TestServer::start().await;
    let browser = open_browser(&driver).await;
    let walk = walk_through(
        browser.clone(),
        server.base.clone(),
        server.live_key.clone(),
        server.api(),
    );
    finish_walk(walk, &browser, server, "failure").await;
}

/// Runs a walk-through on its own task, so that a failed assertion still leaves a
/// screenshot (`failure_shot`) and closes the browser and the server before it fails the test.
async fn finish_walk(
    walk: impl std::future::Future<Output = ()> + Send + 'static,
    browser: &Client,
    server: TestServer,
    failure_shot: &str,
) {
    let outcome = tokio::spawn(walk).await;
    if outcome.is_err() {
        screenshot(browser, failure_shot).await;
    }
    browser.clone().close().await.unwrap();
    server.stop().await;
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
}

async fn walk_through(browser: Client, base: String, live_key: String, api: Api) {
    let browser = &browser;
    let api = &api;
    // Signed out, every page leads to the sign-in form.
    browser.goto(&format!("{base}/dashboard")).await.unwrap();
    arrive(browser, "/dashboard/sign-in").await;
    screenshot(browser, "sign-in").await;
    fill(browser, "root_key", &live_key).await;
    click(
        browser,
        "form[action='/dashboard/sign-in'] button[type=submit]",
    )
    .await;
    arrive(browser, "/dashboard").await;
    // Scripts cannot read the session cookie.
    let cookies = browser
        .execute("return document.cookie;", Vec::new())
        .await
        .unwrap();
    assert_eq!(cookies, json!(""));

    // Create an app.
    browser
        .goto(&format!("{base}/dashboard/apps/new"))
        .await
        .unwrap();
    fill(browser, "name", "Orders API").await;
    fill(browser, "slug", "orders").await;
    fill(browser, "permissions", "read, write").await;
    click(
        browser,
        "form[action='/dashboard/apps'] button[type=submit]",
    )
    .await;
    arrive(browser, "/dashboard/apps/orders").await;

    // Generate a key; read its secret off the page; it verifies through the API.
    click(browser, "a[href='/dashboard/apps/orders/keys/new']").await;
    fill(browser, "name", "Checkout").await;
    fill(browser, "owner_user_id", "usr_42").await;
    click(browser, "input[name=permissions][value=read]").await;
    click(
        browser,
        "form[action='/dashboard/apps/orders/keys'] button[type=submit]",
    )
    .await;
    let secret = value_of(browser, "secret-1").await;
    assert!(secret.starts_with("kw_live_"), "{secret}");
    let verdict = api.verify(&secret, Some("read")).await;
    assert_eq!(verdict["code"], "VALID", "{verdict}");
    let key_id = verdict["key_id"].as_str().unwrap().to_owned();
    click(browser, "a.button").await;
    arrive(browser, &format!("/dashboard/keys/{key_id}")).await;

    // Rotate: the old secret stops at once, the new one works.
    let rotated = rotate_on_page(browser, api, &secret, "secret-1", (5, 2)).await;
    click(browser, "a.button").await;

    // The usage chart draws the verifications, split by outcome.
    wait_for_chart(browser, &format!("{base}/dashboard/keys/{key_id}?range=1h")).await;
    let legend = browser
        .find(Locator::Css(".legend"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(legend.contains("Valid: 6"), "{legend}");
    assert!(legend.contains("Insufficient permissions: 2"), "{legend}");
    screenshot(browser, "key-detail").await;

    // Revoke: the page shows it, and the API refuses the key.
    click(browser, "details:has(#confirm-revoke) summary").await;
    click(browser, "#confirm-revoke").await;
    let status = element(browser, Locator::Css("#key-status.status-revoked"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(status, "revoked");
    assert_eq!(api.verify_code(&rotated).await, "KEY_REVOKED");

    // The main pages, at desktop width and on a phone.
    for (width, height, size) in [(1280, 900, "desktop"), (390, 844, "phone")] {
        browser.set_window_size(width, height).await.unwrap();
        for (path, name) in [
            ("/dashboard".to_owned(), "overview"),
            ("/dashboard/apps".to_owned(), "apps"),
            ("/dashboard/apps/orders".to_owned(), "app-keys"),
            (format!("/dashboard/keys/{key_id}"), "key"),
            ("/dashboard/apps/orders/keys/new".to_owned(), "generate-key"),
            ("/dashboard/audit-log".to_owned(), "audit-log"),
        ] {
            browser.goto(&format!("{base}{path}")).await.unwrap();
            screenshot(browser, &format!("{name}-{size}")).await;
            if size == "phone" && name != "audit-log" {
                assert!(
                    fits_width(browser).await,
                    "{path} scrolls sideways on a phone"
                );
            }
        }
    }
    browser.set_window_size(1280, 900).await.unwrap();

    // Keyboard: the first Tab reaches the skip link.
    browser.goto(&format!("{base}/dashboard")).await.unwrap();
    let focused = browser
        .execute(
            "document.body.focus(); return document.querySelector('a.skip').textContent;",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(focused, json!("Skip to content"));

    // Sign out: pages lead to the sign-in form again.
    click(browser, "form.sign-out button").await;
    arrive(browser, "/dashboard/sign-in?reason=signed_out").await;
    browser
        .goto(&format!("{base}/dashboard/apps/orders"))
        .await
        .unwrap();
    arrive(browser, "/dashboard/sign-in").await;
}

/// The customer portal (SPEC §4.10): a backend's link opened in a real browser; a key made,
/// its secret read off the page and verified; rotated (the old secret refused), its usage
/// drawn, revoked; the link refused when reused; the list on a phone. Screenshots are
/// `portal-*.png` beside the dashboard's.
#[tokio::test]
async fn the_portal_works_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let server = TestServer::start().await;
    let browser = open_browser(&driver).await;
    let walk = portal_walk_through(browser.clone(), server.base.clone(), server.api());
    finish_walk(walk, &browser, server, "portal-failure").await;
}

async fn portal_walk_through(browser: Client, base: String, api: Api) {
    let browser = &browser;
    let api = &api;
    api.create_app("reports", &["read", "write"]).await;
    let link = crate::portal::portal_link(
        api,
        json!({"owner_user_id": "usr_7", "app": "reports",
               "return_url": "https://app.example.com/settings"}),
    )
    .await["url"]
        .as_str()
        .unwrap()
        .to_owned();

    // The link leads to the portal, and leaves the address bar without its code.
    browser.goto(&link).await.unwrap();
    arrive(browser, "/portal").await;
    let cookies = browser
        .execute("return document.cookie;", Vec::new())
        .await
        .unwrap();
    assert_eq!(cookies, json!(""), "scripts cannot read the session");
    let back = element(browser, Locator::Css("a.back"))
        .await
        .attr("href")
        .await
        .unwrap();
    assert_eq!(back.as_deref(), Some("https://app.example.com/settings"));
    screenshot(browser, "portal-keys-empty").await;

    // A key with one of the two permissions; its secret verifies through the API.
    fill(browser, "name", "Production").await;
    click(browser, "input[name=permission][value=write]").await;
    click(browser, "#create-key").await;
    let secret = value_of(browser, "secret").await;
    screenshot(browser, "portal-secret").await;
    let verdict = api.verify(&secret, Some("read")).await;
    assert_eq!(verdict["code"], "VALID", "{verdict}");
    assert_eq!(verdict["owner_user_id"], "usr_7");
    assert_eq!(verdict["permissions"], json!(["read"]));
    let key_id = verdict["key_id"].as_str().unwrap().to_owned();
    click(browser, "a.button").await;
    arrive(browser, &format!("/portal/keys/{key_id}")).await;

    // Rotate with no grace: the old secret is refused at once, the new one works.
    let rotated = rotate_on_page(browser, api, &secret, "secret", (4, 1)).await;

    // The usage chart draws them.
    wait_for_chart(browser, &format!("{base}/portal/keys/{key_id}?range=1h")).await;
    screenshot(browser, "portal-key").await;

    // Revoke, after a confirmation.
    click(browser, "#revoke-link").await;
    arrive(browser, &format!("/portal/keys/{key_id}/revoke")).await;
    screenshot(browser, "portal-revoke").await;
    click(browser, "#confirm-revoke").await;
    arrive(browser, "/portal?done=revoked").await;
    assert_eq!(api.verify_code(&rotated).await, "KEY_REVOKED");

    // On a phone.
    browser.set_window_size(390, 844).await.unwrap();
    browser.goto(&format!("{base}/portal")).await.unwrap();
    assert!(
        fits_width(browser).await,
        "the portal scrolls sideways on a phone"
    );
    screenshot(browser, "portal-keys-phone").await;
    browser
        .goto(&format!("{base}/portal/keys/{key_id}"))
        .await
        .unwrap();
    assert!(
        fits_width(browser).await,
        "a key's page scrolls sideways on a phone"
    );
    browser.set_window_size(1280, 900).await.unwrap();

    // The link, used again, is refused.
    browser.goto(&link).await.unwrap();
    let heading = element(browser, Locator::Css("h1"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(heading, "This link no longer works");
    screenshot(browser, "portal-link-spent").await;
}
