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
    AppStore, AuditStore, Bootstrap, Change, Conflict, KeyFilter, KeyStore, PageRequest, SqlStore,
    StoreError, StoreOptions, WorkspaceStore,
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
        // Not a credential's id: the store's tests act outside any key's life.
        actor: "test".to_owned(),
        actor_scopes: keyward_core::scope::ScopeSet::all(),
        request_id: Some("req_000000000000".to_owned()),
        audit_id: audit_id.to_owned(),
        now: NOW,
    }
}

/// A store on a fresh database, with the `ws_test` workspace and its `live` and `test`
/// environments, where changes are made: SQLite, or PostgreSQL when
/// `KEYWARD_TEST_BACKEND=postgres` (the database lives as long as the returned guard).
async fn open(dir: &tempfile::TempDir) -> (SqlStore, Option<TestDatabase>) {
    let (store, database) = open_empty(dir).await;
    let pool = sqlx::AnyPool::connect(&database_url(dir, database.as_ref()))
        .await
        .unwrap();
    sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ('ws_test', 'Test', 0)")
        .execute(&pool)
        .await
        .unwrap();
    for environment in ["live", "test"] {
        sqlx::query(
            "INSERT INTO environments (workspace_id, environment, enhanced_security, updated_at) \
             VALUES ('ws_test', $1, $2, 0)",
        )
        .bind(environment)
        .bind(false)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    (store, database)
}

fn database_url(dir: &tempfile::TempDir, database: Option<&TestDatabase>) -> String {
    database.map_or_else(
        || SqlStore::sqlite_url(dir.path()),
        |database| database.url.clone(),
    )
}

/// A store on a fresh database with nothing in it.
async fn open_empty(dir: &tempfile::TempDir) -> (SqlStore, Option<TestDatabase>) {
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
        low_credits_threshold: None,
    }
}

#[tokio::test]
async fn bootstrap_happens_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _database) = open_empty(&dir).await;
    let bootstrap = Bootstrap {
        workspace_id: "ws_test".to_owned(),
        workspace_name: "Default".to_owned(),
        environments: vec![EnvironmentSettings {
            workspace_id: "ws_test".to_owned(),
            environment: Environment::Live,
            enhanced_security: true,
            leaked_key_action: Default::default(),
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
                limit_meter: None,
                expires_at: None,
            },
            KeyHash::of("root"),
        )],
        now: NOW,
    };
    assert!(store.bootstrap(&bootstrap).await.unwrap().record);
    assert!(!store.bootstrap(&bootstrap).await.unwrap().record);
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
        Err(StoreError::Conflict(Conflict::AppSlugTaken))
    ));

    let first = key("key_1", &acme, Some("alice"));
    store
        .create_key(
            &change(Environment::Live, "aud_3"),
            &first,
            KeyHash::of("s1"),
            None,
        )
        .await
        .unwrap();
    store
        .create_key(
            &change(Environment::Live, "aud_4"),
            &key("key_2", &acme, Some("bob")),
            KeyHash::of("s2"),
            None,
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
    // A superseded secret stays through its grace period; once that has ended, the sweep
    // drops it, and only it.
    assert_eq!(store.purge_ended_secrets(NOW).await.unwrap(), 0);
    assert_eq!(
        store
            .purge_ended_secrets(grace.plus_seconds(1))
            .await
            .unwrap(),
        1
    );
    assert!(store.find_key(KeyHash::of("s1")).await.unwrap().is_none());
    assert!(store.find_key(KeyHash::of("s1b")).await.unwrap().is_some());
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
    // A batch longer than one statement's share, the known key last: every chunk is written.
    let mut long_batch: Vec<(String, Timestamp)> = (0..250)
        .map(|index| (format!("key_gone_{index}"), NOW.plus_seconds(9)))
        .collect();
    long_batch.push(("key_1".to_owned(), NOW.plus_seconds(7)));
    store.record_last_used(&long_batch).await.unwrap();
    assert_eq!(
        store
            .key(&tenancy(Environment::Live), "key_1")
            .await
            .unwrap()
            .last_used_at,
        Some(NOW.plus_seconds(7))
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

#[tokio::test]
async fn a_purged_sandbox_leaves_no_row_behind_and_nothing_else_is_touched() {
    use keyward_core::model::RateLimitScheme;
    use keyward_core::usage::{Credits, RateWindow};
    use keyward_store::{
        CredentialStore, NewSandbox, OrganizationSettings, SandboxStore, UsageStore, UsageWriteBack,
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, database) = open(&dir).await;
    let url = database_url(&dir, database.as_ref());
    let demo = Tenancy {
        workspace_id: "ws_demo".to_owned(),
        environment: Environment::Demo,
    };
    store
        .create_sandbox(&NewSandbox {
            workspace_id: demo.workspace_id.clone(),
            root_key: RootKey {
                id: "rk_demo".to_owned(),
                tenancy: demo.clone(),
                name: "Demo sandbox".to_owned(),
                scopes: ScopeSet::all(),
                start: "sk_demo_abcd".to_owned(),
                created_at: NOW,
                revoked_at: None,
                rate_limit_scheme: None,
                limit_meter: None,
                expires_at: Some(NOW.plus_seconds(60)),
            },
            hash: KeyHash::of("demo root"),
            expires_at: NOW.plus_seconds(60),
            now: NOW,
        })
        .await
        .unwrap();
    let in_demo = Change {
        tenancy: demo.clone(),
        ..change(Environment::Demo, "aud_1")
    };
    store
        .create_rate_limit_scheme(
            &in_demo,
            &RateLimitScheme {
                tenancy: demo.clone(),
                slug: "tier".to_owned(),
                windows: vec![RateWindow {
                    limit: 1,
                    period_ms: 1000,
                }],
                created_at: NOW,
                updated_at: NOW,
            },
        )
        .await
        .unwrap();
    store
        .put_organization(
            &Change {
                audit_id: "aud_2".to_owned(),
                ..in_demo.clone()
            },
            &OrganizationSettings {
                id: "org_1".to_owned(),
                rate_limit_scheme: Some("tier".to_owned()),
                credit_cap: Some(10),
                credit_period: None,
                low_credits_threshold: Some(2),
            },
        )
        .await
        .unwrap();
    let sandbox_app = App {
        tenancy: demo.clone(),
        rate_limit_scheme: Some("tier".to_owned()),
        ..app("app_demo", "demo-app")
    };
    store
        .create_app(
            &Change {
                audit_id: "aud_3".to_owned(),
                ..in_demo.clone()
            },
            &sandbox_app,
        )
        .await
        .unwrap();
    let mut sandbox_key = key("key_demo", &sandbox_app, None);
    sandbox_key.organization_id = Some("org_1".to_owned());
    sandbox_key.credits = Some(Credits {
        remaining: 5,
        refill: None,
        refilled_at: NOW,
    });
    store
        .create_key(
            &Change {
                audit_id: "aud_4".to_owned(),
                ..in_demo.clone()
            },
            &sandbox_key,
            KeyHash::of("demo key"),
            None,
        )
        .await
        .unwrap();
    // Verification sees the key's resolved limits.
    let found = store
        .find_key(KeyHash::of("demo key"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.policy.windows.len(), 1);
    let organization = found.policy.organization.expect("its organisation");
    assert_eq!(organization.cap.map(|cap| cap.cap), Some(10));
    // Write-back reaches the key and the organisation.
    let mut spent = organization.cap.unwrap();
    spent.spent = 3;
    store
        .write_back_usage(&UsageWriteBack {
            credits: vec![(
                "key_demo".to_owned(),
                Credits {
                    remaining: 2,
                    refill: None,
                    refilled_at: NOW,
                },
            )],
            caps: vec![(demo.clone(), "org_1".to_owned(), spent)],
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .key(&demo, "key_demo")
            .await
            .unwrap()
            .credits
            .unwrap()
            .remaining,
        2
    );
    assert_eq!(
        store
            .organization(&demo, "org_1")
            .await
            .unwrap()
            .credits_spent,
        3
    );

    // Another workspace's app, which the purge must leave alone.
    store
        .create_app(
            &change(Environment::Live, "aud_5"),
            &app("app_live", "live-app"),
        )
        .await
        .unwrap();

    assert!(store.expired_sandboxes(NOW, 10).await.unwrap().is_empty());
    assert_eq!(
        store
            .expired_sandboxes(NOW.plus_seconds(60), 10)
            .await
            .unwrap(),
        ["ws_demo"]
    );
    // A workspace key is cached by its id, not a secret: the purge must name it too.
    store
        .create_workspace_key(
            &Change {
                audit_id: "aud_6".to_owned(),
                ..in_demo.clone()
            },
            &keyward_core::model::WorkspaceKey {
                id: "wk_demo".to_owned(),
                tenancy: demo.clone(),
                name: "sandbox backend".to_owned(),
                scopes: ScopeSet::all(),
                rate_limit_scheme: None,
                limit_meter: None,
                start: "wksec_demo_abcd".to_owned(),
                created_at: NOW,
                updated_at: NOW,
            },
            b"sealed",
        )
        .await
        .unwrap();
    let purged = store.purge_sandbox("ws_demo", NOW).await.unwrap();
    match purged.stale {
        keyward_store::Stale::Secrets(hashes) => {
            assert_eq!(hashes.len(), 3);
            assert!(hashes.contains(&keyward_store::workspace_key_cache_hash("wk_demo")));
        }
        other => panic!("{other:?}"),
    }
    // Alerts and usage counts queued for it before the purge are dropped, not orphaned.
    use keyward_store::{AnalyticsStore, EventStore};
    let orphan = keyward_core::event::NewEvent::about(
        &demo,
        keyward_core::event::EventType::KeyExpired,
        &sandbox_key,
    );
    store.append_events(&[orphan], NOW).await.unwrap();
    store
        .add_usage(&[keyward_store::UsageCount {
            tenancy: demo.clone(),
            key_id: "key_demo".to_owned(),
            app_id: "app_demo".to_owned(),
            organization_id: String::new(),
            outcome: "VALID".to_owned(),
            at: NOW,
            count: 1,
        }])
        .await
        .unwrap();
    // Nothing can be made in the purged workspace, not even by a change already authorised.
    let late = store
        .create_app(
            &Change {
                audit_id: "aud_7".to_owned(),
                ..in_demo.clone()
            },
            &App {
                tenancy: demo.clone(),
                ..app("app_late", "late")
            },
        )
        .await;
    assert!(
        matches!(late, Err(StoreError::NotFound("environment"))),
        "{late:?}"
    );
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    for table in [
        "events",
        "usage_counts",
        "api_keys",
        "workspace_keys",
        "apps",
        "root_keys",
        "audit_log",
        "organizations",
        "rate_limit_schemes",
        "environments",
        "demo_sessions",
    ] {
        let left: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} WHERE workspace_id = $1"
        ))
        .bind("ws_demo")
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(left, 0, "{table} kept the sandbox's rows");
    }
    let secrets: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(secrets, 0);
    let workspaces: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspaces WHERE id = $1")
        .bind("ws_demo")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(workspaces, 0);
    pool.close().await;
    assert!(store
        .app_by_slug(&tenancy(Environment::Live), "live-app")
        .await
        .is_ok());
    assert!(matches!(
        store.purge_sandbox("ws_demo", NOW).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn usage_counts_add_up_across_minutes_hours_and_flushes() {
    use keyward_core::analytics::Granularity;
    use keyward_store::{AnalyticsStore, UsageCount, UsageQuery};
    let dir = tempfile::tempdir().unwrap();
    let (store, _database) = open(&dir).await;
    let hour = Granularity::Hour.bucket_start(NOW);
    let count = |minute: i64, outcome: &str, count: i64| UsageCount {
        tenancy: tenancy(Environment::Live),
        key_id: "key_1".to_owned(),
        app_id: "app_1".to_owned(),
        organization_id: String::new(),
        outcome: outcome.to_owned(),
        at: hour.plus_millis(minute * 60_000 + 30_000),
        count,
    };
    // Two minutes of one hour in one batch: one hour row and one day row, added once each.
    store
        .add_usage(&[
            count(5, "VALID", 2),
            count(6, "VALID", 3),
            count(6, "INVALID_KEY", 1),
        ])
        .await
        .unwrap();
    // A later flush adds to the same rows.
    store.add_usage(&[count(6, "VALID", 4)]).await.unwrap();
    let query = |granularity| UsageQuery {
        tenancy: tenancy(Environment::Live),
        granularity,
        from: hour,
        to: hour.plus_millis(3_600_000),
        key_id: Some("key_1".to_owned()),
        app_id: None,
        organization_id: None,
        outcome: None,
    };
    let minutes = store.usage(&query(Granularity::Minute)).await.unwrap();
    let as_tuples = |points: Vec<keyward_store::UsagePoint>| {
        points
            .into_iter()
            .map(|p| {
                (
                    (p.bucket.as_millis() - hour.as_millis()) / 60_000,
                    p.outcome,
                    p.count,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        as_tuples(minutes),
        vec![
            (5, "VALID".to_owned(), 2),
            (6, "INVALID_KEY".to_owned(), 1),
            (6, "VALID".to_owned(), 7)
        ]
    );
    let hours = store.usage(&query(Granularity::Hour)).await.unwrap();
    assert_eq!(
        as_tuples(hours),
        vec![(0, "INVALID_KEY".to_owned(), 1), (0, "VALID".to_owned(), 9)]
    );
    let mut other_key = query(Granularity::Day);
    other_key.key_id = Some("key_2".to_owned());
    other_key.from = Granularity::Day.bucket_start(NOW);
    assert!(store.usage(&other_key).await.unwrap().is_empty());
}

#[tokio::test]
async fn nodes_adding_to_the_same_usage_rows_never_deadlock() {
    use keyward_core::analytics::Granularity;
    use keyward_store::{AnalyticsStore, UsageCount, UsageQuery};
    let dir = tempfile::tempdir().unwrap();
    let (store, database) = open(&dir).await;
    if database.is_none() {
        eprintln!("skipped: row locks need PostgreSQL (KEYWARD_TEST_BACKEND=postgres)");
        return;
    }
    // Each write holds its rows locked until it commits. Two writes of the same rows in
    // different orders (each node sums in a hash map of its own) would deadlock, and
    // PostgreSQL would refuse one of them.
    let counts: Vec<UsageCount> = (0..300)
        .map(|n| UsageCount {
            tenancy: tenancy(Environment::Live),
            key_id: format!("key_{n}"),
            app_id: "app_1".to_owned(),
            organization_id: String::new(),
            outcome: "VALID".to_owned(),
            at: NOW,
            count: 1,
        })
        .collect();
    let reversed: Vec<UsageCount> = counts.iter().rev().cloned().collect();
    let rounds = 10;
    for _ in 0..rounds {
        let (first, second) = tokio::join!(store.add_usage(&counts), store.add_usage(&reversed));
        first.unwrap();
        second.unwrap();
    }
    let day = store
        .usage(&UsageQuery {
            tenancy: tenancy(Environment::Live),
            granularity: Granularity::Day,
            from: Granularity::Day.bucket_start(NOW),
            to: NOW.plus_millis(1),
            key_id: None,
            app_id: Some("app_1".to_owned()),
            organization_id: None,
            outcome: None,
        })
        .await
        .unwrap();
    assert_eq!(day.len(), 1);
    assert_eq!(day[0].count, 2 * rounds * 300);
}

#[tokio::test]
async fn a_change_by_a_credential_that_is_gone_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _database) = open(&dir).await;
    for actor in ["rk_never_existed", "wk_never_existed", "pkj_gone:usr_1"] {
        let gone = Change {
            actor: actor.to_owned(),
            ..change(Environment::Live, "aud_1")
        };
        assert!(
            matches!(
                store.create_app(&gone, &app("app_1", "acme")).await,
                Err(StoreError::NotPermitted(
                    keyward_store::Forbidden::ActorRevoked
                ))
            ),
            "{actor}"
        );
    }
}

/// An endpoint deleted while its attempts are out: the settling of those attempts waits for
/// the delete (it locks the endpoint before any delivery, as the delete does, so the two
/// never deadlock), then drops them; it is not an error that would lose the rest of a batch.
#[tokio::test]
async fn settling_waits_for_an_endpoint_delete_and_drops_its_attempts() {
    use keyward_core::webhook::WebhookAttempt;
    use keyward_store::{DeliverySettlement, WebhookStore};
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let (store, database) = open(&dir).await;
    let Some(database) = database else {
        eprintln!("skipped: lock order needs PostgreSQL (KEYWARD_TEST_BACKEND=postgres)");
        return;
    };
    let endpoint = webhook_endpoint("whe_locks", NOW);
    store
        .create_webhook_endpoint(&change(Environment::Live, "aud_1"), &endpoint, b"sealed")
        .await
        .unwrap();
    store
        .queue_test_delivery(&change(Environment::Live, "aud_2"), &endpoint.id)
        .await
        .unwrap();
    let claimed = store
        .claim_webhook_deliveries(NOW, NOW.plus_millis(20_000), 8, &[], 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let settlement = DeliverySettlement {
        delivery_id: claimed[0].id.clone(),
        endpoint_id: endpoint.id.clone(),
        claim: claimed[0].claim,
        attempt: WebhookAttempt {
            attempted_at: NOW,
            status: Some(500),
            latency_ms: 3,
            error: Some("status 500".to_owned()),
            response_excerpt: None,
        },
        succeeded: false,
        retry_at: Some(NOW.plus_millis(5_000)),
        disable_after_ms: 3_600_000,
        now: NOW,
    };

    let mut deleter = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut deleter).await.unwrap();
    sqlx::query("SELECT id FROM webhook_endpoints WHERE id = $1 FOR UPDATE")
        .bind(&endpoint.id)
        .execute(&mut deleter)
        .await
        .unwrap();
    let settling =
        tokio::spawn(async move { store.settle_webhook_deliveries(&[settlement]).await });
    let mut observer = sqlx::PgConnection::connect(&database.url).await.unwrap();
    wait_until_blocked(&mut observer, "the settling never waited for the endpoint").await;
    // Holding no delivery's lock while it waits, it cannot block the cascade.
    sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(&endpoint.id)
        .execute(&mut deleter)
        .await
        .unwrap();
    sqlx::query("COMMIT").execute(&mut deleter).await.unwrap();
    let disabled = tokio::time::timeout(Duration::from_secs(10), settling)
        .await
        .expect("settling finished")
        .unwrap()
        .expect("settling an endpoint's attempts after its delete is not an error");
    assert!(disabled.is_empty());
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_attempts")
        .fetch_one(&mut observer)
        .await
        .unwrap();
    assert_eq!(attempts, 0);
}

fn webhook_endpoint(id: &str, created_at: Timestamp) -> keyward_core::webhook::WebhookEndpoint {
    keyward_core::webhook::WebhookEndpoint {
        id: id.to_owned(),
        tenancy: tenancy(Environment::Live),
        url: "https://example.com/hook".to_owned(),
        description: String::new(),
        events: keyward_core::webhook::EventFilter::All,
        enabled: true,
        disabled_reason: None,
        failing_since: None,
        created_at,
        updated_at: created_at,
    }
}

/// The event log is the webhook outbox: each event becomes one delivery per endpoint that
/// existed when it was recorded, exactly once however often queueing runs; an event not yet
/// queued outlives its retention.
#[tokio::test]
async fn webhook_deliveries_are_queued_from_the_event_log_once() {
    use keyward_core::event::NewEvent;
    use keyward_store::{EventStore, WebhookStore};

    let dir = tempfile::tempdir().unwrap();
    let (store, _database) = open(&dir).await;
    let older = webhook_endpoint("whe_older", NOW);
    let newer = webhook_endpoint("whe_newer", NOW.plus_millis(10_000));
    for (endpoint, audit_id) in [(&older, "aud_1"), (&newer, "aud_2")] {
        store
            .create_webhook_endpoint(&change(Environment::Live, audit_id), endpoint, b"sealed")
            .await
            .unwrap();
    }
    let alert = |n: u32| {
        NewEvent::webhook_disabled(
            &tenancy(Environment::Live),
            "whe_x",
            "https://x",
            &n.to_string(),
        )
    };
    let recorded = NOW.plus_millis(1_000);
    store
        .append_events(&[alert(1), alert(2)], recorded)
        .await
        .unwrap();
    assert_eq!(
        store.queue_webhook_deliveries(recorded, 1).await.unwrap(),
        1
    );
    assert_eq!(
        store.queue_webhook_deliveries(recorded, 5).await.unwrap(),
        1
    );
    assert_eq!(
        store.queue_webhook_deliveries(recorded, 5).await.unwrap(),
        0
    );
    let page = PageRequest {
        limit: 10,
        cursor: None,
    };
    let live = tenancy(Environment::Live);
    let queued = store
        .list_webhook_deliveries(&live, &older.id, &page)
        .await
        .unwrap();
    assert_eq!(queued.items.len(), 2);
    let queued = store
        .list_webhook_deliveries(&live, &newer.id, &page)
        .await
        .unwrap();
    assert!(queued.items.is_empty(), "events from before it was made");

    // With no delivery pending, only the event not yet queued outlives its retention.
    store
        .delete_webhook_endpoint(&change(Environment::Live, "aud_3"), &older.id)
        .await
        .unwrap();
    store
        .append_events(&[alert(3)], NOW.plus_millis(20_000))
        .await
        .unwrap();
    store
        .purge_events(NOW.plus_millis(1_000_000))
        .await
        .unwrap();
    let kept = store.events_after(0, None, 10).await.unwrap();
    assert_eq!(kept.iter().map(|event| event.seq).collect::<Vec<_>>(), [3]);
}

/// A portal link works once and only for minutes; the session it opens lasts until the time
/// given at redemption, and ends with its creator.
#[tokio::test]
async fn portal_links_expire_open_once_and_their_sessions_end() {
    use keyward_core::model::PortalSession;
    use keyward_store::PortalStore;

    let dir = tempfile::tempdir().unwrap();
    let (store, _database) = open(&dir).await;
    store
        .create_app(&change(Environment::Live, "aud_1"), &app("app_1", "acme"))
        .await
        .unwrap();
    let session = |id: &str| PortalSession {
        id: id.to_owned(),
        tenancy: tenancy(Environment::Live),
        app_id: "app_1".to_owned(),
        owner_user_id: "usr_1".to_owned(),
        organization_id: None,
        permissions: vec!["read".to_owned()],
        max_keys: 10,
        return_url: None,
        created_by: "test".to_owned(),
        scopes: ScopeSet::all(),
        limit: keyward_core::model::CallLimit::default(),
        created_at: NOW,
        code_expires_at: NOW.plus_millis(300_000),
        expires_at: NOW.plus_millis(300_000),
    };
    for (id, code, audit_id) in [("ps_1", "hash_1", "aud_2"), ("ps_2", "hash_2", "aud_3")] {
        store
            .create_portal_session(&change(Environment::Live, audit_id), &session(id), code)
            .await
            .unwrap();
    }
    let until = NOW.plus_millis(3_600_000);
    // Too late for the link.
    assert!(matches!(
        store
            .redeem_portal_code("hash_2", NOW.plus_millis(300_000), until)
            .await,
        Err(StoreError::NotFound(_))
    ));
    let opened = store
        .redeem_portal_code("hash_1", NOW, until)
        .await
        .unwrap();
    assert_eq!(opened.expires_at, until);
    assert!(matches!(
        store.redeem_portal_code("hash_1", NOW, until).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store
            .live_portal_session("ps_1", NOW)
            .await
            .unwrap()
            .owner_user_id,
        "usr_1"
    );
    assert!(store.live_portal_session("ps_1", until).await.is_err());
    assert!(
        store.live_portal_session("ps_2", NOW).await.is_err(),
        "never opened"
    );
    store.end_portal_session("ps_1", NOW).await.unwrap();
    assert!(store.live_portal_session("ps_1", NOW).await.is_err());
    // Sessions that are over are forgotten: the unused link's at once, the opened one's
    // after its hour.
    assert_eq!(
        store
            .purge_portal_sessions(NOW.plus_millis(300_001))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .purge_portal_sessions(until.plus_millis(1))
            .await
            .unwrap(),
        1
    );
}

/// A change made through a portal session holds the session's maker like any actor: one
/// that began before the maker's revocation committed waits for it, then is refused (so no
/// key appears after the revoke returned).
#[tokio::test]
async fn a_portal_change_is_ordered_with_its_makers_revocation() {
    use keyward_core::model::{PortalSession, RootKey};
    use keyward_store::{PortalStore, WorkspaceStore};
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let (store, database) = open(&dir).await;
    let Some(database) = database else {
        eprintln!("skipped: lock order needs PostgreSQL (KEYWARD_TEST_BACKEND=postgres)");
        return;
    };
    let maker = RootKey {
        id: "rk_maker".to_owned(),
        tenancy: tenancy(Environment::Live),
        name: "backend".to_owned(),
        scopes: ScopeSet::all(),
        start: "sk_live_abcd".to_owned(),
        created_at: NOW,
        revoked_at: None,
        rate_limit_scheme: None,
        limit_meter: None,
        expires_at: None,
    };
    store
        .create_root_key(
            &change(Environment::Live, "aud_1"),
            &maker,
            KeyHash::of("maker"),
        )
        .await
        .unwrap();
    store
        .create_app(&change(Environment::Live, "aud_2"), &app("app_1", "acme"))
        .await
        .unwrap();
    let session = PortalSession {
        id: "ps_1".to_owned(),
        tenancy: tenancy(Environment::Live),
        app_id: "app_1".to_owned(),
        owner_user_id: "usr_1".to_owned(),
        organization_id: None,
        permissions: vec!["read".to_owned()],
        max_keys: 10,
        return_url: None,
        created_by: maker.id.clone(),
        scopes: ScopeSet::all(),
        limit: maker.call_limit(),
        created_at: NOW,
        code_expires_at: NOW.plus_millis(300_000),
        expires_at: NOW.plus_millis(300_000),
    };
    store
        .create_portal_session(&change(Environment::Live, "aud_3"), &session, "hash")
        .await
        .unwrap();
    store
        .redeem_portal_code("hash", NOW, NOW.plus_millis(3_600_000))
        .await
        .unwrap();

    // The revocation is under way: it holds the maker's row.
    let mut revoker = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut revoker).await.unwrap();
    sqlx::query("UPDATE root_keys SET revoked_at = $1 WHERE id = $2")
        .bind(NOW.as_millis())
        .bind(&maker.id)
        .execute(&mut revoker)
        .await
        .unwrap();
    let customer = Change {
        actor: "ps_1:usr_1".to_owned(),
        ..change(Environment::Live, "aud_4")
    };
    let mut made = key("key_1", &app("app_1", "acme"), Some("usr_1"));
    made.id = "key_portal".to_owned();
    let creating = tokio::spawn(async move {
        store
            .create_key(&customer, &made, KeyHash::of("portal key"), None)
            .await
    });
    let mut observer = sqlx::PgConnection::connect(&database.url).await.unwrap();
    wait_until_blocked(
        &mut observer,
        "the portal change never waited for the revocation",
    )
    .await;
    sqlx::query("COMMIT").execute(&mut revoker).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), creating)
        .await
        .expect("the change finished")
        .unwrap();
    assert!(
        matches!(
            outcome,
            Err(StoreError::NotPermitted(
                keyward_store::Forbidden::ActorRevoked
            ))
        ),
        "{outcome:?}"
    );
}

/// Waits until a connection to `observer`'s database is waiting for a lock; fails with
/// `never` if none does within five seconds.
async fn wait_until_blocked(observer: &mut sqlx::PgConnection, never: &str) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *observer)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{never}");
}
