//! Browser-safe and backend credentials: public keys (`pk_jwt_…`, `pk_live_…`), ES256 signing
//! keys, and workspace keys for HMAC-signed calls (SPEC §4.1).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use keyward_core::credential::{self, WORKSPACE_SECRET_PREFIX};
use keyward_core::id::{self, IdKind};
use keyward_core::model::{
    JwtKeySource, JwtSettings, PublicKey, PublicKeyKind, SigningKey, WorkspaceKey,
};
use keyward_core::scope::{Scope, ScopeSet};
use keyward_core::secret::IssuedSecret;
use keyward_core::token::JwtAlgorithm;
use keyward_core::validate::{self, MAX_NAME_LEN};
use keyward_core::Environment;
use keyward_proto::{
    self as wire, CreatePublicKeyRequest, CreateSigningKeyRequest, CreateWorkspaceKeyRequest,
    ErrorEnvelope, PageParams, RotateKeyRequest, SigningKeyWithPrivateKey, WorkspaceKeyWithSecret,
};
use secrecy::ExposeSecret;

use super::apps::scheme_reference;
use super::keys::previous_expiry;
use super::root_keys::{inherited_limit, requested_scopes};
use crate::extract::{ApiJson, ApiQuery, Caller, OptionalJson};
use crate::tokens::{jwks, parse_inline_keys};
use crate::{convert, crypto, os_rng, page_request, ApiError, AppState};

/// End users may hold this many self-service keys unless the public key says otherwise.
const DEFAULT_MAX_KEYS_PER_USER: u32 = 5;
const MAX_KEYS_PER_USER: u32 = 1000;
const MAX_INLINE_KEY_BYTES: usize = 64 * 1024;

fn name_or(name: Option<String>, default: &str) -> Result<String, ApiError> {
    let name = name.unwrap_or_else(|| default.to_owned());
    validate::text("name", &name, MAX_NAME_LEN).map_err(ApiError::from)?;
    Ok(name)
}

fn optional_text(field: &'static str, value: &Option<String>) -> Result<(), ApiError> {
    match value {
        Some(text) => validate::text(field, text, MAX_NAME_LEN).map_err(ApiError::from),
        None => Ok(()),
    }
}

fn jwt_settings(
    request: &CreatePublicKeyRequest,
    jwks: &jwks::JwksSettings,
    fetches_allowed: bool,
) -> Result<JwtSettings, ApiError> {
    let source = match (&request.jwks_url, &request.public_key) {
        (Some(url), None) => {
            if !fetches_allowed {
                return Err(ApiError::forbidden(
                    "fetches_not_allowed",
                    "Demo sandboxes cannot make Keyward fetch URLs; give `public_key` instead",
                ));
            }
            jwks::check_url(url, jwks)
                .map_err(|error| ApiError::invalid("invalid_jwks_url", error.to_string()))?;
            JwtKeySource::JwksUrl(url.clone())
        }
        (None, Some(text)) => {
            if text.len() > MAX_INLINE_KEY_BYTES {
                return Err(ApiError::invalid(
                    "invalid_public_key",
                    "`public_key` is too large",
                ));
            }
            parse_inline_keys(text)
                .map_err(|message| ApiError::invalid("invalid_public_key", message))?;
            JwtKeySource::Inline(text.clone())
        }
        _ => {
            return Err(ApiError::invalid(
                "invalid_public_key",
                "A JWT public key needs exactly one of `jwks_url` and `public_key`",
            ))
        }
    };
    let names = request.algorithms.as_deref().unwrap_or_default();
    if names.is_empty() {
        return Err(ApiError::invalid(
            "invalid_algorithms",
            "Give `algorithms`, e.g. [\"RS256\"]",
        ));
    }
    let mut algorithms = Vec::new();
    for name in names {
        let algorithm = JwtAlgorithm::parse(name).ok_or_else(|| {
            ApiError::invalid(
                "invalid_algorithms",
                "Allowed algorithms are RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 \
                 and EdDSA; `none` and HMAC algorithms never are",
            )
        })?;
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    optional_text("issuer", &request.issuer)?;
    optional_text("audience", &request.audience)?;
    let subject_claim = request
        .subject_claim
        .clone()
        .unwrap_or_else(|| "sub".to_owned());
    validate::text("subject_claim", &subject_claim, 100).map_err(ApiError::from)?;
    Ok(JwtSettings {
        source,
        issuer: request.issuer.clone(),
        audience: request.audience.clone(),
        algorithms,
        subject_claim,
    })
}

/// Create a JWT public key (`type: "jwt"`) or a client public key (`type: "client"`).
#[utoipa::path(post, path = "/api/v1/public-keys", tag = "public keys", security(("root_key" = [])),
    request_body = CreatePublicKeyRequest,
    responses((status = 201, body = wire::PublicKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_public_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<CreatePublicKeyRequest>,
) -> Result<(StatusCode, Json<wire::PublicKey>), ApiError> {
    caller.require(Scope::PublicKeysWrite)?;
    let change = caller.change();
    let (kind, value, id_kind) = match request.key_type.as_str() {
        "jwt" => (
            PublicKeyKind::Jwt(jwt_settings(
                &request,
                state.verification.tokens.jwks().settings(),
                state.verification.may_fetch_for(caller.tenancy.environment),
            )?),
            credential::generate_jwt_public_key(&mut os_rng()),
            IdKind::JwtPublicKey,
        ),
        "client" => {
            let jwt_only = [
                request.jwks_url.is_some(),
                request.public_key.is_some(),
                request.issuer.is_some(),
                request.audience.is_some(),
                request.algorithms.is_some(),
                request.subject_claim.is_some(),
            ];
            if jwt_only.into_iter().any(|given| given) {
                return Err(ApiError::invalid(
                    "invalid_field",
                    "Client public keys take no JWT settings; their tokens are signed with \
                     signing keys",
                ));
            }
            let value = IssuedSecret::generate(
                credential::CLIENT_PUBLIC_KEY_PREFIX,
                caller.tenancy.environment,
                &mut os_rng(),
            )
            .map_err(|_| ApiError::internal())?;
            (
                PublicKeyKind::Client,
                value.expose().to_owned(),
                IdKind::ClientPublicKey,
            )
        }
        _ => {
            return Err(ApiError::invalid(
                "invalid_type",
                "`type` is `jwt` or `client`",
            ))
        }
    };
    if let Some(app) = &request.self_service_app {
        validate::slug(app).map_err(ApiError::from)?;
    }
    let max_keys_per_user = request
        .max_keys_per_user
        .unwrap_or(DEFAULT_MAX_KEYS_PER_USER);
    if !(1..=MAX_KEYS_PER_USER).contains(&max_keys_per_user) {
        return Err(ApiError::invalid(
            "invalid_field",
            format!("`max_keys_per_user` is between 1 and {MAX_KEYS_PER_USER}"),
        ));
    }
    scheme_reference(request.rate_limit_scheme.as_deref())?;
    let key = PublicKey {
        id: id::generate(id_kind, change.now, &mut os_rng()),
        tenancy: caller.tenancy.clone(),
        name: name_or(request.name, "Public key")?,
        key: value,
        kind,
        self_service_app: request.self_service_app,
        max_keys_per_user,
        rate_limit_scheme: request.rate_limit_scheme,
        created_at: change.now,
        updated_at: change.now,
    };
    let stored = key.clone();
    state
        .change_credential(move |state| async move {
            state.store.create_public_key(&change, &stored).await
        })
        .await?;
    Ok((StatusCode::CREATED, Json(convert::public_key(&key))))
}

/// List the environment's public keys, newest first.
#[utoipa::path(get, path = "/api/v1/public-keys", tag = "public keys", security(("root_key" = [])),
    params(PageParams),
    responses((status = 200, body = wire::Page<wire::PublicKey>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_public_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<wire::Page<wire::PublicKey>>, ApiError> {
    caller.require(Scope::PublicKeysRead)?;
    let page = page_request(params.limit, params.cursor)?;
    let keys = state.store.list_public_keys(&caller.tenancy, &page).await?;
    Ok(Json(convert::page(keys, convert::public_key)))
}

/// Give a public key a new value; the previous one works `expire_previous_in_seconds` more.
#[utoipa::path(post, path = "/api/v1/public-keys/{id}/rotate", tag = "public keys", security(("root_key" = [])),
    params(("id" = String, Path)), request_body = RotateKeyRequest,
    responses((status = 200, body = wire::PublicKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn rotate_public_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<RotateKeyRequest>,
) -> Result<Json<wire::PublicKey>, ApiError> {
    caller.require(Scope::PublicKeysWrite)?;
    let change = caller.change();
    let previous_expire_at = previous_expiry(request.expire_previous_in_seconds, change.now)?;
    let current = state.store.public_key(&caller.tenancy, &id).await?;
    let value = match current.kind {
        PublicKeyKind::Jwt(_) => credential::generate_jwt_public_key(&mut os_rng()),
        PublicKeyKind::Client => IssuedSecret::generate(
            credential::CLIENT_PUBLIC_KEY_PREFIX,
            caller.tenancy.environment,
            &mut os_rng(),
        )
        .map_err(|_| ApiError::internal())?
        .expose()
        .to_owned(),
    };
    let changed = state
        .change_credential(move |state| async move {
            state
                .store
                .rotate_public_key(&change, &id, &value, previous_expire_at)
                .await
        })
        .await?;
    Ok(Json(convert::public_key(&changed.record)))
}

/// Delete a public key; no node accepts it once the call returns.
#[utoipa::path(delete, path = "/api/v1/public-keys/{id}", tag = "public keys", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = wire::PublicKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_public_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::PublicKey>, ApiError> {
    caller.require(Scope::PublicKeysWrite)?;
    let change = caller.change();
    let changed = state
        .change_credential(
            move |state| async move { state.store.delete_public_key(&change, &id).await },
        )
        .await?;
    Ok(Json(convert::public_key(&changed.record)))
}

/// Make an ES256 key pair. The private key is in this answer only; Keyward keeps the public
/// half, and accepts user tokens signed with it whose `kid` is the key's id.
#[utoipa::path(post, path = "/api/v1/signing-keys", tag = "signing keys", security(("root_key" = [])),
    request_body = CreateSigningKeyRequest,
    responses((status = 201, body = SigningKeyWithPrivateKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_signing_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    OptionalJson(request): OptionalJson<CreateSigningKeyRequest>,
) -> Result<(StatusCode, Json<SigningKeyWithPrivateKey>), ApiError> {
    caller.require(Scope::SigningKeysWrite)?;
    let change = caller.change();
    let generated = crypto::generate_signing_key();
    let key = SigningKey {
        id: id::generate(IdKind::SigningKey, change.now, &mut os_rng()),
        tenancy: caller.tenancy.clone(),
        name: name_or(request.name, "Signing key")?,
        public_key_pem: generated.public_key_pem,
        created_at: change.now,
    };
    let record = key.clone();
    state
        .change_credential(move |state| async move {
            state.store.create_signing_key(&change, &record).await
        })
        .await?;
    let private_key_pem = generated.private_key_pem.expose_secret().to_owned();
    Ok((
        StatusCode::CREATED,
        Json(SigningKeyWithPrivateKey {
            key: convert::signing_key(&key),
            private_key_base64: base64::engine::general_purpose::STANDARD.encode(&private_key_pem),
            private_key_pem,
        }),
    ))
}

/// List the environment's signing keys (public halves), newest first.
#[utoipa::path(get, path = "/api/v1/signing-keys", tag = "signing keys", security(("root_key" = [])),
    params(PageParams),
    responses((status = 200, body = wire::Page<wire::SigningKey>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_signing_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<wire::Page<wire::SigningKey>>, ApiError> {
    caller.require(Scope::SigningKeysRead)?;
    let page = page_request(params.limit, params.cursor)?;
    let keys = state
        .store
        .list_signing_keys(&caller.tenancy, &page)
        .await?;
    Ok(Json(convert::page(keys, convert::signing_key)))
}

/// Delete a signing key; tokens it signed are refused once the call returns.
#[utoipa::path(delete, path = "/api/v1/signing-keys/{id}", tag = "signing keys", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = wire::SigningKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_signing_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::SigningKey>, ApiError> {
    caller.require(Scope::SigningKeysWrite)?;
    let change = caller.change();
    let changed = state
        .change_credential(move |state| async move {
            state.store.delete_signing_key(&change, &id).await
        })
        .await?;
    Ok(Json(convert::signing_key(&changed.record)))
}

fn workspace_secret(environment: Environment) -> Result<IssuedSecret, ApiError> {
    IssuedSecret::generate(WORKSPACE_SECRET_PREFIX, environment, &mut os_rng())
        .map_err(|_| ApiError::internal())
}

/// Make a workspace key and secret for a backend SDK. The secret is in this answer only;
/// Keyward keeps it sealed under its master key, to check signatures with.
#[utoipa::path(post, path = "/api/v1/workspace-keys", tag = "workspace keys", security(("root_key" = [])),
    request_body = CreateWorkspaceKeyRequest,
    responses((status = 201, body = WorkspaceKeyWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_workspace_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    OptionalJson(request): OptionalJson<CreateWorkspaceKeyRequest>,
) -> Result<(StatusCode, Json<WorkspaceKeyWithSecret>), ApiError> {
    caller.require(Scope::WorkspaceKeysWrite)?;
    let scopes = match &request.scopes {
        Some(names) => requested_scopes(names)?,
        None => ScopeSet::all(),
    };
    scheme_reference(request.rate_limit_scheme.as_deref())?;
    let (rate_limit_scheme, limit_meter) = inherited_limit(&caller, request.rate_limit_scheme)?;
    let change = caller.change();
    let secret = workspace_secret(caller.tenancy.environment)?;
    let key = WorkspaceKey {
        id: id::generate(IdKind::WorkspaceKey, change.now, &mut os_rng()),
        tenancy: caller.tenancy.clone(),
        name: name_or(request.name, "Workspace key")?,
        scopes,
        rate_limit_scheme,
        limit_meter,
        start: secret.start.clone(),
        created_at: change.now,
        updated_at: change.now,
    };
    let sealed = state.master_key.seal(secret.expose().as_bytes(), &key.id);
    let stored = key.clone();
    state
        .change_credential(move |state| async move {
            state
                .store
                .create_workspace_key(&change, &stored, &sealed)
                .await
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WorkspaceKeyWithSecret {
            key: convert::workspace_key(&key),
            secret: secret.expose().to_owned(),
        }),
    ))
}

/// List the environment's workspace keys, newest first; never their secrets.
#[utoipa::path(get, path = "/api/v1/workspace-keys", tag = "workspace keys", security(("root_key" = [])),
    params(PageParams),
    responses((status = 200, body = wire::Page<wire::WorkspaceKey>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_workspace_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<wire::Page<wire::WorkspaceKey>>, ApiError> {
    caller.require(Scope::WorkspaceKeysRead)?;
    let page = page_request(params.limit, params.cursor)?;
    let keys = state
        .store
        .list_workspace_keys(&caller.tenancy, &page)
        .await?;
    Ok(Json(convert::page(keys, convert::workspace_key)))
}

/// Give a workspace key a new secret; the previous one works `expire_previous_in_seconds`
/// more.
#[utoipa::path(post, path = "/api/v1/workspace-keys/{id}/rotate", tag = "workspace keys", security(("root_key" = [])),
    params(("id" = String, Path)), request_body = RotateKeyRequest,
    responses((status = 200, body = WorkspaceKeyWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn rotate_workspace_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<RotateKeyRequest>,
) -> Result<Json<WorkspaceKeyWithSecret>, ApiError> {
    caller.require(Scope::WorkspaceKeysWrite)?;
    let change = caller.change();
    let previous_expire_at = previous_expiry(request.expire_previous_in_seconds, change.now)?;
    // A limited caller would take the key's secret, and with it the key's own limit.
    if let Some(found) = state.store.find_workspace_key(&id).await? {
        if found.key.tenancy == caller.tenancy
            && !caller
                .limit
                .may_take_over(caller.scopes, &found.key.call_limit())
        {
            return Err(ApiError::forbidden(
                "insufficient_scope",
                "A rate-limited key can only rotate keys that share its limit",
            ));
        }
    }
    let secret = workspace_secret(caller.tenancy.environment)?;
    let sealed = state.master_key.seal(secret.expose().as_bytes(), &id);
    let start = secret.start.clone();
    let changed = state
        .change_credential(move |state| async move {
            state
                .store
                .rotate_workspace_key(&change, &id, &start, &sealed, previous_expire_at)
                .await
        })
        .await?;
    Ok(Json(WorkspaceKeyWithSecret {
        key: convert::workspace_key(&changed.record),
        secret: secret.expose().to_owned(),
    }))
}

/// Delete a workspace key; its signatures are refused once the call returns.
#[utoipa::path(delete, path = "/api/v1/workspace-keys/{id}", tag = "workspace keys", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = wire::WorkspaceKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_workspace_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::WorkspaceKey>, ApiError> {
    caller.require(Scope::WorkspaceKeysWrite)?;
    let change = caller.change();
    let changed = state
        .change_credential(move |state| async move {
            state.store.delete_workspace_key(&change, &id).await
        })
        .await?;
    Ok(Json(convert::workspace_key(&changed.record)))
}
