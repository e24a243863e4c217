//! An export whose source breaks off mid-read fails, and leaves no output
//! object: the upload sees an error, not the end of a shorter zip.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use kiln_core::RunId;
use kiln_core::task::{RunMetadata, TaskContext, TaskHandler};
use kiln_storage::{
    ByteReader, LinkSigner, LocalStore, ObjectBody, ObjectInfo, ObjectKey, ObjectStore, PresignedUrl, StorageError,
};
use kiln_worker_export::ExportZip;
use serde_json::json;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

/// A local store whose `broken/` objects fail after their first bytes, as
/// a disk or a connection that dies mid-read.
#[derive(Debug)]
struct FlakyStore(LocalStore);

struct BreaksOff {
    served: bool,
}

impl AsyncRead for BreaksOff {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.served {
            return Poll::Ready(Err(std::io::Error::other("connection reset mid-object")));
        }
        self.served = true;
        buf.put_slice(&[7u8; 1000]);
        Poll::Ready(Ok(()))
    }
}

#[async_trait::async_trait]
impl ObjectStore for FlakyStore {
    async fn put(&self, key: &ObjectKey, body: ByteReader<'_>, content_type: &str) -> Result<u64, StorageError> {
        self.0.put(key, body, content_type).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<ObjectBody, StorageError> {
        let body = self.0.get(key).await?;
        if key.as_str().starts_with("broken/") {
            return Ok(ObjectBody {
                reader: Box::pin(BreaksOff { served: false }),
                ..body
            });
        }
        Ok(body)
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError> {
        self.0.head(key).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.0.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.0.list(prefix).await
    }

    async fn presign_get(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        now: SystemTime,
    ) -> Result<PresignedUrl, StorageError> {
        self.0.presign_get(key, expires_in, now).await
    }

    async fn presign_put(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        now: SystemTime,
    ) -> Result<PresignedUrl, StorageError> {
        self.0.presign_put(key, expires_in, now).await
    }
}

fn context() -> TaskContext {
    TaskContext {
        run_id: RunId::generate(0),
        environment: kiln_core::auth::Environment::Prod,
        task_id: "kiln.export.zip".into(),
        attempt: 1,
        max_attempts: 3,
        cancel: CancellationToken::new(),
        metadata: RunMetadata::new(None),
        children: std::sync::Arc::new(kiln_core::task::NoChildRuns),
    }
}

#[tokio::test]
async fn a_source_that_breaks_off_fails_the_export_and_leaves_nothing() {
    let root = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("flaky-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let local = LocalStore::open(&root, LinkSigner::new("http://kiln.test", b"secret")).expect("open");
    for name in ["good/a.txt", "broken/b.pdf"] {
        let key = ObjectKey::parse(name).expect("key");
        kiln_storage::put_bytes(&local, &key, &[1u8; 50_000], "application/octet-stream")
            .await
            .expect("put");
    }
    let export = ExportZip {
        limits: kiln_worker_export::ExportLimits::default(),
        scopes: kiln_storage::StorageScopes::separated(),
        storage: std::sync::Arc::new(FlakyStore(local.clone())),
    };
    let payload = json!({
        "files": [{ "key": "good/a.txt" }, { "key": "broken/b.pdf" }],
        "output": { "key": "exports/out.zip" },
    });
    let failed = export.run(context(), payload.clone()).await;
    let error = failed.expect_err("the export fails");
    assert!(
        error.is_retryable(),
        "a read that broke off may work next time: {error}"
    );
    assert!(error.to_string().contains("broken/b.pdf"), "{error}");
    let output = ObjectKey::parse("exports/out.zip").expect("key");
    assert!(
        matches!(local.head(&output).await, Err(StorageError::NotFound { .. })),
        "no half-written zip"
    );
    let partial = std::fs::read_dir(root.join(".kiln-partial"))
        .expect("partial dir")
        .count();
    assert_eq!(partial, 0, "the temporary file is removed");

    // Without the broken source the same export completes.
    let ok = export
        .run(
            context(),
            json!({ "files": [{ "key": "good/a.txt" }], "output": { "key": "exports/out.zip" } }),
        )
        .await
        .expect("export");
    assert_eq!(ok["fileCount"], 1);
    assert!(
        ok["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://kiln.test/api/v1/objects/exports/out.zip?"))
    );
}
