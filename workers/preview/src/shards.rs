//! The renderer processes of one document: each draws a share of the
//! pages (a shard) and reports them on its stdout; this side reads the
//! reports, holds each renderer to its page timeout, and turns a crash or
//! a misbehaving renderer into a task error that names the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kiln_core::task::{TaskContext, TaskError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::layout::LayoutRule;
use crate::protocol::{Message, PageReport, failure};
use crate::{PageRenderer, PageSink, STORES_IN_FLIGHT};

/// What a renderer's reader task passes on.
enum ShardEvent {
    Message(Message),
    /// The renderer ended without a `Failed` message: fine when its exit
    /// status is success.
    Ended {
        shard: u32,
        outcome: Result<(), TaskError>,
    },
}

impl PageRenderer {
    /// One renderer slot, waiting for it, then any others free at once: a
    /// document alone on the worker uses every core, documents together
    /// share them.
    pub(crate) async fn renderer_permits(&self, ctx: &TaskContext) -> Result<Vec<OwnedSemaphorePermit>, TaskError> {
        let first = tokio::select! {
            permit = Arc::clone(&self.slots).acquire_owned() => permit
                .map_err(|_| TaskError::retryable(failure::RENDERER_UNAVAILABLE, "the renderer pool is closed"))?,
            () = ctx.cancel.cancelled() => return Err(TaskError::retryable("Canceled", "stopped before rendering")),
        };
        let mut permits = vec![first];
        while permits.len() < self.config.parallelism {
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        Ok(permits)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn render_pages(
        &self,
        ctx: &TaskContext,
        work: &Path,
        input: &Path,
        library: &Path,
        rule: LayoutRule,
        shards: u32,
        lenient: bool,
        sink: &mut impl PageSink,
    ) -> Result<Vec<PageReport>, TaskError> {
        let out_dir = work.join("pages");
        let claims = if shards > 1 {
            Some(claims_folder(work).await?)
        } else {
            None
        };
        let (events_tx, mut events) = mpsc::channel::<ShardEvent>(64);
        let mut readers = tokio::task::JoinSet::new();
        for shard in 0..shards {
            let child = self.spawn_renderer(
                input,
                library,
                &out_dir,
                claims.as_deref(),
                (shard, shards),
                rule,
                lenient,
            )?;
            let limits = Limits {
                page_timeout: self.config.page_timeout,
                memory_limit: self.config.memory_limit,
            };
            readers.spawn(read_shard(child, shard, limits, events_tx.clone()));
        }
        drop(events_tx);

        let mut page_count: Option<u32> = None;
        let mut reported: BTreeSet<u32> = BTreeSet::new();
        let mut done: BTreeMap<u32, PageReport> = BTreeMap::new();
        let mut stores: JoinSet<(PageReport, Result<(), TaskError>)> = JoinSet::new();
        let mut ended = 0;
        let outcome: Result<(), TaskError> = loop {
            if ended == shards && stores.is_empty() {
                break Ok(());
            }
            tokio::select! {
                () = ctx.cancel.cancelled() => {
                    break Err(TaskError::retryable("Canceled", "the preview was stopped"));
                }
                Some(joined) = stores.join_next(), if !stores.is_empty() => {
                    let (report, result) = match joined {
                        Ok(joined) => joined,
                        Err(_) => break Err(broken_renderer("storing a page panicked")),
                    };
                    if let Err(error) = result {
                        break Err(error);
                    }
                    let count = done.len() as u32 + 1;
                    sink.stored(&report, count, page_count.unwrap_or(count));
                    done.insert(report.page_number, report);
                }
                event = events.recv(), if ended < shards && stores.len() < STORES_IN_FLIGHT => {
                    let Some(event) = event else { break Ok(()) };
                    match event {
                        ShardEvent::Message(Message::Document { page_count: count }) => match page_count {
                            Some(known) if known != count => {
                                break Err(TaskError::fatal(
                                    failure::CORRUPT,
                                    "the renderers disagree on the page count",
                                ));
                            }
                            _ => page_count = Some(count),
                        },
                        ShardEvent::Message(Message::Page(report)) => {
                            let Some(total) = page_count else {
                                break Err(broken_renderer("a page was reported before the document"));
                            };
                            if report.page_number == 0 || report.page_number > total || report.file.contains('/') {
                                break Err(broken_renderer("a page out of range was reported"));
                            }
                            if !reported.insert(report.page_number) {
                                break Err(broken_renderer("a page was reported twice"));
                            }
                            let store = sink.store(&report, out_dir.join(&report.file));
                            stores.spawn(async move { (report, store.await) }.in_current_span());
                        }
                        ShardEvent::Message(Message::Failed { name, message }) => {
                            break Err(renderer_failure(&name, message));
                        }
                        ShardEvent::Ended { outcome, shard } => {
                            if let Err(error) = outcome {
                                tracing::warn!(shard, %error, "a renderer failed");
                                break Err(error);
                            }
                            ended += 1;
                        }
                    }
                }
                else => break Ok(()),
            }
        };
        if let Err(error) = outcome {
            readers.abort_all();
            // What was stored is told to the sink, so that it can undo it;
            // what is still being stored finishes first (a store cut off
            // half-way would leave the sink unaware of an object).
            while let Some(joined) = stores.join_next().await {
                if let Ok((report, Ok(()))) = joined {
                    let count = done.len() as u32 + 1;
                    sink.stored(&report, count, page_count.unwrap_or(count));
                    done.insert(report.page_number, report);
                }
            }
            return Err(error);
        }
        let total = page_count.ok_or_else(|| broken_renderer("no renderer opened the document"))?;
        if done.len() != total as usize {
            return Err(broken_renderer(&format!(
                "{} of {total} pages were rendered",
                done.len()
            )));
        }
        Ok(done.into_values().collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_renderer(
        &self,
        input: &Path,
        library: &Path,
        out_dir: &Path,
        claims: Option<&Path>,
        (shard, shards): (u32, u32),
        rule: LayoutRule,
        lenient: bool,
    ) -> Result<tokio::process::Child, TaskError> {
        let config = &self.config;
        let mut command = self.renderer_command(input, library, out_dir);
        if let Some(claims) = claims {
            command.arg("--claims").arg(claims);
        }
        command
            .arg("--shard")
            .arg(format!("{shard}/{shards}"))
            .arg("--max-pages")
            .arg(config.max_pages.to_string())
            .arg("--layout")
            .arg(rule.name())
            .stdout(Stdio::piped());
        if lenient {
            command.arg("--lenient");
        }
        command.spawn().map_err(|e| {
            TaskError::retryable(
                failure::RENDERER_UNAVAILABLE,
                format!("cannot start the renderer {}: {e}", config.renderer.program.display()),
            )
        })
    }

    /// `kiln render-pdf` (through the configured program) with what every
    /// renderer gets: its input, its folder, pdfium, its memory limit, an
    /// empty environment.
    pub(crate) fn renderer_command(&self, input: &Path, library: &Path, out_dir: &Path) -> tokio::process::Command {
        let config = &self.config;
        let mut command = tokio::process::Command::new(&config.renderer.program);
        command
            .args(&config.renderer.leading_args)
            .arg("--input")
            .arg(input)
            .arg("--output-dir")
            .arg(out_dir)
            .arg("--library")
            .arg(library)
            .arg("--memory-limit")
            .arg(config.memory_limit.to_string())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(config.renderer.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

/// A new, empty folder in `work` for one pass's page claims (a repaired
/// copy is drawn again, and its renderers must find no claim of the first).
async fn claims_folder(work: &Path) -> Result<std::path::PathBuf, TaskError> {
    for pass in 0u32.. {
        let folder = work.join(format!("claims-{pass}"));
        match tokio::fs::create_dir(&folder).await {
            Ok(()) => return Ok(folder),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(kiln_worker_kit::local_io("cannot make a folder for page claims", &e)),
        }
    }
    Err(broken_renderer("no folder for page claims could be made"))
}

fn broken_renderer(what: &str) -> TaskError {
    TaskError::fatal(failure::RENDERER_CRASHED, format!("the renderer misbehaved: {what}"))
}

fn renderer_failure(name: &str, message: String) -> TaskError {
    if name == failure::RENDERER_UNAVAILABLE {
        TaskError::retryable(name, message)
    } else {
        TaskError::fatal(name, message)
    }
}

/// What a renderer is held to.
#[derive(Debug, Clone, Copy)]
struct Limits {
    page_timeout: Duration,
    memory_limit: u64,
}

/// Reads one renderer's reports until it exits, killing it when it stays
/// silent past the page timeout.
async fn read_shard(mut child: tokio::process::Child, shard: u32, limits: Limits, events: mpsc::Sender<ShardEvent>) {
    let page_timeout = limits.page_timeout;
    const STDERR_KEPT: usize = 2048;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = events
            .send(ShardEvent::Ended {
                shard,
                outcome: Err(broken_renderer("no output pipes")),
            })
            .await;
        return;
    };
    let stderr_tail = tokio::spawn(async move {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > STDERR_KEPT {
                kept.drain(..kept.len() - STDERR_KEPT);
            }
        }
        String::from_utf8_lossy(&kept).trim().to_owned()
    });
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut reported_failure = false;
    loop {
        match tokio::time::timeout(page_timeout, lines.next_line()).await {
            Err(_) => {
                let _ = child.kill().await;
                let message = format!(
                    "the renderer drew nothing for {} s and was stopped (KILN_PREVIEW_PAGE_TIMEOUT)",
                    page_timeout.as_secs_f32()
                );
                let outcome = Err(TaskError::fatal(failure::RENDER_TIMEOUT, message));
                let _ = events.send(ShardEvent::Ended { shard, outcome }).await;
                return;
            }
            Ok(Ok(Some(line))) => match serde_json::from_str::<Message>(&line) {
                Ok(message) => {
                    reported_failure |= matches!(message, Message::Failed { .. });
                    if events.send(ShardEvent::Message(message)).await.is_err() {
                        return;
                    }
                }
                Err(_) => {
                    let _ = child.kill().await;
                    let outcome = Err(broken_renderer("it printed something that is not a report"));
                    let _ = events.send(ShardEvent::Ended { shard, outcome }).await;
                    return;
                }
            },
            Ok(Ok(None) | Err(_)) => break,
        }
    }
    let status = child.wait().await;
    let stderr = stderr_tail.await.unwrap_or_default();
    let outcome = match status {
        Ok(status) if status.success() || reported_failure => Ok(()),
        Ok(status) => Err(crash_error(status, &stderr, limits.memory_limit)),
        Err(e) => Err(broken_renderer(&format!("cannot wait for it: {e}"))),
    };
    let _ = events.send(ShardEvent::Ended { shard, outcome }).await;
}

fn crash_error(status: std::process::ExitStatus, stderr: &str, memory_limit: u64) -> TaskError {
    const SIGABRT: i32 = 6;
    let how = match (status.signal(), status.code()) {
        (Some(signal), _) => format!("was killed by signal {signal}"),
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "ended".to_owned(),
    };
    // pdfium aborts when an allocation fails, Rust prints a line first.
    let out_of_memory = status.signal() == Some(SIGABRT) || stderr.contains("memory allocation");
    let hint = if out_of_memory {
        format!(
            ", which is what an allocation past its memory limit of {} MiB causes (KILN_PREVIEW_MEMORY_LIMIT_MB)",
            memory_limit >> 20
        )
    } else {
        String::new()
    };
    let last_line = stderr.lines().last().unwrap_or("");
    let detail = if last_line.is_empty() {
        String::new()
    } else {
        format!(": {last_line}")
    };
    TaskError::fatal(
        failure::RENDERER_CRASHED,
        format!("the PDF crashed its renderer, which {how}{hint}{detail}"),
    )
}
