//! Webhook endpoints: list, add (the signing secret shown once), view with their deliveries,
//! edit, send a test event, retry a delivery, turn off and on, rotate the secret (shown
//! once), delete.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use keyward_core::event::EventType;
use keyward_proto::{
    CreateWebhookEndpointRequest, Page, UpdateWebhookEndpointRequest, WebhookAttempt,
    WebhookDelivery, WebhookDeliveryQueued, WebhookEndpoint, WebhookEndpointWithSecret,
};
use serde::{Deserialize, Serialize};

use crate::api::{path, ApiFailure};
use crate::error::PageError;
use crate::pages::apps::refusal;
use crate::pages::{back_to, link, Confirmed, RevealPage, Revealed};
use crate::view::{
    filled, render, render_with, when, when_or_never, Layout, Notice, Section, Submitted,
};
use crate::{Dashboard, SignedIn};

/// How many endpoints and deliveries a page lists.
const PAGE_SIZE: &str = "50";

/// Every event type an endpoint may take, as the forms' choices.
fn event_types() -> impl Iterator<Item = &'static str> {
    EventType::ALL.iter().map(|kind| kind.as_str())
}

/// An endpoint's `events` as the pages show them.
fn events_text(events: &[String]) -> String {
    if events.iter().any(|name| name == "*") {
        "all events".to_owned()
    } else {
        events.join(", ")
    }
}

/// A listed page's position, as the address carries it.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct Cursor {
    cursor: Option<String>,
}

/// The endpoint form, as typed. No event type checked means every event (`*`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EndpointForm {
    #[serde(default)]
    url: String,
    description: Option<String>,
    /// Checked boxes, one field each.
    #[serde(default)]
    events: Vec<String>,
}

impl EndpointForm {
    /// What the API takes for `events`: the types checked, or `["*"]`.
    fn events(&self) -> Vec<String> {
        let mut events: Vec<String> = self
            .events
            .iter()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect();
        events.dedup();
        if events.is_empty() {
            vec!["*".to_owned()]
        } else {
            events
        }
    }
}

// The list, with the form that adds an endpoint.

#[derive(Template)]
#[template(path = "webhooks.html")]
struct EndpointsPage {
    layout: Layout,
    endpoints: Page<WebhookEndpoint>,
    /// Whether this is a later page than the first.
    later: bool,
    form: EndpointForm,
}

impl EndpointsPage {
    fn event_types(&self) -> impl Iterator<Item = &'static str> {
        event_types()
    }

    fn checked(&self, name: &str) -> bool {
        self.form.events.iter().any(|held| held == name)
    }

    fn events(endpoint: &WebhookEndpoint) -> String {
        events_text(&endpoint.events)
    }

    fn created(endpoint: &WebhookEndpoint) -> String {
        when(&endpoint.created_at)
    }

    fn next_page(cursor: &str) -> String {
        format!(
            "/dashboard/webhooks?{}",
            serde_html_form::to_string(Cursor {
                cursor: Some(cursor.to_owned()),
            })
            .unwrap_or_default()
        )
    }
}

async fn endpoints_page(
    dashboard: &Dashboard,
    signed: SignedIn,
    cursor: Option<String>,
    form: EndpointForm,
    error: Option<ApiFailure>,
) -> Result<Response, PageError> {
    let later = cursor.is_some();
    let query = [("limit", Some(PAGE_SIZE.to_owned())), ("cursor", cursor)];
    let endpoints = dashboard
        .api
        .get(signed.key(), &path(&["webhook-endpoints"], Some(&query)))
        .await?;
    let status = error
        .as_ref()
        .map_or(StatusCode::OK, |failure| failure.status);
    Ok(render_with(
        status,
        &EndpointsPage {
            layout: Layout::new(&signed, Section::Webhooks, "Webhooks")
                .with_notice(error.and_then(|failure| Notice::error(failure.message))),
            endpoints,
            later,
            form,
        },
    ))
}

pub(crate) async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
    Query(cursor): Query<Cursor>,
) -> Result<Response, PageError> {
    endpoints_page(
        &dashboard,
        signed,
        filled(&cursor.cursor),
        EndpointForm::default(),
        None,
    )
    .await
}

/// The page that shows an endpoint's signing secret, once.
fn reveal_secret(layout: Layout, what: String, created: WebhookEndpointWithSecret) -> Response {
    render(&RevealPage {
        layout,
        what,
        next: link(&["webhooks", &created.endpoint.id]),
        secrets: vec![Revealed {
            label: "Signing secret",
            value: created.secret,
            multiline: false,
        }],
    })
}

pub(crate) async fn create(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { signed, form }: Submitted<EndpointForm>,
) -> Result<Response, PageError> {
    let request = CreateWebhookEndpointRequest {
        url: form.url.trim().to_owned(),
        events: Some(form.events()),
        description: filled(&form.description),
        enabled: None,
    };
    let created = dashboard
        .api
        .post::<WebhookEndpointWithSecret>(
            signed.key(),
            &path(&["webhook-endpoints"], None::<&()>),
            &request,
        )
        .await;
    match created {
        Ok(created) => {
            let layout = Layout::new(&signed, Section::Webhooks, "Your new webhook endpoint");
            let what = format!("Webhook endpoint for {} added", created.endpoint.url);
            Ok(reveal_secret(layout, what, created))
        }
        Err(failure) => {
            let failure = refusal(failure)?;
            endpoints_page(&dashboard, signed, None, form, Some(failure)).await
        }
    }
}

// One endpoint and its deliveries.

/// The endpoint page's address: a page of deliveries, and what was just done.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EndpointQuery {
    cursor: Option<String>,
    done: Option<String>,
}

/// What a change the endpoint page redirects after did, in words; only known ones show.
fn done_text(done: &str) -> Option<&'static str> {
    match done {
        "test" => Some(
            "A test event was queued. It is sent in the background: reload this page to see \
             its attempts.",
        ),
        "retry" => Some(
            "The delivery was queued again. It is sent in the background: reload this page to \
             see its attempts.",
        ),
        "enabled" => Some("The endpoint is on. Its pending deliveries resume."),
        "disabled" => Some("The endpoint is off. Its deliveries wait until it is turned on."),
        "saved" => Some("The endpoint was saved."),
        _ => None,
    }
}

/// The endpoint page with what was just done in its address.
fn back_with(id: &str, done: &str) -> Response {
    back_to(&format!("{}?done={done}", link(&["webhooks", id])))
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct EndpointPage {
    layout: Layout,
    endpoint: WebhookEndpoint,
    deliveries: Page<WebhookDelivery>,
    /// Whether the deliveries are a later page than the first.
    later: bool,
}

impl EndpointPage {
    fn event_types(&self) -> impl Iterator<Item = &'static str> {
        event_types()
    }

    /// Whether the edit form's box for `name` is checked: only when named (not for `*`).
    fn checked(&self, name: &str) -> bool {
        self.endpoint.events.iter().any(|held| held == name)
    }

    fn events(&self) -> String {
        events_text(&self.endpoint.events)
    }

    fn created(&self) -> String {
        when(&self.endpoint.created_at)
    }

    fn updated(&self) -> String {
        when(&self.endpoint.updated_at)
    }

    fn here(&self) -> String {
        link(&["webhooks", &self.endpoint.id])
    }

    fn next_page(&self, cursor: &str) -> String {
        format!(
            "{}?{}",
            self.here(),
            serde_html_form::to_string(Cursor {
                cursor: Some(cursor.to_owned()),
            })
            .unwrap_or_default()
        )
    }

    fn at(attempt: &WebhookAttempt) -> String {
        when(&attempt.attempted_at)
    }

    fn next_attempt(delivery: &WebhookDelivery) -> String {
        if delivery.status == "pending" {
            when_or_never(&delivery.next_attempt_at, "—")
        } else {
            "—".to_owned()
        }
    }

    /// The endpoint's answer to an attempt: its HTTP status, or that none came.
    fn answer(attempt: &WebhookAttempt) -> String {
        attempt
            .status
            .map_or_else(|| "no answer".to_owned(), |status| format!("HTTP {status}"))
    }
}

pub(crate) async fn show(
    State(dashboard): State<Arc<Dashboard>>,
    signed: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<EndpointQuery>,
) -> Result<Response, PageError> {
    let notice = query
        .done
        .as_deref()
        .and_then(done_text)
        .and_then(Notice::news);
    endpoint_page(&dashboard, signed, &id, filled(&query.cursor), notice).await
}

async fn endpoint_page(
    dashboard: &Dashboard,
    signed: SignedIn,
    id: &str,
    cursor: Option<String>,
    notice: Option<Notice>,
) -> Result<Response, PageError> {
    let later = cursor.is_some();
    let endpoint_path = path(&["webhook-endpoints", id], None::<&()>);
    let query = [("limit", Some(PAGE_SIZE.to_owned())), ("cursor", cursor)];
    let deliveries_path = path(&["webhook-endpoints", id, "deliveries"], Some(&query));
    let (endpoint, deliveries) = tokio::try_join!(
        dashboard
            .api
            .get::<WebhookEndpoint>(signed.key(), &endpoint_path),
        dashboard
            .api
            .get::<Page<WebhookDelivery>>(signed.key(), &deliveries_path),
    )?;
    let status = if notice.as_ref().is_some_and(|notice| notice.error) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let title = format!("Webhook {}", endpoint.url);
    Ok(render_with(
        status,
        &EndpointPage {
            layout: Layout::new(&signed, Section::Webhooks, title).with_notice(notice),
            endpoint,
            deliveries,
            later,
        },
    ))
}

/// Changes an endpoint; a refusal shows on its page.
async fn patch(
    dashboard: &Dashboard,
    signed: SignedIn,
    id: &str,
    request: &UpdateWebhookEndpointRequest,
    done: &str,
) -> Result<Response, PageError> {
    let result = dashboard
        .api
        .call::<WebhookEndpoint>(
            signed.key(),
            Method::PATCH,
            &path(&["webhook-endpoints", id], None::<&()>),
            Some(request),
        )
        .await;
    match result {
        Ok(_) => Ok(back_with(id, done)),
        Err(failure) => {
            let failure = refusal(failure)?;
            endpoint_page(dashboard, signed, id, None, Notice::error(failure.message)).await
        }
    }
}

pub(crate) async fn update(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, form }: Submitted<EndpointForm>,
) -> Result<Response, PageError> {
    let request = UpdateWebhookEndpointRequest {
        url: Some(form.url.trim().to_owned()),
        events: Some(form.events()),
        description: Some(filled(&form.description).unwrap_or_default()),
        enabled: None,
    };
    patch(&dashboard, signed, &id, &request, "saved").await
}

pub(crate) async fn enable(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    let request = UpdateWebhookEndpointRequest {
        enabled: Some(true),
        ..UpdateWebhookEndpointRequest::default()
    };
    patch(&dashboard, signed, &id, &request, "enabled").await
}

pub(crate) async fn disable(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    let request = UpdateWebhookEndpointRequest {
        enabled: Some(false),
        ..UpdateWebhookEndpointRequest::default()
    };
    patch(&dashboard, signed, &id, &request, "disabled").await
}

pub(crate) async fn test(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .post::<WebhookDeliveryQueued>(
            signed.key(),
            &path(&["webhook-endpoints", &id, "test"], None::<&()>),
            &serde_json::json!({}),
        )
        .await?;
    Ok(back_with(&id, "test"))
}

pub(crate) async fn retry(
    State(dashboard): State<Arc<Dashboard>>,
    Path((id, delivery_id)): Path<(String, String)>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .post::<WebhookDeliveryQueued>(
            signed.key(),
            &path(
                &[
                    "webhook-endpoints",
                    &id,
                    "deliveries",
                    &delivery_id,
                    "retry",
                ],
                None::<&()>,
            ),
            &serde_json::json!({}),
        )
        .await?;
    Ok(back_with(&id, "retry"))
}

pub(crate) async fn rotate(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    let rotated: WebhookEndpointWithSecret = dashboard
        .api
        .post(
            signed.key(),
            &path(&["webhook-endpoints", &id, "rotate-secret"], None::<&()>),
            &serde_json::json!({}),
        )
        .await?;
    let layout = Layout::new(&signed, Section::Webhooks, "Rotated signing secret");
    let what = format!(
        "Signing secret for {} rotated: the old one keeps signing for 24 hours",
        rotated.endpoint.url
    );
    Ok(reveal_secret(layout, what, rotated))
}

pub(crate) async fn delete(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { signed, .. }: Submitted<Confirmed>,
) -> Result<Response, PageError> {
    dashboard
        .api
        .delete(
            signed.key(),
            &path(&["webhook-endpoints", &id], None::<&()>),
        )
        .await?;
    Ok(back_to("/dashboard/webhooks"))
}
