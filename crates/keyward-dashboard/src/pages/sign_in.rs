//! Signing in with a root key, switching environments, signing out.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use keyward_proto::{App, Page};
use serde::Deserialize;

use crate::api::path;
use crate::error::{reason_text, PageError};
use crate::pages::Confirmed;
use crate::session::{
    cookie, random_token, set_cookie, tokens_match, Session, SESSION_COOKIE, SIGN_IN_COOKIE,
    SIGN_IN_LIFETIME,
};
use crate::view::{csrf_field, read_form, render_with, Submitted};
use crate::Dashboard;

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    csrf: String,
    /// The environment the user was asked to sign in to, if any.
    environment: Option<String>,
    message: Option<String>,
    error: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignInQuery {
    reason: Option<String>,
    environment: Option<String>,
}

/// The environment a root key belongs to, from its prefix.
fn environment_of(root_key: &str) -> Option<&'static str> {
    ["live", "test", "demo"]
        .into_iter()
        .find(|environment| root_key.starts_with(&format!("sk_{environment}_")))
}

fn known_environment(environment: Option<&str>) -> Option<String> {
    environment
        .filter(|environment| ["live", "test", "demo"].contains(environment))
        .map(str::to_owned)
}

pub(crate) async fn show(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(query): Query<SignInQuery>,
) -> Response {
    let environment = known_environment(query.environment.as_deref());
    if environment.is_none() && Session::from_headers(&headers, dashboard.sealer.as_ref()).is_some()
    {
        return Redirect::to("/dashboard").into_response();
    }
    let message = query
        .reason
        .as_deref()
        .and_then(reason_text)
        .map(str::to_owned);
    sign_in_form(
        &dashboard,
        &headers,
        StatusCode::OK,
        environment,
        message,
        false,
    )
}

/// The form, with a fresh token in its own cookie: a page elsewhere cannot sign a browser in
/// to someone else's account.
fn sign_in_form(
    dashboard: &Dashboard,
    headers: &HeaderMap,
    status: StatusCode,
    environment: Option<String>,
    message: Option<String>,
    error: bool,
) -> Response {
    let csrf = random_token();
    let mut response = render_with(
        status,
        &SignInPage {
            csrf: csrf.clone(),
            environment,
            message,
            error,
        },
    );
    let cookie = set_cookie(
        SIGN_IN_COOKIE,
        &csrf,
        SIGN_IN_LIFETIME,
        dashboard.settings.secure_cookies,
        headers,
    );
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie.parse().expect("a valid header"));
    response
}

#[derive(Deserialize)]
struct SignInForm {
    root_key: String,
}

pub(crate) async fn submit(
    State(dashboard): State<Arc<Dashboard>>,
    request: Request,
) -> Result<Response, PageError> {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let bytes = read_form(&headers, body).await?;
    if !tokens_match(
        cookie(&headers, SIGN_IN_COOKIE).unwrap_or(""),
        &csrf_field(&bytes),
    ) {
        return Err(PageError::Csrf);
    }
    let form: SignInForm = serde_html_form::from_bytes(&bytes)
        .map_err(|error| PageError::BadForm(error.to_string()))?;
    let root_key = form.root_key.trim().to_owned();
    let refuse = |message: &str| {
        Ok(sign_in_form(
            &dashboard,
            &headers,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some(message.to_owned()),
            true,
        ))
    };
    let Some(environment) = environment_of(&root_key) else {
        return refuse(
            "That is not a root key: root keys start with sk_live_, sk_test_ or sk_demo_.",
        );
    };
    // Any call tells whether the key works; one without the scope for it still signs in,
    // and each page then says what the key may not see.
    let probe = dashboard
        .api
        .get::<Page<App>>(&root_key, &path(&["apps"], Some(&[("limit", "1")])))
        .await;
    if let Err(failure) = probe {
        if failure.is_credential_refusal() {
            return refuse(&format!("Keyward refused that key: {}", failure.message));
        }
        if failure.code != "insufficient_scope" {
            return Err(failure.into());
        }
    }
    let session = match Session::from_headers(&headers, dashboard.sealer.as_ref()) {
        Some(mut session) => {
            session.add_key(environment, root_key);
            session
        }
        None => Session::new(environment, root_key),
    };
    let mut response = Redirect::to("/dashboard").into_response();
    store_session(&dashboard, &headers, &session, &mut response);
    response.headers_mut().append(
        header::SET_COOKIE,
        format!("{SIGN_IN_COOKIE}=; Path=/dashboard; Max-Age=0; HttpOnly; SameSite=Strict")
            .parse()
            .expect("a valid header"),
    );
    Ok(response)
}

fn store_session(
    dashboard: &Dashboard,
    headers: &HeaderMap,
    session: &Session,
    response: &mut Response,
) {
    let cookie = set_cookie(
        SESSION_COOKIE,
        &session.seal(dashboard.sealer.as_ref()),
        std::time::Duration::from_secs(session.seconds_left()),
        dashboard.settings.secure_cookies,
        headers,
    );
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie.parse().expect("a valid header"));
}

pub(crate) async fn sign_out(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Submitted { .. }: Submitted<Confirmed>,
) -> Response {
    let mut response = Redirect::to("/dashboard/sign-in?reason=signed_out").into_response();
    let cookie = set_cookie(
        SESSION_COOKIE,
        "",
        std::time::Duration::ZERO,
        dashboard.settings.secure_cookies,
        &headers,
    );
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie.parse().expect("a valid header"));
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct SwitchForm {
    environment: String,
}

pub(crate) async fn switch_environment(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Submitted { signed, form }: Submitted<SwitchForm>,
) -> Result<Response, PageError> {
    let Some(environment) = known_environment(Some(&form.environment)) else {
        return Err(PageError::BadForm("no such environment".to_owned()));
    };
    if !signed.session.has_environment(&environment) {
        return Ok(
            Redirect::to(&format!("/dashboard/sign-in?environment={environment}")).into_response(),
        );
    }
    let mut session = signed.session;
    session.environment = environment;
    let mut response = Redirect::to("/dashboard").into_response();
    store_session(&dashboard, &headers, &session, &mut response);
    Ok(response)
}
