//! API keys: generate (the secret shown once), view with usage, edit, rotate, revoke, delete.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use keyward_proto::{
    ApiKey, ApiKeyWithSecret, App, CreateKeyRequest, CreditPeriod, Credits, Refill,
    RotateKeyRequest, UpdateKeyRequest, UsageReport,
};
use serde::Deserialize;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

use crate::api::path;
use crate::chart::{Chart, Grouping};
use crate::error::PageError;
use crate::pages::apps::{refusal, scheme_slugs};
use crate::pages::overview::usage_range;
use crate::pages::{back_to, link, Confirmed, RevealPage, Revealed};
use crate::view::{
    filled, render, render_with, when, when_or_never, whole_number, Layout, Notice, Section,
    Submitted,
};
use crate::{Dashboard, SignedIn};

/// The key form, as typed.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KeyForm {
    #[serde(default)]
    name: String,
    owner_user_id: Option<String>,
    organization_id: Option<String>,
    /// Checked boxes, one field each.
    #[serde(default)]
    permissions: Vec<String>,
    /// `datetime-local`, read as UTC.
    expires_at: Option<String>,
    credits: Option<String>,
    refill_interval: Option<String>,
    refill_amount: Option<String>,
    rate_limit_scheme: Option<String>,
}

#[derive(Template)]
#[template(path = "key_new.html")]
struct NewKeyPage {
    layout: Layout,
    app: App,
    form: KeyForm,
    schemes: Vec<String>,
}

impl NewKeyPage {
    fn checked(&self, permission: &str) -> bool {
        self.form.permissions.iter().any(|held| held == permission)
    }
}

pub(crate) async fn new(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
    Path(slug): Path<String>,
) -> Result<Response, PageError> {
    new_key_page(&dashboard, signed, &slug, KeyForm::default(), None).await
}

async fn new_key_page(
    dashboard: &Dashboard,
    signed: SignedIn,
    slug: &str,
    form: KeyForm,
    error: Option<crate::api::ApiFailure>,
) -> Result<Response, PageError> {
    let app: App = dashboard
        .api
        .get(signed.key(), &path(&["apps", slug], None::<&()>))
        .await?;
    let schemes = scheme_slugs(dashboard, &signed).await;
    let status = error
        .as_ref()
        .map_or(axum::http::StatusCode::OK, |failure| failure.status);
    let title = format!("New key for {}", app.name);
    Ok(render_with(
        status,
        &NewKeyPage {
            layout: Layout::new(&signed, Section::Apps, title)
                .with_notice(error.and_then(|failure| Notice::error(failure.message))),
            app,
            form,
            schemes,
        },
    ))
}

/// A `datetime-local` value (`2026-12-31T23:59`), read as UTC.
fn moment(field: &Option<String>) -> Result<Option<OffsetDateTime>, String> {
    let Some(text) = filled(field) else {
        return Ok(None);
    };
    let with_seconds = if text.len() == 16 {
        format!("{text}:00")
    } else {
        text
    };
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    PrimitiveDateTime::parse(&with_seconds, format)
        .map(|moment| Some(moment.assume_utc()))
        .map_err(|_| "The expiry must be a date and time".to_owned())
}

impl KeyForm {
    fn request(&self) -> Result<CreateKeyRequest, String> {
        let refill = match (
            filled(&self.refill_interval),
            whole_number(&self.refill_amount, "The refill amount")?,
        ) {
            (None, _) => None,
            (Some(interval), Some(amount)) => Some(Refill {
                interval: match interval.as_str() {
                    "daily" => CreditPeriod::Daily,
                    "monthly" => CreditPeriod::Monthly,
                    _ => return Err("The refill is daily or monthly".to_owned()),
                },
                amount,
            }),
            (Some(_), None) => return Err("A refill needs an amount".to_owned()),
        };
        let credits = match whole_number(&self.credits, "Credits")? {
            Some(remaining) => Some(Credits { remaining, refill }),
            None if refill.is_some() => {
                return Err("A refill needs a starting number of credits".to_owned())
            }
            None => None,
        };
        Ok(CreateKeyRequest {
            name: self.name.trim().to_owned(),
            owner_user_id: filled(&self.owner_user_id),
            organization_id: filled(&self.organization_id),
            permissions: Some(self.permissions.clone()),
            meta: None,
            expires_at: moment(&self.expires_at)?,
            credits,
            rate_limit_scheme: filled(&self.rate_limit_scheme),
            low_credits_threshold: None,
        })
    }
}

pub(crate) async fn create(
    State(dashboard): State<Arc<Dashboard>>,
    Path(slug): Path<String>,
    Submitted { signed, form }: Submitted<KeyForm>,
) -> Result<Response, PageError> {
    let request = match form.request() {
        Ok(request) => request,
        Err(message) => {
            let failure = crate::api::ApiFailure {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_form".to_owned(),
                message,
            };
            return new_key_page(&dashboard, signed, &slug, form, Some(failure)).await;
        }
    };
    let created = dashboard
        .api
        .post::<ApiKeyWithSecret>(
            signed.key(),
            &path(&["apps", &slug, "keys"], None::<&()>),
            &request,
        )
        .await;
    match created {
        Ok(created) => Ok(render(&RevealPage {
            layout: Layout::new(&signed, Section::Apps, "Your new API key"),
            what: format!("API key “{}” created", created.key.name),
            next: link(&["keys", &created.key.id]),
            secrets: vec![Revealed {
                label: "Secret key",
                value: created.secret,
                multiline: false,
            }],
        })),
        Err(failure) => {
            let failure = refusal(failure)?;
            new_key_page(&dashboard, signed, &slug, form, Some(failure)).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RangeQuery {
    range: Option<String>,
}

/// The ranges a key's usage chart offers: the address's name, the label, the granularity.
pub(crate) const RANGES: [(&str, &str, &str); 3] = [
    ("1h", "Last hour", "minute"),
    ("24h", "Last 24 hours", "hour"),
    ("30d", "Last 30 days", "day"),
];

/// The range a key's chart shows, as the address names it (the last 24 hours by default):
/// its name, its label, and the usage query's `granularity` and `from`.
pub(crate) fn key_range(
    asked: Option<&str>,
) -> (&'static str, &'static str, Vec<(&'static str, String)>) {
    let (range, label, granularity) = RANGES
        .iter()
        .find(|(name, _, _)| Some(*name) == asked)
        .copied()
        .unwrap_or(RANGES[1]);
    let span = match range {
        "1h" => Duration::HOUR,
        "30d" => Duration::days(30),
        _ => Duration::DAY,
    };
    (range, label, usage_range(granularity, span))
}

#[derive(Template)]
#[template(path = "key.html")]
struct KeyPage {
    layout: Layout,
    key: ApiKey,
    chart: Chart,
    range: &'static str,
}

impl KeyPage {
    fn ranges(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &RANGES
    }

    fn expires(&self) -> String {
        when_or_never(&self.key.expires_at, "never")
    }

    fn last_used(&self) -> String {
        when_or_never(&self.key.last_used_at, "never")
    }

    fn created(&self) -> String {
        when(&self.key.created_at)
    }

    fn revoked(&self) -> Option<String> {
        self.key.revoked_at.as_ref().map(when)
    }

    fn meta(&self) -> String {
        serde_json::to_string(&self.key.meta).unwrap_or_default()
    }

    fn credits(&self) -> String {
        match &self.key.credits {
            None => "unlimited".to_owned(),
            Some(credits) => match &credits.refill {
                None => credits.remaining.to_string(),
                Some(refill) => format!(
                    "{} (refilled to {} {})",
                    credits.remaining,
                    refill.amount,
                    match refill.interval {
                        CreditPeriod::Daily => "daily",
                        CreditPeriod::Monthly => "monthly",
                    }
                ),
            },
        }
    }
}

pub(crate) async fn show(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, PageError> {
    key_page(&dashboard, signed, &id, query.range.as_deref(), None).await
}

async fn key_page(
    dashboard: &Dashboard,
    signed: SignedIn,
    id: &str,
    range: Option<&str>,
    notice: Option<Notice>,
) -> Result<Response, PageError> {
    let (range, label, mut usage_query) = key_range(range);
    usage_query.push(("key_id", id.to_owned()));
    let key_path = path(&["keys", id], None::<&()>);
    let usage_path = path(&["usage"], Some(&usage_query));
    let (key, usage) = tokio::try_join!(
        dashboard.api.get::<ApiKey>(signed.key(), &key_path),
        dashboard.api.get::<UsageReport>(signed.key(), &usage_path),
    )?;
    let title = format!("Key {}", key.name);
    Ok(render(&KeyPage {
        layout: Layout::new(&signed, Section::Apps, title).with_notice(notice),
        chart: Chart::new(
            &format!("Verifications, {}", label.to_lowercase()),
            &usage,
            Grouping::ByOutcome,
        ),
        key,
        range,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeyUpdateForm {
    name: String,
    owner_user_id: Option<String>,
    expires_at: Option<String>,
    /// A checkbox: present when checked.
    enabled: Option<String>,
}

pub(crate) async fn update(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, form }: Submitted<KeyUpdateForm>,
) -> Result<Response, PageError> {
    let expires_at = match moment(&form.expires_at) {
        Ok(expires_at) => expires_at,
        Err(message) => {
            return key_page(&dashboard, signed, &id, None, Notice::error(message)).await
        }
    };
    let request = UpdateKeyRequest {
        name: Some(form.name.trim().to_owned()),
        owner_user_id: Some(filled(&form.owner_user_id)),
        expires_at: Some(expires_at),
        enabled: Some(form.enabled.is_some()),
        ..UpdateKeyRequest::default()
    };
    let result = dashboard
        .api
        .call::<ApiKey>(
            signed.key(),
            Method::PATCH,
            &path(&["keys", &id], None::<&()>),
            Some(&request),
        )
        .await;
    match result {
        Ok(_) => Ok(back_to(&link(&["keys", &id]))),
        Err(failure) => {
            let failure = refusal(failure)?;
            key_page(
                &dashboard,
                signed,
                &id,
                None,
                Notice::error(failure.message),
            )
            .await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RotateForm {
    /// Seconds the old secret keeps working; empty or 0 ends it at once.
    grace_seconds: Option<String>,
}

pub(crate) async fn rotate(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, form }: Submitted<RotateForm>,
) -> Result<Response, PageError> {
    let grace = filled(&form.grace_seconds)
        .map(|text| text.parse::<u64>())
        .transpose()
        .map_err(|_| PageError::BadForm("the grace period is a number of seconds".to_owned()))?
        .filter(|seconds| *seconds > 0);
    let rotated: ApiKeyWithSecret = dashboard
        .api
        .post(
            signed.key(),
            &path(&["keys", &id, "rotate"], None::<&()>),
            &RotateKeyRequest {
                expire_previous_in_seconds: grace,
            },
        )
        .await?;
    let what = match grace {
        Some(seconds) => format!(
            "Key “{}” rotated: the old secret works for {seconds} more seconds",
            rotated.key.name
        ),
        None => format!(
            "Key “{}” rotated: the old secret no longer works",
            rotated.key.name
        ),
    };
    Ok(render(&RevealPage {
        layout: Layout::new(&signed, Section::Apps, "Rotated key"),
        what,
        next: link(&["keys", &id]),
        secrets: vec![Revealed {
            label: "New secret key",
            value: rotated.secret,
            multiline: false,
        }],
    }))
}

pub(crate) async fn revoke(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .post::<ApiKey>(
            signed.key(),
            &path(&["keys", &id, "revoke"], None::<&()>),
            &serde_json::json!({}),
        )
        .await?;
    Ok(back_to(&link(&["keys", &id])))
}

pub(crate) async fn delete(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    let key: ApiKey = dashboard
        .api
        .get(signed.key(), &path(&["keys", &id], None::<&()>))
        .await?;
    dashboard
        .api
        .delete(signed.key(), &path(&["keys", &id], None::<&()>))
        .await?;
    Ok(back_to(&link(&["apps", &key.app])))
}
