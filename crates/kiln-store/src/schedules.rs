//! Cron schedules: creating, listing, changing them, and firing the due
//! ones. Firing locks each due row (`FOR UPDATE SKIP LOCKED`), records its
//! run and moves `next_run_at` on in one transaction: two kiln processes
//! never fire the same tick, and a crash between the two writes cannot
//! happen.

use chrono::{DateTime, Utc};
use kiln_core::auth::Environment;
use sqlx::AssertSqlSafe;

use crate::lifecycle::ReadyRun;
use crate::runs::{NewRun, insert_runs_on};
use crate::{Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: String,
    pub environment: String,
    /// `DECLARATIVE` (kiln's configuration) or `IMPERATIVE` (the API).
    pub kind: String,
    pub task_identifier: String,
    pub cron: String,
    pub timezone: String,
    pub external_id: Option<String>,
    pub deduplication_key: Option<String>,
    pub active: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SCHEDULE_COLUMNS: &str = "id, environment, kind, task_identifier, cron, timezone, external_id, \
    deduplication_key, active, next_run_at, last_run_at, created_at, updated_at";

/// A schedule to create, or the new settings of one.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub environment: Environment,
    pub task_identifier: String,
    pub cron: String,
    pub timezone: String,
    pub external_id: Option<String>,
    pub deduplication_key: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
}

/// What firing a due schedule makes: its run (none if the schedule cannot
/// make one any more) and its next tick.
#[derive(Debug)]
pub struct Firing {
    pub run: Option<NewRun>,
    pub next_run_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Creates a schedule; with a deduplication key already in use in the
    /// environment, updates that schedule instead (Trigger's upsert), if it
    /// is of the same kind. `None`: the key belongs to a schedule of the
    /// other kind (one kiln's configuration declares), which is unchanged.
    pub async fn upsert_schedule(
        &self,
        id: &str,
        kind: &str,
        spec: &ScheduleSpec,
    ) -> Result<Option<ScheduleRow>, StoreError> {
        let sql = format!(
            "INSERT INTO schedules (id, environment, kind, task_identifier, cron, timezone, external_id,
                 deduplication_key, next_run_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (environment, deduplication_key) WHERE deduplication_key IS NOT NULL
             DO UPDATE SET task_identifier = EXCLUDED.task_identifier, cron = EXCLUDED.cron,
                 timezone = EXCLUDED.timezone, external_id = EXCLUDED.external_id,
                 next_run_at = CASE WHEN schedules.active THEN EXCLUDED.next_run_at END,
                 updated_at = now()
             WHERE schedules.kind = EXCLUDED.kind
             RETURNING {SCHEDULE_COLUMNS}"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .bind(spec.environment.as_str())
            .bind(kind)
            .bind(&spec.task_identifier)
            .bind(&spec.cron)
            .bind(&spec.timezone)
            .bind(&spec.external_id)
            .bind(&spec.deduplication_key)
            .bind(spec.next_run_at)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn get_schedule(&self, environment: Environment, id: &str) -> Result<Option<ScheduleRow>, StoreError> {
        let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 AND environment = $2");
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .bind(environment.as_str())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// One page (1-based) of the environment's schedules, oldest first, and
    /// how many there are in all.
    pub async fn list_schedules(
        &self,
        environment: Environment,
        page: u32,
        per_page: u32,
    ) -> Result<(Vec<ScheduleRow>, i64), StoreError> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE environment = $1
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        );
        let offset = i64::from(page.saturating_sub(1)) * i64::from(per_page);
        let rows = sqlx::query_as(AssertSqlSafe(sql))
            .bind(environment.as_str())
            .bind(i64::from(per_page))
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM schedules WHERE environment = $1")
            .bind(environment.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok((rows, count))
    }

    /// Changes an imperative schedule's task, cron, time zone and external
    /// id. `None` when there is no such schedule.
    pub async fn update_schedule(&self, id: &str, spec: &ScheduleSpec) -> Result<Option<ScheduleRow>, StoreError> {
        let sql = format!(
            "UPDATE schedules SET task_identifier = $3, cron = $4, timezone = $5, external_id = $6,
                 next_run_at = CASE WHEN active THEN $7 END, updated_at = now()
             WHERE id = $1 AND environment = $2
             RETURNING {SCHEDULE_COLUMNS}"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .bind(spec.environment.as_str())
            .bind(&spec.task_identifier)
            .bind(&spec.cron)
            .bind(&spec.timezone)
            .bind(&spec.external_id)
            .bind(spec.next_run_at)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Activates (from `next_run_at`) or deactivates a schedule.
    pub async fn set_schedule_active(
        &self,
        environment: Environment,
        id: &str,
        next_run_at: Option<DateTime<Utc>>,
    ) -> Result<Option<ScheduleRow>, StoreError> {
        let sql = format!(
            "UPDATE schedules SET active = $3, next_run_at = $4, updated_at = now()
             WHERE id = $1 AND environment = $2
             RETURNING {SCHEDULE_COLUMNS}"
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .bind(environment.as_str())
            .bind(next_run_at.is_some())
            .bind(next_run_at)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Answers whether there was such a schedule.
    pub async fn delete_schedule(&self, environment: Environment, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM schedules WHERE id = $1 AND environment = $2")
            .bind(id)
            .bind(environment.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Makes kiln's own declarative schedules exactly `declared` (each
    /// keyed by its deduplication key, with `ids` for new ones): new ones
    /// created, changed ones updated, ones no longer declared deleted. The
    /// schedules task hosts declare (keys `host:…`) are theirs to keep.
    pub async fn sync_declarative_schedules(&self, declared: &[(String, ScheduleSpec)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // One sync at a time: processes starting together agree.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('kiln.declarative_schedules'))")
            .execute(&mut *tx)
            .await?;
        let keys: Vec<&str> = declared
            .iter()
            .filter_map(|(_, spec)| spec.deduplication_key.as_deref())
            .collect();
        sqlx::query(
            "DELETE FROM schedules WHERE kind = 'DECLARATIVE' AND NOT (deduplication_key = ANY($1))
                 AND deduplication_key NOT LIKE 'host:%'",
        )
        .bind(&keys)
        .execute(&mut *tx)
        .await?;
        for (id, spec) in declared {
            upsert_declared(&mut tx, id, spec).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Makes the schedules a task host declares for `task_ids` in
    /// `environment` exactly `declared` (keys `host:…`), as
    /// [`Store::sync_declarative_schedules`] does for kiln's own.
    pub async fn sync_host_schedules(
        &self,
        environment: Environment,
        task_ids: &[String],
        declared: &[(String, ScheduleSpec)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('kiln.declarative_schedules'))")
            .execute(&mut *tx)
            .await?;
        let keys: Vec<&str> = declared
            .iter()
            .filter_map(|(_, spec)| spec.deduplication_key.as_deref())
            .collect();
        sqlx::query(
            "DELETE FROM schedules WHERE kind = 'DECLARATIVE' AND environment = $1
                 AND task_identifier = ANY($2) AND deduplication_key LIKE 'host:%'
                 AND NOT (deduplication_key = ANY($3))",
        )
        .bind(environment.as_str())
        .bind(task_ids)
        .bind(&keys)
        .execute(&mut *tx)
        .await?;
        for (id, spec) in declared {
            upsert_declared(&mut tx, id, spec).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Fires up to `limit` due schedules: `plan` says, for each, what run
    /// to record and when it fires next. Answers the runs that are ready
    /// for the queue (the caller pushes them).
    pub async fn fire_due_schedules(
        &self,
        limit: i64,
        plan: impl Fn(&ScheduleRow) -> Firing,
    ) -> Result<Vec<ReadyRun>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules
             WHERE active AND next_run_at <= now()
             ORDER BY next_run_at LIMIT $1 FOR UPDATE SKIP LOCKED"
        );
        let due: Vec<ScheduleRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        if due.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut runs = Vec::with_capacity(due.len());
        let mut ids = Vec::with_capacity(due.len());
        let mut fired_at = Vec::with_capacity(due.len());
        let mut next = Vec::with_capacity(due.len());
        for schedule in &due {
            let firing = plan(schedule);
            ids.push(schedule.id.as_str());
            fired_at.push(schedule.next_run_at);
            next.push(firing.next_run_at);
            runs.extend(firing.run);
        }
        insert_runs_on(&mut *tx, &runs).await?;
        sqlx::query(
            "UPDATE schedules SET last_run_at = u.fired_at, next_run_at = u.next_run_at,
                 active = schedules.active AND u.next_run_at IS NOT NULL, updated_at = now()
             FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[]) AS u(id, fired_at, next_run_at)
             WHERE schedules.id = u.id",
        )
        .bind(&ids)
        .bind(&fired_at)
        .bind(&next)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(runs.iter().filter_map(NewRun::ready).collect())
    }
}

/// Records a declarative schedule, or updates the one holding its key. An
/// unchanged schedule keeps its next tick; a changed one starts from the
/// new one.
async fn upsert_declared(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: &str,
    spec: &ScheduleSpec,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO schedules (id, environment, kind, task_identifier, cron, timezone,
             deduplication_key, next_run_at)
         VALUES ($1, $2, 'DECLARATIVE', $3, $4, $5, $6, $7)
         ON CONFLICT (environment, deduplication_key) WHERE deduplication_key IS NOT NULL
         DO UPDATE SET task_identifier = EXCLUDED.task_identifier, cron = EXCLUDED.cron,
             timezone = EXCLUDED.timezone, updated_at = now(),
             next_run_at = CASE
                 WHEN (schedules.cron, schedules.timezone, schedules.task_identifier)
                      = (EXCLUDED.cron, EXCLUDED.timezone, EXCLUDED.task_identifier)
                      AND schedules.next_run_at IS NOT NULL
                 THEN schedules.next_run_at ELSE EXCLUDED.next_run_at END",
    )
    .bind(id)
    .bind(spec.environment.as_str())
    .bind(&spec.task_identifier)
    .bind(&spec.cron)
    .bind(&spec.timezone)
    .bind(&spec.deduplication_key)
    .bind(spec.next_run_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
