//! Events and alerts about keys: numbered in commit order, kept for a retention window so a
//! client can resume, and announced to the other nodes on PostgreSQL.

use async_trait::async_trait;
use keyward_core::event::{Event, EventType, KeySnapshot, NewEvent};
use std::sync::Arc;

use keyward_core::model::ApiKey;
use keyward_core::Timestamp;
use sqlx::any::AnyRow;
use sqlx::Row;
use tokio::sync::Notify;

use super::{
    corrupt, key_from_row, tenancy_from_row, timestamp, Backend, FilteredQuery, Param, SqlStore,
    Transaction, KEY_SELECT,
};
use crate::{EventScope, EventStore, StoreResult};

/// The channel on which PostgreSQL announces new events to every node.
pub const EVENTS_CHANNEL: &str = "keyward_events";

/// Rows per INSERT statement (SQLite binds parameters in time quadratic in their number).
const ROWS_PER_STATEMENT: usize = 50;

#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    #[serde(default)]
    key: Option<KeySnapshot>,
    #[serde(default)]
    details: serde_json::Map<String, serde_json::Value>,
}

/// Records `events` in `tx`. Their numbers are taken from the one `event_sequence` row, whose
/// lock is held until `tx` commits, so numbers follow commit order: a reader that has seen
/// number N has seen every event below it. An event whose `dedup_key` is already recorded is
/// skipped (its number is simply never used).
pub(super) async fn record(
    tx: &mut Transaction<'_>,
    backend: Backend,
    events: &[NewEvent],
    now: Timestamp,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let count = i64::try_from(events.len()).map_err(|_| corrupt("event count"))?;
    let last: i64 =
        sqlx::query("UPDATE event_sequence SET seq = seq + $1 WHERE singleton = 1 RETURNING seq")
            .bind(count)
            .fetch_one(&mut **tx)
            .await?
            .try_get("seq")?;
    let first = last - count;
    let mut seq = first;
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut insert = FilteredQuery::new(
            "INSERT INTO events (seq, workspace_id, environment, type, key_id, owner_user_id, \
             payload, created_at, dedup_key) VALUES ",
        );
        let mut rows = Vec::with_capacity(chunk.len());
        for event in chunk {
            seq += 1;
            rows.push([
                Param::Int(seq),
                Param::Text(event.tenancy.workspace_id.clone()),
                Param::Text(event.tenancy.environment.as_str().to_owned()),
                Param::Text(event.kind.as_str().to_owned()),
                Param::Text(event.subject_id().to_owned()),
                Param::OptionalText(event.key.as_ref().and_then(|key| key.owner_user_id.clone())),
                Param::Text(payload_json(event)?),
                Param::Int(now.as_millis()),
                Param::OptionalText(event.dedup_key.clone()),
            ]);
        }
        insert.push_rows(rows);
        insert.push(" ON CONFLICT (dedup_key) DO NOTHING");
        insert.fetch_all(&mut **tx).await?;
    }
    if backend == Backend::Postgres {
        // Delivered when, and only if, the transaction commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(last.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// An event's payload as the events table (and a webhook delivery) keeps it.
pub(super) fn payload_json(event: &NewEvent) -> StoreResult<String> {
    serde_json::to_string(&Payload {
        key: event.key.clone(),
        details: event.details.clone(),
    })
    .map_err(|_| corrupt("payload"))
}

/// Reads [`payload_json`]'s text back.
pub(super) fn parse_payload(
    text: &str,
) -> StoreResult<(
    Option<KeySnapshot>,
    serde_json::Map<String, serde_json::Value>,
)> {
    let payload: Payload = serde_json::from_str(text).map_err(|_| corrupt("event payload"))?;
    Ok((payload.key, payload.details))
}

fn event_from_row(row: &AnyRow) -> StoreResult<Event> {
    let kind: String = row.try_get("type")?;
    let payload: String = row.try_get("payload")?;
    let (key, details) = parse_payload(&payload)?;
    Ok(Event {
        seq: row.try_get("seq")?,
        tenancy: tenancy_from_row(row)?,
        kind: EventType::parse(&kind).ok_or_else(|| corrupt("event type"))?,
        key,
        details,
        created_at: timestamp(row, "created_at")?,
    })
}

#[async_trait]
impl EventStore for SqlStore {
    async fn append_events(&self, events: &[NewEvent], now: Timestamp) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        // Alerts queued for a sandbox that was purged meanwhile are dropped, not orphaned.
        let live = super::hold_live_environments(
            &mut tx,
            self.backend,
            events.iter().map(|event| &event.tenancy),
        )
        .await?;
        let events: Vec<NewEvent> = events
            .iter()
            .filter(|event| live.contains(&event.tenancy))
            .cloned()
            .collect();
        record(&mut tx, self.backend, &events, now).await?;
        tx.commit().await?;
        self.events_committed.notify_one();
        self.deliveries_queued.notify_one();
        Ok(())
    }

    fn events_committed(&self) -> Arc<Notify> {
        Arc::clone(&self.events_committed)
    }

    async fn events_after(
        &self,
        after: i64,
        scope: Option<&EventScope<'_>>,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        let mut query = FilteredQuery::new(
            "SELECT seq, workspace_id, environment, type, payload, created_at FROM events \
             WHERE seq > ",
        );
        query.bind(Param::Int(after));
        if let Some(scope) = scope {
            query.push(" AND workspace_id = ");
            query.bind(Param::Text(scope.tenancy.workspace_id.clone()));
            query.push(" AND environment = ");
            query.bind(Param::Text(scope.tenancy.environment.as_str().to_owned()));
            if let Some(owner) = scope.owner_user_id {
                query.push(" AND owner_user_id = ");
                query.bind(Param::Text(owner.to_owned()));
            }
        }
        query.push(" ORDER BY seq LIMIT ");
        query.bind(Param::Int(i64::from(limit)));
        let rows = query.fetch_all(&self.reader).await?;
        // One unreadable row (an event type from a newer version, mid-upgrade) must not stop
        // every stream behind it.
        Ok(rows
            .iter()
            .filter_map(|row| {
                event_from_row(row)
                    .inspect_err(|error| tracing::error!(%error, "skipping an unreadable event"))
                    .ok()
            })
            .collect())
    }

    async fn last_event_seq(&self) -> StoreResult<i64> {
        // The sequence row, not MAX(seq): a number taken by a transaction still running is
        // not visible here until it commits, and skipped numbers are never events.
        Ok(
            sqlx::query("SELECT seq FROM event_sequence WHERE singleton = 1")
                .fetch_one(&self.reader)
                .await?
                .try_get("seq")?,
        )
    }

    async fn oldest_event_seq(&self) -> StoreResult<Option<i64>> {
        Ok(sqlx::query("SELECT MIN(seq) AS seq FROM events")
            .fetch_one(&self.reader)
            .await?
            .try_get("seq")?)
    }

    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64> {
        // An event is the outbox of its webhook deliveries until they are queued, and a
        // pending delivery reads its event's payload: keep both kinds (and the events
        // after them).
        Ok(sqlx::query(
            "DELETE FROM events WHERE created_at < $1 \
             AND seq <= (SELECT last_seq FROM webhook_fanout WHERE singleton = 1) \
             AND seq < COALESCE((SELECT MIN(event_seq) FROM webhook_deliveries \
             WHERE state = 'pending'), seq + 1)",
        )
        .bind(before.as_millis())
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    async fn keys_expiring_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        unreported: EventType,
        limit: u32,
    ) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query(&format!(
            "{KEY_SELECT} WHERE k.expires_at > $1 AND k.expires_at <= $2 \
             AND k.revoked_at IS NULL AND NOT EXISTS (SELECT 1 FROM events e \
             WHERE e.dedup_key = $3 || k.id || ':' || CAST(k.expires_at AS TEXT)) \
             ORDER BY k.expires_at LIMIT $4"
        ))
        .bind(after.as_millis())
        .bind(until.as_millis())
        .bind(format!("{}:", unreported.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(key_from_row).collect()
    }
}

/// The deduplication key of an expiry event: one per key and expiry, whichever node sees it.
pub fn expiry_dedup_key(kind: EventType, key: &ApiKey) -> Option<String> {
    key.expires_at
        .map(|at| format!("{}:{}:{}", kind.as_str(), key.id, at.as_millis()))
}

/// PostgreSQL's announcements of events committed by any node.
pub struct EventAnnouncements(sqlx::postgres::PgListener);

impl std::fmt::Debug for EventAnnouncements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventAnnouncements")
    }
}

impl EventAnnouncements {
    pub async fn connect(database_url: &str) -> StoreResult<Self> {
        let mut listener = sqlx::postgres::PgListener::connect(database_url).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        Ok(Self(listener))
    }

    /// Waits for the next announcement. An error means the connection is gone.
    pub async fn next(&mut self) -> StoreResult<()> {
        self.0.recv().await?;
        Ok(())
    }
}
