//! `convert-files-to-pdf`, `convert-keynote-to-pdf` and
//! `convert-cad-to-pdf`: an upload converted to PDF by the warm LibreOffice
//! pool (where Supermark calls Gotenberg or a paid conversion API), stored
//! beside the original under Supermark's slugified name, made the
//! version's file, then its pages made by a child run of
//! `convert-pdf-to-image-route` tagged as Supermark tags it.

use std::sync::Arc;

use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler};
use kiln_worker_convert::format::Import;
use kiln_worker_kit::upload_file;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{db_failure, document_folder, download_upload, not_found, parse_payload, team_key};
use crate::status;
use crate::{Shared, slug, task_ids};

/// Which of Supermark's conversion tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conversion {
    /// `convert-files-to-pdf`: office documents, with progress.
    Office,
    /// `convert-keynote-to-pdf`, with LibreOffice's Keynote import.
    Keynote,
    /// `convert-cad-to-pdf`, with LibreOffice's DXF import.
    Cad,
}

impl Conversion {
    fn task_id(self) -> &'static str {
        match self {
            Conversion::Office => task_ids::FILES_TO_PDF,
            Conversion::Keynote => task_ids::KEYNOTE_TO_PDF,
            Conversion::Cad => task_ids::CAD_TO_PDF,
        }
    }

    /// Only `convert-files-to-pdf` reports progress in Supermark.
    fn reports_progress(self) -> bool {
        self == Conversion::Office
    }
}

pub(crate) struct ConvertToPdf(pub(crate) Arc<Shared>, pub(crate) Conversion);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    document_id: String,
    document_version_id: String,
    team_id: String,
}

impl TaskHandler for ConvertToPdf {
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture {
        let shared = Arc::clone(&self.0);
        let conversion = self.1;
        Box::pin(async move {
            let result = convert(&shared, conversion, &ctx, payload).await;
            status::report_failure(&ctx, result)
        })
    }
}

async fn convert(
    shared: &Shared,
    conversion: Conversion,
    ctx: &TaskContext,
    payload: Value,
) -> Result<Value, TaskError> {
    let payload: Payload = parse_payload(conversion.task_id(), payload)?;
    let progress = |percent: f64, text: &str| {
        if conversion.reports_progress() {
            status::set(&ctx.metadata, percent, text);
        }
    };
    progress(0.0, "Initializing...");
    if !shared.db.team_exists(&payload.team_id).await.map_err(db_failure)? {
        return Err(TaskError::fatal("TeamNotFound", "Team not found"));
    }
    let source = shared
        .db
        .conversion_source(&payload.team_id, &payload.document_id, &payload.document_version_id)
        .await
        .map_err(db_failure)?
        .ok_or_else(not_found)?;

    progress(10.0, "Retrieving file...");
    let work = shared.renderer.work_dir(ctx, "supermark-convert").await?;
    let download = work.path().join("download");
    download_upload(shared, &source.storage_type, &source.original_file, &download).await?;

    progress(20.0, "Converting document...");
    let (pdf, pages) = match conversion {
        Conversion::Office => {
            let (_, converted) =
                kiln_worker_convert::convert_download(&shared.office, work.path(), &download, &source.document_name)
                    .await?;
            (converted.pdf, converted.pages)
        }
        Conversion::Keynote => {
            check_keynote(&download).await?;
            let converted =
                kiln_worker_convert::convert_as(&shared.office, work.path(), &download, "key", Import::Any).await?;
            (converted.pdf, converted.pages)
        }
        Conversion::Cad => {
            let extension = check_cad(&download, &source.content_type).await?;
            let converted =
                kiln_worker_convert::convert_as(&shared.office, work.path(), &download, extension, Import::Any).await?;
            (converted.pdf, converted.pages)
        }
    };

    progress(30.0, "Saving converted file...");
    let folder = document_folder(&source.original_file);
    let key = team_key(
        &payload.team_id,
        &folder,
        &slug::object_name(&format!("{}.pdf", source.document_name)),
    )?;
    upload_file(shared.storage.as_ref(), &pdf, &key, "application/pdf").await?;
    let version_number = shared
        .db
        .set_converted_file(&payload.document_version_id, key.as_str())
        .await
        .map_err(db_failure)?;

    progress(40.0, "Initiating document processing...");
    let mut child = json!({
        "documentId": payload.document_id,
        "documentVersionId": payload.document_version_id,
        "teamId": payload.team_id,
    });
    if conversion == Conversion::Office {
        child["versionNumber"] = json!(version_number);
    }
    let tags = vec![
        format!("team_{}", payload.team_id),
        format!("document_{}", payload.document_id),
        format!("version:{}", payload.document_version_id),
    ];
    let child_id = ctx
        .children
        .trigger_tagged(task_ids::PDF_TO_IMAGES, child, tags)
        .await?;
    tracing::info!(key = %key, pages, child = %child_id, "Supermark upload converted to PDF");
    // Supermark's task returns nothing.
    Ok(Value::Null)
}

/// A Keynote file is a zip package (Keynote '09 and later).
async fn check_keynote(download: &std::path::Path) -> Result<(), TaskError> {
    let head = kiln_worker_convert::read_head(download).await?;
    if head.starts_with(b"PK\x03\x04") {
        Ok(())
    } else {
        Err(TaskError::fatal(
            "UnsupportedFormat",
            "the file is not a Keynote presentation (a Keynote file is a zip package)",
        ))
    }
}

/// DXF, ASCII or binary, converts; DWG is named and refused, since
/// LibreOffice has no DWG import.
async fn check_cad(download: &std::path::Path, content_type: &str) -> Result<&'static str, TaskError> {
    let head = kiln_worker_convert::read_head(download).await?;
    if head.starts_with(b"AC10") || content_type == "image/vnd.dwg" {
        return Err(TaskError::fatal(
            "UnsupportedFormat",
            "the file is a DWG drawing, which LibreOffice cannot open; export it as DXF or PDF",
        ));
    }
    let text = String::from_utf8_lossy(&head[..head.len().min(512)]);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let ascii_dxf = lines.next() == Some("0") && matches!(lines.next(), Some("SECTION"));
    if ascii_dxf || head.starts_with(b"AutoCAD Binary DXF") {
        Ok("dxf")
    } else {
        Err(TaskError::fatal("UnsupportedFormat", "the file is not a DXF drawing"))
    }
}
