//! The management CLI: `keyward apps …` and `keyward keys …`, talking to a running server
//! through the SDK. Tables for people, `--json` (the server's own JSON) for scripts.

use comfy_table::Table;
use keyward_proto::{
    ApiKey, ApiKeyWithSecret, App, CreateAppRequest, CreateKeyRequest, ListKeysParams, PageParams,
    PermissionQuery, RotateKeyRequest, UpdateAppRequest, UpdateKeyRequest, VerifyKeyRequest,
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
        eprintln!(
            "warning: the secret below is shown once and cannot be shown again; store it now."
        );
        if !self.json {
            println!("{}", key.secret);
        }
        self.print(key, |key| key_table([&key.key]))
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

/// There are more pages only when the server says so; a person should learn how to see them.
fn hint_next_page(connection: &Connection, next_cursor: Option<&str>) {
    if let (false, Some(cursor)) = (connection.json, next_cursor) {
        eprintln!("more keys: repeat with --cursor {cursor}, or --all");
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
            hint_next_page(connection, page.next_cursor.as_deref());
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
    };
    connection.print(&key, |key| key_table([key]))
}
