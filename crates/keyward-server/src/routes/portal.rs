//! The customer portal's sessions (SPEC §4.10): a backend asks for a short-lived, single-use
//! link for one customer and one app, and sends the customer's browser to it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use keyward_core::id::{self, IdKind};
use keyward_core::model::PortalSession;
use keyward_core::scope::{Scope, ScopeSet};
use keyward_proto::{
    CreatePortalSessionRequest, ErrorEnvelope, PortalSessionInfo, PortalSessionLink,
    RedeemPortalCodeRequest,
};
use keyward_store::StoreError;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::keys::{granted_permissions, key_organization, validate_owner};
use crate::extract::{ApiJson, Caller};
use crate::{convert, os_rng, ApiError, AppState};

/// How long a portal session (its cookie) lasts once its link is opened: SPEC §4.10 allows
/// at most an hour.
pub(crate) const SESSION_LIFETIME_MS: i64 = 3_600_000;
const DEFAULT_MAX_KEYS: u32 = 10;
const MAX_MAX_KEYS: u32 = 100;
const MAX_RETURN_URL_LEN: usize = 2048;

/// How the portal's links are made.
#[derive(Debug, Clone)]
pub struct PortalSettings {
    /// How long an unused link works.
    pub link_lifetime: std::time::Duration,
    /// The address customers reach this server at, e.g. `https://keys.example.com`; when
    /// unset, the `Host` the session was asked for at, over `http`.
    pub public_url: Option<String>,
    /// Origins a `return_url` may have besides any `https://` one (e.g. a local
    /// `http://localhost:3000` in development).
    pub return_origins: Vec<String>,
}

impl Default for PortalSettings {
    fn default() -> Self {
        Self {
            link_lifetime: std::time::Duration::from_secs(300),
            public_url: None,
            return_origins: Vec::new(),
        }
    }
}

/// The hash a link's code is kept (and redeemed) by.
pub(crate) fn code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

/// A `return_url` must be `https`, or have one of the configured origins, and carry no
/// credentials: the page only links to it, and never to anything else.
fn return_url(url: &str, allowed_origins: &[String]) -> Result<String, ApiError> {
    let refused =
        |why: &str| ApiError::invalid("invalid_return_url", format!("`return_url` {why}"));
    if url.len() > MAX_RETURN_URL_LEN {
        return Err(refused("is too long"));
    }
    let parsed = url::Url::parse(url).map_err(|_| refused("is not an absolute URL"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refused("may not carry credentials"));
    }
    let origin = parsed.origin().ascii_serialization();
    let allowed = (parsed.scheme() == "https" && parsed.host().is_some())
        || allowed_origins
            .iter()
            .any(|allowed| allowed.trim_end_matches('/') == origin);
    if !allowed {
        return Err(refused(
            "must be https, or have an origin listed in KEYWARD_PORTAL_RETURN_ORIGINS",
        ));
    }
    Ok(parsed.to_string())
}

fn link_base(settings: &PortalSettings, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(url) = &settings.public_url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                "public_url_unknown",
                "Set KEYWARD_PUBLIC_URL, or send a Host header, so the link can name this server",
            )
        })?;
    Ok(format!("http://{host}"))
}

/// A single-use link for one customer to manage their keys of one app, valid for minutes.
#[utoipa::path(post, path = "/api/v1/portal/sessions", tag = "portal",
    security(("root_key" = [])),
    request_body = CreatePortalSessionRequest,
    responses((status = 201, body = PortalSessionLink), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_portal_session(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreatePortalSessionRequest>,
) -> Result<(StatusCode, Json<PortalSessionLink>), ApiError> {
    caller.require(Scope::KeysWrite)?;
    // What a key of this customer must pass anyway is checked now, so that no session is
    // made whose every key would be refused.
    validate_owner(&request.owner_user_id)?;
    let app = state
        .store
        .app_by_slug(&caller.tenancy, &request.app)
        .await?;
    let permissions = match request.permissions {
        None => app.permissions.clone(),
        Some(named) => granted_permissions(&app, &named)?,
    };
    let max_keys = request.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if !(1..=MAX_MAX_KEYS).contains(&max_keys) {
        return Err(ApiError::invalid(
            "invalid_max_keys",
            format!("`max_keys` must be between 1 and {MAX_MAX_KEYS}"),
        ));
    }
    let organization_id = key_organization(&app, request.organization_id)?;
    if let Some(organization_id) = &organization_id {
        state
            .store
            .organization(&caller.tenancy, organization_id)
            .await?;
    }
    let return_url = request
        .return_url
        .as_deref()
        .map(|url| return_url(url, &state.portal.return_origins))
        .transpose()?;
    let base = link_base(&state.portal, &headers)?;
    let change = caller.change();
    let mut code = [0u8; 32];
    os_rng().fill_bytes(&mut code);
    let code = hex::encode(code);
    let link_lifetime = i64::try_from(state.portal.link_lifetime.as_millis()).unwrap_or(i64::MAX);
    let session = PortalSession {
        id: id::generate(IdKind::PortalSession, change.now, &mut os_rng()),
        tenancy: caller.tenancy.clone(),
        app_id: app.id.clone(),
        owner_user_id: request.owner_user_id,
        organization_id,
        permissions,
        max_keys,
        return_url,
        created_by: caller.actor_id.clone(),
        // The portal can do what its creator could, of what a portal does.
        scopes: [Scope::KeysWrite, Scope::UsageRead]
            .into_iter()
            .filter(|scope| caller.scopes.grants(*scope))
            .collect::<ScopeSet>(),
        limit: caller.limit.clone(),
        created_at: change.now,
        code_expires_at: change.now.plus_millis(link_lifetime),
        // Set when the link is opened: an hour from then.
        expires_at: change.now.plus_millis(link_lifetime),
    };
    state
        .store
        .create_portal_session(&change, &session, &code_hash(&code))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PortalSessionLink {
            url: format!("{base}/portal/enter/{code}"),
            expires_at: convert::datetime(session.code_expires_at),
        }),
    ))
}

/// Opens the session a link's code names: once, on any node, before the link expires and
/// while its creator is live. The portal page calls this when the customer's browser opens
/// the link; an unknown, used or expired code is 404.
#[utoipa::path(post, path = "/api/v1/portal/sessions/redeem", tag = "portal",
    request_body = RedeemPortalCodeRequest,
    responses((status = 200, body = PortalSessionInfo), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn redeem_portal_session(
    State(state): State<Arc<AppState>>,
    ApiJson(request): ApiJson<RedeemPortalCodeRequest>,
) -> Result<Json<PortalSessionInfo>, ApiError> {
    let now = crate::extract::request_time();
    let session = state
        .store
        .redeem_portal_code(
            &code_hash(&request.code),
            now,
            now.plus_millis(SESSION_LIFETIME_MS),
        )
        .await
        .map_err(|error| match error {
            StoreError::NotFound(_) => ApiError::not_found("portal link"),
            other => other.into(),
        })?;
    let app = state
        .store
        .app_by_id(&session.tenancy, &session.app_id)
        .await?;
    Ok(Json(PortalSessionInfo {
        id: session.id,
        environment: session.tenancy.environment.as_str().to_owned(),
        app: app.slug,
        app_name: app.name,
        owner_user_id: session.owner_user_id,
        organization_id: session.organization_id,
        permissions: session.permissions,
        max_keys: session.max_keys,
        return_url: session.return_url,
        shows_usage: session.scopes.grants(Scope::UsageRead),
        expires_at: convert::datetime(session.expires_at),
    }))
}
