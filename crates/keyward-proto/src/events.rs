//! The WebSocket protocol of `GET /ws` (SPEC §4.5): the messages each side sends, and the
//! events and alerts they carry.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::ErrorBody;

/// Close code after `auth_failed`: the client must not reconnect with the same credential.
pub const CLOSE_AUTH_FAILED: u16 = 4001;
/// Close code after `token_expired`: the client reconnects with a fresh token.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4002;
/// Close code when the server shuts down (RFC 6455 "going away"): reconnect.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code when a connection limit is reached (RFC 6455 "try again later").
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// What the server sends, as text frames of JSON tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The credential was accepted.
    Connected {
        session: Session,
    },
    /// The credential was refused; the server closes with 4001 next.
    AuthFailed {
        error: ErrorBody,
    },
    Subscribed {
        channel: String,
    },
    Unsubscribed {
        channel: String,
    },
    /// One event or alert.
    Event {
        channel: String,
        event: Box<Event>,
    },
    /// This socket fell behind and `missed` events were dropped for it (or, resuming from an
    /// id older than the retention window, at least that many).
    Lagged {
        missed: u64,
    },
    /// The token has expired; the server closes with 4002 next.
    TokenExpired,
    /// A message the server could not act on; the connection stays open.
    Error {
        error: ErrorBody,
    },
}

/// What a client sends.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// `channel` is `events` or `alerts`.
    Subscribe {
        channel: String,
    },
    Unsubscribe {
        channel: String,
    },
}

/// Who the socket speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// `api_key` (a root key), `jwt` or `client_public_key`.
    pub credential_type: String,
    pub environment: String,
    /// The end user, for JWT and signed-user-token sessions; they see only their own keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// When the token ends the session (`token_expired`).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

/// An event about a key, or an alert. It never carries a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// `evt_<number>`; numbers grow in the order changes committed. Pass the last one seen as
    /// `since` when reconnecting.
    pub id: String,
    /// `key.created`, `key.updated`, `key.rotated`, `key.revoked`, `key.deleted`,
    /// `key.expired`, `key.leaked`, `rate_limit.exceeded`, `credits.low`,
    /// `credits.exhausted`, `key.expiring` or `webhook.disabled`.
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub environment: String,
    /// The key the event is about; absent for an alert about something else
    /// (`webhook.disabled`, whose `details` name the endpoint, or `key.leaked` about a root
    /// key, whose `details` carry `root_key_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<EventKey>,
    /// The alert's figures, e.g. `{"remaining": 9, "threshold": 10}` for `credits.low`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The key an event is about, as it was when the event was raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventKey {
    pub id: String,
    pub app: String,
    pub name: String,
    pub owner_user_id: Option<String>,
    pub organization_id: Option<String>,
    pub permissions: Vec<String>,
    #[schema(value_type = Object)]
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The non-secret beginning of the secret.
    pub start: String,
    pub enabled: bool,
    pub revoked: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The URL parameters of `GET /ws` (SPEC §4.4), plus `since` to resume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SocketParams {
    #[serde(rename = "api-key")]
    pub api_key: Option<String>,
    pub token: Option<String>,
    pub tenant: Option<String>,
    /// The id of the last event the client received (`evt_…`).
    pub since: Option<String>,
}
