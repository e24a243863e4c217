//! The task host's sample project (`tests/task-host/app`) and a running
//! `kiln task-host` on it, shared by the end-to-end tests
//! (`tests/e2e/task_host.rs`) and `scripts/bench host`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Kiln, kiln_bin, temp_dir};

/// The SDK the sample project runs on: its own (4.1.2), or the
/// `node_modules` of `tests/task-host/sdk-<version>`.
#[derive(Debug, Clone, Copy)]
pub enum Sdk {
    Own,
    V3,
    Latest,
}

impl Sdk {
    fn node_modules(self) -> PathBuf {
        let dir = match self {
            Sdk::Own => "app",
            Sdk::V3 => "sdk-3.3.17",
            Sdk::Latest => "sdk-4.8.3",
        };
        let modules = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/task-host")
            .join(dir)
            .join("node_modules");
        assert!(
            modules.join("@trigger.dev/sdk").is_dir(),
            "{} is not installed: run `npm ci` there (scripts/test does)",
            modules.display()
        );
        modules
    }
}

/// The sample project copied to a directory of its own (the host builds
/// into the app's `.kiln/`), on `sdk`'s installed `node_modules`.
pub fn app_copy(label: &str, sdk: Sdk) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/task-host/app");
    let target = temp_dir(label);
    for entry in ["package.json", "tsconfig.json", "trigger.config.ts", "trigger", "lib"] {
        let status = Command::new("cp")
            .arg("-r")
            .arg(source.join(entry))
            .arg(&target)
            .status()
            .expect("cp");
        assert!(status.success(), "copy {entry}");
    }
    std::os::unix::fs::symlink(sdk.node_modules(), target.join("node_modules")).expect("symlink node_modules");
    target
}

/// A running `kiln task-host`, killed when dropped.
pub struct Host {
    pub child: Child,
    log: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// Starts the host on `app` and waits until it has registered.
    pub async fn start(kiln: &Kiln, app: &Path, slots: usize) -> Host {
        Self::start_with(kiln, app, slots, &[]).await
    }

    /// [`Host::start`], with the app's own environment `env`.
    pub async fn start_with(kiln: &Kiln, app: &Path, slots: usize, env: &[(&str, String)]) -> Host {
        let ready = app.join("ready");
        let log = app.join("host.log");
        let child = Command::new(kiln_bin())
            .args(["task-host", "--app"])
            .arg(app)
            .args(["--slots", &slots.to_string()])
            .env("TRIGGER_API_URL", &kiln.base_url)
            .env("TRIGGER_SECRET_KEY", &kiln.key)
            .env("KILN_HOST_READY_FILE", &ready)
            .env("KILN_HOST_GRACE_SECS", "30")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).expect("log"),
            ))
            .spawn()
            .expect("spawn kiln task-host");
        let mut host = Host { child, log };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ready.exists() {
            if let Ok(Some(status)) = host.child.try_wait() {
                panic!("the host exited ({status}) before registering:\n{}", host.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the host never registered:\n{}",
                host.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        host
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}
