//! Exports: `kiln.export.zip` bundles objects into one zip in storage and
//! answers a download link; `kiln.exports.cleanup` deletes exports past
//! their expiry (run daily by a schedule).
//!
//! The zip streams from the source objects to the output object: memory
//! stays at a few buffers and one upload part whatever the export's size.
//! A source that is missing fails the run with its name (or is skipped
//! with a warning when the payload says `skipMissing`); a failed export
//! leaves no output object. This crate knows only its payloads, its
//! outputs and the [`ObjectStore`] interface.

pub mod expiry;
pub mod names;
pub mod zip;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use kiln_core::auth::Environment;
use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler};
use kiln_storage::{ObjectKey, ObjectStore, Storage, StorageError, StorageScopes};
use kiln_worker_kit::{invalid, parse_payload, storage_failure};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, ReadBuf};

use crate::names::ZipNames;
use crate::zip::{DosTime, Method, ZipWriter};

/// How long an export is kept when the payload does not say.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(3 * 24 * 3600);
const MAX_EXPIRY: Duration = Duration::from_secs(366 * 24 * 3600);
/// Source look-ups in flight before the zip starts.
const HEAD_CONCURRENCY: usize = 16;
/// Bytes between the zip writer and the upload.
const PIPE_BYTES: usize = 1024 * 1024;
/// Missing files named in an error before "and N more".
const NAMED_IN_ERROR: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExportPayload {
    files: Vec<SourceFile>,
    output: OutputSpec,
    expires_in: Option<String>,
    #[serde(default)]
    skip_missing: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    key: String,
    /// The name in the zip; the key when absent.
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSpec {
    key: String,
}

/// Files compressed already gain nothing from deflate; they are stored.
fn method_for(name: &str) -> Method {
    const COMPRESSED: &[&str] = &[
        "pdf", "png", "jpg", "jpeg", "gif", "webp", "avif", "heic", "zip", "gz", "tgz", "bz2", "xz", "zst", "7z",
        "rar", "mp3", "mp4", "m4a", "mov", "webm", "docx", "xlsx", "pptx", "odt", "ods", "odp", "epub",
    ];
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match extension {
        Some(ext) if COMPRESSED.contains(&ext.as_str()) => Method::Stored,
        _ => Method::Deflated,
    }
}

/// How much one export may bundle: a small payload must not make an
/// archive of any size (one large object listed many times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLimits {
    pub max_files: usize,
    /// The sources' sizes added up, a file listed twice counted twice.
    pub max_bytes: u64,
}

impl Default for ExportLimits {
    fn default() -> Self {
        Self {
            max_files: 10_000,
            max_bytes: 10 * 1024 * 1024 * 1024,
        }
    }
}

/// `kiln.export.zip`.
pub struct ExportZip {
    pub storage: Storage,
    pub limits: ExportLimits,
    /// Each environment's part of the storage: the keys a payload names
    /// are resolved inside the run's.
    pub scopes: StorageScopes,
}

impl TaskHandler for ExportZip {
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture {
        let storage = Arc::clone(&self.storage);
        let scopes = self.scopes.clone();
        let limits = self.limits;
        Box::pin(async move { export(storage.as_ref(), &scopes, limits, &ctx, payload).await })
    }
}

struct Planned {
    key: ObjectKey,
    path: String,
    size: u64,
}

async fn export(
    store: &dyn ObjectStore,
    scopes: &StorageScopes,
    limits: ExportLimits,
    ctx: &TaskContext,
    payload: Value,
) -> Result<Value, TaskError> {
    let payload: ExportPayload = parse_payload("kiln.export.zip", payload)?;
    if payload.files.is_empty() {
        return Err(invalid("files is empty: nothing to export"));
    }
    if payload.files.len() > limits.max_files {
        return Err(TaskError::fatal(
            "ExportTooLarge",
            format!(
                "{} files are listed; an export holds at most {} (KILN_EXPORT_MAX_FILES)",
                payload.files.len(),
                limits.max_files
            ),
        ));
    }
    let prod = ctx.environment == Environment::Prod;
    let output = scopes
        .resolve(prod, &payload.output.key)
        .map_err(|e| invalid(format!("output.key: {e}")))?;
    let expires_in = match &payload.expires_in {
        None => DEFAULT_EXPIRY,
        Some(text) => kiln_core::duration::parse(text).map_err(|e| invalid(format!("expiresIn: {e}")))?,
    };
    if expires_in.is_zero() || expires_in > MAX_EXPIRY {
        return Err(invalid("expiresIn must be between 1s and 366d"));
    }
    let mut sources = Vec::with_capacity(payload.files.len());
    for (index, file) in payload.files.into_iter().enumerate() {
        let key = scopes
            .resolve(prod, &file.key)
            .map_err(|e| invalid(format!("files[{index}].key: {e}")))?;
        sources.push((key, file.path));
    }

    // Every source is looked up first: a missing file fails the run before
    // anything is written, and the sizes give the progress.
    ctx.metadata.progress(0, format!("checking {} files", sources.len()));
    let keys: Vec<ObjectKey> = sources.iter().map(|(key, _)| key.clone()).collect();
    let looked_up: Vec<Result<u64, StorageError>> = futures::stream::iter(keys)
        .map(|key| async move { store.head(&key).await.map(|info| info.size) })
        .buffered(HEAD_CONCURRENCY)
        .collect()
        .await;
    let mut names = ZipNames::default();
    let mut planned = Vec::with_capacity(sources.len());
    let mut missing = Vec::new();
    for ((key, path), found) in sources.into_iter().zip(looked_up) {
        match found {
            Ok(size) => {
                // Named in the zip as the caller named it, not by its root.
                let local = scopes.local(prod, key.as_str());
                let path = names.claim(path.as_deref().unwrap_or(local), local);
                planned.push(Planned { key, path, size });
            }
            Err(StorageError::NotFound { .. }) => missing.push((key, path)),
            Err(error) => return Err(storage_failure(&error)),
        }
    }
    if !missing.is_empty() && !payload.skip_missing {
        return Err(missing_files_error(scopes, prod, &missing));
    }
    if planned.is_empty() {
        return Err(TaskError::fatal("MissingSourceFile", "none of the files exist"));
    }
    let mut warnings: Vec<Value> = missing
        .iter()
        .map(|(key, path)| json!({ "key": scopes.local(prod, key.as_str()), "path": path, "reason": "not found; skipped" }))
        .collect();

    let total_bytes: u64 = planned.iter().map(|p| p.size).sum();
    if total_bytes > limits.max_bytes {
        return Err(TaskError::fatal(
            "ExportTooLarge",
            format!(
                "the files add up to {total_bytes} bytes; an export holds at most {} (KILN_EXPORT_MAX_MB)",
                limits.max_bytes
            ),
        ));
    }
    let (written, skipped_late) = stream_zip(store, ctx, &planned, &output, total_bytes, payload.skip_missing).await?;
    let file_count = planned.len() - skipped_late.len();
    for (key, path) in skipped_late {
        let key = scopes.local(prod, &key).to_owned();
        warnings.push(json!({ "key": key, "path": path, "reason": "removed during the export; skipped" }));
    }

    let now = SystemTime::now();
    let expires_at = now + expires_in;
    expiry::register(store, &output, expires_at)
        .await
        .map_err(|e| storage_failure(&e))?;
    let link = store
        .presign_get(&output, expires_in.min(kiln_storage::MAX_PRESIGN), now)
        .await
        .map_err(|e| storage_failure(&e))?;
    ctx.metadata
        .progress(100, format!("{file_count} / {file_count} files zipped"));
    tracing::info!(key = %output, size = written, files = file_count, "export written");
    Ok(json!({
        "key": payload.output.key,
        "size": written,
        "fileCount": file_count,
        "url": link.url,
        "urlExpiresAt": rfc3339(link.expires_at),
        "expiresAt": rfc3339(expires_at),
        "warnings": warnings,
    }))
}

fn rfc3339(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn missing_files_error(scopes: &StorageScopes, prod: bool, missing: &[(ObjectKey, Option<String>)]) -> TaskError {
    let mut named: Vec<String> = missing
        .iter()
        .take(NAMED_IN_ERROR)
        .map(|(key, path)| {
            let key = scopes.local(prod, key.as_str());
            match path {
                Some(path) => format!("{key} ({path})"),
                None => key.to_owned(),
            }
        })
        .collect();
    if missing.len() > NAMED_IN_ERROR {
        named.push(format!("and {} more", missing.len() - NAMED_IN_ERROR));
    }
    let noun = if missing.len() == 1 { "file is" } else { "files are" };
    TaskError::fatal(
        "MissingSourceFile",
        format!("{} source {noun} missing: {}", missing.len(), named.join(", ")),
    )
}

/// Zips `planned` into `output`. Answers the archive's size and the files
/// that vanished between the look-up and the read (when skipping them).
async fn stream_zip(
    store: &dyn ObjectStore,
    ctx: &TaskContext,
    planned: &[Planned],
    output: &ObjectKey,
    total_bytes: u64,
    skip_missing: bool,
) -> Result<(u64, Vec<(String, String)>), TaskError> {
    let (zip_end, upload_end) = tokio::io::duplex(PIPE_BYTES);
    let producer_failed = Arc::new(Mutex::new(None::<String>));
    let upload_body = FailableReader {
        inner: upload_end,
        failed: Arc::clone(&producer_failed),
    };
    let produce = async {
        let result = write_zip(store, ctx, planned, zip_end, total_bytes, skip_missing).await;
        if let Err(error) = &result {
            // Set before the pipe closes, so the upload sees a failure, not
            // the end of a shorter archive.
            *producer_failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.to_string());
        }
        result
    };
    let upload = store.put(output, Box::pin(upload_body), "application/zip");
    let (produced, uploaded) = tokio::join!(produce, upload);
    let skipped = produced?;
    let written = uploaded.map_err(|e| storage_failure(&e))?;
    Ok((written, skipped))
}

async fn write_zip(
    store: &dyn ObjectStore,
    ctx: &TaskContext,
    planned: &[Planned],
    pipe: tokio::io::DuplexStream,
    total_bytes: u64,
    skip_missing: bool,
) -> Result<Vec<(String, String)>, TaskError> {
    let mut zip = ZipWriter::new(pipe, DosTime::from_utc(chrono::Utc::now()));
    let mut done_bytes = 0u64;
    let mut skipped = Vec::new();
    for (index, file) in planned.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            return Err(TaskError::retryable("Canceled", "the export was stopped"));
        }
        let body = match store.get(&file.key).await {
            Ok(body) => body,
            Err(StorageError::NotFound { .. }) if skip_missing => {
                skipped.push((file.key.to_string(), file.path.clone()));
                continue;
            }
            Err(StorageError::NotFound { .. }) => {
                return Err(TaskError::fatal(
                    "MissingSourceFile",
                    format!("source file {} ({}) was removed during the export", file.key, file.path),
                ));
            }
            Err(error) => return Err(storage_failure(&error)),
        };
        zip.add_entry(&file.path, body.reader, method_for(&file.path), body.size)
            .await
            .map_err(|e| match e {
                zip::ZipError::Source { .. } => TaskError::retryable("SourceReadFailed", e.to_string()),
                other => TaskError::retryable("ExportWriteFailed", other.to_string()),
            })?;
        done_bytes += file.size;
        let percent = match (done_bytes.min(total_bytes) * 100).checked_div(total_bytes) {
            Some(by_bytes) => by_bytes as usize,
            // Empty files only: count them instead.
            None => (index + 1) * 100 / planned.len(),
        };
        ctx.metadata.progress(
            u32::try_from(percent).unwrap_or(100).min(99),
            format!("{} / {} files zipped", index + 1, planned.len()),
        );
    }
    zip.finish()
        .await
        .map_err(|e| TaskError::retryable("ExportWriteFailed", e.to_string()))?;
    Ok(skipped)
}

/// The upload's end of the pipe: ends in an error, not a clean end of
/// file, when the zip writer failed, so the upload is abandoned instead of
/// storing a truncated archive.
struct FailableReader {
    inner: tokio::io::DuplexStream,
    failed: Arc<Mutex<Option<String>>>,
}

impl AsyncRead for FailableReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled
            && buf.filled().len() == before
        {
            let failed = self
                .failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(reason) = failed {
                return Poll::Ready(Err(std::io::Error::other(format!(
                    "the zip was not completed: {reason}"
                ))));
            }
        }
        polled
    }
}

/// `kiln.exports.cleanup`: deletes exports past their expiry.
pub struct CleanupExports {
    pub storage: Storage,
    /// Packets (payloads the SDK uploaded) older than this were never used
    /// (their upload link has expired) and go too.
    pub packet_lifetime: Duration,
}

impl TaskHandler for CleanupExports {
    fn run(&self, _ctx: TaskContext, _payload: Value) -> TaskFuture {
        let storage = Arc::clone(&self.storage);
        let packet_lifetime = self.packet_lifetime;
        Box::pin(async move {
            let now = SystemTime::now();
            let sweep = expiry::sweep(storage.as_ref(), now)
                .await
                .map_err(|e| storage_failure(&e))?;
            let packets = sweep_packets(storage.as_ref(), now, packet_lifetime)
                .await
                .map_err(|e| storage_failure(&e))?;
            Ok(json!({
                "deleted": sweep.deleted,
                "keptForLaterExport": sweep.kept_for_later_export,
                "pending": sweep.pending,
                "packetsDeleted": packets,
            }))
        })
    }
}

/// Deletes packets last written before `now - lifetime`; answers how many.
async fn sweep_packets(store: &dyn ObjectStore, now: SystemTime, lifetime: Duration) -> Result<usize, StorageError> {
    let Some(cutoff) = now.checked_sub(lifetime) else {
        return Ok(0);
    };
    let mut deleted = 0;
    for object in store.list(kiln_storage::PACKETS_PREFIX).await? {
        if object.modified.is_some_and(|at| at < cutoff) {
            store.delete(&ObjectKey::parse(object.key.as_str())?).await?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, "packets never used were deleted");
    }
    Ok(deleted)
}
