use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use keyward_core::id::{self, IdKind};
use keyward_core::model::RootKey;
use keyward_core::scope::{Scope, ScopeSet};
use keyward_core::secret::{IssuedSecret, ROOT_KEY_PREFIX};
use keyward_core::validate::{self, MAX_NAME_LEN};
use keyward_proto::{
    self as wire, CreateRootKeyRequest, ErrorEnvelope, PageParams, RootKeyWithSecret,
};
use secrecy::ExposeSecret;

use crate::extract::{ApiJson, ApiQuery, Caller};
use crate::{convert, os_rng, page_request, ApiError, AppState};

/// The scopes a new credential asks for: known, and at least one. Whether the caller may
/// confer them is the store's check, made with every other change to a credential.
pub(super) fn requested_scopes(names: &[String]) -> Result<ScopeSet, ApiError> {
    let mut scopes = ScopeSet::default();
    for (index, name) in names.iter().enumerate() {
        // Named by its place, not its text: a secret pasted here must not come back.
        let scope = Scope::parse(name).ok_or_else(|| {
            ApiError::invalid(
                "invalid_scope",
                format!(
                    "`scopes[{index}]` is not a known scope; known scopes are {}",
                    Scope::EVERY.map(Scope::as_str).join(", ")
                ),
            )
        })?;
        scopes.insert(scope);
    }
    if scopes.is_empty() {
        return Err(ApiError::invalid(
            "invalid_scope",
            "Give the key at least one scope",
        ));
    }
    Ok(scopes)
}

/// The limit of a credential the caller makes: its own, unless it holds `*`.
pub(super) fn inherited_limit(
    caller: &Caller,
    requested: Option<String>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    caller
        .limit
        .for_new_credential(caller.scopes, requested)
        .map_err(|refusal| ApiError::forbidden("insufficient_scope", refusal.to_string()))
}

/// Create a root key for this environment, with at most the caller's own scopes.
#[utoipa::path(post, path = "/api/v1/root-keys", tag = "root keys", security(("root_key" = [])),
    request_body = CreateRootKeyRequest,
    responses((status = 201, body = RootKeyWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_root_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateRootKeyRequest>,
) -> Result<(StatusCode, Json<RootKeyWithSecret>), ApiError> {
    caller.require(Scope::RootKeysWrite)?;
    validate::text("name", &request.name, MAX_NAME_LEN).map_err(ApiError::from)?;
    let scopes = requested_scopes(&request.scopes)?;
    super::apps::scheme_reference(request.rate_limit_scheme.as_deref())?;
    let (rate_limit_scheme, limit_meter) = inherited_limit(&caller, request.rate_limit_scheme)?;
    let change = caller.change();
    let secret = IssuedSecret::generate(ROOT_KEY_PREFIX, caller.tenancy.environment, &mut os_rng())
        .map_err(|_| ApiError::internal())?;
    let key = RootKey {
        id: id::generate(IdKind::RootKey, change.now, &mut os_rng()),
        tenancy: caller.tenancy.clone(),
        name: request.name,
        scopes,
        start: secret.start.clone(),
        created_at: change.now,
        revoked_at: None,
        rate_limit_scheme,
        limit_meter,
        expires_at: None,
    };
    let (stored, hash) = (key.clone(), secret.hash);
    state
        .change_credential(move |state| async move {
            state.store.create_root_key(&change, &stored, hash).await
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RootKeyWithSecret {
            key: convert::root_key(&key),
            secret: secret.secret.expose_secret().to_owned(),
        }),
    ))
}

/// List this environment's root keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/root-keys", tag = "root keys", security(("root_key" = [])),
    params(PageParams),
    responses((status = 200, body = wire::Page<wire::RootKey>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_root_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<wire::Page<wire::RootKey>>, ApiError> {
    caller.require(Scope::RootKeysRead)?;
    let page = page_request(params.limit, params.cursor)?;
    let keys = state.store.list_root_keys(&caller.tenancy, &page).await?;
    Ok(Json(convert::page(keys, convert::root_key)))
}

/// Revoke a root key at once.
#[utoipa::path(post, path = "/api/v1/root-keys/{id}/revoke", tag = "root keys", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = wire::RootKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn revoke_root_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::RootKey>, ApiError> {
    caller.require(Scope::RootKeysWrite)?;
    let change = caller.change();
    let changed = state
        .change_credential(
            move |state| async move { state.store.revoke_root_key(&change, &id).await },
        )
        .await?;
    Ok(Json(convert::root_key(&changed.record)))
}
