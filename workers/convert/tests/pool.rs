//! The LibreOffice pool on its own, with real LibreOffice instances.

use std::path::PathBuf;
use std::time::Duration;

use kiln_worker_convert::pool::{Containment, OfficePool, PoolConfig};

fn pool(work_dir: PathBuf) -> OfficePool {
    OfficePool::new(PoolConfig {
        size: 1,
        soffice: std::env::var("KILN_SOFFICE_PATH")
            .unwrap_or_else(|_| "/usr/lib/libreoffice/program/soffice.bin".into())
            .into(),
        python: "/usr/bin/python3".into(),
        conversion_timeout: Duration::from_secs(120),
        memory_limit: 4 << 30,
        work_dir,
        containment: Containment::probe(),
    })
}

/// Each instance listens on a pipe named after its number; two pools in
/// one process must not give two instances the same pipe, or one pool's
/// bridge would talk to the other's LibreOffice and its own would be
/// found dead at the first document.
#[tokio::test]
async fn two_pools_in_one_process_convert_side_by_side_without_a_fallback() {
    let dir = std::env::temp_dir().join(format!("kiln-pool-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let first = pool(dir.join("first"));
    let second = pool(dir.join("second"));
    first.warm_up().await.expect("first pool starts");
    second.warm_up().await.expect("second pool starts");
    let input = dir.join("letter.rtf");
    std::fs::write(&input, "{\\rtf1\\ansi A short letter.\\par}").expect("write the document");
    for (name, pool) in [("first", &first), ("second", &second)] {
        let output = dir.join(format!("{name}.pdf"));
        let fallback = pool
            .convert(&input, &output, Some(("Rich Text Format", "")))
            .await
            .unwrap_or_else(|e| panic!("the {name} pool converts: {e}"));
        assert_eq!(fallback, None, "the {name} pool's warm instance converted it");
        let pdf = std::fs::read(&output).expect("the PDF");
        assert!(pdf.starts_with(b"%PDF-"), "{name}: a PDF");
    }
    drop((first, second));
    let _ = std::fs::remove_dir_all(&dir);
}
