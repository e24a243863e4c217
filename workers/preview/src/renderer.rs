//! The renderer: the part of the preview pipeline that touches the
//! untrusted PDF. It runs in a child process of its own (`kiln render-pdf`),
//! so a file that crashes pdfium or makes it spin kills only that process;
//! the worker bounds its memory (an address-space limit set here, before
//! pdfium is loaded) and its time (the worker kills it).
//!
//! It renders the pages of its shard (page indexes `i` with
//! `i % shards == shard`), or, given a claims folder, whichever page no
//! other renderer of the document has taken yet; one at a time, it writes
//! each image into the output folder and reports it on standard output
//! ([`crate::protocol`]). It knows nothing of runs, storage or the network.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pdfium_render::prelude::*;

use crate::encode::encode_page;
use crate::layout::LayoutRule;
use crate::protocol::{Message, PageLink, PageReport, failure};

/// A renderer's command line.
#[derive(Debug, Clone)]
pub struct RendererArgs {
    pub input: PathBuf,
    pub output_dir: PathBuf,
    pub shard: u32,
    pub shards: u32,
    /// The folder the renderers of a document take pages through, one
    /// claim file a page; `None` renders the fixed shard.
    pub claims: Option<PathBuf>,
    /// The address-space limit for this process, in bytes.
    pub memory_limit: Option<u64>,
    pub library: PathBuf,
    /// Documents with more pages are refused.
    pub max_pages: u32,
    /// How large each page's image is, and how precisely links are told.
    pub layout: LayoutRule,
    /// Set for a repaired copy: a page that still cannot be loaded is drawn
    /// blank, as MuPDF draws it, instead of failing the document.
    pub lenient: bool,
}

/// MuPDF's size for a page it cannot load: US Letter, in points.
const BLANK_PAGE_POINTS: (f32, f32) = (612.0, 792.0);

/// A reason the document cannot be rendered.
#[derive(Debug)]
struct Failure {
    name: &'static str,
    message: String,
}

fn fail(name: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        name,
        message: message.into(),
    }
}

/// Exit codes the worker reads.
pub const EXIT_FAILED: u8 = 3;

/// A tool that writes a repaired copy of a damaged PDF, tried in this
/// order: MuPDF's (what Supermark rendered with, and what repairs most),
/// then qpdf's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairTool {
    Mutool,
    Qpdf,
}

impl RepairTool {
    pub const ALL: [RepairTool; 2] = [RepairTool::Mutool, RepairTool::Qpdf];

    pub fn name(self) -> &'static str {
        match self {
            RepairTool::Mutool => "mutool",
            RepairTool::Qpdf => "qpdf",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.name() == name)
    }

    /// What the run's output says repaired the file.
    pub fn describe(self) -> &'static str {
        match self {
            RepairTool::Mutool => "mutool clean (MuPDF)",
            RepairTool::Qpdf => "qpdf",
        }
    }

    /// The repaired copy's name in the output folder.
    pub fn output_name(self) -> String {
        format!("repaired-{}.pdf", self.name())
    }
}

/// `kiln render-pdf --repair-with TOOL`: limits this process's address
/// space as a renderer does, then becomes the tool (exec), so the repair of
/// an untrusted file is held as a renderer is: the same memory limit, no
/// new privileges, killed with its worker and by the page timeout.
pub fn repair(tool: RepairTool, input: &Path, output_dir: &Path, memory_limit: Option<u64>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    if let Some(limit) = memory_limit
        && let Err(error) = rlimit::setrlimit(rlimit::Resource::AS, limit, limit)
    {
        eprintln!("cannot set the memory limit: {error}");
        return ExitCode::from(EXIT_FAILED);
    }
    let output = output_dir.join(tool.output_name());
    let mut command = match tool {
        RepairTool::Mutool => {
            let mut command = std::process::Command::new("mutool");
            command.arg("clean").arg(input).arg(&output);
            command
        }
        RepairTool::Qpdf => {
            let mut command = std::process::Command::new("qpdf");
            // qpdf says "succeeded with warnings" (exit 3) for every file
            // it had to repair.
            command.arg("--warning-exit-0").arg("--").arg(input).arg(&output);
            command
        }
    };
    let error = command.exec();
    eprintln!("cannot start {}: {error}", tool.name());
    ExitCode::from(127)
}

/// Renders `args`' shard; the exit code says how it ended.
pub fn run(args: &RendererArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match render(args, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let message = Message::Failed {
                name: failure.name.to_owned(),
                message: failure.message,
            };
            let _ = emit(&mut out, &message);
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn emit(out: &mut impl Write, message: &Message) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

fn lost_stdout(error: std::io::Error) -> Failure {
    fail(
        failure::RENDERER_UNAVAILABLE,
        format!("cannot report to the worker: {error}"),
    )
}

fn render(args: &RendererArgs, out: &mut impl Write) -> Result<(), Failure> {
    if let Some(limit) = args.memory_limit {
        rlimit::setrlimit(rlimit::Resource::AS, limit, limit).map_err(|e| {
            fail(
                failure::RENDERER_UNAVAILABLE,
                format!("cannot set the memory limit: {e}"),
            )
        })?;
    }
    let bindings = Pdfium::bind_to_library(&args.library).map_err(|e| {
        fail(
            failure::RENDERER_UNAVAILABLE,
            format!("cannot load {}: {e}", args.library.display()),
        )
    })?;
    let pdfium = Pdfium::new(bindings);
    let document = open(&pdfium, &args.input)?;
    let pages = document.pages();
    let page_count = u32::try_from(pages.len()).unwrap_or(0);
    if page_count == 0 {
        return Err(fail(failure::EMPTY, "the PDF has no pages"));
    }
    if page_count > args.max_pages {
        return Err(fail(
            failure::TOO_MANY_PAGES,
            format!(
                "the PDF has {page_count} pages; at most {} are rendered",
                args.max_pages
            ),
        ));
    }
    emit(out, &Message::Document { page_count }).map_err(lost_stdout)?;

    let mut bitmap_bytes: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    // With claims, renderer k starts at page k and then takes whatever is
    // left after its last page; renderer 0 looks at every page, so none is
    // missed.
    let mut next = args.shard;
    loop {
        let index = match &args.claims {
            Some(claims) => match claim_next(claims, next, page_count)? {
                Some(claimed) => claimed,
                None => break,
            },
            None if next < page_count => next,
            None => break,
        };
        next = if args.claims.is_some() {
            index + 1
        } else {
            index + args.shards.max(1)
        };
        let report = render_page(&document, index, args, &mut bitmap_bytes, &mut scratch)?;
        emit(out, &Message::Page(report)).map_err(lost_stdout)?;
    }
    Ok(())
}

/// The first page from `from` on that no renderer has claimed, claimed
/// now: creating a file that must not exist is atomic, so each page goes to
/// exactly one renderer. `None` once every page is taken.
fn claim_next(claims: &Path, from: u32, page_count: u32) -> Result<Option<u32>, Failure> {
    for index in from..page_count {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(claims.join(index.to_string()))
        {
            Ok(_) => return Ok(Some(index)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(fail(
                    failure::RENDERER_UNAVAILABLE,
                    format!("cannot claim a page in {}: {e}", claims.display()),
                ));
            }
        }
    }
    Ok(None)
}

fn open<'a>(pdfium: &'a Pdfium, input: &Path) -> Result<PdfDocument<'a>, Failure> {
    pdfium.load_pdf_from_file(input, None).map_err(|error| match error {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => {
            fail(failure::ENCRYPTED, "the PDF is protected by a password")
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => {
            fail(failure::ENCRYPTED, "the PDF uses an encryption pdfium does not support")
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::FormatError) => diagnose_unreadable(input),
        PdfiumError::IoError(e) => fail(
            failure::RENDERER_UNAVAILABLE,
            format!("cannot read the downloaded file: {e}"),
        ),
        other => fail(failure::CORRUPT, format!("pdfium cannot open the file: {other}")),
    })
}

/// pdfium refuses a well-formed PDF with no pages as it refuses a damaged
/// one; lopdf tells the two apart.
fn diagnose_unreadable(input: &Path) -> Failure {
    match lopdf::Document::load(input) {
        Ok(document) if document.get_pages().is_empty() => fail(failure::EMPTY, "the PDF has no pages"),
        _ => fail(
            failure::CORRUPT,
            "the file is damaged: pdfium cannot read its structure",
        ),
    }
}

fn render_page(
    document: &PdfDocument<'_>,
    index: u32,
    args: &RendererArgs,
    bitmap_bytes: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<PageReport, Failure> {
    let page_number = index + 1;
    let page_index = i32::try_from(index).map_err(|_| fail(failure::TOO_MANY_PAGES, "page index out of range"))?;
    let page = match document.pages().get(page_index) {
        Ok(page) => page,
        Err(_) if args.lenient => return blank_page(page_number, args, bitmap_bytes, scratch),
        Err(e) => {
            return Err(fail(
                failure::CORRUPT,
                format!("page {page_number} cannot be read: {e}"),
            ));
        }
    };
    let (width_pt, height_pt) = (page.width().value, page.height().value);
    let size = args
        .layout
        .layout(width_pt, height_pt)
        .map_err(|e| fail(failure::ABSURD_PAGE_SIZE, format!("page {page_number}: {e}")))?;
    // A page that cannot be drawn at full scale (no room for its bitmap
    // under the memory limit, or pdfium refuses) is drawn at half, as
    // Supermark does.
    let (size, half_scale, encoded) = match draw(Some(&page), size, page_number, bitmap_bytes, scratch) {
        Ok(encoded) => (size, false, encoded),
        Err(full) => {
            let half = size.halved();
            match draw(Some(&page), half, page_number, bitmap_bytes, scratch) {
                Ok(encoded) => (half, true, encoded),
                Err(_) => return Err(full),
            }
        }
    };

    Ok(PageReport {
        links: links(document, &page, height_pt, args.layout),
        half_scale,
        ..write_page(args, page_number, (width_pt, height_pt), size, &encoded)?
    })
}

/// Writes a drawn page's image into the output folder and reports it
/// (without links, neither blank nor at half scale).
fn write_page(
    args: &RendererArgs,
    page_number: u32,
    (original_width, original_height): (f32, f32),
    size: crate::layout::PageLayout,
    encoded: &crate::encode::EncodedPage,
) -> Result<PageReport, Failure> {
    let file = format!("page-{page_number}.{}", encoded.format.extension());
    write_atomically(&args.output_dir, &file, &encoded.bytes)?;
    Ok(PageReport {
        page_number,
        file,
        format: encoded.format,
        width: size.width,
        height: size.height,
        original_width,
        original_height,
        scale_factor: size.exact_scale,
        png_size: encoded.png_size,
        jpeg_size: Some(encoded.jpeg_size),
        links: Vec::new(),
        blank: false,
        half_scale: false,
    })
}

/// A page that cannot be loaded, drawn white at MuPDF's default size.
fn blank_page(
    page_number: u32,
    args: &RendererArgs,
    bitmap_bytes: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<PageReport, Failure> {
    let (width_pt, height_pt) = BLANK_PAGE_POINTS;
    let size = args
        .layout
        .layout(width_pt, height_pt)
        .map_err(|e| fail(failure::ABSURD_PAGE_SIZE, format!("page {page_number}: {e}")))?;
    let encoded = draw(None, size, page_number, bitmap_bytes, scratch)?;
    Ok(PageReport {
        blank: true,
        ..write_page(args, page_number, (width_pt, height_pt), size, &encoded)?
    })
}

/// Draws `page` (white when there is none) at `size` and encodes it.
fn draw(
    page: Option<&PdfPage<'_>>,
    size: crate::layout::PageLayout,
    page_number: u32,
    bitmap_bytes: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<crate::encode::EncodedPage, Failure> {
    let (w, h) = (size.width as i32, size.height as i32);
    let needed = size.width as usize * size.height as usize * 4;
    bitmap_bytes.truncate(needed);
    bitmap_bytes
        .try_reserve_exact(needed - bitmap_bytes.len())
        .map_err(|e| {
            fail(
                failure::RENDER_FAILED,
                format!("page {page_number}: no room for its bitmap: {e}"),
            )
        })?;
    bitmap_bytes.resize(needed, 0);
    if page.is_none() {
        bitmap_bytes.fill(0xff);
    }
    if let Some(page) = page {
        let mut bitmap = PdfBitmap::from_bytes(w, h, PdfBitmapFormat::BGRA, bitmap_bytes)
            .map_err(|e| fail(failure::RENDER_FAILED, format!("page {page_number}: no bitmap: {e}")))?;
        let config = PdfRenderConfig::new()
            .set_target_size(w, h)
            .set_clear_color(PdfColor::WHITE)
            .render_form_data(true)
            .render_annotations(true);
        page.render_into_bitmap_with_config(&mut bitmap, &config).map_err(|e| {
            fail(
                failure::RENDER_FAILED,
                format!("page {page_number} cannot be drawn: {e}"),
            )
        })?;
    }
    encode_page(bitmap_bytes, size.width, size.height, scratch)
        .map_err(|e| fail(failure::RENDER_FAILED, format!("page {page_number}: {e}")))
}

/// Written under a temporary name and renamed, so the worker never reads a
/// half-written image.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Failure> {
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, bytes)
        .and_then(|()| std::fs::rename(&partial, dir.join(name)))
        .map_err(|e| fail(failure::RENDERER_UNAVAILABLE, format!("cannot write {name}: {e}")))
}

/// A page's links, with bounds in points from its top-left corner: to
/// hundredths for kiln, as the single-precision values widened to double
/// that MuPDF's `getBounds()` gives for Supermark (`72.0999984741211`).
fn links(document: &PdfDocument<'_>, page: &PdfPage<'_>, page_height: f32, rule: LayoutRule) -> Vec<PageLink> {
    let page_count = document.pages().len();
    let mut found = Vec::new();
    for link in page.links().iter() {
        let Ok(rect) = link.rect() else { continue };
        let bounds = [
            rect.left().value,
            page_height - rect.top().value,
            rect.right().value,
            page_height - rect.bottom().value,
        ];
        let coords = match rule {
            LayoutRule::Kiln => bounds.map(|v| round2(v).to_string()).join(","),
            LayoutRule::Supermark => bounds.map(|v| f64::from(v).to_string()).join(","),
        };
        let action = link.action();
        if let Some(uri) = action
            .as_ref()
            .and_then(|a| a.as_uri_action())
            .and_then(|a| a.uri().ok())
        {
            found.push(PageLink {
                href: uri,
                coords,
                is_internal: false,
                target_page: None,
            });
            continue;
        }
        let destination = link.destination().or_else(|| {
            action
                .as_ref()
                .and_then(|a| a.as_local_destination_action())
                .and_then(|a| a.destination().ok())
        });
        let target = destination
            .and_then(|d| d.page_index().ok())
            .filter(|i| (0..page_count).contains(i));
        if let Some(target) = target {
            let target_page = (target + 1) as u32;
            found.push(PageLink {
                href: format!("#page={target_page}"),
                coords,
                is_internal: true,
                target_page: Some(target_page),
            });
        }
    }
    found
}

fn round2(value: f32) -> f32 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renderers_taking_pages_through_claims_take_each_page_once() {
        let claims = std::env::temp_dir().join(format!("kiln-claims-{}", std::process::id()));
        std::fs::create_dir_all(&claims).expect("claims folder");
        // Two renderers alternating, the second starting at page 1, as
        // shards 0 and 1 start: between them every page, none twice.
        let mut taken = Vec::new();
        let mut next = [0u32, 1u32];
        let mut finished = [false, false];
        while !finished.iter().all(|f| *f) {
            for renderer in 0..2 {
                if finished[renderer] {
                    continue;
                }
                match claim_next(&claims, next[renderer], 7).expect("claim") {
                    Some(page) => {
                        taken.push(page);
                        next[renderer] = page + 1;
                    }
                    None => finished[renderer] = true,
                }
            }
        }
        taken.sort_unstable();
        assert_eq!(taken, (0..7).collect::<Vec<_>>());
        assert!(
            claim_next(&claims.join("missing"), 0, 7).is_err(),
            "an unusable folder is an error"
        );
        std::fs::remove_dir_all(&claims).expect("clean up");
    }
}
