//! Rules for the tokens that come with public keys: end-user JWTs (with `pk_jwt_…`) and
//! signed user tokens (with `pk_live_…` / `pk_test_…`). Signatures are checked by the server
//! with a crypto library; what is decided here needs none.

use base64::Engine as _;
use serde::Deserialize;

use crate::time::Timestamp;

/// Longer tokens are refused unread.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// `nbf`, `iat` and `exp` are honoured with this much leeway.
pub const LEEWAY_SECONDS: i64 = 60;

/// The tenant of a signed user token that names none.
pub const DEFAULT_TENANT: &str = "default";

/// The only `entity_type` a signed user token may have.
pub const SUBSCRIBER: &str = "subscriber";

/// The asymmetric algorithms a JWT public key may allow. HMAC algorithms are never allowed
/// with a public key, and `none` never at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl JwtAlgorithm {
    pub const EVERY: [JwtAlgorithm; 9] = [
        JwtAlgorithm::Rs256,
        JwtAlgorithm::Rs384,
        JwtAlgorithm::Rs512,
        JwtAlgorithm::Ps256,
        JwtAlgorithm::Ps384,
        JwtAlgorithm::Ps512,
        JwtAlgorithm::Es256,
        JwtAlgorithm::Es384,
        JwtAlgorithm::EdDsa,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Rs384 => "RS384",
            JwtAlgorithm::Rs512 => "RS512",
            JwtAlgorithm::Ps256 => "PS256",
            JwtAlgorithm::Ps384 => "PS384",
            JwtAlgorithm::Ps512 => "PS512",
            JwtAlgorithm::Es256 => "ES256",
            JwtAlgorithm::Es384 => "ES384",
            JwtAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// Exact, case-sensitive names as in RFC 7518.
    pub fn parse(name: &str) -> Option<Self> {
        Self::EVERY.into_iter().find(|alg| alg.as_str() == name)
    }
}

/// Why a token was refused; `code()` is the error code of SPEC §3 and `message()` the
/// fixed sentence that goes with it (never the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Malformed,
    AlgorithmNotAllowed,
    InvalidSignature,
    UnknownKeyId,
    KeyMismatch,
    UnsupportedCritical,
    Expired,
    NotYetValid,
    MissingClaim,
    IssuerMismatch,
    AudienceMismatch,
    InvalidEntityType,
}

impl TokenError {
    pub const fn code(self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Malformed => "token_malformed",
            TokenError::AlgorithmNotAllowed => "token_algorithm_not_allowed",
            TokenError::InvalidSignature => "token_invalid_signature",
            TokenError::UnknownKeyId => "token_unknown_kid",
            TokenError::KeyMismatch => "token_key_mismatch",
            TokenError::UnsupportedCritical => "token_crit_unsupported",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::MissingClaim => "token_missing_claim",
            TokenError::IssuerMismatch => "token_issuer_mismatch",
            TokenError::AudienceMismatch => "token_audience_mismatch",
            TokenError::InvalidEntityType => "token_invalid_entity_type",
        }
    }

    pub const fn message(self) -> &'static str {
        match self {
            TokenError::Missing => "This public key needs a token in `Authorization: Bearer …`",
            TokenError::Malformed => "The token is not a well-formed JWT",
            TokenError::AlgorithmNotAllowed => "The token's algorithm is not allowed for this key",
            TokenError::InvalidSignature => "The token's signature does not verify",
            TokenError::UnknownKeyId => {
                "The token was signed with a key this public key does not know"
            }
            TokenError::KeyMismatch => {
                "The key the token names cannot verify the token's algorithm"
            }
            TokenError::UnsupportedCritical => {
                "The token's header marks an extension critical that Keyward does not support"
            }
            TokenError::Expired => "The token has expired",
            TokenError::NotYetValid => "The token is not valid yet",
            TokenError::MissingClaim => "The token lacks a required claim",
            TokenError::IssuerMismatch => "The token's issuer is not the one this key expects",
            TokenError::AudienceMismatch => "The token's audience is not the one this key expects",
            TokenError::InvalidEntityType => {
                "A signed user token must have `entity_type: \"subscriber\"`"
            }
        }
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for TokenError {}

/// What a JWT's header says, read before any signature check to pick the key and refuse
/// algorithms early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub algorithm: JwtAlgorithm,
    pub key_id: Option<String>,
}

/// Reads a compact JWT's header. Refuses anything but three Base64url parts and an allowed
/// asymmetric `alg`; `allowed` is the key's own allow-list.
pub fn peek_header(token: &str, allowed: &[JwtAlgorithm]) -> Result<TokenHeader, TokenError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
        kid: Option<String>,
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_claims), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let members: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    // RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` names an extension it
    // does not understand. Keyward understands none, so any `crit`, even `null`, is refused.
    if members.contains_key("crit") {
        return Err(TokenError::UnsupportedCritical);
    }
    let raw: RawHeader = serde_json::from_value(serde_json::Value::Object(members))
        .map_err(|_| TokenError::Malformed)?;
    let algorithm = JwtAlgorithm::parse(&raw.alg)
        .filter(|algorithm| allowed.contains(algorithm))
        .ok_or(TokenError::AlgorithmNotAllowed)?;
    Ok(TokenHeader {
        algorithm,
        key_id: raw.kid,
    })
}

/// `iat` in the future (beyond the leeway) means a token not yet valid. The signature
/// library checks `exp` and `nbf`; this covers what it does not.
pub fn check_issued_at(issued_at: Option<i64>, now: Timestamp) -> Result<(), TokenError> {
    let now_seconds = now.as_millis().div_euclid(1000);
    match issued_at {
        Some(iat) if iat > now_seconds.saturating_add(LEEWAY_SECONDS) => {
            Err(TokenError::NotYetValid)
        }
        _ => Ok(()),
    }
}

/// The claims of a signed user token (SPEC §4.4).
#[derive(Debug, Clone, Deserialize)]
pub struct UserTokenClaims {
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub scope: Option<UserTokenScope>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserTokenScope {
    pub tenant_id: Option<String>,
}

/// Who a signed user token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub entity_id: String,
    pub tenant: String,
    pub expires_at: i64,
}

impl UserTokenClaims {
    /// Applies the claim rules; the signature and `exp` were checked already.
    pub fn subscriber(self, now: Timestamp) -> Result<Subscriber, TokenError> {
        if self.entity_type.as_deref() != Some(SUBSCRIBER) {
            return Err(TokenError::InvalidEntityType);
        }
        let (Some(entity_id), Some(expires_at), Some(issued_at)) = (
            self.entity_id.filter(|id| !id.is_empty()),
            self.exp,
            self.iat,
        ) else {
            return Err(TokenError::MissingClaim);
        };
        check_issued_at(Some(issued_at), now)?;
        let tenant = self
            .scope
            .and_then(|scope| scope.tenant_id)
            .filter(|tenant| !tenant.is_empty())
            .unwrap_or_else(|| DEFAULT_TENANT.to_owned());
        Ok(Subscriber {
            entity_id,
            tenant,
            expires_at,
        })
    }
}

/// Whether a request for `requested` (the `X-Tenant-Id` header, if any) may use a token of
/// `token_tenant`. A request that names no tenant acts in the token's.
pub fn tenant_allowed(requested: Option<&str>, token_tenant: &str) -> bool {
    requested.is_none_or(|requested| requested == token_tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str) -> String {
        format!("{}.{}.sig", encode(header), encode("{}"))
    }

    #[test]
    fn headers_name_an_allowed_asymmetric_algorithm() {
        let allowed = [JwtAlgorithm::Es256, JwtAlgorithm::EdDsa];
        assert_eq!(
            peek_header(&token(r#"{"alg":"ES256","kid":"k1"}"#), &allowed),
            Ok(TokenHeader {
                algorithm: JwtAlgorithm::Es256,
                key_id: Some("k1".to_owned())
            })
        );
        for critical in [r#"["exp"]"#, r#"["b64"]"#, "[]", r#""x""#, "null"] {
            assert_eq!(
                peek_header(
                    &token(&format!(r#"{{"alg":"ES256","crit":{critical}}}"#)),
                    &allowed
                ),
                Err(TokenError::UnsupportedCritical),
                "{critical}"
            );
        }
        for refused in ["none", "HS256", "RS256", "es256", ""] {
            assert_eq!(
                peek_header(&token(&format!(r#"{{"alg":"{refused}"}}"#)), &allowed),
                Err(TokenError::AlgorithmNotAllowed),
                "{refused}"
            );
        }
    }

    #[test]
    fn malformed_tokens_are_refused_unread() {
        let allowed = JwtAlgorithm::EVERY;
        for bad in [
            String::new(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            format!("{}.e30.sig", encode("not json")),
            format!("{}.e30.sig", encode(r#"{"kid":"x"}"#)),
            "%%%.e30.sig".to_owned(),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(
                peek_header(&bad, &allowed),
                Err(TokenError::Malformed),
                "{bad:.40}"
            );
        }
    }

    fn claims(json: serde_json::Value) -> UserTokenClaims {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn signed_user_tokens_speak_for_subscribers_of_a_tenant() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let subscriber = claims(serde_json::json!({
            "entity_type": "subscriber", "entity_id": "usr_1",
            "exp": 1_700_000_600, "iat": 1_700_000_000, "scope": {"tenant_id": "acme"}
        }))
        .subscriber(now)
        .unwrap();
        assert_eq!(subscriber.tenant, "acme");
        let untenanted = claims(serde_json::json!({
            "entity_type": "subscriber", "entity_id": "usr_1", "exp": 1, "iat": 1
        }))
        .subscriber(now)
        .unwrap();
        assert_eq!(untenanted.tenant, DEFAULT_TENANT);
        assert_eq!(
            claims(
                serde_json::json!({"entity_type": "admin", "entity_id": "u", "exp": 1, "iat": 1})
            )
            .subscriber(now),
            Err(TokenError::InvalidEntityType)
        );
        assert_eq!(
            claims(serde_json::json!({"entity_type": "subscriber", "entity_id": "u", "exp": 1}))
                .subscriber(now),
            Err(TokenError::MissingClaim)
        );
        assert_eq!(
            claims(serde_json::json!({
                "entity_type": "subscriber", "entity_id": "u", "exp": 1, "iat": 1_700_000_061
            }))
            .subscriber(now),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn a_request_may_not_cross_tenants() {
        assert!(tenant_allowed(None, "acme"));
        assert!(tenant_allowed(Some("acme"), "acme"));
        assert!(!tenant_allowed(Some("other"), "acme"));
        assert!(!tenant_allowed(Some("default"), "acme"));
    }
}
