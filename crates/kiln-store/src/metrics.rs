//! The gauges `/metrics` reads from Postgres: each queue's backlog and its
//! oldest run, and the workers holding live leases. Each is one query over
//! a partial index of live runs (QUEUED or EXECUTING), so its cost follows
//! the backlog, never the history; they run on a pool of one connection of
//! their own with a statement timeout. Counters and histograms (runs
//! triggered, attempts, durations, waits) are not read here: each process
//! counts what it does (see the `metrics` crate's use in kiln-runtime and
//! kiln-api).

use crate::{Store, StoreError};

/// Upper bounds (seconds) of the duration and wait histograms.
pub const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// (queue, QUEUED runs, age in seconds of the oldest)
    pub backlog: Vec<(String, i64, f64)>,
    pub active_workers: i64,
    /// Task hosts seen in the last minute (they claim every few seconds).
    pub task_hosts_alive: i64,
}

impl Store {
    pub async fn gauges(&self) -> Result<Gauges, StoreError> {
        let backlog: Vec<(String, i64, f64)> = sqlx::query_as(
            "SELECT queue, count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
             FROM runs WHERE status = 'QUEUED' GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&self.gauges)
        .await?;
        let (active_workers,): (i64,) = sqlx::query_as(
            "SELECT count(DISTINCT worker_id) FROM runs WHERE status = 'EXECUTING' AND lease_expires_at > now()",
        )
        .fetch_one(&self.gauges)
        .await?;
        let (task_hosts_alive,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM task_hosts WHERE last_seen_at > now() - interval '60 seconds'")
                .fetch_one(&self.gauges)
                .await?;
        Ok(Gauges {
            task_hosts_alive,
            backlog,
            active_workers,
        })
    }
}
