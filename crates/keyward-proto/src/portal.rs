//! The customer portal (SPEC §4.10).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// A link for one customer to manage their keys of one app.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePortalSessionRequest {
    /// The customer: the portal shows and makes keys with this `owner_user_id` only.
    pub owner_user_id: String,
    /// The app's slug.
    pub app: String,
    /// Where the portal's "back" link leads: `https://…`, or an origin listed in
    /// `KEYWARD_PORTAL_RETURN_ORIGINS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    /// When given, the customer sees and makes only keys of this organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// The permissions new keys may have: a subset of the app's (all of them by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// The most active keys the customer may hold in the app (10 by default, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u32>,
}

/// The link, to send the customer's browser to (once, before `expires_at`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortalSessionLink {
    pub url: String,
    /// When the link stops working if unused.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A link's code, redeemed by the portal page when the customer's browser opens the link.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemPortalCodeRequest {
    pub code: String,
}

/// The session a redeemed code opened.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortalSessionInfo {
    /// `ps_…`
    pub id: String,
    pub environment: String,
    /// The app's slug and name.
    pub app: String,
    pub app_name: String,
    pub owner_user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// What new keys may have.
    pub permissions: Vec<String>,
    pub max_keys: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    /// Whether the session's creator could read usage (the portal then shows it).
    pub shows_usage: bool,
    /// When the session ends.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}
