//! What the dashboard reads and writes beyond runs: its sign-in sessions,
//! a run's failed attempts, each queue's state (depth, oldest wait, executing, limit, paused) and
//! throughput, pausing and resuming queues, and counting a filtered
//! selection of runs before a bulk action.
//!
//! Sessions are stored by a hash of their token only; this module never
//! sees a password.

use chrono::{DateTime, Utc};
use kiln_core::auth::Environment;
use sqlx::{Postgres, QueryBuilder};

use crate::runs::ListFilter;
use crate::{Store, StoreError};

/// A signed-in dashboard session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DashboardSession {
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// One queue of an environment as the dashboard shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueState {
    pub name: String,
    pub concurrency_limit: Option<i32>,
    pub paused: bool,
    /// Runs waiting to start (QUEUED).
    pub queued: i64,
    /// When the longest-waiting of them was created.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    pub executing: i64,
}

/// Runs of one queue that finished in one minute.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueMinute {
    pub queue: String,
    pub minute: DateTime<Utc>,
    pub completed: i64,
    pub failed: i64,
}

/// A failed attempt of a run, with its error.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailedAttempt {
    pub attempt: i32,
    pub error: serde_json::Value,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: DateTime<Utc>,
}

impl Store {
    /// The failed attempts of run `run_id` of `environment`, first first.
    pub async fn failed_attempts(
        &self,
        environment: Environment,
        run_id: &str,
    ) -> Result<Vec<FailedAttempt>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT a.attempt, a.error, a.started_at, a.ended_at FROM run_attempts a
             JOIN runs r ON r.id = a.run_id AND r.environment = $1
             WHERE a.run_id = $2 ORDER BY a.attempt",
        )
        .bind(environment.as_str())
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a session until `expires_at`; forgets expired ones.
    pub async fn create_dashboard_session(
        &self,
        token_hash: &[u8],
        csrf_token: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO dashboard_sessions (token_hash, csrf_token, expires_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(csrf_token)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The live session with this token hash, if any.
    pub async fn dashboard_session(&self, token_hash: &[u8]) -> Result<Option<DashboardSession>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT csrf_token, expires_at FROM dashboard_sessions WHERE token_hash = $1 AND expires_at > now()",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Signs a session out.
    pub async fn delete_dashboard_session(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every queue of `environment` that is configured, has runs waiting
    /// or executing, or is among `known` (the queues of the tasks kiln
    /// serves), by name. The queue names with runs are found by skipping
    /// through the partial indexes on QUEUED and EXECUTING runs, one name
    /// at a time, so a backlog of any size costs a few probes per queue.
    pub async fn queue_states(
        &self,
        environment: Environment,
        known: &[String],
    ) -> Result<Vec<QueueState>, StoreError> {
        Ok(sqlx::query_as(
            "WITH RECURSIVE queued(queue) AS (
                 (SELECT queue FROM runs WHERE status = 'QUEUED' ORDER BY queue LIMIT 1)
                 UNION ALL
                 SELECT (SELECT r.queue FROM runs r WHERE r.status = 'QUEUED' AND r.queue > queued.queue
                         ORDER BY r.queue LIMIT 1)
                 FROM queued WHERE queued.queue IS NOT NULL
             ), executing(queue) AS (
                 (SELECT queue FROM runs WHERE status = 'EXECUTING' ORDER BY queue LIMIT 1)
                 UNION ALL
                 SELECT (SELECT r.queue FROM runs r WHERE r.status = 'EXECUTING' AND r.queue > executing.queue
                         ORDER BY r.queue LIMIT 1)
                 FROM executing WHERE executing.queue IS NOT NULL
             ), names(name) AS (
                 SELECT queue FROM queued WHERE queue IS NOT NULL
                 UNION SELECT queue FROM executing WHERE queue IS NOT NULL
                 UNION SELECT name FROM queues WHERE environment = $1
                 UNION SELECT unnest($2::text[])
             ), states AS MATERIALIZED (
                 SELECT n.name, q.concurrency_limit, COALESCE(q.paused, false) AS paused, q.name IS NOT NULL AS configured,
                     (SELECT count(*) FROM runs r WHERE r.status = 'QUEUED' AND r.queue = n.name
                         AND r.environment = $1) AS queued,
                     (SELECT min(r.created_at) FROM runs r WHERE r.status = 'QUEUED' AND r.queue = n.name
                         AND r.environment = $1) AS oldest_queued_at,
                     (SELECT count(*) FROM runs r WHERE r.status = 'EXECUTING' AND r.queue = n.name
                         AND r.environment = $1) AS executing
                 FROM names n LEFT JOIN queues q ON q.environment = $1 AND q.name = n.name
             )
             SELECT name, concurrency_limit, paused, queued, oldest_queued_at, executing FROM states
             WHERE configured OR queued > 0 OR executing > 0 OR name = ANY($2)
             ORDER BY name",
        )
        .bind(environment.as_str())
        .bind(known)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Runs finished per queue and minute since `since`, oldest first.
    pub async fn queue_minutes(
        &self,
        environment: Environment,
        since: DateTime<Utc>,
    ) -> Result<Vec<QueueMinute>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT queue, minute, sum(completed)::int8 AS completed, sum(failed)::int8 AS failed
             FROM queue_minutes WHERE environment = $1 AND minute >= $2
             GROUP BY queue, minute ORDER BY minute, queue",
        )
        .bind(environment.as_str())
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets throughput older than `before`.
    pub async fn prune_queue_minutes(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM queue_minutes WHERE minute < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Pauses a queue: none of its runs starts until it is resumed (the
    /// ones executing finish). Its limit, if any, is kept.
    pub async fn pause_queue(&self, environment: Environment, queue: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO queues (environment, name, paused) VALUES ($1, $2, true)
             ON CONFLICT (environment, name) DO UPDATE SET paused = true, updated_at = now()",
        )
        .bind(environment.as_str())
        .bind(queue)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Resumes a paused queue and releases the runs it held; answers how
    /// many were released (they are pushed to Redis as any released run).
    pub async fn resume_queue(&self, environment: Environment, queue: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE queues SET paused = false, updated_at = now() WHERE environment = $1 AND name = $2")
            .bind(environment.as_str())
            .bind(queue)
            .execute(&mut *tx)
            .await?;
        // A queue with a limit keeps its parked runs: the scheduler's
        // safety net releases as many as there are free slots.
        let released = sqlx::query(
            "UPDATE runs SET parked = false, enqueued_at = NULL, updated_at = now()
             WHERE parked AND environment = $1 AND queue = $2
               AND NOT EXISTS (SELECT 1 FROM queues q WHERE q.environment = $1 AND q.name = $2
                               AND q.concurrency_limit IS NOT NULL)",
        )
        .bind(environment.as_str())
        .bind(queue)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(released)
    }

    /// The workers (and task hosts) executing runs of `environment` now,
    /// with how many each runs.
    pub async fn executing_workers(&self, environment: Environment) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT worker_id, count(*) FROM runs
             WHERE status = 'EXECUTING' AND environment = $1 AND worker_id IS NOT NULL
             GROUP BY worker_id ORDER BY worker_id",
        )
        .bind(environment.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many runs match `filter` (its cursor and limit ignored), up to
    /// `cap`: a bulk action's confirmation shows "more than `cap`" rather
    /// than count ten million rows.
    pub async fn count_runs(&self, environment: Environment, filter: &ListFilter, cap: i64) -> Result<i64, StoreError> {
        let mut query: QueryBuilder<Postgres> = QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM runs WHERE ");
        crate::runs::push_run_conditions(&mut query, environment, filter);
        if !filter.tags.is_empty() {
            query
                .push(" AND EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = runs.id AND t.tag = ANY(")
                .push_bind(filter.tags.clone())
                .push("))");
        }
        query.push(" LIMIT ").push_bind(cap).push(") AS matching");
        Ok(query.build_query_scalar().fetch_one(&self.pool).await?)
    }
}
