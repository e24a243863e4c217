//! Schedules (list, next runs, activate, deactivate), secret keys (list,
//! create — the key shown once —, revoke), and who runs tasks: kiln's own
//! workers and the task hosts.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{Html, Redirect};
use chrono::Utc;
use kiln_core::auth::Environment;
use kiln_core::schedule::CronSchedule;

use crate::auth::{Action, Operator};
use crate::error::DashboardError;
use crate::view::{self, Layout};
use crate::{Dashboard, environment};

/// A task host not seen for this long is shown as gone.
const HOST_ALIVE_FOR: chrono::Duration = chrono::Duration::seconds(60);

pub(crate) async fn schedules(
    State(dashboard): State<Dashboard>,
    operator: Operator,
    Path(env): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Html<String>, DashboardError> {
    let environment = environment(&env)?;
    let (rows, total) = dashboard.app.store.list_schedules(environment, 1, 200).await?;
    let now = Utc::now();
    let schedules = rows
        .into_iter()
        .map(|row| {
            let next_runs = if row.active {
                CronSchedule::parse(&row.cron, Some(&row.timezone))
                    .map(|cron| cron.upcoming(now, 3).into_iter().map(view::time).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            view::ScheduleLine {
                last_run: row.last_run_at.map(view::time).unwrap_or_default(),
                id: row.id,
                task: row.task_identifier,
                cron: row.cron,
                timezone: row.timezone,
                kind: row.kind,
                active: row.active,
                next_runs,
            }
        })
        .collect();
    let notice = match query.get("done").map(String::as_str) {
        Some("activated") => "The schedule is active.",
        Some("deactivated") => "The schedule is inactive: it makes no runs until activated.",
        _ => "",
    };
    let page = view::SchedulesPage {
        layout: Layout::new(environment, &operator.csrf_token, "schedules"),
        schedules,
        total,
        notice: notice.to_owned(),
    };
    Ok(Html(view::render(&page)?))
}

async fn set_schedule(dashboard: &Dashboard, env: &str, id: &str, active: bool) -> Result<Redirect, DashboardError> {
    let environment = environment(env)?;
    kiln_api::routes::schedules::set_schedule_active(&dashboard.app, environment, id, active).await?;
    let done = if active { "activated" } else { "deactivated" };
    Ok(Redirect::to(&format!(
        "/dashboard/{}/schedules?done={done}",
        environment.as_str()
    )))
}

pub(crate) async fn activate_schedule(
    State(dashboard): State<Dashboard>,
    Path((env, id)): Path<(String, String)>,
    _action: Action,
) -> Result<Redirect, DashboardError> {
    set_schedule(&dashboard, &env, &id, true).await
}

pub(crate) async fn deactivate_schedule(
    State(dashboard): State<Dashboard>,
    Path((env, id)): Path<(String, String)>,
    _action: Action,
) -> Result<Redirect, DashboardError> {
    set_schedule(&dashboard, &env, &id, false).await
}

async fn keys_page(
    dashboard: &Dashboard,
    operator: &Operator,
    new_key: Option<(String, String)>,
    notice: &str,
) -> Result<Html<String>, DashboardError> {
    let keys = dashboard
        .app
        .store
        .list_keys()
        .await?
        .into_iter()
        .map(|key| view::KeyLine {
            id: key.id,
            environment: key.environment,
            created: view::time(key.created_at),
            revoked: key.revoked_at.map(view::time).unwrap_or_default(),
        })
        .collect();
    let page = view::KeysPage {
        layout: Layout::new(Environment::Prod, &operator.csrf_token, "keys"),
        keys,
        new_key,
        notice: notice.to_owned(),
    };
    Ok(Html(view::render(&page)?))
}

pub(crate) async fn keys(
    State(dashboard): State<Dashboard>,
    operator: Operator,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Html<String>, DashboardError> {
    let notice = match query.get("done").map(String::as_str) {
        Some("revoked") => "The key is revoked: kiln refuses it within a minute, everywhere.",
        _ => "",
    };
    keys_page(&dashboard, &operator, None, notice).await
}

/// Makes a key and shows it in this answer only (a reload does not make
/// or show another).
pub(crate) async fn create_key(
    State(dashboard): State<Dashboard>,
    Action { operator, form }: Action,
) -> Result<Html<String>, DashboardError> {
    let environment = form
        .get("environment")
        .and_then(|e| Environment::parse(e))
        .ok_or_else(|| DashboardError::BadRequest("environment: dev or prod".into()))?;
    let (id, key) = dashboard.app.keys.create_key(environment).await?;
    tracing::info!(key_id = %id, environment = environment.as_str(), "key created from the dashboard");
    keys_page(&dashboard, &operator, Some((id, key.expose().to_owned())), "").await
}

pub(crate) async fn revoke_key(
    State(dashboard): State<Dashboard>,
    Path(id): Path<String>,
    _action: Action,
) -> Result<Redirect, DashboardError> {
    if !dashboard.app.store.revoke_key(&id).await? {
        return Err(DashboardError::NotFound(format!("there is no live key {id:?}")));
    }
    tracing::info!(key_id = %id, "key revoked from the dashboard");
    Ok(Redirect::to("/dashboard/keys?done=revoked"))
}

pub(crate) async fn workers(
    State(dashboard): State<Dashboard>,
    operator: Operator,
    Path(env): Path<String>,
) -> Result<Html<String>, DashboardError> {
    let environment = environment(&env)?;
    let store = &dashboard.app.store;
    let mut native_tasks: Vec<String> = dashboard.app.registry.task_ids().map(str::to_owned).collect();
    native_tasks.sort();
    let mut served: HashMap<String, Vec<String>> = HashMap::new();
    for task in store.served_tasks().await? {
        if task.environment == environment.as_str() {
            served.entry(task.host_id).or_default().push(task.task_id);
        }
    }
    let now = Utc::now();
    let hosts = store
        .hosts(environment)
        .await?
        .into_iter()
        .map(|host| view::HostLine {
            alive: now - host.last_seen_at < HOST_ALIVE_FOR,
            last_seen: view::time(host.last_seen_at),
            tasks: served.remove(&host.id).unwrap_or_default(),
            id: host.id,
            hostname: host.hostname,
            sdk: host.sdk_version,
        })
        .collect();
    let workers = store
        .executing_workers(environment)
        .await?
        .into_iter()
        .map(|(id, executing)| view::WorkerLine { id, executing })
        .collect();
    let page = view::WorkersPage {
        layout: Layout::new(environment, &operator.csrf_token, "workers"),
        native_tasks,
        workers,
        hosts,
    };
    Ok(Html(view::render(&page)?))
}
