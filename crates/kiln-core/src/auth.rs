//! Secret keys and tokens, as pure functions.
//!
//! A secret key looks like Trigger.dev's (`tr_dev_` or `tr_prod_` and 24
//! letters and digits). kiln keeps each key encrypted under the server
//! secret, not only hashed: the SDKs sign public access tokens locally with
//! the secret key (HS256), so kiln must hold the key itself to verify them.
//! Look-ups go through a keyed hash, so the database never needs the key in
//! the clear. Nothing here logs or prints a key; [`SecretKey`]'s `Debug`
//! hides it.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const KEY_BODY_LEN: usize = 24;
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Dev,
    Prod,
}

impl Environment {
    /// Every environment, in a fixed order.
    pub const ALL: [Environment; 2] = [Environment::Dev, Environment::Prod];

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Dev => "dev",
            Environment::Prod => "prod",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "dev" => Some(Environment::Dev),
            "prod" => Some(Environment::Prod),
            _ => None,
        }
    }

    /// Trigger's environment type names, shown in run listings.
    pub fn trigger_name(self) -> &'static str {
        match self {
            Environment::Dev => "Development",
            Environment::Prod => "Production",
        }
    }
}

/// A secret key in the clear. Only `expose` shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

impl SecretKey {
    pub fn generate(env: Environment) -> Self {
        let mut rng = rand::rng();
        let body: String = (0..KEY_BODY_LEN)
            .map(|_| KEY_ALPHABET[rng.random_range(0..KEY_ALPHABET.len())] as char)
            .collect();
        Self(format!("tr_{}_{body}", env.as_str()))
    }

    /// Accepts only the exact shape kiln issues; says which environment.
    pub fn parse(raw: &str) -> Option<(Self, Environment)> {
        let rest = raw.strip_prefix("tr_")?;
        let (env, body) = rest.split_once('_')?;
        let env = Environment::parse(env)?;
        let well_formed = body.len() == KEY_BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric());
        well_formed.then(|| (Self(raw.to_owned()), env))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Encrypts keys at rest and derives their look-up hashes, both from the
/// server secret (`KILN_SECRET`).
#[derive(Clone)]
pub struct KeyVault {
    cipher: ChaCha20Poly1305,
    lookup_key: [u8; 32],
}

impl fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyVault(…)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("the stored key does not decrypt under this server secret")]
    Undecryptable,
    #[error("the stored nonce is malformed")]
    BadNonce,
}

pub const NONCE_LEN: usize = 12;

impl KeyVault {
    pub fn new(server_secret: &str) -> Self {
        let derive = |purpose: &str| -> [u8; 32] {
            let mut hasher = Sha256::new();
            hasher.update(purpose.as_bytes());
            hasher.update([0u8]);
            hasher.update(server_secret.as_bytes());
            hasher.finalize().into()
        };
        let encryption_key = derive("kiln key encryption v1");
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&encryption_key)),
            lookup_key: derive("kiln key lookup v1"),
        }
    }

    /// The value the database indexes keys by.
    pub fn lookup_hash(&self, key: &str) -> [u8; 32] {
        hmac_sha256(&self.lookup_key, key.as_bytes())
    }

    /// `(nonce, ciphertext)` for storage.
    pub fn encrypt(&self, key: &SecretKey) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), key.0.as_bytes())
            // Encryption of an in-memory buffer only fails past 256 GiB.
            .unwrap_or_default();
        (nonce.to_vec(), ciphertext)
    }

    pub fn decrypt(&self, nonce: &[u8], ciphertext: &[u8]) -> Result<SecretKey, VaultError> {
        if nonce.len() != NONCE_LEN {
            return Err(VaultError::BadNonce);
        }
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| VaultError::Undecryptable)?;
        String::from_utf8(plain)
            .map(SecretKey)
            .map_err(|_| VaultError::Undecryptable)
    }
}

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0u8; 32],
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token is not HS256")]
    UnsupportedAlgorithm,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token has no expiry (exp)")]
    NoExpiry,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued for another service")]
    WrongAudience,
}

/// Whether `a` and `b` are equal, in a time that depends on their length
/// only: for comparing a secret a client showed.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The issuer and audience Trigger.dev's SDK puts in the tokens it signs.
pub const JWT_ISSUER: &str = "https://id.trigger.dev";
pub const JWT_AUDIENCE: &str = "https://api.trigger.dev";

/// A token's claims, read without checking its signature: only to learn
/// which key to verify it with.
pub fn unverified_claims(token: &str) -> Option<Value> {
    let body = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

/// Signs `claims` as an HS256 JWT.
pub fn sign_jwt(secret: &[u8], claims: &impl serde::Serialize) -> String {
    /// `{"alg":"HS256","typ":"JWT"}`, base64url-encoded.
    const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
    // A struct or map of plain values cannot fail to serialize; should a
    // caller's own Serialize fail, the token carries empty claims, which
    // every reader refuses.
    let body = serde_json::to_vec(claims).unwrap_or_default();
    // Header, body and a 32-byte signature (43 characters), base64url,
    // with two dots.
    let mut token = String::with_capacity(HEADER.len() + body.len().div_ceil(3) * 4 + 43 + 2);
    token.push_str(HEADER);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&body, &mut token);
    let signature = hmac_sha256(secret, token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

/// Verifies an HS256 JWT and its `exp` (seconds since the epoch) against
/// `now_unix`; returns its claims.
pub fn verify_jwt(secret: &[u8], token: &str, now_unix: i64) -> Result<Value, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(body), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let decode_json = |part: &str| -> Result<Value, JwtError> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
    };
    if decode_json(header)?.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| JwtError::Malformed)?;
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).map_err(|_| JwtError::Malformed)?;
    mac.update(format!("{header}.{body}").as_bytes());
    mac.verify_slice(&signature).map_err(|_| JwtError::BadSignature)?;
    let claims = decode_json(body)?;
    // Seconds may be fractional; a token without a numeric `exp` would
    // never expire, and every token kiln or the SDK signs has one.
    let exp = claims.get("exp").and_then(Value::as_f64).ok_or(JwtError::NoExpiry)?;
    if exp <= now_unix as f64 {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        match nbf.as_f64() {
            Some(nbf) if nbf <= now_unix as f64 => {}
            _ => return Err(JwtError::NotYetValid),
        }
    }
    let claim_is = |name: &str, expected: &str| match claims.get(name) {
        None => true,
        Some(Value::String(value)) => value == expected,
        Some(Value::Array(values)) => values.iter().any(|v| v.as_str() == Some(expected)),
        Some(_) => false,
    };
    if !claim_is("iss", JWT_ISSUER) || !claim_is("aud", JWT_AUDIENCE) {
        return Err(JwtError::WrongAudience);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_triggers_shape() {
        let key = SecretKey::generate(Environment::Prod);
        assert!(key.expose().starts_with("tr_prod_"));
        assert_eq!(key.expose().len(), "tr_prod_".len() + 24);
        assert_eq!(SecretKey::parse(key.expose()).map(|(_, e)| e), Some(Environment::Prod));
        assert!(SecretKey::parse("tr_dev_sk_abc").is_none());
        assert!(SecretKey::parse("tr_test_aaaaaaaaaaaaaaaaaaaaaaaa").is_none());
        assert!(!format!("{key:?}").contains("tr_prod"));
    }

    #[test]
    fn keys_round_trip_through_the_vault_and_not_under_another_secret() {
        let vault = KeyVault::new("a server secret that is long enough");
        let key = SecretKey::generate(Environment::Dev);
        let (nonce, sealed) = vault.encrypt(&key);
        assert_eq!(vault.decrypt(&nonce, &sealed), Ok(key.clone()));
        let other = KeyVault::new("another server secret, also long");
        assert_eq!(other.decrypt(&nonce, &sealed), Err(VaultError::Undecryptable));
        assert_ne!(vault.lookup_hash(key.expose()), other.lookup_hash(key.expose()));
    }

    #[test]
    fn jwts_verify_and_expire() {
        let claims = serde_json::json!({ "sub": "dev", "exp": 2_000 });
        let token = sign_jwt(b"secret", &claims);
        assert_eq!(verify_jwt(b"secret", &token, 1_000), Ok(claims));
        assert_eq!(verify_jwt(b"other", &token, 1_000), Err(JwtError::BadSignature));
        assert_eq!(verify_jwt(b"secret", &token, 2_000), Err(JwtError::Expired));
        assert_eq!(verify_jwt(b"secret", "a.b", 0), Err(JwtError::Malformed));
    }

    #[test]
    fn a_token_without_a_numeric_expiry_or_before_its_start_is_refused() {
        let verify = |claims: serde_json::Value, now| verify_jwt(b"secret", &sign_jwt(b"secret", &claims), now);
        assert_eq!(
            verify(serde_json::json!({ "sub": "x" }), 1_000),
            Err(JwtError::NoExpiry)
        );
        assert_eq!(
            verify(serde_json::json!({ "exp": "1600000000" }), 1_000),
            Err(JwtError::NoExpiry)
        );
        assert_eq!(
            verify(serde_json::json!({ "exp": 1_600_000_000.5 }), 1_700_000_000),
            Err(JwtError::Expired)
        );
        assert!(verify(serde_json::json!({ "exp": 2_000.5 }), 1_000).is_ok());
        assert_eq!(
            verify(serde_json::json!({ "exp": 5_000, "nbf": 2_000 }), 1_000),
            Err(JwtError::NotYetValid)
        );
        assert!(verify(serde_json::json!({ "exp": 5_000, "nbf": 1_000 }), 1_000).is_ok());
    }

    #[test]
    fn a_signed_jwt_has_the_hs256_header_and_the_signature_of_its_first_two_parts() {
        let token = sign_jwt(b"secret", &serde_json::json!({ "sub": "dev" }));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = URL_SAFE_NO_PAD.decode(parts[0]).expect("base64url");
        let header: Value = serde_json::from_slice(&header).expect("a JSON header");
        assert_eq!(header, serde_json::json!({ "alg": "HS256", "typ": "JWT" }));
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url"),
            hmac_sha256(b"secret", signed.as_bytes())
        );
    }
}
