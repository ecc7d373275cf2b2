//! The handlers of SPEC §4, one module per resource. Handlers are thin: check the scope,
//! validate with the core's rules, call storage, drop stale cache entries, convert.

mod apps;
mod credentials;
pub(crate) mod demo;
mod environment;
mod keys;
mod me;
pub(crate) mod ops;
mod organizations;
mod portal;
mod rate_limit_schemes;
mod root_keys;
mod usage;
mod verify;
mod webhooks;
mod ws;

pub use portal::PortalSettings;

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub(crate) fn api(state: Arc<AppState>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(apps::create_app, apps::list_apps))
        .routes(routes!(apps::get_app, apps::update_app, apps::delete_app))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::get_key, keys::update_key, keys::delete_key))
        .routes(routes!(keys::import_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(crate::leaks::report_leak))
        .routes(routes!(crate::leaks::github_report))
        .routes(routes!(crate::leaks::patterns))
        .routes(routes!(keys::rotate_key))
        .routes(routes!(verify::verify_key))
        .routes(routes!(verify::verify_request))
        .routes(routes!(ws::websocket))
        .routes(routes!(
            credentials::create_public_key,
            credentials::list_public_keys
        ))
        .routes(routes!(credentials::rotate_public_key))
        .routes(routes!(credentials::delete_public_key))
        .routes(routes!(
            credentials::create_signing_key,
            credentials::list_signing_keys
        ))
        .routes(routes!(credentials::delete_signing_key))
        .routes(routes!(
            credentials::create_workspace_key,
            credentials::list_workspace_keys
        ))
        .routes(routes!(credentials::rotate_workspace_key))
        .routes(routes!(credentials::delete_workspace_key))
        .routes(routes!(webhooks::create_endpoint, webhooks::list_endpoints))
        .routes(routes!(
            webhooks::get_endpoint,
            webhooks::update_endpoint,
            webhooks::delete_endpoint
        ))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::retry_delivery))
        .routes(routes!(webhooks::test_endpoint))
        .routes(routes!(portal::create_portal_session))
        .routes(routes!(portal::redeem_portal_session))
        .routes(routes!(me::list_my_keys, me::create_my_key))
        .routes(routes!(me::rotate_my_key))
        .routes(routes!(me::revoke_my_key))
        .routes(routes!(me::get_my_key))
        .routes(routes!(me::my_key_usage))
        .routes(routes!(me::end_portal_session))
        .routes(routes!(
            rate_limit_schemes::create_scheme,
            rate_limit_schemes::list_schemes
        ))
        .routes(routes!(
            rate_limit_schemes::get_scheme,
            rate_limit_schemes::update_scheme,
            rate_limit_schemes::delete_scheme
        ))
        .routes(routes!(
            organizations::put_organization,
            organizations::get_organization,
            organizations::delete_organization
        ))
        .routes(routes!(demo::create_session, demo::delete_session))
        .routes(routes!(
            root_keys::create_root_key,
            root_keys::list_root_keys
        ))
        .routes(routes!(root_keys::revoke_root_key))
        .routes(routes!(
            environment::get_environment,
            environment::update_environment
        ))
        .routes(routes!(environment::list_audit_log))
        .routes(routes!(usage::usage))
        .routes(routes!(usage::usage_by_key))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .with_state(state)
}
