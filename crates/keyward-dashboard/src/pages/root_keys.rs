//! Root keys: list with scopes, create (the secret shown once), revoke.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use keyward_core::scope::Scope;
use keyward_proto::{CreateRootKeyRequest, Page, RootKey, RootKeyWithSecret};
use serde::Deserialize;

use crate::api::path;
use crate::error::PageError;
use crate::pages::apps::refusal;
use crate::pages::{back_to, list_page, Confirmed, RevealPage, Revealed};
use crate::view::{filled, render, split_list, when, Layout, Notice, Section, Submitted};
use crate::{Dashboard, SignedIn};

#[derive(Template)]
#[template(path = "root_keys.html")]
struct RootKeysPage {
    layout: Layout,
    keys: Page<RootKey>,
}

impl RootKeysPage {
    /// Every scope a root key may carry, as choices.
    fn scopes(&self) -> impl Iterator<Item = &'static str> {
        Scope::EVERY.iter().map(|scope| scope.as_str())
    }

    fn created(key: &RootKey) -> String {
        when(&key.created_at)
    }
}

pub(crate) async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
) -> Result<Response, PageError> {
    page(&dashboard, signed, None).await
}

async fn page(
    dashboard: &Dashboard,
    signed: SignedIn,
    notice: Option<Notice>,
) -> Result<Response, PageError> {
    list_page(
        dashboard,
        signed,
        "root-keys",
        notice,
        |layout, keys| RootKeysPage { layout, keys },
        Section::RootKeys,
        "Root keys",
    )
    .await
}

#[derive(Debug, Deserialize)]
pub(crate) struct RootKeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    rate_limit_scheme: Option<String>,
}

pub(crate) async fn create(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { signed, form }: Submitted<RootKeyForm>,
) -> Result<Response, PageError> {
    let request = CreateRootKeyRequest {
        name: form.name.trim().to_owned(),
        scopes: form
            .scopes
            .iter()
            .flat_map(|scope| split_list(scope))
            .collect(),
        rate_limit_scheme: filled(&form.rate_limit_scheme),
    };
    let created = dashboard
        .api
        .post::<RootKeyWithSecret>(signed.key(), &path(&["root-keys"], None::<&()>), &request)
        .await;
    match created {
        Ok(created) => Ok(render(&RevealPage {
            layout: Layout::new(&signed, Section::RootKeys, "Your new root key"),
            what: format!("Root key “{}” created", created.key.name),
            next: "/dashboard/root-keys".to_owned(),
            secrets: vec![Revealed {
                label: "Root key",
                value: created.secret,
                multiline: false,
            }],
        })),
        Err(failure) => {
            let failure = refusal(failure)?;
            page(&dashboard, signed, Notice::error(failure.message)).await
        }
    }
}

pub(crate) async fn revoke(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .post::<RootKey>(
            signed.key(),
            &path(&["root-keys", &id, "revoke"], None::<&()>),
            &serde_json::json!({}),
        )
        .await?;
    Ok(back_to("/dashboard/root-keys"))
}
