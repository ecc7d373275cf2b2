//! Requests Keyward makes to URLs its users give (JWKS, webhooks, scanners' key lists): never
//! to a private, loopback or link-local address unless the operator allows it
//! (`KEYWARD_ALLOW_PRIVATE_URLS`), checked on the URL and again on the addresses the host
//! resolves to, which are then the only ones connected to; no redirect followed by the
//! client itself; bodies read up to a cap.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::Url;

/// Whether an address is on the public internet (core's rules, for every URL Keyward fetches).
pub use keyward_core::address::is_public;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error("the URL must be an absolute http or https URL without credentials")]
    InvalidUrl,
    #[error("the URL resolves to a private, loopback or link-local address")]
    PrivateAddress,
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// Checks what can be checked without the network: the scheme, credentials in the URL, and
/// an address literal.
pub fn check_url(url: &str, allow_private: bool) -> Result<Url, OutboundError> {
    let parsed = Url::parse(url).map_err(|_| OutboundError::InvalidUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(OutboundError::InvalidUrl);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(OutboundError::InvalidUrl);
    }
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal {
        if !allow_private && !is_public(ip) {
            return Err(OutboundError::PrivateAddress);
        }
    }
    Ok(parsed)
}

/// Resolves `url`'s host once and checks every address it gives.
pub async fn resolve_checked(
    url: &Url,
    allow_private: bool,
) -> Result<(String, Vec<SocketAddr>), OutboundError> {
    let host = url.host_str().ok_or(OutboundError::InvalidUrl)?;
    let port = url
        .port_or_known_default()
        .ok_or(OutboundError::InvalidUrl)?;
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare_host.as_str(), port))
        .await
        .map_err(|error| OutboundError::Unreachable(error.to_string()))?
        .collect();
    if addresses.is_empty() {
        return Err(OutboundError::Unreachable(
            "the host has no address".to_owned(),
        ));
    }
    if !allow_private && addresses.iter().any(|addr| !is_public(addr.ip())) {
        return Err(OutboundError::PrivateAddress);
    }
    Ok((bare_host, addresses))
}

/// A client that reaches `url`'s host only at the addresses just resolved and checked, so a
/// DNS answer cannot change between the check and the connection. It follows no redirect.
pub async fn pinned_client(
    url: &Url,
    allow_private: bool,
    timeout: Duration,
) -> Result<reqwest::Client, OutboundError> {
    let (host, addresses) = resolve_checked(url, allow_private).await?;
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .resolve_to_addrs(&host, &addresses)
        .build()
        .map_err(|error| OutboundError::Unreachable(error.to_string()))
}

/// Reads a body, refusing one over `cap` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, OutboundError> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(OutboundError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > cap {
            return Err(OutboundError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads at most `cap` bytes of a body and drops the rest (for excerpts).
pub async fn read_prefix(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]),
            _ => break,
        }
    }
    body
}

/// A request error without its URL (which may carry a user's path or query).
pub fn unreachable(error: reqwest::Error) -> OutboundError {
    let error = error.without_url();
    let text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        error.to_string()
    };
    OutboundError::Unreachable(text)
}
