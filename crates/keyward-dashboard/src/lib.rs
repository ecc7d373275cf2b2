//! Keyward's web dashboard at `/dashboard`: server-rendered HTML pages, with a little
//! script for copy buttons, over Keyward's own public HTTP API.
//!
//! Architecture invariant: the dashboard knows no storage and no business rule. Every page
//! calls the same `/api/v1` endpoints any client calls, in-process and with the signed-in
//! root key, so the API's scopes, validation and audit log apply to it unchanged.

mod api;
mod assets;
mod chart;
mod error;
mod pages;
mod portal;
mod session;
mod view;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;

pub use session::SecureCookies;

use api::Api;
use error::PageError;
use session::Session;

/// Seals and opens the session cookie; the server's master key does it, so that every
/// node of a cluster reads every node's sessions.
pub trait Sealer: Send + Sync + 'static {
    /// Nonce, ciphertext and tag, bound to `context`.
    fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8>;
    /// `None` unless `sealed` was sealed by this key for `context`.
    fn open(&self, sealed: &[u8], context: &str) -> Option<Vec<u8>>;
}

/// Marks an in-process API call as made for a customer portal session (SPEC §4.10). Only
/// the portal's pages attach it, as an extension of a request built here: no client of the
/// HTTP API can send one. The API still checks the session it names on every call.
#[derive(Debug, Clone)]
pub struct PortalGrant {
    pub session_id: String,
}

/// How the dashboard behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct DashboardSettings {
    pub secure_cookies: SecureCookies,
}

pub(crate) struct Dashboard {
    api: Api,
    sealer: Arc<dyn Sealer>,
    settings: DashboardSettings,
}

/// Whether a path is the dashboard's or the portal's, so that the server can send every
/// other request straight to the API.
pub fn serves(path: &str) -> bool {
    ["/dashboard", "/portal"].iter().any(|root| {
        path.strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The dashboard's routes, all under `/dashboard`, and the customer portal's, under
/// `/portal`. `api` is Keyward's whole API, with its middleware: both call it as a client
/// would.
pub fn router(api: Router, sealer: Arc<dyn Sealer>, settings: DashboardSettings) -> Router {
    let dashboard = Arc::new(Dashboard {
        api: Api::new(api),
        sealer,
        settings,
    });
    Router::new()
        .route("/dashboard", get(pages::overview::show))
        .route(
            "/dashboard/sign-in",
            get(pages::sign_in::show).post(pages::sign_in::submit),
        )
        .route("/dashboard/sign-out", post(pages::sign_in::sign_out))
        .route(
            "/dashboard/environment",
            post(pages::sign_in::switch_environment),
        )
        .route(
            "/dashboard/apps",
            get(pages::apps::list).post(pages::apps::create),
        )
        .route("/dashboard/apps/new", get(pages::apps::new))
        .route(
            "/dashboard/apps/{slug}",
            get(pages::apps::show).post(pages::apps::update),
        )
        .route("/dashboard/apps/{slug}/delete", post(pages::apps::delete))
        .route("/dashboard/apps/{slug}/keys/new", get(pages::keys::new))
        .route("/dashboard/apps/{slug}/keys", post(pages::keys::create))
        .route(
            "/dashboard/keys/{id}",
            get(pages::keys::show).post(pages::keys::update),
        )
        .route("/dashboard/keys/{id}/rotate", post(pages::keys::rotate))
        .route("/dashboard/keys/{id}/revoke", post(pages::keys::revoke))
        .route("/dashboard/keys/{id}/delete", post(pages::keys::delete))
        .route(
            "/dashboard/organizations",
            get(pages::organizations::show).post(pages::organizations::save),
        )
        .route(
            "/dashboard/organizations/delete",
            post(pages::organizations::delete),
        )
        .route(
            "/dashboard/schemes",
            get(pages::schemes::list).post(pages::schemes::create),
        )
        .route("/dashboard/schemes/{slug}", post(pages::schemes::update))
        .route(
            "/dashboard/schemes/{slug}/delete",
            post(pages::schemes::delete),
        )
        .route(
            "/dashboard/root-keys",
            get(pages::root_keys::list).post(pages::root_keys::create),
        )
        .route(
            "/dashboard/root-keys/{id}/revoke",
            post(pages::root_keys::revoke),
        )
        .route(
            "/dashboard/public-keys",
            get(pages::credentials::public_keys).post(pages::credentials::create_public_key),
        )
        .route(
            "/dashboard/public-keys/{id}/rotate",
            post(pages::credentials::rotate_public_key),
        )
        .route(
            "/dashboard/public-keys/{id}/delete",
            post(pages::credentials::delete_public_key),
        )
        .route(
            "/dashboard/signing-keys",
            get(pages::credentials::signing_keys).post(pages::credentials::create_signing_key),
        )
        .route(
            "/dashboard/signing-keys/{id}/delete",
            post(pages::credentials::delete_signing_key),
        )
        .route(
            "/dashboard/workspace-keys",
            get(pages::credentials::workspace_keys).post(pages::credentials::create_workspace_key),
        )
        .route(
            "/dashboard/workspace-keys/{id}/rotate",
            post(pages::credentials::rotate_workspace_key),
        )
        .route(
            "/dashboard/workspace-keys/{id}/delete",
            post(pages::credentials::delete_workspace_key),
        )
        .route(
            "/dashboard/webhooks",
            get(pages::webhooks::list).post(pages::webhooks::create),
        )
        .route(
            "/dashboard/webhooks/{id}",
            get(pages::webhooks::show).post(pages::webhooks::update),
        )
        .route("/dashboard/webhooks/{id}/test", post(pages::webhooks::test))
        .route(
            "/dashboard/webhooks/{id}/enable",
            post(pages::webhooks::enable),
        )
        .route(
            "/dashboard/webhooks/{id}/disable",
            post(pages::webhooks::disable),
        )
        .route(
            "/dashboard/webhooks/{id}/rotate",
            post(pages::webhooks::rotate),
        )
        .route(
            "/dashboard/webhooks/{id}/delete",
            post(pages::webhooks::delete),
        )
        .route(
            "/dashboard/webhooks/{id}/deliveries/{delivery_id}/retry",
            post(pages::webhooks::retry),
        )
        .route(
            "/dashboard/settings",
            get(pages::settings::show).post(pages::settings::save),
        )
        .route("/dashboard/audit-log", get(pages::settings::audit_log))
        .route("/dashboard/assets/{file}", get(assets::serve))
        .route("/portal", get(portal::keys))
        // A HEAD (a link checker, a preview) must not spend the link.
        .route(
            "/portal/enter/{code}",
            get(portal::enter).head(|| async { axum::http::StatusCode::OK }),
        )
        .route("/portal/keys", post(portal::create))
        .route("/portal/keys/{id}", get(portal::key))
        .route("/portal/keys/{id}/rotate", post(portal::rotate))
        .route(
            "/portal/keys/{id}/revoke",
            get(portal::confirm_revoke).post(portal::revoke),
        )
        .route("/portal/sign-out", post(portal::sign_out))
        .route("/dashboard/{*rest}", get(pages::not_found))
        .layer(axum::middleware::from_fn(view::page_headers))
        // The overview is `/dashboard`; the address with a slash leads there too.
        .route(
            "/dashboard/",
            get(|| async { axum::response::Redirect::permanent("/dashboard") }),
        )
        .with_state(dashboard)
}

/// A signed-in request: its session and the root key of the environment it shows.
pub(crate) struct SignedIn {
    pub(crate) session: Session,
}

impl SignedIn {
    pub(crate) fn key(&self) -> &str {
        self.session.root_key()
    }
}

impl FromRequestParts<Arc<Dashboard>> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        Session::from_headers(&parts.headers, dashboard.sealer.as_ref())
            .map(|session| SignedIn { session })
            .ok_or(PageError::SignedOut)
    }
}
