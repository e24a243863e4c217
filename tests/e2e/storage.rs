//! Object storage against real servers: the S3 backend against `s3s-fs`
//! (an S3-compatible server that checks signatures), the local backend on
//! a folder with its links served by a running kiln. Both backends go
//! through the same checks.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use kiln_storage::{LinkSigner, LocalStore, ObjectKey, ObjectStore, StorageError};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::helpers::{Kiln, Mode, S3Server, SERVER_SECRET, temp_dir};

const MIB: usize = 1024 * 1024;

fn key(text: &str) -> ObjectKey {
    ObjectKey::parse(text).expect("valid key")
}

/// `len` pseudo-random bytes produced as they are read, so a large object
/// is never whole in memory; fails with an I/O error after `fail_after`
/// bytes when set.
struct Generated {
    remaining: u64,
    state: u64,
    fail_after: Option<u64>,
    produced: u64,
}

impl Generated {
    fn new(len: u64, seed: u64) -> Self {
        Self {
            remaining: len,
            state: seed | 1,
            fail_after: None,
            produced: 0,
        }
    }

    fn failing_after(mut self, bytes: u64) -> Self {
        self.fail_after = Some(bytes);
        self
    }

    /// The SHA-256 of what `new(len, seed)` produces.
    async fn digest(len: u64, seed: u64) -> Vec<u8> {
        digest_of(Box::pin(Generated::new(len, seed))).await.1
    }
}

impl AsyncRead for Generated {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.fail_after.is_some_and(|limit| self.produced >= limit) {
            return Poll::Ready(Err(std::io::Error::other("the source broke off")));
        }
        let n = (buf.remaining() as u64).min(self.remaining).min(64 * 1024) as usize;
        let mut chunk = vec![0u8; n];
        for byte in &mut chunk {
            // xorshift: cheap, and different bytes everywhere.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *byte = self.state as u8;
        }
        buf.put_slice(&chunk);
        self.remaining -= n as u64;
        self.produced += n as u64;
        Poll::Ready(Ok(()))
    }
}

async fn digest_of(mut reader: Pin<Box<dyn AsyncRead + Send>>) -> (u64, Vec<u8>) {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buffer).await.expect("read object");
        if n == 0 {
            return (total, hasher.finalize().to_vec());
        }
        total += n as u64;
        hasher.update(&buffer[..n]);
    }
}

/// Put, get, head, list and delete, the same for every backend.
async fn round_trip(store: &dyn ObjectStore) {
    let report = key("exports/team 1/report.pdf");
    kiln_storage::put_bytes(store, &report, b"%PDF-1.7 first", "application/pdf")
        .await
        .expect("put");
    kiln_storage::put_bytes(store, &report, b"%PDF-1.7 second version", "application/pdf")
        .await
        .expect("overwrite");
    let bytes = kiln_storage::get_bytes(store, &report, 1024).await.expect("get");
    assert_eq!(bytes, b"%PDF-1.7 second version");
    assert_eq!(store.head(&report).await.expect("head").size, 23);
    let too_small = kiln_storage::get_bytes(store, &report, 10).await;
    assert!(matches!(too_small, Err(StorageError::TooLarge { .. })), "{too_small:?}");

    for name in ["exports/team 1/b.txt", "exports/team 2/c.txt", "other/d.txt"] {
        kiln_storage::put_bytes(store, &key(name), name.as_bytes(), "text/plain")
            .await
            .expect("put");
    }
    let listed: Vec<String> = store
        .list("exports/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        listed,
        [
            "exports/team 1/b.txt",
            "exports/team 1/report.pdf",
            "exports/team 2/c.txt"
        ]
    );
    assert_eq!(store.list("exports/team 1/").await.expect("list").len(), 2);
    assert!(store.list("nothing/").await.expect("list").is_empty());

    store.delete(&report).await.expect("delete");
    store
        .delete(&report)
        .await
        .expect("deleting a missing object is not an error");
    assert!(matches!(store.get(&report).await, Err(StorageError::NotFound { .. })));
    assert!(matches!(store.head(&report).await, Err(StorageError::NotFound { .. })));
}

/// A large object streamed in and out; a body that breaks off leaves no
/// object behind.
async fn large_objects(store: &dyn ObjectStore, len: u64) {
    let big = key("big/blob.bin");
    let written = store
        .put(&big, Box::pin(Generated::new(len, 7)), "application/octet-stream")
        .await
        .expect("put large object");
    assert_eq!(written, len);
    let body = store.get(&big).await.expect("get");
    assert_eq!(body.size, len);
    let (read, digest) = digest_of(body.reader).await;
    assert_eq!(read, len);
    assert_eq!(
        digest,
        Generated::digest(len, 7).await,
        "the object reads back as written"
    );

    let broken = key("big/broken.bin");
    let failed = store
        .put(
            &broken,
            Box::pin(Generated::new(len, 9).failing_after(len / 2)),
            "application/octet-stream",
        )
        .await;
    assert!(failed.is_err(), "a body that breaks off fails the put");
    assert!(
        matches!(store.head(&broken).await, Err(StorageError::NotFound { .. })),
        "no half-written object is left"
    );
}

/// A presigned link downloads with a plain GET until it expires; a link
/// altered in any part is refused.
async fn links(store: &dyn ObjectStore) {
    let http = reqwest::Client::new();
    let object = key("links/hello world.txt");
    kiln_storage::put_bytes(store, &object, b"hello through a link", "text/plain")
        .await
        .expect("put");
    let now = SystemTime::now();
    let link = store
        .presign_get(&object, Duration::from_secs(3600), now)
        .await
        .expect("presign");
    let expected_expiry = now + Duration::from_secs(3600);
    let drift = expected_expiry
        .duration_since(link.expires_at)
        .unwrap_or_else(|e| e.duration());
    assert!(drift <= Duration::from_secs(1), "expires_at is an hour away");
    let response = http.get(&link.url).send().await.expect("download");
    assert_eq!(response.status(), 200, "{}", link.url);
    assert_eq!(response.bytes().await.expect("body").as_ref(), b"hello through a link");

    // Signed two hours ago for one hour: expired an hour ago.
    let expired = store
        .presign_get(&object, Duration::from_secs(3600), now - Duration::from_secs(7200))
        .await
        .expect("presign");
    let response = http.get(&expired.url).send().await.expect("download");
    assert_eq!(response.status(), 403, "an expired link is refused");

    let tampered_signature = flip_last_hex_digit_of(&link.url, "ignature=");
    let response = http.get(&tampered_signature).send().await.expect("download");
    assert_eq!(response.status(), 403, "a link with another signature is refused");

    let other = key("links/other.txt");
    kiln_storage::put_bytes(store, &other, b"not yours", "text/plain")
        .await
        .expect("put");
    let other_key = link.url.replace("hello%20world.txt", "other.txt");
    assert_ne!(other_key, link.url);
    let response = http.get(&other_key).send().await.expect("download");
    assert_eq!(response.status(), 403, "a link does not open another object");

    // An upload link takes a plain PUT; a download link does not.
    let uploaded = key("links/uploaded.json");
    let upload = store
        .presign_put(&uploaded, Duration::from_secs(600), SystemTime::now())
        .await
        .expect("presign put");
    let response = http
        .put(&upload.url)
        .header("content-type", "application/json")
        .body(r#"{"put":"through a link"}"#)
        .send()
        .await
        .expect("upload");
    assert!(response.status().is_success(), "upload answered {}", response.status());
    assert_eq!(
        kiln_storage::get_bytes(store, &uploaded, 1024).await.expect("get"),
        br#"{"put":"through a link"}"#
    );
    let response = http.put(&link.url).body("overwrite").send().await.expect("put");
    assert_eq!(response.status(), 403, "a download link does not allow an upload");
    assert_eq!(
        kiln_storage::get_bytes(store, &object, 1024).await.expect("get"),
        b"hello through a link"
    );
}

/// `url` with the last hex digit of the value after `marker` changed.
fn flip_last_hex_digit_of(url: &str, marker: &str) -> String {
    let start = url.find(marker).expect("signature in link") + marker.len();
    let end = url[start..].find('&').map_or(url.len(), |i| start + i);
    let mut bytes = url.as_bytes().to_vec();
    bytes[end - 1] = if bytes[end - 1] == b'0' { b'1' } else { b'0' };
    String::from_utf8(bytes).expect("ascii")
}

#[tokio::test]
async fn s3_backend_puts_gets_lists_and_deletes() {
    let server = S3Server::start().await;
    round_trip(&server.store(5 * MIB).await).await;
}

#[tokio::test]
async fn s3_backend_streams_large_objects_in_parts() {
    let server = S3Server::start().await;
    let store = server.store(5 * MIB).await;
    // Three parts of 5 MiB and a short last one.
    large_objects(&store, (15 * MIB + 12_345) as u64).await;
}

#[tokio::test]
async fn s3_presigned_links_work_until_expiry_and_refuse_tampering() {
    let server = S3Server::start().await;
    links(&server.store(5 * MIB).await).await;
}

#[tokio::test]
async fn local_backend_puts_gets_lists_and_deletes() {
    let store = LocalStore::open(temp_dir("objects"), LinkSigner::new("http://unused", b"secret")).expect("open");
    round_trip(&store).await;
    large_objects(&store, (12 * MIB + 1) as u64).await;
    assert!(
        store
            .list("")
            .await
            .expect("list")
            .iter()
            .all(|o| !o.key.starts_with(".kiln")),
        "kiln's own working files are not objects"
    );
}

#[tokio::test]
async fn a_file_put_in_the_local_folder_by_hand_is_an_object() {
    let dir = temp_dir("objects");
    std::fs::create_dir_all(dir.join("docs/2026")).expect("mkdir");
    std::fs::write(dir.join("docs/2026/hand.pdf"), b"%PDF by hand").expect("write");
    let store = LocalStore::open(&dir, LinkSigner::new("http://unused", b"secret")).expect("open");
    let bytes = kiln_storage::get_bytes(&store, &key("docs/2026/hand.pdf"), 100)
        .await
        .expect("get");
    assert_eq!(bytes, b"%PDF by hand");
    kiln_storage::put_bytes(&store, &key("docs/2026/out.txt"), b"written by kiln", "text/plain")
        .await
        .expect("put");
    assert_eq!(
        std::fs::read(dir.join("docs/2026/out.txt")).expect("read"),
        b"written by kiln"
    );
}

#[tokio::test]
async fn kiln_serves_the_local_backends_links_until_they_expire() {
    let dir = temp_dir("objects");
    let kiln = Kiln::builder(Mode::Serve)
        .env("KILN_STORAGE_DIR", dir.to_string_lossy())
        .spawn()
        .await;
    // The links a kiln worker on this folder makes: signed with the server
    // secret, pointing at the API.
    let store = LocalStore::open(&dir, LinkSigner::new(&kiln.base_url, SERVER_SECRET.as_bytes())).expect("open");
    links(&store).await;

    let unsigned = kiln
        .http
        .get(kiln.url("/api/v1/objects/links/other.txt"))
        .send()
        .await
        .expect("get");
    assert_eq!(unsigned.status(), 403);
    let answer: serde_json::Value = unsigned.json().await.expect("json error");
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains("signature")),
        "{answer}"
    );

    // A link signed with another secret is refused.
    let forged = LocalStore::open(
        &dir,
        LinkSigner::new(&kiln.base_url, b"some other secret of 32 bytes!!!"),
    )
    .expect("open");
    let link = forged
        .presign_get(&key("links/other.txt"), Duration::from_secs(60), SystemTime::now())
        .await
        .expect("presign");
    let response = kiln.http.get(&link.url).send().await.expect("get");
    assert_eq!(response.status(), 403);

    // A valid link to an object that is gone: 404.
    let gone = key("links/gone.txt");
    let link = store
        .presign_get(&gone, Duration::from_secs(60), SystemTime::now())
        .await
        .expect("presign");
    let response = kiln.http.get(&link.url).send().await.expect("get");
    assert_eq!(response.status(), 404);
}
