//! Resource ids such as `key_0UqQmPgn9Fh3kZ2bQ1aXy7`: a kind prefix, the creation time as
//! fixed-width base62 (so ids sort by age, which cursor pagination relies on), and random
//! characters so that ids cannot be guessed.

use crate::base62;
use crate::time::Timestamp;
use crate::SecureRng;

const TIME_LEN: usize = 8;
const RANDOM_LEN: usize = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Workspace,
    RootKey,
    App,
    Key,
    AuditEntry,
    JwtPublicKey,
    ClientPublicKey,
    SigningKey,
    WorkspaceKey,
    WebhookEndpoint,
    PortalSession,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Workspace => "ws",
            IdKind::RootKey => "rk",
            IdKind::App => "app",
            IdKind::Key => "key",
            IdKind::AuditEntry => "aud",
            IdKind::JwtPublicKey => "pkj",
            IdKind::ClientPublicKey => "pk",
            IdKind::SigningKey => "sgk",
            IdKind::WorkspaceKey => "wk",
            IdKind::WebhookEndpoint => "whe",
            IdKind::PortalSession => "ps",
        }
    }
}

pub fn generate(kind: IdKind, now: Timestamp, rng: &mut impl SecureRng) -> String {
    let mut time = [0u8; TIME_LEN];
    base62::encode_fixed(now.as_millis().max(0).unsigned_abs(), &mut time);
    let mut id = String::with_capacity(kind.prefix().len() + 1 + TIME_LEN + RANDOM_LEN);
    id.push_str(kind.prefix());
    id.push('_');
    id.extend(time.iter().map(|&b| char::from(b)));
    id.push_str(&base62::random_string(rng, RANDOM_LEN));
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ids_sort_by_creation_time() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let earlier = generate(
            IdKind::Key,
            Timestamp::from_millis(1_700_000_000_000),
            &mut rng,
        );
        let later = generate(
            IdKind::Key,
            Timestamp::from_millis(1_700_000_000_001),
            &mut rng,
        );
        assert!(earlier < later);
        assert!(earlier.starts_with("key_"));
        assert_eq!(earlier.len(), 4 + TIME_LEN + RANDOM_LEN);
    }
}
