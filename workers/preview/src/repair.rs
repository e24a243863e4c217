//! The repair pass: a document pdfium cannot open, or a page it cannot
//! load or draw, is not refused at once. A repaired copy is made (MuPDF's
//! `mutool clean`, then qpdf) by a contained child process held as a
//! renderer is, and that copy is rendered, with pages still unloadable
//! drawn blank as MuPDF draws them. Only what neither pdfium nor a repair
//! can read ends the run, with the reason.

use std::path::{Path, PathBuf};

use kiln_core::task::{TaskContext, TaskError};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::PageRenderer;
use crate::protocol::PageReport;
use crate::renderer::RepairTool;

/// The pages of a document, and how they were had.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub pages: Vec<PageReport>,
    /// Set when the pages come from a repaired copy.
    pub repair: Option<Repair>,
}

/// Which tool repaired the document, and what was wrong with it.
#[derive(Debug, Clone)]
pub struct Repair {
    pub tool: RepairTool,
    /// The failure of the damaged file, as pdfium met it.
    pub reason: String,
}

impl Rendered {
    /// What the run's output says of a repair, of pages drawn blank and of
    /// pages drawn at half scale; `None` when the document needed none.
    pub fn repair_report(&self) -> Option<Value> {
        let numbers = |keep: fn(&PageReport) -> bool| -> Vec<u32> {
            self.pages.iter().filter(|p| keep(p)).map(|p| p.page_number).collect()
        };
        let blank = numbers(|p| p.blank);
        let half_scale = numbers(|p| p.half_scale);
        if self.repair.is_none() && half_scale.is_empty() {
            return None;
        }
        let mut report = json!({ "blankPages": blank, "halfScalePages": half_scale });
        if let Some(repair) = &self.repair {
            report["tool"] = json!(repair.tool.describe());
            report["reason"] = json!(repair.reason);
            report["pages"] = json!(numbers(|_| true));
        }
        Some(report)
    }
}

impl PageRenderer {
    /// Writes a repaired copy of `input` with `tool` into `dir`; answers
    /// its path, or why there is none.
    pub(crate) async fn repair_copy(
        &self,
        ctx: &TaskContext,
        input: &Path,
        library: &Path,
        dir: &Path,
        tool: RepairTool,
    ) -> Result<PathBuf, String> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("cannot make its folder: {e}"))?;
        let output = dir.join(tool.output_name());
        let mut child = self
            .renderer_command(input, library, dir)
            .arg("--repair-with")
            .arg(tool.name())
            .spawn()
            .map_err(|e| format!("cannot start: {e}"))?;
        let mut stderr = child.stderr.take();
        let timeout = self.config.page_timeout;
        let status = tokio::select! {
            status = tokio::time::timeout(timeout, child.wait()) => match status {
                Ok(Ok(status)) => status,
                Ok(Err(e)) => return Err(format!("cannot wait for it: {e}")),
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(format!("stopped after {} s (KILN_PREVIEW_PAGE_TIMEOUT)", timeout.as_secs_f32()));
                }
            },
            () = ctx.cancel.cancelled() => {
                let _ = child.kill().await;
                return Err("the run was stopped".to_owned());
            }
        };
        let mut said = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.take(4096).read_to_string(&mut said).await;
        }
        let last_line = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        if !status.success() {
            return Err(if last_line.is_empty() {
                format!("it ended with {status}")
            } else {
                format!("it ended with {status}: {last_line}")
            });
        }
        match tokio::fs::metadata(&output).await {
            Ok(meta) if meta.len() > 0 => Ok(output),
            _ => Err("it wrote no copy".to_owned()),
        }
    }
}

/// The error a document ends with when no repair helped: the envelope's
/// diagnosis when there is one (not a PDF, cut short), else pdfium's, with
/// what each repair said.
pub(crate) fn unrepaired(original: TaskError, diagnosis: Option<TaskError>, tried: &[String]) -> TaskError {
    let base = diagnosis.unwrap_or(original);
    if tried.is_empty() {
        return base;
    }
    TaskError::fatal(
        base.name(),
        format!("{}; no repair could read it ({})", base.message(), tried.join("; ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::ImageFormat;

    fn page(number: u32, blank: bool, half_scale: bool) -> PageReport {
        PageReport {
            page_number: number,
            file: format!("page-{number}.png"),
            format: ImageFormat::Png,
            width: 10,
            height: 10,
            original_width: 612.0,
            original_height: 792.0,
            scale_factor: 1.0,
            png_size: None,
            jpeg_size: None,
            links: Vec::new(),
            blank,
            half_scale,
        }
    }

    #[test]
    fn a_clean_document_reports_no_repair() {
        let rendered = Rendered {
            pages: vec![page(1, false, false)],
            repair: None,
        };
        assert_eq!(rendered.repair_report(), None);
    }

    #[test]
    fn a_repair_names_its_tool_reason_and_pages() {
        let rendered = Rendered {
            pages: vec![page(1, true, false), page(2, false, true)],
            repair: Some(Repair {
                tool: RepairTool::Mutool,
                reason: "page 1 cannot be read".into(),
            }),
        };
        assert_eq!(
            rendered.repair_report(),
            Some(json!({
                "tool": "mutool clean (MuPDF)",
                "reason": "page 1 cannot be read",
                "pages": [1, 2],
                "blankPages": [1],
                "halfScalePages": [2],
            }))
        );
    }

    #[test]
    fn without_repairs_the_error_keeps_its_name_and_adds_what_each_tool_said() {
        let error = unrepaired(
            TaskError::fatal("CorruptPdf", "pdfium cannot read it"),
            Some(TaskError::fatal("TruncatedPdf", "no %%EOF")),
            &["mutool: it ended with exit status: 1".into()],
        );
        assert_eq!(error.name(), "TruncatedPdf");
        assert!(
            error.message().starts_with("no %%EOF; no repair could read it (mutool"),
            "{error}"
        );
    }
}
