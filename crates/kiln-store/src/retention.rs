//! Retention: finished runs older than the retention period are deleted,
//! with their tags (by cascade), and batches whose runs are all gone. Each
//! statement deletes at most a batch of rows, found through the primary key
//! (run ids sort by creation time) and skipping rows another transaction
//! holds, so a sweep never holds long locks, never waits for a trigger or a
//! claim, and costs the same at any history size. Runs that have not
//! finished (DELAYED, QUEUED, EXECUTING, …) are never deleted, however old.

use chrono::{DateTime, Utc};
use kiln_core::RunId;
use kiln_core::RunStatus;

use crate::{Store, StoreError};

/// What one statement of a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub runs: u64,
    pub batches: u64,
}

impl Store {
    /// Deletes up to `limit` runs that finished before `cutoff` (and were
    /// created before it), then up to `limit` batches created before it
    /// whose runs are all gone.
    pub async fn delete_finished_before(&self, cutoff: DateTime<Utc>, limit: i64) -> Result<Deleted, StoreError> {
        let final_statuses: Vec<&str> = RunStatus::ALL
            .iter()
            .filter(|status| status.is_final())
            .map(|status| status.as_str())
            .collect();
        let below = RunId::lower_bound(u64::try_from(cutoff.timestamp_millis()).unwrap_or(0));
        let runs = sqlx::query(
            "WITH doomed AS (
                 SELECT id FROM runs
                 WHERE id < $1 AND status = ANY($2) AND COALESCE(completed_at, updated_at) < $3
                 ORDER BY id LIMIT $4
                 FOR UPDATE SKIP LOCKED
             )
             DELETE FROM runs USING doomed WHERE runs.id = doomed.id",
        )
        .bind(&below)
        .bind(&final_statuses)
        .bind(cutoff)
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let batches = sqlx::query(
            "WITH doomed AS (
                 SELECT id FROM batches
                 WHERE created_at < $1
                   AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = ANY(batches.run_ids))
                 ORDER BY created_at LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             DELETE FROM batches USING doomed WHERE batches.id = doomed.id",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(Deleted { runs, batches })
    }
}
