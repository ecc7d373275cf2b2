//! Keyward's domain core: the key format, ids, scopes, permission expressions and the
//! verification decision.
//!
//! Architecture invariant: this crate does no I/O and never reads the clock. The current
//! time ([`Timestamp`]) and randomness (any [`SecureRng`]) are parameters, so every rule
//! here is testable without sleeping, mocking or a runtime.

pub mod address;
pub mod analytics;
pub mod base62;
pub mod credential;
pub mod event;
pub mod id;
pub mod leak;
pub mod model;
pub mod permission;
pub mod scope;
pub mod secret;
pub mod signature;
pub mod time;
pub mod token;
pub mod usage;
pub mod validate;
pub mod verify;
pub mod webhook;

pub use model::Environment;
pub use secret::{KeyHash, ParsedKey};
pub use time::Timestamp;

/// The randomness Keyward accepts: a cryptographically secure generator. The server passes
/// the operating system's CSPRNG; tests may pass a seeded one.
pub trait SecureRng: rand::RngCore + rand::CryptoRng {}

impl<T: rand::RngCore + rand::CryptoRng> SecureRng for T {}
