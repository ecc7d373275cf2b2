//! End users behind public keys (SPEC §4.4): a `pk_jwt_…` with the user's JWT, or a client
//! public key (`pk_live_…`) with a user token signed by one of the environment's signing keys
//! (required while `enhanced_security` is on), then the tenant, the permissions the token
//! carries and the public key's per-subject rate limit.

use std::sync::Arc;

use keyward_core::model::{JwtKeySource, PublicKeyKind};
use keyward_core::permission::PermissionQuery;
use keyward_core::token::{self, TokenError};
use keyward_core::usage::RateStatus;
use keyward_core::verify::VerifyCode;
use keyward_core::{KeyHash, ParsedKey, Timestamp};

use super::api_key::usage_code;
use super::cache::CachedPublicKey;
use super::tokens::{TokenIdentity, TokenRefusal, VerificationKey};
use super::{Denied, Refusal, Verification, VerificationError};
use crate::usage::ChargeRequest;

/// An end user (or, without a token, a browser client) behind a public key.
#[derive(Debug, Clone)]
pub struct EndUser {
    pub public_key: Arc<CachedPublicKey>,
    /// `None` for a client public key used without a token while enhanced security is off.
    pub identity: Option<Arc<TokenIdentity>>,
}

impl EndUser {
    pub fn subject(&self) -> Option<&str> {
        self.identity
            .as_deref()
            .map(|identity| identity.subject.as_str())
    }

    pub fn tenant(&self) -> Option<&str> {
        self.identity
            .as_deref()
            .and_then(|identity| identity.tenant.as_deref())
    }
}

/// The verdict on an authenticated end user.
#[derive(Debug, Clone)]
pub struct EndUserVerdict {
    pub code: VerifyCode,
    pub user: EndUser,
    /// From the token: a JWT's `permissions` or `scope` claim; none for user tokens.
    pub permissions: Vec<String>,
    /// The per-subject limit's state, when the public key has a scheme.
    pub rate: Option<RateStatus>,
}

impl From<TokenRefusal> for Denied {
    fn from(refusal: TokenRefusal) -> Self {
        match refusal {
            TokenRefusal::Token(error) => Denied::Refused(error.into()),
            // The fetch's own failure was logged where it happened (`JwksCache`).
            TokenRefusal::Jwks(_) => Denied::Failed(VerificationError::JwksUnavailable),
        }
    }
}

impl Verification {
    /// Finds a public key by its value (`pk_jwt_…`, `pk_live_…`). `None` for a value that is
    /// malformed, unknown, or past its rotation grace period.
    pub async fn find_public_key(
        &self,
        presented: &str,
        now: Timestamp,
    ) -> Result<Option<Arc<CachedPublicKey>>, VerificationError> {
        let well_formed = keyward_core::credential::is_jwt_public_key(presented)
            || ParsedKey::parse(presented).is_ok_and(|parsed| {
                parsed.prefix() == keyward_core::credential::CLIENT_PUBLIC_KEY_PREFIX
            });
        if !well_formed {
            return Ok(None);
        }
        let hash = KeyHash::of(presented);
        let store = Arc::clone(&self.store);
        let entry = self
            .cache
            .get_or_load(hash, || async move {
                let Some(found) = store.find_public_key(hash).await? else {
                    return Ok::<_, VerificationError>(None);
                };
                let verification_keys = match &found.key.kind {
                    PublicKeyKind::Jwt(jwt) => match &jwt.source {
                        JwtKeySource::Inline(text) => {
                            super::tokens::parse_inline_keys(text).unwrap_or_default()
                        }
                        JwtKeySource::JwksUrl(_) => Vec::new(),
                    },
                    PublicKeyKind::Client => found
                        .signing_keys
                        .iter()
                        .filter_map(VerificationKey::of_signing_key)
                        .collect(),
                };
                Ok(Some(CachedPublicKey {
                    key: found.key,
                    secret_expires_at: found.secret.expires_at,
                    enhanced_security: found.enhanced_security,
                    verification_keys,
                    windows: found.windows,
                }))
            })
            .await?;
        Ok(entry.filter(|entry| entry.secret_expires_at.is_none_or(|end| end > now)))
    }

    /// Authenticates a public key and the token that came with it, for the tenant the
    /// request names.
    pub async fn authenticate_end_user(
        &self,
        key: &str,
        token: Option<&str>,
        tenant: Option<&str>,
        now: Timestamp,
    ) -> Result<EndUser, Denied> {
        let public_key = self
            .find_public_key(key, now)
            .await?
            .ok_or(Refusal::InvalidKey)?;
        let identity = match (&public_key.key.kind, token) {
            (PublicKeyKind::Jwt(_), None) => return Err(Refusal::Token(TokenError::Missing).into()),
            (PublicKeyKind::Jwt(settings), Some(_))
                if matches!(settings.source, JwtKeySource::JwksUrl(_))
                    && !self.may_fetch_for(public_key.key.tenancy.environment) =>
            {
                // Made while the operator allowed it; the setting is checked again here.
                return Err(Refusal::FetchesNotAllowed.into());
            }
            (PublicKeyKind::Jwt(settings), Some(token)) => Some(
                self.tokens
                    .verify_jwt(&public_key, settings, token, now)
                    .await?,
            ),
            (PublicKeyKind::Client, None) if public_key.enhanced_security => {
                return Err(Refusal::Token(TokenError::Missing).into())
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
                return Err(Refusal::TenantMismatch.into());
            }
        }
        Ok(user)
    }

    /// The verdict on an authenticated end user: permissions from the token, then the public
    /// key's rate limit, counted per subject.
    pub async fn end_user_verdict(
        &self,
        user: EndUser,
        required: Option<&PermissionQuery>,
        now: Timestamp,
    ) -> Result<EndUserVerdict, VerificationError> {
        let permissions = user
            .identity
            .as_ref()
            .map(|identity| identity.permissions.clone())
            .unwrap_or_default();
        let mut code = match required {
            Some(query) if !query.is_satisfied_by(&permissions) => {
                VerifyCode::InsufficientPermissions
            }
            _ => VerifyCode::Valid,
        };
        let mut rate = None;
        if let (true, false, Some(subject)) = (
            code.is_valid(),
            user.public_key.windows.is_empty(),
            user.subject(),
        ) {
            let meter = format!("subject:{}:{subject}", user.public_key.key.id);
            let decision = self
                .limiter
                .charge(&ChargeRequest {
                    meter: &meter,
                    windows: &user.public_key.windows,
                    credits: None,
                    credits_generation: 0,
                    organization: None,
                    cost: 1,
                    idempotency_key: None,
                    now,
                })
                .await?;
            code = usage_code(Some(&decision));
            rate = decision.rate;
        }
        Ok(EndUserVerdict {
            code,
            user,
            permissions,
            rate,
        })
    }
}
