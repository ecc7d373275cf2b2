//! One module per part of the dashboard. Handlers are thin: read the session and the form,
//! call the API, render a template or redirect.

pub(crate) mod apps;
pub(crate) mod credentials;
pub(crate) mod keys;
pub(crate) mod organizations;
pub(crate) mod overview;
pub(crate) mod root_keys;
pub(crate) mod schemes;
pub(crate) mod settings;
pub(crate) mod sign_in;
pub(crate) mod webhooks;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::api::path;
use crate::error::PageError;
use crate::view::{render_with, Layout, Notice, Section};
use crate::{Dashboard, SignedIn};

/// A list page: the records, or what went wrong with a form on it.
pub(crate) async fn list_page<T, Page>(
    dashboard: &Dashboard,
    signed: SignedIn,
    resource: &str,
    notice: Option<Notice>,
    page: impl FnOnce(Layout, keyward_proto::Page<T>) -> Page,
    section: Section,
    title: &str,
) -> Result<Response, PageError>
where
    T: serde::de::DeserializeOwned,
    Page: Template,
{
    let records = dashboard
        .api
        .get(signed.key(), &path(&[resource], Some(&[("limit", "100")])))
        .await?;
    let status = if notice.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let layout = Layout::new(&signed, section, title).with_notice(notice);
    Ok(render_with(status, &page(layout, records)))
}

pub(crate) async fn not_found() -> PageError {
    PageError::NotFound
}

/// A form that carries nothing but its CSRF token (a confirmed action).
#[derive(Debug, Deserialize)]
pub(crate) struct Confirmed {}

/// One secret revealed once, with a copy button.
pub(crate) struct Revealed {
    pub(crate) label: &'static str,
    pub(crate) value: String,
    /// A `<textarea>` rather than a one-line field (PEM).
    pub(crate) multiline: bool,
}

/// The page that shows a new secret, once: nothing stores it, and the page is not cached.
#[derive(Template)]
#[template(path = "reveal.html")]
pub(crate) struct RevealPage {
    pub(crate) layout: Layout,
    /// What was made, e.g. "API key “Production”".
    pub(crate) what: String,
    pub(crate) secrets: Vec<Revealed>,
    /// Where "Done" leads.
    pub(crate) next: String,
}

/// After a change, back to a page that shows its result (post, redirect, get).
pub(crate) fn back_to(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// `/dashboard/…` with each segment percent-encoded.
pub(crate) fn link(segments: &[&str]) -> String {
    let mut path = String::from("/dashboard");
    for segment in segments {
        path.push('/');
        path.extend(percent_encoding::utf8_percent_encode(
            segment,
            crate::api::SEGMENT,
        ));
    }
    path
}
