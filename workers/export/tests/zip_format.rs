//! The zip writer's archives, read back by independent readers: Python's
//! `zipfile` (which checks every CRC) and Info-ZIP's `unzip -t`.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_worker_export::zip::{DosTime, Method, ZipWriter};

fn temp_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(format!("{name}-{}.zip", std::process::id()))
}

/// Python's view of the archive: `[name, size, method]` per entry, after
/// `testzip()` found every CRC right.
fn python_listing(path: &Path) -> serde_json::Value {
    let script = r#"
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    assert bad is None, f"bad CRC in {bad}"
    print(json.dumps([[i.filename, i.file_size, i.compress_type] for i in z.infolist()]))
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 (scripts/test installs it)");
    assert!(
        output.status.success(),
        "python zipfile refused the archive: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json listing")
}

fn unzip_test(path: &Path) {
    let output = Command::new("unzip")
        .arg("-tq")
        .arg(path)
        .output()
        .expect("unzip (scripts/test installs it)");
    assert!(
        output.status.success(),
        "unzip -t failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn write_archive(path: &Path, entries: &[(&str, Vec<u8>, Method, u64)]) -> u64 {
    let file = tokio::fs::File::create(path).await.expect("create");
    let mut zip = ZipWriter::new(file, DosTime::from_utc(chrono::Utc::now()));
    for (name, bytes, method, hint) in entries {
        zip.add_entry(name, bytes.as_slice(), *method, *hint)
            .await
            .expect("add entry");
    }
    zip.finish().await.expect("finish")
}

#[tokio::test]
async fn stored_and_deflated_entries_read_back_exactly() {
    let path = temp_path("mixed");
    let text: Vec<u8> = "a line of a CSV export, repeated\n".repeat(5000).into_bytes();
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let size = write_archive(
        &path,
        &[
            (
                "data room/report.csv",
                text.clone(),
                Method::Deflated,
                text.len() as u64,
            ),
            ("data room/scan.pdf", noise.clone(), Method::Stored, noise.len() as u64),
            ("empty.txt", Vec::new(), Method::Deflated, 0),
            ("ünïcode/文件.txt", b"utf-8 names".to_vec(), Method::Deflated, 11),
        ],
    )
    .await;
    assert_eq!(size, std::fs::metadata(&path).expect("stat").len());
    let listing = python_listing(&path);
    assert_eq!(
        listing,
        serde_json::json!([
            ["data room/report.csv", text.len(), 8],
            ["data room/scan.pdf", noise.len(), 0],
            ["empty.txt", 0, 8],
            ["ünïcode/文件.txt", 11, 8],
        ])
    );
    assert!(size < (noise.len() + text.len() / 10) as u64, "the text was compressed");
    unzip_test(&path);
    let extracted = Command::new("unzip")
        .args(["-p"])
        .arg(&path)
        .arg("data room/report.csv")
        .output()
        .expect("unzip -p");
    assert_eq!(extracted.stdout, text);
}

#[tokio::test]
async fn more_than_65535_entries_use_zip64_end_records() {
    let path = temp_path("many");
    let file = tokio::fs::File::create(&path).await.expect("create");
    let mut zip = ZipWriter::new(file, DosTime::from_utc(chrono::Utc::now()));
    let count = 70_000;
    for i in 0..count {
        let body = format!("file {i}");
        zip.add_entry(
            &format!("f/{i:05}.txt"),
            body.as_bytes(),
            Method::Stored,
            body.len() as u64,
        )
        .await
        .expect("add");
    }
    zip.finish().await.expect("finish");
    let bytes = std::fs::read(&path).expect("read");
    let zip64_end = [0x50, 0x4b, 0x06, 0x06];
    assert!(
        bytes.windows(4).rev().take(200).any(|w| w == zip64_end),
        "a ZIP64 end record is written"
    );
    let listing = python_listing(&path);
    let entries = listing.as_array().expect("array");
    assert_eq!(entries.len(), count);
    assert_eq!(entries[69_999][0], "f/69999.txt");
    unzip_test(&path);
}

#[tokio::test]
async fn entries_announced_as_huge_carry_zip64_sizes() {
    // A 3 GiB size hint takes the ZIP64 path for the entry (local extra
    // field, 8-byte descriptor sizes) without writing gigabytes.
    let path = temp_path("zip64-entry");
    write_archive(
        &path,
        &[
            ("big.bin", b"pretend this is large".to_vec(), Method::Stored, 3 << 30),
            ("small.txt", b"after the big one".to_vec(), Method::Deflated, 17),
        ],
    )
    .await;
    let listing = python_listing(&path);
    assert_eq!(listing[0], serde_json::json!(["big.bin", 21, 0]));
    assert_eq!(listing[1], serde_json::json!(["small.txt", 17, 8]));
    unzip_test(&path);
}
