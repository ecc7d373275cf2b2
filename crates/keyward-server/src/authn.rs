//! Authenticating the credentials of SPEC §4.4 other than root keys: public keys with their
//! tokens, and HMAC-signed workspace-key requests. `verify-request`, the self-service API and
//! Keyward's own API (for workspace keys) share these checks. The signature check is public
//! so that the benchmarks measure the very path requests take.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use dashmap::DashMap;
use keyward_core::model::{JwtKeySource, PublicKeyKind};
use keyward_core::signature::{self, SignatureHeader, SignedRequest, MAX_CLOCK_SKEW_SECONDS};
use keyward_core::token::{self, TokenError};
use keyward_core::{KeyHash, Timestamp};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::tokens::{TokenIdentity, TokenRefusal};
use crate::verifier::{CachedPublicKey, CachedWorkspaceKey};
use crate::AppState;

/// What a request says about itself, for checks that cover more than its credential.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// Hex SHA-256 of the body.
    pub body_sha256: &'a str,
}

/// An end user (or, without a token, a browser client) behind a public key.
#[derive(Debug, Clone)]
pub(crate) struct EndUser {
    pub public_key: Arc<CachedPublicKey>,
    /// `None` for a client public key used without a token while enhanced security is off.
    pub identity: Option<Arc<TokenIdentity>>,
}

impl EndUser {
    pub(crate) fn subject(&self) -> Option<&str> {
        self.identity
            .as_deref()
            .map(|identity| identity.subject.as_str())
    }

    pub(crate) fn tenant(&self) -> Option<&str> {
        self.identity
            .as_deref()
            .and_then(|identity| identity.tenant.as_deref())
    }
}

/// Why a credential was refused: an HTTP error for Keyward's own API, a verdict for
/// `verify-request`.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: &'static str,
}

impl Refusal {
    const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
        }
    }

    pub(crate) const fn invalid_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Invalid or missing API key",
        )
    }

    pub(crate) const fn invalid_signature() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "The signature header is malformed or does not match this request",
        )
    }

    fn token(error: TokenError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, error.code(), error.message())
    }

    /// The fetch's own failure was logged where it happened (`JwksCache`).
    const fn jwks_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "jwks_unavailable",
            "The public key's JWKS cannot be fetched right now",
        )
    }

    pub(crate) fn tenant_mismatch() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "tenant_mismatch",
            "The token is for another tenant than the request names",
        )
    }

    /// Whether this is the service's own trouble rather than a verdict on the credential.
    pub(crate) fn is_unavailable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::new(refusal.status, refusal.code, refusal.message)
    }
}

impl From<TokenRefusal> for Refusal {
    fn from(refusal: TokenRefusal) -> Self {
        match refusal {
            TokenRefusal::Token(error) => Refusal::token(error),
            TokenRefusal::Jwks(_) => Refusal::jwks_unavailable(),
        }
    }
}

/// Signatures already accepted, on a node that shares neither Redis nor a database with
/// another: `(hash, unix seconds after which it may be forgotten)`.
#[derive(Debug, Default)]
pub(crate) struct LocalSeenSignatures {
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

    pub(crate) fn sweep(&self, now_seconds: i64) {
        self.seen.retain(|_, until| *until > now_seconds);
    }
}

impl AppState {
    /// Authenticates a public key and the token that came with it.
    pub(crate) async fn authenticate_public_key(
        &self,
        key: &str,
        token: Option<&str>,
        tenant: Option<&str>,
        now: Timestamp,
    ) -> Result<EndUser, Refusal> {
        let public_key = self
            .verifier
            .find_public_key(self.store.as_ref(), key, now)
            .await
            .map_err(|error| {
                tracing::error!(%error, "looking up a public key failed");
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "Storage is unavailable; try again shortly",
                )
            })?
            .ok_or_else(Refusal::invalid_key)?;
        let identity = match (&public_key.key.kind, token) {
            (PublicKeyKind::Jwt(_), None) => return Err(Refusal::token(TokenError::Missing)),
            (PublicKeyKind::Jwt(settings), Some(_))
                if matches!(settings.source, JwtKeySource::JwksUrl(_))
                    && !self.may_fetch_for(public_key.key.tenancy.environment) =>
            {
                // Made while the operator allowed it; the setting is checked again here.
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "fetches_not_allowed",
                    "Demo sandboxes cannot make Keyward fetch URLs",
                ));
            }
            (PublicKeyKind::Jwt(settings), Some(token)) => Some(
                self.tokens
                    .verify_jwt(&public_key, settings, token, now)
                    .await?,
            ),
            (PublicKeyKind::Client, None) if public_key.enhanced_security => {
                return Err(Refusal::token(TokenError::Missing))
            }
            (PublicKeyKind::Client, None) => None,
            (PublicKeyKind::Client, Some(token)) => {
                Some(self.tokens.verify_user_token(&public_key, token, now)?)
            }
        };
        let user = EndUser {
            public_key,
            identity,
        };
        if let Some(token_tenant) = user.tenant() {
            if !token::tenant_allowed(tenant, token_tenant) {
                return Err(Refusal::tenant_mismatch());
            }
        }
        Ok(user)
    }

    /// Authenticates a request signed with a workspace key's secret: fresh, made over this
    /// very request, and never seen before.
    pub async fn authenticate_signature(
        &self,
        header: &SignatureHeader<'_>,
        request: &RequestFacts<'_>,
        now: Timestamp,
    ) -> Result<Arc<CachedWorkspaceKey>, Refusal> {
        if !header.is_fresh(now) {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "signature_expired",
                "The signature's timestamp is more than 300 seconds from the server's clock",
            ));
        }
        if !signature::is_body_digest(request.body_sha256) {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "The body digest must be a lowercase hex SHA-256",
            ));
        }
        let workspace_key = self
            .verifier
            .find_workspace_key(self.store.as_ref(), &self.master_key, header.key)
            .await
            .map_err(|error| {
                tracing::error!(%error, "looking up a workspace key failed");
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "Storage is unavailable; try again shortly",
                )
            })?
            .ok_or_else(Refusal::invalid_key)?;
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
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "The signature does not match this request",
            ));
        }
        if !self.first_use_of_signature(header, now).await? {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "signature_replayed",
                "This signature was already used; sign each request afresh",
            ));
        }
        Ok(workspace_key)
    }

    /// Records a verified signature where every node that could see it again will look:
    /// Redis when the cluster has it, else the shared database, else this process.
    async fn first_use_of_signature(
        &self,
        header: &SignatureHeader<'_>,
        now: Timestamp,
    ) -> Result<bool, Refusal> {
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
        if self.cluster.get().is_some() {
            return self
                .store
                .remember_signature(hash, Timestamp::from_millis(forget_after * 1000))
                .await
                .map_err(|error| {
                    tracing::error!(%error, "recording a signature failed");
                    Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage_unavailable",
                        "Storage is unavailable; try again shortly",
                    )
                });
        }
        Ok(self
            .seen_signatures
            .first_use(hash, forget_after, now_seconds))
    }
}
