//! Supermark's document tasks, served natively under Supermark's own task
//! ids and payloads: what its `lib/trigger/*.ts` tasks (and the app routes
//! they call back into) read and write, done by kiln's workers — pages by
//! pdfium, conversions by the warm LibreOffice pool, videos by ffmpeg.
//!
//! This is the only crate that knows Supermark's schema, storage keys and
//! progress texts. It reads and writes Supermark's own database and bucket
//! (never kiln's), and calls the app only where Supermark's tasks call it
//! for effects kiln cannot have itself (revalidating its pages, sending its
//! e-mails). The runtime and the API know nothing of it: the binary
//! registers [`Supermark::tasks`] like any other handlers.
//!
//! On purpose, and unlike Supermark: a document that cannot be processed
//! ends the run FAILED (once, with the reason in the error and in
//! `metadata.status.text`), and nothing of it stays written.

pub mod config;
pub mod db;
pub mod slug;
mod status;
mod tasks;

use std::sync::Arc;

use kiln_core::auth::Environment;
use kiln_core::task::TaskHandler;
use kiln_storage::Storage;
use kiln_worker_convert::pool::OfficePool;
use kiln_worker_preview::PageRenderer;

pub use config::{ConfigError, SupermarkConfig};
pub use db::{DbError, SupermarkDb};
pub use tasks::video_encoding_arguments;

/// The task ids kiln serves for Supermark.
pub mod task_ids {
    pub const PDF_TO_IMAGES: &str = "convert-pdf-to-image-route";
    pub const FILES_TO_PDF: &str = "convert-files-to-pdf";
    pub const KEYNOTE_TO_PDF: &str = "convert-keynote-to-pdf";
    pub const CAD_TO_PDF: &str = "convert-cad-to-pdf";
    pub const PROCESS_VIDEO: &str = "process-video";
    pub const DATAROOM_CHANGE_NOTIFICATION: &str = "send-dataroom-change-notification";
}

/// Supermark's per-plan conversion queues (`conversion-<plan>`, one slot
/// set per team through `concurrencyKey`) and their default limits, which
/// the tasks file may change.
pub const PLAN_QUEUE_LIMITS: &[(&str, u32)] = &[
    ("conversion-free", 1),
    ("conversion-starter", 1),
    ("conversion-pro", 2),
    ("conversion-business", 10),
    ("conversion-datarooms", 10),
    ("conversion-datarooms-plus", 10),
];

/// A task as the binary registers it.
pub struct SupermarkTask {
    pub id: &'static str,
    pub handler: Arc<dyn TaskHandler>,
    /// Supermark's `retry.maxAttempts` for the task.
    pub max_attempts: u32,
    /// The only environment whose keys may start it: Supermark's database
    /// and bucket are one environment's data.
    pub environment: Environment,
}

/// What the tasks share.
pub(crate) struct Shared {
    pub(crate) db: SupermarkDb,
    /// Supermark's bucket.
    pub(crate) storage: Storage,
    pub(crate) renderer: PageRenderer,
    pub(crate) office: Arc<OfficePool>,
    pub(crate) http: reqwest::Client,
    pub(crate) config: SupermarkConfig,
}

/// Supermark's tasks, ready to register.
#[derive(Clone)]
pub struct Supermark {
    shared: Arc<Shared>,
}

impl Supermark {
    /// `storage` is Supermark's bucket as [`SupermarkConfig::storage`]
    /// describes it; `renderer` and `office` are the worker's, shared with
    /// kiln's own preview and conversion tasks.
    pub fn new(
        config: SupermarkConfig,
        db: SupermarkDb,
        storage: Storage,
        renderer: PageRenderer,
        office: Arc<OfficePool>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                storage,
                renderer,
                office,
                http,
                config,
            }),
        })
    }

    pub fn db(&self) -> &SupermarkDb {
        &self.shared.db
    }

    pub fn tasks(&self) -> Vec<SupermarkTask> {
        use tasks::convert::{Conversion, ConvertToPdf};
        let shared = &self.shared;
        let environment = shared.config.environment;
        let task = |id, handler: Arc<dyn TaskHandler>| SupermarkTask {
            id,
            handler,
            max_attempts: 3,
            environment,
        };
        vec![
            task(
                task_ids::PDF_TO_IMAGES,
                Arc::new(tasks::pages::PdfToImages(Arc::clone(shared))),
            ),
            task(
                task_ids::FILES_TO_PDF,
                Arc::new(ConvertToPdf(Arc::clone(shared), Conversion::Office)),
            ),
            task(
                task_ids::KEYNOTE_TO_PDF,
                Arc::new(ConvertToPdf(Arc::clone(shared), Conversion::Keynote)),
            ),
            task(
                task_ids::CAD_TO_PDF,
                Arc::new(ConvertToPdf(Arc::clone(shared), Conversion::Cad)),
            ),
            task(
                task_ids::PROCESS_VIDEO,
                Arc::new(tasks::video::ProcessVideo(Arc::clone(shared))),
            ),
            task(
                task_ids::DATAROOM_CHANGE_NOTIFICATION,
                Arc::new(tasks::notify::DataroomChangeNotification(Arc::clone(shared))),
            ),
        ]
    }
}
