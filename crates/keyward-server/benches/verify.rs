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
use keyward_server::verification::api_key::InMemory;
use keyward_server::verification::{Ask, Verification};
use keyward_server::{clock, Server, ServerConfig};
use keyward_store::{SqlStore, StoreOptions};
use serde_json::json;

/// Issues one key through the real HTTP API and warms the verifier's cache with it. The
/// runtime ends afterwards; the in-memory path needs none.
/// What the benchmarks verify: two API keys, and a JWT public key with a token of its own.
struct Prepared {
    state: Arc<keyward_server::AppState>,
    tenancy: keyward_core::model::Tenancy,
    secret: String,
    metered: String,
    jwt_public_key: String,
    jwt: String,
    /// The P-256 point that verifies `jwt`, for the bare crypto reference.
    jwt_verifying_point: Vec<u8>,
    /// A workspace key's id and secret, for signed requests.
    workspace_key: (String, String),
    _dir: tempfile::TempDir,
}

/// An ES256 key pair: its public half as PEM, and a token it signed.
fn es256_token() -> (String, String, Vec<u8>) {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::Engine as _;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .expect("key pair");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("pkcs8");
    let der = pair.public_key().as_der().expect("spki");
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der.as_ref())
    );
    let exp = clock::now().as_millis() / 1000 + 24 * 3600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({"sub": "usr_bench", "exp": exp, "permissions": ["read"]}),
        &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
    )
    .expect("sign");
    (pem, token, pair.public_key().as_ref().to_vec())
}

fn prepared() -> Prepared {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let opened = Server::open(
            &StoreOptions {
                url: SqlStore::sqlite_url(dir.path()),
                max_connections: 2,
                acquire_timeout: Duration::from_secs(5),
                node_id: keyward_store::StoreOptions::new_node_id(),
            },
            ServerConfig::default(),
            keyward_store::cluster::ClusterOptions::default(),
        )
        .await
        .expect("server");
        let first = opened.first_keys.expect("fresh");
        let server = opened.server;
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
        let (pem, jwt, jwt_verifying_point) = es256_token();
        let public_key: serde_json::Value = http
            .post(format!("{base}/api/v1/public-keys"))
            .bearer_auth(&root)
            .json(&json!({"type": "jwt", "public_key": pem, "algorithms": ["ES256"]}))
            .send()
            .await
            .expect("create public key")
            .json()
            .await
            .expect("json");
        let jwt_public_key = public_key["key"].as_str().expect("key").to_owned();
        let workspace_key: serde_json::Value = http
            .post(format!("{base}/api/v1/workspace-keys"))
            .bearer_auth(&root)
            .json(&json!({"name": "bench"}))
            .send()
            .await
            .expect("create workspace key")
            .json()
            .await
            .expect("json");
        let workspace_key = (
            workspace_key["id"].as_str().expect("id").to_owned(),
            workspace_key["secret"].as_str().expect("secret").to_owned(),
        );
        // A signed call caches the workspace key (its secret unsealed) on this node.
        let timestamp = clock::now().as_millis() / 1000;
        let digest = keyward_core::signature::body_digest(b"");
        let signature = keyward_core::signature::SignedRequest {
            method: "GET",
            path: "/api/v1/apps",
            query: "",
            timestamp,
            body_sha256: &digest,
        }
        .sign(workspace_key.1.as_bytes());
        let signed = http
            .get(format!("{base}/api/v1/apps"))
            .header(
                "authorization",
                format!(
                    "KW-HMAC-SHA256 key={}, ts={timestamp}, sig={signature}",
                    workspace_key.0
                ),
            )
            .send()
            .await
            .expect("signed call");
        assert!(signed.status().is_success(), "{}", signed.status());
        // Warm the cache, so the benchmarks below never wait on storage.
        state
            .verification
            .find_public_key(&jwt_public_key, clock::now())
            .await
            .expect("storage")
            .expect("the public key exists");
        let tenancy = keyward_core::model::Tenancy {
            workspace_id: first.workspace_id.clone(),
            environment: Environment::Live,
        };
        let ask = Ask {
            credits_cost: 1,
            ..Ask::default()
        };
        let verdict = state
            .verification
            .verify_api_key(&tenancy, &secret, &ask, clock::now())
            .await
            .expect("verify");
        assert!(verdict.code.is_valid());
        let verdict = state
            .verification
            .verify_api_key(&tenancy, &metered, &ask, clock::now())
            .await
            .expect("verify");
        assert!(verdict.code.is_valid());
        Prepared {
            state,
            tenancy,
            secret,
            metered,
            jwt_public_key,
            jwt,
            jwt_verifying_point,
            workspace_key,
            _dir: dir,
        }
    })
}

/// Polls a future that must not wait (everything it needs is in memory).
fn ready<T>(future: impl Future<Output = T>) -> T {
    match std::pin::pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("an in-memory path waited"),
    }
}

fn bench(c: &mut Criterion) {
    let prepared = prepared();
    let state = &prepared.state;
    let (tenancy, secret, metered) = (
        prepared.tenancy.clone(),
        prepared.secret.clone(),
        prepared.metered.clone(),
    );
    let verifier: &Verification = &state.verification;
    let query = PermissionQuery::parse("read OR admin").expect("query");
    let now = clock::now();

    let mut group = c.benchmark_group("verify");
    group.bench_function("reference: sha256 of the key alone", |b| {
        b.iter(|| KeyHash::of(std::hint::black_box(&secret)))
    });
    group.bench_function("cached key, in-process", |b| {
        b.iter(|| {
            match verifier.verify_in_memory(&tenancy, std::hint::black_box(&secret), None, now) {
                InMemory::Decided(code, key) => (code, key),
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
                let InMemory::Decided(_, key) =
                    verifier.verify_in_memory(&tenancy, std::hint::black_box(&metered), None, now)
                else {
                    panic!("the key is cached")
                };
                let entry = key.expect("found");
                let ask = Ask {
                    credits_cost: 1,
                    ..Ask::default()
                };
                // The in-process engine never waits: its future is ready on the first poll.
                ready(verifier.charge(&entry, &ask, now)).expect("charged")
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
        verifier
            .cache
            .trust_until(std::time::Instant::now() + Duration::from_secs(3600));
    }
    group.bench_function("cached key, cluster node (lease check)", |b| {
        b.iter(|| {
            match verifier.verify_in_memory(&tenancy, std::hint::black_box(&secret), None, now) {
                InMemory::Decided(code, key) => (code, key),
                InMemory::Miss(_) => panic!("the key is cached"),
            }
        })
    });
    credentials(&mut group, &prepared, now);
    group.bench_function("wrong checksum, refused offline", |b| {
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push('0');
        b.iter(|| verifier.verify_in_memory(&tenancy, std::hint::black_box(&wrong), None, now))
    });
    group.finish();
}

/// JWTs and HMAC signatures, each against a reference measured in the same run.
fn credentials(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    prepared: &Prepared,
    now: keyward_core::Timestamp,
) {
    use keyward_core::model::PublicKeyKind;
    let state = &prepared.state;
    let public_key = ready(
        state
            .verification
            .find_public_key(&prepared.jwt_public_key, now),
    )
    .expect("storage")
    .expect("the public key exists");
    let PublicKeyKind::Jwt(settings) = &public_key.key.kind else {
        panic!("a JWT public key")
    };
    let token = prepared.jwt.as_str();
    // Reference: the bare ES256 check of the token's signature with the same crypto library.
    let (signing_input, signature) = token.rsplit_once('.').expect("three parts");
    let signature = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .expect("base64")
    };
    let point = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        prepared.jwt_verifying_point.clone(),
    );
    group.bench_function("reference: bare ES256 signature check (aws-lc-rs)", |b| {
        b.iter(|| {
            point
                .verify(signing_input.as_bytes(), std::hint::black_box(&signature))
                .expect("valid")
        })
    });
    group.bench_function(
        "JWT, cold: header, key, ES256, claims (Keyward path)",
        |b| {
            b.iter_batched(
                || state.verification.tokens.forget_tokens(),
                |()| {
                    ready(
                        state
                            .verification
                            .tokens
                            .verify_jwt(&public_key, settings, token, now),
                    )
                    .expect("valid")
                },
                // Each run forgets the token just before it: a batch of setups first would
                // leave all but one run warm.
                criterion::BatchSize::PerIteration,
            )
        },
    );
    ready(
        state
            .verification
            .tokens
            .verify_jwt(&public_key, settings, token, now),
    )
    .expect("valid");
    group.bench_function("JWT, repeated: public key + token cache hit", |b| {
        b.iter(|| {
            let public_key = ready(
                state
                    .verification
                    .find_public_key(std::hint::black_box(&prepared.jwt_public_key), now),
            )
            .expect("storage")
            .expect("found");
            ready(
                state
                    .verification
                    .tokens
                    .verify_jwt(&public_key, settings, token, now),
            )
            .expect("valid")
        })
    });
    // A workspace-key signature over a request with a 1 KiB body: digest, then HMAC.
    let body = vec![b'x'; 1024];
    let (workspace_key, secret) = &prepared.workspace_key;
    let now_seconds = now.as_millis() / 1000;
    let signed_header = |query: &str| {
        let digest = keyward_core::signature::body_digest(&body);
        let signature = keyward_core::signature::SignedRequest {
            method: "POST",
            path: "/api/v1/orders",
            query,
            timestamp: now_seconds,
            body_sha256: &digest,
        }
        .sign(secret.as_bytes());
        format!("key={workspace_key}, ts={now_seconds}, sig={signature}")
    };
    let header_text = signed_header("expand=items");
    group.bench_function(
        "HMAC request signature, 1 KiB body (digest + parse + verify)",
        |b| {
            b.iter(|| {
                let digest = keyward_core::signature::body_digest(std::hint::black_box(&body));
                let header =
                    keyward_core::signature::SignatureHeader::parse(&header_text).expect("header");
                let request = keyward_core::signature::SignedRequest {
                    method: "POST",
                    path: "/api/v1/orders",
                    query: "expand=items",
                    timestamp: header.timestamp,
                    body_sha256: &digest,
                };
                assert!(request.verify(secret.as_bytes(), &header.signature));
            })
        },
    );
    // The whole path of a signed request on one node: the above, plus the cached workspace
    // key and the replay guard. Every signature is new (a counter in the query), as a
    // replayed one would be refused.
    let mut counter = 0_u64;
    group.bench_function(
        "HMAC request, 1 KiB body, full path (cached key, replay guard)",
        |b| {
            b.iter_batched(
                || {
                    counter += 1;
                    let query = format!("n={counter}");
                    (signed_header(&query), query)
                },
                |(header_text, query)| {
                    let digest = keyward_core::signature::body_digest(std::hint::black_box(&body));
                    let header = keyward_core::signature::SignatureHeader::parse(&header_text)
                        .expect("header");
                    let facts = keyward_server::verification::RequestFacts {
                        method: "POST",
                        path: "/api/v1/orders",
                        query: &query,
                        body_sha256: &digest,
                    };
                    ready(
                        state
                            .verification
                            .authenticate_signature(&header, &facts, now),
                    )
                    .expect("accepted")
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
