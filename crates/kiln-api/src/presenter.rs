//! Runs as Trigger.dev's SDK expects to read them (its zod schemas
//! `RetrieveRunResponse` and `ListRunResponseItem`). Optional fields are
//! left out rather than sent as `null`, which the schemas refuse.

use chrono::{DateTime, SecondsFormat, Utc};
use kiln_core::RunStatus;
use kiln_core::auth::Environment;
use kiln_store::{RunRow, StoreError};
use serde_json::{Map, Value, json};

fn date(at: DateTime<Utc>) -> Value {
    Value::String(at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn duration_text(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The fields every view of a run shares.
fn common(row: &RunRow) -> Result<Map<String, Value>, StoreError> {
    let status = row.status()?;
    let mut run = Map::new();
    run.insert("id".into(), json!(row.id));
    run.insert("status".into(), json!(status.as_str()));
    run.insert("taskIdentifier".into(), json!(row.task_identifier));
    run.insert(
        "isQueued".into(),
        json!(matches!(status, RunStatus::Queued | RunStatus::Delayed)),
    );
    run.insert("isExecuting".into(), json!(status == RunStatus::Executing));
    run.insert("isWaiting".into(), json!(false));
    // Every final status, EXPIRED and TIMED_OUT included, or `runs.poll`
    // never ends.
    run.insert("isCompleted".into(), json!(status.is_final()));
    run.insert("isSuccess".into(), json!(status.is_success()));
    run.insert("isFailed".into(), json!(status.is_failed()));
    run.insert("isCancelled".into(), json!(status == RunStatus::Canceled));
    run.insert("isTest".into(), json!(row.is_test));
    run.insert("createdAt".into(), date(row.created_at));
    run.insert("updatedAt".into(), date(row.updated_at));
    if let Some(key) = &row.idempotency_key {
        run.insert("idempotencyKey".into(), json!(key));
    }
    if let Some(at) = row.started_at {
        run.insert("startedAt".into(), date(at));
    }
    if let (Some(at), true) = (row.completed_at, status.is_final()) {
        run.insert("finishedAt".into(), date(at));
        if status == RunStatus::Expired {
            run.insert("expiredAt".into(), date(at));
        }
    }
    if let Some(at) = row.delay_until {
        run.insert("delayedUntil".into(), date(at));
    }
    if let Some(ms) = row.ttl_ms {
        run.insert("ttl".into(), json!(duration_text(ms)));
    }
    run.insert("tags".into(), json!(row.tags));
    run.insert("costInCents".into(), json!(0));
    run.insert("baseCostInCents".into(), json!(0));
    let duration_ms = match (row.started_at, row.completed_at) {
        (Some(start), Some(end)) => (end - start).num_milliseconds().max(0),
        _ => 0,
    };
    run.insert("durationMs".into(), json!(duration_ms));
    if let Some(metadata @ Value::Object(_)) = &row.metadata {
        run.insert("metadata".into(), metadata.clone());
    }
    Ok(run)
}

/// `GET /api/v3/runs/{id}`.
pub fn retrieved_run(row: &RunRow) -> Result<Value, StoreError> {
    let mut run = common(row)?;
    run.insert("depth".into(), json!(0));
    run.insert("triggerFunction".into(), json!("trigger"));
    run.insert("payload".into(), row.payload.clone());
    run.insert("payloadType".into(), json!(row.payload_type));
    if let Some(output) = &row.output {
        run.insert("output".into(), output.clone());
        run.insert("outputType".into(), json!("application/json"));
    }
    if let Some(error) = &row.error {
        run.insert("error".into(), serialized_error(error));
    }
    run.insert("relatedRuns".into(), json!({}));
    // SDK 3.x requires the list; kiln keeps attempts as a count
    // (`attemptCount`), not as records.
    run.insert("attempts".into(), json!([]));
    run.insert("attemptCount".into(), json!(row.attempt_count));
    run.insert("maxAttempts".into(), json!(row.max_attempts));
    run.insert("queue".into(), json!(row.queue));
    if let Some(key) = &row.concurrency_key {
        run.insert("concurrencyKey".into(), json!(key));
    }
    if let Some(from) = &row.replayed_from {
        run.insert("replayedFrom".into(), json!(from));
    }
    Ok(Value::Object(run))
}

/// Sets `relatedRuns` (Trigger's `parent` and `children`, each with the
/// fields every view of a run shares) and `depth` on a retrieved run.
pub fn with_related(mut run: Value, parent: Option<&RunRow>, children: &[RunRow]) -> Result<Value, StoreError> {
    let mut related = Map::new();
    let mut depth = 0;
    if let Some(parent) = parent {
        depth = if parent.parent_run_id.is_some() { 2 } else { 1 };
        let mut summary = common(parent)?;
        summary.insert("depth".into(), json!(depth - 1));
        related.insert("parent".into(), Value::Object(summary));
    }
    if !children.is_empty() {
        let children = children
            .iter()
            .map(|child| {
                common(child).map(|mut summary| {
                    summary.insert("depth".into(), json!(depth + 1));
                    Value::Object(summary)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        related.insert("children".into(), Value::Array(children));
    }
    if let Some(object) = run.as_object_mut() {
        object.insert("depth".into(), json!(depth));
        object.insert("relatedRuns".into(), Value::Object(related));
    }
    Ok(run)
}

/// An item of `GET /api/v1/runs`.
pub fn listed_run(row: &RunRow, environment: Environment) -> Result<Value, StoreError> {
    let mut run = common(row)?;
    run.insert(
        "env".into(),
        json!({ "id": environment.as_str(), "name": environment.trigger_name() }),
    );
    Ok(Value::Object(run))
}

/// Trigger's `SerializedError` needs a string `message`.
fn serialized_error(error: &Value) -> Value {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| error.to_string(), str::to_owned);
    let mut out = json!({ "message": message });
    if let Some(name) = error.get("name").and_then(Value::as_str) {
        out["name"] = json!(name);
    }
    out
}
