//! What a renderer process tells the worker: one JSON object a line on its
//! standard output. The worker trusts nothing else it prints, and a line
//! that does not parse is a broken renderer, not a page.

use serde::{Deserialize, Serialize};

use crate::encode::ImageFormat;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Message {
    /// The document opened: how many pages it has.
    #[serde(rename_all = "camelCase")]
    Document { page_count: u32 },
    /// A page's image is written, as `file` in the output folder.
    Page(PageReport),
    /// The document cannot be rendered; nothing else follows.
    Failed { name: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageReport {
    /// From 1.
    pub page_number: u32,
    /// The image's file name inside the output folder.
    pub file: String,
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    /// The page's size in points.
    pub original_width: f32,
    pub original_height: f32,
    /// Pixels per point, to four decimals.
    pub scale_factor: f64,
    /// `None` when the PNG was abandoned for being larger than the JPEG.
    pub png_size: Option<usize>,
    pub jpeg_size: Option<usize>,
    pub links: Vec<PageLink>,
    /// The page could not be loaded even from the repaired copy, and is
    /// drawn blank at MuPDF's default size, as MuPDF draws it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blank: bool,
    /// Drawing at full scale failed; this image is at half scale.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub half_scale: bool,
}

/// A link on a page. `coords` is `"x0,y0,x1,y1"` in points from the page's
/// top-left corner (MuPDF's `getBounds()`, which Papermark's viewer scales
/// by `width / originalWidth`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageLink {
    pub href: String,
    pub coords: String,
    pub is_internal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_page: Option<u32>,
}

/// The names of the failures a document can cause. They end the run at
/// once: rendering the same file again gives the same answer. Those
/// [`failure::is_repairable`] says may pass first go through a repair of
/// the file.
pub mod failure {
    pub const NOT_A_PDF: &str = "NotAPdf";
    pub const ENCRYPTED: &str = "EncryptedPdf";
    pub const CORRUPT: &str = "CorruptPdf";
    pub const TRUNCATED: &str = "TruncatedPdf";
    pub const EMPTY: &str = "EmptyPdf";
    pub const ABSURD_PAGE_SIZE: &str = "AbsurdPageSize";
    pub const TOO_MANY_PAGES: &str = "TooManyPages";
    pub const RENDER_FAILED: &str = "RenderFailed";
    pub const RENDERER_CRASHED: &str = "RendererCrashed";
    pub const RENDER_TIMEOUT: &str = "RenderTimeout";
    /// Not the document's fault: the machine lacks libpdfium, or disk.
    pub const RENDERER_UNAVAILABLE: &str = "RendererUnavailable";

    /// Failures of the file's structure, which a repaired copy (MuPDF's,
    /// or qpdf's) may not have. A password, a page count, a memory bomb or
    /// a timeout are the file's content, not its damage.
    pub fn is_repairable(name: &str) -> bool {
        matches!(name, CORRUPT | EMPTY | RENDER_FAILED | NOT_A_PDF | TRUNCATED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_as_written() {
        let page = Message::Page(PageReport {
            page_number: 3,
            file: "page-3.png".into(),
            format: ImageFormat::Png,
            width: 1805,
            height: 2336,
            original_width: 612.0,
            original_height: 792.0,
            scale_factor: 2.95,
            png_size: Some(10),
            jpeg_size: None,
            links: vec![PageLink {
                href: "#page=1".into(),
                coords: "72,72,144,90".into(),
                is_internal: true,
                target_page: Some(1),
            }],
            blank: false,
            half_scale: true,
        });
        for message in [page, Message::Document { page_count: 3 }] {
            let line = serde_json::to_string(&message).unwrap_or_default();
            assert_eq!(serde_json::from_str::<Message>(&line).ok(), Some(message));
        }
    }
}
