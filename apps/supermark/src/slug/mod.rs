//! Supermark's file names: `@sindresorhus/slugify` 2.2.1 with its default
//! options, as Supermark's `putFileServer` applies it to every name it
//! stores (`Q3 Report.docx.pdf` → `q3-report-docx.pdf`). The converted
//! PDF must land on exactly the key Supermark would have written, so this
//! is a port step for step, checked against the npm package itself by the
//! end-to-end tests.
//!
//! Pure string work: no I/O.

mod table;

use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// `path.parse(name)` then `slugify(name) + ext`, as Supermark's
/// `putFileServer` names an S3 object.
pub fn object_name(file_name: &str) -> String {
    let (stem, extension) = split_extension(file_name);
    format!("{}{extension}", slugify(stem))
}

/// Node's `path.parse`: the extension is from the last `.` of the base
/// name, unless that dot starts the name.
fn split_extension(file_name: &str) -> (&str, &str) {
    let base = file_name.rsplit('/').next().unwrap_or(file_name);
    match base.rfind('.') {
        Some(0) | None => (base, ""),
        Some(dot) => base.split_at(dot),
    }
}

/// `slugify(text)` with the default options.
pub fn slugify(text: &str) -> String {
    static DECAMELIZE: LazyLock<[Regex; 4]> = LazyLock::new(|| {
        [
            r"([A-Z]{2,})([0-9]+)",
            r"([a-z0-9]+)([A-Z]{2,})",
            r"([a-z0-9])([A-Z])",
            // Every lowercase letter but `s`, so plural acronyms stay whole.
            r"([A-Z]+)([A-Z][a-rt-z0-9]+)",
        ]
        .map(|pattern| Regex::new(pattern).unwrap_or_else(|e| unreachable!("{e}")))
    });
    static CONTRACTION: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"([a-zA-Z0-9]+)'([ts])(\s|$)").unwrap_or_else(|e| unreachable!("{e}")));
    static NOT_SLUG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"[^a-z0-9]+").unwrap_or_else(|e| unreachable!("{e}")));
    static REPEATED_DASH: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"-{2,}").unwrap_or_else(|e| unreachable!("{e}")));

    let mut text = transliterate(text);
    for pattern in DECAMELIZE.iter() {
        text = pattern.replace_all(&text, "$1 $2").into_owned();
    }
    let text = text.to_lowercase();
    let text = CONTRACTION.replace_all(&text, "$1$2$3");
    let text = NOT_SLUG.replace_all(&text, "-").replace('\\', "");
    let text = REPEATED_DASH.replace_all(&text, "-");
    text.trim_start_matches('-').trim_end_matches('-').to_owned()
}

/// `@sindresorhus/transliterate` with slugify's replacements: NFC, the
/// table in order, then diacritics stripped.
fn transliterate(text: &str) -> String {
    let mut text: String = text.nfc().collect();
    for (from, to) in table::REPLACEMENTS {
        if text.contains(from) {
            text = text.replace(from, to);
        }
    }
    let stripped: String = text.nfd().filter(|c| !is_diacritic(*c)).collect();
    stripped.nfc().collect()
}

fn is_diacritic(c: char) -> bool {
    let code = u32::from(c);
    table::DIACRITICS
        .binary_search_by(|&(first, last)| {
            if last < code {
                std::cmp::Ordering::Less
            } else if first > code {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_out_as_supermark_stores_them() {
        for (name, stored) in [
            ("page-1.png", "page-1.png"),
            ("optimized.mp4", "optimized.mp4"),
            ("Q3 Report.docx.pdf", "q3-report-docx.pdf"),
            ("Präsentation_Final (2).pptx.pdf", "praesentation-final-2-pptx.pdf"),
            ("MyPitchDeck v2.key.pdf", "my-pitch-deck-v2-key.pdf"),
            ("Über & Co — Angebot.pdf", "ueber-and-co-angebot.pdf"),
            ("IPO-Docs_FINAL.pdf", "ipo-docs-final.pdf"),
            ("John's report.docx.pdf", "johns-report-docx.pdf"),
            ("ação.pdf", "acao.pdf"),
            ("日本語.pdf", ".pdf"),
        ] {
            assert_eq!(object_name(name), stored, "{name}");
        }
    }

    #[test]
    fn a_leading_dot_is_not_an_extension() {
        assert_eq!(split_extension(".env"), (".env", ""));
        assert_eq!(split_extension("a.b.c"), ("a.b", ".c"));
        assert_eq!(split_extension("noext"), ("noext", ""));
    }
}
