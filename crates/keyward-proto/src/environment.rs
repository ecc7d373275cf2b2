use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentSettings {
    pub workspace_id: String,
    pub environment: String,
    /// Whether client public keys need a signed user token. On by default in `live`.
    pub enhanced_security: bool,
    /// What a key reported as leaked comes to: `revoke` (the default), `disable` or `notify`.
    pub leaked_key_action: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEnvironmentRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced_security: Option<bool>,
    /// `revoke`, `disable` or `notify` (SPEC §4.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaked_key_action: Option<String>,
}

/// One change made through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    /// The root key that made the change, e.g. `rk_…`.
    pub actor: String,
    /// e.g. `key.revoke`.
    pub action: String,
    /// The id of what changed.
    pub target: String,
    pub request_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAuditParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only entries of this action, e.g. `key.revoke`.
    pub action: Option<String>,
    /// Only entries about this id.
    pub target: Option<String>,
}
