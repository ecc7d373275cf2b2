//! Webhooks (SPEC §4.8): the signing secret and the Standard Webhooks signature, which events
//! an endpoint takes, when a failed delivery is tried again, and when an endpoint that keeps
//! failing is turned off.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::event::EventType;
use crate::model::Tenancy;
use crate::{SecureRng, Timestamp};

/// What a signing secret starts with (Standard Webhooks' convention).
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a signing secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 24;
/// The type of the event `POST …/{id}/test` sends. It is sent only to the endpoint asked.
pub const TEST_EVENT_TYPE: &str = "webhook.test";
/// How long a replaced secret keeps signing alongside its successor.
pub const PREVIOUS_SECRET_GRACE_SECONDS: i64 = 24 * 60 * 60;
/// The most bytes of an endpoint's answer the delivery log keeps.
pub const RESPONSE_EXCERPT_BYTES: usize = 1024;

/// An endpoint's signing secret, `whsec_<base64>`. Its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    text: String,
    key: Vec<u8>,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(whsec_…)")
    }
}

impl WebhookSecret {
    pub fn generate(rng: &mut impl SecureRng) -> Self {
        let mut key = vec![0u8; SECRET_BYTES];
        rng.fill_bytes(&mut key);
        let text = format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&key)
        );
        Self { text, key }
    }

    /// Reads a secret back (from its sealed form).
    pub fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(SECRET_PREFIX)?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .filter(|key| !key.is_empty())?;
        Some(Self {
            text: text.to_owned(),
            key,
        })
    }

    /// The secret itself, for the one answer that shows it and for sealing.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// `v1,<Base64 HMAC-SHA256 over "id.timestamp.body">`, keyed with the decoded secret.
    pub fn sign(&self, message_id: &str, timestamp_seconds: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_seconds.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

/// The `webhook-signature` header: one signature per secret still signing, space separated,
/// so a receiver that knows either secret accepts the delivery during a rotation.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a WebhookSecret>,
    message_id: &str,
    timestamp_seconds: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|secret| secret.sign(message_id, timestamp_seconds, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which events an endpoint takes: every one (`["*"]`), or those named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(BTreeSet<&'static str>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventFilterError {
    #[error("`events` must name at least one event type, or be [\"*\"]")]
    Empty,
    #[error("`events` may not mix \"*\" with event types")]
    StarWithOthers,
    #[error("unknown event type `{0}`")]
    Unknown(String),
}

impl EventFilter {
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, EventFilterError> {
        let mut star = false;
        let mut only = BTreeSet::new();
        for name in names {
            if name == "*" {
                star = true;
            } else {
                let kind = EventType::parse(name)
                    .ok_or_else(|| EventFilterError::Unknown(name.chars().take(64).collect()))?;
                only.insert(kind.as_str());
            }
        }
        match (star, only.is_empty()) {
            (true, true) => Ok(Self::All),
            (true, false) => Err(EventFilterError::StarWithOthers),
            (false, true) => Err(EventFilterError::Empty),
            (false, false) => Ok(Self::Only(only)),
        }
    }

    pub fn names(&self) -> Vec<String> {
        match self {
            Self::All => vec!["*".to_owned()],
            Self::Only(names) => names.iter().map(|&name| name.to_owned()).collect(),
        }
    }

    pub fn matches(&self, kind: EventType) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(kind.as_str()),
        }
    }

    /// The form storage matches with `LIKE '%,' || type || ',%'` when it queues an event, so
    /// queueing is one statement in the event's transaction: `*`, or `,a,b,`.
    pub fn match_column(&self) -> String {
        match self {
            Self::All => "*".to_owned(),
            Self::Only(names) => {
                let mut column = String::from(",");
                for name in names {
                    column.push_str(name);
                    column.push(',');
                }
                column
            }
        }
    }
}

/// When failed deliveries are tried again: exponential backoff with jitter, for at least a day
/// with the defaults (SPEC §4.8), then the delivery is marked failed. A manual retry gives it
/// one more attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure.
    pub first_delay_ms: i64,
    /// Each later wait is this many times the one before, up to `max_delay_ms`.
    pub factor: i64,
    pub max_delay_ms: i64,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 5 s, 20 s, 80 s, 5 min, 21 min, 85 min, 5.7 h, then 10 h three times: 11 attempts
    /// over 37.6 h before jitter (jitter only lengthens the waits).
    fn default() -> Self {
        Self {
            first_delay_ms: 5_000,
            factor: 4,
            max_delay_ms: 10 * 60 * 60 * 1000,
            max_attempts: 11,
        }
    }
}

impl RetryPolicy {
    /// A policy with another first wait, the rest scaled alike (tests use milliseconds).
    pub fn with_first_delay_ms(first_delay_ms: i64) -> Self {
        let default = Self::default();
        let scale = |ms: i64| ms.saturating_mul(first_delay_ms) / default.first_delay_ms;
        Self {
            first_delay_ms: first_delay_ms.max(1),
            max_delay_ms: scale(default.max_delay_ms).max(1),
            ..default
        }
    }

    /// The wait before the next attempt after `failed_attempts` failures, or `None` when the
    /// delivery has had all its attempts. `jitter` in `[0, 1)` adds up to a fifth, so that
    /// deliveries failed together do not come back together.
    pub fn delay_after(&self, failed_attempts: u32, jitter: f64) -> Option<i64> {
        if failed_attempts == 0 || failed_attempts >= self.max_attempts {
            return None;
        }
        let mut delay = self.first_delay_ms;
        for _ in 1..failed_attempts {
            delay = delay.saturating_mul(self.factor).min(self.max_delay_ms);
        }
        let jitter = jitter.clamp(0.0, 1.0);
        // Truncation is fine: a fifth of at most ten hours fits an f64 exactly enough.
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let extra = (delay as f64 * 0.2 * jitter) as i64;
        Some(delay.saturating_add(extra))
    }

    /// The shortest time from the first attempt to the last (no jitter).
    pub fn shortest_span_ms(&self) -> i64 {
        (1..self.max_attempts)
            .filter_map(|failed| self.delay_after(failed, 0.0))
            .sum()
    }
}

/// An endpoint that has failed every attempt since `failing_since` is turned off once that
/// has lasted `disable_after_ms` (default five days, as Svix does: longer than a delivery's
/// own retries, so a receiver down over a weekend is not lost).
pub fn should_disable(failing_since: Timestamp, now: Timestamp, disable_after_ms: i64) -> bool {
    now.as_millis().saturating_sub(failing_since.as_millis()) >= disable_after_ms
}

/// The default of [`should_disable`]'s `disable_after_ms`.
pub const DEFAULT_DISABLE_AFTER_MS: i64 = 5 * 24 * 60 * 60 * 1000;

/// The start of an endpoint's answer as the delivery log keeps it: at most
/// [`RESPONSE_EXCERPT_BYTES`], cut on a character boundary.
pub fn response_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(RESPONSE_EXCERPT_BYTES)]);
    let mut excerpt = text.into_owned();
    while excerpt.len() > RESPONSE_EXCERPT_BYTES {
        excerpt.pop();
    }
    excerpt
}

/// Where events are pushed, and which.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub tenancy: Tenancy,
    pub url: String,
    pub description: String,
    pub events: EventFilter,
    pub enabled: bool,
    /// Why Keyward turned it off, when it did (`None` when a user did, or it is on).
    pub disabled_reason: Option<String>,
    /// Every attempt since then has failed; `None` while deliveries succeed.
    pub failing_since: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its next attempt (or in one).
    Pending,
    Succeeded,
    /// Every attempt failed; a manual retry queues it again.
    Failed,
}

impl DeliveryState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// One event on its way to one endpoint. Its id is the `webhook-id` of every attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    pub id: String,
    pub endpoint_id: String,
    /// `evt_<seq>`; `None` for a test event.
    pub event_id: Option<String>,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: u32,
    /// When it is tried next, while pending.
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Its attempts, oldest first.
    pub history: Vec<WebhookAttempt>,
}

/// One POST to an endpoint, as the delivery log keeps it. Never a secret or a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    pub attempted_at: Timestamp,
    /// The endpoint's status, when it answered.
    pub status: Option<u16>,
    pub latency_ms: i64,
    /// Why the attempt failed, when it did (timeout, refused address, status…).
    pub error: Option<String>,
    /// The start of the endpoint's answer ([`response_excerpt`]).
    pub response_excerpt: Option<String>,
}

/// A delivery id: `whd_`, the event's number in 16 zero-padded digits (so ids sort as events
/// do), then the endpoint's id without its `whe_` (one delivery per event and endpoint, so a
/// repeated queueing of one event is one delivery). Storage builds the same in SQL when it
/// queues an event's deliveries.
pub fn delivery_id(event_seq: i64, endpoint_id: &str) -> String {
    let endpoint_part = endpoint_id.strip_prefix("whe_").unwrap_or(endpoint_id);
    format!("whd_{:016}{endpoint_part}", event_seq.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn secrets_round_trip_and_hide_in_debug() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let secret = WebhookSecret::generate(&mut rng);
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(secret.expose()), Some(secret.clone()));
        assert!(!format!("{secret:?}").contains(&secret.expose()[6..]));
        for bad in [
            "",
            "whsec_",
            "whsec_!!",
            "sk_live_x",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            assert_eq!(WebhookSecret::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn signs_as_the_standard_webhooks_reference_does() {
        // The example of the Standard Webhooks specification and its libraries' tests.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let other = WebhookSecret::parse("whsec_c2VjcmV0").unwrap();
        let header = signature_header([&secret, &other], "msg_1", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|part| part.starts_with("v1,")));
    }

    #[test]
    fn filters_name_known_events_or_everything() {
        assert_eq!(EventFilter::parse(["*"]), Ok(EventFilter::All));
        let only = EventFilter::parse(["key.revoked", "key.created", "key.revoked"]).unwrap();
        assert_eq!(only.names(), ["key.created", "key.revoked"]);
        assert_eq!(only.match_column(), ",key.created,key.revoked,");
        assert!(only.matches(EventType::KeyRevoked));
        assert!(!only.matches(EventType::KeyUpdated));
        assert!(EventFilter::All.matches(EventType::WebhookDisabled));
        assert_eq!(EventFilter::parse([]), Err(EventFilterError::Empty));
        assert_eq!(
            EventFilter::parse(["*", "key.created"]),
            Err(EventFilterError::StarWithOthers)
        );
        assert!(matches!(
            EventFilter::parse(["key.exploded"]),
            Err(EventFilterError::Unknown(_))
        ));
        // A name that would break the LIKE match is not an event type.
        assert!(EventFilter::parse(["%"]).is_err());
    }

    #[test]
    fn retries_back_off_for_more_than_a_day_then_stop() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay_after(0, 0.0), None);
        assert_eq!(policy.delay_after(1, 0.0), Some(5_000));
        assert_eq!(policy.delay_after(2, 0.0), Some(20_000));
        assert_eq!(policy.delay_after(10, 0.0), Some(36_000_000));
        assert_eq!(policy.delay_after(11, 0.0), None);
        assert!(policy.shortest_span_ms() >= 24 * 60 * 60 * 1000);
        // Jitter only lengthens, by at most a fifth.
        let jittered = policy.delay_after(3, 0.999).unwrap();
        assert!((80_000..=96_000).contains(&jittered));
        let fast = RetryPolicy::with_first_delay_ms(100);
        assert_eq!(fast.delay_after(1, 0.0), Some(100));
        assert_eq!(fast.delay_after(2, 0.0), Some(400));
        assert_eq!(fast.max_attempts, policy.max_attempts);
    }

    #[test]
    fn delivery_ids_sort_by_event() {
        let early = delivery_id(9, "whe_AAAAAAAA00000000000000");
        let late = delivery_id(10, "whe_AAAAAAAA00000000000000");
        assert!(early < late);
        assert_eq!(early, "whd_0000000000000009AAAAAAAA00000000000000");
        assert!(early.starts_with("whd_"));
        assert_ne!(delivery_id(9, "whe_a"), delivery_id(9, "whe_b"));
    }

    #[test]
    fn endpoints_are_disabled_only_after_failing_for_the_whole_period() {
        let since = Timestamp::from_millis(1_000);
        assert!(!should_disable(since, since.plus_millis(999), 1_000));
        assert!(should_disable(since, since.plus_millis(1_000), 1_000));
    }

    #[test]
    fn excerpts_are_bounded_on_a_character_boundary() {
        let long = "é".repeat(2_000);
        let excerpt = response_excerpt(long.as_bytes());
        assert!(excerpt.len() <= RESPONSE_EXCERPT_BYTES);
        assert!(excerpt.chars().all(|c| c == 'é' || c == '\u{fffd}'));
        assert_eq!(response_excerpt(b"ok"), "ok");
    }
}
