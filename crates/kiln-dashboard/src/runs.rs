//! The runs list (filters, keyset pages), a run's page with its live
//! feed and files, and the actions on runs: cancel, replay, reschedule,
//! and bulk cancel or replay of a filtered selection after a confirmation
//! that shows how many runs it takes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use kiln_core::RunStatus;
use kiln_core::auth::Environment;
use kiln_store::{Interest, ListFilter, RunPage, RunRow};
use serde_json::Value;

use crate::auth::{Action, Operator};
use crate::error::DashboardError;
use crate::view::{self, FilterForm, Layout};
use crate::{Dashboard, environment};

const PAGE_SIZE: u32 = 50;
/// The most runs one bulk cancel takes; a larger selection is canceled in
/// several confirmations.
const BULK_CANCEL_CAP: i64 = 10_000;
/// The most runs one bulk replay makes.
const BULK_REPLAY_CAP: i64 = 1_000;
/// Runs read per step of a bulk action.
const BULK_STEP: u32 = 500;

fn not_found(run_id: &str) -> DashboardError {
    DashboardError::NotFound(format!("there is no run {run_id:?} in this environment"))
}

/// A `datetime-local` field (or an RFC 3339 date), read as UTC.
fn instant(field: &str, value: &str) -> Result<DateTime<Utc>, DashboardError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|at| at.and_utc())
        .ok_or_else(|| DashboardError::BadRequest(format!("{field}: expected a date and time, as 2026-12-08T09:30")))
}

/// The filter a form or query names, and the form to show it again.
fn read_filter(fields: &HashMap<String, String>) -> Result<(ListFilter, FilterForm), DashboardError> {
    let field = |name: &str| fields.get(name).map(|v| v.trim().to_owned()).unwrap_or_default();
    let form = FilterForm {
        status: field("status"),
        task: field("task"),
        tag: field("tag"),
        queue: field("queue"),
        batch: field("batch"),
        schedule: field("schedule"),
        from: field("from"),
        to: field("to"),
    };
    let mut filter = ListFilter {
        limit: PAGE_SIZE,
        ..ListFilter::default()
    };
    if !form.status.is_empty() {
        let status: RunStatus = form
            .status
            .parse()
            .map_err(|_| DashboardError::BadRequest(format!("status: {:?} is not a run status", form.status)))?;
        filter.statuses = vec![status];
    }
    let one = |value: &str| {
        if value.is_empty() {
            Vec::new()
        } else {
            vec![value.to_owned()]
        }
    };
    filter.task_identifiers = one(&form.task);
    filter.tags = one(&form.tag);
    filter.queues = one(&form.queue);
    filter.batch_id = (!form.batch.is_empty()).then(|| form.batch.clone());
    filter.schedule_id = (!form.schedule.is_empty()).then(|| form.schedule.clone());
    if !form.from.is_empty() {
        filter.created_from = Some(instant("from", &form.from)?);
    }
    if !form.to.is_empty() {
        filter.created_to = Some(instant("to", &form.to)?);
    }
    Ok((filter, form))
}

fn run_line(row: &RunRow) -> view::RunLine {
    let duration = match (row.started_at, row.completed_at) {
        (Some(start), Some(end)) => view::span(end - start),
        (Some(start), None) => format!("{} so far", view::span(Utc::now() - start)),
        _ => String::new(),
    };
    view::RunLine {
        id: row.id.clone(),
        task: row.task_identifier.clone(),
        status: row.status.clone(),
        status_class: view::status_class(&row.status),
        created: view::time(row.created_at),
        duration,
        tags: row.tags.clone(),
    }
}

/// A notice for an action just done, from a fixed set (nothing a link
/// could make the page say).
fn notice(query: &HashMap<String, String>) -> String {
    let count = query.get("count").and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
    match query.get("done").map(String::as_str) {
        Some("canceled") => "The run was canceled.".into(),
        Some("already-ended") => "The run had already ended; it keeps its status.".into(),
        Some("replayed") => "This run is a replay, just made.".into(),
        Some("rescheduled") => "The run was rescheduled.".into(),
        Some("bulk-canceled") => format!("{count} runs were canceled."),
        Some("bulk-replayed") => format!("{count} runs were replayed."),
        _ => String::new(),
    }
}

pub(crate) async fn list(
    State(dashboard): State<Dashboard>,
    operator: Operator,
    Path(env): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Html<String>, DashboardError> {
    let environment = environment(&env)?;
    let (mut filter, form) = read_filter(&query)?;
    filter.after = query.get("after").filter(|v| !v.is_empty()).cloned();
    filter.before = query.get("before").filter(|v| !v.is_empty()).cloned();
    if filter.after.is_some() && filter.before.is_some() {
        return Err(DashboardError::BadRequest("after and before cannot be combined".into()));
    }
    let listed = RunPage::of(dashboard.app.store.list_runs(environment, &filter).await?, &filter);
    let base = form.query();
    let page_query = |cursor: &str, id: String| {
        if base.is_empty() {
            format!("{cursor}={id}")
        } else {
            format!("{base}&{cursor}={id}")
        }
    };
    let older = listed.older.map(|id| page_query("after", id));
    let newer = listed.newer.map(|id| page_query("before", id));
    let page = view::RunsPage {
        layout: Layout::new(environment, &operator.csrf_token, "runs"),
        statuses: RunStatus::ALL.iter().map(|s| s.as_str()).collect(),
        runs: listed.runs.iter().map(run_line).collect(),
        filter: form,
        older,
        newer,
        notice: notice(&query),
    };
    Ok(Html(view::render(&page)?))
}

async fn find_run(dashboard: &Dashboard, environment: Environment, run_id: &str) -> Result<RunRow, DashboardError> {
    Ok(kiln_api::routes::runs::find_run_in(&dashboard.app, environment, run_id).await?)
}

/// The progress a run's metadata tells, 0–100: `progress` as a fraction
/// or a percentage, or Supermark's `currentPage` of `totalPages`.
fn progress(metadata: Option<&Value>) -> Option<(u32, String)> {
    let metadata = metadata?;
    if let (Some(current), Some(total)) = (
        metadata.get("currentPage").and_then(Value::as_f64),
        metadata.get("totalPages").and_then(Value::as_f64),
    ) && total > 0.0
    {
        let percent = (current / total * 100.0).clamp(0.0, 100.0);
        return Some((percent.round() as u32, format!("{current} / {total} pages")));
    }
    let value = metadata.get("progress").and_then(Value::as_f64)?;
    // kiln's tasks report a percentage; a fraction below 1 (0.25) is read
    // as one, as some apps write it.
    let percent = if value > 0.0 && value < 1.0 {
        value * 100.0
    } else {
        value
    }
    .clamp(0.0, 100.0);
    let text = metadata
        .get("text")
        .or_else(|| metadata.get("status"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("{percent:.0}%"), |text| format!("{percent:.0}% · {text}"));
    Some((percent.round() as u32, text))
}

/// The storage keys of files a run's output names (`key` fields ending in
/// an image or PDF extension), in order, at most 200.
fn output_files(output: Option<&Value>) -> Vec<String> {
    fn walk(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (name, value) in map {
                    match value {
                        Value::String(key) if name == "key" && file_kind(key).is_some() => {
                            if !found.contains(key) {
                                found.push(key.clone());
                            }
                        }
                        other => walk(other, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    if let Some(output) = output {
        walk(output, &mut found);
    }
    found.truncate(200);
    found
}

/// The content type of a file the dashboard shows, by extension.
fn file_kind(key: &str) -> Option<&'static str> {
    let extension = key.rsplit_once('.')?.1.to_ascii_lowercase();
    match extension.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "pdf" => Some("application/pdf"),
        _ => None,
    }
}

pub(crate) async fn show(
    State(dashboard): State<Dashboard>,
    operator: Operator,
    Path((env, run_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Html<String>, DashboardError> {
    let environment = environment(&env)?;
    let row = find_run(&dashboard, environment, &run_id).await?;
    let store = &dashboard.app.store;
    let (parent, children) = store.related_runs(environment, &row).await?;
    let logs = store.run_logs(environment, &row.id).await?;
    let failed = store.failed_attempts(environment, &row.id).await?;
    let status = row.status()?;
    let attempt_lines = attempt_lines(&row, status, failed);
    let mut timeline = vec![view::Moment {
        label: "created",
        at: view::time(row.created_at),
    }];
    if let Some(at) = row.delay_until {
        timeline.push(view::Moment {
            label: "delayed until",
            at: view::time(at),
        });
    }
    if let Some(at) = row.started_at {
        timeline.push(view::Moment {
            label: "started",
            at: view::time(at),
        });
    }
    if let Some(at) = row.completed_at {
        timeline.push(view::Moment {
            label: "ended",
            at: view::time(at),
        });
    }
    if let (Some(start), Some(end)) = (row.started_at, row.completed_at) {
        timeline.push(view::Moment {
            label: "took",
            at: view::span(end - start),
        });
    }
    timeline.push(view::Moment {
        label: "updated",
        at: view::time(row.updated_at),
    });
    let mut related = Vec::new();
    if let Some(parent) = parent {
        related.push(view::Related {
            label: "parent",
            id: parent.id,
            status: parent.status,
        });
    }
    if let Some(original) = &row.replayed_from {
        related.push(view::Related {
            label: "replay of",
            id: original.clone(),
            status: String::new(),
        });
    }
    related.extend(children.into_iter().map(|child| view::Related {
        label: "child",
        id: child.id,
        status: child.status,
    }));
    let files = if dashboard.storage.is_some() {
        output_files(row.output.as_ref())
            .into_iter()
            .map(|key| view::FileLink {
                href: format!(
                    "/dashboard/{}/runs/{}/file?key={}",
                    environment.as_str(),
                    row.id,
                    askama::filters::urlencode_strict(&key).map_or_else(|_| String::new(), |k| k.to_string())
                ),
                is_image: file_kind(&key).is_some_and(|kind| kind.starts_with("image/")),
                key,
            })
            .collect()
    } else {
        Vec::new()
    };
    let (progress, progress_text) = match progress(row.metadata.as_ref()) {
        Some((percent, text)) => (Some(percent), text),
        None => (None, String::new()),
    };
    let page = view::RunPage {
        layout: Layout::new(environment, &operator.csrf_token, "runs"),
        status_class: view::status_class(&row.status),
        is_final: status.is_final(),
        is_delayed: status == RunStatus::Delayed,
        attempts: format!("{} of {}", row.attempt_count, row.max_attempts),
        attempt_lines,
        timeline,
        payload: view::pretty(&row.payload),
        output: row.output.as_ref().map(view::pretty),
        error: row.error.as_ref().map(view::pretty),
        metadata: row.metadata.as_ref().map(view::pretty),
        progress,
        progress_text,
        related,
        logs: logs
            .into_iter()
            .map(|line| view::LogLine {
                at: view::time(line.logged_at),
                level: line.level,
                message: line.message,
            })
            .collect(),
        files,
        notice: notice(&query),
        tags: row.tags,
        id: row.id,
        task: row.task_identifier,
        queue: row.queue,
        status: row.status,
    };
    Ok(Html(view::render(&page)?))
}

/// Every attempt of `row` so far: a failed one with its error, the last
/// one with the run's outcome (or as running).
fn attempt_lines(
    row: &RunRow,
    status: RunStatus,
    failed: Vec<kiln_store::dashboard::FailedAttempt>,
) -> Vec<view::AttemptLine> {
    let mut failed: HashMap<i32, kiln_store::dashboard::FailedAttempt> =
        failed.into_iter().map(|attempt| (attempt.attempt, attempt)).collect();
    (1..=row.attempt_count)
        .map(|number| match failed.remove(&number) {
            Some(attempt) => view::AttemptLine {
                number,
                outcome: "failed".into(),
                outcome_class: "bad",
                at: view::time(attempt.ended_at),
                error: Some(view::pretty(&attempt.error)),
            },
            None if number == row.attempt_count => view::AttemptLine {
                number,
                outcome: match status {
                    RunStatus::Executing => "running".into(),
                    RunStatus::Queued => "waiting to retry".into(),
                    other => other.as_str().to_lowercase(),
                },
                outcome_class: view::status_class(&row.status),
                at: row.completed_at.map(view::time).unwrap_or_default(),
                error: None,
            },
            None => view::AttemptLine {
                number,
                outcome: "ended".into(),
                outcome_class: "quiet",
                at: String::new(),
                error: None,
            },
        })
        .collect()
}

/// `change` events while the run changes (the run change feed), so the
/// page's script fetches it again; a comment every 15 s keeps proxies
/// from closing the stream.
pub(crate) async fn events(
    State(dashboard): State<Dashboard>,
    _operator: Operator,
    Path((env, run_id)): Path<(String, String)>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, DashboardError> {
    let environment = environment(&env)?;
    let row = find_run(&dashboard, environment, &run_id).await?;
    let receiver = dashboard
        .app
        .run_changes()
        .subscribe(Interest::Run {
            environment: environment.as_str().to_owned(),
            id: row.id,
        })
        .await;
    Ok(change_events(receiver))
}

/// `change` events while runs of the environment change, so the runs
/// list's script fetches its page again.
pub(crate) async fn list_events(
    State(dashboard): State<Dashboard>,
    _operator: Operator,
    Path(env): Path<String>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, DashboardError> {
    let environment = environment(&env)?;
    let receiver = dashboard
        .app
        .run_changes()
        .subscribe(Interest::Environment {
            environment: environment.as_str().to_owned(),
        })
        .await;
    Ok(change_events(receiver))
}

/// One `change` event per wake-up of `receiver`.
fn change_events(receiver: kiln_store::ChangeReceiver) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(receiver, |receiver| async move {
        receiver.changed().await;
        Some((Ok(Event::default().event("change").data("runs")), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A file a run's output names, read from storage in the run's
/// environment and sent from this origin. Only keys the output names are
/// served: the dashboard is no general window on the bucket.
pub(crate) async fn file(
    State(dashboard): State<Dashboard>,
    _operator: Operator,
    Path((env, run_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, DashboardError> {
    let environment = environment(&env)?;
    let Some((storage, scopes)) = &dashboard.storage else {
        return Err(DashboardError::NotFound("kiln has no storage configured".into()));
    };
    let row = find_run(&dashboard, environment, &run_id).await?;
    let key = query.get("key").map(String::as_str).unwrap_or_default();
    if !output_files(row.output.as_ref()).iter().any(|named| named == key) {
        return Err(DashboardError::NotFound(format!("run {run_id} names no file {key:?}")));
    }
    let content_type = file_kind(key).unwrap_or("application/octet-stream");
    let full = scopes
        .resolve(environment == Environment::Prod, key)
        .map_err(|error| DashboardError::NotFound(format!("{key:?}: {error}")))?;
    let body = storage.get(&full).await.map_err(|error| {
        if matches!(error, kiln_storage::StorageError::NotFound { .. }) {
            DashboardError::NotFound(format!("{key:?} is no longer in storage"))
        } else if error.is_transient() {
            DashboardError::Unavailable("storage is unavailable; retry shortly".into())
        } else {
            DashboardError::Internal(format!("reading {key}: {error}"))
        }
    })?;
    let name = key.rsplit('/').next().unwrap_or("file").replace('"', "");
    Ok((
        [
            (CONTENT_TYPE, content_type.to_owned()),
            (CONTENT_DISPOSITION, format!("inline; filename=\"{name}\"")),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(body.reader)),
    )
        .into_response())
}

fn run_path(environment: Environment, run_id: &str, done: &str) -> String {
    format!("/dashboard/{}/runs/{run_id}?done={done}", environment.as_str())
}

pub(crate) async fn cancel(
    State(dashboard): State<Dashboard>,
    Path((env, run_id)): Path<(String, String)>,
    _action: Action,
) -> Result<Redirect, DashboardError> {
    let environment = environment(&env)?;
    let row = find_run(&dashboard, environment, &run_id).await?;
    let before = row.status()?;
    let after = dashboard
        .app
        .store
        .cancel_run(environment, &row.id)
        .await?
        .ok_or_else(|| not_found(&run_id))?;
    tracing::info!(run_id = %row.id, "run canceled from the dashboard");
    let done = if before.is_final() || after != RunStatus::Canceled {
        "already-ended"
    } else {
        "canceled"
    };
    Ok(Redirect::to(&run_path(environment, &row.id, done)))
}

pub(crate) async fn replay(
    State(dashboard): State<Dashboard>,
    Path((env, run_id)): Path<(String, String)>,
    _action: Action,
) -> Result<Redirect, DashboardError> {
    let environment = environment(&env)?;
    let row = find_run(&dashboard, environment, &run_id).await?;
    let new_id = kiln_api::routes::runs::replay_run(&dashboard.app, environment, row).await?;
    tracing::info!(run_id = %new_id, replay_of = %run_id, "run replayed from the dashboard");
    Ok(Redirect::to(&run_path(environment, &new_id, "replayed")))
}

pub(crate) async fn reschedule(
    State(dashboard): State<Dashboard>,
    Path((env, run_id)): Path<(String, String)>,
    Action { form, .. }: Action,
) -> Result<Redirect, DashboardError> {
    let environment = environment(&env)?;
    let delay = form.get("delay").map(|d| d.trim().to_owned()).unwrap_or_default();
    let until = kiln_core::options::parse_time_spec(&kiln_core::options::TimeSpec::Text(delay), Utc::now())
        .map_err(|error| DashboardError::BadRequest(format!("delay: {error}")))?;
    let (rescheduled, row) = dashboard
        .app
        .store
        .reschedule_run(environment, &run_id, until)
        .await?
        .ok_or_else(|| not_found(&run_id))?;
    if !rescheduled {
        return Err(DashboardError::BadRequest(format!(
            "run {run_id} is {} and only a DELAYED run can be rescheduled",
            row.status
        )));
    }
    Ok(Redirect::to(&run_path(environment, &row.id, "rescheduled")))
}

/// Bulk cancel or replay: without `confirm`, a page that says how many
/// runs the filter matches; with it, the action, then the list again.
pub(crate) async fn bulk(
    State(dashboard): State<Dashboard>,
    Path(env): Path<String>,
    Action { operator, form }: Action,
) -> Result<Response, DashboardError> {
    let environment = environment(&env)?;
    let (mut filter, filter_form) = read_filter(&form)?;
    let action = form.get("action").map(String::as_str).unwrap_or_default();
    let cap = match action {
        "cancel" => {
            // Only runs that have not ended can be canceled.
            let open: Vec<RunStatus> = RunStatus::ALL.into_iter().filter(|s| !s.is_final()).collect();
            filter.statuses = if filter.statuses.is_empty() {
                open
            } else {
                filter.statuses.into_iter().filter(|s| !s.is_final()).collect()
            };
            BULK_CANCEL_CAP
        }
        "replay" => BULK_REPLAY_CAP,
        other => {
            return Err(DashboardError::BadRequest(format!(
                "no bulk action {other:?} (cancel or replay)"
            )));
        }
    };
    let nothing_to_cancel = action == "cancel" && filter.statuses.is_empty();
    if form.get("confirm").map(String::as_str) != Some("yes") {
        let count = if nothing_to_cancel {
            0
        } else {
            dashboard.app.store.count_runs(environment, &filter, cap + 1).await?
        };
        let count = if count > cap {
            format!("the first {cap} of more than {cap} runs")
        } else if count == 1 {
            "1 run".to_owned()
        } else {
            format!("{count} runs")
        };
        let page = view::BulkPage {
            layout: Layout::new(environment, &operator.csrf_token, "runs"),
            action: action.to_owned(),
            count,
            fields: filter_form.fields(),
            filter_query: filter_form.query(),
        };
        return Ok(Html(view::render(&page)?).into_response());
    }
    let mut done: u64 = 0;
    if !nothing_to_cancel {
        filter.limit = BULK_STEP;
        let mut taken: i64 = 0;
        'pages: loop {
            let mut rows = dashboard.app.store.list_runs(environment, &filter).await?;
            rows.truncate(BULK_STEP as usize);
            let last = rows.last().map(|row| row.id.clone());
            for row in rows {
                if taken >= cap {
                    break 'pages;
                }
                taken += 1;
                match action {
                    "cancel" => {
                        if dashboard.app.store.cancel_run(environment, &row.id).await? == Some(RunStatus::Canceled) {
                            done += 1;
                        }
                    }
                    _ => {
                        kiln_api::routes::runs::replay_run(&dashboard.app, environment, row).await?;
                        done += 1;
                    }
                }
            }
            match last {
                Some(id) => filter.after = Some(id),
                None => break,
            }
        }
    }
    tracing::info!(action, runs = done, "bulk action from the dashboard");
    let query = filter_form.query();
    let target = format!(
        "/dashboard/{}/runs?{query}{}done=bulk-{action}ed&count={done}",
        environment.as_str(),
        if query.is_empty() { "" } else { "&" }
    );
    Ok(Redirect::to(&target).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_are_the_image_and_pdf_keys_an_output_names() {
        let output = json!({
            "pages": [
                { "pageNumber": 1, "key": "previews/doc/page-1.png" },
                { "pageNumber": 2, "key": "previews/doc/page-2.jpg" }
            ],
            "pdf": { "key": "converted/doc.pdf" },
            "other": { "key": "notes.txt" }
        });
        assert_eq!(
            output_files(Some(&output)),
            [
                "previews/doc/page-1.png",
                "previews/doc/page-2.jpg",
                "converted/doc.pdf"
            ]
        );
    }

    #[test]
    fn progress_reads_a_fraction_a_percentage_or_pages() {
        assert_eq!(progress(Some(&json!({ "progress": 0.5 }))).map(|p| p.0), Some(50));
        assert_eq!(progress(Some(&json!({ "progress": 1 }))).map(|p| p.0), Some(1));
        assert_eq!(progress(Some(&json!({ "progress": 75 }))).map(|p| p.0), Some(75));
        assert_eq!(
            progress(Some(&json!({ "currentPage": 3, "totalPages": 12 }))).map(|p| p.0),
            Some(25)
        );
        assert_eq!(progress(Some(&json!({ "other": 1 }))), None);
    }

    #[test]
    fn a_filter_refuses_an_unknown_status_and_a_bad_date() {
        let fields = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        assert!(read_filter(&fields(&[("status", "DONE")])).is_err());
        assert!(read_filter(&fields(&[("from", "yesterday")])).is_err());
        let (filter, form) = read_filter(&fields(&[
            ("status", "FAILED"),
            ("tag", "a b"),
            ("from", "2026-12-08T09:30"),
        ]))
        .expect("a valid filter");
        assert_eq!(filter.statuses, vec![RunStatus::Failed]);
        assert_eq!(filter.tags, vec!["a b".to_owned()]);
        assert_eq!(form.query(), "status=FAILED&tag=a%20b&from=2026-12-08T09%3A30");
    }
}
