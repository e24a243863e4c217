//! Who is calling: a secret key, looked up by its keyed hash and cached in
//! memory once found, so authentication costs no database round trip on
//! the hot path. Keys are never logged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kiln_core::auth::{Environment, KeyVault, SecretKey, sign_jwt};
use kiln_store::Store;
use serde_json::json;

use crate::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub environment: Environment,
    pub secret: SecretKey,
}

/// How long the public access token on a trigger answer lives, as on
/// Trigger.dev.
const RUN_TOKEN_TTL_SECONDS: i64 = 3600;

impl Caller {
    /// A public access token that may read one run: what Trigger.dev puts in
    /// the `x-trigger-jwt` header of a trigger answer. Signed with the
    /// caller's own secret key, as the SDK signs the tokens it makes.
    pub fn run_token(&self, run_id: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "sub": self.key_id,
            "pub": true,
            "scopes": [format!("read:runs:{run_id}")],
            "iat": now,
            "exp": now + RUN_TOKEN_TTL_SECONDS,
        });
        sign_jwt(self.secret.expose().as_bytes(), &claims)
    }
}

pub struct KeyCache {
    store: Store,
    vault: KeyVault,
    known: RwLock<HashMap<[u8; 32], Arc<Caller>>>,
}

impl KeyCache {
    pub fn new(store: Store, vault: KeyVault) -> Self {
        Self {
            store,
            vault,
            known: RwLock::new(HashMap::new()),
        }
    }

    pub async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let invalid = || ApiError::Unauthorized("invalid secret key".into());
        if SecretKey::parse(token).is_none() {
            return Err(invalid());
        }
        let hash = self.vault.lookup_hash(token);
        if let Some(caller) = self.read().get(&hash) {
            return Ok(Caller::clone(caller));
        }
        let stored = self.store.find_key(&hash).await?.ok_or_else(invalid)?;
        let secret = self
            .vault
            .decrypt(&stored.nonce, &stored.encrypted_key)
            .map_err(|e| ApiError::Internal(format!("key {}: {e}", stored.id)))?;
        if secret.expose() != token {
            return Err(invalid());
        }
        let caller = Caller {
            key_id: stored.id,
            environment: stored.environment,
            secret,
        };
        self.known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(hash, Arc::new(caller.clone()));
        Ok(caller)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], Arc<Caller>>> {
        self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
