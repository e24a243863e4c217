//! Who is calling: a secret key, looked up by its keyed hash and cached in
//! memory once found, so authentication costs no database round trip on
//! the hot path; or a public access token (a JWT signed with a secret key,
//! by kiln or by the SDK's `auth.createPublicToken`), which may only read
//! what its scopes name. Keys are never logged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kiln_core::auth::{
    Environment, JWT_AUDIENCE, JWT_ISSUER, KeyVault, SecretKey, sign_jwt, unverified_claims, verify_jwt,
};
use kiln_store::Store;
use serde_json::json;

use crate::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub environment: Environment,
    pub secret: SecretKey,
    /// `None` for a secret key (anything goes); a public token's scopes
    /// (`read:runs:<id>`, `read:tags:<tag>`, `read:runs`, `read:all`).
    pub scopes: Option<Vec<String>>,
}

/// How long the public access token on a trigger answer lives, as on
/// Trigger.dev.
const RUN_TOKEN_TTL_SECONDS: i64 = 3600;

impl Caller {
    /// A public access token that may read one run: what Trigger.dev puts in
    /// the `x-trigger-jwt` header of a trigger answer. Signed with the
    /// caller's own secret key, as the SDK signs the tokens it makes.
    pub fn run_token(&self, run_id: &str) -> String {
        /// Typed rather than a `json!` map: a token is signed per trigger.
        #[derive(serde::Serialize)]
        struct RunTokenClaims<'a> {
            sub: &'a str,
            #[serde(rename = "pub")]
            public: bool,
            scopes: [String; 1],
            iss: &'static str,
            aud: &'static str,
            iat: i64,
            exp: i64,
        }
        let now = chrono::Utc::now().timestamp();
        let claims = RunTokenClaims {
            sub: &self.key_id,
            public: true,
            scopes: [format!("read:runs:{run_id}")],
            iss: JWT_ISSUER,
            aud: JWT_AUDIENCE,
            iat: now,
            exp: now + RUN_TOKEN_TTL_SECONDS,
        };
        sign_jwt(self.secret.expose().as_bytes(), &claims)
    }

    /// Endpoints that change things, or list everything, need a secret key.
    pub fn require_secret_key(&self) -> Result<(), ApiError> {
        match self.scopes {
            None => Ok(()),
            Some(_) => Err(ApiError::Forbidden(
                "this endpoint needs a secret key, not a public access token".into(),
            )),
        }
    }

    /// May this caller read a run with this id and these tags?
    /// A batch: a secret key, or a token with `read:batch:<id>`,
    /// `read:batch` or `read:all`.
    pub fn may_read_batch(&self, batch_id: &str) -> bool {
        let Some(scopes) = &self.scopes else { return true };
        scopes.iter().any(|scope| {
            scope == "read:all" || scope == "read:batch" || scope.strip_prefix("read:batch:") == Some(batch_id)
        })
    }

    /// The claims the SDK signs into the tokens it makes for a trigger's
    /// answer (`x-trigger-jwt-claims`), so kiln knows the key that signed.
    pub fn token_claims_header(&self) -> String {
        json!({ "sub": self.key_id, "pub": true }).to_string()
    }

    /// Every run carrying `tag`: a secret key, or `read:tags:<tag>`,
    /// `read:runs` or `read:all`.
    pub fn may_read_tag(&self, tag: &str) -> bool {
        let Some(scopes) = &self.scopes else { return true };
        scopes
            .iter()
            .any(|scope| scope == "read:all" || scope == "read:runs" || scope.strip_prefix("read:tags:") == Some(tag))
    }

    pub fn may_read_run(&self, run_id: &str, tags: &[String]) -> bool {
        let Some(scopes) = &self.scopes else { return true };
        scopes.iter().any(|scope| {
            scope == "read:all"
                || scope == "read:runs"
                || scope.strip_prefix("read:runs:") == Some(run_id)
                || scope
                    .strip_prefix("read:tags:")
                    .is_some_and(|tag| tags.iter().any(|t| t == tag))
        })
    }
}

/// The one answer to a key or token kiln does not accept, whatever the
/// reason.
pub const REFUSED: &str = "invalid or expired secret key or access token";

/// How long a key found once is trusted without asking Postgres again: a
/// revoked key stops working everywhere within this time.
pub const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a key Postgres did not know is refused without asking again,
/// and how many such keys are remembered: a client repeating a bad key
/// costs no query, and a key made meanwhile works within seconds.
const UNKNOWN_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(5);
const UNKNOWN_KEYS_KEPT: usize = 10_000;

pub struct KeyCache {
    store: Store,
    vault: KeyVault,
    known: RwLock<HashMap<[u8; 32], (Arc<Caller>, std::time::Instant)>>,
    /// The keys that signed public tokens, by id, found as `known` is: a
    /// browser's live realtime request, repeated after every change, costs
    /// no query for its key.
    signers: RwLock<HashMap<String, (Arc<Caller>, std::time::Instant)>>,
    /// Look-up hashes of secret keys Postgres did not know, and when.
    unknown: RwLock<HashMap<[u8; 32], std::time::Instant>>,
    ttl: std::time::Duration,
}

/// Makes a new secret key for `environment`, stores it sealed with
/// `vault`, and answers its id and the key: the only time the key is seen.
pub async fn create_key(
    store: &Store,
    vault: &KeyVault,
    environment: kiln_core::auth::Environment,
) -> Result<(String, kiln_core::auth::SecretKey), kiln_store::StoreError> {
    let key = kiln_core::auth::SecretKey::generate(environment);
    let (nonce, sealed) = vault.encrypt(&key);
    let id = format!("key_{}", kiln_core::id::random_alphanumeric(16));
    store
        .insert_key(&id, environment, &vault.lookup_hash(key.expose()), &nonce, &sealed)
        .await?;
    Ok((id, key))
}

impl KeyCache {
    /// [`create_key`] with this cache's store and vault.
    pub async fn create_key(
        &self,
        environment: kiln_core::auth::Environment,
    ) -> Result<(String, kiln_core::auth::SecretKey), kiln_store::StoreError> {
        create_key(&self.store, &self.vault, environment).await
    }

    pub fn new(store: Store, vault: KeyVault) -> Self {
        Self {
            store,
            vault,
            known: RwLock::new(HashMap::new()),
            signers: RwLock::new(HashMap::new()),
            unknown: RwLock::new(HashMap::new()),
            ttl: KEY_CACHE_TTL,
        }
    }

    /// Keys are looked up again after `ttl` (tests shorten it).
    pub fn with_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl = ttl;
        self
    }

    pub async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let invalid = || {
            tracing::debug!("refused: not a live secret key");
            ApiError::Unauthorized(REFUSED.into())
        };
        if SecretKey::parse(token).is_none() {
            return match unverified_claims(token) {
                Some(claims) => self.authenticate_public(token, &claims).await,
                None => Err(invalid()),
            };
        }
        let hash = self.vault.lookup_hash(token);
        if let Some((caller, found_at)) = self.read().get(&hash)
            && found_at.elapsed() < self.ttl
        {
            return Ok(Caller::clone(caller));
        }
        let recently_unknown = self
            .unknown
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash)
            .is_some_and(|at| at.elapsed() < UNKNOWN_KEY_TTL);
        if recently_unknown {
            return Err(invalid());
        }
        let Some(stored) = self.store.find_key(&hash).await? else {
            let mut unknown = self.unknown.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if unknown.len() >= UNKNOWN_KEYS_KEPT {
                unknown.retain(|_, at| at.elapsed() < UNKNOWN_KEY_TTL);
                if unknown.len() >= UNKNOWN_KEYS_KEPT {
                    unknown.clear();
                }
            }
            unknown.insert(hash, std::time::Instant::now());
            return Err(invalid());
        };
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
            scopes: None,
        };
        self.known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(hash, (Arc::new(caller.clone()), std::time::Instant::now()));
        Ok(caller)
    }

    /// A public access token: its `sub` names the key that signed it.
    async fn authenticate_public(&self, token: &str, claims: &serde_json::Value) -> Result<Caller, ApiError> {
        // Why goes to the log: a caller learns nothing from which check
        // failed (an unknown key from a bad signature, say).
        let invalid = |why: &str| {
            tracing::debug!(why, "refused a public access token");
            ApiError::Unauthorized(REFUSED.into())
        };
        let key_id = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| invalid("no sub claim"))?;
        let cached = self
            .signers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key_id)
            .filter(|(_, found_at)| found_at.elapsed() < self.ttl)
            .map(|(signer, _)| Arc::clone(signer));
        let signer = match cached {
            Some(signer) => signer,
            None => {
                let stored = self
                    .store
                    .find_key_by_id(key_id)
                    .await?
                    .ok_or_else(|| invalid("unknown key"))?;
                let secret = self
                    .vault
                    .decrypt(&stored.nonce, &stored.encrypted_key)
                    .map_err(|e| ApiError::Internal(format!("key {}: {e}", stored.id)))?;
                let signer = Arc::new(Caller {
                    key_id: stored.id,
                    environment: stored.environment,
                    secret,
                    scopes: None,
                });
                let mut signers = self.signers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                // Only keys Postgres knows are kept, so this holds at most
                // one entry per key; expired ones go as new ones come.
                signers.retain(|_, (_, found_at)| found_at.elapsed() < self.ttl);
                signers.insert(signer.key_id.clone(), (Arc::clone(&signer), std::time::Instant::now()));
                signer
            }
        };
        let claims = verify_jwt(signer.secret.expose().as_bytes(), token, chrono::Utc::now().timestamp())
            .map_err(|e| invalid(&e.to_string()))?;
        let scopes = claims
            .get("scopes")
            .and_then(serde_json::Value::as_array)
            .map(|scopes| scopes.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Ok(Caller {
            scopes: Some(scopes),
            ..Caller::clone(&signer)
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], (Arc<Caller>, std::time::Instant)>> {
        self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
