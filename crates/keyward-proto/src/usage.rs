//! Usage control on the wire: rate-limit schemes, organisations, credits, and what a
//! verification reports about them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use time::OffsetDateTime;

/// At most `limit` requests per `period_seconds`, in windows aligned to the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateWindow {
    pub limit: u64,
    pub period_seconds: u64,
}

/// A named set of windows that apps, keys, organisations and root keys refer to by slug.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RateLimitScheme {
    /// The slug, which is the scheme's id.
    pub id: String,
    pub slug: String,
    pub environment: String,
    pub windows: Vec<RateWindow>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRateLimitSchemeRequest {
    /// Lowercase letters, digits, `_` and `-`, e.g. `standard_tier`.
    pub slug: String,
    /// 1 to 8 windows, no two with the same period.
    pub windows: Vec<RateWindow>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRateLimitSchemeRequest {
    pub windows: Vec<RateWindow>,
}

/// `daily` or `monthly`, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CreditPeriod {
    Daily,
    Monthly,
}

/// A customer organisation: every key with its id shares its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Organization {
    pub id: String,
    pub environment: String,
    pub rate_limit_scheme: Option<String>,
    /// How many credits the organisation's keys may spend together (per period, if set).
    pub credit_cap: Option<i64>,
    pub credit_period: Option<CreditPeriod>,
    /// Spent against the cap in the current period.
    pub credits_spent: i64,
    /// The `credits.low` alert's threshold for its keys that have none of their own.
    #[serde(default)]
    pub low_credits_threshold: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The whole configuration: an absent field is no limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutOrganizationRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_cap: Option<i64>,
    /// Without it, the cap is for all time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_period: Option<CreditPeriod>,
    /// A charge that takes one of its keys' credits below this raises `credits.low`, for
    /// keys without a threshold of their own (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_credits_threshold: Option<i64>,
}

/// Credits come back to `amount` at the start of every day or month (UTC); unused credits
/// do not accumulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refill {
    pub interval: CreditPeriod,
    pub amount: i64,
}

/// A key's credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credits {
    pub remaining: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
}

/// A change to a key's credits: exactly one of `remaining` (set), `increment` or
/// `decrement`, and/or `refill` (`null` removes it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment: Option<i64>,
    /// Never takes the balance below zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrement: Option<i64>,
    #[serde(
        default,
        deserialize_with = "crate::patch::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Refill>)]
    pub refill: Option<Option<Refill>>,
}

/// The tightest rate window after a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RateLimitStatus {
    pub limit: u64,
    pub remaining: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub reset_at: OffsetDateTime,
}

/// A key's balance after a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreditsStatus {
    pub remaining: i64,
}

/// A new demo sandbox: the only time its root key is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DemoSession {
    pub secret: String,
    pub environment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}
