use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use keyward_core::permission::PermissionQuery;
use keyward_core::scope::Scope;
use keyward_core::signature::EMPTY_BODY_SHA256;
use keyward_core::usage::RateStatus;
use keyward_core::verify::VerifyCode;
use keyward_proto::{
    self as wire, ErrorEnvelope, VerifyKeyRequest, VerifyKeyResponse, VerifyRequestRequest,
};

use crate::extract::{ApiJson, Caller};
use crate::verification::{
    Ask, CachedKey, GatewayRequest, KeyVerdict, Outcome, RequestFacts, RequestVerdict,
};
use crate::{convert, ApiError, AppState};

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
    let ask = Ask {
        permissions: required.as_ref(),
        credits_cost: i64::from(request.credits_cost.unwrap_or(1)),
        idempotency_key: request.idempotency_key.as_deref(),
    };
    let verdict = state
        .verification
        .verify_api_key(&caller.tenancy, &request.key, &ask, caller.now)
        .await?;
    Ok(Json(key_response(&verdict)))
}

/// An API key's verdict on the wire.
fn key_response(verdict: &KeyVerdict) -> VerifyKeyResponse {
    let key = verdict.key.as_deref();
    let usage = verdict.usage.as_ref();
    VerifyKeyResponse {
        key_id: key.map(|key| key.id().to_owned()),
        app: key.map(|key| key.app_slug().to_owned()),
        environment: key.map(|key| key.tenancy().environment.as_str().to_owned()),
        owner_user_id: key.and_then(|key| key.owner_user_id().map(str::to_owned)),
        organization_id: key.and_then(|key| key.organization_id().map(str::to_owned)),
        permissions: key.map(|key| key.permissions().to_vec()),
        meta: key.map(CachedKey::meta),
        expires_at: key.and_then(|key| key.expires_at().map(convert::datetime)),
        credits: usage
            .and_then(|decision| decision.credits_remaining)
            .map(|remaining| wire::CreditsStatus { remaining }),
        rate_limit: usage.and_then(|decision| decision.rate).map(rate_status),
        ..verdict_of(verdict.code)
    }
}

fn rate_status(rate: RateStatus) -> wire::RateLimitStatus {
    wire::RateLimitStatus {
        limit: rate.limit,
        remaining: rate.remaining,
        reset_at: convert::datetime(rate.reset_at),
    }
}

fn verdict_of(code: VerifyCode) -> VerifyKeyResponse {
    VerifyKeyResponse {
        valid: code.is_valid(),
        code: code.as_str().to_owned(),
        status: code.http_status(),
        ..VerifyKeyResponse::default()
    }
}

/// A gateway request's verdict on the wire: an API key's as `keys/verify` gives it, an end
/// user's with `subject` and `tenant`, a refusal with its precise `reason`.
fn request_response(verdict: &RequestVerdict) -> VerifyKeyResponse {
    let credential_type = Some(verdict.credential_type.to_owned());
    match &verdict.outcome {
        Outcome::ApiKey(key) => VerifyKeyResponse {
            credential_type,
            ..key_response(key)
        },
        Outcome::EndUser(end_user) => {
            let key = &end_user.user.public_key.key;
            VerifyKeyResponse {
                key_id: Some(key.id.clone()),
                environment: Some(key.tenancy.environment.as_str().to_owned()),
                permissions: Some(end_user.permissions.clone()),
                rate_limit: end_user.rate.map(rate_status),
                credential_type,
                subject: end_user.user.subject().map(str::to_owned),
                tenant: end_user.user.tenant().map(str::to_owned),
                ..verdict_of(verdict.code)
            }
        }
        Outcome::WorkspaceKey(key) => VerifyKeyResponse {
            key_id: Some(key.key.id.clone()),
            environment: Some(key.key.tenancy.environment.as_str().to_owned()),
            credential_type,
            ..verdict_of(verdict.code)
        },
        Outcome::Refused(refusal) => VerifyKeyResponse {
            status: refusal.status(),
            credential_type,
            reason: Some(refusal.code().to_owned()),
            ..verdict_of(verdict.code)
        },
    }
}

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
    crate::gateway::validate_original(&request.method, &request.path)?;
    let required = request.permissions.as_ref().map(parse_query).transpose()?;
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    let gateway = GatewayRequest {
        facts: RequestFacts {
            method: &request.method,
            path: &request.path,
            query: request.query.as_deref().unwrap_or(""),
            body_sha256: request.body_sha256.as_deref().unwrap_or(EMPTY_BODY_SHA256),
        },
        authorization: header("authorization"),
        x_api_key: header("x-api-key"),
        tenant: header("x-tenant-id"),
    };
    let ask = Ask {
        permissions: required.as_ref(),
        credits_cost: i64::from(request.credits_cost.unwrap_or(1)),
        idempotency_key: None,
    };
    let verdict = state
        .verification
        .verify_request(&caller.tenancy, &gateway, &ask, caller.now)
        .await?;
    Ok(Json(request_response(&verdict)))
}
