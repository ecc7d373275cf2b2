use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use keyward_core::scope::Scope;
use keyward_core::validate::{self, MAX_EXTERNAL_ID_LEN};
use keyward_proto::{self as wire, ErrorEnvelope, PutOrganizationRequest};
use keyward_store::OrganizationSettings;

use super::apps::scheme_reference;
use crate::extract::{ApiJson, Caller};
use crate::{convert, ApiError, AppState};

/// Set an organization's shared limits: a rate-limit scheme and a credit cap that every key
/// with its `organization_id` draws on together. Replaces the whole configuration; what
/// its keys have spent is kept.
#[utoipa::path(put, path = "/api/v1/organizations/{organization_id}", tag = "usage", security(("root_key" = [])),
    params(("organization_id" = String, Path)), request_body = PutOrganizationRequest,
    responses((status = 200, body = wire::Organization), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn put_organization(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<PutOrganizationRequest>,
) -> Result<Json<wire::Organization>, ApiError> {
    caller.require(Scope::AppsWrite)?;
    validate::text("organization_id", &id, MAX_EXTERNAL_ID_LEN).map_err(ApiError::from)?;
    scheme_reference(request.rate_limit_scheme.as_deref())?;
    if let Some(cap) = request.credit_cap {
        validate::credits("credit_cap", cap, 0).map_err(ApiError::from)?;
    } else if request.credit_period.is_some() {
        return Err(ApiError::invalid(
            "invalid_field",
            "`credit_period` needs a `credit_cap`",
        ));
    }
    if let Some(threshold) = request.low_credits_threshold {
        super::keys::validate_low_credits_threshold(threshold)?;
    }
    let settings = OrganizationSettings {
        id,
        rate_limit_scheme: request.rate_limit_scheme,
        credit_cap: request.credit_cap,
        credit_period: request.credit_period.map(convert::period),
        low_credits_threshold: request.low_credits_threshold,
    };
    let change = caller.change();
    let now = change.now;
    let changed = state
        .change_credential(move |state| async move {
            state.store.put_organization(&change, &settings).await
        })
        .await?;
    Ok(Json(convert::organization(&changed.record, now)))
}

/// Get an organization's limits and what its keys have spent (as last written back).
#[utoipa::path(get, path = "/api/v1/organizations/{organization_id}", tag = "usage", security(("root_key" = [])),
    params(("organization_id" = String, Path)),
    responses((status = 200, body = wire::Organization), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_organization(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::Organization>, ApiError> {
    caller.require(Scope::AppsRead)?;
    let organization = state.store.organization(&caller.tenancy, &id).await?;
    Ok(Json(convert::organization(&organization, caller.now)))
}

/// Remove an organization's limits; its keys are limited only by their own.
#[utoipa::path(delete, path = "/api/v1/organizations/{organization_id}", tag = "usage", security(("root_key" = [])),
    params(("organization_id" = String, Path)),
    responses((status = 200, body = wire::Organization), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_organization(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::Organization>, ApiError> {
    caller.require(Scope::AppsWrite)?;
    let change = caller.change();
    let now = change.now;
    let changed = state
        .change_credential(move |state| async move {
            state.store.delete_organization(&change, &id).await
        })
        .await?;
    Ok(Json(convert::organization(&changed.record, now)))
}
