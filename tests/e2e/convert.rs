//! `kiln.office.to-pdf` end to end: documents of every listed format, made
//! in the test's setup by LibreOffice itself (`tests/support/
//! make_office_docs.py`), converted by the real kiln binary's warm pool and
//! read back with poppler's `pdftotext`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{self, Kiln, put_object as put, temp_dir};

const WITHIN: Duration = Duration::from_secs(180);
const MARKER: &str = "Kilnmarker";

async fn kiln_with_office(extra: &[(&str, &str)]) -> (Kiln, PathBuf) {
    let extra: Vec<(&str, &str)> = [("KILN_OFFICE_WARM_UP", "true")]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    helpers::kiln_with_storage("convert-objects", &extra).await
}

async fn convert(kiln: &Kiln, source_key: &str, output_key: &str) -> Value {
    let run_id = kiln
        .trigger(
            "kiln.office.to-pdf",
            json!({ "payload": { "source": { "key": source_key }, "output": { "key": output_key } } }),
        )
        .await;
    kiln.wait_for(&run_id, WITHIN, |run| run["isCompleted"] == true).await
}

fn pdf_text(path: &Path) -> String {
    let out = std::process::Command::new("pdftotext")
        .arg(path)
        .arg("-")
        .output()
        .expect("pdftotext (scripts/test installs poppler-utils)");
    assert!(out.status.success(), "pdftotext {}", path.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn make_documents() -> PathBuf {
    let dir = temp_dir("office-docs");
    let status = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/make_office_docs.py"
        ))
        .arg(&dir)
        .arg(MARKER)
        .status()
        .expect("python3");
    assert!(status.success(), "making the sample documents");
    dir
}

fn png_image() -> Vec<u8> {
    let image = image::RgbImage::from_fn(320, 200, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).expect("png");
    bytes.into_inner()
}

fn jpeg_image() -> Vec<u8> {
    let image = image::RgbImage::from_fn(320, 200, |x, _| image::Rgb([200, (x % 256) as u8, 30]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Jpeg).expect("jpeg");
    bytes.into_inner()
}

fn webp_image() -> Vec<u8> {
    let image = image::RgbaImage::from_fn(320, 200, |x, y| {
        image::Rgba([30, (x % 256) as u8, (y % 256) as u8, 255])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::WebP).expect("webp");
    bytes.into_inner()
}

#[tokio::test]
async fn every_listed_format_converts_to_a_pdf_with_its_text() {
    let documents = make_documents();
    let (kiln, storage) = kiln_with_office(&[]).await;
    let formats = [
        "docx", "doc", "pptx", "ppt", "xlsx", "xls", "odt", "odp", "ods", "rtf", "txt", "csv", "html",
    ];
    for ext in formats {
        let bytes = std::fs::read(documents.join(format!("sample.{ext}"))).expect("sample");
        put(&storage, &format!("uploads/sample.{ext}"), &bytes);
    }
    put(&storage, "uploads/picture.png", &png_image());
    put(&storage, "uploads/picture.jpg", &jpeg_image());
    put(&storage, "uploads/picture.webp", &webp_image());

    for ext in formats {
        let output = format!("pdfs/sample-{ext}.pdf");
        let run = convert(&kiln, &format!("uploads/sample.{ext}"), &output).await;
        assert_eq!(run["status"], "COMPLETED", "{ext}: {run}");
        let pdf = storage.join(&output);
        assert_eq!(run["output"]["key"], output.as_str());
        assert_eq!(
            run["output"]["size"],
            std::fs::metadata(&pdf).expect("pdf in storage").len()
        );
        let expected_pages = if matches!(ext, "pptx" | "ppt" | "odp") { 2 } else { 1 };
        assert_eq!(run["output"]["numPages"], expected_pages, "{ext}: {run}");
        let text = pdf_text(&pdf);
        assert!(
            text.contains(MARKER),
            "{ext}: the PDF's text holds the marker: {text:?}"
        );
    }
    for name in ["picture.png", "picture.jpg", "picture.webp"] {
        let output = format!("pdfs/{name}.pdf");
        let run = convert(&kiln, &format!("uploads/{name}"), &output).await;
        assert_eq!(run["status"], "COMPLETED", "{name}: {run}");
        assert_eq!(run["output"]["numPages"], 1, "{name}: one page");
        let pdf = std::fs::read(storage.join(&output)).expect("pdf");
        assert!(pdf.starts_with(b"%PDF-"));
        assert!(
            pdf.windows(8).any(|w| w == b"/Subtype"),
            "{name}: the image is in the PDF"
        );
    }
}

#[tokio::test]
async fn hostile_documents_fail_with_a_reason_and_the_pool_keeps_serving() {
    let documents = make_documents();
    let good = std::fs::read(documents.join("sample.docx")).expect("docx");
    // A document that would load a remote picture: it must never be fetched.
    let fetched = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&fetched);
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { "tracked" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (kiln, storage) = kiln_with_office(&[("KILN_OFFICE_POOL_SIZE", "1"), ("KILN_OFFICE_TIMEOUT", "8s")]).await;
    let mut truncated_zip = good.clone();
    truncated_zip.truncate(good.len() / 3);
    // Far more cells than fit in the time limit.
    let mut huge_csv = String::with_capacity(60 << 20);
    for row in 0..1_000_000 {
        huge_csv.push_str(&format!(
            "{row},{MARKER} row {row},{},{},{}\n",
            row * 3,
            row * 7,
            row % 13
        ));
    }
    let remote = format!(
        "<!DOCTYPE html><html><body><p>{MARKER} with a remote picture</p><img src=\"http://{addr}/pixel.png\"><link rel=\"stylesheet\" href=\"http://{addr}/style.css\"></body></html>"
    );
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("wrong-extension.docx", png_image(), Some("UnsupportedFormat")),
        (
            "locked.docx",
            std::fs::read(documents.join("locked.docx")).expect("locked"),
            Some("EncryptedDocument"),
        ),
        ("program.exe", b"MZ\x90\x00\x03".to_vec(), Some("UnsupportedFormat")),
        ("truncated.docx", truncated_zip, Some("ConversionFailed")),
        (
            "corrupt.xls",
            {
                let mut b = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
                b.extend((0..9000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
                b
            },
            Some("ConversionFailed"),
        ),
        ("huge.csv", huge_csv.into_bytes(), Some("ConversionTimeout")),
        ("remote.html", remote.into_bytes(), None),
    ];
    put(&storage, "uploads/good.docx", &good);
    for (name, bytes, expected) in &cases {
        put(&storage, &format!("hostile/{name}"), bytes);
        let run = convert(&kiln, &format!("hostile/{name}"), &format!("pdfs/{name}.pdf")).await;
        match expected {
            Some(error) => {
                assert_eq!(run["status"], "FAILED", "{name}: {run}");
                assert_eq!(run["error"]["name"], *error, "{name}: {run}");
                assert!(
                    run["error"]["message"].as_str().unwrap_or_default().len() > 10,
                    "{name}: a reason"
                );
                assert_eq!(run["attemptCount"], 1, "{name}: not retried");
                assert!(
                    !storage.join(format!("pdfs/{name}.pdf")).exists(),
                    "{name}: no PDF written"
                );
            }
            None => {
                assert_eq!(run["status"], "COMPLETED", "{name}: {run}");
                assert!(pdf_text(&storage.join(format!("pdfs/{name}.pdf"))).contains(MARKER));
            }
        }
        // The pool (of one) still converts.
        let after = convert(&kiln, "uploads/good.docx", &format!("pdfs/after-{name}.pdf")).await;
        assert_eq!(after["status"], "COMPLETED", "after {name}: {after}");
    }
    assert_eq!(
        fetched.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no remote content was fetched"
    );
}

#[tokio::test]
async fn a_chained_conversion_ends_with_page_images_and_two_linked_runs() {
    let documents = make_documents();
    let (kiln, storage) = kiln_with_office(&[]).await;
    put(
        &storage,
        "uploads/deck.pptx",
        &std::fs::read(documents.join("sample.pptx")).expect("pptx"),
    );
    let payload = json!({ "payload": {
        "source": { "key": "uploads/deck.pptx" },
        "output": { "key": "pdfs/deck.pdf" },
        "preview": { "outputPrefix": "previews/deck" },
    } });
    let parent_id = kiln.trigger("kiln.office.to-pdf", payload).await;
    let parent = kiln
        .wait_for(&parent_id, WITHIN, |run| run["isCompleted"] == true)
        .await;
    assert_eq!(parent["status"], "COMPLETED", "{parent}");
    let child_id = parent["output"]["previewRunId"]
        .as_str()
        .expect("the child run's id")
        .to_owned();
    let child = kiln.wait_for(&child_id, WITHIN, |run| run["isCompleted"] == true).await;
    assert_eq!(child["status"], "COMPLETED", "{child}");
    assert_eq!(child["taskIdentifier"], "kiln.pdf.preview");
    assert_eq!(child["payload"]["source"]["key"], "pdfs/deck.pdf");
    assert_eq!(child["output"]["numPages"], 2, "{child}");
    for page in child["output"]["pages"].as_array().expect("pages") {
        let key = page["key"].as_str().expect("key");
        assert!(key.starts_with("previews/deck/page-"));
        image::load_from_memory(&std::fs::read(storage.join(key)).expect("image")).expect("decodes");
    }
    // Linked both ways, as Trigger's relatedRuns.
    assert_eq!(child["relatedRuns"]["parent"]["id"], parent_id.as_str());
    assert_eq!(child["depth"], 1);
    let parent = kiln.retrieve(&parent_id).await;
    let children = parent["relatedRuns"]["children"].as_array().expect("children");
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["id"], child_id.as_str());
    assert_eq!(children[0]["status"], "COMPLETED");
}

/// The processes whose command line names `pipe`, as (pid, program): the
/// instances and bridges of one worker's pool. A zombie has no command
/// line, so a killed process stops counting once it is dead.
fn pool_processes(pipe: &str) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            args.iter()
                .any(|arg| arg.contains(pipe))
                .then(|| (pid, args[0].clone()))
        })
        .collect()
}

/// `kill -9` gives a worker no chance to stop its pool; the kernel must
/// take LibreOffice down with it, or every crash of a worker would leave a
/// few hundred megabytes running for good.
#[tokio::test]
async fn libreoffice_dies_with_a_worker_killed_without_warning() {
    let kiln = Kiln::builder(helpers::Mode::Serve).spawn().await;
    let mut worker = kiln.spawn_worker(&[("KILN_OFFICE_WARM_UP", "true"), ("KILN_OFFICE_POOL_SIZE", "2")]);
    let pipe = format!("kiln_office_{}_", worker.child.id());
    // Warm: both instances have become soffice.bin itself (past the
    // wrappers that start it) and their bridges run.
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let running = pool_processes(&pipe);
        let instances = running
            .iter()
            .filter(|(_, program)| program.ends_with("soffice.bin"))
            .count();
        if instances == 2 && running.len() == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool did not warm up: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    worker.kill_hard();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = pool_processes(&pipe);
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            for (pid, _) in &left {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
            panic!("LibreOffice outlived its worker: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// LibreOffice and its bridge parse untrusted files: none of kiln's secrets
/// (server secret, database and Redis URLs) is in their environment, they
/// hold no capabilities and no network, and a process without
/// capabilities, as they are, cannot read the (root) worker's environment
/// from `/proc` either. (For a worker that is not root, see
/// `isolation::a_process_of_the_workers_own_user_cannot_read_its_secrets_from_proc`.)
#[tokio::test]
async fn libreoffice_starts_without_kilns_secrets() {
    let kiln = Kiln::builder(helpers::Mode::Serve).spawn().await;
    let worker = kiln.spawn_worker(&[("KILN_OFFICE_WARM_UP", "true"), ("KILN_OFFICE_POOL_SIZE", "1")]);
    let pipe = format!("kiln_office_{}_", worker.child.id());
    let deadline = tokio::time::Instant::now() + WITHIN;
    let running = loop {
        let running = pool_processes(&pipe);
        // Each process starts as the containment wrappers (unshare, then
        // setpriv, then prlimit), which exec one another: read its /proc
        // once it is the program itself, not mid-way.
        let wrapped = |program: &str| ["unshare", "setpriv", "prlimit"].iter().any(|w| program.ends_with(w));
        if running.iter().any(|(_, program)| program.ends_with("soffice.bin"))
            && running.len() == 2
            && !running.iter().any(|(_, program)| wrapped(program))
        {
            break running;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool did not start: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (pid, program) in running {
        helpers::assert_contained(Path::new(&format!("/proc/{pid}")), worker.child.id(), &program);
    }
    let read = std::process::Command::new("setpriv")
        .args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
            "cat",
        ])
        .arg(format!("/proc/{}/environ", worker.child.id()))
        .output()
        .expect("setpriv");
    assert!(
        !read.status.success() && !String::from_utf8_lossy(&read.stdout).contains("DATABASE_URL"),
        "a process without capabilities read the worker's environment"
    );
    drop(worker);
}

/// Runs LibreOffice's own command line, `soffice --convert-to pdf`, on
/// `files` (in `dir`) with a private profile; answers the folder the PDFs
/// are in, one per file it converted.
fn cold_soffice(dir: &Path, files: &[String]) -> PathBuf {
    let out = dir.join("cold");
    let soffice =
        std::env::var("KILN_SOFFICE_PATH").unwrap_or_else(|_| "/usr/lib/libreoffice/program/soffice.bin".into());
    for _ in 0..3 {
        let status = std::process::Command::new(&soffice)
            .args(["--headless", "--norestore", "--convert-to", "pdf", "--outdir"])
            .arg(&out)
            .arg(format!(
                "-env:UserInstallation=file://{}",
                dir.join(".cold-profile").display()
            ))
            .args(files.iter().map(|name| dir.join(name)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("soffice");
        // 81: soffice.bin made a new profile and wants to be started again.
        if status.code() != Some(81) {
            break;
        }
    }
    out
}

/// Office saved many formats under the names .doc, .xls and .ppt (Word 6.0
/// and 95, RTF and Word 2003 XML as .doc; Excel 2.x to 5.0/95 and 2003 XML
/// as .xls; templates; new formats under old names and old under new).
/// Whatever of them LibreOffice's command line converts, kiln converts, with
/// the filter LibreOffice's detection picks; a file whose contents are of
/// another family than its name (CSV named .xls, HTML named .doc) is
/// refused, though LibreOffice would read it.
#[tokio::test]
async fn older_office_formats_that_libreoffice_converts_kiln_converts() {
    let dir = temp_dir("legacy-office-docs");
    let made = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/make_legacy_office_docs.py"
        ))
        .arg(&dir)
        .arg(MARKER)
        .status()
        .expect("python3");
    assert!(made.success(), "making the legacy documents");
    let manifest: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("manifest json");
    assert!(manifest.len() >= 25, "{manifest:?}");
    let names: Vec<String> = manifest.keys().cloned().collect();
    let cold = cold_soffice(&dir, &names);

    let (kiln, storage) = kiln_with_office(&[]).await;
    for (name, reads_with) in &manifest {
        let stem = name.rsplit_once('.').map_or(name.as_str(), |(stem, _)| stem);
        let cold_pdf = cold.join(format!("{stem}.pdf"));
        assert!(
            cold_pdf.exists() && pdf_text(&cold_pdf).contains(MARKER),
            "{name}: LibreOffice's command line converts it"
        );
        put(
            &storage,
            &format!("legacy/{name}"),
            &std::fs::read(dir.join(name)).expect("document"),
        );
        let output = format!("pdfs/legacy-{name}.pdf");
        let run = convert(&kiln, &format!("legacy/{name}"), &output).await;
        match reads_with.as_str() {
            Some(filter) => {
                assert_eq!(run["status"], "COMPLETED", "{name}: {run}");
                assert_eq!(run["output"]["importFilter"], filter, "{name}: {run}");
                assert!(run["output"].get("fallback").is_none(), "{name}: {run}");
                let text = pdf_text(&storage.join(&output));
                assert!(
                    text.contains(MARKER),
                    "{name}: the PDF's text holds the marker: {text:?}"
                );
            }
            None => {
                assert_eq!(run["status"], "FAILED", "{name}: {run}");
                assert_eq!(run["error"]["name"], "UnsupportedFormat", "{name}: {run}");
                assert_eq!(run["attemptCount"], 1, "{name}: not retried");
            }
        }
    }
}

/// Whether process `pid` has a file named `name` open.
fn holds_open(pid: u32, name: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| target.file_name().is_some_and(|file| file == name))
}

/// A warm LibreOffice instance killed in the middle of a document: the
/// document is converted again on a fresh instance, and when that one is
/// killed too, by a one-shot `soffice --convert-to pdf`; the run completes
/// either way, on its first attempt, and says which fallback converted it.
#[tokio::test]
async fn a_conversion_whose_instance_is_killed_completes_on_a_fresh_then_a_one_shot_soffice() {
    let (kiln, storage) = kiln_with_office(&[("KILN_OFFICE_POOL_SIZE", "1")]).await;
    // Long enough to import that LibreOffice holds the file open for a
    // while: the kill lands while it reads it.
    let mut rtf = String::from("{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times;}}\n");
    for paragraph in 0..8000 {
        rtf.push_str(&format!(
            "\\pard {MARKER} paragraph {paragraph} with {{\\b bold}} and {{\\i italic}} words\\par\n"
        ));
    }
    rtf.push('}');
    put(&storage, "uploads/long.rtf", rtf.as_bytes());
    let pipe = format!("kiln_office_{}_", kiln.pid());

    for (kills, fallback) in [(1, "freshInstance"), (2, "coldOneShot")] {
        let run_id = kiln
            .trigger(
                "kiln.office.to-pdf",
                json!({ "payload": { "source": { "key": "uploads/long.rtf" }, "output": { "key": format!("pdfs/long-{kills}.pdf") } } }),
            )
            .await;
        let mut killed = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + WITHIN;
        while killed.len() < kills {
            for (pid, program) in pool_processes(&pipe) {
                if program.ends_with("soffice.bin") && !killed.contains(&pid) && holds_open(pid, "source.rtf") {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                    killed.insert(pid);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no instance of the pool opened the document ({killed:?} killed)"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let run = kiln.wait_for(&run_id, WITHIN, |run| run["isCompleted"] == true).await;
        assert_eq!(run["status"], "COMPLETED", "after {kills} kill(s): {run}");
        assert_eq!(run["attemptCount"], 1, "{run}");
        assert_eq!(run["output"]["fallback"], fallback, "{run}");
        let text = pdf_text(&storage.join(format!("pdfs/long-{kills}.pdf")));
        assert!(
            text.contains(&format!("{MARKER} paragraph 7999")),
            "the whole document is in the PDF"
        );
    }
}
