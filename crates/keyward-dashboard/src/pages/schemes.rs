//! Rate-limit schemes: list, create, change windows, delete.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use keyward_proto::{
    CreateRateLimitSchemeRequest, Page, RateLimitScheme, RateWindow, UpdateRateLimitSchemeRequest,
};
use serde::Deserialize;

use crate::api::path;
use crate::error::PageError;
use crate::pages::apps::refusal;
use crate::pages::{back_to, list_page, Confirmed};
use crate::view::{Layout, Notice, Section, Submitted};
use crate::{Dashboard, SignedIn};

#[derive(Template)]
#[template(path = "schemes.html")]
struct SchemesPage {
    layout: Layout,
    schemes: Page<RateLimitScheme>,
}

impl SchemesPage {
    /// Windows as the form takes them: `10/1, 1000/3600`.
    fn windows(scheme: &RateLimitScheme) -> String {
        scheme
            .windows
            .iter()
            .map(|window| format!("{}/{}", window.limit, window.period_seconds))
            .collect::<Vec<_>>()
            .join(", ")
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
        "rate-limit-schemes",
        notice,
        |layout, schemes| SchemesPage { layout, schemes },
        Section::Schemes,
        "Rate limits",
    )
    .await
}

/// `limit/seconds` pairs separated by commas or new lines, e.g. `10/1, 1000/3600`.
fn parse_windows(text: &str) -> Result<Vec<RateWindow>, String> {
    crate::view::split_list(&text.replace(" per ", "/"))
        .iter()
        .map(|window| {
            let (limit, seconds) = window
                .split_once('/')
                .ok_or_else(|| format!("“{window}” is not limit/seconds"))?;
            Ok(RateWindow {
                limit: limit
                    .parse()
                    .map_err(|_| format!("“{window}”: the limit is a whole number"))?,
                period_seconds: seconds
                    .parse()
                    .map_err(|_| format!("“{window}”: the period is a number of seconds"))?,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub(crate) struct SchemeForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    windows: String,
}

pub(crate) async fn create(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { signed, form }: Submitted<SchemeForm>,
) -> Result<Response, PageError> {
    let windows = match parse_windows(&form.windows) {
        Ok(windows) => windows,
        Err(message) => return page(&dashboard, signed, Notice::error(message)).await,
    };
    let request = CreateRateLimitSchemeRequest {
        slug: form.slug.trim().to_owned(),
        windows,
    };
    let created = dashboard
        .api
        .post::<RateLimitScheme>(
            signed.key(),
            &path(&["rate-limit-schemes"], None::<&()>),
            &request,
        )
        .await;
    finish(&dashboard, signed, created.map(drop)).await
}

/// Back to the list, or the list with what went wrong.
async fn finish(
    dashboard: &Dashboard,
    signed: SignedIn,
    result: Result<(), crate::api::ApiFailure>,
) -> Result<Response, PageError> {
    match result {
        Ok(()) => Ok(back_to("/dashboard/schemes")),
        Err(failure) => {
            let failure = refusal(failure)?;
            page(dashboard, signed, Notice::error(failure.message)).await
        }
    }
}

pub(crate) async fn update(
    State(dashboard): State<Arc<Dashboard>>,
    Path(slug): Path<String>,
    Submitted { signed, form }: Submitted<SchemeForm>,
) -> Result<Response, PageError> {
    let windows = match parse_windows(&form.windows) {
        Ok(windows) => windows,
        Err(message) => return page(&dashboard, signed, Notice::error(message)).await,
    };
    let updated = dashboard
        .api
        .call::<RateLimitScheme>(
            signed.key(),
            Method::PATCH,
            &path(&["rate-limit-schemes", &slug], None::<&()>),
            Some(&UpdateRateLimitSchemeRequest { windows }),
        )
        .await;
    finish(&dashboard, signed, updated.map(drop)).await
}

pub(crate) async fn delete(
    State(dashboard): State<Arc<Dashboard>>,
    Path(slug): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    let deleted = dashboard
        .api
        .delete(
            signed.key(),
            &path(&["rate-limit-schemes", &slug], None::<&()>),
        )
        .await;
    finish(&dashboard, signed, deleted).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_read_as_limit_per_seconds() {
        let windows = parse_windows("10/1, 1000 per 3600\n5/60").unwrap();
        let pairs: Vec<_> = windows
            .iter()
            .map(|window| (window.limit, window.period_seconds))
            .collect();
        assert_eq!(pairs, [(10, 1), (1000, 3600), (5, 60)]);
        assert!(parse_windows("10").is_err());
        assert!(parse_windows("ten/1").is_err());
    }
}
