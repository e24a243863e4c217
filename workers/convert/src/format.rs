//! What a file really is, from its first bytes, checked against the name it
//! came with. LibreOffice guesses formats generously; kiln refuses a file
//! whose contents contradict its extension instead of converting whatever
//! LibreOffice makes of it.

/// The formats `kiln.office.to-pdf` converts.
pub const EXTENSIONS: &[&str] = &[
    "docx", "doc", "pptx", "ppt", "xlsx", "xls", "odt", "odp", "ods", "rtf", "txt", "csv", "html", "htm", "png", "jpg",
    "jpeg", "webp",
];

/// A family of Microsoft Office formats: the import filters of one
/// application, old and new. LibreOffice's type detection reads a file named
/// like one of them and picks its filter; kiln takes the pick only from
/// this list, so a `.doc` may be a Word 6.0, Word 95, Word 97 or RTF file
/// (all of which Word saves as `.doc`), but never a spreadsheet or plain
/// text that LibreOffice would also read.
#[derive(Debug, PartialEq, Eq)]
pub struct Family {
    /// What the family is called in messages: "a Word document".
    pub name: &'static str,
    /// The members that are not OOXML packages.
    pub other_filters: &'static [&'static str],
    /// The members that are OOXML packages: such a file in an OLE2
    /// container is one Office encrypted with a password.
    pub ooxml_filters: &'static [&'static str],
}

impl Family {
    pub fn admits(&self, filter: &str) -> bool {
        self.other_filters.contains(&filter) || self.is_ooxml(filter)
    }

    pub fn is_ooxml(&self, filter: &str) -> bool {
        self.ooxml_filters.contains(&filter)
    }
}

pub const WORD: Family = Family {
    name: "a Word document",
    other_filters: &[
        "MS Word 97",
        "MS Word 97 Vorlage",
        "MS Word 95",
        "MS Word 95 Vorlage",
        "MS WinWord 6.0",
        "MS WinWord 5",
        "Rich Text Format",
        "MS Word 2003 XML",
    ],
    ooxml_filters: &[
        "MS Word 2007 XML",
        "MS Word 2007 XML Template",
        "MS Word 2007 XML VBA",
        "Office Open XML Text",
        "Office Open XML Text Template",
    ],
};

pub const EXCEL: Family = Family {
    name: "an Excel workbook",
    other_filters: &[
        "MS Excel 97",
        "MS Excel 97 Vorlage/Template",
        "MS Excel 95",
        "MS Excel 95 Vorlage/Template",
        "MS Excel 5.0/95",
        "MS Excel 5.0/95 Vorlage/Template",
        "MS Excel 4.0",
        "MS Excel 4.0 Vorlage/Template",
        "MS Excel 2003 XML Orcus",
        "Calc MS Excel 2007 Binary",
    ],
    ooxml_filters: &[
        "Calc MS Excel 2007 XML",
        "Calc MS Excel 2007 XML Template",
        "Calc MS Excel 2007 VBA XML",
        "Calc Office Open XML",
        "Calc Office Open XML Template",
    ],
};

pub const POWERPOINT: Family = Family {
    name: "a PowerPoint presentation",
    other_filters: &[
        "MS PowerPoint 97",
        "MS PowerPoint 97 Vorlage",
        "MS PowerPoint 97 AutoPlay",
        "PowerPoint 3",
    ],
    ooxml_filters: &[
        "Impress MS PowerPoint 2007 XML",
        "Impress MS PowerPoint 2007 XML Template",
        "Impress MS PowerPoint 2007 XML AutoPlay",
        "Impress MS PowerPoint 2007 XML VBA",
        "Impress Office Open XML",
        "Impress Office Open XML Template",
        "Impress Office Open XML AutoPlay",
    ],
};

/// How LibreOffice is to read a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Import {
    /// This import filter, with these options. Naming it keeps LibreOffice
    /// from reading a damaged file as something else (a broken
    /// spreadsheet as plain text, say).
    Filter(&'static str, &'static str),
    /// LibreOffice's own type detection, which must pick a filter of this
    /// family.
    Detect(&'static Family),
    /// LibreOffice's detection, unrestricted: for images, which it only
    /// reads with image filters, and for formats the caller checked.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(&'static str);

impl Kind {
    pub fn extension(self) -> &'static str {
        self.0
    }

    pub fn import(self) -> Import {
        match self.0 {
            "docx" | "doc" => Import::Detect(&WORD),
            "xlsx" | "xls" => Import::Detect(&EXCEL),
            "pptx" | "ppt" => Import::Detect(&POWERPOINT),
            "odt" => Import::Filter("writer8", ""),
            "ods" => Import::Filter("calc8", ""),
            "odp" => Import::Filter("impress8", ""),
            "rtf" => Import::Filter("Rich Text Format", ""),
            "txt" => Import::Filter("Text (encoded)", "UTF8"),
            // Comma-separated, double quotes, UTF-8, from the first row.
            "csv" => Import::Filter("Text - txt - csv (StarCalc)", "44,34,76,1"),
            "html" | "htm" => Import::Filter("HTML (StarWriter)", ""),
            _ => Import::Any,
        }
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

/// The containers (and plain encodings) files come in, told by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Container {
    Zip,
    Ole2,
    Rtf,
    Png,
    Jpeg,
    Webp,
    Pdf,
    /// Text that opens as XML: Word and Excel 2003 XML, among others.
    Xml,
    Text,
    Binary,
}

fn container_of(head: &[u8]) -> Container {
    if head.starts_with(b"PK\x03\x04") {
        Container::Zip
    } else if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        Container::Ole2
    } else if head.starts_with(b"{\\rtf") {
        Container::Rtf
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Container::Png
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Container::Jpeg
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Container::Webp
    } else if head.starts_with(b"%PDF") {
        Container::Pdf
    } else if !head.contains(&0) && looks_like_text(head) {
        let start = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        let start = &start[start.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
        if start.starts_with(b"<?xml") {
            Container::Xml
        } else {
            Container::Text
        }
    } else {
        Container::Binary
    }
}

/// UTF-8 (a multi-byte character cut at the end of the sample is allowed).
fn looks_like_text(head: &[u8]) -> bool {
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

fn describe(container: Container) -> &'static str {
    match container {
        Container::Zip => "a zip archive",
        Container::Ole2 => "an OLE2 compound file",
        Container::Rtf => "RTF text",
        Container::Png => "a PNG image",
        Container::Jpeg => "a JPEG image",
        Container::Webp => "a WebP image",
        Container::Pdf => "already a PDF (use kiln.pdf.preview for page images)",
        Container::Xml => "XML text",
        Container::Text => "plain text",
        Container::Binary => "binary data of an unknown kind",
    }
}

/// The containers an extension's files may be in. Password-protected OOXML
/// documents are OLE2 containers, and Office's older formats share the
/// names of the newer ones: Word saved RTF, Word 2003 XML and (before
/// Word 6) a binary format of its own as `.doc`, Excel 2003 XML and BIFF2
/// to 4 as `.xls`. Which format of the family a file really is, LibreOffice's
/// detection decides ([`Import::Detect`]); a container no member of the
/// family uses is refused here.
fn containers_for(extension: &str) -> &'static [Container] {
    match extension {
        "docx" | "xlsx" | "pptx" => &[Container::Zip, Container::Ole2],
        "odt" | "ods" | "odp" => &[Container::Zip],
        "doc" => &[
            Container::Ole2,
            Container::Rtf,
            Container::Zip,
            Container::Xml,
            Container::Binary,
        ],
        "xls" => &[Container::Ole2, Container::Zip, Container::Xml, Container::Binary],
        "ppt" => &[Container::Ole2, Container::Zip, Container::Binary],
        "rtf" => &[Container::Rtf],
        "txt" | "csv" | "html" | "htm" => &[Container::Text, Container::Xml],
        "png" => &[Container::Png],
        "jpg" | "jpeg" => &[Container::Jpeg],
        "webp" => &[Container::Webp],
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
    let container = container_of(head);
    match claimed {
        Some(ext) => {
            let Some(ext) = known(&ext) else {
                return Err(FormatError::Unsupported(ext));
            };
            if containers_for(ext).contains(&container) {
                Ok(Kind(ext))
            } else {
                Err(FormatError::WrongExtension {
                    found: describe(container),
                    claimed: ext.to_owned(),
                })
            }
        }
        None => match container {
            Container::Rtf => Ok(Kind("rtf")),
            Container::Png => Ok(Kind("png")),
            Container::Jpeg => Ok(Kind("jpg")),
            Container::Webp => Ok(Kind("webp")),
            Container::Text | Container::Xml => {
                let start = String::from_utf8_lossy(&head[..head.len().min(512)]).to_ascii_lowercase();
                Ok(Kind(if start.contains("<html") || start.contains("<!doctype html") {
                    "html"
                } else {
                    "txt"
                }))
            }
            Container::Zip => odf_kind(head).ok_or(FormatError::Unknown),
            Container::Pdf | Container::Binary => Err(FormatError::UnsupportedContent(describe(container))),
            Container::Ole2 => Err(FormatError::Unknown),
        },
    }
}

/// Whether the file is an OLE2 compound file. One that LibreOffice reads
/// as an OOXML package is encrypted with a password: Office wraps the
/// encrypted package that way.
pub fn is_ole2(head: &[u8]) -> bool {
    container_of(head) == Container::Ole2
}

/// Whether the file is a zip or OLE2 container, as every binary Office
/// format since Office 97 is.
pub fn is_package(head: &[u8]) -> bool {
    matches!(container_of(head), Container::Zip | Container::Ole2)
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
        assert!(detect("memo.doc", b"<html><body>x</body></html>").is_err());
        assert!(detect("deck.ppt", b"{\\rtf1 a letter}").is_err());
        assert!(detect("deck.pdf", b"%PDF-1.7").is_err(), "pdf is not an office format");
        assert!(detect("tool.exe", b"MZ\x90\0").is_err());
    }

    #[test]
    fn the_older_formats_office_saved_under_the_same_names_are_accepted() {
        // RTF, Word 2003 XML and Word 5 binaries were all saved as .doc;
        // Excel 2003 XML and BIFF4 as .xls.
        assert_eq!(detect("letter.doc", b"{\\rtf1\\ansi"), Ok(Kind("doc")));
        assert_eq!(
            detect("memo.doc", b"\xEF\xBB\xBF<?xml version=\"1.0\"?><w:wordDocument>"),
            Ok(Kind("doc"))
        );
        assert_eq!(detect("old.doc", &[0x31, 0xBE, 0, 0, 0, 0xAB]), Ok(Kind("doc")));
        assert_eq!(
            detect("sheet.xls", b"<?xml version=\"1.0\"?><Workbook>"),
            Ok(Kind("xls"))
        );
        assert_eq!(detect("sheet.xls", &[0x09, 0x04, 0x06, 0x00]), Ok(Kind("xls")));
        assert_eq!(
            detect("report.docx", &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]),
            Ok(Kind("docx"))
        );
        assert_eq!(Kind("doc").import(), Import::Detect(&WORD));
        assert_eq!(Kind("xlsx").import(), Import::Detect(&EXCEL));
        assert!(WORD.admits("MS Word 95") && !WORD.admits("Text - txt - csv (StarCalc)"));
        assert!(EXCEL.is_ooxml("Calc Office Open XML") && !EXCEL.is_ooxml("MS Excel 97"));
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
