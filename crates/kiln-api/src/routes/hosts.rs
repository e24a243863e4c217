//! The worker API a task host uses (`/worker/v1/…`, `docs/task-host.md`),
//! and `GET /api/v1/tasks`, which says who serves each task id.
//!
//! A host registers the tasks it found in an app's files, claims runs of
//! their queues with a long poll, renews each run's lease with a
//! heartbeat (which also tells it of a cancel) and reports each attempt's
//! result as the SDK's `TaskExecutor` made it; a parent waiting in
//! `triggerAndWait` asks for its children's ends. The retry decision is the
//! SDK's: a result with `retry` goes back to its queue after that delay, one
//! without fails the run. A host that dies stops renewing its leases; the
//! scheduler's lapsed-lease sweep then retries its runs, as for kiln's own
//! workers.
//!
//! These handlers record and answer; they never run a task.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, SecondsFormat, Utc};
use kiln_core::RunStatus;
use kiln_core::auth::Environment;
use kiln_queue::Lane;
use kiln_store::hosts::{HostRegistration, HostTask};
use kiln_store::lifecycle::AttemptResult;
use kiln_store::{ClaimedRun, Outcome, RunRow};
use serde::Deserialize;
use serde_json::{Value, json};

use super::runs::check_run_id;
use super::trigger::{decode_packet, refuse_nul_text};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;

/// How long a host's lease on a run lasts without a heartbeat.
pub const HOST_LEASE: Duration = Duration::from_secs(30);
/// The longest a claim waits for runs.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(25);
/// How long one Redis pop blocks inside a claim's wait.
const POP_SLICE: Duration = Duration::from_secs(1);
/// The most runs one claim hands out.
const MAX_CLAIM: u32 = 50;
const MAX_TASKS: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBody {
    host: HostInfo,
    sdk: SdkInfo,
    #[serde(default)]
    content_hash: Option<String>,
    tasks: Vec<TaskManifest>,
    #[serde(default)]
    queues: Vec<QueueManifest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HostInfo {
    hostname: String,
    #[serde(default)]
    pid: Option<i32>,
    slots: u32,
}

#[derive(Debug, Deserialize)]
struct SdkInfo {
    version: String,
}

/// A task as the SDK's manifest describes it, with the app's config
/// defaults already applied by the host.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskManifest {
    id: String,
    file_path: String,
    #[serde(default)]
    export_name: Option<String>,
    #[serde(default)]
    queue: Option<QueueManifest>,
    #[serde(default)]
    retry: Option<RetryManifest>,
    /// Seconds, as Trigger's manifests give it.
    #[serde(default)]
    max_duration: Option<f64>,
    #[serde(default)]
    machine: Option<Value>,
    /// A `schedules.task` with a `cron`: kiln fires it.
    #[serde(default)]
    schedule: Option<ScheduleManifest>,
}

#[derive(Debug, Deserialize)]
struct ScheduleManifest {
    cron: String,
    #[serde(default)]
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueueManifest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    concurrency_limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetryManifest {
    #[serde(default)]
    max_attempts: Option<i64>,
}

fn check_task_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "task id {id:?} must be 1 to 128 characters with no control characters"
        )));
    }
    Ok(())
}

/// The machine preset's name, when the manifest gives one.
fn machine_name(machine: Option<&Value>) -> Option<String> {
    match machine? {
        Value::String(name) => Some(name.clone()),
        Value::Object(fields) => fields.get("preset").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// `POST /worker/v1/register`: records the host and makes it serve every
/// task id of its manifest that kiln does not serve itself.
pub async fn register(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    if body.tasks.len() > MAX_TASKS {
        return Err(ApiError::Unprocessable(format!(
            "a host registers at most {MAX_TASKS} tasks, not {}",
            body.tasks.len()
        )));
    }
    if !(1..=1_000).contains(&body.host.slots) {
        return Err(ApiError::Unprocessable("host.slots must be 1 to 1000".into()));
    }
    if body.host.hostname.is_empty() || body.host.hostname.len() > 255 {
        return Err(ApiError::Unprocessable(
            "host.hostname must be 1 to 255 characters".into(),
        ));
    }
    if body.sdk.version.is_empty() || body.sdk.version.len() > 64 {
        return Err(ApiError::Unprocessable("sdk.version must be 1 to 64 characters".into()));
    }
    refuse_nul_text("host.hostname", &body.host.hostname)?;
    refuse_nul_text("sdk.version", &body.sdk.version)?;
    if let Some(hash) = &body.content_hash {
        refuse_nul_text("contentHash", hash)?;
    }
    for task in &body.tasks {
        refuse_nul_text("tasks[].filePath", &task.file_path)?;
        if let Some(name) = &task.export_name {
            refuse_nul_text("tasks[].exportName", name)?;
        }
        if let Some(name) = task.queue.as_ref().and_then(|q| q.name.as_deref()) {
            refuse_nul_text("tasks[].queue.name", name)?;
        }
        if let Some(name) = machine_name(task.machine.as_ref()) {
            refuse_nul_text("tasks[].machine", &name)?;
        }
    }
    for queue in &body.queues {
        if let Some(name) = &queue.name {
            refuse_nul_text("queues[].name", name)?;
        }
    }
    let major = body.sdk.version.split('.').next().and_then(|m| m.parse::<u32>().ok());
    if !matches!(major, Some(3 | 4)) {
        return Err(ApiError::Unprocessable(format!(
            "sdk.version {:?}: kiln's task host runs @trigger.dev/sdk 3.x and 4.x",
            body.sdk.version
        )));
    }
    let mut limits: HashMap<String, u32> = HashMap::new();
    let mut note_limit = |queue: &QueueManifest| -> Result<(), ApiError> {
        if let (Some(name), Some(limit)) = (&queue.name, queue.concurrency_limit) {
            let limit = u32::try_from(limit).ok().filter(|l| *l >= 1).ok_or_else(|| {
                ApiError::Unprocessable(format!("queue {name:?}: concurrencyLimit must be at least 1"))
            })?;
            limits.insert(name.clone(), limit);
        }
        Ok(())
    };
    for queue in &body.queues {
        note_limit(queue)?;
    }
    let mut tasks = Vec::new();
    let mut schedules = Vec::new();
    let now = chrono::Utc::now();
    let mut shadowed = Vec::new();
    let mut seen = HashSet::new();
    for task in &body.tasks {
        check_task_id(&task.id)?;
        if !seen.insert(task.id.as_str()) {
            return Err(ApiError::Unprocessable(format!("task {:?} is listed twice", task.id)));
        }
        if app.registry.get(&task.id).is_some() {
            // kiln's own task wins; the host's copy is never run.
            shadowed.push(task.id.clone());
            continue;
        }
        if let Some(queue) = &task.queue {
            note_limit(queue)?;
        }
        let queue = task
            .queue
            .as_ref()
            .and_then(|q| q.name.clone())
            .unwrap_or_else(|| format!("task/{}", task.id));
        if app.registry.default_queues().contains(&queue) {
            return Err(ApiError::Unprocessable(format!(
                "task {:?}: queue {queue:?} belongs to a task kiln serves itself; give the task a queue of its own",
                task.id
            )));
        }
        let max_attempts = task
            .retry
            .as_ref()
            .and_then(|r| r.max_attempts)
            .unwrap_or(1)
            .clamp(1, 100);
        let max_duration_ms = match task.max_duration {
            None => None,
            // `timeout.None`, as Supermark's config sets it.
            Some(seconds) if seconds >= kiln_core::options::NO_MAX_DURATION_SECS => None,
            Some(seconds)
                if seconds.is_finite() && seconds > 0.0 && seconds <= kiln_core::duration::MAX.as_secs_f64() =>
            {
                Some((seconds * 1000.0) as i64)
            }
            Some(_) => {
                return Err(ApiError::Unprocessable(format!(
                    "task {:?}: maxDuration must be a positive number of seconds",
                    task.id
                )));
            }
        };
        if let Some(schedule) = &task.schedule {
            let cron = kiln_core::schedule::CronSchedule::parse(&schedule.cron, schedule.timezone.as_deref())
                .map_err(|e| ApiError::Unprocessable(format!("task {:?}: schedule: {e}", task.id)))?;
            let key = format!("host:{}:{}:{}", task.id, cron.expression(), cron.timezone());
            schedules.push((
                kiln_core::id::new_schedule_id(),
                kiln_store::schedules::ScheduleSpec {
                    environment: caller.environment,
                    task_identifier: task.id.clone(),
                    cron: cron.expression().to_owned(),
                    timezone: cron.timezone().to_owned(),
                    external_id: None,
                    deduplication_key: Some(key),
                    next_run_at: cron.next_after(now),
                },
            ));
        }
        tasks.push(HostTask {
            task_id: task.id.clone(),
            queue,
            max_attempts: i32::try_from(max_attempts).unwrap_or(1),
            max_duration_ms,
            file_path: task.file_path.clone(),
            export_name: task.export_name.clone(),
            machine: machine_name(task.machine.as_ref()),
        });
    }
    let host_id = format!("host_{}", kiln_core::id::random_alphanumeric(16));
    let served: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
    let registration = HostRegistration {
        id: host_id.clone(),
        environment: caller.environment,
        hostname: body.host.hostname,
        pid: body.host.pid,
        slots: i32::try_from(body.host.slots).unwrap_or(1),
        sdk_version: body.sdk.version,
        content_hash: body.content_hash,
        tasks,
        queue_limits: limits.into_iter().collect(),
    };
    app.store.register_host(&registration).await?;
    // The host's `schedules.task` crons, as declared now: a cron removed
    // from the app's code is removed here.
    app.store
        .sync_host_schedules(caller.environment, &served, &schedules)
        .await?;
    app.hosts.refresh(&app.store).await?;
    tracing::info!(host = %host_id, served = served.len(), shadowed = shadowed.len(), "task host registered");
    Ok(Json(
        json!({ "workerId": host_id, "served": served, "servedByKiln": shadowed, "schedules": schedules.len() }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimBody {
    worker_id: String,
    free: u32,
    /// How long to wait for runs when none is there (0 to 25; 20).
    #[serde(default)]
    wait_seconds: Option<f64>,
}

/// `POST /worker/v1/claim`: up to `free` runs of the host's tasks, each
/// recorded EXECUTING under the host's lease; waits for runs up to
/// `waitSeconds` when there are none.
pub async fn claim(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<ClaimBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    if !(1..=MAX_CLAIM).contains(&body.free) {
        return Err(ApiError::Unprocessable(format!("free must be 1 to {MAX_CLAIM}")));
    }
    let wait = long_poll_wait(body.wait_seconds)?;
    let host = known_host(&app, &caller, &body.worker_id).await?;
    app.hosts.refresh_if_older(&app.store, Duration::from_secs(2)).await?;
    let served: HashMap<String, kiln_store::hosts::ServedTask> = app
        .hosts
        .served()
        .into_iter()
        .filter(|t| t.host_id == host.id)
        .map(|t| (t.task_id.clone(), t))
        .collect();
    let mut lanes: Vec<Lane> = served
        .values()
        .map(|t| Lane::new(caller.environment.as_str(), t.queue.as_str()))
        .collect();
    lanes.sort();
    lanes.dedup();
    if lanes.is_empty() {
        return Ok(Json(json!({ "runs": [] })));
    }
    // The pop and the claim run to their end even if the host hangs up:
    // ids Redis handed over are recorded under the host's lease, and a
    // lapsed lease brings them back.
    let worker = app.clone();
    let environment = caller.environment;
    let claimed = tokio::spawn(async move {
        claim_runs(&worker, environment, &host, &lanes, &served, body.free as usize, wait).await
    })
    .await
    .map_err(|_| ApiError::Internal("the claim stopped".into()))??;
    Ok(Json(json!({ "runs": claimed })))
}

async fn claim_runs(
    app: &AppState,
    environment: Environment,
    host: &kiln_store::hosts::HostRow,
    lanes: &[Lane],
    served: &HashMap<String, kiln_store::hosts::ServedTask>,
    free: usize,
    wait: Duration,
) -> Result<Vec<Value>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut consumer = app.queue.consumer();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let deliveries = consumer.pop(lanes, free, left.min(POP_SLICE)).await?;
        if !deliveries.is_empty() {
            let limited: HashMap<String, u32> = app.store.limited_queues().await?.into_iter().collect();
            let (limited_runs, free_runs): (Vec<_>, Vec<_>) =
                deliveries.into_iter().partition(|d| limited.contains_key(&d.queue));
            let ids: Vec<String> = free_runs.iter().map(|d| d.run_id.clone()).collect();
            let mut runs: Vec<ClaimedRun> = if ids.is_empty() {
                Vec::new()
            } else {
                app.store.claim_runs(&ids, HOST_LEASE, &host.id).await?
            };
            for delivery in limited_runs {
                if let Some(run) = app
                    .store
                    .claim_limited_run(&delivery.run_id, &delivery.queue, HOST_LEASE, &host.id)
                    .await?
                {
                    runs.push(run);
                }
            }
            let mut answers = Vec::with_capacity(runs.len());
            for run in runs {
                let Some(task) = served.get(&run.task_identifier) else {
                    // A run of a task another host serves on the same queue:
                    // its claim lapses and another host takes it.
                    tracing::warn!(run_id = %run.id, task = %run.task_identifier, "claimed a run of a task this host does not serve");
                    continue;
                };
                let Some(row) = app.store.get_run(environment, &run.id).await? else {
                    continue;
                };
                tracing::info!(run_id = %run.id, host = %host.id, attempt = run.attempt_count, "task host claimed run");
                metrics::counter!(
                    "kiln_host_runs_claimed_total",
                    "hostname" => host.hostname.clone(),
                    "task" => run.task_identifier.clone()
                )
                .increment(1);
                answers.push(json!({
                    "runId": run.id,
                    "attempt": run.attempt_count,
                    "leaseMs": HOST_LEASE.as_millis() as u64,
                    "execution": execution(&row, &run, task, environment, &host.id),
                }));
            }
            if !answers.is_empty() {
                return Ok(answers);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Vec::new());
        }
    }
}

fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `TaskRunExecution` the SDK's `TaskExecutor` runs, with the fields
/// both 3.3 (`attempt.id`, `backgroundWorkerId`, `task.exportName`) and
/// 4.x read; the SDK's schemas drop what their version does not know.
pub fn execution(
    row: &RunRow,
    run: &ClaimedRun,
    task: &kiln_store::hosts::ServedTask,
    environment: Environment,
    host_id: &str,
) -> Value {
    let payload = match (&row.payload, row.payload_type.as_str()) {
        (Value::String(text), "text/plain") => Value::String(text.clone()),
        (value, _) => Value::String(value.to_string()),
    };
    let payload_type = if row.payload_type == "text/plain" {
        "text/plain"
    } else {
        "application/json"
    };
    let metadata = row.metadata.as_ref().map(Value::to_string);
    let (environment_type, environment_slug) = match environment {
        Environment::Dev => ("DEVELOPMENT", "dev"),
        Environment::Prod => ("PRODUCTION", "prod"),
    };
    let mut execution = json!({
        "task": {
            "id": task.task_id,
            "filePath": task.file_path,
            "exportName": task.export_name.clone().unwrap_or_else(|| task.task_id.clone()),
        },
        "attempt": {
            "id": format!("{}_{}", row.id, run.attempt_count),
            "number": run.attempt_count,
            "startedAt": iso(run.started_at),
            "backgroundWorkerId": host_id,
            "backgroundWorkerTaskId": format!("{host_id}:{}", task.task_id),
            "status": "EXECUTING",
        },
        "run": {
            "id": row.id,
            "payload": payload,
            "payloadType": payload_type,
            "tags": row.tags,
            "isTest": row.is_test,
            "createdAt": iso(row.created_at),
            "startedAt": iso(row.started_at.unwrap_or(run.started_at)),
            "maxAttempts": row.max_attempts,
            "maxDuration": row.max_duration_ms.map(|ms| ms / 1000),
            "idempotencyKey": row.idempotency_key,
            "metadata": metadata,
            "metadataType": metadata.as_ref().map(|_| "application/json"),
            "parentTaskRunId": row.parent_run_id,
            "rootTaskRunId": row.parent_run_id,
            "context": {},
            "durationMs": 0,
            "costInCents": 0,
            "baseCostInCents": 0,
            "version": task.sdk_version,
        },
        "queue": { "id": format!("queue_{}", row.queue), "name": row.queue },
        "environment": { "id": format!("env_{environment_slug}"), "slug": environment_slug, "type": environment_type },
        "organization": { "id": "org_kiln", "slug": "kiln", "name": "kiln" },
        "project": { "id": "proj_kiln", "ref": "proj_kiln", "slug": "kiln", "name": "kiln" },
        "machine": {
            "name": task.machine.clone().unwrap_or_else(|| "small-1x".into()),
            "cpu": 1, "memory": 1, "centsPerMs": 0,
        },
    });
    // The SDK's schemas take an absent optional field, never a null one.
    if let Some(Value::Object(run)) = execution.get_mut("run") {
        run.retain(|_, value| !value.is_null());
    }
    execution
}

/// How long a long poll (a claim, a wait for children) may wait: 20 s
/// unless `waitSeconds` says otherwise, at most [`MAX_CLAIM_WAIT`].
fn long_poll_wait(wait_seconds: Option<f64>) -> Result<Duration, ApiError> {
    match wait_seconds {
        None => Ok(Duration::from_secs(20)),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s).min(MAX_CLAIM_WAIT)),
        Some(_) => Err(ApiError::Unprocessable("waitSeconds must be 0 to 25".into())),
    }
}

/// The registered host `id` of the caller's environment, marked seen.
async fn known_host(app: &AppState, caller: &Caller, id: &str) -> Result<kiln_store::hosts::HostRow, ApiError> {
    // kiln makes host ids as `host_` and letters and digits; anything else
    // names no host, and is not worth a query.
    let well_formed = id
        .strip_prefix("host_")
        .is_some_and(|rest| !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !well_formed {
        return Err(unknown_host(id));
    }
    app.store
        .touch_host(caller.environment, id)
        .await?
        .ok_or_else(|| unknown_host(id))
}

fn unknown_host(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no task host {id:?} is registered in this environment; register again"
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatBody {
    worker_id: String,
}

/// `POST /worker/v1/runs/{id}/heartbeat`: renews the host's lease on the
/// run; `cancel: true` when the run is no longer the host's to run
/// (canceled, or its lease lapsed and it went to another).
pub async fn heartbeat(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    check_run_id(&run_id)?;
    known_host(&app, &caller, &body.worker_id).await?;
    let Some(row) = app.store.get_run(caller.environment, &run_id).await? else {
        return Err(super::runs::run_not_found(&run_id));
    };
    let lost = app
        .store
        .renew_leases(std::slice::from_ref(&row.id), HOST_LEASE, &body.worker_id)
        .await?;
    Ok(Json(
        json!({ "cancel": !lost.is_empty(), "leaseMs": HOST_LEASE.as_millis() as u64 }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteBody {
    worker_id: String,
    attempt: i32,
    result: AttemptReport,
}

/// The SDK's `TaskRunExecutionResult`, as far as kiln reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttemptReport {
    ok: bool,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    output_type: Option<String>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    retry: Option<RetryDecision>,
    #[serde(default)]
    skipped_retrying: Option<bool>,
    /// 4.x: the metadata changes not yet flushed, as a packet.
    #[serde(default)]
    flushed_metadata: Option<Value>,
    /// 3.3: the same, as the object itself.
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetryDecision {
    delay: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Packet {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    data_type: Option<String>,
}

/// The error as kiln records it: Trigger's `TaskRunError` fields that say
/// what went wrong, with its type.
fn recorded_error(error: Option<Value>) -> Value {
    let Some(Value::Object(error)) = error else {
        return json!({ "name": "Error", "message": "the task failed without an error" });
    };
    // Postgres cannot store a NUL character; an error message may hold one.
    let text = |field: &str| {
        error
            .get(field)
            .and_then(Value::as_str)
            .map(|text| text.replace('\0', "\u{fffd}"))
    };
    let message = text("message").or_else(|| text("raw")).unwrap_or_default();
    let mut recorded = json!({
        "name": text("name").or_else(|| text("code")).unwrap_or_else(|| "Error".into()),
        "message": message,
    });
    if let Some(stack) = text("stackTrace") {
        recorded["stackTrace"] = Value::String(stack);
    }
    if let Some(kind) = text("type") {
        recorded["type"] = Value::String(kind);
    }
    recorded
}

/// `POST /worker/v1/runs/{id}/complete`: records an attempt's result.
pub async fn complete(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
    JsonBody(body): JsonBody<CompleteBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    check_run_id(&run_id)?;
    let host = known_host(&app, &caller, &body.worker_id).await?;
    let Some(row) = app.store.get_run(caller.environment, &run_id).await? else {
        return Err(super::runs::run_not_found(&run_id));
    };
    let report = body.result;
    match report.flushed_metadata.or(report.metadata) {
        // 4.x: a packet.
        Some(packet) if packet.get("data").is_some() || packet.get("dataType").is_some() => {
            let packet: Packet = serde_json::from_value(packet)
                .map_err(|e| ApiError::Unprocessable(format!("result.flushedMetadata: {e}")))?;
            if let Some(data) = packet.data {
                let (flushed, _) = decode_packet(Some(data), packet.data_type.as_deref(), "result.flushedMetadata")?;
                super::metadata::apply_flushed(&app, &caller, &row.id, flushed).await?;
            }
        }
        Some(flushed @ Value::Object(_)) => super::metadata::apply_flushed(&app, &caller, &row.id, flushed).await?,
        _ => {}
    }
    // An output past the SDK's packet limit was uploaded as a packet; the
    // result names it.
    let mut output_packet = None;
    let (output, output_type) = match (report.output, report.output_type) {
        (Some(Value::String(path)), Some(kind)) if report.ok && kind == "application/store" => {
            let (text, kind, key) = super::packets::read_packet(&app, &caller, &path).await?;
            output_packet = Some(key);
            (Some(Value::String(text)), Some(kind.to_owned()))
        }
        other => other,
    };
    let result = if report.ok {
        let (output, _) = decode_packet(output, output_type.as_deref(), "result.output")?;
        match super::trigger::refuse_nul("the output", &output) {
            Ok(()) => AttemptResult::Completed { output },
            // Another attempt would make the same output: the run fails
            // with the reason rather than coming back forever.
            Err(refusal) => AttemptResult::Ended {
                status: RunStatus::Failed,
                error: json!({ "name": "UnstorableOutput", "message": refusal.to_string() }),
            },
        }
    } else {
        let timed_out = report
            .error
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            == Some("MAX_DURATION_EXCEEDED");
        let error = recorded_error(report.error);
        match report.retry {
            Some(retry)
                if !timed_out
                    && !report.skipped_retrying.unwrap_or(false)
                    && body.attempt < row.max_attempts
                    && retry.delay.is_finite() =>
            {
                AttemptResult::Retry {
                    error,
                    retry_in: Duration::from_millis(retry.delay.clamp(0.0, 86_400_000.0) as u64),
                }
            }
            _ => AttemptResult::Ended {
                status: if timed_out {
                    RunStatus::TimedOut
                } else {
                    RunStatus::Failed
                },
                error,
            },
        }
    };
    let outcome_name = result.name();
    let outcome = Outcome {
        id: row.id.clone(),
        attempt: body.attempt,
        result,
        // Changed above, by the statement the SDK's flushes go through.
        metadata: None,
        claimed: true,
        started_at: row.started_at.unwrap_or_else(Utc::now),
    };
    let recorded = app
        .store
        .finish_attempts(std::slice::from_ref(&outcome))
        .await?
        .first()
        .copied()
        .unwrap_or(false);
    super::packets::forget(&app, output_packet).await;
    tracing::info!(run_id = %row.id, attempt = body.attempt, recorded, "task host reported an attempt");
    metrics::counter!(
        "kiln_host_attempts_finished_total",
        "hostname" => host.hostname,
        "task" => row.task_identifier.clone(),
        "outcome" => outcome_name
    )
    .increment(1);
    Ok(Json(json!({ "recorded": recorded })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitBody {
    worker_id: String,
    /// How long to wait for a child to end when none has (0 to 25; 20).
    #[serde(default)]
    wait_seconds: Option<f64>,
    /// Waitpoints the host has already: only others are answered, and
    /// waited for.
    #[serde(default)]
    seen: Vec<String>,
}

/// How often a waiting parent's children are looked at.
const CHILD_POLL: Duration = Duration::from_millis(200);

/// `POST /worker/v1/runs/{id}/waitpoints/wait`: the run's RUN waitpoints
/// whose child has ended and that the host has not `seen`, as the SDK's
/// `CompletedWaitpoint`s; waits up to `waitSeconds` for the first when
/// there is none. The host hands them to the SDK's runtime, which resumes
/// `triggerAndWait`/`batchTriggerAndWait`.
pub async fn wait_for_children(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
    JsonBody(body): JsonBody<WaitBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    check_run_id(&run_id)?;
    let wait = long_poll_wait(body.wait_seconds)?;
    known_host(&app, &caller, &body.worker_id).await?;
    if app.store.get_run(caller.environment, &run_id).await?.is_none() {
        return Err(super::runs::run_not_found(&run_id));
    }
    if body.seen.len() > 10_000 {
        return Err(ApiError::Unprocessable("seen lists at most 10000 waitpoints".into()));
    }
    let seen: HashSet<&str> = body.seen.iter().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut ended = app.store.ended_children(caller.environment, &run_id).await?;
        ended.retain(|child| !seen.contains(child.id.as_str()));
        if !ended.is_empty() || tokio::time::Instant::now() >= deadline {
            let waitpoints: Vec<Value> = ended.iter().map(completed_waitpoint).collect();
            return Ok(Json(json!({ "completedWaitpoints": waitpoints })));
        }
        tokio::time::sleep(CHILD_POLL.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
    }
}

/// A child's end as the SDK's `CompletedWaitpoint` of type RUN: its output
/// as a JSON packet, or its error as the SDK's `TaskRunError`.
fn completed_waitpoint(child: &kiln_store::waitpoints::EndedChild) -> Value {
    let succeeded = child.status == RunStatus::Completed.as_str();
    let mut waitpoint = json!({
        "id": child.id,
        "friendlyId": child.id,
        "type": "RUN",
        "completedAt": iso(child.completed_at.unwrap_or_else(Utc::now)),
        "completedByTaskRun": { "id": child.child_run_id, "friendlyId": child.child_run_id },
        "outputIsError": !succeeded,
    });
    if let (Some(batch), Some(index)) = (&child.batch_id, child.batch_index) {
        waitpoint["completedByTaskRun"]["batch"] = json!({ "id": batch, "friendlyId": batch });
        waitpoint["index"] = json!(index);
    }
    if succeeded {
        if let Some(output) = &child.output {
            waitpoint["output"] = Value::String(output.to_string());
            waitpoint["outputType"] = json!("application/json");
        }
    } else {
        let recorded = child.error.clone().unwrap_or(Value::Null);
        let text = |field: &str| recorded.get(field).and_then(Value::as_str).map(str::to_owned);
        let mut error = json!({
            "type": "BUILT_IN_ERROR",
            "name": text("name").unwrap_or_else(|| "Error".into()),
            "message": text("message").unwrap_or_else(|| format!("the child run ended {}", child.status)),
            "stackTrace": text("stackTrace").unwrap_or_default(),
        });
        if child.status != RunStatus::Failed.as_str() && child.status != RunStatus::Crashed.as_str() {
            error["message"] = json!(format!(
                "the child run ended {}: {}",
                child.status,
                error["message"].as_str().unwrap_or_default()
            ));
        }
        waitpoint["output"] = Value::String(error.to_string());
        waitpoint["outputType"] = json!("application/json");
    }
    waitpoint
}

/// `GET /api/v1/tasks`: every task id this environment can trigger, and
/// who serves it: kiln itself, or a task host.
pub async fn list_tasks(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    app.hosts
        .refresh_if_older(&app.store, crate::hosts::MISS_REFRESH)
        .await?;
    let mut tasks: Vec<Value> = app
        .registry
        .task_ids()
        .filter_map(|id| {
            let task = app.registry.get(id)?;
            task.defaults.access.refusal(id, caller.environment).is_none().then(|| {
                json!({ "id": id, "servedBy": "kiln", "queue": task.defaults.queue, "maxAttempts": task.defaults.max_attempts })
            })
        })
        .collect();
    for task in app.hosts.served() {
        if task.environment != caller.environment.as_str() || app.registry.get(&task.task_id).is_some() {
            continue;
        }
        tasks.push(json!({
            "id": task.task_id,
            "servedBy": "host",
            "queue": task.queue,
            "maxAttempts": task.max_attempts,
            "filePath": task.file_path,
            "host": {
                "id": task.host_id,
                "hostname": task.hostname,
                "sdkVersion": task.sdk_version,
                "lastSeenAt": iso(task.last_seen_at),
            },
        }));
    }
    Ok(Json(json!({ "tasks": tasks })))
}
