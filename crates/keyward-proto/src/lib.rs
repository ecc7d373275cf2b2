//! Keyward's wire types: the JSON bodies of SPEC §3–4, shared by the server, the CLI and the
//! SDK so that the three can never disagree about a field.
//!
//! Architecture invariant: only plain data lives here; no behaviour, no I/O. Request types
//! reject unknown fields, timestamps travel as RFC 3339 strings, and every type carries its
//! OpenAPI schema.

mod analytics;
mod apps;
mod common;
mod credentials;
mod environment;
mod events;
mod import;
mod keys;
mod leaks;
mod portal;
mod root_keys;
mod usage;
mod verify;
mod webhooks;

pub use analytics::*;
pub use apps::*;
pub use common::*;
pub use credentials::*;
pub use environment::*;
pub use events::*;
pub use import::*;
pub use keys::*;
pub use leaks::*;
pub use portal::*;
pub use root_keys::*;
pub use usage::*;
pub use verify::*;
pub use webhooks::*;

/// Serde helpers for PATCH bodies, where a field may be absent (keep), `null` (clear) or a value.
pub mod patch {
    use serde::{Deserialize, Deserializer};

    /// `Some(None)` for an explicit `null`, `None` for an absent field (with `#[serde(default)]`).
    pub fn nullable<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}
