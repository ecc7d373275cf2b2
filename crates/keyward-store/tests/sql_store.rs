//! The store against a real embedded database: the SQL itself, row mapping and transactions.
//! The HTTP suite covers behaviour end to end; this pins the storage contract on its own.

use std::time::Duration;

use keyward_core::model::{
    ApiKey, App, Environment, EnvironmentSettings, KeyStatus, RootKey, Tenancy,
};
use keyward_core::scope::ScopeSet;
use keyward_core::{KeyHash, Timestamp};
use keyward_store::testing::{fresh_database, TestDatabase};
use keyward_store::{
    Bootstrap, Change, KeyFilter, PageRequest, SqlStore, Store, StoreError, StoreOptions,
};

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn tenancy(environment: Environment) -> Tenancy {
    Tenancy {
        workspace_id: "ws_test".to_owned(),
        environment,
    }
}

fn change(environment: Environment, audit_id: &str) -> Change {
    Change {
        tenancy: tenancy(environment),
        actor: "rk_test".to_owned(),
        request_id: Some("req_000000000000".to_owned()),
        audit_id: audit_id.to_owned(),
        now: NOW,
    }
}

/// A store on a fresh database: SQLite, or PostgreSQL when `KEYWARD_TEST_BACKEND=postgres`
/// (the database lives as long as the returned guard).
async fn open(dir: &tempfile::TempDir) -> (SqlStore, Option<TestDatabase>) {
    let (url, database) = fresh_database(dir.path()).await;
    let store = SqlStore::connect(&StoreOptions {
        url,
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
        node_id: keyward_store::StoreOptions::new_node_id(),
    })
    .await
    .expect("open store");
    (store, database)
}

fn app(id: &str, slug: &str) -> App {
    App {
        id: id.to_owned(),
        tenancy: tenancy(Environment::Live),
        name: "Acme".to_owned(),
        slug: slug.to_owned(),
        permissions: vec!["read".to_owned(), "write".to_owned()],
        rate_limit_scheme: None,
        organization_id: None,
        key_prefix: "acme".to_owned(),
        created_at: NOW,
        updated_at: NOW,
    }
}

fn key(id: &str, app: &App, owner: Option<&str>) -> ApiKey {
    ApiKey {
        id: id.to_owned(),
        tenancy: app.tenancy.clone(),
        app_id: app.id.clone(),
        app_slug: app.slug.clone(),
        name: format!("key {id}"),
        owner_user_id: owner.map(str::to_owned),
        organization_id: None,
        permissions: vec!["read".to_owned()],
        meta: serde_json::Map::new(),
        start: "acme_live_abcd".to_owned(),
        expires_at: None,
        enabled: true,
        revoked_at: None,
        created_at: NOW,
        updated_at: NOW,
        last_used_at: None,
        credits: None,
        rate_limit_scheme: None,
    }
}

#[tokio::test]
async fn bootstrap_happens_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _database) = open(&dir).await;
    let bootstrap = Bootstrap {
        workspace_id: "ws_test".to_owned(),
        workspace_name: "Default".to_owned(),
        environments: vec![EnvironmentSettings {
            workspace_id: "ws_test".to_owned(),
            environment: Environment::Live,
            enhanced_security: true,
            updated_at: NOW,
        }],
        root_keys: vec![(
            RootKey {
                id: "rk_1".to_owned(),
                tenancy: tenancy(Environment::Live),
                name: "first".to_owned(),
                scopes: ScopeSet::all(),
                start: "sk_live_abcd".to_owned(),
                created_at: NOW,
                revoked_at: None,
                rate_limit_scheme: None,
                expires_at: None,
            },
            KeyHash::of("root"),
        )],
        now: NOW,
    };
    assert!(store.bootstrap(&bootstrap).await.unwrap());
    assert!(!store.bootstrap(&bootstrap).await.unwrap());
    let found = store
        .find_root_key(KeyHash::of("root"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key.scopes, ScopeSet::all());
    assert!(
        store
            .environment(&tenancy(Environment::Live))
            .await
            .unwrap()
            .enhanced_security
    );
}

#[tokio::test]
async fn keys_round_trip_rotate_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _database) = open(&dir).await;
    let acme = app("app_1", "acme");
    store
        .create_app(&change(Environment::Live, "aud_1"), &acme)
        .await
        .unwrap();
    let duplicate = store
        .create_app(&change(Environment::Live, "aud_2"), &app("app_2", "acme"))
        .await;
    assert!(matches!(
        duplicate,
        Err(StoreError::Conflict("app_slug_taken"))
    ));

    let first = key("key_1", &acme, Some("alice"));
    store
        .create_key(
            &change(Environment::Live, "aud_3"),
            &first,
            KeyHash::of("s1"),
        )
        .await
        .unwrap();
    store
        .create_key(
            &change(Environment::Live, "aud_4"),
            &key("key_2", &acme, Some("bob")),
            KeyHash::of("s2"),
        )
        .await
        .unwrap();

    let found = store.find_key(KeyHash::of("s1")).await.unwrap().unwrap();
    assert_eq!(found.key, first);
    assert_eq!(found.secret.expires_at, None);

    let grace = NOW.plus_seconds(60);
    let rotated = store
        .rotate_key(
            &change(Environment::Live, "aud_5"),
            "key_1",
            (KeyHash::of("s1b"), "acme_live_wxyz"),
            Some(grace),
        )
        .await
        .unwrap();
    assert_eq!(rotated.record.start, "acme_live_wxyz");
    assert_eq!(
        rotated.stale,
        keyward_store::Stale::Secrets(vec![KeyHash::of("s1"), KeyHash::of("s1b")])
    );
    let old = store.find_key(KeyHash::of("s1")).await.unwrap().unwrap();
    assert_eq!(old.secret.expires_at, Some(grace));
    store
        .rotate_key(
            &change(Environment::Live, "aud_6"),
            "key_1",
            (KeyHash::of("s1c"), "acme_live_zzzz"),
            None,
        )
        .await
        .unwrap();
    assert!(store.find_key(KeyHash::of("s1")).await.unwrap().is_none());
    assert!(store.find_key(KeyHash::of("s1b")).await.unwrap().is_none());

    store
        .revoke_key(&change(Environment::Live, "aud_7"), "key_2")
        .await
        .unwrap();
    let page = PageRequest {
        limit: 10,
        cursor: None,
    };
    let revoked = KeyFilter {
        status: Some(KeyStatus::Revoked),
        ..KeyFilter::default()
    };
    let listed = store
        .list_keys(&tenancy(Environment::Live), "app_1", &revoked, &page, NOW)
        .await
        .unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>(),
        ["key_2"]
    );
    let alice = KeyFilter {
        owner_user_id: Some("alice".to_owned()),
        ..KeyFilter::default()
    };
    let listed = store
        .list_keys(&tenancy(Environment::Live), "app_1", &alice, &page, NOW)
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    let one = PageRequest {
        limit: 1,
        cursor: None,
    };
    let first_page = store
        .list_keys(
            &tenancy(Environment::Live),
            "app_1",
            &KeyFilter::default(),
            &one,
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(first_page.items[0].id, "key_2");
    let second_page = store
        .list_keys(
            &tenancy(Environment::Live),
            "app_1",
            &KeyFilter::default(),
            &PageRequest {
                limit: 1,
                cursor: first_page.next_cursor,
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(second_page.items[0].id, "key_1");
    assert_eq!(second_page.next_cursor, None);

    let other_environment = store.key(&tenancy(Environment::Test), "key_1").await;
    assert!(matches!(
        other_environment,
        Err(StoreError::NotFound("key"))
    ));

    store
        .record_last_used(&[("key_1".to_owned(), NOW.plus_seconds(5))])
        .await
        .unwrap();
    store
        .record_last_used(&[("key_1".to_owned(), NOW)])
        .await
        .unwrap();
    assert_eq!(
        store
            .key(&tenancy(Environment::Live), "key_1")
            .await
            .unwrap()
            .last_used_at,
        Some(NOW.plus_seconds(5))
    );

    let audit = store
        .list_audit(
            &tenancy(Environment::Live),
            &Default::default(),
            &PageRequest {
                limit: 100,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        audit.items.len(),
        6,
        "every successful mutation is audited once"
    );
}
