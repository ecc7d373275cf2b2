//! Rust client for Keyward: typed calls for every endpoint, on the same wire types the server
//! uses.
//!
//! ```no_run
//! # async fn example() -> Result<(), keyward_sdk::Error> {
//! use keyward_sdk::{Client, proto::VerifyKeyRequest};
//!
//! let client = Client::builder()
//!     .base_url("http://127.0.0.1:8080")
//!     .api_key("sk_live_…")
//!     .build()?;
//! let verdict = client
//!     .verify_key(&VerifyKeyRequest { key: "acme_live_…".into(), ..Default::default() })
//!     .await?;
//! println!("{}", verdict.code);
//! # Ok(()) }
//! ```

use std::time::Duration;

pub use keyward_proto as proto;
use keyward_proto::{
    ApiKey, ApiKeyWithSecret, App, AuditEntry, CreateAppRequest, CreateKeyRequest,
    CreateRootKeyRequest, EnvironmentSettings, ErrorEnvelope, Health, ListAuditParams,
    ListKeysParams, Page, PageParams, RootKey, RootKeyWithSecret, RotateKeyRequest,
    UpdateAppRequest, UpdateEnvironmentRequest, UpdateKeyRequest, VerifyKeyRequest,
    VerifyKeyResponse,
};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Where a client connects when no base URL is given.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";

/// Everything a call can fail with. No variant ever contains the API key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error envelope (other than 401, 403 and 429).
    #[error("{status} {error_type} {code}: {message} (request {request_id})")]
    Http {
        status: u16,
        error_type: String,
        code: String,
        message: String,
        request_id: String,
    },
    /// 401 or 403: the credential is missing, invalid, revoked or lacks a scope.
    #[error("{status} {code}: {message} (request {request_id})")]
    Auth {
        status: u16,
        code: String,
        message: String,
        request_id: String,
    },
    /// 429; retry after `retry_after` seconds when the server said.
    #[error("rate limited; retry after {retry_after:?} s (request {request_id})")]
    RateLimited {
        retry_after: Option<u64>,
        request_id: String,
    },
    /// The server could not be reached or did not answer in time.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The answer was not what the API documents.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The client was configured wrongly (e.g. an unparsable base URL).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

/// Builds a [`Client`].
#[derive(Debug, Default)]
pub struct ClientBuilder {
    base_url: Option<String>,
    timeout: Option<Duration>,
    api_key: Option<SecretString>,
}

impl ClientBuilder {
    /// The server's address, e.g. `https://keyward.example.com`.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// How long one call may take; 30 s by default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The root key sent as `Authorization: Bearer …`.
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(api_key.into()));
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let base = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let base_url =
            Url::parse(base).map_err(|error| Error::Config(format!("base URL: {error}")))?;
        if base_url.cannot_be_a_base() {
            return Err(Error::Config("the base URL cannot have paths".to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout.unwrap_or(Duration::from_secs(30)))
            .build()
            .map_err(|error| Error::Config(error.to_string()))?;
        Ok(Client {
            http,
            base_url,
            api_key: self
                .api_key
                .unwrap_or_else(|| SecretString::from(String::new())),
        })
    }
}

/// A client of one Keyward server, authenticated with one root key. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Url,
    api_key: SecretString,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

/// A body-less call still says it is JSON: the server refuses other writes with 415.
const NO_BODY: Option<&()> = None;
const NO_QUERY: Option<&()> = None;

impl Client {
    /// A client of the server at [`DEFAULT_BASE_URL`].
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: Url::parse(DEFAULT_BASE_URL)
                .unwrap_or_else(|_| unreachable!("valid constant")),
            api_key: SecretString::from(api_key.into()),
        }
    }

    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&impl Serialize>,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let writes = method != Method::GET;
        let mut request = self
            .http
            .request(method, self.url(segments))
            .bearer_auth(self.api_key.expose_secret());
        if let Some(query) = query {
            request = request.query(query);
        }
        request = match body {
            Some(body) => request.json(body),
            None if writes => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body("{}"),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|error| Error::Connection(error.without_url().to_string()))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let bytes = response
            .bytes()
            .await
            .map_err(|error| Error::Connection(error.without_url().to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|error| Error::Decode(error.to_string()));
        }
        let envelope: ErrorEnvelope = serde_json::from_slice(&bytes)
            .map_err(|_| Error::Decode(format!("HTTP {status} without an error envelope")))?;
        let error = envelope.error;
        let error_type = serde_json::to_value(error.error_type)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Auth {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
                request_id: error.request_id,
            },
            StatusCode::TOO_MANY_REQUESTS => Error::RateLimited {
                retry_after,
                request_id: error.request_id,
            },
            _ => Error::Http {
                status: status.as_u16(),
                error_type,
                code: error.code,
                message: error.message,
                request_id: error.request_id,
            },
        })
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, Error> {
        self.call(Method::GET, &["healthz"], NO_QUERY, NO_BODY)
            .await
    }

    /// `POST /api/v1/apps`.
    pub async fn create_app(&self, request: &CreateAppRequest) -> Result<App, Error> {
        self.call(
            Method::POST,
            &["api", "v1", "apps"],
            NO_QUERY,
            Some(request),
        )
        .await
    }

    /// `GET /api/v1/apps`, one page.
    pub async fn list_apps(&self, page: &PageParams) -> Result<Page<App>, Error> {
        self.call(Method::GET, &["api", "v1", "apps"], Some(page), NO_BODY)
            .await
    }

    /// `GET /api/v1/apps/{slug}`.
    pub async fn get_app(&self, slug: &str) -> Result<App, Error> {
        self.call(Method::GET, &["api", "v1", "apps", slug], NO_QUERY, NO_BODY)
            .await
    }

    /// `PATCH /api/v1/apps/{slug}`.
    pub async fn update_app(&self, slug: &str, request: &UpdateAppRequest) -> Result<App, Error> {
        self.call(
            Method::PATCH,
            &["api", "v1", "apps", slug],
            NO_QUERY,
            Some(request),
        )
        .await
    }

    /// `DELETE /api/v1/apps/{slug}`: deletes the app and revokes its keys.
    pub async fn delete_app(&self, slug: &str) -> Result<App, Error> {
        self.call(
            Method::DELETE,
            &["api", "v1", "apps", slug],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }

    /// `POST /api/v1/apps/{slug}/keys`. The answer holds the secret, this once.
    pub async fn create_key(
        &self,
        app: &str,
        request: &CreateKeyRequest,
    ) -> Result<ApiKeyWithSecret, Error> {
        self.call(
            Method::POST,
            &["api", "v1", "apps", app, "keys"],
            NO_QUERY,
            Some(request),
        )
        .await
    }

    /// `GET /api/v1/apps/{slug}/keys`, one page.
    pub async fn list_keys(
        &self,
        app: &str,
        params: &ListKeysParams,
    ) -> Result<Page<ApiKey>, Error> {
        self.call(
            Method::GET,
            &["api", "v1", "apps", app, "keys"],
            Some(params),
            NO_BODY,
        )
        .await
    }

    /// `GET /api/v1/keys/{id}`.
    pub async fn get_key(&self, id: &str) -> Result<ApiKey, Error> {
        self.call(Method::GET, &["api", "v1", "keys", id], NO_QUERY, NO_BODY)
            .await
    }

    /// `PATCH /api/v1/keys/{id}`.
    pub async fn update_key(&self, id: &str, request: &UpdateKeyRequest) -> Result<ApiKey, Error> {
        self.call(
            Method::PATCH,
            &["api", "v1", "keys", id],
            NO_QUERY,
            Some(request),
        )
        .await
    }

    /// `POST /api/v1/keys/{id}/revoke`.
    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey, Error> {
        self.call(
            Method::POST,
            &["api", "v1", "keys", id, "revoke"],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }

    /// `POST /api/v1/keys/{id}/rotate`. The answer holds the new secret, this once.
    pub async fn rotate_key(
        &self,
        id: &str,
        request: &RotateKeyRequest,
    ) -> Result<ApiKeyWithSecret, Error> {
        self.call(
            Method::POST,
            &["api", "v1", "keys", id, "rotate"],
            NO_QUERY,
            Some(request),
        )
        .await
    }

    /// `DELETE /api/v1/keys/{id}`.
    pub async fn delete_key(&self, id: &str) -> Result<ApiKey, Error> {
        self.call(
            Method::DELETE,
            &["api", "v1", "keys", id],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }

    /// `POST /api/v1/keys/verify`.
    pub async fn verify_key(&self, request: &VerifyKeyRequest) -> Result<VerifyKeyResponse, Error> {
        self.call(
            Method::POST,
            &["api", "v1", "keys", "verify"],
            NO_QUERY,
            Some(request),
        )
        .await
    }

    /// `POST /api/v1/root-keys`. The answer holds the secret, this once.
    pub async fn create_root_key(
        &self,
        request: &CreateRootKeyRequest,
    ) -> Result<RootKeyWithSecret, Error> {
        self.call(
            Method::POST,
            &["api", "v1", "root-keys"],
            NO_QUERY,
            Some(request),
        )
        .await
    }

    /// `GET /api/v1/root-keys`, one page.
    pub async fn list_root_keys(&self, page: &PageParams) -> Result<Page<RootKey>, Error> {
        self.call(
            Method::GET,
            &["api", "v1", "root-keys"],
            Some(page),
            NO_BODY,
        )
        .await
    }

    /// `POST /api/v1/root-keys/{id}/revoke`.
    pub async fn revoke_root_key(&self, id: &str) -> Result<RootKey, Error> {
        self.call(
            Method::POST,
            &["api", "v1", "root-keys", id, "revoke"],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }

    /// `GET /api/v1/environment`.
    pub async fn get_environment(&self) -> Result<EnvironmentSettings, Error> {
        self.call(
            Method::GET,
            &["api", "v1", "environment"],
            NO_QUERY,
            NO_BODY,
        )
        .await
    }

    /// `PATCH /api/v1/environment`.
    pub async fn update_environment(
        &self,
        request: &UpdateEnvironmentRequest,
    ) -> Result<EnvironmentSettings, Error> {
        self.call(
            Method::PATCH,
            &["api", "v1", "environment"],
            NO_QUERY,
            Some(request),
        )
        .await
    }

    /// `GET /api/v1/audit-log`, one page.
    pub async fn list_audit(&self, params: &ListAuditParams) -> Result<Page<AuditEntry>, Error> {
        self.call(
            Method::GET,
            &["api", "v1", "audit-log"],
            Some(params),
            NO_BODY,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_key_is_never_printed() {
        let client = Client::builder()
            .api_key("sk_live_supersecret")
            .build()
            .unwrap();
        assert!(!format!("{client:?}").contains("supersecret"));
    }

    #[test]
    fn path_segments_are_encoded() {
        let client = Client::builder()
            .base_url("http://h:1/prefix/")
            .build()
            .unwrap();
        assert_eq!(
            client.url(&["api", "a/b c"]).as_str(),
            "http://h:1/prefix/api/a%2Fb%20c"
        );
    }
}
