//! The task handlers, one module a task, and what they share: payload
//! parsing, Supermark's key rules, and errors as task errors.

pub(crate) mod convert;
pub(crate) mod notify;
pub(crate) mod pages;
pub(crate) mod video;

pub use video::video_encoding_arguments;

use std::path::Path;
use std::sync::LazyLock;

use kiln_core::task::TaskError;
use kiln_storage::ObjectKey;
use regex::Regex;

use crate::Shared;
use crate::db::DbError;

pub(crate) use kiln_worker_kit::parse_payload;

pub(crate) fn db_failure(error: DbError) -> TaskError {
    if error.is_transient() {
        TaskError::retryable("SupermarkDatabaseUnavailable", error.to_string())
    } else {
        TaskError::fatal("SupermarkDatabaseError", error.to_string())
    }
}

pub(crate) fn not_found() -> TaskError {
    TaskError::fatal("DocumentNotFound", "Document not found")
}

/// Supermark's `doc_…` folder of a key (`/(doc_[^\/]+)\//`), or a new one
/// as Supermark makes one when the key has none.
pub(crate) fn document_folder(key: &str) -> String {
    static DOC_ID: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(doc_[^/]+)/").unwrap_or_else(|e| unreachable!("{e}")));
    DOC_ID
        .captures(key)
        .and_then(|c| c.get(1))
        .map_or_else(new_document_folder, |m| m.as_str().to_owned())
}

/// `newId("doc")`: `doc_` and 16 random bytes in base58.
fn new_document_folder() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("doc_{}", bs58::encode(bytes).into_string())
}

/// `<teamId>/<docId>/<name>`, checked as a storage key.
pub(crate) fn team_key(team_id: &str, folder: &str, name: &str) -> Result<ObjectKey, TaskError> {
    ObjectKey::parse(format!("{team_id}/{folder}/{name}").as_str()).map_err(|e| {
        TaskError::fatal(
            "InvalidPayload",
            format!("cannot store {name} for team {team_id:?}: {e}"),
        )
    })
}

/// Downloads an upload from Supermark's bucket. Supermark's rows hold S3
/// keys (`S3_PATH`); a Vercel Blob URL is refused, since kiln reads S3 only.
pub(crate) async fn download_upload(
    shared: &Shared,
    storage_type: &str,
    key: &str,
    path: &Path,
) -> Result<u64, TaskError> {
    if storage_type != "S3_PATH" {
        return Err(TaskError::fatal(
            "UnsupportedStorage",
            format!("the file is stored as {storage_type}; kiln reads Supermark's files from S3 (S3_PATH) only"),
        ));
    }
    kiln_worker_kit::download_key(shared.storage.as_ref(), key, path, shared.config.max_source_bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_folder_comes_from_the_key() {
        assert_eq!(document_folder("team_1/doc_AbC123/report.pdf"), "doc_AbC123");
        let made = document_folder("team_1/report.pdf");
        assert!(made.starts_with("doc_") && made.len() > 14, "{made}");
    }
}
