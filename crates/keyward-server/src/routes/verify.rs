use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use keyward_core::permission::PermissionQuery;
use keyward_core::scope::Scope;
use keyward_core::usage::{Decision, Outcome};
use keyward_core::verify::VerifyCode;
use keyward_core::Timestamp;
use keyward_proto::{self as wire, ErrorEnvelope, VerifyKeyRequest, VerifyKeyResponse};

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
    let now = clock::now();
    let verdict = state
        .verifier
        .verify_key(
            state.store.as_ref(),
            &caller.tenancy,
            &request.key,
            required.as_ref(),
            now,
        )
        .await?;
    let mut code = verdict.code;
    let mut usage = None;
    if let Some(entry) = verdict.key.as_ref().filter(|_| code.is_valid()) {
        let cost = i64::from(request.credits_cost.unwrap_or(1));
        usage = state
            .charge_key(entry, cost, request.idempotency_key.as_deref(), now)
            .await?;
        code = match usage.map(|decision| decision.outcome) {
            Some(Outcome::RateLimited { .. }) => VerifyCode::RateLimited,
            Some(Outcome::UsageExceeded) => VerifyCode::UsageExceeded,
            Some(Outcome::Allowed) | None => VerifyCode::Valid,
        };
        if code.is_valid() {
            state.last_used.record(entry, now);
        }
    }
    state.metrics.count_verification(code);
    let key = verdict.key.as_ref().map(|entry| &entry.key);
    Ok(Json(VerifyKeyResponse {
        valid: code.is_valid(),
        code: code.as_str().to_owned(),
        status: code.http_status(),
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
        rate_limit: usage
            .and_then(|decision| decision.rate)
            .map(|rate| wire::RateLimitStatus {
                limit: rate.limit,
                remaining: rate.remaining,
                reset_at: convert::datetime(rate.reset_at),
            }),
    }))
}
