//! Events and alerts about keys (SPEC §4.5): what happened, to which key, and who may hear of
//! it. Storage numbers events in commit order; the server streams them over WebSocket.

use serde::{Deserialize, Serialize};

use crate::model::{ApiKey, Tenancy};
use crate::Timestamp;

/// The two streams a client can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Changes to keys.
    Events,
    /// Conditions worth acting on: limits hit, credits running out, keys about to expire.
    Alerts,
}

impl Channel {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Alerts => "alerts",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "events" => Some(Self::Events),
            "alerts" => Some(Self::Alerts),
            _ => None,
        }
    }
}

/// What an event reports. The names are the SPEC's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    KeyCreated,
    KeyUpdated,
    KeyRotated,
    KeyRevoked,
    KeyDeleted,
    KeyExpired,
    RateLimitExceeded,
    CreditsLow,
    CreditsExhausted,
    KeyExpiring,
    /// A scanner found the key in public (SPEC §4.9).
    KeyLeaked,
    /// A webhook endpoint kept failing and was turned off (SPEC §4.8).
    WebhookDisabled,
}

impl EventType {
    pub const ALL: [Self; 12] = [
        Self::KeyCreated,
        Self::KeyUpdated,
        Self::KeyRotated,
        Self::KeyRevoked,
        Self::KeyDeleted,
        Self::KeyExpired,
        Self::RateLimitExceeded,
        Self::CreditsLow,
        Self::CreditsExhausted,
        Self::KeyExpiring,
        Self::KeyLeaked,
        Self::WebhookDisabled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::KeyCreated => "key.created",
            Self::KeyUpdated => "key.updated",
            Self::KeyRotated => "key.rotated",
            Self::KeyRevoked => "key.revoked",
            Self::KeyDeleted => "key.deleted",
            Self::KeyExpired => "key.expired",
            Self::RateLimitExceeded => "rate_limit.exceeded",
            Self::CreditsLow => "credits.low",
            Self::CreditsExhausted => "credits.exhausted",
            Self::KeyExpiring => "key.expiring",
            Self::KeyLeaked => "key.leaked",
            Self::WebhookDisabled => "webhook.disabled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    pub const fn channel(self) -> Channel {
        match self {
            Self::KeyCreated
            | Self::KeyUpdated
            | Self::KeyRotated
            | Self::KeyRevoked
            | Self::KeyDeleted
            | Self::KeyExpired
            | Self::KeyLeaked => Channel::Events,
            Self::RateLimitExceeded
            | Self::CreditsLow
            | Self::CreditsExhausted
            | Self::KeyExpiring
            | Self::WebhookDisabled => Channel::Alerts,
        }
    }
}

/// What an event says about its key: the metadata a key listing shows, never a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySnapshot {
    pub id: String,
    pub app: String,
    pub name: String,
    pub owner_user_id: Option<String>,
    pub organization_id: Option<String>,
    pub permissions: Vec<String>,
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The non-secret beginning of the key's secret, for display.
    pub start: String,
    pub enabled: bool,
    pub revoked: bool,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl KeySnapshot {
    pub fn of(key: &ApiKey) -> Self {
        Self {
            id: key.id.clone(),
            app: key.app_slug.clone(),
            name: key.name.clone(),
            owner_user_id: key.owner_user_id.clone(),
            organization_id: key.organization_id.clone(),
            permissions: key.permissions.clone(),
            meta: key.meta.clone(),
            start: key.start.clone(),
            enabled: key.enabled,
            revoked: key.revoked_at.is_some(),
            expires_at: key.expires_at,
            created_at: key.created_at,
        }
    }
}

/// An event before storage has numbered it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub tenancy: Tenancy,
    pub kind: EventType,
    /// The key it is about; `None` for an alert about something else (`webhook.disabled`).
    pub key: Option<KeySnapshot>,
    /// The alert's figures (e.g. `{"remaining": 9, "threshold": 10}`); empty for key events.
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Events with the same deduplication key are recorded once, whichever node raises them
    /// first (e.g. `key.expired` for one key and expiry, raised by every node's sweeper).
    pub dedup_key: Option<String>,
}

impl NewEvent {
    pub fn about(tenancy: &Tenancy, kind: EventType, key: &ApiKey) -> Self {
        Self {
            tenancy: tenancy.clone(),
            kind,
            key: Some(KeySnapshot::of(key)),
            details: serde_json::Map::new(),
            dedup_key: None,
        }
    }

    /// `webhook.disabled`: the endpoint, and why it was turned off.
    pub fn webhook_disabled(tenancy: &Tenancy, endpoint_id: &str, url: &str, reason: &str) -> Self {
        let mut details = serde_json::Map::new();
        details.insert("endpoint_id".into(), endpoint_id.into());
        details.insert("url".into(), url.into());
        details.insert("reason".into(), reason.into());
        Self {
            tenancy: tenancy.clone(),
            kind: EventType::WebhookDisabled,
            key: None,
            details,
            dedup_key: None,
        }
    }

    /// What storage files the event under: its key's id, or the endpoint a webhook alert is
    /// about.
    pub fn subject_id(&self) -> &str {
        match &self.key {
            Some(key) => &key.id,
            None => self
                .details
                .get("endpoint_id")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default(),
        }
    }
}

/// A recorded event. `seq` orders events in the order their changes committed, across every
/// node sharing the database.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub tenancy: Tenancy,
    pub kind: EventType,
    pub key: Option<KeySnapshot>,
    pub details: serde_json::Map<String, serde_json::Value>,
    pub created_at: Timestamp,
}

impl Event {
    /// The public id of an event: `evt_<seq>`, which a client passes back to resume.
    pub fn id(&self) -> String {
        format!("evt_{}", self.seq)
    }

    /// Reads an event id back into its sequence number.
    pub fn parse_id(id: &str) -> Option<i64> {
        id.strip_prefix("evt_")
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok())
    }
}

/// Who a stream is for, and so which events it may carry (SPEC §4.5, scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    pub tenancy: Tenancy,
    /// An end user hears only of keys it owns; a root key (`None`) hears of its whole
    /// environment.
    pub subject: Option<String>,
}

impl Audience {
    pub fn may_see(&self, event: &Event) -> bool {
        event.tenancy == self.tenancy
            && self.subject.as_deref().is_none_or(|subject| {
                event
                    .key
                    .as_ref()
                    .is_some_and(|key| key.owner_user_id.as_deref() == Some(subject))
            })
    }
}

/// Which credit alert, if any, a charge that left `remaining` after spending `cost` raises.
/// Each fires on the one charge that crosses its line, so a cluster that charges exactly
/// (one engine decides every charge) raises it exactly once per crossing.
pub fn credit_alert(remaining: i64, cost: i64, low_threshold: Option<i64>) -> Option<EventType> {
    let before = remaining.saturating_add(cost);
    if cost <= 0 {
        return None;
    }
    if remaining <= 0 && before > 0 {
        return Some(EventType::CreditsExhausted);
    }
    match low_threshold {
        Some(threshold) if remaining < threshold && before >= threshold => {
            Some(EventType::CreditsLow)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Environment;

    #[test]
    fn names_round_trip_and_pick_their_channel() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::KeyExpired.channel(), Channel::Events);
        assert_eq!(EventType::KeyExpiring.channel(), Channel::Alerts);
        assert_eq!(EventType::parse("key.exploded"), None);
        assert_eq!(Channel::parse("alerts"), Some(Channel::Alerts));
        assert_eq!(Channel::parse("Alerts"), None);
    }

    #[test]
    fn event_ids_parse_strictly() {
        assert_eq!(Event::parse_id("evt_42"), Some(42));
        for bad in [
            "evt_",
            "evt_-1",
            "evt_+1",
            "evt_4 2",
            "42",
            "evt_99999999999999999999",
        ] {
            assert_eq!(Event::parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn credit_alerts_fire_once_per_crossing() {
        // Exhaustion: only the charge that reaches zero.
        assert_eq!(credit_alert(0, 1, None), Some(EventType::CreditsExhausted));
        assert_eq!(credit_alert(0, 0, None), None);
        assert_eq!(credit_alert(5, 1, None), None);
        // Low: only the charge that crosses below the threshold.
        assert_eq!(credit_alert(9, 1, Some(10)), Some(EventType::CreditsLow));
        assert_eq!(credit_alert(8, 1, Some(10)), None);
        assert_eq!(credit_alert(10, 1, Some(10)), None);
        assert_eq!(credit_alert(5, 10, Some(10)), Some(EventType::CreditsLow));
        // A charge that jumps both lines reports the graver one.
        assert_eq!(
            credit_alert(0, 20, Some(10)),
            Some(EventType::CreditsExhausted)
        );
    }

    #[test]
    fn end_users_see_only_their_own_keys() {
        let tenancy = Tenancy {
            workspace_id: "ws_1".into(),
            environment: Environment::Live,
        };
        let event = |owner: Option<&str>| Event {
            seq: 1,
            tenancy: tenancy.clone(),
            kind: EventType::KeyCreated,
            key: Some(KeySnapshot {
                id: "key_1".into(),
                app: "a".into(),
                name: "n".into(),
                owner_user_id: owner.map(str::to_owned),
                organization_id: None,
                permissions: vec![],
                meta: serde_json::Map::new(),
                start: "kw_live_abcd".into(),
                enabled: true,
                revoked: false,
                expires_at: None,
                created_at: Timestamp::from_millis(0),
            }),
            details: serde_json::Map::new(),
            created_at: Timestamp::from_millis(0),
        };
        let root = Audience {
            tenancy: tenancy.clone(),
            subject: None,
        };
        let alice = Audience {
            tenancy: tenancy.clone(),
            subject: Some("alice".into()),
        };
        let other_environment = Audience {
            tenancy: Tenancy {
                environment: Environment::Test,
                ..tenancy.clone()
            },
            subject: None,
        };
        assert!(root.may_see(&event(None)));
        assert!(root.may_see(&event(Some("bob"))));
        assert!(alice.may_see(&event(Some("alice"))));
        assert!(!alice.may_see(&event(Some("bob"))));
        assert!(!alice.may_see(&event(None)));
        assert!(!other_environment.may_see(&event(None)));
    }
}
