//! `POST /api/v1/tasks/{taskId}/trigger`, as the SDK sends it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use kiln_core::RunId;
use kiln_core::options::{TimeSpec, TriggerOptions};
use kiln_store::NewRun;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;

#[derive(Debug, Deserialize)]
pub struct TriggerBody {
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub options: Option<WireOptions>,
}

/// Trigger's `TriggerTaskRequestBody.options`; fields kiln has no use for
/// (machine, region, lockToVersion…) are accepted and ignored.
/// `parentRunId` (what the SDK sends for a trigger made inside a task)
/// records the run as that run's child; with `resumeParentOnCompletion`
/// the parent waits for it (a RUN waitpoint).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireOptions {
    pub queue: Option<WireQueue>,
    pub concurrency_key: Option<String>,
    pub delay: Option<Value>,
    pub ttl: Option<Value>,
    pub idempotency_key: Option<String>,
    #[serde(rename = "idempotencyKeyTTL")]
    pub idempotency_key_ttl: Option<String>,
    pub max_attempts: Option<i64>,
    pub max_duration: Option<f64>,
    pub metadata: Option<Value>,
    pub metadata_type: Option<String>,
    pub payload_type: Option<String>,
    pub tags: Option<WireTags>,
    pub test: Option<bool>,
    pub parent_run_id: Option<String>,
    /// `triggerAndWait` (SDK 4.x): the parent waits for this run's end.
    pub resume_parent_on_completion: Option<bool>,
    /// SDK 3.3's `parentRunId`: the id of the parent's attempt.
    pub parent_attempt: Option<String>,
    /// SDK 3.3's `triggerAndWait`: the waiting parent's attempt.
    pub dependent_attempt: Option<String>,
}

impl WireOptions {
    /// Whether the parent waits for this run's end.
    pub fn resumes_parent(&self) -> bool {
        self.resume_parent_on_completion == Some(true) || self.dependent_attempt.is_some()
    }
}

/// The run an attempt id names: kiln gives a task host's attempts the id
/// `<run id>_<attempt number>`, which SDK 3.3 sends back as
/// `parentAttempt` or `dependentAttempt`.
pub fn run_of_attempt(field: &str, attempt: &str) -> Result<String, ApiError> {
    attempt
        .rsplit_once('_')
        .filter(|(run, number)| {
            !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) && RunId::parse(run).is_some()
        })
        .map(|(run, _)| run.to_owned())
        .ok_or_else(|| ApiError::Unprocessable(format!("{field}: {attempt:?} is not an attempt of a kiln run")))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireQueue {
    pub name: String,
    pub concurrency_limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum WireTags {
    One(String),
    Many(Vec<String>),
}

fn time_spec(field: &str, value: Option<Value>) -> Result<Option<TimeSpec>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(TimeSpec::Text(text))),
        Some(Value::Number(n)) => Ok(n.as_f64().map(TimeSpec::Seconds)),
        Some(_) => Err(ApiError::Unprocessable(format!(
            "options.{field}: must be a duration string (\"30s\"), a date or a number of seconds"
        ))),
    }
}

/// Decodes a packet as the SDK encodes it (`stringifyIO`): objects as a
/// superjson string, strings as `text/plain`, anything else as JSON.
pub fn decode_packet(data: Option<Value>, data_type: Option<&str>, field: &str) -> Result<(Value, String), ApiError> {
    let data = data.unwrap_or(Value::Null);
    match data_type {
        None => Ok((data, "application/json".into())),
        Some("application/json") => match data {
            Value::String(text) => serde_json::from_str(&text)
                .map(|value| (value, "application/json".into()))
                .map_err(|e| {
                    ApiError::BadRequest(format!("{field} is declared application/json but is not JSON: {e}"))
                }),
            other => Ok((other, "application/json".into())),
        },
        Some("text/plain") => match data {
            text @ Value::String(_) => Ok((text, "text/plain".into())),
            _ => Err(ApiError::Unprocessable(format!(
                "{field} is declared text/plain but is not a string"
            ))),
        },
        Some("application/super+json") => {
            let Value::String(text) = data else {
                return Err(ApiError::Unprocessable(format!(
                    "{field} is declared application/super+json but is not a string"
                )));
            };
            let mut packet: Value = serde_json::from_str(&text)
                .map_err(|e| ApiError::BadRequest(format!("{field} is not valid superjson: {e}")))?;
            // superjson's `meta` only restores JS types (Date, Map…); as
            // plain JSON, `json` already holds their serialized forms.
            Ok((
                packet.get_mut("json").map(Value::take).unwrap_or(Value::Null),
                "application/json".into(),
            ))
        }
        Some("application/store") => Err(ApiError::Unprocessable(format!(
            "{field}: offloaded packets (application/store) are taken for payloads only; send it inline"
        ))),
        Some(other) => Err(ApiError::Unprocessable(format!("{field}: unsupported type {other:?}"))),
    }
}

impl WireOptions {
    fn into_options(self) -> Result<TriggerOptions, ApiError> {
        let metadata = match self.metadata {
            None | Some(Value::Null) => None,
            some => Some(decode_packet(some, self.metadata_type.as_deref(), "options.metadata")?.0),
        };
        Ok(TriggerOptions {
            queue_concurrency_limit: self.queue.as_ref().and_then(|q| q.concurrency_limit),
            queue: self.queue.map(|q| q.name),
            concurrency_key: self.concurrency_key,
            delay: time_spec("delay", self.delay)?,
            ttl: time_spec("ttl", self.ttl)?,
            idempotency_key: self.idempotency_key,
            idempotency_key_ttl: self.idempotency_key_ttl,
            max_attempts: self.max_attempts,
            max_duration_secs: self.max_duration,
            tags: match self.tags {
                None => Vec::new(),
                Some(WireTags::One(tag)) => vec![tag],
                Some(WireTags::Many(tags)) => tags,
            },
            metadata,
            test: self.test.unwrap_or(false),
        })
    }
}

pub async fn trigger(
    State(app): State<AppState>,
    Path(task_id): Path<String>,
    caller: Caller,
    JsonBody(mut body): JsonBody<TriggerBody>,
) -> Result<Response, ApiError> {
    caller.require_secret_key()?;
    let packet = crate::routes::packets::load_offloaded(&app, &caller, &mut body).await?;
    app.look_for_tasks(caller.environment, [task_id.as_str()]).await?;
    let resume_parent = body.options.as_ref().is_some_and(WireOptions::resumes_parent);
    let run = new_run(&app, &caller, task_id, body, Utc::now())?;
    check_parent(&app, &caller, &run).await?;
    let parent = run.parent_run_id.clone();
    let (id, cached) = app.recorder.record(run).await?;
    tracing::Span::current().record("run_id", id.as_str());
    if let (true, Some(parent)) = (resume_parent, parent) {
        wait_for_children(&app, &caller, &parent, vec![(id.clone(), None)]).await?;
    }
    crate::routes::packets::forget(&app, packet).await;
    Ok(with_run_token(
        &caller,
        &id,
        Json(if cached {
            json!({ "id": id, "isCached": true })
        } else {
            json!({ "id": id })
        }),
    ))
}

/// A run of `task_id` as `body` asks for it, validated and ready to record.
pub fn new_run(
    app: &AppState,
    caller: &Caller,
    task_id: String,
    body: TriggerBody,
    now: chrono::DateTime<Utc>,
) -> Result<NewRun, ApiError> {
    let defaults = app
        .task_defaults(caller.environment, &task_id)
        .ok_or_else(|| ApiError::NotFound(unknown_task(&task_id)))?;
    if let Some(refusal) = defaults.access.refusal(&task_id, caller.environment) {
        return Err(ApiError::Forbidden(refusal));
    }
    let mut options = body.options.unwrap_or_default();
    let payload_type = options.payload_type.take();
    let mut parent_run_id = options.parent_run_id.take();
    for (field, attempt) in [
        ("options.dependentAttempt", options.dependent_attempt.take()),
        ("options.parentAttempt", options.parent_attempt.take()),
    ] {
        if let (None, Some(attempt)) = (&parent_run_id, attempt) {
            parent_run_id = Some(run_of_attempt(field, &attempt)?);
        }
    }
    if let Some(parent) = &parent_run_id
        && RunId::parse(parent).is_none()
    {
        return Err(ApiError::Unprocessable(format!(
            "options.parentRunId: {parent:?} is not a run id"
        )));
    }
    let (payload, payload_type) = decode_packet(body.payload, payload_type.as_deref(), "payload")?;
    let spec = options
        .into_options()?
        .validate(now, &defaults)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    // Refused here, alone: in the group commit one such run would fail
    // every trigger written with it.
    refuse_nul("payload", &payload)?;
    if let Some(metadata) = &spec.metadata {
        refuse_nul("options.metadata", metadata)?;
    }
    for (field, text) in [
        ("options.queue", Some(spec.queue.as_str())),
        ("options.concurrencyKey", spec.concurrency_key.as_deref()),
        ("options.idempotencyKey", spec.idempotency_key.as_deref()),
    ]
    .into_iter()
    .chain(spec.tags.iter().map(|tag| ("options.tags", Some(tag.as_str()))))
    {
        if let Some(text) = text {
            refuse_nul_text(field, text)?;
        }
    }
    Ok(NewRun {
        id: RunId::generate(u64::try_from(now.timestamp_millis()).unwrap_or(0)),
        environment: caller.environment,
        task_identifier: task_id,
        payload,
        payload_type,
        spec,
        created_at: now,
        replayed_from: None,
        parent_run_id,
    })
}

/// Records that run `parent` waits for each of `children` (with its
/// batch and index, for a batch's).
pub async fn wait_for_children(
    app: &AppState,
    caller: &Caller,
    parent: &str,
    children: Vec<(String, Option<(String, i32)>)>,
) -> Result<(), ApiError> {
    let waits: Vec<kiln_store::waitpoints::ChildWait> = children
        .into_iter()
        .map(|(child_run_id, batch)| kiln_store::waitpoints::ChildWait {
            waitpoint_id: format!("waitpoint_{}", kiln_core::id::random_alphanumeric(24)),
            child_run_id,
            batch,
        })
        .collect();
    app.store.wait_for_children(caller.environment, parent, &waits).await?;
    Ok(())
}

fn nul_refusal(field: &str) -> ApiError {
    ApiError::Unprocessable(format!(
        "{field} holds a NUL character (\\u0000), which cannot be stored"
    ))
}

/// Refuses text with a NUL character: Postgres cannot store one.
pub fn refuse_nul_text(field: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(nul_refusal(field));
    }
    Ok(())
}

/// Refuses a JSON value with a NUL character in a string or a key: Postgres
/// cannot store one in `jsonb`.
pub fn refuse_nul(field: &str, value: &Value) -> Result<(), ApiError> {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::String(text) => refuse_nul_text(field, text)?,
            Value::Array(items) => pending.extend(items),
            Value::Object(fields) => {
                if fields.keys().any(|key| key.contains('\0')) {
                    return Err(nul_refusal(field));
                }
                pending.extend(fields.values());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Why a task id nobody serves is refused.
pub fn unknown_task(task_id: &str) -> String {
    format!(
        "task {task_id:?} is not known to kiln: declare it in KILN_TASKS_FILE, or serve it from a task host (kiln task-host)"
    )
}

/// Refuses a run whose `parentRunId` names no run of the caller's
/// environment: a child is never recorded under another environment's run.
pub async fn check_parent(app: &AppState, caller: &Caller, run: &NewRun) -> Result<(), ApiError> {
    let Some(parent) = &run.parent_run_id else {
        return Ok(());
    };
    match app.store.get_run(caller.environment, parent).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::Unprocessable(format!(
            "options.parentRunId: there is no run {parent} in this environment"
        ))),
    }
}

/// Adds `x-trigger-jwt`, a token that may read the run, as Trigger does.
pub fn with_run_token(caller: &Caller, run_id: &str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    if let Ok(token) = HeaderValue::from_str(&caller.run_token(run_id)) {
        response.headers_mut().insert("x-trigger-jwt", token);
    }
    response
}
