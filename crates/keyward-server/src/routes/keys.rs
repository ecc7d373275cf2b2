use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use keyward_core::id::{self, IdKind};
use keyward_core::model::{ApiKey, App, KeyStatus};
use keyward_core::scope::Scope;
use keyward_core::secret::IssuedSecret;
use keyward_core::usage::{BalanceChange, CreditAdjustment, Credits, Refill};
use keyward_core::validate::{self, MAX_EXTERNAL_ID_LEN, MAX_NAME_LEN};
use keyward_core::{KeyHash, Timestamp};
use keyward_proto::{
    self as wire, ApiKeyWithSecret, CreateKeyRequest, ErrorEnvelope, ImportKeysRequest,
    ImportKeysResponse, ImportRowError, ImportedKey, ListKeysParams, RotateKeyRequest,
    UpdateKeyRequest, MAX_IMPORT_BATCH,
};
use keyward_store::cluster::ClusterCache;
use keyward_store::{Changed, KeyFilter, KeyImport, KeyPatch};
use secrecy::ExposeSecret;

use crate::extract::{ApiJson, ApiQuery, Caller, OptionalJson};
use crate::{convert, os_rng, page_request, ApiError, AppState};

/// The longest grace period a rotation may give the previous secret.
const MAX_ROTATION_GRACE_SECONDS: u64 = 30 * 24 * 3600;

pub(super) fn validate_owner(owner: &str) -> Result<(), ApiError> {
    validate::text("owner_user_id", owner, MAX_EXTERNAL_ID_LEN).map_err(ApiError::from)
}

/// The organization a key of `app` belongs to: the one `requested`, or the app's; an app
/// with an organization takes no other.
pub(super) fn key_organization(
    app: &App,
    requested: Option<String>,
) -> Result<Option<String>, ApiError> {
    let organization_id = match (&app.organization_id, requested) {
        (Some(app_org), Some(key_org)) if *app_org != key_org => {
            return Err(ApiError::invalid(
                "organization_mismatch",
                "The app's keys all belong to the app's organization",
            ));
        }
        (app_org, key_org) => key_org.or_else(|| app_org.clone()),
    };
    if let Some(organization) = &organization_id {
        validate::text("organization_id", organization, MAX_EXTERNAL_ID_LEN)
            .map_err(ApiError::from)?;
    }
    Ok(organization_id)
}

/// Checks a key's permissions against what its app may grant.
pub(super) fn granted_permissions(
    app: &App,
    requested: &[String],
) -> Result<Vec<String>, ApiError> {
    let permissions = validate::permissions(requested).map_err(ApiError::from)?;
    // Named by its place in the request, not by its text, which may be a pasted secret.
    if let Some(missing) = requested
        .iter()
        .position(|name| !app.permissions.contains(name))
    {
        return Err(ApiError::invalid(
            "permission_not_in_app",
            format!(
                "`permissions[{missing}]` is not among the permissions of the app `{}`",
                app.slug
            ),
        ));
    }
    Ok(permissions)
}

fn future_expiry(expires_at: time::OffsetDateTime, now: Timestamp) -> Result<Timestamp, ApiError> {
    let expires_at = convert::timestamp(expires_at);
    if expires_at <= now {
        return Err(ApiError::invalid(
            "invalid_expires_at",
            "`expires_at` must be in the future",
        ));
    }
    Ok(expires_at)
}

fn issue_secret(app: &App, caller: &Caller) -> Result<IssuedSecret, ApiError> {
    IssuedSecret::generate(&app.key_prefix, caller.tenancy.environment, &mut os_rng()).map_err(
        |error| {
            tracing::error!(%error, app = %app.id, "stored key prefix is not valid");
            ApiError::internal()
        },
    )
}

/// What a caller asks of a new key, created or imported.
#[derive(Default)]
pub(super) struct KeyDraft {
    pub name: String,
    pub owner_user_id: Option<String>,
    pub organization_id: Option<String>,
    pub permissions: Option<Vec<String>>,
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    pub expires_at: Option<time::OffsetDateTime>,
    pub credits: Option<wire::Credits>,
    pub rate_limit_scheme: Option<String>,
    pub low_credits_threshold: Option<i64>,
}

fn refill(refill: wire::Refill) -> Result<Refill, ApiError> {
    validate::credits("refill.amount", refill.amount, 0).map_err(ApiError::from)?;
    Ok(Refill {
        period: convert::period(refill.interval),
        amount: refill.amount,
    })
}

/// A key's first credits: the balance stands until the next refill boundary.
fn initial_credits(credits: wire::Credits, now: Timestamp) -> Result<Credits, ApiError> {
    validate::credits("credits.remaining", credits.remaining, 0).map_err(ApiError::from)?;
    let adjustment = CreditAdjustment {
        balance: BalanceChange::Set(credits.remaining),
        refill: Some(credits.refill.map(refill).transpose()?),
    };
    adjustment
        .apply(None, now)
        .map_err(|_| ApiError::internal())
}

/// What `PATCH` asks of a key's credits; `None` removes them.
fn credit_adjustment(
    update: Option<wire::CreditsUpdate>,
) -> Result<Option<CreditAdjustment>, ApiError> {
    let Some(update) = update else {
        return Ok(None);
    };
    let balance = match (update.remaining, update.increment, update.decrement) {
        (None, None, None) => BalanceChange::Keep,
        (Some(remaining), None, None) => {
            validate::credits("credits.remaining", remaining, 0).map_err(ApiError::from)?;
            BalanceChange::Set(remaining)
        }
        (None, Some(amount), None) => {
            validate::credits("credits.increment", amount, 1).map_err(ApiError::from)?;
            BalanceChange::Increment(amount)
        }
        (None, None, Some(amount)) => {
            validate::credits("credits.decrement", amount, 1).map_err(ApiError::from)?;
            BalanceChange::Decrement(amount)
        }
        _ => {
            return Err(ApiError::invalid(
                "invalid_credits_update",
                "Give at most one of `remaining`, `increment` and `decrement`",
            ))
        }
    };
    if balance == BalanceChange::Keep && update.refill.is_none() {
        return Err(ApiError::invalid(
            "invalid_credits_update",
            "Give `remaining`, `increment`, `decrement` or `refill`",
        ));
    }
    let refill = match update.refill {
        Some(Some(wanted)) => Some(Some(refill(wanted)?)),
        Some(None) => Some(None),
        None => None,
    };
    Ok(Some(CreditAdjustment { balance, refill }))
}

/// Validates a draft against its app and makes the key.
fn new_key(
    app: &App,
    caller: &Caller,
    now: Timestamp,
    draft: KeyDraft,
    start: String,
) -> Result<ApiKey, ApiError> {
    validate::text("name", &draft.name, MAX_NAME_LEN).map_err(ApiError::from)?;
    if let Some(owner) = &draft.owner_user_id {
        validate_owner(owner)?;
    }
    let organization_id = key_organization(app, draft.organization_id)?;
    let permissions = granted_permissions(app, draft.permissions.as_deref().unwrap_or_default())?;
    let meta = draft.meta.unwrap_or_default();
    validate::meta(&meta).map_err(ApiError::from)?;
    let expires_at = draft
        .expires_at
        .map(|at| future_expiry(at, now))
        .transpose()?;
    let credits = draft
        .credits
        .map(|credits| initial_credits(credits, now))
        .transpose()?;
    super::apps::scheme_reference(draft.rate_limit_scheme.as_deref())?;
    if let Some(threshold) = draft.low_credits_threshold {
        validate_low_credits_threshold(threshold)?;
    }
    Ok(ApiKey {
        id: id::generate(IdKind::Key, now, &mut os_rng()),
        tenancy: caller.tenancy.clone(),
        app_id: app.id.clone(),
        app_slug: app.slug.clone(),
        name: draft.name,
        owner_user_id: draft.owner_user_id,
        organization_id,
        permissions,
        meta,
        start,
        expires_at,
        enabled: true,
        revoked_at: None,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        credits,
        rate_limit_scheme: draft.rate_limit_scheme,
        low_credits_threshold: draft.low_credits_threshold,
    })
}

pub(super) fn validate_low_credits_threshold(threshold: i64) -> Result<(), ApiError> {
    if threshold < 1 {
        return Err(ApiError::invalid(
            "invalid_low_credits_threshold",
            "`low_credits_threshold` must be at least 1",
        ));
    }
    Ok(())
}

/// Renders a changed key (whose secrets `AppState::change_credential` already dropped from
/// this node's cache).
fn answer(changed: &Changed<ApiKey>, now: Timestamp) -> Json<wire::ApiKey> {
    Json(convert::key(&changed.record, now))
}

/// Issue a key under an app. The response is the only time its secret is shown.
#[utoipa::path(post, path = "/api/v1/apps/{slug}/keys", tag = "keys", security(("root_key" = [])),
    params(("slug" = String, Path)), request_body = CreateKeyRequest,
    responses((status = 201, body = ApiKeyWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn create_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(slug): Path<String>,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<ApiKeyWithSecret>), ApiError> {
    caller.require(Scope::KeysWrite)?;
    let app = state.store.app_by_slug(&caller.tenancy, &slug).await?;
    let draft = KeyDraft {
        name: request.name,
        owner_user_id: request.owner_user_id,
        organization_id: request.organization_id,
        permissions: request.permissions,
        meta: request.meta,
        expires_at: request.expires_at,
        credits: request.credits,
        rate_limit_scheme: request.rate_limit_scheme,
        low_credits_threshold: request.low_credits_threshold,
    };
    let body = issue_key(&state, &caller, &app, draft, None).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// Makes and stores a key under `app`; the answer is the only time its secret is shown.
pub(super) async fn issue_key(
    state: &Arc<AppState>,
    caller: &Caller,
    app: &App,
    draft: KeyDraft,
    owner_quota: Option<u32>,
) -> Result<ApiKeyWithSecret, ApiError> {
    let change = caller.change();
    let secret = issue_secret(app, caller)?;
    let key = new_key(app, caller, change.now, draft, secret.start.clone())?;
    let (stored, hash) = (key.clone(), secret.hash);
    state
        .change_credential(move |state| async move {
            state
                .store
                .create_key(&change, &stored, hash, owner_quota)
                .await
        })
        .await?;
    Ok(ApiKeyWithSecret {
        key: convert::key(&key, key.created_at),
        secret: secret.secret.expose_secret().to_owned(),
    })
}

/// Import existing keys from another system: one batch of `keyward import`. Keys whose
/// secret is already known are skipped, so a batch may be sent again; invalid rows are
/// reported by index and never stop the others.
#[utoipa::path(post, path = "/api/v1/apps/{slug}/keys/import", tag = "keys", security(("root_key" = [])),
    params(("slug" = String, Path)), request_body = ImportKeysRequest,
    responses((status = 200, body = ImportKeysResponse), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn import_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(slug): Path<String>,
    ApiJson(request): ApiJson<ImportKeysRequest>,
) -> Result<Json<ImportKeysResponse>, ApiError> {
    caller.require(Scope::KeysWrite)?;
    if request.keys.is_empty() || request.keys.len() > MAX_IMPORT_BATCH {
        return Err(ApiError::invalid(
            "invalid_batch_size",
            format!("Send between 1 and {MAX_IMPORT_BATCH} keys per request"),
        ));
    }
    let app = state.store.app_by_slug(&caller.tenancy, &slug).await?;
    let change = caller.change();
    let mut invalid = Vec::new();
    let mut imports = Vec::with_capacity(request.keys.len());
    for (index, row) in request.keys.into_iter().enumerate() {
        match imported_key(&app, &caller, change.now, row) {
            Ok(import) => imports.push(import),
            Err(error) => invalid.push(ImportRowError {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                code: error.code().to_owned(),
                message: error.message().to_owned(),
            }),
        }
    }
    let imports = Arc::new(imports);
    let stored = Arc::clone(&imports);
    let inserted = state
        .change_credential(move |state| async move {
            state.store.import_keys(&change, &slug, &stored).await
        })
        .await?
        .record;
    if imports
        .iter()
        .zip(&inserted)
        .any(|(import, &new)| new && import.foreign_format)
    {
        ClusterCache::foreign_secrets(state.verification.cache.as_ref(), true);
    }
    let imported = inserted.iter().filter(|&&new| new).count() as u64;
    Ok(Json(ImportKeysResponse {
        imported,
        skipped: inserted.len() as u64 - imported,
        invalid,
    }))
}

fn imported_key(
    app: &App,
    caller: &Caller,
    now: Timestamp,
    row: ImportedKey,
) -> Result<KeyImport, ApiError> {
    let hash = KeyHash::from_hex(&row.hash)
        .ok_or_else(|| ApiError::invalid("invalid_hash", "`hash` must be 64 hexadecimal digits"))?;
    // `start` is shown in listings: it must not carry more of a secret than a native one.
    if row.start.len() > 40 || !row.start.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "invalid_start",
            "`start` must be at most 40 printable characters",
        ));
    }
    let key = new_key(
        app,
        caller,
        now,
        KeyDraft {
            name: row.name,
            owner_user_id: row.owner_user_id,
            organization_id: row.organization_id,
            permissions: row.permissions,
            meta: row.meta,
            expires_at: row.expires_at,
            ..KeyDraft::default()
        },
        row.start,
    )?;
    Ok(KeyImport {
        key,
        hash,
        foreign_format: !row.keyward_format,
    })
}

/// List an app's keys (metadata only, never secrets), newest first.
#[utoipa::path(get, path = "/api/v1/apps/{slug}/keys", tag = "keys", security(("root_key" = [])),
    params(("slug" = String, Path), ListKeysParams),
    responses((status = 200, body = wire::Page<wire::ApiKey>), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn list_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(slug): Path<String>,
    ApiQuery(params): ApiQuery<ListKeysParams>,
) -> Result<Json<wire::Page<wire::ApiKey>>, ApiError> {
    caller.require(Scope::KeysRead)?;
    let page = page_request(params.limit, params.cursor)?;
    let status = params
        .status
        .as_deref()
        .map(|status| {
            KeyStatus::parse(status).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_status",
                    "`status` is one of active, disabled, expired, revoked",
                )
            })
        })
        .transpose()?;
    let app = state.store.app_by_slug(&caller.tenancy, &slug).await?;
    let filter = KeyFilter {
        owner_user_id: params.owner_user_id,
        organization_id: params.organization_id,
        status,
        search: search_filter(params.search)?,
    };
    let now = caller.now;
    let keys = state
        .store
        .list_keys(&caller.tenancy, &app.id, &filter, &page, now)
        .await?;
    Ok(Json(convert::page(keys, |key| convert::key(key, now))))
}

/// Get a key's metadata.
#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = wire::ApiKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn get_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::ApiKey>, ApiError> {
    caller.require(Scope::KeysRead)?;
    let key = state.store.key(&caller.tenancy, &id).await?;
    Ok(Json(convert::key(&key, caller.now)))
}

/// Update a key's metadata; takes effect on verification at once.
#[utoipa::path(patch, path = "/api/v1/keys/{id}", tag = "keys", security(("root_key" = [])),
    params(("id" = String, Path)), request_body = UpdateKeyRequest,
    responses((status = 200, body = wire::ApiKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn update_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateKeyRequest>,
) -> Result<Json<wire::ApiKey>, ApiError> {
    caller.require(Scope::KeysWrite)?;
    let change = caller.change();
    if let Some(name) = &request.name {
        validate::text("name", name, MAX_NAME_LEN).map_err(ApiError::from)?;
    }
    if let Some(Some(owner)) = &request.owner_user_id {
        validate_owner(owner)?;
    }
    if let Some(meta) = &request.meta {
        validate::meta(meta).map_err(ApiError::from)?;
    }
    if let Some(Some(scheme)) = &request.rate_limit_scheme {
        super::apps::scheme_reference(Some(scheme))?;
    }
    if let Some(Some(threshold)) = request.low_credits_threshold {
        validate_low_credits_threshold(threshold)?;
    }
    let adjustment = request.credits.map(credit_adjustment).transpose()?;
    let stored = match (&request.permissions, &adjustment) {
        (None, None) => None,
        _ => Some(state.store.key(&caller.tenancy, &id).await?),
    };
    let permissions = match (&request.permissions, &stored) {
        (Some(requested), Some(key)) => {
            let app = state
                .store
                .app_by_slug(&caller.tenancy, &key.app_slug)
                .await?;
            Some(granted_permissions(&app, requested)?)
        }
        _ => None,
    };
    // The engine holds the live balance: it applies the change, and storage records what
    // it settled on.
    let credits = match (adjustment, &stored) {
        (Some(adjustment), Some(key)) => Some(
            state
                .verification
                .limiter
                .adjust_credits(&key.id, key.credits, adjustment, change.now)
                .await?,
        ),
        _ => None,
    };
    let expires_at = match request.expires_at {
        Some(Some(at)) => Some(Some(future_expiry(at, change.now)?)),
        Some(None) => Some(None),
        None => None,
    };
    let patch = KeyPatch {
        name: request.name,
        owner_user_id: request.owner_user_id,
        permissions,
        meta: request.meta,
        expires_at,
        enabled: request.enabled,
        credits,
        rate_limit_scheme: request.rate_limit_scheme,
        low_credits_threshold: request.low_credits_threshold,
    };
    let now = change.now;
    let balance_changed = patch.credits.as_ref().is_some_and(Option::is_some);
    let changed = state
        .change_credential(move |state| async move {
            state.store.update_key(&change, &id, &patch).await
        })
        .await?;
    if balance_changed {
        // A write-back between the engine's change and this commit may have written an
        // older balance than the one just stored: the next one writes the engine's again.
        state
            .verification
            .limiter
            .balance_written_elsewhere(&changed.record.id);
    }
    Ok(answer(&changed, now))
}

/// Revoke a key at once; every later verification gets `KEY_REVOKED`.
#[utoipa::path(post, path = "/api/v1/keys/{id}/revoke", tag = "keys", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = wire::ApiKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn revoke_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::ApiKey>, ApiError> {
    caller.require(Scope::KeysWrite)?;
    revoke(&state, &caller, id).await
}

pub(super) async fn revoke(
    state: &Arc<AppState>,
    caller: &Caller,
    id: String,
) -> Result<Json<wire::ApiKey>, ApiError> {
    let change = caller.change();
    let now = change.now;
    let changed = state
        .change_credential(move |state| async move { state.store.revoke_key(&change, &id).await })
        .await?;
    Ok(answer(&changed, now))
}

/// Give a key a new secret; the previous one works for `expire_previous_in_seconds` more.
#[utoipa::path(post, path = "/api/v1/keys/{id}/rotate", tag = "keys", security(("root_key" = [])),
    params(("id" = String, Path)), request_body = RotateKeyRequest,
    responses((status = 200, body = ApiKeyWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn rotate_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<RotateKeyRequest>,
) -> Result<Json<ApiKeyWithSecret>, ApiError> {
    caller.require(Scope::KeysWrite)?;
    rotate(&state, &caller, id, request.expire_previous_in_seconds)
        .await
        .map(Json)
}

/// When a rotated credential's previous secret stops working: after `grace_seconds`, or
/// when the call returns.
pub(crate) fn previous_expiry(
    grace_seconds: Option<u64>,
    now: Timestamp,
) -> Result<Option<Timestamp>, ApiError> {
    let grace = grace_seconds.unwrap_or(0);
    if grace > MAX_ROTATION_GRACE_SECONDS {
        return Err(ApiError::invalid(
            "invalid_grace_period",
            format!("`expire_previous_in_seconds` is at most {MAX_ROTATION_GRACE_SECONDS}"),
        ));
    }
    Ok((grace > 0).then(|| now.plus_seconds(grace as i64)))
}

pub(super) async fn rotate(
    state: &Arc<AppState>,
    caller: &Caller,
    id: String,
    grace_seconds: Option<u64>,
) -> Result<ApiKeyWithSecret, ApiError> {
    let change = caller.change();
    let previous_expire_at = previous_expiry(grace_seconds, change.now)?;
    let key = state.store.key(&caller.tenancy, &id).await?;
    let app = state
        .store
        .app_by_slug(&caller.tenancy, &key.app_slug)
        .await?;
    let secret = issue_secret(&app, caller)?;
    let now = change.now;
    let (new_hash, new_start) = (secret.hash, secret.start.clone());
    let changed = state
        .change_credential(move |state| async move {
            state
                .store
                .rotate_key(&change, &id, (new_hash, &new_start), previous_expire_at)
                .await
        })
        .await?;
    Ok(ApiKeyWithSecret {
        key: convert::key(&changed.record, now),
        secret: secret.secret.expose_secret().to_owned(),
    })
}

/// Delete a key. It is revoked first, so no node accepts it afterwards.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", security(("root_key" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = wire::ApiKey), (status = "4XX", body = ErrorEnvelope)))]
pub(crate) async fn delete_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<wire::ApiKey>, ApiError> {
    caller.require(Scope::KeysWrite)?;
    let change = caller.change();
    let now = change.now;
    let changed = state
        .change_credential(move |state| async move { state.store.delete_key(&change, &id).await })
        .await?;
    Ok(answer(&changed, now))
}

/// The longest `search` a key list accepts.
const MAX_SEARCH_CHARS: usize = 200;

fn search_filter(search: Option<String>) -> Result<Option<String>, ApiError> {
    match search {
        Some(text) if text.chars().count() > MAX_SEARCH_CHARS => Err(ApiError::invalid(
            "invalid_search",
            format!("`search` is at most {MAX_SEARCH_CHARS} characters"),
        )),
        Some(text) if text.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}
