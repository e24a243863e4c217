//! Supermark's document tasks served by kiln, beside Supermark's own way
//! of doing the same work, in one run, in rounds:
//!
//! - Pages: `convert-pdf-to-image-route` on kiln, from trigger to the run
//!   COMPLETED (every page rendered, uploaded to S3 and recorded as a
//!   `DocumentPage` row), beside Supermark's page path reproduced with
//!   mupdf.js 1.3.6 (`benches/supermark/pages.mjs`: per page, download the
//!   whole PDF over HTTP, open it, render at scale 3, encode PNG and JPEG
//!   quality 80, keep the smaller; without Supermark's uploads and rows,
//!   which only favours it).
//! - Video: `process-video` on kiln, from trigger to COMPLETED (download,
//!   ffprobe, ffmpeg, upload, rows), beside a plain `ffmpeg` run with the
//!   same parameters on a local copy.
//!
//! Both sides use the same S3 server (s3s-fs, as the tests), the same
//! PDF and the same clip. `scripts/bench supermark` builds kiln in release
//! and runs it. Rounds alternate which side goes first. Settings:
//! BENCH_SUPERMARK_PAGES (36), BENCH_ROUNDS (5), BENCH_VIDEO_SECONDS (30), KILN_BIN (target/release/kiln),
//! BENCH_PG_ADMIN_URL, REDIS_URL, KILN_TEST_S3S_FS, PDFIUM_LIB_PATH.

#[path = "../tests/support/pdfgen.rs"]
#[allow(dead_code, unreachable_pub)]
mod pdfgen;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use kiln_storage::{ObjectKey, ObjectStore, S3Config, S3Store};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const TEAM: &str = "clbenchteam00000000000001";
const ACCESS_KEY: &str = "kiln-bench-access";
const SECRET_KEY: &str = "kiln-bench-secret-0123456789";

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Children killed when the bench ends, however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn fresh_database(label: &str) -> BenchResult<String> {
    let admin = setting("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres");
    let name = format!("kiln_bench_{label}_{}", std::process::id());
    let mut conn = PgConnection::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
    Ok(format!("{base}/{name}"))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Stack {
    base_url: String,
    key: String,
    http: reqwest::Client,
    db: PgPool,
    bucket: S3Store,
    work: PathBuf,
    _processes: Processes,
}

impl Stack {
    async fn start() -> BenchResult<Stack> {
        let mut processes = Processes(Vec::new());
        let work = std::env::temp_dir().join(format!("kiln-bench-supermark-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(work.join("s3"))?;
        let tools = format!("{}/.cache/kiln/tools/bin/s3s-fs", setting("HOME", "/root"));
        let s3s = setting("KILN_TEST_S3S_FS", &tools);
        let port = free_port()?;
        processes.0.push(
            Command::new(&s3s)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(work.join("s3"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {s3s}: {e} (scripts/test installs it)"))?,
        );
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                return Err("s3s-fs did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let bucket = S3Store::new(&S3Config {
            bucket: "supermark-documents".into(),
            endpoint: Some(endpoint.clone()),
            region: "us-east-1".into(),
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            force_path_style: true,
            part_size: kiln_storage::DEFAULT_PART_SIZE,
            public_endpoint: None,
        })?;
        bucket.ensure_bucket().await?;

        let supermark_url = fresh_database("supermark").await?;
        let db = PgPool::connect(&supermark_url).await?;
        sqlx::raw_sql(include_str!("../tests/support/supermark_schema.sql"))
            .execute(&db)
            .await?;
        sqlx::query(r#"INSERT INTO "Team" (id, name, plan, "updatedAt") VALUES ($1, 'Bench', 'business', now())"#)
            .bind(TEAM)
            .execute(&db)
            .await?;

        let kiln_url = fresh_database("kiln").await?;
        let env: Vec<(&str, String)> = vec![
            ("DATABASE_URL", kiln_url),
            ("REDIS_URL", setting("REDIS_URL", "redis://127.0.0.1:6379")),
            (
                "KILN_REDIS_PREFIX",
                format!("kiln_bench_supermark_{}", std::process::id()),
            ),
            ("KILN_SECRET", "bench-server-secret-0123456789abcdef".into()),
            ("KILN_ADDR", "127.0.0.1:0".into()),
            (
                "KILN_STORAGE_DIR",
                work.join("kiln-objects").to_string_lossy().into_owned(),
            ),
            ("KILN_OFFICE_WARM_UP", "false".into()),
            ("RUST_LOG", setting("BENCH_KILN_LOG", "warn")),
            ("POSTGRES_PRISMA_URL", format!("{supermark_url}?schema=public")),
            ("NEXT_PRIVATE_UPLOAD_BUCKET", "supermark-documents".into()),
            ("NEXT_PRIVATE_UPLOAD_ENDPOINT", endpoint),
            ("NEXT_PRIVATE_UPLOAD_REGION", "us-east-1".into()),
            ("NEXT_PRIVATE_UPLOAD_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("NEXT_PRIVATE_UPLOAD_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("NEXT_PRIVATE_UPLOAD_FORCE_PATH_STYLE", "true".into()),
        ];
        let kiln_bin = setting("KILN_BIN", "target/release/kiln");
        let created = Command::new(&kiln_bin)
            .args(["keys", "create", "--env", "prod"])
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .output()?;
        if !created.status.success() {
            return Err(format!("kiln keys create: {}", String::from_utf8_lossy(&created.stderr)).into());
        }
        let key = String::from_utf8_lossy(&created.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mut kiln = Command::new(&kiln_bin)
            .arg("dev")
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = kiln.stdout.take().ok_or("no stdout")?;
        processes.0.push(kiln);
        let base_url = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("kiln listening on ").map(str::to_owned))
            .ok_or("kiln dev did not start")?;
        Ok(Stack {
            base_url,
            key,
            http: reqwest::Client::new(),
            db,
            bucket,
            work,
            _processes: processes,
        })
    }

    async fn put(&self, key: &str, bytes: &[u8], content_type: &str) -> BenchResult<()> {
        kiln_storage::put_bytes(&self.bucket, &ObjectKey::parse(key)?, bytes, content_type).await?;
        Ok(())
    }

    /// A new document and version whose file is `key`; their ids.
    async fn version(&self, key: &str, kind: &str) -> BenchResult<(String, String)> {
        let suffix = format!("{}{}", std::process::id(), rand::random::<u32>());
        let (document, version) = (format!("cldoc{suffix}"), format!("clver{suffix}"));
        sqlx::query(
            r#"INSERT INTO "Document" (id, name, file, "originalFile", type, "storageType", "teamId", "updatedAt")
               VALUES ($1, 'Bench', $2, $2, $3, 'S3_PATH', $4, now())"#,
        )
        .bind(&document)
        .bind(key)
        .bind(kind)
        .bind(TEAM)
        .execute(&self.db)
        .await?;
        sqlx::query(
            r#"INSERT INTO "DocumentVersion" (id, "versionNumber", "documentId", file, "originalFile", type,
                                              "storageType", "isPrimary", "updatedAt")
               VALUES ($1, 1, $2, $3, $3, $4, 'S3_PATH', true, now())"#,
        )
        .bind(&version)
        .bind(&document)
        .bind(key)
        .bind(kind)
        .execute(&self.db)
        .await?;
        Ok((document, version))
    }

    /// Triggers `task` and waits for its run to complete; the seconds from
    /// the trigger to COMPLETED. The end is read from the realtime feed,
    /// whose live request kiln answers when the run changes, as an app's
    /// progress bar reads it: asking for the run every few milliseconds
    /// would take a share of the two cores the task itself needs.
    async fn run(&self, task: &str, payload: Value) -> BenchResult<f64> {
        let started = Instant::now();
        let answer: Value = self
            .http
            .post(format!("{}/api/v1/tasks/{task}/trigger", self.base_url))
            .bearer_auth(&self.key)
            .json(&json!({ "payload": payload }))
            .send()
            .await?
            .json()
            .await?;
        let id = answer["id"].as_str().ok_or("no run id")?.to_owned();
        let mut query = "offset=-1".to_owned();
        loop {
            let answer = self
                .http
                .get(format!("{}/realtime/v1/runs/{id}?{query}", self.base_url))
                .bearer_auth(&self.key)
                .send()
                .await?;
            if !answer.status().is_success() {
                return Err(format!("realtime answered {}", answer.status()).into());
            }
            let header = |name: &str| -> BenchResult<String> {
                Ok(answer
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .ok_or(format!("realtime answered no {name}"))?
                    .to_owned())
            };
            query = format!(
                "live=true&offset={}&handle={}",
                header("electric-offset")?,
                header("electric-handle")?
            );
            let messages: Vec<Value> = answer.json().await?;
            for message in messages {
                match message["value"]["status"].as_str() {
                    Some("COMPLETED_SUCCESSFULLY") => {
                        let total = started.elapsed().as_secs_f64();
                        if std::env::var_os("BENCH_VERBOSE").is_some() {
                            eprintln!("{task}: {total:.3} s from trigger to COMPLETED");
                        }
                        return Ok(total);
                    }
                    Some("PENDING" | "DELAYED" | "EXECUTING" | "WAITING_FOR_DEPLOY" | "REATTEMPTING") | None => {}
                    Some(other) => {
                        let run: Value = self
                            .http
                            .get(format!("{}/api/v3/runs/{id}", self.base_url))
                            .bearer_auth(&self.key)
                            .send()
                            .await?
                            .json()
                            .await?;
                        return Err(format!("{task} run {id} ended {other}: {}", run["error"]).into());
                    }
                }
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult<()> {
    let pages: usize = setting("BENCH_SUPERMARK_PAGES", "36").parse()?;
    let rounds: usize = setting("BENCH_ROUNDS", "5").parse()?;
    let video_seconds: u32 = setting("BENCH_VIDEO_SECONDS", "30").parse()?;
    let stack = Stack::start().await?;

    let pdf_key = format!("{TEAM}/doc_bench/deck.pdf");
    stack
        .put(&pdf_key, &pdfgen::sample_document(pages), "application/pdf")
        .await?;
    let url = stack
        .bucket
        .presign_get(
            &ObjectKey::parse(pdf_key.as_str())?,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .await?
        .url;
    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/supermark");

    println!("Supermark pages: a {pages}-page PDF from trigger to pages ready, {rounds} rounds\n");
    println!("| round | kiln (s) | Supermark's path, mupdf.js (s) | Supermark / kiln |");
    println!("|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let (document, version) = stack.version(&pdf_key, "pdf").await?;
        let peer = || -> BenchResult<f64> {
            let output = Command::new("node")
                .arg("pages.mjs")
                .arg(&url)
                .arg(pages.to_string())
                .current_dir(&node_dir)
                .output()?;
            if !output.status.success() {
                return Err(format!("pages.mjs: {}", String::from_utf8_lossy(&output.stderr)).into());
            }
            let measured: Value = serde_json::from_slice(&output.stdout)?;
            Ok(measured["seconds"].as_f64().ok_or("no seconds")?)
        };
        // Who goes first alternates, so neither always meets a warm cache.
        let peer_first = if round % 2 == 0 { Some(peer()?) } else { None };
        let kiln_seconds = stack
            .run(
                "convert-pdf-to-image-route",
                json!({ "documentId": document, "documentVersionId": version, "teamId": TEAM }),
            )
            .await?;
        let supermark_seconds = match peer_first {
            Some(seconds) => seconds,
            None => peer()?,
        };
        let ratio = supermark_seconds / kiln_seconds;
        ratios.push(ratio);
        println!("| {round} | {kiln_seconds:.2} | {supermark_seconds:.2} | {ratio:.1}× |");
    }
    println!(
        "\nmedian: kiln is {:.1}× faster than Supermark's page path\n",
        median(&mut ratios)
    );

    // The video: the same clip through process-video and through ffmpeg.
    let clip = stack.work.join("clip.webm");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size=1280x720:rate=30:duration={video_seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={video_seconds}"))
        .args(["-c:v", "libvpx", "-b:v", "2M", "-c:a", "libvorbis"])
        .arg(&clip)
        .status()?;
    if !made.success() {
        return Err("ffmpeg could not make the clip".into());
    }
    let clip_bytes = std::fs::read(&clip)?;
    let video_key = format!("{TEAM}/doc_video/clip.webm");
    stack.put(&video_key, &clip_bytes, "video/webm").await?;
    println!("Supermark video: a {video_seconds} s 1280×720 clip, process-video beside plain ffmpeg\n");
    println!("| round | kiln process-video (s) | ffmpeg alone (s) | overhead |");
    println!("|---|---|---|---|");
    let mut overheads = Vec::new();
    for round in 1..=rounds {
        let (_, version) = stack.version(&video_key, "video").await?;
        let plain = || -> BenchResult<f64> {
            let started = Instant::now();
            let status = Command::new("ffmpeg")
                .args(["-v", "error", "-nostdin", "-y", "-i"])
                .arg(&clip)
                // Supermark's parameters for a 1280-wide clip at 30 frames a second.
                .args(kiln_app_supermark::video_encoding_arguments(1280, 30.0))
                .arg(stack.work.join("plain.mp4"))
                .status()?;
            if !status.success() {
                return Err("plain ffmpeg failed".into());
            }
            Ok(started.elapsed().as_secs_f64())
        };
        let plain_first = if round % 2 == 0 { Some(plain()?) } else { None };
        let kiln_seconds = stack
            .run(
                "process-video",
                json!({ "videoUrl": video_key, "teamId": TEAM, "docId": "doc_video",
                        "documentVersionId": version, "fileSize": clip_bytes.len() }),
            )
            .await?;
        let ffmpeg_seconds = match plain_first {
            Some(seconds) => seconds,
            None => plain()?,
        };
        let overhead = kiln_seconds / ffmpeg_seconds - 1.0;
        overheads.push(overhead);
        println!(
            "| {round} | {kiln_seconds:.2} | {ffmpeg_seconds:.2} | {:+.1}% |",
            overhead * 100.0
        );
    }
    println!(
        "\nmedian overhead of process-video over ffmpeg: {:+.1}%",
        median(&mut overheads) * 100.0
    );
    let _ = std::fs::remove_dir_all(&stack.work);
    Ok(())
}
