//! Webhook endpoints and their outbox (SPEC §4.8). An event's deliveries are queued by
//! [`queue_deliveries`] in the transaction that records the event, so a committed event is
//! never left undelivered; workers on every node claim due deliveries (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL) and settle them with [`WebhookStore::settle_webhook_delivery`].

use async_trait::async_trait;
use keyward_core::event::{Event, EventType, NewEvent};
use keyward_core::model::Tenancy;
use keyward_core::scope::{Scope, ScopeSet};
use keyward_core::webhook::{
    delivery_id, should_disable, DeliveryState, EventFilter, WebhookAttempt, WebhookDelivery,
    WebhookEndpoint, TEST_EVENT_TYPE,
};
use keyward_core::Timestamp;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::query::{FilteredQuery, Keyset, Param};
use super::rows::{
    corrupt, flag, json_list, optional_timestamp, tenancy_from_row, timestamp, to_json,
};
use super::{audit, Backend, Lock, SqlStore, Transaction};
use crate::{
    Change, ClaimedDelivery, DeliveryContent, DeliverySettlement, Page, PageRequest, StoreError,
    StoreResult, WebhookEndpointPatch, WebhookStore,
};

const ENDPOINT_COLUMNS: &str = "id, workspace_id, environment, url, description, events, \
     enabled, disabled_reason, failing_since, created_at, updated_at";

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, d.event_seq, d.type, d.state, d.attempts, \
     d.next_attempt_at, d.created_at, d.updated_at";

/// The most attempts a delivery's log lists (a delivery has 11 of its own; manual retries add
/// more).
const HISTORY_LIMIT: i64 = 50;

/// What an endpoint's events reveal: the events stream's own scope. An endpoint is a standing
/// subscription, so it may not be made or pointed elsewhere by a key that could not read the
/// stream itself.
fn scopes_to_subscribe() -> ScopeSet {
    ScopeSet::from_iter([Scope::EventsRead])
}

fn endpoint_from_row(row: &AnyRow) -> StoreResult<WebhookEndpoint> {
    let names = json_list(row, "events")?;
    Ok(WebhookEndpoint {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        events: EventFilter::parse(names.iter().map(String::as_str))
            .map_err(|_| corrupt("webhook events"))?,
        enabled: flag(row, "enabled")?,
        disabled_reason: row.try_get("disabled_reason")?,
        failing_since: optional_timestamp(row, "failing_since")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

fn delivery_from_row(row: &AnyRow) -> StoreResult<WebhookDelivery> {
    let state: String = row.try_get("state")?;
    let state = DeliveryState::parse(&state).ok_or_else(|| corrupt("delivery state"))?;
    let attempts: i64 = row.try_get("attempts")?;
    let seq: Option<i64> = row.try_get("event_seq")?;
    Ok(WebhookDelivery {
        id: row.try_get("id")?,
        endpoint_id: row.try_get("endpoint_id")?,
        event_id: seq.map(|seq| format!("evt_{seq}")),
        event_type: row.try_get("type")?,
        state,
        attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts"))?,
        next_attempt_at: (state == DeliveryState::Pending)
            .then(|| timestamp(row, "next_attempt_at"))
            .transpose()?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
        history: Vec::new(),
    })
}

fn attempt_from_row(row: &AnyRow) -> StoreResult<WebhookAttempt> {
    let status: Option<i64> = row.try_get("status")?;
    Ok(WebhookAttempt {
        attempted_at: timestamp(row, "attempted_at")?,
        status: status.and_then(|status| u16::try_from(status).ok()),
        latency_ms: row.try_get("latency_ms")?,
        error: row.try_get("error")?,
        response_excerpt: row.try_get("response_excerpt")?,
    })
}

/// Queues, in `tx`, one delivery per event numbered `first..=last` and per enabled endpoint of
/// its environment that takes its type. One statement: when no endpoint exists it finds none
/// by index and inserts nothing.
pub(super) async fn queue_deliveries(
    tx: &mut Transaction<'_>,
    events: &[(i64, &NewEvent)],
    now: Timestamp,
) -> StoreResult<()> {
    let Some((_, first)) = events.first() else {
        return Ok(());
    };
    // Every event a change records is of one environment, save alerts appended in bulk;
    // those are grouped by environment here.
    let mut environments: Vec<&Tenancy> = vec![&first.tenancy];
    for (_, event) in events {
        if !environments.contains(&&event.tenancy) {
            environments.push(&event.tenancy);
        }
    }
    for tenancy in environments {
        let endpoints = sqlx::query(
            "SELECT id, event_match FROM webhook_endpoints \
             WHERE workspace_id = $1 AND environment = $2 AND enabled = $3",
        )
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .bind(true)
        .fetch_all(&mut **tx)
        .await?;
        if endpoints.is_empty() {
            continue;
        }
        let mut rows = Vec::new();
        for endpoint in &endpoints {
            let id: String = endpoint.try_get("id")?;
            let event_match: String = endpoint.try_get("event_match")?;
            for (seq, event) in events.iter().filter(|(_, e)| &e.tenancy == tenancy) {
                let kind = event.kind.as_str();
                if event_match != "*" && !event_match.contains(&format!(",{kind},")) {
                    continue;
                }
                rows.push(delivery_row(
                    delivery_id(*seq, &id),
                    &id,
                    Some(*seq),
                    kind,
                    super::events::payload_json(event)?,
                    now,
                ));
            }
        }
        insert_deliveries(tx, rows).await?;
    }
    Ok(())
}

fn delivery_row(
    id: String,
    endpoint_id: &str,
    seq: Option<i64>,
    kind: &str,
    payload: String,
    now: Timestamp,
) -> [Param; 12] {
    [
        Param::Text(id),
        Param::Text(endpoint_id.to_owned()),
        Param::OptionalInt(seq),
        Param::Text(kind.to_owned()),
        Param::Text(payload),
        Param::Int(now.as_millis()),
        Param::Text(DeliveryState::Pending.as_str().to_owned()),
        Param::Int(0),
        Param::Int(0),
        Param::Int(now.as_millis()),
        Param::Int(now.as_millis()),
        Param::Int(now.as_millis()),
    ]
}

async fn insert_deliveries(tx: &mut Transaction<'_>, rows: Vec<[Param; 12]>) -> StoreResult<()> {
    // Rows per statement: SQLite binds parameters in time quadratic in their number.
    const ROWS_PER_STATEMENT: usize = 40;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<[Param; 12]> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
        let mut insert = FilteredQuery::new(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_seq, type, payload, \
             event_created_at, state, attempts, claims, next_attempt_at, created_at, \
             updated_at) VALUES ",
        );
        insert.push_rows(chunk);
        insert.push(" ON CONFLICT (id) DO NOTHING");
        insert.fetch_all(&mut **tx).await?;
    }
    Ok(())
}

impl SqlStore {
    async fn endpoint_in_tx(
        &self,
        tx: &mut Transaction<'_>,
        tenancy: &Tenancy,
        id: &str,
    ) -> StoreResult<(WebhookEndpoint, Vec<u8>)> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS}, sealed_secret FROM webhook_endpoints \
             WHERE id = $1 AND workspace_id = $2 AND environment = $3{}",
            self.backend.lock_rows("webhook_endpoints")
        ))
        .bind(id)
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound("webhook endpoint"))?;
        Ok((endpoint_from_row(&row)?, row.try_get("sealed_secret")?))
    }

    async fn history(&self, delivery_id: &str) -> StoreResult<Vec<WebhookAttempt>> {
        // The newest attempts, listed oldest first.
        let rows = sqlx::query(
            "SELECT attempted_at, status, latency_ms, error, response_excerpt FROM \
             (SELECT * FROM webhook_attempts WHERE delivery_id = $1 \
              ORDER BY attempted_at DESC LIMIT $2) recent ORDER BY attempted_at",
        )
        .bind(delivery_id)
        .bind(HISTORY_LIMIT)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(attempt_from_row).collect()
    }

    /// Takes the next event number for a delivery that is not an event (a test), so its id
    /// sorts among the others.
    async fn next_delivery_seq(tx: &mut Transaction<'_>) -> StoreResult<i64> {
        Ok(
            sqlx::query(
                "UPDATE event_sequence SET seq = seq + 1 WHERE singleton = 1 RETURNING seq",
            )
            .fetch_one(&mut **tx)
            .await?
            .try_get("seq")?,
        )
    }
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn create_webhook_endpoint(
        &self,
        change: &Change,
        endpoint: &WebhookEndpoint,
        sealed_secret: &[u8],
    ) -> StoreResult<()> {
        change.require_power_over(scopes_to_subscribe())?;
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, workspace_id, environment, url, description, \
             events, event_match, enabled, sealed_secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&endpoint.id)
        .bind(&endpoint.tenancy.workspace_id)
        .bind(endpoint.tenancy.environment.as_str())
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(to_json(&endpoint.events.names()))
        .bind(endpoint.events.match_column())
        .bind(endpoint.enabled)
        .bind(sealed_secret.to_vec())
        .bind(endpoint.created_at.as_millis())
        .bind(endpoint.updated_at.as_millis())
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "webhook_endpoint.create",
            &endpoint.id,
            serde_json::json!({ "url": endpoint.url, "events": endpoint.events.names() }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn webhook_endpoint(&self, tenancy: &Tenancy, id: &str) -> StoreResult<WebhookEndpoint> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE id = $1 AND workspace_id = $2 AND environment = $3"
        ))
        .bind(id)
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("webhook endpoint"))?;
        endpoint_from_row(&row)
    }

    async fn list_webhook_endpoints(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<WebhookEndpoint>> {
        let mut query = FilteredQuery::new(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE "
        ));
        query.in_environment("webhook_endpoints", tenancy);
        query
            .fetch_page(
                &self.reader,
                Keyset::NewestFirst("id"),
                page,
                endpoint_from_row,
                |endpoint| &endpoint.id,
            )
            .await
    }

    async fn update_webhook_endpoint(
        &self,
        change: &Change,
        id: &str,
        patch: &WebhookEndpointPatch,
    ) -> StoreResult<WebhookEndpoint> {
        change.require_power_over(scopes_to_subscribe())?;
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let (mut endpoint, _) = self.endpoint_in_tx(&mut tx, &change.tenancy, id).await?;
        if let Some(url) = &patch.url {
            url.clone_into(&mut endpoint.url);
        }
        if let Some(description) = &patch.description {
            description.clone_into(&mut endpoint.description);
        }
        if let Some(events) = &patch.events {
            endpoint.events = events.clone();
        }
        if let Some(enabled) = patch.enabled {
            if enabled && !endpoint.enabled {
                // Turned back on: it starts with a clean record.
                endpoint.failing_since = None;
            }
            endpoint.enabled = enabled;
            endpoint.disabled_reason = None;
        }
        endpoint.updated_at = change.now;
        sqlx::query(
            "UPDATE webhook_endpoints SET url = $1, description = $2, events = $3, \
             event_match = $4, enabled = $5, disabled_reason = $6, failing_since = $7, \
             updated_at = $8 WHERE id = $9",
        )
        .bind(&endpoint.url)
        .bind(&endpoint.description)
        .bind(to_json(&endpoint.events.names()))
        .bind(endpoint.events.match_column())
        .bind(endpoint.enabled)
        .bind(&endpoint.disabled_reason)
        .bind(endpoint.failing_since.map(Timestamp::as_millis))
        .bind(change.now.as_millis())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "webhook_endpoint.update",
            id,
            serde_json::json!({
                "url": patch.url,
                "events": patch.events.as_ref().map(EventFilter::names),
                "enabled": patch.enabled,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(endpoint)
    }

    async fn delete_webhook_endpoint(&self, change: &Change, id: &str) -> StoreResult<()> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        self.endpoint_in_tx(&mut tx, &change.tenancy, id).await?;
        // Its deliveries and their attempts go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            change,
            "webhook_endpoint.delete",
            id,
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_webhook_secret(
        &self,
        change: &Change,
        id: &str,
        sealed_secret: &[u8],
        previous_expires_at: Timestamp,
    ) -> StoreResult<WebhookEndpoint> {
        change.require_power_over(scopes_to_subscribe())?;
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let (mut endpoint, previous) = self.endpoint_in_tx(&mut tx, &change.tenancy, id).await?;
        endpoint.updated_at = change.now;
        // Only the secret just replaced keeps signing; an older one ends now.
        sqlx::query(
            "UPDATE webhook_endpoints SET sealed_secret = $1, previous_sealed_secret = $2, \
             previous_expires_at = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(sealed_secret.to_vec())
        .bind(previous)
        .bind(previous_expires_at.as_millis())
        .bind(change.now.as_millis())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "webhook_endpoint.rotate_secret",
            id,
            serde_json::json!({ "previous_expires_at": previous_expires_at.as_millis() }),
        )
        .await?;
        tx.commit().await?;
        Ok(endpoint)
    }

    async fn list_webhook_deliveries(
        &self,
        tenancy: &Tenancy,
        endpoint_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<WebhookDelivery>> {
        self.webhook_endpoint(tenancy, endpoint_id).await?;
        let mut query = FilteredQuery::new(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.endpoint_id = "
        ));
        query.bind(Param::Text(endpoint_id.to_owned()));
        let mut deliveries = query
            .fetch_page(
                &self.reader,
                Keyset::NewestFirst("d.id"),
                page,
                delivery_from_row,
                |delivery| &delivery.id,
            )
            .await?;
        for delivery in &mut deliveries.items {
            delivery.history = self.history(&delivery.id).await?;
        }
        Ok(deliveries)
    }

    async fn webhook_delivery(
        &self,
        tenancy: &Tenancy,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> StoreResult<WebhookDelivery> {
        self.webhook_endpoint(tenancy, endpoint_id).await?;
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             WHERE d.id = $1 AND d.endpoint_id = $2"
        ))
        .bind(delivery_id)
        .bind(endpoint_id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("webhook delivery"))?;
        let mut delivery = delivery_from_row(&row)?;
        delivery.history = self.history(&delivery.id).await?;
        Ok(delivery)
    }

    async fn retry_webhook_delivery(
        &self,
        change: &Change,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        self.endpoint_in_tx(&mut tx, &change.tenancy, endpoint_id)
            .await?;
        // Due now, with its id (the receiver's deduplication key) and its attempts kept.
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, next_attempt_at = $2, updated_at = $2 \
             WHERE id = $3 AND endpoint_id = $4",
        )
        .bind(DeliveryState::Pending.as_str())
        .bind(change.now.as_millis())
        .bind(delivery_id)
        .bind(endpoint_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound("webhook delivery"));
        }
        audit(
            &mut tx,
            change,
            "webhook_delivery.retry",
            delivery_id,
            serde_json::json!({ "endpoint_id": endpoint_id }),
        )
        .await?;
        tx.commit().await?;
        self.deliveries_queued.notify_one();
        Ok(())
    }

    async fn queue_test_delivery(&self, change: &Change, endpoint_id: &str) -> StoreResult<String> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let (endpoint, _) = self
            .endpoint_in_tx(&mut tx, &change.tenancy, endpoint_id)
            .await?;
        let seq = Self::next_delivery_seq(&mut tx).await?;
        let id = delivery_id(seq, &endpoint.id);
        let payload = serde_json::json!({
            "endpoint_id": endpoint.id,
            "message": "A test event from Keyward.",
        });
        insert_deliveries(
            &mut tx,
            vec![delivery_row(
                id.clone(),
                &endpoint.id,
                None,
                TEST_EVENT_TYPE,
                payload.to_string(),
                change.now,
            )],
        )
        .await?;
        audit(
            &mut tx,
            change,
            "webhook_endpoint.test",
            endpoint_id,
            serde_json::json!({ "delivery_id": id }),
        )
        .await?;
        tx.commit().await?;
        self.deliveries_queued.notify_one();
        Ok(id)
    }

    async fn claim_webhook_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        per_endpoint: u32,
        in_flight: &[(String, u32)],
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        // Candidates are locked and skipped by other nodes' claims; of those, an endpoint
        // gets only what this node's `per_endpoint` allowance has left, so one endpoint's
        // backlog never fills a node's slots. Endpoints with no allowance left are not even
        // candidates, so their backlog does not hide the others'.
        let mut query = FilteredQuery::new(
            "WITH candidates AS (SELECT d.id, d.endpoint_id, d.next_attempt_at \
             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.state = 'pending' AND e.enabled = ",
        );
        query.bind(Param::Bool(true));
        query.push(" AND d.next_attempt_at <= ");
        query.bind(Param::Int(now.as_millis()));
        for (busy, _) in in_flight.iter().filter(|(_, count)| *count >= per_endpoint) {
            query.push(" AND d.endpoint_id <> ");
            query.bind(Param::Text(busy.clone()));
        }
        query.push(" ORDER BY d.next_attempt_at LIMIT ");
        query.bind(Param::Int(i64::from(limit.saturating_mul(4))));
        if self.backend == Backend::Postgres {
            query.push(" FOR UPDATE OF d SKIP LOCKED");
        }
        query.push(")");
        let partly_busy: Vec<&(String, u32)> = in_flight
            .iter()
            .filter(|(_, count)| *count > 0 && *count < per_endpoint)
            .collect();
        if !partly_busy.is_empty() {
            query.push(", used (endpoint_id, taken) AS (VALUES ");
            query.push_rows(
                partly_busy
                    .iter()
                    .map(|(id, count)| [Param::Text(id.clone()), Param::Int(i64::from(*count))]),
            );
            query.push(")");
        }
        query.push(
            ", ranked AS (SELECT c.id, ROW_NUMBER() OVER \
             (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.id)",
        );
        if partly_busy.is_empty() {
            query.push(" AS place FROM candidates c)");
        } else {
            query.push(
                " + COALESCE(u.taken, 0) AS place FROM candidates c \
                 LEFT JOIN used u ON u.endpoint_id = c.endpoint_id)",
            );
        }
        query.push(" UPDATE webhook_deliveries SET next_attempt_at = ");
        query.bind(Param::Int(lease_until.as_millis()));
        query.push(", claims = claims + 1 WHERE id IN (SELECT id FROM ranked WHERE place <= ");
        query.bind(Param::Int(i64::from(per_endpoint)));
        query.push(" LIMIT ");
        query.bind(Param::Int(i64::from(limit)));
        query.push(
            ") RETURNING id, endpoint_id, event_seq, type, payload, event_created_at, \
             attempts, claims",
        );
        let mut tx = self.writer.begin().await?;
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut endpoint_ids: Vec<String> = rows
            .iter()
            .map(|row| row.try_get("endpoint_id"))
            .collect::<Result<_, _>>()?;
        endpoint_ids.sort();
        endpoint_ids.dedup();
        let mut endpoints = std::collections::HashMap::new();
        for id in endpoint_ids {
            let row = sqlx::query(&format!(
                "SELECT {ENDPOINT_COLUMNS}, sealed_secret, previous_sealed_secret, \
                 previous_expires_at FROM webhook_endpoints WHERE id = $1"
            ))
            .bind(&id)
            .fetch_optional(&self.reader)
            .await?;
            if let Some(row) = row {
                let previous_until = optional_timestamp(&row, "previous_expires_at")?;
                let mut secrets: Vec<Vec<u8>> = vec![row.try_get("sealed_secret")?];
                if previous_until.is_some_and(|until| until > now) {
                    if let Some(previous) =
                        row.try_get::<Option<Vec<u8>>, _>("previous_sealed_secret")?
                    {
                        secrets.push(previous);
                    }
                }
                endpoints.insert(id, (endpoint_from_row(&row)?, secrets));
            }
        }
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let endpoint_id: String = row.try_get("endpoint_id")?;
            // An endpoint deleted since the claim took its deliveries with it.
            let Some((endpoint, secrets)) = endpoints.get(&endpoint_id) else {
                continue;
            };
            let kind: String = row.try_get("type")?;
            let payload: String = row.try_get("payload")?;
            let created_at = timestamp(row, "event_created_at")?;
            let content = match row.try_get::<Option<i64>, _>("event_seq")? {
                Some(seq) => {
                    let kind = EventType::parse(&kind).ok_or_else(|| corrupt("event type"))?;
                    let (key, details) = super::events::parse_payload(&payload)?;
                    DeliveryContent::Event(Box::new(Event {
                        seq,
                        tenancy: endpoint.tenancy.clone(),
                        kind,
                        key,
                        details,
                        created_at,
                    }))
                }
                None => DeliveryContent::Test {
                    details: serde_json::from_str(&payload).map_err(|_| corrupt("test payload"))?,
                    created_at,
                },
            };
            let attempts: i64 = row.try_get("attempts")?;
            claimed.push(ClaimedDelivery {
                id: row.try_get("id")?,
                claim: row.try_get("claims")?,
                attempts: u32::try_from(attempts).map_err(|_| corrupt("attempts"))?,
                endpoint: endpoint.clone(),
                sealed_secrets: secrets.clone(),
                content,
            });
        }
        Ok(claimed)
    }

    async fn settle_webhook_delivery(&self, settlement: &DeliverySettlement) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await?;
        let attempt = &settlement.attempt;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempted_at, status, latency_ms, \
             error, response_excerpt) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&settlement.delivery_id)
        .bind(attempt.attempted_at.as_millis())
        .bind(attempt.status.map(i64::from))
        .bind(attempt.latency_ms)
        .bind(&attempt.error)
        .bind(&attempt.response_excerpt)
        .execute(&mut *tx)
        .await?;
        let (state, next) = match (settlement.succeeded, settlement.retry_at) {
            (true, _) => (DeliveryState::Succeeded, settlement.now),
            (false, Some(at)) => (DeliveryState::Pending, at),
            (false, None) => (DeliveryState::Failed, settlement.now),
        };
        // Only the latest claim settles: a node that outlived its lease records its attempt
        // but leaves the delivery to the node that claimed it since.
        let current = sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, next_attempt_at = $2, \
             attempts = attempts + 1, updated_at = $3 WHERE id = $4 AND claims = $5",
        )
        .bind(state.as_str())
        .bind(next.as_millis())
        .bind(settlement.now.as_millis())
        .bind(&settlement.delivery_id)
        .bind(settlement.claim)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !current {
            // Claimed again since (this node outlived its lease): the attempt is in the log,
            // and the endpoint's record is the current claimant's to keep.
            tx.commit().await?;
            return Ok(false);
        }
        let endpoint = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1{}",
            self.backend.lock_rows("webhook_endpoints")
        ))
        .bind(&settlement.endpoint_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(endpoint) = endpoint else {
            tx.commit().await?;
            return Ok(false);
        };
        let endpoint = endpoint_from_row(&endpoint)?;
        let mut disabled = false;
        if settlement.succeeded {
            if endpoint.failing_since.is_some() {
                sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1")
                    .bind(&endpoint.id)
                    .execute(&mut *tx)
                    .await?;
            }
        } else {
            let since = endpoint.failing_since.unwrap_or(attempt.attempted_at);
            disabled = endpoint.enabled
                && should_disable(since, settlement.now, settlement.disable_after_ms);
            let reason = disabled.then(|| {
                format!(
                    "every delivery failed for {} s",
                    (settlement.now.as_millis() - since.as_millis()) / 1000
                )
            });
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = $1, enabled = $2, \
                 disabled_reason = COALESCE($3, disabled_reason), updated_at = $4 WHERE id = $5",
            )
            .bind(since.as_millis())
            .bind(endpoint.enabled && !disabled)
            .bind(&reason)
            .bind(if disabled {
                settlement.now.as_millis()
            } else {
                endpoint.updated_at.as_millis()
            })
            .bind(&endpoint.id)
            .execute(&mut *tx)
            .await?;
            if let Some(reason) = reason {
                let alert = NewEvent::webhook_disabled(
                    &endpoint.tenancy,
                    &endpoint.id,
                    &endpoint.url,
                    &reason,
                );
                super::events::record(&mut tx, self.backend, &[alert], settlement.now).await?;
            }
        }
        tx.commit().await?;
        if disabled {
            self.events_committed.notify_one();
            self.deliveries_queued.notify_one();
        }
        Ok(disabled)
    }

    async fn purge_webhook_deliveries(&self, before: Timestamp) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM webhook_deliveries WHERE state <> 'pending' AND updated_at < $1",
        )
        .bind(before.as_millis())
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    fn deliveries_queued(&self) -> std::sync::Arc<tokio::sync::Notify> {
        std::sync::Arc::clone(&self.deliveries_queued)
    }
}
