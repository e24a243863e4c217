//! What `/metrics` reports, read from the run history in a few aggregate
//! queries: runs by task and status, each queue's backlog and its oldest
//! run, attempts, run durations and queue waits as histogram buckets, and
//! the workers holding live leases.

use crate::{Store, StoreError};

/// Upper bounds (seconds) of the duration and wait histograms.
pub const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Cumulative counts, one per [`BUCKETS`] bound.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub runs: Vec<(String, String, i64)>,
    /// (queue, QUEUED runs, age in seconds of the oldest)
    pub backlog: Vec<(String, i64, f64)>,
    pub attempts: Vec<(String, i64)>,
    pub durations: Vec<(String, Histogram)>,
    pub waits: Vec<(String, Histogram)>,
    pub active_workers: i64,
}

impl Store {
    pub async fn metrics(&self) -> Result<MetricsSnapshot, StoreError> {
        let runs: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT task_identifier, status, count(*) FROM runs GROUP BY 1, 2 ORDER BY 1, 2")
                .fetch_all(&self.pool)
                .await?;
        let backlog: Vec<(String, i64, f64)> = sqlx::query_as(
            "SELECT queue, count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
             FROM runs WHERE status = 'QUEUED' GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        let attempts: Vec<(String, i64)> =
            sqlx::query_as("SELECT task_identifier, sum(attempt_count)::int8 FROM runs GROUP BY 1 ORDER BY 1")
                .fetch_all(&self.pool)
                .await?;
        let durations = self
            .histogram(
                "EXTRACT(EPOCH FROM completed_at - started_at)::float8",
                "completed_at IS NOT NULL AND started_at IS NOT NULL",
            )
            .await?;
        let waits = self
            .histogram(
                "GREATEST(EXTRACT(EPOCH FROM started_at - GREATEST(created_at, COALESCE(delay_until, created_at)))::float8, 0)",
                "started_at IS NOT NULL",
            )
            .await?;
        let (active_workers,): (i64,) = sqlx::query_as(
            "SELECT count(DISTINCT worker_id) FROM runs WHERE status = 'EXECUTING' AND lease_expires_at > now()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(MetricsSnapshot {
            runs,
            backlog,
            attempts,
            durations,
            waits,
            active_workers,
        })
    }

    /// Per task: how many values of `value` (seconds) fall in each bucket.
    async fn histogram(&self, value: &str, condition: &str) -> Result<Vec<(String, Histogram)>, StoreError> {
        // width_bucket answers 0 below the first bound and n past the last.
        let sql = format!(
            "SELECT task_identifier, width_bucket(v, $1::float8[]) AS bucket, count(*), sum(v)
             FROM (SELECT task_identifier, {value} AS v FROM runs WHERE {condition}) measured
             GROUP BY 1, 2 ORDER BY 1, 2"
        );
        let rows: Vec<(String, i32, i64, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(BUCKETS)
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<(String, Histogram)> = Vec::new();
        for (task, bucket, count, sum) in rows {
            if out.last().is_none_or(|(t, _)| *t != task) {
                out.push((
                    task.clone(),
                    Histogram {
                        buckets: vec![0; BUCKETS.len()],
                        count: 0,
                        sum: 0.0,
                    },
                ));
            }
            let Some((_, histogram)) = out.last_mut() else { continue };
            let count = u64::try_from(count).unwrap_or(0);
            histogram.count += count;
            histogram.sum += sum;
            // A value in bucket b (bounds[b-1] <= v < bounds[b]) counts for every bound from b on.
            let first = usize::try_from(bucket).unwrap_or(0);
            for slot in histogram.buckets.iter_mut().skip(first) {
                *slot += count;
            }
        }
        Ok(out)
    }
}
