//! What a file really is, from its first bytes, checked against the name it
//! came with. LibreOffice guesses formats generously; kiln refuses a file
//! whose contents contradict its extension instead of converting whatever
//! LibreOffice makes of it.

/// The formats `kiln.office.to-pdf` converts.
pub const EXTENSIONS: &[&str] = &[
    "docx", "doc", "pptx", "ppt", "xlsx", "xls", "odt", "odp", "ods", "rtf", "txt", "csv", "html", "htm", "png", "jpg",
    "jpeg", "webp",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(&'static str);

impl Kind {
    pub fn extension(self) -> &'static str {
        self.0
    }

    /// LibreOffice's import filter for the format, and its options. Naming
    /// it keeps LibreOffice from reading a damaged file as something else
    /// (a broken spreadsheet as plain text, say). Images are left to its
    /// detection, which only picks among image filters for them.
    pub fn import_filter(self) -> Option<(&'static str, &'static str)> {
        Some(match self.0 {
            "docx" => ("MS Word 2007 XML", ""),
            "doc" => ("MS Word 97", ""),
            "xlsx" => ("Calc MS Excel 2007 XML", ""),
            "xls" => ("MS Excel 97", ""),
            "pptx" => ("Impress MS PowerPoint 2007 XML", ""),
            "ppt" => ("MS PowerPoint 97", ""),
            "odt" => ("writer8", ""),
            "ods" => ("calc8", ""),
            "odp" => ("impress8", ""),
            "rtf" => ("Rich Text Format", ""),
            "txt" => ("Text (encoded)", "UTF8"),
            // Comma-separated, double quotes, UTF-8, from the first row.
            "csv" => ("Text - txt - csv (StarCalc)", "44,34,76,1"),
            "html" | "htm" => ("HTML (StarWriter)", ""),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    #[error(
        "files ending .{0} are not converted (formats: docx, doc, pptx, ppt, xlsx, xls, odt, odp, ods, rtf, txt, csv, html, png, jpeg, webp)"
    )]
    Unsupported(String),
    #[error("the file is {found} but its name ends .{claimed}")]
    WrongExtension { found: &'static str, claimed: String },
    #[error("the file is {0}, which is not converted")]
    UnsupportedContent(&'static str),
    #[error("the file's contents are not a document kiln converts (and its name has no extension)")]
    Unknown,
}

/// Families of formats that share a container, and what each is called.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    Zip,
    Ole2,
    Rtf,
    Png,
    Jpeg,
    Webp,
    Pdf,
    Text,
    Binary,
}

fn family_of(head: &[u8]) -> Family {
    if head.starts_with(b"PK\x03\x04") {
        Family::Zip
    } else if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        Family::Ole2
    } else if head.starts_with(b"{\\rtf") {
        Family::Rtf
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Family::Png
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Family::Jpeg
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Family::Webp
    } else if head.starts_with(b"%PDF") {
        Family::Pdf
    } else if !head.contains(&0) && looks_like_text(head) {
        Family::Text
    } else {
        Family::Binary
    }
}

/// UTF-8 (a multi-byte character cut at the end of the sample is allowed).
fn looks_like_text(head: &[u8]) -> bool {
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

fn describe(family: Family) -> &'static str {
    match family {
        Family::Zip => "a zip archive",
        Family::Ole2 => "an OLE2 compound file",
        Family::Rtf => "RTF text",
        Family::Png => "a PNG image",
        Family::Jpeg => "a JPEG image",
        Family::Webp => "a WebP image",
        Family::Pdf => "already a PDF (use kiln.pdf.preview for page images)",
        Family::Text => "plain text",
        Family::Binary => "binary data of an unknown kind",
    }
}

/// The families an extension's files may be in. Password-protected OOXML
/// documents are OLE2 containers; HTML and CSV are text.
fn families_for(extension: &str) -> &'static [Family] {
    match extension {
        "docx" | "xlsx" | "pptx" => &[Family::Zip, Family::Ole2],
        "odt" | "ods" | "odp" => &[Family::Zip],
        "doc" | "xls" | "ppt" => &[Family::Ole2],
        "rtf" => &[Family::Rtf],
        "txt" | "csv" | "html" | "htm" => &[Family::Text],
        "png" => &[Family::Png],
        "jpg" | "jpeg" => &[Family::Jpeg],
        "webp" => &[Family::Webp],
        _ => &[],
    }
}

fn known(extension: &str) -> Option<&'static str> {
    EXTENSIONS.iter().copied().find(|e| *e == extension)
}

/// The format to convert `name`'s contents as, from `head` (its first bytes).
pub fn detect(name: &str, head: &[u8]) -> Result<Kind, FormatError> {
    let file = name.rsplit('/').next().unwrap_or(name);
    let claimed = file
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|e| !e.is_empty());
    let family = family_of(head);
    match claimed {
        Some(ext) => {
            let Some(ext) = known(&ext) else {
                return Err(FormatError::Unsupported(ext));
            };
            if families_for(ext).contains(&family) {
                Ok(Kind(ext))
            } else {
                Err(FormatError::WrongExtension {
                    found: describe(family),
                    claimed: ext.to_owned(),
                })
            }
        }
        None => match family {
            Family::Rtf => Ok(Kind("rtf")),
            Family::Png => Ok(Kind("png")),
            Family::Jpeg => Ok(Kind("jpg")),
            Family::Webp => Ok(Kind("webp")),
            Family::Text => {
                let start = String::from_utf8_lossy(&head[..head.len().min(512)]).to_ascii_lowercase();
                Ok(Kind(if start.contains("<html") || start.contains("<!doctype html") {
                    "html"
                } else {
                    "txt"
                }))
            }
            Family::Zip => odf_kind(head).ok_or(FormatError::Unknown),
            Family::Pdf | Family::Binary => Err(FormatError::UnsupportedContent(describe(family))),
            Family::Ole2 => Err(FormatError::Unknown),
        },
    }
}

/// An OOXML document (docx, xlsx, pptx) in an OLE2 container is one
/// encrypted with a password: Office wraps the encrypted package that way.
pub fn is_encrypted_ooxml(kind: Kind, head: &[u8]) -> bool {
    matches!(kind.0, "docx" | "xlsx" | "pptx") && family_of(head) == Family::Ole2
}

/// OpenDocument files name their type in a first, stored `mimetype` entry.
fn odf_kind(head: &[u8]) -> Option<Kind> {
    let text = String::from_utf8_lossy(head);
    [
        ("opendocument.text", "odt"),
        ("opendocument.spreadsheet", "ods"),
        ("opendocument.presentation", "odp"),
    ]
    .into_iter()
    .find(|(mime, _)| text.contains(mime))
    .map(|(_, ext)| Kind(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_that_match_the_name_are_accepted() {
        assert_eq!(detect("a/b/Report.DOCX", b"PK\x03\x04rest"), Ok(Kind("docx")));
        assert_eq!(
            detect("locked.docx", &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]),
            Ok(Kind("docx"))
        );
        assert_eq!(detect("notes.txt", "héllo".as_bytes()), Ok(Kind("txt")));
        assert_eq!(detect("page.html", b"<html><body>x</body></html>"), Ok(Kind("html")));
        assert_eq!(detect("photo.jpeg", &[0xFF, 0xD8, 0xFF, 0xE0]), Ok(Kind("jpeg")));
        assert_eq!(detect("x.webp", b"RIFF\0\0\0\0WEBPVP8 "), Ok(Kind("webp")));
        assert_eq!(detect("letter.rtf", b"{\\rtf1\\ansi"), Ok(Kind("rtf")));
    }

    #[test]
    fn contents_that_contradict_the_name_are_refused() {
        let error = detect("report.docx", b"\x89PNG\r\n\x1a\n....").expect_err("a png named docx");
        assert_eq!(error.to_string(), "the file is a PNG image but its name ends .docx");
        assert!(detect("sheet.xls", b"just text").is_err());
        assert!(detect("deck.pdf", b"%PDF-1.7").is_err(), "pdf is not an office format");
        assert!(detect("tool.exe", b"MZ\x90\0").is_err());
    }

    #[test]
    fn a_name_without_extension_is_read_from_its_contents() {
        assert_eq!(detect("upload", b"<!DOCTYPE html><p>x"), Ok(Kind("html")));
        assert_eq!(
            detect(
                "upload",
                b"PK\x03\x04....mimetypeapplication/vnd.oasis.opendocument.text"
            ),
            Ok(Kind("odt"))
        );
        assert!(detect("upload", b"%PDF-1.4").is_err());
    }
}
