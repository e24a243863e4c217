//! The cheap look at a download before any renderer parses it.

use std::path::Path;

use kiln_core::task::TaskError;
use kiln_worker_kit::local_io;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::protocol::failure;

/// Refuses what is plainly not a whole PDF before a renderer starts: no
/// `%PDF-` header near the start, or no `%%EOF` marker near the end (the
/// file was cut short).
pub async fn check_envelope(path: &Path, size: u64) -> Result<(), TaskError> {
    const HEAD: u64 = 1024;
    const TAIL: u64 = 4096;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| local_io("cannot read the download", &e))?;
    let mut head = vec![0; HEAD.min(size) as usize];
    file.read_exact(&mut head)
        .await
        .map_err(|e| local_io("cannot read the download", &e))?;
    if !head.windows(5).any(|w| w == b"%PDF-") {
        return Err(TaskError::fatal(
            failure::NOT_A_PDF,
            "the file is not a PDF (no %PDF- header)",
        ));
    }
    let tail_len = TAIL.min(size);
    file.seek(std::io::SeekFrom::Start(size - tail_len))
        .await
        .map_err(|e| local_io("cannot read the download", &e))?;
    let mut tail = vec![0; tail_len as usize];
    file.read_exact(&mut tail)
        .await
        .map_err(|e| local_io("cannot read the download", &e))?;
    if !tail.windows(5).any(|w| w == b"%%EOF") {
        return Err(TaskError::fatal(
            failure::TRUNCATED,
            "the PDF is truncated: it has no %%EOF marker at its end",
        ));
    }
    Ok(())
}
