//! Demo sandboxes: each is a workspace of its own, created whole and purged whole.

use async_trait::async_trait;
use keyward_core::model::Environment;
use keyward_core::{KeyHash, Timestamp};
use sqlx::Row;

use super::{corrupt, insert_root_key, SqlStore};
use crate::cluster::Stale;
use crate::{workspace_key_cache_hash, Changed, NewSandbox, SandboxStore, StoreError, StoreResult};

/// Every credential of a workspace, by id.
const CREDENTIALS_OF_WORKSPACE: &str = "SELECT id FROM api_keys WHERE workspace_id = $1 \
     UNION ALL SELECT id FROM root_keys WHERE workspace_id = $1 \
     UNION ALL SELECT id FROM public_keys WHERE workspace_id = $1";

/// Every table that holds a workspace's rows, children before parents.
const WORKSPACE_TABLES: [&str; 15] = [
    "portal_sessions",
    "webhook_endpoints",
    "events",
    "usage_counts",
    "api_keys",
    "public_keys",
    "signing_keys",
    "workspace_keys",
    "apps",
    "root_keys",
    "audit_log",
    "organizations",
    "rate_limit_schemes",
    "environments",
    "demo_sessions",
];

#[async_trait]
impl SandboxStore for SqlStore {
    async fn create_sandbox(&self, sandbox: &NewSandbox) -> StoreResult<Changed<()>> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&sandbox.workspace_id)
            .bind("Demo sandbox")
            .bind(sandbox.now.as_millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO environments (workspace_id, environment, enhanced_security, updated_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&sandbox.workspace_id)
        .bind(Environment::Demo.as_str())
        .bind(false)
        .bind(sandbox.now.as_millis())
        .execute(&mut *tx)
        .await?;
        insert_root_key(&mut tx, &sandbox.root_key, sandbox.hash).await?;
        sqlx::query(
            "INSERT INTO demo_sessions (workspace_id, root_key_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&sandbox.workspace_id)
        .bind(&sandbox.root_key.id)
        .bind(sandbox.now.as_millis())
        .bind(sandbox.expires_at.as_millis())
        .execute(&mut *tx)
        .await?;
        let stale = Stale::Secrets(vec![sandbox.hash]);
        self.finish_change(tx, (), stale, sandbox.now).await
    }

    async fn purge_sandbox(&self, workspace_id: &str, now: Timestamp) -> StoreResult<Changed<()>> {
        let mut tx = self.writer.begin().await?;
        let session = sqlx::query(&format!(
            "SELECT workspace_id FROM demo_sessions WHERE workspace_id = $1{}",
            self.backend.lock_rows("demo_sessions")
        ))
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        if session.is_none() {
            return Err(StoreError::NotFound("demo session"));
        }
        // Changes hold their environment's row (`begin_change`): this waits for those under
        // way, whose rows the deletes below then see, and refuses any that start later.
        sqlx::query(&format!(
            "SELECT environment FROM environments WHERE workspace_id = $1{}",
            self.backend.lock_rows("environments")
        ))
        .bind(workspace_id)
        .fetch_all(&mut *tx)
        .await?;
        // In id order, as the batch writers (`last_used_at`, balances) lock keys, so that
        // neither waits on the other in a cycle.
        sqlx::query(&format!(
            "SELECT id FROM api_keys WHERE workspace_id = $1 ORDER BY id{}",
            self.backend.lock_rows("api_keys")
        ))
        .bind(workspace_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut hashes = sqlx::query(&format!(
            "DELETE FROM secrets WHERE credential_id IN ({CREDENTIALS_OF_WORKSPACE}) RETURNING hash"
        ))
        .bind(workspace_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| {
            let bytes: Vec<u8> = row.try_get("hash")?;
            KeyHash::from_slice(&bytes).ok_or_else(|| corrupt("hash"))
        })
        .collect::<StoreResult<Vec<_>>>()?;
        // Workspace keys are cached by id, not by a secret's hash.
        let workspace_keys = sqlx::query("SELECT id FROM workspace_keys WHERE workspace_id = $1")
            .bind(workspace_id)
            .fetch_all(&mut *tx)
            .await?;
        for row in &workspace_keys {
            hashes.push(workspace_key_cache_hash(&row.try_get::<String, _>("id")?));
        }
        for table in WORKSPACE_TABLES {
            sqlx::query(&format!("DELETE FROM {table} WHERE workspace_id = $1"))
                .bind(workspace_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM workspaces WHERE id = $1")
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?;
        self.finish_change(tx, (), Stale::Secrets(hashes), now)
            .await
    }

    async fn expired_sandboxes(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT workspace_id FROM demo_sessions WHERE expires_at <= $1 \
             ORDER BY expires_at LIMIT $2",
        )
        .bind(now.as_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>("workspace_id")?))
            .collect()
    }
}
