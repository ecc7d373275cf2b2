//! Envoy's `ext_authz` over gRPC (SPEC §4.7): `envoy.service.auth.v3.Authorization/Check`,
//! served on its own listener (`--grpc-listen`) with the published, generated Envoy types.
//!
//! The proxy's root key comes in the call's metadata (`keyward-authorization`), never from
//! the client's headers; the route's requirements come in the route's
//! `check_settings.context_extensions` (`keyward-permissions`, `keyward-credits-cost`), which a
//! client cannot reach either. Allowed: `OK`, with the identity headers set on the request
//! and every identity header Keyward did not set removed, so that a client's forgery never
//! reaches the upstream even when the proxy forgot to strip it. Refused: `denied_response`
//! with the status, headers and envelope that forward auth answers over HTTP.

use std::future::Future;
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use keyward_core::signature::{body_digest, EMPTY_BODY_SHA256};
use tokio::net::TcpListener;

use super::{check, request_headers, ProxyAnswer, ProxyRequest, IDENTITY_HEADERS};
use crate::error::ApiError;
use crate::extract::request_time;
use crate::middleware::{envelope, request_id_for, write_request_headers};
use crate::verification::{GatewayRequest, RequestFacts};
use crate::AppState;

/// The `Authorization` service over Keyward's verification.
pub struct ExtAuthz {
    state: Arc<AppState>,
}

impl ExtAuthz {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// Streams one Envoy connection may have open at once: Envoy multiplexes every check of a
/// worker over one connection, and this bounds what a misbehaving client can queue.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Serves `ext_authz` on `listener` until `shutdown` resolves. tonic honours the caller's
/// `grpc-timeout`: a check that outlives Envoy's deadline is ended, not left running; one
/// without a deadline ends after `request_timeout`, as an HTTP request does.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    request_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .timeout(request_timeout)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .add_service(AuthorizationServer::new(ExtAuthz::new(state)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

// google.rpc.Code values.
const RPC_OK: i32 = 0;
const RPC_PERMISSION_DENIED: i32 = 7;
const RPC_UNAVAILABLE: i32 = 14;
const RPC_UNAUTHENTICATED: i32 = 16;

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let now = request_time();
        let proxy_key = request
            .metadata()
            .get(request_headers::PROXY_KEY)
            .map(|value| {
                value.to_str().map_err(|_| {
                    tonic::Status::unauthenticated("`keyward-authorization` is not text")
                })
            })
            .transpose()?
            .map(str::to_owned);
        let attributes = request.into_inner().attributes.unwrap_or_default();
        let http = attributes
            .request
            .and_then(|request| request.http)
            .ok_or_else(|| {
                tonic::Status::invalid_argument(
                    "the CheckRequest carries no HTTP request (attributes.request.http)",
                )
            })?;
        let header = |name: &str| http.headers.get(name).map(String::as_str);
        let request_id = request_id_for(header("x-request-id"));
        let (path, query) = http.path.split_once('?').unwrap_or((&http.path, ""));
        let digest = match (http.raw_body.is_empty(), http.body.is_empty()) {
            (false, _) => body_digest(&http.raw_body),
            (true, false) => body_digest(http.body.as_bytes()),
            (true, true) => EMPTY_BODY_SHA256.to_owned(),
        };
        let extension = |name: &str| attributes.context_extensions.get(name).map(String::as_str);
        let proxy_request = ProxyRequest {
            proxy_key: proxy_key.as_deref(),
            client: GatewayRequest {
                facts: RequestFacts {
                    method: &http.method,
                    path,
                    query,
                    body_sha256: &digest,
                },
                authorization: header(header::AUTHORIZATION.as_str()),
                x_api_key: header("x-api-key"),
                tenant: header("x-tenant-id"),
            },
            permissions: extension(request_headers::PERMISSIONS),
            credits_cost: extension(request_headers::CREDITS_COST),
        };
        let response = match check(&self.state, &proxy_request, now).await {
            Ok(ProxyAnswer::Allowed(headers)) => allowed(&headers),
            Ok(ProxyAnswer::Refused(error, headers)) => denied(&error, headers, &request_id),
            Err(error) => denied(&error, HeaderMap::new(), &request_id),
        };
        Ok(tonic::Response::new(response))
    }
}

fn allowed(headers: &HeaderMap) -> CheckResponse {
    let set: Vec<HeaderValueOption> = options(headers);
    // Whatever Keyward did not set, the client may have: it never reaches the upstream.
    let headers_to_remove = IDENTITY_HEADERS
        .iter()
        .chain(&[
            request_headers::PROXY_KEY,
            request_headers::PERMISSIONS,
            request_headers::CREDITS_COST,
            "keyward-error",
            "ratelimit",
            "ratelimit-policy",
        ])
        .filter(|name| !headers.contains_key(**name))
        .map(|name| (*name).to_owned())
        .collect();
    CheckResponse {
        status: Some(rpc::Status {
            code: RPC_OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: set,
            headers_to_remove,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A refusal as forward auth answers it over HTTP: the status, the envelope (also in
/// `Keyward-Error`), `WWW-Authenticate` on 401, `X-Request-ID` and `API-Version`.
fn denied(error: &ApiError, mut headers: HeaderMap, request_id: &str) -> CheckResponse {
    let status = error.status();
    let body = envelope(error.payload(), request_id, true, &mut headers)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_default();
    error.write_challenge(&mut headers);
    write_request_headers(&mut headers, request_id);
    let code = match status {
        StatusCode::UNAUTHORIZED => RPC_UNAUTHENTICATED,
        status if status.is_server_error() => RPC_UNAVAILABLE,
        _ => RPC_PERMISSION_DENIED,
    };
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: error.message().to_owned(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status.as_u16()),
            }),
            headers: options(&headers),
            body,
        })),
        ..Default::default()
    }
}

/// Headers as Envoy sets them: each one replaces any value of the same name.
fn options(headers: &HeaderMap) -> Vec<HeaderValueOption> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?;
            #[allow(deprecated)]
            Some(HeaderValueOption {
                header: Some(HeaderValue {
                    key: name.as_str().to_owned(),
                    value: value.to_owned(),
                    raw_value: Vec::new(),
                }),
                append: None,
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
                keep_empty_value: false,
            })
        })
        .collect()
}
