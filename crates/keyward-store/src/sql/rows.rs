//! Row mappers and the column lists they read: one place that knows how a row becomes a record.

use keyward_core::leak::LeakedKeyAction;
use keyward_core::model::{
    ApiKey, App, Environment, EnvironmentSettings, RootKey, SecretRecord, Tenancy,
};
use keyward_core::scope::ScopeSet;
use keyward_core::usage::{Credits, Refill};
use keyward_core::{KeyHash, Timestamp};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{StoreError, StoreResult};

pub(super) const KEY_SELECT: &str =
    "SELECT k.id, k.workspace_id, k.environment, k.app_id, a.slug AS app_slug, \
     k.name, k.owner_user_id, k.organization_id, k.permissions, k.meta, k.start, k.expires_at, \
     k.enabled, k.revoked_at, k.created_at, k.updated_at, k.last_used_at, \
     k.rate_limit_scheme, k.credits_remaining, k.credits_refill_period, \
     k.credits_refill_amount, k.credits_refilled_at, k.low_credits_threshold \
     FROM api_keys k JOIN apps a ON a.id = k.app_id";

/// A key with the secret it was found by, and its app's scheme.
pub(super) const KEY_BY_HASH: &str =
    "SELECT k.id, k.workspace_id, k.environment, k.app_id, a.slug AS app_slug, \
     k.name, k.owner_user_id, k.organization_id, k.permissions, k.meta, k.start, k.expires_at, \
     k.enabled, k.revoked_at, k.created_at, k.updated_at, k.last_used_at, \
     k.rate_limit_scheme, k.credits_remaining, k.credits_refill_period, \
     k.credits_refill_amount, k.credits_refilled_at, k.low_credits_threshold, \
     a.rate_limit_scheme AS app_rate_limit_scheme, \
     s.hash, s.expires_at AS secret_expires_at \
     FROM secrets s JOIN api_keys k ON k.id = s.credential_id JOIN apps a ON a.id = k.app_id \
     WHERE s.hash = $1";

pub(super) const APP_SELECT: &str =
    "SELECT id, workspace_id, environment, name, slug, permissions, \
     rate_limit_scheme, organization_id, key_prefix, created_at, updated_at FROM apps";

pub(super) const ROOT_KEY_SELECT: &str =
    "SELECT r.id, r.workspace_id, r.environment, r.name, r.scopes, \
     r.start, r.created_at, r.revoked_at, r.rate_limit_scheme, r.limit_meter, r.expires_at \
     FROM root_keys r";

/// A root key with the secret it was found by.
pub(super) const ROOT_KEY_BY_HASH: &str =
    "SELECT r.id, r.workspace_id, r.environment, r.name, r.scopes, \
     r.start, r.created_at, r.revoked_at, r.rate_limit_scheme, r.limit_meter, r.expires_at, \
     s.hash, \
     s.expires_at AS secret_expires_at \
     FROM secrets s JOIN root_keys r ON r.id = s.credential_id WHERE s.hash = $1";

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unreadable {what}"))
}

pub(super) fn timestamp(row: &AnyRow, column: &str) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_millis(row.try_get::<i64, _>(column)?))
}

pub(super) fn optional_timestamp(row: &AnyRow, column: &str) -> StoreResult<Option<Timestamp>> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .map(Timestamp::from_millis))
}

/// Booleans are native on PostgreSQL and integers on SQLite, whose booleans `Any` cannot read.
pub(super) fn flag(row: &AnyRow, column: &str) -> StoreResult<bool> {
    match row.try_get::<bool, _>(column) {
        Ok(value) => Ok(value),
        Err(_) => Ok(row.try_get::<i64, _>(column)? != 0),
    }
}

pub(super) fn tenancy_from_row(row: &AnyRow) -> StoreResult<Tenancy> {
    let environment: String = row.try_get("environment")?;
    Ok(Tenancy {
        workspace_id: row.try_get("workspace_id")?,
        environment: Environment::parse(&environment).ok_or_else(|| corrupt("environment"))?,
    })
}

pub(super) fn json_list(row: &AnyRow, column: &str) -> StoreResult<Vec<String>> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| corrupt(column))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

pub(super) fn app_from_row(row: &AnyRow) -> StoreResult<App> {
    Ok(App {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        name: row.try_get("name")?,
        slug: row.try_get("slug")?,
        permissions: json_list(row, "permissions")?,
        rate_limit_scheme: row.try_get("rate_limit_scheme")?,
        organization_id: row.try_get("organization_id")?,
        key_prefix: row.try_get("key_prefix")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

pub(super) fn key_from_row(row: &AnyRow) -> StoreResult<ApiKey> {
    let meta: String = row.try_get("meta")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        app_id: row.try_get("app_id")?,
        app_slug: row.try_get("app_slug")?,
        name: row.try_get("name")?,
        owner_user_id: row.try_get("owner_user_id")?,
        organization_id: row.try_get("organization_id")?,
        permissions: json_list(row, "permissions")?,
        meta: serde_json::from_str(&meta).map_err(|_| corrupt("meta"))?,
        start: row.try_get("start")?,
        expires_at: optional_timestamp(row, "expires_at")?,
        enabled: flag(row, "enabled")?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
        last_used_at: optional_timestamp(row, "last_used_at")?,
        credits: credits_from_row(row)?,
        rate_limit_scheme: row.try_get("rate_limit_scheme")?,
        low_credits_threshold: row.try_get("low_credits_threshold")?,
    })
}

pub(super) fn credits_from_row(row: &AnyRow) -> StoreResult<Option<Credits>> {
    let Some(remaining) = row.try_get::<Option<i64>, _>("credits_remaining")? else {
        return Ok(None);
    };
    let period: Option<String> = row.try_get("credits_refill_period")?;
    let amount: Option<i64> = row.try_get("credits_refill_amount")?;
    let refill = match (period, amount) {
        (Some(period), Some(amount)) => Some(Refill {
            period: super::usage::period(&period)?,
            amount,
        }),
        _ => None,
    };
    Ok(Some(Credits {
        remaining,
        refill,
        refilled_at: optional_timestamp(row, "credits_refilled_at")?
            .unwrap_or(Timestamp::from_millis(0)),
    }))
}

pub(super) fn root_key_from_row(row: &AnyRow) -> StoreResult<RootKey> {
    let names = json_list(row, "scopes")?;
    let scopes =
        ScopeSet::parse(names.iter().map(String::as_str)).map_err(|_| corrupt("scopes"))?;
    Ok(RootKey {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        name: row.try_get("name")?,
        scopes,
        start: row.try_get("start")?,
        created_at: timestamp(row, "created_at")?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
        rate_limit_scheme: row.try_get("rate_limit_scheme")?,
        limit_meter: row.try_get("limit_meter")?,
        expires_at: optional_timestamp(row, "expires_at")?,
    })
}

pub(super) fn secret_from_row(row: &AnyRow) -> StoreResult<SecretRecord> {
    let bytes: Vec<u8> = row.try_get("hash")?;
    Ok(SecretRecord {
        hash: KeyHash::from_slice(&bytes).ok_or_else(|| corrupt("hash"))?,
        expires_at: optional_timestamp(row, "secret_expires_at")?,
    })
}

/// An environment's settings, for [`environment_from_row`].
pub(super) const ENVIRONMENT_SELECT: &str = "SELECT workspace_id, environment, \
     enhanced_security, leaked_key_action, updated_at FROM environments";

pub(super) fn environment_from_row(row: &AnyRow) -> StoreResult<EnvironmentSettings> {
    let tenancy = tenancy_from_row(row)?;
    let leaked_key_action: String = row.try_get("leaked_key_action")?;
    Ok(EnvironmentSettings {
        workspace_id: tenancy.workspace_id,
        environment: tenancy.environment,
        enhanced_security: flag(row, "enhanced_security")?,
        leaked_key_action: LeakedKeyAction::parse(&leaked_key_action)
            .ok_or_else(|| corrupt("leaked_key_action"))?,
        updated_at: timestamp(row, "updated_at")?,
    })
}
