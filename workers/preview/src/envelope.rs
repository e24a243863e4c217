//! The cheap look at a file pdfium could not read: no `%PDF-` header near
//! its start, or no `%%EOF` marker near its end (cut short). A diagnosis
//! for the error message, not a gate: a file it faults still goes to
//! pdfium and, failing that, to the repair pass, as MuPDF repairs it.

use std::path::Path;

use kiln_core::task::TaskError;
use kiln_worker_kit::local_io;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::protocol::failure;

/// What is plainly wrong with the file's envelope, if anything.
pub(crate) async fn diagnose(path: &Path) -> Option<TaskError> {
    let size = tokio::fs::metadata(path).await.ok()?.len();
    check_envelope(path, size).await.err()
}

async fn check_envelope(path: &Path, size: u64) -> Result<(), TaskError> {
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
