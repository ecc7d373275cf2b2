//! Field rules shared by every way into Keyward (HTTP, CLI, import).

use crate::permission::{is_valid_permission, MAX_PERMISSION_LEN};
use crate::usage::RateWindow;

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_SLUG_LEN: usize = 64;
pub const MAX_EXTERNAL_ID_LEN: usize = 200;
pub const MAX_PERMISSIONS: usize = 1000;
/// The serialised size a key's `meta` may take.
pub const MAX_META_BYTES: usize = 16 * 1024;
/// Windows a rate-limit scheme may hold.
pub const MAX_RATE_WINDOWS: usize = 8;
/// The longest rate window: 31 days.
pub const MAX_RATE_PERIOD_SECONDS: u64 = 31 * 86_400;
/// The largest request count a window may allow.
pub const MAX_RATE_LIMIT: u64 = 1_000_000_000_000;
/// The largest credit balance, refill or cap: well inside the integers every engine
/// (including Redis's Lua doubles) holds exactly.
pub const MAX_CREDITS: i64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("`{field}` must be 1 to {max} characters")]
    Length { field: &'static str, max: usize },
    #[error("`{field}` must not contain control characters")]
    ControlCharacter { field: &'static str },
    #[error(
        "`slug` must be lowercase letters, digits and dashes, starting with a letter or digit"
    )]
    Slug,
    /// By its place in the list: the name itself may be a secret pasted into the wrong field.
    #[error(
        "`permissions[{0}]` is not a valid permission name (1 to {MAX_PERMISSION_LEN} of A-Z \
         a-z 0-9 _ : . - /)"
    )]
    Permission(usize),
    #[error("at most {MAX_PERMISSIONS} permissions are allowed")]
    TooManyPermissions,
    #[error("`meta` is larger than {MAX_META_BYTES} bytes")]
    MetaTooLarge,
    #[error(
        "a rate-limit scheme's slug must be lowercase letters, digits, `_` and `-`, starting \
         with a letter or digit, at most {MAX_SLUG_LEN} characters"
    )]
    SchemeSlug,
    #[error(
        "`windows` must hold 1 to {MAX_RATE_WINDOWS} windows, each with a `limit` of 1 to \
         {MAX_RATE_LIMIT} and a `period_seconds` of 1 to {MAX_RATE_PERIOD_SECONDS}, no two \
         with the same period"
    )]
    RateWindows,
    #[error("`{field}` must be between {min} and {MAX_CREDITS}")]
    Credits { field: &'static str, min: i64 },
}

/// A human-readable name or an external id: non-empty, bounded, no control characters.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(FieldError::Length { field, max });
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::ControlCharacter { field });
    }
    Ok(())
}

pub fn slug(value: &str) -> Result<(), FieldError> {
    let bytes = value.as_bytes();
    let valid = (1..=MAX_SLUG_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(FieldError::Slug)
    }
}

/// Checks each name and returns the list sorted and without repeats.
pub fn permissions(names: &[String]) -> Result<Vec<String>, FieldError> {
    if names.len() > MAX_PERMISSIONS {
        return Err(FieldError::TooManyPermissions);
    }
    if let Some(bad) = names.iter().position(|name| !is_valid_permission(name)) {
        return Err(FieldError::Permission(bad));
    }
    let mut sorted = names.to_vec();
    sorted.sort();
    sorted.dedup();
    Ok(sorted)
}

/// A rate-limit scheme's slug: like an app's, and `_` is allowed (`standard_tier`).
pub fn scheme_slug(value: &str) -> Result<(), FieldError> {
    let bytes = value.as_bytes();
    let valid = (1..=MAX_SLUG_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
    if valid {
        Ok(())
    } else {
        Err(FieldError::SchemeSlug)
    }
}

/// Turns `(limit, period_seconds)` pairs into windows. Engines keep one counter per period,
/// so two windows of one scheme may not share a period.
pub fn rate_windows(pairs: &[(u64, u64)]) -> Result<Vec<RateWindow>, FieldError> {
    let valid = (1..=MAX_RATE_WINDOWS).contains(&pairs.len())
        && pairs.iter().all(|&(limit, period)| {
            (1..=MAX_RATE_LIMIT).contains(&limit) && (1..=MAX_RATE_PERIOD_SECONDS).contains(&period)
        });
    let mut periods: Vec<u64> = pairs.iter().map(|&(_, period)| period).collect();
    periods.sort_unstable();
    periods.dedup();
    if !valid || periods.len() != pairs.len() {
        return Err(FieldError::RateWindows);
    }
    Ok(pairs
        .iter()
        .map(|&(limit, period)| RateWindow {
            limit,
            period_ms: period as i64 * 1000,
        })
        .collect())
}

/// A credit amount between `min` and [`MAX_CREDITS`].
pub fn credits(field: &'static str, value: i64, min: i64) -> Result<(), FieldError> {
    if (min..=MAX_CREDITS).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::Credits { field, min })
    }
}

pub fn meta(value: &serde_json::Map<String, serde_json::Value>) -> Result<(), FieldError> {
    let size = serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_META_BYTES {
        return Err(FieldError::MetaTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(slug("acme-v2").is_ok());
        assert!(slug("-acme").is_err());
        assert!(slug("Acme").is_err());
        assert!(slug("").is_err());
        assert!(slug(&"a".repeat(65)).is_err());
    }

    #[test]
    fn scheme_slugs_allow_underscores() {
        assert!(scheme_slug("standard_tier").is_ok());
        assert!(scheme_slug("_x").is_err());
        assert!(scheme_slug("Tier").is_err());
    }

    #[test]
    fn rate_windows_are_bounded_and_distinct() {
        let windows = rate_windows(&[(10, 1), (1000, 3600)]).unwrap();
        assert_eq!(windows[1].period_ms, 3_600_000);
        assert!(rate_windows(&[]).is_err());
        assert!(rate_windows(&[(0, 1)]).is_err());
        assert!(rate_windows(&[(1, 0)]).is_err());
        assert!(rate_windows(&[(1, MAX_RATE_PERIOD_SECONDS + 1)]).is_err());
        assert!(rate_windows(&[(1, 60), (5, 60)]).is_err());
    }

    #[test]
    fn text_fields() {
        assert!(text("name", "Production key", 10).is_err());
        assert!(text("name", "  ", 10).is_err());
        assert!(text("name", "a\u{0}b", 10).is_err());
        assert!(text("name", "ключ", 10).is_ok());
    }

    #[test]
    fn permissions_are_sorted_and_deduplicated() {
        let names = vec!["b".to_owned(), "a".to_owned(), "b".to_owned()];
        assert_eq!(permissions(&names).unwrap(), vec!["a", "b"]);
        assert!(permissions(&["no spaces".to_owned()]).is_err());
    }
}
