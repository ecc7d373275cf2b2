//! Which credential a request carries (SPEC §4.4), read from its headers or a WebSocket URL
//! without any look-up, and the shape of public keys.
//!
//! | credential | REST | WebSocket URL |
//! |---|---|---|
//! | secret key | `Authorization: Bearer <key>` or `X-API-Key: <key>` | `?api-key=<key>` |
//! | JWT public key | `X-API-Key: pk_jwt_…` + `Authorization: Bearer <jwt>` | `?api-key=…&token=…` |
//! | client public key | `X-API-Key: pk_live_…` (+ `Bearer <signed user token>`) | `?api-key=…&token=…` |
//! | workspace key | `Authorization: KW-HMAC-SHA256 key=…, ts=…, sig=…` | — |

use crate::signature::{SignatureHeader, SignatureHeaderError, SCHEME};
use crate::SecureRng;

/// `pk_jwt_` and 32 lowercase hex characters.
pub const JWT_PUBLIC_KEY_PREFIX: &str = "pk_jwt_";
const JWT_PUBLIC_KEY_HEX_LEN: usize = 32;

/// The app-key-like prefix of client public keys: `pk_live_…`, `pk_test_…`.
pub const CLIENT_PUBLIC_KEY_PREFIX: &str = "pk";

/// The prefix of workspace secrets, `wksec_<env>_…`; reserved so no app can issue look-alikes.
pub const WORKSPACE_SECRET_PREFIX: &str = "wksec";

/// A new `pk_jwt_…` value: 128 random bits in hex.
pub fn generate_jwt_public_key(rng: &mut impl SecureRng) -> String {
    let mut bytes = [0u8; JWT_PUBLIC_KEY_HEX_LEN / 2];
    rng.fill_bytes(&mut bytes);
    format!("{JWT_PUBLIC_KEY_PREFIX}{}", hex::encode(bytes))
}

/// Whether `candidate` has the exact shape of a JWT public key, so that truncated or garbage
/// values are refused before any look-up.
pub fn is_jwt_public_key(candidate: &str) -> bool {
    candidate
        .strip_prefix(JWT_PUBLIC_KEY_PREFIX)
        .is_some_and(|hex| {
            hex.len() == JWT_PUBLIC_KEY_HEX_LEN
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// What a request presents to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented<'a> {
    /// A root key or an app's API key.
    Secret(&'a str),
    /// A `pk_jwt_…` key, with the end user's JWT if one came with it.
    JwtPublicKey {
        key: &'a str,
        token: Option<&'a str>,
    },
    /// A `pk_live_…` / `pk_test_…` key, with a signed user token if one came with it.
    ClientPublicKey {
        key: &'a str,
        token: Option<&'a str>,
    },
    /// A request signed with a workspace key's secret.
    WorkspaceSignature(SignatureHeader<'a>),
}

impl Presented<'_> {
    /// The `credential_type` verification answers with.
    pub fn credential_type(&self) -> &'static str {
        match self {
            Presented::Secret(_) => "api_key",
            Presented::JwtPublicKey { .. } => "jwt",
            Presented::ClientPublicKey { .. } => "client_public_key",
            Presented::WorkspaceSignature(_) => "workspace_key",
        }
    }
}

/// Why no credential could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PresentedError {
    #[error("the request carries no credential")]
    Missing,
    #[error("the Authorization header is not `Bearer <credential>` or a KW-HMAC-SHA256 signature")]
    UnsupportedScheme,
    #[error("{0}")]
    Signature(#[from] SignatureHeaderError),
}

/// Reads the credential from the `Authorization` and `X-API-Key` header values.
///
/// A public key always travels in `X-API-Key`, and the `Bearer` value beside it is then its
/// token; otherwise the `Bearer` value (or else `X-API-Key`) is a secret key.
pub fn from_headers<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Result<Presented<'a>, PresentedError> {
    let x_api_key = x_api_key.map(str::trim).filter(|value| !value.is_empty());
    let bearer = match authorization
        .map(str::trim)
        .filter(|value| !value.is_empty())
    {
        None => None,
        Some(value) => {
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            if scheme.eq_ignore_ascii_case(SCHEME) {
                return Ok(Presented::WorkspaceSignature(SignatureHeader::parse(rest)?));
            }
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(PresentedError::UnsupportedScheme);
            }
            Some(rest.trim()).filter(|credential| !credential.is_empty())
        }
    };
    match x_api_key {
        Some(key) => Ok(with_public_key(key, bearer)
            .unwrap_or_else(|| Presented::Secret(bearer.unwrap_or(key)))),
        None => bearer
            .map(|secret| with_public_key(secret, None).unwrap_or(Presented::Secret(secret)))
            .ok_or(PresentedError::Missing),
    }
}

/// Reads the credential from a WebSocket URL's `api-key` and `token` parameters.
pub fn from_url_parameters<'a>(
    api_key: Option<&'a str>,
    token: Option<&'a str>,
) -> Result<Presented<'a>, PresentedError> {
    let key = api_key
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .ok_or(PresentedError::Missing)?;
    let token = token.map(str::trim).filter(|token| !token.is_empty());
    Ok(with_public_key(key, token).unwrap_or(Presented::Secret(key)))
}

fn with_public_key<'a>(key: &'a str, token: Option<&'a str>) -> Option<Presented<'a>> {
    if key.starts_with(JWT_PUBLIC_KEY_PREFIX) {
        Some(Presented::JwtPublicKey { key, token })
    } else if key.starts_with("pk_") {
        Some(Presented::ClientPublicKey { key, token })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_public_keys_have_one_exact_shape() {
        let key = generate_jwt_public_key(&mut rand::rngs::OsRng);
        assert!(is_jwt_public_key(&key), "{key}");
        assert_eq!(key.len(), JWT_PUBLIC_KEY_PREFIX.len() + 32);
        assert!(!is_jwt_public_key(&key[..key.len() - 1]), "truncated");
        assert!(!is_jwt_public_key(&format!("{key}0")), "too long");
        assert!(!is_jwt_public_key(&key.to_uppercase()));
        assert!(!is_jwt_public_key(
            "pk_jwt_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
        ));
    }

    #[test]
    fn a_public_key_takes_the_bearer_value_as_its_token() {
        assert_eq!(
            from_headers(Some("Bearer ey.x.y"), Some("pk_jwt_00")),
            Ok(Presented::JwtPublicKey {
                key: "pk_jwt_00",
                token: Some("ey.x.y")
            })
        );
        assert_eq!(
            from_headers(None, Some("pk_live_abc")),
            Ok(Presented::ClientPublicKey {
                key: "pk_live_abc",
                token: None
            })
        );
        assert_eq!(
            from_headers(Some("Bearer pk_jwt_00"), None),
            Ok(Presented::JwtPublicKey {
                key: "pk_jwt_00",
                token: None
            })
        );
    }

    #[test]
    fn secrets_come_from_bearer_before_x_api_key() {
        assert_eq!(
            from_headers(Some("bearer  sk_a "), Some("sk_b")),
            Ok(Presented::Secret("sk_a"))
        );
        assert_eq!(
            from_headers(None, Some("sk_b")),
            Ok(Presented::Secret("sk_b"))
        );
        assert_eq!(from_headers(None, None), Err(PresentedError::Missing));
        assert_eq!(
            from_headers(Some("Bearer"), None),
            Err(PresentedError::Missing)
        );
        assert_eq!(
            from_headers(Some("Basic abc"), Some("sk_b")),
            Err(PresentedError::UnsupportedScheme)
        );
    }

    #[test]
    fn hmac_signatures_are_recognised() {
        let presented = from_headers(
            Some("KW-HMAC-SHA256 key=wk_1, ts=1700000000, sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            None,
        )
        .unwrap();
        assert_eq!(presented.credential_type(), "workspace_key");
    }

    #[test]
    fn url_parameters_follow_the_same_rules() {
        assert_eq!(
            from_url_parameters(Some("pk_jwt_1"), Some("t")),
            Ok(Presented::JwtPublicKey {
                key: "pk_jwt_1",
                token: Some("t")
            })
        );
        assert_eq!(
            from_url_parameters(Some("sk_live_x"), None),
            Ok(Presented::Secret("sk_live_x"))
        );
        assert_eq!(
            from_url_parameters(None, Some("t")),
            Err(PresentedError::Missing)
        );
    }
}
