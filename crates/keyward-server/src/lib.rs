//! Keyward's HTTP server: routing, authentication, the verification cache, and the single
//! place where errors become HTTP answers.
//!
//! Architecture invariant: only this crate knows HTTP. It owns no business rule that
//! `keyward-core` could hold, and reaches storage only through [`keyward_store::Store`].

pub mod analytics;
pub mod bootstrap;
mod convert;
pub mod crypto;
pub mod error;
pub mod events;
mod extract;
pub mod gateway;
pub mod last_used;
pub mod leaks;
pub mod metrics;
mod middleware;
mod openapi;
pub mod outbound;
mod rate_limit;
mod routes;
mod serve;
pub mod usage;
pub mod verification;
pub mod webhooks;

pub use routes::PortalSettings;
pub use verification::tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use keyward_store::cluster::{ClusterCache, ClusterOptions, Coherence};
use keyward_store::{Changed, PageRequest, SqlStore, Store, StoreOptions, StoreResult};
use tokio::net::TcpListener;
use tower::{Layer, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use analytics::UsageRecorder;
use crypto::MasterKey;
pub use error::ApiError;
use events::{EventHub, EventSettings};
use keyward_core::usage::RateWindow;
pub use keyward_dashboard::{DashboardSettings, SecureCookies};
use last_used::LastUsedRecorder;
use metrics::Metrics;
pub use serve::ConnectionSettings;
use tokens::jwks::{JwksCache, JwksSettings};
use tokens::TokenVerifier;
use usage::{Limiter, UsageSettings};
use verification::known::KnownCredentials;
use verification::{SandboxLimits, Verification, VerificationCache};

/// How the server behaves; the binary fills it from flags, environment and file.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Origins allowed by CORS; empty allows none.
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub last_used_flush_interval: Duration,
    pub usage: UsageSettings,
    /// How often credit balances and organisations' spending are written back to storage.
    pub usage_write_back_interval: Duration,
    pub demo: DemoSettings,
    /// Peers whose `X-Forwarded-For` is believed (for the demo sandbox's per-client limit).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Seals workspace secrets at rest. The binary reads it from settings or its key file;
    /// the default is a random key that lives as long as the process.
    pub master_key: Arc<MasterKey>,
    pub jwks: JwksSettings,
    pub events: EventSettings,
    pub webhooks: webhooks::WebhookSettings,
    /// The customer portal's links (SPEC §4.10).
    pub portal: PortalSettings,
    /// Where GitHub publishes its secret-scanning keys (`KEYWARD_GITHUB_SCANNING_KEYS_URL`).
    pub github_scanning_keys_url: String,
    pub analytics: AnalyticsSettings,
    pub dashboard: keyward_dashboard::DashboardSettings,
    pub connections: ConnectionSettings,
    /// What the in-memory caches may hold, in approximate bytes: the verification cache,
    /// and verified tokens (`tokens::TOKEN_CACHE_SHARE`).
    pub cache_max_bytes: u64,
}

/// Usage analytics (`GET /api/v1/usage`).
#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    /// Off, verification outcomes are not recorded at all.
    pub enabled: bool,
    /// How often counts are written.
    pub flush_interval: Duration,
    /// Off, verifications count towards their app, organisation and environment but not
    /// their key: with a million keys in use, per-key rows cost PostgreSQL a row touched per
    /// verification (docs/analytics.md, "A million keys in use").
    pub per_key: bool,
    /// How long minute counts are kept.
    pub minute_retention: Duration,
    /// How long hour and day counts are kept.
    pub rollup_retention: Duration,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            // Each flush writes a row per key that was used (and its hour and day): with many
            // distinct keys, a longer interval sums more uses into each row.
            flush_interval: Duration::from_secs(10),
            per_key: true,
            minute_retention: Duration::from_secs(35 * 86_400),
            rollup_retention: Duration::from_secs(400 * 86_400),
        }
    }
}

/// Demo sandboxes (SPEC §4.3).
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// How long a sandbox lives.
    pub session_ttl: Duration,
    /// How often ended sandboxes are purged.
    pub sweep_interval: Duration,
    /// Sandboxes one client address may create per minute.
    pub sessions_per_minute: u64,
    /// What a sandbox's root key may call, at most.
    pub api_windows: Vec<RateWindow>,
    /// Whether a sandbox may make Keyward fetch URLs (JWKS). Off, an anonymous visitor cannot
    /// make the server send requests anywhere.
    pub allow_fetches: bool,
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(24 * 3600),
            sweep_interval: Duration::from_secs(60),
            sessions_per_minute: 5,
            api_windows: vec![
                RateWindow {
                    limit: 20,
                    period_ms: 1000,
                },
                RateWindow {
                    limit: 600,
                    period_ms: 60_000,
                },
            ],
            allow_fetches: false,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            last_used_flush_interval: Duration::from_secs(1),
            usage: UsageSettings::default(),
            usage_write_back_interval: Duration::from_secs(1),
            demo: DemoSettings::default(),
            trusted_proxies: Vec::new(),
            master_key: Arc::new(MasterKey::generate().1),
            jwks: JwksSettings::default(),
            events: EventSettings::default(),
            webhooks: webhooks::WebhookSettings::default(),
            portal: PortalSettings::default(),
            github_scanning_keys_url: leaks::GITHUB_SCANNING_KEYS_URL.to_owned(),
            analytics: AnalyticsSettings::default(),
            dashboard: keyward_dashboard::DashboardSettings::default(),
            connections: ConnectionSettings::default(),
            cache_max_bytes: verification::cache::DEFAULT_MAX_BYTES,
        }
    }
}

/// What every handler shares: a bundle of services.
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Every credential's verification, with its cache, limiter and recorders.
    pub verification: Arc<Verification>,
    pub metrics: Arc<Metrics>,
    /// This node's part in a cluster on a shared database; unset on a single node.
    /// Settles changes in every node's cache (ARCHITECTURE.md, "Cache coherence").
    pub coherence: Coherence,
    pub(crate) demo: DemoSettings,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    pub(crate) master_key: Arc<MasterKey>,
    /// The event and alert stream of `GET /ws`.
    pub events: Arc<EventHub>,
    pub(crate) webhooks: webhooks::WebhookSettings,
    pub(crate) portal: PortalSettings,
    /// GitHub's secret-scanning keys, for its reports (SPEC §4.9).
    pub(crate) github_keys: Arc<leaks::GithubKeys>,
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
        uncancellable(async move { Ok(state.coherence.settle(pending).await?) }).await
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

/// What [`Server::open`] opened.
pub struct Opened {
    pub server: Server,
    /// For closing once the server has stopped.
    pub store: Arc<SqlStore>,
    /// The first root keys, on a fresh database only: shown once, never logged.
    pub first_keys: Option<bootstrap::FirstRootKeys>,
}

/// Why [`Server::open`] could not open the server.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open storage: {0}")]
    Store(#[from] keyward_store::StoreError),
    #[error("{0}")]
    Settings(String),
}

/// A running server's handle on its background work.
pub struct Server {
    state: Arc<AppState>,
    config: ServerConfig,
    last_used_task: tokio::task::JoinHandle<()>,
    usage_log_task: Option<tokio::task::JoinHandle<()>>,
    write_back_task: tokio::task::JoinHandle<()>,
    stop_background: tokio::sync::watch::Sender<bool>,
    /// Where Envoy's gRPC `ext_authz` is served, when it is (`--grpc-listen`).
    ext_authz_listener: Option<TcpListener>,
}

impl Server {
    /// Fails only on settings it cannot use (a malformed `REDIS_URL`).
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::new());
        let (last_used, last_used_task) = LastUsedRecorder::start(
            Arc::clone(&store),
            config.last_used_flush_interval,
            Arc::clone(&metrics),
        );
        let limiter = Arc::new(Limiter::new(&config.usage, Arc::clone(&metrics))?);
        let (stop_background, stopped) = tokio::sync::watch::channel(false);
        let write_back_task = tokio::spawn(usage::write_back_loop(
            Arc::clone(&limiter),
            Arc::clone(&store),
            config.usage_write_back_interval,
            stopped.clone(),
        ));
        let events = EventHub::start(
            Arc::clone(&store),
            config.events.clone(),
            Arc::clone(&metrics),
            stopped.clone(),
        );
        let (usage_log, usage_log_task) =
            UsageRecorder::start(Arc::clone(&store), &config.analytics, Arc::clone(&metrics));
        tokio::spawn(analytics::purge_loop(
            Arc::clone(&store),
            config.analytics.clone(),
            stopped.clone(),
        ));
        let verification = Arc::new(Verification {
            store: Arc::clone(&store),
            cache: Arc::new(VerificationCache::new(
                config.cache_max_bytes
                    - config.cache_max_bytes / verification::tokens::TOKEN_CACHE_SHARE,
                metrics.cache_counters.clone(),
                KnownCredentials::new(metrics.filter_counters.clone()),
            )),
            limiter,
            tokens: TokenVerifier::new(
                Arc::new(JwksCache::new(config.jwks.clone())),
                config.cache_max_bytes / verification::tokens::TOKEN_CACHE_SHARE,
            ),
            replay: verification::LocalSeenSignatures::default(),
            usage_log,
            last_used,
            events: Arc::clone(&events),
            metrics: Arc::clone(&metrics),
            master_key: Arc::clone(&config.master_key),
            sandboxes: SandboxLimits {
                api_windows: config.demo.api_windows.clone(),
                allow_fetches: config.demo.allow_fetches,
            },
            clustered: std::sync::atomic::AtomicBool::new(false),
        });
        let lapses = metrics.propagation_lapses.clone();
        let coherence = Coherence::new(
            Arc::clone(&verification.cache) as Arc<dyn ClusterCache>,
            move |count| {
                lapses.inc_by(count as u64);
            },
        );
        let state = Arc::new(AppState {
            events,
            store,
            verification,
            metrics,
            coherence,
            demo: config.demo.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            master_key: Arc::clone(&config.master_key),
            webhooks: config.webhooks.clone(),
            portal: config.portal.clone(),
            github_keys: Arc::new(leaks::GithubKeys::new(
                config.github_scanning_keys_url.clone(),
                config.webhooks.allow_private,
            )),
        });
        if config.webhooks.deliver {
            webhooks::DeliveryWorker::start(
                Arc::clone(&state.store),
                config.webhooks.clone(),
                Arc::clone(&config.master_key),
                Arc::clone(&state.metrics),
                stopped.clone(),
            );
        }
        tokio::spawn(routes::demo::sweep_loop(
            Arc::downgrade(&state),
            config.demo.sweep_interval,
            stopped.clone(),
        ));
        let cache = Arc::clone(&state.verification.cache);
        let store = Arc::clone(&state.store);
        tokio::spawn(async move { cache.known.keep_built(store, stopped).await });
        Ok(Self {
            state,
            config,
            last_used_task,
            usage_log_task,
            write_back_task,
            stop_background,
            ext_authz_listener: None,
        })
    }

    /// Also serves Envoy's gRPC `ext_authz` (SPEC §4.7) on `listener`, from [`Server::run`]
    /// until the server stops.
    pub fn serve_ext_authz_on(&mut self, listener: TcpListener) {
        self.ext_authz_listener = Some(listener);
    }

    /// Opens everything `keyward serve` needs before it listens, in the order it must:
    /// storage (its schema brought up to date), the first root keys of a fresh database,
    /// the server, and on a shared database this node's place in the cluster. `main` and
    /// the integration tests both start here.
    pub async fn open(
        store: &StoreOptions,
        config: ServerConfig,
        cluster: ClusterOptions,
    ) -> Result<Opened, OpenError> {
        let sql = Arc::new(SqlStore::connect(store).await?);
        let first_keys = bootstrap::bootstrap(sql.as_ref()).await?;
        let counts_alone = config.usage.redis.is_none();
        let server =
            Self::new(Arc::clone(&sql) as Arc<dyn Store>, config).map_err(OpenError::Settings)?;
        if !sql.is_shared() {
            // One process owns the database: the filter of known credentials can be built
            // now. On a shared one, joining the cluster asks for it once this node hears
            // every announcement.
            server.state.verification.cache.known.request_build();
        } else {
            if counts_alone {
                tracing::warn!(
                    "no REDIS_URL: rate limits and credits are counted by each node on its \
                     own; set REDIS_URL to make them exact across the cluster"
                );
            }
            // Other nodes may share the database: keep this node's cache coherent with
            // theirs (ARCHITECTURE.md, "Cache coherence across nodes").
            server
                .join_cluster(&store.url, &store.node_id, cluster)
                .await?;
            tracing::info!(node_id = store.node_id, "joined the cluster");
        }
        Ok(Opened {
            server,
            store: sql,
            first_keys,
        })
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
        self.state.events.follow_postgres(database_url);
        self.state
            .coherence
            .join(database_url, node_id, options)
            .await?;
        self.state
            .verification
            .clustered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    pub fn router(&self) -> Router {
        Router::new().fallback_service(app(Arc::clone(&self.state), &self.config))
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests and writes the
    /// pending `last_used_at` batch.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self.state.store.foreign_secrets_present().await {
            Ok(present) => {
                ClusterCache::foreign_secrets(self.state.verification.cache.as_ref(), present)
            }
            Err(error) => tracing::warn!(%error, "cannot tell whether imported secrets exist"),
        }
        let app = app(Arc::clone(&self.state), &self.config);
        let connections = self.config.connections;
        let request_timeout = self.config.request_timeout;
        let Server {
            state,
            last_used_task,
            usage_log_task,
            write_back_task,
            stop_background,
            ext_authz_listener,
            ..
        } = self;
        let (stop_ext_authz, ext_authz_stopped) = tokio::sync::watch::channel(false);
        let ext_authz_task = ext_authz_listener.map(|listener| {
            let mut stopped = ext_authz_stopped;
            let serving = gateway::ext_authz::serve(
                listener,
                Arc::clone(&state),
                request_timeout,
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            );
            // Said when it happens: Envoy fails closed meanwhile, and someone must know why.
            tokio::spawn(async move {
                if let Err(error) = serving.await {
                    tracing::error!(%error, "the ext_authz gRPC server failed");
                }
            })
        });
        // Sockets are long-lived: they are told to go before the server waits for its
        // connections to finish.
        let events = Arc::clone(&state.events);
        let shutdown = async move {
            shutdown.await;
            events.close_sockets();
            let _ = stop_ext_authz.send(true);
        };
        serve::serve(
            listener,
            app,
            connections,
            &state.metrics.connections,
            shutdown,
        )
        .await;
        if let Some(task) = ext_authz_task {
            if let Err(error) = task.await {
                tracing::error!(%error, "the ext_authz gRPC server ended abnormally");
            }
        }
        // Balances spent up to now reach storage before the process ends.
        let _ = stop_background.send(true);
        if let Err(error) = write_back_task.await {
            tracing::error!(%error, "usage write-back ended abnormally");
        }
        // The router held clones of the state; once it is gone, dropping ours closes the
        // last-used queue and lets its task write its final batch.
        state.coherence.leave().await;
        drop(state);
        if let Err(error) = last_used_task.await {
            tracing::error!(%error, "last_used_at writer ended abnormally");
        }
        if let Some(task) = usage_log_task {
            if let Err(error) = task.await {
                tracing::error!(%error, "usage analytics writer ended abnormally");
            }
        }
        Ok(())
    }
}

/// What `serve` answers with: the dashboard's and portal's pages, and the API.
type App = middleware::SplitByPath<Router, ApiService>;

fn app(state: Arc<AppState>, config: &ServerConfig) -> App {
    let api = api_service(state, config);
    // The dashboard calls the API as any client does: through this same service, middleware
    // and all. Its own pages take forms, not JSON, so they sit beside the API's layers; any
    // other path under theirs is the API's (a 404 in SPEC §3's envelope).
    let dashboard = keyward_dashboard::router(
        Router::new().fallback_service(api.clone()),
        Arc::clone(&config.master_key) as Arc<dyn keyward_dashboard::Sealer>,
        config.dashboard,
    )
    .layer(TimeoutLayer::with_status_code(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        config.request_timeout,
    ))
    .layer(CatchPanicLayer::custom(|_| {
        tracing::error!("a dashboard handler panicked");
        axum::response::IntoResponse::into_response(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
    }))
    .fallback_service(api.clone());
    middleware::SplitByPath::new(keyward_dashboard::serves, dashboard, api)
}

type ApiService = middleware::RequestContext<
    tower_http::catch_panic::CatchPanic<
        middleware::SplitByPath<
            middleware::BodyRules<ApiRoutes>,
            tower_http::set_header::SetResponseHeader<
                tower_http::cors::Cors<middleware::BodyRules<ApiRoutes>>,
                HeaderValue,
            >,
        >,
        fn(Box<dyn std::any::Any + Send>) -> axum::response::Response,
    >,
>;
type ApiRoutes = <DefaultBodyLimit as Layer<Router>>::Service;

/// The API's routes behind SPEC §3's conventions. The stack wraps the router once: a layer
/// added with `Router::layer` wraps each route in a boxed copy, cloned on every request.
fn api_service(state: Arc<AppState>, config: &ServerConfig) -> ApiService {
    let (api, mut openapi) = routes::api(Arc::clone(&state)).split_for_parts();
    let (forward_auth, gateway_openapi) = gateway::forward_auth::router(state);
    openapi.merge(gateway_openapi);
    let openapi = Arc::new(openapi::finish(openapi));
    let routes = api
        .merge(routes::ops::openapi_router(openapi))
        .merge(forward_auth)
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND });
    let routes = DefaultBodyLimit::max(config.max_body_bytes).layer(routes);
    let max_body_bytes = config.max_body_bytes;
    let browser = ServiceBuilder::new()
        .layer(cors_vary())
        .layer(cors(&config.cors_origins))
        .service(middleware::BodyRules::new(
            routes.clone(),
            true,
            max_body_bytes,
        ));
    let gateway = middleware::BodyRules::new(routes, false, max_body_bytes);
    let request_timeout = config.request_timeout;
    let on_panic: fn(Box<dyn std::any::Any + Send>) -> axum::response::Response = |_| {
        tracing::error!("a request handler panicked");
        ApiError::internal().into_response_for_panic()
    };
    ServiceBuilder::new()
        .layer_fn(|inner| middleware::RequestContext::new(inner, request_timeout))
        .layer(CatchPanicLayer::custom(on_panic))
        .service(middleware::SplitByPath::new(
            gateway::is_forward_auth_path,
            gateway,
            browser,
        ))
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
        // A browser's script sees only these response headers cross-origin; an SDK needs
        // `Retry-After` and the rate-limit headers to back off.
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("api-version"),
            HeaderName::from_static("retry-after"),
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
        ])
        .max_age(Duration::from_secs(600))
        // `Vary` is set apart (`cors_vary`): tower-http builds its value anew for every answer.
        .vary([])
}

/// The `Vary` header tower-http's CORS sends by default, as one static value.
fn cors_vary() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::appending(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    )
}

impl ApiError {
    fn into_response_for_panic(self) -> axum::response::Response {
        axum::response::IntoResponse::into_response(self)
    }
}
