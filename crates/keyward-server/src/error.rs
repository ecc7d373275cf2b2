//! The one place where failures become HTTP answers.
//!
//! Handlers return [`ApiError`]. Its response carries the error as an extension with an empty
//! body; the request-id middleware renders the envelope, because only it knows the request id.
//! Any other 4xx/5xx (unknown route, a layer's rejection, a panic) is rendered there too, so
//! every error leaves the server in the envelope of SPEC §3.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_proto::ErrorType;
use keyward_store::{Conflict, Forbidden, Reference, StoreError};

use crate::usage::UsageError;
use crate::verification::{Denied, Refusal, VerificationError};

/// What the envelope will say; attached to the response until the middleware renders it.
#[derive(Debug, Clone)]
pub(crate) struct ErrorPayload {
    pub(crate) error_type: ErrorType,
    pub(crate) code: Cow<'static, str>,
    pub(crate) message: Cow<'static, str>,
}

impl ErrorPayload {
    /// The envelope's `error` object.
    pub(crate) fn body(&self, request_id: &str) -> keyward_proto::ErrorBody {
        keyward_proto::ErrorBody {
            error_type: self.error_type,
            code: self.code.clone().into_owned(),
            message: self.message.clone().into_owned(),
            request_id: request_id.to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    payload: ErrorPayload,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            payload: ErrorPayload {
                error_type: error_type_for(status),
                code: code.into(),
                message: message.into(),
            },
        }
    }

    /// The error's message, e.g. for a per-row report inside a successful answer.
    pub fn message(&self) -> &str {
        &self.payload.message
    }

    pub fn invalid_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Invalid or missing API key",
        )
    }

    /// 401 for a request whose own authentication (not an API key) failed.
    pub fn unauthenticated(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(what: &'static str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("{}_not_found", what.replace(' ', "_")),
            format!("No {what} with that identifier exists in this environment"),
        )
    }

    /// 422: the request was well-formed JSON but a value is not acceptable.
    pub fn invalid(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 400: the request could not be read at all.
    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Storage cannot be reached (or could not say whether a commit was made): retryable.
    pub fn storage_unavailable() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "Storage is unreachable; try again shortly",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The server failed to handle the request; it has been logged",
        )
    }

    /// The envelope's `error` object, for answers that are not HTTP responses (WebSocket).
    pub(crate) fn body(&self, request_id: &str) -> keyward_proto::ErrorBody {
        self.payload.body(request_id)
    }

    /// What the envelope will say, for answers written outside the HTTP stack (gRPC).
    pub(crate) fn payload(&self) -> &ErrorPayload {
        &self.payload
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &str {
        &self.payload.code
    }
}

/// SPEC §3: each error type belongs to one status.
pub(crate) fn error_type_for(status: StatusCode) -> ErrorType {
    match status.as_u16() {
        401 => ErrorType::AuthenticationError,
        403 => ErrorType::PermissionError,
        404 | 405 => ErrorType::NotFoundError,
        409 => ErrorType::ConflictError,
        413 => ErrorType::PayloadTooLarge,
        415 => ErrorType::UnsupportedMediaType,
        429 => ErrorType::RateLimitError,
        503 | 504 => ErrorType::ServiceUnavailable,
        400..=499 => ErrorType::ValidationError,
        _ => ErrorType::InternalError,
    }
}

/// The envelope for an error response that did not come from an [`ApiError`].
pub(crate) fn payload_for_bare_status(status: StatusCode) -> ErrorPayload {
    let (code, message) = match status.as_u16() {
        404 => ("route_not_found", "No such route"),
        405 => (
            "method_not_allowed",
            "This route does not accept that method",
        ),
        408 => ("request_timeout", "The request took too long"),
        413 => (
            "payload_too_large",
            "The request body is larger than the server accepts",
        ),
        400..=499 => ("bad_request", "The request could not be understood"),
        503 => (
            "service_unavailable",
            "The service is temporarily unavailable",
        ),
        _ => (
            "internal_error",
            "The server failed to handle the request; it has been logged",
        ),
    };
    ErrorPayload {
        error_type: error_type_for(status),
        code: code.into(),
        message: message.into(),
    }
}

impl ApiError {
    /// `WWW-Authenticate` on a 401 (RFC 9110 requires it).
    pub(crate) fn write_challenge(&self, headers: &mut axum::http::HeaderMap) {
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        self.write_challenge(response.headers_mut());
        response.extensions_mut().insert(self.payload);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(conflict) => {
                let (code, message) = match conflict {
                    Conflict::AppSlugTaken => (
                        "app_slug_taken",
                        "An app with this slug already exists in this environment",
                    ),
                    Conflict::PermissionInUse => (
                        "permission_in_use",
                        "A permission being removed is still held by a key of this app",
                    ),
                    Conflict::KeyRevoked => ("key_revoked", "A revoked key cannot be changed"),
                    Conflict::RateLimitSchemeInUse => (
                        "rate_limit_scheme_in_use",
                        "An app, key, organization or root key still uses this rate-limit scheme",
                    ),
                    Conflict::RateLimitSchemeExists => (
                        "rate_limit_scheme_exists",
                        "A rate-limit scheme with this slug already exists in this environment",
                    ),
                    Conflict::AppChanged => (
                        "app_changed",
                        "The app changed while this request read it; try again",
                    ),
                    Conflict::SecretExists => (
                        "secret_exists",
                        "A credential with this secret already exists",
                    ),
                    Conflict::MaxKeysReached(limit) => {
                        return ApiError::new(
                            StatusCode::CONFLICT,
                            "max_keys_reached",
                            format!(
                                "An end user may hold at most {limit} active keys; revoke one first"
                            ),
                        )
                    }
                };
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            StoreError::InvalidReference(reference) => match reference {
                Reference::UnknownRateLimitScheme => ApiError::invalid(
                    "unknown_rate_limit_scheme",
                    "No rate-limit scheme with that slug exists in this environment",
                ),
                Reference::UnknownApp => ApiError::invalid(
                    "unknown_app",
                    "No app with that slug exists in this environment",
                ),
            },
            StoreError::NotPermitted(Forbidden::InsufficientScope) => ApiError::forbidden(
                "insufficient_scope",
                "A key can only create, rotate or remove credentials that confer no more than \
                 it holds itself",
            ),
            StoreError::NotPermitted(Forbidden::ActorRevoked) => ApiError::forbidden(
                "key_revoked",
                "The key that made this request was revoked while it ran",
            ),
            StoreError::Unavailable(source) | StoreError::UncertainCommit { source, .. } => {
                tracing::warn!(error = %source, "storage unavailable");
                ApiError::storage_unavailable()
            }
            other => {
                tracing::error!(error = %other, "storage failed");
                ApiError::internal()
            }
        }
    }
}

impl From<keyward_core::validate::FieldError> for ApiError {
    fn from(error: keyward_core::validate::FieldError) -> Self {
        ApiError::invalid("invalid_field", error.to_string())
    }
}

impl From<keyward_core::secret::PrefixError> for ApiError {
    fn from(error: keyward_core::secret::PrefixError) -> Self {
        let code = match error {
            keyward_core::secret::PrefixError::Reserved => "reserved_key_prefix",
            keyward_core::secret::PrefixError::Invalid => "invalid_key_prefix",
        };
        ApiError::invalid(code, error.to_string())
    }
}

impl From<crate::extract::Unreadable> for ApiError {
    fn from(unreadable: crate::extract::Unreadable) -> Self {
        use crate::extract::Unreadable;
        match unreadable {
            Unreadable::NotJson => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the request body as JSON, with `Content-Type: application/json`",
            ),
            Unreadable::EmptyBody => {
                ApiError::bad_request("empty_body", "This call needs a JSON body")
            }
            Unreadable::BodyTooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is larger than the server accepts",
            ),
            Unreadable::Body => {
                ApiError::bad_request("unreadable_body", "The request body could not be read")
            }
            Unreadable::Json(detail) => ApiError::bad_request(
                "invalid_json",
                format!("The body is not valid JSON: {detail}"),
            ),
            Unreadable::UnknownField(message) => ApiError::invalid("unknown_field", message),
            Unreadable::Field(message) => ApiError::invalid("invalid_field", message),
            Unreadable::Query(detail) => {
                ApiError::invalid("invalid_query", format!("Invalid query string: {detail}"))
            }
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        ApiError::new(status, refusal.code(), refusal.message())
    }
}

impl From<VerificationError> for ApiError {
    fn from(error: VerificationError) -> Self {
        match error {
            VerificationError::Storage(error) => error.into(),
            VerificationError::Usage(error) => error.into(),
            VerificationError::JwksUnavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "jwks_unavailable",
                "The public key's JWKS cannot be fetched right now",
            ),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Refused(refusal) => refusal.into(),
            Denied::Failed(error) => error.into(),
        }
    }
}

impl From<UsageError> for ApiError {
    fn from(error: UsageError) -> Self {
        match error {
            UsageError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "usage_unavailable",
                "Usage limits cannot be checked right now (Redis is unreachable); try again \
                 shortly",
            ),
            UsageError::Adjustment(error) => {
                ApiError::new(StatusCode::CONFLICT, "no_credits", error.to_string())
            }
            // Verification reads the balance again before answering; only a second forgetting
            // within that read leaves it here.
            UsageError::StaleCredits => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "usage_unavailable",
                "Usage limits cannot be checked right now; try again shortly",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps_to_the_spec_type() {
        let cases = [
            (401, ErrorType::AuthenticationError),
            (403, ErrorType::PermissionError),
            (404, ErrorType::NotFoundError),
            (409, ErrorType::ConflictError),
            (400, ErrorType::ValidationError),
            (422, ErrorType::ValidationError),
            (413, ErrorType::PayloadTooLarge),
            (415, ErrorType::UnsupportedMediaType),
            (429, ErrorType::RateLimitError),
            (500, ErrorType::InternalError),
            (503, ErrorType::ServiceUnavailable),
        ];
        for (status, expected) in cases {
            assert_eq!(
                error_type_for(StatusCode::from_u16(status).unwrap()),
                expected
            );
        }
    }

    #[test]
    fn store_errors_never_leak_internals() {
        let error = ApiError::from(StoreError::Corrupt("secret detail".to_owned()));
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.payload.message.contains("secret detail"));
        assert_eq!(
            ApiError::from(StoreError::NotFound("key")).code(),
            "key_not_found"
        );
    }
}
