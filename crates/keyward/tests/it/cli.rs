//! Every CLI command, run as the real binary against a real server.

use serde_json::Value;

use crate::testkit::{keyward_binary, TestServer};

struct Cli<'a> {
    server: &'a TestServer,
}

impl Cli<'_> {
    /// Runs `keyward <args>` off the async runtime; returns (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut command = keyward_binary();
        command
            .args(args)
            .env("KEYWARD_URL", &self.server.base)
            .env("KEYWARD_API_KEY", &self.server.live_key);
        let output = tokio::task::spawn_blocking(move || command.output().expect("run keyward"))
            .await
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let (ok, stdout, stderr) = self.run(&with_json).await;
        assert!(ok, "keyward {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
    }
}

#[tokio::test]
async fn apps_and_keys_from_the_command_line() {
    let server = TestServer::start().await;
    let cli = Cli { server: &server };

    let app = cli
        .json(&[
            "apps",
            "create",
            "--name",
            "Acme",
            "--slug",
            "acme",
            "--key-prefix",
            "acme",
            "--permissions",
            "read,write",
        ])
        .await;
    assert_eq!(app["permissions"], serde_json::json!(["read", "write"]));
    let (ok, table, _) = cli.run(&["apps", "list"]).await;
    assert!(
        ok && table.contains("acme") && table.contains("read,write"),
        "{table}"
    );
    assert_eq!(cli.json(&["apps", "get", "acme"]).await["slug"], "acme");
    assert_eq!(
        cli.json(&["apps", "update", "acme", "--name", "Acme 2"])
            .await["name"],
        "Acme 2"
    );

    // A human-readable create prints the secret once, with a warning on stderr.
    let (ok, stdout, stderr) = cli
        .run(&["keys", "create", "--app", "acme", "--name", "human"])
        .await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("shown once"));
    assert!(
        stdout.lines().next().unwrap().starts_with("acme_live_"),
        "{stdout}"
    );

    let key = cli
        .json(&[
            "keys",
            "create",
            "--app",
            "acme",
            "--name",
            "scripted",
            "--owner",
            "usr_1",
            "--permissions",
            "read",
            "--meta",
            "{\"plan\":\"pro\"}",
            "--expires-at",
            "2099-01-01T00:00:00Z",
        ])
        .await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let id = key["id"].as_str().unwrap().to_owned();
    assert_eq!(key["meta"]["plan"], "pro");

    let listed = cli
        .json(&["keys", "list", "--app", "acme", "--limit", "1", "--all"])
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&secret));
    let (ok, table, _) = cli
        .run(&["keys", "list", "--app", "acme", "--owner", "usr_1"])
        .await;
    assert!(
        ok && table.contains(&id) && !table.contains("human"),
        "{table}"
    );
    assert_eq!(cli.json(&["keys", "get", &id]).await["name"], "scripted");

    assert_eq!(
        cli.json(&["keys", "verify", &secret, "--permissions", "read"])
            .await["code"],
        "VALID"
    );
    assert_eq!(
        cli.json(&["keys", "update", &id, "--disable"]).await["status"],
        "disabled"
    );
    assert_eq!(
        cli.json(&["keys", "verify", &secret]).await["code"],
        "KEY_DISABLED"
    );
    assert_eq!(
        cli.json(&["keys", "update", &id, "--enable", "--name", "renamed"])
            .await["name"],
        "renamed"
    );

    let rotated = cli
        .json(&["keys", "rotate", &id, "--expire-previous-in-seconds", "60"])
        .await;
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(
        cli.json(&["keys", "verify", &secret]).await["code"],
        "VALID",
        "grace period"
    );
    assert_eq!(
        cli.json(&["keys", "revoke", &id]).await["status"],
        "revoked"
    );
    assert_eq!(
        cli.json(&["keys", "verify", new_secret]).await["code"],
        "KEY_REVOKED"
    );
    cli.json(&["keys", "delete", &id]).await;
    assert_eq!(
        cli.json(&["keys", "verify", new_secret]).await["code"],
        "INVALID_KEY"
    );
    cli.json(&["apps", "delete", "acme"]).await;

    // Errors name the server's code and request id, and never the key.
    let (ok, _, stderr) = cli.run(&["keys", "get", "key_missing"]).await;
    assert!(
        !ok && stderr.contains("key_not_found") && stderr.contains("req_"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli
        .run(&["apps", "list", "--api-key", "sk_live_wrong"])
        .await;
    assert!(
        !ok && stderr.contains("invalid_api_key") && !stderr.contains("sk_live_wrong"),
        "{stderr}"
    );
    let mut bare = keyward_binary();
    bare.args(["apps", "list", "--url", &server.base]);
    let output = tokio::task::spawn_blocking(move || bare.output().unwrap())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("KEYWARD_API_KEY"));
    server.stop().await;
}

#[tokio::test]
async fn webhook_endpoints_from_the_command_line() {
    let server = TestServer::start().await;
    let cli = Cli { server: &server };

    // A human-readable create prints the signing secret once, with a warning on stderr.
    let (ok, stdout, stderr) = cli
        .run(&[
            "webhooks",
            "create",
            "https://example.com/hook",
            "--events",
            "key.revoked,key.leaked",
            "--description",
            "from the CLI",
        ])
        .await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("shown once"), "{stderr}");
    let secret = stdout.lines().next().unwrap();
    assert!(secret.starts_with("whsec_"), "{stdout}");
    let id = stdout
        .split_whitespace()
        .find(|word| word.starts_with("whe_"))
        .unwrap_or_else(|| panic!("no endpoint id in {stdout}"))
        .to_owned();

    let listed = cli.json(&["webhooks", "list"]).await;
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert_eq!(
        listed["data"][0]["events"],
        serde_json::json!(["key.leaked", "key.revoked"]),
        "the server keeps them sorted"
    );
    assert!(!listed.to_string().contains(secret));
    let (ok, table, _) = cli.run(&["webhooks", "list"]).await;
    assert!(
        ok && table.contains(&id) && table.contains("from the CLI"),
        "{table}"
    );

    let queued = cli.json(&["webhooks", "test", &id]).await;
    let delivery = queued["delivery_id"].as_str().unwrap();
    assert!(delivery.starts_with("whd_"), "{queued}");
    let deliveries = cli.json(&["webhooks", "deliveries", &id]).await;
    assert_eq!(deliveries["data"][0]["id"], delivery);
    assert_eq!(deliveries["data"][0]["event_type"], "webhook.test");

    // Nothing that is not one of this environment's keys changes.
    assert_eq!(
        cli.json(&[
            "keys",
            "report-leak",
            "acme_live_notakey",
            "--found-at",
            "https://example.com/paste",
            "--source",
            "cli",
        ])
        .await["result"],
        "unknown"
    );

    let (ok, stdout, stderr) = cli.run(&["webhooks", "delete", &id]).await;
    assert!(ok && stdout.contains(&id), "{stdout} {stderr}");
    let (ok, _, stderr) = cli.run(&["webhooks", "get", &id]).await;
    assert!(!ok && stderr.contains("req_"), "{stderr}");
    assert_eq!(
        cli.json(&["webhooks", "list"]).await["data"],
        serde_json::json!([])
    );
    server.stop().await;
}
