//! The customer portal at `/portal` (SPEC §4.10): a workspace's customer, sent here by the
//! workspace's backend with a single-use link, manages their own keys of one app.
//!
//! Like the dashboard, it knows no storage and no rule: every page calls the self-service
//! routes (`/api/v1/me/keys…`) in-process with the session's [`PortalGrant`], so the API
//! decides what the customer sees and may change. The session lives in a sealed, HttpOnly
//! cookie scoped to `/portal`; it names the session, whose liveness the API checks on
//! every call (an hour at most, and no longer than the credential that made it).

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use keyward_proto::{ApiKey, ApiKeyWithSecret, Page, PortalSessionInfo, UsageReport};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::api::{path, ApiFailure, Caller};
use crate::chart::{Chart, Grouping};
use crate::session::{cookie, random_token, scoped_cookie, tokens_match, unix_now};
use crate::view::{csrf_field, filled, read_form, render, render_with, when, when_or_never};
use crate::{Dashboard, PortalGrant};

const PORTAL_COOKIE: &str = "kw_portal";
/// Binds sealed portal sessions to their purpose: a dashboard session never opens here.
const SEAL_CONTEXT: &str = "keyward-portal-session";
/// Keys listed on the page; a customer has at most 100 active keys (`max_keys`).
const KEYS_PER_PAGE: u32 = 100;

/// What the portal's cookie holds: the session and what the pages show of it.
#[derive(Clone, Serialize, Deserialize)]
struct PortalCookie {
    session_id: String,
    environment: String,
    app: String,
    app_name: String,
    owner_user_id: String,
    organization_id: Option<String>,
    permissions: Vec<String>,
    max_keys: u32,
    return_url: Option<String>,
    shows_usage: bool,
    csrf: String,
    /// Unix seconds.
    expires_at: u64,
}

impl PortalCookie {
    fn seal(&self, dashboard: &Dashboard) -> String {
        let json = serde_json::to_vec(self).expect("a portal session serialises");
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(dashboard.sealer.seal(&json, SEAL_CONTEXT))
    }

    fn from_headers(headers: &HeaderMap, dashboard: &Dashboard) -> Option<Self> {
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cookie(headers, PORTAL_COOKIE)?)
            .ok()?;
        let opened = dashboard.sealer.open(&sealed, SEAL_CONTEXT)?;
        let session: Self = serde_json::from_slice(&opened).ok()?;
        (session.expires_at > unix_now()).then_some(session)
    }
}

/// A request of a portal customer whose session cookie is good.
pub(crate) struct Customer {
    session: PortalCookie,
    grant: PortalGrant,
}

impl Customer {
    fn new(session: PortalCookie) -> Self {
        let grant = PortalGrant {
            session_id: session.session_id.clone(),
        };
        Self { session, grant }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        dashboard: &Dashboard,
        path: &str,
    ) -> Result<T, PortalError> {
        Ok(dashboard
            .api
            .call_as(
                Caller::Customer(&self.grant),
                Method::GET,
                path,
                None::<&()>,
            )
            .await?)
    }

    async fn post<T: DeserializeOwned>(
        &self,
        dashboard: &Dashboard,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, PortalError> {
        Ok(dashboard
            .api
            .call_as(
                Caller::Customer(&self.grant),
                Method::POST,
                path,
                Some(body),
            )
            .await?)
    }
}

impl FromRequestParts<Arc<Dashboard>> for Customer {
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        PortalCookie::from_headers(&parts.headers, dashboard)
            .map(Customer::new)
            .ok_or(PortalError::SessionOver)
    }
}

/// A form a portal customer sent, its CSRF token checked before anything else is read.
pub(crate) struct Submitted<T> {
    customer: Customer,
    form: T,
}

impl<T: DeserializeOwned> FromRequest<Arc<Dashboard>> for Submitted<T> {
    type Rejection = PortalError;

    async fn from_request(
        request: Request,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let session = PortalCookie::from_headers(&parts.headers, dashboard)
            .ok_or(PortalError::SessionOver)?;
        let bytes = read_form(&parts.headers, body)
            .await
            .map_err(|_| PortalError::BadForm)?;
        if !tokens_match(&session.csrf, &csrf_field(&bytes)) {
            return Err(PortalError::Csrf);
        }
        let form = serde_html_form::from_bytes(&bytes).map_err(|_| PortalError::BadForm)?;
        Ok(Self {
            customer: Customer::new(session),
            form,
        })
    }
}

/// What went wrong on a portal page, answered as a page of its own.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PortalError {
    #[error("the link was used, expired, or is unknown")]
    LinkSpent,
    #[error("no portal session, or it ended")]
    SessionOver,
    #[error("the form's CSRF token is missing or wrong")]
    Csrf,
    #[error("the form could not be read")]
    BadForm,
    #[error("the API refused: {}", .0.code)]
    Api(ApiFailure),
}

impl From<ApiFailure> for PortalError {
    fn from(failure: ApiFailure) -> Self {
        if failure.status == StatusCode::UNAUTHORIZED {
            Self::SessionOver
        } else {
            Self::Api(failure)
        }
    }
}

#[derive(Template)]
#[template(path = "portal_message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            Self::LinkSpent => (
                StatusCode::NOT_FOUND,
                "This link no longer works",
                "A portal link works once, for a few minutes. Go back to the site that sent \
                 you here and open the key settings again."
                    .to_owned(),
            ),
            Self::SessionOver => (
                StatusCode::UNAUTHORIZED,
                "Your session has ended",
                "Go back to the site that sent you here and open the key settings again."
                    .to_owned(),
            ),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not sent from this session's page. Go back, reload the page \
                 and try again."
                    .to_owned(),
            ),
            Self::BadForm => (
                StatusCode::BAD_REQUEST,
                "Form not understood",
                "The form could not be read.".to_owned(),
            ),
            Self::Api(failure) => (failure.status, "That did not work", failure.message.clone()),
        };
        let mut response = render_with(
            status,
            &MessagePage {
                title,
                message: &message,
            },
        );
        if matches!(self, Self::SessionOver) {
            // The cookie is useless now.
            response.headers_mut().insert(
                header::SET_COOKIE,
                format!("{PORTAL_COOKIE}=; Path=/portal; Max-Age=0; HttpOnly; SameSite=Lax")
                    .parse()
                    .expect("a valid header"),
            );
        }
        response
    }
}

/// `GET /portal/enter/{code}`: opens the link's session (once, on any node) and moves the
/// customer to `/portal` with the session's cookie, so the code leaves the address bar.
pub(crate) async fn enter(
    State(dashboard): State<Arc<Dashboard>>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PortalError> {
    let opened = dashboard
        .api
        .call_as::<PortalSessionInfo>(
            Caller::Nobody,
            Method::POST,
            "/api/v1/portal/sessions/redeem",
            Some(&serde_json::json!({ "code": code })),
        )
        .await
        .map_err(|failure| {
            if failure.status == StatusCode::NOT_FOUND {
                PortalError::LinkSpent
            } else {
                PortalError::Api(failure)
            }
        })?;
    let expires_at = u64::try_from(opened.expires_at.unix_timestamp()).unwrap_or(0);
    let session = PortalCookie {
        session_id: opened.id,
        environment: opened.environment,
        app: opened.app,
        app_name: opened.app_name,
        owner_user_id: opened.owner_user_id,
        organization_id: opened.organization_id,
        permissions: opened.permissions,
        max_keys: opened.max_keys,
        return_url: opened.return_url,
        shows_usage: opened.shows_usage,
        csrf: random_token(),
        expires_at,
    };
    Ok(with_cookie(
        Redirect::to("/portal").into_response(),
        &session_cookie(
            &dashboard,
            &headers,
            &session.seal(&dashboard),
            Duration::from_secs(expires_at.saturating_sub(unix_now())),
        ),
    ))
}

/// The portal's cookie: `SameSite=Lax`, because the customer arrives from the workspace's
/// own site (a strict cookie set on that cross-site arrival would not come back with the
/// redirect); every change is a form with the session's CSRF token.
fn session_cookie(
    dashboard: &Dashboard,
    headers: &HeaderMap,
    value: &str,
    max_age: Duration,
) -> String {
    scoped_cookie(
        PORTAL_COOKIE,
        value,
        max_age,
        dashboard.settings.secure_cookies,
        headers,
        "/portal",
        "Lax",
    )
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie.parse().expect("a valid header"));
    response
}

/// What every portal page shows around its content.
struct Frame {
    title: String,
    /// Keys of an environment other than `live` are marked as test keys.
    environment: String,
    app_name: String,
    owner_user_id: String,
    return_url: Option<String>,
    csrf: String,
    notice: Option<Notice>,
}

struct Notice {
    error: bool,
    text: String,
}

impl Frame {
    fn new(session: &PortalCookie, title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            environment: session.environment.clone(),
            app_name: session.app_name.clone(),
            owner_user_id: session.owner_user_id.clone(),
            return_url: session.return_url.clone(),
            csrf: session.csrf.clone(),
            notice: None,
        }
    }
}

/// A key as a row of the list.
struct KeyRow {
    key: ApiKey,
}

impl KeyRow {
    fn last_used(&self) -> String {
        when_or_never(&self.key.last_used_at, "never")
    }

    fn created(&self) -> String {
        when(&self.key.created_at)
    }

    fn expires(&self) -> String {
        when_or_never(&self.key.expires_at, "never")
    }

    fn active(&self) -> bool {
        self.key.status == "active"
    }
}

#[derive(Template)]
#[template(path = "portal_keys.html")]
struct KeysPage {
    frame: Frame,
    keys: Vec<KeyRow>,
    permissions: Vec<String>,
    active: usize,
    max_keys: u32,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    cursor: Option<String>,
    /// What just happened, from a form's redirect: `revoked`.
    done: Option<String>,
}

/// `GET /portal`: the customer's keys of the app, and the form for a new one.
pub(crate) async fn keys(
    State(dashboard): State<Arc<Dashboard>>,
    customer: Customer,
    Query(query): Query<ListQuery>,
) -> Result<Response, PortalError> {
    let notice = match query.done.as_deref() {
        Some("revoked") => Some(Notice {
            error: false,
            text: "The key is revoked: it no longer works anywhere.".to_owned(),
        }),
        _ => None,
    };
    keys_page(&dashboard, &customer, query.cursor, notice).await
}

async fn keys_page(
    dashboard: &Dashboard,
    customer: &Customer,
    cursor: Option<String>,
    notice: Option<Notice>,
) -> Result<Response, PortalError> {
    #[derive(Serialize)]
    struct Paging {
        limit: u32,
        cursor: Option<String>,
    }
    let page: Page<ApiKey> = customer
        .get(
            dashboard,
            &path(
                &["me", "keys"],
                Some(&Paging {
                    limit: KEYS_PER_PAGE,
                    cursor,
                }),
            ),
        )
        .await?;
    let session = &customer.session;
    let mut frame = Frame::new(session, format!("{} API keys", session.app_name));
    frame.notice = notice;
    Ok(render(&KeysPage {
        frame,
        active: page
            .data
            .iter()
            .filter(|key| key.status == "active")
            .count(),
        keys: page.data.into_iter().map(|key| KeyRow { key }).collect(),
        permissions: session.permissions.clone(),
        max_keys: session.max_keys,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CreateForm {
    name: String,
    /// `datetime-local`, read as UTC; empty for never.
    expires_at: Option<String>,
    /// Checkboxes: the permissions ticked.
    #[serde(default)]
    permission: Vec<String>,
}

#[derive(Template)]
#[template(path = "portal_reveal.html")]
struct RevealPage {
    frame: Frame,
    heading: &'static str,
    key: ApiKey,
    secret: String,
}

/// `POST /portal/keys`: a new key, its secret shown once.
pub(crate) async fn create(
    State(dashboard): State<Arc<Dashboard>>,
    Submitted { customer, form }: Submitted<CreateForm>,
) -> Result<Response, PortalError> {
    let expires_at = match filled(&form.expires_at).map(|text| local_time(&text)) {
        Some(Ok(at)) => Some(at),
        Some(Err(())) => {
            let notice = Notice {
                error: true,
                text: "The expiry must be a date and time.".to_owned(),
            };
            return keys_page(&dashboard, &customer, None, Some(notice)).await;
        }
        None => None,
    };
    let body = serde_json::json!({
        "name": form.name.trim(),
        "permissions": form.permission,
        "expires_at": expires_at.map(|at| at
            .format(&time::format_description::well_known::Rfc3339)
            .expect("a time formats as RFC 3339")),
    });
    match customer
        .post::<ApiKeyWithSecret>(&dashboard, "/api/v1/me/keys", &body)
        .await
    {
        Ok(made) => Ok(render(&RevealPage {
            frame: Frame::new(&customer.session, "Your new key"),
            heading: "Your new key",
            key: made.key,
            secret: made.secret,
        })),
        // Refusals the customer can fix (a name, the limit) show above the form.
        Err(PortalError::Api(failure)) if failure.status.is_client_error() => {
            let notice = Notice {
                error: true,
                text: failure.message,
            };
            keys_page(&dashboard, &customer, None, Some(notice)).await
        }
        Err(other) => Err(other),
    }
}

/// A `datetime-local` field's value (`2027-01-31T12:00`), taken as UTC.
fn local_time(text: &str) -> Result<OffsetDateTime, ()> {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    time::PrimitiveDateTime::parse(text, &format)
        .map(time::PrimitiveDateTime::assume_utc)
        .map_err(|_| ())
}

#[derive(Template)]
#[template(path = "portal_key.html")]
struct KeyPage {
    frame: Frame,
    row: KeyRow,
    chart: Option<Chart>,
    range: &'static str,
}

impl KeyPage {
    fn ranges(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &crate::pages::keys::RANGES
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RangeQuery {
    range: Option<String>,
}

/// `GET /portal/keys/{id}`: one key, its usage, rotate and revoke.
pub(crate) async fn key(
    State(dashboard): State<Arc<Dashboard>>,
    customer: Customer,
    Path(id): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, PortalError> {
    let (range, label, usage_query) = crate::pages::keys::key_range(query.range.as_deref());
    let key: ApiKey = customer
        .get(&dashboard, &path(&["me", "keys", &id], None::<&()>))
        .await?;
    let chart = if customer.session.shows_usage {
        let usage: UsageReport = customer
            .get(
                &dashboard,
                &path(&["me", "keys", &id, "usage"], Some(&usage_query)),
            )
            .await?;
        Some(Chart::new(
            &format!("Requests, {}", label.to_lowercase()),
            &usage,
            Grouping::ByOutcome,
        ))
    } else {
        None
    };
    Ok(render(&KeyPage {
        frame: Frame::new(&customer.session, format!("Key {}", key.name)),
        row: KeyRow { key },
        chart,
        range,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RotateForm {
    grace_seconds: u64,
}

/// `POST /portal/keys/{id}/rotate`: a new secret, the old one working for the grace chosen.
pub(crate) async fn rotate(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { customer, form }: Submitted<RotateForm>,
) -> Result<Response, PortalError> {
    let rotated: ApiKeyWithSecret = customer
        .post(
            &dashboard,
            &path(&["me", "keys", &id, "rotate"], None::<&()>),
            &serde_json::json!({ "expire_previous_in_seconds": form.grace_seconds }),
        )
        .await?;
    Ok(render(&RevealPage {
        frame: Frame::new(&customer.session, "Your key's new secret"),
        heading: "Your key's new secret",
        key: rotated.key,
        secret: rotated.secret,
    }))
}

#[derive(Template)]
#[template(path = "portal_revoke.html")]
struct RevokePage {
    frame: Frame,
    key: ApiKey,
}

/// `GET /portal/keys/{id}/revoke`: are you sure?
pub(crate) async fn confirm_revoke(
    State(dashboard): State<Arc<Dashboard>>,
    customer: Customer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let key: ApiKey = customer
        .get(&dashboard, &path(&["me", "keys", &id], None::<&()>))
        .await?;
    Ok(render(&RevokePage {
        frame: Frame::new(&customer.session, format!("Revoke {}", key.name)),
        key,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct Confirmed {}

/// `POST /portal/keys/{id}/revoke`: the key stops working everywhere before the answer.
pub(crate) async fn revoke(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
    Submitted { customer, .. }: Submitted<Confirmed>,
) -> Result<Response, PortalError> {
    customer
        .post::<serde::de::IgnoredAny>(
            &dashboard,
            &path(&["me", "keys", &id, "revoke"], None::<&()>),
            &serde_json::json!({}),
        )
        .await?;
    Ok(Redirect::to("/portal?done=revoked").into_response())
}

/// `POST /portal/sign-out`: ends the session (on every node) and forgets its cookie.
pub(crate) async fn sign_out(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Submitted { customer, .. }: Submitted<Confirmed>,
) -> Result<Response, PortalError> {
    customer
        .post::<serde::de::IgnoredAny>(
            &dashboard,
            "/api/v1/me/portal-session/end",
            &serde_json::json!({}),
        )
        .await?;
    let page = MessagePage {
        title: "You are signed out",
        message: "Your key settings are closed. Open them again from the site that sent you here.",
    };
    Ok(with_cookie(
        render(&page),
        &session_cookie(&dashboard, &headers, "", Duration::ZERO),
    ))
}
