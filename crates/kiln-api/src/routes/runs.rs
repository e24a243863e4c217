//! Reading and acting on runs: retrieve, list, cancel, replay.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};

use crate::extract::QueryParams;
use axum::response::Response;
use chrono::{DateTime, Utc};
use kiln_core::options::RunSpec;
use kiln_core::{RunId, RunStatus};
use kiln_store::{ListFilter, NewRun, RunPage, RunRow};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::presenter;
use crate::routes::trigger::with_run_token;

const DEFAULT_PAGE_SIZE: u32 = 25;
const MAX_PAGE_SIZE: u32 = 100;

pub(crate) fn run_not_found(run_id: &str) -> ApiError {
    ApiError::NotFound(format!("run {run_id:?} not found"))
}

/// An id that cannot be a run's is answered like an unknown run.
pub(crate) fn check_run_id(run_id: &str) -> Result<(), ApiError> {
    RunId::parse(run_id).map(|_| ()).ok_or_else(|| run_not_found(run_id))
}

async fn find_run(app: &AppState, caller: &Caller, run_id: &str) -> Result<RunRow, ApiError> {
    find_run_in(app, caller.environment, run_id).await
}

/// Run `run_id` of `environment`; another environment's run, or an id
/// that cannot be a run's, is answered as a missing run.
pub async fn find_run_in(
    app: &AppState,
    environment: kiln_core::auth::Environment,
    run_id: &str,
) -> Result<RunRow, ApiError> {
    check_run_id(run_id)?;
    app.store
        .get_run(environment, run_id)
        .await?
        .ok_or_else(|| run_not_found(run_id))
}

pub async fn retrieve(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let row = find_run(&app, &caller, &run_id).await?;
    if !caller.may_read_run(&row.id, &row.tags) {
        return Err(ApiError::Forbidden(format!(
            "this public access token may not read run {run_id}"
        )));
    }
    let (parent, children) = app.store.related_runs(caller.environment, &row).await?;
    Ok(Json(presenter::with_related(
        presenter::retrieved_run(&row)?,
        parent.as_ref(),
        &children,
    )?))
}

pub async fn cancel(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let not_found = || run_not_found(&run_id);
    check_run_id(&run_id)?;
    // A run that already ended keeps its status; the answer is the same.
    app.store
        .cancel_run(caller.environment, &run_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(json!({ "id": run_id })))
}

/// A new run of the same task with the same payload, queue, tags and
/// metadata; no delay, ttl or idempotency key.
pub async fn replay(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require_secret_key()?;
    let original = find_run(&app, &caller, &run_id).await?;
    let id = replay_run(&app, caller.environment, original).await?;
    tracing::Span::current().record("run_id", id.as_str());
    Ok(with_run_token(&caller, &id, Json(json!({ "id": id }))))
}

/// Records the replay of `original` in `environment`: a new run of the
/// same task with the same payload, queue, tags and metadata. Refused when
/// no one serves the task any more or its access rules forbid it.
pub async fn replay_run(
    app: &AppState,
    environment: kiln_core::auth::Environment,
    original: RunRow,
) -> Result<String, ApiError> {
    let run_id = original.id.clone();
    app.look_for_tasks(environment, [original.task_identifier.as_str()])
        .await?;
    let Some(defaults) = app.task_defaults(environment, &original.task_identifier) else {
        return Err(ApiError::NotFound(format!(
            "task {:?} of run {run_id} is no longer known to kiln",
            original.task_identifier
        )));
    };
    if let Some(refusal) = defaults.access.refusal(&original.task_identifier, environment) {
        return Err(ApiError::Forbidden(refusal));
    }
    let now = Utc::now();
    let ms = |value: Option<i64>| value.and_then(|v| u64::try_from(v).ok()).map(Duration::from_millis);
    let run = NewRun {
        id: RunId::generate(u64::try_from(now.timestamp_millis()).unwrap_or(0)),
        environment,
        task_identifier: original.task_identifier,
        payload: original.payload,
        payload_type: original.payload_type,
        spec: RunSpec {
            queue: original.queue,
            queue_concurrency_limit: None,
            concurrency_key: original.concurrency_key,
            delay_until: None,
            ttl: None,
            idempotency_key: None,
            idempotency_key_ttl: None,
            max_attempts: u32::try_from(original.max_attempts).unwrap_or(1).max(1),
            max_duration: ms(original.max_duration_ms),
            tags: original.tags,
            metadata: original.metadata,
            is_test: original.is_test,
        },
        created_at: now,
        replayed_from: Some(original.id),
        parent_run_id: None,
    };
    let (id, _) = app.recorder.record(run).await?;
    Ok(id)
}

fn list_of(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `filter[createdAt][from]`: milliseconds since the epoch (what the SDK
/// sends) or an RFC 3339 date.
fn instant(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(ms) = value.parse::<i64>() {
        return DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| ApiError::BadRequest(format!("{field}: out of range")));
    }
    DateTime::parse_from_rfc3339(value)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{field}: expected milliseconds since the epoch or an ISO 8601 date"
            ))
        })
}

fn parse_filter(query: &HashMap<String, String>) -> Result<ListFilter, ApiError> {
    let mut filter = ListFilter {
        limit: DEFAULT_PAGE_SIZE,
        ..ListFilter::default()
    };
    for (key, value) in query {
        match key.as_str() {
            "filter[status]" => {
                filter.statuses = list_of(value)
                    .iter()
                    .map(|s| {
                        s.parse::<RunStatus>()
                            .map_err(|e| ApiError::BadRequest(format!("filter[status]: {e}")))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "filter[taskIdentifier]" => filter.task_identifiers = list_of(value),
            "filter[tag]" => filter.tags = list_of(value),
            "filter[queue]" => filter.queues = list_of(value),
            "filter[createdAt][from]" => filter.created_from = Some(instant(key, value)?),
            "filter[createdAt][to]" => filter.created_to = Some(instant(key, value)?),
            "filter[createdAt][period]" => {
                let period =
                    kiln_core::duration::parse(value).map_err(|e| ApiError::BadRequest(format!("{key}: {e}")))?;
                let period =
                    chrono::Duration::from_std(period).map_err(|_| ApiError::BadRequest(format!("{key}: too long")))?;
                filter.created_from = Some(Utc::now() - period);
            }
            "filter[isTest]" => {
                filter.is_test = Some(
                    value
                        .parse()
                        .map_err(|_| ApiError::BadRequest(format!("{key}: expected true or false")))?,
                );
            }
            "page[size]" => {
                let size: u32 = value
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("{key}: expected a number")))?;
                if !(1..=MAX_PAGE_SIZE).contains(&size) {
                    return Err(ApiError::BadRequest(format!(
                        "{key}: must be between 1 and {MAX_PAGE_SIZE}"
                    )));
                }
                filter.limit = size;
            }
            "page[after]" => filter.after = Some(value.clone()),
            "page[before]" => filter.before = Some(value.clone()),
            // Trigger filters on things kiln does not have (deploy versions,
            // bulk actions…): refuse rather than silently match everything.
            "filter[batch]" => filter.batch_id = Some(value.clone()),
            "filter[schedule]" => filter.schedule_id = Some(value.clone()),
            "filter[version]" | "filter[bulkAction]" | "filter[machine]" => {
                return Err(ApiError::BadRequest(format!("{key} is not supported by kiln")));
            }
            _ => {}
        }
    }
    if filter.after.is_some() && filter.before.is_some() {
        return Err(ApiError::BadRequest(
            "page[after] and page[before] cannot be combined".into(),
        ));
    }
    Ok(filter)
}

pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let filter = parse_filter(&query)?;
    let page = RunPage::of(app.store.list_runs(caller.environment, &filter).await?, &filter);
    let data = page
        .runs
        .iter()
        .map(|row| presenter::listed_run(row, caller.environment))
        .collect::<Result<Vec<_>, _>>()?;
    // Newest first: "next" goes to older runs, "previous" to newer ones.
    let mut pagination = serde_json::Map::new();
    if let Some(id) = page.older {
        pagination.insert("next".into(), json!(id));
    }
    if let Some(id) = page.newer {
        pagination.insert("previous".into(), json!(id));
    }
    Ok(Json(json!({ "data": data, "pagination": pagination })))
}

/// `POST /api/v1/auth/jwt/claims`: what the SDK puts in the public tokens it
/// signs with the caller's secret key (`auth.createPublicToken`): `sub`
/// names the key, so kiln knows which key verifies the token.
pub async fn jwt_claims(caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    Ok(Json(json!({ "sub": caller.key_id, "pub": true })))
}

#[derive(Debug, serde::Deserialize)]
pub struct RescheduleBody {
    pub delay: Value,
}

/// `POST /api/v1/runs/{runId}/reschedule`: a DELAYED run starts at a new
/// time (`delay`: a duration from now or a date). Answers the run.
pub async fn reschedule(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
    crate::extract::JsonBody(body): crate::extract::JsonBody<RescheduleBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let not_found = || run_not_found(&run_id);
    check_run_id(&run_id)?;
    let spec = match body.delay {
        Value::String(text) => kiln_core::options::TimeSpec::Text(text),
        _ => {
            return Err(ApiError::Unprocessable(
                "delay: must be a duration (\"30s\") or a date".into(),
            ));
        }
    };
    let until = kiln_core::options::parse_time_spec(&spec, Utc::now())
        .map_err(|e| ApiError::Unprocessable(format!("delay: {e}")))?;
    let (rescheduled, row) = app
        .store
        .reschedule_run(caller.environment, &run_id, until)
        .await?
        .ok_or_else(not_found)?;
    if !rescheduled {
        return Err(ApiError::BadRequest(format!(
            "run {run_id} is {} and only a DELAYED run can be rescheduled",
            row.status
        )));
    }
    Ok(Json(presenter::retrieved_run(&row)?))
}

#[derive(Debug, serde::Deserialize)]
pub struct TagsBody {
    pub tags: crate::routes::trigger::WireTags,
}

/// `POST /api/v1/runs/{runId}/tags`: adds tags (at most 10 per run).
pub async fn add_tags(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
    crate::extract::JsonBody(body): crate::extract::JsonBody<TagsBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let not_found = || run_not_found(&run_id);
    check_run_id(&run_id)?;
    let tags = match body.tags {
        crate::routes::trigger::WireTags::One(tag) => vec![tag],
        crate::routes::trigger::WireTags::Many(tags) => tags,
    };
    if let Some(tag) = tags
        .iter()
        .find(|t| t.is_empty() || t.len() > kiln_core::options::MAX_TAG_LEN)
    {
        return Err(ApiError::Unprocessable(format!(
            "tags: tag {tag:?} must be 1 to 128 characters"
        )));
    }
    let max = kiln_core::options::MAX_TAGS;
    match app
        .store
        .add_tags(caller.environment, &run_id, &tags, max)
        .await?
        .ok_or_else(not_found)?
    {
        kiln_store::TagsAdded::Added(added) => Ok(Json(
            json!({ "message": format!("Successfully set {added} new tags.") }),
        )),
        kiln_store::TagsAdded::TooMany { current } => Err(ApiError::Unprocessable(format!(
            "tags: run {run_id} has {current} tags and may have at most {max}"
        ))),
    }
}
