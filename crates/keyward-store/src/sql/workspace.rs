//! The workspace and its environments: bootstrap, environment settings, root keys.

use async_trait::async_trait;
use keyward_core::leak::LeakedKeyAction;
use keyward_core::model::{EnvironmentSettings, RootKey, Tenancy};
use keyward_core::{KeyHash, Timestamp};

use super::query::{FilteredQuery, Keyset};
use super::rows::{
    environment_from_row, root_key_from_row, secret_from_row, to_json, ENVIRONMENT_SELECT,
    ROOT_KEY_BY_HASH, ROOT_KEY_SELECT,
};
use super::secrets::{insert_secret, secret_hashes};
use super::{audit, Lock, SqlStore, Transaction};
use crate::cluster::Stale;
use crate::{
    Bootstrap, Change, Changed, EnvironmentPatch, FoundRootKey, Page, PageRequest, StoreError,
    StoreResult, WorkspaceStore,
};

#[async_trait]
impl WorkspaceStore for SqlStore {
    async fn bootstrap(&self, bootstrap: &Bootstrap) -> StoreResult<Changed<bool>> {
        let mut tx = self.writer.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO installation (singleton, workspace_id, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(&bootstrap.workspace_id)
        .bind(bootstrap.now.as_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(Changed::nothing(false));
        }
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&bootstrap.workspace_id)
            .bind(&bootstrap.workspace_name)
            .bind(bootstrap.now.as_millis())
            .execute(&mut *tx)
            .await?;
        for settings in &bootstrap.environments {
            sqlx::query(
                "INSERT INTO environments (workspace_id, environment, enhanced_security, \
                 leaked_key_action, updated_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&settings.workspace_id)
            .bind(settings.environment.as_str())
            .bind(settings.enhanced_security)
            .bind(settings.leaked_key_action.as_str())
            .bind(settings.updated_at.as_millis())
            .execute(&mut *tx)
            .await?;
        }
        for (key, hash) in &bootstrap.root_keys {
            insert_root_key(&mut tx, key, *hash).await?;
        }
        let hashes = bootstrap.root_keys.iter().map(|(_, hash)| *hash).collect();
        self.finish_change(tx, true, Stale::Secrets(hashes), bootstrap.now)
            .await
    }

    async fn environment(&self, tenancy: &Tenancy) -> StoreResult<EnvironmentSettings> {
        let row = sqlx::query(&format!(
            "{ENVIRONMENT_SELECT} WHERE workspace_id = $1 AND environment = $2"
        ))
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("environment"))?;
        environment_from_row(&row)
    }

    async fn update_environment(
        &self,
        change: &Change,
        patch: &EnvironmentPatch,
    ) -> StoreResult<Changed<EnvironmentSettings>> {
        if let Some(on) = patch.enhanced_security {
            change.require_power_over(
                change
                    .tenancy
                    .environment
                    .scopes_to_set_enhanced_security(on),
            )?;
        }
        let mut tx = self.begin_change(change, Lock::Exclusive).await?;
        let updated = sqlx::query(
            "UPDATE environments SET \
             enhanced_security = COALESCE($1, enhanced_security), \
             leaked_key_action = COALESCE($2, leaked_key_action), updated_at = $3 \
             WHERE workspace_id = $4 AND environment = $5",
        )
        .bind(patch.enhanced_security)
        .bind(patch.leaked_key_action.map(LeakedKeyAction::as_str))
        .bind(change.now.as_millis())
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound("environment"));
        }
        audit(
            &mut tx,
            change,
            "environment.update",
            change.tenancy.environment.as_str(),
            serde_json::json!({
                "enhanced_security": patch.enhanced_security,
                "leaked_key_action": patch.leaked_key_action.map(LeakedKeyAction::as_str),
            }),
        )
        .await?;
        let row = sqlx::query(&format!(
            "{ENVIRONMENT_SELECT} WHERE workspace_id = $1 AND environment = $2"
        ))
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("environment"))?;
        let settings = environment_from_row(&row)?;
        self.finish_change(tx, settings, Stale::Everything, change.now)
            .await
    }

    async fn create_root_key(
        &self,
        change: &Change,
        key: &RootKey,
        hash: KeyHash,
    ) -> StoreResult<Changed<()>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        super::usage::require_scheme(
            &mut tx,
            self.backend,
            &key.tenancy,
            key.rate_limit_scheme.as_deref(),
        )
        .await?;
        change.require_power_over(key.scopes)?;
        insert_root_key(&mut tx, key, hash).await?;
        audit(
            &mut tx,
            change,
            "root_key.create",
            &key.id,
            serde_json::json!({ "name": key.name, "scopes": key.scopes.to_names() }),
        )
        .await?;
        self.finish_change(tx, (), Stale::Secrets(vec![hash]), change.now)
            .await
    }

    async fn find_root_key(&self, hash: KeyHash) -> StoreResult<Option<FoundRootKey>> {
        let row = sqlx::query(ROOT_KEY_BY_HASH)
            .bind(hash.as_bytes().to_vec())
            .fetch_optional(&self.reader)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let key = root_key_from_row(&row)?;
        let windows = match &key.rate_limit_scheme {
            Some(slug) => super::usage::scheme_windows(&self.reader, &key.tenancy, slug).await?,
            None => Vec::new(),
        };
        Ok(Some(FoundRootKey {
            key,
            secret: secret_from_row(&row)?,
            windows,
        }))
    }

    async fn list_root_keys(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<RootKey>> {
        let mut query = FilteredQuery::new(&format!("{ROOT_KEY_SELECT} WHERE "));
        query.in_environment("r", tenancy);
        query
            .fetch_page(
                &self.reader,
                Keyset::NewestFirst("r.id"),
                page,
                root_key_from_row,
                |key| &key.id,
            )
            .await
    }

    async fn revoke_root_key(&self, change: &Change, id: &str) -> StoreResult<Changed<RootKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let row = sqlx::query(&format!(
            "{ROOT_KEY_SELECT} WHERE r.id = $1 AND r.workspace_id = $2 AND r.environment = $3{}",
            self.backend.lock_rows("r")
        ))
        .bind(id)
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("root key"))?;
        let mut key = root_key_from_row(&row)?;
        change.require_power_over(key.scopes)?;
        if key.revoked_at.is_none() {
            key.revoked_at = Some(change.now);
            sqlx::query("UPDATE root_keys SET revoked_at = $1 WHERE id = $2")
                .bind(change.now.as_millis())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            audit(
                &mut tx,
                change,
                "root_key.revoke",
                id,
                serde_json::json!({}),
            )
            .await?;
        }
        let stale = secret_hashes(&mut tx, id).await?;
        self.finish_change(tx, key, stale, change.now).await
    }
}

pub(super) async fn insert_root_key(
    tx: &mut Transaction<'_>,
    key: &RootKey,
    hash: KeyHash,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO root_keys (id, workspace_id, environment, name, scopes, start, created_at, \
         revoked_at, rate_limit_scheme, limit_meter, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&key.id)
    .bind(&key.tenancy.workspace_id)
    .bind(key.tenancy.environment.as_str())
    .bind(&key.name)
    .bind(to_json(&key.scopes.to_names()))
    .bind(&key.start)
    .bind(key.created_at.as_millis())
    .bind(key.revoked_at.map(Timestamp::as_millis))
    .bind(&key.rate_limit_scheme)
    .bind(&key.limit_meter)
    .bind(key.expires_at.map(Timestamp::as_millis))
    .execute(&mut **tx)
    .await?;
    insert_secret(tx, hash, &key.id, None).await
}
