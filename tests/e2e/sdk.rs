//! The official `@trigger.dev/sdk` from npm drives kiln, unchanged: the
//! script `tests/sdk/compat.mjs` asserts what each SDK call answers.
//! `scripts/test` installs the SDK (`npm ci` in `tests/sdk`).

use std::path::Path;
use std::process::Command;

use crate::helpers::Kiln;

#[tokio::test]
async fn the_trigger_sdk_works_against_kiln() {
    let sdk_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    assert!(
        sdk_dir.join("node_modules/@trigger.dev/sdk").is_dir(),
        "@trigger.dev/sdk is not installed: run `npm ci` in tests/sdk (scripts/test does)"
    );
    let kiln = Kiln::dev().await;
    let output = tokio::task::spawn_blocking({
        let (url, key) = (kiln.base_url.clone(), kiln.key.clone());
        move || {
            Command::new("node")
                .arg("compat.mjs")
                .current_dir(&sdk_dir)
                .env("TRIGGER_API_URL", url)
                .env("TRIGGER_SECRET_KEY", key)
                .output()
                .expect("run node (is Node.js installed?)")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script failed:\n{stdout}\n{stderr}\nkiln log: {}",
        kiln.log_path.display()
    );
    for step in [
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
    ] {
        assert!(
            stdout.contains(&format!("ok {step}")),
            "step {step} did not run:\n{stdout}"
        );
    }
}
