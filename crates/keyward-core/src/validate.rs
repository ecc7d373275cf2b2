//! Field rules shared by every way into Keyward (HTTP, CLI, import).

use crate::permission::is_valid_permission;

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_SLUG_LEN: usize = 64;
pub const MAX_EXTERNAL_ID_LEN: usize = 200;
pub const MAX_PERMISSIONS: usize = 1000;
/// The serialised size a key's `meta` may take.
pub const MAX_META_BYTES: usize = 16 * 1024;

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
    #[error("{0:?} is not a valid permission name")]
    Permission(String),
    #[error("at most {MAX_PERMISSIONS} permissions are allowed")]
    TooManyPermissions,
    #[error("`meta` is larger than {MAX_META_BYTES} bytes")]
    MetaTooLarge,
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
    if let Some(bad) = names.iter().find(|name| !is_valid_permission(name)) {
        return Err(FieldError::Permission(bad.clone()));
    }
    let mut sorted = names.to_vec();
    sorted.sort();
    sorted.dedup();
    Ok(sorted)
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
