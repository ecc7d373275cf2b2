//! What every page shares: the layout's data, rendering, submitted forms and the headers
//! every answer carries.

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::PageError;
use crate::session::Session;
use crate::{Dashboard, SignedIn};

/// The most a form may send.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Overview,
    Apps,
    Organizations,
    Schemes,
    RootKeys,
    PublicKeys,
    SigningKeys,
    WorkspaceKeys,
    Webhooks,
    Settings,
    AuditLog,
}

impl Section {
    const ALL: [Section; 11] = [
        Section::Overview,
        Section::Apps,
        Section::Organizations,
        Section::Schemes,
        Section::RootKeys,
        Section::PublicKeys,
        Section::SigningKeys,
        Section::WorkspaceKeys,
        Section::Webhooks,
        Section::Settings,
        Section::AuditLog,
    ];

    fn href(self) -> &'static str {
        match self {
            Section::Overview => "/dashboard",
            Section::Apps => "/dashboard/apps",
            Section::Organizations => "/dashboard/organizations",
            Section::Schemes => "/dashboard/schemes",
            Section::RootKeys => "/dashboard/root-keys",
            Section::PublicKeys => "/dashboard/public-keys",
            Section::SigningKeys => "/dashboard/signing-keys",
            Section::WorkspaceKeys => "/dashboard/workspace-keys",
            Section::Webhooks => "/dashboard/webhooks",
            Section::Settings => "/dashboard/settings",
            Section::AuditLog => "/dashboard/audit-log",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Section::Overview => "Overview",
            Section::Apps => "Apps & keys",
            Section::Organizations => "Organizations",
            Section::Schemes => "Rate limits",
            Section::RootKeys => "Root keys",
            Section::PublicKeys => "Public keys",
            Section::SigningKeys => "Signing keys",
            Section::WorkspaceKeys => "Workspace keys",
            Section::Webhooks => "Webhooks",
            Section::Settings => "Security",
            Section::AuditLog => "Audit log",
        }
    }
}

pub(crate) struct NavLink {
    pub(crate) href: &'static str,
    pub(crate) label: &'static str,
    pub(crate) current: bool,
}

/// What the layout around every signed-in page needs.
pub(crate) struct Layout {
    pub(crate) title: String,
    pub(crate) environment: String,
    pub(crate) csrf: String,
    pub(crate) nav: Vec<NavLink>,
    /// The environments the switch offers: `live` and `test`, and `demo` when signed in
    /// to a sandbox.
    pub(crate) environments: Vec<&'static str>,
    /// A message at the top of the page.
    pub(crate) notice: Option<Notice>,
}

impl Layout {
    pub(crate) fn new(signed: &SignedIn, section: Section, title: impl Into<String>) -> Self {
        Self::for_session(&signed.session, section, title)
    }

    fn for_session(session: &Session, section: Section, title: impl Into<String>) -> Self {
        let mut environments = vec!["live", "test"];
        if session
            .environments()
            .any(|environment| environment == "demo")
        {
            environments.push("demo");
        }
        Self {
            title: title.into(),
            environment: session.environment.clone(),
            csrf: session.csrf.clone(),
            nav: Section::ALL
                .iter()
                .map(|&link| NavLink {
                    href: link.href(),
                    label: link.label(),
                    current: link == section,
                })
                .collect(),
            environments,
            notice: None,
        }
    }

    pub(crate) fn with_notice(mut self, notice: Option<Notice>) -> Self {
        self.notice = notice;
        self
    }

    pub(crate) fn is_test_data(&self) -> bool {
        self.environment != "live"
    }
}

/// A message for the user: an error from the API, or news of what just happened.
pub(crate) struct Notice {
    pub(crate) error: bool,
    pub(crate) text: String,
}

impl Notice {
    pub(crate) fn error(text: impl Into<String>) -> Option<Self> {
        Some(Self {
            error: true,
            text: text.into(),
        })
    }

    /// News of what just happened, e.g. that a test event was queued.
    pub(crate) fn news(text: impl Into<String>) -> Option<Self> {
        Some(Self {
            error: false,
            text: text.into(),
        })
    }
}

/// Renders a page template.
pub(crate) fn render(page: &impl Template) -> Response {
    render_with(StatusCode::OK, page)
}

pub(crate) fn render_with(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a dashboard page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A form a signed-in user sent, its CSRF token checked before anything else is read.
pub(crate) struct Submitted<T> {
    pub(crate) signed: SignedIn,
    pub(crate) form: T,
}

impl<T: DeserializeOwned> FromRequest<Arc<Dashboard>> for Submitted<T> {
    type Rejection = PageError;

    async fn from_request(
        request: Request,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let session = Session::from_headers(&parts.headers, dashboard.sealer.as_ref())
            .ok_or(PageError::SignedOut)?;
        let bytes = read_form(&parts.headers, body).await?;
        if !session.csrf_matches(&csrf_field(&bytes)) {
            return Err(PageError::Csrf);
        }
        let form = serde_html_form::from_bytes(&bytes)
            .map_err(|error| PageError::BadForm(error.to_string()))?;
        Ok(Self {
            signed: SignedIn { session },
            form,
        })
    }
}

/// The body of a form post, refused unless it is URL-encoded and of a sensible size.
pub(crate) async fn read_form(
    headers: &http::HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, PageError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(PageError::BadForm(
            "the form was not sent as a form".to_owned(),
        ));
    }
    axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| PageError::BadForm("the form is too large".to_owned()))
}

/// The form's `csrf` field, or nothing.
pub(crate) fn csrf_field(bytes: &[u8]) -> String {
    serde_html_form::from_bytes::<Vec<(String, String)>>(bytes)
        .unwrap_or_default()
        .into_iter()
        .find_map(|(name, value)| (name == "csrf").then_some(value))
        .unwrap_or_default()
}

/// Headers on every dashboard answer: nothing is cached (pages may show a secret once),
/// framed, sniffed, or loaded from anywhere but here.
pub(crate) async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Splits what a user typed into a list: commas, spaces or new lines separate items.
pub(crate) fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `None` for a field left empty.
pub(crate) fn filled(text: &Option<String>) -> Option<String> {
    text.as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// A field that should hold a whole number; `what` names it in the complaint.
pub(crate) fn whole_number(field: &Option<String>, what: &str) -> Result<Option<i64>, String> {
    filled(field)
        .map(|text| {
            text.parse()
                .map_err(|_| format!("{what} must be a whole number"))
        })
        .transpose()
}

/// A time as the pages show it: UTC, to the second.
pub(crate) fn when(moment: &time::OffsetDateTime) -> String {
    let utc = moment.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

/// An optional time, or a dash.
pub(crate) fn when_or_never(moment: &Option<time::OffsetDateTime>, never: &str) -> String {
    moment.as_ref().map_or_else(|| never.to_owned(), when)
}
