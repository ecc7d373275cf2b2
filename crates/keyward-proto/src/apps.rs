use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use time::OffsetDateTime;

/// A category of keys with the permissions it may grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct App {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub environment: String,
    pub permissions: Vec<String>,
    /// The scheme every key of the app is limited by, unless a key names its own.
    pub rate_limit_scheme: Option<String>,
    pub organization_id: Option<String>,
    pub key_prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRequest {
    pub name: String,
    /// Lowercase letters, digits and dashes; unique per environment.
    pub slug: String,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_scheme: Option<String>,
    /// Every key of the app belongs to this organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// The first part of the app's secrets, e.g. `acme` for `acme_live_…`; `kw` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// Absent fields are kept. Permissions still held by a key cannot be removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAppRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// `null` removes the app's scheme.
    #[serde(
        default,
        deserialize_with = "crate::patch::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub rate_limit_scheme: Option<Option<String>>,
}
