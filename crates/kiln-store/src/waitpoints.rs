//! Waitpoints: what a run waits for from inside its task.
//!
//! - DATETIME: SDK 4.x asks for one through `wait.for` and `wait.until`
//!   (`POST /engine/v1/runs/{id}/wait/duration`). The process running the
//!   task keeps the run, and its lease, while it waits and goes on at the
//!   waitpoint's time; the record lets an idempotency key give a retried
//!   attempt the same wait (and so the same end) back.
//! - RUN: a child triggered with `resumeParentOnCompletion`
//!   (`triggerAndWait`, `batchTriggerAndWait`). The parent's process asks
//!   for the ones whose child has ended.
//!
//! This module records and finds waitpoints; it does not wake anyone.

use chrono::{DateTime, Utc};
use kiln_core::auth::Environment;
use kiln_core::status::RunStatus;

use crate::{Store, StoreError};

/// A recorded wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waitpoint {
    pub id: String,
    pub complete_after: DateTime<Utc>,
}

/// What asking for a wait came to.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitForDuration {
    /// A new waitpoint.
    Created(Waitpoint),
    /// The waitpoint recorded earlier under the same idempotency key (its
    /// time may have passed already).
    Existing(Waitpoint),
    NotFound,
    /// Only a running run waits.
    NotExecuting(RunStatus),
}

/// An idempotency key and when it stops naming its waitpoint.
#[derive(Debug, Clone, Copy)]
pub struct WaitKey<'a> {
    pub key: &'a str,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Records that run `run_id` of `environment` waits until `until`,
    /// as waitpoint `new_id`; with a live `key` already used in the
    /// environment, answers that key's waitpoint instead.
    pub async fn wait_for_duration(
        &self,
        environment: Environment,
        run_id: &str,
        new_id: &str,
        until: DateTime<Utc>,
        key: Option<WaitKey<'_>>,
    ) -> Result<WaitForDuration, StoreError> {
        let mut tx = self.pool.begin().await?;
        let status: Option<(String,)> = sqlx::query_as("SELECT status FROM runs WHERE id = $1 AND environment = $2")
            .bind(run_id)
            .bind(environment.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((status,)) = status else {
            return Ok(WaitForDuration::NotFound);
        };
        let status: RunStatus = status
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("run {run_id} has status {status:?}")))?;
        if status != RunStatus::Executing {
            return Ok(WaitForDuration::NotExecuting(status));
        }
        if let Some(key) = key {
            // An expired key names nothing: it is taken off its waitpoint,
            // so the unique index lets the new one have it.
            sqlx::query(
                "UPDATE waitpoints SET idempotency_key = NULL, idempotency_key_expires_at = NULL
                 WHERE environment = $1 AND idempotency_key = $2 AND idempotency_key_expires_at <= now()",
            )
            .bind(environment.as_str())
            .bind(key.key)
            .execute(&mut *tx)
            .await?;
        }
        let created: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "INSERT INTO waitpoints (id, environment, run_id, kind, complete_after, idempotency_key, idempotency_key_expires_at)
             VALUES ($1, $2, $3, 'DATETIME', $4, $5, $6)
             ON CONFLICT (environment, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id, complete_after",
        )
        .bind(new_id)
        .bind(environment.as_str())
        .bind(run_id)
        .bind(until)
        .bind(key.map(|k| k.key))
        .bind(key.map(|k| k.expires_at))
        .fetch_optional(&mut *tx)
        .await?;
        let answer = match (created, key) {
            (Some((id, complete_after)), _) => WaitForDuration::Created(Waitpoint { id, complete_after }),
            (None, Some(key)) => {
                let (id, complete_after): (String, DateTime<Utc>) = sqlx::query_as(
                    "SELECT id, complete_after FROM waitpoints WHERE environment = $1 AND idempotency_key = $2",
                )
                .bind(environment.as_str())
                .bind(key.key)
                .fetch_one(&mut *tx)
                .await?;
                WaitForDuration::Existing(Waitpoint { id, complete_after })
            }
            (None, None) => return Err(StoreError::Corrupt("a waitpoint without a key was not recorded".into())),
        };
        tx.commit().await?;
        Ok(answer)
    }
}

/// A child a run waits for, with its place in a batch when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildWait {
    pub waitpoint_id: String,
    pub child_run_id: String,
    /// The batch and the child's index in it.
    pub batch: Option<(String, i32)>,
}

/// A RUN waitpoint whose child has ended.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndedChild {
    pub id: String,
    pub child_run_id: String,
    pub batch_id: Option<String>,
    pub batch_index: Option<i32>,
    pub status: String,
    pub output: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Records that run `parent` of `environment` waits for each child.
    /// A child already waited for (a retried trigger with the same
    /// idempotency key) keeps its waitpoint.
    pub async fn wait_for_children(
        &self,
        environment: Environment,
        parent: &str,
        children: &[ChildWait],
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = children.iter().map(|c| c.waitpoint_id.as_str()).collect();
        let child_ids: Vec<&str> = children.iter().map(|c| c.child_run_id.as_str()).collect();
        let batches: Vec<Option<&str>> = children
            .iter()
            .map(|c| c.batch.as_ref().map(|(b, _)| b.as_str()))
            .collect();
        let indexes: Vec<Option<i32>> = children.iter().map(|c| c.batch.as_ref().map(|(_, i)| *i)).collect();
        sqlx::query(
            "INSERT INTO waitpoints (id, environment, run_id, kind, child_run_id, batch_id, batch_index)
             SELECT w.id, $1, $2, 'RUN', w.child, w.batch, w.index
             FROM UNNEST($3::text[], $4::text[], $5::text[], $6::int4[]) AS w(id, child, batch, index)
             ON CONFLICT (run_id, child_run_id) WHERE child_run_id IS NOT NULL DO NOTHING",
        )
        .bind(environment.as_str())
        .bind(parent)
        .bind(&ids)
        .bind(&child_ids)
        .bind(&batches)
        .bind(&indexes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The RUN waitpoints of run `parent` whose child has ended, with how
    /// it ended.
    pub async fn ended_children(&self, environment: Environment, parent: &str) -> Result<Vec<EndedChild>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT w.id, w.child_run_id, w.batch_id, w.batch_index, r.status, r.output, r.error, r.completed_at
             FROM waitpoints w JOIN runs r ON r.id = w.child_run_id AND r.environment = w.environment
             WHERE w.run_id = $1 AND w.environment = $2 AND w.kind = 'RUN'
               AND r.status NOT IN ('DELAYED', 'QUEUED', 'EXECUTING')
             ORDER BY w.batch_index NULLS FIRST, w.id",
        )
        .bind(parent)
        .bind(environment.as_str())
        .fetch_all(&self.pool)
        .await?)
    }
}
