//! The local-folder backend: the key `a/b.pdf` is the file `<root>/a/b.pdf`.
//! A write goes to a temporary file under `<root>/.kiln-partial/` and is
//! renamed into place once complete and synced, so readers never see half
//! an object. Its download links are served by kiln's API and signed by a
//! [`LinkSigner`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncWriteExt, BufWriter};

use crate::key::RESERVED_PREFIX;
use crate::{
    ByteReader, LinkAccess, LinkSigner, ObjectBody, ObjectInfo, ObjectKey, ObjectStore, PresignedUrl, StorageError,
};

const PARTIAL_DIR: &str = ".kiln-partial";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    links: LinkSigner,
}

impl LocalStore {
    /// Opens (and creates) the folder `root`.
    pub fn open(root: impl Into<PathBuf>, links: LinkSigner) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(root.join(PARTIAL_DIR))
            .map_err(|e| StorageError::Config(format!("cannot create the storage folder {}: {e}", root.display())))?;
        Ok(Self { root, links })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn links(&self) -> &LinkSigner {
        &self.links
    }

    fn link(
        &self,
        access: LinkAccess,
        key: &ObjectKey,
        expires_in: Duration,
        now: SystemTime,
    ) -> Result<PresignedUrl, StorageError> {
        if !self.links.can_sign() {
            return Err(StorageError::Config(
                "links to the local backend need the public URL of kiln's API (KILN_PUBLIC_URL)".into(),
            ));
        }
        Ok(self.links.sign(access, key, expires_in, now))
    }

    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        // ObjectKey has no empty, `.` or `..` segment and no leading `/`,
        // so this stays under the root.
        self.root.join(key.as_str())
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &ObjectKey, body: ByteReader<'_>, _content_type: &str) -> Result<u64, StorageError> {
        let target = self.path_of(key);
        let io = |source| StorageError::io(key.as_str(), source);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let partial = self
            .root
            .join(PARTIAL_DIR)
            .join(format!("{:016x}", rand::random::<u64>()));
        let written = async {
            let file = tokio::fs::File::create(&partial).await?;
            let mut writer = BufWriter::with_capacity(256 * 1024, file);
            // In large reads: each read of a tokio file is a trip to the
            // blocking pool, and `io::copy`'s 8 KiB made thousands of
            // them for one page image.
            let mut body = tokio::io::BufReader::with_capacity(crate::COPY_BUFFER_BYTES, body);
            let written = tokio::io::copy_buf(&mut body, &mut writer).await?;
            writer.flush().await?;
            writer.into_inner().sync_all().await?;
            tokio::fs::rename(&partial, &target).await?;
            Ok::<_, std::io::Error>(written)
        }
        .await;
        if written.is_err() {
            // Best effort: the write already failed, and a stray partial
            // file is never read as an object.
            let _ = tokio::fs::remove_file(&partial).await;
        }
        written.map_err(io)
    }

    async fn get(&self, key: &ObjectKey) -> Result<ObjectBody, StorageError> {
        let file = tokio::fs::File::open(self.path_of(key))
            .await
            .map_err(|e| StorageError::io(key.as_str(), e))?;
        let metadata = file.metadata().await.map_err(|e| StorageError::io(key.as_str(), e))?;
        if !metadata.is_file() {
            return Err(StorageError::NotFound { key: key.to_string() });
        }
        Ok(ObjectBody {
            size: metadata.len(),
            // A folder keeps no content types; readers guess from the name
            // where they need one.
            content_type: None,
            reader: Box::pin(tokio::io::BufReader::with_capacity(256 * 1024, file)),
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError> {
        let metadata = tokio::fs::metadata(self.path_of(key))
            .await
            .map_err(|e| StorageError::io(key.as_str(), e))?;
        if !metadata.is_file() {
            return Err(StorageError::NotFound { key: key.to_string() });
        }
        Ok(ObjectInfo {
            key: key.to_string(),
            size: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path_of(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(key.as_str(), e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let listed = tokio::task::spawn_blocking(move || walk(&root, &prefix))
            .await
            .map_err(|e| StorageError::Io {
                key: String::new(),
                source: std::io::Error::other(e.to_string()),
            })?;
        listed.map_err(|e| StorageError::io("", e))
    }

    async fn presign_get(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        now: SystemTime,
    ) -> Result<PresignedUrl, StorageError> {
        self.link(LinkAccess::Get, key, expires_in, now)
    }

    async fn presign_put(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        now: SystemTime,
    ) -> Result<PresignedUrl, StorageError> {
        self.link(LinkAccess::Put, key, expires_in, now)
    }
}

/// Every file under `root` whose key starts with `prefix`, in key order.
/// Only the folders that can hold such keys are read.
fn walk(root: &Path, prefix: &str) -> std::io::Result<Vec<ObjectInfo>> {
    // The deepest folder all matching keys share: "a/b/c" → "a/b/".
    let start = prefix.rfind('/').map_or("", |at| &prefix[..=at]);
    let mut found = Vec::new();
    let mut pending = vec![(root.join(start), start.to_owned())];
    while let Some((folder, folder_key)) = pending.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue; // not UTF-8: no key can name it
            };
            if folder_key.is_empty() && name.starts_with(RESERVED_PREFIX) {
                continue;
            }
            let key = format!("{folder_key}{name}");
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                let folder_prefix = format!("{key}/");
                if folder_prefix.starts_with(prefix) || prefix.starts_with(&folder_prefix) {
                    pending.push((entry.path(), folder_prefix));
                }
            } else if file_type.is_file() && key.starts_with(prefix) {
                let metadata = entry.metadata()?;
                found.push(ObjectInfo {
                    key,
                    size: metadata.len(),
                    modified: metadata.modified().ok(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}
