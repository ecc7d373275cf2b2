//! The dashboard's only way to Keyward: the public HTTP API, called in-process with the
//! signed-in root key (or, for the customer portal, the session's [`PortalGrant`]),
//! through the same router, middleware and checks as any client.

use axum::body::Body;
use axum::Router;
use http::{header, Method, Request, StatusCode};
use keyward_proto::ErrorEnvelope;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tower::ServiceExt as _;

/// The most a dashboard call reads of an answer; far above any page of the API.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Path segments keep only the characters ids and slugs are made of.
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// A refusal from the API, as its error envelope described it.
#[derive(Debug, Clone)]
pub(crate) struct ApiFailure {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl ApiFailure {
    /// The root key itself no longer works: unknown, revoked, disabled or expired.
    pub(crate) fn is_credential_refusal(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
            || (self.status == StatusCode::FORBIDDEN && self.code != "insufficient_scope")
    }

    fn unreadable(status: StatusCode) -> Self {
        Self {
            status: if status.is_success() {
                StatusCode::BAD_GATEWAY
            } else {
                status
            },
            code: "unexpected_answer".to_owned(),
            message: "Keyward's API gave an answer the dashboard could not read".to_owned(),
        }
    }
}

/// `/api/v1/` followed by `segments`, each percent-encoded, and an optional query.
pub(crate) fn path(segments: &[&str], query: Option<&impl Serialize>) -> String {
    let mut path = String::from("/api/v1");
    for segment in segments {
        path.push('/');
        path.extend(utf8_percent_encode(segment, SEGMENT));
    }
    if let Some(query) = query {
        let encoded = serde_html_form::to_string(query).unwrap_or_default();
        if !encoded.is_empty() {
            path.push('?');
            path.push_str(&encoded);
        }
    }
    path
}

/// Who a call is made as.
#[derive(Clone, Copy)]
pub(crate) enum Caller<'a> {
    /// A signed-in dashboard user's root key, sent as any client sends it.
    RootKey(&'a str),
    /// A portal customer: an extension of the in-process request, which no client can send.
    Customer(&'a crate::PortalGrant),
    /// No one (opening a portal link).
    Nobody,
}

#[derive(Clone)]
pub(crate) struct Api {
    router: Router,
}

impl Api {
    pub(crate) fn new(router: Router) -> Self {
        Self { router }
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        root_key: &str,
        path: &str,
    ) -> Result<T, ApiFailure> {
        self.call(root_key, Method::GET, path, None::<&()>).await
    }

    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        root_key: &str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiFailure> {
        self.call(root_key, Method::POST, path, Some(body)).await
    }

    /// Deletes; what the API answers about the deleted record is not needed.
    pub(crate) async fn delete(&self, root_key: &str, path: &str) -> Result<(), ApiFailure> {
        self.call::<serde::de::IgnoredAny>(root_key, Method::DELETE, path, None::<&()>)
            .await
            .map(drop)
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        root_key: &str,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiFailure> {
        self.call_as(Caller::RootKey(root_key), method, path, body)
            .await
    }

    /// A call made as `caller`.
    pub(crate) async fn call_as<T: DeserializeOwned>(
        &self,
        caller: Caller<'_>,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiFailure> {
        // Every call but a read is JSON (SPEC §3, 415 otherwise), a DELETE included: one
        // without a body sends `{}`, as the SDK does.
        let writes = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut request = Request::builder().method(method).uri(path);
        match caller {
            Caller::RootKey(root_key) => {
                request = request.header(header::AUTHORIZATION, format!("Bearer {root_key}"));
            }
            Caller::Customer(grant) => request = request.extension(grant.clone()),
            Caller::Nobody => {}
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(body).expect("a request body serialises"))
            }
            None if writes => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from("{}")
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|_| ApiFailure {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request".to_owned(),
            message: "That address cannot be asked for".to_owned(),
        })?;
        let answer = self
            .router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = answer.status();
        let bytes = axum::body::to_bytes(answer.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|_| ApiFailure::unreadable(status))?;
        if status.is_success() {
            // An empty success (204) reads as JSON `null`.
            let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return serde_json::from_slice(bytes).map_err(|error| {
                tracing::error!(%error, "the dashboard could not read an API answer");
                ApiFailure::unreadable(status)
            });
        }
        match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
            Ok(envelope) => Err(ApiFailure {
                status,
                code: envelope.error.code,
                message: envelope.error.message,
            }),
            Err(_) => Err(ApiFailure::unreadable(status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_queries_are_encoded() {
        #[derive(Serialize)]
        struct Query {
            search: Option<String>,
            status: Option<String>,
        }
        let query = Query {
            search: Some("a b&c".to_owned()),
            status: None,
        };
        assert_eq!(
            path(&["apps", "a/../b", "keys"], Some(&query)),
            "/api/v1/apps/a%2F..%2Fb/keys?search=a+b%26c"
        );
        assert_eq!(path(&["apps"], None::<&()>), "/api/v1/apps");
    }
}
