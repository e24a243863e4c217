//! The official `@trigger.dev/sdk` from npm drives kiln, unchanged: the
//! script `tests/sdk/compat.mjs` asserts what each SDK call answers.
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

#[tokio::test]
async fn the_trigger_sdk_works_against_kiln() {
    let kiln = Kiln::dev().await;
    let stdout = run_sdk_script(&kiln, "compat.mjs", "@trigger.dev/sdk").await;
    assert_steps(
        &stdout,
        &[
            "trigger",
            "retrieve",
            "poll",
            "cancel",
            "replay",
            "idempotency",
            "list",
            "public token",
            "text payload",
            "schedules",
        ],
    );
}

const BATCH_STEPS: &[&str] = &[
    "batch trigger",
    "batch runs",
    "batch retrieve",
    "batch idempotency",
    "batch refused",
];

/// SDK 4.1.2 (Supermark's lock) sends batches to `/api/v2/tasks/batch`.
#[tokio::test]
async fn batch_trigger_works_with_sdk_4() {
    let kiln = Kiln::dev().await;
    assert_steps(
        &run_sdk_script(&kiln, "batch.mjs", "@trigger.dev/sdk").await,
        BATCH_STEPS,
    );
}

/// SDK 3.3.17 (Papermark's pin) sends them to `/api/v1/tasks/batch`.
#[tokio::test]
async fn batch_trigger_works_with_sdk_3() {
    let kiln = Kiln::dev().await;
    assert_steps(&run_sdk_script(&kiln, "batch.mjs", "trigger-sdk-3").await, BATCH_STEPS);
}

const REALTIME_STEPS: &[&str] = &["subscribe to run", "subscribe refused", "subscribe to tag"];

/// kiln with a queue of one slot, "realtime", so a run can be seen QUEUED.
async fn kiln_with_a_one_slot_queue() -> Kiln {
    let dir = crate::helpers::temp_dir("tasks");
    let tasks_file = dir.join("kiln.toml");
    std::fs::write(&tasks_file, "[queues.realtime]\nconcurrency_limit = 1\n").expect("write tasks file");
    Kiln::builder(crate::helpers::Mode::Dev)
        .env("KILN_TASKS_FILE", tasks_file.to_string_lossy())
        .spawn()
        .await
}

#[tokio::test]
async fn realtime_subscriptions_work_with_sdk_4() {
    let kiln = kiln_with_a_one_slot_queue().await;
    assert_steps(
        &run_sdk_script(&kiln, "realtime.mjs", "@trigger.dev/sdk").await,
        REALTIME_STEPS,
    );
}

#[tokio::test]
async fn realtime_subscriptions_work_with_sdk_3() {
    let kiln = kiln_with_a_one_slot_queue().await;
    assert_steps(
        &run_sdk_script(&kiln, "realtime.mjs", "trigger-sdk-3").await,
        REALTIME_STEPS,
    );
}
