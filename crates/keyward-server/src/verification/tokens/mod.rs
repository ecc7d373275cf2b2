//! Verifying the tokens that come with public keys: end users' JWTs (checked against a JWKS
//! URL or an inline key) and signed user tokens (checked against the environment's signing
//! keys), with a cache of verified tokens until they expire.

pub mod jwks;

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keyward_core::model::{JwtKeySource, JwtSettings};
use keyward_core::token::{self, JwtAlgorithm, TokenError, UserTokenClaims, LEEWAY_SECONDS};
use keyward_core::Timestamp;

use super::cache::CachedPublicKey;
use jwks::{JwksCache, JwksError};

/// The share of `KEYWARD_CACHE_MAX_BYTES` verified tokens may hold (a sixteenth); the
/// verification cache has the rest.
pub const TOKEN_CACHE_SHARE: u64 = 16;

/// What a verified token's entry typically weighs, for sizing the cache's index up front.
const TYPICAL_TOKEN_BYTES: u64 = 700;

/// A public key that can verify signatures, with the `kid` it is known by.
#[derive(Clone)]
pub struct VerificationKey {
    pub key_id: Option<String>,
    /// The JWK's `alg`, when it names one: then it verifies that algorithm only, as
    /// established JOSE libraries hold (RFC 7517 §4.4).
    pub algorithm: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// JWK members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a JWK cannot verify signatures for Keyward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnusableJwk {
    /// It holds a private or symmetric key, which must never be given to Keyward.
    Secret,
    /// It is for encryption, names an algorithm Keyward does not verify, or is malformed.
    NotForSignatures,
}

impl VerificationKey {
    /// A key from a JWK given as JSON, refusing private and symmetric keys outright.
    pub fn from_jwk_json(
        value: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, UnusableJwk> {
        if value.get("kty").and_then(serde_json::Value::as_str) == Some("oct")
            || PRIVATE_JWK_MEMBERS
                .iter()
                .any(|member| value.contains_key(*member))
        {
            return Err(UnusableJwk::Secret);
        }
        let jwk: Jwk = serde_json::from_value(serde_json::Value::Object(value.clone()))
            .map_err(|_| UnusableJwk::NotForSignatures)?;
        Self::from_jwk(&jwk)
    }

    fn from_jwk(jwk: &Jwk) -> Result<Self, UnusableJwk> {
        use jsonwebtoken::jwk::{KeyAlgorithm, PublicKeyUse};
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            return Err(UnusableJwk::NotForSignatures);
        }
        let algorithm = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::HS256 | KeyAlgorithm::HS384 | KeyAlgorithm::HS512) => {
                return Err(UnusableJwk::Secret)
            }
            Some(named) => Some(
                named
                    .to_string()
                    .parse::<Algorithm>()
                    .map_err(|_| UnusableJwk::NotForSignatures)?,
            ),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|_| UnusableJwk::NotForSignatures)?;
        if algorithm.is_some_and(|algorithm| algorithm.family() != key.family()) {
            return Err(UnusableJwk::NotForSignatures);
        }
        Ok(Self {
            key_id: jwk.common.key_id.clone(),
            algorithm,
            key,
        })
    }

    /// The public half of one of Keyward's ES256 signing keys, named by its id.
    pub fn of_signing_key(signing_key: &keyward_core::model::SigningKey) -> Option<Self> {
        DecodingKey::from_ec_pem(signing_key.public_key_pem.as_bytes())
            .ok()
            .map(|key| Self {
                key_id: Some(signing_key.id.clone()),
                algorithm: Some(Algorithm::ES256),
                key,
            })
    }

    fn fits(&self, algorithm: Algorithm) -> bool {
        self.key.family() == algorithm.family()
            && self.algorithm.is_none_or(|named| named == algorithm)
    }
}

const PRIVATE_KEY_GIVEN: &str = "`public_key` holds a private or symmetric key. Give Keyward \
     only the public half, and treat the key you sent as exposed";

/// Reads an inline public key: a PEM (RSA, EC or Ed25519), a JWK, or a JWK set. A private
/// or symmetric key is refused, never stored: Keyward must not hold what signs tokens.
pub fn parse_inline_keys(text: &str) -> Result<Vec<VerificationKey>, &'static str> {
    let text = text.trim();
    let keys = if text.starts_with("-----BEGIN") {
        if text.contains("PRIVATE KEY-----") {
            return Err(PRIVATE_KEY_GIVEN);
        }
        let pem = text.as_bytes();
        let key = DecodingKey::from_rsa_pem(pem)
            .or_else(|_| DecodingKey::from_ec_pem(pem))
            .or_else(|_| DecodingKey::from_ed_pem(pem))
            .map_err(|_| "`public_key` is not an RSA, EC or Ed25519 public key in PEM")?;
        vec![VerificationKey {
            key_id: None,
            algorithm: None,
            key,
        }]
    } else {
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|_| "`public_key` is not a PEM or a JWK")?;
        match json.get("keys") {
            Some(serde_json::Value::Array(members)) => {
                let mut keys = Vec::new();
                for member in members {
                    let serde_json::Value::Object(member) = member else {
                        return Err("`public_key` is not a valid JWK set");
                    };
                    match VerificationKey::from_jwk_json(member) {
                        Ok(key) => keys.push(key),
                        Err(UnusableJwk::Secret) => return Err(PRIVATE_KEY_GIVEN),
                        // As in a published set: keys for other uses are skipped.
                        Err(UnusableJwk::NotForSignatures) => {}
                    }
                }
                keys
            }
            Some(_) => return Err("`public_key` is not a valid JWK set"),
            None => vec![
                VerificationKey::from_jwk_json(&json).map_err(|error| match error {
                    UnusableJwk::Secret => PRIVATE_KEY_GIVEN,
                    UnusableJwk::NotForSignatures => "`public_key` is not a usable JWK",
                })?,
            ],
        }
    };
    if keys.is_empty() {
        return Err("`public_key` holds no key Keyward can verify with");
    }
    Ok(keys)
}

fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Rs384 => Algorithm::RS384,
        JwtAlgorithm::Rs512 => Algorithm::RS512,
        JwtAlgorithm::Ps256 => Algorithm::PS256,
        JwtAlgorithm::Ps384 => Algorithm::PS384,
        JwtAlgorithm::Ps512 => Algorithm::PS512,
        JwtAlgorithm::Es256 => Algorithm::ES256,
        JwtAlgorithm::Es384 => Algorithm::ES384,
        JwtAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

fn token_error(error: &jsonwebtoken::errors::Error) -> TokenError {
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::IssuerMismatch,
        ErrorKind::InvalidAudience => TokenError::AudienceMismatch,
        ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => TokenError::AlgorithmNotAllowed,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => TokenError::InvalidSignature,
        _ => TokenError::Malformed,
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    pub subject: String,
    /// The tenant of a signed user token.
    pub tenant: Option<String>,
    /// From a JWT's `permissions` (array) or `scope` (space-separated) claim.
    pub permissions: Vec<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Why a token could not be checked: it is bad, or its keys are out of reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    Token(TokenError),
    Jwks(JwksError),
}

impl From<TokenError> for TokenRefusal {
    fn from(error: TokenError) -> Self {
        Self::Token(error)
    }
}

struct CachedToken {
    /// The public key as cached when the token was verified. Any change to the key, its
    /// environment or its signing keys makes the verifier load a new entry, so a token
    /// verified under the old one no longer matches.
    public_key: std::sync::Weak<CachedPublicKey>,
    token: Box<str>,
    identity: Arc<TokenIdentity>,
}

impl CachedToken {
    /// What the entry holds, with the cache's bookkeeping (as the verification cache counts
    /// it).
    fn approximate_bytes(&self) -> u64 {
        let identity = &self.identity;
        let bytes = super::cache::CACHE_SLOT_BYTES
            + std::mem::size_of::<Self>()
            + self.token.len()
            + std::mem::size_of::<TokenIdentity>()
            + identity.subject.len()
            + identity.tenant.as_deref().map_or(0, str::len)
            + identity
                .permissions
                .iter()
                .map(|permission| permission.len() + std::mem::size_of::<String>())
                .sum::<usize>();
        bytes as u64
    }
}

#[derive(Clone)]
struct WeighTokens;

impl quick_cache::Weighter<u64, Arc<CachedToken>> for WeighTokens {
    fn weight(&self, _: &u64, token: &Arc<CachedToken>) -> u64 {
        token.approximate_bytes()
    }
}

/// Checks tokens, remembering verified ones until their `exp` within a bound in bytes
/// (`quick_cache`, whose admission keeps a flood of fresh tokens from pushing out the hot
/// ones). An expired token's entry never answers; it waits to be evicted.
pub struct TokenVerifier {
    jwks: Arc<JwksCache>,
    cache: quick_cache::sync::Cache<u64, Arc<CachedToken>, WeighTokens>,
    hasher: std::collections::hash_map::RandomState,
}

impl TokenVerifier {
    pub fn new(jwks: Arc<JwksCache>, max_bytes: u64) -> Self {
        Self {
            jwks,
            cache: quick_cache::sync::Cache::with_weighter(
                usize::try_from(max_bytes / TYPICAL_TOKEN_BYTES).unwrap_or(usize::MAX),
                max_bytes,
                WeighTokens,
            ),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Drops every verified token, so the next check of each verifies its signature again
    /// (benchmarks measure the cold path this way).
    pub fn forget_tokens(&self) {
        self.cache.clear();
    }

    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    /// The cache slot of a token. The signature part alone is hashed (it is short and
    /// unique per token); a hit still compares the whole token and the public key.
    fn slot(&self, public_key_id: &str, token: &str) -> u64 {
        let signature = token.rsplit('.').next().unwrap_or(token);
        let mut hasher = self.hasher.build_hasher();
        public_key_id.hash(&mut hasher);
        signature.hash(&mut hasher);
        hasher.finish()
    }

    /// A verified token of this public key that has not expired.
    pub fn cached(
        &self,
        public_key: &Arc<CachedPublicKey>,
        token: &str,
        now: Timestamp,
    ) -> Option<Arc<TokenIdentity>> {
        let entry = self.cache.get(&self.slot(&public_key.key.id, token))?;
        let now_seconds = now.as_millis().div_euclid(1000);
        (entry.token.as_ref() == token
            && std::ptr::eq(entry.public_key.as_ptr(), Arc::as_ptr(public_key))
            && entry.identity.expires_at > now_seconds - LEEWAY_SECONDS)
            .then(|| Arc::clone(&entry.identity))
    }

    fn remember(
        &self,
        public_key: &Arc<CachedPublicKey>,
        token: &str,
        identity: &Arc<TokenIdentity>,
    ) {
        self.cache.insert(
            self.slot(&public_key.key.id, token),
            Arc::new(CachedToken {
                public_key: Arc::downgrade(public_key),
                token: token.into(),
                identity: Arc::clone(identity),
            }),
        );
    }

    /// Verifies an end user's JWT for a JWT public key.
    pub async fn verify_jwt(
        &self,
        public_key: &Arc<CachedPublicKey>,
        settings: &JwtSettings,
        token: &str,
        now: Timestamp,
    ) -> Result<Arc<TokenIdentity>, TokenRefusal> {
        if let Some(identity) = self.cached(public_key, token, now) {
            return Ok(identity);
        }
        let header = token::peek_header(token, &settings.algorithms)?;
        let alg = algorithm(header.algorithm);
        let claims = match &settings.source {
            JwtKeySource::Inline(_) => decode_with(
                &public_key.verification_keys,
                &header.key_id,
                alg,
                token,
                settings,
            )?,
            JwtKeySource::JwksUrl(url) => {
                let keys = self.jwks.keys(url).await.map_err(TokenRefusal::Jwks)?;
                match decode_with(&keys, &header.key_id, alg, token, settings) {
                    Err(TokenRefusal::Token(TokenError::UnknownKeyId)) => {
                        let keys = self
                            .jwks
                            .keys_after_unknown_kid(url)
                            .await
                            .map_err(TokenRefusal::Jwks)?;
                        decode_with(&keys, &header.key_id, alg, token, settings)?
                    }
                    other => other?,
                }
            }
        };
        let identity = Arc::new(jwt_identity(&claims, settings, now)?);
        self.remember(public_key, token, &identity);
        Ok(identity)
    }

    /// Verifies a signed user token for a client public key (ES256, signed with one of the
    /// environment's signing keys, named by `kid` when it has one).
    pub fn verify_user_token(
        &self,
        public_key: &Arc<CachedPublicKey>,
        token: &str,
        now: Timestamp,
    ) -> Result<Arc<TokenIdentity>, TokenRefusal> {
        let signing_keys = &public_key.verification_keys;
        if let Some(identity) = self.cached(public_key, token, now) {
            return Ok(identity);
        }
        let header = token::peek_header(token, &[JwtAlgorithm::Es256])?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = LEEWAY_SECONDS.unsigned_abs();
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let claims: UserTokenClaims =
            try_keys(signing_keys, &header.key_id, Algorithm::ES256, |key| {
                jsonwebtoken::decode::<UserTokenClaims>(token, key, &validation)
                    .map(|data| data.claims)
            })?;
        let subscriber = claims.subscriber(now)?;
        let identity = Arc::new(TokenIdentity {
            subject: subscriber.entity_id,
            tenant: Some(subscriber.tenant),
            permissions: Vec::new(),
            expires_at: subscriber.expires_at,
        });
        self.remember(public_key, token, &identity);
        Ok(identity)
    }
}

/// Tries the keys that could have signed the token: the one its `kid` names, or every key
/// of the right family when it names none.
fn try_keys<T>(
    keys: &[VerificationKey],
    key_id: &Option<String>,
    alg: Algorithm,
    decode: impl Fn(&DecodingKey) -> Result<T, jsonwebtoken::errors::Error>,
) -> Result<T, TokenError> {
    let named =
        |key: &&VerificationKey| key_id.is_none() || key.key_id.is_none() || key.key_id == *key_id;
    let mut candidates = keys
        .iter()
        .filter(named)
        .filter(|key| key.fits(alg))
        .peekable();
    if candidates.peek().is_none() {
        // A key by that `kid` exists, but of another type or for another algorithm.
        let named_explicitly = key_id.is_some()
            && keys
                .iter()
                .any(|key| key.key_id.is_some() && key.key_id == *key_id);
        return Err(if named_explicitly {
            TokenError::KeyMismatch
        } else {
            TokenError::UnknownKeyId
        });
    }
    let mut last = TokenError::InvalidSignature;
    for candidate in candidates {
        match decode(&candidate.key) {
            Ok(value) => return Ok(value),
            // Another key may still verify it; any other failure is the token's own.
            Err(error) if matches!(error.kind(), ErrorKind::InvalidSignature) => {
                last = TokenError::InvalidSignature;
            }
            Err(error) => return Err(token_error(&error)),
        }
    }
    Err(last)
}

fn decode_with(
    keys: &[VerificationKey],
    key_id: &Option<String>,
    alg: Algorithm,
    token: &str,
    settings: &JwtSettings,
) -> Result<serde_json::Map<String, serde_json::Value>, TokenRefusal> {
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECONDS.unsigned_abs();
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &settings.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &settings.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    try_keys(keys, key_id, alg, |key| {
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation)
            .map(|data| data.claims)
    })
    .map_err(TokenRefusal::Token)
}

fn jwt_identity(
    claims: &serde_json::Map<String, serde_json::Value>,
    settings: &JwtSettings,
    now: Timestamp,
) -> Result<TokenIdentity, TokenError> {
    token::check_issued_at(claims.get("iat").and_then(serde_json::Value::as_i64), now)?;
    let subject = match claims.get(&settings.subject_claim) {
        Some(serde_json::Value::String(subject)) if !subject.is_empty() => subject.clone(),
        Some(serde_json::Value::Number(number)) => number.to_string(),
        _ => return Err(TokenError::MissingClaim),
    };
    let permissions = match (claims.get("permissions"), claims.get("scope")) {
        (Some(serde_json::Value::Array(names)), _) => names
            .iter()
            .filter_map(|name| name.as_str().map(str::to_owned))
            .collect(),
        (_, Some(serde_json::Value::String(scope))) => {
            scope.split_whitespace().map(str::to_owned).collect()
        }
        _ => Vec::new(),
    };
    let expires_at = claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or(TokenError::MissingClaim)?;
    Ok(TokenIdentity {
        subject,
        tenant: None,
        permissions,
        expires_at,
    })
}
