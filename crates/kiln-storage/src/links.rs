//! Signed, expiring download links for the local backend, the counterpart
//! of S3's presigned URLs. A link is
//! `<base>/api/v1/objects/<key>?expires=<unix seconds>&signature=<hex>`,
//! where the signature is an HMAC-SHA256 of the key and the expiry under a
//! key derived from the server secret. kiln's API checks it with
//! [`LinkSigner::verify`] before it serves the file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{ObjectKey, PresignedUrl};

/// The path under which kiln's API serves local objects.
pub const OBJECTS_PATH: &str = "/api/v1/objects/";

#[derive(Clone)]
pub struct LinkSigner {
    base_url: String,
    key: [u8; 32],
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// What a link lets its holder do: download the object, or upload it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAccess {
    Get,
    Put,
}

impl LinkAccess {
    fn tag(self) -> &'static [u8] {
        match self {
            LinkAccess::Get => b"GET\n",
            LinkAccess::Put => b"PUT\n",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link has expired")]
    Expired,
    #[error("the link's signature does not match")]
    BadSignature,
    #[error("the link is malformed: {0}")]
    Malformed(&'static str),
}

impl LinkSigner {
    /// `base_url` is where kiln's API is reached from outside (no trailing
    /// slash needed); `secret` is the server secret the signing key is
    /// derived from.
    pub fn new(base_url: &str, secret: &[u8]) -> Self {
        let mut derive = hmac_with(secret);
        derive.update(b"kiln object links v1");
        let key: [u8; 32] = derive.finalize().into_bytes().into();
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
        }
    }

    /// Whether links can be made: a signer built with an empty base URL
    /// (a process that does not know where the API is reached) can only
    /// verify.
    pub fn can_sign(&self) -> bool {
        !self.base_url.is_empty()
    }

    fn signature(&self, access: LinkAccess, key: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac = hmac_with(&self.key);
        mac.update(access.tag());
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    pub fn sign(&self, access: LinkAccess, key: &ObjectKey, expires_in: Duration, now: SystemTime) -> PresignedUrl {
        let expires_at = now + expires_in;
        let expires = unix_seconds(expires_at);
        let signature = hex::encode(self.signature(access, key.as_str(), expires).finalize().into_bytes());
        PresignedUrl {
            url: format!(
                "{}{OBJECTS_PATH}{}?expires={expires}&signature={signature}",
                self.base_url,
                encode_path(key.as_str())
            ),
            expires_at: UNIX_EPOCH + Duration::from_secs(expires),
        }
    }

    /// Checks a link's parts (the key already percent-decoded) at `now`.
    pub fn verify(
        &self,
        access: LinkAccess,
        key: &str,
        expires: &str,
        signature: &str,
        now: SystemTime,
    ) -> Result<ObjectKey, LinkError> {
        let key = ObjectKey::parse(key).map_err(|_| LinkError::Malformed("invalid object key"))?;
        let expires: u64 = expires
            .parse()
            .map_err(|_| LinkError::Malformed("expires is not a number"))?;
        let signature = hex::decode(signature).map_err(|_| LinkError::Malformed("signature is not hex"))?;
        // The signature first, so that an altered expiry reads as tampering.
        self.signature(access, key.as_str(), expires)
            .verify_slice(&signature)
            .map_err(|_| LinkError::BadSignature)?;
        if unix_seconds(now) >= expires {
            return Err(LinkError::Expired);
        }
        Ok(key)
    }
}

fn hmac_with(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Percent-encodes a key for a URL path, keeping its `/` separators.
fn encode_path(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => encoded.push(byte as char),
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> (String, String, String) {
        let (path, query) = url.split_once('?').unwrap_or_default();
        let key = path.split_once(OBJECTS_PATH).map(|(_, k)| k).unwrap_or_default();
        let mut expires = String::new();
        let mut signature = String::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) => v.clone_into(&mut expires),
                Some(("signature", v)) => v.clone_into(&mut signature),
                _ => {}
            }
        }
        (key.to_owned(), expires, signature)
    }

    #[test]
    fn a_link_verifies_until_it_expires() {
        let signer = LinkSigner::new("http://kiln.test/", b"0123456789abcdef0123456789abcdef");
        let key = ObjectKey::parse("exports/a.zip").unwrap_or_else(|e| panic!("{e}"));
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let link = signer.sign(LinkAccess::Get, &key, Duration::from_secs(60), now);
        assert!(
            link.url
                .starts_with("http://kiln.test/api/v1/objects/exports/a.zip?expires=1800000060&")
        );
        let (path, expires, signature) = parts(&link.url);
        assert_eq!(
            signer.verify(LinkAccess::Get, &path, &expires, &signature, now),
            Ok(key.clone())
        );
        assert_eq!(
            signer.verify(
                LinkAccess::Get,
                &path,
                &expires,
                &signature,
                now + Duration::from_secs(60)
            ),
            Err(LinkError::Expired)
        );
        assert_eq!(
            signer.verify(LinkAccess::Get, &path, "1900000000", &signature, now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            signer.verify(LinkAccess::Get, "exports/b.zip", &expires, &signature, now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            signer.verify(LinkAccess::Put, &path, &expires, &signature, now),
            Err(LinkError::BadSignature),
            "a download link does not allow an upload"
        );
        let other = LinkSigner::new("http://kiln.test", b"another secret of thirty-two bytes!!");
        assert_eq!(
            other.verify(LinkAccess::Get, &path, &expires, &signature, now),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn keys_are_percent_encoded_in_links() {
        let signer = LinkSigner::new("http://kiln.test", b"0123456789abcdef0123456789abcdef");
        let key = ObjectKey::parse("room 1/ünï?.pdf").unwrap_or_else(|e| panic!("{e}"));
        let link = signer.sign(LinkAccess::Get, &key, Duration::from_secs(60), UNIX_EPOCH);
        assert!(link.url.contains("/room%201/%C3%BCn%C3%AF%3F.pdf?"), "{}", link.url);
    }
}
