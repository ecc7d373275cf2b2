//! An API key as the verification cache holds it. A node keeps up to millions of them within
//! `KEYWARD_CACHE_MAX_BYTES`, so each is compact:
//! - what a key shares with its app's other keys (environment, app, rate-limit windows and,
//!   usually, permissions) is held once per distinct set, in a [`KeyGroups`];
//! - the key's own text (its meter, owner, organisation and `meta`) is one allocation;
//! - what most keys lack (credits, an organisation's policy, the end of a superseded
//!   secret's grace period) is boxed apart;
//! - what verification never reads (name, `start`, creation time) is not held: the alerts
//!   that show it read the key from storage when they are recorded.
//!
//! A typical key costs about 130 bytes here, against about 860 as a full [`ApiKey`]
//! (`examples/cache_footprint.rs`).

use std::collections::HashSet;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, PoisonError};

use keyward_core::model::{ApiKey, OrganizationPolicy, Tenancy, UsagePolicy};
use keyward_core::usage::{Credits, RateWindow};
use keyward_core::Timestamp;

use crate::usage::organization_meter;

/// What the cache holds for an API key's secret.
pub struct CachedKey {
    group: Arc<KeyGroup>,
    /// The key's meter (`key:<id>`), then its owner, its organisation and its `meta` as JSON
    /// (empty when it has none), one after another.
    text: Box<str>,
    /// Where the meter, the owner and the organisation end in `text`.
    ends: [u32; 3],
    expires_at: OptionalTime,
    extras: Option<Box<KeyExtras>>,
    revoked: bool,
    enabled: bool,
    /// Whether this key made its group: its weight counts the group's bytes, and the keys
    /// that share the group after it do not.
    made_group: bool,
    /// When this node last queued a `last_used_at` write for the key, to write at most one
    /// per interval however hot the key is.
    pub(crate) last_used_queued_at: AtomicI64,
}

/// What keys of one app, scheme and permission set have in common.
#[derive(Debug, PartialEq, Eq, Hash)]
struct KeyGroup {
    tenancy: Tenancy,
    app_id: String,
    app_slug: String,
    permissions: Vec<String>,
    /// The key's own windows: its scheme, or else its app's.
    windows: Vec<RateWindow>,
}

impl KeyGroup {
    fn approximate_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + heap(self.tenancy.workspace_id.len())
            + heap(self.app_id.len())
            + heap(self.app_slug.len())
            + heap(std::mem::size_of_val(self.permissions.as_slice()))
            + self
                .permissions
                .iter()
                .map(|permission| heap(permission.len()))
                .sum::<usize>()
            + heap(std::mem::size_of_val(self.windows.as_slice()))
    }
}

/// What most keys lack.
#[derive(Debug)]
struct KeyExtras {
    /// End of the grace period if this secret was superseded by a rotation.
    secret_expires_at: Option<Timestamp>,
    /// `None`: verification never charges this key.
    credits: Option<Credits>,
    /// The usage engine's balance generation read before `credits` was
    /// ([`crate::usage::ChargeRequest::credits_generation`]).
    credits_generation: u64,
    /// The key's own `credits.low` threshold.
    low_credits_threshold: Option<i64>,
    /// Its organisation's shared limits, with their meter.
    organization: Option<(OrganizationPolicy, String)>,
}

/// A time that may be absent, in 8 bytes instead of `Option<Timestamp>`'s 16. The end of
/// time stands for "never": a key expiring then never expires.
#[derive(Debug, Clone, Copy)]
struct OptionalTime(i64);

impl OptionalTime {
    const NEVER: i64 = i64::MAX;

    fn new(at: Option<Timestamp>) -> Self {
        Self(at.map_or(Self::NEVER, Timestamp::as_millis))
    }

    fn get(self) -> Option<Timestamp> {
        (self.0 != Self::NEVER).then_some(Timestamp::from_millis(self.0))
    }
}

/// What the allocator takes for a heap block of `len` bytes: its size class's rounding, on
/// average.
pub(crate) fn heap(len: usize) -> usize {
    const BLOCK: usize = 8;
    if len == 0 {
        0
    } else {
        len + BLOCK
    }
}

impl CachedKey {
    /// A key as storage gave it, its group shared through `groups`. `credits_generation`:
    /// the usage engine's balance generation read before storage was.
    pub fn new(
        key: ApiKey,
        policy: UsagePolicy,
        secret_expires_at: Option<Timestamp>,
        credits_generation: u64,
        groups: &KeyGroups,
    ) -> Self {
        let meta = if key.meta.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(key.meta).to_string()
        };
        let owner = key.owner_user_id.as_deref().unwrap_or_default();
        let organization_id = key.organization_id.as_deref().unwrap_or_default();
        let mut text = String::with_capacity(
            4 + key.id.len() + owner.len() + organization_id.len() + meta.len(),
        );
        text.push_str("key:");
        let mut ends = [0; 3];
        for (end, part) in ends
            .iter_mut()
            .zip([key.id.as_str(), owner, organization_id])
        {
            text.push_str(part);
            // Ids and owners are validated short, and `meta` comes after them.
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        text.push_str(&meta);
        let organization = match (policy.organization, key.organization_id.as_deref()) {
            (Some(organization), Some(id)) => {
                Some((organization, organization_meter(&key.tenancy, id)))
            }
            _ => None,
        };
        let extras = (secret_expires_at.is_some()
            || key.credits.is_some()
            || key.low_credits_threshold.is_some()
            || organization.is_some())
        .then(|| {
            Box::new(KeyExtras {
                secret_expires_at,
                credits: key.credits,
                credits_generation,
                low_credits_threshold: key.low_credits_threshold,
                organization,
            })
        });
        let (group, made) = groups.share(KeyGroup {
            tenancy: key.tenancy,
            app_id: key.app_id,
            app_slug: key.app_slug,
            permissions: key.permissions,
            windows: policy.windows,
        });
        Self {
            group,
            text: text.into_boxed_str(),
            ends,
            expires_at: OptionalTime::new(key.expires_at),
            extras,
            revoked: key.revoked_at.is_some(),
            enabled: key.enabled,
            made_group: made,
            last_used_queued_at: AtomicI64::new(i64::MIN),
        }
    }

    fn part(&self, index: usize) -> &str {
        let start = if index == 0 {
            0
        } else {
            self.ends[index - 1] as usize
        };
        let end = self
            .ends
            .get(index)
            .map_or(self.text.len(), |end| *end as usize);
        &self.text[start..end]
    }

    fn optional_part(&self, index: usize) -> Option<&str> {
        Some(self.part(index)).filter(|part| !part.is_empty())
    }

    pub fn id(&self) -> &str {
        &self.meter()["key:".len()..]
    }

    /// The meter its rate limits and credits are counted on.
    pub fn meter(&self) -> &str {
        self.part(0)
    }

    pub fn tenancy(&self) -> &Tenancy {
        &self.group.tenancy
    }

    pub fn app_id(&self) -> &str {
        &self.group.app_id
    }

    pub fn app_slug(&self) -> &str {
        &self.group.app_slug
    }

    pub fn permissions(&self) -> &[String] {
        &self.group.permissions
    }

    /// Its own rate-limit windows: its scheme's, or else its app's.
    pub fn windows(&self) -> &[RateWindow] {
        &self.group.windows
    }

    pub fn owner_user_id(&self) -> Option<&str> {
        self.optional_part(1)
    }

    pub fn organization_id(&self) -> Option<&str> {
        self.optional_part(2)
    }

    /// Its `meta`, read back from the JSON it is held as.
    pub fn meta(&self) -> serde_json::Map<String, serde_json::Value> {
        match self.optional_part(3) {
            Some(json) => serde_json::from_str(json).unwrap_or_default(),
            None => serde_json::Map::new(),
        }
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at.get()
    }

    /// The end of the grace period if this secret was superseded by a rotation.
    pub fn secret_expires_at(&self) -> Option<Timestamp> {
        self.extras.as_ref()?.secret_expires_at
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Its credits as storage gave them, and the usage engine's balance generation then.
    pub fn credits(&self) -> Option<(Credits, u64)> {
        let extras = self.extras.as_ref()?;
        Some((extras.credits?, extras.credits_generation))
    }

    /// The `credits.low` threshold: its own, or else its organisation's.
    pub fn low_credits_threshold(&self) -> Option<i64> {
        let extras = self.extras.as_ref()?;
        extras.low_credits_threshold.or_else(|| {
            let (organization, _) = extras.organization.as_ref()?;
            organization.low_credits_threshold
        })
    }

    /// Its organisation's shared limits, and the meter they are counted on.
    pub fn organization(&self) -> Option<(&OrganizationPolicy, &str)> {
        let (organization, meter) = self.extras.as_ref()?.organization.as_ref()?;
        Some((organization, meter))
    }

    /// Roughly what the key holds in memory, for the cache's bound.
    pub(crate) fn approximate_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + heap(self.text.len())
            + if self.made_group {
                self.group.approximate_bytes()
            } else {
                0
            }
            + self.extras.as_ref().map_or(0, |extras| {
                heap(std::mem::size_of::<KeyExtras>())
                    + extras
                        .organization
                        .as_ref()
                        .map_or(0, |(organization, meter)| {
                            heap(organization.id.len())
                                + heap(std::mem::size_of_val(organization.windows.as_slice()))
                                + heap(meter.len())
                        })
            })
    }
}

impl std::fmt::Debug for CachedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedKey")
            .field("id", &self.id())
            .field("app", &self.app_slug())
            .finish_non_exhaustive()
    }
}

/// The groups cached keys share, each held once. A group no key holds any more is dropped
/// when the set next doubles.
#[derive(Debug, Default)]
pub struct KeyGroups {
    interned: Mutex<Interned>,
}

#[derive(Debug, Default)]
struct Interned {
    groups: HashSet<Arc<KeyGroup>>,
    prune_at: usize,
}

impl KeyGroups {
    /// The held group equal to `group`, and whether this call made it.
    fn share(&self, group: KeyGroup) -> (Arc<KeyGroup>, bool) {
        const FIRST_PRUNE: usize = 1024;
        let mut interned = self.interned.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = interned.groups.get(&group) {
            // Held by the set alone: the key that paid for it is gone, and this one pays.
            let orphaned = Arc::strong_count(held) == 1;
            return (Arc::clone(held), orphaned);
        }
        if interned.groups.len() >= interned.prune_at.max(FIRST_PRUNE) {
            interned.groups.retain(|held| Arc::strong_count(held) > 1);
            interned.prune_at = 2 * interned.groups.len();
        }
        let group = Arc::new(group);
        interned.groups.insert(Arc::clone(&group));
        (group, true)
    }

    /// Groups held, for tests.
    pub fn len(&self) -> usize {
        let interned = self.interned.lock().unwrap_or_else(PoisonError::into_inner);
        interned.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use keyward_core::model::Environment;
    use keyward_core::usage::CapUsage;

    use super::*;

    pub(crate) fn key(n: u32) -> ApiKey {
        ApiKey {
            id: format!("key_{n}"),
            tenancy: Tenancy {
                workspace_id: "ws_1".to_owned(),
                environment: Environment::Live,
            },
            app_id: "app_1".to_owned(),
            app_slug: "billing".to_owned(),
            name: format!("key {n}"),
            owner_user_id: None,
            organization_id: None,
            permissions: vec!["read".to_owned()],
            meta: serde_json::Map::new(),
            start: "sk_live_abcd".to_owned(),
            expires_at: None,
            enabled: true,
            revoked_at: None,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            last_used_at: None,
            credits: None,
            rate_limit_scheme: None,
            low_credits_threshold: None,
        }
    }

    /// `key` cached on its own, with no limits.
    pub(crate) fn cached(key: ApiKey) -> CachedKey {
        CachedKey::new(key, UsagePolicy::default(), None, 0, &KeyGroups::default())
    }

    #[test]
    fn a_cached_key_reads_back_what_storage_gave() {
        let groups = KeyGroups::default();
        let mut full = key(1);
        full.owner_user_id = Some("usr_1".to_owned());
        full.organization_id = Some("org_1".to_owned());
        full.meta.insert("plan".to_owned(), "pro".into());
        full.expires_at = Some(Timestamp::from_millis(5_000));
        full.revoked_at = Some(Timestamp::from_millis(4_000));
        full.credits = Some(Credits {
            remaining: 7,
            refill: None,
            refilled_at: Timestamp::from_millis(0),
        });
        let organization = OrganizationPolicy {
            id: "org_1".to_owned(),
            windows: Vec::new(),
            cap: Some(CapUsage {
                cap: 100,
                period: None,
                spent: 3,
                period_start: Timestamp::from_millis(0),
            }),
            low_credits_threshold: Some(10),
        };
        let policy = UsagePolicy {
            windows: vec![RateWindow {
                limit: 5,
                period_ms: 1_000,
            }],
            organization: Some(organization.clone()),
        };
        let cached = CachedKey::new(
            full.clone(),
            policy,
            Some(Timestamp::from_millis(9)),
            0,
            &groups,
        );
        assert_eq!(cached.id(), "key_1");
        assert_eq!(cached.meter(), crate::usage::key_meter("key_1"));
        assert_eq!(cached.tenancy(), &full.tenancy);
        assert_eq!((cached.app_id(), cached.app_slug()), ("app_1", "billing"));
        assert_eq!(cached.permissions(), ["read"]);
        assert_eq!(cached.windows().len(), 1);
        assert_eq!(cached.owner_user_id(), Some("usr_1"));
        assert_eq!(cached.organization_id(), Some("org_1"));
        assert_eq!(cached.meta(), full.meta);
        assert_eq!(cached.expires_at(), full.expires_at);
        assert_eq!(cached.secret_expires_at(), Some(Timestamp::from_millis(9)));
        assert!(cached.is_revoked() && cached.is_enabled());
        assert_eq!(cached.credits(), full.credits.map(|credits| (credits, 0)));
        // The organisation's threshold stands in for the key's missing one.
        assert_eq!(cached.low_credits_threshold(), Some(10));
        let (held, meter) = cached.organization().expect("the organisation");
        assert_eq!(held, &organization);
        assert_eq!(meter, organization_meter(&full.tenancy, "org_1"));

        let bare = CachedKey::new(key(2), UsagePolicy::default(), None, 0, &groups);
        assert_eq!(bare.owner_user_id(), None);
        assert_eq!(bare.organization_id(), None);
        assert!(bare.meta().is_empty());
        assert_eq!((bare.expires_at(), bare.secret_expires_at()), (None, None));
        assert!(bare.credits().is_none() && bare.organization().is_none());
    }

    #[test]
    fn a_cached_key_fits_in_a_cache_line() {
        // With its `Arc`'s counts, an 80-byte block: what a million cached keys are sized by.
        assert!(std::mem::size_of::<CachedKey>() <= 64);
    }

    #[test]
    fn keys_alike_share_one_group_and_only_its_maker_pays_for_it() {
        let groups = KeyGroups::default();
        let first = CachedKey::new(key(1), UsagePolicy::default(), None, 0, &groups);
        let second = CachedKey::new(key(2), UsagePolicy::default(), None, 0, &groups);
        assert!(Arc::ptr_eq(&first.group, &second.group));
        assert!(first.approximate_bytes() > second.approximate_bytes());
        let mut other = key(3);
        other.permissions.push("write".to_owned());
        let third = CachedKey::new(other, UsagePolicy::default(), None, 0, &groups);
        assert!(!Arc::ptr_eq(&first.group, &third.group));
        assert_eq!(groups.len(), 2);
        // Once every key that held it is gone, the next key to take it up pays for it.
        let paid = first.approximate_bytes();
        drop((first, second));
        let fourth = CachedKey::new(key(1), UsagePolicy::default(), None, 0, &groups);
        assert_eq!(fourth.approximate_bytes(), paid);
    }

    #[test]
    fn groups_no_key_holds_are_dropped_as_the_set_grows() {
        let groups = KeyGroups::default();
        let held = CachedKey::new(key(0), UsagePolicy::default(), None, 0, &groups);
        for n in 0..5_000 {
            let mut unique = key(n);
            unique.permissions = vec![format!("perm{n}")];
            drop(CachedKey::new(
                unique,
                UsagePolicy::default(),
                None,
                0,
                &groups,
            ));
        }
        assert!(groups.len() <= 1_025, "{} groups held", groups.len());
        // A group still held is kept and shared.
        let again = CachedKey::new(key(1), UsagePolicy::default(), None, 0, &groups);
        assert!(Arc::ptr_eq(&held.group, &again.group));
    }
}
