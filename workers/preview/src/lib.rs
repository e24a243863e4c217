//! Page previews: `kiln.pdf.preview` turns a PDF into one image per page in
//! object storage, with each page's size, scale and links, as Supermark's
//! `convert-pdf-to-image-route` job does.
//!
//! The worker half ([`PdfPreview`]) downloads the PDF once into a private
//! folder, starts renderer processes ([`renderer`], `kiln render-pdf`) that
//! take the pages in turn, stores several images at once as they are
//! reported, and sets the run's progress. The renderers are the only code that parses the
//! untrusted file; each has an address-space limit, and one that stays
//! silent past the page timeout is killed. Whatever the file does, the run
//! ends FAILED with a reason and the worker goes on.
//!
//! Here: the renderer pool's interface. [`task`]: the task itself.
//! [`shards`]: the renderer processes of one document. [`repair`]: the
//! pass a damaged document goes through before it may fail. [`envelope`]:
//! the diagnosis of a file that is not a whole PDF.
//!
//! This crate knows its payload, its output and the [`ObjectStore`]
//! interface; it does not know Postgres, Redis or HTTP routes.
//!
//! [`ObjectStore`]: kiln_storage::ObjectStore

pub mod encode;
mod envelope;
pub mod layout;
pub mod library;
pub mod protocol;
pub mod renderer;
pub mod repair;
mod shards;
mod task;

pub use repair::{Rendered, Repair};
pub use task::PdfPreview;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_core::task::{TaskContext, TaskError};
use kiln_worker_kit::local_io;
pub use kiln_worker_kit::{Source, WorkDir};
use tokio::sync::Semaphore;

use crate::layout::LayoutRule;
use crate::protocol::{PageReport, failure};
use crate::renderer::RepairTool;

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

/// Takes each page as its renderer reports it, while later pages render.
/// Several pages are stored at once ([`STORES_IN_FLIGHT`]): a store is a
/// round trip to the object store, and one at a time they made the tail
/// of a document wait on the slowest of them in turn.
pub trait PageSink: Send {
    /// Stores one page's image (`image`, removed once the rendering ends).
    /// The future owns what it uses, so that several run at once; an error
    /// stops the rendering.
    fn store(&self, report: &PageReport, image: PathBuf) -> StoreFuture;
    /// A page is stored: `done` of `total` so far, this one included. Called
    /// in the order stores finish, once for every store that succeeded, even
    /// when the rendering then fails, so that the sink can undo it.
    fn stored(&mut self, report: &PageReport, done: u32, total: u32);
}

/// What [`PageSink::store`] answers.
pub type StoreFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send + 'static>>;

/// Page images being stored at once, at most, for one document.
pub const STORES_IN_FLIGHT: usize = 8;

/// The usual [`PageSink::store`]: the page's image uploaded to `storage`
/// under `key` (or the error that making the key gave).
pub fn upload_page(
    storage: &kiln_storage::Storage,
    key: Result<kiln_storage::ObjectKey, TaskError>,
    report: &PageReport,
    image: PathBuf,
) -> StoreFuture {
    let storage = Arc::clone(storage);
    let content_type = report.format.content_type();
    Box::pin(async move {
        kiln_worker_kit::upload_file(storage.as_ref(), &image, &key?, content_type).await?;
        Ok(())
    })
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

    /// A private folder for one attempt of a run, removed when dropped,
    /// with the `pages` folder [`PageRenderer::render`] writes to.
    pub async fn work_dir(&self, ctx: &TaskContext, purpose: &str) -> Result<WorkDir, TaskError> {
        let work = WorkDir::create(&self.config.work_dir, ctx, purpose).await?;
        tokio::fs::create_dir_all(work.join("pages"))
            .await
            .map_err(|e| local_io("cannot make a work folder", &e))?;
        Ok(work)
    }

    /// Renders every page of the PDF at `input` by `rule`, handing each to
    /// `sink` as it is done; answers the pages in order, and the repair the
    /// document needed, if any. A document pdfium cannot read goes through
    /// the repair pass ([`repair`]) before it fails; whatever the file does,
    /// this ends with the pages or an error that names the reason.
    pub async fn render(
        &self,
        ctx: &TaskContext,
        work: &WorkDir,
        input: &Path,
        rule: LayoutRule,
        sink: &mut impl PageSink,
    ) -> Result<Rendered, TaskError> {
        let library = self
            .config
            .library
            .as_ref()
            .map_err(|e| TaskError::retryable(failure::RENDERER_UNAVAILABLE, e.to_string()))?;
        let permits = self.renderer_permits(ctx).await?;
        let shards = permits.len() as u32;
        let damage = match self
            .render_pages(ctx, work.path(), input, library, rule, shards, false, sink)
            .await
        {
            Ok(pages) => return Ok(Rendered { pages, repair: None }),
            Err(error) if failure::is_repairable(error.name()) => error,
            Err(error) => return Err(error),
        };
        tracing::info!(error = %damage, "pdfium cannot read the document; repairing it");
        let mut tried = Vec::new();
        for tool in RepairTool::ALL {
            let repaired = match self.repair_copy(ctx, input, library, &work.join("repair"), tool).await {
                Ok(repaired) => repaired,
                Err(why) => {
                    tried.push(format!("{}: {why}", tool.name()));
                    continue;
                }
            };
            match self
                .render_pages(ctx, work.path(), &repaired, library, rule, shards, true, sink)
                .await
            {
                // Blank pages stand in for a few lost ones; a copy with no
                // page left to read is no document.
                Ok(pages) if pages.iter().all(|p| p.blank) => {
                    tried.push(format!("{}'s copy has no page that can be read", tool.name()));
                }
                Ok(pages) => {
                    tracing::info!(tool = tool.name(), pages = pages.len(), "rendered from a repaired copy");
                    let repair = Repair {
                        tool,
                        reason: damage.message().to_owned(),
                    };
                    return Ok(Rendered {
                        pages,
                        repair: Some(repair),
                    });
                }
                Err(error) if failure::is_repairable(error.name()) => {
                    tried.push(format!("{}'s copy: {}", tool.name(), error.message()));
                }
                Err(error) => return Err(error),
            }
        }
        Err(repair::unrepaired(damage, envelope::diagnose(input).await, &tried))
    }
}
