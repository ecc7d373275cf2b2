//! The management CLI: `keyward apps …` and `keyward keys …`, talking to a running server
//! through the SDK. Tables for people, `--json` for scripts.

use comfy_table::Table;
use keyward_proto::{
    ApiKey, ApiKeyWithSecret, App, CreateAppRequest, CreateKeyRequest, ListKeysParams, PageParams,
    PermissionQuery, RotateKeyRequest, UpdateAppRequest, UpdateKeyRequest, VerifyKeyRequest,
};
use keyward_sdk::Client;
use serde::Serialize;

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
    url: String,
    /// A root key (`sk_live_…` or `sk_test_…`)
    #[arg(long, env = "KEYWARD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Print the server's JSON instead of a table
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AppsCommand {
    /// Create an app
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        slug: String,
        /// Permissions its keys may hold, comma-separated
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        #[arg(long)]
        organization: Option<String>,
        /// The secrets' prefix, e.g. `acme` for `acme_live_…` [default: kw]
        #[arg(long)]
        key_prefix: Option<String>,
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
        #[arg(long)]
        app: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        organization: Option<String>,
        #[arg(long, value_delimiter = ',')]
        permissions: Option<Vec<String>>,
        /// A JSON object
        #[arg(long)]
        meta: Option<String>,
        /// RFC 3339, e.g. 2030-01-01T00:00:00Z
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List an app's keys (never their secrets)
    List {
        #[arg(long)]
        app: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        organization: Option<String>,
        /// active, disabled, expired or revoked
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
        /// Follow `next_cursor` to the end
        #[arg(long)]
        all: bool,
    },
    /// Show a key's metadata
    Get { id: String },
    /// Change a key's metadata
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_delimiter = ',')]
        permissions: Option<Vec<String>>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Revoke a key at once
    Revoke { id: String },
    /// Give a key a new secret; it is printed once
    Rotate {
        id: String,
        /// Keep the previous secret working this long
        #[arg(long)]
        expire_previous_in_seconds: Option<u64>,
    },
    /// Delete a key
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
    fn client(&self) -> Result<Client, CliError> {
        let api_key = self.api_key.as_deref().ok_or(CliError::MissingApiKey)?;
        Ok(Client::builder()
            .base_url(&self.url)
            .api_key(api_key)
            .build()?)
    }

    /// JSON when asked for, otherwise the table `render` makes.
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

fn optional(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_owned())
}

fn app_rows<'a>(apps: impl IntoIterator<Item = &'a App>) -> Table {
    table(
        &[
            "slug",
            "name",
            "id",
            "prefix",
            "permissions",
            "organization",
        ],
        apps.into_iter().map(|app| {
            vec![
                app.slug.clone(),
                app.name.clone(),
                app.id.clone(),
                app.key_prefix.clone(),
                app.permissions.join(","),
                optional(&app.organization_id),
            ]
        }),
    )
}

fn key_rows<'a>(keys: impl IntoIterator<Item = &'a ApiKey>) -> Table {
    table(
        &[
            "id",
            "name",
            "start",
            "status",
            "owner",
            "permissions",
            "last used",
        ],
        keys.into_iter().map(|key| {
            vec![
                key.id.clone(),
                key.name.clone(),
                key.start.clone(),
                key.status.clone(),
                optional(&key.owner_user_id),
                key.permissions.join(","),
                key.last_used_at
                    .map_or_else(|| "never".to_owned(), |at| at.to_string()),
            ]
        }),
    )
}

/// Prints a new secret the one time it exists.
fn print_with_secret(connection: &Connection, key: &ApiKeyWithSecret) -> Result<(), CliError> {
    if !connection.json {
        eprintln!("The secret is shown once. Store it now; it cannot be shown again.");
        println!("{}", key.secret);
    }
    connection.print(key, |key| key_rows([&key.key]))
}

pub(crate) async fn run_apps(
    connection: &Connection,
    command: AppsCommand,
) -> Result<(), CliError> {
    let client = connection.client()?;
    match command {
        AppsCommand::Create {
            name,
            slug,
            permissions,
            organization,
            key_prefix,
        } => {
            let request = CreateAppRequest {
                name,
                slug,
                permissions,
                organization_id: organization,
                key_prefix,
            };
            let app = client.create_app(&request).await?;
            connection.print(&app, |app| app_rows([app]))
        }
        AppsCommand::List { limit, cursor } => {
            let page = client.list_apps(&PageParams { limit, cursor }).await?;
            connection.print(&page, |page| app_rows(&page.data))
        }
        AppsCommand::Get { slug } => {
            let app = client.get_app(&slug).await?;
            connection.print(&app, |app| app_rows([app]))
        }
        AppsCommand::Update {
            slug,
            name,
            permissions,
        } => {
            let app = client
                .update_app(&slug, &UpdateAppRequest { name, permissions })
                .await?;
            connection.print(&app, |app| app_rows([app]))
        }
        AppsCommand::Delete { slug } => {
            let app = client.delete_app(&slug).await?;
            connection.print(&app, |app| app_rows([app]))
        }
    }
}

pub(crate) async fn run_keys(
    connection: &Connection,
    command: KeysCommand,
) -> Result<(), CliError> {
    let client = connection.client()?;
    match command {
        KeysCommand::Create {
            app,
            name,
            owner,
            organization,
            permissions,
            meta,
            expires_at,
        } => {
            let meta = meta
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|error| {
                    CliError::BadArgument(format!("--meta is not a JSON object: {error}"))
                })?;
            let expires_at = expires_at
                .map(|text| {
                    time::OffsetDateTime::parse(
                        &text,
                        &time::format_description::well_known::Rfc3339,
                    )
                })
                .transpose()
                .map_err(|error| {
                    CliError::BadArgument(format!("--expires-at is not RFC 3339: {error}"))
                })?;
            let request = CreateKeyRequest {
                name,
                owner_user_id: owner,
                organization_id: organization,
                permissions,
                meta,
                expires_at,
            };
            let key = client.create_key(&app, &request).await?;
            print_with_secret(connection, &key)
        }
        KeysCommand::List {
            app,
            owner,
            organization,
            status,
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
            };
            let mut page = client.list_keys(&app, &params).await?;
            while all && page.next_cursor.is_some() {
                params.cursor = page.next_cursor.take();
                let next = client.list_keys(&app, &params).await?;
                page.data.extend(next.data);
                page.next_cursor = next.next_cursor;
            }
            connection.print(&page, |page| key_rows(&page.data))
        }
        KeysCommand::Get { id } => {
            let key = client.get_key(&id).await?;
            connection.print(&key, |key| key_rows([key]))
        }
        KeysCommand::Update {
            id,
            name,
            permissions,
            enable,
            disable,
        } => {
            let request = UpdateKeyRequest {
                name,
                permissions,
                enabled: (enable || disable).then_some(enable),
                ..UpdateKeyRequest::default()
            };
            let key = client.update_key(&id, &request).await?;
            connection.print(&key, |key| key_rows([key]))
        }
        KeysCommand::Revoke { id } => {
            let key = client.revoke_key(&id).await?;
            connection.print(&key, |key| key_rows([key]))
        }
        KeysCommand::Rotate {
            id,
            expire_previous_in_seconds,
        } => {
            let request = RotateKeyRequest {
                expire_previous_in_seconds,
            };
            let key = client.rotate_key(&id, &request).await?;
            print_with_secret(connection, &key)
        }
        KeysCommand::Delete { id } => {
            let key = client.delete_key(&id).await?;
            connection.print(&key, |key| key_rows([key]))
        }
        KeysCommand::Verify { key, permissions } => {
            let request = VerifyKeyRequest {
                key,
                permissions: permissions.map(PermissionQuery::Expression),
                ..VerifyKeyRequest::default()
            };
            let verdict = client.verify_key(&request).await?;
            connection.print(&verdict, |verdict| {
                table(
                    &["valid", "code", "status", "key", "app"],
                    [vec![
                        verdict.valid.to_string(),
                        verdict.code.clone(),
                        verdict.status.to_string(),
                        optional(&verdict.key_id),
                        optional(&verdict.app),
                    ]],
                )
            })
        }
    }
}
