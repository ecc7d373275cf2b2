//! Rate-limit schemes, organisations, and the usage engine's write-back.

use async_trait::async_trait;
use keyward_core::model::{
    ApiKey, Organization, OrganizationPolicy, RateLimitScheme, Tenancy, UsagePolicy,
};
use keyward_core::scope::{Scope, ScopeSet};
use keyward_core::usage::{Period, RateWindow};
use keyward_core::KeyHash;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::{
    audit, corrupt, tenancy_from_row, timestamp, Backend, FilteredQuery, Keyset, Lock, Param,
    SqlStore, Transaction, BATCH_ROWS_PER_STATEMENT,
};
use crate::cluster::Stale;
use crate::{
    Change, Changed, Conflict, Forbidden, OrganizationSettings, Page, PageRequest, Reference,
    StoreError, StoreResult, UsageStore, UsageWriteBack,
};

const SCHEME_SELECT: &str = "SELECT workspace_id, environment, slug, windows, created_at, \
     updated_at FROM rate_limit_schemes";

/// What an organisation's row holds, for `SELECT` and `RETURNING`.
const ORGANIZATION_COLUMNS: &str = "workspace_id, environment, id, rate_limit_scheme, \
     credit_cap, credit_period, credits_spent, spent_period_start, created_at, updated_at, \
     low_credits_threshold";

/// Beyond this many secrets, an organisation's change makes caches forget everything rather
/// than announce each hash.
const MAX_PRECISE_INVALIDATION: usize = 10_000;

pub(super) fn period(text: &str) -> StoreResult<Period> {
    match text {
        "daily" => Ok(Period::Daily),
        "monthly" => Ok(Period::Monthly),
        _ => Err(corrupt("period")),
    }
}

fn windows_from_text(text: &str) -> StoreResult<Vec<RateWindow>> {
    serde_json::from_str(text).map_err(|_| corrupt("rate windows"))
}

fn scheme_from_row(row: &AnyRow) -> StoreResult<RateLimitScheme> {
    let windows: String = row.try_get("windows")?;
    Ok(RateLimitScheme {
        tenancy: tenancy_from_row(row)?,
        slug: row.try_get("slug")?,
        windows: windows_from_text(&windows)?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

fn organization_from_row(row: &AnyRow) -> StoreResult<Organization> {
    let credit_period: Option<String> = row.try_get("credit_period")?;
    Ok(Organization {
        tenancy: tenancy_from_row(row)?,
        id: row.try_get("id")?,
        rate_limit_scheme: row.try_get("rate_limit_scheme")?,
        credit_cap: row.try_get("credit_cap")?,
        credit_period: credit_period.as_deref().map(period).transpose()?,
        credits_spent: row.try_get("credits_spent")?,
        spent_period_start: timestamp(row, "spent_period_start")?,
        low_credits_threshold: row.try_get("low_credits_threshold")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

/// Fails with `InvalidReference` unless the scheme exists; on PostgreSQL it stays locked
/// against deletion until the transaction ends.
pub(super) async fn require_scheme(
    tx: &mut Transaction<'_>,
    backend: Backend,
    tenancy: &Tenancy,
    slug: Option<&str>,
) -> StoreResult<()> {
    let Some(slug) = slug else { return Ok(()) };
    let found = sqlx::query(&format!(
        "SELECT slug FROM rate_limit_schemes \
         WHERE workspace_id = $1 AND environment = $2 AND slug = $3{}",
        backend.lock("rate_limit_schemes", super::Lock::Shared)
    ))
    .bind(&tenancy.workspace_id)
    .bind(tenancy.environment.as_str())
    .bind(slug)
    .fetch_optional(&mut **tx)
    .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::InvalidReference(
            Reference::UnknownRateLimitScheme,
        )),
    }
}

/// A scheme's windows; none if it no longer exists.
pub(super) async fn scheme_windows(
    reader: &AnyPool,
    tenancy: &Tenancy,
    slug: &str,
) -> StoreResult<Vec<RateWindow>> {
    let row = sqlx::query(
        "SELECT windows FROM rate_limit_schemes \
         WHERE workspace_id = $1 AND environment = $2 AND slug = $3",
    )
    .bind(&tenancy.workspace_id)
    .bind(tenancy.environment.as_str())
    .bind(slug)
    .fetch_optional(reader)
    .await?;
    match row {
        Some(row) => windows_from_text(&row.try_get::<String, _>("windows")?),
        None => Ok(Vec::new()),
    }
}

/// Resolves what limits a key: its own scheme or its app's, and its organisation's.
pub(super) async fn policy_of(
    reader: &AnyPool,
    key: &ApiKey,
    app_scheme: Option<&str>,
) -> StoreResult<UsagePolicy> {
    let windows = match key.rate_limit_scheme.as_deref().or(app_scheme) {
        Some(slug) => scheme_windows(reader, &key.tenancy, slug).await?,
        None => Vec::new(),
    };
    let organization = match &key.organization_id {
        Some(id) => {
            let row = sqlx::query(&format!(
                "SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE workspace_id = $1 AND environment = $2 AND id = $3"
            ))
            .bind(&key.tenancy.workspace_id)
            .bind(key.tenancy.environment.as_str())
            .bind(id)
            .fetch_optional(reader)
            .await?;
            match row {
                Some(row) => {
                    let organization = organization_from_row(&row)?;
                    let windows = match &organization.rate_limit_scheme {
                        Some(slug) => scheme_windows(reader, &key.tenancy, slug).await?,
                        None => Vec::new(),
                    };
                    Some(OrganizationPolicy {
                        cap: organization.cap_usage(),
                        low_credits_threshold: organization.low_credits_threshold,
                        id: organization.id,
                        windows,
                    })
                }
                None => None,
            }
        }
        None => None,
    };
    Ok(UsagePolicy {
        windows,
        organization,
    })
}

async fn scheme_in_tx(
    tx: &mut Transaction<'_>,
    backend: Backend,
    tenancy: &Tenancy,
    slug: &str,
) -> StoreResult<RateLimitScheme> {
    let row = sqlx::query(&format!(
        "{SCHEME_SELECT} WHERE workspace_id = $1 AND environment = $2 AND slug = $3{}",
        backend.lock_rows("rate_limit_schemes")
    ))
    .bind(&tenancy.workspace_id)
    .bind(tenancy.environment.as_str())
    .bind(slug)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("rate limit scheme"))?;
    scheme_from_row(&row)
}

/// The secrets of every key of an organisation, as what caches must forget when its limits
/// change.
async fn organization_secrets(
    tx: &mut Transaction<'_>,
    tenancy: &Tenancy,
    id: &str,
) -> StoreResult<Stale> {
    let rows = sqlx::query(&format!(
        "SELECT s.hash FROM secrets s JOIN api_keys k ON k.id = s.credential_id \
         WHERE k.workspace_id = $1 AND k.environment = $2 AND k.organization_id = $3 LIMIT {}",
        MAX_PRECISE_INVALIDATION + 1
    ))
    .bind(&tenancy.workspace_id)
    .bind(tenancy.environment.as_str())
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    if rows.len() > MAX_PRECISE_INVALIDATION {
        return Ok(Stale::Everything);
    }
    let hashes = rows
        .iter()
        .map(|row| {
            let bytes: Vec<u8> = row.try_get("hash")?;
            KeyHash::from_slice(&bytes).ok_or_else(|| corrupt("hash"))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Stale::Secrets(hashes))
}

#[async_trait]
impl UsageStore for SqlStore {
    async fn create_rate_limit_scheme(
        &self,
        change: &Change,
        scheme: &RateLimitScheme,
    ) -> StoreResult<()> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        sqlx::query(
            "INSERT INTO rate_limit_schemes (workspace_id, environment, slug, windows, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&scheme.tenancy.workspace_id)
        .bind(scheme.tenancy.environment.as_str())
        .bind(&scheme.slug)
        .bind(super::to_json(&scheme.windows))
        .bind(scheme.created_at.as_millis())
        .bind(scheme.updated_at.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::conflict_if_duplicate(
            Conflict::RateLimitSchemeExists,
        ))?;
        audit(
            &mut tx,
            change,
            "rate_limit_scheme.create",
            &scheme.slug,
            serde_json::json!({ "windows": scheme.windows }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rate_limit_scheme(
        &self,
        tenancy: &Tenancy,
        slug: &str,
    ) -> StoreResult<RateLimitScheme> {
        let row = sqlx::query(&format!(
            "{SCHEME_SELECT} WHERE workspace_id = $1 AND environment = $2 AND slug = $3"
        ))
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .bind(slug)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("rate limit scheme"))?;
        scheme_from_row(&row)
    }

    async fn list_rate_limit_schemes(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<RateLimitScheme>> {
        let mut query = FilteredQuery::new(&format!("{SCHEME_SELECT} WHERE "));
        query.in_environment("rate_limit_schemes", tenancy);
        query
            .fetch_page(
                &self.reader,
                Keyset::Ascending("slug"),
                page,
                scheme_from_row,
                |scheme| &scheme.slug,
            )
            .await
    }

    async fn update_rate_limit_scheme(
        &self,
        change: &Change,
        slug: &str,
        windows: &[RateWindow],
    ) -> StoreResult<Changed<RateLimitScheme>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut scheme = scheme_in_tx(&mut tx, self.backend, &change.tenancy, slug).await?;
        require_power_over_limited(&mut tx, change, slug).await?;
        scheme.windows = windows.to_vec();
        scheme.updated_at = change.now;
        sqlx::query(
            "UPDATE rate_limit_schemes SET windows = $1, updated_at = $2 \
             WHERE workspace_id = $3 AND environment = $4 AND slug = $5",
        )
        .bind(super::to_json(&scheme.windows))
        .bind(change.now.as_millis())
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .bind(slug)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "rate_limit_scheme.update",
            slug,
            serde_json::json!({ "windows": scheme.windows }),
        )
        .await?;
        self.finish_change(tx, scheme, Stale::Everything, change.now)
            .await
    }

    async fn delete_rate_limit_scheme(
        &self,
        change: &Change,
        slug: &str,
    ) -> StoreResult<Changed<RateLimitScheme>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let scheme = scheme_in_tx(&mut tx, self.backend, &change.tenancy, slug).await?;
        let in_use = sqlx::query(
            "SELECT 1 FROM apps WHERE workspace_id = $1 AND environment = $2 \
               AND rate_limit_scheme = $3 AND deleted_at IS NULL \
             UNION ALL SELECT 1 FROM api_keys WHERE workspace_id = $1 AND environment = $2 \
               AND rate_limit_scheme = $3 AND revoked_at IS NULL \
             UNION ALL SELECT 1 FROM organizations WHERE workspace_id = $1 \
               AND environment = $2 AND rate_limit_scheme = $3 \
             UNION ALL SELECT 1 FROM root_keys WHERE workspace_id = $1 AND environment = $2 \
               AND rate_limit_scheme = $3 AND revoked_at IS NULL \
             UNION ALL SELECT 1 FROM public_keys WHERE workspace_id = $1 \
               AND environment = $2 AND rate_limit_scheme = $3 \
             UNION ALL SELECT 1 FROM workspace_keys WHERE workspace_id = $1 \
               AND environment = $2 AND rate_limit_scheme = $3 \
             LIMIT 1",
        )
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .bind(slug)
        .fetch_optional(&mut *tx)
        .await?;
        if in_use.is_some() {
            return Err(StoreError::Conflict(Conflict::RateLimitSchemeInUse));
        }
        sqlx::query(
            "DELETE FROM rate_limit_schemes \
             WHERE workspace_id = $1 AND environment = $2 AND slug = $3",
        )
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .bind(slug)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "rate_limit_scheme.delete",
            slug,
            serde_json::json!({}),
        )
        .await?;
        // Revoked keys may still name it; they never verify, so nothing cached uses it.
        self.finish_change(tx, scheme, Stale::Secrets(Vec::new()), change.now)
            .await
    }

    async fn put_organization(
        &self,
        change: &Change,
        settings: &OrganizationSettings,
    ) -> StoreResult<Changed<Organization>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        require_scheme(
            &mut tx,
            self.backend,
            &change.tenancy,
            settings.rate_limit_scheme.as_deref(),
        )
        .await?;
        let row = sqlx::query(&format!(
            "INSERT INTO organizations ({ORGANIZATION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $7, $8) \
             ON CONFLICT (workspace_id, environment, id) DO UPDATE SET \
             rate_limit_scheme = excluded.rate_limit_scheme, credit_cap = excluded.credit_cap, \
             credit_period = excluded.credit_period, updated_at = excluded.updated_at, \
             low_credits_threshold = excluded.low_credits_threshold \
             RETURNING {ORGANIZATION_COLUMNS}"
        ))
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .bind(&settings.id)
        .bind(&settings.rate_limit_scheme)
        .bind(settings.credit_cap)
        .bind(settings.credit_period.map(Period::as_str))
        .bind(change.now.as_millis())
        .bind(settings.low_credits_threshold)
        .fetch_one(&mut *tx)
        .await?;
        let organization = organization_from_row(&row)?;
        audit(
            &mut tx,
            change,
            "organization.put",
            &settings.id,
            serde_json::json!({
                "rate_limit_scheme": settings.rate_limit_scheme,
                "credit_cap": settings.credit_cap,
                "credit_period": settings.credit_period.map(Period::as_str),
            }),
        )
        .await?;
        let stale = organization_secrets(&mut tx, &change.tenancy, &settings.id).await?;
        self.finish_change(tx, organization, stale, change.now)
            .await
    }

    async fn organization(&self, tenancy: &Tenancy, id: &str) -> StoreResult<Organization> {
        let row = sqlx::query(&format!(
            "SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE workspace_id = $1 AND environment = $2 AND id = $3"
        ))
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .bind(id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("organization"))?;
        organization_from_row(&row)
    }

    async fn delete_organization(
        &self,
        change: &Change,
        id: &str,
    ) -> StoreResult<Changed<Organization>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let row = sqlx::query(&format!(
            "DELETE FROM organizations WHERE workspace_id = $1 AND environment = $2 AND id = $3 \
             RETURNING {ORGANIZATION_COLUMNS}"
        ))
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("organization"))?;
        let organization = organization_from_row(&row)?;
        audit(
            &mut tx,
            change,
            "organization.delete",
            id,
            serde_json::json!({}),
        )
        .await?;
        let stale = organization_secrets(&mut tx, &change.tenancy, id).await?;
        self.finish_change(tx, organization, stale, change.now)
            .await
    }

    async fn write_back_usage(&self, usage: &UsageWriteBack) -> StoreResult<()> {
        if usage.credits.is_empty() && usage.caps.is_empty() {
            return Ok(());
        }
        // As `record_last_used`: one statement per chunk, rows locked in key order, so that
        // a node stalled mid-batch holds nothing and batches never deadlock.
        for chunk in usage.credits.chunks(BATCH_ROWS_PER_STATEMENT) {
            let mut update =
                FilteredQuery::new("WITH balances (id, remaining, refilled_at) AS (VALUES ");
            update.push_rows(chunk.iter().map(|(id, balance)| {
                [
                    Param::Text(id.clone()),
                    Param::Int(balance.remaining),
                    Param::Int(balance.refilled_at.as_millis()),
                ]
            }));
            update.push(&format!(
                "), locked AS MATERIALIZED (SELECT b.* FROM api_keys k \
                 JOIN balances b ON b.id = k.id WHERE k.credits_remaining IS NOT NULL \
                 ORDER BY k.id{}) \
                 UPDATE api_keys SET credits_remaining = locked.remaining, \
                 credits_refilled_at = locked.refilled_at FROM locked \
                 WHERE api_keys.id = locked.id",
                self.backend.lock_rows("k")
            ));
            update.fetch_all(&self.writer).await?;
        }
        for chunk in usage.caps.chunks(BATCH_ROWS_PER_STATEMENT) {
            let mut update = FilteredQuery::new(
                "WITH caps (workspace_id, environment, id, spent, period_start) AS (VALUES ",
            );
            update.push_rows(chunk.iter().map(|(tenancy, id, cap)| {
                [
                    Param::Text(tenancy.workspace_id.clone()),
                    Param::Text(tenancy.environment.as_str().to_owned()),
                    Param::Text(id.clone()),
                    Param::Int(cap.spent),
                    Param::Int(cap.period_start.as_millis()),
                ]
            }));
            update.push(&format!(
                "), locked AS MATERIALIZED (SELECT c.* FROM organizations o JOIN caps c \
                 ON c.workspace_id = o.workspace_id AND c.environment = o.environment \
                 AND c.id = o.id ORDER BY o.workspace_id, o.environment, o.id{}) \
                 UPDATE organizations SET credits_spent = locked.spent, \
                 spent_period_start = locked.period_start FROM locked \
                 WHERE organizations.workspace_id = locked.workspace_id \
                 AND organizations.environment = locked.environment \
                 AND organizations.id = locked.id",
                self.backend.lock_rows("o")
            ));
            update.fetch_all(&self.writer).await?;
        }
        Ok(())
    }
}

/// A scheme that limits root or workspace keys' calls configures those credentials: changing
/// it takes the scope that governs them and every scope they hold, and a limited key may
/// not loosen (or tighten) its own limit unless it holds `*`.
async fn require_power_over_limited(
    tx: &mut Transaction<'_>,
    change: &Change,
    slug: &str,
) -> StoreResult<()> {
    let rows = sqlx::query(
        "SELECT id, scopes, 'root' AS kind FROM root_keys WHERE workspace_id = $1 \
           AND environment = $2 AND rate_limit_scheme = $3 AND revoked_at IS NULL \
         UNION ALL SELECT id, scopes, 'workspace' AS kind FROM workspace_keys \
           WHERE workspace_id = $1 AND environment = $2 AND rate_limit_scheme = $3",
    )
    .bind(&change.tenancy.workspace_id)
    .bind(change.tenancy.environment.as_str())
    .bind(slug)
    .fetch_all(&mut **tx)
    .await?;
    let mut conferred = ScopeSet::default();
    for row in &rows {
        let id: String = row.try_get("id")?;
        if id == change.actor && !change.actor_scopes.contains(Scope::All) {
            return Err(StoreError::NotPermitted(Forbidden::InsufficientScope));
        }
        let names = super::json_list(row, "scopes")?;
        let scopes =
            ScopeSet::parse(names.iter().map(String::as_str)).map_err(|_| corrupt("scopes"))?;
        let governing = match row.try_get::<String, _>("kind")?.as_str() {
            "root" => Scope::RootKeysWrite,
            _ => Scope::WorkspaceKeysWrite,
        };
        conferred = conferred.union(scopes).union(governing.into());
    }
    change.require_power_over(conferred)
}
