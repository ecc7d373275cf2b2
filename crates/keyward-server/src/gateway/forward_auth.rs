//! Forward auth over HTTP (SPEC §4.7): nginx `auth_request`, Traefik `forwardAuth`, Caddy
//! `forward_auth`, HAProxy, and Envoy's HTTP `ext_authz` service, which appends the original
//! path to [`FORWARD_AUTH_PATH`] and keeps the original method.
//!
//! Its routes sit outside the API's CORS and 415 layers: a proxy forwards the original
//! request's method and content type, and an original `OPTIONS` is a request to check, not a
//! preflight to answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use keyward_core::signature::EMPTY_BODY_SHA256;
use keyward_proto::ErrorEnvelope;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{check, request_headers, ProxyAnswer, ProxyRequest, FORWARD_AUTH_PATH};
use crate::error::ApiError;
use crate::extract::{request_time, BodyDigest};
use crate::middleware::EnvelopeInHeader;
use crate::verification::{GatewayRequest, RequestFacts};
use crate::AppState;

/// The forward-auth routes and their part of the OpenAPI document. The document lists the
/// common methods; the routes take any method, since a proxy may forward any.
pub(crate) fn router(state: Arc<AppState>) -> (Router, OpenApi) {
    let (_, mut openapi) = OpenApiRouter::<Arc<AppState>>::new()
        .routes(routes!(forward_auth))
        .split_for_parts();
    // One handler serves every method, but OpenAPI wants each operation's id unique.
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            ("get", &mut item.get),
            ("post", &mut item.post),
            ("put", &mut item.put),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
            ("head", &mut item.head),
            ("options", &mut item.options),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                operation.operation_id = Some(format!("forward_auth_{method}"));
            }
        }
    }
    // Envoy's HTTP service: everything below the prefix is the original path.
    let routes = Router::new()
        .route(FORWARD_AUTH_PATH, any(forward_auth))
        .route(&format!("{FORWARD_AUTH_PATH}/"), any(forward_auth))
        .route(&format!("{FORWARD_AUTH_PATH}/{{*path}}"), any(forward_auth))
        .with_state(state);
    (routes, openapi)
}

/// Forward auth: is the request a proxy describes allowed? The proxy's root key (scope
/// `verify`) comes in `Keyward-Authorization`; the client's credential headers as the client
/// sent them; the original request in `X-Forwarded-Method` / `X-Forwarded-Uri` (or
/// `X-Original-Method` / `X-Original-URI`), or, for Envoy, as the method and the path below
/// this one. 200 with the identity headers; 401, 403 or 429 with the envelope, also in
/// `Keyward-Error`.
#[utoipa::path(method(get, post, put, patch, delete, head, options),
    path = "/api/v1/gateway/auth", tag = "verify",
    params(
        ("Keyward-Authorization" = String, Header, description = "`Bearer <root key>` with the `verify` scope, set by the proxy"),
        ("Keyward-Permissions" = Option<String>, Header, description = "The route's permission expression"),
        ("Keyward-Credits-Cost" = Option<u32>, Header, description = "Credits the route costs; 1 by default"),
        ("X-Forwarded-Method" = Option<String>, Header, description = "The original method"),
        ("X-Forwarded-Uri" = Option<String>, Header, description = "The original path and query"),
    ),
    responses(
        (status = 200, description = "Allowed; the identity is in the `Keyward-*` headers"),
        (status = "4XX", body = ErrorEnvelope, description = "Refused, or a request Keyward cannot read"),
        (status = 503, body = ErrorEnvelope, description = "Keyward cannot decide right now"),
    ))]
pub(crate) async fn forward_auth(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let now = request_time();
    let answer = match presented(&parts) {
        Ok(request) => check(&state, &request, now).await,
        Err(error) => Err(error),
    };
    match answer {
        Ok(ProxyAnswer::Allowed(headers)) => (StatusCode::OK, headers).into_response(),
        Ok(ProxyAnswer::Refused(error, headers)) => refused(error, headers),
        Err(error) => refused(error, Default::default()),
    }
}

fn refused(error: ApiError, headers: axum::http::HeaderMap) -> Response {
    let mut response = error.into_response();
    response.headers_mut().extend(headers);
    response.extensions_mut().insert(EnvelopeInHeader);
    response
}

/// Headers only the proxy may set: each must come once. A second copy means a client's
/// value got past the proxy beside its own, and neither can be trusted.
const SET_ONCE: [&str; 7] = [
    request_headers::PROXY_KEY,
    request_headers::PERMISSIONS,
    request_headers::CREDITS_COST,
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-original-method",
    "x-original-uri",
];

/// What the proxy's request presents. A credential header that is not text is refused like
/// a malformed key, never skipped for another one.
fn presented(parts: &Parts) -> Result<ProxyRequest<'_>, ApiError> {
    let headers = &parts.headers;
    if let Some(name) = SET_ONCE
        .iter()
        .find(|name| headers.get_all(**name).iter().nth(1).is_some())
    {
        return Err(ApiError::bad_request(
            "duplicate_header",
            format!("`{name}` is set more than once; the proxy must set it alone"),
        ));
    }
    let read = |name: &str, unreadable: fn() -> ApiError| {
        headers
            .get(name)
            .map(|value| value.to_str().map_err(|_| unreadable()))
            .transpose()
    };
    let credential = |name: &str| read(name, ApiError::invalid_api_key);
    let text = |name: &str| {
        read(name, || {
            ApiError::bad_request("invalid_header", "A header Keyward reads is not text")
        })
    };
    // Either spelling, but not two that disagree: one of them did not come from the proxy.
    let original = |names: [&str; 2]| -> Result<Option<&str>, ApiError> {
        match (text(names[0])?, text(names[1])?) {
            (Some(first), Some(second)) if first != second => Err(ApiError::bad_request(
                "conflicting_headers",
                format!("`{}` and `{}` disagree", names[0], names[1]),
            )),
            (first, second) => Ok(first.or(second)),
        }
    };
    let (method, path, query) = match parts
        .uri
        .path()
        .strip_prefix(FORWARD_AUTH_PATH)
        .filter(|below| below.starts_with('/'))
    {
        Some(path) => (parts.method.as_str(), path, parts.uri.query().unwrap_or("")),
        None => {
            let method = original(["x-forwarded-method", "x-original-method"])?
                .unwrap_or(parts.method.as_str());
            let uri = original(["x-forwarded-uri", "x-original-uri"])?.unwrap_or("/");
            let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
            (method, path, query)
        }
    };
    Ok(ProxyRequest {
        proxy_key: credential(request_headers::PROXY_KEY)?,
        client: GatewayRequest {
            facts: RequestFacts {
                method,
                path,
                query,
                body_sha256: parts
                    .extensions
                    .get::<BodyDigest>()
                    .map_or(EMPTY_BODY_SHA256, |digest| digest.0.as_str()),
            },
            authorization: credential(header::AUTHORIZATION.as_str())?,
            x_api_key: credential("x-api-key")?,
            tenant: credential("x-tenant-id")?,
        },
        permissions: text(request_headers::PERMISSIONS)?,
        credits_cost: text(request_headers::CREDITS_COST)?,
    })
}
