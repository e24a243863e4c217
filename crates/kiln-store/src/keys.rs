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

impl Store {
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
