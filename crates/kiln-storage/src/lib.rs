//! Object storage for kiln's workers: one interface, [`ObjectStore`], with
//! two backends.
//!
//! - [`S3Store`]: any S3-compatible server (AWS S3, MinIO) through
//!   aws-sdk-s3. Large uploads go up in parts, so nothing is held whole in
//!   memory, and an object appears only once its upload completed.
//! - [`LocalStore`]: a folder on disk, the default when no bucket is
//!   configured. The key `a/b.pdf` is the file `<root>/a/b.pdf`, so a file
//!   put there by hand is an object. Its download links are signed and
//!   expiring like S3's, and served by kiln's API ([`LinkSigner`]).
//!
//! Every read and write streams. A write that fails leaves no object, not a
//! half-written one. This crate knows nothing of runs, tasks or HTTP routes.

mod error;
mod key;
mod links;
mod local;
mod s3;
mod scope;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt};

pub use error::StorageError;
pub use key::ObjectKey;
pub use links::{LinkAccess, LinkError, LinkSigner, OBJECTS_PATH};
pub use local::LocalStore;
pub use s3::{DEFAULT_PART_SIZE, MAX_PRESIGN, S3Config, S3Store};
pub use scope::{PACKETS_PREFIX, RESERVED_PREFIX, ScopeError, StorageScopes};

/// A readable byte stream of unknown length.
pub type ByteReader<'a> = Pin<Box<dyn AsyncRead + Send + 'a>>;

/// An object being read.
pub struct ObjectBody {
    pub size: u64,
    pub content_type: Option<String>,
    pub reader: ByteReader<'static>,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody")
            .field("size", &self.size)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// What a listing or a look-up tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When it was last written, where the backend says.
    pub modified: Option<SystemTime>,
}

/// A download link and the instant it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUrl {
    pub url: String,
    pub expires_at: SystemTime,
}

/// One storage interface, whatever the backend. Keys are checked by
/// [`ObjectKey`] before a backend sees them.
/// How much a copy between a file and storage moves at a time: files are
/// read and written on tokio's blocking pool, one trip per chunk.
pub const COPY_BUFFER_BYTES: usize = 1024 * 1024;

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Writes the object from `body` until its end, replacing any object of
    /// that key. Returns the number of bytes written. On error no object
    /// (or the previous one) is left.
    async fn put(&self, key: &ObjectKey, body: ByteReader<'_>, content_type: &str) -> Result<u64, StorageError>;

    /// Opens the object for a streaming read; [`StorageError::NotFound`]
    /// when there is none.
    async fn get(&self, key: &ObjectKey) -> Result<ObjectBody, StorageError>;

    async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError>;

    /// Deletes the object; deleting a missing object is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;

    /// A link that downloads the object with a plain GET until
    /// `expires_in` has passed, counted from `now`.
    async fn presign_get(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        now: SystemTime,
    ) -> Result<PresignedUrl, StorageError>;

    /// A link that uploads the object with a plain PUT of its bytes until
    /// `expires_in` has passed, counted from `now`.
    async fn presign_put(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        now: SystemTime,
    ) -> Result<PresignedUrl, StorageError>;
}

/// The storage a process uses, shared by its workers.
pub type Storage = Arc<dyn ObjectStore>;

/// Writes `bytes` as the object `key`.
pub async fn put_bytes(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    bytes: &[u8],
    content_type: &str,
) -> Result<u64, StorageError> {
    store.put(key, Box::pin(bytes), content_type).await
}

/// Reads a whole object, refusing one larger than `limit` bytes.
pub async fn get_bytes(store: &dyn ObjectStore, key: &ObjectKey, limit: u64) -> Result<Vec<u8>, StorageError> {
    let body = store.get(key).await?;
    if body.size > limit {
        return Err(StorageError::TooLarge {
            key: key.to_string(),
            size: body.size,
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(body.size).unwrap_or(0));
    body.reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|source| StorageError::io(key.as_str(), source))?;
    if bytes.len() as u64 > limit {
        return Err(StorageError::TooLarge {
            key: key.to_string(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// The content type kiln gives an object by its name, for downloads.
pub fn content_type_for(key: &str) -> &'static str {
    let extension = key.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("zip") => "application/zip",
        Some("csv") => "text/csv",
        Some("txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Some("pptx") => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}
