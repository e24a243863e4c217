//! Office documents to PDF: `kiln.office.to-pdf` converts docx, doc, pptx,
//! ppt, xlsx, xls, odt, odp, ods, rtf, txt, csv and html, and png, jpeg and
//! webp images (one page each), with a pool of warm LibreOffice instances
//! ([`pool`]), as Supermark's `convert-files-to-pdf` job does with a
//! Gotenberg-style service.
//!
//! The source is downloaded into a private folder under a name with the
//! extension of the format it really is (checked from its first bytes, so a
//! renamed file is refused or converted as what it is), converted, checked
//! with lopdf (it must be a PDF with pages) and uploaded to `output.key`.
//! Microsoft Office files are read with the filter LibreOffice's type
//! detection picks, as its command line would, but only from the filters
//! of the family the name claims ([`format::Family`]).
//! This crate knows its payload, its output and the [`ObjectStore`]
//! interface; it does not know Postgres, Redis or HTTP routes.
//!
//! [`ObjectStore`]: kiln_storage::ObjectStore

pub mod format;
pub mod pool;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler, UrlFetcher};
use kiln_storage::{Storage, StorageScopes};
use kiln_worker_kit::{Source, WorkDir, download_source, invalid, parse_payload, resolve_source, storage_failure};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::format::Import;
use crate::pool::{ConvertError, Fallback, OfficePool};

/// `kiln.office.to-pdf`.
pub struct OfficeToPdf {
    pub storage: Storage,
    pub fetcher: Arc<dyn UrlFetcher>,
    pub pool: Arc<OfficePool>,
    pub work_dir: PathBuf,
    pub max_source_bytes: u64,
    /// Each environment's part of the storage: a payload's keys are
    /// resolved inside the run's.
    pub scopes: StorageScopes,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConvertPayload {
    source: Source,
    output: OutputSpec,
    /// A file name, for its extension, when the source key or URL has none.
    file_name: Option<String>,
    /// When given, page previews of the PDF are made by a child run of
    /// `kiln.pdf.preview`.
    preview: Option<PreviewSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PreviewSpec {
    output_prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSpec {
    key: String,
}

impl TaskHandler for OfficeToPdf {
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture {
        let storage = Arc::clone(&self.storage);
        let fetcher = Arc::clone(&self.fetcher);
        let pool = Arc::clone(&self.pool);
        let work_dir = self.work_dir.clone();
        let limit = self.max_source_bytes;
        let scopes = self.scopes.clone();
        Box::pin(async move {
            let payload: ConvertPayload = parse_payload("kiln.office.to-pdf", payload)?;
            let prod = ctx.environment == kiln_core::auth::Environment::Prod;
            let output = scopes
                .resolve(prod, &payload.output.key)
                .map_err(|e| invalid(format!("output.key: {e}")))?;
            let named = payload
                .file_name
                .clone()
                .unwrap_or_else(|| payload.source.name().to_owned());
            let source = resolve_source(&scopes, prod, payload.source)?;
            let work = WorkDir::create(&work_dir, &ctx, "convert").await?;
            let download = work.join("download");
            ctx.metadata.progress(0, "downloading the document");
            download_source(storage.as_ref(), fetcher.as_ref(), &source, &download, limit).await?;
            ctx.metadata.progress(10, "converting to PDF");
            let (kind, converted) = convert_download(&pool, work.path(), &download, &named).await?;
            let (pdf, pages) = (&converted.pdf, converted.pages);
            let file = tokio::fs::File::open(pdf)
                .await
                .map_err(|e| TaskError::retryable("ConverterUnavailable", format!("read the PDF: {e}")))?;
            let size = storage
                .put(&output, Box::pin(file), "application/pdf")
                .await
                .map_err(|e| storage_failure(&e))?;
            tracing::info!(key = %output, pages, size, format = kind.extension(), "converted to PDF");
            let local_output = payload.output.key.as_str();
            let mut answer =
                json!({ "key": local_output, "size": size, "numPages": pages, "sourceFormat": kind.extension() });
            if let Some(filter) = &converted.import_filter {
                answer["importFilter"] = json!(filter);
            }
            if let Some(fallback) = converted.fallback {
                answer["fallback"] = json!(fallback.name());
            }
            if let Some(preview) = payload.preview {
                let child = ctx
                    .children
                    .trigger(
                        "kiln.pdf.preview",
                        json!({ "source": { "key": local_output }, "outputPrefix": preview.output_prefix }),
                    )
                    .await?;
                answer["previewRunId"] = json!(child);
            }
            ctx.metadata.progress(100, format!("converted: {pages} pages"));
            Ok(answer)
        })
    }
}

/// A converted document.
#[derive(Debug)]
pub struct Converted {
    /// The PDF, in the folder the download was in.
    pub pdf: PathBuf,
    pub pages: usize,
    /// The LibreOffice filter that read the document, when kiln named or
    /// checked it.
    pub import_filter: Option<String>,
    /// Set when the warm instance crashed and a fallback converted it.
    pub fallback: Option<Fallback>,
}

/// Converts the downloaded file at `download`, which its owner named
/// `file_name`, after checking that its contents are what the name says:
/// a renamed file is refused or converted as what it is. The PDF is
/// written beside the download.
pub async fn convert_download(
    pool: &OfficePool,
    dir: &Path,
    download: &Path,
    file_name: &str,
) -> Result<(format::Kind, Converted), TaskError> {
    let head = read_head(download).await?;
    let kind = format::detect(file_name, &head).map_err(|e| TaskError::fatal("UnsupportedFormat", e.to_string()))?;
    let converted = convert_as(pool, dir, download, kind.extension(), kind.import()).await?;
    Ok((kind, converted))
}

/// Converts the download as a `.<extension>` file read as `import` says;
/// for formats whose contents the caller checked. Answers the PDF and its
/// page count.
pub async fn convert_as(
    pool: &OfficePool,
    dir: &Path,
    download: &Path,
    extension: &str,
    import: Import,
) -> Result<Converted, TaskError> {
    let input = dir.join(format!("source.{extension}"));
    tokio::fs::rename(download, &input)
        .await
        .map_err(|e| TaskError::retryable("ConverterUnavailable", format!("rename: {e}")))?;
    let filter = match import {
        Import::Filter(name, options) => Some((name.to_owned(), options)),
        Import::Any => None,
        Import::Detect(family) => Some((detected_filter(pool, &input, family).await?, "")),
    };
    let pdf = dir.join("source.pdf");
    let fallback = pool
        .convert(
            &input,
            &pdf,
            filter.as_ref().map(|(name, options)| (name.as_str(), *options)),
        )
        .await
        .map_err(task_error)?;
    if let Some(fallback) = fallback {
        tracing::warn!(fallback = fallback.name(), "converted after LibreOffice crashed");
    }
    let pages = count_pages(&pdf).await?;
    Ok(Converted {
        pdf,
        pages,
        import_filter: filter.map(|(name, _)| name),
        fallback,
    })
}

/// The filter LibreOffice's detection picks for `input`, which must be one
/// of `family`'s: contents of another family are refused, as is an OOXML
/// package in an OLE2 container (encrypted with a password). A zip or OLE2
/// file in which detection finds no format, or only text, is a damaged
/// document rather than another kind of file.
async fn detected_filter(pool: &OfficePool, input: &Path, family: &format::Family) -> Result<String, TaskError> {
    let filter = pool.detect(input).await.map_err(task_error)?;
    if family.admits(&filter) {
        if family.is_ooxml(&filter) && format::is_ole2(&read_head(input).await?) {
            return Err(TaskError::fatal(
                "EncryptedDocument",
                format!("the file is {} protected by a password", family.name),
            ));
        }
        return Ok(filter);
    }
    let unreadable = filter.is_empty() || filter.starts_with("Text");
    if unreadable && format::is_package(&read_head(input).await?) {
        return Err(TaskError::fatal(
            "ConversionFailed",
            format!(
                "the file looks like {} but LibreOffice cannot read it (damaged or truncated)",
                family.name
            ),
        ));
    }
    Err(TaskError::fatal(
        "UnsupportedFormat",
        if filter.is_empty() {
            format!(
                "the file's contents are not {} (LibreOffice recognises no format in them)",
                family.name
            )
        } else {
            format!(
                "the file's contents are not {} (LibreOffice reads them as \"{filter}\")",
                family.name
            )
        },
    ))
}

fn task_error(error: ConvertError) -> TaskError {
    match error {
        ConvertError::Rejected(reason) => TaskError::fatal("ConversionFailed", rejected_reason(&reason)),
        ConvertError::TimedOut(_) => TaskError::fatal("ConversionTimeout", error.to_string()),
        ConvertError::Crashed(_) => TaskError::fatal("ConverterCrashed", error.to_string()),
        ConvertError::Unavailable(_) => TaskError::retryable("ConverterUnavailable", error.to_string()),
    }
}

/// The first bytes of a file, to tell its format by.
pub async fn read_head(path: &Path) -> Result<Vec<u8>, TaskError> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| TaskError::retryable("ConverterUnavailable", format!("read the download: {e}")))?;
    let mut head = vec![0; 8192];
    let mut filled = 0;
    while filled < head.len() {
        let n = file
            .read(&mut head[filled..])
            .await
            .map_err(|e| TaskError::retryable("ConverterUnavailable", format!("read the download: {e}")))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    Ok(head)
}

fn rejected_reason(reason: &str) -> String {
    if reason.trim().is_empty() {
        "LibreOffice cannot open the file (damaged, password-protected or not a document)".to_owned()
    } else {
        format!("LibreOffice cannot convert the file: {reason}")
    }
}

/// The converted file's page count; LibreOffice answering "done" without a
/// readable PDF with pages is a failure, not an output.
async fn count_pages(pdf: &std::path::Path) -> Result<usize, TaskError> {
    let path = pdf.to_path_buf();
    let counted = tokio::task::spawn_blocking(move || lopdf::Document::load(&path).map(|d| d.get_pages().len()))
        .await
        .map_err(|e| TaskError::fatal("ConversionFailed", format!("cannot read the PDF: {e}")))?;
    match counted {
        Ok(0) => Err(TaskError::fatal(
            "ConversionFailed",
            "LibreOffice produced a PDF without pages",
        )),
        Ok(pages) => Ok(pages),
        Err(e) => Err(TaskError::fatal(
            "ConversionFailed",
            format!("LibreOffice produced no readable PDF: {e}"),
        )),
    }
}
