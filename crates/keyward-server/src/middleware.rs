//! Cross-cutting request handling: request ids, the `API-Version` header, rendering error
//! envelopes, the 415 rule, and one access-log line per request.

use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyward_proto::ErrorEnvelope;
use rand::RngCore;

use crate::error::{payload_for_bare_status, ApiError, ErrorPayload};
use crate::extract::Unreadable;
use crate::rate_limit::RateLimitSlot;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static API_VERSION: HeaderName = HeaderName::from_static("api-version");

/// Marks an error response whose envelope also goes in the `Keyward-Error` header, for
/// proxies that drop the body of the answer they asked for (`gateway::forward_auth`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnvelopeInHeader;

/// The request's id, `req_` and 12 lowercase hex digits.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

fn is_well_formed_request_id(value: &str) -> bool {
    value.len() == 16
        && value.starts_with("req_")
        && value[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn new_request_id() -> String {
    // Request ids are not secrets: the thread-local generator (a CSPRNG seeded by the OS)
    // saves a system call per request.
    let mut bytes = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("req_{}", hex::encode(bytes))
}

/// The request's id: the one the caller sent when it is well formed, or a fresh one.
pub(crate) fn request_id_for(sent: Option<&str>) -> String {
    sent.filter(|value| is_well_formed_request_id(value))
        .map_or_else(new_request_id, str::to_owned)
}

/// The outermost layer: names the request, renders error envelopes, logs the outcome.
pub(crate) async fn request_context(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id_for(
        request
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(|value| value.to_str().ok()),
    );
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let rate_limits = RateLimitSlot::default();
    request.extensions_mut().insert(rate_limits.clone());
    let method = request.method().clone();
    let uri = request.uri().clone();

    // A NUL byte is never part of an id, slug or filter, and PostgreSQL refuses it in text.
    let mut response = if has_encoded_nul(&uri) {
        ApiError::bad_request("invalid_characters", "The URL contains a NUL byte").into_response()
    } else {
        next.run(request).await
    };
    let status = response.status();
    if let Some(report) = rate_limits.report() {
        crate::rate_limit::write_headers(report, status, response.headers_mut());
    }
    if status.is_client_error() || status.is_server_error() {
        let payload = response
            .extensions_mut()
            .remove::<ErrorPayload>()
            .unwrap_or_else(|| payload_for_bare_status(status));
        let in_header = response.extensions().get::<EnvelopeInHeader>().is_some();
        render_envelope(&mut response, payload, &request_id, in_header);
    }
    write_request_headers(response.headers_mut(), &request_id);

    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status.is_server_error() {
        let path = loggable_path(uri.path());
        tracing::error!(%method, %path, status = status.as_u16(), elapsed_ms, request_id, "request failed");
    } else if tracing::enabled!(tracing::Level::DEBUG) {
        // At debug: a line per request would cost the hot path a formatted write.
        let path = loggable_path(uri.path());
        tracing::debug!(%method, %path, status = status.as_u16(), elapsed_ms, request_id, "request");
    }
    response
}

fn has_encoded_nul(uri: &axum::http::Uri) -> bool {
    uri.path_and_query()
        .is_some_and(|text| text.as_str().to_ascii_lowercase().contains("%00"))
}

/// Whether some text is shaped like a Keyward secret (`…_live_…`), so that it is kept out
/// of logs and error messages even where no secret belongs.
pub(crate) fn looks_like_secret(text: &str) -> bool {
    ["_live_", "_test_", "_demo_"]
        .iter()
        .any(|marker| text.contains(marker))
}

/// The path for the access log. Query strings may carry credentials (`?api-key=`) and are left
/// out; a path segment shaped like a secret (`…_live_…`) is redacted, since people do paste
/// keys into URLs, and so is a customer portal link's one-time code.
fn loggable_path(path: &str) -> String {
    if path.starts_with("/portal/enter/") {
        return "/portal/enter/[redacted]".to_owned();
    }
    path.split('/')
        .map(|segment| {
            if looks_like_secret(segment) {
                "[redacted]"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `X-Request-ID` and `API-Version`, which every answer carries (SPEC §3).
pub(crate) fn write_request_headers(headers: &mut axum::http::HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    headers.insert(API_VERSION.clone(), HeaderValue::from_static("1.0"));
}

/// The envelope of SPEC §3 as bytes, and its headers: `Content-Type` and, for a gateway's
/// answer, `Keyward-Error` (the same bytes, for proxies that drop the body).
pub(crate) fn envelope(
    payload: &ErrorPayload,
    request_id: &str,
    in_header: bool,
    headers: &mut axum::http::HeaderMap,
) -> Option<Vec<u8>> {
    let body = serde_json::to_vec(&ErrorEnvelope {
        error: payload.body(request_id),
    })
    .inspect_err(|error| tracing::error!(%error, "could not render an error envelope"))
    .ok()?;
    if in_header {
        // Keyward's messages are ASCII sentences; serde_json escapes control bytes.
        if let Ok(value) = HeaderValue::from_bytes(&body) {
            headers.insert(crate::gateway::ERROR_HEADER.clone(), value);
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Some(body)
}

fn render_envelope(
    response: &mut Response,
    payload: ErrorPayload,
    request_id: &str,
    in_header: bool,
) {
    if let Some(body) = envelope(&payload, request_id, in_header, response.headers_mut()) {
        *response.body_mut() = Body::from(body);
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
}

/// SPEC §3: any API request other than GET, HEAD or OPTIONS must be JSON, checked before the
/// handler runs.
pub(crate) async fn require_json(request: Request, next: Next) -> Response {
    let exempt = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || !request.uri().path().starts_with("/api/");
    if exempt || is_json(request.headers().get(header::CONTENT_TYPE)) {
        return next.run(request).await;
    }
    ApiError::from(Unreadable::NotJson).into_response()
}

/// A request signed with a workspace key covers its body's SHA-256: read the body (within
/// the size limit) and note its digest before any handler consumes it.
pub(crate) async fn digest_signed_body(
    axum::extract::State(max_body_bytes): axum::extract::State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let signed = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_whitespace().next())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(keyward_core::signature::SCHEME));
    if !signed {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, max_body_bytes).await else {
        return ApiError::from(Unreadable::BodyTooLarge).into_response();
    };
    parts.extensions.insert(crate::extract::BodyDigest(
        keyward_core::signature::body_digest(&bytes),
    ));
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked_strictly() {
        assert!(is_well_formed_request_id("req_a1b2c3d4e5f6"));
        assert!(!is_well_formed_request_id("req_A1B2C3D4E5F6"));
        assert!(!is_well_formed_request_id("req_a1b2c3d4e5f"));
        assert!(!is_well_formed_request_id("xyz_a1b2c3d4e5f6"));
        assert!(is_well_formed_request_id(&new_request_id()));
    }

    #[test]
    fn secret_shaped_path_segments_are_not_logged() {
        assert_eq!(
            loggable_path("/api/v1/keys/key_123"),
            "/api/v1/keys/key_123"
        );
        assert_eq!(
            loggable_path("/api/v1/keys/acme_live_AbCdEf/rotate"),
            "/api/v1/keys/[redacted]/rotate"
        );
        assert_eq!(
            loggable_path(&format!("/portal/enter/{}", "ab".repeat(32))),
            "/portal/enter/[redacted]"
        );
    }

    #[test]
    fn json_content_types() {
        let check = |value: &'static str| is_json(Some(&HeaderValue::from_static(value)));
        assert!(check("application/json"));
        assert!(check("Application/JSON; charset=utf-8"));
        assert!(!check("text/plain"));
        assert!(!check("application/jsonx"));
        assert!(!is_json(None));
    }
}
