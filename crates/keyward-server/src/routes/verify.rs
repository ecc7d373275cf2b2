use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use keyward_core::credential::{self, Presented, PresentedError};
use keyward_core::permission::PermissionQuery;
use keyward_core::scope::Scope;
use keyward_core::usage::{Decision, Outcome};
use keyward_core::verify::VerifyCode;
use keyward_core::Timestamp;
use keyward_proto::{
    self as wire, ErrorEnvelope, VerifyKeyRequest, VerifyKeyResponse, VerifyRequestRequest,
};

use crate::analytics::Subject;
use crate::authn::{EndUser, Refusal, RequestFacts};
use crate::extract::{ApiJson, Caller};
use crate::usage::{ChargeRequest, OrganizationCharge};
use crate::verifier::CachedKey;
use crate::{clock, convert, ApiError, AppState};

/// The longest `idempotency_key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

fn parse_query(query: &wire::PermissionQuery) -> Result<PermissionQuery, ApiError> {
    match query {
        wire::PermissionQuery::Expression(text) => PermissionQuery::parse(text),
        wire::PermissionQuery::AllOf(names) => PermissionQuery::all_of(names),
    }
    .map_err(|error| ApiError::invalid("invalid_permission_query", error.to_string()))
}

fn validate_idempotency_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|byte| byte.is_ascii_graphic())
    {
        return Err(ApiError::invalid(
            "invalid_idempotency_key",
            format!(
                "`idempotency_key` must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII \
                 characters without spaces"
            ),
        ));
    }
    Ok(())
}

impl AppState {
    /// Charges a key that passed every other check against its rate limits, credits and
    /// organisation (SPEC §4.2: last in the check order). `None` when nothing limits it.
    pub async fn charge_key(
        &self,
        entry: &CachedKey,
        cost: i64,
        idempotency_key: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Decision>, ApiError> {
        let policy = &entry.policy;
        let organization = match (&policy.organization, &entry.meters.organization) {
            (Some(org), Some(meter)) if !org.windows.is_empty() || org.cap.is_some() => {
                Some(OrganizationCharge {
                    meter,
                    windows: &org.windows,
                    cap: org.cap,
                })
            }
            _ => None,
        };
        if policy.windows.is_empty() && entry.key.credits.is_none() && organization.is_none() {
            return Ok(None);
        }
        let decision = self
            .limiter
            .charge(&ChargeRequest {
                meter: &entry.meters.key,
                windows: &policy.windows,
                credits: entry.key.credits,
                organization,
                cost,
                idempotency_key,
                now,
            })
            .await?;
        Ok(Some(decision))
    }
}

/// Verify an API key. Always 200: the verdict is in `valid`, `code` and `status`.
#[utoipa::path(post, path = "/api/v1/keys/verify", tag = "verify", security(("root_key" = [])),
    request_body = VerifyKeyRequest,
    responses((status = 200, body = VerifyKeyResponse), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn verify_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<VerifyKeyRequest>,
) -> Result<Json<VerifyKeyResponse>, ApiError> {
    caller.require(Scope::Verify)?;
    let required = request.permissions.as_ref().map(parse_query).transpose()?;
    if let Some(key) = &request.idempotency_key {
        validate_idempotency_key(key)?;
    }
    let cost = i64::from(request.credits_cost.unwrap_or(1));
    state
        .verify_secret(
            &caller.tenancy,
            &request.key,
            required.as_ref(),
            cost,
            request.idempotency_key.as_deref(),
        )
        .await
        .map(Json)
}

impl AppState {
    /// The verdict on an API key presented in `tenancy`'s environment, charged when valid.
    async fn verify_secret(
        &self,
        tenancy: &keyward_core::model::Tenancy,
        presented: &str,
        required: Option<&PermissionQuery>,
        cost: i64,
        idempotency_key: Option<&str>,
    ) -> Result<VerifyKeyResponse, ApiError> {
        let now = clock::now();
        let verdict = self
            .verifier
            .verify_key(self.store.as_ref(), tenancy, presented, required, now)
            .await?;
        let mut code = verdict.code;
        let mut usage = None;
        if let Some(entry) = verdict.key.as_ref().filter(|_| code.is_valid()) {
            usage = self.charge_key(entry, cost, idempotency_key, now).await?;
            code = usage_code(usage.as_ref());
            if code.is_valid() {
                self.last_used.record(entry, now);
            }
            if let Some(decision) = &usage {
                self.raise_usage_alerts(entry, decision, cost);
            }
        }
        self.metrics.count_verification(code);
        if self.usage_log.is_enabled() {
            let subject = match &verdict.key {
                Some(entry) => Subject::Key(Arc::clone(entry)),
                None => Subject::Unknown(tenancy.clone()),
            };
            self.usage_log.record(subject, code, now);
        }
        let key = verdict.key.as_ref().map(|entry| &entry.key);
        Ok(VerifyKeyResponse {
            key_id: key.map(|key| key.id.clone()),
            app: key.map(|key| key.app_slug.clone()),
            environment: key.map(|key| key.tenancy.environment.as_str().to_owned()),
            owner_user_id: key.and_then(|key| key.owner_user_id.clone()),
            organization_id: key.and_then(|key| key.organization_id.clone()),
            permissions: key.map(|key| key.permissions.clone()),
            meta: key.map(|key| key.meta.clone()),
            expires_at: key.and_then(|key| key.expires_at.map(convert::datetime)),
            credits: usage
                .and_then(|decision| decision.credits_remaining)
                .map(|remaining| wire::CreditsStatus { remaining }),
            rate_limit: usage.and_then(|decision| rate_status(&decision)),
            ..verdict_of(code)
        })
    }
}

impl AppState {
    /// The alerts a charge calls for; rare, and never waited for.
    fn raise_usage_alerts(&self, entry: &CachedKey, decision: &Decision, cost: i64) {
        let key = &entry.key;
        match decision.outcome {
            Outcome::RateLimited { .. } => {
                if let Some(rate) = decision.rate {
                    self.events.rate_limited(key, rate.limit, rate.reset_at);
                }
            }
            Outcome::Allowed => {
                if let Some(remaining) = decision.credits_remaining {
                    // The key's own threshold, or else its organisation's.
                    let threshold = key.low_credits_threshold.or_else(|| {
                        let organization = entry.policy.organization.as_ref();
                        organization.and_then(|org| org.low_credits_threshold)
                    });
                    self.events.charged(key, remaining, cost, threshold);
                }
            }
            Outcome::UsageExceeded => {}
        }
    }
}

fn usage_code(usage: Option<&Decision>) -> VerifyCode {
    match usage.map(|decision| decision.outcome) {
        Some(Outcome::RateLimited { .. }) => VerifyCode::RateLimited,
        Some(Outcome::UsageExceeded) => VerifyCode::UsageExceeded,
        Some(Outcome::Allowed) | None => VerifyCode::Valid,
    }
}

fn rate_status(decision: &Decision) -> Option<wire::RateLimitStatus> {
    decision.rate.map(|rate| wire::RateLimitStatus {
        limit: rate.limit,
        remaining: rate.remaining,
        reset_at: convert::datetime(rate.reset_at),
    })
}

fn verdict_of(code: VerifyCode) -> VerifyKeyResponse {
    VerifyKeyResponse {
        valid: code.is_valid(),
        code: code.as_str().to_owned(),
        status: code.http_status(),
        ..VerifyKeyResponse::default()
    }
}

/// A refusal of a credential as a verdict, with its precise reason.
fn refused(refusal: &Refusal, credential_type: &str) -> (VerifyCode, VerifyKeyResponse) {
    let code = if refusal.code == "tenant_mismatch" {
        VerifyCode::TenantMismatch
    } else {
        VerifyCode::InvalidKey
    };
    let verdict = VerifyKeyResponse {
        status: refusal.status.as_u16(),
        credential_type: Some(credential_type.to_owned()),
        reason: Some(refusal.code.to_owned()),
        ..verdict_of(code)
    };
    (code, verdict)
}

const MAX_METHOD_LEN: usize = 16;
const MAX_PATH_LEN: usize = 8 * 1024;

/// Verify a whole request as a gateway saw it: whichever credential it carries (SPEC §4.4)
/// — an API key, a JWT public key with its token, a client public key with a signed user
/// token, or a workspace key's signature. Always 200, like `keys/verify`.
#[utoipa::path(post, path = "/api/v1/verify-request", tag = "verify", security(("root_key" = [])),
    request_body = VerifyRequestRequest,
    responses((status = 200, body = VerifyKeyResponse), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn verify_request(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<VerifyRequestRequest>,
) -> Result<Json<VerifyKeyResponse>, ApiError> {
    caller.require(Scope::Verify)?;
    if request.method.is_empty()
        || request.method.len() > MAX_METHOD_LEN
        || !request.method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Err(ApiError::invalid(
            "invalid_method",
            "`method` is an HTTP method in capitals, e.g. GET",
        ));
    }
    if !request.path.starts_with('/') || request.path.len() > MAX_PATH_LEN {
        return Err(ApiError::invalid(
            "invalid_path",
            "`path` starts with `/` and carries no query",
        ));
    }
    let required = request.permissions.as_ref().map(parse_query).transpose()?;
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    let (code, verdict) =
        match credential::from_headers(header("authorization"), header("x-api-key")) {
            // API keys are counted where they are verified, as for `keys/verify`.
            Ok(Presented::Secret(secret)) => {
                let cost = i64::from(request.credits_cost.unwrap_or(1));
                let verdict = state
                    .verify_secret(&caller.tenancy, secret, required.as_ref(), cost, None)
                    .await?;
                return Ok(Json(VerifyKeyResponse {
                    credential_type: Some("api_key".to_owned()),
                    ..verdict
                }));
            }
            Ok(presented) => {
                state
                    .verify_other_credential(
                        &caller,
                        &request,
                        presented,
                        header("x-tenant-id"),
                        required.as_ref(),
                    )
                    .await?
            }
            Err(PresentedError::Signature(_)) => {
                refused(&Refusal::invalid_signature(), "workspace_key")
            }
            Err(_) => refused(&Refusal::invalid_key(), "api_key"),
        };
    state.metrics.count_verification(code);
    if state.usage_log.is_enabled() {
        let subject = match &verdict.key_id {
            Some(id) => Subject::Credential {
                tenancy: caller.tenancy.clone(),
                id: id.clone(),
            },
            None => Subject::Unknown(caller.tenancy.clone()),
        };
        state.usage_log.record(subject, code, clock::now());
    }
    Ok(Json(verdict))
}

impl AppState {
    /// A public key with its token, or a workspace key's signature, as `verify-request`
    /// sees it.
    async fn verify_other_credential(
        &self,
        caller: &Caller,
        request: &VerifyRequestRequest,
        presented: Presented<'_>,
        tenant: Option<&str>,
        required: Option<&PermissionQuery>,
    ) -> Result<(VerifyCode, VerifyKeyResponse), ApiError> {
        let credential_type = presented.credential_type();
        let now = clock::now();
        Ok(match presented {
            Presented::Secret(_) => refused(&Refusal::invalid_key(), credential_type),
            Presented::JwtPublicKey { key, token } | Presented::ClientPublicKey { key, token } => {
                match self.authenticate_public_key(key, token, tenant, now).await {
                    Ok(user) if user.public_key.key.tenancy == caller.tenancy => {
                        self.end_user_verdict(&user, required, credential_type, now)
                            .await?
                    }
                    Ok(_) => refused(&Refusal::invalid_key(), credential_type),
                    Err(refusal) if refusal.is_unavailable() => return Err(refusal.into()),
                    Err(refusal) => refused(&refusal, credential_type),
                }
            }
            Presented::WorkspaceSignature(signature) => {
                let empty_body = keyward_core::signature::body_digest(b"");
                let facts = RequestFacts {
                    method: &request.method,
                    path: &request.path,
                    query: request.query.as_deref().unwrap_or(""),
                    body_sha256: request.body_sha256.as_deref().unwrap_or(&empty_body),
                };
                match self.authenticate_signature(&signature, &facts, now).await {
                    Ok(workspace_key) if workspace_key.key.tenancy == caller.tenancy => (
                        VerifyCode::Valid,
                        VerifyKeyResponse {
                            key_id: Some(workspace_key.key.id.clone()),
                            environment: Some(caller.tenancy.environment.as_str().to_owned()),
                            credential_type: Some(credential_type.to_owned()),
                            ..verdict_of(VerifyCode::Valid)
                        },
                    ),
                    Ok(_) => refused(&Refusal::invalid_key(), credential_type),
                    Err(refusal) if refusal.is_unavailable() => return Err(refusal.into()),
                    Err(refusal) => refused(&refusal, credential_type),
                }
            }
        })
    }
}

impl AppState {
    /// The verdict on an authenticated end user: permissions from the token, then the public
    /// key's rate limit, counted per subject.
    async fn end_user_verdict(
        &self,
        user: &EndUser,
        required: Option<&PermissionQuery>,
        credential_type: &str,
        now: Timestamp,
    ) -> Result<(VerifyCode, VerifyKeyResponse), ApiError> {
        let permissions = user
            .identity
            .as_ref()
            .map(|identity| identity.permissions.clone())
            .unwrap_or_default();
        let mut code = match required {
            Some(query) if !query.is_satisfied_by(&permissions) => {
                VerifyCode::InsufficientPermissions
            }
            _ => VerifyCode::Valid,
        };
        let mut rate_limit = None;
        if let (true, false, Some(subject)) = (
            code.is_valid(),
            user.public_key.windows.is_empty(),
            user.subject(),
        ) {
            let meter = format!("subject:{}:{subject}", user.public_key.key.id);
            let decision = self
                .limiter
                .charge(&ChargeRequest {
                    meter: &meter,
                    windows: &user.public_key.windows,
                    credits: None,
                    organization: None,
                    cost: 1,
                    idempotency_key: None,
                    now,
                })
                .await?;
            code = usage_code(Some(&decision));
            rate_limit = rate_status(&decision);
        }
        let key = &user.public_key.key;
        let verdict = VerifyKeyResponse {
            key_id: Some(key.id.clone()),
            environment: Some(key.tenancy.environment.as_str().to_owned()),
            permissions: Some(permissions),
            rate_limit,
            credential_type: Some(credential_type.to_owned()),
            subject: user.subject().map(str::to_owned),
            tenant: user.tenant().map(str::to_owned),
            ..verdict_of(code)
        };
        Ok((code, verdict))
    }
}
