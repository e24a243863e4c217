//! Object keys, checked once. A key is a `/`-separated relative path with
//! no empty, `.` or `..` segment, so that the local backend can map it to a
//! file under its root and never outside it.

use crate::StorageError;

/// Keys starting with this are kiln's own bookkeeping in the local
/// backend's folder (unfinished writes), never objects.
pub(crate) const RESERVED_PREFIX: &str = ".kiln-";

const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(key: impl Into<String>) -> Result<Self, StorageError> {
        let key = key.into();
        let invalid = |reason| StorageError::InvalidKey {
            key: key.clone(),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("is empty"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(invalid("is longer than 1024 bytes"));
        }
        if key.starts_with('/') {
            return Err(invalid("must not start with /"));
        }
        if key.contains('\\') || key.chars().any(char::is_control) {
            return Err(invalid("must not contain backslashes or control characters"));
        }
        if key
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(invalid("must not contain empty, . or .. segments"));
        }
        if key.starts_with(RESERVED_PREFIX) {
            return Err(invalid("must not start with .kiln- (reserved)"));
        }
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nested_relative_keys() {
        for key in ["a.pdf", "exports/2026/room 1/a b.zip", "ünï/côdé.pdf", "a/.hidden"] {
            assert_eq!(ObjectKey::parse(key).map(|k| k.to_string()).ok().as_deref(), Some(key));
        }
    }

    #[test]
    fn refuses_keys_that_escape_or_are_ambiguous() {
        for key in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a/",
            "a\\b",
            "a\0b",
            ".kiln-partial/x",
        ] {
            assert!(ObjectKey::parse(key).is_err(), "{key:?} was accepted");
        }
        assert!(ObjectKey::parse("x".repeat(1025)).is_err());
    }
}
