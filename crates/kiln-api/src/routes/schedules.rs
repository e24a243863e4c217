//! Trigger.dev's schedules API (`schedules.create`, `list`, `retrieve`,
//! `update`, `del`, `activate`, `deactivate`, `timezones` in the SDK).
//! Schedules made here are IMPERATIVE; those declared in kiln's
//! configuration are DECLARATIVE and can be listed, read, activated and
//! deactivated here, but are changed only in the configuration. Every call
//! needs a secret key.

use axum::Json;
use axum::extract::{Path, State};

use crate::extract::QueryParams;
use chrono::{SecondsFormat, Utc};
use kiln_core::id::new_schedule_id;
use kiln_core::schedule::CronSchedule;
use kiln_store::schedules::{ScheduleRow, ScheduleSpec};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;

const DEFAULT_PER_PAGE: u32 = 10;
const MAX_PER_PAGE: u32 = 100;
const MAX_TEXT: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSchedule {
    task: String,
    cron: String,
    deduplication_key: Option<String>,
    external_id: Option<String>,
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSchedule {
    task: String,
    cron: String,
    external_id: Option<String>,
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    page: Option<u32>,
    per_page: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimezonesQuery {
    exclude_utc: Option<bool>,
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("schedule {id:?} not found"))
}

fn check_text(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(text) if text.is_empty() || text.len() > MAX_TEXT => Err(ApiError::Unprocessable(format!(
            "{field} must be 1 to {MAX_TEXT} characters"
        ))),
        _ => Ok(()),
    }
}

/// Checks the task and the cron, and answers the stored form.
fn validate(
    app: &AppState,
    caller: &Caller,
    task: &str,
    cron: &str,
    timezone: Option<&str>,
    external_id: Option<String>,
    deduplication_key: Option<String>,
) -> Result<ScheduleSpec, ApiError> {
    let Some(defaults) = app.task_defaults(caller.environment, task) else {
        return Err(ApiError::Unprocessable(crate::routes::trigger::unknown_task(task)));
    };
    if let Some(refusal) = defaults.access.refusal(task, caller.environment) {
        return Err(ApiError::Forbidden(refusal));
    }
    check_text("externalId", external_id.as_deref())?;
    check_text("deduplicationKey", deduplication_key.as_deref())?;
    // kiln names the schedules its configuration declares `declared:…`; a
    // key of that form could otherwise claim one before kiln records it.
    if deduplication_key
        .as_deref()
        .is_some_and(|key| key.starts_with("declared:"))
    {
        return Err(ApiError::Unprocessable(
            "deduplicationKey: keys starting with \"declared:\" name schedules kiln's configuration declares".into(),
        ));
    }
    let schedule = CronSchedule::parse(cron, timezone).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    Ok(ScheduleSpec {
        environment: caller.environment,
        task_identifier: task.to_owned(),
        cron: schedule.expression().to_owned(),
        timezone: schedule.timezone().to_owned(),
        external_id,
        deduplication_key,
        next_run_at: schedule.next_after(Utc::now()),
    })
}

/// A schedule in the shape of the SDK's `ScheduleObject`.
fn present(row: &ScheduleRow) -> Value {
    let description = CronSchedule::parse(&row.cron, Some(&row.timezone))
        .map(|s| s.describe())
        .unwrap_or_else(|_| row.cron.clone());
    let environment_type = if row.environment == "prod" {
        "PRODUCTION"
    } else {
        "DEVELOPMENT"
    };
    json!({
        "id": row.id,
        "type": row.kind,
        "task": row.task_identifier,
        "active": row.active,
        "deduplicationKey": row.deduplication_key,
        "externalId": row.external_id,
        "generator": { "type": "CRON", "expression": row.cron, "description": description },
        "timezone": row.timezone,
        "nextRun": row.next_run_at.map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        "environments": [{ "id": row.environment, "type": environment_type, "userName": null }],
    })
}

pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateSchedule>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    app.look_for_tasks(caller.environment, [body.task.as_str()]).await?;
    let spec = validate(
        &app,
        &caller,
        &body.task,
        &body.cron,
        body.timezone.as_deref(),
        body.external_id,
        body.deduplication_key,
    )?;
    let Some(row) = app
        .store
        .upsert_schedule(&new_schedule_id(), "IMPERATIVE", &spec)
        .await?
    else {
        return Err(ApiError::Unprocessable(
            "this deduplicationKey belongs to a schedule declared in kiln's configuration".into(),
        ));
    };
    tracing::info!(schedule_id = %row.id, task = %row.task_identifier, cron = %row.cron, "schedule saved");
    Ok(Json(present(&row)))
}

pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let page = query.page.unwrap_or(1).max(1);
    let per_page = query.per_page.unwrap_or(DEFAULT_PER_PAGE).clamp(1, MAX_PER_PAGE);
    let (rows, count) = app.store.list_schedules(caller.environment, page, per_page).await?;
    let total_pages = (count + i64::from(per_page) - 1) / i64::from(per_page);
    Ok(Json(json!({
        "data": rows.iter().map(present).collect::<Vec<_>>(),
        "pagination": { "currentPage": page, "totalPages": total_pages, "count": count },
    })))
}

pub async fn retrieve(
    State(app): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let row = app
        .store
        .get_schedule(caller.environment, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(present(&row)))
}

async fn imperative(app: &AppState, caller: &Caller, id: &str) -> Result<ScheduleRow, ApiError> {
    let row = app
        .store
        .get_schedule(caller.environment, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if row.kind == "DECLARATIVE" {
        return Err(ApiError::Unprocessable(format!(
            "schedule {id} is declared in kiln's configuration; change it there"
        )));
    }
    Ok(row)
}

pub async fn update(
    State(app): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    JsonBody(body): JsonBody<UpdateSchedule>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let existing = imperative(&app, &caller, &id).await?;
    app.look_for_tasks(caller.environment, [body.task.as_str()]).await?;
    let spec = validate(
        &app,
        &caller,
        &body.task,
        &body.cron,
        body.timezone.as_deref(),
        body.external_id,
        existing.deduplication_key,
    )?;
    let row = app
        .store
        .update_schedule(&id, &spec)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(present(&row)))
}

pub async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    imperative(&app, &caller, &id).await?;
    if !app.store.delete_schedule(caller.environment, &id).await? {
        return Err(not_found(&id));
    }
    Ok(Json(json!({ "id": id })))
}

async fn set_active(app: &AppState, caller: &Caller, id: &str, active: bool) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let row = set_schedule_active(app, caller.environment, id, active).await?;
    Ok(Json(present(&row)))
}

/// Activates a schedule (from its next tick after now: ticks missed while
/// inactive do not fire) or deactivates it.
pub async fn set_schedule_active(
    app: &AppState,
    environment: kiln_core::auth::Environment,
    id: &str,
    active: bool,
) -> Result<kiln_store::schedules::ScheduleRow, ApiError> {
    let row = app
        .store
        .get_schedule(environment, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let next_run_at = if active {
        let schedule =
            CronSchedule::parse(&row.cron, Some(&row.timezone)).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        Some(
            schedule
                .next_after(Utc::now())
                .ok_or_else(|| ApiError::Unprocessable(format!("schedule {id} has no future tick")))?,
        )
    } else {
        None
    };
    app.store
        .set_schedule_active(environment, id, next_run_at)
        .await?
        .ok_or_else(|| not_found(id))
}

pub async fn activate(
    State(app): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    set_active(&app, &caller, &id, true).await
}

pub async fn deactivate(
    State(app): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    set_active(&app, &caller, &id, false).await
}

/// Public, as on Trigger.dev: the SDK sends no key for it.
pub async fn timezones(QueryParams(query): QueryParams<TimezonesQuery>) -> Json<Value> {
    let exclude_utc = query.exclude_utc.unwrap_or(false);
    let zones: Vec<&str> = kiln_core::schedule::timezones()
        .into_iter()
        .filter(|zone| !(exclude_utc && (*zone == "UTC" || *zone == "Etc/UTC")))
        .collect();
    Json(json!({ "timezones": zones }))
}
