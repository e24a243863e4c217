//! `kiln.export.zip` and `kiln.exports.cleanup` end to end: a kiln process
//! zips objects from real storage (s3s-fs, or a local folder), the test
//! downloads the link it answers and unzips it with Info-ZIP's `unzip`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kiln_storage::{LinkSigner, LocalStore, ObjectKey, ObjectStore};
use serde_json::{Value, json};

use crate::helpers::{Kiln, Mode, S3Server, SERVER_SECRET, temp_dir};

fn key(text: &str) -> ObjectKey {
    ObjectKey::parse(text).expect("valid key")
}

/// Every file under `root`, as relative path → contents.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                files.insert(relative, std::fs::read(&path).expect("read file"));
            }
        }
    }
    files
}

/// Downloads `url` to a file and unzips it into a fresh folder.
async fn download_and_unzip(url: &str) -> std::path::PathBuf {
    let response = reqwest::get(url).await.expect("download");
    assert_eq!(response.status(), 200, "download {url}");
    let bytes = response.bytes().await.expect("body");
    let dir = temp_dir("unzipped");
    let archive = dir.with_extension("zip");
    std::fs::write(&archive, &bytes).expect("write zip");
    let unzip = Command::new("unzip")
        .arg("-q")
        .arg(&archive)
        .arg("-d")
        .arg(&dir)
        .output()
        .expect("unzip (scripts/test installs it)");
    assert!(
        unzip.status.success(),
        "unzip: {}",
        String::from_utf8_lossy(&unzip.stderr)
    );
    dir
}

async fn export(kiln: &Kiln, payload: Value) -> Value {
    let run_id = kiln.trigger("kiln.export.zip", json!({ "payload": payload })).await;
    kiln.wait_for(&run_id, Duration::from_secs(120), |run| {
        run["status"] == "COMPLETED" || run["status"] == "FAILED"
    })
    .await
}

#[tokio::test]
async fn an_export_from_s3_unzips_to_the_expected_tree() {
    let s3 = S3Server::start().await;
    let bucket = "supermark-uploads";
    // Links name the address clients use, here `localhost` where kiln
    // itself talks to 127.0.0.1.
    let public_endpoint = s3.endpoint.replace("127.0.0.1", "localhost");
    let mut builder = Kiln::builder(Mode::Dev).env("KILN_S3_PUBLIC_ENDPOINT", &public_endpoint);
    for (name, value) in s3.supermark_env(bucket) {
        builder = builder.env(name, value);
    }
    let kiln = builder.spawn().await;
    // kiln created the bucket at start-up; the test writes the sources.
    let store = kiln_storage::S3Store::new(&s3.config(bucket, 5 * 1024 * 1024)).expect("store");
    let sources = [
        ("docs/1/deck.pdf", "%PDF deck"),
        ("docs/2/deck.pdf", "%PDF another deck with the same name"),
        ("docs/3/notes.txt", "notes, compressed in the zip"),
        ("docs/4/evil.txt", "tries to escape"),
        ("docs/5/abs.txt", "absolute"),
        ("docs/6/deep.csv", "a,b\n1,2\n"),
    ];
    for (name, body) in sources {
        kiln_storage::put_bytes(&store, &key(name), body.as_bytes(), "application/octet-stream")
            .await
            .expect("put source");
    }
    let run = export(
        &kiln,
        json!({
            "files": [
                { "key": "docs/1/deck.pdf", "path": "Data Room/Pitch/deck.pdf" },
                { "key": "docs/2/deck.pdf", "path": "Data Room/Pitch/deck.pdf" },
                { "key": "docs/3/notes.txt", "path": "Data Room/notes.txt" },
                { "key": "docs/4/evil.txt", "path": "../../evil.txt" },
                { "key": "docs/5/abs.txt", "path": "/etc/abs.txt" },
                { "key": "docs/6/deep.csv", "path": "Data Room/Finance/2026/Q3/deep.csv" },
            ],
            "output": { "key": "exports/team-1/data-room.zip" },
            "expiresIn": "3d",
        }),
    )
    .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    let output = &run["output"];
    assert_eq!(output["key"], "exports/team-1/data-room.zip");
    assert_eq!(output["fileCount"], 6);
    let stored = store
        .head(&key("exports/team-1/data-room.zip"))
        .await
        .expect("zip in bucket");
    assert_eq!(output["size"], stored.size);
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(output["expiresAt"].as_str().expect("expiresAt")).expect("rfc3339");
    let in_three_days = chrono::Utc::now() + chrono::Duration::days(3);
    assert!(
        (in_three_days - expires_at.with_timezone(&chrono::Utc))
            .num_seconds()
            .abs()
            < 120
    );
    assert_eq!(run["metadata"]["progress"], 100);
    assert_eq!(run["metadata"]["text"], "6 / 6 files zipped");

    let url = output["url"].as_str().expect("url");
    assert!(
        url.starts_with(&public_endpoint),
        "a presigned link to the public endpoint: {url}"
    );
    let dir = download_and_unzip(url).await;
    let expected: BTreeMap<String, Vec<u8>> = [
        ("Data Room/Pitch/deck.pdf", "%PDF deck"),
        ("Data Room/Pitch/deck (1).pdf", "%PDF another deck with the same name"),
        ("Data Room/notes.txt", "notes, compressed in the zip"),
        ("evil.txt", "tries to escape"),
        ("etc/abs.txt", "absolute"),
        ("Data Room/Finance/2026/Q3/deep.csv", "a,b\n1,2\n"),
    ]
    .into_iter()
    .map(|(path, body)| (path.to_owned(), body.as_bytes().to_vec()))
    .collect();
    assert_eq!(tree(&dir), expected);
}

fn local_kiln(dir: &Path) -> crate::helpers::KilnBuilder {
    Kiln::builder(Mode::Dev).env("KILN_STORAGE_DIR", dir.to_string_lossy())
}

#[tokio::test]
async fn a_missing_source_fails_the_export_with_its_name_unless_skipped() {
    let dir = temp_dir("objects");
    std::fs::create_dir_all(dir.join("docs")).expect("mkdir");
    std::fs::write(dir.join("docs/here.pdf"), b"%PDF here").expect("write");
    let kiln = local_kiln(&dir).spawn().await;
    let files = json!([
        { "key": "docs/here.pdf", "path": "here.pdf" },
        { "key": "docs/gone.pdf", "path": "Folder/gone.pdf" },
    ]);

    let run = export(&kiln, json!({ "files": files, "output": { "key": "exports/a.zip" } })).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["attemptCount"], 1, "a missing file is not retried");
    let message = run["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("docs/gone.pdf") && message.contains("Folder/gone.pdf"),
        "{run}"
    );
    assert!(!dir.join("exports/a.zip").exists(), "no zip is left behind");

    let run = export(
        &kiln,
        json!({ "files": files, "output": { "key": "exports/b.zip" }, "skipMissing": true }),
    )
    .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(run["output"]["fileCount"], 1);
    assert_eq!(run["output"]["warnings"][0]["key"], "docs/gone.pdf");
    assert_eq!(run["output"]["warnings"][0]["path"], "Folder/gone.pdf");
    // The local backend's link is served by kiln itself.
    let url = run["output"]["url"].as_str().expect("url");
    assert!(url.starts_with(&kiln.base_url), "{url}");
    let unzipped = download_and_unzip(url).await;
    assert_eq!(tree(&unzipped).into_keys().collect::<Vec<_>>(), ["here.pdf"]);

    let run = export(&kiln, json!({ "files": [], "output": { "key": "exports/c.zip" } })).await;
    assert_eq!(run["status"], "FAILED");
    assert_eq!(run["error"]["name"], "InvalidPayload");
    let run = export(&kiln, json!({ "files": files, "output": { "key": "../outside.zip" } })).await;
    assert_eq!(run["status"], "FAILED");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("output.key"),
        "{run}"
    );
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("kB");
    kib * 1024
}

#[tokio::test]
async fn a_one_gib_export_streams_in_bounded_memory() {
    const FILES: usize = 8;
    const FILE_BYTES: usize = 128 * 1024 * 1024;
    let dir = temp_dir("objects");
    std::fs::create_dir_all(dir.join("big")).expect("mkdir");
    // Distinct, incompressible-looking blocks; written straight into the
    // folder, as files put there by hand.
    let block: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    for f in 0..FILES {
        use std::io::Write;
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("big/{f}.pdf"))).expect("create"));
        for chunk in 0..FILE_BYTES / block.len() {
            file.write_all(&[f as u8, chunk as u8]).expect("write");
            file.write_all(&block[2..]).expect("write");
        }
    }
    let kiln = local_kiln(&dir).spawn().await;
    let baseline = peak_rss_bytes(kiln.pid());
    let files: Vec<Value> = (0..FILES)
        .map(|f| json!({ "key": format!("big/{f}.pdf"), "path": format!("Folder {}/{f}.pdf", f % 3) }))
        .collect();
    let run_id = kiln
        .trigger(
            "kiln.export.zip",
            json!({ "payload": { "files": files, "output": { "key": "exports/big.zip" } } }),
        )
        .await;
    // Progress shows while it runs.
    let midway = kiln
        .wait_for(&run_id, Duration::from_secs(300), |run| {
            run["status"] == "COMPLETED"
                || run["metadata"]["progress"]
                    .as_u64()
                    .is_some_and(|p| (1..100).contains(&p))
        })
        .await;
    let run = kiln
        .wait_for_status(&run_id, "COMPLETED", Duration::from_secs(300))
        .await;
    assert_ne!(
        midway["status"], "COMPLETED",
        "progress between 1 and 99 was visible during the export"
    );
    let peak = peak_rss_bytes(kiln.pid());
    let total = (FILES * FILE_BYTES) as u64;
    assert!(run["output"]["size"].as_u64().is_some_and(|s| s > total), "{run}");
    eprintln!(
        "1 GiB export: kiln peak RSS {} MiB (before the export {} MiB)",
        peak >> 20,
        baseline >> 20
    );
    assert!(peak < 100 << 20, "kiln's peak RSS was {} MiB", peak >> 20);

    let test = Command::new("unzip")
        .arg("-tq")
        .arg(dir.join("exports/big.zip"))
        .output()
        .expect("unzip");
    assert!(test.status.success(), "{}", String::from_utf8_lossy(&test.stdout));
    drop(kiln);
    // Two gigabytes are not left behind for every run of the suite.
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_cleanup_deletes_expired_exports_and_only_those() {
    let dir = temp_dir("objects");
    std::fs::create_dir_all(dir.join("docs")).expect("mkdir");
    std::fs::write(dir.join("docs/a.pdf"), b"%PDF a").expect("write");
    // kiln's own schedule runs the cleanup, here every second.
    // A packet the SDK uploaded three hours ago and never used, and one
    // just uploaded; both there before the first sweep, which may come
    // while the exports below still run.
    crate::helpers::put_object(&dir, "_kiln/packets/prod/old/payload.json", b"{}");
    crate::helpers::put_object(&dir, "_kiln/packets/prod/new/payload.json", b"{}");
    std::fs::File::options()
        .write(true)
        .open(dir.join("_kiln/packets/prod/old/payload.json"))
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 3600)))
        .expect("age the packet");
    let mut kiln = local_kiln(&dir)
        .env("KILN_EXPORTS_CLEANUP_CRON", "* * * * * *")
        .spawn()
        .await;
    let files = json!([{ "key": "docs/a.pdf", "path": "a.pdf" }]);
    for (output, expires_in) in [("exports/short.zip", "2s"), ("exports/long.zip", "1h")] {
        let run = export(
            &kiln,
            json!({ "files": files, "output": { "key": output }, "expiresIn": expires_in }),
        )
        .await;
        assert_eq!(run["status"], "COMPLETED", "{run}");
    }
    let store = LocalStore::open(&dir, LinkSigner::new(&kiln.base_url, SERVER_SECRET.as_bytes())).expect("open");

    // A key cannot start it: it deletes what every environment exported.
    let refused = kiln
        .post("/api/v1/tasks/kiln.exports.cleanup/trigger", &json!({ "payload": {} }))
        .await;
    assert_eq!(refused.status(), 403);
    let answer: Value = refused.json().await.expect("json");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot be triggered")),
        "{answer}"
    );

    // Wait for the sweep that deleted something to be recorded (the file
    // goes before its run is recorded COMPLETED).
    let db = kiln.db().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let outputs: Vec<Value> = loop {
        let outputs: Vec<Value> = sqlx::query_scalar(
            "SELECT output FROM runs WHERE task_identifier = 'kiln.exports.cleanup' AND status = 'COMPLETED'",
        )
        .fetch_all(&db)
        .await
        .expect("cleanup runs");
        if outputs.iter().any(|o| o["deleted"] != json!([])) {
            break outputs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expired export was never swept: {outputs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        store.head(&key("exports/short.zip")).await.is_err(),
        "the expired export is gone"
    );
    let swept: Vec<&Value> = outputs.iter().filter(|o| o["deleted"] != json!([])).collect();
    assert_eq!(swept.len(), 1, "one sweep deleted something: {outputs:?}");
    assert_eq!(swept[0]["deleted"], json!(["exports/short.zip"]), "{swept:?}");
    assert_eq!(swept[0]["pending"], 1);
    assert!(
        store.head(&key("exports/long.zip")).await.is_ok(),
        "the unexpired export stays"
    );
    assert!(
        !dir.join("_kiln/packets/prod/old/payload.json").exists(),
        "an unused old packet goes"
    );
    assert!(
        dir.join("_kiln/packets/prod/new/payload.json").exists(),
        "a fresh packet stays"
    );
    assert!(outputs.iter().any(|o| o["packetsDeleted"] == 1), "{outputs:?}");
    assert!(store.head(&key("docs/a.pdf")).await.is_ok(), "sources are not exports");
}

/// A small payload cannot make an archive of any size: the file count and
/// the sources' total (a file listed again counted again) are capped.
#[tokio::test]
async fn an_export_past_its_limits_fails_before_writing() {
    let dir = temp_dir("objects");
    std::fs::create_dir_all(dir.join("docs")).expect("mkdir");
    std::fs::write(dir.join("docs/big.bin"), vec![7u8; 600 * 1024]).expect("write");
    let kiln = local_kiln(&dir)
        .env("KILN_EXPORT_MAX_MB", "1")
        .env("KILN_EXPORT_MAX_FILES", "5")
        .spawn()
        .await;
    let twice = json!([
        { "key": "docs/big.bin", "path": "copy-1.bin" },
        { "key": "docs/big.bin", "path": "copy-2.bin" },
    ]);
    let run = export(
        &kiln,
        json!({ "files": twice, "output": { "key": "exports/twice.zip" } }),
    )
    .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["error"]["name"], "ExportTooLarge");
    assert_eq!(run["attemptCount"], 1);
    assert!(!dir.join("exports/twice.zip").exists(), "nothing written");

    let many: Vec<Value> = (0..6)
        .map(|i| json!({ "key": "docs/big.bin", "path": format!("{i}.bin") }))
        .collect();
    let run = export(&kiln, json!({ "files": many, "output": { "key": "exports/many.zip" } })).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 5")),
        "{run}"
    );

    let once = json!([{ "key": "docs/big.bin", "path": "only.bin" }]);
    let run = export(&kiln, json!({ "files": once, "output": { "key": "exports/once.zip" } })).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
}
