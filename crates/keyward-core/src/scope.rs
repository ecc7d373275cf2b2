//! Root-key scopes: what a root key may do with Keyward's own API.

use std::fmt;

/// One scope. `X:write` implies `X:read`, `keys:read` implies `usage:read` (a key's usage is
/// part of what a reader of keys sees), and `*` implies everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    AppsRead,
    AppsWrite,
    KeysRead,
    KeysWrite,
    Verify,
    EventsRead,
    RootKeysRead,
    RootKeysWrite,
    EnvironmentRead,
    EnvironmentWrite,
    AuditRead,
    UsageRead,
    PublicKeysRead,
    PublicKeysWrite,
    SigningKeysRead,
    SigningKeysWrite,
    WorkspaceKeysRead,
    WorkspaceKeysWrite,
    WebhooksRead,
    WebhooksWrite,
}

impl Scope {
    pub const EVERY: [Scope; 21] = [
        Scope::All,
        Scope::AppsRead,
        Scope::AppsWrite,
        Scope::KeysRead,
        Scope::KeysWrite,
        Scope::Verify,
        Scope::EventsRead,
        Scope::RootKeysRead,
        Scope::RootKeysWrite,
        Scope::EnvironmentRead,
        Scope::EnvironmentWrite,
        Scope::AuditRead,
        Scope::UsageRead,
        Scope::PublicKeysRead,
        Scope::PublicKeysWrite,
        Scope::SigningKeysRead,
        Scope::SigningKeysWrite,
        Scope::WorkspaceKeysRead,
        Scope::WorkspaceKeysWrite,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::All => "*",
            Scope::AppsRead => "apps:read",
            Scope::AppsWrite => "apps:write",
            Scope::KeysRead => "keys:read",
            Scope::KeysWrite => "keys:write",
            Scope::Verify => "verify",
            Scope::EventsRead => "events:read",
            Scope::RootKeysRead => "root_keys:read",
            Scope::RootKeysWrite => "root_keys:write",
            Scope::EnvironmentRead => "environment:read",
            Scope::EnvironmentWrite => "environment:write",
            Scope::AuditRead => "audit:read",
            Scope::UsageRead => "usage:read",
            Scope::PublicKeysRead => "public_keys:read",
            Scope::PublicKeysWrite => "public_keys:write",
            Scope::SigningKeysRead => "signing_keys:read",
            Scope::SigningKeysWrite => "signing_keys:write",
            Scope::WorkspaceKeysRead => "workspace_keys:read",
            Scope::WorkspaceKeysWrite => "workspace_keys:write",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::EVERY.into_iter().find(|scope| scope.as_str() == text)
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// The scopes this one grants directly, besides itself.
    const fn directly_implied(self) -> &'static [Scope] {
        match self {
            Scope::AppsWrite => &[Scope::AppsRead],
            Scope::KeysWrite => &[Scope::KeysRead],
            Scope::KeysRead => &[Scope::UsageRead],
            Scope::RootKeysWrite => &[Scope::RootKeysRead],
            Scope::EnvironmentWrite => &[Scope::EnvironmentRead],
            Scope::PublicKeysWrite => &[Scope::PublicKeysRead],
            Scope::SigningKeysWrite => &[Scope::SigningKeysRead],
            Scope::WorkspaceKeysWrite => &[Scope::WorkspaceKeysRead],
            Scope::WebhooksWrite => &[Scope::WebhooksRead],
            _ => &[],
        }
    }

    fn implies(self, needed: Scope) -> bool {
        self.directly_implied()
            .iter()
            .any(|&implied| implied == needed || implied.implies(needed))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes, as a bit set so that checking one on every request costs nothing.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeSet(u32);

impl ScopeSet {
    pub fn all() -> Self {
        Self(Scope::All.bit())
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    pub fn union(self, other: ScopeSet) -> Self {
        Self(self.0 | other.0)
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether a key with these scopes may make a call that needs `needed`.
    pub fn grants(self, needed: Scope) -> bool {
        self.contains(Scope::All)
            || self.contains(needed)
            || Scope::EVERY
                .into_iter()
                .any(|held| self.contains(held) && held.implies(needed))
    }

    /// Whether every scope of `other` is granted by `self`: a root key may only mint keys
    /// weaker than or equal to itself.
    pub fn covers(self, other: ScopeSet) -> bool {
        other.iter().all(|scope| self.grants(scope))
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::EVERY
            .into_iter()
            .filter(move |scope| self.contains(*scope))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses a list of scope names; the error names the first unknown one.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, &'a str> {
        let mut set = Self::default();
        for name in names {
            set.insert(Scope::parse(name).ok_or(name)?);
        }
        Ok(set)
    }

    pub fn to_names(self) -> Vec<String> {
        self.iter().map(|scope| scope.as_str().to_owned()).collect()
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl From<Scope> for ScopeSet {
    fn from(scope: Scope) -> Self {
        Self(scope.bit())
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut set = Self::default();
        iter.into_iter().for_each(|scope| set.insert(scope));
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_implies_read_and_star_implies_everything() {
        let writer: ScopeSet = [Scope::KeysWrite].into_iter().collect();
        assert!(writer.grants(Scope::KeysRead));
        assert!(writer.grants(Scope::KeysWrite));
        assert!(!writer.grants(Scope::AppsRead));
        assert!(writer.grants(Scope::UsageRead));
        let usage: ScopeSet = Scope::UsageRead.into();
        assert!(usage.grants(Scope::UsageRead) && !usage.grants(Scope::KeysRead));
        assert!(!writer.grants(Scope::Verify));
        for scope in Scope::EVERY {
            assert!(ScopeSet::all().grants(scope));
        }
    }

    #[test]
    fn a_key_covers_only_weaker_sets() {
        let writer: ScopeSet = [Scope::KeysWrite, Scope::Verify].into_iter().collect();
        let reader: ScopeSet = [Scope::KeysRead].into_iter().collect();
        assert!(writer.covers(reader));
        assert!(!reader.covers(writer));
        assert!(!writer.covers(ScopeSet::all()));
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_reported() {
        for scope in Scope::EVERY {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(ScopeSet::parse(["verify", "nope"]), Err("nope"));
    }
}
