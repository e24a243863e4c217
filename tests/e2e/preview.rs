//! `kiln.pdf.preview` end to end: PDFs made by `tests/support/pdfgen.rs`
//! (and one encrypted by qpdf) rendered by the real kiln binary with the
//! real libpdfium, read back from the storage folder and decoded.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{self, Kiln, put_object as put, temp_dir};
use crate::pdfgen::{self, LinkTarget, Page};

/// A bound for conditions that take seconds on an idle machine: room for a
/// loaded one.
const WITHIN: Duration = Duration::from_secs(240);

async fn kiln_with_storage(extra: &[(&str, &str)]) -> (Kiln, PathBuf) {
    helpers::kiln_with_storage("preview-objects", extra).await
}

async fn preview(kiln: &Kiln, source_key: &str, prefix: &str) -> Value {
    let run_id = kiln
        .trigger(
            "kiln.pdf.preview",
            json!({ "payload": { "source": { "key": source_key }, "outputPrefix": prefix } }),
        )
        .await;
    kiln.wait_for(&run_id, WITHIN, |run| run["isCompleted"] == true).await
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// Four pages: letter with links, landscape with a photo, a 1700 pt wide
/// page, and a poster that hits the caps.
fn mixed_document() -> Vec<u8> {
    pdfgen::build(&[
        Page::new(612.0, 792.0)
            .with_text(&["Page one", "See the appendix"])
            .with_link(
                [72.0, 700.0, 272.0, 720.0],
                LinkTarget::Uri("https://example.com/deck".into()),
            )
            .with_link([72.0, 600.0, 172.0, 620.0], LinkTarget::Page(2)),
        Page::new(792.0, 612.0).with_photo(640, 480),
        Page::new(1700.0, 1000.0)
            .with_text(&["A wide page"])
            .with_rect([100.0, 100.0, 300.0, 200.0], [0.8, 0.1, 0.1]),
        Page::new(5000.0, 5000.0).with_text(&["A poster"]),
    ])
}

#[tokio::test]
async fn a_mixed_document_renders_to_the_right_sizes_scales_links_and_formats() {
    let (kiln, storage) = kiln_with_storage(&[]).await;
    put(&storage, "docs/mixed.pdf", &mixed_document());
    let run = preview(&kiln, "docs/mixed.pdf", "previews/mixed").await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    let output = &run["output"];
    assert_eq!(output["numPages"], 4);
    assert_eq!(output["isVertical"], true);
    let pages = output["pages"].as_array().expect("pages");
    assert_eq!(pages.len(), 4);

    // (points, expected pixels or None for the capped poster, scale)
    let expected = [
        (612.0, 792.0, Some((1805, 2336)), 2.95),
        (792.0, 612.0, Some((2336, 1805)), 2.95),
        (1700.0, 1000.0, Some((3400, 2000)), 2.0),
    ];
    for (page, (w, h, pixels, scale)) in pages.iter().zip(expected) {
        assert_eq!(number(&page["originalWidth"]), w, "{page}");
        assert_eq!(number(&page["originalHeight"]), h, "{page}");
        assert_eq!(number(&page["scaleFactor"]), scale, "{page}");
        if let Some((pw, ph)) = pixels {
            assert_eq!(
                (page["width"].as_u64(), page["height"].as_u64()),
                (Some(pw), Some(ph)),
                "{page}"
            );
        }
    }
    let poster = &pages[3];
    let (pw, ph) = (
        poster["width"].as_u64().unwrap_or(0),
        poster["height"].as_u64().unwrap_or(0),
    );
    assert!(pw <= 8000 && ph <= 8000 && pw * ph <= 32_000_000, "capped: {poster}");
    assert!(pw * ph > 31_000_000, "as large as the caps allow: {poster}");
    assert!(number(&poster["scaleFactor"]) < 2.0);

    // Text pages are smaller as PNG; the photo page as JPEG.
    assert_eq!(pages[0]["contentType"], "image/png");
    assert_eq!(pages[1]["contentType"], "image/jpeg");

    for (index, page) in pages.iter().enumerate() {
        assert_eq!(page["pageNumber"], index + 1);
        let key = page["key"].as_str().expect("key");
        let extension = if page["contentType"] == "image/png" {
            "png"
        } else {
            "jpg"
        };
        assert_eq!(key, format!("previews/mixed/page-{}.{extension}", index + 1));
        let bytes = std::fs::read(storage.join(key)).expect("image in storage");
        let image = image::load_from_memory(&bytes).expect("every image decodes");
        assert_eq!(
            (u64::from(image.width()), u64::from(image.height())),
            (
                page["width"].as_u64().unwrap_or(0),
                page["height"].as_u64().unwrap_or(0)
            ),
            "{key}"
        );
    }
    // The photo survived: its page's top half is colourful, the rest white.
    let photo = image::load_from_memory(&std::fs::read(storage.join("previews/mixed/page-2.jpg")).expect("read"))
        .expect("decode")
        .to_rgb8();
    let [r, g, b] = photo.get_pixel(1168, 1600).0;
    assert!(r > 200 && g > 200 && b > 200, "lower half white: {r} {g} {b}");
    let [r, _, b] = photo.get_pixel(2000, 400).0;
    assert!(r.abs_diff(b) > 30, "upper half a photo: {r} {b}");

    let links = pages[0]["links"].as_array().expect("links");
    assert_eq!(links.len(), 2, "{links:?}");
    let external = links.iter().find(|l| l["isInternal"] == false).expect("external link");
    assert_eq!(external["href"], "https://example.com/deck");
    assert_eq!(external["coords"], "72,72,272,92", "top-left origin, in points");
    assert!(external.get("targetPage").is_none());
    let internal = links.iter().find(|l| l["isInternal"] == true).expect("internal link");
    assert_eq!(internal["targetPage"], 3);
    assert_eq!(internal["href"], "#page=3");
    assert_eq!(internal["coords"], "72,172,172,192");
    assert_eq!(pages[1]["links"], json!([]));

    assert_eq!(run["metadata"]["progress"], 100);
    assert_eq!(run["metadata"]["text"], "4 / 4 pages processed");
}

#[tokio::test]
async fn progress_is_readable_while_pages_render() {
    // One renderer, so pages finish one after another.
    let (kiln, storage) = kiln_with_storage(&[("KILN_PREVIEW_PARALLELISM", "1")]).await;
    put(&storage, "docs/long.pdf", &pdfgen::sample_document(20));
    let run_id = kiln
        .trigger(
            "kiln.pdf.preview",
            json!({ "payload": { "source": { "key": "docs/long.pdf" }, "outputPrefix": "previews/long" } }),
        )
        .await;
    let midway = kiln
        .wait_for(&run_id, WITHIN, |run| {
            run["isCompleted"] == true
                || run["metadata"]["progress"]
                    .as_u64()
                    .is_some_and(|p| (1..100).contains(&p))
        })
        .await;
    assert_eq!(midway["status"], "EXECUTING", "seen before the end: {midway}");
    let text = midway["metadata"]["text"].as_str().unwrap_or_default().to_owned();
    assert!(text.ends_with(" / 20 pages processed"), "{text}");
    let done = kiln.wait_for(&run_id, WITHIN, |run| run["isCompleted"] == true).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["metadata"]["text"], "20 / 20 pages processed");
    assert_eq!(done["output"]["numPages"], 20);
}

fn encrypted_copy(plain: &[u8]) -> Vec<u8> {
    let dir = temp_dir("qpdf");
    let (input, output) = (dir.join("plain.pdf"), dir.join("locked.pdf"));
    std::fs::write(&input, plain).expect("write");
    let status = std::process::Command::new("qpdf")
        .args(["--encrypt", "user-secret", "owner-secret", "256", "--"])
        .arg(&input)
        .arg(&output)
        .status()
        .expect("qpdf (scripts/test installs it)");
    assert!(status.success(), "qpdf --encrypt");
    std::fs::read(output).expect("read encrypted")
}

/// A page whose drawing takes far longer than the page timeout: 400,000
/// overlapping transparent curves, about a minute of pdfium's time.
fn slow_document() -> Vec<u8> {
    let mut content = String::from("/GS1 gs 0.5 w\n");
    for i in 0..400_000 {
        let (x, y) = ((i * 37) % 600, (i * 53) % 780);
        content.push_str(&format!(
            "{x} {y} m {} {} {} {} {} {} c S\n",
            x + 300,
            y + 10,
            x - 200,
            y + 400,
            x + 5,
            y + 7
        ));
    }
    let mut page = Page::new(612.0, 792.0);
    page.content = content;
    pdfgen::build(&[page]).replace_resources(
        "/Font << /F1 3 0 R >>",
        "/Font << /F1 3 0 R >> /ExtGState << /GS1 << /ca 0.3 /CA 0.3 >> >>",
    )
}

trait ReplaceBytes {
    fn replace_resources(self, from: &str, to: &str) -> Vec<u8>;
}

impl ReplaceBytes for Vec<u8> {
    /// Rewrites a dictionary in place and fixes nothing else: pdfium
    /// rebuilds the cross-reference table of a file whose offsets moved.
    fn replace_resources(self, from: &str, to: &str) -> Vec<u8> {
        let text = self
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
            .replacen(from, to, 1);
        text.chars().map(|c| c as u8).collect()
    }
}

#[tokio::test]
async fn hostile_files_fail_at_once_with_a_reason_and_the_worker_keeps_serving() {
    let (kiln, storage) = kiln_with_storage(&[
        ("KILN_PREVIEW_MEMORY_LIMIT_MB", "512"),
        // A good page renders in about 0.2 s and the slow one in about a
        // minute (measured with `kiln render-pdf`): room for a loaded
        // machine on both sides.
        ("KILN_PREVIEW_PAGE_TIMEOUT", "10s"),
    ])
    .await;
    let good = pdfgen::sample_document(3);
    let mut empty = pdfgen::build(&[Page::new(612.0, 792.0)]);
    empty = empty.replace_resources("/Kids [4 0 R] /Count 1", "/Kids [] /Count 0");
    let absurd = pdfgen::build(&[Page::new(612.0, 792.0)])
        .replace_resources("/MediaBox [0 0 612 792]", "/MediaBox [0 0 9000000 3]");
    let mut bomb_page = Page::new(612.0, 792.0);
    bomb_page.raw_content = Some((pdfgen::zero_bomb(3 << 30), "FlateDecode"));
    let mut corrupt = b"%PDF-1.7\n".to_vec();
    corrupt.extend((0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    corrupt.extend_from_slice(b"\n%%EOF\n");
    // What each file must fail with: one reason, or for the bomb either
    // of two (it reaches the memory limit within the page time on an idle
    // machine, but a loaded one may inflate it too slowly for that).
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "not-a-pdf",
            b"\x89PNG\r\n\x1a\nthis is an image, not a document".to_vec(),
            &["NotAPdf"],
        ),
        // Cut inside its first objects: nothing is left that MuPDF or qpdf
        // can make a page of. (A file cut later is repaired: see
        // a_damaged_pdf_that_mupdf_renders_kiln_renders_too.)
        ("truncated", good[..200].to_vec(), &["TruncatedPdf"]),
        ("corrupt", corrupt, &["CorruptPdf"]),
        ("encrypted", encrypted_copy(&good), &["EncryptedPdf"]),
        ("empty", empty, &["EmptyPdf"]),
        ("absurd", absurd, &["AbsurdPageSize"]),
        (
            "bomb",
            pdfgen::build(&[bomb_page]),
            &["RendererCrashed", "RenderTimeout"],
        ),
        ("slow", slow_document(), &["RenderTimeout"]),
    ];
    for (name, bytes, _) in &cases {
        put(&storage, &format!("hostile/{name}.pdf"), bytes);
    }
    put(&storage, "docs/good.pdf", &good);

    let mut run_ids = Vec::new();
    for (name, _, expected) in &cases {
        let run = preview(&kiln, &format!("hostile/{name}.pdf"), &format!("previews/{name}")).await;
        assert_eq!(run["status"], "FAILED", "{name}: {run}");
        assert!(
            run["error"]["name"]
                .as_str()
                .is_some_and(|reason| expected.contains(&reason)),
            "{name}: fails with one of {expected:?}: {run}"
        );
        let message = run["error"]["message"].as_str().unwrap_or_default();
        assert!(message.len() > 10, "{name}: a reason is given: {run}");
        assert_eq!(run["attemptCount"], 1, "{name}: not retried: {run}");
        run_ids.push(run["id"].as_str().unwrap_or_default().to_owned());
        assert!(
            !storage.join(format!("previews/{name}")).exists()
                || std::fs::read_dir(storage.join(format!("previews/{name}")))
                    .map(|d| d.count())
                    .unwrap_or(0)
                    == 0,
            "{name}: no images left behind"
        );
        // The worker is still there, and still renders.
        let after = preview(&kiln, "docs/good.pdf", &format!("previews/after-{name}")).await;
        assert_eq!(after["status"], "COMPLETED", "after {name}: {after}");
        assert_eq!(after["output"]["numPages"], 3);
    }
    // Every run's work folder (named after its run id) is gone.
    let leftovers: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .expect("tmp")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| run_ids.iter().any(|id| n.starts_with(&format!("kiln-preview-{id}-"))))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_url_source_is_fetched_only_where_allowed() {
    let document = pdfgen::sample_document(2);
    let app = axum::Router::new().route(
        "/files/doc.pdf",
        axum::routing::get(move || {
            let body = document.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/files/doc.pdf");
    let payload = json!({ "payload": { "source": { "url": url }, "outputPrefix": "previews/by-url" } });

    let (strict, _) = kiln_with_storage(&[]).await;
    let run_id = strict.trigger("kiln.pdf.preview", payload.clone()).await;
    let refused = strict.wait_for(&run_id, WITHIN, |run| run["isCompleted"] == true).await;
    assert_eq!(refused["status"], "FAILED", "{refused}");
    assert_eq!(refused["error"]["name"], "ForbiddenHost", "{refused}");
    assert_eq!(refused["attemptCount"], 1);

    let (open, storage) = kiln_with_storage(&[("KILN_HTTP_ALLOW_PRIVATE", "true")]).await;
    let run_id = open.trigger("kiln.pdf.preview", payload).await;
    let fetched = open.wait_for(&run_id, WITHIN, |run| run["isCompleted"] == true).await;
    assert_eq!(fetched["status"], "COMPLETED", "{fetched}");
    assert_eq!(fetched["output"]["numPages"], 2);
    for page in fetched["output"]["pages"].as_array().expect("pages") {
        let key = page["key"].as_str().unwrap_or_default();
        assert!(key.starts_with("previews/by-url/page-"), "{key}");
        assert!(storage.join(key).is_file(), "{key} in storage");
    }

    let (listed, _) = kiln_with_storage(&[
        ("KILN_HTTP_ALLOW_PRIVATE", "true"),
        ("KILN_HTTP_ALLOWED_HOSTS", "files.example.com"),
    ])
    .await;
    let run_id = listed
        .trigger(
            "kiln.pdf.preview",
            json!({ "payload": { "source": { "url": format!("http://{addr}/files/doc.pdf") }, "outputPrefix": "p" } }),
        )
        .await;
    let unlisted = listed.wait_for(&run_id, WITHIN, |run| run["isCompleted"] == true).await;
    assert_eq!(
        unlisted["error"]["name"], "ForbiddenHost",
        "a host not in the list: {unlisted}"
    );
}

#[tokio::test]
async fn a_bad_payload_or_missing_source_fails_without_retrying() {
    let (kiln, _) = kiln_with_storage(&[]).await;
    for (payload, expected) in [
        (
            json!({ "source": { "key": "docs/none.pdf" }, "outputPrefix": "p" }),
            "MissingSourceFile",
        ),
        (json!({ "source": { "key": "docs/a.pdf" } }), "InvalidPayload"),
        (
            json!({ "source": { "key": "../etc/passwd" }, "outputPrefix": "p" }),
            "InvalidPayload",
        ),
        (
            json!({ "source": { "key": "docs/a.pdf" }, "outputPrefix": "../up" }),
            "InvalidPayload",
        ),
    ] {
        let run_id = kiln.trigger("kiln.pdf.preview", json!({ "payload": payload })).await;
        let run = kiln.wait_for(&run_id, WITHIN, |run| run["isCompleted"] == true).await;
        assert_eq!(run["status"], "FAILED", "{payload}: {run}");
        assert_eq!(run["error"]["name"], expected, "{payload}: {run}");
        assert_eq!(run["attemptCount"], 1);
    }
}

#[tokio::test]
async fn without_libpdfium_kiln_says_so_at_start_and_runs_fail_naming_the_fix() {
    let (kiln, storage) = kiln_with_storage(&[
        ("PDFIUM_LIB_PATH", "/nowhere/libpdfium.so"),
        ("KILN_RETRY_MIN_DELAY", "10ms"),
        ("KILN_RETRY_MAX_DELAY", "50ms"),
    ])
    .await;
    let log = std::fs::read_to_string(&kiln.log_path).expect("log");
    assert!(
        log.contains("PDFIUM_LIB_PATH=/nowhere/libpdfium.so names no file"),
        "start-up says what is missing: {log}"
    );
    put(&storage, "docs/a.pdf", &pdfgen::sample_document(1));
    let run = preview(&kiln, "docs/a.pdf", "previews/a").await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["error"]["name"], "RendererUnavailable");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("PDFIUM_LIB_PATH"),
        "{run}"
    );
}

#[tokio::test]
async fn json_logs_carry_the_run_id_on_the_handler_s_lines() {
    let (kiln, storage) = kiln_with_storage(&[("KILN_LOG_FORMAT", "json")]).await;
    put(&storage, "docs/a.pdf", &pdfgen::sample_document(2));
    let run = preview(&kiln, "docs/a.pdf", "previews/logged").await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    let run_id = run["id"].as_str().expect("id");
    let log = std::fs::read_to_string(&kiln.log_path).expect("log");
    let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "the log is JSON lines: {log}");
    let written = lines
        .iter()
        .find(|line| line["fields"]["message"] == "preview written")
        .unwrap_or_else(|| panic!("the handler logged: {log}"));
    assert_eq!(written["span"]["run_id"], run_id, "{written}");
    assert_eq!(written["span"]["task"], "kiln.pdf.preview");
}

/// A renderer parses the untrusted PDF: it starts without kiln's secrets in
/// its environment, can never gain privileges, holds no capabilities, has
/// no network and file limits (see `helpers::assert_contained`).
#[tokio::test]
async fn a_renderer_runs_without_kilns_secrets_or_new_privileges() {
    let (kiln, storage) = kiln_with_storage(&[("KILN_PREVIEW_PAGE_TIMEOUT", "120s")]).await;
    put(&storage, "hostile/slow.pdf", &slow_document());
    let run_id = kiln
        .trigger(
            "kiln.pdf.preview",
            json!({ "payload": { "source": { "key": "hostile/slow.pdf" }, "outputPrefix": "previews/slow" } }),
        )
        .await;
    // The renderer's command line names its run's work folder. It starts
    // as setpriv, which drops the privileges and then becomes kiln: only
    // a process that is kiln already is the renderer.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let renderer = loop {
        let found = std::fs::read_dir("/proc").ok().and_then(|entries| {
            entries.filter_map(Result::ok).find_map(|entry| {
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
                (cmdline.contains("render-pdf") && cmdline.contains(&run_id) && name.trim() == "kiln")
                    .then(|| entry.path())
            })
        });
        if let Some(path) = found {
            break path;
        }
        assert!(std::time::Instant::now() < deadline, "no renderer for {run_id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    helpers::assert_contained(&renderer, kiln.pid(), "the renderer");
    let canceled = kiln.post(&format!("/api/v2/runs/{run_id}/cancel"), &json!({})).await;
    assert!(canceled.status().is_success());
}

/// Damaged copies of a good three-page document, made here: the kinds of
/// damage real uploads carry.
fn damaged_documents() -> Vec<(&'static str, Vec<u8>)> {
    let good = pdfgen::sample_document(3);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let find = |needle: &str| {
        good.windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .unwrap_or_else(|| panic!("{needle} is in the sample"))
    };
    let xref = find("\nxref\n") + 1;
    // Every offset in the xref table seven bytes off.
    let mut shifted = good[..xref].to_vec();
    for line in text(&good[xref..]).split_inclusive('\n') {
        match line.strip_suffix(" 00000 n \n").and_then(|o| o.parse::<usize>().ok()) {
            Some(offset) => shifted.extend(format!("{:010} 00000 n \n", offset + 7).into_bytes()),
            None => shifted.extend(line.as_bytes()),
        }
    }
    let mut garbage_after = good.clone();
    garbage_after.extend(std::iter::repeat_n(b"\0garbage after the end ".as_slice(), 200).flatten());
    let first_page = find("4 0 obj");
    let endobj = first_page + find_from(&good[first_page..], b"endobj");
    let mut missing_endobj = good[..endobj].to_vec();
    missing_endobj.extend_from_slice(&good[endobj + "endobj".len()..]);
    // The first stream's /Length forty bytes longer than the stream.
    let length_at = find("/Length ") + "/Length ".len();
    let digits = good[length_at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let declared: usize = text(&good[length_at..length_at + digits]).parse().unwrap_or(0);
    let mut wrong_length = good[..length_at].to_vec();
    wrong_length.extend(format!("{}", declared + 40).into_bytes());
    wrong_length.extend_from_slice(&good[length_at + digits..]);
    vec![
        ("trailer-cut", good[..xref].to_vec()),
        ("cut-in-half", good[..good.len() / 2].to_vec()),
        ("xref-offsets-wrong", shifted),
        ("garbage-after-eof", garbage_after),
        ("stream-length-wrong", wrong_length),
        ("endobj-missing", missing_endobj),
        (
            "page-tree-broken",
            good.clone().replace_resources("/Kids [4 0 R", "/Kids [99 0 R"),
        ),
    ]
}

fn find_from(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{} is in the sample", String::from_utf8_lossy(needle)))
}

/// How many pages MuPDF's `mutool draw` renders of `bytes` (it may draw
/// some and then stop on one it cannot load), or `None` when it renders
/// none: the reference kiln must match or better.
fn mutool_pages(name: &str, bytes: &[u8]) -> Option<usize> {
    let dir = temp_dir(&format!("mutool-{name}"));
    let input = dir.join("in.pdf");
    std::fs::write(&input, bytes).expect("write");
    let status = std::process::Command::new("mutool")
        .arg("draw")
        .arg("-q")
        .arg("-r")
        .arg("20")
        .arg("-o")
        .arg(dir.join("page-%d.png"))
        .arg(&input)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("mutool (scripts/test installs mupdf-tools)");
    let drawn = std::fs::read_dir(&dir)
        .expect("read")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("page-"))
        .count();
    // Its exit status is not the measure: it fails on a page it cannot
    // load after drawing the others.
    let _ = status;
    (drawn > 0).then_some(drawn)
}

#[tokio::test]
async fn a_damaged_pdf_that_mupdf_renders_kiln_renders_too() {
    let (kiln, storage) = kiln_with_storage(&[]).await;
    let mut repaired = Vec::new();
    for (name, bytes) in damaged_documents() {
        put(&storage, &format!("damaged/{name}.pdf"), &bytes);
        let reference = mutool_pages(name, &bytes);
        let run = preview(&kiln, &format!("damaged/{name}.pdf"), &format!("previews/{name}")).await;
        let Some(expected_pages) = reference else {
            assert_eq!(run["status"], "FAILED", "{name}: MuPDF renders nothing of it: {run}");
            assert_eq!(run["attemptCount"], 1, "{name}: {run}");
            assert!(
                run["error"]["message"].as_str().is_some_and(|m| m.len() > 10),
                "{name}: {run}"
            );
            continue;
        };
        assert_eq!(
            run["status"], "COMPLETED",
            "{name}: mutool draw renders {expected_pages} pages: {run}"
        );
        let output = &run["output"];
        let pages = output["numPages"].as_u64().unwrap_or(0);
        assert!(
            pages >= expected_pages as u64,
            "{name}: MuPDF draws {expected_pages} pages: {run}"
        );
        for page in output["pages"].as_array().expect("pages") {
            let key = page["key"].as_str().expect("key");
            let image = image::open(storage.join(key)).unwrap_or_else(|e| panic!("{name}: {key} decodes: {e}"));
            assert_eq!(
                (u64::from(image.width()), u64::from(image.height())),
                (
                    page["width"].as_u64().unwrap_or(0),
                    page["height"].as_u64().unwrap_or(0)
                ),
                "{name}: {key}"
            );
        }
        if !output["repair"].is_null() {
            assert_eq!(output["repair"]["tool"], "mutool clean (MuPDF)", "{name}: {output}");
            assert!(output["repair"]["reason"].as_str().is_some_and(|r| !r.is_empty()));
            repaired.push(name);
        }
    }
    // These two pdfium cannot read by itself: the repair pass is what
    // renders them.
    for name in ["trailer-cut", "page-tree-broken"] {
        assert!(repaired.contains(&name), "{name} went through the repair: {repaired:?}");
    }
}
