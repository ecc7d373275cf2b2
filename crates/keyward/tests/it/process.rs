//! The real `keyward serve` binary: first start, crash durability, graceful shutdown,
//! settings errors, and secrets (API keys, root keys, workspace secrets, signing keys' private
//! halves) that must never reach disk or logs.

use serde_json::json;

use crate::credentials::{now, signed};
use crate::testkit::{keyward_binary, Api, ServerProcess};

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), "first");
    let (live, _) = server
        .first_keys
        .clone()
        .expect("first start prints root keys");
    let api = Api::new(&server.base, &live);
    api.create_app("durable", &[]).await;
    let mut kept = Vec::new();
    for index in 0..20 {
        let key = api
            .create_key("durable", json!({"name": format!("k{index}")}))
            .await;
        kept.push((
            key["id"].as_str().unwrap().to_owned(),
            key["secret"].as_str().unwrap().to_owned(),
        ));
    }
    let (revoked_id, revoked_secret) = kept.pop().unwrap();
    api.post(&format!("/api/v1/keys/{revoked_id}/revoke"), json!({}))
        .await
        .assert_status(200);
    server.kill_hard();

    let restarted = ServerProcess::start(dir.path(), "second");
    assert!(
        restarted.first_keys.is_none(),
        "root keys are printed only on the first start"
    );
    let api = Api::new(&restarted.base, &live);
    for (_, secret) in &kept {
        assert_eq!(api.verify_code(secret).await, "VALID");
    }
    assert_eq!(api.verify_code(&revoked_secret).await, "KEY_REVOKED");
}

#[tokio::test]
async fn graceful_shutdown_writes_pending_last_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), "first");
    let (live, _) = server.first_keys.clone().unwrap();
    let api = Api::new(&server.base, &live);
    api.create_app("flush", &[]).await;
    let key = api.create_key("flush", json!({"name": "k"})).await;
    assert_eq!(
        api.verify_code(key["secret"].as_str().unwrap()).await,
        "VALID"
    );
    // The default flush interval is 1 s; SIGTERM right away must still write it.
    assert!(server.terminate().success());

    let restarted = ServerProcess::start(dir.path(), "second");
    let api = Api::new(&restarted.base, &live);
    let fetched = api
        .get(&format!("/api/v1/keys/{}", key["id"].as_str().unwrap()))
        .await;
    assert!(
        fetched.body["last_used_at"].is_string(),
        "{:#}",
        fetched.body
    );
}

#[tokio::test]
async fn secrets_never_reach_the_database_or_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), "server");
    let (live, test) = server.first_keys.clone().unwrap();
    let api = Api::new(&server.base, &live);
    api.create_app("secretive", &[]).await;
    let mut secrets = vec![live.clone(), test];
    for index in 0..5 {
        let key = api
            .create_key("secretive", json!({"name": format!("k{index}")}))
            .await;
        secrets.push(key["secret"].as_str().unwrap().to_owned());
        let rotated = api
            .post(
                &format!("/api/v1/keys/{}/rotate", key["id"].as_str().unwrap()),
                json!({"expire_previous_in_seconds": 60}),
            )
            .await
            .assert_status(200)
            .clone();
        secrets.push(rotated["secret"].as_str().unwrap().to_owned());
        api.verify_code(secrets.last().unwrap()).await;
    }
    let root = api
        .post(
            "/api/v1/root-keys",
            json!({"name": "extra", "scopes": ["verify"]}),
        )
        .await;
    secrets.push(root.body["secret"].as_str().unwrap().to_owned());
    // A workspace secret, used for a signed call (so it was unsealed and cached), and a
    // signing key's private half.
    let workspace_key = api
        .post("/api/v1/workspace-keys", json!({"name": "backend"}))
        .await
        .assert_status(201)
        .clone();
    let (key_id, workspace_secret) = (
        workspace_key["id"].as_str().unwrap(),
        workspace_key["secret"].as_str().unwrap(),
    );
    let authorization = signed(
        "GET",
        "/api/v1/apps",
        "",
        b"",
        key_id,
        workspace_secret,
        now(),
    );
    let signed_call = api
        .http
        .get(format!("{}/api/v1/apps", server.base))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_call.status(), 200);
    secrets.push(workspace_secret.to_owned());
    let signing_key = api
        .post("/api/v1/signing-keys", json!({"name": "tokens"}))
        .await
        .assert_status(201)
        .clone();
    let private_scalar = signing_key_scalar(signing_key["private_key_base64"].as_str().unwrap());
    // Secrets sent where they do not belong must not be logged either.
    api.post("/api/v1/apps", json!({"name": 1, "slug": secrets[2]}))
        .await;
    api.get(&format!("/api/v1/keys/{}", secrets[3])).await;
    let stderr_path = server.stderr_path.clone();
    assert!(server.terminate().success());

    let mut haystacks = vec![("log", std::fs::read(&stderr_path).unwrap())];
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("keyward.db")
        {
            haystacks.push(("database", std::fs::read(&path).unwrap()));
        }
    }
    assert!(haystacks.len() >= 2, "found the database files");
    assert!(!haystacks[0].1.is_empty(), "the server logged something");
    for (what, bytes) in &haystacks {
        for secret in &secrets {
            let found = bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes());
            assert!(!found, "a secret was found in the {what}");
            // Nor the random part alone.
            let random = &secret.as_bytes()[secret.len() - 30..];
            assert!(
                !bytes.windows(random.len()).any(|window| window == random),
                "{what}"
            );
        }
        assert!(
            !bytes
                .windows(private_scalar.len())
                .any(|window| window == private_scalar),
            "a signing key's private half was found in the {what}"
        );
    }
}

/// The 32-byte private scalar of a signing key, from the `private_key_base64` Keyward returned
/// once (Base64 of a PKCS#8 PEM).
fn signing_key_scalar(private_key_base64: &str) -> Vec<u8> {
    use aws_lc_rs::encoding::AsBigEndian;
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let pem = String::from_utf8(b64.decode(private_key_base64).unwrap()).unwrap();
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &b64.decode(body).unwrap())
            .unwrap();
    let scalar = pair.private_key().as_be_bytes().unwrap();
    scalar.as_ref().to_vec()
}

#[tokio::test]
async fn serves_from_postgres_and_never_answers_from_a_stale_cache() {
    let Ok(admin_url) = std::env::var(keyward_store::testing::DATABASE_URL_VARIABLE) else {
        eprintln!("skipped: set KEYWARD_TEST_DATABASE_URL to run the PostgreSQL server test");
        return;
    };
    let database = keyward_store::testing::TestDatabase::create(&admin_url)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start_with_env(dir.path(), "a", &[("DATABASE_URL", &database.url)]);
    let (live, _) = first
        .first_keys
        .clone()
        .expect("first start on an empty database");
    let second = ServerProcess::start_with_env(dir.path(), "b", &[("DATABASE_URL", &database.url)]);
    assert!(
        second.first_keys.is_none(),
        "the second node joins the same workspace"
    );
    let (node_a, node_b) = (Api::new(&first.base, &live), Api::new(&second.base, &live));
    node_a.create_app("shared", &[]).await;
    let key = node_a.create_key("shared", json!({"name": "k"})).await;
    let secret = key["secret"].as_str().unwrap();
    assert_eq!(node_b.verify_code(secret).await, "VALID");
    node_a
        .post(
            &format!("/api/v1/keys/{}/revoke", key["id"].as_str().unwrap()),
            json!({}),
        )
        .await
        .assert_status(200);
    assert_eq!(
        node_b.verify_code(secret).await,
        "KEY_REVOKED",
        "node B saw the revocation at once"
    );
    drop((first, second));
}

#[test]
fn unknown_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = keyward_binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("KEYWARD_LISTN", "oops")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("KEYWARD_LISTN"), "{stderr}");

    let config = dir.path().join("keyward.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlisten_port = 1\n").unwrap();
    let output = keyward_binary()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen_port"), "{stderr}");
}

#[test]
fn one_sqlite_directory_serves_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(dir.path(), "first");
    let output = keyward_binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another `keyward serve`"), "{stderr}");
    // Once the first has stopped, the directory is free again.
    first.kill_hard();
    let again = ServerProcess::start(dir.path(), "again");
    drop(again);
}

#[tokio::test]
async fn the_open_file_limit_is_raised_and_logs_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_soft_file_limit(dir.path(), "limits", 256);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("the open-file limit")
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(
        open_files[0], open_files[1],
        "soft raised to hard: {limits}"
    );
    let (live, _) = server.first_keys.clone().unwrap();
    Api::new(&server.base, &live)
        .get("/api/v1/apps")
        .await
        .assert_status(200);
    let log = std::fs::read_to_string(&server.stderr_path).unwrap();
    assert!(log.contains("connection limit"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI escapes in a log file: {log}"
    );
}
