//! `GET /api/v1/usage`: verification counts over time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// What to count: every filter is optional; the range defaults to the last 24 hours.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    pub key_id: Option<String>,
    /// An app's slug.
    pub app: Option<String>,
    pub organization_id: Option<String>,
    /// A verification code, e.g. `VALID` or `RATE_LIMITED`.
    pub outcome: Option<String>,
    /// RFC 3339; 24 hours before `to` by default.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<OffsetDateTime>,
    /// RFC 3339, exclusive; now by default. The range is widened to whole buckets, and the
    /// answer says which.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<OffsetDateTime>,
    /// `minute`, `hour` (default) or `day`. At most 50,000 buckets per query.
    pub granularity: Option<String>,
    /// `GET /api/v1/usage/keys` only: how many keys to list, 1 to 100 (default 10).
    pub limit: Option<u32>,
}

/// The range of an end user's own key's counts (`GET /api/v1/me/keys/{id}/usage`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MyKeyUsageParams {
    /// RFC 3339; 24 hours before `to` by default.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<OffsetDateTime>,
    /// RFC 3339, exclusive; now by default.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<OffsetDateTime>,
    /// `minute`, `hour` (default) or `day`.
    pub granularity: Option<String>,
}

/// Counts per bucket, split by outcome; buckets without verifications are left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub granularity: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// Every verification in the range.
    pub total: i64,
    /// The same, by outcome.
    pub outcomes: BTreeMap<String, i64>,
    pub data: Vec<UsageBucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageBucket {
    /// The bucket's start (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub total: i64,
    pub outcomes: BTreeMap<String, i64>,
}

/// The keys with the most verifications in a range, most first (`GET /api/v1/usage/keys`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyUsageReport {
    pub granularity: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub data: Vec<KeyUsage>,
}

/// One key's verifications over a report's range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyUsage {
    pub key_id: String,
    pub total: i64,
    pub outcomes: BTreeMap<String, i64>,
}
