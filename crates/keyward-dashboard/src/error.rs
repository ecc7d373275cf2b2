//! The one place where what went wrong in the dashboard becomes an answer.

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::api::ApiFailure;
use crate::session::SESSION_COOKIE;
use crate::view::render_with;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    /// No session, or one that expired: sign in first.
    #[error("not signed in")]
    SignedOut,
    /// The API refused the session's root key itself (revoked, expired, unknown).
    #[error("the root key was refused: {0}")]
    KeyRefused(String),
    /// A state change without this session's CSRF token.
    #[error("the form's CSRF token is missing or wrong")]
    Csrf,
    #[error("the form could not be read: {0}")]
    BadForm(String),
    #[error("no such page")]
    NotFound,
    #[error("the API refused: {}", .0.code)]
    Api(ApiFailure),
}

impl From<ApiFailure> for PageError {
    fn from(failure: ApiFailure) -> Self {
        if failure.is_credential_refusal() {
            Self::KeyRefused(failure.code)
        } else {
            Self::Api(failure)
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            PageError::SignedOut => return Redirect::to("/dashboard/sign-in").into_response(),
            PageError::KeyRefused(code) => {
                // The cookie is useless now: it goes, and the reason is shown at sign-in.
                let mut response =
                    Redirect::to(&format!("/dashboard/sign-in?reason={}", reason_code(code)))
                        .into_response();
                response.headers_mut().insert(
                    header::SET_COOKIE,
                    format!(
                        "{SESSION_COOKIE}=; Path=/dashboard; Max-Age=0; HttpOnly; SameSite=Strict"
                    )
                    .parse()
                    .expect("a valid header"),
                );
                return response;
            }
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not sent from this session's dashboard page (its CSRF token is \
                 missing or wrong). Go back, reload the page and try again."
                    .to_owned(),
            ),
            PageError::BadForm(reason) => (
                StatusCode::BAD_REQUEST,
                "Form not understood",
                format!("The form could not be read: {reason}."),
            ),
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page.".to_owned(),
            ),
            PageError::Api(failure) => (failure.status, "Keyward said no", failure.message.clone()),
        };
        render_with(
            status,
            &ErrorPage {
                title,
                message: &message,
            },
        )
    }
}

/// Only known reasons travel in the sign-in address; anything else is "refused".
fn reason_code(code: &str) -> &'static str {
    match code {
        "key_revoked" => "key_revoked",
        "key_expired" => "key_expired",
        "key_disabled" => "key_disabled",
        _ => "refused",
    }
}

/// The sentence for a reason in the sign-in address.
pub(crate) fn reason_text(reason: &str) -> Option<&'static str> {
    match reason {
        "key_revoked" => Some("Your root key was revoked. Sign in with another."),
        "key_expired" => Some("Your root key expired. Sign in with another."),
        "key_disabled" => Some("Your root key is disabled. Sign in with another."),
        "refused" => Some("Keyward no longer accepts your root key. Sign in again."),
        "signed_out" => Some("You are signed out."),
        _ => None,
    }
}
