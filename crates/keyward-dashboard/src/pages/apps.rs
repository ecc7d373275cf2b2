//! Apps: list, create, view with their keys, edit, delete.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use keyward_proto::{ApiKey, App, CreateAppRequest, Page, RateLimitScheme, UpdateAppRequest};
use serde::{Deserialize, Serialize};

use crate::api::{path, ApiFailure};
use crate::error::PageError;
use crate::pages::{back_to, link, Confirmed};
use crate::view::{
    filled, render, render_with, split_list, when_or_never, Layout, Notice, Section, Submitted,
};
use crate::{Dashboard, SignedIn};

#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct Cursor {
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    layout: Layout,
    apps: Page<App>,
}

pub(crate) async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
    Query(cursor): Query<Cursor>,
) -> Result<Response, PageError> {
    let query = [("limit", Some("50".to_owned())), ("cursor", cursor.cursor)];
    let apps = dashboard
        .api
        .get(signed.key(), &path(&["apps"], Some(&query)))
        .await?;
    Ok(render(&AppsPage {
        layout: Layout::new(&signed, Section::Apps, "Apps"),
        apps,
    }))
}

/// What the app form holds, as typed.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AppForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    permissions: String,
    key_prefix: Option<String>,
    rate_limit_scheme: Option<String>,
    organization_id: Option<String>,
}

#[derive(Template)]
#[template(path = "app_new.html")]
struct NewAppPage {
    layout: Layout,
    form: AppForm,
    schemes: Vec<String>,
}

/// The slugs of the environment's rate-limit schemes, for the forms' choices; empty when the
/// root key may not read them.
pub(crate) async fn scheme_slugs(dashboard: &Dashboard, signed: &SignedIn) -> Vec<String> {
    dashboard
        .api
        .get::<Page<RateLimitScheme>>(
            signed.key(),
            &path(&["rate-limit-schemes"], Some(&[("limit", "100")])),
        )
        .await
        .map(|page| page.data.into_iter().map(|scheme| scheme.slug).collect())
        .unwrap_or_default()
}

pub(crate) async fn new(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
) -> Result<Response, PageError> {
    let schemes = scheme_slugs(&dashboard, &signed).await;
    Ok(render(&NewAppPage {
        layout: Layout::new(&signed, Section::Apps, "New app"),
        form: AppForm::default(),
        schemes,
    }))
}

pub(crate) async fn create(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { signed, form }: Submitted<AppForm>,
) -> Result<Response, PageError> {
    let request = CreateAppRequest {
        name: form.name.trim().to_owned(),
        slug: form.slug.trim().to_owned(),
        permissions: split_list(&form.permissions),
        rate_limit_scheme: filled(&form.rate_limit_scheme),
        organization_id: filled(&form.organization_id),
        key_prefix: filled(&form.key_prefix),
    };
    match dashboard
        .api
        .post::<App>(signed.key(), &path(&["apps"], None::<&()>), &request)
        .await
    {
        Ok(app) => Ok(back_to(&link(&["apps", &app.slug]))),
        Err(failure) => {
            let refusal = refusal(failure)?;
            let schemes = scheme_slugs(&dashboard, &signed).await;
            Ok(render_with(
                refusal.status,
                &NewAppPage {
                    layout: Layout::new(&signed, Section::Apps, "New app")
                        .with_notice(Notice::error(refusal.message)),
                    form,
                    schemes,
                },
            ))
        }
    }
}

/// A refusal a form shows next to what was typed; a refused root key ends the session.
pub(crate) fn refusal(failure: ApiFailure) -> Result<ApiFailure, PageError> {
    if failure.is_credential_refusal() {
        Err(failure.into())
    } else {
        Ok(failure)
    }
}

/// The key list's filters, as the address carries them.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct KeyFilters {
    search: Option<String>,
    status: Option<String>,
    owner_user_id: Option<String>,
    organization_id: Option<String>,
    cursor: Option<String>,
}

impl KeyFilters {
    /// Empty fields are no filter.
    fn cleaned(self) -> Self {
        Self {
            search: filled(&self.search),
            status: filled(&self.status),
            owner_user_id: filled(&self.owner_user_id),
            organization_id: filled(&self.organization_id),
            cursor: filled(&self.cursor),
        }
    }

    /// The address of the next page, with the same filters.
    fn next_page(&self, slug: &str, cursor: &str) -> String {
        let next = KeyFilters {
            search: self.search.clone(),
            status: self.status.clone(),
            owner_user_id: self.owner_user_id.clone(),
            organization_id: self.organization_id.clone(),
            cursor: Some(cursor.to_owned()),
        };
        format!(
            "{}?{}",
            link(&["apps", slug]),
            serde_html_form::to_string(&next).unwrap_or_default()
        )
    }

    fn is_filtered(&self) -> bool {
        self.search.is_some()
            || self.status.is_some()
            || self.owner_user_id.is_some()
            || self.organization_id.is_some()
    }
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    layout: Layout,
    app: App,
    keys: Page<ApiKey>,
    filters: KeyFilters,
    schemes: Vec<String>,
}

impl AppPage {
    fn last_used(key: &ApiKey) -> String {
        when_or_never(&key.last_used_at, "never")
    }
}

pub(crate) async fn show(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
    Path(slug): Path<String>,
    Query(filters): Query<KeyFilters>,
) -> Result<Response, PageError> {
    app_page(&dashboard, signed, &slug, filters.cleaned(), None).await
}

async fn app_page(
    dashboard: &Dashboard,
    signed: SignedIn,
    slug: &str,
    filters: KeyFilters,
    notice: Option<Notice>,
) -> Result<Response, PageError> {
    let api = &dashboard.api;
    let app: App = api
        .get(signed.key(), &path(&["apps", slug], None::<&()>))
        .await?;
    let keys_path = path(&["apps", slug, "keys"], Some(&filters));
    let (keys, schemes) = tokio::join!(
        api.get::<Page<ApiKey>>(signed.key(), &keys_path),
        scheme_slugs(dashboard, &signed)
    );
    let (keys, notice) = match keys {
        Ok(keys) => (keys, notice),
        Err(failure) => {
            let failure = refusal(failure)?;
            (
                Page {
                    data: Vec::new(),
                    next_cursor: None,
                },
                Notice::error(failure.message),
            )
        }
    };
    let status = if notice.as_ref().is_some_and(|notice| notice.error) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let title = format!("App {}", app.name);
    Ok(render_with(
        status,
        &AppPage {
            layout: Layout::new(&signed, Section::Apps, title).with_notice(notice),
            app,
            keys,
            filters,
            schemes,
        },
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct AppUpdateForm {
    name: String,
    #[serde(default)]
    permissions: String,
    rate_limit_scheme: Option<String>,
}

pub(crate) async fn update(
    State(dashboard): State<Arc<Dashboard>>,
    Path(slug): Path<String>,
    Submitted { signed, form }: Submitted<AppUpdateForm>,
) -> Result<Response, PageError> {
    let request = UpdateAppRequest {
        name: Some(form.name.trim().to_owned()),
        permissions: Some(split_list(&form.permissions)),
        rate_limit_scheme: Some(filled(&form.rate_limit_scheme)),
    };
    let result = dashboard
        .api
        .call::<App>(
            signed.key(),
            Method::PATCH,
            &path(&["apps", &slug], None::<&()>),
            Some(&request),
        )
        .await;
    match result {
        Ok(app) => Ok(back_to(&link(&["apps", &app.slug]))),
        Err(failure) => {
            let failure = refusal(failure)?;
            app_page(
                &dashboard,
                signed,
                &slug,
                KeyFilters::default(),
                Notice::error(failure.message),
            )
            .await
        }
    }
}

pub(crate) async fn delete(
    State(dashboard): State<Arc<Dashboard>>,
    Path(slug): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .delete(signed.key(), &path(&["apps", &slug], None::<&()>))
        .await?;
    Ok(back_to("/dashboard/apps"))
}
