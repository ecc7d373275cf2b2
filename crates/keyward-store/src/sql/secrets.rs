//! The secrets table: every credential's hashed secrets, shared by keys, root keys, public keys and workspace keys.

use keyward_core::model::SecretRecord;
use keyward_core::{KeyHash, Timestamp};

use sqlx::Row;

use super::rows::secret_from_row;
use super::Transaction;
use crate::cluster::Stale;
use crate::{workspace_key_cache_hash, Conflict, LookupScan, StoreError, StoreResult};

pub(super) async fn insert_secret(
    tx: &mut Transaction<'_>,
    hash: KeyHash,
    credential_id: &str,
    expires_at: Option<Timestamp>,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO secrets (hash, credential_id, expires_at) VALUES ($1, $2, $3)")
        .bind(hash.as_bytes().to_vec())
        .bind(credential_id)
        .bind(expires_at.map(Timestamp::as_millis))
        .execute(&mut **tx)
        .await
        .map_err(StoreError::conflict_if_duplicate(Conflict::SecretExists))?;
    Ok(())
}

/// Every secret of a credential, as what caches must forget when it changes.
pub(super) async fn secret_hashes(
    tx: &mut Transaction<'_>,
    credential_id: &str,
) -> StoreResult<Stale> {
    let secrets = secrets_of(tx, credential_id).await?;
    Ok(Stale::Secrets(secrets.iter().map(|s| s.hash).collect()))
}

pub(super) async fn secrets_of(
    tx: &mut Transaction<'_>,
    credential_id: &str,
) -> StoreResult<Vec<SecretRecord>> {
    let rows = sqlx::query(
        "SELECT hash, expires_at AS secret_expires_at FROM secrets WHERE credential_id = $1",
    )
    .bind(credential_id)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(secret_from_row).collect()
}

/// Ends a credential's current secrets at `previous_expire_at` (or at once), for a rotation.
/// A grace period can shorten a previous secret's life, never lengthen it. Returns every
/// secret the credential had, which caches must forget.
pub(super) async fn supersede_secrets(
    tx: &mut Transaction<'_>,
    credential_id: &str,
    previous_expire_at: Option<Timestamp>,
    now: Timestamp,
) -> StoreResult<Vec<KeyHash>> {
    let previous = secrets_of(tx, credential_id).await?;
    for secret in &previous {
        let still_in_grace = secret.expires_at.is_none_or(|end| end > now);
        let end = match (previous_expire_at, secret.expires_at) {
            (Some(grace), Some(existing)) => Some(grace.min(existing)),
            (grace, None) => grace,
            (None, Some(_)) => None,
        };
        match end {
            Some(end) if still_in_grace => {
                sqlx::query("UPDATE secrets SET expires_at = $1 WHERE hash = $2")
                    .bind(end.as_millis())
                    .bind(secret.hash.as_bytes().to_vec())
                    .execute(&mut **tx)
                    .await?;
            }
            _ => {
                sqlx::query("DELETE FROM secrets WHERE hash = $1")
                    .bind(secret.hash.as_bytes().to_vec())
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(previous.iter().map(|secret| secret.hash).collect())
}

pub(super) async fn count_lookup_hashes(reader: &sqlx::AnyPool) -> StoreResult<u64> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM secrets) + (SELECT COUNT(*) FROM workspace_keys) AS n",
    )
    .fetch_one(reader)
    .await?;
    Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
}

/// One page of [`crate::KeyStore::scan_lookup_hashes`]: keyset pages, each a short read, so
/// that a scan of millions holds no snapshot open.
pub(super) async fn scan_lookup_hashes(
    reader: &sqlx::AnyPool,
    from: &LookupScan,
    limit: u32,
) -> StoreResult<(Vec<KeyHash>, Option<LookupScan>)> {
    let page = i64::from(limit.max(1));
    match from {
        LookupScan::SecretsAfter(after) => {
            let rows =
                sqlx::query("SELECT hash FROM secrets WHERE hash > $1 ORDER BY hash LIMIT $2")
                    .bind(after.clone())
                    .bind(page)
                    .fetch_all(reader)
                    .await?;
            let mut hashes = Vec::with_capacity(rows.len());
            for row in &rows {
                let bytes: Vec<u8> = row.try_get("hash")?;
                hashes.push(
                    KeyHash::from_slice(&bytes).ok_or_else(|| {
                        StoreError::Corrupt("a secret hash is not 32 bytes".into())
                    })?,
                );
            }
            let next = match rows.last() {
                Some(last) if rows.len() as i64 == page => {
                    LookupScan::SecretsAfter(last.try_get("hash")?)
                }
                _ => LookupScan::WorkspaceKeysAfter(String::new()),
            };
            Ok((hashes, Some(next)))
        }
        LookupScan::WorkspaceKeysAfter(after) => {
            let rows =
                sqlx::query("SELECT id FROM workspace_keys WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(after.as_str())
                    .bind(page)
                    .fetch_all(reader)
                    .await?;
            let ids = rows
                .iter()
                .map(|row| row.try_get::<String, _>("id"))
                .collect::<Result<Vec<_>, _>>()?;
            let hashes = ids.iter().map(|id| workspace_key_cache_hash(id)).collect();
            let next = match ids.last() {
                Some(last) if ids.len() as i64 == page => {
                    Some(LookupScan::WorkspaceKeysAfter(last.clone()))
                }
                _ => None,
            };
            Ok((hashes, next))
        }
    }
}
