//! API keys: issue, import, find, list, change, rotate, revoke, delete, and `last_used_at`.

use async_trait::async_trait;
use keyward_core::event::{EventType, NewEvent};
use keyward_core::model::{ApiKey, KeyStatus, Tenancy};
use keyward_core::usage::Credits;
use keyward_core::{KeyHash, Timestamp};
use sqlx::Row;

use super::query::{
    escape_like, FilteredQuery, Keyset, Param, BATCH_ROWS_PER_STATEMENT, IMPORT_ROWS_PER_STATEMENT,
};
use super::rows::{flag, key_from_row, secret_from_row, to_json, KEY_BY_HASH, KEY_SELECT};
use super::secrets::{insert_secret, secret_hashes, supersede_secrets};
use super::{app_in_tx, audit, Backend, Lock, SqlStore, Transaction};
use crate::cluster::Stale;
use crate::{
    Change, Changed, Conflict, FoundKey, KeyFilter, KeyImport, KeyPatch, KeyStore, LookupScan,
    Page, PageRequest, StoreError, StoreResult,
};

impl SqlStore {
    /// At most `quota` active keys of `key`'s owner in its app, counted where concurrent
    /// creations cannot both pass: SQLite's one writer, or an advisory lock on the owner.
    pub(super) async fn require_below_quota(
        &self,
        tx: &mut Transaction<'_>,
        key: &ApiKey,
        quota: u32,
        now: Timestamp,
    ) -> StoreResult<()> {
        let owner = key.owner_user_id.as_deref().unwrap_or_default();
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("key-quota:{}:{owner}", key.app_id))
                .execute(&mut **tx)
                .await?;
        }
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE app_id = $1 AND owner_user_id = $2 \
             AND revoked_at IS NULL AND enabled = $3 \
             AND (expires_at IS NULL OR expires_at > $4)",
        )
        .bind(&key.app_id)
        .bind(owner)
        .bind(true)
        .bind(now.as_millis())
        .fetch_one(&mut **tx)
        .await?;
        if active >= i64::from(quota) {
            return Err(StoreError::Conflict(Conflict::MaxKeysReached(quota)));
        }
        Ok(())
    }

    /// Records an event about a key in the change's own transaction, so that it exists if and
    /// only if the change does.
    pub(super) async fn record_key_event(
        &self,
        tx: &mut Transaction<'_>,
        change: &Change,
        kind: EventType,
        key: &ApiKey,
    ) -> StoreResult<()> {
        super::events::record(
            tx,
            self.backend,
            &[NewEvent::about(&change.tenancy, kind, key)],
            change.now,
        )
        .await
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn create_key(
        &self,
        change: &Change,
        key: &ApiKey,
        hash: KeyHash,
        owner_quota: Option<u32>,
    ) -> StoreResult<Changed<()>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        if let Some(quota) = owner_quota {
            self.require_below_quota(&mut tx, key, quota, change.now)
                .await?;
        }
        // The caller read the app before this transaction; it must still exist, and stay so
        // until the key is in (an app's deletion revokes the keys it can see).
        let app_exists = sqlx::query(&format!(
            "SELECT id FROM apps WHERE id = $1 AND deleted_at IS NULL{}",
            self.backend.lock("apps", Lock::Shared)
        ))
        .bind(&key.app_id)
        .fetch_optional(&mut *tx)
        .await?;
        if app_exists.is_none() {
            return Err(StoreError::NotFound("app"));
        }
        super::usage::require_scheme(
            &mut tx,
            self.backend,
            &key.tenancy,
            key.rate_limit_scheme.as_deref(),
        )
        .await?;
        let credits = CreditColumns::of(key.credits.as_ref());
        sqlx::query(
            "INSERT INTO api_keys (id, workspace_id, environment, app_id, name, owner_user_id, \
             organization_id, permissions, meta, start, expires_at, enabled, revoked_at, \
             created_at, updated_at, last_used_at, rate_limit_scheme, credits_remaining, \
             credits_refill_period, credits_refill_amount, credits_refilled_at, \
             low_credits_threshold) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22)",
        )
        .bind(&key.id)
        .bind(&key.tenancy.workspace_id)
        .bind(key.tenancy.environment.as_str())
        .bind(&key.app_id)
        .bind(&key.name)
        .bind(&key.owner_user_id)
        .bind(&key.organization_id)
        .bind(to_json(&key.permissions))
        .bind(to_json(&key.meta))
        .bind(&key.start)
        .bind(key.expires_at.map(Timestamp::as_millis))
        .bind(key.enabled)
        .bind(key.revoked_at.map(Timestamp::as_millis))
        .bind(key.created_at.as_millis())
        .bind(key.updated_at.as_millis())
        .bind(key.last_used_at.map(Timestamp::as_millis))
        .bind(&key.rate_limit_scheme)
        .bind(credits.remaining)
        .bind(credits.refill_period)
        .bind(credits.refill_amount)
        .bind(credits.refilled_at)
        .bind(key.low_credits_threshold)
        .execute(&mut *tx)
        .await?;
        insert_secret(&mut tx, hash, &key.id, None).await?;
        audit(
            &mut tx,
            change,
            "key.create",
            &key.id,
            serde_json::json!({ "app": key.app_slug, "name": key.name }),
        )
        .await?;
        super::events::record(
            &mut tx,
            self.backend,
            &[NewEvent::about(&change.tenancy, EventType::KeyCreated, key)],
            change.now,
        )
        .await?;
        // Every node's filter of known secrets must hear of it before the call returns.
        self.finish_change(tx, (), Stale::Secrets(vec![hash]), change.now)
            .await
    }

    async fn import_keys(
        &self,
        change: &Change,
        app_slug: &str,
        keys: &[KeyImport],
    ) -> StoreResult<Changed<Vec<bool>>> {
        let mut inserted = vec![false; keys.len()];
        if keys.is_empty() {
            return Ok(Changed::nothing(inserted));
        }
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        // Share-locked: the app cannot be deleted or changed while its keys arrive, and
        // several batches can arrive at once.
        let app = app_in_tx(
            &mut tx,
            self.backend,
            Lock::Shared,
            &change.tenancy,
            app_slug,
        )
        .await?;
        if keys.iter().any(|import| import.key.app_id != app.id) {
            return Err(StoreError::Conflict(Conflict::AppChanged));
        }
        // Secrets first: the unique hash decides which keys are new. Statements stay at a
        // few hundred parameters: SQLite binds them in time quadratic in their number.
        let mut new_ids = std::collections::HashSet::new();
        for chunk in keys.chunks(IMPORT_ROWS_PER_STATEMENT) {
            let mut secrets =
                FilteredQuery::new("INSERT INTO secrets (hash, credential_id, expires_at) VALUES ");
            secrets.push_rows(chunk.iter().map(|import| {
                [
                    Param::Bytes(import.hash.as_bytes().to_vec()),
                    Param::Text(import.key.id.clone()),
                    Param::OptionalInt(None),
                ]
            }));
            secrets.push(" ON CONFLICT (hash) DO NOTHING RETURNING credential_id");
            for row in secrets.fetch_all(&mut *tx).await? {
                new_ids.insert(row.try_get::<String, _>("credential_id")?);
            }
        }
        for (index, import) in keys.iter().enumerate() {
            inserted[index] = new_ids.contains(&import.key.id);
        }
        let fresh: Vec<&KeyImport> = keys
            .iter()
            .zip(&inserted)
            .filter_map(|(import, &new)| new.then_some(import))
            .collect();
        for chunk in fresh.chunks(IMPORT_ROWS_PER_STATEMENT) {
            let mut rows = FilteredQuery::new(
                "INSERT INTO api_keys (id, workspace_id, environment, app_id, name, \
                 owner_user_id, organization_id, permissions, meta, start, expires_at, enabled, \
                 revoked_at, created_at, updated_at, last_used_at) VALUES ",
            );
            rows.push_rows(chunk.iter().map(|import| {
                let key = &import.key;
                [
                    Param::Text(key.id.clone()),
                    Param::Text(key.tenancy.workspace_id.clone()),
                    Param::Text(key.tenancy.environment.as_str().to_owned()),
                    Param::Text(key.app_id.clone()),
                    Param::Text(key.name.clone()),
                    Param::OptionalText(key.owner_user_id.clone()),
                    Param::OptionalText(key.organization_id.clone()),
                    Param::Text(to_json(&key.permissions)),
                    Param::Text(to_json(&key.meta)),
                    Param::Text(key.start.clone()),
                    Param::OptionalInt(key.expires_at.map(Timestamp::as_millis)),
                    Param::Bool(key.enabled),
                    Param::OptionalInt(key.revoked_at.map(Timestamp::as_millis)),
                    Param::Int(key.created_at.as_millis()),
                    Param::Int(key.updated_at.as_millis()),
                    Param::OptionalInt(key.last_used_at.map(Timestamp::as_millis)),
                ]
            }));
            rows.fetch_all(&mut *tx).await?;
        }
        if fresh.iter().any(|import| import.foreign_format) {
            sqlx::query("UPDATE installation SET foreign_secrets = $1 WHERE singleton = 1")
                .bind(true)
                .execute(&mut *tx)
                .await?;
        }
        audit(
            &mut tx,
            change,
            "key.import",
            &app.id,
            serde_json::json!({
                "app": app.slug,
                "imported": fresh.len(),
                "skipped": keys.len() - fresh.len(),
            }),
        )
        .await?;
        let new_hashes = fresh.iter().map(|import| import.hash).collect();
        self.finish_change(tx, inserted, Stale::Secrets(new_hashes), change.now)
            .await
    }

    async fn foreign_secrets_present(&self) -> StoreResult<bool> {
        let row = sqlx::query("SELECT foreign_secrets FROM installation WHERE singleton = 1")
            .fetch_optional(&self.reader)
            .await?;
        row.map_or(Ok(false), |row| flag(&row, "foreign_secrets"))
    }

    async fn count_lookup_hashes(&self) -> StoreResult<u64> {
        super::secrets::count_lookup_hashes(&self.reader).await
    }

    async fn scan_lookup_hashes(
        &self,
        from: &LookupScan,
        limit: u32,
    ) -> StoreResult<(Vec<KeyHash>, Option<LookupScan>)> {
        super::secrets::scan_lookup_hashes(&self.reader, from, limit).await
    }

    async fn purge_ended_secrets(&self, now: Timestamp) -> StoreResult<u64> {
        let hashes = sqlx::query("DELETE FROM secrets WHERE expires_at <= $1")
            .bind(now.as_millis())
            .execute(&self.writer)
            .await?
            .rows_affected();
        let sealed = sqlx::query(
            "UPDATE workspace_keys SET previous_sealed_secret = NULL, previous_expires_at = NULL \
             WHERE previous_expires_at <= $1",
        )
        .bind(now.as_millis())
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(hashes + sealed)
    }

    async fn key(&self, tenancy: &Tenancy, id: &str) -> StoreResult<ApiKey> {
        let row = sqlx::query(&format!(
            "{KEY_SELECT} WHERE k.id = $1 AND k.workspace_id = $2 AND k.environment = $3"
        ))
        .bind(id)
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("key"))?;
        key_from_row(&row)
    }

    async fn find_key(&self, hash: KeyHash) -> StoreResult<Option<FoundKey>> {
        let row = sqlx::query(KEY_BY_HASH)
            .bind(hash.as_bytes().to_vec())
            .fetch_optional(&self.reader)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let key = key_from_row(&row)?;
        let app_scheme: Option<String> = row.try_get("app_rate_limit_scheme")?;
        let policy = super::usage::policy_of(&self.reader, &key, app_scheme.as_deref()).await?;
        Ok(Some(FoundKey {
            key,
            secret: secret_from_row(&row)?,
            policy,
        }))
    }

    async fn list_keys(
        &self,
        tenancy: &Tenancy,
        app_id: &str,
        filter: &KeyFilter,
        page: &PageRequest,
        now: Timestamp,
    ) -> StoreResult<Page<ApiKey>> {
        let mut query = FilteredQuery::new(&format!("{KEY_SELECT} WHERE "));
        query.in_environment("k", tenancy);
        query
            .push(" AND k.app_id = ")
            .bind(Param::Text(app_id.to_owned()));
        if let Some(owner) = &filter.owner_user_id {
            query
                .push(" AND k.owner_user_id = ")
                .bind(Param::Text(owner.clone()));
        }
        if let Some(organization) = &filter.organization_id {
            query
                .push(" AND k.organization_id = ")
                .bind(Param::Text(organization.clone()));
        }
        if let Some(search) = &filter.search {
            let pattern = escape_like(&search.to_ascii_lowercase());
            query
                .push(" AND (LOWER(k.name) LIKE ")
                .bind(Param::Text(format!("%{pattern}%")));
            query
                .push(" ESCAPE '\\' OR k.start LIKE ")
                .bind(Param::Text(format!("{}%", escape_like(search))));
            query
                .push(" ESCAPE '\\' OR k.id = ")
                .bind(Param::Text(search.clone()));
            query.push(")");
        }
        // The same precedence as `ApiKey::status`: revoked, disabled, expired, active.
        match filter.status {
            None => {}
            Some(KeyStatus::Revoked) => {
                query.push(" AND k.revoked_at IS NOT NULL");
            }
            Some(KeyStatus::Disabled) => {
                query
                    .push(" AND k.revoked_at IS NULL AND k.enabled = ")
                    .bind(Param::Bool(false));
            }
            Some(KeyStatus::Expired) => {
                query
                    .push(" AND k.revoked_at IS NULL AND k.enabled = ")
                    .bind(Param::Bool(true));
                query
                    .push(" AND k.expires_at <= ")
                    .bind(Param::Int(now.as_millis()));
            }
            Some(KeyStatus::Active) => {
                query
                    .push(" AND k.revoked_at IS NULL AND k.enabled = ")
                    .bind(Param::Bool(true));
                query
                    .push(" AND (k.expires_at IS NULL OR k.expires_at > ")
                    .bind(Param::Int(now.as_millis()));
                query.push(")");
            }
        }
        query
            .fetch_page(
                &self.reader,
                Keyset::NewestFirst("k.id"),
                page,
                key_from_row,
                |key| &key.id,
            )
            .await
    }

    async fn update_key(
        &self,
        change: &Change,
        id: &str,
        patch: &KeyPatch,
    ) -> StoreResult<Changed<ApiKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut key = key_in_tx(&mut tx, self.backend, &change.tenancy, id).await?;
        if let Some(Some(scheme)) = &patch.rate_limit_scheme {
            super::usage::require_scheme(&mut tx, self.backend, &change.tenancy, Some(scheme))
                .await?;
        }
        patch.apply(&mut key);
        key.updated_at = change.now;
        write_key(&mut tx, &key).await?;
        audit(
            &mut tx,
            change,
            "key.update",
            id,
            serde_json::json!({
                "fields": patch_fields(patch),
                "enabled": patch.enabled,
            }),
        )
        .await?;
        self.record_key_event(&mut tx, change, EventType::KeyUpdated, &key)
            .await?;
        let stale = secret_hashes(&mut tx, id).await?;
        self.finish_change(tx, key, stale, change.now).await
    }

    async fn revoke_key(&self, change: &Change, id: &str) -> StoreResult<Changed<ApiKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut key = key_in_tx(&mut tx, self.backend, &change.tenancy, id).await?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(change.now);
            key.updated_at = change.now;
            write_key(&mut tx, &key).await?;
            audit(&mut tx, change, "key.revoke", id, serde_json::json!({})).await?;
            self.record_key_event(&mut tx, change, EventType::KeyRevoked, &key)
                .await?;
        }
        let stale = secret_hashes(&mut tx, id).await?;
        self.finish_change(tx, key, stale, change.now).await
    }

    async fn rotate_key(
        &self,
        change: &Change,
        id: &str,
        new_secret: (KeyHash, &str),
        previous_expire_at: Option<Timestamp>,
    ) -> StoreResult<Changed<ApiKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut key = key_in_tx(&mut tx, self.backend, &change.tenancy, id).await?;
        if key.revoked_at.is_some() {
            return Err(StoreError::Conflict(Conflict::KeyRevoked));
        }
        let mut affected = supersede_secrets(&mut tx, id, previous_expire_at, change.now).await?;
        insert_secret(&mut tx, new_secret.0, id, None).await?;
        new_secret.1.clone_into(&mut key.start);
        key.updated_at = change.now;
        write_key(&mut tx, &key).await?;
        audit(
            &mut tx,
            change,
            "key.rotate",
            id,
            serde_json::json!({
                "previous_expire_at": previous_expire_at.map(Timestamp::as_millis),
            }),
        )
        .await?;
        self.record_key_event(&mut tx, change, EventType::KeyRotated, &key)
            .await?;
        affected.push(new_secret.0);
        self.finish_change(tx, key, Stale::Secrets(affected), change.now)
            .await
    }

    async fn delete_key(&self, change: &Change, id: &str) -> StoreResult<Changed<ApiKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut key = key_in_tx(&mut tx, self.backend, &change.tenancy, id).await?;
        let stale = secret_hashes(&mut tx, id).await?;
        sqlx::query("DELETE FROM secrets WHERE credential_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            change,
            "key.delete",
            id,
            serde_json::json!({ "app": key.app_slug, "name": key.name }),
        )
        .await?;
        key.revoked_at.get_or_insert(change.now);
        self.record_key_event(&mut tx, change, EventType::KeyDeleted, &key)
            .await?;
        self.finish_change(tx, key, stale, change.now).await
    }

    async fn record_last_used(&self, uses: &[(String, Timestamp)]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        // One statement per chunk, never a transaction across round trips: a node that
        // stalls mid-batch must not hold key rows that other nodes' revocations wait for.
        // Rows are locked in id order, as every writer of many keys locks them, so that
        // batches and deletions never deadlock.
        for chunk in uses.chunks(BATCH_ROWS_PER_STATEMENT) {
            let mut update = FilteredQuery::new("WITH used (id, at) AS (VALUES ");
            update.push_rows(
                chunk
                    .iter()
                    .map(|(id, at)| [Param::Text(id.clone()), Param::Int(at.as_millis())]),
            );
            update.push(&format!(
                "), locked AS MATERIALIZED (SELECT k.id, used.at FROM api_keys k \
                 JOIN used ON used.id = k.id ORDER BY k.id{}) \
                 UPDATE api_keys SET last_used_at = locked.at FROM locked \
                 WHERE api_keys.id = locked.id \
                 AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < locked.at)",
                self.backend.lock_rows("k")
            ));
            update.fetch_all(&self.writer).await?;
        }
        Ok(())
    }
}

/// Reads a key inside a write transaction, locked against concurrent writers.
pub(super) async fn key_in_tx(
    tx: &mut Transaction<'_>,
    backend: Backend,
    tenancy: &Tenancy,
    id: &str,
) -> StoreResult<ApiKey> {
    let row = sqlx::query(&format!(
        "{KEY_SELECT} WHERE k.id = $1 AND k.workspace_id = $2 AND k.environment = $3{}",
        backend.lock_rows("k")
    ))
    .bind(id)
    .bind(&tenancy.workspace_id)
    .bind(tenancy.environment.as_str())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("key"))?;
    key_from_row(&row)
}

pub(super) async fn write_key(tx: &mut Transaction<'_>, key: &ApiKey) -> StoreResult<()> {
    let credits = CreditColumns::of(key.credits.as_ref());
    sqlx::query(
        "UPDATE api_keys SET name = $1, owner_user_id = $2, organization_id = $3, \
         permissions = $4, meta = $5, start = $6, expires_at = $7, enabled = $8, \
         revoked_at = $9, updated_at = $10, rate_limit_scheme = $12, credits_remaining = $13, \
         credits_refill_period = $14, credits_refill_amount = $15, credits_refilled_at = $16, \
         low_credits_threshold = $17 WHERE id = $11",
    )
    .bind(&key.name)
    .bind(&key.owner_user_id)
    .bind(&key.organization_id)
    .bind(to_json(&key.permissions))
    .bind(to_json(&key.meta))
    .bind(&key.start)
    .bind(key.expires_at.map(Timestamp::as_millis))
    .bind(key.enabled)
    .bind(key.revoked_at.map(Timestamp::as_millis))
    .bind(key.updated_at.as_millis())
    .bind(&key.id)
    .bind(&key.rate_limit_scheme)
    .bind(credits.remaining)
    .bind(credits.refill_period)
    .bind(credits.refill_amount)
    .bind(credits.refilled_at)
    .bind(key.low_credits_threshold)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A key's credits as its four nullable columns.
pub(super) struct CreditColumns {
    remaining: Option<i64>,
    refill_period: Option<&'static str>,
    refill_amount: Option<i64>,
    refilled_at: Option<i64>,
}

impl CreditColumns {
    fn of(credits: Option<&Credits>) -> Self {
        Self {
            remaining: credits.map(|c| c.remaining),
            refill_period: credits.and_then(|c| c.refill).map(|r| r.period.as_str()),
            refill_amount: credits.and_then(|c| c.refill).map(|r| r.amount),
            refilled_at: credits.map(|c| c.refilled_at.as_millis()),
        }
    }
}

pub(super) fn patch_fields(patch: &KeyPatch) -> Vec<&'static str> {
    [
        ("name", patch.name.is_some()),
        ("owner_user_id", patch.owner_user_id.is_some()),
        ("permissions", patch.permissions.is_some()),
        ("meta", patch.meta.is_some()),
        ("expires_at", patch.expires_at.is_some()),
        ("enabled", patch.enabled.is_some()),
        ("credits", patch.credits.is_some()),
        ("rate_limit_scheme", patch.rate_limit_scheme.is_some()),
        (
            "low_credits_threshold",
            patch.low_credits_threshold.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect()
}
