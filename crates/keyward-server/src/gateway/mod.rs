//! The proxies' front ends (SPEC §4.7): forward auth for nginx, Traefik, Caddy and HAProxy,
//! and Envoy's `ext_authz` over HTTP ([`forward_auth`]) and gRPC ([`ext_authz`]).
//!
//! Both hand [`check`] what the proxy saw — its own root key, the client's credential
//! headers, the original method and URI, the route's requirements — and get a [`ProxyAnswer`]:
//! allowed, with the identity headers for the upstream, or refused, with the status of SPEC
//! §4.2 and the error to put in the envelope. Verification itself is the verification
//! service's `verify_request`, exactly as `POST /api/v1/verify-request` uses it.

pub mod ext_authz;
pub mod forward_auth;

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use keyward_core::credential::{self, Presented};
use keyward_core::permission::PermissionQuery;
use keyward_core::scope::Scope;
use keyward_core::usage::{Decision, Outcome as UsageOutcome, RateStatus, RateWindow};
use keyward_core::verify::VerifyCode;
use keyward_core::{Environment, Timestamp};

use crate::error::ApiError;
use crate::rate_limit;
use crate::verification::{
    Ask, CallReport, Denied, GatewayRequest, Outcome, Refusal, RequestFacts, RequestVerdict,
};
use crate::AppState;

/// The path of forward auth, and the prefix of Envoy's HTTP `ext_authz` service.
pub const FORWARD_AUTH_PATH: &str = "/api/v1/gateway/auth";

/// Whether a path is forward auth's: the path itself, or under it (the original path, for
/// proxies that append it).
pub(crate) fn is_forward_auth_path(path: &str) -> bool {
    path.strip_prefix(FORWARD_AUTH_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The headers a proxy sets on its request to Keyward (lowercase, as HTTP/2 and gRPC carry
/// them).
pub mod request_headers {
    /// The proxy's own root key, `Bearer <root key>`, with the `verify` scope.
    pub const PROXY_KEY: &str = "keyward-authorization";
    /// The route's permission expression (SPEC §4.2).
    pub const PERMISSIONS: &str = "keyward-permissions";
    /// Credits the route costs; 1 by default.
    pub const CREDITS_COST: &str = "keyward-credits-cost";
}

/// The identity headers an allowed answer carries for the upstream (SPEC §4.7), in order.
pub const IDENTITY_HEADERS: [&str; 8] = [
    "keyward-key-id",
    "keyward-owner-id",
    "keyward-organization-id",
    "keyward-environment",
    "keyward-permissions-granted",
    "keyward-credential-type",
    "keyward-subject",
    "keyward-tenant",
];

/// On refusals, the envelope again as a header, for proxies that drop the auth answer's
/// body (nginx's `auth_request`); see examples/gateways/nginx.
pub static ERROR_HEADER: HeaderName = HeaderName::from_static("keyward-error");

/// What a proxy presents about one request of its client.
#[derive(Debug, Clone, Copy)]
pub struct ProxyRequest<'a> {
    /// `Keyward-Authorization` (or the gRPC metadata of that name), as sent.
    pub proxy_key: Option<&'a str>,
    /// The client's request: method, path, query, body digest and credential headers.
    pub client: GatewayRequest<'a>,
    /// `Keyward-Permissions`, as sent.
    pub permissions: Option<&'a str>,
    /// `Keyward-Credits-Cost`, as sent.
    pub credits_cost: Option<&'a str>,
}

/// What the proxy is told.
#[derive(Debug)]
pub enum ProxyAnswer {
    /// Let the request through, with these headers for the upstream (identity, `RateLimit`).
    Allowed(HeaderMap),
    /// Answer the client with the error's status and envelope, plus these headers
    /// (`RateLimit`, `Retry-After`).
    Refused(ApiError, HeaderMap),
}

/// Checks one request a proxy asks about, at `now`. Failures of Keyward itself (storage,
/// Redis, a JWKS that cannot be fetched) are errors: the proxy must answer them with an
/// error of its own and never reach the upstream.
pub async fn check(
    state: &AppState,
    request: &ProxyRequest<'_>,
    now: Timestamp,
) -> Result<ProxyAnswer, ApiError> {
    let proxy = match authenticate_proxy(state, request, now).await {
        ProxyAuthentication::Proxy(tenancy) => tenancy,
        ProxyAuthentication::Refused(error, headers) => {
            return Ok(ProxyAnswer::Refused(error, headers))
        }
    };
    validate_original(request.client.facts.method, request.client.facts.path)?;
    let permissions = requirement(request.permissions)?;
    let ask = Ask {
        permissions: permissions.as_ref(),
        credits_cost: credits_cost(request.credits_cost)?,
        idempotency_key: None,
    };
    let verdict = state
        .verification
        .verify_request(&proxy, &request.client, &ask, now)
        .await?;
    Ok(answer(&verdict, ask.credits_cost, now))
}

/// Who the proxy is: the environment its root key verifies in, or why it cannot.
enum ProxyAuthentication {
    Proxy(keyward_core::model::Tenancy),
    Refused(ApiError, HeaderMap),
}

/// The proxy's root key, which must hold `verify`. A proxy that presents none, or a bad one,
/// is refused as any caller of Keyward's API is (SPEC §3); the message names the header, so
/// that whoever configured the proxy can tell it from the client's own key.
async fn authenticate_proxy(
    state: &AppState,
    request: &ProxyRequest<'_>,
    now: Timestamp,
) -> ProxyAuthentication {
    let refused = ProxyAuthentication::Refused;
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "The proxy's root key in `Keyward-Authorization` is missing or invalid",
        )
    };
    let Ok(Presented::Secret(secret)) = credential::from_headers(request.proxy_key, None) else {
        return refused(invalid(), HeaderMap::new());
    };
    // Only workspace signatures cover request facts; a root key's check reads none of these.
    let facts = RequestFacts {
        method: "POST",
        path: FORWARD_AUTH_PATH,
        query: "",
        body_sha256: keyward_core::signature::EMPTY_BODY_SHA256,
    };
    let authentication = state
        .verification
        .authenticate_caller(Presented::Secret(secret), &facts, now)
        .await;
    let mut headers = HeaderMap::new();
    if let Some(calls) = &authentication.calls {
        if calls.is_refused() {
            rate_limit::write_headers(calls, StatusCode::TOO_MANY_REQUESTS, &mut headers);
        }
    }
    match authentication.outcome {
        // A demo sandbox's key is anyone's for the asking: it never vouches for a request.
        Ok(proxy) if proxy.tenancy.environment == Environment::Demo => refused(
            ApiError::forbidden(
                "insufficient_scope",
                "A demo sandbox's root key cannot act for a proxy",
            ),
            headers,
        ),
        Ok(proxy) if proxy.scopes.grants(Scope::Verify) => {
            ProxyAuthentication::Proxy(proxy.tenancy)
        }
        Ok(_) => refused(
            ApiError::forbidden(
                "insufficient_scope",
                "The proxy's root key in `Keyward-Authorization` lacks the `verify` scope",
            ),
            headers,
        ),
        Err(Denied::Refused(Refusal::InvalidKey)) => refused(invalid(), headers),
        // Revoked, expired or out of calls: said of the proxy's key, not the client's.
        Err(Denied::Refused(refusal)) => {
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
            let message = format!(
                "The proxy's root key in `Keyward-Authorization` was refused: {}",
                refusal.message()
            );
            refused(ApiError::new(status, refusal.code(), message), headers)
        }
        Err(Denied::Failed(error)) => refused(error.into(), headers),
    }
}

const MAX_METHOD_LEN: usize = 16;
const MAX_PATH_LEN: usize = 8 * 1024;

/// The original request's method and path, as `verify-request` and the proxies give them.
pub(crate) fn validate_original(method: &str, path: &str) -> Result<(), ApiError> {
    if method.is_empty()
        || method.len() > MAX_METHOD_LEN
        || !method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Err(ApiError::invalid(
            "invalid_method",
            "`method` is an HTTP method in capitals, e.g. GET",
        ));
    }
    if !path.starts_with('/') || path.len() > MAX_PATH_LEN {
        return Err(ApiError::invalid(
            "invalid_path",
            "`path` starts with `/` and carries no query",
        ));
    }
    Ok(())
}

/// `Keyward-Permissions`: none, or blank, asks for no permission.
fn requirement(header: Option<&str>) -> Result<Option<PermissionQuery>, ApiError> {
    let Some(text) = header.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    PermissionQuery::parse(text).map(Some).map_err(|error| {
        ApiError::invalid(
            "invalid_permission_query",
            format!("`Keyward-Permissions` is not a permission expression: {error}"),
        )
    })
}

fn credits_cost(header: Option<&str>) -> Result<i64, ApiError> {
    match header.map(str::trim).filter(|text| !text.is_empty()) {
        None => Ok(1),
        Some(text) => text.parse::<u32>().map(i64::from).map_err(|_| {
            ApiError::invalid(
                "invalid_credits_cost",
                "`Keyward-Credits-Cost` is a whole number of credits, 0 or more",
            )
        }),
    }
}

/// How long a client refused for credits is told to wait when nothing refills them: SPEC §3
/// gives every 429 a `Retry-After`, and only adding credits helps such a key.
const NO_REFILL_RETRY_AFTER_SECONDS: u32 = 86_400;

/// A verdict as the proxy needs it.
fn answer(verdict: &RequestVerdict, credits_cost: i64, now: Timestamp) -> ProxyAnswer {
    let mut headers = HeaderMap::new();
    let (identity, rate) = identity(verdict);
    if let Some(report) = rate.map(|(rate, decision)| rate_report(rate, decision, now)) {
        let status = StatusCode::from_u16(verdict_status(verdict)).unwrap_or(StatusCode::OK);
        rate_limit::write_headers(&report, status, &mut headers);
    }
    if verdict.code.is_valid() {
        for (name, value) in IDENTITY_HEADERS.iter().zip(identity) {
            if let Some(value) = value.and_then(|value| header_value(&value)) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        return ProxyAnswer::Allowed(headers);
    }
    if let (VerifyCode::UsageExceeded, Outcome::ApiKey(key_verdict)) =
        (verdict.code, &verdict.outcome)
    {
        let returns_at = key_verdict.key.as_ref().and_then(|entry| {
            keyward_core::usage::credits_return_at(
                entry.credits().map(|(credits, _)| credits),
                key_verdict
                    .usage
                    .and_then(|decision| decision.credits_remaining),
                entry.organization().and_then(|(org, _)| org.cap),
                credits_cost,
                now,
            )
        });
        let seconds = returns_at.map_or(i64::from(NO_REFILL_RETRY_AFTER_SECONDS), |at| {
            rate_limit::seconds_until(at, now).max(1)
        });
        headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    let error = match &verdict.outcome {
        Outcome::Refused(refusal) => ApiError::from(*refusal),
        _ => refusal_of(verdict.code),
    };
    ProxyAnswer::Refused(error, headers)
}

fn verdict_status(verdict: &RequestVerdict) -> u16 {
    match &verdict.outcome {
        Outcome::Refused(refusal) => refusal.status(),
        _ => verdict.code.http_status(),
    }
}

/// The identity header values, in [`IDENTITY_HEADERS`]' order.
type IdentityValues<'a> = [Option<Cow<'a, str>>; IDENTITY_HEADERS.len()];

/// A rate limit's state, and the decision that reported it when there was one.
type RateState = Option<(RateStatus, Option<Decision>)>;

/// The identity header values, and the rate limit's state.
fn identity(verdict: &RequestVerdict) -> (IdentityValues<'_>, RateState) {
    let credential_type = Some(Cow::Borrowed(verdict.credential_type));
    match &verdict.outcome {
        Outcome::ApiKey(key_verdict) => {
            let usage = key_verdict.usage;
            let rate = usage.and_then(|decision| decision.rate.map(|rate| (rate, Some(decision))));
            let Some(entry) = &key_verdict.key else {
                return (Default::default(), rate);
            };
            (
                [
                    Some(Cow::Borrowed(entry.id())),
                    entry.owner_user_id().map(Cow::Borrowed),
                    entry.organization_id().map(Cow::Borrowed),
                    Some(Cow::Borrowed(entry.tenancy().environment.as_str())),
                    Some(Cow::Owned(entry.permissions().join(","))),
                    credential_type,
                    None,
                    None,
                ],
                rate,
            )
        }
        Outcome::EndUser(end_user) => {
            let key = &end_user.user.public_key.key;
            (
                [
                    Some(Cow::Borrowed(key.id.as_str())),
                    None,
                    None,
                    Some(Cow::Borrowed(key.tenancy.environment.as_str())),
                    Some(Cow::Owned(end_user.permissions.join(","))),
                    credential_type,
                    end_user.user.subject().map(Cow::Borrowed),
                    end_user.user.tenant().map(Cow::Borrowed),
                ],
                end_user.rate.map(|rate| (rate, None)),
            )
        }
        Outcome::WorkspaceKey(key) => (
            [
                Some(Cow::Borrowed(key.key.id.as_str())),
                None,
                None,
                Some(Cow::Borrowed(key.key.tenancy.environment.as_str())),
                None,
                credential_type,
                None,
                None,
            ],
            None,
        ),
        Outcome::Refused(_) => (Default::default(), None),
    }
}

/// A key's or an end user's rate state in the shape the `RateLimit` headers are written
/// from. An end user's limit reports no decision of its own: a full window is its refusal.
fn rate_report(rate: RateStatus, decision: Option<Decision>, now: Timestamp) -> CallReport {
    let decision = decision.unwrap_or(Decision {
        outcome: if rate.remaining == 0 && rate.reset_at > now {
            UsageOutcome::RateLimited {
                retry_at: rate.reset_at,
            }
        } else {
            UsageOutcome::Allowed
        },
        rate: Some(rate),
        credits_remaining: None,
    });
    CallReport {
        windows: vec![RateWindow {
            limit: rate.limit,
            period_ms: rate.period_ms,
        }],
        decision,
        now,
    }
}

/// A header value for an identity field. Keyward's ids and permissions are printable ASCII;
/// an owner id or a token's subject may not be, and is then percent-encoded (RFC 3986), so
/// that the upstream always gets the whole value or nothing it could misread.
fn header_value(value: &str) -> Option<HeaderValue> {
    if value.is_empty() {
        return None;
    }
    if value
        .bytes()
        .all(|byte| byte.is_ascii_graphic() || byte == b' ')
        && !value.contains('%')
    {
        return HeaderValue::from_str(value).ok();
    }
    let mut encoded = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=/".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&encoded).ok()
}

/// The error a refused API key or end user gets (SPEC §3's codes, in snake case).
fn refusal_of(code: VerifyCode) -> ApiError {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let (code, message) = match code {
        VerifyCode::Valid | VerifyCode::InvalidKey => {
            ("invalid_api_key", "Invalid or missing API key")
        }
        VerifyCode::KeyRevoked => ("key_revoked", "This API key has been revoked"),
        VerifyCode::KeyDisabled => ("key_disabled", "This API key is disabled"),
        VerifyCode::KeyExpired => ("key_expired", "This API key has expired"),
        VerifyCode::InsufficientPermissions => (
            "insufficient_permissions",
            "This credential lacks the permissions this route requires",
        ),
        VerifyCode::TenantMismatch => (
            "tenant_mismatch",
            "The token is for another tenant than the request names",
        ),
        VerifyCode::RateLimited => (
            "rate_limited",
            "Too many requests; retry after the time in `Retry-After`",
        ),
        VerifyCode::UsageExceeded => (
            "usage_exceeded",
            "This key has no credits left for this request",
        ),
    };
    ApiError::new(status, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_the_status_of_its_verdict() {
        for code in VerifyCode::EVERY {
            if code.is_valid() {
                continue;
            }
            let error = refusal_of(code);
            assert_eq!(error.status().as_u16(), code.http_status(), "{code:?}");
            assert_eq!(
                error.code(),
                match code {
                    VerifyCode::InvalidKey => "invalid_api_key".to_owned(),
                    other => other.as_str().to_ascii_lowercase(),
                }
            );
        }
    }

    #[test]
    fn requirements_are_read_strictly() {
        assert!(requirement(None).unwrap().is_none());
        assert!(requirement(Some("  ")).unwrap().is_none());
        assert!(requirement(Some("read AND write")).unwrap().is_some());
        assert_eq!(
            requirement(Some("read AND (")).unwrap_err().code(),
            "invalid_permission_query"
        );
        assert_eq!(credits_cost(None).unwrap(), 1);
        assert_eq!(credits_cost(Some(" 0 ")).unwrap(), 0);
        assert_eq!(
            credits_cost(Some("-1")).unwrap_err().code(),
            "invalid_credits_cost"
        );
    }

    #[test]
    fn identity_values_are_whole_or_encoded() {
        assert_eq!(header_value("usr_123").unwrap(), "usr_123");
        assert_eq!(header_value("read,write").unwrap(), "read,write");
        assert_eq!(header_value("ünïcode").unwrap(), "%C3%BCn%C3%AFcode");
        assert_eq!(header_value("a\r\nb").unwrap(), "a%0D%0Ab");
        assert_eq!(header_value("50%").unwrap(), "50%25");
        assert!(
            header_value("").is_none(),
            "an absent value is an absent header"
        );
    }
}
