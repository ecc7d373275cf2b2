use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The category of an error; each maps to one HTTP status (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorType {
    AuthenticationError,
    PermissionError,
    NotFoundError,
    ConflictError,
    ValidationError,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimitError,
    InternalError,
    ServiceUnavailable,
}

/// Every error answer: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub error_type: ErrorType,
    /// A stable snake_case reason, e.g. `invalid_api_key`.
    pub code: String,
    /// A sentence for a person. It never contains a secret.
    pub message: String,
    /// `req_` and 12 hex digits; also in the `X-Request-ID` header.
    pub request_id: String,
}

/// One page of a cursor-paginated list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging parameters shared by every list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1 to 100; 20 by default.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (liveness), `ready`, or `degraded` (ready, but Redis is unreachable and usage
    /// control runs on its fallback).
    pub status: String,
    /// With `REDIS_URL`: `up` or `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}
