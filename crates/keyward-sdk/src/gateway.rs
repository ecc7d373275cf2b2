//! Protecting a route of your own service with Keyward: [`verify_api_key_request`] for any
//! gateway, and [`KeywardLayer`], a tower layer for axum that answers 401, 403 or 429 in
//! Keyward's error envelope and hands the verified identity to the handler ([`Verified`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use keyward_proto::{ErrorBody, ErrorEnvelope, ErrorType, VerifyKeyResponse, VerifyRequestRequest};
use sha2::{Digest, Sha256};

use crate::{Client, Error};

/// The headers that carry a credential (SPEC §4.4); no other header leaves your service.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-tenant-id"];

/// The largest body the layer reads to check a workspace-key signature.
const MAX_SIGNED_BODY: usize = 1024 * 1024;

/// Verifies the credential a request carries with `POST /api/v1/verify-request`. `client`
/// holds a root key with the `verify` scope. Pass the body's bytes for requests signed with a
/// workspace key (`KW-HMAC-SHA256`), whose signature covers them; `None` otherwise.
///
/// A refused credential is `Ok` with `valid: false`: its `status` is what to answer.
///
/// ```no_run
/// # async fn example(client: keyward_sdk::Client, request: http::Request<()>) -> Result<(), keyward_sdk::Error> {
/// let verdict = keyward_sdk::verify_api_key_request(&client, &request, None).await?;
/// if !verdict.valid {
///     println!("answer {} ({})", verdict.status, verdict.code);
/// }
/// # Ok(()) }
/// ```
pub async fn verify_api_key_request<B>(
    client: &Client,
    request: &Request<B>,
    body: Option<&[u8]>,
) -> Result<VerifyKeyResponse, Error> {
    client
        .verify_request(&gateway_request(
            request.method(),
            request.uri(),
            request.headers(),
            body,
        ))
        .await
}

fn gateway_request(
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> VerifyRequestRequest {
    VerifyRequestRequest {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        headers: CREDENTIAL_HEADERS
            .iter()
            .filter_map(|name| {
                let value = headers.get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), value.to_owned()))
            })
            .collect(),
        query: uri.query().map(str::to_owned),
        body_sha256: body.map(|body| hex::encode(Sha256::digest(body))),
        ..VerifyRequestRequest::default()
    }
}

/// The verdict on a request that [`KeywardLayer`] let through; an axum extractor.
///
/// ```no_run
/// async fn handler(keyward_sdk::Verified(verdict): keyward_sdk::Verified) -> String {
///     format!("hello {}", verdict.subject.or(verdict.owner_user_id).unwrap_or_default())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Verified(pub VerifyKeyResponse);

impl<S: Send + Sync> FromRequestParts<S> for Verified {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Verified>().cloned().ok_or_else(|| {
            envelope(
                StatusCode::INTERNAL_SERVER_ERROR,
                "keyward_layer_missing",
                "This route reads a verified identity but is not behind KeywardLayer",
                "",
            )
        })
    }
}

/// A tower layer that verifies every request with Keyward before the route sees it.
///
/// ```no_run
/// # fn example(client: keyward_sdk::Client) {
/// use axum::{routing::get, Router};
///
/// let app: Router = Router::new()
///     .route("/orders", get(|| async { "orders" }))
///     .layer(keyward_sdk::KeywardLayer::new(client));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KeywardLayer {
    client: Client,
    permissions: Option<String>,
}

impl KeywardLayer {
    /// `client` holds a root key with the `verify` scope.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), keyward_sdk::Error> {
    /// let layer = keyward_sdk::KeywardLayer::new(keyward_sdk::Client::from_env()?);
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client) -> Self {
        Self {
            client,
            permissions: None,
        }
    }

    /// A permission query every request must satisfy, e.g. `read:orders OR admin`.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), keyward_sdk::Error> {
    /// let layer = keyward_sdk::KeywardLayer::new(keyward_sdk::Client::from_env()?)
    ///     .require("read:orders AND (write:orders OR admin)");
    /// # Ok(()) }
    /// ```
    pub fn require(mut self, permissions: impl Into<String>) -> Self {
        self.permissions = Some(permissions.into());
        self
    }
}

impl<S> tower::Layer<S> for KeywardLayer {
    type Service = KeywardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeywardService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`KeywardLayer`] wraps around a route.
///
/// ```no_run
/// # fn example() -> Result<(), keyward_sdk::Error> {
/// // Made by the layer; a service of your router wrapped by it.
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(keyward_sdk::KeywardLayer::new(keyward_sdk::Client::from_env()?));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct KeywardService<S> {
    inner: S,
    layer: KeywardLayer,
}

impl<S> tower::Service<Request<Body>> for KeywardService<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request; a fresh clone waits its turn.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let signed = parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with("KW-HMAC-SHA256"));
            let (body, bytes) = if signed {
                match axum::body::to_bytes(body, MAX_SIGNED_BODY).await {
                    Ok(bytes) => (Body::from(bytes.clone()), Some(bytes)),
                    Err(_) => {
                        return Ok(envelope(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "payload_too_large",
                            "The request body is larger than a signed request may be",
                            "",
                        ))
                    }
                }
            } else {
                (body, None)
            };
            let mut gateway =
                gateway_request(&parts.method, &parts.uri, &parts.headers, bytes.as_deref());
            gateway.permissions = layer
                .permissions
                .clone()
                .map(keyward_proto::PermissionQuery::Expression);
            let verdict = match layer.client.verify_request(&gateway).await {
                Ok(verdict) => verdict,
                Err(error) => return Ok(unavailable(&error)),
            };
            if !verdict.valid {
                return Ok(refusal(&verdict));
            }
            let mut request = Request::from_parts(parts, body);
            request.extensions_mut().insert(Verified(verdict));
            inner.call(request).await
        })
    }
}

/// The answer to a refused credential: the verdict's own status, in Keyward's envelope.
fn refusal(verdict: &VerifyKeyResponse) -> Response {
    let status = StatusCode::from_u16(verdict.status).unwrap_or(StatusCode::UNAUTHORIZED);
    let code = verdict
        .reason
        .clone()
        .unwrap_or_else(|| verdict.code.to_ascii_lowercase());
    let message = match status {
        StatusCode::TOO_MANY_REQUESTS => "Too many requests; slow down",
        StatusCode::FORBIDDEN => "This credential may not make this request",
        _ => "Invalid or missing credential",
    };
    let mut response = envelope(status, &code, message, "");
    // Only a rate limit passes with time; exhausted credits do not.
    if verdict.code == "RATE_LIMITED" {
        let wait = verdict.rate_limit.as_ref().map_or(1, |rate| {
            let seconds = (rate.reset_at - time::OffsetDateTime::now_utc()).whole_seconds();
            seconds.max(1)
        });
        if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, value);
        }
    }
    response
}

/// Keyward could not be asked: the request is refused (fail closed) with a retryable 503.
fn unavailable(error: &Error) -> Response {
    let request_id = match error {
        Error::Http { request_id, .. } | Error::Auth { request_id, .. } => request_id.as_str(),
        _ => "",
    };
    envelope(
        StatusCode::SERVICE_UNAVAILABLE,
        "verification_unavailable",
        "The credential could not be verified right now; try again shortly",
        request_id,
    )
}

fn envelope(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let error_type = match status.as_u16() {
        401 => ErrorType::AuthenticationError,
        403 => ErrorType::PermissionError,
        413 => ErrorType::PayloadTooLarge,
        429 => ErrorType::RateLimitError,
        503 => ErrorType::ServiceUnavailable,
        _ => ErrorType::InternalError,
    };
    let body = ErrorEnvelope {
        error: ErrorBody {
            error_type,
            code: code.to_owned(),
            message: message.to_owned(),
            request_id: request_id.to_owned(),
        },
    };
    (status, axum::Json(body)).into_response()
}
