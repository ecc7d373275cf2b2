//! Webhook endpoints and their deliveries (SPEC §4.8). The event log is the outbox: a
//! worker turns recorded events into deliveries after their commit
//! ([`WebhookStore::queue_webhook_deliveries`], under the `webhook_fanout` cursor), so a
//! committed event is never left undelivered; workers on every node claim due deliveries
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and settle them in batches
//! ([`WebhookStore::settle_webhook_deliveries`]).

use std::collections::{BTreeMap, BTreeSet};

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

/// The longest a failing endpoint is paused before its next try.
const MAX_PAUSE_MS: i64 = 5 * 60 * 1000;

/// Attempts per INSERT statement when a batch is settled.
const ATTEMPT_ROWS_PER_STATEMENT: usize = 40;

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
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_seq, type, payload, state, \
             attempts, claims, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, NULL, $3, $4, 'pending', 0, 0, $5, $5, $5)",
        )
        .bind(&id)
        .bind(&endpoint.id)
        .bind(TEST_EVENT_TYPE)
        .bind(payload.to_string())
        .bind(change.now.as_millis())
        .execute(&mut *tx)
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

    async fn queue_webhook_deliveries(&self, now: Timestamp, limit: u32) -> StoreResult<u32> {
        let mut tx = self.writer.begin().await?;
        let busy_elsewhere = if self.backend == Backend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let Some(after) = sqlx::query(&format!(
            "SELECT last_seq FROM webhook_fanout WHERE singleton = 1{busy_elsewhere}"
        ))
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(0);
        };
        let after: i64 = after.try_get("last_seq")?;
        let batch = sqlx::query(
            "SELECT COUNT(*) AS covered, MAX(seq) AS last FROM \
             (SELECT seq FROM events WHERE seq > $1 ORDER BY seq LIMIT $2) batch",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_one(&mut *tx)
        .await?;
        let covered: i64 = batch.try_get("covered")?;
        let Some(last) = batch.try_get::<Option<i64>, _>("last")? else {
            return Ok(0);
        };
        // One statement for the batch, with no parameter per row and no copy of the payload
        // (a delivery sends its event's). Endpoints take events recorded since their
        // creation; a paused (failing) endpoint's new deliveries wait for its pause to end.
        sqlx::query(&format!(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_seq, type, state, attempts, \
             claims, next_attempt_at, created_at, updated_at) \
             SELECT 'whd_' || {seq} || substr(e.id, 5), e.id, ev.seq, ev.type, 'pending', 0, \
             0, {due}, $1, $1 FROM events ev JOIN webhook_endpoints e \
             ON e.workspace_id = ev.workspace_id AND e.environment = ev.environment \
             WHERE ev.seq > $2 AND ev.seq <= $3 AND e.enabled = $4 \
             AND e.created_at <= ev.created_at \
             AND (e.event_match = '*' OR e.event_match LIKE '%,' || ev.type || ',%') \
             ON CONFLICT (id) DO NOTHING",
            seq = self.backend.padded_number("ev.seq"),
            due = self.backend.greatest("$1", "COALESCE(e.paused_until, $1)"),
        ))
        .bind(now.as_millis())
        .bind(after)
        .bind(last)
        .bind(true)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE webhook_fanout SET last_seq = $1 WHERE singleton = 1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(u32::try_from(covered).unwrap_or(limit))
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
            ") RETURNING id, endpoint_id, event_seq, type, payload, created_at, attempts, \
             claims",
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
        // Event deliveries carry their event's payload, read once per claim.
        let seqs: Vec<i64> = rows
            .iter()
            .filter_map(|row| row.try_get::<Option<i64>, _>("event_seq").ok().flatten())
            .collect();
        let mut events = std::collections::HashMap::new();
        for chunk in seqs.chunks(ATTEMPT_ROWS_PER_STATEMENT) {
            let mut query = FilteredQuery::new(
                "SELECT seq, type, payload, created_at FROM events WHERE seq IN (",
            );
            for (index, seq) in chunk.iter().enumerate() {
                if index > 0 {
                    query.push(", ");
                }
                query.bind(Param::Int(*seq));
            }
            query.push(")");
            for row in query.fetch_all(&self.reader).await? {
                let seq: i64 = row.try_get("seq")?;
                let kind: String = row.try_get("type")?;
                let payload: String = row.try_get("payload")?;
                events.insert(seq, (kind, payload, timestamp(&row, "created_at")?));
            }
        }
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let endpoint_id: String = row.try_get("endpoint_id")?;
            // An endpoint deleted since the claim took its deliveries with it.
            let Some((endpoint, secrets)) = endpoints.get(&endpoint_id) else {
                continue;
            };
            let content = match row.try_get::<Option<i64>, _>("event_seq")? {
                Some(seq) => match events.get(&seq) {
                    Some((kind, payload, created_at)) => {
                        let kind = EventType::parse(kind).ok_or_else(|| corrupt("event type"))?;
                        let (key, details) = super::events::parse_payload(payload)?;
                        DeliveryContent::Event(Box::new(Event {
                            seq,
                            tenancy: endpoint.tenancy.clone(),
                            kind,
                            key,
                            details,
                            created_at: *created_at,
                        }))
                    }
                    None => DeliveryContent::Forgotten,
                },
                None => {
                    let payload: Option<String> = row.try_get("payload")?;
                    DeliveryContent::Test {
                        details: serde_json::from_str(payload.as_deref().unwrap_or("{}"))
                            .map_err(|_| corrupt("test payload"))?,
                        created_at: timestamp(row, "created_at")?,
                    }
                }
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

    async fn settle_webhook_deliveries(
        &self,
        settlements: &[DeliverySettlement],
    ) -> StoreResult<Vec<String>> {
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        // One transaction for a batch of attempts: on SQLite (one writer, a sync per commit)
        // and PostgreSQL alike, deliveries must not cost a commit each.
        let mut tx = self.writer.begin().await?;
        // The batch's endpoints are locked first, in id order, as every other writer of an
        // endpoint's deliveries does (deleting the endpoint, pausing it): locking them after
        // the deliveries would deadlock with a delete cascading from the endpoint down. An
        // endpoint deleted while its attempts were out took their deliveries with it; its
        // attempts are dropped, not the batch.
        let endpoint_ids: BTreeSet<&str> = settlements
            .iter()
            .map(|settlement| settlement.endpoint_id.as_str())
            .collect();
        let mut lock = FilteredQuery::new("SELECT id FROM webhook_endpoints WHERE id IN (");
        for (index, endpoint_id) in endpoint_ids.iter().enumerate() {
            if index > 0 {
                lock.push(", ");
            }
            lock.bind(Param::Text((*endpoint_id).to_owned()));
        }
        lock.push(") ORDER BY id");
        if self.backend == Backend::Postgres {
            lock.push(" FOR NO KEY UPDATE");
        }
        let existing: BTreeSet<String> = lock
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        let settlements: Vec<&DeliverySettlement> = settlements
            .iter()
            .filter(|settlement| existing.contains(&settlement.endpoint_id))
            .collect();
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        for chunk in settlements.chunks(ATTEMPT_ROWS_PER_STATEMENT) {
            let mut insert = FilteredQuery::new(
                "INSERT INTO webhook_attempts (delivery_id, attempted_at, status, latency_ms, \
                 error, response_excerpt) VALUES ",
            );
            insert.push_rows(chunk.iter().map(|settlement| {
                let attempt = &settlement.attempt;
                [
                    Param::Text(settlement.delivery_id.clone()),
                    Param::Int(attempt.attempted_at.as_millis()),
                    Param::OptionalInt(attempt.status.map(i64::from)),
                    Param::Int(attempt.latency_ms),
                    Param::OptionalText(attempt.error.clone()),
                    Param::OptionalText(attempt.response_excerpt.clone()),
                ]
            }));
            insert.fetch_all(&mut *tx).await?;
        }
        // Only the latest claim settles: a node that outlived its lease records its attempt
        // but leaves the delivery, and its endpoint's record, to the node that claimed it
        // since.
        let mut current = Vec::with_capacity(settlements.len());
        // Successes, the bulk of a healthy batch, in one statement per chunk.
        let (successes, failures): (Vec<&DeliverySettlement>, Vec<&DeliverySettlement>) =
            settlements
                .iter()
                .copied()
                .partition(|settlement| settlement.succeeded);
        for chunk in successes.chunks(ATTEMPT_ROWS_PER_STATEMENT) {
            let now = chunk.iter().map(|s| s.now).max().unwrap_or(chunk[0].now);
            let mut update = FilteredQuery::new("UPDATE webhook_deliveries SET state = ");
            update.bind(Param::Text(DeliveryState::Succeeded.as_str().to_owned()));
            update.push(", next_attempt_at = ");
            update.bind(Param::Int(now.as_millis()));
            update.push(", attempts = attempts + 1, updated_at = ");
            update.bind(Param::Int(now.as_millis()));
            update.push(" WHERE (id, claims) IN (VALUES ");
            update.push_rows(chunk.iter().map(|settlement| {
                [
                    Param::Text(settlement.delivery_id.clone()),
                    Param::Int(settlement.claim),
                ]
            }));
            update.push(") RETURNING id");
            let settled: BTreeSet<String> = update
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| row.try_get("id"))
                .collect::<Result<_, _>>()?;
            current.extend(
                chunk
                    .iter()
                    .copied()
                    .filter(|settlement| settled.contains(&settlement.delivery_id)),
            );
        }
        for settlement in failures {
            let (state, next) = match settlement.retry_at {
                Some(at) => (DeliveryState::Pending, at),
                None => (DeliveryState::Failed, settlement.now),
            };
            let updated = sqlx::query(
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
            .rows_affected();
            if updated == 1 {
                current.push(settlement);
            }
        }
        // An endpoint that accepted anything in the batch is alive; the others that failed
        // are failing since their first failure (or before).
        let answered: BTreeSet<&str> = current
            .iter()
            .filter(|settlement| settlement.succeeded)
            .map(|settlement| settlement.endpoint_id.as_str())
            .collect();
        // Per failing endpoint: its first failure here, the latest settlement, and when it is
        // next worth trying (the soonest retry among its failures, at most a few minutes
        // away, so that a recovered endpoint is found soon whatever its oldest delivery's
        // schedule says).
        let mut failed: BTreeMap<&str, (Timestamp, &DeliverySettlement, Timestamp)> =
            BTreeMap::new();
        for settlement in current.iter().filter(|settlement| !settlement.succeeded) {
            if answered.contains(settlement.endpoint_id.as_str()) {
                continue;
            }
            let first = settlement.attempt.attempted_at;
            let latest_pause = settlement.now.plus_millis(MAX_PAUSE_MS);
            let retry = settlement
                .retry_at
                .unwrap_or(latest_pause)
                .min(latest_pause);
            failed
                .entry(settlement.endpoint_id.as_str())
                .and_modify(|(since, latest, soonest)| {
                    *since = (*since).min(first);
                    *soonest = (*soonest).min(retry);
                    if settlement.now > latest.now {
                        *latest = settlement;
                    }
                })
                .or_insert((first, settlement, retry));
        }
        let batch_now = settlements
            .iter()
            .map(|settlement| settlement.now)
            .max()
            .unwrap_or(settlements[0].now);
        for endpoint_id in &answered {
            let paused_until: Option<i64> = sqlx::query(&format!(
                "SELECT paused_until FROM webhook_endpoints WHERE id = $1{}",
                self.backend.lock_rows_keeping_keys("webhook_endpoints")
            ))
            .bind(endpoint_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get("paused_until"))
            .transpose()?
            .flatten();
            let Some(paused_until) = paused_until else {
                continue;
            };
            // Recovered: what waited for it is due now.
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE endpoint_id = $2 \
                 AND state = 'pending' AND claims = attempts AND next_attempt_at <= $3",
            )
            .bind(batch_now.as_millis())
            .bind(endpoint_id)
            .bind(paused_until)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = NULL, paused_until = NULL \
                 WHERE id = $1",
            )
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await?;
        }
        let mut disabled = Vec::new();
        // In id order, so two nodes settling the same endpoints lock them in the same order.
        for (endpoint_id, (first_failure, latest, paused_until)) in failed {
            let row = sqlx::query(&format!(
                "SELECT {ENDPOINT_COLUMNS}, paused_until FROM webhook_endpoints WHERE id = $1{}",
                self.backend.lock_rows_keeping_keys("webhook_endpoints")
            ))
            .bind(endpoint_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { continue };
            let endpoint = endpoint_from_row(&row)?;
            let held_until: i64 = row
                .try_get::<Option<i64>, _>("paused_until")?
                .unwrap_or_default()
                .max(latest.now.as_millis());
            let since = endpoint.failing_since.unwrap_or(first_failure);
            let disable =
                endpoint.enabled && should_disable(since, latest.now, latest.disable_after_ms);
            let reason = disable.then(|| {
                format!(
                    "every delivery failed for {} s",
                    (latest.now.as_millis() - since.as_millis()) / 1000
                )
            });
            // A failing endpoint is paused until the latest failure's retry: the deliveries
            // due meanwhile wait with it, instead of each failing in turn (and a dead
            // endpoint's backlog never sits due in front of the other endpoints' work).
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE endpoint_id = $2 \
                 AND state = 'pending' AND claims = attempts AND next_attempt_at <= $3",
            )
            .bind(paused_until.as_millis())
            .bind(&endpoint.id)
            .bind(held_until)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = $1, enabled = $2, \
                 disabled_reason = COALESCE($3, disabled_reason), updated_at = $4, \
                 paused_until = $6 WHERE id = $5",
            )
            .bind(since.as_millis())
            .bind(endpoint.enabled && !disable)
            .bind(&reason)
            .bind(if disable {
                latest.now.as_millis()
            } else {
                endpoint.updated_at.as_millis()
            })
            .bind(&endpoint.id)
            .bind(paused_until.as_millis())
            .execute(&mut *tx)
            .await?;
            if let Some(reason) = reason {
                let alert = NewEvent::webhook_disabled(
                    &endpoint.tenancy,
                    &endpoint.id,
                    &endpoint.url,
                    &reason,
                );
                super::events::record(&mut tx, self.backend, &[alert], latest.now).await?;
                disabled.push(endpoint.id);
            }
        }
        tx.commit().await?;
        if !disabled.is_empty() {
            self.events_committed.notify_one();
            self.deliveries_queued.notify_one();
        }
        Ok(disabled)
    }

    async fn pause_webhook_endpoint(&self, endpoint_id: &str, until: Timestamp) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        let held = sqlx::query(&format!(
            "SELECT id FROM webhook_endpoints WHERE id = $1{}",
            self.backend.lock_rows_keeping_keys("webhook_endpoints")
        ))
        .bind(endpoint_id)
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            return Ok(());
        }
        sqlx::query(&format!(
            "UPDATE webhook_endpoints SET paused_until = {} WHERE id = $2",
            self.backend.greatest("COALESCE(paused_until, 0)", "$1")
        ))
        .bind(until.as_millis())
        .bind(endpoint_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE endpoint_id = $2 \
             AND state = 'pending' AND claims = attempts AND next_attempt_at < $1",
        )
        .bind(until.as_millis())
        .bind(endpoint_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
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
