//! Limits on calls to Keyward's own API (root keys, demo sandboxes) and the headers that
//! report them: the IETF draft `RateLimit-Policy` / `RateLimit` fields
//! (draft-ietf-httpapi-ratelimit-headers) on every limited answer, and `Retry-After` on 429.
//!
//! A limit is checked deep inside a handler (or an extractor), but its headers belong on the
//! response, whatever it is. The request-context middleware puts a [`RateLimitSlot`] in the
//! request; the check fills it; the middleware writes the headers.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use ipnet::IpNet;
use keyward_core::usage::Outcome;
use keyward_core::Timestamp;

use crate::verification::CallReport;

/// Where a limit check leaves its count, for the middleware to put on the response.
#[derive(Debug, Clone, Default)]
pub(crate) struct RateLimitSlot(Arc<OnceLock<CallReport>>);

impl RateLimitSlot {
    pub(crate) fn report(&self) -> Option<&CallReport> {
        self.0.get()
    }

    pub(crate) fn fill(&self, report: CallReport) {
        let _ = self.0.set(report);
    }
}

pub(crate) fn seconds_until(at: Timestamp, now: Timestamp) -> i64 {
    // Rounded up: a client that waits this long finds the window reset.
    (at.as_millis() - now.as_millis())
        .max(0)
        .saturating_add(999)
        / 1000
}

fn policy_name(period_ms: i64) -> String {
    format!("\"{}s\"", period_ms / 1000)
}

/// Writes `RateLimit-Policy`, `RateLimit` and, on 429, `Retry-After`.
pub(crate) fn write_headers(report: &CallReport, status: StatusCode, headers: &mut HeaderMap) {
    let policy = report
        .windows
        .iter()
        .map(|window| {
            format!(
                "{};q={};w={}",
                policy_name(window.period_ms),
                window.limit,
                window.period_ms / 1000
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&policy) {
        headers.insert("ratelimit-policy", value);
    }
    if let Some(rate) = report.decision.rate {
        let value = format!(
            "{};r={};t={}",
            policy_name(rate.period_ms),
            rate.remaining,
            seconds_until(rate.reset_at, report.now)
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert("ratelimit", value);
        }
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        if let Outcome::RateLimited { retry_at } = report.decision.outcome {
            let seconds = seconds_until(retry_at, report.now).max(1);
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
/// untrusted address in `X-Forwarded-For` (read right to left, since each proxy appends
/// what it saw and only trusted ones can be believed).
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // Garbage before any untrusted hop: believe the last trusted one.
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(forwarded).unwrap());
        headers
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let spoofed = headers("6.6.6.6, 1.2.3.4");
        assert_eq!(
            client_ip("9.9.9.9".parse().unwrap(), &spoofed, &trusted),
            "9.9.9.9".parse::<IpAddr>().unwrap(),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            client_ip(proxy, &spoofed, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap(),
            "the proxy's own hop wins over what the client wrote before it"
        );
        assert_eq!(
            client_ip(proxy, &headers("1.2.3.4, 10.0.0.7"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap(),
            "chained trusted proxies are skipped"
        );
        assert_eq!(
            client_ip(proxy, &headers("nonsense"), &trusted),
            proxy,
            "garbage falls back to the proxy"
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[]), proxy);
    }
}
