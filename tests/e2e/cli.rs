//! The command line: keys, migrations, and configuration errors that name
//! their variable.

use std::process::Command;

use crate::helpers::{SERVER_SECRET, fresh_database, kiln_bin, redis_url};

#[tokio::test]
async fn keys_create_prints_a_trigger_style_key_and_stores_it_encrypted() {
    let database_url = fresh_database().await;
    let mut keys = Vec::new();
    for env in ["dev", "prod"] {
        let output = Command::new(kiln_bin())
            .args(["keys", "create", "--env", env])
            .env("DATABASE_URL", &database_url)
            .env("KILN_SECRET", SERVER_SECRET)
            .output()
            .expect("run kiln");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let key = stdout.lines().last().unwrap_or_default().to_owned();
        let prefix = format!("tr_{env}_");
        let body = key
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{key:?} should start with {prefix}"));
        assert_eq!(body.len(), 24);
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(
            !String::from_utf8_lossy(&output.stderr).contains(&key),
            "the key must not be logged"
        );
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1]);
    let db = sqlx::PgPool::connect(&database_url).await.expect("connect");
    let rows: Vec<(String, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT environment, encrypted_key, lookup_hash FROM api_keys ORDER BY created_at")
            .fetch_all(&db)
            .await
            .expect("rows");
    assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["dev", "prod"]);
    for ((_, sealed, hash), key) in rows.iter().zip(&keys) {
        let needle = key.as_bytes();
        assert!(
            !sealed.windows(needle.len()).any(|w| w == needle),
            "the key is stored in the clear"
        );
        assert!(!hash.windows(needle.len()).any(|w| w == needle));
        assert!(sealed.len() > needle.len(), "ciphertext carries an authentication tag");
    }
}

#[tokio::test]
async fn migrate_creates_the_schema() {
    let database_url = fresh_database().await;
    let output = Command::new(kiln_bin())
        .arg("migrate")
        .env("DATABASE_URL", &database_url)
        .output()
        .expect("run kiln");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let db = sqlx::PgPool::connect(&database_url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('runs', 'api_keys', 'queues') ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .expect("tables");
    assert_eq!(tables, ["api_keys", "queues", "runs"]);
}

#[tokio::test]
async fn configuration_errors_name_the_variable() {
    let database_url = fresh_database().await;
    let cases: [(&[(&str, &str)], &str); 14] = [
        (&[("DATABASE_URL", "")], "DATABASE_URL"),
        (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
        (&[("KILN_SECRET", "short")], "KILN_SECRET"),
        (&[("KILN_ADDR", "not an address")], "KILN_ADDR"),
        (&[("REDIS_URL", "http://redis")], "REDIS_URL"),
        (&[("REDIS_URL", "redis+sentinel://127.0.0.1:26379")], "REDIS_URL"),
        (&[("KILN_HEARTBEAT", "1m")], "KILN_HEARTBEAT"),
        // Trigger.dev's names are read in place of kiln's, and named when wrong.
        (&[("KILN_SECRET", ""), ("ENCRYPTION_KEY", "short")], "ENCRYPTION_KEY"),
        (&[("KILN_ADDR", ""), ("PORT", "http")], "PORT"),
        (&[("KILN_STORAGE_BACKEND", "s3")], "KILN_S3_BUCKET"),
        (&[("NEXT_PRIVATE_UPLOAD_BUCKET", "docs")], "KILN_S3_ACCESS_KEY_ID"),
        (
            &[("KILN_EXPORTS_CLEANUP_CRON", "0 25 * * *")],
            "KILN_EXPORTS_CLEANUP_CRON",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ];
    for (overrides, variable) in cases {
        let mut command = Command::new(kiln_bin());
        command
            .arg("serve")
            .env("DATABASE_URL", &database_url)
            .env("REDIS_URL", redis_url())
            .env("KILN_SECRET", SERVER_SECRET)
            .env("KILN_ADDR", "127.0.0.1:0");
        for (name, value) in overrides {
            command.env(name, value);
        }
        let output = command.output().expect("run kiln");
        assert!(!output.status.success(), "{variable}: kiln should refuse to start");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "the error should name {variable}: {stderr}");
    }
}

fn doctor(env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(kiln_bin())
        .arg("doctor")
        .env_remove("PDFIUM_LIB_PATH")
        .envs(env.iter().copied())
        .output()
        .expect("run kiln doctor");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn doctor_reports_a_stopped_redis_and_a_missing_libpdfium_with_their_fixes() {
    let database_url = fresh_database().await;
    let storage = crate::helpers::temp_dir("doctor-objects");
    let storage = storage.to_string_lossy();
    let pdfium = std::env::var("PDFIUM_LIB_PATH").unwrap_or_else(|_| "/usr/local/lib/libpdfium.so".into());
    let healthy_redis = redis_url();
    let base = [
        ("DATABASE_URL", database_url.as_str()),
        ("KILN_SECRET", SERVER_SECRET),
        ("KILN_STORAGE_DIR", &*storage),
    ];

    let (ok, out) = doctor(
        &[
            base.as_slice(),
            &[("REDIS_URL", &healthy_redis), ("PDFIUM_LIB_PATH", &pdfium)],
        ]
        .concat(),
    );
    assert!(out.contains("ok       postgres"), "{out}");
    assert!(out.contains("ok       redis"), "{out}");
    assert!(out.contains("ok       libpdfium"), "{out}");
    assert!(out.contains("ok       storage"), "{out}");
    assert_eq!(ok, !out.contains("MISSING"), "exit status follows the report: {out}");

    // A Redis that was running and is stopped, and no libpdfium.
    let redis = crate::helpers::RedisServer::start().await;
    let stopped_url = redis.url.clone();
    redis.stop();
    let (ok, out) = doctor(
        &[
            base.as_slice(),
            &[
                ("REDIS_URL", &stopped_url),
                ("PDFIUM_LIB_PATH", "/nowhere/libpdfium.so"),
            ],
        ]
        .concat(),
    );
    assert!(!ok, "doctor fails when something is missing: {out}");
    assert!(
        out.contains(&format!("MISSING  redis: {stopped_url} does not answer")),
        "{out}"
    );
    assert!(out.contains("fix: start Redis"), "{out}");
    assert!(
        out.contains("MISSING  libpdfium: PDFIUM_LIB_PATH=/nowhere/libpdfium.so names no file"),
        "{out}"
    );
    assert!(out.contains("fix: run scripts/install-pdfium"), "{out}");
    assert!(out.contains("ok       postgres"), "what works is still reported: {out}");
}

#[test]
fn every_command_and_option_has_help_text() {
    let help = |args: &[&str]| {
        let output = Command::new(kiln_bin()).args(args).output().expect("kiln --help");
        assert!(output.status.success(), "{args:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let top = help(&["--help"]);
    for command in ["serve", "worker", "dev", "migrate", "doctor", "keys"] {
        let line = top
            .lines()
            .find(|l| l.trim_start().starts_with(command))
            .unwrap_or_default();
        assert!(line.split_whitespace().count() > 2, "{command} is described: {top}");
    }
    assert!(!top.contains("render-pdf"), "the renderer's command is internal");
    for args in [
        &["worker", "--help"][..],
        &["dev", "--help"],
        &["keys", "create", "--help"],
        &["keys", "revoke", "--help"],
    ] {
        let text = help(args);
        for line in text.lines().filter(|l| l.trim_start().starts_with("--")) {
            let described = line
                .trim_start()
                .split_once("  ")
                .is_some_and(|(_, rest)| !rest.trim().starts_with('['));
            assert!(described, "{args:?}: option without a description: {line:?}");
        }
    }
}
