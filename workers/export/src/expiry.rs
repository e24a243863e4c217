//! When exports expire, kept in storage itself: each export leaves a small
//! marker object `_kiln/expiries/<unix seconds, 12 digits>-<key hash>.json`
//! naming the export's key. Markers sort by expiry, so the cleanup reads
//! only names to find what is due, and it needs no database: whatever the
//! backend, the storage holds both the exports and their deadlines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_storage::{ObjectKey, ObjectStore, StorageError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MARKER_PREFIX: &str = "_kiln/expiries/";
/// Largest marker read; a marker is a key and a date.
const MARKER_LIMIT: u64 = 16 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    key: String,
    #[serde(rename = "expiresAt")]
    expires_at: String,
}

fn key_hash(key: &ObjectKey) -> String {
    hex::encode(&Sha256::digest(key.as_str().as_bytes())[..12])
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

/// A marker's name: its expiry and whose it is.
fn parse_marker_name(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix(MARKER_PREFIX)?.strip_suffix(".json")?;
    let (seconds, hash) = rest.split_once('-')?;
    Some((seconds.parse().ok()?, hash))
}

/// Records that `key` expires at `expires_at`.
pub async fn register(store: &dyn ObjectStore, key: &ObjectKey, expires_at: SystemTime) -> Result<(), StorageError> {
    let seconds = unix_seconds(expires_at);
    let marker_key = ObjectKey::parse(format!("{MARKER_PREFIX}{seconds:012}-{}.json", key_hash(key)))?;
    let marker = Marker {
        key: key.to_string(),
        expires_at: chrono::DateTime::<chrono::Utc>::from(expires_at).to_rfc3339(),
    };
    let body = serde_json::to_vec(&marker).unwrap_or_default();
    kiln_storage::put_bytes(store, &marker_key, &body, "application/json").await?;
    Ok(())
}

#[derive(Debug, Default)]
pub struct Sweep {
    /// Exports deleted.
    pub deleted: Vec<String>,
    /// Exports past an expiry whose key a later export reused: kept until
    /// that one expires.
    pub kept_for_later_export: Vec<String>,
    /// Markers still in the future.
    pub pending: usize,
}

/// Deletes every export whose expiry is at or before `now`: the export
/// first, its marker last, so an interrupted sweep is finished by the next.
pub async fn sweep(store: &dyn ObjectStore, now: SystemTime) -> Result<Sweep, StorageError> {
    let now = unix_seconds(now);
    let markers = store.list(MARKER_PREFIX).await?;
    let mut due = Vec::new();
    let mut pending_hashes = std::collections::HashSet::new();
    let mut sweep = Sweep::default();
    for marker in &markers {
        let Some((expires, hash)) = parse_marker_name(&marker.key) else {
            tracing::warn!(marker = %marker.key, "not an expiry marker; left alone");
            continue;
        };
        if expires <= now {
            due.push(marker.key.as_str());
        } else {
            pending_hashes.insert(hash);
            sweep.pending += 1;
        }
    }
    for marker_name in due {
        let marker_key = ObjectKey::parse(marker_name)?;
        let marker: Marker = match kiln_storage::get_bytes(store, &marker_key, MARKER_LIMIT).await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(marker) => marker,
                Err(error) => {
                    tracing::warn!(marker = %marker_name, %error, "unreadable expiry marker; removed");
                    store.delete(&marker_key).await?;
                    continue;
                }
            },
            // Removed meanwhile by another sweep.
            Err(StorageError::NotFound { .. }) => continue,
            Err(other) => return Err(other),
        };
        let export = ObjectKey::parse(marker.key.as_str())?;
        let reused = parse_marker_name(marker_name).is_some_and(|(_, hash)| pending_hashes.contains(hash));
        if reused {
            sweep.kept_for_later_export.push(marker.key);
        } else {
            store.delete(&export).await?;
            tracing::info!(export = %export, expired_at = %marker.expires_at, "expired export deleted");
            sweep.deleted.push(marker.key);
        }
        store.delete(&marker_key).await?;
    }
    Ok(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_carry_their_expiry() {
        assert_eq!(
            parse_marker_name("_kiln/expiries/001790000000-abcdef.json"),
            Some((1_790_000_000, "abcdef"))
        );
        assert_eq!(parse_marker_name("_kiln/expiries/soon-abc.json"), None);
        assert_eq!(parse_marker_name("exports/a.zip"), None);
    }
}
