//! The audit log: written by every change, in its transaction; read by `GET /audit-log`.

use async_trait::async_trait;
use keyward_core::model::{AuditEntry, Tenancy};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::query::{FilteredQuery, Keyset, Param};
use super::rows::{corrupt, tenancy_from_row, timestamp};
use super::{SqlStore, Transaction};
use crate::{AuditFilter, AuditStore, Change, Page, PageRequest, StoreResult};

pub(super) async fn audit(
    tx: &mut Transaction<'_>,
    change: &Change,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, workspace_id, environment, actor, action, target, \
         request_id, details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&change.audit_id)
    .bind(&change.tenancy.workspace_id)
    .bind(change.tenancy.environment.as_str())
    .bind(&change.actor)
    .bind(action)
    .bind(target)
    .bind(&change.request_id)
    .bind(details.to_string())
    .bind(change.now.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn list_audit(
        &self,
        tenancy: &Tenancy,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        let mut query = FilteredQuery::new(
            "SELECT id, workspace_id, environment, actor, action, target, request_id, details, \
             created_at FROM audit_log WHERE ",
        );
        query.in_environment("audit_log", tenancy);
        if let Some(action) = &filter.action {
            query
                .push(" AND action = ")
                .bind(Param::Text(action.clone()));
        }
        if let Some(target) = &filter.target {
            query
                .push(" AND target = ")
                .bind(Param::Text(target.clone()));
        }
        query
            .fetch_page(
                &self.reader,
                Keyset::NewestFirst("id"),
                page,
                audit_entry_from_row,
                |entry| &entry.id,
            )
            .await
    }
}

fn audit_entry_from_row(row: &AnyRow) -> StoreResult<AuditEntry> {
    let details: String = row.try_get("details")?;
    Ok(AuditEntry {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        request_id: row.try_get("request_id")?,
        details: serde_json::from_str(&details).map_err(|_| corrupt("details"))?,
        created_at: timestamp(row, "created_at")?,
    })
}
