//! Several real `keyward serve` processes on one PostgreSQL database: once a change to a key
//! has returned, no node accepts the old state, even when a node loses its notification
//! connection or the database itself.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinHandle;

use crate::testkit::{Api, Relay, ServerProcess};
use keyward_store::testing::{TestDatabase, DATABASE_URL_VARIABLE};

/// A short lease keeps the tests that wait for one quick.
const LEASE_MS: &str = "1000";

struct Cluster {
    nodes: Vec<ServerProcess>,
    root_key: String,
    _dir: tempfile::TempDir,
    database: TestDatabase,
}

impl Cluster {
    fn start_node(dir: &std::path::Path, name: &str, url: &str) -> ServerProcess {
        Self::start_node_with(dir, name, url, &[])
    }

    fn start_node_with(
        dir: &std::path::Path,
        name: &str,
        url: &str,
        extra: &[(&str, &str)],
    ) -> ServerProcess {
        let mut env = vec![
            ("DATABASE_URL", url),
            ("KEYWARD_NODE_ID", name),
            ("KEYWARD_CLUSTER_LEASE_MS", LEASE_MS),
            ("KEYWARD_DB_ACQUIRE_TIMEOUT_SECONDS", "1"),
            // Well above the two leases a change may wait for a silent node, so that a
            // loaded machine cannot time a revoke out.
            ("KEYWARD_REQUEST_TIMEOUT_SECONDS", "8"),
        ];
        env.extend_from_slice(extra);
        ServerProcess::start_with_env(dir, name, &env)
    }

    /// Starts one node per entry of `urls` (normally all the same database URL).
    async fn start(names: &[&str], database: TestDatabase, urls: &[String]) -> Self {
        Self::start_with(names, database, urls, &[]).await
    }

    /// Like [`Cluster::start`], with more settings for every node. The nodes share a data
    /// directory, and so the master key the first one writes there.
    async fn start_with(
        names: &[&str],
        database: TestDatabase,
        urls: &[String],
        extra: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        let mut root_key = None;
        for (name, url) in names.iter().zip(urls) {
            let node = Self::start_node_with(dir.path(), name, url, extra);
            if let Some((live, _)) = &node.first_keys {
                root_key = Some(live.clone());
            }
            nodes.push(node);
        }
        let cluster = Self {
            nodes,
            root_key: root_key.expect("the first node bootstraps"),
            _dir: dir,
            database,
        };
        for index in 0..cluster.nodes.len() {
            cluster.wait_until_caching(index).await;
        }
        cluster
    }

    /// Stops node `index` and starts it again, as a fresh process.
    async fn restart(&mut self, index: usize, name: &str) {
        let url = self.database.url.clone();
        let fresh = Self::start_node(self._dir.path(), name, &url);
        let old = std::mem::replace(&mut self.nodes[index], fresh);
        old.terminate();
        self.wait_until_caching(index).await;
    }

    fn api(&self, node: usize) -> Api {
        Api::new(&self.nodes[node].base, &self.root_key)
    }

    /// Waits for a node's first heartbeat and its filter of known credentials, so that its
    /// cache and filter are in play (a node that verifies everything from storage would pass
    /// these tests without proving anything).
    async fn wait_until_caching(&self, node: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let metrics = self.api(node).get("/metrics").await;
            if metrics.body.as_str().is_some_and(|text| {
                text.contains("keyward_verify_cache_trusted 1")
                    && text.contains("keyward_verify_filter_ready 1")
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {node} never trusted its cache");
    }
}

fn admin_url() -> Option<String> {
    let url = std::env::var(DATABASE_URL_VARIABLE).ok();
    if url.is_none() {
        eprintln!("skipped: set {DATABASE_URL_VARIABLE} to run the cluster tests");
    }
    url
}

/// One verification as a client saw it.
#[derive(Debug, Clone)]
struct Sample {
    node: usize,
    started: Instant,
    status: u16,
    code: Option<String>,
}

/// Verifies `secret` in a loop on every node (two loops per node) until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &Cluster, nodes: &[usize], secret: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for &node in nodes {
            for _ in 0..2 {
                let api = cluster.api(node);
                let (stop, samples, secret) = (stop.clone(), samples.clone(), secret.to_owned());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let started = Instant::now();
                        let reply = api
                            .post("/api/v1/keys/verify", json!({ "key": secret }))
                            .await;
                        let code = reply.body["code"].as_str().map(str::to_owned);
                        samples.lock().unwrap().push(Sample {
                            node,
                            started,
                            status: reply.status.as_u16(),
                            code,
                        });
                    }
                }));
            }
        }
        Self {
            stop,
            samples,
            tasks,
        }
    }

    /// Waits until some verification that started after `since` was answered with
    /// `status`, so an outage the test stages lasts until the load has met it.
    async fn wait_for_answer(&self, since: Instant, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let seen = self
                .samples
                .lock()
                .unwrap()
                .iter()
                .any(|sample| sample.started > since && sample.status == status);
            if seen {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {status} answer arrived in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.samples).unwrap().into_inner().unwrap()
    }
}

/// Runs `change` through node 0 while every node verifies `secret`, then checks that every
/// verification that started after the change returned got `expected`, on every node.
async fn assert_refused_everywhere_once_returned<Fut>(
    cluster: &Cluster,
    secret: &str,
    expected: &str,
    change: impl FnOnce() -> Fut,
) where
    Fut: Future<Output = ()>,
{
    let everyone: Vec<usize> = (0..cluster.nodes.len()).collect();
    for &node in &everyone {
        assert_eq!(cluster.api(node).verify_code(secret).await, "VALID");
    }
    let load = Load::start(cluster, &everyone, secret);
    tokio::time::sleep(Duration::from_millis(150)).await;
    change().await;
    let returned = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = load.finish().await;

    assert!(
        samples
            .iter()
            .any(|s| s.started < returned && s.code.as_deref() == Some("VALID")),
        "the load verified the key before the change"
    );
    for &node in &everyone {
        let after: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.node == node && s.started > returned)
            .collect();
        assert!(
            after.len() >= 5,
            "node {node} verified too little after the change"
        );
        for sample in after {
            assert_eq!(
                (sample.status, sample.code.as_deref()),
                (200, Some(expected)),
                "node {node} answered a verification that started {:?} after the change \
                 returned",
                sample.started - returned
            );
        }
    }
}

async fn issue_key(api: &Api, app: &str) -> (String, String) {
    api.create_app(app, &[]).await;
    let key = api.create_key(app, json!({ "name": "loaded" })).await;
    (
        key["id"].as_str().unwrap().to_owned(),
        key["secret"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_refuse_a_changed_key_once_the_call_returns() {
    let Some(admin_url) = admin_url() else { return };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let url = database.url.clone();
    // Two nodes given the same name by mistake are still told apart: each process joins
    // under an incarnation of its own.
    let cluster =
        Cluster::start(&["a", "b", "b"], database, &[url.clone(), url.clone(), url]).await;
    let node_a = cluster.api(0);

    let (id, secret) = issue_key(&node_a, "revoked").await;
    assert_refused_everywhere_once_returned(&cluster, &secret, "KEY_REVOKED", || async {
        node_a
            .post(&format!("/api/v1/keys/{id}/revoke"), json!({}))
            .await
            .assert_status(200);
    })
    .await;

    let (id, secret) = issue_key(&node_a, "rotated").await;
    let new_secret = Arc::new(Mutex::new(String::new()));
    assert_refused_everywhere_once_returned(&cluster, &secret, "INVALID_KEY", || async {
        let rotated = node_a
            .post(&format!("/api/v1/keys/{id}/rotate"), json!({}))
            .await
            .assert_status(200)
            .clone();
        *new_secret.lock().unwrap() = rotated["secret"].as_str().unwrap().to_owned();
    })
    .await;
    let new_secret = new_secret.lock().unwrap().clone();
    for node in 0..3 {
        assert_eq!(cluster.api(node).verify_code(&new_secret).await, "VALID");
    }

    let (id, secret) = issue_key(&node_a, "disabled").await;
    assert_refused_everywhere_once_returned(&cluster, &secret, "KEY_DISABLED", || async {
        node_a
            .patch(&format!("/api/v1/keys/{id}"), json!({ "enabled": false }))
            .await
            .assert_status(200);
    })
    .await;

    // A leak report keeps the same promise.
    let (_, secret) = issue_key(&node_a, "leaked").await;
    assert_refused_everywhere_once_returned(&cluster, &secret, "KEY_REVOKED", || async {
        let answer = node_a
            .post("/api/v1/keys/report-leak", json!({ "key": secret }))
            .await;
        assert_eq!(answer.assert_status(200)["result"], "revoked");
    })
    .await;

    let (_, secret) = issue_key(&node_a, "deleted-app").await;
    assert_refused_everywhere_once_returned(&cluster, &secret, "KEY_REVOKED", || async {
        node_a
            .delete("/api/v1/apps/deleted-app")
            .await
            .assert_status(200);
    })
    .await;
}

/// Kills every connection a node's cluster protocol holds (its notification connection
/// among them), as a network fault or a DBA would.
async fn terminate_cluster_connections(admin_url: &str, database: &TestDatabase, node: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name LIKE $1 AND datname = $2) AS terminated",
    )
    .bind(format!("keyward_{node}-%"))
    .bind(database.name())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed >= 1, "found the node's notification connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_loses_its_notification_connection_never_accepts_a_revoked_key() {
    let Some(admin_url) = admin_url() else { return };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let url = database.url.clone();
    let cluster = Cluster::start(&["a", "b"], database, &[url.clone(), url]).await;
    let (node_a, node_b) = (cluster.api(0), cluster.api(1));

    for round in 0..3 {
        let (id, secret) = issue_key(&node_a, &format!("round-{round}")).await;
        assert_eq!(node_b.verify_code(&secret).await, "VALID");
        let load = Load::start(&cluster, &[1], &secret);
        terminate_cluster_connections(&admin_url, &cluster.database, "b").await;
        node_a
            .post(&format!("/api/v1/keys/{id}/revoke"), json!({}))
            .await
            .assert_status(200);
        let returned = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let samples = load.finish().await;
        let after: Vec<&Sample> = samples.iter().filter(|s| s.started > returned).collect();
        assert!(!after.is_empty());
        for sample in after {
            assert_eq!(sample.code.as_deref(), Some("KEY_REVOKED"), "{sample:?}");
        }
        // The node reconnects and trusts its cache again.
        cluster.wait_until_caching(1).await;
    }
}

async fn wait_for_status(api: &Api, path: &str, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if api.get(path).await.status.as_u16() == status {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never answered {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_gives_503s_never_a_wrong_acceptance_and_heals() {
    let Some(admin_url) = admin_url() else { return };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let mut relayed_url = reqwest::Url::parse(&database.url).unwrap();
    let target = format!(
        "{}:{}",
        relayed_url.host_str().unwrap(),
        relayed_url.port().unwrap_or(5432)
    );
    let relay = Relay::start(target).await;
    relayed_url.set_port(Some(relay.port)).unwrap();
    let direct = database.url.clone();
    let cluster = Cluster::start(&["a", "b"], database, &[direct, relayed_url.to_string()]).await;
    let (node_a, node_b) = (cluster.api(0), cluster.api(1));

    let (id, secret) = issue_key(&node_a, "outage").await;
    let (_, survivor) = issue_key(&node_a, "outage-survivor").await;
    assert_eq!(node_b.verify_code(&secret).await, "VALID");
    assert_eq!(node_b.verify_code(&survivor).await, "VALID");
    let load = Load::start(&cluster, &[1], &secret);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A partition node B cannot notice: only its lease stops it from answering from cache.
    relay.stall();
    node_a
        .post(&format!("/api/v1/keys/{id}/revoke"), json!({}))
        .await
        .assert_status(200);
    let returned = Instant::now();
    let metrics = node_a.get("/metrics").await;
    assert!(
        metrics
            .body
            .as_str()
            .is_some_and(|text| text.contains("keyward_cluster_propagation_lapses_total 1")),
        "the revoke waited for node B's lease to end: {}",
        metrics.body
    );
    // Then the database goes away altogether.
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.cut();
    wait_for_status(&node_b, "/readyz", 503, Duration::from_secs(10)).await;
    node_b
        .post("/api/v1/keys/verify", json!({ "key": survivor }))
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE", "storage_unavailable");
    // The load's requests may still be the ones it sent before the cut; keep the database
    // away until the load itself has been answered during the outage.
    load.wait_for_answer(returned, 503, Duration::from_secs(10))
        .await;

    relay.restore();
    wait_for_status(&node_b, "/readyz", 200, Duration::from_secs(20)).await;
    cluster.wait_until_caching(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = load.finish().await;

    let after: Vec<&Sample> = samples.iter().filter(|s| s.started > returned).collect();
    assert!(
        after.iter().any(|s| s.status == 503),
        "the outage was answered with 503s: {} samples in all, these after the revoke: {after:?}",
        samples.len()
    );
    for sample in &after {
        let acceptable = sample.status == 503 || sample.code.as_deref() == Some("KEY_REVOKED");
        assert!(acceptable, "wrong answer during the outage: {sample:?}");
    }
    assert!(
        after
            .iter()
            .any(|s| s.code.as_deref() == Some("KEY_REVOKED")),
        "the node recovered"
    );
    assert_eq!(node_b.verify_code(&survivor).await, "VALID");
    assert_eq!(node_b.verify_code(&secret).await, "KEY_REVOKED");
}

/// Issue 19, item 3: one node frozen (`SIGSTOP`) at random moments under write load, often
/// inside its own transactions (key creations, `last_used_at` batches, heartbeats). Every
/// revoke made on another node meanwhile returns within two leases and a second, and the
/// frozen node, once resumed, never accepts the revoked key. `KEYWARD_TEST_FREEZES` sets how
/// many freezes (10 here; `bench/freeze.sh` runs 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revokes_never_hang_behind_a_frozen_node() {
    use rand::Rng;
    let Some(admin_url) = admin_url() else { return };
    let freezes: usize = std::env::var("KEYWARD_TEST_FREEZES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let url = database.url.clone();
    let cluster =
        Cluster::start(&["a", "b", "c"], database, &[url.clone(), url.clone(), url]).await;
    let (node_a, node_c) = (cluster.api(0), cluster.api(2));
    let frozen_pid = cluster.nodes[2].pid().to_string();
    node_a.create_app("writes", &[]).await;

    // Write load on the node that will be frozen and on another: keys made and verified, so
    // that the frozen node is often inside a transaction of its own.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<JoinHandle<()>> = [1_usize, 2]
        .into_iter()
        .map(|node| {
            let (api, stop) = (cluster.api(node), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let created = api
                        .post("/api/v1/apps/writes/keys", json!({"name": "load"}))
                        .await;
                    if let Some(secret) = created.body["secret"].as_str() {
                        let _ = api
                            .post("/api/v1/keys/verify", json!({ "key": secret }))
                            .await;
                    }
                }
            })
        })
        .collect();

    let bound = Duration::from_millis(2 * LEASE_MS.parse::<u64>().unwrap() + 1000);
    let mut slowest = Duration::ZERO;
    for round in 0..freezes {
        let (id, secret) = issue_key(&node_a, &format!("frozen-{round}")).await;
        assert_eq!(node_c.verify_code(&secret).await, "VALID");
        let (before_freeze, frozen_for) = {
            let mut rng = rand::thread_rng();
            (
                Duration::from_millis(rng.gen_range(0..300)),
                Duration::from_millis(rng.gen_range(0..2500)),
            )
        };
        tokio::time::sleep(before_freeze).await;
        let signal = |name: &str| {
            let status = std::process::Command::new("kill")
                .args([name, &frozen_pid])
                .status()
                .unwrap();
            assert!(status.success(), "kill {name}");
        };
        signal("-STOP");
        let started = Instant::now();
        node_a
            .post(&format!("/api/v1/keys/{id}/revoke"), json!({}))
            .await
            .assert_status(200);
        let took = started.elapsed();
        slowest = slowest.max(took);
        tokio::time::sleep(frozen_for.saturating_sub(took)).await;
        signal("-CONT");
        assert!(
            took <= bound,
            "round {round}: a revoke took {took:?} behind a frozen node (bound {bound:?})"
        );
        // Resumed, the node refuses the key, or cannot answer yet; it never accepts it.
        for _ in 0..5 {
            let verdict = node_c
                .post("/api/v1/keys/verify", json!({ "key": secret }))
                .await;
            assert_ne!(
                verdict.body["code"], "VALID",
                "round {round}: the resumed node accepted a revoked key"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    println!("{freezes} freezes: the slowest revoke took {slowest:?} (bound {bound:?})");
}

/// Makes the database forget its last `lost` announcements, as a failover to an
/// asynchronous replica that had not received them would (the rows they changed are kept:
/// only the counter matters here).
async fn rewind_counter(admin_url: &str, database: &TestDatabase, lost: i64) {
    use sqlx::Connection;
    let url = {
        let mut url = reqwest::Url::parse(admin_url).unwrap();
        url.set_path(database.name());
        url.to_string()
    };
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE cluster_state SET invalidation_seq = invalidation_seq - $1")
        .bind(lost)
        .execute(&mut connection)
        .await
        .unwrap();
    sqlx::query(
        "DELETE FROM cache_invalidations WHERE seq > \
         (SELECT invalidation_seq FROM cluster_state)",
    )
    .execute(&mut connection)
    .await
    .unwrap();
}

/// Issue 19, item 4: the change counter goes back under running nodes. The next changes
/// reuse numbers the nodes already applied; each must still reach every node before its
/// call returns, whether a node hears of it on the connection it had or after reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_counter_that_goes_back_never_lets_a_revoked_key_pass() {
    let Some(admin_url) = admin_url() else { return };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let url = database.url.clone();
    let mut cluster = Cluster::start(&["a", "b"], database, &[url.clone(), url]).await;
    let node_a = cluster.api(0);
    let revoke = |id: String| {
        let node_a = node_a.clone();
        async move {
            node_a
                .post(&format!("/api/v1/keys/{id}/revoke"), json!({}))
                .await
                .assert_status(200);
        }
    };

    // How node B meets the new history: on the connection it had, after reconnecting, and
    // as a process started after the lost announcements were made.
    for way in ["listening", "reconnecting", "restarted"] {
        let mut keys = Vec::new();
        for n in 0..3 {
            keys.push(issue_key(&node_a, &format!("rewound-{way}-{n}")).await);
        }
        // Announcements the nodes apply, then the database loses.
        for n in 0..3 {
            let (id, _) = issue_key(&node_a, &format!("lost-{way}-{n}")).await;
            revoke(id).await;
        }
        if way == "restarted" {
            cluster.restart(1, "b").await;
        }
        let node_b = cluster.api(1);
        for (_, secret) in &keys {
            assert_eq!(node_b.verify_code(secret).await, "VALID");
        }
        rewind_counter(&admin_url, &cluster.database, 3).await;
        if way == "reconnecting" {
            terminate_cluster_connections(&admin_url, &cluster.database, "b").await;
        }
        // The next three changes take the numbers the nodes applied before.
        for (id, secret) in keys {
            revoke(id).await;
            assert_eq!(
                node_b.verify_code(&secret).await,
                "KEY_REVOKED",
                "a revoke numbered like a lost one (node B {way})"
            );
        }
        cluster.wait_until_caching(1).await;
    }
    let (_, fresh) = issue_key(&node_a, "after").await;
    assert_eq!(cluster.api(1).verify_code(&fresh).await, "VALID");
}

/// Issue 19, item 2: every node refuses unknown secrets from its filter of known
/// credentials, so a credential made on one node must be known to every other before its
/// creation returns. Each path that makes a secret is tried on three nodes: the credential
/// works on the other two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_new_credential_is_known_on_every_node_once_created() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use base64::Engine as _;
    use keyward_core::secret::IssuedSecret;
    use keyward_core::{Environment, KeyHash};

    use crate::credentials::{now, sign, signed};

    let Some(admin_url) = admin_url() else { return };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let url = database.url.clone();
    let cluster =
        Cluster::start(&["a", "b", "c"], database, &[url.clone(), url.clone(), url]).await;
    let node_a = cluster.api(0);
    let everywhere = 0..3;

    // An API key, and a key imported with only its hash.
    node_a.create_app("orders", &["read:orders"]).await;
    let key = node_a.create_key("orders", json!({ "name": "made" })).await;
    let imported =
        IssuedSecret::generate("orders", Environment::Live, &mut rand::rngs::OsRng).unwrap();
    // A secret another system issued, in its own format: the first such import anywhere.
    let legacy = "legacy_8f3kQ2mZ7vX1pL9tR4wY6nB0";
    let import = node_a
        .post(
            "/api/v1/apps/orders/keys/import",
            json!({ "keys": [
                { "hash": KeyHash::of(imported.expose()).to_hex(), "keyward_format": true,
                  "name": "imported" },
                { "hash": KeyHash::of(legacy).to_hex(), "name": "legacy" },
            ] }),
        )
        .await;
    assert_eq!(import.assert_status(200)["imported"], 2);
    for node in everywhere.clone() {
        let api = cluster.api(node);
        assert_eq!(
            api.verify_code(key["secret"].as_str().unwrap()).await,
            "VALID"
        );
        assert_eq!(api.verify_code(imported.expose()).await, "VALID");
        assert_eq!(api.verify_code(legacy).await, "VALID", "node {node}");
    }

    // A root key, and a demo sandbox's root key.
    let root = node_a
        .post(
            "/api/v1/root-keys",
            json!({ "name": "reader", "scopes": ["apps:read"] }),
        )
        .await;
    let root_secret = root.assert_status(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let demo = reqwest::Client::new()
        .post(format!("{}/api/v1/demo/session", cluster.nodes[0].base))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(demo.status(), 201);
    let demo_secret = demo.json::<serde_json::Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    for node in everywhere.clone() {
        let base = &cluster.nodes[node].base;
        Api::new(base, &root_secret)
            .get("/api/v1/apps")
            .await
            .assert_status(200);
        Api::new(base, &demo_secret)
            .get("/api/v1/apps")
            .await
            .assert_status(200);
    }

    // A workspace key, signing a call to each node.
    let workspace = node_a
        .post("/api/v1/workspace-keys", json!({ "name": "backend" }))
        .await
        .assert_status(201)
        .clone();
    let (workspace_id, workspace_secret) = (
        workspace["id"].as_str().unwrap(),
        workspace["secret"].as_str().unwrap(),
    );
    for node in everywhere.clone() {
        // Another query each time: a signature is accepted once.
        let query = format!("limit={}", node + 1);
        let authorization = signed(
            "GET",
            "/api/v1/apps",
            &query,
            b"",
            workspace_id,
            workspace_secret,
            now(),
        );
        let answer = reqwest::Client::new()
            .get(format!("{}/api/v1/apps?{query}", cluster.nodes[node].base))
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "node {node}");
    }

    // A JWT public key with self-service, and a key an end user made with it.
    let signer = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(signer.as_ref()).unwrap();
    let jwk = json!({ "kty": "OKP", "crv": "Ed25519",
        "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()) });
    let public_key = node_a
        .create_public_key(
            json!({ "type": "jwt", "public_key": jwk.to_string(), "algorithms": ["EdDSA"],
                "self_service_app": "orders", "max_keys_per_user": 5 }),
        )
        .await;
    let token = sign(
        jsonwebtoken::Algorithm::EdDSA,
        None,
        &jsonwebtoken::EncodingKey::from_ed_der(signer.as_ref()),
        &json!({ "sub": "alice", "exp": now() + 600 }),
    );
    let self_made = reqwest::Client::new()
        .post(format!("{}/api/v1/me/keys", cluster.nodes[0].base))
        .header("x-api-key", &public_key)
        .bearer_auth(&token)
        .json(&json!({ "name": "laptop" }))
        .send()
        .await
        .unwrap();
    assert_eq!(self_made.status(), 201);
    let self_made = self_made.json::<serde_json::Value>().await.unwrap();
    for node in everywhere {
        let api = cluster.api(node);
        let verdict = api
            .post(
                "/api/v1/verify-request",
                json!({ "method": "GET", "path": "/orders", "headers": {
                    "X-API-Key": public_key, "Authorization": format!("Bearer {token}") } }),
            )
            .await
            .assert_status(200)
            .clone();
        assert_eq!(verdict["valid"], true, "node {node}: {verdict:#}");
        assert_eq!(
            api.verify_code(self_made["secret"].as_str().unwrap()).await,
            "VALID",
            "node {node}"
        );
    }
}

/// Issue 19, "Also": a node that cannot hear announcements must not renew its lease, or every
/// change waits a lease for its acknowledgement. Node B runs as a role of its own; its
/// notification connection is killed and the role may open no new connection, while B's
/// other connections (heartbeats among them) stay up. Once B's lease has run out, a revoke on
/// A waits for nobody, and B, verifying from storage, refuses the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_cannot_listen_lets_its_lease_run_out() {
    use sqlx::Connection;

    let Some(admin_url) = admin_url() else { return };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let url = database.url.clone();
    let mut cluster = Cluster::start(&["a"], database, std::slice::from_ref(&url)).await;
    let role = format!("keyward_deaf_{}", std::process::id());
    let mut owner = sqlx::PgConnection::connect(&url).await.unwrap();
    for statement in [
        format!("DROP ROLE IF EXISTS {role}"),
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT ALL ON SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(&statement).execute(&mut owner).await.unwrap();
    }
    let as_role = url.replacen("://postgres@", &format!("://{role}@"), 1);
    assert_ne!(
        as_role, url,
        "the test database URL names the postgres user"
    );
    let node_b = Cluster::start_node(cluster._dir.path(), "b", &as_role);
    cluster.nodes.push(node_b);
    cluster.wait_until_caching(1).await;
    let (node_a, node_b) = (cluster.api(0), cluster.api(1));
    let (id, secret) = issue_key(&node_a, "deaf").await;
    assert_eq!(node_b.verify_code(&secret).await, "VALID");

    sqlx::query(&format!("ALTER ROLE {role} CONNECTION LIMIT 0"))
        .execute(&mut owner)
        .await
        .unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = $1 AND query LIKE 'LISTEN%') AS terminated",
    )
    .bind(&role)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    // The cluster's, and the event stream's.
    assert!(killed >= 1, "found B's notification connection");
    // B's last renewal ends within a lease (and a heartbeat) of the kill.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let lapses = || {
        crate::testkit::metric(
            &cluster.nodes[0].base,
            "keyward_cluster_propagation_lapses_total",
        )
    };
    let lapsed_before = lapses().await.unwrap_or(0.0);
    node_a
        .post(&format!("/api/v1/keys/{id}/revoke"), json!({}))
        .await
        .assert_status(200);
    assert_eq!(
        lapses().await.unwrap_or(0.0),
        lapsed_before,
        "the revoke waited for a node that could not hear it"
    );
    // B never accepts it: it verifies from storage, or cannot and says so.
    let code = node_b
        .post("/api/v1/keys/verify", json!({ "key": secret }))
        .await;
    assert_ne!(code.body["code"], "VALID", "{:#}", code.body);

    sqlx::query(&format!("ALTER ROLE {role} CONNECTION LIMIT -1"))
        .execute(&mut owner)
        .await
        .unwrap();
    cluster.wait_until_caching(1).await;
    assert_eq!(node_b.verify_code(&secret).await, "KEY_REVOKED");
    drop(cluster.nodes.pop());
    sqlx::query(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .execute(&mut owner)
    .await
    .unwrap();
    sqlx::query(&format!("DROP OWNED BY {role}"))
        .execute(&mut owner)
        .await
        .unwrap();
    owner.close().await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Webhooks on three nodes: a node killed with `kill -9` in the middle of its deliveries loses
/// none of them; the others take them over once its claims lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_survive_a_node_killed_mid_delivery() {
    let Some(admin_url) = admin_url() else { return };
    let Some(receiver) = crate::webhooks::Receiver::start() else {
        return;
    };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let url = database.url.clone();
    let mut cluster = Cluster::start_with(
        &["a", "b", "c"],
        database,
        &[url.clone(), url.clone(), url],
        &[
            ("KEYWARD_ALLOW_PRIVATE_URLS", "true"),
            ("KEYWARD_WEBHOOK_TIMEOUT_MS", "2000"),
            ("KEYWARD_WEBHOOK_RETRY_FIRST_DELAY_MS", "100"),
        ],
    )
    .await;
    let (_, secret) =
        crate::webhooks::endpoint(&cluster.api(0), &receiver.url(), json!(["key.created"])).await;
    receiver.set_secrets(&[&secret]).await;
    receiver.set_mode("hang").await;

    let node_b = cluster.api(1);
    node_b.create_app("hooks", &[]).await;
    let mut keys = std::collections::HashSet::new();
    for _ in 0..20 {
        let key = node_b.create_key("hooks", json!({ "name": "k" })).await;
        keys.insert(key["id"].as_str().unwrap().to_owned());
    }
    // Node b committed the events and claims their deliveries first; wait until it is
    // mid-delivery (the receiver holds its requests), then kill it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::testkit::metric(
        &cluster.nodes[1].base,
        "keyward_webhook_deliveries_in_flight",
    )
    .await
    .unwrap_or(0.0)
        < 1.0
    {
        assert!(Instant::now() < deadline, "node b never started a delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.nodes.remove(1).kill_hard();
    receiver.set_mode("ok").await;

    let received = receiver
        .wait_for(Duration::from_secs(40), |received| {
            let delivered: std::collections::HashSet<&str> = received
                .iter()
                .filter_map(|d| d["data"]["key"]["id"].as_str())
                .collect();
            delivered.len() == keys.len()
        })
        .await;
    for delivery in &received {
        assert!(keys.contains(delivery["data"]["key"]["id"].as_str().unwrap()));
    }
    // Every copy of an event came under one webhook-id.
    let mut ids = std::collections::HashMap::<&str, &str>::new();
    for delivery in &received {
        let event = delivery["data"]["id"].as_str().unwrap();
        let id = delivery["id"].as_str().unwrap();
        assert_eq!(*ids.entry(event).or_insert(id), id);
    }
}

/// A portal link opened on two nodes at once opens one session (SPEC §4.10: usable once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_portal_link_opens_once_across_nodes() {
    use crate::portal::portal_link;

    let Some(admin_url) = admin_url() else { return };
    let database = TestDatabase::create(&admin_url).await.unwrap();
    let url = database.url.clone();
    let cluster = Cluster::start(&["a", "b"], database, &[url.clone(), url]).await;
    let (node_a, node_b) = (cluster.api(0), cluster.api(1));
    node_a.create_app("reports", &["read"]).await;
    for _ in 0..5 {
        let link = portal_link(&node_a, json!({"owner_user_id": "usr_1", "app": "reports"})).await;
        let code = link["url"].as_str().unwrap().rsplit_once('/').unwrap().1;
        let body = json!({ "code": code });
        let (first, second) = tokio::join!(
            node_a.post("/api/v1/portal/sessions/redeem", body.clone()),
            node_b.post("/api/v1/portal/sessions/redeem", body),
        );
        let mut statuses = [first.status.as_u16(), second.status.as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 404], "{:#} {:#}", first.body, second.body);
    }
}
