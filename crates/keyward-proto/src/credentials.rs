use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use time::OffsetDateTime;

/// A JWT public key (`type: "jwt"`) or a client public key (`type: "client"`). Its `key` is
/// not secret and can be read again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PublicKey {
    pub id: String,
    /// `jwt` or `client`.
    #[serde(rename = "type")]
    pub key_type: String,
    pub name: String,
    pub environment: String,
    /// `pk_jwt_…`, `pk_live_…` or `pk_test_…`.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_claim: Option<String>,
    pub self_service_app: Option<String>,
    pub max_keys_per_user: u32,
    pub rate_limit_scheme: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePublicKeyRequest {
    /// `jwt` or `client`.
    #[serde(rename = "type")]
    pub key_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// JWT keys: where the end users' signing keys are published. Exactly one of `jwks_url`
    /// and `public_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// JWT keys: a PEM public key, a JWK or a JWK set, as a string or (a JWK or a set) as
    /// the JSON object itself. Never a private or symmetric key.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text_or_object"
    )]
    #[schema(schema_with = text_or_object_schema)]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// JWT keys: the allowed algorithms (RS256, RS384, RS512, PS256, PS384, PS512, ES256,
    /// ES384, EdDSA); never `none` or an HMAC algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// JWT keys: the claim that names the end user; `sub` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_claim: Option<String>,
    /// The app whose keys end users may manage themselves under `/api/v1/me/keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_service_app: Option<String>,
    /// 5 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys_per_user: Option<u32>,
    /// Limits each end user (subject) separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_scheme: Option<String>,
}

/// The public half of an ES256 signing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SigningKey {
    /// Put it in a user token's `kid`.
    pub id: String,
    pub name: String,
    pub environment: String,
    /// Always `ES256`.
    pub algorithm: String,
    pub public_key_pem: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The answer to creating a signing key: the only time its private key is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SigningKeyWithPrivateKey {
    #[serde(flatten)]
    pub key: SigningKey,
    /// PKCS#8 PEM.
    pub private_key_pem: String,
    /// Standard Base64 of `private_key_pem`, for environment variables.
    pub private_key_base64: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSigningKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A workspace key; its secret is never part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceKey {
    /// `wk_…`: the `key=` of a signature.
    pub id: String,
    pub name: String,
    pub environment: String,
    pub scopes: Vec<String>,
    /// Limits its signed calls to Keyward's API, as a root key's scheme does.
    #[serde(default)]
    pub rate_limit_scheme: Option<String>,
    /// The non-secret beginning of the secret.
    pub start: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The answer to creating or rotating a workspace key: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceKeyWithSecret {
    #[serde(flatten)]
    pub key: WorkspaceKey,
    pub secret: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspaceKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Like a root key's; `["*"]` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Limits its signed calls to Keyward's API; none by default. A key made by a limited
    /// key inherits that key's limit unless its maker holds `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_scheme: Option<String>,
}

/// An end user's new key (SPEC §4.1b).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMyKeyRequest {
    pub name: String,
    /// A subset of what the end user may give a key (the app's permissions, or a portal
    /// session's); all of them by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// Must be in the future; none by default.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<time::OffsetDateTime>,
}

/// A string as it is, or a JSON object as its text: inline keys come either way.
fn text_or_object<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrObject {
        Text(String),
        Object(serde_json::Map<String, serde_json::Value>),
    }
    Ok(
        match Option::<TextOrObject>::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a string, or a JWK or JWK set object")
        })? {
            None => None,
            Some(TextOrObject::Text(text)) => Some(text),
            Some(TextOrObject::Object(object)) => {
                Some(serde_json::Value::Object(object).to_string())
            }
        },
    )
}

fn text_or_object_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Object))
            .build(),
    )
}
