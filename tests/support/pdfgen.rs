//! A small PDF writer for tests and benches: pages of a chosen size with
//! text (Helvetica), shapes, an optional photo-like image, and link
//! annotations (URIs and jumps to other pages). Only what the preview tests
//! need, written out by hand so every byte is known.

use std::fmt::Write as _;
use std::io::Write as _;

pub enum LinkTarget {
    Uri(String),
    /// Page index from 0.
    Page(usize),
}

pub struct Link {
    /// PDF coordinates (origin bottom-left): x0, y0, x1, y1.
    pub rect: [f32; 4],
    pub target: LinkTarget,
}

#[derive(Default)]
pub struct Page {
    pub width: f32,
    pub height: f32,
    /// Content stream operators.
    pub content: String,
    pub links: Vec<Link>,
    /// An RGB image drawn over the page's upper half: (width, height, pixels).
    pub image: Option<(u32, u32, Vec<u8>)>,
    /// A content stream that is given raw (already encoded) with this filter.
    pub raw_content: Option<(Vec<u8>, &'static str)>,
}

impl Page {
    pub fn new(width: f32, height: f32) -> Self {
        Page {
            width,
            height,
            ..Page::default()
        }
    }

    /// Lines of text from the top, at 12 pt.
    pub fn with_text(mut self, lines: &[&str]) -> Self {
        let mut y = self.height - 72.0;
        for line in lines {
            let escaped = line.replace('\\', "\\\\").replace('(', "\\(").replace(')', "\\)");
            let _ = writeln!(self.content, "BT /F1 12 Tf 72 {y} Td ({escaped}) Tj ET");
            y -= 16.0;
        }
        self
    }

    /// A filled rectangle in an RGB colour (0–1).
    pub fn with_rect(mut self, rect: [f32; 4], rgb: [f32; 3]) -> Self {
        let [x, y, w, h] = rect;
        let _ = writeln!(self.content, "{} {} {} rg {x} {y} {w} {h} re f", rgb[0], rgb[1], rgb[2]);
        self
    }

    pub fn with_link(mut self, rect: [f32; 4], target: LinkTarget) -> Self {
        self.links.push(Link { rect, target });
        self
    }

    /// A smooth, noisy colour picture: what JPEG wins on.
    pub fn with_photo(mut self, width: u32, height: u32) -> Self {
        let mut pixels = Vec::with_capacity((width * height * 3) as usize);
        let mut seed = 0x2545_f491_u32;
        for y in 0..height {
            for x in 0..width {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let noise = (seed % 48) as u8;
                pixels.push(((x * 255 / width.max(1)) as u8).saturating_add(noise / 2));
                pixels.push(((y * 255 / height.max(1)) as u8).saturating_add(noise / 3));
                pixels.push(128u8.saturating_add(noise));
            }
        }
        self.image = Some((width, height, pixels));
        self
    }
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// A stream that inflates to `inflated` NUL bytes (whitespace to a PDF
/// parser): a decompression bomb of `inflated / ~1000` bytes on disk.
pub fn zero_bomb(inflated: usize) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    let mut left = inflated;
    while left > 0 {
        let n = left.min(chunk.len());
        let _ = encoder.write_all(&chunk[..n]);
        left -= n;
    }
    encoder.finish().unwrap_or_default()
}

/// The whole file.
pub fn build(pages: &[Page]) -> Vec<u8> {
    // Objects: 1 catalog, 2 page tree, 3 font, then per page: page, content,
    // and its image and link annotations.
    let mut objects: Vec<Vec<u8>> = vec![Vec::new(), Vec::new(), Vec::new()];
    objects[2] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec();
    let mut page_ids = Vec::new();
    // Page object ids are fixed first so links can name later pages.
    let mut next = 4;
    let mut layout = Vec::new();
    for page in pages {
        let page_id = next;
        let content_id = next + 1;
        let image_id = page.image.as_ref().map(|_| next + 2);
        next += 2 + usize::from(image_id.is_some());
        let annot_ids: Vec<usize> = (0..page.links.len()).map(|i| next + i).collect();
        next += page.links.len();
        page_ids.push(page_id);
        layout.push((page_id, content_id, image_id, annot_ids));
    }
    objects.resize(next - 1, Vec::new());
    for (page, (page_id, content_id, image_id, annot_ids)) in pages.iter().zip(&layout) {
        let mut resources = String::from("/Font << /F1 3 0 R >>");
        let mut content = page.content.clone().into_bytes();
        if let (Some(id), Some((w, h, pixels))) = (image_id, &page.image) {
            let _ = write!(resources, " /XObject << /Im1 {id} 0 R >>");
            let draw = format!(
                "q {} 0 0 {} 0 {} cm /Im1 Do Q\n",
                page.width,
                page.height / 2.0,
                page.height / 2.0
            );
            content.splice(0..0, draw.into_bytes());
            let data = deflate(pixels);
            let mut object = format!(
                "<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode /Length {} >>\nstream\n",
                data.len()
            )
            .into_bytes();
            object.extend_from_slice(&data);
            object.extend_from_slice(b"\nendstream");
            objects[id - 1] = object;
        }
        let annots = if annot_ids.is_empty() {
            String::new()
        } else {
            let refs: Vec<String> = annot_ids.iter().map(|id| format!("{id} 0 R")).collect();
            format!(" /Annots [{}]", refs.join(" "))
        };
        objects[page_id - 1] = format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {} {}] /Resources << {resources} >> /Contents {content_id} 0 R{annots} >>",
            page.width, page.height
        )
        .into_bytes();
        let (stream, filter) = match &page.raw_content {
            Some((bytes, filter)) => (bytes.clone(), format!(" /Filter /{filter}")),
            None => (content, String::new()),
        };
        let mut object = format!("<< /Length {}{filter} >>\nstream\n", stream.len()).into_bytes();
        object.extend_from_slice(&stream);
        object.extend_from_slice(b"\nendstream");
        objects[content_id - 1] = object;
        for (link, id) in page.links.iter().zip(annot_ids) {
            let [x0, y0, x1, y1] = link.rect;
            let action = match &link.target {
                LinkTarget::Uri(uri) => format!("/A << /S /URI /URI ({uri}) >>"),
                LinkTarget::Page(index) => format!("/Dest [{} 0 R /Fit]", page_ids[*index]),
            };
            objects[id - 1] =
                format!("<< /Type /Annot /Subtype /Link /Rect [{x0} {y0} {x1} {y1}] /Border [0 0 0] {action} >>")
                    .into_bytes();
        }
    }
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>".to_vec();
    let kids: Vec<String> = page_ids.iter().map(|id| format!("{id} 0 R")).collect();
    objects[1] = format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), pages.len()).into_bytes();

    let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (index, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", index + 1).as_bytes());
        out.extend_from_slice(object);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for offset in offsets {
        let _ = writeln!(table, "{offset:010} 00000 n ");
    }
    let _ = write!(
        table,
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    );
    out.extend_from_slice(table.as_bytes());
    out
}

/// A document like the ones people share: `pages` letter pages of text
/// with headings and coloured shapes, every fifth with a photo.
pub fn sample_document(pages: usize) -> Vec<u8> {
    let body: Vec<String> = (0..40)
        .map(|i| format!("Line {i}: the quarterly figures and the plan for the next round, in plain words."))
        .collect();
    let lines: Vec<&str> = body.iter().map(String::as_str).collect();
    let document: Vec<Page> = (0..pages)
        .map(|i| {
            let page = Page::new(612.0, 792.0)
                .with_rect([72.0, 740.0, 468.0, 4.0], [0.1, 0.3, 0.8])
                .with_text(&lines);
            if i % 5 == 4 { page.with_photo(600, 400) } else { page }
        })
        .collect();
    build(&document)
}
