//! Apps: the categories keys belong to, with their permissions and default scheme.

use async_trait::async_trait;
use keyward_core::event::{EventType, NewEvent};
use keyward_core::model::{App, Tenancy};

use super::query::{FilteredQuery, Keyset};
use super::rows::{app_from_row, key_from_row, to_json, APP_SELECT, KEY_SELECT};
use super::{audit, Backend, Lock, SqlStore, Transaction};
use crate::cluster::Stale;
use crate::{
    AppPatch, AppStore, Change, Changed, Conflict, Page, PageRequest, StoreError, StoreResult,
};

#[async_trait]
impl AppStore for SqlStore {
    async fn create_app(&self, change: &Change, app: &App) -> StoreResult<()> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        require_power_over_self_service(&mut tx, change, &app.slug).await?;
        super::usage::require_scheme(
            &mut tx,
            self.backend,
            &app.tenancy,
            app.rate_limit_scheme.as_deref(),
        )
        .await?;
        sqlx::query(
            "INSERT INTO apps (id, workspace_id, environment, name, slug, permissions, \
             organization_id, key_prefix, created_at, updated_at, rate_limit_scheme) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&app.id)
        .bind(&app.tenancy.workspace_id)
        .bind(app.tenancy.environment.as_str())
        .bind(&app.name)
        .bind(&app.slug)
        .bind(to_json(&app.permissions))
        .bind(&app.organization_id)
        .bind(&app.key_prefix)
        .bind(app.created_at.as_millis())
        .bind(app.updated_at.as_millis())
        .bind(&app.rate_limit_scheme)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::conflict_if_duplicate(Conflict::AppSlugTaken))?;
        audit(
            &mut tx,
            change,
            "app.create",
            &app.id,
            serde_json::json!({ "slug": app.slug, "name": app.name }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn app_by_slug(&self, tenancy: &Tenancy, slug: &str) -> StoreResult<App> {
        self.live_app(tenancy, "slug", slug).await
    }

    async fn app_by_id(&self, tenancy: &Tenancy, id: &str) -> StoreResult<App> {
        self.live_app(tenancy, "id", id).await
    }

    async fn list_apps(&self, tenancy: &Tenancy, page: &PageRequest) -> StoreResult<Page<App>> {
        let mut query = FilteredQuery::new(&format!("{APP_SELECT} WHERE "));
        query.in_environment("apps", tenancy);
        query.push(" AND deleted_at IS NULL");
        query
            .fetch_page(
                &self.reader,
                Keyset::NewestFirst("id"),
                page,
                app_from_row,
                |app| &app.id,
            )
            .await
    }

    async fn update_app(
        &self,
        change: &Change,
        slug: &str,
        patch: &AppPatch,
    ) -> StoreResult<Changed<App>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut app = app_in_tx(
            &mut tx,
            self.backend,
            Lock::Exclusive,
            &change.tenancy,
            slug,
        )
        .await?;
        if let Some(name) = &patch.name {
            app.name.clone_from(name);
        }
        if patch
            .permissions
            .as_ref()
            .is_some_and(|permissions| *permissions != app.permissions)
        {
            require_power_over_self_service(&mut tx, change, slug).await?;
        }
        if let Some(permissions) = &patch.permissions {
            let removed: Vec<&String> = app
                .permissions
                .iter()
                .filter(|held| !permissions.contains(held))
                .collect();
            for permission in removed {
                // Names are validated to exclude quotes, so a quoted name matches one whole JSON
                // string, case-sensitively and with no wildcards.
                let in_use = sqlx::query(&format!(
                    "SELECT 1 FROM api_keys WHERE app_id = $1 AND revoked_at IS NULL \
                     AND {} LIMIT 1",
                    self.backend.contains_text("permissions", "$2")
                ))
                .bind(&app.id)
                .bind(format!("\"{permission}\""))
                .fetch_optional(&mut *tx)
                .await?;
                if in_use.is_some() {
                    return Err(StoreError::Conflict(Conflict::PermissionInUse));
                }
            }
            app.permissions.clone_from(permissions);
        }
        let scheme_changed = patch
            .rate_limit_scheme
            .as_ref()
            .is_some_and(|scheme| *scheme != app.rate_limit_scheme);
        if let Some(scheme) = &patch.rate_limit_scheme {
            super::usage::require_scheme(&mut tx, self.backend, &change.tenancy, scheme.as_deref())
                .await?;
            app.rate_limit_scheme.clone_from(scheme);
        }
        app.updated_at = change.now;
        sqlx::query(
            "UPDATE apps SET name = $1, permissions = $2, updated_at = $3, \
             rate_limit_scheme = $5 WHERE id = $4",
        )
        .bind(&app.name)
        .bind(to_json(&app.permissions))
        .bind(app.updated_at.as_millis())
        .bind(&app.id)
        .bind(&app.rate_limit_scheme)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "app.update",
            &app.id,
            serde_json::json!({
                "name": patch.name,
                "permissions": patch.permissions,
                "rate_limit_scheme": patch.rate_limit_scheme,
            }),
        )
        .await?;
        // Cached keys carry their app's limits.
        let stale = if scheme_changed {
            Stale::Everything
        } else {
            Stale::Secrets(Vec::new())
        };
        self.finish_change(tx, app, stale, change.now).await
    }

    async fn delete_app(&self, change: &Change, slug: &str) -> StoreResult<Changed<App>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        require_power_over_self_service(&mut tx, change, slug).await?;
        let app = app_in_tx(
            &mut tx,
            self.backend,
            Lock::Exclusive,
            &change.tenancy,
            slug,
        )
        .await?;
        sqlx::query("UPDATE apps SET deleted_at = $1 WHERE id = $2")
            .bind(change.now.as_millis())
            .bind(&app.id)
            .execute(&mut *tx)
            .await?;
        // In id order, as the batch writers (`last_used_at`, balances) and the sandbox purge
        // lock keys: the UPDATE below may scan them in any order the planner picks (a
        // sequential or bitmap scan follows the heap), and two writers locking the same rows
        // in different orders can deadlock.
        sqlx::query(&format!(
            "SELECT id FROM api_keys WHERE app_id = $1 AND revoked_at IS NULL ORDER BY id{}",
            self.backend.lock_rows("api_keys")
        ))
        .bind(&app.id)
        .fetch_all(&mut *tx)
        .await?;
        let revoked_keys: Vec<NewEvent> = sqlx::query(&format!(
            "{KEY_SELECT} WHERE k.app_id = $1 AND k.revoked_at IS NULL"
        ))
        .bind(&app.id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| {
            let mut key = key_from_row(row)?;
            key.revoked_at = Some(change.now);
            Ok(NewEvent::about(
                &change.tenancy,
                EventType::KeyRevoked,
                &key,
            ))
        })
        .collect::<StoreResult<_>>()?;
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1, updated_at = $1 \
             WHERE app_id = $2 AND revoked_at IS NULL",
        )
        .bind(change.now.as_millis())
        .bind(&app.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        audit(
            &mut tx,
            change,
            "app.delete",
            &app.id,
            serde_json::json!({ "slug": app.slug, "revoked_keys": revoked }),
        )
        .await?;
        super::events::record(&mut tx, self.backend, &revoked_keys, change.now).await?;
        self.finish_change(tx, app, Stale::Everything, change.now)
            .await
    }
}

/// Reads an app inside a write transaction, locked against concurrent writers.
pub(super) async fn app_in_tx(
    tx: &mut Transaction<'_>,
    backend: Backend,
    lock: Lock,
    tenancy: &Tenancy,
    slug: &str,
) -> StoreResult<App> {
    let row = sqlx::query(&format!(
        "{APP_SELECT} WHERE workspace_id = $1 AND environment = $2 AND slug = $3 \
         AND deleted_at IS NULL{}",
        backend.lock("apps", lock)
    ))
    .bind(&tenancy.workspace_id)
    .bind(tenancy.environment.as_str())
    .bind(slug)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("app"))?;
    app_from_row(&row)
}

/// Self-service keys get every permission of their app, which a public key names by slug:
/// changing that app's permissions, or deleting it and making another under its slug,
/// changes what end users can issue themselves, which is `keys:write`'s power.
pub(super) async fn require_power_over_self_service(
    tx: &mut Transaction<'_>,
    change: &Change,
    slug: &str,
) -> StoreResult<()> {
    let delegated = sqlx::query(
        "SELECT 1 FROM public_keys WHERE workspace_id = $1 AND environment = $2 \
         AND self_service_app = $3 LIMIT 1",
    )
    .bind(&change.tenancy.workspace_id)
    .bind(change.tenancy.environment.as_str())
    .bind(slug)
    .fetch_optional(&mut **tx)
    .await?;
    if delegated.is_some() {
        change.require_power_over(keyward_core::scope::Scope::KeysWrite.into())?;
    }
    Ok(())
}

impl SqlStore {
    /// The app whose `column` (its slug or its id) is `value`, unless it was deleted.
    async fn live_app(&self, tenancy: &Tenancy, column: &str, value: &str) -> StoreResult<App> {
        let row = sqlx::query(&format!(
            "{APP_SELECT} WHERE workspace_id = $1 AND environment = $2 AND {column} = $3 \
             AND deleted_at IS NULL"
        ))
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .bind(value)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("app"))?;
        app_from_row(&row)
    }
}
