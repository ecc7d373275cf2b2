//! Leaked keys (SPEC §4.9): what an environment does with a key a scanner found in public, what
//! a report answers, and the patterns scanners match.

use crate::secret::{CHECKSUM_LEN, RANDOM_LEN, ROOT_KEY_PREFIX};
use crate::Environment;

/// What happens to a key reported as leaked, set per environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeakedKeyAction {
    /// Refused everywhere once the report's answer has gone out.
    #[default]
    Revoke,
    /// Turned off, so its owner can look before deleting or turning it back on.
    Disable,
    /// Left working; only the audit entry and the `key.leaked` event are raised.
    Notify,
}

impl LeakedKeyAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Disable => "disable",
            Self::Notify => "notify",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Revoke, Self::Disable, Self::Notify]
            .into_iter()
            .find(|action| action.as_str() == text)
    }
}

/// What one report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakOutcome {
    Revoked,
    Disabled,
    /// The key was live and stays so (`notify`), or was already disabled.
    Notified,
    /// Already revoked: nothing changed.
    AlreadyRevoked,
    /// Not a key Keyward issued (or not one the reporter may see): nothing changed.
    Unknown,
}

impl LeakOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Disabled => "disabled",
            Self::Notified => "notified",
            Self::AlreadyRevoked => "already_revoked",
            Self::Unknown => "unknown",
        }
    }

    /// GitHub's label: a live key that was exposed is a true positive; a token that is not
    /// (or no longer) a working key is a false positive.
    pub const fn is_true_positive(self) -> bool {
        matches!(self, Self::Revoked | Self::Disabled | Self::Notified)
    }

    /// What a live key comes to under `action`.
    pub const fn of_action(action: LeakedKeyAction) -> Self {
        match action {
            LeakedKeyAction::Revoke => Self::Revoked,
            LeakedKeyAction::Disable => Self::Disabled,
            LeakedKeyAction::Notify => Self::Notified,
        }
    }
}

/// The longest `url` and `source` a report keeps.
pub const MAX_REPORT_URL_LEN: usize = 2048;
pub const MAX_REPORT_SOURCE_LEN: usize = 200;

/// Where a leaked key was seen, as the reporter says. Kept in the audit log and the event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakReport {
    pub url: Option<String>,
    pub source: Option<String>,
}

impl LeakReport {
    /// Keeps what is given, cut to the bounds above (a scanner's report is not refused for a
    /// long URL: the key must still be neutralised).
    pub fn new(url: Option<&str>, source: Option<&str>) -> Self {
        let cut = |text: &str, max: usize| {
            let mut end = text.len().min(max);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_owned()
        };
        Self {
            url: url
                .filter(|url| !url.is_empty())
                .map(|url| cut(url, MAX_REPORT_URL_LEN)),
            source: source
                .filter(|source| !source.is_empty())
                .map(|source| cut(source, MAX_REPORT_SOURCE_LEN)),
        }
    }
}

/// One format scanners should match: a name and a regular expression (the syntax GitHub's
/// custom patterns and most scanners take).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanningPattern {
    pub name: String,
    pub prefix: String,
    pub regex: String,
}

/// The pattern of the keys issued with `prefix`: `<prefix>_<environment>_` and 30 base62
/// characters (24 random, 6 of checksum), bounded so a longer token does not match.
pub fn scanning_pattern(name: &str, prefix: &str) -> ScanningPattern {
    let environments = [Environment::Live, Environment::Test, Environment::Demo]
        .map(Environment::as_str)
        .join("|");
    ScanningPattern {
        name: name.to_owned(),
        prefix: prefix.to_owned(),
        regex: format!(
            r"\b{prefix}_(?:{environments})_[0-9A-Za-z]{{{}}}\b",
            RANDOM_LEN + CHECKSUM_LEN
        ),
    }
}

/// The patterns of a workspace: its root keys', then each app prefix's once.
pub fn scanning_patterns<'a>(
    app_prefixes: impl IntoIterator<Item = &'a str>,
) -> Vec<ScanningPattern> {
    let mut patterns = vec![scanning_pattern("Keyward root key", ROOT_KEY_PREFIX)];
    let mut seen = std::collections::BTreeSet::new();
    for prefix in app_prefixes {
        if seen.insert(prefix) {
            patterns.push(scanning_pattern("Keyward API key", prefix));
        }
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::IssuedSecret;
    use rand::SeedableRng;

    #[test]
    fn actions_round_trip() {
        for action in [
            LeakedKeyAction::Revoke,
            LeakedKeyAction::Disable,
            LeakedKeyAction::Notify,
        ] {
            assert_eq!(LeakedKeyAction::parse(action.as_str()), Some(action));
        }
        assert_eq!(LeakedKeyAction::parse("REVOKE"), None);
        assert_eq!(LeakedKeyAction::default(), LeakedKeyAction::Revoke);
    }

    #[test]
    fn only_a_live_key_is_a_true_positive() {
        assert!(LeakOutcome::Revoked.is_true_positive());
        assert!(LeakOutcome::Notified.is_true_positive());
        assert!(!LeakOutcome::AlreadyRevoked.is_true_positive());
        assert!(!LeakOutcome::Unknown.is_true_positive());
    }

    #[test]
    fn patterns_match_issued_keys_and_nothing_longer() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let pattern = scanning_pattern("Keyward API key", "acme");
        let regex = regex::Regex::new(&pattern.regex).unwrap();
        for environment in [Environment::Live, Environment::Test] {
            let secret = IssuedSecret::generate("acme", environment, &mut rng).unwrap();
            let text = format!("token = \"{}\"\n", secret.expose());
            let found = regex.find(&text).unwrap();
            assert_eq!(found.as_str(), secret.expose());
            let longer = format!("{}x", secret.expose());
            assert!(regex.find(&longer).is_none());
        }
        assert!(regex.find("xacme_live_").is_none());
        let all = scanning_patterns(["acme", "beta", "acme"]);
        let prefixes: Vec<&str> = all.iter().map(|p| p.prefix.as_str()).collect();
        assert_eq!(prefixes, ["sk", "acme", "beta"]);
    }

    #[test]
    fn reports_are_cut_not_refused() {
        let long = "é".repeat(MAX_REPORT_URL_LEN);
        let report = LeakReport::new(Some(&long), Some(""));
        assert!(report.url.unwrap().len() <= MAX_REPORT_URL_LEN);
        assert_eq!(report.source, None);
    }
}
