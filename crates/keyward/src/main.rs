//! The `keyward` binary: `keyward serve` runs the server; the other commands manage keys on a
//! running server through the SDK.

mod cli;
mod import;
mod master_key;
mod settings;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use keyward_server::usage::{RedisSettings, UsageSettings};
use keyward_server::{ConnectionSettings, DemoSettings, OpenError, Opened, Server, ServerConfig};
use keyward_store::cluster::ClusterOptions;
use keyward_store::{SqlStore, StoreOptions};
use secrecy::ExposeSecret;
use settings::{LogFormat, ServeArgs, Settings};

/// Every request allocates and frees a few dozen small buffers (headers, JSON, futures);
/// mimalloc's thread-local free lists cost about a third of glibc malloc's time on that
/// pattern (docs/benchmarks.md, "Against other tools").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    version,
    about = "API keys and request authentication"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server
    Serve(Box<ServeArgs>),
    /// Manage apps on a running server
    Apps {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::AppsCommand,
    },
    /// Issue, list, verify, rotate and revoke keys on a running server
    Keys {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::KeysCommand,
    },
    /// Add, list, test and remove webhook endpoints on a running server
    Webhooks {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(subcommand)]
        command: cli::WebhooksCommand,
    },
    /// Import existing keys from a JSONL or CSV file into an app on a running server
    Import {
        #[command(flatten)]
        connection: cli::Connection,
        #[command(flatten)]
        args: import::ImportArgs,
    },
}

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    InvalidSettings(#[from] settings::SettingsError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "another `keyward serve` is using {path}; several nodes need a shared PostgreSQL \
         database (DATABASE_URL), not one SQLite directory"
    )]
    DataDirInUse { path: String },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Settings(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await.map_err(|error| error.to_string()),
            Command::Apps {
                connection,
                command,
            } => cli::run_apps(&connection, command)
                .await
                .map_err(|error| error.to_string()),
            Command::Keys {
                connection,
                command,
            } => cli::run_keys(&connection, command)
                .await
                .map_err(|error| error.to_string()),
            Command::Webhooks {
                connection,
                command,
            } => cli::run_webhooks(&connection, command)
                .await
                .map_err(|error| error.to_string()),
            Command::Import { connection, args } => import::run(&connection, args)
                .await
                .map_err(|error| error.to_string()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Every environment variable any command reads, so `serve` can name the ones it does not.
fn known_variables() -> Vec<String> {
    fn collect(command: &clap::Command, into: &mut Vec<String>) {
        for argument in command.get_arguments() {
            if let Some(name) = argument.get_env().and_then(|name| name.to_str()) {
                into.push(name.to_owned());
            }
        }
        for subcommand in command.get_subcommands() {
            collect(subcommand, into);
        }
    }
    let mut names = vec!["KEYWARD_LOG".to_owned()];
    collect(&Cli::command(), &mut names);
    names
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Colour codes only for a person at a terminal, not in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let settings = Settings::resolve(args, &known_variables())?;
    init_logging(settings.log_format);
    // Before anything opens a descriptor.
    let max_connections = connection_limit(&settings, raise_open_file_limit());
    let url = match &settings.database_url {
        Some(url) => url.expose_secret().to_owned(),
        None => {
            std::fs::create_dir_all(&settings.data_dir).map_err(|source| ServeError::DataDir {
                path: settings.data_dir.display().to_string(),
                source,
            })?;
            SqlStore::sqlite_url(&settings.data_dir)
        }
    };
    // Two processes on one SQLite database would each trust a cache the other's changes
    // never reach. Held until the process exits.
    let _data_dir_lock = match &settings.database_url {
        Some(_) => None,
        None => Some(lock_data_dir(&settings.data_dir)?),
    };
    let lease = settings.cluster_lease;
    let Opened {
        mut server,
        store,
        first_keys,
    } = Server::open(
        &StoreOptions {
            url,
            max_connections: settings.db_max_connections,
            acquire_timeout: settings.db_acquire_timeout,
            node_id: StoreOptions::cluster_member_id(settings.node_id.as_deref()),
        },
        server_config(&settings, max_connections)?,
        ClusterOptions {
            lease,
            heartbeat_interval: lease / 8,
            ..ClusterOptions::default()
        },
    )
    .await?;
    if let Some(first_keys) = first_keys {
        // Printed, never logged: this is the operator's one chance to copy the keys.
        println!("{}", first_keys.banner());
    }

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ServeError::Listen {
            address: settings.listen.to_string(),
            source,
        })?;
    let address = listener.local_addr().map_err(ServeError::Serve)?;
    println!("Keyward listening on http://{address}");
    println!("Dashboard: http://{address}/dashboard");
    println!("API: http://{address}/api/v1 · OpenAPI: http://{address}/openapi.json");
    tracing::info!(%address, "listening");
    if let Some(grpc_address) = settings.grpc_listen {
        let grpc = tokio::net::TcpListener::bind(grpc_address)
            .await
            .map_err(|source| ServeError::Listen {
                address: grpc_address.to_string(),
                source,
            })?;
        let grpc_address = grpc.local_addr().map_err(ServeError::Serve)?;
        println!("Envoy ext_authz (gRPC) listening on {grpc_address}");
        tracing::info!(%grpc_address, "ext_authz listening");
        server.serve_ext_authz_on(grpc);
    }
    server
        .run(listener, shutdown_signal())
        .await
        .map_err(ServeError::Serve)?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The server's settings, from the resolved settings.
fn server_config(settings: &Settings, max_connections: usize) -> Result<ServerConfig, ServeError> {
    Ok(ServerConfig {
        cors_origins: settings.cors_origins.clone(),
        max_body_bytes: settings.max_body_bytes,
        cache_max_bytes: settings.cache_max_bytes,
        request_timeout: settings.request_timeout,
        last_used_flush_interval: settings.last_used_flush_interval,
        usage: UsageSettings {
            redis: settings.redis_url.as_ref().map(|url| RedisSettings {
                url: url.expose_secret().to_owned(),
                key_prefix: settings.redis_key_prefix.clone(),
                timeout: settings.redis_timeout,
            }),
            rate_limit_fallback: settings.rate_limit_fallback,
            credit_fallback: settings.credit_fallback,
            ..UsageSettings::default()
        },
        usage_write_back_interval: settings.usage_write_back_interval,
        demo: DemoSettings {
            session_ttl: settings.demo_session_ttl,
            allow_fetches: settings.demo_allow_fetches,
            ..DemoSettings::default()
        },
        trusted_proxies: settings.trusted_proxies.clone(),
        master_key: Arc::new(master_key::load(settings).map_err(ServeError::Settings)?),
        jwks: keyward_server::tokens::jwks::JwksSettings {
            allow_private: settings.allow_private_urls,
            ..Default::default()
        },
        webhooks: keyward_server::webhooks::WebhookSettings {
            allow_private: settings.allow_private_urls,
            ..settings.webhooks.clone()
        },
        github_scanning_keys_url: settings.github_scanning_keys_url.clone(),
        portal: settings.portal.clone(),
        connections: ConnectionSettings {
            max_connections,
            header_read_timeout: settings.header_read_timeout,
            send_timeout: settings.send_timeout,
        },
        events: settings.events.clone(),
        analytics: settings.analytics.clone(),
        dashboard: settings.dashboard,
    })
}

/// Descriptors kept for what is not a client connection: database and Redis connections,
/// outbound fetches, files.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft limit on open descriptors to the hard limit (often 1024 against 500,000
/// or more under systemd); `None` if it cannot be read.
fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            None
        }
    }
}

/// Fits the connection limit under the open-file limit: past it a new connection is closed
/// with a log line, instead of every other request timing out for want of a descriptor.
fn connection_limit(settings: &Settings, open_file_limit: Option<u64>) -> usize {
    let default = ConnectionSettings::default().max_connections;
    let Some(descriptors) = open_file_limit else {
        return settings.max_connections.unwrap_or(default);
    };
    let room = usize::try_from(
        descriptors.saturating_sub(RESERVED_DESCRIPTORS + u64::from(settings.db_max_connections)),
    )
    .unwrap_or(usize::MAX)
    .max(1);
    match settings.max_connections {
        Some(asked) if asked > room => {
            tracing::warn!(
                max_connections = asked,
                open_file_limit = descriptors,
                "KEYWARD_MAX_CONNECTIONS is above what the open-file limit leaves room for; \
                 raise the limit (e.g. LimitNOFILE= under systemd)"
            );
            asked
        }
        Some(asked) => asked,
        None => {
            let limit = default.min(room);
            tracing::info!(
                max_connections = limit,
                open_file_limit = descriptors,
                "connection limit"
            );
            limit
        }
    }
}

fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, ServeError> {
    let path = data_dir.join("keyward.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| ServeError::DataDir {
            path: path.display().to_string(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServeError::DataDirInUse {
            path: data_dir.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(ServeError::DataDir {
            path: path.display().to_string(),
            source,
        }),
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: draining requests");
}
