//! The management CLI: `keyward apps …`, `keyward keys …` and `keyward webhooks …`, talking
//! to a running server through the SDK. Tables for people, `--json` (the server's own JSON)
//! for scripts.

use comfy_table::Table;
use keyward_proto::{
    ApiKey, ApiKeyWithSecret, App, CreateAppRequest, CreateKeyRequest,
    CreateWebhookEndpointRequest, ListKeysParams, ListWebhookDeliveriesParams, PageParams,
    PermissionQuery, ReportLeakRequest, RotateKeyRequest, UpdateAppRequest, UpdateKeyRequest,
    UpdateWebhookEndpointRequest, VerifyKeyRequest, WebhookDelivery, WebhookDeliveryQueued,
    WebhookEndpoint, WebhookEndpointWithSecret,
};
use keyward_sdk::Client;
use serde::Serialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Which server, as whom, and how to print.
#[derive(Debug, clap::Args)]
pub(crate) struct Connection {
    /// The server's address
    #[arg(
        long,
        env = "KEYWARD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) url: String,
    /// A root key (`sk_live_…` or `sk_test_…`)
    #[arg(long, env = "KEYWARD_API_KEY", global = true, hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// Print the server's JSON instead of a table
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AppsCommand {
    /// Create an app
    Create {
        #[arg(long)]
        name: String,
        /// Lowercase letters, digits and dashes; unique per environment
        #[arg(long)]
        slug: String,
        /// Permissions its keys may hold, comma-separated
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        /// Every key of the app belongs to this organization
        #[arg(long)]
        organization: Option<String>,
        /// The secrets' prefix, e.g. `acme` for `acme_live_…` [default: kw]
        #[arg(long)]
        key_prefix: Option<String>,
        /// The rate-limit scheme every key of the app is limited by
        #[arg(long)]
        rate_limit_scheme: Option<String>,
    },
    /// List apps
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show an app
    Get { slug: String },
    /// Rename an app or change its permissions
    Update {
        slug: String,
        #[arg(long)]
        name: Option<String>,
        /// Replaces the app's permissions, comma-separated
        #[arg(long, value_delimiter = ',')]
        permissions: Option<Vec<String>>,
    },
    /// Delete an app, revoking its keys
    Delete { slug: String },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Issue a key; its secret is printed once
    Create {
        /// The app's slug
        #[arg(long)]
        app: String,
        #[arg(long)]
        name: String,
        /// The customer's user id
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        organization: Option<String>,
        /// A subset of the app's permissions, comma-separated
        #[arg(long, value_delimiter = ',')]
        permissions: Option<Vec<String>>,
        /// A JSON object, e.g. '{"plan":"pro"}'
        #[arg(long)]
        meta: Option<String>,
        /// RFC 3339, e.g. 2030-01-01T00:00:00Z
        #[arg(long)]
        expires_at: Option<String>,
        /// Credits the key may spend; each verification costs one by default
        #[arg(long)]
        credits: Option<i64>,
        /// Overrides the app's rate-limit scheme
        #[arg(long)]
        rate_limit_scheme: Option<String>,
    },
    /// List an app's keys (never their secrets)
    List {
        /// The app's slug
        #[arg(long)]
        app: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        organization: Option<String>,
        /// active, disabled, expired or revoked
        #[arg(long)]
        status: Option<String>,
        /// Only keys whose name contains this, whose start begins with it, or with this id
        #[arg(long)]
        search: Option<String>,
        /// Keys per page
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
        /// Follow `next_cursor` to the last page
        #[arg(long)]
        all: bool,
    },
    /// Show a key's metadata
    Get { id: String },
    /// Change a key's metadata; options left out are kept
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// Replaces the key's permissions, comma-separated
        #[arg(long, value_delimiter = ',')]
        permissions: Option<Vec<String>>,
        /// Replaces the key's meta with this JSON object
        #[arg(long)]
        meta: Option<String>,
        /// RFC 3339, e.g. 2030-01-01T00:00:00Z
        #[arg(long)]
        expires_at: Option<String>,
        /// Let the key verify again
        #[arg(long, alias = "enabled", conflicts_with = "disable")]
        enable: bool,
        /// Refuse the key (KEY_DISABLED) until it is enabled again
        #[arg(long, alias = "disabled")]
        disable: bool,
    },
    /// Revoke a key at once, for good
    Revoke { id: String },
    /// Give a key a new secret; it is printed once
    Rotate {
        id: String,
        /// Keep the previous secret working this long (at most 30 days)
        #[arg(long)]
        expire_previous_in_seconds: Option<u64>,
    },
    /// Revoke and delete a key
    Delete { id: String },
    /// Verify a key, optionally against a permission query
    Verify {
        key: String,
        /// e.g. "read:data AND (write:data OR admin)"
        #[arg(long)]
        permissions: Option<String>,
    },
    /// Report a key found in public: it is revoked, disabled or only notified about, as the
    /// environment's leaked_key_action says
    ReportLeak {
        /// The secret found
        key: String,
        /// Where it was found, e.g. the URL of a commit (`--url` is the server's address)
        #[arg(long, value_name = "URL")]
        found_at: Option<String>,
        /// Who found it, e.g. trufflehog
        #[arg(long)]
        source: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum WebhooksCommand {
    /// List webhook endpoints (never their secrets)
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
        /// Follow `next_cursor` to the last page
        #[arg(long)]
        all: bool,
    },
    /// Add an endpoint; its signing secret is printed once
    Create {
        /// Where deliveries are POSTed, e.g. https://api.example.com/keyward-hook
        endpoint_url: String,
        /// Event types it receives, comma-separated [default: *, every event]
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        #[arg(long)]
        description: Option<String>,
        /// Create it turned off
        #[arg(long)]
        disabled: bool,
    },
    /// Show an endpoint
    Get { id: String },
    /// Change an endpoint; options left out are kept
    Update {
        id: String,
        /// Where deliveries are POSTed from now on (`--url` is the server's address)
        #[arg(long, value_name = "URL")]
        endpoint_url: Option<String>,
        /// Replaces its event types, comma-separated (* for every event)
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        #[arg(long)]
        description: Option<String>,
        /// Turn it back on; its pending deliveries resume
        #[arg(long, alias = "enabled", conflicts_with = "disable")]
        enable: bool,
        /// Stop delivering to it until it is enabled again
        #[arg(long, alias = "disabled")]
        disable: bool,
    },
    /// Delete an endpoint, with its pending deliveries and its log
    Delete { id: String },
    /// Give an endpoint a new signing secret, printed once; the previous one keeps signing
    /// for 24 hours
    RotateSecret { id: String },
    /// List an endpoint's deliveries, newest first
    Deliveries {
        /// The endpoint's id
        id: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
        /// Follow `next_cursor` to the last page
        #[arg(long)]
        all: bool,
    },
    /// Send a delivery again now, with the same webhook-id
    Retry {
        /// The endpoint's id
        id: String,
        /// The delivery's id (whd_…)
        delivery_id: String,
    },
    /// Send a webhook.test event to an endpoint
    Test { id: String },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error("no root key: pass --api-key or set KEYWARD_API_KEY")]
    MissingApiKey,
    #[error("{0}")]
    BadArgument(String),
    #[error(transparent)]
    Api(#[from] keyward_sdk::Error),
    #[error("cannot print the result: {0}")]
    Output(#[from] serde_json::Error),
}

impl Connection {
    pub(crate) fn client(&self) -> Result<Client, CliError> {
        let api_key = self.api_key.as_deref().filter(|key| !key.is_empty());
        let api_key = api_key.ok_or(CliError::MissingApiKey)?;
        Ok(Client::builder()
            .base_url(&self.url)
            .api_key(api_key)
            .build()?)
    }

    /// The server's JSON when asked for, otherwise the table `render` makes of it.
    fn print<T: Serialize>(
        &self,
        value: &T,
        render: impl FnOnce(&T) -> Table,
    ) -> Result<(), CliError> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", render(value));
        }
        Ok(())
    }

    /// A key's secret exists only in this answer, so people get it on a line of its own, above
    /// the table, where it is easy to copy.
    fn print_with_secret(&self, key: &ApiKeyWithSecret) -> Result<(), CliError> {
        self.print_secret_once(&key.secret, key, |key| key_table([&key.key]))
    }

    /// `secret` on a line of its own above the table (in the JSON it is a field already),
    /// with a warning that it cannot be shown again.
    fn print_secret_once<T: Serialize>(
        &self,
        secret: &str,
        value: &T,
        render: impl FnOnce(&T) -> Table,
    ) -> Result<(), CliError> {
        eprintln!(
            "warning: the secret below is shown once and cannot be shown again; store it now."
        );
        if !self.json {
            println!("{secret}");
        }
        self.print(value, render)
    }
}

fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Table {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    table.set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    table
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

fn timestamp(at: Option<OffsetDateTime>, absent: &str) -> String {
    at.map_or_else(
        || absent.to_owned(),
        |at| at.format(&Rfc3339).unwrap_or_else(|_| at.to_string()),
    )
}

fn app_table<'a>(apps: impl IntoIterator<Item = &'a App>) -> Table {
    let header = [
        "slug",
        "name",
        "id",
        "prefix",
        "permissions",
        "organization",
    ];
    table(
        &header,
        apps.into_iter().map(|app| {
            vec![
                app.slug.clone(),
                app.name.clone(),
                app.id.clone(),
                app.key_prefix.clone(),
                app.permissions.join(","),
                or_dash(app.organization_id.as_deref()),
            ]
        }),
    )
}

fn key_table<'a>(keys: impl IntoIterator<Item = &'a ApiKey>) -> Table {
    let header = [
        "id",
        "name",
        "start",
        "status",
        "owner",
        "permissions",
        "expires",
        "last used",
    ];
    table(
        &header,
        keys.into_iter().map(|key| {
            vec![
                key.id.clone(),
                key.name.clone(),
                key.start.clone(),
                key.status.clone(),
                or_dash(key.owner_user_id.as_deref()),
                key.permissions.join(","),
                timestamp(key.expires_at, "never"),
                timestamp(key.last_used_at, "never"),
            ]
        }),
    )
}

fn parse_meta(text: Option<String>) -> Result<Option<Map<String, Value>>, CliError> {
    let parse = |text: String| serde_json::from_str(&text);
    text.map(parse)
        .transpose()
        .map_err(|error| CliError::BadArgument(format!("--meta is not a JSON object: {error}")))
}

fn parse_timestamp(text: Option<String>) -> Result<Option<OffsetDateTime>, CliError> {
    let parse = |text: String| OffsetDateTime::parse(&text, &Rfc3339);
    text.map(parse)
        .transpose()
        .map_err(|error| CliError::BadArgument(format!("--expires-at is not RFC 3339: {error}")))
}

fn webhook_endpoint_table<'a>(endpoints: impl IntoIterator<Item = &'a WebhookEndpoint>) -> Table {
    let header = ["id", "url", "events", "enabled", "description"];
    table(
        &header,
        endpoints.into_iter().map(|endpoint| {
            let enabled = match (&endpoint.disabled_reason, endpoint.enabled) {
                (Some(reason), false) => format!("false ({reason})"),
                (_, enabled) => enabled.to_string(),
            };
            vec![
                endpoint.id.clone(),
                endpoint.url.clone(),
                endpoint.events.join(","),
                enabled,
                endpoint.description.clone(),
            ]
        }),
    )
}

fn webhook_delivery_table<'a>(deliveries: impl IntoIterator<Item = &'a WebhookDelivery>) -> Table {
    let header = [
        "id",
        "event",
        "status",
        "attempts",
        "last answer",
        "next attempt",
        "created",
    ];
    table(
        &header,
        deliveries.into_iter().map(|delivery| {
            let last = delivery.history.last().map_or_else(
                || "-".to_owned(),
                |attempt| match (attempt.status, &attempt.error) {
                    (Some(status), _) => format!("HTTP {status}"),
                    (None, Some(error)) => error.clone(),
                    (None, None) => "-".to_owned(),
                },
            );
            vec![
                delivery.id.clone(),
                delivery.event_type.clone(),
                delivery.status.clone(),
                delivery.attempts.to_string(),
                last,
                timestamp(delivery.next_attempt_at, "-"),
                timestamp(Some(delivery.created_at), "-"),
            ]
        }),
    )
}

fn queued_table(queued: &WebhookDeliveryQueued) -> Table {
    table(&["queued delivery"], [vec![queued.delivery_id.clone()]])
}

/// There are more pages only when the server says so; a person should learn how to see them.
fn hint_next_page(connection: &Connection, what: &str, next_cursor: Option<&str>) {
    if let (false, Some(cursor)) = (connection.json, next_cursor) {
        eprintln!("more {what}: repeat with --cursor {cursor}, or --all");
    }
}

pub(crate) async fn run_apps(
    connection: &Connection,
    command: AppsCommand,
) -> Result<(), CliError> {
    let client = connection.client()?;
    let app = match command {
        AppsCommand::Create {
            name,
            slug,
            permissions,
            organization,
            key_prefix,
            rate_limit_scheme,
        } => {
            let organization_id = organization;
            let request = CreateAppRequest {
                name,
                slug,
                permissions,
                organization_id,
                key_prefix,
                rate_limit_scheme,
            };
            client.create_app(&request).await?
        }
        AppsCommand::List { limit, cursor } => {
            let page = client.list_apps(&PageParams { limit, cursor }).await?;
            return connection.print(&page, |page| app_table(&page.data));
        }
        AppsCommand::Get { slug } => client.get_app(&slug).await?,
        AppsCommand::Update {
            slug,
            name,
            permissions,
        } => {
            client
                .update_app(
                    &slug,
                    &UpdateAppRequest {
                        name,
                        permissions,
                        ..UpdateAppRequest::default()
                    },
                )
                .await?
        }
        AppsCommand::Delete { slug } => client.delete_app(&slug).await?,
    };
    connection.print(&app, |app| app_table([app]))
}

pub(crate) async fn run_keys(
    connection: &Connection,
    command: KeysCommand,
) -> Result<(), CliError> {
    let client = connection.client()?;
    let key = match command {
        KeysCommand::Create {
            app,
            name,
            owner,
            organization,
            permissions,
            meta,
            expires_at,
            credits,
            rate_limit_scheme,
        } => {
            let request = CreateKeyRequest {
                name,
                owner_user_id: owner,
                organization_id: organization,
                permissions,
                meta: parse_meta(meta)?,
                expires_at: parse_timestamp(expires_at)?,
                credits: credits.map(|remaining| keyward_proto::Credits {
                    remaining,
                    refill: None,
                }),
                rate_limit_scheme,
                ..CreateKeyRequest::default()
            };
            return connection.print_with_secret(&client.create_key(&app, &request).await?);
        }
        KeysCommand::List {
            app,
            owner,
            organization,
            status,
            search,
            limit,
            cursor,
            all,
        } => {
            let mut params = ListKeysParams {
                limit,
                cursor,
                owner_user_id: owner,
                organization_id: organization,
                status,
                search,
            };
            let mut page = client.list_keys(&app, &params).await?;
            while all && page.next_cursor.is_some() {
                params.cursor = page.next_cursor.take();
                let next = client.list_keys(&app, &params).await?;
                page.data.extend(next.data);
                page.next_cursor = next.next_cursor;
            }
            connection.print(&page, |page| key_table(&page.data))?;
            hint_next_page(connection, "keys", page.next_cursor.as_deref());
            return Ok(());
        }
        KeysCommand::Get { id } => client.get_key(&id).await?,
        KeysCommand::Update {
            id,
            name,
            owner,
            permissions,
            meta,
            expires_at,
            enable,
            disable,
        } => {
            let request = UpdateKeyRequest {
                name,
                owner_user_id: owner.map(Some),
                permissions,
                meta: parse_meta(meta)?,
                expires_at: parse_timestamp(expires_at)?.map(Some),
                // Neither flag means "keep"; clap refuses both.
                enabled: (enable || disable).then_some(enable),
                ..UpdateKeyRequest::default()
            };
            client.update_key(&id, &request).await?
        }
        KeysCommand::Revoke { id } => client.revoke_key(&id).await?,
        KeysCommand::Rotate {
            id,
            expire_previous_in_seconds,
        } => {
            let request = RotateKeyRequest {
                expire_previous_in_seconds,
            };
            return connection.print_with_secret(&client.rotate_key(&id, &request).await?);
        }
        KeysCommand::Delete { id } => client.delete_key(&id).await?,
        KeysCommand::Verify { key, permissions } => {
            let request = VerifyKeyRequest {
                key,
                permissions: permissions.map(PermissionQuery::Expression),
                ..VerifyKeyRequest::default()
            };
            let verdict = client.verify_key(&request).await?;
            return connection.print(&verdict, |verdict| {
                let row = vec![
                    verdict.valid.to_string(),
                    verdict.code.clone(),
                    verdict.status.to_string(),
                    or_dash(verdict.key_id.as_deref()),
                    or_dash(verdict.app.as_deref()),
                ];
                table(&["valid", "code", "status", "key", "app"], [row])
            });
        }
        KeysCommand::ReportLeak {
            key,
            found_at,
            source,
        } => {
            let request = ReportLeakRequest {
                key,
                url: found_at,
                source,
            };
            let answer = client.report_leak(&request).await?;
            return connection.print(&answer, |answer| {
                let row = vec![answer.result.clone(), or_dash(answer.key_id.as_deref())];
                table(&["result", "key"], [row])
            });
        }
    };
    connection.print(&key, |key| key_table([key]))
}

pub(crate) async fn run_webhooks(
    connection: &Connection,
    command: WebhooksCommand,
) -> Result<(), CliError> {
    let client = connection.client()?;
    let print_with_secret = |created: &WebhookEndpointWithSecret| {
        connection.print_secret_once(&created.secret, created, |created| {
            webhook_endpoint_table([&created.endpoint])
        })
    };
    let endpoint = match command {
        WebhooksCommand::List { limit, cursor, all } => {
            let mut params = PageParams { limit, cursor };
            let mut page = client.list_webhook_endpoints(&params).await?;
            while all && page.next_cursor.is_some() {
                params.cursor = page.next_cursor.take();
                let next = client.list_webhook_endpoints(&params).await?;
                page.data.extend(next.data);
                page.next_cursor = next.next_cursor;
            }
            connection.print(&page, |page| webhook_endpoint_table(&page.data))?;
            hint_next_page(connection, "endpoints", page.next_cursor.as_deref());
            return Ok(());
        }
        WebhooksCommand::Create {
            endpoint_url,
            events,
            description,
            disabled,
        } => {
            let request = CreateWebhookEndpointRequest {
                url: endpoint_url,
                events,
                description,
                enabled: disabled.then_some(false),
            };
            return print_with_secret(&client.create_webhook_endpoint(&request).await?);
        }
        WebhooksCommand::Get { id } => client.get_webhook_endpoint(&id).await?,
        WebhooksCommand::Update {
            id,
            endpoint_url,
            events,
            description,
            enable,
            disable,
        } => {
            let request = UpdateWebhookEndpointRequest {
                url: endpoint_url,
                events,
                description,
                // Neither flag means "keep"; clap refuses both.
                enabled: (enable || disable).then_some(enable),
            };
            client.update_webhook_endpoint(&id, &request).await?
        }
        WebhooksCommand::Delete { id } => {
            client.delete_webhook_endpoint(&id).await?;
            // The server answers 204: with --json there is nothing to print.
            if !connection.json {
                println!("deleted {id}");
            }
            return Ok(());
        }
        WebhooksCommand::RotateSecret { id } => {
            return print_with_secret(&client.rotate_webhook_secret(&id).await?);
        }
        WebhooksCommand::Deliveries {
            id,
            limit,
            cursor,
            all,
        } => {
            let mut params = ListWebhookDeliveriesParams { limit, cursor };
            let mut page = client.list_webhook_deliveries(&id, &params).await?;
            while all && page.next_cursor.is_some() {
                params.cursor = page.next_cursor.take();
                let next = client.list_webhook_deliveries(&id, &params).await?;
                page.data.extend(next.data);
                page.next_cursor = next.next_cursor;
            }
            connection.print(&page, |page| webhook_delivery_table(&page.data))?;
            hint_next_page(connection, "deliveries", page.next_cursor.as_deref());
            return Ok(());
        }
        WebhooksCommand::Retry { id, delivery_id } => {
            let queued = client.retry_webhook_delivery(&id, &delivery_id).await?;
            return connection.print(&queued, queued_table);
        }
        WebhooksCommand::Test { id } => {
            let queued = client.test_webhook_endpoint(&id).await?;
            return connection.print(&queued, queued_table);
        }
    };
    connection.print(&endpoint, |endpoint| webhook_endpoint_table([endpoint]))
}
