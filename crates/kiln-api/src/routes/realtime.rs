//! Realtime: what `runs.subscribeToRun`, `runs.subscribeToRunsWithTag` and
//! the React hooks (`useRealtimeRun`, `useRealtimeRunsWithTag`) read.
//!
//! The SDK reads these routes with an Electric "shape" client, so they
//! speak that protocol: a first request (`offset=-1`) answers every row of
//! the shape as `insert` messages, then `up-to-date`; later requests carry
//! `live=true` and the last `electric-offset`, and are held open until a row
//! changes (answered as `update` messages) or 20 s pass (answered with only
//! `up-to-date`). Rows have the columns of Trigger's `SubscribeRunRawShape`
//! with native JSON values, so the schema header is empty and the client
//! takes them as they are. Offsets are the newest `updated_at` of the shape,
//! in microseconds.
//!
//! A live request reads its shape once, then waits on the process's run
//! change feed ([`kiln_store::RunChanges`], Postgres LISTEN/NOTIFY): a run
//! shape reads again only when its run was written, a tag shape when a run
//! with one of its tags was (a wake-up that found nothing holds the next
//! read back 150 ms). An idle subscriber costs no query at all, whatever
//! the number of subscribers, and a change made by any kiln process wakes
//! the subscribers of every process. So that one
//! key (and the public tokens it signs) cannot hold an unbounded number of
//! waiting requests, live requests are counted per key, and those past
//! `Limits::live_subscriptions_per_key` are answered 429.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};

use crate::extract::QueryParams;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use kiln_store::{ListFilter, RunRow};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// How long a live request waits for a change.
const LIVE_WAIT: Duration = Duration::from_secs(20);
/// The least time between a read that a wake-up made in vain and the next
/// read of the same live request, however often its environment changes.
const MIN_REREAD: Duration = Duration::from_millis(150);
/// Rows in a tag shape at most.
const MAX_SHAPE_ROWS: u32 = 500;

/// Live requests open, per key id.
#[derive(Default)]
pub struct OpenSubscriptions(std::sync::Mutex<HashMap<String, usize>>);

impl OpenSubscriptions {
    /// Counts a live request of `key_id` until the answer is dropped, or
    /// refuses it when the key holds `limit` already.
    fn open(self: &std::sync::Arc<Self>, key_id: &str, limit: usize) -> Result<OpenSubscription, ApiError> {
        let mut open = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key_id.to_owned()).or_default();
        if *count >= limit {
            return Err(ApiError::TooManyRequests(format!(
                "this key holds {limit} live realtime subscriptions in this process, its limit \
                 (KILN_REALTIME_MAX_PER_KEY); close some or retry later"
            )));
        }
        *count += 1;
        Ok(OpenSubscription {
            all: std::sync::Arc::clone(self),
            key_id: key_id.to_owned(),
        })
    }
}

/// One counted live request; dropping it (the answer sent, or the client
/// gone) frees its place.
struct OpenSubscription {
    all: std::sync::Arc<OpenSubscriptions>,
    key_id: String,
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        let mut open = self.all.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key_id);
            }
        }
    }
}

enum Shape {
    Run(String),
    Tags {
        tags: Vec<String>,
        created_from: Option<DateTime<Utc>>,
    },
}

pub async fn run(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    serve_shape(&app, &caller, Shape::Run(run_id), &query).await
}

pub async fn runs(
    State(app): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tags: Vec<String> = query
        .get("tags")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if tags.is_empty() {
        return Err(ApiError::BadRequest(
            "kiln's realtime serves runs by id or by tags: pass tags=…".into(),
        ));
    }
    if let Some(tag) = tags.iter().find(|tag| !caller.may_read_tag(tag)) {
        return Err(ApiError::Forbidden(format!(
            "this public access token may not read runs tagged {tag:?}"
        )));
    }
    let created_from = match query.get("createdAt") {
        None => None,
        Some(period) => {
            let period =
                kiln_core::duration::parse(period).map_err(|e| ApiError::BadRequest(format!("createdAt: {e}")))?;
            Some(Utc::now() - chrono::Duration::from_std(period).unwrap_or(chrono::Duration::MAX))
        }
    };
    serve_shape(&app, &caller, Shape::Tags { tags, created_from }, &query).await
}

async fn serve_shape(
    app: &AppState,
    caller: &Caller,
    shape: Shape,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let live = query.get("live").is_some_and(|v| v == "true");
    let since = query.get("offset").and_then(|offset| parse_offset(offset));
    let skip: Vec<&str> = query
        .get("skipColumns")
        .map(|s| s.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let handle = match &shape {
        Shape::Run(id) => format!("run-{id}"),
        Shape::Tags { tags, .. } => format!("tags-{}", tags.join(",")),
    };

    let _counted = if live {
        Some(
            app.subscriptions
                .open(&caller.key_id, app.limits.live_subscriptions_per_key)?,
        )
    } else {
        None
    };
    // Subscribed before the first read, so a change committed after that
    // read is heard.
    let changes = if live {
        let environment = caller.environment.as_str().to_owned();
        let interest = match &shape {
            Shape::Run(id) => kiln_store::Interest::Run {
                environment,
                id: id.clone(),
            },
            Shape::Tags { tags, .. } => kiln_store::Interest::Tags {
                environment,
                tags: tags.clone(),
            },
        };
        Some(app.run_changes().subscribe(interest).await)
    } else {
        None
    };
    let deadline = tokio::time::Instant::now() + LIVE_WAIT;
    // When a wake-up found nothing new (a tag shape woken by a change to
    // another run with its tag, or by a feed that lost track), the next
    // read waits out MIN_REREAD from it; the first wake-up reads at once.
    let mut found_nothing_at: Option<tokio::time::Instant> = None;
    let mut woken = false;
    let rows = loop {
        if let Some(at) = found_nothing_at {
            tokio::time::sleep_until((at + MIN_REREAD).min(deadline)).await;
        }
        let read_at = tokio::time::Instant::now();
        metrics::counter!("kiln_realtime_shape_reads_total").increment(1);
        let rows = read_shape(app, caller, &shape, if live { since } else { None }).await?;
        let Some(changes) = changes.as_ref().filter(|_| rows.is_empty()) else {
            break rows;
        };
        if woken {
            found_nothing_at = Some(read_at);
        }
        let changed = tokio::select! {
            () = tokio::time::sleep_until(deadline) => false,
            () = changes.changed() => true,
        };
        if !changed {
            break rows;
        }
        woken = true;
    };

    let newest = rows.iter().map(|row| row.updated_at).max();
    let offset = match (newest, since) {
        (Some(newest), _) => format_offset(newest),
        (None, Some(since)) => format_offset(since),
        (None, None) => "0_0".to_owned(),
    };
    let operation = if live { "update" } else { "insert" };
    let mut messages: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "key": format!("\"runs\"/\"{}\"", row.id),
                "value": raw_shape(row, &skip),
                "headers": { "operation": operation },
            })
        })
        .collect();
    messages.push(json!({ "headers": { "control": "up-to-date" } }));

    let mut response = Json(messages).into_response();
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("electric-offset", &offset);
    set("electric-handle", &handle);
    set("electric-schema", "{}");
    set("electric-up-to-date", "");
    set("electric-cursor", &Utc::now().timestamp().to_string());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The shape's rows, or only those changed after `since`.
async fn read_shape(
    app: &AppState,
    caller: &Caller,
    shape: &Shape,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<RunRow>, ApiError> {
    match shape {
        Shape::Run(id) => {
            let Some(row) = app.store.get_run(caller.environment, id).await? else {
                return Err(ApiError::NotFound(format!("run {id:?} not found")));
            };
            if !caller.may_read_run(&row.id, &row.tags) {
                return Err(ApiError::Forbidden(format!(
                    "this public access token may not read run {id}"
                )));
            }
            Ok(if since.is_none_or(|since| row.updated_at > since) {
                vec![row]
            } else {
                Vec::new()
            })
        }
        Shape::Tags { tags, created_from } => {
            let filter = ListFilter {
                tags: tags.clone(),
                created_from: *created_from,
                updated_after: since,
                limit: MAX_SHAPE_ROWS,
                ..ListFilter::default()
            };
            let mut rows = app.store.list_runs(caller.environment, &filter).await?;
            rows.truncate(MAX_SHAPE_ROWS as usize);
            Ok(rows)
        }
    }
}

fn format_offset(at: DateTime<Utc>) -> String {
    format!("{}_0", at.timestamp_micros())
}

fn parse_offset(offset: &str) -> Option<DateTime<Utc>> {
    let micros: i64 = offset.split('_').next()?.parse().ok()?;
    if micros <= 0 {
        return None;
    }
    DateTime::from_timestamp_micros(micros)
}

/// Trigger's database status names, which the SDK maps back to its own.
fn raw_status(status: &str) -> &str {
    match status {
        "QUEUED" => "PENDING",
        "COMPLETED" => "COMPLETED_SUCCESSFULLY",
        "FAILED" => "COMPLETED_WITH_ERRORS",
        other => other,
    }
}

/// Shape dates carry no zone; the SDK appends `Z`.
fn raw_date(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |at| json!(at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()))
}

fn packet(value: &Value, value_type: &str) -> Value {
    match (value, value_type) {
        (Value::String(text), "text/plain") => json!(text),
        (value, _) => json!(value.to_string()),
    }
}

/// A run as a row of Trigger's `SubscribeRunRawShape`.
fn raw_shape(row: &RunRow, skip: &[&str]) -> Value {
    let duration_ms = match (row.started_at, row.completed_at) {
        (Some(started), Some(completed)) => (completed - started).num_milliseconds().max(0),
        _ => 0,
    };
    let error = row.error.as_ref().map(|error| {
        json!({
            "type": "BUILT_IN_ERROR",
            "name": error.get("name").and_then(Value::as_str).unwrap_or("Error"),
            "message": error.get("message").and_then(Value::as_str).unwrap_or_default(),
            "stackTrace": "",
        })
    });
    let mut shape = json!({
        "id": row.id,
        "friendlyId": row.id,
        "taskIdentifier": row.task_identifier,
        "status": raw_status(&row.status),
        "createdAt": raw_date(Some(row.created_at)),
        "updatedAt": raw_date(Some(row.updated_at)),
        "startedAt": raw_date(row.started_at),
        "delayUntil": raw_date(row.delay_until),
        "queuedAt": raw_date(Some(row.created_at)),
        "expiredAt": raw_date(if row.status == "EXPIRED" { row.completed_at } else { None }),
        "completedAt": raw_date(row.completed_at),
        "idempotencyKey": row.idempotency_key,
        "number": 0,
        "isTest": row.is_test,
        "usageDurationMs": duration_ms,
        "costInCents": 0,
        "baseCostInCents": 0,
        "payload": packet(&row.payload, &row.payload_type),
        "payloadType": row.payload_type,
        "metadata": row.metadata.as_ref().map(|m| m.to_string()),
        "metadataType": row.metadata.as_ref().map(|_| "application/json"),
        "output": row.output.as_ref().map(|o| o.to_string()),
        "outputType": row.output.as_ref().map(|_| "application/json"),
        "runTags": row.tags,
        "error": error,
        "realtimeStreams": [],
    });
    if let Some(object) = shape.as_object_mut() {
        for column in skip {
            object.remove(*column);
        }
    }
    shape
}
