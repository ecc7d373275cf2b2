//! Leaked keys (SPEC §4.9): GitHub's secret-scanning partner endpoint, `report-leak` for any
//! other scanner, and the patterns scanners match. A report finds each secret by its hash,
//! then applies its environment's `leaked_key_action` through storage, one transaction per
//! environment, settled in every node's cache before the answer goes out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use base64::Engine as _;
use keyward_core::id::{self, IdKind};
use keyward_core::leak::{scanning_patterns, LeakOutcome, LeakReport};
use keyward_core::model::Tenancy;
use keyward_core::scope::{Scope, ScopeSet};
use keyward_core::{KeyHash, ParsedKey, Timestamp};
use keyward_proto::{
    ErrorEnvelope, GithubTokenLabel, GithubTokenReport, ReportLeakRequest, ReportLeakResponse,
    SecretScanningPattern, SecretScanningPatterns,
};
use keyward_store::{Change, LeakedCredential, LeakedCredentialReport, PageRequest};
use tokio::sync::Mutex;

use crate::extract::{ApiJson, Caller};
use crate::outbound;
use crate::{clock, os_rng, ApiError, AppState};

/// Where GitHub publishes the keys it signs secret-scanning reports with.
pub const GITHUB_SCANNING_KEYS_URL: &str =
    "https://api.github.com/meta/public_keys/secret_scanning";
/// The actor of changes a GitHub report makes, in the audit log.
const GITHUB_ACTOR: &str = "github_secret_scanning";
/// GitHub's keys are fetched again at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Known keys are fetched again after this long.
const REFRESH_AFTER: Duration = Duration::from_secs(3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_KEYS_BYTES: usize = 64 * 1024;
/// Tokens one GitHub report may carry (the body limit bounds it too).
const MAX_TOKENS_PER_REPORT: usize = 5000;

#[derive(Default)]
struct Fetched {
    /// Key identifier → the public key's SubjectPublicKeyInfo DER.
    keys: HashMap<String, Vec<u8>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

/// GitHub's secret-scanning public keys, fetched from `url`, cached, and fetched again
/// (throttled) when a report names a key identifier the cache lacks.
pub struct GithubKeys {
    url: String,
    allow_private: bool,
    state: Mutex<Fetched>,
}

#[derive(Debug, thiserror::Error)]
enum KeysError {
    #[error("{0}")]
    Fetch(#[from] outbound::OutboundError),
    #[error("answered {0}")]
    Status(u16),
    #[error("not a list of public keys")]
    Invalid,
}

impl GithubKeys {
    pub fn new(url: String, allow_private: bool) -> Self {
        Self {
            url,
            allow_private,
            state: Mutex::new(Fetched::default()),
        }
    }

    /// The key named `identifier`, fetching the list when it is unknown or old. Fetches
    /// after the first are at most one a minute, whatever asks (unknown identifiers, an old
    /// list, failures), so unauthenticated reports cannot make Keyward fetch in a loop; one
    /// fetch runs at a time (the lock), and reports wait for it.
    async fn key(&self, identifier: &str) -> Option<Vec<u8>> {
        let mut state = self.state.lock().await;
        let stale = state
            .fetched_at
            .is_none_or(|at| at.elapsed() >= REFRESH_AFTER);
        let unknown = !state.keys.contains_key(identifier);
        let throttled = state
            .attempted_at
            .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL);
        if (stale || unknown) && !throttled {
            state.attempted_at = Some(Instant::now());
            match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
                Ok(Ok(keys)) => {
                    state.keys = keys;
                    state.fetched_at = Some(Instant::now());
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "fetching GitHub's secret-scanning keys failed");
                }
                Err(_) => tracing::warn!("fetching GitHub's secret-scanning keys timed out"),
            }
        }
        state.keys.get(identifier).cloned()
    }

    async fn fetch(&self) -> Result<HashMap<String, Vec<u8>>, KeysError> {
        #[derive(serde::Deserialize)]
        struct Published {
            public_keys: Vec<PublishedKey>,
        }
        #[derive(serde::Deserialize)]
        struct PublishedKey {
            key_identifier: String,
            key: String,
        }
        let url = outbound::check_url(&self.url, self.allow_private)?;
        let client = outbound::pinned_client(&url, self.allow_private, FETCH_TIMEOUT).await?;
        let response = client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::USER_AGENT, "Keyward")
            .send()
            .await
            .map_err(outbound::unreachable)?;
        if !response.status().is_success() {
            return Err(KeysError::Status(response.status().as_u16()));
        }
        let body = outbound::read_capped(response, MAX_KEYS_BYTES).await?;
        let published: Published = serde_json::from_slice(&body).map_err(|_| KeysError::Invalid)?;
        Ok(published
            .public_keys
            .into_iter()
            .filter_map(|key| Some((key.key_identifier, pem_der(&key.key)?)))
            .collect())
    }

    /// Checks GitHub's signature (ECDSA P-256 with SHA-256, DER, Base64) over the raw body.
    async fn verify(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let (Some(identifier), Some(signature)) = (
            header("github-public-key-identifier"),
            header("github-public-key-signature"),
        ) else {
            return false;
        };
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature.trim())
        else {
            return false;
        };
        if identifier.len() > 256 {
            return false;
        }
        let Some(spki) = self.key(identifier).await else {
            return false;
        };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, spki_point(&spki))
            .verify(body, &signature)
            .is_ok()
    }
}

/// The DER inside a PEM block.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The uncompressed point of a P-256 SubjectPublicKeyInfo (its last 65 bytes: the fixed
/// algorithm header comes first), which is what the verifier takes.
fn spki_point(spki: &[u8]) -> &[u8] {
    const POINT_LEN: usize = 65;
    if spki.len() > POINT_LEN && spki[spki.len() - POINT_LEN] == 0x04 {
        &spki[spki.len() - POINT_LEN..]
    } else {
        spki
    }
}

/// A credential found by a reported secret, and where it lives.
struct Found {
    tenancy: Tenancy,
    credential: LeakedCredential,
}

/// Looks a reported secret up by its hash: a root key when it has the root prefix, otherwise
/// an API key (imported secrets in other formats included). A superseded secret whose grace
/// period is over no longer works, so it is no leak.
async fn find(state: &AppState, secret: &str, now: Timestamp) -> Result<Option<Found>, ApiError> {
    let hash = KeyHash::of(secret);
    let live = |expires_at: Option<Timestamp>| expires_at.is_none_or(|at| at > now);
    if ParsedKey::parse(secret).is_ok_and(|key| key.is_root_key()) {
        return Ok(state
            .store
            .find_root_key(hash)
            .await?
            .filter(|found| live(found.secret.expires_at))
            .map(|found| Found {
                tenancy: found.key.tenancy.clone(),
                credential: LeakedCredential::RootKey(found.key.id),
            }));
    }
    Ok(state
        .store
        .find_key(hash)
        .await?
        .filter(|found| live(found.secret.expires_at))
        .map(|found| Found {
            tenancy: found.key.tenancy.clone(),
            credential: LeakedCredential::Key(found.key.id),
        }))
}

/// Applies the reports found, one change per environment, each settled in every node's
/// cache before this returns. The outcome of report `i` is at `i` (`Unknown` where nothing
/// was found).
async fn apply(
    state: &Arc<AppState>,
    found: Vec<Option<(Found, LeakReport)>>,
    actor: &str,
    request_id: Option<String>,
    now: Timestamp,
) -> Result<Vec<LeakOutcome>, ApiError> {
    let mut outcomes = vec![LeakOutcome::Unknown; found.len()];
    let mut by_environment: HashMap<Tenancy, Vec<(usize, LeakedCredentialReport)>> = HashMap::new();
    for (index, item) in found.into_iter().enumerate() {
        if let Some((found, report)) = item {
            by_environment.entry(found.tenancy).or_default().push((
                index,
                LeakedCredentialReport {
                    credential: found.credential,
                    report,
                },
            ));
        }
    }
    for (tenancy, reports) in by_environment {
        let change = Change {
            tenancy,
            actor: actor.to_owned(),
            // Reporting a secret confers nothing: whoever holds it could use it anyway.
            actor_scopes: ScopeSet::default(),
            request_id: request_id.clone(),
            audit_id: id::generate(IdKind::AuditEntry, now, &mut os_rng()),
            now,
        };
        let (indexes, reports): (Vec<usize>, Vec<LeakedCredentialReport>) =
            reports.into_iter().unzip();
        let changed = state
            .change_credential(move |state| async move {
                state.store.report_leaks(&change, &reports).await
            })
            .await?;
        for (index, outcome) in indexes.into_iter().zip(changed.record) {
            outcomes[index] = outcome;
            if outcome.is_true_positive() {
                state.metrics.webhooks.leaks_reported.inc();
            }
        }
    }
    Ok(outcomes)
}

/// GitHub's secret scanning partner endpoint. Authenticated by GitHub's signature, not by a
/// root key; a missing or wrong signature changes nothing and gets 401.
#[utoipa::path(post, path = "/api/v1/secret-scanning/github", tag = "leaks",
    request_body = Vec<GithubTokenReport>,
    responses((status = 200, body = Vec<GithubTokenLabel>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn github_report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Vec<GithubTokenLabel>>, ApiError> {
    if !state.github_keys.verify(&headers, &body).await {
        return Err(ApiError::unauthenticated(
            "invalid_signature",
            "The GitHub signature is missing, unknown or wrong",
        ));
    }
    let tokens: Vec<GithubTokenReport> = serde_json::from_slice(&body)
        .map_err(|_| ApiError::invalid("invalid_body", "Expected a JSON list of tokens"))?;
    if tokens.len() > MAX_TOKENS_PER_REPORT {
        return Err(ApiError::invalid(
            "too_many_tokens",
            format!("A report may carry at most {MAX_TOKENS_PER_REPORT} tokens"),
        ));
    }
    let now = clock::now();
    let mut found = Vec::with_capacity(tokens.len());
    for token in &tokens {
        let report = LeakReport::new(token.url.as_deref(), token.source.as_deref());
        found.push(
            find(&state, &token.token, now)
                .await?
                .map(|found| (found, report)),
        );
    }
    let request_id = headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let outcomes = apply(&state, found, GITHUB_ACTOR, request_id, now).await?;
    Ok(Json(
        tokens
            .iter()
            .zip(outcomes)
            .map(|(token, outcome)| GithubTokenLabel {
                token_hash: KeyHash::of(&token.token).to_hex(),
                token_type: token.token_type.clone(),
                label: if outcome.is_true_positive() {
                    "true_positive"
                } else {
                    "false_positive"
                }
                .to_owned(),
            })
            .collect(),
    ))
}

/// Report a key found in public by any scanner. Only this environment's keys are acted on;
/// any other secret is `unknown`, and nothing changes.
#[utoipa::path(post, path = "/api/v1/keys/report-leak", tag = "keys", security(("root_key" = [])),
    request_body = ReportLeakRequest,
    responses((status = 200, body = ReportLeakResponse), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn report_leak(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<ReportLeakRequest>,
) -> Result<Json<ReportLeakResponse>, ApiError> {
    caller.require(Scope::KeysWrite)?;
    let report = LeakReport::new(request.url.as_deref(), request.source.as_deref());
    let found = find(&state, &request.key, caller.now)
        .await?
        .filter(|found| found.tenancy == caller.tenancy);
    let key_id = found.as_ref().map(|found| match &found.credential {
        LeakedCredential::Key(id) | LeakedCredential::RootKey(id) => id.clone(),
    });
    let outcomes = apply(
        &state,
        vec![found.map(|found| (found, report))],
        &caller.actor_id,
        caller.request_id.clone(),
        caller.now,
    )
    .await?;
    Ok(Json(ReportLeakResponse {
        result: outcomes[0].as_str().to_owned(),
        key_id,
    }))
}

/// The formats scanners should match: root keys, and each app's key prefix in this
/// environment.
#[utoipa::path(get, path = "/api/v1/secret-scanning/patterns", tag = "leaks", security(("root_key" = [])),
    responses((status = 200, body = SecretScanningPatterns), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn patterns(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<SecretScanningPatterns>, ApiError> {
    caller.require(Scope::AppsRead)?;
    let mut prefixes = Vec::new();
    let mut cursor = None;
    loop {
        let page = state
            .store
            .list_apps(
                &caller.tenancy,
                &PageRequest {
                    limit: crate::MAX_PAGE_SIZE,
                    cursor,
                },
            )
            .await?;
        prefixes.extend(page.items.into_iter().map(|app| app.key_prefix));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let data = scanning_patterns(prefixes.iter().map(String::as_str))
        .into_iter()
        .map(|pattern| SecretScanningPattern {
            name: pattern.name,
            prefix: pattern.prefix,
            regex: pattern.regex,
        })
        .collect();
    Ok(Json(SecretScanningPatterns { data }))
}
