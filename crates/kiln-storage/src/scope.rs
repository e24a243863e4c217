//! Each environment's part of the store. A key a task payload names is the
//! caller's key, resolved inside the root of the run's environment (by
//! default `dev/` for dev, the bucket's top for prod); kiln's own objects
//! (`_kiln/`) and the other environment's root are out of reach, so a key
//! of one environment can neither read, overwrite nor delete the other's
//! objects, nor learn whether they exist.

use crate::ObjectKey;

/// kiln's own objects (packets, export expiries): never a task's key.
pub const RESERVED_PREFIX: &str = "_kiln/";
/// Payloads the SDK uploads before triggering (`_kiln/packets/<env>/…`).
pub const PACKETS_PREFIX: &str = "_kiln/packets/";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("{0:?} is not a storage root: use nothing (the top) or a prefix ending with /")]
    BadRoot(String),
    #[error("the dev and prod storage roots must differ, and neither may hold the other")]
    Overlapping,
    #[error("keys under {RESERVED_PREFIX} are kiln's own")]
    Reserved,
    #[error("that key is outside this environment's storage")]
    OtherEnvironment,
    #[error("{0}")]
    Key(String),
}

/// Where dev's and prod's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageScopes {
    dev: String,
    prod: String,
}

impl StorageScopes {
    /// `dev` and `prod` are each empty (the top of the store) or a prefix
    /// ending with `/`; they must keep the environments apart.
    pub fn new(dev: &str, prod: &str) -> Result<Self, ScopeError> {
        for root in [dev, prod] {
            let valid = root.is_empty()
                || (root.ends_with('/')
                    && !root.starts_with(RESERVED_PREFIX)
                    && ObjectKey::parse(format!("{root}x").as_str()).is_ok());
            if !valid {
                return Err(ScopeError::BadRoot(root.to_owned()));
            }
        }
        let nested = |a: &str, b: &str| !a.is_empty() && b.starts_with(a);
        if dev == prod || nested(dev, prod) || nested(prod, dev) {
            return Err(ScopeError::Overlapping);
        }
        Ok(Self {
            dev: dev.to_owned(),
            prod: prod.to_owned(),
        })
    }

    /// Dev under `dev/`, prod at the top (where kiln kept everything before
    /// environments had roots).
    pub fn separated() -> Self {
        Self {
            dev: "dev/".to_owned(),
            prod: String::new(),
        }
    }

    fn roots(&self, prod: bool) -> (&str, &str) {
        if prod {
            (&self.prod, &self.dev)
        } else {
            (&self.dev, &self.prod)
        }
    }

    /// The store's key for `key` as a run of the environment names it
    /// (`prod` true for prod).
    pub fn resolve(&self, prod: bool, key: &str) -> Result<ObjectKey, ScopeError> {
        let key = ObjectKey::parse(key).map_err(|e| ScopeError::Key(e.to_string()))?;
        if key.as_str().starts_with(RESERVED_PREFIX) {
            return Err(ScopeError::Reserved);
        }
        let (own, other) = self.roots(prod);
        let full = format!("{own}{}", key.as_str());
        if !other.is_empty() && full.starts_with(other) {
            return Err(ScopeError::OtherEnvironment);
        }
        ObjectKey::parse(full.as_str()).map_err(|e| ScopeError::Key(e.to_string()))
    }

    /// The key as the environment's runs name it: the store's key without
    /// the environment's root.
    pub fn local<'a>(&self, prod: bool, full: &'a str) -> &'a str {
        let (own, _) = self.roots(prod);
        full.strip_prefix(own).unwrap_or(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_inside_their_environment_only() {
        let scopes = StorageScopes::separated();
        assert_eq!(
            scopes.resolve(false, "a/b.pdf").map(|k| k.to_string()),
            Ok("dev/a/b.pdf".into())
        );
        assert_eq!(
            scopes.resolve(true, "a/b.pdf").map(|k| k.to_string()),
            Ok("a/b.pdf".into())
        );
        assert_eq!(scopes.resolve(true, "dev/a/b.pdf"), Err(ScopeError::OtherEnvironment));
        assert_eq!(
            scopes.resolve(false, "_kiln/packets/prod/p.json"),
            Err(ScopeError::Reserved)
        );
        assert_eq!(scopes.resolve(true, "_kiln/expiries/x.json"), Err(ScopeError::Reserved));
        assert_eq!(scopes.local(false, "dev/a/b.pdf"), "a/b.pdf");
        assert_eq!(scopes.local(true, "a/b.pdf"), "a/b.pdf");
    }

    #[test]
    fn roots_must_keep_the_environments_apart() {
        assert!(StorageScopes::new("dev/", "prod/").is_ok());
        assert!(StorageScopes::new("", "prod/").is_ok());
        assert_eq!(StorageScopes::new("", ""), Err(ScopeError::Overlapping));
        assert_eq!(StorageScopes::new("envs/", "envs/prod/"), Err(ScopeError::Overlapping));
        assert!(matches!(StorageScopes::new("dev", ""), Err(ScopeError::BadRoot(_))));
        assert!(matches!(
            StorageScopes::new("_kiln/dev/", ""),
            Err(ScopeError::BadRoot(_))
        ));
    }
}
