//! The official `@trigger.dev/sdk` from npm drives kiln, unchanged, in
//! three generations (3.3.17, 4.1.2, the latest 4.x): the scripts in
//! `tests/sdk` (`compat.mjs`, `batch.mjs`, `realtime.mjs`, `queues.mjs`) assert what each
//! SDK call answers.
//! `scripts/test` installs the SDK (`npm ci` in `tests/sdk`).

use std::path::Path;
use std::process::Command;

use crate::helpers::Kiln;

/// Runs `script` (in tests/sdk) with Node against `kiln`, the SDK package
/// `package`; answers its standard output once it succeeded.
async fn run_sdk_script(kiln: &Kiln, script: &str, package: &str) -> String {
    let sdk_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    assert!(
        sdk_dir.join("node_modules").join(package).is_dir(),
        "{package} is not installed: run `npm ci` in tests/sdk (scripts/test does)"
    );
    let output = tokio::task::spawn_blocking({
        let (url, key) = (kiln.base_url.clone(), kiln.key.clone());
        let (script, package) = (script.to_owned(), package.to_owned());
        move || {
            Command::new("node")
                .arg(script)
                .current_dir(&sdk_dir)
                .env("TRIGGER_API_URL", url)
                .env("TRIGGER_SECRET_KEY", key)
                .env("KILN_SDK_PACKAGE", package)
                .output()
                .expect("run node (is Node.js installed?)")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script {script} ({package}) failed:\n{stdout}\n{stderr}\nkiln log: {}",
        kiln.log_path.display()
    );
    stdout
}

fn assert_steps(stdout: &str, steps: &[&str]) {
    for step in steps {
        assert!(
            stdout.contains(&format!("ok {step}")),
            "step {step} did not run:\n{stdout}"
        );
    }
}

/// The SDK generations the interop tests run, by their package in
/// tests/sdk: 4.1.2 (Supermark's lock), 3.3.17 (Papermark's pin) and the
/// latest 4.x.
const SDK_4_1: &str = "@trigger.dev/sdk";
const SDK_3: &str = "trigger-sdk-3";
const SDK_LATEST: &str = "trigger-sdk-latest";

const COMPAT_STEPS: &[&str] = &[
    "trigger",
    "retrieve",
    "poll",
    "cancel",
    "replay",
    "idempotency",
    "list",
    "debounce",
    "public token",
    "text payload",
    "schedules",
    "large payload",
    "encoded task id",
    "unsupported endpoint",
];

async fn compat(package: &str) {
    let kiln = Kiln::dev().await;
    assert_steps(&run_sdk_script(&kiln, "compat.mjs", package).await, COMPAT_STEPS);
}

#[tokio::test]
async fn the_trigger_sdk_4_1_works_against_kiln() {
    compat(SDK_4_1).await;
}

#[tokio::test]
async fn the_trigger_sdk_3_works_against_kiln() {
    compat(SDK_3).await;
}

#[tokio::test]
async fn the_latest_trigger_sdk_works_against_kiln() {
    compat(SDK_LATEST).await;
}

const BATCH_STEPS: &[&str] = &[
    "batch trigger",
    "batch runs",
    "batch retrieve",
    "batch idempotency",
    "batch refused",
];

async fn batches(package: &str) {
    let kiln = Kiln::dev().await;
    assert_steps(&run_sdk_script(&kiln, "batch.mjs", package).await, BATCH_STEPS);
}

/// SDK 4.1.2 sends batches to `/api/v2/tasks/batch`.
#[tokio::test]
async fn batch_trigger_works_with_sdk_4_1() {
    batches(SDK_4_1).await;
}

/// SDK 3.3.17 sends them to `/api/v1/tasks/batch`.
#[tokio::test]
async fn batch_trigger_works_with_sdk_3() {
    batches(SDK_3).await;
}

/// SDK 4.8 on creates the batch, then streams NDJSON items.
#[tokio::test]
async fn batch_trigger_works_with_the_latest_sdk() {
    batches(SDK_LATEST).await;
}

const REALTIME_STEPS: &[&str] = &["subscribe to run", "subscribe refused", "subscribe to tag"];

/// kiln with a queue of one slot, "realtime", so a run can be seen QUEUED.
async fn realtime(package: &str) {
    let dir = crate::helpers::temp_dir("tasks");
    let tasks_file = dir.join("kiln.toml");
    std::fs::write(&tasks_file, "[queues.realtime]\nconcurrency_limit = 1\n").expect("write tasks file");
    let kiln = Kiln::builder(crate::helpers::Mode::Dev)
        .env("KILN_TASKS_FILE", tasks_file.to_string_lossy())
        .spawn()
        .await;
    assert_steps(&run_sdk_script(&kiln, "realtime.mjs", package).await, REALTIME_STEPS);
}

#[tokio::test]
async fn realtime_subscriptions_work_with_sdk_4_1() {
    realtime(SDK_4_1).await;
}

#[tokio::test]
async fn realtime_subscriptions_work_with_sdk_3() {
    realtime(SDK_3).await;
}

#[tokio::test]
async fn realtime_subscriptions_work_with_the_latest_sdk() {
    realtime(SDK_LATEST).await;
}

const QUEUE_STEPS: &[&str] = &["pause", "paused queue holds its run", "list and retrieve", "resume"];

/// `queues.*` exists from SDK 4.0 on.
async fn queues(package: &str) {
    let kiln = Kiln::dev().await;
    let stdout = run_sdk_script(&kiln, "queues.mjs", package).await;
    assert_steps(&stdout, QUEUE_STEPS);
}

#[tokio::test]
async fn queues_pause_and_resume_with_sdk_4_1() {
    queues(SDK_4_1).await;
}

#[tokio::test]
async fn queues_pause_and_resume_with_the_latest_sdk() {
    queues(SDK_LATEST).await;
}
