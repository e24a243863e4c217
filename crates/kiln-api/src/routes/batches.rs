//! Batch trigger as each SDK generation sends it, and batch retrieval:
//!
//! - `POST /api/v1/tasks/batch` (SDK 3.x): answers every run, with
//!   `isCached` per run; a batch `idempotency-key` header finds the batch
//!   it made before.
//! - `POST /api/v2/tasks/batch` (SDK 4.x up to 4.7): answers `{id, runCount}`.
//! - `POST /api/v3/batches` then `POST /api/v3/batches/{id}/items` (SDK
//!   4.8 on): the batch is created with its item count, then items arrive
//!   as NDJSON with their index; a resent item is recognised by its index,
//!   and the answer says whether every item has arrived (`sealed`).
//! - `GET /api/v1/batches/{id}`, `GET /api/v2/batches/{id}`: the batch (one
//!   shape for both),
//!   `COMPLETED` once every run has a final status.
//!
//! Items are validated all before any is recorded: one bad item refuses
//! the batch with its index named. Runs are recorded as single triggers
//! would be (group commit, idempotency keys per item), then the batch.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use kiln_store::batches::BatchRow;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::routes::packets;
use crate::routes::trigger::{TriggerBody, WireOptions, check_parent, new_run};

/// Items per batch, as Trigger.dev allows.
pub const MAX_BATCH_ITEMS: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchBody {
    items: Vec<BatchItem>,
    /// `batchTriggerAndWait` (SDK 4.x): every item is this run's child.
    #[serde(default)]
    parent_run_id: Option<String>,
    /// With `parentRunId`: the parent waits for every item's end.
    #[serde(default)]
    resume_parent_on_completion: Option<bool>,
    /// SDK 3.3's `batchTriggerAndWait`: the waiting parent's attempt.
    #[serde(default)]
    dependent_attempt: Option<String>,
}

impl BatchBody {
    /// The run every item is a child of, and whether it waits for them.
    fn parent(&self) -> Result<Option<(String, bool)>, ApiError> {
        if let Some(parent) = &self.parent_run_id {
            return Ok(Some((parent.clone(), self.resume_parent_on_completion == Some(true))));
        }
        match &self.dependent_attempt {
            Some(attempt) => Ok(Some((
                crate::routes::trigger::run_of_attempt("dependentAttempt", attempt)?,
                true,
            ))),
            None => Ok(None),
        }
    }
}

/// Makes every item a child of `parent`, unless it names its own.
fn adopt(items: &mut [BatchItem], parent: &str) {
    for item in items {
        let options = item.options.get_or_insert_with(WireOptions::default);
        options.parent_run_id.get_or_insert_with(|| parent.to_owned());
    }
}

/// The parent waits for each run of batch `batch_id`, in item order.
async fn wait_for_batch(
    app: &AppState,
    caller: &Caller,
    parent: &str,
    batch_id: &str,
    runs: &[Recorded],
) -> Result<(), ApiError> {
    let children = runs
        .iter()
        .enumerate()
        .map(|(index, run)| {
            (
                run.id.clone(),
                Some((batch_id.to_owned(), i32::try_from(index).unwrap_or(i32::MAX))),
            )
        })
        .collect();
    crate::routes::trigger::wait_for_children(app, caller, parent, children).await
}

#[derive(Debug, Deserialize)]
pub struct BatchItem {
    task: String,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    options: Option<WireOptions>,
}

enum BatchOutcome {
    Recorded {
        id: String,
        runs: Vec<Recorded>,
    },
    /// A concurrent batch with the same idempotency key was recorded first;
    /// its answer stands (the runs just recorded stay, outside any batch).
    KeyTaken {
        batch_id: String,
    },
}

struct Recorded {
    id: String,
    task: String,
    cached: bool,
    idempotency_key: Option<String>,
}

/// An item's error, naming the item.
fn for_item(index: usize, error: ApiError) -> ApiError {
    match error {
        ApiError::NotFound(message) => ApiError::NotFound(format!("items[{index}]: {message}")),
        ApiError::BadRequest(message) => ApiError::BadRequest(format!("items[{index}]: {message}")),
        ApiError::Unprocessable(message) => ApiError::Unprocessable(format!("items[{index}]: {message}")),
        ApiError::PayloadTooLarge(message) => ApiError::PayloadTooLarge(format!("items[{index}]: {message}")),
        other => other,
    }
}

fn new_batch_id() -> String {
    format!("batch_{}", kiln_core::id::random_alphanumeric(24))
}

/// Validates every item, then records the runs and the batch.
async fn record_batch(
    app: &AppState,
    caller: &Caller,
    items: Vec<BatchItem>,
    idempotency: Option<(&str, chrono::DateTime<Utc>)>,
) -> Result<BatchOutcome, ApiError> {
    if items.is_empty() {
        return Err(ApiError::BadRequest("a batch needs at least one item".into()));
    }
    if items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "a batch holds at most {MAX_BATCH_ITEMS} items, not {}",
            items.len()
        )));
    }
    let now = Utc::now();
    app.look_for_tasks(caller.environment, items.iter().map(|item| item.task.as_str()))
        .await?;
    let mut runs = Vec::with_capacity(items.len());
    let mut packets = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let mut body = TriggerBody {
            payload: item.payload,
            options: item.options,
        };
        packets.extend(
            packets::load_offloaded(app, caller, &mut body)
                .await
                .map_err(|e| for_item(index, e))?,
        );
        let run = new_run(app, caller, item.task, body, now).map_err(|e| for_item(index, e))?;
        check_parent(app, caller, &run).await.map_err(|e| for_item(index, e))?;
        runs.push(run);
    }
    let recorded = futures::future::try_join_all(runs.into_iter().map(|run| async {
        let task = run.task_identifier.clone();
        let idempotency_key = run.spec.idempotency_key.clone();
        let (id, cached) = app.recorder.record(run).await?;
        Ok::<_, ApiError>(Recorded {
            id,
            task,
            cached,
            idempotency_key,
        })
    }))
    .await?;
    let run_ids: Vec<String> = recorded.iter().map(|r| r.id.clone()).collect();
    let new_id = new_batch_id();
    let batch_id = app
        .store
        .insert_batch(&new_id, caller.environment, &run_ids, idempotency)
        .await?;
    packets::forget(app, packets).await;
    if batch_id != new_id {
        return Ok(BatchOutcome::KeyTaken { batch_id });
    }
    Ok(BatchOutcome::Recorded {
        id: batch_id,
        runs: recorded,
    })
}

fn with_claims(caller: &Caller, body: Value) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(claims) = HeaderValue::from_str(&caller.token_claims_header()) {
        response.headers_mut().insert("x-trigger-jwt-claims", claims);
    }
    response
}

/// SDK 3.x.
pub async fn batch_v1(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Response, ApiError> {
    caller.require_secret_key()?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    let key = header("idempotency-key").map(str::to_owned);
    let now = Utc::now();
    if let Some(key) = &key
        && let Some(batch) = app.store.find_batch_by_key(caller.environment, key, now).await?
    {
        return Ok(with_claims(&caller, cached_batch_v1(&app, &caller, &batch).await?));
    }
    let key_expires_at = match header("idempotency-key-ttl") {
        Some(ttl) => {
            now + chrono::Duration::from_std(
                kiln_core::duration::parse(ttl)
                    .map_err(|e| ApiError::Unprocessable(format!("idempotency-key-ttl: {e}")))?,
            )
            .unwrap_or(kiln_store::runs::DEFAULT_IDEMPOTENCY_TTL)
        }
        None => now + kiln_store::runs::DEFAULT_IDEMPOTENCY_TTL,
    };
    let idempotency = key.as_deref().map(|key| (key, key_expires_at));
    let parent = body.parent()?;
    let mut items = body.items;
    if let Some((parent, _)) = &parent {
        adopt(&mut items, parent);
    }
    let (batch_id, recorded) = match record_batch(&app, &caller, items, idempotency).await? {
        BatchOutcome::Recorded { id, runs } => {
            if let Some((parent, true)) = &parent {
                wait_for_batch(&app, &caller, parent, &id, &runs).await?;
            }
            (id, runs)
        }
        BatchOutcome::KeyTaken { batch_id } => {
            let batch = find_batch(&app, &caller, &batch_id).await?;
            return Ok(with_claims(&caller, cached_batch_v1(&app, &caller, &batch).await?));
        }
    };
    // The SDK's schema takes an absent idempotency key, not a null one.
    let runs: Vec<Value> = recorded
        .iter()
        .map(|run| {
            let mut item = json!({ "id": run.id, "taskIdentifier": run.task, "isCached": run.cached });
            if let Some(key) = &run.idempotency_key {
                item["idempotencyKey"] = json!(key);
            }
            item
        })
        .collect();
    let mut answer = json!({ "id": batch_id, "isCached": false, "runs": runs });
    if let Some(key) = key {
        answer["idempotencyKey"] = json!(key);
    }
    Ok(with_claims(&caller, answer))
}

/// The answer to a batch trigger whose idempotency key found an earlier
/// batch: that batch, every run cached.
async fn cached_batch_v1(app: &AppState, caller: &Caller, batch: &BatchRow) -> Result<Value, ApiError> {
    let ids: Vec<String> = batch.run_ids.iter().flatten().cloned().collect();
    let tasks = app.store.batch_run_tasks(caller.environment, &ids).await?;
    let runs: Vec<Value> = ids
        .iter()
        .map(|id| {
            let task = tasks.get(id).map_or("", String::as_str);
            json!({ "id": id, "taskIdentifier": task, "isCached": true })
        })
        .collect();
    let mut answer = json!({ "id": batch.id, "isCached": true, "runs": runs });
    if let Some(key) = &batch.idempotency_key {
        answer["idempotencyKey"] = json!(key);
    }
    Ok(answer)
}

/// SDK 4.x.
pub async fn batch_v2(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Response, ApiError> {
    caller.require_secret_key()?;
    let parent = body.parent()?;
    let mut items = body.items;
    if let Some((parent, _)) = &parent {
        adopt(&mut items, parent);
    }
    match record_batch(&app, &caller, items, None).await? {
        BatchOutcome::Recorded { id, runs } => {
            if let Some((parent, true)) = &parent {
                wait_for_batch(&app, &caller, parent, &id, &runs).await?;
            }
            Ok(with_claims(&caller, json!({ "id": id, "runCount": runs.len() })))
        }
        // Without a batch key, no other batch can hold it.
        BatchOutcome::KeyTaken { batch_id } => Err(ApiError::Internal(format!("batch {batch_id} took no key"))),
    }
}

async fn find_batch(app: &AppState, caller: &Caller, id: &str) -> Result<BatchRow, ApiError> {
    if !caller.may_read_batch(id) {
        return Err(ApiError::Forbidden(format!(
            "this public access token may not read batch {id}"
        )));
    }
    app.store
        .get_batch(caller.environment, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("batch {id:?} not found")))
}

fn present_batch(batch: &BatchRow) -> serde_json::Map<String, Value> {
    let mut body = serde_json::Map::new();
    body.insert("id".into(), json!(batch.id));
    let arrived = batch.run_ids.iter().flatten().count();
    let expected = batch
        .expected_count
        .map_or(arrived, |n| usize::try_from(n).unwrap_or(0));
    body.insert(
        "status".into(),
        json!(if batch.unfinished == 0 && arrived >= expected {
            "COMPLETED"
        } else {
            "PENDING"
        }),
    );
    if let Some(key) = &batch.idempotency_key {
        body.insert("idempotencyKey".into(), json!(key));
    }
    body.insert(
        "createdAt".into(),
        json!(batch.created_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    body.insert(
        "updatedAt".into(),
        json!(batch.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    body.insert("runCount".into(), json!(expected));
    body.insert("runs".into(), json!(batch.run_ids.iter().flatten().collect::<Vec<_>>()));
    // SDK 4.8 reads how the items were processed: kiln records each item
    // before answering, so no error is ever left for later.
    let mut processing = json!({ "errors": [] });
    if arrived >= expected {
        processing["completedAt"] = json!(batch.created_at.to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    body.insert("processing".into(), processing);
    body
}

/// Both generations' shape at once: SDK 3 ignores the fields it does not
/// know, SDK 4 needs them.
pub async fn retrieve(
    State(app): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let batch = find_batch(&app, &caller, &id).await?;
    Ok(Json(Value::Object(present_batch(&batch))))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBatch {
    run_count: i64,
    /// `batchTriggerAndWait`: the items are this run's children.
    #[serde(default)]
    parent_run_id: Option<String>,
    /// With `parentRunId`: the parent waits for every item's end.
    #[serde(default)]
    resume_parent_on_completion: Option<bool>,
    idempotency_key: Option<String>,
    #[serde(rename = "idempotencyKeyTTL")]
    idempotency_key_ttl: Option<String>,
}

/// SDK 4.8 on, phase one.
pub async fn create_v3(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateBatch>,
) -> Result<Response, ApiError> {
    caller.require_secret_key()?;
    let expected = i32::try_from(body.run_count)
        .ok()
        .filter(|n| (1..=MAX_STREAMED_ITEMS).contains(n))
        .ok_or_else(|| ApiError::BadRequest(format!("runCount must be between 1 and {MAX_STREAMED_ITEMS}")))?;
    let now = Utc::now();
    let ttl = match &body.idempotency_key_ttl {
        Some(ttl) => chrono::Duration::from_std(
            kiln_core::duration::parse(ttl).map_err(|e| ApiError::Unprocessable(format!("idempotencyKeyTTL: {e}")))?,
        )
        .unwrap_or(kiln_store::runs::DEFAULT_IDEMPOTENCY_TTL),
        None => kiln_store::runs::DEFAULT_IDEMPOTENCY_TTL,
    };
    let key = body.idempotency_key.as_deref().map(|key| (key, now + ttl));
    if let Some(parent) = &body.parent_run_id {
        check_run_id_of_parent(&app, &caller, parent).await?;
    }
    let (id, cached) = app
        .store
        .create_streamed_batch(&new_batch_id(), caller.environment, expected, key)
        .await?;
    if let (Some(parent), false) = (&body.parent_run_id, cached) {
        let resume = body.resume_parent_on_completion == Some(true);
        app.store.adopt_batch(caller.environment, &id, parent, resume).await?;
    }
    let mut answer = json!({ "id": id, "runCount": expected, "isCached": cached });
    if let Some(key) = body.idempotency_key {
        answer["idempotencyKey"] = json!(key);
    }
    Ok(with_claims(&caller, answer))
}

/// Refuses a `parentRunId` that names no run of the caller's environment.
async fn check_run_id_of_parent(app: &AppState, caller: &Caller, parent: &str) -> Result<(), ApiError> {
    if kiln_core::RunId::parse(parent).is_none() || app.store.get_run(caller.environment, parent).await?.is_none() {
        return Err(ApiError::Unprocessable(format!(
            "parentRunId: there is no run {parent} in this environment"
        )));
    }
    Ok(())
}

/// Items a streamed batch may expect, as Trigger.dev allows.
const MAX_STREAMED_ITEMS: i32 = 1000;

#[derive(Debug, Deserialize)]
struct StreamedItem {
    index: i64,
    task: String,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    options: Option<WireOptions>,
}

/// SDK 4.8 on, phase two: NDJSON items.
pub async fn items_v3(
    State(app): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require_secret_key()?;
    let batch = find_batch(&app, &caller, &id).await?;
    let expected = batch
        .expected_count
        .ok_or_else(|| ApiError::BadRequest(format!("batch {id} was not created for streamed items")))?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::BadRequest("the items are not UTF-8".into()))?;
    let now = Utc::now();
    let mut runs = Vec::new();
    let mut packets = Vec::new();
    let mut deduplicated = 0usize;
    for (line_number, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let item: StreamedItem = serde_json::from_str(line)
            .map_err(|e| ApiError::BadRequest(format!("line {}: not a batch item: {e}", line_number + 1)))?;
        let index = i32::try_from(item.index)
            .ok()
            .filter(|i| (0..expected).contains(i))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "line {}: index {} is outside the batch of {expected}",
                    line_number + 1,
                    item.index
                ))
            })?;
        let slot = usize::try_from(index).unwrap_or(usize::MAX);
        if batch.run_ids.get(slot).is_some_and(Option::is_some) || runs.iter().any(|(i, _)| *i == index) {
            deduplicated += 1;
            continue;
        }
        let mut body = TriggerBody {
            payload: item.payload,
            options: item.options,
        };
        if let Some(parent) = &batch.parent_run_id {
            let options = body.options.get_or_insert_with(WireOptions::default);
            options.parent_run_id.get_or_insert_with(|| parent.clone());
        }
        let item_index = usize::try_from(index).unwrap_or(0);
        app.look_for_tasks(caller.environment, [item.task.as_str()]).await?;
        packets.extend(
            packets::load_offloaded(&app, &caller, &mut body)
                .await
                .map_err(|e| for_item(item_index, e))?,
        );
        let run = new_run(&app, &caller, item.task, body, now).map_err(|e| for_item(item_index, e))?;
        check_parent(&app, &caller, &run)
            .await
            .map_err(|e| for_item(item_index, e))?;
        runs.push((index, run));
    }
    let recorder = &app.recorder;
    let recorded = futures::future::try_join_all(runs.into_iter().map(|(index, run)| async move {
        let (run_id, _) = recorder.record(run).await?;
        Ok::<_, ApiError>((index, run_id))
    }))
    .await?;
    let accepted = app.store.place_batch_items(&id, &recorded).await?;
    if let (Some(parent), true) = (&batch.parent_run_id, batch.resume_parent) {
        let children = recorded
            .iter()
            .map(|(index, run_id)| (run_id.clone(), Some((id.clone(), *index))))
            .collect();
        crate::routes::trigger::wait_for_children(&app, &caller, parent, children).await?;
    }
    packets::forget(&app, packets).await;
    let batch = find_batch(&app, &caller, &id).await?;
    let arrived = batch.run_ids.iter().flatten().count();
    let expected = usize::try_from(expected).unwrap_or(0);
    let mut answer = json!({
        "id": id,
        "itemsAccepted": accepted,
        "itemsDeduplicated": deduplicated,
        "sealed": arrived >= expected,
    });
    if arrived < expected {
        answer["enqueuedCount"] = json!(arrived);
        answer["expectedCount"] = json!(expected);
    }
    Ok(Json(answer).into_response())
}
