//! End-user self-service (SPEC §4.1b): an end user authenticated by a public key and its
//! token manages their own keys of the public key's `self_service_app`, from a browser.
//! The customer portal (SPEC §4.10) acts through the same routes, for the customer its
//! session names: its pages call them in-process with a [`PortalGrant`], which no client
//! can send.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use keyward_core::credential::Presented;
use keyward_core::model::{ApiKey, App, PortalSession};
use keyward_core::scope::ScopeSet;
use keyward_core::token::TokenError;
use keyward_core::Timestamp;
use keyward_dashboard::PortalGrant;
use keyward_proto::{
    self as wire, ApiKeyWithSecret, CreateMyKeyRequest, ErrorEnvelope, MyKeyUsageParams,
    PageParams, RotateKeyRequest, UsageParams,
};
use keyward_store::{KeyFilter, StoreError};

use super::keys::{issue_key, revoke, rotate, KeyDraft};
use crate::extract::{presented, request_time, ApiJson, ApiQuery, Caller, OptionalJson};
use crate::middleware::RequestId;
use crate::rate_limit::RateLimitSlot;
use crate::verification::Refusal;
use crate::{convert, page_request, ApiError, AppState};

/// An end user with a subject, behind a public key that allows self-service, or the
/// customer of a portal session.
pub(crate) struct Me {
    subject: String,
    app_slug: String,
    /// A portal session's app, by id: a slug may name a later app.
    app_id: Option<String>,
    /// A portal session names one organization's keys only.
    organization_id: Option<String>,
    /// What new keys may have: all of the app's, or a portal session's subset.
    permissions: Option<Vec<String>>,
    /// The most active keys the end user may hold.
    quota: u32,
    /// The portal session acting, when one is.
    portal_session: Option<String>,
    /// Acts for the end user in the audit log, as `<public key id>:<subject>` or
    /// `<portal session id>:<owner_user_id>`.
    caller: Caller,
}

impl FromRequestParts<Arc<AppState>> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(grant) = parts.extensions.get::<PortalGrant>() {
            return Self::portal_customer(grant, parts, state).await;
        }
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
            quota: user.public_key.key.max_keys_per_user,
            subject,
            app_slug,
            app_id: None,
            organization_id: None,
            permissions: None,
            portal_session: None,
            caller,
        })
    }
}

impl Me {
    /// The customer of a live portal session: it ends with its hour, a sign-out, or the
    /// credential that made it.
    async fn portal_customer(
        grant: &PortalGrant,
        parts: &Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let now = request_time();
        let session = state
            .store
            .live_portal_session(&grant.session_id, now)
            .await
            .map_err(|error| match error {
                StoreError::NotFound(_) => {
                    ApiError::unauthenticated("portal_session_ended", "The portal session is over")
                }
                // Storage that does not answer ends nothing: the customer may try again.
                other => other.into(),
            })?;
        Self::charge_makers_limit(&session, parts, state, now).await?;
        let app = state
            .store
            .app_by_id(&session.tenancy, &session.app_id)
            .await?;
        Ok(Self {
            caller: Caller {
                actor_id: format!("{}:{}", session.id, session.owner_user_id),
                tenancy: session.tenancy,
                scopes: ScopeSet::default(),
                limit: keyward_core::model::CallLimit::default(),
                request_id: parts.extensions.get::<RequestId>().map(|id| id.0.clone()),
                now,
            },
            subject: session.owner_user_id,
            app_slug: app.slug,
            app_id: Some(app.id),
            organization_id: session.organization_id,
            permissions: Some(session.permissions),
            quota: session.max_keys,
            portal_session: Some(session.id),
        })
    }

    /// A customer's calls are its session maker's, as those of any credential the maker
    /// made: they count against the maker's limit (in a demo sandbox, the sandbox's), so a
    /// session never calls more than its maker may.
    async fn charge_makers_limit(
        session: &PortalSession,
        parts: &Parts,
        state: &AppState,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        let windows = match &session.limit.scheme {
            None => Vec::new(),
            Some(scheme) => match state
                .store
                .rate_limit_scheme(&session.tenancy, scheme)
                .await
            {
                Ok(scheme) => scheme.windows,
                // As for the maker itself: a scheme that is gone limits nothing.
                Err(StoreError::NotFound(_)) => Vec::new(),
                Err(other) => return Err(other.into()),
            },
        };
        let meter = format!("calls:{}", session.limit.meter);
        let Some(calls) = state
            .verification
            .limit_api_calls(&session.tenancy, &meter, &windows, now)
            .await?
        else {
            return Ok(());
        };
        let refused = calls.is_refused();
        if let Some(slot) = parts.extensions.get::<RateLimitSlot>() {
            slot.fill(calls);
        }
        if refused {
            return Err(Refusal::RateLimited.into());
        }
        Ok(())
    }

    async fn app(&self, state: &AppState) -> Result<App, ApiError> {
        let tenancy = &self.caller.tenancy;
        Ok(match &self.app_id {
            Some(app_id) => state.store.app_by_id(tenancy, app_id).await?,
            None => state.store.app_by_slug(tenancy, &self.app_slug).await?,
        })
    }

    fn own_keys(&self) -> KeyFilter {
        KeyFilter {
            owner_user_id: Some(self.subject.clone()),
            organization_id: self.organization_id.clone(),
            ..KeyFilter::default()
        }
    }

    /// Another user's key, a key of another app, or (for a portal session naming one)
    /// another organization's key, is as absent as one never made.
    async fn require_own_key(&self, state: &AppState, id: &str) -> Result<ApiKey, ApiError> {
        let key = state.store.key(&self.caller.tenancy, id).await?;
        if key.owner_user_id.as_deref() != Some(self.subject.as_str())
            || key.app_slug != self.app_slug
            || self
                .app_id
                .as_ref()
                .is_some_and(|app_id| *app_id != key.app_id)
            || (self.organization_id.is_some() && key.organization_id != self.organization_id)
        {
            return Err(ApiError::not_found("key"));
        }
        Ok(key)
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
    let allowed = me.permissions.as_ref().unwrap_or(&app.permissions);
    if let Some(named) = &request.permissions {
        // Named by its place, not its text, which may be a pasted secret.
        if let Some(other) = named.iter().position(|name| !allowed.contains(name)) {
            return Err(ApiError::invalid(
                "invalid_permissions",
                format!("`permissions[{other}]` is not a permission you may give a key"),
            ));
        }
    }
    let draft = KeyDraft {
        name: request.name,
        owner_user_id: Some(me.subject.clone()),
        organization_id: me.organization_id.clone(),
        // Checked against the app's permissions with every other key's.
        permissions: Some(request.permissions.unwrap_or_else(|| allowed.clone())),
        expires_at: request.expires_at,
        ..KeyDraft::default()
    };
    // Counted in the key's own transaction, so concurrent requests cannot all pass.
    let body = issue_key(&state, &me.caller, &app, draft, Some(me.quota)).await?;
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

/// One of the end user's keys: its verification counts over time, by outcome.
#[utoipa::path(get, path = "/api/v1/me/keys/{id}/usage", tag = "self-service",
    security(("public_key" = [])),
    params(("id" = String, Path), MyKeyUsageParams),
    responses((status = 200, body = wire::UsageReport), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn my_key_usage(
    State(state): State<Arc<AppState>>,
    me: Me,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<MyKeyUsageParams>,
) -> Result<Json<wire::UsageReport>, ApiError> {
    me.require_own_key(&state, &id).await?;
    let params = UsageParams {
        key_id: Some(id),
        from: params.from,
        to: params.to,
        granularity: params.granularity,
        ..UsageParams::default()
    };
    let query = super::usage::usage_query(&state, &me.caller, params).await?;
    Ok(Json(super::usage::usage_report(&state, &query).await?))
}

/// One of the end user's keys, metadata only.
#[utoipa::path(get, path = "/api/v1/me/keys/{id}", tag = "self-service",
    security(("public_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = wire::ApiKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_my_key(
    State(state): State<Arc<AppState>>,
    me: Me,
    Path(id): Path<String>,
) -> Result<Json<wire::ApiKey>, ApiError> {
    let key = me.require_own_key(&state, &id).await?;
    Ok(Json(convert::key(&key, me.caller.now)))
}

/// Ends the customer portal session acting (its sign-out): on every node at once, since
/// each call checks the session. Anything else acting gets 404.
#[utoipa::path(post, path = "/api/v1/me/portal-session/end", tag = "self-service",
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn end_portal_session(
    State(state): State<Arc<AppState>>,
    me: Me,
) -> Result<StatusCode, ApiError> {
    let Some(session_id) = me.portal_session.as_deref() else {
        return Err(ApiError::not_found("portal session"));
    };
    state
        .store
        .end_portal_session(session_id, me.caller.now)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
