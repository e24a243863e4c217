//! `GET /metrics`: Prometheus text format. Counters and histograms are
//! this process's own (what it triggered, attempted and finished since it
//! started: a scraper sums them over processes, as Prometheus expects);
//! gauges of live state come from bounded queries on Postgres (each
//! queue's backlog, active workers) and from Redis (ready list lengths).
//! The Postgres gauges are read at most once a second, by one scrape at a
//! time, on a connection of their own: scrapes never compete with
//! triggers for the main pool, and a scrape while Postgres is slow or
//! down answers the last gauges read (`kiln_gauges_age_seconds` says how
//! old) rather than waiting.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_store::metrics::Gauges;

use crate::AppState;
use crate::error::ApiError;

/// How long gauges read from Postgres are served before being read again.
const GAUGES_FRESH_FOR: Duration = Duration::from_secs(1);

/// The last gauges read, and when; the lock is held while they are read,
/// so concurrent scrapes wait for one query instead of each running one.
#[derive(Default)]
pub struct GaugeCache(tokio::sync::Mutex<Option<(Instant, Gauges)>>);

impl GaugeCache {
    /// Fresh gauges, or the last ones read if Postgres does not answer.
    async fn read(&self, store: &kiln_store::Store) -> Option<(Instant, Gauges)> {
        let mut cached = self.0.lock().await;
        if cached.as_ref().is_some_and(|(at, _)| at.elapsed() < GAUGES_FRESH_FOR) {
            return cached.clone();
        }
        match store.gauges().await {
            Ok(gauges) => *cached = Some((Instant::now(), gauges)),
            Err(error) => tracing::warn!(%error, "cannot read the gauges for /metrics; serving the last ones"),
        }
        cached.clone()
    }
}

/// Escapes a label value as the text format asks.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// With a token set, only a scraper that shows it may read task and
/// queue names.
pub(crate) fn check_token(token: Option<&str>, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else { return Ok(()) };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if kiln_core::auth::constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "/metrics needs the bearer token set in KILN_METRICS_TOKEN".into(),
        ))
    }
}

/// The Prometheus text format's response.
pub(crate) fn text(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

pub async fn metrics(State(app): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    check_token(app.metrics_token.as_deref(), &headers)?;
    let mut out = String::with_capacity(4096);
    if let Some(render) = &app.process_metrics {
        out.push_str(&render());
    }
    let gauges = app.gauges.read(&app.store).await;
    if let Some((read_at, snapshot)) = &gauges {
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
        let _ = writeln!(
            out,
            "# HELP kiln_workers_active Worker processes holding a live lease on a run.\n# TYPE kiln_workers_active gauge\nkiln_workers_active {}",
            snapshot.active_workers
        );
        let _ = writeln!(
            out,
            "# HELP kiln_task_hosts_alive Task hosts seen in the last minute.\n# TYPE kiln_task_hosts_alive gauge\nkiln_task_hosts_alive {}",
            snapshot.task_hosts_alive
        );
        let _ = writeln!(
            out,
            "# HELP kiln_gauges_age_seconds How long ago the gauges above were read from Postgres.\n# TYPE kiln_gauges_age_seconds gauge\nkiln_gauges_age_seconds {:.3}",
            read_at.elapsed().as_secs_f64()
        );
    }
    if let Ok(lanes) = app.queue.known_lanes().await {
        out.push_str("# HELP kiln_redis_ready_length Run ids waiting in each environment's queue's Redis list.\n# TYPE kiln_redis_ready_length gauge\n");
        for lane in lanes {
            if let Ok(depth) = app.queue.depth(&lane.environment, &lane.queue).await {
                let _ = writeln!(
                    out,
                    "kiln_redis_ready_length{{environment=\"{}\",queue=\"{}\"}} {depth}",
                    label(&lane.environment),
                    label(&lane.queue)
                );
            }
        }
    }
    Ok(text(out))
}
