//! Extractors that turn every bad request into the error envelope: JSON bodies, query
//! strings, and the root key that authenticates a call.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use keyward_core::credential::{self, Presented, PresentedError};
use keyward_core::id::{self, IdKind};
use keyward_core::model::{CallLimit, Tenancy};
use keyward_core::scope::{Scope, ScopeSet};
use keyward_core::signature::EMPTY_BODY_SHA256;
use keyward_core::Timestamp;
use keyward_store::Change;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::middleware::{looks_like_secret, RequestId};
use crate::rate_limit::RateLimitSlot;
use crate::verification::{Refusal, RequestFacts};
use crate::{os_rng, AppState};

/// Why a request's body or query could not be read; `error.rs` makes it an answer. Every
/// detail has passed through `redact_quoted`.
#[derive(Debug, Clone)]
pub(crate) enum Unreadable {
    /// A body sent as something other than JSON.
    NotJson,
    EmptyBody,
    BodyTooLarge,
    Body,
    Json(String),
    UnknownField(String),
    Field(String),
    Query(String),
}

/// A JSON body that must be present.
pub(crate) struct ApiJson<T>(pub T);

/// A JSON body that may be empty, for calls whose every field is optional.
pub(crate) struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Unreadable::EmptyBody.into());
        }
        Ok(Self(parse_json(&bytes)?))
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        Ok(Self(parse_json(&bytes)?))
    }
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, Unreadable> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Unreadable::BodyTooLarge
            } else {
                Unreadable::Body
            }
        })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Unreadable> {
    // Syntax first, so that broken JSON is a 400 even when its start would fail as data.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|error| Unreadable::Json(redact_quoted(&error.to_string())))?;
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let location = match error.path().to_string() {
            path if path == "." => String::new(),
            path => redact_quoted(&format!(" at `{path}`")),
        };
        let detail = redact_quoted(&error.into_inner().to_string());
        let message = format!("Invalid request body{location}: {detail}");
        if detail.starts_with("unknown field") {
            Unreadable::UnknownField(message)
        } else {
            Unreadable::Field(message)
        }
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
            if quoted && !is_field_name(part) {
                "…"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// Whether text in backticks can be echoed: a field name or path as Keyward's own are
/// written (`credits.refill.amount`, `permissions[0]`). Anything else may be a secret of
/// any format pasted as a field name.
fn is_field_name(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_.[]".contains(&byte)
        })
        && !looks_like_secret(text)
}

/// A query string, with unknown parameters refused like unknown body fields.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(value)| Self(value))
            .map_err(|rejection| Unreadable::Query(redact_quoted(&rejection.body_text())).into())
    }
}

/// The credential behind a call to Keyward's own API: a root key, or a workspace key's
/// signature (SPEC §4.4).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// `rk_…` or `wk_…`, as the audit log records it.
    pub actor_id: String,
    pub tenancy: Tenancy,
    pub scopes: ScopeSet,
    /// How its calls are limited, which the credentials it makes inherit.
    pub limit: CallLimit,
    pub request_id: Option<String>,
    /// The request's time, read once at the edge.
    pub now: Timestamp,
}

impl Caller {
    pub(crate) fn require(&self, scope: Scope) -> Result<(), ApiError> {
        self.require_any(&[scope])
    }

    /// Any one of `scopes` will do.
    pub(crate) fn require_any(&self, scopes: &[Scope]) -> Result<(), ApiError> {
        if scopes.iter().any(|scope| self.scopes.grants(*scope)) {
            return Ok(());
        }
        let names: Vec<String> = scopes.iter().map(|scope| format!("`{scope}`")).collect();
        Err(ApiError::forbidden(
            "insufficient_scope",
            format!("This key lacks the {} scope", names.join(" or ")),
        ))
    }

    /// The audit context of a change this caller makes.
    pub(crate) fn change(&self) -> Change {
        Change {
            tenancy: self.tenancy.clone(),
            actor: self.actor_id.clone(),
            actor_scopes: self.scopes,
            request_id: self.request_id.clone(),
            audit_id: id::generate(IdKind::AuditEntry, self.now, &mut os_rng()),
            now: self.now,
        }
    }
}

/// The hex SHA-256 of a signed request's body, computed by
/// [`crate::middleware::digest_signed_body`] before handlers read the body.
#[derive(Debug, Clone)]
pub(crate) struct BodyDigest(pub String);

/// The request's time, read once, by the extractor that authenticates the request; the
/// handler and everything it calls take it from there (`Caller::now`). Requests that
/// authenticate nobody (`/healthz`) never read the clock.
pub(crate) fn request_time() -> Timestamp {
    crate::clock::now()
}

/// What a request presents to authenticate (SPEC §4.4); refused when it presents nothing
/// readable.
pub(crate) fn presented(headers: &HeaderMap) -> Result<Presented<'_>, Refusal> {
    let header = |name| {
        headers
            .get(name)
            .map(|value| value.to_str().map_err(|_| Refusal::InvalidKey))
            .transpose()
    };
    let authorization = header(header::AUTHORIZATION.as_str())?;
    let x_api_key = header("x-api-key")?;
    credential::from_headers(authorization, x_api_key).map_err(|error| match error {
        PresentedError::Signature(error) => Refusal::InvalidSignature(error.message()),
        PresentedError::Missing | PresentedError::UnsupportedScheme => Refusal::InvalidKey,
    })
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone());
        let now = request_time();
        let facts = RequestFacts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            body_sha256: parts
                .extensions
                .get::<BodyDigest>()
                .map_or(EMPTY_BODY_SHA256, |digest| digest.0.as_str()),
        };
        let authentication = state
            .verification
            .authenticate_caller(presented(&parts.headers)?, &facts, now)
            .await;
        if let (Some(calls), Some(slot)) = (
            authentication.calls,
            parts.extensions.get::<RateLimitSlot>(),
        ) {
            slot.fill(calls);
        }
        let caller = authentication.outcome?;
        Ok(Self {
            actor_id: caller.actor_id,
            tenancy: caller.tenancy,
            scopes: caller.scopes,
            limit: caller.limit,
            request_id,
            now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // A secret of another format pasted as a field name is not echoed either.
        assert_eq!(
            redact_quoted("unknown field `sk-proj-AbC123`, expected `name`"),
            "unknown field `…`, expected `name`"
        );
        assert_eq!(
            redact_quoted("invalid type at `credits.refill.amount`"),
            "invalid type at `credits.refill.amount`"
        );
    }
}
