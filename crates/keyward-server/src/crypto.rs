//! Keyward's own cryptography, all with aws-lc-rs: the master key that seals workspace
//! secrets (AES-256-GCM), and ES256 signing-key pairs.

use std::fmt;

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine as _;

/// 32 bytes that seal workspace secrets at rest. Every node of a cluster needs the same one.
pub struct MasterKey {
    key: RandomizedNonceKey,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("the master key must be the standard Base64 of 32 random bytes")]
    Malformed,
}

impl MasterKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MasterKeyError> {
        if bytes.len() != Self::LEN {
            return Err(MasterKeyError::Malformed);
        }
        let key =
            RandomizedNonceKey::new(&AES_256_GCM, bytes).map_err(|_| MasterKeyError::Malformed)?;
        Ok(Self { key })
    }

    /// Reads the Base64 form kept in settings or the key file.
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| MasterKeyError::Malformed)?;
        Self::from_bytes(&bytes)
    }

    /// A new random key, in its Base64 form (for the key file) and ready to use.
    pub fn generate() -> (String, Self) {
        let mut bytes = [0u8; Self::LEN];
        aws_lc_rs::rand::fill(&mut bytes).expect("the OS CSPRNG is available");
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        let key = Self::from_bytes(&bytes).expect("32 bytes make an AES-256 key");
        (text, key)
    }

    /// Seals `plaintext` bound to `context` (the record's id, so a sealed value cannot be
    /// moved to another record): nonce, then ciphertext and tag.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let mut in_out = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(context.as_bytes()), &mut in_out)
            .expect("AES-GCM sealing of a short secret cannot fail");
        let mut sealed = nonce.as_ref().to_vec();
        sealed.extend_from_slice(&in_out);
        sealed
    }

    /// `None` when the value was not sealed by this key for this context.
    pub fn open(&self, sealed: &[u8], context: &str) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .ok()?;
        Some(plaintext.to_vec())
    }
}

/// The dashboard's session cookies are sealed like workspace secrets, under their own
/// context.
impl keyward_dashboard::Sealer for MasterKey {
    fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        MasterKey::seal(self, plaintext, context)
    }

    fn open(&self, sealed: &[u8], context: &str) -> Option<Vec<u8>> {
        MasterKey::open(self, sealed, context)
    }
}

/// A new ES256 key pair: the private key as PKCS#8 PEM (shown once), the public key as
/// SubjectPublicKeyInfo PEM (kept).
pub struct GeneratedSigningKey {
    pub private_key_pem: secrecy::SecretString,
    pub public_key_pem: String,
}

pub fn generate_signing_key() -> GeneratedSigningKey {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .expect("P-256 key generation cannot fail with the OS CSPRNG");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .expect("a freshly generated PKCS#8 document parses");
    let public_der = pair
        .public_key()
        .as_der()
        .expect("a P-256 public key encodes as SubjectPublicKeyInfo");
    GeneratedSigningKey {
        private_key_pem: pem_encode("PRIVATE KEY", pkcs8.as_ref()).into(),
        public_key_pem: pem_encode("PUBLIC KEY", public_der.as_ref()),
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("Base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_context() {
        let (text, key) = MasterKey::generate();
        let sealed = key.seal(b"wksec_live_abc", "wk_1");
        assert!(
            !sealed.windows(6).any(|w| w == b"wksec_"),
            "the secret is not in the clear"
        );
        assert_eq!(
            key.open(&sealed, "wk_1").as_deref(),
            Some(&b"wksec_live_abc"[..])
        );
        assert_eq!(key.open(&sealed, "wk_2"), None, "bound to its record");
        let (_, other) = MasterKey::generate();
        assert_eq!(other.open(&sealed, "wk_1"), None);
        let same = MasterKey::from_base64(&text).unwrap();
        assert!(same.open(&sealed, "wk_1").is_some());
        assert_ne!(key.seal(b"x", "c"), key.seal(b"x", "c"), "nonces are fresh");
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert_eq!(key.open(b"short", "wk_1"), None);
    }

    #[test]
    fn signing_keys_sign_tokens_their_public_half_verifies() {
        let generated = generate_signing_key();
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(
            generated.private_key_pem.expose_secret().as_bytes(),
        )
        .unwrap();
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let token = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"exp": 4_000_000_000u64}),
            &encoding,
        )
        .unwrap();
        let decoding =
            jsonwebtoken::DecodingKey::from_ec_pem(generated.public_key_pem.as_bytes()).unwrap();
        let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
    }
}
