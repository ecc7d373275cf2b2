//! Public keys, signing keys, workspace keys and seen signatures.

use async_trait::async_trait;
use keyward_core::model::{
    JwtKeySource, JwtSettings, PublicKey, PublicKeyKind, SealedSecret, SigningKey, Tenancy,
    WorkspaceKey,
};
use keyward_core::scope::ScopeSet;
use keyward_core::token::JwtAlgorithm;
use keyward_core::{KeyHash, Timestamp};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{
    app_in_tx, audit, corrupt, insert_secret, json_list, optional_timestamp, secret_from_row,
    secret_hashes, supersede_secrets, tenancy_from_row, timestamp, to_json, usage, FilteredQuery,
    Keyset, Lock, SqlStore, Transaction,
};
use crate::cluster::Stale;
use crate::{
    workspace_key_cache_hash, Change, Changed, CredentialStore, FoundPublicKey, FoundWorkspaceKey,
    Page, PageRequest, Reference, StoreError, StoreResult,
};

const PUBLIC_KEY_COLUMNS: &str = "p.id, p.workspace_id, p.environment, p.kind, p.name, p.key, \
     p.jwks_url, p.inline_key, p.issuer, p.audience, p.algorithms, p.subject_claim, \
     p.self_service_app, p.max_keys_per_user, p.rate_limit_scheme, p.created_at, p.updated_at";

const SIGNING_KEY_SELECT: &str = "SELECT id, workspace_id, environment, name, public_key_pem, \
     created_at FROM signing_keys";

const WORKSPACE_KEY_SELECT: &str = "SELECT id, workspace_id, environment, name, scopes, start, \
     rate_limit_scheme, limit_meter, sealed_secret, previous_sealed_secret, previous_expires_at, \
     created_at, updated_at FROM workspace_keys";

fn public_key_from_row(row: &AnyRow) -> StoreResult<PublicKey> {
    let kind: String = row.try_get("kind")?;
    let kind = match kind.as_str() {
        "client" => PublicKeyKind::Client,
        "jwt" => {
            let jwks_url: Option<String> = row.try_get("jwks_url")?;
            let inline: Option<String> = row.try_get("inline_key")?;
            let source = match (jwks_url, inline) {
                (Some(url), None) => JwtKeySource::JwksUrl(url),
                (None, Some(key)) => JwtKeySource::Inline(key),
                _ => return Err(corrupt("public key source")),
            };
            let algorithms = json_list(row, "algorithms")?
                .iter()
                .map(|name| JwtAlgorithm::parse(name).ok_or_else(|| corrupt("algorithm")))
                .collect::<StoreResult<_>>()?;
            PublicKeyKind::Jwt(JwtSettings {
                source,
                issuer: row.try_get("issuer")?,
                audience: row.try_get("audience")?,
                algorithms,
                subject_claim: row
                    .try_get::<Option<String>, _>("subject_claim")?
                    .unwrap_or_else(|| "sub".to_owned()),
            })
        }
        _ => return Err(corrupt("public key kind")),
    };
    let max_keys: i64 = row.try_get("max_keys_per_user")?;
    Ok(PublicKey {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        name: row.try_get("name")?,
        key: row.try_get("key")?,
        kind,
        self_service_app: row.try_get("self_service_app")?,
        max_keys_per_user: u32::try_from(max_keys).map_err(|_| corrupt("max_keys_per_user"))?,
        rate_limit_scheme: row.try_get("rate_limit_scheme")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

fn signing_key_from_row(row: &AnyRow) -> StoreResult<SigningKey> {
    Ok(SigningKey {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        name: row.try_get("name")?,
        public_key_pem: row.try_get("public_key_pem")?,
        created_at: timestamp(row, "created_at")?,
    })
}

fn workspace_key_from_row(row: &AnyRow) -> StoreResult<WorkspaceKey> {
    let names = json_list(row, "scopes")?;
    Ok(WorkspaceKey {
        id: row.try_get("id")?,
        tenancy: tenancy_from_row(row)?,
        name: row.try_get("name")?,
        scopes: ScopeSet::parse(names.iter().map(String::as_str)).map_err(|_| corrupt("scopes"))?,
        rate_limit_scheme: row.try_get("rate_limit_scheme")?,
        limit_meter: row.try_get("limit_meter")?,
        start: row.try_get("start")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

async fn public_key_in_tx(
    tx: &mut Transaction<'_>,
    store: &SqlStore,
    tenancy: &Tenancy,
    id: &str,
) -> StoreResult<PublicKey> {
    let row = sqlx::query(&format!(
        "SELECT {PUBLIC_KEY_COLUMNS} FROM public_keys p \
         WHERE p.id = $1 AND p.workspace_id = $2 AND p.environment = $3{}",
        store.backend.lock_rows("p")
    ))
    .bind(id)
    .bind(&tenancy.workspace_id)
    .bind(tenancy.environment.as_str())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("public key"))?;
    public_key_from_row(&row)
}

async fn workspace_key_in_tx(
    tx: &mut Transaction<'_>,
    store: &SqlStore,
    tenancy: &Tenancy,
    id: &str,
) -> StoreResult<(WorkspaceKey, Vec<u8>)> {
    let row = sqlx::query(&format!(
        "{WORKSPACE_KEY_SELECT} WHERE id = $1 AND workspace_id = $2 AND environment = $3{}",
        store.backend.lock_rows("workspace_keys")
    ))
    .bind(id)
    .bind(&tenancy.workspace_id)
    .bind(tenancy.environment.as_str())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound("workspace key"))?;
    Ok((workspace_key_from_row(&row)?, row.try_get("sealed_secret")?))
}

#[async_trait]
impl CredentialStore for SqlStore {
    async fn create_public_key(
        &self,
        change: &Change,
        key: &PublicKey,
    ) -> StoreResult<Changed<()>> {
        change.require_power_over(key.conferred_scopes())?;
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        usage::require_scheme(
            &mut tx,
            self.backend,
            &key.tenancy,
            key.rate_limit_scheme.as_deref(),
        )
        .await?;
        if let Some(slug) = &key.self_service_app {
            app_in_tx(&mut tx, self.backend, Lock::Shared, &key.tenancy, slug)
                .await
                .map_err(|error| match error {
                    StoreError::NotFound(_) => StoreError::InvalidReference(Reference::UnknownApp),
                    other => other,
                })?;
        }
        let (kind, jwks_url, inline, issuer, audience, algorithms, subject_claim) = match &key.kind
        {
            PublicKeyKind::Client => ("client", None, None, None, None, None, None),
            PublicKeyKind::Jwt(jwt) => {
                let (url, inline) = match &jwt.source {
                    JwtKeySource::JwksUrl(url) => (Some(url.as_str()), None),
                    JwtKeySource::Inline(key) => (None, Some(key.as_str())),
                };
                let names: Vec<&str> = jwt.algorithms.iter().map(|alg| alg.as_str()).collect();
                (
                    "jwt",
                    url,
                    inline,
                    jwt.issuer.as_deref(),
                    jwt.audience.as_deref(),
                    Some(to_json(&names)),
                    Some(jwt.subject_claim.as_str()),
                )
            }
        };
        sqlx::query(
            "INSERT INTO public_keys (id, workspace_id, environment, kind, name, key, jwks_url, \
             inline_key, issuer, audience, algorithms, subject_claim, self_service_app, \
             max_keys_per_user, rate_limit_scheme, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&key.id)
        .bind(&key.tenancy.workspace_id)
        .bind(key.tenancy.environment.as_str())
        .bind(kind)
        .bind(&key.name)
        .bind(&key.key)
        .bind(jwks_url)
        .bind(inline)
        .bind(issuer)
        .bind(audience)
        .bind(algorithms)
        .bind(subject_claim)
        .bind(&key.self_service_app)
        .bind(i64::from(key.max_keys_per_user))
        .bind(&key.rate_limit_scheme)
        .bind(key.created_at.as_millis())
        .bind(key.updated_at.as_millis())
        .execute(&mut *tx)
        .await?;
        let hash = KeyHash::of(&key.key);
        insert_secret(&mut tx, hash, &key.id, None).await?;
        audit(
            &mut tx,
            change,
            "public_key.create",
            &key.id,
            serde_json::json!({ "name": key.name, "type": kind }),
        )
        .await?;
        self.finish_change(tx, (), Stale::Secrets(vec![hash]), change.now)
            .await
    }

    async fn public_key(&self, tenancy: &Tenancy, id: &str) -> StoreResult<PublicKey> {
        let row = sqlx::query(&format!(
            "SELECT {PUBLIC_KEY_COLUMNS} FROM public_keys p \
             WHERE p.id = $1 AND p.workspace_id = $2 AND p.environment = $3"
        ))
        .bind(id)
        .bind(&tenancy.workspace_id)
        .bind(tenancy.environment.as_str())
        .fetch_optional(&self.reader)
        .await?
        .ok_or(StoreError::NotFound("public key"))?;
        public_key_from_row(&row)
    }

    async fn list_public_keys(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<PublicKey>> {
        let mut query = FilteredQuery::new(&format!(
            "SELECT {PUBLIC_KEY_COLUMNS} FROM public_keys p WHERE "
        ));
        query.in_environment("p", tenancy);
        query
            .fetch_page(
                &self.reader,
                Keyset::NewestFirst("p.id"),
                page,
                public_key_from_row,
                |key| &key.id,
            )
            .await
    }

    async fn rotate_public_key(
        &self,
        change: &Change,
        id: &str,
        new_value: &str,
        previous_expire_at: Option<Timestamp>,
    ) -> StoreResult<Changed<PublicKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let mut key = public_key_in_tx(&mut tx, self, &change.tenancy, id).await?;
        change.require_power_over(key.conferred_scopes())?;
        let mut affected = supersede_secrets(&mut tx, id, previous_expire_at, change.now).await?;
        let hash = KeyHash::of(new_value);
        insert_secret(&mut tx, hash, id, None).await?;
        affected.push(hash);
        new_value.clone_into(&mut key.key);
        key.updated_at = change.now;
        sqlx::query("UPDATE public_keys SET key = $1, updated_at = $2 WHERE id = $3")
            .bind(&key.key)
            .bind(change.now.as_millis())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            change,
            "public_key.rotate",
            id,
            serde_json::json!({
                "previous_expire_at": previous_expire_at.map(Timestamp::as_millis),
            }),
        )
        .await?;
        self.finish_change(tx, key, Stale::Secrets(affected), change.now)
            .await
    }

    async fn delete_public_key(
        &self,
        change: &Change,
        id: &str,
    ) -> StoreResult<Changed<PublicKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let key = public_key_in_tx(&mut tx, self, &change.tenancy, id).await?;
        change.require_power_over(key.conferred_scopes())?;
        let stale = secret_hashes(&mut tx, id).await?;
        sqlx::query("DELETE FROM secrets WHERE credential_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM public_keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            change,
            "public_key.delete",
            id,
            serde_json::json!({ "name": key.name }),
        )
        .await?;
        self.finish_change(tx, key, stale, change.now).await
    }

    async fn find_public_key(&self, hash: KeyHash) -> StoreResult<Option<FoundPublicKey>> {
        let row = sqlx::query(&format!(
            "SELECT {PUBLIC_KEY_COLUMNS}, s.hash, s.expires_at AS secret_expires_at, \
             e.enhanced_security \
             FROM secrets s JOIN public_keys p ON p.id = s.credential_id \
             JOIN environments e ON e.workspace_id = p.workspace_id \
               AND e.environment = p.environment \
             WHERE s.hash = $1"
        ))
        .bind(hash.as_bytes().to_vec())
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key = public_key_from_row(&row)?;
        let signing_keys = match key.kind {
            PublicKeyKind::Client => sqlx::query(&format!(
                "{SIGNING_KEY_SELECT} WHERE workspace_id = $1 AND environment = $2"
            ))
            .bind(&key.tenancy.workspace_id)
            .bind(key.tenancy.environment.as_str())
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(signing_key_from_row)
            .collect::<StoreResult<Vec<_>>>()?,
            PublicKeyKind::Jwt(_) => Vec::new(),
        };
        let windows = match &key.rate_limit_scheme {
            Some(slug) => usage::scheme_windows(&self.reader, &key.tenancy, slug).await?,
            None => Vec::new(),
        };
        Ok(Some(FoundPublicKey {
            secret: secret_from_row(&row)?,
            enhanced_security: super::flag(&row, "enhanced_security")?,
            key,
            signing_keys,
            windows,
        }))
    }

    async fn create_signing_key(
        &self,
        change: &Change,
        key: &SigningKey,
    ) -> StoreResult<Changed<()>> {
        change.require_power_over(SigningKey::conferred_scopes())?;
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        sqlx::query(
            "INSERT INTO signing_keys (id, workspace_id, environment, name, public_key_pem, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.id)
        .bind(&key.tenancy.workspace_id)
        .bind(key.tenancy.environment.as_str())
        .bind(&key.name)
        .bind(&key.public_key_pem)
        .bind(key.created_at.as_millis())
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "signing_key.create",
            &key.id,
            serde_json::json!({ "name": key.name }),
        )
        .await?;
        self.finish_change(tx, (), Stale::Everything, change.now)
            .await
    }

    async fn list_signing_keys(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<SigningKey>> {
        let mut query = FilteredQuery::new(&format!("{SIGNING_KEY_SELECT} WHERE "));
        query.in_environment("signing_keys", tenancy);
        query
            .fetch_page(
                &self.reader,
                Keyset::NewestFirst("id"),
                page,
                signing_key_from_row,
                |key| &key.id,
            )
            .await
    }

    async fn delete_signing_key(
        &self,
        change: &Change,
        id: &str,
    ) -> StoreResult<Changed<SigningKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let row = sqlx::query(&format!(
            "{SIGNING_KEY_SELECT} WHERE id = $1 AND workspace_id = $2 AND environment = $3"
        ))
        .bind(id)
        .bind(&change.tenancy.workspace_id)
        .bind(change.tenancy.environment.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("signing key"))?;
        change.require_power_over(SigningKey::conferred_scopes())?;
        let key = signing_key_from_row(&row)?;
        sqlx::query("DELETE FROM signing_keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            change,
            "signing_key.delete",
            id,
            serde_json::json!({ "name": key.name }),
        )
        .await?;
        self.finish_change(tx, key, Stale::Everything, change.now)
            .await
    }

    async fn create_workspace_key(
        &self,
        change: &Change,
        key: &WorkspaceKey,
        sealed_secret: &[u8],
    ) -> StoreResult<Changed<()>> {
        change.require_power_over(key.scopes)?;
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        usage::require_scheme(
            &mut tx,
            self.backend,
            &key.tenancy,
            key.rate_limit_scheme.as_deref(),
        )
        .await?;
        sqlx::query(
            "INSERT INTO workspace_keys (id, workspace_id, environment, name, scopes, start, \
             rate_limit_scheme, limit_meter, sealed_secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&key.id)
        .bind(&key.tenancy.workspace_id)
        .bind(key.tenancy.environment.as_str())
        .bind(&key.name)
        .bind(to_json(&key.scopes.to_names()))
        .bind(&key.start)
        .bind(&key.rate_limit_scheme)
        .bind(&key.limit_meter)
        .bind(sealed_secret.to_vec())
        .bind(key.created_at.as_millis())
        .bind(key.updated_at.as_millis())
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "workspace_key.create",
            &key.id,
            serde_json::json!({ "name": key.name, "scopes": key.scopes.to_names() }),
        )
        .await?;
        let stale = Stale::Secrets(vec![workspace_key_cache_hash(&key.id)]);
        self.finish_change(tx, (), stale, change.now).await
    }

    async fn list_workspace_keys(
        &self,
        tenancy: &Tenancy,
        page: &PageRequest,
    ) -> StoreResult<Page<WorkspaceKey>> {
        let mut query = FilteredQuery::new(&format!("{WORKSPACE_KEY_SELECT} WHERE "));
        query.in_environment("workspace_keys", tenancy);
        query
            .fetch_page(
                &self.reader,
                Keyset::NewestFirst("id"),
                page,
                workspace_key_from_row,
                |key| &key.id,
            )
            .await
    }

    async fn rotate_workspace_key(
        &self,
        change: &Change,
        id: &str,
        start: &str,
        sealed_secret: &[u8],
        previous_expire_at: Option<Timestamp>,
    ) -> StoreResult<Changed<WorkspaceKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let (mut key, previous) = workspace_key_in_tx(&mut tx, self, &change.tenancy, id).await?;
        change.require_power_over(key.scopes)?;
        start.clone_into(&mut key.start);
        key.updated_at = change.now;
        // Only the secret just replaced may live on; an older one ends now.
        sqlx::query(
            "UPDATE workspace_keys SET start = $1, sealed_secret = $2, \
             previous_sealed_secret = $3, previous_expires_at = $4, updated_at = $5 \
             WHERE id = $6",
        )
        .bind(start)
        .bind(sealed_secret.to_vec())
        .bind(previous_expire_at.map(|_| previous))
        .bind(previous_expire_at.map(Timestamp::as_millis))
        .bind(change.now.as_millis())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            change,
            "workspace_key.rotate",
            id,
            serde_json::json!({
                "previous_expire_at": previous_expire_at.map(Timestamp::as_millis),
            }),
        )
        .await?;
        let stale = Stale::Secrets(vec![workspace_key_cache_hash(id)]);
        self.finish_change(tx, key, stale, change.now).await
    }

    async fn delete_workspace_key(
        &self,
        change: &Change,
        id: &str,
    ) -> StoreResult<Changed<WorkspaceKey>> {
        let mut tx = self.begin_change(change, Lock::Shared).await?;
        let (key, _) = workspace_key_in_tx(&mut tx, self, &change.tenancy, id).await?;
        change.require_power_over(key.scopes)?;
        sqlx::query("DELETE FROM workspace_keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            change,
            "workspace_key.delete",
            id,
            serde_json::json!({ "name": key.name }),
        )
        .await?;
        let stale = Stale::Secrets(vec![workspace_key_cache_hash(id)]);
        self.finish_change(tx, key, stale, change.now).await
    }

    async fn find_workspace_key(&self, id: &str) -> StoreResult<Option<FoundWorkspaceKey>> {
        let row = sqlx::query(&format!("{WORKSPACE_KEY_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut secrets = vec![SealedSecret {
            ciphertext: row.try_get("sealed_secret")?,
            expires_at: None,
        }];
        if let (Some(ciphertext), Some(expires_at)) = (
            row.try_get::<Option<Vec<u8>>, _>("previous_sealed_secret")?,
            optional_timestamp(&row, "previous_expires_at")?,
        ) {
            secrets.push(SealedSecret {
                ciphertext,
                expires_at: Some(expires_at),
            });
        }
        let key = workspace_key_from_row(&row)?;
        let windows = match &key.rate_limit_scheme {
            Some(slug) => usage::scheme_windows(&self.reader, &key.tenancy, slug).await?,
            None => Vec::new(),
        };
        Ok(Some(FoundWorkspaceKey {
            key,
            secrets,
            windows,
        }))
    }

    async fn remember_signature(&self, hash: KeyHash, expires_at: Timestamp) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO seen_signatures (hash, expires_at) VALUES ($1, $2) \
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash.as_bytes().to_vec())
        .bind(expires_at.as_millis())
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn forget_signatures(&self, now: Timestamp) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM seen_signatures WHERE expires_at <= $1")
                .bind(now.as_millis())
                .execute(&self.writer)
                .await?
                .rows_affected(),
        )
    }
}
