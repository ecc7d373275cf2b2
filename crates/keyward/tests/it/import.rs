//! `keyward import`, run as the real binary against a real server.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use keyward_core::secret::IssuedSecret;
use keyward_core::{Environment, KeyHash};
use rand::Rng;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::testkit::{keyward_binary, TestServer};

const ROWS: usize = 100_000;

fn import_command(server: &TestServer, args: &[&str]) -> std::process::Command {
    let mut command = keyward_binary();
    command
        .arg("import")
        .args(args)
        .env("KEYWARD_URL", &server.base)
        .env("KEYWARD_API_KEY", &server.live_key);
    command
}

async fn import(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let mut command = import_command(server, args);
    let output = tokio::task::spawn_blocking(move || command.output().expect("run keyward"))
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn import_json(server: &TestServer, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let (ok, stdout, stderr) = import(server, &with_json).await;
    assert!(ok, "keyward import failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

/// Writes `ROWS` keys as another system would export them: a third in Keyward's own format,
/// a third in a foreign format, a third as bare SHA-256 hashes. Returns every 997th secret.
fn write_export(path: &Path) -> Vec<String> {
    let mut rng = rand::rngs::OsRng;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut sample = Vec::new();
    for index in 0..ROWS {
        let secret = match index % 3 {
            0 => IssuedSecret::generate("acme", Environment::Live, &mut rng)
                .unwrap()
                .secret
                .expose_secret()
                .to_owned(),
            _ => format!("legacy_{index:06}_{:016x}", rng.gen::<u64>()),
        };
        let credential = if index % 3 == 2 {
            json!({ "hash": KeyHash::of(&secret).to_hex() })
        } else {
            json!({ "secret": secret })
        };
        let mut row = json!({
            "name": format!("imported {index}"),
            "owner_user_id": format!("user_{}", index % 100),
            "permissions": ["read"],
            "meta": { "row": index },
        });
        row.as_object_mut()
            .unwrap()
            .extend(credential.as_object().unwrap().clone());
        writeln!(file, "{row}").unwrap();
        if index % 997 == 0 {
            sample.push(secret);
        }
    }
    file.flush().unwrap();
    sample
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_keys_import_resume_after_a_kill_and_verify() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("legacy", &["read", "write"]).await;
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.jsonl");
    let sample = write_export(&export);
    let export_arg = export.to_str().unwrap();
    let state = dir.path().join("export.jsonl.import-state.json");

    // Interrupted the hard way once the first batches are in.
    let mut first = import_command(&server, &["--app", "legacy", export_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !state.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    let status = first.wait().unwrap();
    assert!(!status.success(), "the first run was interrupted");

    let resumed = import_json(&server, &["--app", "legacy", export_arg]).await;
    assert!(
        resumed["started_at_line"].as_u64().unwrap() > 1,
        "{resumed}"
    );
    assert_eq!(resumed["invalid"], 0);
    assert_eq!(
        resumed["imported"].as_u64().unwrap() + resumed["skipped"].as_u64().unwrap(),
        ROWS as u64,
        "every row is in, each once: {resumed}"
    );

    // Again from the top: nothing is imported twice.
    let again = import_json(&server, &["--app", "legacy", export_arg, "--restart"]).await;
    assert_eq!(again["imported"], 0, "{again}");
    assert_eq!(again["skipped"], ROWS as u64, "{again}");

    for secret in &sample {
        let verdict = api.verify(secret, Some("read")).await;
        assert_eq!(verdict["code"], "VALID", "{verdict}");
    }
    assert_eq!(
        api.verify(&sample[1], Some("write")).await["code"],
        "INSUFFICIENT_PERMISSIONS"
    );
    // A typo in a Keyward-format key is still refused unread, imports or not.
    let mut typo = sample[0].clone();
    typo.pop();
    typo.push(if sample[0].ends_with('x') { 'y' } else { 'x' });
    assert_eq!(api.verify_code(&typo).await, "INVALID_KEY");
    assert_eq!(
        api.verify_code("legacy_unknown_0000000000").await,
        "INVALID_KEY"
    );

    let listed = api.get("/api/v1/apps/legacy/keys?limit=1").await;
    let key = &listed.assert_status(200)["data"][0];
    assert!(key["start"].as_str().is_some(), "{key}");
    server.stop().await;
}

#[tokio::test]
async fn bad_rows_are_reported_by_line_and_never_stop_the_rest() {
    let server = TestServer::start().await;
    let api = server.api();
    api.create_app("csv", &["read"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.csv");
    let hidden = "legacy_wrongpermission_0123456789";
    std::fs::write(
        &file,
        format!(
            "secret,hash,name,owner_user_id,permissions,meta,expires_at\n\
             legacy_first_0123456789abcdef,,First,u1,read,\"{{\"\"plan\"\":\"\"pro\"\"}}\",\n\
             legacy_noname_0123456789abcde,,,u1,read,,\n\
             {hidden},,Wrong permission,u1,admin,,\n\
             ,not-a-hash,Bad hash,u1,,,\n\
             legacy_both_0123456789abcdefg,{},Both,u1,,,\n\
             legacy_expired_0123456789abcd,,Expired,u1,,,2001-01-01T00:00:00Z\n\
             legacy_last_0123456789abcdefg,,Last,u2,read,,2999-01-01T00:00:00Z\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = import(&server, &["--app", "csv", file.to_str().unwrap()]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("imported 2"), "{stdout}");
    assert!(stdout.contains("invalid 5"), "{stdout}");
    for line in ["line 3:", "line 4:", "line 5:", "line 6:", "line 7:"] {
        assert!(stderr.contains(line), "{line} reported in {stderr}");
    }
    assert!(stderr.contains("permission_not_in_app"), "{stderr}");
    assert!(!stderr.contains(hidden), "a secret reached the output");

    assert_eq!(
        api.verify_code("legacy_first_0123456789abcdef").await,
        "VALID"
    );
    assert_eq!(
        api.verify_code("legacy_last_0123456789abcdefg").await,
        "VALID"
    );
    assert_eq!(api.verify_code(hidden).await, "INVALID_KEY");

    // An unknown column stops the import before anything is sent.
    std::fs::write(
        &file,
        "secret,name,colour\nlegacy_x_0123456789abcdef,X,red\n",
    )
    .unwrap();
    let (ok, _, stderr) = import(&server, &["--app", "csv", file.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("colour"), "{stderr}");
    server.stop().await;
}
