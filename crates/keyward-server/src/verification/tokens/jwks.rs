//! Fetching JSON Web Key Sets: over HTTP(S) with a timeout, a size cap and a redirect limit,
//! never from a private, loopback or link-local address unless the operator allows it, and
//! never more than once at a time per URL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use reqwest::Url;
use tokio::sync::Mutex;

use super::VerificationKey;
use crate::outbound::{self, OutboundError};

/// How JWKS URLs are fetched.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// Lets `jwks_url` reach private, loopback and link-local addresses (SPEC §4.4:
    /// `KEYWARD_ALLOW_PRIVATE_JWKS`).
    pub allow_private: bool,
    /// For the whole fetch, redirects included.
    pub timeout: Duration,
    pub max_bytes: usize,
    pub max_redirects: usize,
    /// A set older than this is refreshed in the background on its next use.
    pub refresh_after: Duration,
    /// Unknown `kid`s re-fetch at most this often per URL. The first one after any other
    /// fetch goes at once, so that a key published after the last fetch is trusted at once.
    pub min_refetch_interval: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
            max_redirects: 3,
            refresh_after: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("the JWKS URL must be an absolute http or https URL")]
    InvalidUrl,
    #[error("the JWKS URL resolves to a private, loopback or link-local address")]
    PrivateAddress,
    #[error("the JWKS could not be fetched: {0}")]
    Unreachable(String),
    #[error("the JWKS answered with status {0}")]
    Status(u16),
    #[error("the JWKS is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the JWKS redirected more than {0} times")]
    TooManyRedirects(usize),
    #[error("the JWKS is not a valid JSON Web Key Set")]
    Invalid,
}

/// Checks what can be checked without the network: the scheme, and an address literal.
pub fn check_url(url: &str, settings: &JwksSettings) -> Result<Url, JwksError> {
    Ok(outbound::check_url(url, settings.allow_private)?)
}

impl From<OutboundError> for JwksError {
    fn from(error: OutboundError) -> Self {
        match error {
            OutboundError::InvalidUrl => Self::InvalidUrl,
            OutboundError::PrivateAddress => Self::PrivateAddress,
            OutboundError::Unreachable(why) => Self::Unreachable(why),
            OutboundError::TooLarge(cap) => Self::TooLarge(cap),
        }
    }
}

pub use crate::outbound::is_public;

/// The keys of one URL, and when they were fetched.
#[derive(Default)]
struct Fetched {
    keys: Option<Arc<Vec<VerificationKey>>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    /// The last fetch an unknown `kid` caused. Only these are throttled: the fetch that
    /// filled or refreshed the cache says nothing about a key published after it.
    unknown_kid_fetch_at: Option<Instant>,
}

struct Entry {
    state: std::sync::Mutex<Fetched>,
    /// Held by the one fetch in flight for this URL.
    fetching: Mutex<()>,
}

/// Every JWKS this node knows, by URL.
pub struct JwksCache {
    settings: JwksSettings,
    entries: DashMap<String, Arc<Entry>>,
    /// How many fetches were started, for tests and metrics.
    fetches: std::sync::atomic::AtomicU64,
}

impl JwksCache {
    pub fn new(settings: JwksSettings) -> Self {
        Self {
            settings,
            entries: DashMap::new(),
            fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> &JwksSettings {
        &self.settings
    }

    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn entry(&self, url: &str) -> Arc<Entry> {
        if let Some(entry) = self.entries.get(url) {
            return Arc::clone(&entry);
        }
        let entry = self.entries.entry(url.to_owned()).or_insert_with(|| {
            Arc::new(Entry {
                state: std::sync::Mutex::new(Fetched::default()),
                fetching: Mutex::new(()),
            })
        });
        Arc::clone(&entry)
    }

    /// The keys of `url`: cached ones (refreshed in the background once old), or fetched now
    /// when none are.
    pub async fn keys(self: &Arc<Self>, url: &str) -> Result<Arc<Vec<VerificationKey>>, JwksError> {
        let entry = self.entry(url);
        let (cached, stale) = {
            let state = entry.state.lock().expect("JWKS state lock");
            let stale = state
                .fetched_at
                .is_none_or(|at| at.elapsed() >= self.settings.refresh_after);
            (state.keys.clone(), stale)
        };
        match cached {
            Some(keys) => {
                if stale && entry.fetching.try_lock().is_ok() {
                    let cache = Arc::clone(self);
                    let url = url.to_owned();
                    tokio::spawn(async move {
                        let _ = cache.refetch(&url, false).await;
                    });
                }
                Ok(keys)
            }
            None => self.refetch(url, false).await,
        }
    }

    /// Fetches again because a token named a `kid` the cached set lacks: at most one fetch
    /// at a time, and none if the last fetch an unknown `kid` caused was under
    /// `min_refetch_interval` ago. A flood of random `kid`s thus costs one fetch per interval,
    /// while the first token signed with a newly published key needs no wait (established
    /// clients such as jose's `createRemoteJWKSet` count their cooldown from any fetch, and so
    /// refuse such a token for up to the interval).
    pub async fn keys_after_unknown_kid(
        self: &Arc<Self>,
        url: &str,
    ) -> Result<Arc<Vec<VerificationKey>>, JwksError> {
        self.refetch(url, true).await
    }

    async fn refetch(
        &self,
        url: &str,
        throttled: bool,
    ) -> Result<Arc<Vec<VerificationKey>>, JwksError> {
        let entry = self.entry(url);
        let asked_at = Instant::now();
        let _fetching = entry.fetching.lock().await;
        {
            let state = entry.state.lock().expect("JWKS state lock");
            // Another request fetched while this one waited: use its result.
            let fetched_meanwhile = state.attempted_at.is_some_and(|at| at >= asked_at);
            let within = |at: Option<Instant>| {
                at.is_some_and(|at| at.elapsed() < self.settings.min_refetch_interval)
            };
            let too_soon = if throttled {
                within(state.unknown_kid_fetch_at)
            } else {
                // A set that never loaded is not fetched again on every token.
                state.keys.is_none() && within(state.attempted_at)
            };
            if fetched_meanwhile || too_soon {
                return state
                    .keys
                    .clone()
                    .ok_or_else(|| JwksError::Unreachable("the last fetch failed".to_owned()));
            }
        }
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.fetch(url).await;
        let mut state = entry.state.lock().expect("JWKS state lock");
        state.attempted_at = Some(Instant::now());
        if throttled {
            state.unknown_kid_fetch_at = state.attempted_at;
        }
        match result {
            Ok(keys) => {
                let keys = Arc::new(keys);
                state.keys = Some(Arc::clone(&keys));
                state.fetched_at = state.attempted_at;
                Ok(keys)
            }
            Err(error) => {
                tracing::warn!(url, %error, "fetching a JWKS failed");
                // A failed refresh keeps the keys it had.
                state.keys.clone().ok_or(error)
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<Vec<VerificationKey>, JwksError> {
        tokio::time::timeout(self.settings.timeout, self.fetch_following_redirects(url))
            .await
            .map_err(|_| JwksError::Unreachable("timed out".to_owned()))?
    }

    async fn fetch_following_redirects(
        &self,
        url: &str,
    ) -> Result<Vec<VerificationKey>, JwksError> {
        let mut url = check_url(url, &self.settings)?;
        for _ in 0..=self.settings.max_redirects {
            let response = self.get_pinned(&url).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or(JwksError::Status(status.as_u16()))?;
                let next = url.join(location).map_err(|_| JwksError::InvalidUrl)?;
                url = check_url(next.as_str(), &self.settings)?;
                continue;
            }
            if !status.is_success() {
                return Err(JwksError::Status(status.as_u16()));
            }
            let body = self.read_capped(response).await?;
            return parse_jwks(&body);
        }
        Err(JwksError::TooManyRedirects(self.settings.max_redirects))
    }

    async fn get_pinned(&self, url: &Url) -> Result<reqwest::Response, JwksError> {
        let client =
            outbound::pinned_client(url, self.settings.allow_private, self.settings.timeout)
                .await?;
        client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| JwksError::Unreachable(error.without_url().to_string()))
    }

    async fn read_capped(&self, response: reqwest::Response) -> Result<Vec<u8>, JwksError> {
        Ok(outbound::read_capped(response, self.settings.max_bytes).await?)
    }
}

/// The usable keys of a published JWK set. Keys of a type Keyward cannot verify with, for
/// encryption, or symmetric are skipped.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<VerificationKey>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|_| JwksError::Invalid)?;
    Ok(set
        .keys
        .iter()
        .filter_map(serde_json::Value::as_object)
        .filter_map(|jwk| VerificationKey::from_jwk_json(jwk).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_fetched_by_default() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        let settings = JwksSettings::default();
        assert_eq!(
            check_url("http://169.254.169.254/latest", &settings),
            Err(JwksError::PrivateAddress)
        );
        assert_eq!(
            check_url("http://[::1]/jwks", &settings),
            Err(JwksError::PrivateAddress)
        );
        assert_eq!(
            check_url("file:///etc/passwd", &settings),
            Err(JwksError::InvalidUrl)
        );
        assert_eq!(
            check_url("https://u:p@example.com/", &settings),
            Err(JwksError::InvalidUrl)
        );
        assert!(check_url("https://example.com/.well-known/jwks.json", &settings).is_ok());
        let allowed = JwksSettings {
            allow_private: true,
            ..JwksSettings::default()
        };
        assert!(check_url("http://127.0.0.1:9/jwks", &allowed).is_ok());
    }
}
