//! `kiln doctor`: checks what a kiln process needs — its configuration,
//! Postgres, Redis, storage, libpdfium, LibreOffice and, when Supermark's
//! tasks are served, Supermark's database, bucket and ffmpeg — and prints one
//! line for each, with the fix for what is missing. Exits non-zero when
//! anything is. It changes nothing (no migration, no bucket created).

use std::path::Path;
use std::time::Duration;

use crate::config::{DatabaseConfig, RuntimeConfig, StorageConfig, redact_url};

const TIMEOUT: Duration = Duration::from_secs(3);

struct Report {
    failures: usize,
}

impl Report {
    fn ok(&self, what: &str, detail: impl std::fmt::Display) {
        println!("ok       {what}: {detail}");
    }

    /// Worth knowing, but not this process's fault: not counted as missing.
    fn warn(&self, what: &str, problem: impl std::fmt::Display, fix: &str) {
        println!("WARN     {what}: {problem}\n         fix: {fix}");
    }

    fn missing(&mut self, what: &str, problem: impl std::fmt::Display, fix: &str) {
        self.failures += 1;
        println!("MISSING  {what}: {problem}\n         fix: {fix}");
    }
}

/// Runs every check; `Ok(false)` when something is missing.
pub async fn run() -> anyhow::Result<bool> {
    let mut report = Report { failures: 0 };
    let database = match DatabaseConfig::from_env() {
        Ok(database) => Some(database),
        Err(error) => {
            report.missing("configuration", &error, "set it in .env (see .env.example)");
            None
        }
    };
    let runtime = match RuntimeConfig::from_env() {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            report.missing("configuration", &error, "set it in .env (see .env.example)");
            None
        }
    };
    if let Err(error) = crate::config::server_secret() {
        report.missing(
            "configuration",
            &error,
            "set KILN_SECRET in .env (scripts/dev writes one)",
        );
    }
    let storage = match StorageConfig::from_env() {
        Ok(storage) => Some(storage),
        Err(error) => {
            report.missing("configuration", &error, "set it in .env (see .env.example)");
            None
        }
    };
    if report.failures == 0 {
        report.ok("configuration", "every variable reads");
    }

    if let Some(database) = &database {
        let checked = match crate::app::connect_store(database) {
            Ok(store) => tokio::time::timeout(TIMEOUT, store.ping())
                .await
                .map_err(|_| "no answer within 3 s".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map(|()| store),
            Err(error) => Err(format!("{error:#}")),
        };
        match checked {
            Ok(store) => {
                report.ok("postgres", "answers");
                check_task_hosts(&report, &store).await;
            }
            Err(error) => report.missing(
                "postgres",
                error,
                "start PostgreSQL, or point DATABASE_URL at it (scripts/dev starts one on Debian)",
            ),
        }
    }
    if let Some(runtime) = &runtime {
        let checked = match kiln_queue::Queue::connect_lazy(&runtime.redis_url, &runtime.redis_prefix) {
            // With Sentinel, the primary is known once a sentinel answers.
            Ok(queue) => tokio::time::timeout(TIMEOUT, async {
                loop {
                    match queue.ping().await {
                        Err(kiln_queue::QueueError::NoPrimary) => tokio::time::sleep(Duration::from_millis(100)).await,
                        answered => return answered,
                    }
                }
            })
            .await
            .map_err(|_| "no answer within 3 s".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string())),
            Err(error) => Err(error.to_string()),
        };
        match checked {
            Ok(()) => report.ok("redis", format!("answers at {}", redact_url(&runtime.redis_url))),
            Err(error) => report.missing(
                "redis",
                format!("{} does not answer: {error}", redact_url(&runtime.redis_url)),
                "start Redis (redis-server --daemonize yes), or point REDIS_URL at it",
            ),
        }
    }
    if let Some(storage) = &storage {
        check_storage(&mut report, storage).await;
    }
    if let Some(runtime) = &runtime {
        match kiln_worker_preview::library::locate(runtime.preview.pdfium_lib_path.as_deref()) {
            Ok(path) => report.ok("libpdfium", path.display()),
            Err(error) => report.missing(
                "libpdfium",
                error,
                "run scripts/install-pdfium (as root), or set PDFIUM_LIB_PATH to libpdfium.so",
            ),
        }
        check_repair_tools(&mut report);
        check_libreoffice(&mut report, &runtime.office.soffice, &runtime.office.python).await;
        match &runtime.supermark {
            Some(supermark) => check_supermark(&mut report, supermark).await,
            None => report.ok(
                "supermark",
                "off (set KILN_SUPERMARK_DATABASE_URL or POSTGRES_PRISMA_URL to serve its tasks)",
            ),
        }
    }
    if report.failures > 0 {
        println!("\n{} thing(s) missing", report.failures);
    }
    Ok(report.failures == 0)
}

/// How long a task host may go unseen (it claims every few seconds) before
/// its tasks' runs are said to wait.
const HOST_SILENCE_SECS: i64 = 120;

/// The task hosts and what they serve; a task whose host has gone quiet
/// is a warning (its runs wait), not a fault of this process.
async fn check_task_hosts(report: &Report, store: &kiln_store::Store) {
    let served = match tokio::time::timeout(TIMEOUT, store.served_tasks()).await {
        Ok(Ok(served)) => served,
        Ok(Err(error)) => {
            report.warn("task hosts", error, "run `kiln migrate`");
            return;
        }
        Err(_) => {
            report.warn("task hosts", "no answer within 3 s", "look at Postgres's load");
            return;
        }
    };
    if served.is_empty() {
        report.ok(
            "task hosts",
            "none registered (kiln task-host runs an app's own task files)",
        );
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
    let (quiet, alive): (Vec<_>, Vec<_>) = served
        .iter()
        .partition(|task| now - task.last_seen_at.timestamp() > HOST_SILENCE_SECS);
    if !alive.is_empty() {
        let mut hosts: Vec<String> = alive
            .iter()
            .map(|task| format!("{} ({}, SDK {})", task.hostname, task.environment, task.sdk_version))
            .collect();
        hosts.sort();
        hosts.dedup();
        report.ok(
            "task hosts",
            format!("{} task(s) served by {}", alive.len(), hosts.join(", ")),
        );
    }
    if !quiet.is_empty() {
        let tasks: Vec<String> = quiet
            .iter()
            .map(|task| {
                format!(
                    "{} ({}, last seen {})",
                    task.task_id,
                    task.environment,
                    task.last_seen_at.to_rfc3339()
                )
            })
            .collect();
        report.warn(
            "task hosts",
            format!(
                "no host has been seen for 2 minutes serving {}; their runs wait",
                tasks.join(", ")
            ),
            "start `kiln task-host --app DIR` beside the app (docs/task-host.md)",
        );
    }
}

async fn check_storage(report: &mut Report, storage: &StorageConfig) {
    match storage {
        StorageConfig::Local { dir, .. } => {
            let probe = dir.join(".kiln-doctor");
            let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b"ok"));
            let _ = std::fs::remove_file(&probe);
            match written {
                Ok(()) => report.ok("storage", format!("local folder {} is writable", dir.display())),
                Err(error) => report.missing(
                    "storage",
                    format!("cannot write in {}: {error}", dir.display()),
                    "make KILN_STORAGE_DIR writable for kiln, or configure S3 (KILN_S3_BUCKET)",
                ),
            }
        }
        StorageConfig::S3(s3) => {
            let checked = match kiln_storage::S3Store::new(s3) {
                Ok(store) => tokio::time::timeout(TIMEOUT * 2, kiln_storage::ObjectStore::list(&store, "_kiln/"))
                    .await
                    .map_err(|_| "no answer within 6 s".to_owned())
                    .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
                Err(error) => Err(error.to_string()),
            };
            match checked {
                Ok(()) => report.ok("storage", format!("S3 bucket {} answers", s3.bucket)),
                Err(error) => report.missing(
                    "storage",
                    format!("S3 bucket {}: {error}", s3.bucket),
                    "check KILN_S3_ENDPOINT, the keys and the bucket (kiln serve creates a missing bucket)",
                ),
            }
        }
    }
}

/// Supermark's database has the tables and columns its tasks use, its
/// bucket answers, and ffmpeg is there for its videos.
async fn check_supermark(report: &mut Report, config: &kiln_app_supermark::SupermarkConfig) {
    let schema = match kiln_app_supermark::SupermarkDb::connect_lazy(config) {
        Ok(db) => tokio::time::timeout(TIMEOUT * 2, db.check_schema())
            .await
            .map_err(|_| "no answer within 6 s".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string())),
        Err(error) => Err(error.to_string()),
    };
    match schema {
        Ok(()) => report.ok("supermark database", "its four tables have every column the tasks use"),
        Err(error) => report.missing(
            "supermark database",
            error,
            "point KILN_SUPERMARK_DATABASE_URL (or POSTGRES_PRISMA_URL) at Supermark's migrated database",
        ),
    }
    let bucket = match kiln_storage::S3Store::new(&config.storage) {
        Ok(store) => tokio::time::timeout(TIMEOUT * 2, kiln_storage::ObjectStore::list(&store, "kiln-doctor/"))
            .await
            .map_err(|_| "no answer within 6 s".to_owned())
            .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
        Err(error) => Err(error.to_string()),
    };
    match bucket {
        Ok(()) => report.ok(
            "supermark bucket",
            format!("S3 bucket {} answers", config.storage.bucket),
        ),
        Err(error) => report.missing(
            "supermark bucket",
            format!("S3 bucket {}: {error}", config.storage.bucket),
            "check NEXT_PRIVATE_UPLOAD_ENDPOINT, NEXT_PRIVATE_UPLOAD_BUCKET and its keys",
        ),
    }
    for tool in [&config.ffmpeg, &config.ffprobe] {
        let ran = tokio::process::Command::new(tool).arg("-version").output().await;
        match ran {
            Ok(out) if out.status.success() => report.ok(tool, "runs"),
            Ok(_) | Err(_) => report.missing(
                tool,
                format!("{tool} does not run"),
                "apt-get install ffmpeg (scripts/dev does), or set KILN_FFMPEG / KILN_FFPROBE",
            ),
        }
    }
}

/// The tools the preview worker repairs damaged PDFs with, where its
/// renderers look for them (PATH=/usr/bin:/bin).
fn check_repair_tools(report: &mut Report) {
    for (tool, package) in [("mutool", "mupdf-tools"), ("qpdf", "qpdf")] {
        match ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(tool))
            .find(|p| p.is_file())
        {
            Some(path) => report.ok(tool, format!("{} (repairs damaged PDFs)", path.display())),
            None => report.missing(
                tool,
                format!("{tool} is not in /usr/bin or /bin: damaged PDFs that MuPDF repairs will fail"),
                &format!("apt-get install {package} (scripts/dev does)"),
            ),
        }
    }
}

async fn check_libreoffice(report: &mut Report, soffice: &Path, python: &Path) {
    if !soffice.is_file() {
        report.missing(
            "libreoffice",
            format!("{} is not there", soffice.display()),
            "apt-get install libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui python3-uno, or set KILN_SOFFICE_PATH",
        );
        return;
    }
    let uno = tokio::process::Command::new(python)
        .args(["-c", "import uno"])
        .env(
            "PYTHONPATH",
            "/usr/lib/python3/dist-packages:/usr/lib/libreoffice/program",
        )
        .output()
        .await;
    match uno {
        Ok(out) if out.status.success() => report.ok("libreoffice", format!("{} with Python UNO", soffice.display())),
        Ok(_) | Err(_) => report.missing(
            "libreoffice",
            format!("{} cannot import uno", python.display()),
            "apt-get install python3-uno, or set KILN_OFFICE_PYTHON to a python3 that has it",
        ),
    }
}
