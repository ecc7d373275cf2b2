//! End-user self-service (SPEC §4.1b): an end user authenticated by a public key and its
//! token manages their own keys of the public key's `self_service_app`, from a browser.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use keyward_core::credential::Presented;
use keyward_core::model::App;
use keyward_core::scope::ScopeSet;
use keyward_core::token::TokenError;
use keyward_proto::{
    self as wire, ApiKeyWithSecret, CreateMyKeyRequest, ErrorEnvelope, PageParams, RotateKeyRequest,
};
use keyward_store::KeyFilter;

use super::keys::{issue_key, revoke, rotate, KeyDraft};
use crate::extract::{presented, request_time, ApiJson, ApiQuery, Caller, OptionalJson};
use crate::middleware::RequestId;
use crate::verification::{EndUser, Refusal};
use crate::{convert, page_request, ApiError, AppState};

/// An end user with a subject, behind a public key that allows self-service.
pub(crate) struct Me {
    user: EndUser,
    subject: String,
    app_slug: String,
    /// Acts for the end user in the audit log, as `<public key id>:<subject>`.
    caller: Caller,
}

impl FromRequestParts<Arc<AppState>> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (key, token) = match presented(&parts.headers)? {
            Presented::JwtPublicKey { key, token } | Presented::ClientPublicKey { key, token } => {
                (key, token)
            }
            _ => return Err(Refusal::InvalidKey.into()),
        };
        let tenant = parts
            .headers
            .get("x-tenant-id")
            .map(|value| value.to_str().map_err(|_| ApiError::invalid_api_key()))
            .transpose()?;
        let now = request_time();
        let user = state
            .verification
            .authenticate_end_user(key, token, tenant, now)
            .await?;
        let subject = user
            .subject()
            .ok_or(Refusal::Token(TokenError::Missing))?
            .to_owned();
        let app_slug = user
            .public_key
            .key
            .self_service_app
            .clone()
            .ok_or_else(|| {
                ApiError::forbidden(
                    "self_service_disabled",
                    "This public key does not allow self-service",
                )
            })?;
        let caller = Caller {
            actor_id: format!("{}:{subject}", user.public_key.key.id),
            tenancy: user.public_key.key.tenancy.clone(),
            scopes: ScopeSet::default(),
            limit: keyward_core::model::CallLimit::default(),
            request_id: parts.extensions.get::<RequestId>().map(|id| id.0.clone()),
            now,
        };
        Ok(Self {
            user,
            subject,
            app_slug,
            caller,
        })
    }
}

impl Me {
    async fn app(&self, state: &AppState) -> Result<App, ApiError> {
        Ok(state
            .store
            .app_by_slug(&self.caller.tenancy, &self.app_slug)
            .await?)
    }

    fn own_keys(&self) -> KeyFilter {
        KeyFilter {
            owner_user_id: Some(self.subject.clone()),
            ..KeyFilter::default()
        }
    }

    /// Another user's key, or a key of another app, is as absent as one never made.
    async fn require_own_key(&self, state: &AppState, id: &str) -> Result<(), ApiError> {
        let key = state.store.key(&self.caller.tenancy, id).await?;
        if key.owner_user_id.as_deref() != Some(self.subject.as_str())
            || key.app_slug != self.app_slug
        {
            return Err(ApiError::not_found("key"));
        }
        Ok(())
    }
}

/// The end user's own keys, newest first.
#[utoipa::path(get, path = "/api/v1/me/keys", tag = "self-service", security(("public_key" = [])),
    params(PageParams),
    responses((status = 200, body = wire::Page<wire::ApiKey>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_my_keys(
    State(state): State<Arc<AppState>>,
    me: Me,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<wire::Page<wire::ApiKey>>, ApiError> {
    let page = page_request(params.limit, params.cursor)?;
    let app = me.app(&state).await?;
    let now = me.caller.now;
    let keys = state
        .store
        .list_keys(&me.caller.tenancy, &app.id, &me.own_keys(), &page, now)
        .await?;
    Ok(Json(convert::page(keys, |key| convert::key(key, now))))
}

/// Make a key for the end user, with the permissions it names of the self-service app's
/// (all of them by default) and an optional expiry. Its secret is in this answer only. At
/// most `max_keys_per_user` active keys.
#[utoipa::path(post, path = "/api/v1/me/keys", tag = "self-service", security(("public_key" = [])),
    request_body = CreateMyKeyRequest,
    responses((status = 201, body = ApiKeyWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_my_key(
    State(state): State<Arc<AppState>>,
    me: Me,
    ApiJson(request): ApiJson<CreateMyKeyRequest>,
) -> Result<(StatusCode, Json<ApiKeyWithSecret>), ApiError> {
    let app = me.app(&state).await?;
    let draft = KeyDraft {
        name: request.name,
        owner_user_id: Some(me.subject.clone()),
        // Checked against the app's permissions with every other key's.
        permissions: Some(
            request
                .permissions
                .unwrap_or_else(|| app.permissions.clone()),
        ),
        expires_at: request.expires_at,
        ..KeyDraft::default()
    };
    // Counted in the key's own transaction, so concurrent requests cannot all pass.
    let quota = me.user.public_key.key.max_keys_per_user;
    let body = issue_key(&state, &me.caller, &app, draft, Some(quota)).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// Give one of the end user's keys a new secret.
#[utoipa::path(post, path = "/api/v1/me/keys/{id}/rotate", tag = "self-service", security(("public_key" = [])),
    params(("id" = String, Path)), request_body = RotateKeyRequest,
    responses((status = 200, body = ApiKeyWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn rotate_my_key(
    State(state): State<Arc<AppState>>,
    me: Me,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<RotateKeyRequest>,
) -> Result<Json<ApiKeyWithSecret>, ApiError> {
    me.require_own_key(&state, &id).await?;
    rotate(&state, &me.caller, id, request.expire_previous_in_seconds)
        .await
        .map(Json)
}

/// Revoke one of the end user's keys, everywhere, before the call returns.
#[utoipa::path(post, path = "/api/v1/me/keys/{id}/revoke", tag = "self-service", security(("public_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = wire::ApiKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn revoke_my_key(
    State(state): State<Arc<AppState>>,
    me: Me,
    Path(id): Path<String>,
) -> Result<Json<wire::ApiKey>, ApiError> {
    me.require_own_key(&state, &id).await?;
    revoke(&state, &me.caller, id).await
}
