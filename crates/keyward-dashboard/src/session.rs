//! The signed-in session: the root keys a browser signed in with, sealed into an HttpOnly,
//! SameSite=Strict cookie under the server's master key.
//!
//! The cookie is the whole session, so every node of a cluster can read it and nothing about
//! it is stored. The browser holds only ciphertext: no script can read it, and a copied
//! cookie ends with the session's lifetime or with its root key.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::Sealer;

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "kw_session";
/// The sign-in form's own CSRF cookie, set before there is a session.
pub(crate) const SIGN_IN_COOKIE: &str = "kw_sign_in";
/// Binds sealed sessions to their purpose: nothing else sealed by the master key opens here.
const SEAL_CONTEXT: &str = "keyward-dashboard-session";
/// How long a sign-in lasts.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long a sign-in form stays usable.
pub(crate) const SIGN_IN_LIFETIME: Duration = Duration::from_secs(3600);

/// What the session cookie holds.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    /// A root key per environment (`live`, `test`, `demo`), added as the user signs in to each.
    keys: BTreeMap<String, String>,
    /// The environment the pages show.
    pub(crate) environment: String,
    /// Every form's CSRF token.
    pub(crate) csrf: String,
    /// Unix seconds.
    expires_at: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("environments", &self.keys.keys().collect::<Vec<_>>())
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session holding `root_key` for `environment`, shown at once.
    pub(crate) fn new(environment: &str, root_key: String) -> Self {
        Self {
            keys: BTreeMap::from([(environment.to_owned(), root_key)]),
            environment: environment.to_owned(),
            csrf: random_token(),
            expires_at: unix_now() + SESSION_LIFETIME.as_secs(),
        }
    }

    /// Adds (or replaces) the key of `environment` and shows that environment.
    pub(crate) fn add_key(&mut self, environment: &str, root_key: String) {
        self.keys.insert(environment.to_owned(), root_key);
        self.environment = environment.to_owned();
    }

    /// The root key of the environment shown.
    pub(crate) fn root_key(&self) -> &str {
        self.keys.get(&self.environment).map_or("", String::as_str)
    }

    pub(crate) fn has_environment(&self, environment: &str) -> bool {
        self.keys.contains_key(environment)
    }

    pub(crate) fn environments(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub(crate) fn seal(&self, sealer: &dyn Sealer) -> String {
        let json = serde_json::to_vec(self).expect("a session serialises");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealer.seal(&json, SEAL_CONTEXT))
    }

    /// The session of a request, if its cookie is one this server sealed and it has not
    /// expired.
    pub(crate) fn from_headers(headers: &HeaderMap, sealer: &dyn Sealer) -> Option<Self> {
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cookie(headers, SESSION_COOKIE)?)
            .ok()?;
        let session: Session = serde_json::from_slice(&sealer.open(&sealed, SEAL_CONTEXT)?).ok()?;
        (session.expires_at > unix_now() && session.keys.contains_key(&session.environment))
            .then_some(session)
    }

    /// Seconds left, for the cookie's `Max-Age`.
    pub(crate) fn seconds_left(&self) -> u64 {
        self.expires_at.saturating_sub(unix_now())
    }

    /// Whether `token` is this session's CSRF token, compared in constant time.
    pub(crate) fn csrf_matches(&self, token: &str) -> bool {
        tokens_match(&self.csrf, token)
    }
}

/// Whether two tokens are equal, in time that does not depend on where they differ.
pub(crate) fn tokens_match(expected: &str, offered: &str) -> bool {
    !expected.is_empty()
        && aws_lc_rs::constant_time::verify_slices_are_equal(
            expected.as_bytes(),
            offered.as_bytes(),
        )
        .is_ok()
}

/// 128 random bits, hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the OS CSPRNG is available");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The value of the cookie `name`, if the request carries it.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// When cookies get the `Secure` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecureCookies {
    /// Unless the page was asked for on a loopback address (plain HTTP on one machine).
    #[default]
    Auto,
    Always,
    Never,
}

impl SecureCookies {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(Self::Auto),
            "always" => Some(Self::Always),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    fn applies(self, headers: &HeaderMap) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => !is_loopback_host(
                headers
                    .get(http::header::HOST)
                    .and_then(|host| host.to_str().ok())
                    .unwrap_or(""),
            ),
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, limited to the dashboard's paths.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    max_age: Duration,
    secure: SecureCookies,
    request: &HeaderMap,
) -> String {
    scoped_cookie(
        name,
        value,
        max_age,
        secure,
        request,
        "/dashboard",
        "Strict",
    )
}

/// A `Set-Cookie` value: HttpOnly, for `path` and what is under it, sent by the browser as
/// `same_site` says.
pub(crate) fn scoped_cookie(
    name: &str,
    value: &str,
    max_age: Duration,
    secure: SecureCookies,
    request: &HeaderMap,
    path: &str,
    same_site: &str,
) -> String {
    let secure = if secure.applies(request) {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite={same_site}{secure}",
        max_age.as_secs()
    )
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["localhost:8080", "127.0.0.1:80", "[::1]:8080", "127.1.2.3"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["keyward.example", "10.0.0.1:8080", "[2001:db8::1]:443", ""] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "a=1; kw_session=abc; kw_session_x=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "ab"));
        assert!(!tokens_match("", ""));
    }
}
