//! API keys (SPEC §4.2): the format and checksum (core), the cache or storage, core's
//! decision with `now`, then rate limits, credits and the organisation's cap, spent only when
//! everything before them passed. The outcome is counted in `/metrics`, queued for usage
//! analytics and, when valid, for `last_used_at`: never waited for.

use std::sync::Arc;

use keyward_core::model::Tenancy;
use keyward_core::permission::PermissionQuery;
use keyward_core::secret::KeyFormatError;
use keyward_core::usage::{Decision, Outcome};
use keyward_core::verify::{decide, KeyFacts, VerifyCode};
use keyward_core::{KeyHash, ParsedKey, Timestamp};
use keyward_store::StoreError;

use super::cache::{CachedKey, Peek};
use super::{Ask, Verification, VerificationError};
use crate::analytics::Subject;
use crate::usage::{ChargeRequest, OrganizationCharge, UsageError};

/// The verdict on an API key.
#[derive(Debug, Clone)]
pub struct KeyVerdict {
    pub code: VerifyCode,
    /// The key, when one was found in the caller's environment.
    pub key: Option<Arc<CachedKey>>,
    /// What usage control decided, for a valid key that has limits.
    pub usage: Option<Decision>,
}

impl KeyVerdict {
    pub fn invalid() -> Self {
        Self {
            code: VerifyCode::InvalidKey,
            key: None,
            usage: None,
        }
    }
}

/// What the in-memory path could tell.
#[derive(Debug)]
pub enum InMemory {
    /// The code, and the key when one was found.
    Decided(VerifyCode, Option<Arc<CachedKey>>),
    /// Well formed but not cached: storage must be asked about this hash.
    Miss(KeyHash),
}

impl Verification {
    /// Everything an API key's verification can decide without storage: the format, the
    /// checksum, the environment, and the cache. This is the hot path.
    pub fn verify_in_memory(
        &self,
        tenancy: &Tenancy,
        presented: &str,
        required: Option<&PermissionQuery>,
        now: Timestamp,
    ) -> InMemory {
        // A string in another format is looked up only if imported secrets may be in another
        // format, or if the filter of known credentials can refuse it from memory (which also
        // knows a foreign secret imported on another node a moment ago).
        let look_up_foreign =
            || self.cache.foreign_secrets_present() || self.cache.known.is_ready();
        let Some(hash) = api_key_hash(tenancy, presented, look_up_foreign) else {
            return InMemory::Decided(VerifyCode::InvalidKey, None);
        };
        match self
            .cache
            .peek_with::<CachedKey, _>(&hash, |entry| judge(tenancy, entry, required, now))
        {
            Peek::Hit((code, key)) => InMemory::Decided(code, key),
            Peek::Absent => InMemory::Decided(VerifyCode::InvalidKey, None),
            Peek::Miss => InMemory::Miss(hash),
        }
    }

    /// Verifies an API key presented in `tenancy`'s environment, charges it when valid, and
    /// counts the outcome.
    pub async fn verify_api_key(
        &self,
        tenancy: &Tenancy,
        presented: &str,
        ask: &Ask<'_>,
        now: Timestamp,
    ) -> Result<KeyVerdict, VerificationError> {
        let (code, key) = match self.verify_in_memory(tenancy, presented, ask.permissions, now) {
            InMemory::Decided(code, key) => (code, key),
            InMemory::Miss(hash) => {
                let store = Arc::clone(&self.store);
                let groups = &self.cache.groups;
                let limiter = &self.limiter;
                let loaded = self
                    .cache
                    .get_or_load(hash, || async move {
                        let generation = limiter.balance_generation();
                        Ok::<_, VerificationError>(store.find_key(hash).await?.map(|found| {
                            let expires_at = found.secret.expires_at;
                            let (key, policy) = (found.key, found.policy);
                            CachedKey::new(key, policy, expires_at, generation, groups)
                        }))
                    })
                    .await?;
                match loaded {
                    Some(entry) => judge(tenancy, &entry, ask.permissions, now),
                    None => (VerifyCode::InvalidKey, None),
                }
            }
        };
        let mut verdict = KeyVerdict {
            code,
            key,
            usage: None,
        };
        if let Some(entry) = verdict.key.clone().filter(|_| code.is_valid()) {
            verdict.usage = self.charge(&entry, ask, now).await?;
            verdict.code = usage_code(verdict.usage.as_ref());
            if verdict.code.is_valid() {
                self.last_used.record(&entry, now);
            }
            if let Some(decision) = &verdict.usage {
                self.raise_usage_alerts(&entry, decision, ask.credits_cost);
            }
        }
        self.metrics.count_verification(verdict.code);
        if self.usage_log.is_enabled() {
            let subject = match &verdict.key {
                Some(entry) => Subject::Key(Arc::clone(entry)),
                None => Subject::Unknown(tenancy.clone()),
            };
            self.usage_log.record(subject, verdict.code, now);
        }
        Ok(verdict)
    }

    /// Charges a key that passed every other check against its rate limits, credits and
    /// organisation (SPEC §4.2: last in the check order). `None` when nothing limits it.
    pub async fn charge(
        &self,
        entry: &CachedKey,
        ask: &Ask<'_>,
        now: Timestamp,
    ) -> Result<Option<Decision>, VerificationError> {
        let organization = match entry.organization() {
            Some((org, meter)) if !org.windows.is_empty() || org.cap.is_some() => {
                Some(OrganizationCharge {
                    meter,
                    windows: &org.windows,
                    cap: org.cap,
                })
            }
            _ => None,
        };
        let credits = entry.credits();
        if entry.windows().is_empty() && credits.is_none() && organization.is_none() {
            return Ok(None);
        }
        let request = ChargeRequest {
            meter: entry.meter(),
            windows: entry.windows(),
            credits: credits.map(|(credits, _)| credits),
            credits_generation: credits.map_or(0, |(_, generation)| generation),
            organization,
            cost: ask.credits_cost,
            idempotency_key: ask.idempotency_key,
            now,
        };
        // This node may have forgotten the key's balance once it was written back, after the
        // cached key was read: then it charges from what storage holds now. Another balance
        // of the same slot forgotten during that read asks for one more.
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        let mut charged = self.limiter.charge(&request).await;
        while matches!(charged, Err(UsageError::StaleCredits)) && attempt < ATTEMPTS {
            attempt += 1;
            let credits_generation = self.limiter.balance_generation();
            let credits = match self.store.key(entry.tenancy(), entry.id()).await {
                Ok(key) => key.credits,
                // Deleted meanwhile: nothing left to charge, and nothing to allow.
                Err(StoreError::NotFound(_)) => {
                    return Ok(Some(Decision {
                        outcome: Outcome::UsageExceeded,
                        rate: None,
                        credits_remaining: None,
                    }))
                }
                Err(error) => return Err(error.into()),
            };
            let fresh = ChargeRequest {
                credits,
                credits_generation,
                ..request
            };
            charged = self.limiter.charge(&fresh).await;
        }
        let decision = charged?;
        Ok(Some(decision))
    }

    /// The alerts a charge calls for; rare, and never waited for.
    fn raise_usage_alerts(&self, entry: &CachedKey, decision: &Decision, cost: i64) {
        match decision.outcome {
            Outcome::RateLimited { .. } => {
                if let Some(rate) = decision.rate {
                    self.events.rate_limited(entry, rate.limit, rate.reset_at);
                }
            }
            Outcome::Allowed => {
                if let Some(remaining) = decision.credits_remaining {
                    let threshold = entry.low_credits_threshold();
                    self.events.charged(entry, remaining, cost, threshold);
                }
            }
            Outcome::UsageExceeded => {}
        }
    }
}

/// The code a charge leaves a valid credential with.
pub(crate) fn usage_code(usage: Option<&Decision>) -> VerifyCode {
    match usage.map(|decision| decision.outcome) {
        Some(Outcome::RateLimited { .. }) => VerifyCode::RateLimited,
        Some(Outcome::UsageExceeded) => VerifyCode::UsageExceeded,
        Some(Outcome::Allowed) | None => VerifyCode::Valid,
    }
}

/// The hash to look a presented API key up by; `None` when it can be refused unread.
/// `look_up_foreign` says whether a string in another format is worth a look-up.
fn api_key_hash(
    tenancy: &Tenancy,
    presented: &str,
    look_up_foreign: impl FnOnce() -> bool,
) -> Option<KeyHash> {
    match ParsedKey::parse(presented) {
        // Root keys are never verified as API keys, and a key names its environment:
        // neither needs a look-up to refuse.
        Ok(parsed) if parsed.is_root_key() || parsed.environment() != tenancy.environment => None,
        Ok(parsed) => Some(parsed.hash()),
        // Keyward's own shape with a wrong checksum is a typo, whatever was imported.
        Err(KeyFormatError::BadChecksum) => None,
        Err(_) if plausible_secret(presented) && look_up_foreign() => Some(KeyHash::of(presented)),
        Err(_) => None,
    }
}

/// Whether a string that is not a Keyward secret could be an imported one: printable ASCII
/// without spaces, of a length secrets have.
fn plausible_secret(presented: &str) -> bool {
    (8..=256).contains(&presented.len()) && presented.bytes().all(|byte| byte.is_ascii_graphic())
}

/// Core's decision on a found key, in the caller's environment.
fn judge(
    tenancy: &Tenancy,
    entry: &Arc<CachedKey>,
    required: Option<&PermissionQuery>,
    now: Timestamp,
) -> (VerifyCode, Option<Arc<CachedKey>>) {
    // Another workspace's key is as unknown as a key never issued.
    if entry.tenancy() != tenancy {
        return (VerifyCode::InvalidKey, None);
    }
    let facts = KeyFacts {
        secret_expires_at: entry.secret_expires_at(),
        revoked: entry.is_revoked(),
        enabled: entry.is_enabled(),
        expires_at: entry.expires_at(),
        permissions: entry.permissions(),
    };
    let code = decide(&facts, required, now);
    (
        code,
        (code != VerifyCode::InvalidKey).then(|| Arc::clone(entry)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_strings_are_refused_unread_unless_worth_a_look_up() {
        let tenancy = Tenancy {
            workspace_id: "ws_1".to_owned(),
            environment: keyward_core::Environment::Live,
        };
        let foreign = "legacy_0123456789abcdef";
        assert_eq!(api_key_hash(&tenancy, foreign, || false), None);
        assert_eq!(
            api_key_hash(&tenancy, foreign, || true),
            Some(KeyHash::of(foreign))
        );
        // Keyward's shape with a bad checksum, too short, or not printable: still refused
        // unread.
        let mut typo = keyward_core::secret::IssuedSecret::generate(
            "acme",
            keyward_core::Environment::Live,
            &mut rand::rngs::OsRng,
        )
        .unwrap()
        .expose()
        .to_owned();
        let last = typo.pop().unwrap();
        typo.push(if last == 'x' { 'y' } else { 'x' });
        for refused in [typo.as_str(), "short", "has a space in it"] {
            assert_eq!(api_key_hash(&tenancy, refused, || true), None, "{refused}");
        }
    }
}
