use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use time::OffsetDateTime;

/// A permission query: an expression such as `read:data AND (write:data OR admin)`, or a list
/// of permissions that are all required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PermissionQuery {
    Expression(String),
    AllOf(Vec<String>),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyKeyRequest {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<PermissionQuery>,
    /// Credits this call spends; 1 by default. Only keys with credits are charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits_cost: Option<u32>,
    /// The tenant the request is for (signed user tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A retried verification with the same key and `idempotency_key` (within 24 hours)
    /// gets the first answer again and is charged once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The verdict. Always HTTP 200; `status` is what the caller's own API should answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerifyKeyResponse {
    pub valid: bool,
    /// `VALID`, `INVALID_KEY`, `KEY_REVOKED`, `KEY_DISABLED`, `KEY_EXPIRED`,
    /// `INSUFFICIENT_PERMISSIONS`, `TENANT_MISMATCH`, `RATE_LIMITED` or `USAGE_EXCEEDED`.
    pub code: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// The key's balance, when it has credits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<crate::CreditsStatus>,
    /// The tightest window, when the key or its organisation is rate limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::RateLimitStatus>,
    /// `verify-request` only: `api_key`, `jwt`, `client_public_key` or `workspace_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_type: Option<String>,
    /// `verify-request` only: the end user a token speaks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `verify-request` only: a signed user token's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `verify-request` only: the precise reason for a refusal, e.g. `token_expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A request as a gateway saw it (SPEC §4.2 `verify-request`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequestRequest {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Header names are matched without regard to case.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The raw query string, without `?`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Lowercase hex SHA-256 of the body; needed for workspace-key signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<PermissionQuery>,
    /// Credits an API key spends; 1 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits_cost: Option<u32>,
}
