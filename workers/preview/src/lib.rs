//! Page previews: `kiln.pdf.preview` turns a PDF into one image per page in
//! object storage, with each page's size, scale and links, as Supermark's
//! `convert-pdf-to-image-route` job does.
//!
//! The worker half ([`PdfPreview`]) downloads the PDF once into a private
//! folder, starts renderer processes ([`renderer`], `kiln render-pdf`) that
//! split the pages between them, uploads each image as it is reported and
//! sets the run's progress. The renderers are the only code that parses the
//! untrusted file; each has an address-space limit, and one that stays
//! silent past the page timeout is killed. Whatever the file does, the run
//! ends FAILED with a reason and the worker goes on.
//!
//! This crate knows its payload, its output and the [`ObjectStore`]
//! interface; it does not know Postgres, Redis or HTTP routes.
//!
//! [`ObjectStore`]: kiln_storage::ObjectStore

pub mod encode;
pub mod layout;
pub mod library;
pub mod protocol;
pub mod renderer;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler, UrlFetcher};
use kiln_storage::{ObjectKey, ObjectStore, Storage, StorageError, StorageScopes};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::layout::LayoutRule;
use crate::protocol::{Message, PageReport, failure};

/// How the worker starts a renderer: a program and the arguments before
/// the renderer's own (the kiln binary and `render-pdf`).
#[derive(Debug, Clone)]
pub struct RendererCommand {
    pub program: PathBuf,
    pub leading_args: Vec<String>,
    /// Variables the renderer gets; its environment is otherwise cleared.
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct PreviewConfig {
    pub renderer: RendererCommand,
    /// libpdfium, as [`library::locate`] found it, or why it did not.
    pub library: Result<PathBuf, library::LibraryError>,
    /// Renderer processes at once, across every run of this worker.
    pub parallelism: usize,
    /// Each renderer's address-space limit, in bytes.
    pub memory_limit: u64,
    /// A renderer that reports nothing for this long is killed.
    pub page_timeout: Duration,
    pub max_source_bytes: u64,
    pub max_pages: u32,
    /// Where downloads and images wait; one private folder a run.
    pub work_dir: PathBuf,
}

/// Renders documents with renderer processes, sharing one pool of
/// renderer slots between every task that renders pages on this worker.
/// Cheap to clone.
#[derive(Clone)]
pub struct PageRenderer {
    config: Arc<PreviewConfig>,
    slots: Arc<Semaphore>,
}

/// Takes each page as its renderer reports it, while later pages render:
/// uploads it, records progress. An error stops the rendering.
pub trait PageSink: Send {
    /// `image` is the page's file, removed once the rendering ends;
    /// `done` pages of `total` are reported so far, this one included.
    fn page<'a>(
        &'a mut self,
        report: &'a PageReport,
        image: &'a Path,
        done: u32,
        total: u32,
    ) -> impl Future<Output = Result<(), TaskError>> + Send + 'a;
}

impl PageRenderer {
    pub fn new(config: PreviewConfig) -> Self {
        let slots = Arc::new(Semaphore::new(config.parallelism.max(1)));
        Self {
            config: Arc::new(config),
            slots,
        }
    }

    pub fn config(&self) -> &PreviewConfig {
        &self.config
    }

    /// A private folder for one attempt of a run, removed when dropped.
    pub async fn work_dir(&self, ctx: &TaskContext, purpose: &str) -> Result<WorkDir, TaskError> {
        let dir = self.config.work_dir.join(format!(
            "kiln-{purpose}-{}-{}-{}",
            ctx.run_id,
            ctx.attempt,
            kiln_core::id::random_alphanumeric(6)
        ));
        tokio::fs::create_dir_all(dir.join("pages"))
            .await
            .map_err(|e| local_io("cannot make a work folder", &e))?;
        Ok(WorkDir(dir))
    }

    /// Renders every page of the PDF at `input` by `rule`, handing each to
    /// `sink` as it is done; answers the pages in order. Whatever the file
    /// does, this ends with the pages or an error that names the reason.
    pub async fn render(
        &self,
        ctx: &TaskContext,
        work: &WorkDir,
        input: &Path,
        rule: LayoutRule,
        sink: &mut impl PageSink,
    ) -> Result<Vec<PageReport>, TaskError> {
        let library = self
            .config
            .library
            .as_ref()
            .map_err(|e| TaskError::retryable(failure::RENDERER_UNAVAILABLE, e.to_string()))?;
        let permits = self.renderer_permits(ctx).await?;
        let pages = self
            .render_pages(ctx, &work.0, input, library, rule, permits.len() as u32, sink)
            .await;
        drop(permits);
        pages
    }
}

/// `kiln.pdf.preview`.
pub struct PdfPreview {
    storage: Storage,
    fetcher: Arc<dyn UrlFetcher>,
    renderer: PageRenderer,
    scopes: StorageScopes,
}

impl PdfPreview {
    /// `scopes` say where each environment's keys live in `storage`.
    pub fn new(storage: Storage, fetcher: Arc<dyn UrlFetcher>, renderer: PageRenderer, scopes: StorageScopes) -> Self {
        Self {
            storage,
            fetcher,
            renderer,
            scopes,
        }
    }
}

impl TaskHandler for PdfPreview {
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture {
        let job = Job {
            storage: Arc::clone(&self.storage),
            fetcher: Arc::clone(&self.fetcher),
            renderer: self.renderer.clone(),
            scopes: self.scopes.clone(),
        };
        Box::pin(async move { job.preview(&ctx, payload).await })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PreviewPayload {
    source: Source,
    output_prefix: String,
}

/// Where a document comes from: an object in kiln's storage, or a URL
/// (fetched under the egress rules).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Source {
    Key { key: String },
    Url { url: String },
}

fn invalid(message: impl Into<String>) -> TaskError {
    TaskError::fatal("InvalidPayload", message)
}

/// A storage failure as a task error: retried when it may pass.
pub fn storage_failure(error: &StorageError) -> TaskError {
    if error.is_transient() {
        TaskError::retryable("StorageUnavailable", error.to_string())
    } else {
        TaskError::fatal("StorageError", error.to_string())
    }
}

fn local_io(what: &str, error: &std::io::Error) -> TaskError {
    TaskError::retryable(failure::RENDERER_UNAVAILABLE, format!("{what}: {error}"))
}

/// A run's private folder, removed however the run ends.
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| local_io("cannot create the download", &e))?;
    let written = match source {
        Source::Url { url } => {
            let bytes = fetcher.fetch(url, limit).await?;
            file.write_all(&bytes)
                .await
                .map_err(|e| local_io("cannot write the download", &e))?;
            bytes.len() as u64
        }
        Source::Key { key } => {
            let key = ObjectKey::parse(key.as_str()).map_err(|e| invalid(format!("source.key: {e}")))?;
            let body = store.get(&key).await.map_err(|e| match e {
                StorageError::NotFound { .. } => TaskError::fatal("MissingSourceFile", format!("{key} does not exist")),
                other => storage_failure(&other),
            })?;
            if body.size > limit {
                return Err(TaskError::fatal(
                    "SourceTooLarge",
                    format!("{key} is {} bytes; the limit is {limit}", body.size),
                ));
            }
            let mut reader = body.reader.take(limit + 1);
            let copied = tokio::io::copy(&mut reader, &mut file)
                .await
                .map_err(|e| TaskError::retryable("SourceReadFailed", format!("{key}: {e}")))?;
            if copied > limit {
                return Err(TaskError::fatal(
                    "SourceTooLarge",
                    format!("{key} is over {limit} bytes"),
                ));
            }
            copied
        }
    };
    file.sync_all()
        .await
        .map_err(|e| local_io("cannot write the download", &e))?;
    Ok(written)
}

/// Refuses what is plainly not a whole PDF before a renderer starts: no
/// `%PDF-` header near the start, or no `%%EOF` marker near the end (the
/// file was cut short).
pub async fn check_envelope(path: &Path, size: u64) -> Result<(), TaskError> {
    const HEAD: u64 = 1024;
    const TAIL: u64 = 4096;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| local_io("cannot read the download", &e))?;
    let mut head = vec![0; HEAD.min(size) as usize];
    file.read_exact(&mut head)
        .await
        .map_err(|e| local_io("cannot read the download", &e))?;
    if !head.windows(5).any(|w| w == b"%PDF-") {
        return Err(TaskError::fatal(
            failure::NOT_A_PDF,
            "the file is not a PDF (no %PDF- header)",
        ));
    }
    let tail_len = TAIL.min(size);
    file.seek(std::io::SeekFrom::Start(size - tail_len))
        .await
        .map_err(|e| local_io("cannot read the download", &e))?;
    let mut tail = vec![0; tail_len as usize];
    file.read_exact(&mut tail)
        .await
        .map_err(|e| local_io("cannot read the download", &e))?;
    if !tail.windows(5).any(|w| w == b"%%EOF") {
        return Err(TaskError::fatal(
            failure::TRUNCATED,
            "the PDF is truncated: it has no %%EOF marker at its end",
        ));
    }
    Ok(())
}

struct Job {
    storage: Storage,
    fetcher: Arc<dyn UrlFetcher>,
    renderer: PageRenderer,
    scopes: StorageScopes,
}

/// `kiln.pdf.preview`'s sink: each page to `<prefix>/page-<n>.<ext>`, and
/// its progress.
struct UploadPages<'a> {
    storage: &'a dyn ObjectStore,
    prefix: &'a str,
    ctx: &'a TaskContext,
}

impl PageSink for UploadPages<'_> {
    async fn page(&mut self, report: &PageReport, image: &Path, done: u32, total: u32) -> Result<(), TaskError> {
        let key = ObjectKey::parse(format!("{}/{}", self.prefix, report.file).as_str())
            .map_err(|e| invalid(format!("outputPrefix: {e}")))?;
        upload_file(self.storage, image, &key, report.format.content_type()).await?;
        let percent = done * 100 / total.max(1);
        self.ctx
            .metadata
            .progress(percent.min(99), format!("{done} / {total} pages processed"));
        Ok(())
    }
}

/// Uploads a file the worker wrote, then removes it: the disk holds only
/// pages not yet uploaded.
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
    let _ = tokio::fs::remove_file(path).await;
    Ok(size)
}

/// What a renderer's reader task passes on.
enum ShardEvent {
    Message(Message),
    /// The renderer ended without a `Failed` message: fine when its exit
    /// status is success.
    Ended {
        shard: u32,
        outcome: Result<(), TaskError>,
    },
}

impl Job {
    async fn preview(&self, ctx: &TaskContext, payload: Value) -> Result<Value, TaskError> {
        let payload: PreviewPayload =
            serde_json::from_value(payload).map_err(|e| invalid(format!("kiln.pdf.preview payload: {e}")))?;
        let local_prefix = payload.output_prefix.trim_end_matches('/').to_owned();
        let prod = ctx.environment == kiln_core::auth::Environment::Prod;
        // The run's environment's part of the storage holds its pages.
        let first_page = self
            .scopes
            .resolve(prod, &format!("{local_prefix}/page-1.png"))
            .map_err(|e| invalid(format!("outputPrefix: {e}")))?;
        let prefix = first_page
            .as_str()
            .strip_suffix("/page-1.png")
            .unwrap_or(first_page.as_str())
            .to_owned();
        let source = resolve_source(&self.scopes, prod, payload.source)?;

        let work = self.renderer.work_dir(ctx, "preview").await?;
        let input = work.path().join("source.pdf");

        ctx.metadata.progress(0, "downloading the PDF");
        let size = download_source(
            self.storage.as_ref(),
            self.fetcher.as_ref(),
            &source,
            &input,
            self.renderer.config.max_source_bytes,
        )
        .await?;
        check_envelope(&input, size).await?;

        let mut sink = UploadPages {
            storage: self.storage.as_ref(),
            prefix: &prefix,
            ctx,
        };
        let pages = self
            .renderer
            .render(ctx, &work, &input, LayoutRule::Kiln, &mut sink)
            .await?;

        let is_vertical = pages.first().is_some_and(|p| p.original_height >= p.original_width);
        let total = pages.len();
        ctx.metadata.progress(100, format!("{total} / {total} pages processed"));
        tracing::info!(pages = total, prefix = %prefix, "preview written");
        let pages: Vec<Value> = pages
            .into_iter()
            .map(|p| {
                json!({
                    "pageNumber": p.page_number,
                    "key": format!("{local_prefix}/{}", p.file),
                    "contentType": p.format.content_type(),
                    "width": p.width,
                    "height": p.height,
                    "originalWidth": p.original_width,
                    "originalHeight": p.original_height,
                    "scaleFactor": p.scale_factor,
                    "links": p.links,
                })
            })
            .collect();
        Ok(json!({ "numPages": total, "isVertical": is_vertical, "pages": pages }))
    }
}

impl PageRenderer {
    /// One renderer slot, waiting for it, then any others free at once: a
    /// document alone on the worker uses every core, documents together
    /// share them.
    async fn renderer_permits(&self, ctx: &TaskContext) -> Result<Vec<OwnedSemaphorePermit>, TaskError> {
        let first = tokio::select! {
            permit = Arc::clone(&self.slots).acquire_owned() => permit
                .map_err(|_| TaskError::retryable(failure::RENDERER_UNAVAILABLE, "the renderer pool is closed"))?,
            () = ctx.cancel.cancelled() => return Err(TaskError::retryable("Canceled", "stopped before rendering")),
        };
        let mut permits = vec![first];
        while permits.len() < self.config.parallelism {
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        Ok(permits)
    }

    #[allow(clippy::too_many_arguments)]
    async fn render_pages(
        &self,
        ctx: &TaskContext,
        work: &Path,
        input: &Path,
        library: &Path,
        rule: LayoutRule,
        shards: u32,
        sink: &mut impl PageSink,
    ) -> Result<Vec<PageReport>, TaskError> {
        let out_dir = work.join("pages");
        let (events_tx, mut events) = mpsc::channel::<ShardEvent>(64);
        let mut readers = tokio::task::JoinSet::new();
        for shard in 0..shards {
            let child = self.spawn_renderer(input, library, &out_dir, shard, shards, rule)?;
            let limits = Limits {
                page_timeout: self.config.page_timeout,
                memory_limit: self.config.memory_limit,
            };
            readers.spawn(read_shard(child, shard, limits, events_tx.clone()));
        }
        drop(events_tx);

        let mut page_count: Option<u32> = None;
        let mut done: BTreeMap<u32, PageReport> = BTreeMap::new();
        let mut ended = 0;
        while ended < shards {
            let event = tokio::select! {
                event = events.recv() => event,
                () = ctx.cancel.cancelled() => {
                    readers.abort_all();
                    return Err(TaskError::retryable("Canceled", "the preview was stopped"));
                }
            };
            let Some(event) = event else { break };
            match event {
                ShardEvent::Message(Message::Document { page_count: count }) => match page_count {
                    Some(known) if known != count => {
                        return Err(TaskError::fatal(
                            failure::CORRUPT,
                            "the renderers disagree on the page count",
                        ));
                    }
                    _ => page_count = Some(count),
                },
                ShardEvent::Message(Message::Page(report)) => {
                    let Some(total) = page_count else {
                        return Err(broken_renderer("a page was reported before the document"));
                    };
                    if report.page_number == 0 || report.page_number > total || report.file.contains('/') {
                        return Err(broken_renderer("a page out of range was reported"));
                    }
                    if done.contains_key(&report.page_number) {
                        return Err(broken_renderer("a page was reported twice"));
                    }
                    let image = out_dir.join(&report.file);
                    let count = done.len() as u32 + 1;
                    sink.page(&report, &image, count, total).await?;
                    done.insert(report.page_number, report);
                }
                ShardEvent::Message(Message::Failed { name, message }) => {
                    readers.abort_all();
                    return Err(renderer_failure(&name, message));
                }
                ShardEvent::Ended { outcome, shard } => {
                    if let Err(error) = outcome {
                        tracing::warn!(shard, %error, "a renderer failed");
                        readers.abort_all();
                        return Err(error);
                    }
                    ended += 1;
                }
            }
        }
        let total = page_count.ok_or_else(|| broken_renderer("no renderer opened the document"))?;
        if done.len() != total as usize {
            return Err(broken_renderer(&format!(
                "{} of {total} pages were rendered",
                done.len()
            )));
        }
        Ok(done.into_values().collect())
    }

    fn spawn_renderer(
        &self,
        input: &Path,
        library: &Path,
        out_dir: &Path,
        shard: u32,
        shards: u32,
        rule: LayoutRule,
    ) -> Result<tokio::process::Child, TaskError> {
        let config = &self.config;
        tokio::process::Command::new(&config.renderer.program)
            .args(&config.renderer.leading_args)
            .arg("--input")
            .arg(input)
            .arg("--output-dir")
            .arg(out_dir)
            .arg("--shard")
            .arg(format!("{shard}/{shards}"))
            .arg("--library")
            .arg(library)
            .arg("--memory-limit")
            .arg(config.memory_limit.to_string())
            .arg("--max-pages")
            .arg(config.max_pages.to_string())
            .arg("--layout")
            .arg(rule.name())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(config.renderer.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                TaskError::retryable(
                    failure::RENDERER_UNAVAILABLE,
                    format!("cannot start the renderer {}: {e}", config.renderer.program.display()),
                )
            })
    }
}

fn broken_renderer(what: &str) -> TaskError {
    TaskError::fatal(failure::RENDERER_CRASHED, format!("the renderer misbehaved: {what}"))
}

fn renderer_failure(name: &str, message: String) -> TaskError {
    if name == failure::RENDERER_UNAVAILABLE {
        TaskError::retryable(name, message)
    } else {
        TaskError::fatal(name, message)
    }
}

/// What a renderer is held to.
#[derive(Debug, Clone, Copy)]
struct Limits {
    page_timeout: Duration,
    memory_limit: u64,
}

/// Reads one renderer's reports until it exits, killing it when it stays
/// silent past the page timeout.
async fn read_shard(mut child: tokio::process::Child, shard: u32, limits: Limits, events: mpsc::Sender<ShardEvent>) {
    let page_timeout = limits.page_timeout;
    const STDERR_KEPT: usize = 2048;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = events
            .send(ShardEvent::Ended {
                shard,
                outcome: Err(broken_renderer("no output pipes")),
            })
            .await;
        return;
    };
    let stderr_tail = tokio::spawn(async move {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > STDERR_KEPT {
                kept.drain(..kept.len() - STDERR_KEPT);
            }
        }
        String::from_utf8_lossy(&kept).trim().to_owned()
    });
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut reported_failure = false;
    loop {
        match tokio::time::timeout(page_timeout, lines.next_line()).await {
            Err(_) => {
                let _ = child.kill().await;
                let message = format!(
                    "the renderer drew nothing for {} s and was stopped (KILN_PREVIEW_PAGE_TIMEOUT)",
                    page_timeout.as_secs_f32()
                );
                let outcome = Err(TaskError::fatal(failure::RENDER_TIMEOUT, message));
                let _ = events.send(ShardEvent::Ended { shard, outcome }).await;
                return;
            }
            Ok(Ok(Some(line))) => match serde_json::from_str::<Message>(&line) {
                Ok(message) => {
                    reported_failure |= matches!(message, Message::Failed { .. });
                    if events.send(ShardEvent::Message(message)).await.is_err() {
                        return;
                    }
                }
                Err(_) => {
                    let _ = child.kill().await;
                    let outcome = Err(broken_renderer("it printed something that is not a report"));
                    let _ = events.send(ShardEvent::Ended { shard, outcome }).await;
                    return;
                }
            },
            Ok(Ok(None) | Err(_)) => break,
        }
    }
    let status = child.wait().await;
    let stderr = stderr_tail.await.unwrap_or_default();
    let outcome = match status {
        Ok(status) if status.success() || reported_failure => Ok(()),
        Ok(status) => Err(crash_error(status, &stderr, limits.memory_limit)),
        Err(e) => Err(broken_renderer(&format!("cannot wait for it: {e}"))),
    };
    let _ = events.send(ShardEvent::Ended { shard, outcome }).await;
}

fn crash_error(status: std::process::ExitStatus, stderr: &str, memory_limit: u64) -> TaskError {
    const SIGABRT: i32 = 6;
    let how = match (status.signal(), status.code()) {
        (Some(signal), _) => format!("was killed by signal {signal}"),
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "ended".to_owned(),
    };
    // pdfium aborts when an allocation fails, Rust prints a line first.
    let out_of_memory = status.signal() == Some(SIGABRT) || stderr.contains("memory allocation");
    let hint = if out_of_memory {
        format!(
            ", which is what an allocation past its memory limit of {} MiB causes (KILN_PREVIEW_MEMORY_LIMIT_MB)",
            memory_limit >> 20
        )
    } else {
        String::new()
    };
    let last_line = stderr.lines().last().unwrap_or("");
    let detail = if last_line.is_empty() {
        String::new()
    } else {
        format!(": {last_line}")
    };
    TaskError::fatal(
        failure::RENDERER_CRASHED,
        format!("the PDF crashed its renderer, which {how}{hint}{detail}"),
    )
}
