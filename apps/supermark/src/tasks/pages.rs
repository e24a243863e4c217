//! `convert-pdf-to-image-route`: a version's pages as images in
//! Supermark's bucket (`<teamId>/<docId>/page-<n>.<png|jpeg>`) and as
//! `DocumentPage` rows, exactly as Supermark's task and its `convert-page`
//! route write them — but rendered by pdfium in parallel, uploaded while
//! later pages render, and recorded in one transaction at the end.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler};
use kiln_storage::ObjectKey;
use kiln_worker_preview::encode::ImageFormat;
use kiln_worker_preview::layout::LayoutRule;
use kiln_worker_preview::protocol::PageReport;
use kiln_worker_preview::{PageSink, StoreFuture, upload_page};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{db_failure, document_folder, download_upload, not_found, parse_payload, team_key};
use crate::Shared;
use crate::db::NewPage;
use crate::status::{self, js_number};

pub(crate) struct PdfToImages(pub(crate) Arc<Shared>);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    document_id: String,
    document_version_id: String,
    team_id: String,
    version_number: Option<i64>,
}

impl TaskHandler for PdfToImages {
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture {
        let shared = Arc::clone(&self.0);
        Box::pin(async move {
            let result = make_pages(&shared, &ctx, payload).await;
            status::report_failure(&ctx, result)
        })
    }
}

/// Supermark's page file name: `page-<n>.png` or `page-<n>.jpeg`.
fn page_name(page_number: u32, format: ImageFormat) -> String {
    let extension = match format {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpeg",
    };
    format!("page-{page_number}.{extension}")
}

/// Each page to Supermark's bucket as it is rendered, with Supermark's
/// progress text after every page.
struct UploadPages<'a> {
    shared: &'a Shared,
    ctx: &'a TaskContext,
    team_id: &'a str,
    folder: &'a str,
    uploaded: Vec<ObjectKey>,
}

impl UploadPages<'_> {
    fn key(&self, report: &PageReport) -> Result<ObjectKey, TaskError> {
        team_key(self.team_id, self.folder, &page_name(report.page_number, report.format))
    }
}

impl PageSink for UploadPages<'_> {
    fn store(&self, report: &PageReport, image: PathBuf) -> StoreFuture {
        upload_page(&self.shared.storage, self.key(report), report, image)
    }

    fn stored(&mut self, report: &PageReport, done: u32, total: u32) {
        if let Ok(key) = self.key(report) {
            self.uploaded.push(key);
        }
        let progress = (f64::from(done) / f64::from(total)) * 100.0;
        status::set(
            &self.ctx.metadata,
            progress,
            format!("{done} / {total} pages processed"),
        );
    }
}

/// The row Supermark's `convert-page` route writes for a page.
fn page_row(report: &PageReport, key: &str) -> NewPage {
    let original_width = f64::from(report.original_width);
    let original_height = f64::from(report.original_height);
    let scale = report.scale_factor;
    let links: Vec<Value> = report
        .links
        .iter()
        .map(|link| json!({ "href": link.href, "coords": link.coords }))
        .collect();
    NewPage {
        page_number: i32::try_from(report.page_number).unwrap_or(i32::MAX),
        file: key.to_owned(),
        page_links: Value::Array(links),
        metadata: json!({
            "originalWidth": js_number(original_width),
            "originalHeight": js_number(original_height),
            "width": js_number(original_width * scale),
            "height": js_number(original_height * scale),
            "scaleFactor": js_number(scale),
        }),
    }
}

async fn make_pages(shared: &Shared, ctx: &TaskContext, payload: Value) -> Result<Value, TaskError> {
    let payload: Payload = parse_payload(crate::task_ids::PDF_TO_IMAGES, payload)?;
    status::set(&ctx.metadata, 0.0, "Initializing...");
    let version = shared
        .db
        .pdf_version(&payload.document_version_id, &payload.document_id, &payload.team_id)
        .await
        .map_err(db_failure)?
        .ok_or_else(not_found)?;

    let started = std::time::Instant::now();
    status::set(&ctx.metadata, 10.0, "Retrieving file...");
    let work = shared.renderer.work_dir(ctx, "supermark-pages").await?;
    let input = work.path().join("source.pdf");
    let size = download_upload(shared, &version.storage_type, &version.file, &input).await?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis(),
        bytes = size,
        "PDF downloaded"
    );

    status::set(&ctx.metadata, 20.0, "Converting document...");
    let folder = document_folder(&version.file);
    let mut sink = UploadPages {
        shared,
        ctx,
        team_id: &version.team_id,
        folder: &folder,
        uploaded: Vec::new(),
    };
    let rendered = shared
        .renderer
        .render(ctx, &work, &input, LayoutRule::Supermark, &mut sink)
        .await;
    let uploaded = std::mem::take(&mut sink.uploaded);
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis(),
        pages = uploaded.len(),
        "pages rendered and uploaded"
    );
    let recorded = match rendered {
        Ok(rendered) => record(shared, &payload, &version.team_id, &folder, &rendered.pages)
            .await
            .map(|()| rendered),
        Err(error) => Err(error),
    };
    let rendered = match recorded {
        Ok(rendered) => rendered,
        Err(error) => {
            // A version that had no pages gets none: its images go too. A
            // rerun's images are the ones its existing rows point at.
            let last_attempt = !error.is_retryable() || ctx.attempt >= ctx.max_attempts;
            if last_attempt && version.existing_pages == 0 {
                for key in &uploaded {
                    if let Err(e) = shared.storage.delete(key).await {
                        tracing::warn!(key = %key, error = %e, "cannot remove a page image of a failed run");
                    }
                }
            }
            return Err(error);
        }
    };

    // A page drawn twice (before and after a repair) in another format
    // left an image no row points at.
    for key in &uploaded {
        let kept = rendered
            .pages
            .iter()
            .any(|p| team_key(&version.team_id, &folder, &page_name(p.page_number, p.format)).is_ok_and(|k| k == *key));
        if !kept && let Err(e) = shared.storage.delete(key).await {
            tracing::warn!(key = %key, error = %e, "cannot remove an image a repair replaced");
        }
    }
    let repair = rendered.repair_report();
    let pages = rendered.pages;
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "pages recorded");
    status::set(&ctx.metadata, 90.0, "Enabling pages...");
    status::set(&ctx.metadata, 95.0, "Revalidating link...");
    revalidate(shared, &payload.document_id).await;
    status::set(&ctx.metadata, 100.0, "Processing complete");
    tracing::info!(pages = pages.len(), document = %payload.document_id, "Supermark pages ready");
    let mut output = json!({
        "success": true,
        "message": "Successfully converted PDF to images",
        "totalPages": pages.len(),
    });
    if let Some(repair) = repair {
        // Beside Supermark's own fields, which its app reads.
        output["repair"] = repair;
    }
    Ok(output)
}

async fn record(
    shared: &Shared,
    payload: &Payload,
    team_id: &str,
    folder: &str,
    pages: &[PageReport],
) -> Result<(), TaskError> {
    let mut rows = Vec::with_capacity(pages.len());
    for report in pages {
        let key = team_key(team_id, folder, &page_name(report.page_number, report.format))?;
        rows.push(page_row(report, key.as_str()));
    }
    let is_vertical = pages.first().is_some_and(|p| p.original_height > p.original_width);
    shared
        .db
        .record_pages(
            &payload.document_version_id,
            &payload.document_id,
            payload.version_number,
            is_vertical,
            &rows,
        )
        .await
        .map_err(db_failure)
}

/// `GET /api/revalidate?secret=…&documentId=…` on Supermark, so its view
/// pages show the new pages now rather than within the minute. Its answer
/// is ignored, as Supermark ignores it; a few tries, then a warning: the
/// pages are recorded whatever happens here.
async fn revalidate(shared: &Shared, document_id: &str) {
    let (Some(app), Some(token)) = (&shared.config.app_url, &shared.config.revalidate_token) else {
        tracing::debug!("no KILN_SUPERMARK_APP_URL or REVALIDATE_TOKEN: Supermark revalidates its pages by itself");
        return;
    };
    let url = format!("{app}/api/revalidate");
    for attempt in 1..=3u32 {
        let sent = shared
            .http
            .get(&url)
            .query(&[("secret", token.as_str()), ("documentId", document_id)])
            .send()
            .await;
        match sent {
            Ok(_) => return,
            Err(error) if attempt == 3 => {
                tracing::warn!(%error, "cannot reach Supermark to revalidate the document's links");
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_worker_preview::protocol::PageLink;

    use super::*;

    #[test]
    fn a_page_row_has_supermarks_shapes() {
        let report = PageReport {
            page_number: 2,
            file: "page-2.jpg".into(),
            format: ImageFormat::Jpeg,
            width: 1786,
            height: 2526,
            original_width: 595.276,
            original_height: 841.89,
            scale_factor: 3.0,
            png_size: Some(10),
            jpeg_size: Some(5),
            links: vec![PageLink {
                href: "#page=1".into(),
                coords: "72.0999984741211,700.5,144.25,715".into(),
                is_internal: true,
                target_page: Some(1),
            }],
            blank: false,
            half_scale: false,
        };
        let row = page_row(&report, "t/doc_x/page-2.jpeg");
        assert_eq!(
            row.metadata.to_string(),
            r#"{"height":2525.6700439453125,"originalHeight":841.8900146484375,"originalWidth":595.2760009765625,"scaleFactor":3,"width":1785.8280029296875}"#
        );
        assert_eq!(
            row.page_links,
            json!([{ "href": "#page=1", "coords": "72.0999984741211,700.5,144.25,715" }])
        );
        assert_eq!(page_name(2, ImageFormat::Jpeg), "page-2.jpeg");
    }
}
