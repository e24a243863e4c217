//! A pool of warm LibreOffice instances. Each instance is one headless
//! `soffice` with its own profile folder, listening on a private pipe, and
//! one bridge process (`bridge.py`, on Debian's python3-uno) that converts
//! a document at a time on it. Starting LibreOffice takes about a second;
//! a warm instance converts a small document in about a tenth of that.
//!
//! The pool never gives one instance two documents at once. A conversion
//! past its time limit is killed with its instance; an instance that
//! crashed is dropped; either is replaced by a fresh one when next needed.
//! A document that crashed its instance is converted again on a fresh
//! instance and, if that crashes too, once more by a one-shot
//! `soffice --convert-to pdf` under the same limits: whatever LibreOffice's
//! own command line converts, the pool converts.
//! Each soffice runs under an address-space limit (`prlimit`) and with a
//! profile that blocks remote content (an unreachable proxy, untrusted
//! links blocked), so a document cannot fetch anything; it and its bridge
//! die with the worker, however the worker ends.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

pub use kiln_worker_kit::containment::Containment;

const BRIDGE_SOURCE: &str = include_str!("bridge.py");

/// `program`, started contained (see [`Containment`]): in a network
/// namespace of its own where the kernel allows one, without capabilities
/// or a way to gain privileges, and killed by the kernel when the process
/// that started it dies (`kill_on_drop` covers a worker that stops, but a
/// worker killed with SIGKILL runs no code, and its LibreOffice would live
/// on, holding its memory, for good). The parent-death signal follows the
/// thread that started the process; the pool starts instances from the
/// runtime's worker threads, which last as long as the process.
///
/// It also starts with an environment of its own (no kiln secret, database
/// or storage credential reaches a process that parses untrusted files).
fn contained(containment: &Containment, limits: &[String], program: impl AsRef<std::ffi::OsStr>) -> Command {
    let line = containment.command_line(limits);
    let mut command = Command::new(&line[0]);
    command
        .args(&line[1..])
        .arg(program)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C.UTF-8");
    command
}

/// A number for a new instance, unique in the process (not only in its
/// pool): it names the instance's pipe and folder, which two pools in one
/// process must not share.
fn next_instance_number() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// soffice.bin's exit code asking its launcher to start it again.
const RESTART_REQUESTED: i32 = 81;

/// Blocks every way a document could reach the network from LibreOffice.
const PROFILE_SETTINGS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Inet/Settings"><prop oor:name="ooInetProxyType" oor:op="fuse"><value>1</value></prop></item>
<item oor:path="/org.openoffice.Inet/Settings"><prop oor:name="ooInetHTTPProxyName" oor:op="fuse"><value>127.0.0.1</value></prop></item>
<item oor:path="/org.openoffice.Inet/Settings"><prop oor:name="ooInetHTTPProxyPort" oor:op="fuse"><value>9</value></prop></item>
<item oor:path="/org.openoffice.Inet/Settings"><prop oor:name="ooInetHTTPSProxyName" oor:op="fuse"><value>127.0.0.1</value></prop></item>
<item oor:path="/org.openoffice.Inet/Settings"><prop oor:name="ooInetHTTPSProxyPort" oor:op="fuse"><value>9</value></prop></item>
<item oor:path="/org.openoffice.Inet/Settings"><prop oor:name="ooInetNoProxy" oor:op="fuse"><value></value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="BlockUntrustedRefererLinks" oor:op="fuse"><value>true</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="MacroSecurityLevel" oor:op="fuse"><value>3</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Misc"><prop oor:name="FirstRun" oor:op="fuse"><value>false</value></prop></item>
</oor:items>
"#;

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub size: usize,
    /// `soffice.bin` itself (not the `soffice` script, whose launcher would
    /// survive a kill of its child).
    pub soffice: PathBuf,
    /// A python3 that can `import uno` (Debian's, with python3-uno).
    pub python: PathBuf,
    pub conversion_timeout: Duration,
    /// Address-space limit of each soffice, in bytes.
    pub memory_limit: u64,
    /// Profiles and the bridge script live here.
    pub work_dir: PathBuf,
    /// How LibreOffice and its bridge are started.
    pub containment: Containment,
}

/// How a conversion got done when the warm instance it started on crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// A newly started instance converted it.
    FreshInstance,
    /// A one-shot `soffice --convert-to pdf` converted it.
    ColdOneShot,
}

impl Fallback {
    pub fn name(self) -> &'static str {
        match self {
            Fallback::FreshInstance => "freshInstance",
            Fallback::ColdOneShot => "coldOneShot",
        }
    }
}

/// Which instance takes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// An idle instance, or a new one when none is idle.
    Warm,
    /// A newly started one, replacing an idle one (if any) so the pool does
    /// not grow.
    Fresh,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// The document itself: damaged, protected, not a document.
    #[error("{0}")]
    Rejected(String),
    #[error("the conversion took longer than {0:?} and was stopped")]
    TimedOut(Duration),
    #[error("LibreOffice crashed while converting it: {0}")]
    Crashed(String),
    /// The machine's fault: LibreOffice is missing or will not start.
    #[error("LibreOffice is unavailable: {0}")]
    Unavailable(String),
}

struct Instance {
    number: usize,
    soffice: Child,
    bridge: Child,
    requests: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

pub struct OfficePool {
    config: PoolConfig,
    idle: Mutex<Vec<Instance>>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for OfficePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfficePool")
            .field("size", &self.config.size)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    ready: bool,
    error: Option<String>,
    /// A detection's answer: the import filter LibreOffice picked.
    filter: Option<String>,
    /// The bridge lost soffice during the call: soffice died (its process
    /// may not have been reaped yet when the answer arrives).
    #[serde(default)]
    lost: bool,
}

impl OfficePool {
    pub fn new(config: PoolConfig) -> Self {
        let size = config.size.max(1);
        Self {
            config,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(size)),
        }
    }

    /// Starts every instance now, so the first documents find them warm.
    pub async fn warm_up(&self) -> Result<(), ConvertError> {
        let mut started = Vec::new();
        for _ in 0..self.config.size.max(1) {
            started.push(self.start_instance().await?);
        }
        self.lock_idle().extend(started);
        Ok(())
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The import filter LibreOffice's type detection picks for `input`
    /// (empty when no filter recognises it), as its command line would
    /// pick it.
    pub async fn detect(&self, input: &Path) -> Result<String, ConvertError> {
        let request = serde_json::json!({ "detect": input });
        let answer = match self.exchange(&request, Pick::Warm).await {
            Err(ConvertError::Crashed(error)) => {
                tracing::warn!(%error, "LibreOffice crashed detecting the format; trying a fresh instance");
                self.exchange(&request, Pick::Fresh).await?
            }
            other => other?,
        };
        if answer.ok {
            Ok(answer.filter.unwrap_or_default())
        } else {
            Err(ConvertError::Rejected(answer.error.unwrap_or_default()))
        }
    }

    /// Converts `input` into the PDF `output` with the given import filter
    /// and its options (LibreOffice's own detection when there is none).
    /// A warm instance converts it; if it crashes, a fresh instance, then
    /// a one-shot `soffice --convert-to pdf`; the answer says which
    /// fallback, if any, did it.
    pub async fn convert(
        &self,
        input: &Path,
        output: &Path,
        import_filter: Option<(&str, &str)>,
    ) -> Result<Option<Fallback>, ConvertError> {
        let (filter, filter_options) = import_filter.unwrap_or_default();
        let request = serde_json::json!({
            "input": input,
            "output": output,
            "filter": filter,
            "filterOptions": filter_options,
        });
        let converted = |answer: Answer| {
            if answer.ok {
                Ok(())
            } else {
                Err(ConvertError::Rejected(answer.error.unwrap_or_default()))
            }
        };
        let first = match self.exchange(&request, Pick::Warm).await {
            Err(ConvertError::Crashed(error)) => error,
            other => return other.and_then(converted).map(|()| None),
        };
        tracing::warn!(error = %first, "LibreOffice crashed on the document; converting it on a fresh instance");
        let second = match self.exchange(&request, Pick::Fresh).await {
            Err(ConvertError::Crashed(error)) => error,
            other => return other.and_then(converted).map(|()| Some(Fallback::FreshInstance)),
        };
        tracing::warn!(error = %second, "a fresh instance crashed too; converting with a one-shot soffice");
        self.convert_one_shot(input, output, import_filter).await?;
        Ok(Some(Fallback::ColdOneShot))
    }

    /// Sends one request to an instance of its own and reads the answer.
    /// An instance that died on it, or overran the time limit, is killed
    /// and answers [`ConvertError::Crashed`] or [`ConvertError::TimedOut`];
    /// a live one goes back to the pool.
    async fn exchange(&self, request: &serde_json::Value, pick: Pick) -> Result<Answer, ConvertError> {
        let _slot = self.slot().await?;
        let mut instance = match pick {
            Pick::Warm => self.take_warm().await?,
            Pick::Fresh => {
                let replaced = self.lock_idle().pop();
                if let Some(replaced) = replaced {
                    kill(replaced).await;
                }
                self.start_instance().await?
            }
        };
        let line = request.to_string() + "\n";
        let exchange = async {
            instance.requests.write_all(line.as_bytes()).await?;
            instance.requests.flush().await?;
            instance.answers.next_line().await
        };
        match tokio::time::timeout(self.config.conversion_timeout, exchange).await {
            Err(_) => {
                tracing::warn!(
                    instance = instance.number,
                    "conversion timed out; replacing the instance"
                );
                kill(instance).await;
                Err(ConvertError::TimedOut(self.config.conversion_timeout))
            }
            Ok(Ok(Some(line))) => {
                let answer: Answer = serde_json::from_str(&line).unwrap_or(Answer {
                    ok: false,
                    ready: false,
                    error: Some(format!("unreadable answer from the bridge: {line}")),
                    filter: None,
                    lost: false,
                });
                // A document that made soffice die can still get an answer
                // from the bridge; only a live instance goes back.
                if !answer.lost && matches!(instance.soffice.try_wait(), Ok(None)) {
                    self.lock_idle().push(instance);
                    Ok(answer)
                } else {
                    kill(instance).await;
                    Err(ConvertError::Crashed(
                        answer.error.unwrap_or_else(|| "soffice ended".into()),
                    ))
                }
            }
            Ok(Ok(None) | Err(_)) => {
                let status = instance.soffice.try_wait().ok().flatten();
                tracing::warn!(
                    instance = instance.number,
                    ?status,
                    "LibreOffice instance died; replacing it"
                );
                kill(instance).await;
                Err(ConvertError::Crashed(match status {
                    Some(status) => format!("soffice ended ({status})"),
                    None => "the bridge to soffice ended".into(),
                }))
            }
        }
    }

    /// A place for one more LibreOffice process: the pool never runs more
    /// than its size at once.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ConvertError> {
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| ConvertError::Unavailable("the pool is closed".into()))
    }

    /// soffice.bin, contained and under `limits` besides its memory limit,
    /// with its profile in `dir`; append what it is to do.
    fn soffice(&self, dir: &Path, profile: &Path, limits: &[String]) -> Command {
        let limits: Vec<String> = std::iter::once(format!("--as={}", self.config.memory_limit))
            .chain(limits.iter().cloned())
            .collect();
        let mut command = contained(&self.config.containment, &limits, &self.config.soffice);
        command
            .args(SOFFICE_FLAGS)
            .arg(format!("-env:UserInstallation=file://{}", profile.display()))
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// An idle instance that is still alive, or a new one.
    async fn take_warm(&self) -> Result<Instance, ConvertError> {
        loop {
            let idle = self.lock_idle().pop();
            let Some(mut instance) = idle else {
                return self.start_instance().await;
            };
            if matches!(instance.soffice.try_wait(), Ok(None)) {
                return Ok(instance);
            }
            // An instance that died while idle is replaced, so the next
            // document does not pay for it.
            tracing::warn!(
                instance = instance.number,
                "LibreOffice instance died while idle; replacing it"
            );
            kill(instance).await;
        }
    }

    /// The last resort after two crashed instances: LibreOffice's own
    /// command line, in a process and profile of its own, under the same
    /// memory limit, network block and time limit (plus the minute a
    /// first start with a new profile may take).
    async fn convert_one_shot(
        &self,
        input: &Path,
        output: &Path,
        import_filter: Option<(&str, &str)>,
    ) -> Result<(), ConvertError> {
        let _slot = self.slot().await?;
        let number = next_instance_number();
        let dir = self
            .config
            .work_dir
            .join(format!("kiln-office-{}-once-{number}", std::process::id()));
        let profile = make_profile(&dir).await?;
        let out_dir = dir.join("out");
        let allowed = self.config.conversion_timeout + Duration::from_secs(60);
        let cpu_limit = [format!("--cpu={}", allowed.as_secs())];
        let outcome = async {
            let deadline = tokio::time::Instant::now() + allowed;
            for _ in 0..3 {
                let mut command = self.soffice(&dir, &profile, &cpu_limit);
                if let Some((filter, options)) = import_filter.filter(|(filter, _)| !filter.is_empty()) {
                    command.arg(if options.is_empty() {
                        format!("--infilter={filter}")
                    } else {
                        format!("--infilter={filter}:{options}")
                    });
                }
                let mut child = command
                    .args(["--convert-to", "pdf", "--outdir"])
                    .arg(&out_dir)
                    .arg(input)
                    .spawn()
                    .map_err(|e| {
                        ConvertError::Unavailable(format!("cannot start {}: {e}", self.config.soffice.display()))
                    })?;
                let status = match tokio::time::timeout_at(deadline, child.wait()).await {
                    Err(_) => return Err(ConvertError::TimedOut(self.config.conversion_timeout)),
                    Ok(status) => status.map_err(|e| ConvertError::Unavailable(format!("soffice: {e}")))?,
                };
                if status.code() == Some(RESTART_REQUESTED) {
                    continue;
                }
                let made = out_dir.join(input.with_extension("pdf").file_name().unwrap_or_default());
                if tokio::fs::rename(&made, output).await.is_ok() {
                    return Ok(());
                }
                return Err(if status.code().is_none() {
                    ConvertError::Crashed(format!("a one-shot soffice ended too ({status})"))
                } else {
                    ConvertError::Rejected(String::new())
                });
            }
            Err(ConvertError::Unavailable(
                "soffice kept asking to be started again".into(),
            ))
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        outcome
    }

    async fn start_instance(&self) -> Result<Instance, ConvertError> {
        let number = next_instance_number();
        let unavailable = |what: &str, e: std::io::Error| ConvertError::Unavailable(format!("{what}: {e}"));
        let dir = self
            .config
            .work_dir
            .join(format!("kiln-office-{}-{number}", std::process::id()));
        let profile = make_profile(&dir).await?;
        let bridge_path = dir.join("bridge.py");
        tokio::fs::write(&bridge_path, BRIDGE_SOURCE)
            .await
            .map_err(|e| unavailable("bridge script", e))?;
        let pipe = format!("kiln_office_{}_{number}", std::process::id());

        let start_soffice = || {
            self.soffice(&dir, &profile, &[])
                .arg(format!("--accept=pipe,name={pipe};urp;"))
                .spawn()
                .map_err(|e| unavailable(&format!("cannot start {}", self.config.soffice.display()), e))
        };
        let mut soffice = start_soffice()?;
        let mut bridge = contained(&self.config.containment, &[], &self.config.python)
            .arg(&bridge_path)
            .arg(&pipe)
            .env(
                "PYTHONPATH",
                "/usr/lib/python3/dist-packages:/usr/lib/libreoffice/program",
            )
            .env("HOME", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| unavailable(&format!("cannot start {}", self.config.python.display()), e))?;
        let (Some(requests), Some(stdout)) = (bridge.stdin.take(), bridge.stdout.take()) else {
            return Err(ConvertError::Unavailable("the bridge has no pipes".into()));
        };
        let mut answers = BufReader::new(stdout).lines();
        let not_started = || {
            ConvertError::Unavailable(
                "LibreOffice did not start (are libreoffice-core and python3-uno installed? see KILN_SOFFICE_PATH)"
                    .into(),
            )
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut restarts = 0;
        loop {
            tokio::select! {
                line = answers.next_line() => match line {
                    Ok(Some(line)) if serde_json::from_str::<Answer>(&line).is_ok_and(|a| a.ready) => break,
                    _ => return Err(not_started()),
                },
                exited = soffice.wait() => {
                    // soffice.bin ends with 81 after making a new profile and
                    // expects to be started again.
                    let restart = matches!(exited, Ok(status) if status.code() == Some(RESTART_REQUESTED));
                    if !restart || restarts > 2 {
                        return Err(not_started());
                    }
                    restarts += 1;
                    soffice = start_soffice()?;
                }
                () = tokio::time::sleep_until(deadline) => return Err(not_started()),
            }
        }
        tracing::info!(instance = number, "LibreOffice instance ready");
        Ok(Instance {
            number,
            soffice,
            bridge,
            requests,
            answers,
        })
    }
}

/// A headless soffice that shows nothing, restores nothing and opens no
/// document of its own.
const SOFFICE_FLAGS: [&str; 6] = [
    "--headless",
    "--invisible",
    "--nologo",
    "--norestore",
    "--nodefault",
    "--nolockcheck",
];

/// A new, empty folder `dir` with a LibreOffice profile in it that blocks
/// remote content; answers the profile's path.
async fn make_profile(dir: &Path) -> Result<PathBuf, ConvertError> {
    let unavailable = |what: &str, e: std::io::Error| ConvertError::Unavailable(format!("{what}: {e}"));
    let _ = tokio::fs::remove_dir_all(dir).await;
    let profile = dir.join("profile");
    tokio::fs::create_dir_all(profile.join("user"))
        .await
        .map_err(|e| unavailable("profile folder", e))?;
    tokio::fs::write(profile.join("user/registrymodifications.xcu"), PROFILE_SETTINGS)
        .await
        .map_err(|e| unavailable("profile settings", e))?;
    Ok(profile)
}

async fn kill(mut instance: Instance) {
    let _ = instance.bridge.kill().await;
    let _ = instance.soffice.kill().await;
}
