use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use time::OffsetDateTime;

/// A key for Keyward's own API, limited to its scopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RootKey {
    pub id: String,
    pub name: String,
    pub environment: String,
    pub scopes: Vec<String>,
    pub start: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Limits this key's calls to Keyward's API.
    pub rate_limit_scheme: Option<String>,
    /// A demo sandbox's key ends with the sandbox.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RootKeyWithSecret {
    #[serde(flatten)]
    pub key: RootKey,
    pub secret: String,
}

/// A root key can only grant scopes its creator holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRootKeyRequest {
    pub name: String,
    /// e.g. `["keys:read", "verify"]`, or `["*"]`.
    pub scopes: Vec<String>,
    /// Limits this key's calls to Keyward's API; none by default. A key made by a limited
    /// key inherits that key's limit (and shares its counters) unless its maker holds `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_scheme: Option<String>,
}
