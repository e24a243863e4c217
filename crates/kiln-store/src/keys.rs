//! Secret keys at rest: encrypted key, keyed look-up hash, environment.

use kiln_core::auth::Environment;

use crate::{Store, StoreError};

/// A key as stored; decrypt it with the `KeyVault` that sealed it.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub id: String,
    pub environment: Environment,
    pub nonce: Vec<u8>,
    pub encrypted_key: Vec<u8>,
}

/// What `kiln keys list` shows of a key (never the key itself).
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: String,
    pub environment: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Store {
    /// Every key, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let rows: Vec<(
            String,
            String,
            chrono::DateTime<chrono::Utc>,
            Option<chrono::DateTime<chrono::Utc>>,
        )> = sqlx::query_as("SELECT id, environment, created_at, revoked_at FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, environment, created_at, revoked_at)| KeyInfo {
                id,
                environment,
                created_at,
                revoked_at,
            })
            .collect())
    }

    /// Revokes a key; false when there is no live key with that id.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn insert_key(
        &self,
        id: &str,
        environment: Environment,
        lookup_hash: &[u8],
        nonce: &[u8],
        encrypted_key: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, environment, lookup_hash, nonce, encrypted_key)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(environment.as_str())
        .bind(lookup_hash)
        .bind(nonce)
        .bind(encrypted_key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live (not revoked) key with this id.
    pub async fn find_key_by_id(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row: Option<(String, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT id, environment, nonce, encrypted_key FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(stored_key).transpose()
    }

    /// The live (not revoked) key with this look-up hash.
    pub async fn find_key(&self, lookup_hash: &[u8]) -> Result<Option<StoredKey>, StoreError> {
        let row: Option<(String, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT id, environment, nonce, encrypted_key FROM api_keys
             WHERE lookup_hash = $1 AND revoked_at IS NULL",
        )
        .bind(lookup_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(stored_key).transpose()
    }
}

fn stored_key(
    (id, environment, nonce, encrypted_key): (String, String, Vec<u8>, Vec<u8>),
) -> Result<StoredKey, StoreError> {
    let environment = Environment::parse(&environment)
        .ok_or_else(|| StoreError::Corrupt(format!("key {id} has environment {environment:?}")))?;
    Ok(StoredKey {
        id,
        environment,
        nonce,
        encrypted_key,
    })
}
