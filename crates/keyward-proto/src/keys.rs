use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use time::OffsetDateTime;

/// A key's metadata. The secret is never part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    /// The app's slug.
    pub app: String,
    pub environment: String,
    pub name: String,
    pub owner_user_id: Option<String>,
    pub organization_id: Option<String>,
    pub permissions: Vec<String>,
    #[schema(value_type = Object)]
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The non-secret beginning of the secret, for display: `acme_live_AbCd`.
    pub start: String,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: String,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// `null`: verification never charges the key. The balance may trail verification by
    /// the usage write-back interval; verification's own answer is exact.
    pub credits: Option<crate::Credits>,
    /// Overrides the app's scheme.
    pub rate_limit_scheme: Option<String>,
    /// A charge that takes the balance below this raises a `credits.low` alert.
    #[serde(default)]
    pub low_credits_threshold: Option<i64>,
}

/// The answer to creating or rotating a key: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyWithSecret {
    #[serde(flatten)]
    pub key: ApiKey,
    pub secret: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_user_id: Option<String>,
    /// Defaults to the app's organization; must match it when the app has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// A subset of the app's permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    /// Must be in the future.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<crate::Credits>,
    /// Overrides the app's scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_scheme: Option<String>,
    /// A charge that takes the balance below this (at least 1) raises a `credits.low` alert
    /// on the WebSocket `alerts` channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_credits_threshold: Option<i64>,
}

/// Absent fields are kept; `null` clears a nullable field.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::patch::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub owner_user_id: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(
        default,
        deserialize_with = "nullable_datetime",
        serialize_with = "serialize_nullable_datetime",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<OffsetDateTime>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `null` makes the key unlimited; otherwise set, increment or decrement the balance.
    #[serde(
        default,
        deserialize_with = "crate::patch::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::CreditsUpdate>)]
    pub credits: Option<Option<crate::CreditsUpdate>>,
    /// `null` returns the key to its app's scheme.
    #[serde(
        default,
        deserialize_with = "crate::patch::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub rate_limit_scheme: Option<Option<String>>,
    /// `null` turns the `credits.low` alert off.
    #[serde(
        default,
        deserialize_with = "crate::patch::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>)]
    pub low_credits_threshold: Option<Option<i64>>,
}

fn nullable_datetime<'de, D>(deserializer: D) -> Result<Option<Option<OffsetDateTime>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    time::serde::rfc3339::option::deserialize(deserializer).map(Some)
}

fn serialize_nullable_datetime<S>(
    value: &Option<Option<OffsetDateTime>>,
    serializer: S,
) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
{
    time::serde::rfc3339::option::serialize(&value.flatten(), serializer)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// How long the previous secret keeps working; 0 or absent ends it when the call returns.
    /// At most 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_previous_in_seconds: Option<u64>,
}

/// Filters for listing an app's keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListKeysParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub owner_user_id: Option<String>,
    pub organization_id: Option<String>,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: Option<String>,
    /// Part of a key's name (any case), the start of its `start`, or its id.
    pub search: Option<String>,
}
