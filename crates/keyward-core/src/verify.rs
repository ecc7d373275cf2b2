//! The verification decision of SPEC §4.2, as a pure function of what storage knows and `now`.
//!
//! Check order: format and checksum (see [`crate::secret::ParsedKey`]), look-up (the caller's),
//! then the checks here: the secret's own grace period, revoked, disabled, expired, permissions.
//! Rate limits and credits come after these and are spent only when everything before passed.

use serde::{Deserialize, Serialize};

use crate::permission::PermissionQuery;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    Valid,
    InvalidKey,
    KeyRevoked,
    KeyDisabled,
    KeyExpired,
    InsufficientPermissions,
    TenantMismatch,
    RateLimited,
    UsageExceeded,
}

impl VerifyCode {
    pub const EVERY: [VerifyCode; 9] = [
        VerifyCode::Valid,
        VerifyCode::InvalidKey,
        VerifyCode::KeyRevoked,
        VerifyCode::KeyDisabled,
        VerifyCode::KeyExpired,
        VerifyCode::InsufficientPermissions,
        VerifyCode::TenantMismatch,
        VerifyCode::RateLimited,
        VerifyCode::UsageExceeded,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            VerifyCode::Valid => "VALID",
            VerifyCode::InvalidKey => "INVALID_KEY",
            VerifyCode::KeyRevoked => "KEY_REVOKED",
            VerifyCode::KeyDisabled => "KEY_DISABLED",
            VerifyCode::KeyExpired => "KEY_EXPIRED",
            VerifyCode::InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
            VerifyCode::TenantMismatch => "TENANT_MISMATCH",
            VerifyCode::RateLimited => "RATE_LIMITED",
            VerifyCode::UsageExceeded => "USAGE_EXCEEDED",
        }
    }

    /// The HTTP status the caller's own API should answer with.
    pub const fn http_status(self) -> u16 {
        match self {
            VerifyCode::Valid => 200,
            VerifyCode::InvalidKey => 401,
            VerifyCode::KeyRevoked
            | VerifyCode::KeyDisabled
            | VerifyCode::KeyExpired
            | VerifyCode::InsufficientPermissions
            | VerifyCode::TenantMismatch => 403,
            VerifyCode::RateLimited | VerifyCode::UsageExceeded => 429,
        }
    }

    pub const fn is_valid(self) -> bool {
        matches!(self, VerifyCode::Valid)
    }
}

/// What the decision needs to know about a key that was found.
#[derive(Debug, Clone, Copy)]
pub struct KeyFacts<'a> {
    /// End of the grace period when this is a superseded secret of a rotated key.
    pub secret_expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub enabled: bool,
    pub expires_at: Option<Timestamp>,
    pub permissions: &'a [String],
}

pub fn decide(
    facts: &KeyFacts<'_>,
    required: Option<&PermissionQuery>,
    now: Timestamp,
) -> VerifyCode {
    if facts.secret_expires_at.is_some_and(|end| end <= now) {
        // A superseded secret past its grace period is as unknown as one never issued.
        return VerifyCode::InvalidKey;
    }
    if facts.revoked {
        return VerifyCode::KeyRevoked;
    }
    if !facts.enabled {
        return VerifyCode::KeyDisabled;
    }
    if facts.expires_at.is_some_and(|end| end <= now) {
        return VerifyCode::KeyExpired;
    }
    if let Some(query) = required {
        if !query.is_satisfied_by(facts.permissions) {
            return VerifyCode::InsufficientPermissions;
        }
    }
    VerifyCode::Valid
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_000_000);

    fn active(permissions: &[String]) -> KeyFacts<'_> {
        KeyFacts {
            secret_expires_at: None,
            revoked: false,
            enabled: true,
            expires_at: None,
            permissions,
        }
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        let none: Vec<String> = Vec::new();
        let needs_admin = PermissionQuery::parse("admin").unwrap();
        let everything_wrong = KeyFacts {
            secret_expires_at: Some(NOW),
            revoked: true,
            enabled: false,
            expires_at: Some(NOW),
            permissions: &none,
        };
        let mut facts = everything_wrong;
        let mut seen = Vec::new();
        loop {
            let code = decide(&facts, Some(&needs_admin), NOW);
            seen.push(code);
            match code {
                VerifyCode::InvalidKey => facts.secret_expires_at = None,
                VerifyCode::KeyRevoked => facts.revoked = false,
                VerifyCode::KeyDisabled => facts.enabled = true,
                VerifyCode::KeyExpired => facts.expires_at = None,
                _ => break,
            }
        }
        assert_eq!(
            seen,
            [
                VerifyCode::InvalidKey,
                VerifyCode::KeyRevoked,
                VerifyCode::KeyDisabled,
                VerifyCode::KeyExpired,
                VerifyCode::InsufficientPermissions,
            ]
        );
    }

    #[test]
    fn expiry_is_exclusive_of_the_instant() {
        let none: Vec<String> = Vec::new();
        let mut facts = active(&none);
        facts.expires_at = Some(NOW.plus_millis(1));
        assert_eq!(decide(&facts, None, NOW), VerifyCode::Valid);
        assert_eq!(
            decide(&facts, None, NOW.plus_millis(1)),
            VerifyCode::KeyExpired
        );
        facts.expires_at = None;
        facts.secret_expires_at = Some(NOW.plus_seconds(60));
        assert_eq!(decide(&facts, None, NOW), VerifyCode::Valid);
        assert_eq!(
            decide(&facts, None, NOW.plus_seconds(60)),
            VerifyCode::InvalidKey
        );
    }

    #[test]
    fn statuses_match_the_spec() {
        assert_eq!(VerifyCode::Valid.http_status(), 200);
        assert_eq!(VerifyCode::InvalidKey.http_status(), 401);
        assert_eq!(VerifyCode::KeyRevoked.http_status(), 403);
        assert_eq!(VerifyCode::RateLimited.http_status(), 429);
    }
}
