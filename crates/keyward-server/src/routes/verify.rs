use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use keyward_core::permission::PermissionQuery;
use keyward_core::scope::Scope;
use keyward_proto::{self as wire, ErrorEnvelope, VerifyKeyRequest, VerifyKeyResponse};

use crate::extract::{ApiJson, Caller};
use crate::{clock, convert, ApiError, AppState};

fn parse_query(query: &wire::PermissionQuery) -> Result<PermissionQuery, ApiError> {
    match query {
        wire::PermissionQuery::Expression(text) => PermissionQuery::parse(text),
        wire::PermissionQuery::AllOf(names) => PermissionQuery::all_of(names),
    }
    .map_err(|error| ApiError::invalid("invalid_permission_query", error.to_string()))
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
    state.metrics.count_verification(verdict.code);
    if let Some(entry) = verdict.key.as_ref().filter(|_| verdict.code.is_valid()) {
        state.last_used.record(entry, now);
    }
    let key = verdict.key.as_ref().map(|entry| &entry.key);
    Ok(Json(VerifyKeyResponse {
        valid: verdict.code.is_valid(),
        code: verdict.code.as_str().to_owned(),
        status: verdict.code.http_status(),
        key_id: key.map(|key| key.id.clone()),
        app: key.map(|key| key.app_slug.clone()),
        environment: key.map(|key| key.tenancy.environment.as_str().to_owned()),
        owner_user_id: key.and_then(|key| key.owner_user_id.clone()),
        organization_id: key.and_then(|key| key.organization_id.clone()),
        permissions: key.map(|key| key.permissions.clone()),
        meta: key.map(|key| key.meta.clone()),
        expires_at: key.and_then(|key| key.expires_at.map(convert::datetime)),
    }))
}
