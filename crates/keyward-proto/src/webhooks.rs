//! Webhook endpoints and their deliveries (SPEC §4.8), and the body Keyward POSTs.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// Where events and alerts are pushed. Its signing secret is never part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpoint {
    /// `whe_…`
    pub id: String,
    pub url: String,
    /// Event types of SPEC §4.5 and §4.9, or `["*"]` for all.
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// Why Keyward turned it off (it kept failing); absent when on or turned off by a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub environment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The answer to creating an endpoint or rotating its secret: the only time the secret shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: WebhookEndpoint,
    /// `whsec_<base64>`: verify deliveries with it (Standard Webhooks).
    pub secret: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpointRequest {
    /// `https://…` (or `http://`); private, loopback and link-local addresses are refused
    /// unless `KEYWARD_ALLOW_PRIVATE_URLS` is set.
    pub url: String,
    /// `["*"]` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// On by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookEndpointRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Turning an endpoint back on resumes its pending deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// One event on its way to one endpoint. Its id is the `webhook-id` of every attempt, so a
/// receiver can drop a repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    /// `whd_…`
    pub id: String,
    pub endpoint_id: String,
    /// `evt_…`; absent for a test event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The event's type, or `webhook.test`.
    pub event_type: String,
    /// `pending`, `succeeded` or `failed` (every attempt failed; retry to queue it again).
    pub status: String,
    pub attempts: u32,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Its attempts, oldest first.
    pub history: Vec<WebhookAttempt>,
}

/// One POST to the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookAttempt {
    #[serde(with = "time::serde::rfc3339")]
    pub attempted_at: OffsetDateTime,
    /// The endpoint's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first kilobyte of the endpoint's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
}

/// The answer to `POST …/{id}/test` and `…/retry`: the delivery queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveryQueued {
    pub delivery_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListWebhookDeliveriesParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// What Keyward POSTs (Standard Webhooks): the event of `/ws` in `data`, or the test message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookPayload {
    /// The event's type, e.g. `key.revoked`, `webhook.disabled`, `webhook.test`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the event happened.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}
