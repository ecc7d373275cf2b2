//! Customer portal sessions (SPEC §4.10): made by a backend's credential, opened once by the
//! customer's browser, and live while their creator is.

use async_trait::async_trait;
use keyward_core::model::{CallLimit, PortalSession};
use keyward_core::scope::ScopeSet;
use keyward_core::Timestamp;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::rows::{corrupt, json_list, tenancy_from_row, timestamp, to_json};
use super::{audit, Lock, SqlStore};
use crate::{Change, PortalStore, StoreError, StoreResult};

/// The id of a session that is not over: not ended, and its creator (a root key or a
/// workspace key) still live. Also the actor check of every change made through it.
pub(super) const LIVE_PORTAL_SESSION: &str = "SELECT a.id FROM portal_sessions a \
     WHERE a.id = $1 AND a.ended_at IS NULL \
     AND (substr(a.created_by, 1, 3) <> 'rk_' OR EXISTS (SELECT 1 FROM root_keys r \
     WHERE r.id = a.created_by AND r.revoked_at IS NULL)) \
     AND (substr(a.created_by, 1, 3) <> 'wk_' OR EXISTS (SELECT 1 FROM workspace_keys w \
     WHERE w.id = a.created_by))";

const COLUMNS: &str = "id, workspace_id, environment, app_id, owner_user_id, organization_id, \
     permissions, max_keys, return_url, created_by, scopes, limit_scheme, limit_meter, \
     code_expires_at, created_at, expires_at";

fn session_from_row(row: &AnyRow) -> StoreResult<PortalSession> {
    let scopes = json_list(row, "scopes")?;
    let max_keys: i64 = row.try_get("max_keys")?;
    Ok(PortalSession {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        app_id: row.try_get("app_id")?,
        owner_user_id: row.try_get("owner_user_id")?,
        organization_id: row.try_get("organization_id")?,
        permissions: json_list(row, "permissions")?,
        max_keys: u32::try_from(max_keys).map_err(|_| corrupt("max_keys"))?,
        return_url: row.try_get("return_url")?,
        created_by: row.try_get("created_by")?,
        scopes: ScopeSet::parse(scopes.iter().map(String::as_str))
            .map_err(|_| corrupt("scopes"))?,
        limit: CallLimit {
            scheme: row.try_get("limit_scheme")?,
            meter: row.try_get("limit_meter")?,
        },
        created_at: timestamp(row, "created_at")?,
        code_expires_at: timestamp(row, "code_expires_at")?,
        expires_at: timestamp(row, "expires_at")?,
    })
}

#[async_trait]
impl PortalStore for SqlStore {
    async fn create_portal_session(
        &self,
        change: &Change,
        session: &PortalSession,
        code_hash: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let app = sqlx::query(
            "SELECT id FROM apps WHERE id = $1 AND workspace_id = $2 AND environment = $3",
        )
        .bind(&session.app_id)
        .bind(&session.tenancy.workspace_id)
        .bind(session.tenancy.environment.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if app.is_none() {
            return Err(StoreError::NotFound("app"));
        }
        sqlx::query(&format!(
            "INSERT INTO portal_sessions ({COLUMNS}, code_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17)"
        ))
        .bind(&session.id)
        .bind(&session.tenancy.workspace_id)
        .bind(session.tenancy.environment.as_str())
        .bind(&session.app_id)
        .bind(&session.owner_user_id)
        .bind(&session.organization_id)
        .bind(to_json(&session.permissions))
        .bind(i64::from(session.max_keys))
        .bind(&session.return_url)
        .bind(&session.created_by)
        .bind(to_json(&session.scopes.to_names()))
        .bind(&session.limit.scheme)
        .bind(&session.limit.meter)
        .bind(session.code_expires_at.as_millis())
        .bind(session.created_at.as_millis())
        .bind(session.expires_at.as_millis())
        .bind(code_hash)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "portal_session.create",
            &session.id,
            serde_json::json!({
                "app_id": session.app_id,
                "owner_user_id": session.owner_user_id,
                "organization_id": session.organization_id,
                "expires_at": session.expires_at.as_millis(),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn redeem_portal_code(
        &self,
        code_hash: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<PortalSession> {
        // One statement: of two nodes redeeming the same code at once, one updates the row
        // and the other finds it redeemed.
        let row = sqlx::query(&format!(
            "UPDATE portal_sessions SET redeemed_at = $1, expires_at = $3 WHERE code_hash = $2 \
             AND redeemed_at IS NULL AND code_expires_at > $1 \
             AND id IN ({}) RETURNING {COLUMNS}",
            LIVE_PORTAL_SESSION.replace("$1", "portal_sessions.id")
        ))
        .bind(now.as_millis())
        .bind(code_hash)
        .bind(until.as_millis())
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref()
            .map(session_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound("portal session"))
    }

    async fn live_portal_session(&self, id: &str, now: Timestamp) -> StoreResult<PortalSession> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM portal_sessions WHERE id = ({LIVE_PORTAL_SESSION}) \
             AND redeemed_at IS NOT NULL AND expires_at > $2"
        ))
        .bind(id)
        .bind(now.as_millis())
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref()
            .map(session_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound("portal session"))
    }

    async fn end_portal_session(&self, id: &str, now: Timestamp) -> StoreResult<()> {
        sqlx::query("UPDATE portal_sessions SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL")
            .bind(now.as_millis())
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn purge_portal_sessions(&self, before: Timestamp) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM portal_sessions WHERE expires_at < $1")
                .bind(before.as_millis())
                .execute(&self.writer)
                .await?
                .rows_affected(),
        )
    }
}
