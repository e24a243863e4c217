//! What kiln's file workers share, so each states it once: payload
//! parsing, where a document comes from and how it is downloaded, how a
//! storage failure becomes a task error, uploads of files a worker wrote,
//! and the private folder one attempt of a run works in.
//!
//! It knows the task contract and the [`ObjectStore`] interface only: no
//! Postgres, Redis, HTTP routes, and nothing of any one worker's format.
//!
//! [`ObjectStore`]: kiln_storage::ObjectStore

pub mod containment;

use std::path::{Path, PathBuf};

use kiln_core::task::{TaskContext, TaskError, UrlFetcher};
use kiln_storage::{ObjectKey, ObjectStore, StorageError, StorageScopes};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A payload the task cannot run: never retried.
pub fn invalid(message: impl Into<String>) -> TaskError {
    TaskError::fatal("InvalidPayload", message)
}

/// `payload` read as `T`; an error names `task` and what is wrong.
pub fn parse_payload<T: DeserializeOwned>(task: &str, payload: Value) -> Result<T, TaskError> {
    serde_json::from_value(payload).map_err(|e| invalid(format!("{task} payload: {e}")))
}

/// A storage failure as a task error: retried when it may pass.
pub fn storage_failure(error: &StorageError) -> TaskError {
    if error.is_transient() {
        TaskError::retryable("StorageUnavailable", error.to_string())
    } else {
        TaskError::fatal("StorageError", error.to_string())
    }
}

/// The worker's own disk failed it: retried, since another attempt (or
/// another worker) may have room.
pub fn local_io(what: &str, error: &std::io::Error) -> TaskError {
    TaskError::retryable("WorkerDiskError", format!("{what}: {error}"))
}

/// Where a document comes from: an object in kiln's storage, or a URL
/// (fetched under the egress rules).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Source {
    Key { key: String },
    Url { url: String },
}

impl Source {
    /// The name the source goes by: its key, or its URL without query.
    pub fn name(&self) -> &str {
        match self {
            Source::Key { key } => key,
            Source::Url { url } => url.split(['?', '#']).next().unwrap_or_default(),
        }
    }
}

/// A payload's source with its key resolved inside the run's environment.
pub fn resolve_source(scopes: &StorageScopes, prod: bool, source: Source) -> Result<Source, TaskError> {
    match source {
        Source::Key { key } => {
            let key = scopes
                .resolve(prod, &key)
                .map_err(|e| invalid(format!("source.key: {e}")))?;
            Ok(Source::Key { key: key.to_string() })
        }
        url @ Source::Url { .. } => Ok(url),
    }
}

/// Downloads `source` into `path`, at most `limit` bytes.
pub async fn download_source(
    store: &dyn ObjectStore,
    fetcher: &dyn UrlFetcher,
    source: &Source,
    path: &Path,
    limit: u64,
) -> Result<u64, TaskError> {
    match source {
        Source::Url { url } => {
            let bytes = fetcher.fetch(url, limit).await?;
            let mut file = create(path).await?;
            file.write_all(&bytes)
                .await
                .map_err(|e| local_io("cannot write the download", &e))?;
            finish(file).await?;
            Ok(bytes.len() as u64)
        }
        Source::Key { key } => download_key(store, key, path, limit).await,
    }
}

/// Downloads the object `key` into `path`, at most `limit` bytes.
pub async fn download_key(store: &dyn ObjectStore, key: &str, path: &Path, limit: u64) -> Result<u64, TaskError> {
    let key = ObjectKey::parse(key).map_err(|e| invalid(format!("source.key: {e}")))?;
    let body = store.get(&key).await.map_err(|e| match e {
        StorageError::NotFound { .. } => TaskError::fatal("MissingSourceFile", format!("{key} does not exist")),
        other => storage_failure(&other),
    })?;
    if body.size > limit {
        return Err(too_large(format!("{key} is {} bytes; the limit is {limit}", body.size)));
    }
    let mut file = create(path).await?;
    // Written in large chunks: each write to a tokio file is a trip to
    // the blocking pool.
    let mut reader = tokio::io::BufReader::with_capacity(kiln_storage::COPY_BUFFER_BYTES, body.reader.take(limit + 1));
    let copied = tokio::io::copy_buf(&mut reader, &mut file)
        .await
        .map_err(|e| TaskError::retryable("SourceReadFailed", format!("{key}: {e}")))?;
    if copied > limit {
        // The object grew past what its listing said while it was read.
        return Err(too_large(format!("{key} is over {limit} bytes")));
    }
    finish(file).await?;
    Ok(copied)
}

fn too_large(message: String) -> TaskError {
    TaskError::fatal("SourceTooLarge", message)
}

async fn create(path: &Path) -> Result<tokio::fs::File, TaskError> {
    tokio::fs::File::create(path)
        .await
        .map_err(|e| local_io("cannot create the download", &e))
}

async fn finish(file: tokio::fs::File) -> Result<(), TaskError> {
    file.sync_all()
        .await
        .map_err(|e| local_io("cannot write the download", &e))
}

/// Uploads a file the worker wrote, then removes it: the disk holds only
/// what is not uploaded yet.
pub async fn upload_file(
    storage: &dyn ObjectStore,
    path: &Path,
    key: &ObjectKey,
    content_type: &str,
) -> Result<u64, TaskError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| local_io("cannot read a file to upload", &e))?;
    let size = storage
        .put(key, Box::pin(file), content_type)
        .await
        .map_err(|e| storage_failure(&e))?;
    if let Err(error) = tokio::fs::remove_file(path).await {
        tracing::debug!(%error, path = %path.display(), "an uploaded file stays until its work folder goes");
    }
    Ok(size)
}

/// One attempt's private folder, removed however the attempt ends.
#[derive(Debug)]
pub struct WorkDir(PathBuf);

impl WorkDir {
    /// A new folder under `base`, named after `purpose`, the run and the
    /// attempt (with a random tail, so two attempts never share one).
    pub async fn create(base: &Path, ctx: &TaskContext, purpose: &str) -> Result<Self, TaskError> {
        let dir = base.join(format!(
            "kiln-{purpose}-{}-{}-{}",
            ctx.run_id,
            ctx.attempt,
            kiln_core::id::random_alphanumeric(6)
        ));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| local_io("cannot make a work folder", &e))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_source_is_named_without_its_query() {
        let source = Source::Url {
            url: "https://example.com/a/report.docx?sig=1#x".into(),
        };
        assert_eq!(source.name(), "https://example.com/a/report.docx");
        assert_eq!(Source::Key { key: "k/a.pdf".into() }.name(), "k/a.pdf");
    }

    #[test]
    fn a_payload_error_names_the_task() {
        #[derive(Debug, Deserialize)]
        struct Payload {
            #[allow(dead_code)]
            key: String,
        }
        let error = parse_payload::<Payload>("my.task", serde_json::json!({}))
            .expect_err("no key, no payload")
            .to_json();
        assert_eq!(error["name"], "InvalidPayload");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("my.task payload") && message.contains("key"),
            "{message}"
        );
    }

    #[test]
    fn a_source_is_a_key_or_a_url_and_nothing_else() {
        let key: Source = serde_json::from_value(serde_json::json!({"key": "a"})).expect("a key");
        assert!(matches!(key, Source::Key { .. }));
        let url: Source = serde_json::from_value(serde_json::json!({"url": "https://x"})).expect("a url");
        assert!(matches!(url, Source::Url { .. }));
        assert!(serde_json::from_value::<Source>(serde_json::json!({"key": "a", "url": "b"})).is_err());
    }
}
