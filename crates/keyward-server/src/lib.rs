//! Keyward's HTTP server: routing, authentication, the verification cache, and the single
//! place where errors become HTTP answers.
//!
//! Architecture invariant: only this crate knows HTTP. It owns no business rule that
//! `keyward-core` could hold, and reaches storage only through [`keyward_store::Store`].

pub mod bootstrap;
mod convert;
pub mod error;
mod extract;
pub mod last_used;
pub mod metrics;
mod middleware;
mod openapi;
mod routes;
pub mod verifier;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use keyward_core::id::{self, IdKind};
use keyward_store::cluster::{Cluster, ClusterCache, ClusterOptions};
use keyward_store::{Change, Changed, PageRequest, Store, StoreResult};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

pub use error::ApiError;
use extract::Caller;
use last_used::LastUsedRecorder;
use metrics::Metrics;
use verifier::Verifier;

/// How the server behaves; the binary fills it from flags, environment and file.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Origins allowed by CORS; empty allows none.
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub last_used_flush_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            last_used_flush_interval: Duration::from_secs(1),
        }
    }
}

/// What every handler shares.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub verifier: Arc<Verifier>,
    pub metrics: Arc<Metrics>,
    pub last_used: LastUsedRecorder,
    /// This node's part in a cluster on a shared database; unset on a single node.
    pub cluster: OnceLock<Arc<Cluster>>,
}

impl AppState {
    /// Runs a credential change, drops what it affected from this node's cache, and waits
    /// until every other node's cache has dropped it too (or can no longer answer), so that
    /// no node accepts the old state once the call returns.
    ///
    /// It runs as a task of its own: a client that disconnects (or a timeout) must not
    /// cancel the handler between the commit and the invalidation.
    pub(crate) async fn change_credential<T, Work, Fut>(
        self: &Arc<Self>,
        work: Work,
    ) -> Result<Changed<T>, ApiError>
    where
        T: Send + 'static,
        Work: FnOnce(Arc<AppState>) -> Fut,
        Fut: Future<Output = Result<Changed<T>, keyward_store::StoreError>> + Send + 'static,
    {
        let state = Arc::clone(self);
        let pending = work(Arc::clone(&state));
        uncancellable(async move {
            match pending.await {
                Ok(changed) => {
                    state
                        .forget_everywhere(&changed.stale, changed.propagation.as_ref())
                        .await;
                    Ok(changed)
                }
                Err(keyward_store::StoreError::UncertainCommit {
                    source,
                    stale,
                    propagation,
                }) => {
                    // Treat it as made: no cache may keep what it may have changed. The
                    // caller gets a retryable 503, and the changes Keyward offers are safe to
                    // repeat.
                    state.forget_everywhere(&stale, propagation.as_ref()).await;
                    Err(keyward_store::StoreError::Unavailable(source).into())
                }
                Err(error) => Err(error.into()),
            }
        })
        .await
    }

    async fn forget_everywhere(
        &self,
        stale: &keyward_store::Stale,
        propagation: Option<&keyward_store::Propagation>,
    ) {
        self.verifier.forget(stale);
        if let (Some(propagation), Some(cluster)) = (propagation, self.cluster.get()) {
            let report = cluster.await_propagation(propagation).await;
            self.metrics
                .propagation_lapses
                .inc_by(report.lapsed.len() as u64);
        }
    }
}

/// Runs `work` to completion even if the request that started it goes away.
pub(crate) async fn uncancellable<T: Send + 'static>(
    work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work).await.map_err(|error| {
        tracing::error!(%error, "a change task failed");
        ApiError::internal()
    })?
}

/// The clock, read only at the edge; the core takes time as a parameter.
pub mod clock {
    use keyward_core::Timestamp;

    pub fn now() -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        Timestamp::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
    }
}

/// The randomness for secrets and ids: the operating system's CSPRNG.
pub(crate) fn os_rng() -> rand::rngs::OsRng {
    rand::rngs::OsRng
}

impl Caller {
    /// The audit context of a change this caller makes.
    pub(crate) fn change(&self) -> Change {
        let now = clock::now();
        Change {
            tenancy: self.tenancy.clone(),
            actor: self.root_key_id.clone(),
            request_id: self.request_id.clone(),
            audit_id: id::generate(IdKind::AuditEntry, now, &mut os_rng()),
            now,
        }
    }
}

pub(crate) const DEFAULT_PAGE_SIZE: u32 = 20;
pub(crate) const MAX_PAGE_SIZE: u32 = 100;

pub(crate) fn page_request(
    limit: Option<u32>,
    cursor: Option<String>,
) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            format!("`limit` must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    Ok(PageRequest { limit, cursor })
}

/// A running server's handle on its background work.
pub struct Server {
    state: Arc<AppState>,
    config: ServerConfig,
    last_used_task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let metrics = Arc::new(Metrics::new());
        let (last_used, last_used_task) = LastUsedRecorder::start(
            Arc::clone(&store),
            config.last_used_flush_interval,
            Arc::clone(&metrics),
        );
        let state = Arc::new(AppState {
            store,
            verifier: Arc::new(Verifier::new()),
            metrics,
            last_used,
            cluster: OnceLock::new(),
        });
        Self {
            state,
            config,
            last_used_task,
        }
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Joins the cluster of nodes sharing the PostgreSQL database at `database_url`. Until
    /// the first heartbeat completes, this node verifies from storage.
    pub async fn join_cluster(
        &self,
        database_url: &str,
        node_id: &str,
        options: ClusterOptions,
    ) -> StoreResult<()> {
        let cache: Arc<dyn ClusterCache> = self.state.verifier.clone();
        let cluster = Cluster::join(database_url, node_id, options, cache).await?;
        if self.state.cluster.set(cluster).is_err() {
            tracing::warn!("this node already joined a cluster");
        }
        Ok(())
    }

    pub fn router(&self) -> Router {
        router(Arc::clone(&self.state), &self.config)
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests and writes the
    /// pending `last_used_at` batch.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self.state.store.foreign_secrets_present().await {
            Ok(present) => self.state.verifier.foreign_secrets(present),
            Err(error) => tracing::warn!(%error, "cannot tell whether imported secrets exist"),
        }
        let app = self.router();
        let Server {
            state,
            last_used_task,
            ..
        } = self;
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        // The router held clones of the state; once it is gone, dropping ours closes the
        // last-used queue and lets its task write its final batch.
        if let Some(cluster) = state.cluster.get() {
            cluster.leave().await;
        }
        drop(state);
        if let Err(error) = last_used_task.await {
            tracing::error!(%error, "last_used_at writer ended abnormally");
        }
        Ok(())
    }
}

fn router(state: Arc<AppState>, config: &ServerConfig) -> Router {
    let (api, openapi) = routes::api(Arc::clone(&state)).split_for_parts();
    let openapi = Arc::new(openapi::finish(openapi));
    api.merge(routes::ops::openapi_router(openapi))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn(middleware::require_json))
        .layer(cors(&config.cors_origins))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            ApiError::internal().into_response_for_panic()
        }))
        .layer(axum::middleware::from_fn(middleware::request_context))
}

fn cors(origins: &[String]) -> CorsLayer {
    // `*` is a wildcard, not an origin (tower-http refuses it in a list). Credentials are
    // never allowed cross-origin, so the wildcard exposes nothing a browser keeps.
    let allow_origin = if origins.iter().any(|origin| origin.trim() == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|origin| {
            let parsed = HeaderValue::from_str(origin.trim()).ok();
            if parsed.is_none() {
                tracing::warn!(
                    origin,
                    "ignoring a CORS origin that is not a valid header value"
                );
            }
            parsed
        }))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-tenant-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("api-version"),
        ])
        .max_age(Duration::from_secs(600))
}

impl ApiError {
    fn into_response_for_panic(self) -> axum::response::Response {
        axum::response::IntoResponse::into_response(self)
    }
}
