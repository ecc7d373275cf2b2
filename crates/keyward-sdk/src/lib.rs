//! Rust client for Keyward: typed calls for every management and verification endpoint, on the
//! same wire types ([`proto`]) the server uses, so the two cannot disagree about a field.
//!
//! Every call returns `Result<_, `[`Error`]`>`; an error answer from the server keeps its `code`,
//! `message` and `request_id`, and no error ever contains the API key.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

mod endpoints;
mod gateway;
mod pages;
mod socket;

pub use gateway::{verify_api_key_request, KeywardLayer, KeywardService, Verified};
pub use keyward_proto as proto;
use keyward_proto::{
    ApiKey, ApiKeyWithSecret, App, AuditEntry, CreateAppRequest, CreateKeyRequest,
    CreateRootKeyRequest, EnvironmentSettings, ErrorEnvelope, Health, ImportKeysRequest,
    ImportKeysResponse, ListAuditParams, ListKeysParams, Page, PageParams, ReportLeakRequest,
    ReportLeakResponse, RootKey, RootKeyWithSecret, RotateKeyRequest, UpdateAppRequest,
    UpdateEnvironmentRequest, UpdateKeyRequest, VerifyKeyRequest, VerifyKeyResponse,
};
pub use pages::paginate;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
pub use socket::{AlertsSocket, EventsSocket, SocketEvent, SocketOptions};

/// Where a client connects when no base URL is given.
///
/// ```
/// assert_eq!(keyward_sdk::DEFAULT_BASE_URL, "http://127.0.0.1:8080");
/// ```
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";

/// How long one call may take when no timeout is given.
///
/// ```
/// assert_eq!(keyward_sdk::DEFAULT_TIMEOUT.as_secs(), 30);
/// ```
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a call can fail with. No variant ever contains the API key.
///
/// ```no_run
/// # async fn example() -> Result<(), keyward_sdk::Error> {
/// # let keyward = keyward_sdk::Client::new("sk_live_…");
/// match keyward.get_key("key_…").await {
///     Ok(key) => println!("{}", key.status),
///     Err(keyward_sdk::Error::Http { status: 404, .. }) => println!("no such key"),
///     Err(keyward_sdk::Error::RateLimited { retry_after, .. }) => println!("wait {retry_after:?} s"),
///     Err(other) => return Err(other),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error envelope, with a status other than 401, 403 and 429.
    #[error("{code}: {message} (HTTP {status} {error_type}, request {request_id})")]
    Http {
        /// The HTTP status, e.g. 404.
        status: u16,
        /// The envelope's `type`, e.g. `NOT_FOUND_ERROR`.
        error_type: String,
        /// A stable snake_case reason, e.g. `key_not_found`.
        code: String,
        /// A sentence for a person.
        message: String,
        /// The `req_…` id to quote when asking about this call.
        request_id: String,
    },
    /// 401 or 403: the API key is missing, invalid, revoked, disabled or lacks a scope.
    #[error("{code}: {message} (HTTP {status}, request {request_id})")]
    Auth {
        /// 401 or 403.
        status: u16,
        /// e.g. `invalid_api_key`, `key_revoked` or `insufficient_scope`.
        code: String,
        /// A sentence for a person.
        message: String,
        /// The `req_…` id to quote when asking about this call.
        request_id: String,
    },
    /// 429: too many calls.
    #[error("rate limited{} (request {request_id})", retry_hint(*.retry_after))]
    RateLimited {
        /// Seconds to wait, from the `Retry-After` header.
        retry_after: Option<u64>,
        /// The `req_…` id to quote when asking about this call.
        request_id: String,
    },
    /// The server could not be reached or did not answer in time.
    #[error("cannot reach the server: {0}")]
    Connection(String),
    /// The server's answer was not what the API documents.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// A base URL, id or slug that cannot name a resource.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn retry_hint(retry_after: Option<u64>) -> String {
    retry_after.map_or_else(String::new, |seconds| format!("; retry after {seconds} s"))
}

/// Builds a [`Client`]; see [`Client::builder`].
///
/// ```no_run
/// # fn example() -> Result<(), keyward_sdk::Error> {
/// let keyward = keyward_sdk::Client::builder()
///     .base_url("https://keyward.example.com")
///     .api_key("sk_live_…")
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct ClientBuilder {
    base_url: Option<String>,
    timeout: Option<Duration>,
    api_key: Option<SecretString>,
    jwt: Option<SecretString>,
    get_jwt: Option<JwtSource>,
    workspace_key: Option<WorkspaceKey>,
}

/// The error a [`ClientBuilder::get_jwt`] closure may fail with.
///
/// ```no_run
/// # fn example() -> Result<(), keyward_sdk::Error> {
/// let keyward = keyward_sdk::Client::builder()
///     .api_key("pk_jwt_0123456789abcdef0123456789abcdef")
///     .get_jwt(|| async { Err::<String, keyward_sdk::BoxError>("signed out".into()) })
///     .build()?;
/// # Ok(()) }
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type JwtFuture = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

/// Where fresh end-user tokens come from: called before every request and every socket
/// (re)connection.
#[derive(Clone)]
pub(crate) struct JwtSource(Arc<dyn Fn() -> JwtFuture + Send + Sync>);

impl std::fmt::Debug for JwtSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSource")
    }
}

impl ClientBuilder {
    /// The server's address, e.g. `https://keyward.example.com`; [`DEFAULT_BASE_URL`] if unset.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), keyward_sdk::Error> {
    /// let keyward = keyward_sdk::Client::builder().base_url("https://keyward.example.com").build()?;
    /// # Ok(()) }
    /// ```
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// How long one call may take, connecting included; [`DEFAULT_TIMEOUT`] if unset.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), keyward_sdk::Error> {
    /// let keyward = keyward_sdk::Client::builder()
    ///     .timeout(std::time::Duration::from_secs(2))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The credential: a root key (`sk_live_…`), sent as `Authorization: Bearer …`, or a
    /// public key (`pk_jwt_…`, `pk_live_…`), sent as `X-API-Key` with the end user's token as
    /// the bearer (SPEC §4.4). Without one, only [`Client::health`] succeeds.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), keyward_sdk::Error> {
    /// let keyward = keyward_sdk::Client::builder().api_key("sk_live_…").build()?;
    /// # Ok(()) }
    /// ```
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(api_key.into()));
        self
    }

    /// The end user's token (a JWT, or a signed user token) that goes with a public key. It is
    /// captured now; use [`ClientBuilder::get_jwt`] for tokens that expire.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), keyward_sdk::Error> {
    /// let keyward = keyward_sdk::Client::builder()
    ///     .api_key("pk_jwt_0123456789abcdef0123456789abcdef")
    ///     .jwt("eyJ…")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn jwt(mut self, token: impl Into<String>) -> Self {
        self.jwt = Some(SecretString::from(token.into()));
        self
    }

    /// Fetches a fresh token before every request and every socket (re)connection. It takes
    /// precedence over [`ClientBuilder::jwt`].
    ///
    /// ```no_run
    /// # fn example() -> Result<(), keyward_sdk::Error> {
    /// let client = keyward_sdk::Client::builder()
    ///     .base_url("https://keyward.example.com")
    ///     .api_key("pk_jwt_0123456789abcdef0123456789abcdef")
    ///     .get_jwt(|| async { Ok::<_, keyward_sdk::BoxError>("eyJ…".to_owned()) })
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn get_jwt<F, Fut>(mut self, get_jwt: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, BoxError>> + Send + 'static,
    {
        self.get_jwt = Some(JwtSource(Arc::new(move || Box::pin(get_jwt()))));
        self
    }

    /// A workspace key (`wk_…`) and its secret, for backends: each request is signed with
    /// HMAC-SHA256 (SPEC §4.4) and the secret never leaves this process. It replaces
    /// [`ClientBuilder::api_key`].
    ///
    /// ```no_run
    /// # fn example() -> Result<(), keyward_sdk::Error> {
    /// let keyward = keyward_sdk::Client::builder()
    ///     .base_url("https://keyward.example.com")
    ///     .workspace_key("wk_…", "wksec_live_…")
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn workspace_key(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.workspace_key = Some(WorkspaceKey {
            id: id.into(),
            secret: SecretString::from(secret.into()),
            recent: Arc::default(),
        });
        self
    }

    /// Checks the base URL and makes the client.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), keyward_sdk::Error> {
    /// let keyward = keyward_sdk::Client::builder().build()?;
    /// assert!(format!("{keyward:?}").contains("127.0.0.1:8080"));
    /// # Ok(()) }
    /// ```
    pub fn build(self) -> Result<Client, Error> {
        let base_url = self.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        parse_base_url(&base_url)?;
        let http = reqwest::Client::builder()
            .timeout(self.timeout.unwrap_or(DEFAULT_TIMEOUT))
            .build()
            .map_err(|error| Error::Connection(describe(error)))?;
        Ok(Client {
            http,
            base_url,
            api_key: self.api_key,
            jwt: self.jwt,
            get_jwt: self.get_jwt,
            workspace_key: self.workspace_key,
        })
    }
}

fn parse_base_url(base_url: &str) -> Result<Url, Error> {
    let url = Url::parse(base_url)
        .map_err(|error| Error::InvalidArgument(format!("base URL {base_url:?}: {error}")))?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidArgument(format!(
            "base URL {base_url:?} is not http(s)"
        )));
    }
    Ok(url)
}

/// A client of one Keyward server, authenticated with one root key. Cheap to clone: clones
/// share one connection pool.
///
/// ```no_run
/// # async fn example() -> Result<(), keyward_sdk::Error> {
/// use keyward_sdk::{proto::VerifyKeyRequest, Client};
///
/// let client = Client::builder()
///     .base_url("https://keyward.example.com")
///     .api_key("sk_live_…")
///     .build()?;
/// let verdict = client
///     .verify_key(&VerifyKeyRequest { key: "acme_live_…".into(), ..Default::default() })
///     .await?;
/// if !verdict.valid {
///     println!("refused: {} (answer HTTP {})", verdict.code, verdict.status);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Checked by [`ClientBuilder::build`] (or a constant), so parsing it again cannot fail.
    base_url: String,
    api_key: Option<SecretString>,
    jwt: Option<SecretString>,
    get_jwt: Option<JwtSource>,
    workspace_key: Option<WorkspaceKey>,
}

/// A workspace key and its secret: every request is signed (SPEC §4.4), the secret is never
/// sent (its `Debug` shows it redacted).
#[derive(Clone, Debug)]
struct WorkspaceKey {
    id: String,
    secret: SecretString,
    /// The signatures made for this second or later, with their timestamps. The server
    /// accepts a signature once, so an identical request in the same second is signed for
    /// the next second instead (well within the ±300 s window).
    recent: Arc<std::sync::Mutex<RecentSignatures>>,
}

#[derive(Debug, Default)]
struct RecentSignatures {
    /// The second the map was last trimmed at.
    second: i64,
    signatures: HashMap<String, i64>,
}

impl WorkspaceKey {
    /// `KW-HMAC-SHA256 key=…, ts=…, sig=…` over this very request: method, path and query,
    /// the time, and the body's SHA-256.
    fn sign(&self, request: &reqwest::Request) -> Result<reqwest::header::HeaderValue, Error> {
        use sha2::Digest as _;
        let body = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .unwrap_or_default();
        let digest = hex::encode(sha2::Sha256::digest(body));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
            });
        let url = request.url();
        let sign = |timestamp| {
            keyward_core::signature::SignedRequest {
                method: request.method().as_str(),
                path: url.path(),
                query: url.query().unwrap_or(""),
                timestamp,
                body_sha256: &digest,
            }
            .sign(self.secret.expose_secret().as_bytes())
        };
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.second != now {
            // Timestamps before now are never chosen again: only the rest can clash.
            recent.signatures.retain(|_, at| *at >= now);
            recent.second = now;
        }
        let mut timestamp = now;
        let mut signature = sign(timestamp);
        while recent.signatures.contains_key(&signature) {
            timestamp += 1;
            signature = sign(timestamp);
        }
        recent.signatures.insert(signature.clone(), timestamp);
        drop(recent);
        reqwest::header::HeaderValue::from_str(&format!(
            "KW-HMAC-SHA256 key={}, ts={timestamp}, sig={signature}",
            self.id
        ))
        .map_err(|_| Error::InvalidArgument("the workspace key id is not a header value".into()))
    }
}

/// Public keys travel in `X-API-Key`, with the end user's token beside them.
pub(crate) fn is_public_key(key: &str) -> bool {
    key.starts_with("pk_")
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

/// A typed "no query" or "no body", so one `call` serves every endpoint.
pub(crate) const NONE: Option<&()> = None;

impl Client {
    /// A client of the server at [`DEFAULT_BASE_URL`], with [`DEFAULT_TIMEOUT`].
    ///
    /// ```
    /// let keyward = keyward_sdk::Client::new("sk_live_…");
    /// ```
    pub fn new(api_key: impl Into<String>) -> Self {
        // Building fails only if the TLS backend cannot start; the fallback then fails the
        // same way, as `reqwest::Client::new` documents.
        let http = reqwest::Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .build()
            .unwrap_or_default();
        let api_key = SecretString::from(api_key.into());
        Self {
            http,
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key: Some(api_key),
            jwt: None,
            get_jwt: None,
            workspace_key: None,
        }
    }

    /// A client configured as the CLI is: the server at `KEYWARD_URL` (or
    /// [`DEFAULT_BASE_URL`]), authenticated with `KEYWARD_API_KEY` when it is set.
    ///
    /// ```no_run
    /// let keyward = keyward_sdk::Client::from_env()?;
    /// # Ok::<(), keyward_sdk::Error>(())
    /// ```
    pub fn from_env() -> Result<Self, Error> {
        let mut builder = Self::builder();
        if let Ok(base_url) = std::env::var("KEYWARD_URL") {
            builder = builder.base_url(base_url);
        }
        if let Ok(api_key) = std::env::var("KEYWARD_API_KEY") {
            builder = builder.api_key(api_key);
        }
        builder.build()
    }

    /// Starts configuring a client: base URL, timeout, API key and end-user token.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), keyward_sdk::Error> {
    /// let keyward = keyward_sdk::Client::builder().api_key("sk_live_…").build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The end user's token for this request or connection: a fresh one from `get_jwt` when
    /// there is one, else the one given at construction.
    pub(crate) async fn token(&self) -> Result<Option<SecretString>, Error> {
        match &self.get_jwt {
            Some(JwtSource(get_jwt)) => get_jwt()
                .await
                .map(|token| Some(SecretString::from(token)))
                .map_err(|error| Error::Auth {
                    status: 401,
                    code: "token_unavailable".to_owned(),
                    message: format!("get_jwt failed: {error}"),
                    request_id: String::new(),
                }),
            None => Ok(self.jwt.clone()),
        }
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    pub(crate) fn api_key(&self) -> Option<&SecretString> {
        self.api_key.as_ref()
    }

    /// The base URL with `segments` appended, each percent-encoded (a `/` in an id stays in
    /// its segment).
    fn url(&self, segments: &[&str]) -> Result<Url, Error> {
        // `extend` silently drops "." and "..", which would send the call to another resource.
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(Error::InvalidArgument(format!(
                "{bad:?} is not a valid id or slug"
            )));
        }
        let mut url = parse_base_url(&self.base_url)?;
        url.path_segments_mut()
            .map_err(|()| Error::InvalidArgument("the base URL cannot have a path".to_owned()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Calls `/api/v1/<segments>`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&impl Serialize>,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let url = self.url(&[&["api", "v1"], segments].concat())?;
        self.send(method, url, query, body).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        query: Option<&impl Serialize>,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let writes = !matches!(method, Method::GET | Method::HEAD);
        let mut request = self.http.request(method, url);
        if let Some(api_key) = &self.api_key {
            let api_key = api_key.expose_secret();
            if is_public_key(api_key) {
                request = request.header("x-api-key", api_key);
                if let Some(token) = self.token().await? {
                    request = request.bearer_auth(token.expose_secret());
                }
            } else {
                request = request.bearer_auth(api_key);
            }
        }
        if let Some(query) = query {
            request = request.query(query);
        }
        request = match body {
            Some(body) => request.json(body),
            // The server answers 415 to any write that does not say it is JSON.
            None if writes => request.header(CONTENT_TYPE, "application/json").body("{}"),
            None => request,
        };
        let mut request = request
            .build()
            .map_err(|error| Error::InvalidArgument(describe(error)))?;
        if let Some(workspace_key) = &self.workspace_key {
            let authorization = workspace_key.sign(&request)?;
            request.headers_mut().insert(AUTHORIZATION, authorization);
        }
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|error| Error::Connection(describe(error)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|error| Error::Connection(describe(error)))?;
        if status == StatusCode::NO_CONTENT {
            return serde_json::from_slice(b"null")
                .map_err(|error| Error::Decode(format!("HTTP {status}: {error}")));
        }
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|error| Error::Decode(format!("HTTP {status}: {error}")));
        }
        Err(error_from(status, &headers, &body))
    }

    /// `GET /healthz`: whether the process is up. Needs no API key.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.health().await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn health(&self) -> Result<Health, Error> {
        self.send(Method::GET, self.url(&["healthz"])?, NONE, NONE)
            .await
    }

    /// `POST /api/v1/apps` (scope `apps:write`).
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{CreateAppRequest};
    ///
    /// let answer = keyward.create_app(&CreateAppRequest {
    ///     name: "Acme API".into(),
    ///     slug: "acme".into(),
    ///     permissions: vec!["read:data".into(), "write:data".into()],
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn create_app(&self, request: &CreateAppRequest) -> Result<App, Error> {
        self.call(Method::POST, &["apps"], NONE, Some(request))
            .await
    }

    /// `GET /api/v1/apps`: one page of apps.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{PageParams};
    ///
    /// let answer = keyward.list_apps(&PageParams::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_apps(&self, page: &PageParams) -> Result<Page<App>, Error> {
        self.call(Method::GET, &["apps"], Some(page), NONE).await
    }

    /// `GET /api/v1/apps/{slug}`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.get_app("acme").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn get_app(&self, slug: &str) -> Result<App, Error> {
        self.call(Method::GET, &["apps", slug], NONE, NONE).await
    }

    /// `PATCH /api/v1/apps/{slug}`: absent fields are kept.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{UpdateAppRequest};
    ///
    /// let answer = keyward.update_app("acme", &UpdateAppRequest {
    ///     name: Some("Acme API v2".into()),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn update_app(&self, slug: &str, request: &UpdateAppRequest) -> Result<App, Error> {
        self.call(Method::PATCH, &["apps", slug], NONE, Some(request))
            .await
    }

    /// `DELETE /api/v1/apps/{slug}`: revokes the app's keys and returns the deleted app.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.delete_app("acme").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn delete_app(&self, slug: &str) -> Result<App, Error> {
        self.call(Method::DELETE, &["apps", slug], NONE, NONE).await
    }

    /// `POST /api/v1/apps/{slug}/keys` (scope `keys:write`). The answer holds the secret, once.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{CreateKeyRequest};
    ///
    /// let answer = keyward.create_key("acme", &CreateKeyRequest {
    ///     name: "Customer 42".into(),
    ///     owner_user_id: Some("usr_42".into()),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn create_key(
        &self,
        app_slug: &str,
        request: &CreateKeyRequest,
    ) -> Result<ApiKeyWithSecret, Error> {
        self.call(
            Method::POST,
            &["apps", app_slug, "keys"],
            NONE,
            Some(request),
        )
        .await
    }

    /// Imports a batch of existing keys (at most [`keyward_proto::MAX_IMPORT_BATCH`]). Keys
    /// whose secret is already known are skipped, so a batch may be sent again.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{ImportKeysRequest, ImportedKey};
    ///
    /// let answer = keyward.import_keys("acme", &ImportKeysRequest {
    ///     keys: vec![ImportedKey {
    ///         hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
    ///         start: "legacy_9f86".into(),
    ///         name: "imported".into(),
    ///         ..Default::default()
    ///     }],
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn import_keys(
        &self,
        app_slug: &str,
        request: &ImportKeysRequest,
    ) -> Result<ImportKeysResponse, Error> {
        self.call(
            Method::POST,
            &["apps", app_slug, "keys", "import"],
            NONE,
            Some(request),
        )
        .await
    }

    /// `GET /api/v1/apps/{slug}/keys` (scope `keys:read`): one page of metadata, never secrets.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{ListKeysParams};
    ///
    /// let answer = keyward.list_keys("acme", &ListKeysParams {
    ///     owner_user_id: Some("usr_42".into()),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_keys(
        &self,
        app_slug: &str,
        params: &ListKeysParams,
    ) -> Result<Page<ApiKey>, Error> {
        self.call(Method::GET, &["apps", app_slug, "keys"], Some(params), NONE)
            .await
    }

    /// `GET /api/v1/keys/{id}`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.get_key("key_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn get_key(&self, id: &str) -> Result<ApiKey, Error> {
        self.call(Method::GET, &["keys", id], NONE, NONE).await
    }

    /// `PATCH /api/v1/keys/{id}`: absent fields are kept.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{UpdateKeyRequest};
    ///
    /// let answer = keyward.update_key("key_…", &UpdateKeyRequest {
    ///     name: Some("Customer 42 (prod)".into()),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn update_key(&self, id: &str, request: &UpdateKeyRequest) -> Result<ApiKey, Error> {
        self.call(Method::PATCH, &["keys", id], NONE, Some(request))
            .await
    }

    /// `POST /api/v1/keys/{id}/revoke`: every later verification gets `KEY_REVOKED`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.revoke_key("key_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey, Error> {
        self.call(Method::POST, &["keys", id, "revoke"], NONE, NONE)
            .await
    }

    /// `POST /api/v1/keys/{id}/rotate`. The answer holds the new secret, this once.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{RotateKeyRequest};
    ///
    /// let answer = keyward.rotate_key("key_…", &RotateKeyRequest {
    ///     expire_previous_in_seconds: Some(3600),
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn rotate_key(
        &self,
        id: &str,
        request: &RotateKeyRequest,
    ) -> Result<ApiKeyWithSecret, Error> {
        self.call(Method::POST, &["keys", id, "rotate"], NONE, Some(request))
            .await
    }

    /// `DELETE /api/v1/keys/{id}`: revokes, deletes and returns the deleted key.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.delete_key("key_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn delete_key(&self, id: &str) -> Result<ApiKey, Error> {
        self.call(Method::DELETE, &["keys", id], NONE, NONE).await
    }

    /// `POST /api/v1/keys/verify` (scope `verify`). A refused key is `Ok` with `valid: false`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{VerifyKeyRequest};
    ///
    /// let answer = keyward.verify_key(&VerifyKeyRequest {
    ///     key: "acme_live_…".into(),
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn verify_key(&self, request: &VerifyKeyRequest) -> Result<VerifyKeyResponse, Error> {
        self.call(Method::POST, &["keys", "verify"], NONE, Some(request))
            .await
    }

    /// `POST /api/v1/keys/report-leak` (scope `keys:write`): a key (or root key) of this
    /// environment found in public. It is revoked, disabled or only notified about, as the
    /// environment's `leaked_key_action` says; a secret that is unknown or already revoked
    /// changes nothing, and the answer says so.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{ReportLeakRequest};
    ///
    /// let answer = keyward.report_leak(&ReportLeakRequest {
    ///     key: "acme_live_…".into(),
    ///     url: Some("https://github.com/acme/site/blob/main/.env".into()),
    ///     source: Some("trufflehog".into()),
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn report_leak(
        &self,
        request: &ReportLeakRequest,
    ) -> Result<ReportLeakResponse, Error> {
        self.call(Method::POST, &["keys", "report-leak"], NONE, Some(request))
            .await
    }

    /// `POST /api/v1/root-keys`. The answer holds the secret, this once.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{CreateRootKeyRequest};
    ///
    /// let answer = keyward.create_root_key(&CreateRootKeyRequest {
    ///     name: "gateway".into(),
    ///     scopes: vec!["verify".into()],
    ///     ..Default::default()
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn create_root_key(
        &self,
        request: &CreateRootKeyRequest,
    ) -> Result<RootKeyWithSecret, Error> {
        self.call(Method::POST, &["root-keys"], NONE, Some(request))
            .await
    }

    /// `GET /api/v1/root-keys`: one page of root keys, never secrets.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{PageParams};
    ///
    /// let answer = keyward.list_root_keys(&PageParams::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_root_keys(&self, page: &PageParams) -> Result<Page<RootKey>, Error> {
        self.call(Method::GET, &["root-keys"], Some(page), NONE)
            .await
    }

    /// `POST /api/v1/root-keys/{id}/revoke`.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.revoke_root_key("key_…").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn revoke_root_key(&self, id: &str) -> Result<RootKey, Error> {
        self.call(Method::POST, &["root-keys", id, "revoke"], NONE, NONE)
            .await
    }

    /// `GET /api/v1/environment`: the settings of the API key's environment.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// let answer = keyward.get_environment().await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn get_environment(&self) -> Result<EnvironmentSettings, Error> {
        self.call(Method::GET, &["environment"], NONE, NONE).await
    }

    /// `PATCH /api/v1/environment`: absent fields are kept.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{UpdateEnvironmentRequest};
    ///
    /// let answer = keyward.update_environment(&UpdateEnvironmentRequest {
    ///     enhanced_security: Some(true),
    ///     leaked_key_action: Some("revoke".to_owned()),
    /// }).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn update_environment(
        &self,
        request: &UpdateEnvironmentRequest,
    ) -> Result<EnvironmentSettings, Error> {
        self.call(Method::PATCH, &["environment"], NONE, Some(request))
            .await
    }

    /// `GET /api/v1/audit-log`: one page of who changed what, newest first.
    ///
    /// ```no_run
    /// # async fn example(keyward: keyward_sdk::Client) -> Result<(), keyward_sdk::Error> {
    /// use keyward_sdk::proto::{ListAuditParams};
    ///
    /// let answer = keyward.list_audit(&ListAuditParams::default()).await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    pub async fn list_audit(&self, params: &ListAuditParams) -> Result<Page<AuditEntry>, Error> {
        self.call(Method::GET, &["audit-log"], Some(params), NONE)
            .await
    }
}

/// Maps a non-2xx answer to an [`Error`]. A 429 needs no envelope: a proxy in front of the
/// server may send a bare one, and the caller still deserves `retry_after`.
fn error_from(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let envelope = serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|envelope| envelope.error);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after =
            header(headers, RETRY_AFTER.as_str()).and_then(|value| value.parse().ok());
        let request_id = envelope.map(|error| error.request_id);
        let request_id = request_id.or_else(|| header(headers, "x-request-id").map(str::to_owned));
        return Error::RateLimited {
            retry_after,
            request_id: request_id.unwrap_or_default(),
        };
    }
    let Some(error) = envelope else {
        return Error::Decode(format!("HTTP {status} without an error envelope"));
    };
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Error::Auth {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
            request_id: error.request_id,
        };
    }
    let error_type = serde_json::to_value(error.error_type)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default();
    Error::Http {
        status: status.as_u16(),
        error_type,
        code: error.code,
        message: error.message,
        request_id: error.request_id,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// reqwest's own message is only the outermost layer ("error sending request"); the cause
/// (refused, timed out, bad certificate) is in the source chain. The URL is left out: it is
/// the caller's own and may carry credentials of a proxy.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// Answers one request on a free port with `head` and `body`; returns the base URL and a
    /// handle that yields the raw request.
    fn one_shot_server(head: &str, body: &str) -> (String, std::thread::JoinHandle<String>) {
        let answer = format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut reader = BufReader::new(listener.accept().unwrap().0);
            let (mut request, mut content_length) = (String::new(), 0);
            while !request.ends_with("\r\n\r\n") {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(length) = line.to_lowercase().strip_prefix("content-length:") {
                    content_length = length.trim().parse().unwrap();
                }
                request.push_str(&line);
            }
            let mut body = vec![0; content_length];
            reader.read_exact(&mut body).unwrap();
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
            request + &String::from_utf8(body).unwrap()
        });
        (base_url, handle)
    }

    fn client(base_url: &str) -> Client {
        let builder = Client::builder().base_url(base_url);
        builder.api_key("sk_live_supersecret").build().unwrap()
    }

    #[test]
    fn the_api_key_is_never_printed() {
        let printed = format!(
            "{:?} {:?}",
            client(DEFAULT_BASE_URL),
            Client::new("sk_live_x1")
        );
        assert!(
            !printed.contains("supersecret") && !printed.contains("x1"),
            "{printed}"
        );
    }

    #[test]
    fn path_segments_are_encoded_and_dot_segments_refused() {
        let client = client("http://h:1/prefix/");
        let url = client.url(&["api", "a/b c?"]).unwrap();
        assert_eq!(url.as_str(), "http://h:1/prefix/api/a%2Fb%20c%3F");
        for bad in ["", ".", ".."] {
            let refused = client.url(&["keys", bad]);
            assert!(matches!(refused, Err(Error::InvalidArgument(_))), "{bad:?}");
        }
        assert!(Client::builder().base_url("mailto:x").build().is_err());
    }

    #[tokio::test]
    async fn a_body_less_write_is_still_json_and_authenticated() {
        let key = concat!(
            r#"{"id":"key_1","app":"acme","environment":"live","name":"n","owner_user_id":null,"#,
            r#""organization_id":null,"permissions":[],"meta":{},"start":"acme_live_AbCd","#,
            r#""status":"revoked","enabled":true,"expires_at":null,"revoked_at":null,"#,
            r#""last_used_at":null,"created_at":"2026-01-01T00:00:00Z","#,
            r#""updated_at":"2026-01-01T00:00:00Z"}"#
        );
        let (base_url, server) = one_shot_server("HTTP/1.1 200 OK", key);
        let revoked = client(&base_url).revoke_key("key_1").await.unwrap();
        assert_eq!(revoked.status, "revoked");
        let request = server.join().unwrap().to_lowercase();
        for expected in [
            "post /api/v1/keys/key_1/revoke ",
            "\r\ncontent-type: application/json\r\n",
            "\r\nauthorization: bearer sk_live_supersecret\r\n",
            "\r\n\r\n{}",
        ] {
            assert!(request.contains(expected), "{expected:?} in {request}");
        }
    }

    #[tokio::test]
    async fn error_answers_become_typed_errors() {
        let envelope = concat!(
            r#"{"error":{"type":"PERMISSION_ERROR","code":"key_revoked","#,
            r#""message":"The API key was revoked","request_id":"req_0123456789ab"}}"#
        );
        let (base_url, server) = one_shot_server("HTTP/1.1 403 Forbidden", envelope);
        let error = client(&base_url).get_app("acme").await.unwrap_err();
        server.join().unwrap();
        assert!(matches!(&error, Error::Auth { status: 403, code, .. } if code == "key_revoked"));
        assert!(error.to_string().contains("req_0123456789ab"));

        // A bare 429, as a proxy might send, still tells when to retry.
        let head = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-Request-ID: req_a";
        let (base_url, server) = one_shot_server(head, "");
        let error = client(&base_url).list_apps(&PageParams::default()).await;
        server.join().unwrap();
        let Err(Error::RateLimited {
            retry_after,
            request_id,
        }) = error
        else {
            panic!("{error:?}");
        };
        assert_eq!((retry_after, request_id.as_str()), (Some(7), "req_a"));
    }
}
