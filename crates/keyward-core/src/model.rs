//! The records Keyward keeps. Storage returns them; the HTTP layer turns them into wire types.

use serde::{Deserialize, Serialize};

use crate::scope::{Scope, ScopeSet};
use crate::secret::KeyHash;
use crate::time::Timestamp;
use crate::usage::{CapUsage, Credits, Period, RateWindow};

/// A workspace's isolated environment. Keys, apps and settings of one are invisible from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
    Demo,
}

impl Environment {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
            Self::Demo => "demo",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "live" => Some(Self::Live),
            "test" => Some(Self::Test),
            "demo" => Some(Self::Demo),
            _ => None,
        }
    }

    /// The scopes it takes to set `enhanced_security` to `on` here. Turning it off in `live`
    /// makes a bare `pk_live_…`, a public value, verify as the environment: it hands
    /// everyone who reads a bundle what only a trust anchor should confer, so only `*` may.
    pub fn scopes_to_set_enhanced_security(self, on: bool) -> ScopeSet {
        if self == Environment::Live && !on {
            ScopeSet::all()
        } else {
            Scope::EnvironmentWrite.into()
        }
    }
}

/// The (workspace, environment) pair that owns every other record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenancy {
    pub workspace_id: String,
    pub environment: Environment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentSettings {
    pub workspace_id: String,
    pub environment: Environment,
    pub enhanced_security: bool,
    /// What a key reported as leaked comes to (SPEC §4.9).
    pub leaked_key_action: crate::leak::LeakedKeyAction,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootKey {
    pub id: String,
    pub tenancy: Tenancy,
    pub name: String,
    pub scopes: ScopeSet,
    pub start: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// Limits this key's calls to Keyward's own API.
    pub rate_limit_scheme: Option<String>,
    /// The credential whose counters those calls charge, when it is not this key: the
    /// limited key that made it ([`CallLimit::for_new_credential`]).
    pub limit_meter: Option<String>,
    /// Demo sandboxes' keys end with their sandbox.
    pub expires_at: Option<Timestamp>,
}

impl RootKey {
    pub fn call_limit(&self) -> CallLimit {
        CallLimit::of(&self.id, &self.rate_limit_scheme, &self.limit_meter)
    }
}

/// How a management credential's calls to Keyward's API are limited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallLimit {
    /// The rate-limit scheme; `None`: unlimited.
    pub scheme: Option<String>,
    /// The id of the credential whose counters the calls charge.
    pub meter: String,
}

/// A limited credential asked to give a new one another limit than its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("A rate-limited key's credentials inherit its limit; only `*` may give them another")]
pub struct LimitNotInherited;

impl CallLimit {
    fn of(id: &str, scheme: &Option<String>, meter: &Option<String>) -> Self {
        Self {
            scheme: scheme.clone(),
            meter: meter.clone().unwrap_or_else(|| id.to_owned()),
        }
    }

    /// The scheme and shared meter (`None`: its own) of a credential made by a caller with
    /// `creator_scopes` and this limit, asking for `requested`.
    ///
    /// Only `*` chooses freely. A limited key's credentials keep its scheme and charge its
    /// counters, so minting copies never raises what it may call; an unlimited key may
    /// limit what it makes.
    pub fn for_new_credential(
        &self,
        creator_scopes: ScopeSet,
        requested: Option<String>,
    ) -> Result<(Option<String>, Option<String>), LimitNotInherited> {
        match &self.scheme {
            Some(own) if !creator_scopes.contains(Scope::All) => {
                if requested.as_ref().is_some_and(|asked| asked != own) {
                    return Err(LimitNotInherited);
                }
                Ok((Some(own.clone()), Some(self.meter.clone())))
            }
            _ => Ok((requested, None)),
        }
    }

    /// Whether a caller with `creator_scopes` and this limit may take over a credential
    /// limited by `other`: rotating a key hands the caller its new secret, so a limited key
    /// may only rotate keys that share its own limit.
    pub fn may_take_over(&self, creator_scopes: ScopeSet, other: &CallLimit) -> bool {
        creator_scopes.contains(Scope::All) || self.scheme.is_none() || other == self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub id: String,
    pub tenancy: Tenancy,
    pub name: String,
    pub slug: String,
    pub permissions: Vec<String>,
    pub rate_limit_scheme: Option<String>,
    pub organization_id: Option<String>,
    pub key_prefix: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub tenancy: Tenancy,
    pub app_id: String,
    pub app_slug: String,
    pub name: String,
    pub owner_user_id: Option<String>,
    pub organization_id: Option<String>,
    pub permissions: Vec<String>,
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub start: String,
    pub expires_at: Option<Timestamp>,
    pub enabled: bool,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    /// `None`: verification never charges this key.
    pub credits: Option<Credits>,
    /// Overrides the app's scheme.
    pub rate_limit_scheme: Option<String>,
    /// The `credits.low` alert fires when a charge takes the balance below this.
    pub low_credits_threshold: Option<i64>,
}

impl ApiKey {
    pub fn status(&self, now: Timestamp) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if !self.enabled {
            KeyStatus::Disabled
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Disabled,
    Expired,
    Revoked,
}

impl KeyStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            "expired" => Some(Self::Expired),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// One of a credential's secrets. A rotated key keeps its old secret while it has a grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretRecord {
    pub hash: KeyHash,
    /// `None` for the current secret; the end of the grace period for a superseded one.
    pub expires_at: Option<Timestamp>,
}

/// An entry of the audit log: who did what, to what, when, in which request.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: String,
    pub tenancy: Tenancy,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
    pub created_at: Timestamp,
}

/// A named set of rate windows that apps, keys, organisations and root keys refer to by slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitScheme {
    pub tenancy: Tenancy,
    pub slug: String,
    pub windows: Vec<RateWindow>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A customer organisation: limits every key with its id shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub tenancy: Tenancy,
    /// The workspace's own id for it, e.g. `org_abc123`.
    pub id: String,
    pub rate_limit_scheme: Option<String>,
    pub credit_cap: Option<i64>,
    /// `None`: the cap is for all time.
    pub credit_period: Option<Period>,
    /// What its keys have spent, as last written back by the usage engine.
    pub credits_spent: i64,
    pub spent_period_start: Timestamp,
    /// The `credits.low` threshold of its keys that have none of their own.
    pub low_credits_threshold: Option<i64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Organization {
    /// The cap's state as storage last knew it, to seed a usage engine.
    pub fn cap_usage(&self) -> Option<CapUsage> {
        self.credit_cap.map(|cap| CapUsage {
            cap,
            period: self.credit_period,
            spent: self.credits_spent,
            period_start: self.spent_period_start,
        })
    }
}

/// Everything that limits one key's verifications, resolved from its app, its own override
/// and its organisation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsagePolicy {
    /// The key's own windows: its scheme, or else its app's.
    pub windows: Vec<RateWindow>,
    pub organization: Option<OrganizationPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationPolicy {
    pub id: String,
    pub windows: Vec<RateWindow>,
    /// The cap, seeded with what storage last knew was spent.
    pub cap: Option<CapUsage>,
    /// The `credits.low` threshold of its keys that have none of their own.
    pub low_credits_threshold: Option<i64>,
}

/// A browser-safe key (SPEC §1): a JWT public key or a client public key.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicKey {
    /// `pkj_…` for a JWT public key, `pk_…` for a client public key.
    pub id: String,
    pub tenancy: Tenancy,
    pub name: String,
    /// The current value, `pk_jwt_…` or `pk_live_…`; not secret.
    pub key: String,
    pub kind: PublicKeyKind,
    /// Its end users manage their own keys of this app (SPEC §4.1b).
    pub self_service_app: Option<String>,
    pub max_keys_per_user: u32,
    /// Limits each subject's verifications.
    pub rate_limit_scheme: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl PublicKey {
    /// What holding this key's trust confers, as the scopes a caller must hold to create,
    /// rotate or delete it (docs/credentials.md, "No credential confers more than its
    /// creator holds").
    ///
    /// - A JWT public key is a trust anchor: whoever controls its key source (an inline key,
    ///   or the JWKS URL) mints end users with any subject and any permissions, which every
    ///   gateway that asks Keyward then believes. Only `*` confers that.
    /// - A client public key vouches for nobody by itself (its tokens come from signing
    ///   keys), but with a `self_service_app` it lets end users issue, rotate and revoke
    ///   keys of that app: the power of `keys:write`.
    pub fn conferred_scopes(&self) -> ScopeSet {
        match (&self.kind, &self.self_service_app) {
            (PublicKeyKind::Jwt(_), _) => ScopeSet::all(),
            (PublicKeyKind::Client, Some(_)) => Scope::KeysWrite.into(),
            (PublicKeyKind::Client, None) => ScopeSet::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PublicKeyKind {
    Jwt(JwtSettings),
    Client,
}

/// How a JWT public key checks its end users' tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSettings {
    pub source: JwtKeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithms: Vec<crate::token::JwtAlgorithm>,
    /// The claim that names the end user; `sub` unless configured.
    pub subject_claim: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKeySource {
    JwksUrl(String),
    /// A PEM public key, a JWK, or a JWK set, as given.
    Inline(String),
}

/// An ES256 key pair's public half; the private half was shown once and never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// `sgk_…`; tokens name it in their `kid`.
    pub id: String,
    pub tenancy: Tenancy,
    pub name: String,
    /// SubjectPublicKeyInfo PEM.
    pub public_key_pem: String,
    pub created_at: Timestamp,
}

impl SigningKey {
    /// A signing key is a trust anchor for every client public key of its environment: its
    /// holder signs user tokens for any subject and tenant, present and future self-service
    /// keys included. Only `*` confers that.
    pub fn conferred_scopes() -> ScopeSet {
        ScopeSet::all()
    }
}

/// A workspace key (`wk_…`): its secret signs backend requests with HMAC-SHA256.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceKey {
    pub id: String,
    pub tenancy: Tenancy,
    pub name: String,
    pub scopes: ScopeSet,
    /// Limits its signed calls to Keyward's own API, as a root key's scheme does.
    pub rate_limit_scheme: Option<String>,
    /// As [`RootKey::limit_meter`].
    pub limit_meter: Option<String>,
    /// The non-secret start of its secret, for display.
    pub start: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl WorkspaceKey {
    pub fn call_limit(&self) -> CallLimit {
        CallLimit::of(&self.id, &self.rate_limit_scheme, &self.limit_meter)
    }
}

/// A workspace key's secret, sealed under the server's master key (AES-256-GCM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub ciphertext: Vec<u8>,
    /// End of the grace period of a superseded secret; `None` for the current one.
    pub expires_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_star_frees_a_new_credential_from_its_creator_s_limit() {
        let limited = CallLimit {
            scheme: Some("tight".to_owned()),
            meter: "rk_parent".to_owned(),
        };
        let writer: ScopeSet = Scope::RootKeysWrite.into();
        let inherited = (Some("tight".to_owned()), Some("rk_parent".to_owned()));
        assert_eq!(
            limited.for_new_credential(writer, None),
            Ok(inherited.clone())
        );
        assert_eq!(
            limited.for_new_credential(writer, Some("tight".to_owned())),
            Ok(inherited)
        );
        assert_eq!(
            limited.for_new_credential(writer, Some("loose".to_owned())),
            Err(LimitNotInherited)
        );
        assert_eq!(
            limited.for_new_credential(ScopeSet::all(), None),
            Ok((None, None))
        );
        let free = CallLimit {
            scheme: None,
            meter: "rk_free".to_owned(),
        };
        assert_eq!(
            free.for_new_credential(writer, Some("tight".to_owned())),
            Ok((Some("tight".to_owned()), None))
        );
        let other = CallLimit {
            scheme: None,
            meter: "wk_free".to_owned(),
        };
        assert!(!limited.may_take_over(writer, &other));
        assert!(limited.may_take_over(writer, &limited.clone()));
        assert!(limited.may_take_over(ScopeSet::all(), &other));
        assert!(free.may_take_over(writer, &other));
        assert_eq!(
            Environment::Live.scopes_to_set_enhanced_security(false),
            ScopeSet::all()
        );
        assert_eq!(
            Environment::Test.scopes_to_set_enhanced_security(false),
            Scope::EnvironmentWrite.into()
        );
    }
}

/// A customer portal session (SPEC §4.10): one customer (`owner_user_id`, and
/// `organization_id` when it names one) managing their keys of one app on the page Keyward
/// serves, for a short while. Its link's one-time code is stored only as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    /// `ps_…`; also the customer's actor in the audit log, as `ps_…:<owner_user_id>`.
    pub id: String,
    pub tenancy: Tenancy,
    pub app_id: String,
    pub owner_user_id: String,
    pub organization_id: Option<String>,
    /// The permissions new keys may have: the app's, or the subset the session names.
    pub permissions: Vec<String>,
    /// The most active keys the customer may hold in the app.
    pub max_keys: u32,
    /// Where "back" leads.
    pub return_url: Option<String>,
    /// The credential that made the session; the session ends with it.
    pub created_by: String,
    /// What the portal may do: what its creator held, of `keys:write` and `usage:read`.
    pub scopes: crate::scope::ScopeSet,
    /// The creator's limit on calls to Keyward's API: the customer's calls charge it, so a
    /// session never calls more than its maker may.
    pub limit: CallLimit,
    pub created_at: Timestamp,
    /// The link works until then, once.
    pub code_expires_at: Timestamp,
    /// The session (its cookie) ends then.
    pub expires_at: Timestamp,
}
