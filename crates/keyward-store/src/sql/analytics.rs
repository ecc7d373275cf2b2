//! Usage analytics: counts of verification outcomes per minute, hour and day.

use std::collections::HashMap;

use async_trait::async_trait;
use keyward_core::analytics::Granularity;
use keyward_core::model::Tenancy;
use keyward_core::Timestamp;
use sqlx::Row as _;

use super::{corrupt, FilteredQuery, Param, SqlStore};
use crate::{AnalyticsStore, KeyUsagePoint, StoreResult, UsageCount, UsagePoint, UsageQuery};

/// What a count row is counted under, besides its granularity and bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Row<'a> {
    tenancy: &'a Tenancy,
    key_id: &'a str,
    app_id: &'a str,
    organization_id: &'a str,
    outcome: &'a str,
}

/// A row's place in `usage_counts`' primary key.
fn primary_key_order<'a>(
    row: &Row<'a>,
    granularity: Granularity,
    bucket: i64,
) -> (&'a str, &'static str, &'static str, [&'a str; 4], i64) {
    (
        row.tenancy.workspace_id.as_str(),
        row.tenancy.environment.as_str(),
        granularity.as_str(),
        [row.key_id, row.app_id, row.organization_id, row.outcome],
        bucket,
    )
}

/// Points packed into one row of a usage query.
const POINTS_PER_ROW: i64 = 500;

/// `bucket:outcome:count`, as a usage query packs a point.
fn unpack(point: &str) -> Option<UsagePoint> {
    let mut parts = point.splitn(3, ':');
    let bucket = parts.next()?.parse().ok()?;
    let outcome = parts.next()?.to_owned();
    let count = parts.next()?.parse().ok()?;
    Some(UsagePoint {
        bucket: Timestamp::from_millis(bucket),
        outcome,
        count,
    })
}

/// Rows per statement, nine parameters each.
const ROWS_PER_STATEMENT: usize = 90;

#[async_trait]
impl AnalyticsStore for SqlStore {
    async fn add_usage(&self, counts: &[UsageCount]) -> StoreResult<()> {
        // Two minutes of one hour add to the same hour row, and one statement may not touch a
        // row twice (PostgreSQL refuses): the rows are summed here first.
        let mut rows: HashMap<(Row<'_>, Granularity, i64), i64> = HashMap::new();
        for count in counts {
            let row = Row {
                tenancy: &count.tenancy,
                key_id: &count.key_id,
                app_id: &count.app_id,
                organization_id: &count.organization_id,
                outcome: &count.outcome,
            };
            for granularity in Granularity::ALL {
                let bucket = granularity.bucket_start(count.at).as_millis();
                *rows.entry((row, granularity, bucket)).or_insert(0) += count.count;
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        // Counts of a sandbox that was purged meanwhile are dropped, not orphaned.
        let live = super::hold_live_environments(
            &mut tx,
            self.backend,
            rows.keys().map(|(row, _, _)| row.tenancy),
        )
        .await?;
        let mut rows: Vec<_> = rows
            .into_iter()
            .filter(|((row, _, _), _)| live.contains(row.tenancy))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        // In the primary key's order: neighbouring rows share index pages, and two nodes
        // adding to the same rows lock them in the same order, so they never deadlock.
        rows.sort_unstable_by(
            |((a, a_granularity, a_bucket), _), ((b, b_granularity, b_bucket), _)| {
                primary_key_order(a, *a_granularity, *a_bucket).cmp(&primary_key_order(
                    b,
                    *b_granularity,
                    *b_bucket,
                ))
            },
        );
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut insert = FilteredQuery::new(
                "INSERT INTO usage_counts (workspace_id, environment, granularity, bucket, \
                 key_id, app_id, organization_id, outcome, count) VALUES ",
            );
            for (index, ((row, granularity, bucket), total)) in chunk.iter().enumerate() {
                insert.push(if index == 0 { "(" } else { ", (" });
                let values = [
                    Param::Text(row.tenancy.workspace_id.clone()),
                    Param::Text(row.tenancy.environment.as_str().to_owned()),
                    Param::Text(granularity.as_str().to_owned()),
                    Param::Int(*bucket),
                    Param::Text(row.key_id.to_owned()),
                    Param::Text(row.app_id.to_owned()),
                    Param::Text(row.organization_id.to_owned()),
                    Param::Text(row.outcome.to_owned()),
                    Param::Int(*total),
                ];
                for (position, value) in values.into_iter().enumerate() {
                    if position > 0 {
                        insert.push(", ");
                    }
                    insert.bind(value);
                }
                insert.push(")");
            }
            insert.push(
                " ON CONFLICT (workspace_id, environment, granularity, key_id, app_id, \
                 organization_id, outcome, bucket) \
                 DO UPDATE SET count = usage_counts.count + excluded.count",
            );
            insert.fetch_all(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsagePoint>> {
        // A month of minutes is 43,200 points. Each row costs the driver far more than its
        // bytes, so points travel packed, `bucket:outcome:count` joined by commas, a few
        // hundred rows at most.
        let point = "CAST(bucket AS TEXT) || ':' || outcome || ':' || CAST(total AS TEXT)";
        let mut select = FilteredQuery::new(&format!(
            "SELECT {} AS packed FROM (SELECT bucket, outcome, SUM(count) AS total \
             FROM usage_counts WHERE ",
            self.backend.text_aggregate(point, ",")
        ));
        filter_usage(&mut select, query);
        select.push(" GROUP BY bucket, outcome) points GROUP BY bucket / ");
        select.bind(Param::Int(query.granularity.millis() * POINTS_PER_ROW));
        let rows = select.fetch_all(&self.reader).await?;
        let mut points = Vec::new();
        for row in &rows {
            let packed: String = row.try_get("packed")?;
            for point in packed.split(',') {
                points.push(unpack(point).ok_or_else(|| corrupt("usage point"))?);
            }
        }
        points.sort_unstable_by(|a, b| (a.bucket, &a.outcome).cmp(&(b.bucket, &b.outcome)));
        Ok(points)
    }

    async fn usage_by_key(&self, query: &UsageQuery) -> StoreResult<Vec<KeyUsagePoint>> {
        let mut select = FilteredQuery::new(
            "SELECT key_id, outcome, CAST(SUM(count) AS BIGINT) AS total FROM usage_counts WHERE ",
        );
        filter_usage(&mut select, query);
        select.push(" AND key_id <> '' GROUP BY key_id, outcome");
        let rows = select.fetch_all(&self.reader).await?;
        rows.iter()
            .map(|row| {
                Ok(KeyUsagePoint {
                    key_id: row.try_get("key_id")?,
                    outcome: row.try_get("outcome")?,
                    count: row.try_get("total")?,
                })
            })
            .collect()
    }

    async fn purge_usage(
        &self,
        minutes_before: Timestamp,
        rollups_before: Timestamp,
    ) -> StoreResult<u64> {
        let minutes =
            sqlx::query("DELETE FROM usage_counts WHERE granularity = 'minute' AND bucket < $1")
                .bind(minutes_before.as_millis())
                .execute(&self.writer)
                .await?
                .rows_affected();
        let rollups =
            sqlx::query("DELETE FROM usage_counts WHERE granularity <> 'minute' AND bucket < $1")
                .bind(rollups_before.as_millis())
                .execute(&self.writer)
                .await?
                .rows_affected();
        Ok(minutes + rollups)
    }
}

/// The conditions every usage query shares: environment, granularity, range and filters.
fn filter_usage(select: &mut FilteredQuery, query: &UsageQuery) {
    select.push("workspace_id = ");
    select.bind(Param::Text(query.tenancy.workspace_id.clone()));
    select.push(" AND environment = ");
    select.bind(Param::Text(query.tenancy.environment.as_str().to_owned()));
    select.push(" AND granularity = ");
    select.bind(Param::Text(query.granularity.as_str().to_owned()));
    select.push(" AND bucket >= ");
    select.bind(Param::Int(
        query.granularity.bucket_start(query.from).as_millis(),
    ));
    select.push(" AND bucket < ");
    select.bind(Param::Int(query.to.as_millis()));
    let filters = [
        ("key_id", &query.key_id),
        ("app_id", &query.app_id),
        ("organization_id", &query.organization_id),
        ("outcome", &query.outcome),
    ];
    for (column, value) in filters {
        if let Some(value) = value {
            select.push(&format!(" AND {column} = "));
            select.bind(Param::Text(value.clone()));
        }
    }
}
