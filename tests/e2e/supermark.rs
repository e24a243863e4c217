//! Supermark's own task ids end to end: a fresh database with Supermark's
//! tables, an S3 server (s3s-fs) holding uploads under Supermark's keys, a
//! stand-in for Supermark's app that records the requests kiln makes to
//! it, and the SDK version Supermark locks (4.1.2) triggering as Supermark
//! does. Every column, row, key, content type, image size, link, status
//! text and request is then checked against Supermark's own behaviour.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_storage::{ObjectKey, ObjectStore, S3Store};
use serde_json::{Value, json};
use sqlx::{PgPool, Row};

use crate::helpers::{self, Kiln, Mode, S3Server, temp_dir};
use crate::pdfgen::{LinkTarget, Page, build};

const WITHIN: Duration = Duration::from_secs(180);
const TEAM: &str = "clteam0000000000000000001";
const REVALIDATE_TOKEN: &str = "revalidate-secret";
const INTERNAL_KEY: &str = "internal-api-key";

/// A request Supermark's app received from kiln.
#[derive(Debug, Clone)]
struct AppRequest {
    method: String,
    uri: String,
    authorization: Option<String>,
    body: String,
}

/// Supermark's app, as far as kiln calls it: records every request and
/// answers 200.
struct FakeApp {
    url: String,
    requests: Arc<Mutex<Vec<AppRequest>>>,
}

impl FakeApp {
    async fn start() -> FakeApp {
        let requests: Arc<Mutex<Vec<AppRequest>>> = Arc::default();
        let recorded = Arc::clone(&requests);
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let recorded = Arc::clone(&recorded);
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
                let entry = AppRequest {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    authorization: parts
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                if let Ok(mut list) = recorded.lock() {
                    list.push(entry);
                }
                axum::Json(json!({ "message": "ok" }))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeApp { url, requests }
    }

    fn requests(&self) -> Vec<AppRequest> {
        self.requests.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// kiln beside a Supermark: its database, its bucket, its app.
struct Stack {
    kiln: Kiln,
    db: PgPool,
    bucket: S3Store,
    app: FakeApp,
    _s3: S3Server,
}

impl Stack {
    async fn start() -> Stack {
        let s3 = S3Server::start().await;
        let bucket_name = format!("supermark-{}", rand::random::<u32>());
        let bucket = S3Store::new(&s3.config(&bucket_name, kiln_storage::DEFAULT_PART_SIZE)).expect("s3 config");
        bucket.ensure_bucket().await.expect("bucket");
        let supermark_url = helpers::fresh_database().await;
        let db = PgPool::connect(&supermark_url).await.expect("supermark db");
        let schema = include_str!("../support/supermark_schema.sql");
        sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
            .execute(&db)
            .await
            .expect("schema");
        sqlx::query(r#"INSERT INTO "Team" (id, name, plan, "updatedAt") VALUES ($1, 'Acme', 'pro+drtrial', now())"#)
            .bind(TEAM)
            .execute(&db)
            .await
            .expect("team");
        let app = FakeApp::start().await;
        // Supermark's own URL, with Prisma's parameters, and its variables.
        let prisma_url = format!("{supermark_url}?schema=public&pgbouncer=true&connection_limit=10");
        let mut builder = Kiln::builder(Mode::Dev)
            .env("POSTGRES_PRISMA_URL", prisma_url)
            .env("NEXTAUTH_URL", app.url.clone())
            .env("REVALIDATE_TOKEN", REVALIDATE_TOKEN)
            .env("INTERNAL_API_KEY", INTERNAL_KEY)
            .env("NEXT_PUBLIC_UPLOAD_TRANSPORT", "s3")
            .env("NEXT_PRIVATE_UPLOAD_FORCE_PATH_STYLE", "true")
            .env("KILN_OFFICE_WARM_UP", "true")
            // The tests' keys are dev keys; Supermark's tasks serve one environment.
            .env("KILN_SUPERMARK_ENVIRONMENT", "dev")
            .env("KILN_STORAGE_DIR", temp_dir("supermark-kiln").to_string_lossy());
        for (name, value) in s3.supermark_env(&bucket_name) {
            builder = builder.env(name, value);
        }
        Stack {
            kiln: builder.spawn().await,
            db,
            bucket,
            app,
            _s3: s3,
        }
    }

    /// A document with one version whose upload is `bytes` at
    /// `<team>/<docId>/<file name>`; answers (documentId, versionId, key).
    async fn upload(&self, name: &str, kind: &str, content_type: &str, bytes: &[u8]) -> (String, String, String) {
        let document = format!("cldoc{}", rand::random::<u64>());
        let version = format!("clver{}", rand::random::<u64>());
        let folder = format!("doc_{}", rand::random::<u32>());
        let key = format!("{TEAM}/{folder}/{}", kiln_app_supermark::slug::object_name(name));
        self.put(&key, bytes, content_type).await;
        sqlx::query(
            r#"INSERT INTO "Document" (id, name, file, "originalFile", type, "contentType", "storageType", "teamId", "updatedAt")
               VALUES ($1, $2, $3, $3, $4, $5, 'S3_PATH', $6, now())"#,
        )
        .bind(&document)
        .bind(name)
        .bind(&key)
        .bind(kind)
        .bind(content_type)
        .bind(TEAM)
        .execute(&self.db)
        .await
        .expect("document");
        self.add_version(&document, &version, 1, &key, kind, content_type).await;
        (document, version, key)
    }

    async fn add_version(&self, document: &str, version: &str, number: i32, key: &str, kind: &str, content_type: &str) {
        sqlx::query(
            r#"INSERT INTO "DocumentVersion" (id, "versionNumber", "documentId", file, "originalFile", type, "contentType",
                                              "storageType", "isPrimary", "updatedAt")
               VALUES ($1, $2, $3, $4, $4, $5, $6, 'S3_PATH', true, now() - interval '1 hour')"#,
        )
        .bind(version)
        .bind(number)
        .bind(document)
        .bind(key)
        .bind(kind)
        .bind(content_type)
        .execute(&self.db)
        .await
        .expect("version");
    }

    async fn put(&self, key: &str, bytes: &[u8], content_type: &str) {
        let key = ObjectKey::parse(key).expect("key");
        kiln_storage::put_bytes(&self.bucket, &key, bytes, content_type)
            .await
            .expect("upload");
    }

    /// Runs `command` (a script in tests/sdk, with whatever runs it) against
    /// this kiln with Supermark's trigger `spec`; answers its output once
    /// it succeeded.
    async fn sdk_script(&self, command: &[&str], spec: Value) -> std::process::Output {
        let sdk_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
        let (url, secret) = (self.kiln.base_url.clone(), self.kiln.key.clone());
        let shown = command.join(" ");
        let command: Vec<String> = command.iter().map(|&a| a.to_owned()).collect();
        let output = tokio::task::spawn_blocking(move || {
            Command::new(&command[0])
                .args(&command[1..])
                .current_dir(sdk_dir)
                .env("TRIGGER_API_URL", url)
                .env("TRIGGER_SECRET_KEY", secret)
                .env("SUPERMARK_TRIGGER", spec.to_string())
                .output()
                .expect("node")
        })
        .await
        .expect("join");
        assert!(
            output.status.success(),
            "{shown}: {}\n{}\nkiln log: {}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout),
            self.kiln.log_path.display()
        );
        output
    }

    /// Triggers with the SDK as Supermark's webapp does; answers the run id.
    async fn trigger(&self, task: &str, payload: Value, key: &str) -> String {
        let spec = json!({ "task": task, "payload": payload, "plan": "pro+drtrial", "key": key });
        let output = self.sdk_script(&["node", "supermark.mjs"], spec).await;
        let line: Value = serde_json::from_slice(&output.stdout).expect("json line");
        line["id"].as_str().expect("id").to_owned()
    }

    /// The `convert-pdf-to-image-route` run tagged `version:<version>`.
    async fn pages_run_of(&self, version: &str) -> Value {
        let listed: Value = self
            .kiln
            .http
            .get(self.kiln.url(&format!("/api/v1/runs?filter[tag]=version:{version}")))
            .bearer_auth(&self.kiln.key)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        listed["data"]
            .as_array()
            .and_then(|runs| {
                runs.iter()
                    .find(|r| r["taskIdentifier"] == "convert-pdf-to-image-route")
            })
            .cloned()
            .unwrap_or_else(|| panic!("a pages run tagged version:{version}: {listed}"))
    }

    /// Triggers `task` for a version as Supermark does (its key with
    /// `suffix`) and waits for the run to end.
    async fn run_as_supermark(&self, task: &str, document: &str, version: &str, suffix: &str) -> Value {
        let run_id = self
            .trigger(
                task,
                version_payload(document, version),
                &format!("{TEAM}-{version}{suffix}"),
            )
            .await;
        self.finished(&run_id).await
    }

    async fn finished(&self, run_id: &str) -> Value {
        self.kiln
            .wait_for(run_id, WITHIN, |run| run["isCompleted"] == true)
            .await
    }

    async fn version(&self, id: &str) -> sqlx::postgres::PgRow {
        sqlx::query(
            r#"SELECT file, type, "storageType"::text AS storage, "numPages", "hasPages", "isPrimary", "isVertical",
                      length, "updatedAt" > now() - interval '10 minutes' AS touched
               FROM "DocumentVersion" WHERE id = $1"#,
        )
        .bind(id)
        .fetch_one(&self.db)
        .await
        .expect("version row")
    }

    async fn pages(&self, version: &str) -> Vec<sqlx::postgres::PgRow> {
        sqlx::query(
            r#"SELECT id, "pageNumber", file, "storageType"::text AS storage, "embeddedLinks" IS NULL AS no_embedded,
                      "pageLinks", metadata, metadata::text AS metadata_text, "createdAt" IS NOT NULL AND "updatedAt" IS NOT NULL AS stamped
               FROM "DocumentPage" WHERE "versionId" = $1 ORDER BY "pageNumber""#,
        )
        .bind(version)
        .fetch_all(&self.db)
        .await
        .expect("pages")
    }

    async fn object(&self, key: &str) -> (Option<String>, Vec<u8>) {
        let key = ObjectKey::parse(key).expect("key");
        let body = self.bucket.get(&key).await.expect("object exists");
        let content_type = body.content_type.clone();
        let bytes = kiln_storage::get_bytes(&self.bucket, &key, 1 << 30)
            .await
            .expect("read");
        (content_type, bytes)
    }
}

fn sample_pdf() -> Vec<u8> {
    build(&[
        Page::new(612.0, 792.0)
            .with_text(&["Letter page with links"])
            .with_link(
                [72.1, 76.0, 144.25, 91.5],
                LinkTarget::Uri("https://example.com/deck".into()),
            )
            .with_link([72.0, 200.0, 200.0, 220.0], LinkTarget::Page(2)),
        Page::new(595.276, 841.89).with_text(&["An A4 page"]),
        Page::new(792.0, 612.0).with_rect([0.0, 0.0, 396.0, 306.0], [0.8, 0.2, 0.1]),
    ])
}

fn version_payload(document: &str, version: &str) -> Value {
    json!({ "documentId": document, "documentVersionId": version, "teamId": TEAM })
}

#[tokio::test]
async fn a_pdf_gets_supermarks_pages_rows_and_progress() {
    let stack = Stack::start().await;
    let (document, version, key) = stack.upload("Deck.pdf", "pdf", "application/pdf", &sample_pdf()).await;
    let folder = key.split('/').nth(1).expect("doc folder").to_owned();
    let run = stack
        .run_as_supermark("convert-pdf-to-image-route", &document, &version, "")
        .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(
        run["output"],
        json!({ "success": true, "message": "Successfully converted PDF to images", "totalPages": 3 })
    );
    assert_eq!(
        run["metadata"],
        json!({ "status": { "progress": 100, "text": "Processing complete" } })
    );
    assert_eq!(run["attemptCount"], 1);
    // Supermark's plan queue, one set of slots per team, with its limit.
    assert_eq!(run["queue"], "conversion-pro");
    assert_eq!(run["concurrencyKey"], TEAM);
    let kiln_db = PgPool::connect(&stack.kiln.database_url).await.expect("kiln db");
    let limits: Vec<(String, Option<i32>)> =
        sqlx::query_as("SELECT name, concurrency_limit FROM queues WHERE name LIKE 'conversion-%' ORDER BY name")
            .fetch_all(&kiln_db)
            .await
            .expect("queues");
    assert!(limits.contains(&("conversion-pro".to_owned(), Some(2))), "{limits:?}");
    assert!(limits.contains(&("conversion-free".to_owned(), Some(1))), "{limits:?}");
    assert!(
        limits.contains(&("conversion-datarooms-plus".to_owned(), Some(10))),
        "{limits:?}"
    );

    let row = stack.version(&version).await;
    assert_eq!(row.get::<Option<i32>, _>("numPages"), Some(3));
    assert!(row.get::<bool, _>("hasPages") && row.get::<bool, _>("isPrimary"));
    assert!(row.get::<bool, _>("isVertical"), "page 1 is portrait");
    assert!(row.get::<bool, _>("touched"), "updatedAt advanced");

    let pages = stack.pages(&version).await;
    assert_eq!(pages.len(), 3);
    let expected_sizes = [(612.0, 792.0), (595.276_f32, 841.89_f32), (792.0, 612.0)];
    for (index, page) in pages.iter().enumerate() {
        let number = index + 1;
        assert_eq!(page.get::<i32, _>("pageNumber") as usize, number);
        let id: String = page.get("id");
        assert!(id.len() == 25 && id.starts_with('c'), "a cuid: {id}");
        let file: String = page.get("file");
        let prefix = format!("{TEAM}/{folder}/page-{number}.");
        assert!(
            file == format!("{prefix}png") || file == format!("{prefix}jpeg"),
            "{file}"
        );
        assert_eq!(page.get::<String, _>("storage"), "S3_PATH");
        assert!(page.get::<bool, _>("no_embedded"), "embeddedLinks stays NULL");
        assert!(page.get::<bool, _>("stamped"));
        let metadata: Value = page.get("metadata");
        let keys: Vec<&String> = metadata.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            ["height", "originalHeight", "originalWidth", "scaleFactor", "width"]
        );
        let (w, h) = expected_sizes[index];
        assert_eq!(metadata["originalWidth"].as_f64(), Some(f64::from(w)));
        assert_eq!(metadata["originalHeight"].as_f64(), Some(f64::from(h)));
        assert_eq!(metadata["scaleFactor"], 3);
        assert_eq!(metadata["width"].as_f64(), Some(f64::from(w) * 3.0));
        assert_eq!(metadata["height"].as_f64(), Some(f64::from(h) * 3.0));

        let (content_type, bytes) = stack.object(&file).await;
        let expected_type = if file.ends_with(".png") {
            "image/png"
        } else {
            "image/jpeg"
        };
        assert_eq!(content_type.as_deref(), Some(expected_type));
        let image = image::load_from_memory(&bytes).expect("the page image decodes");
        assert_eq!(
            (image.width(), image.height()),
            ((f64::from(w) * 3.0).ceil() as u32, (f64::from(h) * 3.0).ceil() as u32)
        );
    }
    // JavaScript's numbers, not Rust's: integers without a fraction, A4's
    // single-precision sides widened as MuPDF reports them.
    assert!(
        pages[0]
            .get::<String, _>("metadata_text")
            .contains(r#""originalWidth": 612"#)
    );
    assert!(
        pages[1]
            .get::<String, _>("metadata_text")
            .contains(r#""originalWidth": 595.2760009765625"#),
        "{}",
        pages[1].get::<String, _>("metadata_text")
    );
    let links: Value = pages[0].get("pageLinks");
    let links = links.as_array().expect("array");
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(links[0]["href"], "https://example.com/deck");
    assert_eq!(links[0]["coords"], "72.0999984741211,700.5,144.25,716");
    assert_eq!(links[1]["href"], "#page=3");
    assert_eq!(links[1]["coords"].as_str().map(|c| c.split(',').count()), Some(4));
    assert_eq!(pages[1].get::<Value, _>("pageLinks"), json!([]));

    let revalidations: Vec<AppRequest> = stack
        .app
        .requests()
        .into_iter()
        .filter(|r| r.uri.starts_with("/api/revalidate"))
        .collect();
    assert_eq!(revalidations.len(), 1, "{revalidations:?}");
    assert_eq!(revalidations[0].method, "GET");
    assert_eq!(
        revalidations[0].uri,
        format!("/api/revalidate?secret={REVALIDATE_TOKEN}&documentId={document}")
    );

    // The same raw key again is Supermark's retry: the cached run.
    let again = stack
        .trigger(
            "convert-pdf-to-image-route",
            version_payload(&document, &version),
            &format!("{TEAM}-{version}"),
        )
        .await;
    assert_eq!(
        Some(again.as_str()),
        run["id"].as_str(),
        "the idempotency key finds the first run"
    );

    // A rerun of the finished version keeps its rows as they are.
    let ids_before: Vec<String> = pages.iter().map(|p| p.get("id")).collect();
    let rerun = stack
        .trigger(
            "convert-pdf-to-image-route",
            version_payload(&document, &version),
            &format!("{TEAM}-{version}-rerun"),
        )
        .await;
    assert_eq!(stack.finished(&rerun).await["status"], "COMPLETED");
    let ids_after: Vec<String> = stack.pages(&version).await.iter().map(|p| p.get("id")).collect();
    assert_eq!(ids_before, ids_after);

    // A second version with its number: the first is no longer primary.
    let second = format!("clver{}", rand::random::<u64>());
    stack
        .add_version(&document, &second, 2, &key, "pdf", "application/pdf")
        .await;
    let mut payload = version_payload(&document, &second);
    payload["versionNumber"] = json!(2);
    let run_two = stack
        .trigger("convert-pdf-to-image-route", payload, &format!("{TEAM}-{second}"))
        .await;
    assert_eq!(stack.finished(&run_two).await["status"], "COMPLETED");
    assert!(stack.version(&second).await.get::<bool, _>("isPrimary"));
    assert!(!stack.version(&version).await.get::<bool, _>("isPrimary"));
}

#[tokio::test]
async fn broken_pdfs_and_missing_versions_fail_once_and_write_nothing() {
    let stack = Stack::start().await;
    let good = sample_pdf();
    let truncated = good[..good.len() * 2 / 3].to_vec();
    let (document, version, key) = stack.upload("Cut.pdf", "pdf", "application/pdf", &truncated).await;
    let run = stack
        .run_as_supermark("convert-pdf-to-image-route", &document, &version, "")
        .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["attemptCount"], 1, "a broken file is not retried");
    let message = run["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("truncated"), "{message}");
    assert_eq!(run["metadata"]["status"]["text"], message.as_str());
    assert!(stack.pages(&version).await.is_empty());
    assert!(!stack.version(&version).await.get::<bool, _>("hasPages"));
    let folder = key.rsplit_once('/').map(|(f, _)| f).unwrap_or_default().to_owned();
    let objects = stack.bucket.list(&format!("{folder}/page-")).await.expect("list");
    assert!(objects.is_empty(), "no page images stay behind: {objects:?}");

    // Pages that render, then one that cannot be a page: the images
    // already uploaded go again.
    let half_good = build(&[
        Page::new(612.0, 792.0).with_text(&["one"]),
        Page::new(612.0, 792.0).with_text(&["two"]),
        Page::new(612.0, 792.0).with_text(&["three"]),
        Page::new(612.0, 792.0).with_text(&["four"]),
        Page::new(0.5, 0.5),
    ]);
    let (document_half, version_half, key_half) = stack.upload("Half.pdf", "pdf", "application/pdf", &half_good).await;
    let run = stack
        .run_as_supermark("convert-pdf-to-image-route", &document_half, &version_half, "")
        .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["error"]["name"], "AbsurdPageSize", "{run}");
    assert!(stack.pages(&version_half).await.is_empty());
    let folder_half = key_half.rsplit_once('/').map(|(f, _)| f).unwrap_or_default().to_owned();
    let objects = stack.bucket.list(&format!("{folder_half}/page-")).await.expect("list");
    assert!(
        objects.is_empty(),
        "the pages uploaded before the failure are removed: {objects:?}"
    );

    // A PDF that needs a password.
    let dir = temp_dir("supermark-encrypted");
    std::fs::write(dir.join("plain.pdf"), &good).expect("write");
    let encrypted = Command::new("qpdf")
        .args(["--encrypt", "secret", "owner", "256", "--"])
        .arg(dir.join("plain.pdf"))
        .arg(dir.join("locked.pdf"))
        .status()
        .expect("qpdf (scripts/test installs it)");
    assert!(encrypted.success());
    let locked = std::fs::read(dir.join("locked.pdf")).expect("locked");
    let (document_locked, version_locked, _) = stack.upload("Locked.pdf", "pdf", "application/pdf", &locked).await;
    let run = stack
        .run_as_supermark("convert-pdf-to-image-route", &document_locked, &version_locked, "")
        .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["attemptCount"], 1);
    assert_eq!(run["error"]["name"], "EncryptedPdf");
    assert!(stack.pages(&version_locked).await.is_empty());

    let missing = stack
        .trigger(
            "convert-pdf-to-image-route",
            version_payload(&document, "clnosuchversion0000000000"),
            "missing",
        )
        .await;
    let run = stack.finished(&missing).await;
    assert_eq!(run["status"], "FAILED");
    assert_eq!(run["error"]["message"], "Document not found");
    assert_eq!(
        run["metadata"],
        json!({ "status": { "progress": 0, "text": "Document not found" } })
    );
}

#[tokio::test]
async fn an_office_upload_is_converted_under_supermarks_name_then_paged() {
    let stack = Stack::start().await;
    let documents = temp_dir("supermark-docs");
    let made = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/make_office_docs.py"
        ))
        .arg(&documents)
        .arg("Supermarker")
        .status()
        .expect("python3");
    assert!(made.success());
    let docx = std::fs::read(documents.join("sample.docx")).expect("docx");
    let docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
    let (document, version, key) = stack.upload("Q3 Report.docx", "docs", docx_type, &docx).await;
    let run = stack
        .run_as_supermark("convert-files-to-pdf", &document, &version, "-docs")
        .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert!(
        run.get("output").is_none_or(Value::is_null),
        "Supermark's task returns nothing: {run}"
    );
    assert_eq!(
        run["metadata"],
        json!({ "status": { "progress": 40, "text": "Initiating document processing..." } })
    );
    let folder = key.split('/').nth(1).expect("folder");
    let pdf_key = format!("{TEAM}/{folder}/q3-report-docx.pdf");
    let row = stack.version(&version).await;
    assert_eq!(row.get::<String, _>("file"), pdf_key);
    assert_eq!(row.get::<Option<String>, _>("type").as_deref(), Some("pdf"));
    assert_eq!(row.get::<String, _>("storage"), "S3_PATH");
    let (content_type, bytes) = stack.object(&pdf_key).await;
    assert_eq!(content_type.as_deref(), Some("application/pdf"));
    assert!(bytes.starts_with(b"%PDF-"));

    // The child run: tagged as Supermark tags it, with the version number.
    let child = stack.pages_run_of(&version).await;
    let child = stack.finished(child["id"].as_str().expect("id")).await;
    assert_eq!(child["status"], "COMPLETED", "{child}");
    assert_eq!(child["payload"]["versionNumber"], 1);
    let mut tags: Vec<String> = serde_json::from_value(child["tags"].clone()).expect("tags");
    tags.sort();
    assert_eq!(
        tags,
        [
            format!("document_{document}"),
            format!("team_{TEAM}"),
            format!("version:{version}")
        ]
    );
    assert!(stack.version(&version).await.get::<bool, _>("hasPages"));
    assert!(!stack.pages(&version).await.is_empty());

    // A presentation, under a name with umlauts and brackets.
    let pptx = std::fs::read(documents.join("sample.pptx")).expect("pptx");
    let pptx_type = "application/vnd.openxmlformats-officedocument.presentationml.presentation";
    let (document, slides, key) = stack
        .upload("Präsentation_Final (2).pptx", "slides", pptx_type, &pptx)
        .await;
    let run_id = stack
        .trigger(
            "convert-files-to-pdf",
            version_payload(&document, &slides),
            &format!("{TEAM}-{slides}-docs"),
        )
        .await;
    assert_eq!(stack.finished(&run_id).await["status"], "COMPLETED");
    let folder = key.split('/').nth(1).expect("folder");
    assert_eq!(
        stack.version(&slides).await.get::<String, _>("file"),
        format!("{TEAM}/{folder}/praesentation-final-2-pptx.pdf")
    );
    let deadline = std::time::Instant::now() + WITHIN;
    while !stack.version(&slides).await.get::<bool, _>("hasPages") {
        assert!(std::time::Instant::now() < deadline, "the slides' pages never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pages = stack.pages(&slides).await;
    assert!(!pages.is_empty());
    let metadata: Value = pages[0].get("metadata");
    assert!(
        metadata["originalWidth"].as_f64() > metadata["originalHeight"].as_f64(),
        "a landscape slide: {metadata}"
    );
    assert!(!stack.version(&slides).await.get::<bool, _>("isVertical"));

    // A broken docx fails once with a reason, and nothing is written.
    let broken = docx[..docx.len() / 2].to_vec();
    let (document, version, _) = stack.upload("Broken.docx", "docs", docx_type, &broken).await;
    let run = stack
        .run_as_supermark("convert-files-to-pdf", &document, &version, "-docs")
        .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["attemptCount"], 1);
    let row = stack.version(&version).await;
    assert_eq!(
        row.get::<Option<String>, _>("type").as_deref(),
        Some("docs"),
        "the version is untouched"
    );
    assert!(
        run["metadata"]["status"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
}

#[tokio::test]
async fn a_video_is_measured_and_reencoded_with_supermarks_parameters() {
    let stack = Stack::start().await;
    let dir = temp_dir("supermark-video");
    let source = dir.join("clip.webm");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
        ])
        .args([
            "-i",
            "sine=frequency=440",
            "-t",
            "3",
            "-c:v",
            "libvpx",
            "-c:a",
            "libvorbis",
        ])
        .arg(&source)
        .status()
        .expect("ffmpeg (scripts/test installs it)");
    assert!(made.success());
    let bytes = std::fs::read(&source).expect("clip");
    let (_, version, key) = stack.upload("Clip.webm", "video", "video/webm", &bytes).await;
    let folder = key.split('/').nth(1).expect("folder").to_owned();
    let payload = json!({
        "videoUrl": key, "teamId": TEAM, "docId": folder, "documentVersionId": version, "fileSize": bytes.len()
    });
    let run_id = stack.kiln.trigger("process-video", json!({ "payload": payload })).await;
    let run = stack.finished(&run_id).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert_eq!(
        run["output"],
        json!({ "success": true, "message": "Successfully optimized video" })
    );
    assert!(
        run.get("metadata").is_none_or(Value::is_null),
        "process-video sets no metadata: {run}"
    );
    let row = stack.version(&version).await;
    assert_eq!(row.get::<Option<i32>, _>("length"), Some(3));
    let optimized = format!("{TEAM}/{folder}/optimized.mp4");
    assert_eq!(row.get::<String, _>("file"), optimized);
    let (content_type, mp4) = stack.object(&optimized).await;
    assert_eq!(content_type.as_deref(), Some("video/mp4"));
    let out = dir.join("optimized.mp4");
    std::fs::write(&out, &mp4).expect("write");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_streams"])
        .arg(&out)
        .output()
        .expect("ffprobe");
    let streams: Value = serde_json::from_slice(&probe.stdout).expect("probe json");
    let video = streams["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_type"] == "video"))
        .cloned()
        .expect("a video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["profile"], "High");

    // A file that is no video fails once, with ffprobe's reason.
    let (_, version, key) = stack
        .upload("Fake.mp4", "video", "video/quicktime", b"not a video at all")
        .await;
    let payload = json!({
        "videoUrl": key, "teamId": TEAM, "docId": "doc_x", "documentVersionId": version, "fileSize": 18
    });
    let run_id = stack.kiln.trigger("process-video", json!({ "payload": payload })).await;
    let run = stack.finished(&run_id).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["attemptCount"], 1);
    assert_eq!(run["error"]["name"], "VideoUnreadable");
}

#[tokio::test]
async fn a_dataroom_change_notifies_each_eligible_viewer_through_the_app() {
    let stack = Stack::start().await;
    let room = "cldataroom000000000000001";
    let seed = r#"
        INSERT INTO "Link" (id, slug, "domainSlug", "domainId", "isArchived", "expiresAt") VALUES
          ('link_plain', NULL, NULL, NULL, false, NULL),
          ('link_domain', 'deal', 'docs.acme.com', 'dom_1', false, NULL),
          ('link_archived', NULL, NULL, NULL, true, NULL),
          ('link_expired', NULL, NULL, NULL, false, now() - interval '1 day');
        INSERT INTO "Viewer" (id, email, "teamId", "notificationPreferences") VALUES
          ('v_plain', 'a@x.com', 'clteam0000000000000000001', NULL),
          ('v_domain', 'b@x.com', 'clteam0000000000000000001', '{"dataroom": {"cldataroom000000000000001": {"enabled": true}}}'),
          ('v_archived', 'c@x.com', 'clteam0000000000000000001', NULL),
          ('v_expired', 'd@x.com', 'clteam0000000000000000001', NULL),
          ('v_opted_out', 'e@x.com', 'clteam0000000000000000001', '{"dataroom": {"cldataroom000000000000001": {"enabled": false}}}'),
          ('v_unverified', 'f@x.com', 'clteam0000000000000000001', NULL);
        INSERT INTO "View" (id, "linkId", "dataroomId", "viewType", verified, "viewerId", "viewedAt") VALUES
          ('view1', 'link_plain', 'cldataroom000000000000001', 'DATAROOM_VIEW', true, 'v_plain', now()),
          ('view2', 'link_domain', 'cldataroom000000000000001', 'DATAROOM_VIEW', true, 'v_domain', now()),
          ('view2old', 'link_archived', 'cldataroom000000000000001', 'DATAROOM_VIEW', true, 'v_domain', now() - interval '1 day'),
          ('view3', 'link_archived', 'cldataroom000000000000001', 'DATAROOM_VIEW', true, 'v_archived', now()),
          ('view4', 'link_expired', 'cldataroom000000000000001', 'DATAROOM_VIEW', true, 'v_expired', now()),
          ('view5', 'link_plain', 'cldataroom000000000000001', 'DATAROOM_VIEW', true, 'v_opted_out', now()),
          ('view6', 'link_plain', 'cldataroom000000000000001', 'DATAROOM_VIEW', false, 'v_unverified', now());
    "#;
    sqlx::raw_sql(seed).execute(&stack.db).await.expect("seed");
    let payload = json!({
        "dataroomId": room, "dataroomDocumentId": "dd_1", "senderUserId": "user_1", "teamId": TEAM
    });
    let run_id = stack
        .kiln
        .trigger("send-dataroom-change-notification", json!({ "payload": payload }))
        .await;
    let run = stack.finished(&run_id).await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert!(run.get("metadata").is_none_or(Value::is_null));
    let mut sent: Vec<Value> = stack
        .app
        .requests()
        .into_iter()
        .filter(|r| r.uri == "/api/jobs/send-dataroom-new-document-notification")
        .map(|r| {
            assert_eq!(r.method, "POST");
            assert_eq!(
                r.authorization.as_deref(),
                Some(format!("Bearer {INTERNAL_KEY}").as_str())
            );
            serde_json::from_str(&r.body).expect("json body")
        })
        .collect();
    sent.sort_by_key(|b| b["viewerId"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        sent,
        [
            json!({ "dataroomId": room, "linkUrl": "https://docs.acme.com/deal", "dataroomDocumentId": "dd_1",
                    "viewerId": "v_domain", "senderUserId": "user_1", "teamId": TEAM }),
            json!({ "dataroomId": room, "linkUrl": "http://localhost:3000/view/link_plain", "dataroomDocumentId": "dd_1",
                    "viewerId": "v_plain", "senderUserId": "user_1", "teamId": TEAM }),
        ]
    );
}

#[tokio::test]
async fn object_names_match_supermarks_slugify_from_npm() {
    let names = [
        "Q3 Report.docx.pdf",
        "Präsentation_Final (2).pptx.pdf",
        "MyPitchDeck v2.key.pdf",
        "Über & Co — Angebot.pdf",
        "IPO-Docs_FINAL.pdf",
        "John's report.docx.pdf",
        "ação.pdf",
        "日本語.pdf",
        "Отчёт за 2024 год.xlsx.pdf",
        "Ελληνικά έγγραφα.pdf",
        "façade—naïve café.pptx.pdf",
        "APIs and HTTPServer2.pdf",
        "I ♥ 🦄 unicorns.pdf",
        "  --weird__name--  .pdf",
        "Ærø Smørrebrød ŁÓDŹ.doc.pdf",
        "Tiếng Việt có dấu.pdf",
        "Straße ẞ.pdf",
        "ĳ ŉ ǅ.pdf",
        "C:\\path\\name.pdf",
        ".hidden",
    ];
    let sdk_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let output = Command::new("node")
        .arg("slugify.mjs")
        .current_dir(sdk_dir)
        .env("SLUGIFY_NAMES", serde_json::to_string(&names).expect("json"))
        .output()
        .expect("node");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let expected: Vec<String> = serde_json::from_slice(&output.stdout).expect("json");
    let ours: Vec<String> = names.iter().map(|n| kiln_app_supermark::slug::object_name(n)).collect();
    assert_eq!(ours, expected);
}

#[tokio::test]
async fn a_dxf_drawing_is_converted_and_a_dwg_named_and_refused() {
    let stack = Stack::start().await;
    let dxf = "0\nSECTION\n2\nENTITIES\n0\nLINE\n8\n0\n10\n0.0\n20\n0.0\n30\n0.0\n11\n100.0\n21\n50.0\n31\n0.0\n\
               0\nCIRCLE\n8\n0\n10\n50.0\n20\n25.0\n30\n0.0\n40\n20.0\n0\nENDSEC\n0\nEOF\n";
    let (document, version, key) = stack
        .upload("Floor Plan.dxf", "cad", "image/vnd.dxf", dxf.as_bytes())
        .await;
    let run = stack
        .run_as_supermark("convert-cad-to-pdf", &document, &version, "-cad")
        .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert!(
        run.get("metadata").is_none_or(Value::is_null),
        "convert-cad-to-pdf sets no metadata: {run}"
    );
    let folder = key.split('/').nth(1).expect("folder");
    let pdf_key = format!("{TEAM}/{folder}/floor-plan-dxf.pdf");
    assert_eq!(stack.version(&version).await.get::<String, _>("file"), pdf_key);
    let (content_type, bytes) = stack.object(&pdf_key).await;
    assert_eq!(content_type.as_deref(), Some("application/pdf"));
    assert!(bytes.starts_with(b"%PDF-"));
    let child = stack.pages_run_of(&version).await;
    let child = stack.finished(child["id"].as_str().expect("id")).await;
    assert_eq!(child["status"], "COMPLETED", "{child}");
    assert!(
        child["payload"].get("versionNumber").is_none(),
        "cad children carry no version number"
    );

    let (document, version, _) = stack
        .upload(
            "Site.dwg",
            "cad",
            "image/vnd.dwg",
            b"AC1032\x00\x00\x00\x00binary drawing",
        )
        .await;
    let run = stack
        .run_as_supermark("convert-cad-to-pdf", &document, &version, "-cad")
        .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["attemptCount"], 1);
    assert!(
        run["error"]["message"].as_str().is_some_and(|m| m.contains("DWG")),
        "{run}"
    );
}

/// Supermark's texts in the order its task sets them, for `pages` pages.
fn progress_texts(pages: usize) -> Vec<String> {
    let mut texts: Vec<String> = ["Initializing...", "Retrieving file...", "Converting document..."]
        .map(str::to_owned)
        .to_vec();
    texts.extend((1..=pages).map(|n| format!("{n} / {pages} pages processed")));
    texts.extend(["Enabling pages...", "Revalidating link...", "Processing complete"].map(str::to_owned));
    texts
}

#[tokio::test]
async fn the_progress_bar_follows_a_tag_subscription_with_a_public_token() {
    let stack = Stack::start().await;
    let pdf = crate::pdfgen::sample_document(36);
    let (document, version, _) = stack.upload("Long deck.pdf", "pdf", "application/pdf", &pdf).await;
    let spec = json!({
        "task": "convert-pdf-to-image-route",
        "payload": version_payload(&document, &version),
        "plan": "free",
        "key": format!("{TEAM}-{version}"),
    });
    // Bounded, so a subscription that never ends fails the test.
    let output = stack
        .sdk_script(&["timeout", "150", "node", "supermark-progress.mjs"], spec)
        .await;
    let seen: Vec<Value> = serde_json::from_slice(&output.stdout).expect("json");
    let texts: Vec<String> = seen
        .iter()
        .filter_map(|s| s["metadata"]["status"]["text"].as_str().map(str::to_owned))
        .collect();
    // What the subscription saw is Supermark's sequence, in its order,
    // with pages counted on the way and the end reached.
    let canonical = progress_texts(36);
    let mut position = 0;
    for text in &texts {
        let found = canonical[position..].iter().position(|t| t == text);
        let Some(offset) = found else {
            panic!("{text:?} out of Supermark's order in {texts:?}");
        };
        position += offset;
    }
    assert!(
        texts.iter().filter(|t| t.ends_with("pages processed")).count() >= 2,
        "pages counted as they are done: {texts:?}"
    );
    let last = seen.last().expect("updates");
    assert_eq!(last["status"], "COMPLETED");
    assert_eq!(
        last["metadata"],
        json!({ "status": { "progress": 100, "text": "Processing complete" } })
    );
    // Before its first status, a run has no metadata at all (never `{}`,
    // which Supermark's parser rejects).
    for update in &seen {
        assert!(
            update["metadata"].is_null() || update["metadata"]["status"].is_object(),
            "{update}"
        );
    }
}

#[tokio::test]
async fn only_the_configured_environment_may_start_supermarks_tasks() {
    let s3 = S3Server::start().await;
    let supermark_url = helpers::fresh_database().await;
    let mut builder = Kiln::builder(Mode::Serve).env("POSTGRES_PRISMA_URL", supermark_url);
    for (name, value) in s3.supermark_env("supermark-documents") {
        builder = builder.env(name, value);
    }
    // Unset, KILN_SUPERMARK_ENVIRONMENT is prod; the test's key is a dev key.
    let kiln = builder.spawn().await;
    let payload = json!({ "payload": { "documentId": "d", "documentVersionId": "v", "teamId": "t" } });
    let refused = kiln
        .post("/api/v1/tasks/convert-pdf-to-image-route/trigger", &payload)
        .await;
    assert_eq!(refused.status(), 403);
    let answer: Value = refused.json().await.expect("json");
    assert_eq!(
        answer["error"],
        "task \"convert-pdf-to-image-route\" runs only for prod keys; this is a dev key"
    );
    let batch = kiln
        .post(
            "/api/v1/tasks/batch",
            &json!({ "items": [{ "task": "process-video", "payload": {} }] }),
        )
        .await;
    assert!(batch.status().is_client_error(), "{}", batch.status());
}

#[tokio::test]
async fn browsers_on_listed_origins_may_read_runs_and_nothing_else() {
    let kiln = Kiln::builder(Mode::Serve)
        .env("KILN_CORS_ORIGINS", "https://supermark.example, http://localhost:3000")
        .spawn()
        .await;
    let preflight = |path: &str, origin: &str| {
        kiln.http
            .request(reqwest::Method::OPTIONS, kiln.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let answer = preflight("/realtime/v1/runs?tags=version:clx", "https://supermark.example")
        .await
        .expect("preflight");
    assert!(answer.status().is_success(), "{}", answer.status());
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("access-control-allow-origin").as_deref(),
        Some("https://supermark.example")
    );
    assert!(header("access-control-allow-headers").is_some_and(|h| h.contains("authorization")));
    assert!(header("access-control-allow-methods").is_some_and(|m| m.contains("GET")));

    let read = kiln
        .http
        .get(kiln.url("/api/v3/runs/run_doesnotexist"))
        .header("origin", "http://localhost:3000")
        .bearer_auth(&kiln.key)
        .send()
        .await
        .expect("read");
    assert_eq!(
        read.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("http://localhost:3000")
    );

    let stranger = preflight("/realtime/v1/runs?tags=x", "https://evil.example")
        .await
        .expect("preflight");
    assert!(stranger.headers().get("access-control-allow-origin").is_none());
    let trigger = preflight("/api/v1/tasks/kiln.noop/trigger", "https://supermark.example")
        .await
        .expect("preflight");
    assert!(
        trigger.headers().get("access-control-allow-origin").is_none(),
        "triggering stays same-origin"
    );
}

#[tokio::test]
async fn doctor_checks_supermarks_tables_and_bucket() {
    let s3 = S3Server::start().await;
    let bucket = format!("supermark-{}", rand::random::<u32>());
    S3Store::new(&s3.config(&bucket, kiln_storage::DEFAULT_PART_SIZE))
        .expect("config")
        .ensure_bucket()
        .await
        .expect("bucket");
    let supermark_url = helpers::fresh_database().await;
    let db = PgPool::connect(&supermark_url).await.expect("db");
    let storage = temp_dir("doctor-supermark");
    let kiln_db = helpers::fresh_database().await;
    let doctor = |prisma_url: String| {
        let mut command = Command::new(helpers::kiln_bin());
        command
            .arg("doctor")
            .env("DATABASE_URL", &kiln_db)
            .env("KILN_SECRET", helpers::SERVER_SECRET)
            .env("KILN_STORAGE_DIR", &storage)
            .env("POSTGRES_PRISMA_URL", prisma_url);
        for (name, value) in s3.supermark_env(&bucket) {
            command.env(name, value);
        }
        let output = command.output().expect("kiln doctor");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let prisma_url = format!("{supermark_url}?schema=public&pgbouncer=true");
    let out = doctor(prisma_url.clone());
    assert!(out.contains("MISSING  supermark database"), "{out}");
    assert!(
        out.contains("the table \"DocumentPage\""),
        "names what is missing: {out}"
    );
    assert!(out.contains("ok       supermark bucket"), "{out}");

    let schema = include_str!("../support/supermark_schema.sql");
    sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
        .execute(&db)
        .await
        .expect("schema");
    let out = doctor(prisma_url.clone());
    assert!(out.contains("ok       supermark database"), "{out}");
    assert!(out.contains("ok       ffmpeg"), "{out}");

    sqlx::raw_sql(r#"ALTER TABLE "DocumentVersion" DROP COLUMN "hasPages""#)
        .execute(&db)
        .await
        .expect("drop");
    let out = doctor(prisma_url);
    assert!(out.contains(r#""DocumentVersion"."hasPages""#), "{out}");
}

/// A Keynote '09 package (a zip holding `index.apxl`) with one 1024 × 768
/// slide, made with Python's zipfile.
fn keynote_file(dir: &Path) -> Vec<u8> {
    let apxl = r#"<?xml version="1.0" encoding="UTF-8"?>
<key:presentation xmlns:sfa="http://developer.apple.com/namespaces/sfa" xmlns:sf="http://developer.apple.com/namespaces/sf" xmlns:key="http://developer.apple.com/namespaces/keynote2" key:version="92008102400" sfa:ID="SFRPresentation-0">
<key:size sfa:w="1024" sfa:h="768"/>
<key:slide-list><key:slide sfa:ID="BGSlide-1"><key:page><sf:layers><sf:layer><sf:drawables/></sf:layer></sf:layers></key:page></key:slide></key:slide-list>
</key:presentation>"#;
    let path = dir.join("deck.key");
    let made = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').writestr('index.apxl', sys.argv[2])",
        ])
        .arg(&path)
        .arg(apxl)
        .status()
        .expect("python3");
    assert!(made.success());
    std::fs::read(&path).expect("keynote file")
}

#[tokio::test]
async fn a_keynote_presentation_is_converted_with_libreoffices_keynote_import() {
    let stack = Stack::start().await;
    let dir = temp_dir("supermark-keynote");
    let key_type = "application/vnd.apple.keynote";
    let (document, version, key) = stack
        .upload("MyPitchDeck v2.key", "slides", key_type, &keynote_file(&dir))
        .await;
    let run = stack
        .run_as_supermark("convert-keynote-to-pdf", &document, &version, "-keynote")
        .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    assert!(
        run.get("metadata").is_none_or(Value::is_null),
        "no metadata, as in Supermark: {run}"
    );
    let folder = key.split('/').nth(1).expect("folder");
    let pdf_key = format!("{TEAM}/{folder}/my-pitch-deck-v2-key.pdf");
    assert_eq!(stack.version(&version).await.get::<String, _>("file"), pdf_key);
    // The child run pages the slide at its own size.
    let deadline = std::time::Instant::now() + WITHIN;
    while !stack.version(&version).await.get::<bool, _>("hasPages") {
        assert!(std::time::Instant::now() < deadline, "the slide's page never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pages = stack.pages(&version).await;
    assert_eq!(pages.len(), 1);
    let metadata: Value = pages[0].get("metadata");
    assert!(
        (metadata["originalWidth"].as_f64().unwrap_or(0.0) - 1024.0).abs() < 1.0,
        "{metadata}"
    );
    assert!(
        (metadata["originalHeight"].as_f64().unwrap_or(0.0) - 768.0).abs() < 1.0,
        "{metadata}"
    );

    // A zip that is no presentation fails once, with LibreOffice's reason.
    let other = dir.join("other.key");
    let made = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').writestr('readme.txt', 'hello')",
        ])
        .arg(&other)
        .status()
        .expect("python3");
    assert!(made.success());
    let bytes = std::fs::read(&other).expect("zip");
    let (document, version, _) = stack.upload("Not a deck.key", "slides", key_type, &bytes).await;
    let run = stack
        .run_as_supermark("convert-keynote-to-pdf", &document, &version, "-keynote")
        .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["attemptCount"], 1);
}
