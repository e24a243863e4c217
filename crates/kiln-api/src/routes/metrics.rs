//! `GET /metrics`: Prometheus text format. Everything is read from
//! Postgres (the run history) and Redis (the ready lists) at scrape time,
//! so every kiln process answers the same figures.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_store::metrics::{BUCKETS, Histogram};

use crate::AppState;
use crate::error::ApiError;

/// Escapes a label value as the text format asks.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, help: &str, series: &[(String, Histogram)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (task, h) in series {
        let task = label(task);
        for (bound, count) in BUCKETS.iter().zip(&h.buckets) {
            let _ = writeln!(out, "{name}_bucket{{task=\"{task}\",le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{task=\"{task}\",le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{task=\"{task}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{task=\"{task}\"}} {}", h.count);
    }
}

pub async fn metrics(State(app): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    // With a token set, only a scraper that shows it may read task and
    // queue names (and make kiln count its history).
    if let Some(token) = &app.metrics_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !kiln_core::auth::constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Err(ApiError::Unauthorized(
                "/metrics needs the bearer token set in KILN_METRICS_TOKEN".into(),
            ));
        }
    }
    let snapshot = app.store.metrics().await?;
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP kiln_runs Runs in the history, by task and status.\n# TYPE kiln_runs gauge\n");
    for (task, status, count) in &snapshot.runs {
        let _ = writeln!(out, "kiln_runs{{task=\"{}\",status=\"{status}\"}} {count}", label(task));
    }
    out.push_str("# HELP kiln_queue_depth QUEUED runs per queue.\n# TYPE kiln_queue_depth gauge\n");
    for (queue, count, _) in &snapshot.backlog {
        let _ = writeln!(out, "kiln_queue_depth{{queue=\"{}\"}} {count}", label(queue));
    }
    out.push_str(
        "# HELP kiln_queue_oldest_age_seconds Age of the oldest QUEUED run per queue.\n# TYPE kiln_queue_oldest_age_seconds gauge\n",
    );
    for (queue, _, age) in &snapshot.backlog {
        let _ = writeln!(
            out,
            "kiln_queue_oldest_age_seconds{{queue=\"{}\"}} {age:.3}",
            label(queue)
        );
    }
    out.push_str("# HELP kiln_run_attempts_total Attempts started, by task.\n# TYPE kiln_run_attempts_total counter\n");
    for (task, attempts) in &snapshot.attempts {
        let _ = writeln!(out, "kiln_run_attempts_total{{task=\"{}\"}} {attempts}", label(task));
    }
    histogram(
        &mut out,
        "kiln_run_duration_seconds",
        "From start to end of runs that ended.",
        &snapshot.durations,
    );
    histogram(
        &mut out,
        "kiln_queue_wait_seconds",
        "From ready (created, or due after a delay) to start.",
        &snapshot.waits,
    );
    let _ = writeln!(
        out,
        "# HELP kiln_workers_active Worker processes holding a live lease on a run.\n# TYPE kiln_workers_active gauge\nkiln_workers_active {}",
        snapshot.active_workers
    );
    if let Ok(queues) = app.queue.known_queues().await {
        out.push_str("# HELP kiln_redis_ready_length Run ids waiting in each queue's Redis list.\n# TYPE kiln_redis_ready_length gauge\n");
        for queue in queues {
            if let Ok(depth) = app.queue.depth(&queue).await {
                let _ = writeln!(out, "kiln_redis_ready_length{{queue=\"{}\"}} {depth}", label(&queue));
            }
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response())
}
