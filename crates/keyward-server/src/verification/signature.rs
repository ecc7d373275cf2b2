//! Workspace keys' HMAC signatures (SPEC §4.4): fresh within ±300 s, made over this very
//! request with the current secret or one still in its grace period, and never accepted
//! twice. The replay store is the first one every node that could see the signature again
//! also consults: Redis when configured and answering, else the shared database on a
//! cluster, else this process's memory.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use keyward_core::signature::{self, SignatureHeader, SignedRequest, MAX_CLOCK_SKEW_SECONDS};
use keyward_core::{KeyHash, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::cache::CachedWorkspaceKey;
use super::{Denied, Refusal, Verification, VerificationError};

/// What a request says about itself, for checks that cover more than its credential.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// As received: never percent-decoded.
    pub path: &'a str,
    pub query: &'a str,
    /// Hex SHA-256 of the body.
    pub body_sha256: &'a str,
}

/// Signatures already accepted, on a node that shares neither Redis nor a database with
/// another: `(hash, unix seconds after which it may be forgotten)`.
#[derive(Debug, Default)]
pub struct LocalSeenSignatures {
    seen: DashMap<KeyHash, i64>,
    /// The second of the last sweep forced by a full map, so that a flood of fresh signatures
    /// costs one scan per second rather than one per request.
    last_forced_sweep: AtomicI64,
}

/// Past this many, accepting a signature first forgets the expired ones. Every live entry is
/// still kept: forgetting one would let it be replayed.
const MAX_LOCAL_SIGNATURES: usize = 1_000_000;

impl LocalSeenSignatures {
    fn first_use(&self, hash: KeyHash, forget_after: i64, now_seconds: i64) -> bool {
        if self.seen.len() >= MAX_LOCAL_SIGNATURES
            && self.last_forced_sweep.swap(now_seconds, Ordering::Relaxed) != now_seconds
        {
            self.sweep(now_seconds);
        }
        match self.seen.entry(hash) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(slot) => {
                slot.insert(forget_after);
                true
            }
        }
    }

    pub fn sweep(&self, now_seconds: i64) {
        self.seen.retain(|_, until| *until > now_seconds);
    }
}

impl Verification {
    /// Finds a workspace key by id and opens its secrets with the master key.
    pub async fn find_workspace_key(
        &self,
        id: &str,
    ) -> Result<Option<Arc<CachedWorkspaceKey>>, VerificationError> {
        let hash = keyward_store::workspace_key_cache_hash(id);
        let (store, master_key) = (Arc::clone(&self.store), Arc::clone(&self.master_key));
        self.cache
            .get_or_load(hash, || async move {
                let Some(found) = store.find_workspace_key(id).await? else {
                    return Ok::<_, VerificationError>(None);
                };
                let mut secrets = Vec::with_capacity(found.secrets.len());
                for sealed in &found.secrets {
                    let Some(plain) = master_key
                        .open(&sealed.ciphertext, &found.key.id)
                        .and_then(|bytes| String::from_utf8(bytes).ok())
                    else {
                        tracing::error!(
                            workspace_key = %found.key.id,
                            "a workspace secret does not open with this node's master key; \
                             every node needs the same KEYWARD_MASTER_KEY"
                        );
                        return Ok(None);
                    };
                    secrets.push((SecretString::from(plain), sealed.expires_at));
                }
                Ok(Some(CachedWorkspaceKey {
                    meter: format!("calls:{}", found.key.call_limit().meter),
                    key: found.key,
                    secrets,
                    windows: found.windows,
                }))
            })
            .await
    }

    /// Authenticates a request signed with a workspace key's secret: fresh, made over this
    /// very request, and never seen before.
    pub async fn authenticate_signature(
        &self,
        header: &SignatureHeader<'_>,
        request: &RequestFacts<'_>,
        now: Timestamp,
    ) -> Result<Arc<CachedWorkspaceKey>, Denied> {
        if !header.is_fresh(now) {
            return Err(Refusal::SignatureExpired.into());
        }
        if !signature::is_body_digest(request.body_sha256) {
            return Err(Refusal::InvalidSignature(
                "The body digest must be a lowercase hex SHA-256",
            )
            .into());
        }
        let workspace_key = self
            .find_workspace_key(header.key)
            .await?
            .ok_or(Refusal::InvalidKey)?;
        let signed = SignedRequest {
            method: request.method,
            path: request.path,
            query: request.query,
            timestamp: header.timestamp,
            body_sha256: request.body_sha256,
        };
        let verified = workspace_key.secrets.iter().any(|(secret, ends_at)| {
            ends_at.is_none_or(|end| end > now)
                && signed.verify(secret.expose_secret().as_bytes(), &header.signature)
        });
        if !verified {
            return Err(
                Refusal::InvalidSignature("The signature does not match this request").into(),
            );
        }
        if !self.first_use_of_signature(header, now).await? {
            return Err(Refusal::SignatureReplayed.into());
        }
        Ok(workspace_key)
    }

    /// Records a verified signature where every node that could see it again will look.
    async fn first_use_of_signature(
        &self,
        header: &SignatureHeader<'_>,
        now: Timestamp,
    ) -> Result<bool, VerificationError> {
        let hash = KeyHash::from_bytes(
            Sha256::new()
                .chain_update(header.key.as_bytes())
                .chain_update([0])
                .chain_update(header.signature)
                .finalize()
                .into(),
        );
        // A signature is fresh until its timestamp is more than the skew away.
        let forget_after = header.timestamp + MAX_CLOCK_SKEW_SECONDS + 1;
        let now_seconds = now.as_millis().div_euclid(1000);
        let ttl = Duration::from_secs(
            u64::try_from(forget_after - now_seconds)
                .unwrap_or(1)
                .max(1),
        );
        if let Some(first) = self
            .limiter
            .set_once_shared(&format!("sig:{}", hash.to_hex()), ttl)
            .await
        {
            return Ok(first);
        }
        if self.clustered.load(Ordering::Relaxed) {
            return Ok(self
                .store
                .remember_signature(hash, Timestamp::from_millis(forget_after * 1000))
                .await?);
        }
        Ok(self.replay.first_use(hash, forget_after, now_seconds))
    }
}
