//! `KW-HMAC-SHA256` request signatures of workspace keys (SPEC §4.4).
//!
//! `sig` is the standard Base64 of HMAC-SHA256, keyed with the secret's UTF-8 bytes, over
//! `METHOD\nPATH?QUERY\nTS\nhex(sha256(body))`, with `?QUERY` left out when the query is empty.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::time::Timestamp;

/// The `Authorization` scheme.
pub const SCHEME: &str = "KW-HMAC-SHA256";

/// How far a signature's timestamp may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

const SIGNATURE_LEN: usize = 32;
const MAX_KEY_LEN: usize = 64;

/// The parameters of a `KW-HMAC-SHA256 key=…, ts=…, sig=…` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureHeader<'a> {
    /// The workspace key's id, `wk_…`.
    pub key: &'a str,
    /// Unix seconds.
    pub timestamp: i64,
    pub signature: [u8; SIGNATURE_LEN],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureHeaderError {
    Malformed,
    Duplicate,
    BadTimestamp,
    BadSignature,
}

impl SignatureHeaderError {
    pub const fn message(self) -> &'static str {
        match self {
            SignatureHeaderError::Malformed => {
                "the signature header must be `KW-HMAC-SHA256 key=<wk_…>, ts=<unix seconds>, \
                 sig=<base64>`"
            }
            SignatureHeaderError::Duplicate => {
                "the signature header names a parameter more than once"
            }
            SignatureHeaderError::BadTimestamp => "`ts` must be Unix seconds",
            SignatureHeaderError::BadSignature => {
                "`sig` must be the standard Base64 of a 32-byte HMAC-SHA256"
            }
        }
    }
}

impl std::fmt::Display for SignatureHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for SignatureHeaderError {}

impl<'a> SignatureHeader<'a> {
    /// Parses what follows the scheme: `key=…, ts=…, sig=…`, in any order.
    pub fn parse(parameters: &'a str) -> Result<Self, SignatureHeaderError> {
        let (mut key, mut timestamp, mut signature) = (None, None, None);
        for part in parameters.split(',') {
            let (name, value) = part
                .trim()
                .split_once('=')
                .ok_or(SignatureHeaderError::Malformed)?;
            let slot = match name.trim() {
                "key" => &mut key,
                "ts" => &mut timestamp,
                "sig" => &mut signature,
                _ => return Err(SignatureHeaderError::Malformed),
            };
            if slot.replace(value.trim()).is_some() {
                return Err(SignatureHeaderError::Duplicate);
            }
        }
        let (Some(key), Some(timestamp), Some(signature)) = (key, timestamp, signature) else {
            return Err(SignatureHeaderError::Malformed);
        };
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SignatureHeaderError::Malformed);
        }
        if timestamp.is_empty()
            || timestamp.len() > 12
            || !timestamp.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(SignatureHeaderError::BadTimestamp);
        }
        let timestamp = timestamp
            .parse()
            .map_err(|_| SignatureHeaderError::BadTimestamp)?;
        let mut decoded = [0u8; SIGNATURE_LEN + 3];
        let len = base64::engine::general_purpose::STANDARD
            .decode_slice(signature, &mut decoded)
            .map_err(|_| SignatureHeaderError::BadSignature)?;
        let signature = decoded[..len]
            .try_into()
            .map_err(|_| SignatureHeaderError::BadSignature)?;
        Ok(Self {
            key,
            timestamp,
            signature,
        })
    }

    /// Whether the timestamp is within [`MAX_CLOCK_SKEW_SECONDS`] of `now`.
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        let now_seconds = now.as_millis().div_euclid(1000);
        (now_seconds - self.timestamp).abs() <= MAX_CLOCK_SKEW_SECONDS
    }
}

/// What a request's signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Without the `?`; empty when the request has no query.
    pub query: &'a str,
    pub timestamp: i64,
    /// Lowercase hex SHA-256 of the body (of the empty string for no body).
    pub body_sha256: &'a str,
}

impl SignedRequest<'_> {
    fn mac(&self, secret: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(self.method.as_bytes());
        mac.update(b"\n");
        mac.update(self.path.as_bytes());
        if !self.query.is_empty() {
            mac.update(b"?");
            mac.update(self.query.as_bytes());
        }
        mac.update(b"\n");
        mac.update(self.timestamp.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(self.body_sha256.as_bytes());
        mac
    }

    /// The signature a client computes (for SDKs and tests).
    pub fn sign(&self, secret: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.mac(secret).finalize().into_bytes())
    }

    /// Checks `signature` in constant time.
    pub fn verify(&self, secret: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        self.mac(secret).verify_slice(signature).is_ok()
    }
}

/// Lowercase hex SHA-256, as signatures and `body_sha256` carry a body's digest.
/// `body_digest(b"")`, for requests without a body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub fn body_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Whether `text` is a lowercase hex SHA-256.
pub fn is_body_digest(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_digest_is_the_digest_of_nothing() {
        assert_eq!(body_digest(b""), EMPTY_BODY_SHA256);
    }

    fn request<'a>(body_sha256: &'a str, query: &'a str) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            path: "/api/v1/apps",
            query,
            timestamp: 1_700_000_000,
            body_sha256,
        }
    }

    #[test]
    fn signatures_cover_method_path_query_time_and_body() {
        let body = body_digest(b"{}");
        let signed = request(&body, "");
        let sig = signed.sign(b"secret");
        let header = format!("key=wk_1, ts=1700000000, sig={sig}");
        let parsed = SignatureHeader::parse(&header).unwrap();
        assert!(signed.verify(b"secret", &parsed.signature));
        assert!(!signed.verify(b"other", &parsed.signature));
        let other_body = body_digest(b"{ }");
        assert!(!request(&other_body, "").verify(b"secret", &parsed.signature));
        assert!(!request(&body, "a=1").verify(b"secret", &parsed.signature));
        let other_path = SignedRequest {
            path: "/api/v1/keys",
            ..signed
        };
        assert!(!other_path.verify(b"secret", &parsed.signature));
    }

    #[test]
    fn the_string_to_sign_matches_the_spec() {
        // Independently: HMAC over the documented string.
        let body = body_digest(b"");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(format!("GET\n/api/v1/apps?limit=5\n1700000000\n{body}").as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let signed = SignedRequest {
            method: "GET",
            path: "/api/v1/apps",
            query: "limit=5",
            timestamp: 1_700_000_000,
            body_sha256: &body,
        };
        assert_eq!(signed.sign(b"k"), expected);
    }

    #[test]
    fn headers_are_parsed_strictly() {
        let sig = "A".repeat(43) + "=";
        assert!(SignatureHeader::parse(&format!("sig={sig},ts=1,key=wk_a")).is_ok());
        for bad in [
            String::new(),
            "key=wk_a, ts=1".to_owned(),
            format!("key=wk_a, ts=-1, sig={sig}"),
            format!("key=wk_a, ts=1.5, sig={sig}"),
            "key=wk_a, ts=1, sig=AAAA".to_owned(),
            format!("key=wk_a, ts=1, sig={sig}, extra=1"),
            format!("key=wk_a, key=wk_b, ts=1, sig={sig}"),
            format!("key=, ts=1, sig={sig}"),
            format!("key=wk_a, ts=99999999999999999999, sig={sig}"),
        ] {
            assert!(SignatureHeader::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_fresh_for_five_minutes_either_way() {
        let header = |timestamp| SignatureHeader {
            key: "wk",
            timestamp,
            signature: [0; 32],
        };
        let now = Timestamp::from_millis(1_700_000_000_500);
        assert!(header(1_700_000_000 - 300).is_fresh(now));
        assert!(header(1_700_000_000 + 300).is_fresh(now));
        assert!(!header(1_700_000_000 - 301).is_fresh(now));
        assert!(!header(1_700_000_000 + 301).is_fresh(now));
    }
}
