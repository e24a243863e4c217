//! Where libpdfium is: `PDFIUM_LIB_PATH` (the file, or the folder holding
//! `libpdfium.so`), else the places `scripts/install-pdfium` and the
//! container image put it, else beside the kiln binary.

use std::path::{Path, PathBuf};

pub const LIB_PATH_VARIABLE: &str = "PDFIUM_LIB_PATH";
const FILE_NAME: &str = "libpdfium.so";
const STANDARD_PLACES: &[&str] = &[
    "/usr/local/lib",
    "/usr/lib",
    "/opt/pdfium/lib",
    "/usr/lib/x86_64-linux-gnu",
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LibraryError {
    #[error("{LIB_PATH_VARIABLE}={0} names no file (nor a folder holding {FILE_NAME})")]
    NotAtConfiguredPath(PathBuf),
    #[error(
        "libpdfium.so is not installed (looked in {searched}); run scripts/install-pdfium, or set {LIB_PATH_VARIABLE} to its path"
    )]
    NotFound { searched: String },
}

/// The library file to load, given `PDFIUM_LIB_PATH`'s value if set.
pub fn locate(configured: Option<&Path>) -> Result<PathBuf, LibraryError> {
    if let Some(path) = configured {
        let candidate = if path.is_dir() {
            path.join(FILE_NAME)
        } else {
            path.to_path_buf()
        };
        return if candidate.is_file() {
            Ok(candidate)
        } else {
            Err(LibraryError::NotAtConfiguredPath(path.to_path_buf()))
        };
    }
    let mut places: Vec<PathBuf> = STANDARD_PLACES.iter().map(PathBuf::from).collect();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        places.push(dir);
    }
    places
        .iter()
        .map(|dir| dir.join(FILE_NAME))
        .find(|file| file.is_file())
        .ok_or_else(|| LibraryError::NotFound {
            searched: places
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_that_is_not_there_is_named() {
        let error = locate(Some(Path::new("/nowhere/libpdfium.so"))).expect_err("missing");
        assert!(
            error.to_string().contains("PDFIUM_LIB_PATH=/nowhere/libpdfium.so"),
            "{error}"
        );
    }
}
