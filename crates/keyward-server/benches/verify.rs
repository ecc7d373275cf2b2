//! In-process verification of a cached key: parse, checksum, hash, cache hit, decision; and
//! the same with the in-process usage engine charging a rate limit and credits.
//! Run: `cargo bench -p keyward-server --bench verify`. Recorded in docs/benchmarks.md.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use keyward_core::model::Environment;
use keyward_core::permission::PermissionQuery;
use keyward_core::KeyHash;
use keyward_server::verifier::{InMemory, Verifier};
use keyward_server::{clock, Server, ServerConfig};
use keyward_store::{SqlStore, Store, StoreOptions};
use serde_json::json;

/// Issues one key through the real HTTP API and warms the verifier's cache with it. The
/// runtime ends afterwards; the in-memory path needs none.
fn prepared() -> (
    Arc<keyward_server::AppState>,
    keyward_core::model::Tenancy,
    String,
    String,
    tempfile::TempDir,
) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqlStore::connect(&StoreOptions {
            url: SqlStore::sqlite_url(dir.path()),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            node_id: keyward_store::StoreOptions::new_node_id(),
        })
        .await
        .expect("store");
        let store: Arc<dyn Store> = Arc::new(store);
        let first = keyward_server::bootstrap::bootstrap(store.as_ref())
            .await
            .expect("bootstrap")
            .expect("fresh");
        let server = Server::new(Arc::clone(&store), ServerConfig::default()).expect("server");
        let state = Arc::clone(server.state());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(server.run(listener, std::future::pending()));
        let http = reqwest::Client::new();
        let root = secrecy::ExposeSecret::expose_secret(&first.live).to_owned();
        http.post(format!("{base}/api/v1/apps"))
            .bearer_auth(&root)
            .json(&json!({"name": "Bench", "slug": "bench", "permissions": ["read", "write"]}))
            .send()
            .await
            .expect("create app");
        let key: serde_json::Value = http
            .post(format!("{base}/api/v1/apps/bench/keys"))
            .bearer_auth(&root)
            .json(&json!({"name": "bench", "permissions": ["read"]}))
            .send()
            .await
            .expect("create key")
            .json()
            .await
            .expect("json");
        let secret = key["secret"].as_str().expect("secret").to_owned();
        // A key with a rate limit and credits that never run out during the benchmark.
        http.post(format!("{base}/api/v1/rate-limit-schemes"))
            .bearer_auth(&root)
            .json(&json!({"slug": "bench", "windows": [
                {"limit": 1_000_000_000_000_u64, "period_seconds": 1},
                {"limit": 1_000_000_000_000_u64, "period_seconds": 3600}]}))
            .send()
            .await
            .expect("create scheme");
        let metered: serde_json::Value = http
            .post(format!("{base}/api/v1/apps/bench/keys"))
            .bearer_auth(&root)
            .json(
                &json!({"name": "metered", "permissions": ["read"], "rate_limit_scheme": "bench",
                          "credits": {"remaining": 1_000_000_000_000_000_i64}}),
            )
            .send()
            .await
            .expect("create metered key")
            .json()
            .await
            .expect("json");
        let metered = metered["secret"].as_str().expect("secret").to_owned();
        let tenancy = keyward_core::model::Tenancy {
            workspace_id: first.workspace_id.clone(),
            environment: Environment::Live,
        };
        let verdict = state
            .verifier
            .verify_key(state.store.as_ref(), &tenancy, &secret, None, clock::now())
            .await
            .expect("verify");
        assert!(verdict.code.is_valid());
        let verdict = state
            .verifier
            .verify_key(state.store.as_ref(), &tenancy, &metered, None, clock::now())
            .await
            .expect("verify");
        assert!(verdict.code.is_valid());
        (state, tenancy, secret, metered, dir)
    })
}

fn bench(c: &mut Criterion) {
    let (state, tenancy, secret, metered, _dir) = prepared();
    let verifier: &Verifier = &state.verifier;
    let query = PermissionQuery::parse("read OR admin").expect("query");
    let now = clock::now();

    let mut group = c.benchmark_group("verify");
    group.bench_function("reference: sha256 of the key alone", |b| {
        b.iter(|| KeyHash::of(std::hint::black_box(&secret)))
    });
    group.bench_function("cached key, in-process", |b| {
        b.iter(|| {
            match verifier.verify_in_memory(&tenancy, std::hint::black_box(&secret), None, now) {
                InMemory::Decided(verdict) => verdict,
                InMemory::Miss(_) => panic!("the key is cached"),
            }
        })
    });
    // What the in-process engine adds: the same cached verification, then the charge
    // against two rate windows and the key's credits.
    group.bench_function(
        "cached key with a rate limit and credits, in-process",
        |b| {
            b.iter(|| {
                let InMemory::Decided(verdict) =
                    verifier.verify_in_memory(&tenancy, std::hint::black_box(&metered), None, now)
                else {
                    panic!("the key is cached")
                };
                let entry = verdict.key.expect("found");
                // The in-process engine never waits: its future is ready on the first poll.
                let charge = std::pin::pin!(state.charge_key(&entry, 1, None, now));
                match charge.poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(decision) => decision.expect("charged"),
                    Poll::Pending => panic!("the in-process engine waited"),
                }
            })
        },
    );
    group.bench_function("cached key with a permission query", |b| {
        b.iter(|| {
            verifier.verify_in_memory(&tenancy, std::hint::black_box(&secret), Some(&query), now)
        })
    });
    // On a cluster node the cache answers under a lease, checked against the monotonic
    // clock on every verification.
    {
        use keyward_store::cluster::ClusterCache;
        verifier.trust_until(std::time::Instant::now() + Duration::from_secs(3600));
    }
    group.bench_function("cached key, cluster node (lease check)", |b| {
        b.iter(|| {
            match verifier.verify_in_memory(&tenancy, std::hint::black_box(&secret), None, now) {
                InMemory::Decided(verdict) => verdict,
                InMemory::Miss(_) => panic!("the key is cached"),
            }
        })
    });
    group.bench_function("wrong checksum, refused offline", |b| {
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push('0');
        b.iter(|| verifier.verify_in_memory(&tenancy, std::hint::black_box(&wrong), None, now))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
