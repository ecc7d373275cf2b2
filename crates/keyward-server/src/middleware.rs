//! Cross-cutting request handling: request ids, the `API-Version` header, rendering error
//! envelopes, the request timeout, the 415 rule, a signed body's digest, one access-log
//! line per request, and sending a request to the dashboard, forward auth or the API by its
//! path.

use std::convert::Infallible;
use std::future::Ready;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Either};
use keyward_proto::ErrorEnvelope;
use rand::RngCore;
use tower::{Service, ServiceExt};

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
    let mut digits = [0u8; 12];
    // Cannot fail: twelve digits for six bytes.
    let _ = hex::encode_to_slice(bytes, &mut digits);
    let mut id = String::with_capacity(16);
    id.push_str("req_");
    id.extend(digits.iter().map(|&digit| char::from(digit)));
    id
}

/// The request's id: the one the caller sent when it is well formed, or a fresh one.
pub(crate) fn request_id_for(sent: Option<&str>) -> String {
    sent.filter(|value| is_well_formed_request_id(value))
        .map_or_else(new_request_id, str::to_owned)
}

/// The outermost service: names the request, renders error envelopes, logs the outcome.
///
/// The services here are written by hand rather than with `axum::middleware::from_fn`,
/// which clones the whole stack beneath it and boxes it again on every request; these call
/// their inner service in place, and the stack is applied once around the router, not to
/// each route (`Router::layer` boxes a copy per route, cloned per request).
///
/// It also bounds the request's time (503 past `request_timeout`). Unlike tower-http's
/// timeout, which arms its timer before polling the request, `tokio::time::timeout` polls
/// the request first: one answered on its first poll (a cached verification) never touches
/// the timer wheel.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext<S> {
    inner: S,
    request_timeout: Duration,
}

impl<S> RequestContext<S> {
    pub(crate) fn new(inner: S, request_timeout: Duration) -> Self {
        Self {
            inner,
            request_timeout,
        }
    }
}

impl<S, B> Service<Request> for RequestContext<S>
where
    S: Service<Request, Response = axum::http::Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
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
        let answer = if has_encoded_nul(&uri) {
            Either::Left(std::future::ready(
                ApiError::bad_request("invalid_characters", "The URL contains a NUL byte")
                    .into_response(),
            ))
        } else {
            Either::Right(self.inner.call(request))
        };
        let request_timeout = self.request_timeout;
        Box::pin(async move {
            let mut response = match answer {
                Either::Left(refusal) => refusal.await,
                Either::Right(inner) => match tokio::time::timeout(request_timeout, inner).await {
                    Ok(Ok(response)) => response.map(Body::new),
                    Err(_elapsed) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                },
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
            Ok(response)
        })
    }
}

fn has_encoded_nul(uri: &axum::http::Uri) -> bool {
    uri.path_and_query().is_some_and(|text| {
        text.as_str()
            .as_bytes()
            .windows(3)
            .any(|window| window == b"%00")
    })
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

/// What an API route needs of its request before the handler runs: JSON (SPEC §3: any
/// request other than GET, HEAD or OPTIONS, refused with 415 before the handler), and, for
/// a request signed with a workspace key, its body's SHA-256, which the signature covers.
/// Forward auth carries the original request's method and content type: no 415 rule there.
#[derive(Debug, Clone)]
pub(crate) struct BodyRules<S> {
    inner: S,
    json_required: bool,
    max_body_bytes: usize,
}

impl<S> BodyRules<S> {
    pub(crate) fn new(inner: S, json_required: bool, max_body_bytes: usize) -> Self {
        Self {
            inner,
            json_required,
            max_body_bytes,
        }
    }
}

type Answer = Result<Response, Infallible>;

impl<S> Service<Request> for BodyRules<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Either<Ready<Answer>, BoxFuture<'static, Answer>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if self.json_required && !json_exempt(&request) {
            let refusal = ApiError::from(Unreadable::NotJson).into_response();
            return Either::Left(Either::Left(std::future::ready(Ok(refusal))));
        }
        if !is_signed(&request) {
            return Either::Right(self.inner.call(request));
        }
        // Only a signed request waits for its body here, so only it pays for a copy of the
        // service to finish on.
        let inner = self.inner.clone();
        let max_body_bytes = self.max_body_bytes;
        Either::Left(Either::Right(Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, max_body_bytes).await else {
                return Ok(ApiError::from(Unreadable::BodyTooLarge).into_response());
            };
            parts.extensions.insert(crate::extract::BodyDigest(
                keyward_core::signature::body_digest(&bytes),
            ));
            inner
                .oneshot(Request::from_parts(parts, Body::from(bytes)))
                .await
        })))
    }
}

fn json_exempt(request: &Request) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || !request.uri().path().starts_with("/api/")
        || is_json(request.headers().get(header::CONTENT_TYPE))
}

fn is_signed(request: &Request) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_whitespace().next())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(keyward_core::signature::SCHEME))
}

/// Sends the requests whose path `matches` to one service and all others to another: a
/// check on the path instead of a second router's look-up. It keeps forward auth's requests
/// (the original request's method and headers, so an `OPTIONS` there is no CORS preflight)
/// away from CORS, and the API's requests away from the dashboard's router.
#[derive(Debug, Clone)]
pub(crate) struct SplitByPath<A, B> {
    matches: fn(&str) -> bool,
    matching: A,
    other: B,
}

impl<A, B> SplitByPath<A, B> {
    pub(crate) fn new(matches: fn(&str) -> bool, matching: A, other: B) -> Self {
        Self {
            matches,
            matching,
            other,
        }
    }
}

impl<A, B, ReqBody, ResBody> Service<axum::http::Request<ReqBody>> for SplitByPath<A, B>
where
    A: Service<
        axum::http::Request<ReqBody>,
        Response = axum::http::Response<ResBody>,
        Error = Infallible,
    >,
    B: Service<
        axum::http::Request<ReqBody>,
        Response = axum::http::Response<ResBody>,
        Error = Infallible,
    >,
{
    type Response = axum::http::Response<ResBody>;
    type Error = Infallible;
    type Future = Either<A::Future, B::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.matching.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.other.poll_ready(cx),
            pending => pending,
        }
    }

    fn call(&mut self, request: axum::http::Request<ReqBody>) -> Self::Future {
        if (self.matches)(request.uri().path()) {
            Either::Left(self.matching.call(request))
        } else {
            Either::Right(self.other.call(request))
        }
    }
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
