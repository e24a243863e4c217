//! `POST /engine/v1/runs/{runId}/wait/duration`: a task on SDK 4.x asks
//! for a wait longer than 5 s (`wait.for`, `wait.until`, and
//! `retry.fetch`'s longer back-offs) from inside its run. kiln records a
//! DATETIME waitpoint and answers when to go on; the process running the
//! task waits and keeps the run meanwhile. The same idempotency key gives
//! the same waitpoint, and so the same end, back to a retried attempt.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, SecondsFormat, Utc};
use kiln_store::waitpoints::{WaitForDuration, WaitKey, Waitpoint};
use serde_json::{Value, json};

use super::runs::{check_run_id, run_not_found};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;

/// The SDK's `WaitForDurationRequestBody`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitForDurationBody {
    date: String,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default, rename = "idempotencyKeyTTL")]
    idempotency_key_ttl: Option<String>,
}

pub async fn wait_for_duration(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
    JsonBody(body): JsonBody<WaitForDurationBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    check_run_id(&run_id)?;
    let until = DateTime::parse_from_rfc3339(&body.date)
        .map_err(|_| ApiError::Unprocessable(format!("date {:?} is not an ISO 8601 time", body.date)))?
        .with_timezone(&Utc);
    let now = Utc::now();
    let ttl = match body.idempotency_key_ttl.as_deref() {
        Some(text) => kiln_core::duration::parse(text)
            .ok()
            .and_then(|ttl| chrono::Duration::from_std(ttl).ok())
            .ok_or_else(|| ApiError::Unprocessable(format!("idempotencyKeyTTL {text:?} is not a duration")))?,
        // As long as a trigger's key.
        None => kiln_store::runs::DEFAULT_IDEMPOTENCY_TTL,
    };
    let key = match body.idempotency_key.as_deref() {
        Some("") => return Err(ApiError::Unprocessable("idempotencyKey is empty".into())),
        Some(key) => Some(WaitKey {
            key,
            expires_at: now + ttl,
        }),
        None => None,
    };
    let new_id = format!(
        "waitpoint_{}",
        kiln_core::id::time_ordered_suffix(u64::try_from(now.timestamp_millis()).unwrap_or(0))
    );
    match app
        .store
        .wait_for_duration(caller.environment, &run_id, &new_id, until, key)
        .await?
    {
        WaitForDuration::Created(waitpoint) | WaitForDuration::Existing(waitpoint) => {
            tracing::info!(run_id = %run_id, waitpoint = %waitpoint.id, until = %waitpoint.complete_after, "run waits");
            Ok(Json(answer(&waitpoint)))
        }
        WaitForDuration::NotFound => Err(run_not_found(&run_id)),
        WaitForDuration::NotExecuting(status) => Err(ApiError::BadRequest(format!(
            "run {run_id} is {}: only an executing run can wait",
            status.as_str()
        ))),
    }
}

fn answer(waitpoint: &Waitpoint) -> Value {
    json!({
        "waitUntil": waitpoint.complete_after.to_rfc3339_opts(SecondsFormat::Millis, true),
        "waitpoint": { "id": waitpoint.id },
    })
}
