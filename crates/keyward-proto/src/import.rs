use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The most rows one import request may carry.
pub const MAX_IMPORT_BATCH: usize = 1000;

/// Existing keys brought over from another system, one batch of `keyward import`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportKeysRequest {
    /// 1 to 1000 keys.
    pub keys: Vec<ImportedKey>,
}

/// One existing key. Its plaintext never travels: `keyward import` hashes secrets locally.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedKey {
    /// SHA-256 of the secret, 64 hex digits.
    pub hash: String,
    /// The non-secret beginning of the secret, for display; empty when only the hash is
    /// known.
    #[serde(default)]
    pub start: String,
    /// Whether the secret has Keyward's own format (with its checksum). Secrets in any other
    /// format are looked up by hash at verification, see docs/import.md.
    #[serde(default)]
    pub keyward_format: bool,
    pub name: String,
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
}

/// What one import batch did. Re-importing a key that exists skips it, so a batch can be
/// sent again safely.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportKeysResponse {
    pub imported: u64,
    /// Keys whose secret was already known.
    pub skipped: u64,
    /// Rows refused, by their index in the request.
    pub invalid: Vec<ImportRowError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportRowError {
    pub index: u32,
    pub code: String,
    pub message: String,
}
