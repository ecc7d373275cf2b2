use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use keyward_core::model::RateLimitScheme;
use keyward_core::scope::Scope;
use keyward_core::usage::RateWindow;
use keyward_core::validate;
use keyward_proto::{
    self as wire, CreateRateLimitSchemeRequest, ErrorEnvelope, PageParams,
    UpdateRateLimitSchemeRequest,
};

use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::{convert, page_request, ApiError, AppState};

fn windows(windows: &[wire::RateWindow]) -> Result<Vec<RateWindow>, ApiError> {
    let pairs: Vec<(u64, u64)> = windows
        .iter()
        .map(|window| (window.limit, window.period_seconds))
        .collect();
    validate::rate_windows(&pairs)
        .map_err(|error| ApiError::invalid("invalid_windows", error.to_string()))
}

/// Create a rate-limit scheme: named windows apps, keys, organizations and root keys use.
#[utoipa::path(post, path = "/api/v1/rate-limit-schemes", tag = "usage", security(("root_key" = [])),
    request_body = CreateRateLimitSchemeRequest,
    responses((status = 201, body = wire::RateLimitScheme), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_scheme(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateRateLimitSchemeRequest>,
) -> Result<(StatusCode, Json<wire::RateLimitScheme>), ApiError> {
    caller.require(Scope::AppsWrite)?;
    validate::scheme_slug(&request.slug).map_err(ApiError::from)?;
    let change = caller.change();
    let scheme = RateLimitScheme {
        tenancy: caller.tenancy.clone(),
        slug: request.slug,
        windows: windows(&request.windows)?,
        created_at: change.now,
        updated_at: change.now,
    };
    state
        .store
        .create_rate_limit_scheme(&change, &scheme)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(convert::rate_limit_scheme(&scheme)),
    ))
}

/// List the environment's rate-limit schemes, by slug.
#[utoipa::path(get, path = "/api/v1/rate-limit-schemes", tag = "usage", security(("root_key" = [])),
    params(PageParams),
    responses((status = 200, body = wire::Page<wire::RateLimitScheme>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_schemes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<wire::Page<wire::RateLimitScheme>>, ApiError> {
    caller.require(Scope::AppsRead)?;
    let page = page_request(params.limit, params.cursor)?;
    let schemes = state
        .store
        .list_rate_limit_schemes(&caller.tenancy, &page)
        .await?;
    Ok(Json(convert::page(schemes, convert::rate_limit_scheme)))
}

/// Get a rate-limit scheme.
#[utoipa::path(get, path = "/api/v1/rate-limit-schemes/{slug}", tag = "usage", security(("root_key" = [])),
    params(("slug" = String, Path)),
    responses((status = 200, body = wire::RateLimitScheme), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_scheme(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(slug): Path<String>,
) -> Result<Json<wire::RateLimitScheme>, ApiError> {
    caller.require(Scope::AppsRead)?;
    let scheme = state
        .store
        .rate_limit_scheme(&caller.tenancy, &slug)
        .await?;
    Ok(Json(convert::rate_limit_scheme(&scheme)))
}

/// Replace a scheme's windows; every key using it is limited by the new ones at once.
/// Counts already made in a window of the same period carry over.
#[utoipa::path(patch, path = "/api/v1/rate-limit-schemes/{slug}", tag = "usage", security(("root_key" = [])),
    params(("slug" = String, Path)), request_body = UpdateRateLimitSchemeRequest,
    responses((status = 200, body = wire::RateLimitScheme), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn update_scheme(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(slug): Path<String>,
    ApiJson(request): ApiJson<UpdateRateLimitSchemeRequest>,
) -> Result<Json<wire::RateLimitScheme>, ApiError> {
    caller.require(Scope::AppsWrite)?;
    let windows = windows(&request.windows)?;
    let change = caller.change();
    let changed = state
        .change_credential(move |state| async move {
            state
                .store
                .update_rate_limit_scheme(&change, &slug, &windows)
                .await
        })
        .await?;
    Ok(Json(convert::rate_limit_scheme(&changed.record)))
}

/// Delete a scheme nothing uses any more (409 `rate_limit_scheme_in_use` otherwise).
#[utoipa::path(delete, path = "/api/v1/rate-limit-schemes/{slug}", tag = "usage", security(("root_key" = [])),
    params(("slug" = String, Path)),
    responses((status = 200, body = wire::RateLimitScheme), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_scheme(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(slug): Path<String>,
) -> Result<Json<wire::RateLimitScheme>, ApiError> {
    caller.require(Scope::AppsWrite)?;
    let change = caller.change();
    let changed = state
        .change_credential(move |state| async move {
            state.store.delete_rate_limit_scheme(&change, &slug).await
        })
        .await?;
    Ok(Json(convert::rate_limit_scheme(&changed.record)))
}
