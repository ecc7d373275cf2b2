//! Extractors that turn every bad request into the error envelope: JSON bodies, query
//! strings, and the root key that authenticates a call.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use keyward_core::model::Tenancy;
use keyward_core::scope::{Scope, ScopeSet};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::middleware::{looks_like_secret, RequestId};
use crate::rate_limit::RateLimitSlot;
use crate::verifier::RootKeyRefusal;
use crate::{clock, AppState};
use keyward_core::Environment;

/// A JSON body that must be present.
pub(crate) struct ApiJson<T>(pub T);

/// A JSON body that may be empty, for calls whose every field is optional.
pub(crate) struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "empty_body",
                "This call needs a JSON body",
            ));
        }
        parse_json(&bytes).map(Self)
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse_json(&bytes).map(Self)
    }
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "The request body is larger than the server accepts",
                )
            } else {
                ApiError::bad_request("unreadable_body", "The request body could not be read")
            }
        })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first, so that broken JSON is a 400 even when its start would fail as data.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(|error| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "The body is not valid JSON: {}",
                redact_quoted(&error.to_string())
            ),
        )
    })?;
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let location = match error.path().to_string() {
            path if path == "." => String::new(),
            path => redact_quoted(&format!(" at `{path}`")),
        };
        let detail = redact_quoted(&error.into_inner().to_string());
        let code = if detail.starts_with("unknown field") {
            "unknown_field"
        } else {
            "invalid_field"
        };
        ApiError::invalid(code, format!("Invalid request body{location}: {detail}"))
    })
}

/// serde quotes the offending value in some messages (`invalid type: string "…"`); a value can
/// be a secret pasted into the wrong field, so it never goes back in a message. Field names
/// (in backticks) are kept, to say what was wrong, unless one is shaped like a secret.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out.split('`')
        .enumerate()
        .map(|(index, part)| {
            let quoted = index % 2 == 1;
            if quoted && looks_like_secret(part) {
                "…"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// A query string, with unknown parameters refused like unknown body fields.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(value)| Self(value))
            .map_err(|rejection| {
                ApiError::invalid(
                    "invalid_query",
                    format!(
                        "Invalid query string: {}",
                        redact_quoted(&rejection.body_text())
                    ),
                )
            })
    }
}

/// The root key behind a call to Keyward's own API.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub root_key_id: String,
    pub tenancy: Tenancy,
    pub scopes: ScopeSet,
    pub request_id: Option<String>,
}

impl Caller {
    pub(crate) fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.grants(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "insufficient_scope",
                format!("This root key lacks the `{scope}` scope"),
            ))
        }
    }
}

/// The secret a request presents: `Authorization: Bearer …` or `X-API-Key` (SPEC §4.4).
pub(crate) fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        let value = authorization.to_str().ok()?;
        let (scheme, credential) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| credential.trim())
            .filter(|credential| !credential.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let presented = presented_secret(&parts.headers).ok_or_else(ApiError::invalid_api_key)?;
        let entry = state
            .verifier
            .authenticate_root(state.store.as_ref(), presented, clock::now())
            .await?
            .map_err(|refusal| match refusal {
                RootKeyRefusal::Invalid => ApiError::invalid_api_key(),
                RootKeyRefusal::Revoked => {
                    ApiError::forbidden("key_revoked", "This root key has been revoked")
                }
                RootKeyRefusal::Expired => {
                    ApiError::forbidden("key_expired", "This root key has expired")
                }
            })?;
        // A demo sandbox's key is always limited; others when they name a scheme.
        let windows = if entry.key.tenancy.environment == Environment::Demo {
            &state.demo.api_windows
        } else {
            &entry.windows
        };
        state
            .limit_calls(
                parts.extensions.get::<RateLimitSlot>(),
                &entry.meter,
                windows,
                clock::now(),
            )
            .await?;
        Ok(Self {
            root_key_id: entry.key.id.clone(),
            tenancy: entry.key.tenancy.clone(),
            scopes: entry.key.scopes,
            request_id: parts.extensions.get::<RequestId>().map(|id| id.0.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn quoted_values_are_redacted() {
        assert_eq!(
            redact_quoted(r#"invalid type: string "sk_live_secret", expected u32"#),
            r#"invalid type: string "…", expected u32"#
        );
        assert_eq!(redact_quoted("unknown field `x`"), "unknown field `x`");
        assert_eq!(
            redact_quoted("unknown field `kw_live_abc`, expected `name`"),
            "unknown field `…`, expected `name`"
        );
    }

    #[test]
    fn credentials_come_from_bearer_or_x_api_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_secret(&headers), None);
        headers.insert("x-api-key", HeaderValue::from_static("sk_x"));
        assert_eq!(presented_secret(&headers), Some("sk_x"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(
            presented_secret(&headers),
            None,
            "a wrong scheme is not ignored"
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  sk_y "),
        );
        assert_eq!(presented_secret(&headers), Some("sk_y"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(presented_secret(&headers), None);
    }
}
