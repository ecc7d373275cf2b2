use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use keyward_core::id::{self, IdKind};
use keyward_core::model::App;
use keyward_core::scope::Scope;
use keyward_core::secret::validate_app_prefix;
use keyward_core::validate::{self, MAX_EXTERNAL_ID_LEN, MAX_NAME_LEN};
use keyward_proto::{self as wire, CreateAppRequest, ErrorEnvelope, PageParams, UpdateAppRequest};
use keyward_store::AppPatch;

use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::{convert, os_rng, page_request, ApiError, AppState};

pub(crate) const DEFAULT_KEY_PREFIX: &str = "kw";

/// A scheme slug a request names; that it exists is checked by storage, in the change's
/// transaction.
pub(crate) fn scheme_reference(slug: Option<&str>) -> Result<(), ApiError> {
    match slug {
        Some(slug) => validate::scheme_slug(slug).map_err(ApiError::from),
        None => Ok(()),
    }
}

/// Create an app.
#[utoipa::path(post, path = "/api/v1/apps", tag = "apps", security(("root_key" = [])),
    request_body = CreateAppRequest,
    responses((status = 201, body = wire::App), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_app(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateAppRequest>,
) -> Result<(StatusCode, Json<wire::App>), ApiError> {
    caller.require(Scope::AppsWrite)?;
    validate::text("name", &request.name, MAX_NAME_LEN).map_err(ApiError::from)?;
    validate::slug(&request.slug).map_err(ApiError::from)?;
    let permissions = validate::permissions(&request.permissions).map_err(ApiError::from)?;
    if let Some(organization) = &request.organization_id {
        validate::text("organization_id", organization, MAX_EXTERNAL_ID_LEN)
            .map_err(ApiError::from)?;
    }
    scheme_reference(request.rate_limit_scheme.as_deref())?;
    let key_prefix = request
        .key_prefix
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    validate_app_prefix(&key_prefix)?;
    let change = caller.change();
    let app = App {
        id: id::generate(IdKind::App, change.now, &mut os_rng()),
        tenancy: caller.tenancy.clone(),
        name: request.name,
        slug: request.slug,
        permissions,
        rate_limit_scheme: request.rate_limit_scheme,
        organization_id: request.organization_id,
        key_prefix,
        created_at: change.now,
        updated_at: change.now,
    };
    state.store.create_app(&change, &app).await?;
    Ok((StatusCode::CREATED, Json(convert::app(&app))))
}

/// List the environment's apps, newest first.
#[utoipa::path(get, path = "/api/v1/apps", tag = "apps", security(("root_key" = [])),
    params(PageParams),
    responses((status = 200, body = wire::Page<wire::App>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_apps(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<wire::Page<wire::App>>, ApiError> {
    // Who issues keys must see the apps they belong to and what they may grant.
    caller.require_any(&[Scope::AppsRead, Scope::KeysWrite])?;
    let page = page_request(params.limit, params.cursor)?;
    let apps = state.store.list_apps(&caller.tenancy, &page).await?;
    Ok(Json(convert::page(apps, convert::app)))
}

/// Get an app by slug.
#[utoipa::path(get, path = "/api/v1/apps/{slug}", tag = "apps", security(("root_key" = [])),
    params(("slug" = String, Path)),
    responses((status = 200, body = wire::App), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_app(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(slug): Path<String>,
) -> Result<Json<wire::App>, ApiError> {
    // Who issues keys must see the apps they belong to and what they may grant.
    caller.require_any(&[Scope::AppsRead, Scope::KeysWrite])?;
    let app = state.store.app_by_slug(&caller.tenancy, &slug).await?;
    Ok(Json(convert::app(&app)))
}

/// Update an app's name, permissions or rate-limit scheme.
#[utoipa::path(patch, path = "/api/v1/apps/{slug}", tag = "apps", security(("root_key" = [])),
    params(("slug" = String, Path)), request_body = UpdateAppRequest,
    responses((status = 200, body = wire::App), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn update_app(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(slug): Path<String>,
    ApiJson(request): ApiJson<UpdateAppRequest>,
) -> Result<Json<wire::App>, ApiError> {
    caller.require(Scope::AppsWrite)?;
    if let Some(name) = &request.name {
        validate::text("name", name, MAX_NAME_LEN).map_err(ApiError::from)?;
    }
    let permissions = request
        .permissions
        .as_deref()
        .map(validate::permissions)
        .transpose()
        .map_err(ApiError::from)?;
    if let Some(scheme) = &request.rate_limit_scheme {
        scheme_reference(scheme.as_deref())?;
    }
    let patch = AppPatch {
        name: request.name,
        permissions,
        rate_limit_scheme: request.rate_limit_scheme,
    };
    let change = caller.change();
    let changed = state
        .change_credential(move |state| async move {
            state.store.update_app(&change, &slug, &patch).await
        })
        .await?;
    Ok(Json(convert::app(&changed.record)))
}

/// Delete an app, revoking every key it has.
#[utoipa::path(delete, path = "/api/v1/apps/{slug}", tag = "apps", security(("root_key" = [])),
    params(("slug" = String, Path)),
    responses((status = 200, body = wire::App), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_app(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(slug): Path<String>,
) -> Result<Json<wire::App>, ApiError> {
    caller.require(Scope::AppsWrite)?;
    let change = caller.change();
    let changed = state
        .change_credential(move |state| async move { state.store.delete_app(&change, &slug).await })
        .await?;
    Ok(Json(convert::app(&changed.record)))
}
