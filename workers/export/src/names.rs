//! Names inside an export's zip. A payload's paths come from users (folder
//! and document names in a data room), so each is made safe to extract: no
//! `..`, no absolute path, no drive letter, no control character, `/` as
//! the only separator. Two files that end up with one name get a suffix, as
//! a file manager would: `report.pdf`, `report (1).pdf`.

use std::collections::HashSet;

/// Longest segment kept, in bytes: what common file systems allow.
const MAX_SEGMENT_BYTES: usize = 255;

/// The safe form of `path`: its meaningful segments joined with `/`, or
/// `None` when nothing is left.
pub fn sanitise(path: &str) -> Option<String> {
    let mut segments: Vec<String> = Vec::new();
    let mut first = true;
    for raw in path.split(['/', '\\']) {
        let cleaned: String = raw.chars().filter(|c| !c.is_control()).collect();
        let mut segment = cleaned.trim();
        if segment.is_empty() {
            continue;
        }
        // A drive (`C:`, `C:name`) is the start of the first real segment,
        // however many separators come before it.
        if std::mem::take(&mut first) {
            let bytes = segment.as_bytes();
            if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
                segment = segment[2..].trim();
            }
        }
        if segment.is_empty() || segment.chars().all(|c| c == '.') {
            continue;
        }
        // `name:stream` would write an NTFS alternate data stream.
        let segment = segment.replace(':', "_");
        segments.push(truncate(&segment, MAX_SEGMENT_BYTES).to_owned());
    }
    (!segments.is_empty()).then(|| segments.join("/"))
}

fn truncate(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The names given so far in one archive.
#[derive(Debug, Default)]
pub struct ZipNames {
    files: HashSet<String>,
    folders: HashSet<String>,
}

impl ZipNames {
    /// A unique, safe name for `path` (`fallback` when nothing of the path
    /// is usable), now taken.
    pub fn claim(&mut self, path: &str, fallback: &str) -> String {
        let clean = sanitise(path)
            .or_else(|| sanitise(fallback))
            .unwrap_or_else(|| "file".to_owned());
        let mut segments: Vec<String> = clean.split('/').map(str::to_owned).collect();
        let last = segments.len() - 1;
        // A folder that has the name of a file already in the archive gets
        // a suffix of its own, so both extract.
        let mut prefix = String::new();
        for segment in &mut segments[..last] {
            let mut candidate = join(&prefix, segment);
            let mut n = 1;
            while self.files.contains(&candidate) {
                candidate = join(&prefix, &format!("{segment} ({n})"));
                n += 1;
            }
            self.folders.insert(candidate.clone());
            prefix = candidate;
        }
        let file = &segments[last];
        let mut candidate = join(&prefix, file);
        let mut n = 1;
        while self.files.contains(&candidate) || self.folders.contains(&candidate) {
            candidate = join(&prefix, &with_suffix(file, n));
            n += 1;
        }
        self.files.insert(candidate.clone());
        candidate
    }
}

fn join(prefix: &str, segment: &str) -> String {
    if prefix.is_empty() {
        segment.to_owned()
    } else {
        format!("{prefix}/{segment}")
    }
}

/// `report.pdf` → `report (n).pdf`; `.env` and `README` take it at the end.
fn with_suffix(name: &str, n: usize) -> String {
    match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => format!("{stem} ({n}).{extension}"),
        _ => format!("{name} ({n})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_what_could_escape_the_folder() {
        assert_eq!(sanitise("../../etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(sanitise("/abs/file.pdf").as_deref(), Some("abs/file.pdf"));
        assert_eq!(sanitise("C:\\Users\\x\\a.pdf").as_deref(), Some("Users/x/a.pdf"));
        // A separator before the drive keeps it a drive; `:` never stays.
        assert_eq!(
            sanitise("/C:/Windows/System32/evil.dll").as_deref(),
            Some("Windows/System32/evil.dll")
        );
        assert_eq!(
            sanitise("\\C:\\Users\\Public\\evil.txt").as_deref(),
            Some("Users/Public/evil.txt")
        );
        assert_eq!(sanitise("C:evil.txt").as_deref(), Some("evil.txt"));
        assert_eq!(sanitise("x/file.txt:stream").as_deref(), Some("x/file.txt_stream"));
        assert_eq!(sanitise("a/./b//c.pdf").as_deref(), Some("a/b/c.pdf"));
        assert_eq!(sanitise("a/\u{0}b\u{7}.pdf").as_deref(), Some("a/b.pdf"));
        assert_eq!(sanitise("Q3 report/…/..."), Some("Q3 report/…".to_owned()));
        assert_eq!(sanitise("../.."), None);
        assert_eq!(sanitise(&"é".repeat(200)).map(|s| s.len()), Some(254));
    }

    #[test]
    fn duplicates_get_a_suffix_and_files_never_shadow_folders() {
        let mut names = ZipNames::default();
        assert_eq!(names.claim("a/report.pdf", "k"), "a/report.pdf");
        assert_eq!(names.claim("a/report.pdf", "k"), "a/report (1).pdf");
        assert_eq!(names.claim("a//report.pdf", "k"), "a/report (2).pdf");
        assert_eq!(names.claim("README", "k"), "README");
        assert_eq!(names.claim("README", "k"), "README (1)");
        // A file named like an existing folder, and a folder named like an
        // existing file.
        assert_eq!(names.claim("a", "k"), "a (1)");
        assert_eq!(names.claim("README/inner.txt", "k"), "README (2)/inner.txt");
        assert_eq!(names.claim("../", "docs/fallback.pdf"), "docs/fallback.pdf");
        assert_eq!(names.claim("..", ".."), "file");
    }
}
