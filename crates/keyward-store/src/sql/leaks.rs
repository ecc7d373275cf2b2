//! Leaked keys (SPEC §4.9): a report applies its environment's `leaked_key_action` to every
//! reported credential of that environment in one transaction, with an audit entry and a
//! `key.leaked` event per report, and one cluster announcement for them all.

use async_trait::async_trait;
use keyward_core::event::{EventType, NewEvent};
use keyward_core::leak::{LeakOutcome, LeakedKeyAction};
use keyward_core::KeyHash;
use sqlx::Row;

use super::keys::{key_in_tx, write_key};
use super::rows::corrupt;
use super::secrets::secrets_of;
use super::{Lock, SqlStore, Transaction};
use crate::cluster::Stale;
use crate::{
    Change, Changed, LeakStore, LeakedCredential, LeakedCredentialReport, StoreError, StoreResult,
};

async fn leaked_key_action(
    tx: &mut Transaction<'_>,
    change: &Change,
) -> StoreResult<LeakedKeyAction> {
    let action: String = sqlx::query(
        "SELECT leaked_key_action FROM environments WHERE workspace_id = $1 AND environment = $2",
    )
    .bind(&change.tenancy.workspace_id)
    .bind(change.tenancy.environment.as_str())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("environment"))?
    .try_get("leaked_key_action")?;
    LeakedKeyAction::parse(&action).ok_or_else(|| corrupt("leaked_key_action"))
}

/// The details an audit entry and a `key.leaked` event carry: where, who says so, and what
/// Keyward did. Never the secret.
fn report_details(
    report: &LeakedCredentialReport,
    outcome: LeakOutcome,
) -> serde_json::Map<String, serde_json::Value> {
    let mut details = serde_json::Map::new();
    details.insert("url".into(), report.report.url.clone().into());
    details.insert("source".into(), report.report.source.clone().into());
    details.insert("action".into(), outcome.as_str().into());
    details
}

/// One `key.leaked` per key and place it was seen: a scanner that reports the same find again
/// (a replayed request, a rescan) raises nothing new.
fn dedup_key(credential_id: &str, report: &LeakedCredentialReport) -> String {
    let place = KeyHash::of(report.report.url.as_deref().unwrap_or_default()).to_hex();
    format!("key.leaked:{credential_id}:{place}")
}

#[async_trait]
impl LeakStore for SqlStore {
    async fn report_leaks(
        &self,
        change: &Change,
        reports: &[LeakedCredentialReport],
    ) -> StoreResult<Changed<Vec<LeakOutcome>>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let action = leaked_key_action(&mut tx, change).await?;
        let mut outcomes = Vec::with_capacity(reports.len());
        let mut events = Vec::new();
        let mut stale: Vec<KeyHash> = Vec::new();
        for (index, report) in reports.iter().enumerate() {
            let outcome = match &report.credential {
                LeakedCredential::Key(id) => {
                    let mut key = match key_in_tx(&mut tx, self.backend, &change.tenancy, id).await
                    {
                        Ok(key) => key,
                        Err(StoreError::NotFound(_)) => {
                            outcomes.push(LeakOutcome::Unknown);
                            continue;
                        }
                        Err(error) => return Err(error),
                    };
                    let outcome = match action {
                        _ if key.revoked_at.is_some() => LeakOutcome::AlreadyRevoked,
                        LeakedKeyAction::Revoke => {
                            key.revoked_at = Some(change.now);
                            LeakOutcome::Revoked
                        }
                        LeakedKeyAction::Disable if key.enabled => {
                            key.enabled = false;
                            LeakOutcome::Disabled
                        }
                        LeakedKeyAction::Disable | LeakedKeyAction::Notify => LeakOutcome::Notified,
                    };
                    if outcome.is_true_positive() {
                        let mut leaked =
                            NewEvent::about(&change.tenancy, EventType::KeyLeaked, &key);
                        leaked.details = report_details(report, outcome);
                        leaked.dedup_key = Some(dedup_key(&key.id, report));
                        events.push(leaked);
                    }
                    if matches!(outcome, LeakOutcome::Revoked | LeakOutcome::Disabled) {
                        key.updated_at = change.now;
                        write_key(&mut tx, &key).await?;
                        stale.extend(secrets_of(&mut tx, &key.id).await?.iter().map(|s| s.hash));
                        let follow_up = if outcome == LeakOutcome::Revoked {
                            EventType::KeyRevoked
                        } else {
                            EventType::KeyUpdated
                        };
                        events.push(NewEvent::about(&change.tenancy, follow_up, &key));
                    }
                    outcome
                }
                LeakedCredential::RootKey(id) => {
                    let revoked_at: Option<Option<i64>> = sqlx::query(&format!(
                        "SELECT r.revoked_at FROM root_keys r \
                         WHERE r.id = $1 AND r.workspace_id = $2 AND r.environment = $3{}",
                        self.backend.lock_rows("r")
                    ))
                    .bind(id)
                    .bind(&change.tenancy.workspace_id)
                    .bind(change.tenancy.environment.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get("revoked_at"))
                    .transpose()?;
                    let outcome = match revoked_at {
                        None => LeakOutcome::Unknown,
                        Some(Some(_)) => LeakOutcome::AlreadyRevoked,
                        // A root key has no "disabled" state: a leaked one is revoked unless
                        // the environment only wants to hear of it.
                        Some(None) if action == LeakedKeyAction::Notify => LeakOutcome::Notified,
                        Some(None) => LeakOutcome::Revoked,
                    };
                    if outcome == LeakOutcome::Revoked {
                        sqlx::query("UPDATE root_keys SET revoked_at = $1 WHERE id = $2")
                            .bind(change.now.as_millis())
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        stale.extend(secrets_of(&mut tx, id).await?.iter().map(|s| s.hash));
                    }
                    if outcome.is_true_positive() {
                        let mut details = report_details(report, outcome);
                        details.insert("root_key_id".into(), id.clone().into());
                        events.push(NewEvent {
                            tenancy: change.tenancy.clone(),
                            kind: EventType::KeyLeaked,
                            key: None,
                            details,
                            dedup_key: Some(dedup_key(id, report)),
                        });
                    }
                    outcome
                }
            };
            let target = match &report.credential {
                LeakedCredential::Key(id) | LeakedCredential::RootKey(id) => id,
            };
            // One entry per report, each with its own id.
            let entry = Change {
                audit_id: if index == 0 {
                    change.audit_id.clone()
                } else {
                    format!("{}{index:04}", change.audit_id)
                },
                ..change.clone()
            };
            super::audit(
                &mut tx,
                &entry,
                "key.report_leak",
                target,
                serde_json::Value::Object(report_details(report, outcome)),
            )
            .await?;
            outcomes.push(outcome);
        }
        super::events::record(&mut tx, self.backend, &events, change.now).await?;
        self.finish_change(tx, outcomes, Stale::Secrets(stale), change.now)
            .await
    }
}
