//! `kiln.pdf.preview`, the task: its payload, the sink that uploads each
//! page as it is drawn, and the answer listing the pages.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler, UrlFetcher};
use kiln_storage::{ObjectKey, Storage, StorageScopes};
use kiln_worker_kit::{download_source, invalid, parse_payload, resolve_source};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::layout::LayoutRule;
use crate::protocol::PageReport;
use crate::{PageRenderer, PageSink, Source, StoreFuture, upload_page};

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

struct Job {
    storage: Storage,
    fetcher: Arc<dyn UrlFetcher>,
    renderer: PageRenderer,
    scopes: StorageScopes,
}

/// `kiln.pdf.preview`'s sink: each page to `<prefix>/page-<n>.<ext>`, and
/// its progress.
struct UploadPages<'a> {
    storage: Storage,
    prefix: &'a str,
    ctx: &'a TaskContext,
    /// Every image uploaded, so a run that fails leaves none behind.
    uploaded: Vec<ObjectKey>,
}

impl UploadPages<'_> {
    fn key(&self, report: &PageReport) -> Result<ObjectKey, TaskError> {
        ObjectKey::parse(format!("{}/{}", self.prefix, report.file).as_str())
            .map_err(|e| invalid(format!("outputPrefix: {e}")))
    }
}

impl PageSink for UploadPages<'_> {
    fn store(&self, report: &PageReport, image: PathBuf) -> StoreFuture {
        upload_page(&self.storage, self.key(report), report, image)
    }

    fn stored(&mut self, report: &PageReport, done: u32, total: u32) {
        if let Ok(key) = self.key(report) {
            self.uploaded.push(key);
        }
        let percent = done * 100 / total.max(1);
        self.ctx
            .metadata
            .progress(percent.min(99), format!("{done} / {total} pages processed"));
    }
}

impl Job {
    async fn preview(&self, ctx: &TaskContext, payload: Value) -> Result<Value, TaskError> {
        let payload: PreviewPayload = parse_payload("kiln.pdf.preview", payload)?;
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
        download_source(
            self.storage.as_ref(),
            self.fetcher.as_ref(),
            &source,
            &input,
            self.renderer.config.max_source_bytes,
        )
        .await?;

        let mut sink = UploadPages {
            storage: Arc::clone(&self.storage),
            prefix: &prefix,
            ctx,
            uploaded: Vec::new(),
        };
        let rendered = match self
            .renderer
            .render(ctx, &work, &input, LayoutRule::Kiln, &mut sink)
            .await
        {
            Ok(rendered) => rendered,
            Err(error) => {
                // Pages drawn before the document failed (a first pass, or
                // a repaired copy found wanting) go with it.
                for key in &sink.uploaded {
                    if let Err(e) = self.storage.delete(key).await {
                        tracing::warn!(key = %key, error = %e, "cannot remove a page image of a failed run");
                    }
                }
                return Err(error);
            }
        };
        // A page re-drawn from a repaired copy in another format replaced
        // its first image.
        for key in &sink.uploaded {
            let kept = rendered
                .pages
                .iter()
                .any(|p| key.as_str().ends_with(&format!("/{}", p.file)));
            if !kept && let Err(e) = self.storage.delete(key).await {
                tracing::warn!(key = %key, error = %e, "cannot remove an image a repair replaced");
            }
        }
        let repair = rendered.repair_report();
        let pages = rendered.pages;

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
        let mut output = json!({ "numPages": total, "isVertical": is_vertical, "pages": pages });
        if let Some(repair) = repair {
            output["repair"] = repair;
        }
        Ok(output)
    }
}
