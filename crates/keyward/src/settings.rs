//! `keyward serve` settings, layered: defaults, then a TOML file, then environment variables,
//! then flags. clap reads flags and variables; the file fills what both left unset.
//! An unknown `KEYWARD_*` variable or file key is an error that names it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use keyward_core::webhook::RetryPolicy;
use keyward_server::events::EventSettings;
use keyward_server::usage::{CreditFallback, RateLimitFallback};
use keyward_server::webhooks::WebhookSettings;
use keyward_server::{AnalyticsSettings, DashboardSettings, SecureCookies};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    #[error("cannot read the settings file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the settings file {path} is not valid: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("unknown environment variable(s): {0}. Run `keyward serve --help` for the settings")]
    UnknownVariables(String),
    #[error("`{name}` is not valid: {message}")]
    Invalid { name: &'static str, message: String },
}

/// Flags and their environment variables. Every field is optional so that the file can fill
/// whatever they leave unset.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8080]
    #[arg(long, env = "KEYWARD_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// Address for Envoy's gRPC ext_authz service (envoy.service.auth.v3.Authorization);
    /// off when unset; port 0 picks a free port
    #[arg(long, env = "KEYWARD_GRPC_LISTEN")]
    pub(crate) grpc_listen: Option<SocketAddr>,
    /// Directory for the embedded database [default: ./keyward-data]
    #[arg(long, env = "KEYWARD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// A TOML file with any of these settings (snake_case keys)
    #[arg(long, env = "KEYWARD_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Database URL; the embedded SQLite database in the data directory when unset
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Origins allowed to call the API from a browser, comma-separated
    #[arg(long, env = "CORS_ORIGIN")]
    pub(crate) cors_origin: Option<String>,
    /// Largest accepted request body [default: 1048576]
    #[arg(long, env = "KEYWARD_MAX_BODY_BYTES")]
    pub(crate) max_body_bytes: Option<usize>,
    /// What the verification cache may hold, in approximate bytes; the hottest credentials
    /// stay, the rest are read from storage when used [default: 268435456]
    #[arg(long, env = "KEYWARD_CACHE_MAX_BYTES")]
    pub(crate) cache_max_bytes: Option<u64>,
    /// Seconds a request may take before it gets 503 [default: 30]
    #[arg(long, env = "KEYWARD_REQUEST_TIMEOUT_SECONDS")]
    pub(crate) request_timeout_seconds: Option<u64>,
    /// Database connections for reads [default: 8]
    #[arg(long, env = "KEYWARD_DB_MAX_CONNECTIONS")]
    pub(crate) db_max_connections: Option<u32>,
    /// Seconds to wait for a free database connection [default: 5]
    #[arg(long, env = "KEYWARD_DB_ACQUIRE_TIMEOUT_SECONDS")]
    pub(crate) db_acquire_timeout_seconds: Option<u64>,
    /// How often `last_used_at` is written, in milliseconds [default: 1000]
    #[arg(long, env = "KEYWARD_LAST_USED_FLUSH_MS")]
    pub(crate) last_used_flush_ms: Option<u64>,
    /// This node's name in a cluster: lowercase letters, digits, `_` and `-`, at most 40
    /// [default: random]
    #[arg(long, env = "KEYWARD_NODE_ID")]
    pub(crate) node_id: Option<String>,
    /// On PostgreSQL: how long one heartbeat lets a node answer from its cache, in
    /// milliseconds. It also bounds how long a change waits for a node that died [default: 2000]
    #[arg(long, env = "KEYWARD_CLUSTER_LEASE_MS")]
    pub(crate) cluster_lease_ms: Option<u64>,
    /// Log format: `text` or `json` [default: text]
    #[arg(long, env = "KEYWARD_LOG_FORMAT")]
    pub(crate) log_format: Option<LogFormat>,
    /// `redis://…`: rate limits and credits live in Redis, exact across every node.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: Option<String>,
    /// Prepended to every Redis key (default `keyward`).
    #[arg(long, env = "KEYWARD_REDIS_KEY_PREFIX")]
    pub(crate) redis_key_prefix: Option<String>,
    /// How long a Redis command may take before Redis counts as unreachable (default 250).
    #[arg(long, env = "KEYWARD_REDIS_TIMEOUT_MS")]
    pub(crate) redis_timeout_ms: Option<u64>,
    /// While Redis is unreachable, rate limits are counted `local`ly per node (default),
    /// `allow`ed uncounted, or `deny`ed with 503.
    #[arg(long, env = "KEYWARD_REDIS_DOWN_RATE_LIMITS")]
    pub(crate) redis_down_rate_limits: Option<RateLimitFallbackSetting>,
    /// While Redis is unreachable, verifications that spend credits are `deny`ed with 503
    /// (default) or `allow`ed without charging.
    #[arg(long, env = "KEYWARD_REDIS_DOWN_CREDITS")]
    pub(crate) redis_down_credits: Option<CreditFallbackSetting>,
    /// How often credit balances are written back to the database (default 1000).
    #[arg(long, env = "KEYWARD_USAGE_WRITE_BACK_MS")]
    pub(crate) usage_write_back_ms: Option<u64>,
    /// Comma-separated addresses or CIDR ranges whose `X-Forwarded-For` is believed.
    #[arg(long, env = "KEYWARD_TRUSTED_PROXIES")]
    pub(crate) trusted_proxies: Option<String>,
    /// How long a demo sandbox lives (default 86400).
    #[arg(long, env = "KEYWARD_DEMO_SESSION_TTL_SECONDS")]
    pub(crate) demo_session_ttl_seconds: Option<u64>,
    /// Base64 of the 32-byte key that seals workspace secrets. Without it, `serve` keeps one
    /// in `<data dir>/master.key` (made on first start, mode 0600). Every node of a cluster
    /// needs the same key.
    #[arg(long, env = "KEYWARD_MASTER_KEY", hide_env_values = true)]
    pub(crate) master_key: Option<String>,
    /// Let every URL Keyward fetches (JWKS, …) reach private, loopback, link-local and other
    /// special-purpose addresses.
    #[arg(long, env = "KEYWARD_ALLOW_PRIVATE_URLS")]
    pub(crate) allow_private_urls: Option<bool>,
    /// The former name of `KEYWARD_ALLOW_PRIVATE_URLS`, still honoured.
    #[arg(long, env = "KEYWARD_ALLOW_PRIVATE_JWKS")]
    pub(crate) allow_private_jwks: Option<bool>,
    /// Let demo sandboxes make Keyward fetch URLs (JWKS) (default false: anonymous sandboxes
    /// cannot make the server send requests).
    #[arg(long, env = "KEYWARD_DEMO_ALLOW_FETCHES")]
    pub(crate) demo_allow_fetches: Option<bool>,
    /// Whether this node queues and delivers webhooks (default true). Off, it leaves both to
    /// the nodes that do; at least one node of a cluster must.
    #[arg(long, env = "KEYWARD_WEBHOOK_DELIVERY")]
    pub(crate) webhook_delivery: Option<bool>,
    /// Milliseconds a webhook endpoint has to answer (default 15000).
    #[arg(long, env = "KEYWARD_WEBHOOK_TIMEOUT_MS")]
    pub(crate) webhook_timeout_ms: Option<u64>,
    /// Milliseconds before a failed webhook delivery's first retry (default 5000); later
    /// waits grow fourfold, to 10 h with the default, over 11 attempts (37 h and more).
    #[arg(long, env = "KEYWARD_WEBHOOK_RETRY_FIRST_DELAY_MS")]
    pub(crate) webhook_retry_first_delay_ms: Option<u64>,
    /// Seconds of nothing but failed attempts after which an endpoint is turned off with a
    /// `webhook.disabled` alert (default 432000, five days).
    #[arg(long, env = "KEYWARD_WEBHOOK_DISABLE_AFTER_SECONDS")]
    pub(crate) webhook_disable_after_seconds: Option<u64>,
    /// Where GitHub publishes its secret-scanning keys (default
    /// https://api.github.com/meta/public_keys/secret_scanning).
    #[arg(long, env = "KEYWARD_GITHUB_SCANNING_KEYS_URL")]
    pub(crate) github_scanning_keys_url: Option<String>,
    /// Seconds a customer portal link works if unused (default 300, 60 to 3600).
    #[arg(long, env = "KEYWARD_PORTAL_LINK_SECONDS")]
    pub(crate) portal_link_seconds: Option<u64>,
    /// The address customers reach this server at, for the links it makes
    /// (e.g. `https://keys.example.com`); by default the `Host` a link was asked for at.
    #[arg(long, env = "KEYWARD_PUBLIC_URL")]
    pub(crate) public_url: Option<String>,
    /// Comma-separated origins a portal `return_url` may have besides any `https://` one.
    #[arg(long, env = "KEYWARD_PORTAL_RETURN_ORIGINS")]
    pub(crate) portal_return_origins: Option<String>,
    /// Open connections, WebSocket sessions included, beyond which new ones are closed on
    /// arrival (default 10000, lowered to fit the process's descriptor limit).
    #[arg(long, env = "KEYWARD_MAX_CONNECTIONS")]
    pub(crate) max_connections: Option<usize>,
    /// Seconds a connection has to send a complete request head, from opening or from its
    /// previous response; also ends idle keep-alive connections (default 10).
    #[arg(long, env = "KEYWARD_HEADER_READ_TIMEOUT_SECONDS")]
    pub(crate) header_read_timeout_seconds: Option<u64>,
    /// Seconds a write to a client may make no progress before the connection is closed
    /// (default 30).
    #[arg(long, env = "KEYWARD_SEND_TIMEOUT_SECONDS")]
    pub(crate) send_timeout_seconds: Option<u64>,
    /// How long events are kept for clients resuming with `?since=` (default 168).
    #[arg(long, env = "KEYWARD_EVENT_RETENTION_HOURS")]
    pub(crate) event_retention_hours: Option<u64>,
    /// How long before a key's expiry `key.expiring` is raised (default 24; less than the
    /// event retention).
    #[arg(long, env = "KEYWARD_KEY_EXPIRING_LEAD_HOURS")]
    pub(crate) key_expiring_lead_hours: Option<u64>,
    /// Record every verification's outcome for `GET /api/v1/usage` (default true).
    #[arg(long, env = "KEYWARD_USAGE_ANALYTICS")]
    pub(crate) usage_analytics: Option<bool>,
    /// Count verifications per key as well as per app and organisation (default true).
    #[arg(long, env = "KEYWARD_USAGE_PER_KEY")]
    pub(crate) usage_per_key: Option<bool>,
    /// How often usage counts are written, in seconds (default 10).
    #[arg(long, env = "KEYWARD_USAGE_FLUSH_SECONDS")]
    pub(crate) usage_flush_seconds: Option<u64>,
    /// How long per-minute usage counts are kept (default 35).
    #[arg(long, env = "KEYWARD_USAGE_RETENTION_DAYS")]
    pub(crate) usage_retention_days: Option<u64>,
    /// How long hourly and daily usage counts are kept (default 400).
    #[arg(long, env = "KEYWARD_USAGE_ROLLUP_RETENTION_DAYS")]
    pub(crate) usage_rollup_retention_days: Option<u64>,
    /// Open WebSocket sessions this node accepts in all (default 10000).
    #[arg(long, env = "KEYWARD_WS_MAX_CONNECTIONS")]
    pub(crate) ws_max_connections: Option<usize>,
    /// Open WebSocket sessions per root key, or per public key and end user (default 100).
    #[arg(long, env = "KEYWARD_WS_MAX_CONNECTIONS_PER_CREDENTIAL")]
    pub(crate) ws_max_connections_per_credential: Option<usize>,
    /// When dashboard cookies are `Secure`: `auto` (default: unless the dashboard is opened
    /// on a loopback address), `always` or `never`.
    #[arg(long, env = "KEYWARD_DASHBOARD_SECURE_COOKIES")]
    pub(crate) dashboard_secure_cookies: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RateLimitFallbackSetting {
    Local,
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CreditFallbackSetting {
    Deny,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The same settings, as a TOML file may give them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    grpc_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    cors_origin: Option<String>,
    max_body_bytes: Option<usize>,
    cache_max_bytes: Option<u64>,
    request_timeout_seconds: Option<u64>,
    db_max_connections: Option<u32>,
    db_acquire_timeout_seconds: Option<u64>,
    last_used_flush_ms: Option<u64>,
    cluster_lease_ms: Option<u64>,
    node_id: Option<String>,
    log_format: Option<LogFormat>,
    redis_url: Option<String>,
    redis_key_prefix: Option<String>,
    redis_timeout_ms: Option<u64>,
    redis_down_rate_limits: Option<RateLimitFallbackSetting>,
    redis_down_credits: Option<CreditFallbackSetting>,
    usage_write_back_ms: Option<u64>,
    trusted_proxies: Option<String>,
    demo_session_ttl_seconds: Option<u64>,
    master_key: Option<String>,
    allow_private_urls: Option<bool>,
    allow_private_jwks: Option<bool>,
    demo_allow_fetches: Option<bool>,
    webhook_delivery: Option<bool>,
    webhook_timeout_ms: Option<u64>,
    webhook_retry_first_delay_ms: Option<u64>,
    webhook_disable_after_seconds: Option<u64>,
    github_scanning_keys_url: Option<String>,
    portal_link_seconds: Option<u64>,
    public_url: Option<String>,
    portal_return_origins: Option<String>,
    max_connections: Option<usize>,
    header_read_timeout_seconds: Option<u64>,
    send_timeout_seconds: Option<u64>,
    event_retention_hours: Option<u64>,
    key_expiring_lead_hours: Option<u64>,
    ws_max_connections: Option<usize>,
    ws_max_connections_per_credential: Option<usize>,
    usage_analytics: Option<bool>,
    usage_per_key: Option<bool>,
    usage_flush_seconds: Option<u64>,
    usage_retention_days: Option<u64>,
    usage_rollup_retention_days: Option<u64>,
    dashboard_secure_cookies: Option<String>,
}

/// The resolved settings.
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    /// Envoy's gRPC ext_authz; off when `None`.
    pub(crate) grpc_listen: Option<SocketAddr>,
    pub(crate) data_dir: PathBuf,
    /// May hold a password, so it is never printed.
    pub(crate) database_url: Option<SecretString>,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) cache_max_bytes: u64,
    pub(crate) request_timeout: Duration,
    pub(crate) db_max_connections: u32,
    pub(crate) db_acquire_timeout: Duration,
    pub(crate) last_used_flush_interval: Duration,
    pub(crate) cluster_lease: Duration,
    pub(crate) node_id: Option<String>,
    pub(crate) log_format: LogFormat,
    pub(crate) redis_url: Option<SecretString>,
    pub(crate) redis_key_prefix: String,
    pub(crate) redis_timeout: Duration,
    pub(crate) rate_limit_fallback: RateLimitFallback,
    pub(crate) credit_fallback: CreditFallback,
    pub(crate) usage_write_back_interval: Duration,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) demo_session_ttl: Duration,
    /// Base64; `None` means the key file in the data directory.
    pub(crate) master_key: Option<SecretString>,
    pub(crate) allow_private_urls: bool,
    pub(crate) demo_allow_fetches: bool,
    pub(crate) webhooks: WebhookSettings,
    pub(crate) github_scanning_keys_url: String,
    pub(crate) portal: keyward_server::PortalSettings,
    /// `None`: the default, fitted to the descriptor limit at start.
    pub(crate) max_connections: Option<usize>,
    pub(crate) header_read_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) events: EventSettings,
    pub(crate) analytics: AnalyticsSettings,
    pub(crate) dashboard: DashboardSettings,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("grpc_listen", &self.grpc_listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "[redacted]"),
            )
            .field("cors_origins", &self.cors_origins)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub(crate) fn resolve(
        args: ServeArgs,
        known_variables: &[String],
    ) -> Result<Self, SettingsError> {
        reject_unknown_variables(std::env::vars().map(|(name, _)| name), known_variables)?;
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let max_body_bytes = args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(1024 * 1024);
        if max_body_bytes == 0 {
            return Err(SettingsError::Invalid {
                name: "max_body_bytes",
                message: "must be positive".to_owned(),
            });
        }
        let cache_max_bytes = args
            .cache_max_bytes
            .or(file.cache_max_bytes)
            .unwrap_or(keyward_server::verification::cache::DEFAULT_MAX_BYTES);
        if cache_max_bytes < 1024 * 1024 {
            return Err(SettingsError::Invalid {
                name: "cache_max_bytes",
                message: "must be at least 1048576 (1 MiB)".to_owned(),
            });
        }
        let flush_ms = args
            .last_used_flush_ms
            .or(file.last_used_flush_ms)
            .unwrap_or(1000);
        if flush_ms == 0 {
            return Err(SettingsError::Invalid {
                name: "last_used_flush_ms",
                message: "must be positive".to_owned(),
            });
        }
        let lease_ms = args
            .cluster_lease_ms
            .or(file.cluster_lease_ms)
            .unwrap_or(2000);
        if !(200..=60_000).contains(&lease_ms) {
            return Err(SettingsError::Invalid {
                name: "cluster_lease_ms",
                message: "must be between 200 and 60000".to_owned(),
            });
        }
        let request_timeout = Duration::from_secs(
            args.request_timeout_seconds
                .or(file.request_timeout_seconds)
                .unwrap_or(30)
                .max(1),
        );
        // A change's call waits up to one lease for a node that died; it must not time out
        // first, or its caller would see an error for a change that went through.
        if request_timeout < Duration::from_millis(lease_ms * 2) {
            return Err(SettingsError::Invalid {
                name: "cluster_lease_ms",
                message: "must be at most half of request_timeout_seconds".to_owned(),
            });
        }
        let usage_write_back_ms = args
            .usage_write_back_ms
            .or(file.usage_write_back_ms)
            .unwrap_or(1000);
        if !(10..=60_000).contains(&usage_write_back_ms) {
            return Err(SettingsError::Invalid {
                name: "usage_write_back_ms",
                message: "must be between 10 and 60000".to_owned(),
            });
        }
        let redis_timeout_ms = args
            .redis_timeout_ms
            .or(file.redis_timeout_ms)
            .unwrap_or(250);
        if !(10..=10_000).contains(&redis_timeout_ms) {
            return Err(SettingsError::Invalid {
                name: "redis_timeout_ms",
                message: "must be between 10 and 10000".to_owned(),
            });
        }
        let redis_key_prefix = args
            .redis_key_prefix
            .or(file.redis_key_prefix)
            .unwrap_or_else(|| "keyward".to_owned());
        if redis_key_prefix.is_empty()
            || redis_key_prefix.len() > 64
            || !redis_key_prefix.bytes().all(|byte| byte.is_ascii_graphic())
        {
            return Err(SettingsError::Invalid {
                name: "redis_key_prefix",
                message: "use 1 to 64 printable characters without spaces".to_owned(),
            });
        }
        let trusted_proxies = parse_trusted_proxies(
            args.trusted_proxies
                .or(file.trusted_proxies)
                .as_deref()
                .unwrap_or(""),
        )?;
        let demo_session_ttl_seconds = args
            .demo_session_ttl_seconds
            .or(file.demo_session_ttl_seconds)
            .unwrap_or(86_400);
        if !(1..=30 * 86_400).contains(&demo_session_ttl_seconds) {
            return Err(SettingsError::Invalid {
                name: "demo_session_ttl_seconds",
                message: "must be between 1 and 2592000 (30 days)".to_owned(),
            });
        }
        let webhooks = webhook_settings(
            args.webhook_delivery.or(file.webhook_delivery),
            args.webhook_timeout_ms.or(file.webhook_timeout_ms),
            args.webhook_retry_first_delay_ms
                .or(file.webhook_retry_first_delay_ms),
            args.webhook_disable_after_seconds
                .or(file.webhook_disable_after_seconds),
        )?;
        let events = event_settings(
            args.event_retention_hours.or(file.event_retention_hours),
            args.key_expiring_lead_hours
                .or(file.key_expiring_lead_hours),
            args.ws_max_connections.or(file.ws_max_connections),
            args.ws_max_connections_per_credential
                .or(file.ws_max_connections_per_credential),
        )?;
        let days = |value: u64| Duration::from_secs(value * 86_400);
        let minute_retention = args
            .usage_retention_days
            .or(file.usage_retention_days)
            .unwrap_or(35);
        let rollup_retention = args
            .usage_rollup_retention_days
            .or(file.usage_rollup_retention_days)
            .unwrap_or(400);
        if !(1..=3660).contains(&minute_retention) || !(1..=3660).contains(&rollup_retention) {
            return Err(SettingsError::Invalid {
                name: "usage_retention_days",
                message: "usage retentions are between 1 and 3660 days".to_owned(),
            });
        }
        let flush_seconds = args
            .usage_flush_seconds
            .or(file.usage_flush_seconds)
            .unwrap_or(10);
        if !(1..=60).contains(&flush_seconds) {
            return Err(SettingsError::Invalid {
                name: "usage_flush_seconds",
                message: "must be between 1 and 60".to_owned(),
            });
        }
        let analytics = AnalyticsSettings {
            flush_interval: Duration::from_secs(flush_seconds),
            enabled: args
                .usage_analytics
                .or(file.usage_analytics)
                .unwrap_or(true),
            per_key: args.usage_per_key.or(file.usage_per_key).unwrap_or(true),
            minute_retention: days(minute_retention),
            rollup_retention: days(rollup_retention),
        };
        let dashboard = DashboardSettings {
            secure_cookies: match args
                .dashboard_secure_cookies
                .or(file.dashboard_secure_cookies)
            {
                None => SecureCookies::default(),
                Some(text) => SecureCookies::parse(&text).ok_or(SettingsError::Invalid {
                    name: "dashboard_secure_cookies",
                    message: "is `auto`, `always` or `never`".to_owned(),
                })?,
            },
        };
        let seconds = |name: &'static str, value: Option<u64>, default: u64| {
            let value = value.unwrap_or(default);
            if (1..=3600).contains(&value) {
                Ok(Duration::from_secs(value))
            } else {
                Err(SettingsError::Invalid {
                    name,
                    message: "must be between 1 and 3600".to_owned(),
                })
            }
        };
        let header_read_timeout = seconds(
            "header_read_timeout_seconds",
            args.header_read_timeout_seconds
                .or(file.header_read_timeout_seconds),
            10,
        )?;
        let send_timeout = seconds(
            "send_timeout_seconds",
            args.send_timeout_seconds.or(file.send_timeout_seconds),
            30,
        )?;
        let max_connections = args.max_connections.or(file.max_connections);
        if max_connections == Some(0) {
            return Err(SettingsError::Invalid {
                name: "max_connections",
                message: "must be at least 1".to_owned(),
            });
        }
        let node_id = args.node_id.or(file.node_id);
        if let Some(node_id) = &node_id {
            let valid = (1..=40).contains(&node_id.len())
                && node_id.bytes().all(|byte| {
                    byte.is_ascii_lowercase()
                        || byte.is_ascii_digit()
                        || byte == b'_'
                        || byte == b'-'
                });
            if !valid {
                return Err(SettingsError::Invalid {
                    name: "node_id",
                    message: "use 1 to 40 lowercase letters, digits, `_` or `-`".to_owned(),
                });
            }
        }
        Ok(Self {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            grpc_listen: args.grpc_listen.or(file.grpc_listen),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("keyward-data")),
            database_url: args
                .database_url
                .or(file.database_url)
                .map(SecretString::from),
            cors_origins: args
                .cors_origin
                .or(file.cors_origin)
                .map(|list| comma_list(&list))
                .unwrap_or_default(),
            max_body_bytes,
            cache_max_bytes,
            request_timeout,
            db_max_connections: args
                .db_max_connections
                .or(file.db_max_connections)
                .unwrap_or(8),
            db_acquire_timeout: Duration::from_secs(
                args.db_acquire_timeout_seconds
                    .or(file.db_acquire_timeout_seconds)
                    .unwrap_or(5),
            ),
            last_used_flush_interval: Duration::from_millis(flush_ms),
            cluster_lease: Duration::from_millis(lease_ms),
            node_id,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            redis_url: args.redis_url.or(file.redis_url).map(SecretString::from),
            redis_key_prefix,
            redis_timeout: Duration::from_millis(redis_timeout_ms),
            rate_limit_fallback: match args.redis_down_rate_limits.or(file.redis_down_rate_limits) {
                Some(RateLimitFallbackSetting::Allow) => RateLimitFallback::Allow,
                Some(RateLimitFallbackSetting::Deny) => RateLimitFallback::Deny,
                Some(RateLimitFallbackSetting::Local) | None => RateLimitFallback::Local,
            },
            credit_fallback: match args.redis_down_credits.or(file.redis_down_credits) {
                Some(CreditFallbackSetting::Allow) => CreditFallback::Allow,
                Some(CreditFallbackSetting::Deny) | None => CreditFallback::Deny,
            },
            usage_write_back_interval: Duration::from_millis(usage_write_back_ms),
            trusted_proxies,
            demo_session_ttl: Duration::from_secs(demo_session_ttl_seconds),
            master_key: args.master_key.or(file.master_key).map(SecretString::from),
            allow_private_urls: args
                .allow_private_urls
                .or(file.allow_private_urls)
                .or(args.allow_private_jwks)
                .or(file.allow_private_jwks)
                .unwrap_or(false),
            demo_allow_fetches: args
                .demo_allow_fetches
                .or(file.demo_allow_fetches)
                .unwrap_or(false),
            webhooks,
            github_scanning_keys_url: args
                .github_scanning_keys_url
                .or(file.github_scanning_keys_url)
                .unwrap_or_else(|| keyward_server::leaks::GITHUB_SCANNING_KEYS_URL.to_owned()),
            portal: portal_settings(
                args.portal_link_seconds.or(file.portal_link_seconds),
                args.public_url.or(file.public_url),
                args.portal_return_origins.or(file.portal_return_origins),
            )?,
            max_connections,
            header_read_timeout,
            send_timeout,
            events,
            analytics,
            dashboard,
        })
    }
}

fn portal_settings(
    link_seconds: Option<u64>,
    public_url: Option<String>,
    return_origins: Option<String>,
) -> Result<keyward_server::PortalSettings, SettingsError> {
    let link_seconds = link_seconds.unwrap_or(300);
    if !(60..=3600).contains(&link_seconds) {
        return Err(SettingsError::Invalid {
            name: "portal_link_seconds",
            message: "must be between 60 and 3600".to_owned(),
        });
    }
    if let Some(url) = &public_url {
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .map(|rest| rest.trim_end_matches('/'));
        let is_origin = host.is_some_and(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b".-:[]".contains(&byte))
        });
        if !is_origin {
            return Err(SettingsError::Invalid {
                name: "public_url",
                message: "must be an http(s) origin, such as https://keys.example.com".to_owned(),
            });
        }
    }
    Ok(keyward_server::PortalSettings {
        link_lifetime: Duration::from_secs(link_seconds),
        public_url,
        return_origins: return_origins
            .map(|list| comma_list(&list))
            .unwrap_or_default(),
    })
}

/// The items of a comma-separated setting, trimmed, empty ones dropped.
fn comma_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn webhook_settings(
    deliver: Option<bool>,
    timeout_ms: Option<u64>,
    retry_first_delay_ms: Option<u64>,
    disable_after_seconds: Option<u64>,
) -> Result<WebhookSettings, SettingsError> {
    let defaults = WebhookSettings::default();
    let timeout = timeout_ms.unwrap_or(15_000);
    if !(100..=60_000).contains(&timeout) {
        return Err(SettingsError::Invalid {
            name: "webhook_timeout_ms",
            message: "must be between 100 and 60000".to_owned(),
        });
    }
    let retry = match retry_first_delay_ms {
        None => defaults.retry,
        Some(delay @ 1..=3_600_000) => {
            RetryPolicy::with_first_delay_ms(i64::try_from(delay).unwrap_or(i64::MAX))
        }
        Some(_) => {
            return Err(SettingsError::Invalid {
                name: "webhook_retry_first_delay_ms",
                message: "must be between 1 and 3600000".to_owned(),
            })
        }
    };
    let disable_after = match disable_after_seconds {
        None => defaults.disable_after,
        Some(seconds @ 1..=31_536_000) => Duration::from_secs(seconds),
        Some(_) => {
            return Err(SettingsError::Invalid {
                name: "webhook_disable_after_seconds",
                message: "must be between 1 and 31536000 (a year)".to_owned(),
            })
        }
    };
    Ok(WebhookSettings {
        deliver: deliver.unwrap_or(true),
        timeout: Duration::from_millis(timeout),
        retry,
        disable_after,
        ..defaults
    })
}

fn event_settings(
    retention_hours: Option<u64>,
    expiring_lead_hours: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_credential: Option<usize>,
) -> Result<EventSettings, SettingsError> {
    let defaults = EventSettings::default();
    let hours = |value: u64| Duration::from_secs(value * 3600);
    let retention = retention_hours.unwrap_or(168);
    if !(1..=24 * 366).contains(&retention) {
        return Err(SettingsError::Invalid {
            name: "event_retention_hours",
            message: "must be between 1 and 8784 (a year)".to_owned(),
        });
    }
    let lead = expiring_lead_hours.unwrap_or(24.min(retention - 1));
    // The retained `key.expiring` event is what says it was raised already.
    if lead >= retention {
        return Err(SettingsError::Invalid {
            name: "key_expiring_lead_hours",
            message: "must be less than event_retention_hours".to_owned(),
        });
    }
    let max_sockets = max_connections.unwrap_or(defaults.max_sockets);
    let per_credential =
        max_connections_per_credential.unwrap_or(defaults.max_sockets_per_credential);
    if max_sockets == 0 || per_credential == 0 {
        return Err(SettingsError::Invalid {
            name: "ws_max_connections",
            message: "WebSocket connection limits must be at least 1".to_owned(),
        });
    }
    Ok(EventSettings {
        retention: hours(retention),
        expiring_lead: hours(lead),
        max_sockets,
        max_sockets_per_credential: per_credential,
        ..defaults
    })
}

/// `10.0.0.0/8, 192.168.1.7`: ranges, or single addresses.
fn parse_trusted_proxies(list: &str) -> Result<Vec<IpNet>, SettingsError> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| SettingsError::Invalid {
                    name: "trusted_proxies",
                    message: format!("{entry:?} is not an address or CIDR range"),
                })
        })
        .collect()
}

fn read_file(path: &Path) -> Result<FileSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| SettingsError::ParseFile {
        path: path.to_owned(),
        message: error.message().to_owned(),
    })
}

/// Variables that test suites set for themselves, not for the server.
const RESERVED_FOR_TESTS: &str = "KEYWARD_TEST_";

fn reject_unknown_variables(
    present: impl Iterator<Item = String>,
    known: &[String],
) -> Result<(), SettingsError> {
    let mut unknown: Vec<String> = present
        .filter(|name| name.starts_with("KEYWARD_") && !name.starts_with(RESERVED_FOR_TESTS))
        .filter(|name| !known.contains(name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    Err(SettingsError::UnknownVariables(unknown.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_variables_are_named() {
        let known = vec!["KEYWARD_LISTEN".to_owned()];
        let present = [
            "KEYWARD_LISTEN",
            "KEYWARD_LISTNE",
            "PATH",
            "KEYWARD_TEST_DATABASE_URL",
        ]
        .map(str::to_owned);
        let error = reject_unknown_variables(present.into_iter(), &known).unwrap_err();
        assert_eq!(error.to_string().matches("KEYWARD_").count(), 1);
        assert!(error.to_string().contains("KEYWARD_LISTNE"));
    }

    #[test]
    fn trusted_proxies_take_ranges_and_addresses() {
        let parsed = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1,::1").unwrap();
        assert_eq!(parsed.len(), 3);
        assert!(parse_trusted_proxies("").unwrap().is_empty());
        assert!(parse_trusted_proxies("10.0.0.0/33").is_err());
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let error = toml::from_str::<FileSettings>("listen = \"127.0.0.1:1\"\nlisten_port = 3")
            .unwrap_err();
        assert!(error.message().contains("listen_port"));
    }

    #[test]
    fn the_database_url_is_never_printed() {
        let settings = Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_listen: None,
            data_dir: PathBuf::from("x"),
            database_url: Some(SecretString::from("postgres://u:hunter2@h/db")),
            cors_origins: Vec::new(),
            max_body_bytes: 1,
            cache_max_bytes: 1 << 20,
            request_timeout: Duration::from_secs(1),
            db_max_connections: 1,
            db_acquire_timeout: Duration::from_secs(1),
            last_used_flush_interval: Duration::from_secs(1),
            cluster_lease: Duration::from_secs(2),
            node_id: None,
            log_format: LogFormat::Text,
            redis_url: Some(SecretString::from("redis://:hunter2@h")),
            redis_key_prefix: "keyward".to_owned(),
            redis_timeout: Duration::from_millis(250),
            rate_limit_fallback: RateLimitFallback::Local,
            credit_fallback: CreditFallback::Deny,
            usage_write_back_interval: Duration::from_secs(1),
            trusted_proxies: Vec::new(),
            demo_session_ttl: Duration::from_secs(1),
            master_key: Some(SecretString::from("bWFzdGVyLWtleS1zZWNyZXQ=")),
            allow_private_urls: false,
            demo_allow_fetches: false,
            webhooks: WebhookSettings::default(),
            github_scanning_keys_url: String::new(),
            portal: keyward_server::PortalSettings::default(),
            max_connections: None,
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            events: EventSettings::default(),
            analytics: AnalyticsSettings::default(),
            dashboard: DashboardSettings::default(),
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(!format!("{settings:?}").contains("bWFzdGVy"));
    }
}
