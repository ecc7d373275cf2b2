//! The one home of verification. Every front end — `keys/verify`, `verify-request`, the
//! management API's caller, `/ws`, self-service — hands [`Verification`] what a request
//! presents (the credential of SPEC §4.4 and the request's facts) and `now`, read once at
//! the edge, and gets a domain verdict back, with no HTTP in it. `error.rs` turns refusals
//! and failures into HTTP answers; the adapters turn verdicts into their wire shapes.
//!
//! The steps, each in its file:
//! - [`cache`]: the verification cache and its get-or-load-with-epoch rule;
//! - [`cached_key`]: an API key as the cache holds it, compact;
//! - [`api_key`]: API keys: parse, cache or storage, core's decision, then usage control;
//! - [`root`]: root keys, decided by core like API keys;
//! - [`end_user`]: public keys with their end users' tokens ([`tokens`] checks those);
//! - [`signature`]: workspace keys' HMAC signatures and the replay store;
//! - [`calls`]: limits on calls to Keyward's own API.

pub mod api_key;
pub mod cache;
pub mod cached_key;
pub mod calls;
pub mod end_user;
pub mod known;
pub mod root;
pub mod signature;
pub mod tokens;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use keyward_core::credential::{self, Presented, PresentedError};
use keyward_core::model::{CallLimit, Tenancy};
use keyward_core::permission::PermissionQuery;
use keyward_core::scope::ScopeSet;
use keyward_core::token::TokenError;
use keyward_core::usage::RateWindow;
use keyward_core::verify::VerifyCode;
use keyward_core::Timestamp;
use keyward_store::{Store, StoreError};

use crate::analytics::UsageRecorder;
use crate::crypto::MasterKey;
use crate::events::EventHub;
use crate::last_used::LastUsedRecorder;
use crate::metrics::Metrics;
use crate::usage::{Limiter, UsageError};
pub use api_key::KeyVerdict;
pub use cache::{
    CachedKey, CachedPublicKey, CachedRootKey, CachedWorkspaceKey, Peek, VerificationCache,
};
pub use calls::CallReport;
pub use end_user::{EndUser, EndUserVerdict};
pub use signature::{LocalSeenSignatures, RequestFacts};

/// Why a credential was refused. At `verify-request` it is a verdict's `reason`; on
/// Keyward's own API it is an error (`error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Missing, malformed, unknown, past its grace period, or of another environment.
    InvalidKey,
    /// A root key that was revoked.
    KeyRevoked,
    /// A root key past its end (a demo sandbox's).
    KeyExpired,
    Token(TokenError),
    TenantMismatch,
    SignatureExpired,
    /// A malformed signature header or body digest, or a signature over something else;
    /// the sentence says which.
    InvalidSignature(&'static str),
    SignatureReplayed,
    /// A demo sandbox's key that would make Keyward fetch a URL.
    FetchesNotAllowed,
    /// Too many calls to Keyward's own API.
    RateLimited,
}

impl Refusal {
    pub const fn code(self) -> &'static str {
        match self {
            Refusal::InvalidKey => "invalid_api_key",
            Refusal::KeyRevoked => "key_revoked",
            Refusal::KeyExpired => "key_expired",
            Refusal::Token(error) => error.code(),
            Refusal::TenantMismatch => "tenant_mismatch",
            Refusal::SignatureExpired => "signature_expired",
            Refusal::InvalidSignature(_) => "invalid_signature",
            Refusal::SignatureReplayed => "signature_replayed",
            Refusal::FetchesNotAllowed => "fetches_not_allowed",
            Refusal::RateLimited => "rate_limited",
        }
    }

    /// A fixed sentence: never the credential, the token or the signature.
    pub const fn message(self) -> &'static str {
        match self {
            Refusal::InvalidKey => "Invalid or missing API key",
            Refusal::KeyRevoked => "This root key has been revoked",
            Refusal::KeyExpired => "This root key has expired",
            Refusal::Token(error) => error.message(),
            Refusal::TenantMismatch => "The token is for another tenant than the request names",
            Refusal::SignatureExpired => {
                "The signature's timestamp is more than 300 seconds from the server's clock"
            }
            Refusal::InvalidSignature(why) => why,
            Refusal::SignatureReplayed => {
                "This signature was already used; sign each request afresh"
            }
            Refusal::FetchesNotAllowed => "Demo sandboxes cannot make Keyward fetch URLs",
            Refusal::RateLimited => "Too many requests; retry after the time in `Retry-After`",
        }
    }

    /// The status SPEC §3 gives it (and `verify-request`'s verdict reports).
    pub const fn status(self) -> u16 {
        match self {
            Refusal::KeyRevoked
            | Refusal::KeyExpired
            | Refusal::TenantMismatch
            | Refusal::FetchesNotAllowed => 403,
            Refusal::RateLimited => 429,
            _ => 401,
        }
    }

    /// The verdict code it makes at `verify-request`, which stays within SPEC §4.2's list.
    pub const fn verify_code(self) -> VerifyCode {
        match self {
            Refusal::TenantMismatch => VerifyCode::TenantMismatch,
            _ => VerifyCode::InvalidKey,
        }
    }
}

impl From<TokenError> for Refusal {
    fn from(error: TokenError) -> Self {
        Refusal::Token(error)
    }
}

/// Keyward's own trouble, which is no verdict on a credential: a 503 or a 500.
#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    #[error(transparent)]
    Storage(#[from] StoreError),
    #[error("the public key's JWKS cannot be fetched")]
    JwksUnavailable,
    #[error(transparent)]
    Usage(#[from] UsageError),
}

/// A credential that did not authenticate: refused, or not checkable right now.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("refused: {}", .0.code())]
    Refused(Refusal),
    #[error(transparent)]
    Failed(#[from] VerificationError),
}

impl From<Refusal> for Denied {
    fn from(refusal: Refusal) -> Self {
        Denied::Refused(refusal)
    }
}

impl From<StoreError> for Denied {
    fn from(error: StoreError) -> Self {
        Denied::Failed(error.into())
    }
}

impl From<UsageError> for Denied {
    fn from(error: UsageError) -> Self {
        Denied::Failed(error.into())
    }
}

/// What a verification asks of a credential beyond being valid.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    pub permissions: Option<&'a PermissionQuery>,
    /// Credits an API key spends; 1 by default.
    pub credits_cost: i64,
    pub idempotency_key: Option<&'a str>,
}

/// A whole request as a gateway saw it (`verify-request`, and the proxies' front ends).
#[derive(Debug, Clone, Copy)]
pub struct GatewayRequest<'a> {
    pub facts: RequestFacts<'a>,
    pub authorization: Option<&'a str>,
    pub x_api_key: Option<&'a str>,
    pub tenant: Option<&'a str>,
}

/// The verdict on a gateway's request.
#[derive(Debug, Clone)]
pub struct RequestVerdict {
    pub code: VerifyCode,
    /// `api_key`, `jwt`, `client_public_key` or `workspace_key`.
    pub credential_type: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    ApiKey(KeyVerdict),
    EndUser(EndUserVerdict),
    WorkspaceKey(Arc<CachedWorkspaceKey>),
    Refused(Refusal),
}

/// Who calls Keyward's own API: a root key, or a workspace key's signature.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// `rk_…` or `wk_…`.
    pub actor_id: String,
    pub tenancy: Tenancy,
    pub scopes: ScopeSet,
    pub limit: CallLimit,
}

/// What authenticating a caller gave: the caller or why not, and, when its calls are
/// limited, the count (for the answer's headers, refused or not).
#[derive(Debug)]
pub struct Authentication {
    pub outcome: Result<Authenticated, Denied>,
    pub calls: Option<CallReport>,
}

/// How demo sandboxes are bounded, as verification needs it.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// What all of a sandbox's credentials together may call.
    pub api_windows: Vec<RateWindow>,
    /// Whether a sandbox's keys may make Keyward fetch URLs.
    pub allow_fetches: bool,
}

/// See the module documentation.
pub struct Verification {
    pub store: Arc<dyn Store>,
    pub cache: Arc<VerificationCache>,
    pub limiter: Arc<Limiter>,
    pub tokens: tokens::TokenVerifier,
    pub(crate) replay: LocalSeenSignatures,
    pub usage_log: UsageRecorder,
    pub last_used: LastUsedRecorder,
    pub(crate) events: Arc<EventHub>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) master_key: Arc<MasterKey>,
    pub(crate) sandboxes: SandboxLimits,
    /// Set once this node shares its database with others: replays must then be recorded
    /// where every node looks.
    pub(crate) clustered: AtomicBool,
}

impl Verification {
    /// Whether an environment's configuration may make Keyward fetch URLs: not a demo
    /// sandbox's, which anyone can open, unless the operator allows it.
    pub fn may_fetch_for(&self, environment: keyward_core::Environment) -> bool {
        environment != keyward_core::Environment::Demo || self.sandboxes.allow_fetches
    }

    /// Verifies a gateway's request: whichever credential it carries (SPEC §4.4) — an API
    /// key, a JWT public key with its token, a client public key with a signed user token,
    /// or a workspace key's signature — in `tenancy`'s environment.
    pub async fn verify_request(
        &self,
        tenancy: &Tenancy,
        request: &GatewayRequest<'_>,
        ask: &Ask<'_>,
        now: Timestamp,
    ) -> Result<RequestVerdict, VerificationError> {
        let presented = match credential::from_headers(request.authorization, request.x_api_key) {
            Ok(presented) => presented,
            Err(PresentedError::Signature(_)) => {
                let refusal = Refusal::InvalidSignature(
                    "The signature header is malformed or does not match this request",
                );
                return Ok(self.refused_request(tenancy, "workspace_key", refusal, now));
            }
            Err(_) => {
                return Ok(self.refused_request(tenancy, "api_key", Refusal::InvalidKey, now))
            }
        };
        let credential_type = presented.credential_type();
        // A credential of another environment is refused like an unknown one. A verdict is
        // counted where it is made, while its credential's id can still be borrowed.
        let decided: Result<(VerifyCode, Outcome), Denied> = match presented {
            // API keys are counted where they are verified, as for `keys/verify`.
            Presented::Secret(secret) => {
                let verdict = self.verify_api_key(tenancy, secret, ask, now).await?;
                return Ok(RequestVerdict {
                    code: verdict.code,
                    credential_type,
                    outcome: Outcome::ApiKey(verdict),
                });
            }
            Presented::JwtPublicKey { key, token } | Presented::ClientPublicKey { key, token } => {
                match self
                    .authenticate_end_user(key, token, request.tenant, now)
                    .await
                {
                    Ok(user) if user.public_key.key.tenancy == *tenancy => {
                        let verdict = self.end_user_verdict(user, ask.permissions, now).await?;
                        let id = Some(verdict.user.public_key.key.id.as_str());
                        self.count(tenancy, verdict.code, id, now);
                        Ok((verdict.code, Outcome::EndUser(verdict)))
                    }
                    Ok(_) => Err(Refusal::InvalidKey.into()),
                    Err(denied) => Err(denied),
                }
            }
            Presented::WorkspaceSignature(header) => {
                match self
                    .authenticate_signature(&header, &request.facts, now)
                    .await
                {
                    Ok(key) if key.key.tenancy == *tenancy => {
                        self.count(tenancy, VerifyCode::Valid, Some(&key.key.id), now);
                        Ok((VerifyCode::Valid, Outcome::WorkspaceKey(key)))
                    }
                    Ok(_) => Err(Refusal::InvalidKey.into()),
                    Err(denied) => Err(denied),
                }
            }
        };
        match decided {
            Ok((code, outcome)) => Ok(RequestVerdict {
                code,
                credential_type,
                outcome,
            }),
            Err(Denied::Refused(refusal)) => {
                Ok(self.refused_request(tenancy, credential_type, refusal, now))
            }
            Err(Denied::Failed(error)) => Err(error),
        }
    }

    fn refused_request(
        &self,
        tenancy: &Tenancy,
        credential_type: &'static str,
        refusal: Refusal,
        now: Timestamp,
    ) -> RequestVerdict {
        let code = refusal.verify_code();
        self.count(tenancy, code, None, now);
        RequestVerdict {
            code,
            credential_type,
            outcome: Outcome::Refused(refusal),
        }
    }

    /// Counts a verification of a credential other than an API key in `/metrics` and, by
    /// its id, in usage analytics.
    fn count(&self, tenancy: &Tenancy, code: VerifyCode, id: Option<&str>, now: Timestamp) {
        self.metrics.count_verification(code);
        if self.usage_log.is_enabled() {
            let subject = match id {
                Some(id) => crate::analytics::Subject::Credential {
                    tenancy: tenancy.clone(),
                    id: id.to_owned(),
                },
                None => crate::analytics::Subject::Unknown(tenancy.clone()),
            };
            self.usage_log.record(subject, code, now);
        }
    }

    /// Authenticates a call to Keyward's own API and counts it against its limit.
    pub async fn authenticate_caller(
        &self,
        presented: Presented<'_>,
        facts: &RequestFacts<'_>,
        now: Timestamp,
    ) -> Authentication {
        let (authenticated, meter, windows) = match presented {
            Presented::Secret(secret) => match self.authenticate_root(secret, now).await {
                Ok(root) => (
                    Authenticated {
                        actor_id: root.key.id.clone(),
                        tenancy: root.key.tenancy.clone(),
                        scopes: root.key.scopes,
                        limit: root.key.call_limit(),
                    },
                    root.meter.clone(),
                    root.windows.clone(),
                ),
                Err(denied) => return Authentication::denied(denied),
            },
            Presented::WorkspaceSignature(header) => {
                match self.authenticate_signature(&header, facts, now).await {
                    Ok(key) => (
                        Authenticated {
                            actor_id: key.key.id.clone(),
                            tenancy: key.key.tenancy.clone(),
                            scopes: key.key.scopes,
                            limit: key.key.call_limit(),
                        },
                        key.meter.clone(),
                        key.windows.clone(),
                    ),
                    Err(denied) => return Authentication::denied(denied),
                }
            }
            // Public keys never reach Keyward's management API.
            Presented::JwtPublicKey { .. } | Presented::ClientPublicKey { .. } => {
                return Authentication::denied(Refusal::InvalidKey.into())
            }
        };
        match self
            .limit_api_calls(&authenticated.tenancy, &meter, &windows, now)
            .await
        {
            Ok(calls) => {
                let refused = calls.as_ref().is_some_and(CallReport::is_refused);
                Authentication {
                    outcome: if refused {
                        Err(Refusal::RateLimited.into())
                    } else {
                        Ok(authenticated)
                    },
                    calls,
                }
            }
            Err(error) => Authentication::denied(Denied::Failed(error.into())),
        }
    }
}

impl Authentication {
    fn denied(denied: Denied) -> Self {
        Self {
            outcome: Err(denied),
            calls: None,
        }
    }
}
