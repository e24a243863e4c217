//! Queues: what waits, for how long, what executes, the limit, runs
//! finished per minute over the last hour (an SVG chart drawn here, no
//! script), and pausing or resuming a queue. A paused queue starts no run
//! in the workers or task hosts (the store's claims refuse them); its
//! runs wait, and resuming releases them.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{Html, Redirect};
use chrono::{Duration, DurationRound, Utc};

use crate::auth::{Action, Operator};
use crate::error::DashboardError;
use crate::view::{self, Layout};
use crate::{Dashboard, environment};

const CHART_MINUTES: i64 = 60;
const CHART_HEIGHT: u32 = 40;
const BAR_STEP: usize = 4;

/// Bars of runs finished per minute, the newest on the right, scaled to
/// the busiest minute.
fn bars(counts: &HashMap<i64, (i64, i64)>) -> (Vec<view::Bar>, i64) {
    let busiest = counts.values().map(|(ok, bad)| ok + bad).max().unwrap_or(0).max(1);
    let mut total = 0;
    let bars = (0..CHART_MINUTES)
        .filter_map(|slot| {
            let minutes_ago = CHART_MINUTES - 1 - slot;
            let (completed, failed) = counts.get(&minutes_ago).copied().unwrap_or((0, 0));
            let finished = completed + failed;
            total += finished;
            if finished == 0 {
                return None;
            }
            let height = ((finished as f64 / busiest as f64) * f64::from(CHART_HEIGHT)).ceil() as u32;
            let height = height.clamp(1, CHART_HEIGHT);
            Some(view::Bar {
                x: slot as usize * BAR_STEP,
                y: CHART_HEIGHT - height,
                height,
                title: format!("{minutes_ago} min ago: {completed} completed, {failed} failed"),
            })
        })
        .collect();
    (bars, total)
}

pub(crate) async fn list(
    State(dashboard): State<Dashboard>,
    operator: Operator,
    Path(env): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Html<String>, DashboardError> {
    let environment = environment(&env)?;
    let app = &dashboard.app;
    let now = Utc::now();
    let this_minute = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let since = this_minute - Duration::minutes(CHART_MINUTES - 1);
    let mut minutes: HashMap<String, HashMap<i64, (i64, i64)>> = HashMap::new();
    for minute in app.store.queue_minutes(environment, since).await? {
        let ago = (this_minute - minute.minute).num_minutes();
        minutes
            .entry(minute.queue)
            .or_default()
            .insert(ago, (minute.completed, minute.failed));
    }
    // A queue that finished runs within the hour is shown, idle or not.
    let states = kiln_api::routes::queues::queue_states(app, environment, minutes.keys().cloned()).await?;
    let queues = states
        .into_iter()
        .map(|state| {
            let (bars, finished) = bars(minutes.get(&state.name).unwrap_or(&HashMap::new()));
            view::QueueLine {
                oldest_wait: state
                    .oldest_queued_at
                    .map(|at| view::span(now - at))
                    .unwrap_or_default(),
                limit: state
                    .concurrency_limit
                    .map_or_else(|| "none".to_owned(), |limit| limit.to_string()),
                name: state.name,
                queued: state.queued,
                executing: state.executing,
                paused: state.paused,
                finished_last_hour: finished,
                bars,
            }
        })
        .collect();
    let notice = match query.get("done").map(String::as_str) {
        Some("paused") => "The queue is paused: its runs wait until it is resumed.",
        Some("resumed") => "The queue is resumed.",
        _ => "",
    };
    let page = view::QueuesPage {
        layout: Layout::new(environment, &operator.csrf_token, "queues"),
        queues,
        notice: notice.to_owned(),
    };
    Ok(Html(view::render(&page)?))
}

fn queue_name(form: &HashMap<String, String>) -> Result<String, DashboardError> {
    form.get("queue")
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty())
        .ok_or_else(|| DashboardError::BadRequest("which queue? (the form sent none)".into()))
}

pub(crate) async fn pause(
    State(dashboard): State<Dashboard>,
    Path(env): Path<String>,
    Action { form, .. }: Action,
) -> Result<Redirect, DashboardError> {
    let environment = environment(&env)?;
    let queue = queue_name(&form)?;
    dashboard.app.store.pause_queue(environment, &queue).await?;
    tracing::info!(%queue, environment = environment.as_str(), "queue paused from the dashboard");
    Ok(Redirect::to(&format!(
        "/dashboard/{}/queues?done=paused",
        environment.as_str()
    )))
}

pub(crate) async fn resume(
    State(dashboard): State<Dashboard>,
    Path(env): Path<String>,
    Action { form, .. }: Action,
) -> Result<Redirect, DashboardError> {
    let environment = environment(&env)?;
    let queue = queue_name(&form)?;
    let released = dashboard.app.store.resume_queue(environment, &queue).await?;
    tracing::info!(%queue, released, environment = environment.as_str(), "queue resumed from the dashboard");
    Ok(Redirect::to(&format!(
        "/dashboard/{}/queues?done=resumed",
        environment.as_str()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_minute_and_count_every_run() {
        let counts = HashMap::from([(0, (10, 0)), (1, (4, 1)), (59, (1, 0))]);
        let (bars, total) = bars(&counts);
        assert_eq!(total, 16);
        assert_eq!(bars.len(), 3);
        let newest = bars.last().expect("a bar for this minute");
        assert_eq!((newest.x, newest.height, newest.y), (59 * BAR_STEP, CHART_HEIGHT, 0));
        assert_eq!(bars[0].x, 0);
        assert!(bars[0].height >= 1);
    }
}
