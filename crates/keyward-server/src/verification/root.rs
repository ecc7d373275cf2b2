//! Root keys, the credentials of Keyward's own API: looked up like API keys and decided by
//! core's `verify::decide`, with no permissions asked.

use std::sync::Arc;

use keyward_core::verify::{decide, KeyFacts, VerifyCode};
use keyward_core::{ParsedKey, Timestamp};

use super::cache::CachedRootKey;
use super::{Denied, Refusal, Verification};

impl Verification {
    /// Authenticates a root key (`sk_live_…`, `sk_test_…`, `sk_demo_…`).
    pub async fn authenticate_root(
        &self,
        presented: &str,
        now: Timestamp,
    ) -> Result<Arc<CachedRootKey>, Denied> {
        let parsed = ParsedKey::parse(presented).map_err(|_| Refusal::InvalidKey)?;
        if !parsed.is_root_key() {
            return Err(Refusal::InvalidKey.into());
        }
        let hash = parsed.hash();
        let store = Arc::clone(&self.store);
        let entry = self
            .cache
            .get_or_load(hash, || async move {
                Ok::<_, Denied>(store.find_root_key(hash).await?.map(|found| CachedRootKey {
                    meter: format!("calls:{}", found.key.call_limit().meter),
                    key: found.key,
                    secret_expires_at: found.secret.expires_at,
                    windows: found.windows,
                }))
            })
            .await?
            .ok_or(Refusal::InvalidKey)?;
        // A key names its environment; one stored under another is as unknown.
        if entry.key.tenancy.environment != parsed.environment() {
            return Err(Refusal::InvalidKey.into());
        }
        let facts = KeyFacts {
            secret_expires_at: entry.secret_expires_at,
            revoked: entry.key.revoked_at.is_some(),
            enabled: true,
            expires_at: entry.key.expires_at,
            permissions: &[],
        };
        match decide(&facts, None, now) {
            VerifyCode::Valid => Ok(entry),
            VerifyCode::KeyRevoked => Err(Refusal::KeyRevoked.into()),
            VerifyCode::KeyExpired => Err(Refusal::KeyExpired.into()),
            _ => Err(Refusal::InvalidKey.into()),
        }
    }
}
