//! Batches: a batch row lists the runs one `batch.trigger` call made, in
//! item order. The runs are recorded first (each as a single trigger
//! would be); the batch row is written once they all are, so a batch never
//! names a run that does not exist.

use chrono::{DateTime, Utc};
use kiln_core::auth::Environment;

use crate::{Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: String,
    /// In item order; a streamed batch has `None` where an item has not
    /// arrived yet.
    pub run_ids: Vec<Option<String>>,
    /// Items a streamed batch expects; `None` for one-request batches.
    pub expected_count: Option<i32>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the last of its runs changed.
    pub updated_at: DateTime<Utc>,
    /// How many of its runs have not reached a final status.
    pub unfinished: i64,
    /// The run whose children its items are (`batchTriggerAndWait`).
    pub parent_run_id: Option<String>,
    /// Whether that run waits for them.
    pub resume_parent: bool,
}

const BATCH_SELECT: &str = "SELECT b.id, b.run_ids, b.expected_count, b.idempotency_key, b.created_at,
        b.parent_run_id, b.resume_parent,
        GREATEST(b.created_at, (SELECT max(r.updated_at) FROM runs r WHERE r.id = ANY(b.run_ids))) AS updated_at,
        (SELECT count(*) FROM runs r WHERE r.id = ANY(b.run_ids)
            AND r.status IN ('DELAYED', 'QUEUED', 'EXECUTING')
        ) AS unfinished
    FROM batches b";

impl Store {
    /// The live batch holding `idempotency_key`, if any.
    pub async fn find_batch_by_key(
        &self,
        environment: Environment,
        idempotency_key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<BatchRow>, StoreError> {
        let sql = format!(
            "{BATCH_SELECT} WHERE b.environment = $1 AND b.idempotency_key = $2
             AND (b.idempotency_key_expires_at IS NULL OR b.idempotency_key_expires_at > $3)"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(environment.as_str())
            .bind(idempotency_key)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records a batch of runs already recorded. With an idempotency key
    /// that another batch holds, answers that batch's id instead (and this
    /// one is not recorded); a key past its expiry is released first.
    pub async fn insert_batch(
        &self,
        id: &str,
        environment: Environment,
        run_ids: &[String],
        idempotency_key: Option<(&str, DateTime<Utc>)>,
    ) -> Result<String, StoreError> {
        let (batch_id, _) = self
            .insert_batch_row(id, environment, run_ids, None, idempotency_key)
            .await?;
        Ok(batch_id)
    }

    /// Creates a streamed batch expecting `expected` items, or finds the
    /// live batch holding `idempotency_key`. Answers its id and whether it
    /// was there already.
    pub async fn create_streamed_batch(
        &self,
        id: &str,
        environment: Environment,
        expected: i32,
        idempotency_key: Option<(&str, DateTime<Utc>)>,
    ) -> Result<(String, bool), StoreError> {
        self.insert_batch_row(id, environment, &[], Some(expected), idempotency_key)
            .await
    }

    /// Makes the items of streamed batch `id` children of run `parent`,
    /// which waits for them when `resume` says so.
    pub async fn adopt_batch(
        &self,
        environment: Environment,
        id: &str,
        parent: &str,
        resume: bool,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE batches SET parent_run_id = $3, resume_parent = $4 WHERE id = $1 AND environment = $2")
            .bind(id)
            .bind(environment.as_str())
            .bind(parent)
            .bind(resume)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The batch row, or the live batch holding the idempotency key (then
    /// `true`).
    async fn insert_batch_row(
        &self,
        id: &str,
        environment: Environment,
        run_ids: &[String],
        expected: Option<i32>,
        idempotency_key: Option<(&str, DateTime<Utc>)>,
    ) -> Result<(String, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some((key, _)) = idempotency_key {
            sqlx::query(
                "UPDATE batches SET idempotency_key = NULL
                 WHERE environment = $1 AND idempotency_key = $2 AND idempotency_key_expires_at <= now()",
            )
            .bind(environment.as_str())
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO batches (id, environment, run_ids, expected_count, idempotency_key, idempotency_key_expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (environment, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id",
        )
        .bind(id)
        .bind(environment.as_str())
        .bind(run_ids)
        .bind(expected)
        .bind(idempotency_key.map(|(key, _)| key))
        .bind(idempotency_key.map(|(_, expires)| expires))
        .fetch_optional(&mut *tx)
        .await?;
        let found = match (inserted, idempotency_key) {
            (Some(id), _) => (id, false),
            (None, Some((key, _))) => (
                sqlx::query_scalar("SELECT id FROM batches WHERE environment = $1 AND idempotency_key = $2")
                    .bind(environment.as_str())
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?,
                true,
            ),
            (None, None) => return Err(StoreError::Corrupt(format!("batch {id} was not recorded"))),
        };
        tx.commit().await?;
        Ok(found)
    }

    /// Places recorded runs at their item indexes (0-based) of a streamed
    /// batch; a slot already taken keeps its run. Answers how many were
    /// placed.
    pub async fn place_batch_items(&self, id: &str, items: &[(i32, String)]) -> Result<u64, StoreError> {
        let (indexes, runs): (Vec<i32>, Vec<&str>) = items.iter().map(|(i, run)| (*i + 1, run.as_str())).unzip();
        let mut placed = 0;
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for (index, run) in indexes.iter().zip(runs) {
            placed += sqlx::query("UPDATE batches SET run_ids[$2] = $3 WHERE id = $1 AND run_ids[$2] IS NULL")
                .bind(id)
                .bind(index)
                .bind(run)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(placed)
    }

    /// The task of each of a batch's runs, in one query.
    pub async fn batch_run_tasks(
        &self,
        environment: Environment,
        run_ids: &[String],
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, task_identifier FROM runs WHERE id = ANY($1) AND environment = $2")
                .bind(run_ids)
                .bind(environment.as_str())
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    pub async fn get_batch(&self, environment: Environment, id: &str) -> Result<Option<BatchRow>, StoreError> {
        let sql = format!("{BATCH_SELECT} WHERE b.id = $1 AND b.environment = $2");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(environment.as_str())
            .fetch_optional(&self.pool)
            .await?)
    }
}
