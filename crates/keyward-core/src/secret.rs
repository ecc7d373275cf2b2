//! The secret key format of SPEC §2: `<prefix>_<environment>_<random><checksum>`.
//!
//! `random` is [`RANDOM_LEN`] base62 characters (≈142 bits from a CSPRNG) and `checksum` is the
//! CRC32 of everything before it, as [`CHECKSUM_LEN`] fixed-width base62 characters. The
//! checksum lets a typo or a truncated key be refused without touching storage, and gives
//! secret scanners a format they can match exactly.

use crate::SecureRng;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::base62;
use crate::model::Environment;

pub const RANDOM_LEN: usize = 24;
pub const CHECKSUM_LEN: usize = 6;
/// Characters of the random part kept in the non-secret `start`.
pub const START_RANDOM_LEN: usize = 4;
/// Longest prefix an app may choose.
pub const MAX_PREFIX_LEN: usize = 20;
/// No well-formed key is longer; anything longer is refused before any other work.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + "_demo_".len() + RANDOM_LEN + CHECKSUM_LEN;

/// The prefix of root keys (`sk_live_…`), which authenticate calls to Keyward itself.
pub const ROOT_KEY_PREFIX: &str = "sk";
/// Prefixes an app may not take, because other credentials use them.
pub const RESERVED_PREFIXES: [&str; 5] = ["sk", "pk", "wk", "rk", "wksec"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is too long")]
    TooLong,
    #[error("the key is not of the form <prefix>_<environment>_<secret>")]
    Malformed,
    #[error("the key's prefix is not valid")]
    BadPrefix,
    #[error("the key's environment is not live, test or demo")]
    BadEnvironment,
    #[error("the key's checksum does not match; it may be mistyped or truncated")]
    BadChecksum,
}

/// A key whose format and checksum are valid. Borrowing keeps the verify path allocation-free.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    full: &'a str,
    prefix: &'a str,
    environment: Environment,
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("start", &self.start())
            .finish_non_exhaustive()
    }
}

impl<'a> ParsedKey<'a> {
    /// Checks the shape and the checksum; does no look-up.
    pub fn parse(candidate: &'a str) -> Result<Self, KeyFormatError> {
        if candidate.is_empty() {
            return Err(KeyFormatError::Empty);
        }
        if candidate.len() > MAX_KEY_LEN {
            return Err(KeyFormatError::TooLong);
        }
        let mut parts = candidate.rsplitn(3, '_');
        let (Some(body), Some(environment), Some(prefix)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyFormatError::Malformed);
        };
        if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(base62::is_base62) {
            return Err(KeyFormatError::Malformed);
        }
        validate_prefix(prefix).map_err(|_| KeyFormatError::BadPrefix)?;
        let environment = Environment::parse(environment).ok_or(KeyFormatError::BadEnvironment)?;
        let (signed, checksum) = candidate.split_at(candidate.len() - CHECKSUM_LEN);
        if checksum.as_bytes() != checksum_of(signed) {
            return Err(KeyFormatError::BadChecksum);
        }
        Ok(Self {
            full: candidate,
            prefix,
            environment,
        })
    }

    pub fn prefix(&self) -> &'a str {
        self.prefix
    }

    pub fn environment(&self) -> Environment {
        self.environment
    }

    pub fn is_root_key(&self) -> bool {
        self.prefix == ROOT_KEY_PREFIX
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.full)
    }

    /// The non-secret display form: prefix, environment and the first random characters.
    pub fn start(&self) -> String {
        let keep = self.prefix.len() + 1 + self.environment.as_str().len() + 1 + START_RANDOM_LEN;
        self.full[..keep].to_owned()
    }
}

/// The non-secret display form of a secret in another system's format: its prefix up to
/// the last `_` and the first few characters after it (`sk_live_AbCd` for `sk_live_AbCd…`),
/// or just the first few characters when it has no short prefix. It never shows more of the
/// random part than a Keyward secret's `start` does.
pub fn foreign_start(secret: &str) -> String {
    let prefix_len = secret
        .rfind('_')
        .map(|underscore| underscore + 1)
        .filter(|&len| len <= 24 && len * 2 <= secret.len())
        .unwrap_or(0);
    secret
        .char_indices()
        .nth(prefix_len + START_RANDOM_LEN)
        .map_or_else(
            || {
                secret
                    .chars()
                    .take(START_RANDOM_LEN.min(secret.len() / 2))
                    .collect()
            },
            |(end, _)| secret[..end].to_owned(),
        )
}

/// Why a prefix was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error(
        "a key prefix is 1 to 20 characters: a lowercase letter, then lowercase letters or digits"
    )]
    Invalid,
    #[error("this key prefix is reserved for Keyward's own credentials")]
    Reserved,
}

fn validate_prefix(prefix: &str) -> Result<(), PrefixError> {
    let bytes = prefix.as_bytes();
    let well_formed = (1..=MAX_PREFIX_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if well_formed {
        Ok(())
    } else {
        Err(PrefixError::Invalid)
    }
}

/// Checks a prefix an app asks for: well formed and not one of Keyward's own.
pub fn validate_app_prefix(prefix: &str) -> Result<(), PrefixError> {
    validate_prefix(prefix)?;
    if RESERVED_PREFIXES.contains(&prefix) {
        return Err(PrefixError::Reserved);
    }
    Ok(())
}

fn checksum_of(signed: &str) -> [u8; CHECKSUM_LEN] {
    let mut out = [0u8; CHECKSUM_LEN];
    base62::encode_fixed(u64::from(crc32fast::hash(signed.as_bytes())), &mut out);
    out
}

/// A freshly made secret. It is shown to its owner once and then only its hash is kept.
pub struct IssuedSecret {
    pub secret: SecretString,
    pub hash: KeyHash,
    pub start: String,
}

impl fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("start", &self.start)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl IssuedSecret {
    /// Makes a new key. `prefix` must already be valid (see [`validate_app_prefix`]).
    pub fn generate(
        prefix: &str,
        environment: Environment,
        rng: &mut impl SecureRng,
    ) -> Result<Self, PrefixError> {
        validate_prefix(prefix)?;
        let mut secret = String::with_capacity(MAX_KEY_LEN);
        secret.push_str(prefix);
        secret.push('_');
        secret.push_str(environment.as_str());
        secret.push('_');
        secret.push_str(&base62::random_string(rng, RANDOM_LEN));
        let checksum = checksum_of(&secret);
        secret.extend(checksum.iter().map(|&b| char::from(b)));
        let parsed = ParsedKey::parse(&secret).map_err(|_| PrefixError::Invalid)?;
        let (hash, start) = (parsed.hash(), parsed.start());
        Ok(Self {
            secret: SecretString::from(secret),
            hash,
            start,
        })
    }

    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

/// SHA-256 of a secret: the only form in which Keyward keeps it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads 64 hex digits, e.g. a hash given to `keyward import`.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", &self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_starts_show_a_prefix_and_four_characters() {
        assert_eq!(foreign_start("sk_live_AbCdEfGhIjKlMnOp"), "sk_live_AbCd");
        assert_eq!(foreign_start("AbCdEfGhIjKlMnOp"), "AbCd");
        // An underscore deep in the random part is not a prefix.
        assert_eq!(foreign_start("AbCdEfGh_IjK"), "AbCd");
        assert_eq!(foreign_start("abc"), "a");
    }
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn issue(prefix: &str, environment: Environment, seed: u64) -> IssuedSecret {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        IssuedSecret::generate(prefix, environment, &mut rng).expect("valid prefix")
    }

    #[test]
    fn issued_keys_have_the_documented_shape() {
        let key = issue("acme", Environment::Live, 1);
        let secret = key.expose();
        assert!(secret.starts_with("acme_live_"));
        assert_eq!(secret.len(), "acme_live_".len() + RANDOM_LEN + CHECKSUM_LEN);
        assert_eq!(key.start, secret[.."acme_live_".len() + 4]);
        assert_eq!(key.hash, KeyHash::of(secret));
        assert!(!format!("{key:?}").contains(secret));
    }

    #[test]
    fn root_keys_are_recognised_by_prefix() {
        let key = issue("sk", Environment::Test, 2);
        let parsed = ParsedKey::parse(key.expose()).unwrap();
        assert!(parsed.is_root_key());
        assert_eq!(parsed.environment(), Environment::Test);
    }

    #[test]
    fn malformed_keys_are_refused_with_a_reason() {
        let good = issue("kw", Environment::Live, 3);
        let good = good.expose();
        let cases = [
            ("", KeyFormatError::Empty),
            ("kw_live_", KeyFormatError::Malformed),
            ("nounderscores", KeyFormatError::Malformed),
            (&good[..good.len() - 1], KeyFormatError::Malformed),
            (
                "kw_prod_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                KeyFormatError::BadEnvironment,
            ),
            (
                "KW_live_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                KeyFormatError::BadPrefix,
            ),
            (
                "kw_live_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                KeyFormatError::BadChecksum,
            ),
        ];
        for (candidate, expected) in cases {
            assert_eq!(
                ParsedKey::parse(candidate).unwrap_err(),
                expected,
                "{candidate:?}"
            );
        }
        let long = "a".repeat(MAX_KEY_LEN + 1);
        assert_eq!(
            ParsedKey::parse(&long).unwrap_err(),
            KeyFormatError::TooLong
        );
    }

    #[test]
    fn app_prefixes_may_not_take_reserved_names() {
        assert_eq!(validate_app_prefix("sk"), Err(PrefixError::Reserved));
        assert_eq!(validate_app_prefix("pk"), Err(PrefixError::Reserved));
        assert_eq!(validate_app_prefix("a_b"), Err(PrefixError::Invalid));
        assert_eq!(validate_app_prefix("1abc"), Err(PrefixError::Invalid));
        assert_eq!(
            validate_app_prefix(&"a".repeat(21)),
            Err(PrefixError::Invalid)
        );
        assert_eq!(validate_app_prefix("acme2"), Ok(()));
    }

    fn environments() -> impl Strategy<Value = Environment> {
        prop_oneof![
            Just(Environment::Live),
            Just(Environment::Test),
            Just(Environment::Demo)
        ]
    }

    proptest! {
        #[test]
        fn generated_keys_parse_back(prefix in "[a-z][a-z0-9]{0,19}", environment in environments(), seed: u64) {
            let key = issue(&prefix, environment, seed);
            let parsed = ParsedKey::parse(key.expose()).unwrap();
            prop_assert_eq!(parsed.prefix(), prefix.as_str());
            prop_assert_eq!(parsed.environment(), environment);
            prop_assert_eq!(parsed.hash(), key.hash);
        }

        #[test]
        fn any_single_character_change_is_refused_offline(seed: u64, position in 0usize..64, replacement in proptest::char::any()) {
            let key = issue("acme", Environment::Live, seed);
            let original = key.expose();
            let position = position % original.len();
            let mut mutated: Vec<char> = original.chars().collect();
            prop_assume!(mutated[position] != replacement);
            mutated[position] = replacement;
            let mutated: String = mutated.into_iter().collect();
            prop_assert!(ParsedKey::parse(&mutated).is_err(), "{} was accepted", mutated);
        }

        #[test]
        fn any_truncation_is_refused_offline(seed: u64, keep in 0usize..40) {
            let key = issue("kw", Environment::Test, seed);
            let original = key.expose();
            prop_assume!(keep < original.len());
            prop_assert!(ParsedKey::parse(&original[..keep]).is_err());
        }

        #[test]
        fn arbitrary_input_never_panics(input in ".{0,80}") {
            let _ = ParsedKey::parse(&input);
        }
    }
}
