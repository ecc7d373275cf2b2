use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use keyward_core::leak::LeakedKeyAction;
use keyward_core::scope::Scope;
use keyward_proto::{self as wire, ErrorEnvelope, ListAuditParams, UpdateEnvironmentRequest};
use keyward_store::{AuditFilter, EnvironmentPatch};

use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::{convert, page_request, ApiError, AppState};

/// The settings of the caller's environment.
#[utoipa::path(get, path = "/api/v1/environment", tag = "environment", security(("root_key" = [])),
    responses((status = 200, body = wire::EnvironmentSettings), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_environment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<wire::EnvironmentSettings>, ApiError> {
    caller.require(Scope::EnvironmentRead)?;
    let settings = state.store.environment(&caller.tenancy).await?;
    Ok(Json(convert::environment(&settings)))
}

/// Change the caller's environment settings.
#[utoipa::path(patch, path = "/api/v1/environment", tag = "environment", security(("root_key" = [])),
    request_body = UpdateEnvironmentRequest,
    responses((status = 200, body = wire::EnvironmentSettings), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn update_environment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<UpdateEnvironmentRequest>,
) -> Result<Json<wire::EnvironmentSettings>, ApiError> {
    caller.require(Scope::EnvironmentWrite)?;
    let patch = EnvironmentPatch {
        enhanced_security: request.enhanced_security,
        leaked_key_action: request
            .leaked_key_action
            .as_deref()
            .map(|text| {
                LeakedKeyAction::parse(text).ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_leaked_key_action",
                        "`leaked_key_action` must be revoke, disable or notify",
                    )
                })
            })
            .transpose()?,
    };
    let change = caller.change();
    let changed = state
        .change_credential(move |state| async move {
            state.store.update_environment(&change, &patch).await
        })
        .await?;
    Ok(Json(convert::environment(&changed.record)))
}

/// Who changed what, when, in which request; newest first.
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "audit", security(("root_key" = [])),
    params(ListAuditParams),
    responses((status = 200, body = wire::Page<wire::AuditEntry>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_audit_log(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListAuditParams>,
) -> Result<Json<wire::Page<wire::AuditEntry>>, ApiError> {
    caller.require(Scope::AuditRead)?;
    let page = page_request(params.limit, params.cursor)?;
    let filter = AuditFilter {
        action: params.action,
        target: params.target,
    };
    let entries = state
        .store
        .list_audit(&caller.tenancy, &filter, &page)
        .await?;
    Ok(Json(convert::page(entries, convert::audit_entry)))
}
