//! `kiln task-host`: runs an app's own Trigger.dev task files for kiln
//! through the host script embedded here (`host/kiln-task-host.mjs`),
//! with the app's Node and its own copy of the SDK. kiln only hands the
//! script to `node`; everything the host does goes through kiln's worker
//! API (docs/task-host.md), so the host may run on another machine, in
//! the app's own image.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The host script, as `--print-script` writes it.
pub const SCRIPT: &str = include_str!("../host/kiln-task-host.mjs");

/// Writes the script into the app's `.kiln/` and runs it with `node` in
/// the app's directory, in place of this process, so that signals (SIGTERM
/// drains) reach the host itself.
pub fn run(app: &Path, slots: Option<usize>) -> anyhow::Result<()> {
    let app = app
        .canonicalize()
        .with_context(|| format!("--app {}: no such directory", app.display()))?;
    for variable in ["TRIGGER_API_URL", "TRIGGER_SECRET_KEY"] {
        if std::env::var_os(variable).is_none_or(|v| v.is_empty()) {
            anyhow::bail!("{variable} must be set: the task host reaches kiln with the app's own {variable}");
        }
    }
    // The host reads these itself; they are checked here first, so a
    // wrong value is named before anything starts.
    for (variable, range) in [("KILN_HOST_SLOTS", 1..=1000u64), ("KILN_HOST_GRACE_SECS", 0..=86_400)] {
        if let Ok(value) = std::env::var(variable)
            && !value.trim().parse::<u64>().is_ok_and(|n| range.contains(&n))
        {
            anyhow::bail!(
                "{variable}={value:?}: a whole number from {} to {} is needed",
                range.start(),
                range.end()
            );
        }
    }
    if slots.is_some_and(|n| !(1..=1000).contains(&n)) {
        anyhow::bail!("--slots: a whole number from 1 to 1000 is needed");
    }
    let script_dir = app.join(".kiln");
    std::fs::create_dir_all(&script_dir).with_context(|| format!("cannot create {}", script_dir.display()))?;
    let script: PathBuf = script_dir.join("kiln-task-host.mjs");
    std::fs::write(&script, SCRIPT).with_context(|| format!("cannot write {}", script.display()))?;
    let node = std::env::var("KILN_NODE").unwrap_or_else(|_| "node".to_owned());
    let mut command = std::process::Command::new(&node);
    command.arg(&script).current_dir(&app).env("KILN_HOST_APP_DIR", &app);
    if let Some(slots) = slots {
        command.env("KILN_HOST_SLOTS", slots.to_string());
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = command.exec();
        Err(anyhow::anyhow!("cannot start {node} (KILN_NODE): {error}"))
    }
    #[cfg(not(unix))]
    {
        let status = command
            .status()
            .with_context(|| format!("cannot start {node} (KILN_NODE)"))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}
