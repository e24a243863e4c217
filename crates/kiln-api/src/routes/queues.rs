//! Queues as the SDK's `queues` API sees them (SDK 4.x): list, retrieve,
//! pause and resume. A paused queue starts no run — in kiln's workers or
//! a task host — until it is resumed; its runs wait, queued.
//!
//! kiln names a queue by its name (`task/<task id>` for a task's own
//! queue); the id the SDK may pass is `queue_` and that name.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use kiln_core::auth::Environment;
use kiln_store::dashboard::QueueState;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryParams};

const ID_PREFIX: &str = "queue_";
const DEFAULT_PER_PAGE: usize = 20;
const MAX_PER_PAGE: usize = 100;

/// The queue's name, from the path and `type` (`id`, `task`, `custom`).
/// The SDK encodes a name's slashes twice, so `%2F` is read as `/`.
fn queue_name(raw: &str, kind: Option<&str>) -> Result<String, ApiError> {
    let name = raw.replace("%2F", "/").replace("%2f", "/");
    let name = match kind.unwrap_or("id") {
        "id" => name.strip_prefix(ID_PREFIX).unwrap_or(&name).to_owned(),
        "task" if name.starts_with("task/") => name,
        "task" => format!("task/{name}"),
        "custom" => name,
        other => {
            return Err(ApiError::BadRequest(format!(
                "type: {other:?} is not id, task or custom"
            )));
        }
    };
    if name.is_empty() {
        return Err(ApiError::BadRequest("a queue needs a name".into()));
    }
    Ok(name)
}

fn present(queue: &QueueState) -> Value {
    json!({
        "id": format!("{ID_PREFIX}{}", queue.name),
        "name": queue.name,
        "type": if queue.name.starts_with("task/") { "task" } else { "custom" },
        "running": queue.executing,
        "queued": queue.queued,
        "paused": queue.paused,
        "concurrencyLimit": queue.concurrency_limit,
    })
}

/// The queues kiln knows of in `environment`: configured ones, those with
/// runs waiting or executing, those of the tasks it serves there, and
/// `also`.
pub async fn queue_states(
    app: &AppState,
    environment: Environment,
    also: impl IntoIterator<Item = String>,
) -> Result<Vec<QueueState>, ApiError> {
    let mut known = app.registry.default_queues();
    known.extend(also);
    known.extend(
        app.store
            .served_tasks()
            .await?
            .into_iter()
            .filter(|task| task.environment == environment.as_str())
            .map(|task| task.queue),
    );
    known.sort();
    known.dedup();
    Ok(app.store.queue_states(environment, &known).await?)
}

async fn one_queue(app: &AppState, environment: Environment, name: &str) -> Result<Option<QueueState>, ApiError> {
    Ok(app
        .store
        .queue_states(environment, &[name.to_owned()])
        .await?
        .into_iter()
        .find(|queue| queue.name == name))
}

fn page_number(query: &HashMap<String, String>, name: &str, default: usize) -> Result<usize, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(value) => value
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::BadRequest(format!("{name}: expected a number of at least 1"))),
    }
}

/// `GET /api/v1/queues`: one page of the environment's queues, by name.
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let page = page_number(&query, "page", 1)?;
    let per_page = page_number(&query, "perPage", DEFAULT_PER_PAGE)?.min(MAX_PER_PAGE);
    let queues = queue_states(&app, caller.environment, []).await?;
    let count = queues.len();
    let data: Vec<Value> = queues
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(present)
        .collect();
    Ok(Json(json!({
        "data": data,
        "pagination": { "currentPage": page, "totalPages": count.div_ceil(per_page).max(1), "count": count },
    })))
}

/// `GET /api/v1/queues/{queue}?type=…`
pub async fn retrieve(
    State(app): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let name = queue_name(&raw, query.get("type").map(String::as_str))?;
    let queue = one_queue(&app, caller.environment, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("queue {name:?} not found")))?;
    Ok(Json(present(&queue)))
}

#[derive(Debug, serde::Deserialize)]
pub struct PauseBody {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub action: String,
}

/// `POST /api/v1/queues/{queue}/pause` with `{"action": "pause" | "resume"}`.
pub async fn pause(
    State(app): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<PauseBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let name = queue_name(&raw, body.kind.as_deref())?;
    match body.action.as_str() {
        "pause" => app.store.pause_queue(caller.environment, &name).await?,
        "resume" => {
            app.store.resume_queue(caller.environment, &name).await?;
        }
        other => {
            return Err(ApiError::Unprocessable(format!(
                "action: {other:?} is not pause or resume"
            )));
        }
    }
    tracing::info!(queue = %name, action = %body.action, "queue paused or resumed");
    let queue = one_queue(&app, caller.environment, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("queue {name:?} not found")))?;
    Ok(Json(present(&queue)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_named_by_id_task_or_custom_name() {
        assert_eq!(
            queue_name("queue_task%2Fresize", None).ok().as_deref(),
            Some("task/resize")
        );
        assert_eq!(queue_name("resize", Some("task")).ok().as_deref(), Some("task/resize"));
        assert_eq!(queue_name("emails", Some("custom")).ok().as_deref(), Some("emails"));
        assert!(queue_name("x", Some("other")).is_err());
        assert!(queue_name("queue_", None).is_err());
    }
}
