//! A run's log lines (`run_logs`): what its task wrote through the SDK's
//! logger, as the task host exports it. Lines are kept only for runs of
//! the writer's environment; a line naming another environment's run, or
//! no run, is dropped.

use chrono::{DateTime, Utc};
use kiln_core::auth::Environment;
use serde_json::Value;

use crate::{Store, StoreError};

/// One line, as it is written and read.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LogLine {
    pub run_id: String,
    pub logged_at: DateTime<Utc>,
    pub level: String,
    pub message: String,
    pub attributes: Value,
}

/// Lines answered for one run at most.
pub const MAX_LOG_LINES: i64 = 5_000;

impl Store {
    /// Keeps the lines whose run is of `environment`; answers how many.
    pub async fn insert_logs(&self, environment: Environment, lines: &[LogLine]) -> Result<u64, StoreError> {
        if lines.is_empty() {
            return Ok(0);
        }
        let runs: Vec<&str> = lines.iter().map(|l| l.run_id.as_str()).collect();
        let times: Vec<DateTime<Utc>> = lines.iter().map(|l| l.logged_at).collect();
        let levels: Vec<&str> = lines.iter().map(|l| l.level.as_str()).collect();
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        let attributes: Vec<&Value> = lines.iter().map(|l| &l.attributes).collect();
        let done = sqlx::query(
            "INSERT INTO run_logs (environment, run_id, logged_at, level, message, attributes)
             SELECT $1, l.run_id, l.logged_at, l.level, l.message, l.attributes
             FROM UNNEST($2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[])
                 WITH ORDINALITY AS l(run_id, logged_at, level, message, attributes, n)
             WHERE EXISTS (SELECT 1 FROM runs r WHERE r.id = l.run_id AND r.environment = $1)
             ORDER BY l.n",
        )
        .bind(environment.as_str())
        .bind(&runs)
        .bind(&times)
        .bind(&levels)
        .bind(&messages)
        .bind(&attributes)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The first [`MAX_LOG_LINES`] lines of run `run_id`, in the order
    /// they were kept.
    pub async fn run_logs(&self, environment: Environment, run_id: &str) -> Result<Vec<LogLine>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT run_id, logged_at, level, message, attributes FROM run_logs
             WHERE run_id = $1 AND environment = $2 ORDER BY id LIMIT $3",
        )
        .bind(run_id)
        .bind(environment.as_str())
        .bind(MAX_LOG_LINES)
        .fetch_all(&self.pool)
        .await?)
    }
}
