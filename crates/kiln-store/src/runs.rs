//! Recording, reading, listing and canceling runs.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use kiln_core::auth::Environment;
use kiln_core::options::RunSpec;
use kiln_core::status::sql_guard;
use kiln_core::{RunId, RunStatus};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder};

use crate::lifecycle::ReadyRun;
use crate::{Store, StoreError};

/// Trigger.dev keeps idempotency keys for 30 days unless told otherwise.
pub const DEFAULT_IDEMPOTENCY_TTL: chrono::Duration = chrono::Duration::days(30);

/// A run about to be recorded.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: RunId,
    pub environment: Environment,
    pub task_identifier: String,
    pub payload: Value,
    pub payload_type: String,
    pub spec: RunSpec,
    pub created_at: DateTime<Utc>,
    pub replayed_from: Option<String>,
    /// The run whose handler triggered this one.
    pub parent_run_id: Option<String>,
}

impl NewRun {
    pub fn initial_status(&self) -> RunStatus {
        if self.spec.delay_until.is_some() {
            RunStatus::Delayed
        } else {
            RunStatus::Queued
        }
    }

    /// The run's queue entry, when it is ready at once.
    pub fn ready(&self) -> Option<ReadyRun> {
        (self.initial_status() == RunStatus::Queued).then(|| ReadyRun {
            id: self.id.as_str().to_owned(),
            environment: self.environment.as_str().to_owned(),
            queue: self.spec.queue.clone(),
        })
    }
}

/// What a trigger did: recorded a new run, or found the run that already
/// holds its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerOutcome {
    Created,
    Cached { id: String },
}

/// What adding tags to a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagsAdded {
    /// This many tags were new.
    Added(usize),
    /// Nothing: the run would have had more than allowed.
    TooMany { current: usize },
}

/// A run as stored, everything the API shows.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub environment: String,
    pub task_identifier: String,
    pub queue: String,
    pub concurrency_key: Option<String>,
    pub status: String,
    pub payload: Value,
    pub payload_type: String,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub metadata: Option<Value>,
    pub tags: Vec<String>,
    pub idempotency_key: Option<String>,
    pub max_attempts: i32,
    pub attempt_count: i32,
    pub max_duration_ms: Option<i64>,
    pub ttl_ms: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub delay_until: Option<DateTime<Utc>>,
    pub replayed_from: Option<String>,
    pub parent_run_id: Option<String>,
    pub is_test: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl RunRow {
    pub fn status(&self) -> Result<RunStatus, StoreError> {
        self.status
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("run {} has status {:?}", self.id, self.status)))
    }
}

const RUN_COLUMNS: &str = "id, environment, task_identifier, queue, concurrency_key, status, payload, \
    payload_type, output, error, metadata, tags, idempotency_key, max_attempts, attempt_count, \
    max_duration_ms, ttl_ms, expires_at, delay_until, replayed_from, parent_run_id, is_test, created_at, \
    updated_at, started_at, completed_at";

/// Filters of `GET /api/v1/runs`; empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub statuses: Vec<RunStatus>,
    pub task_identifiers: Vec<String>,
    pub tags: Vec<String>,
    pub queues: Vec<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    /// Runs changed after this instant (realtime subscriptions).
    pub updated_after: Option<DateTime<Utc>>,
    pub is_test: Option<bool>,
    /// Runs one `batch.trigger` call made.
    pub batch_id: Option<String>,
    /// Runs a schedule fired (their payload names it as `scheduleId`).
    pub schedule_id: Option<String>,
    /// Runs older than this id (the next page, newest first).
    pub after: Option<String>,
    /// Runs newer than this id (the previous page).
    pub before: Option<String>,
    pub limit: u32,
}

/// One page of a listing, newest first, and the runs its neighbours start
/// after: `older` (the next page, `filter.after`) and `newer` (the
/// previous one, `filter.before`).
#[derive(Debug, Clone)]
pub struct RunPage {
    pub runs: Vec<RunRow>,
    pub older: Option<String>,
    pub newer: Option<String>,
}

impl RunPage {
    /// The page in what [`Store::list_runs`] answered for `filter` (up to
    /// `limit + 1` rows). Coming back from an older page, there is always
    /// an older page again.
    pub fn of(mut rows: Vec<RunRow>, filter: &ListFilter) -> Self {
        let limit = filter.limit as usize;
        let more = rows.len() > limit;
        let going_back = filter.before.is_some();
        if more {
            if going_back {
                rows.remove(0);
            } else {
                rows.truncate(limit);
            }
        }
        let older = (more || going_back)
            .then(|| rows.last())
            .flatten()
            .map(|run| run.id.clone());
        let newer = (filter.after.is_some() || (going_back && more))
            .then(|| rows.first())
            .flatten()
            .map(|run| run.id.clone());
        Self {
            runs: rows,
            older,
            newer,
        }
    }
}

/// The conditions of a listing on `runs`' own columns, unqualified (they
/// name no column of `run_tags`, so they read the same beside it).
pub(crate) fn push_run_conditions(query: &mut QueryBuilder<Postgres>, environment: Environment, filter: &ListFilter) {
    query.push("environment = ").push_bind(environment.as_str());
    match filter.statuses.as_slice() {
        [] => {}
        // One status as an equality: the planner then reads the partial
        // index on rare statuses in id order (with `= ANY` it walks the
        // primary key instead, through the whole history when the status
        // is rare).
        [status] => {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        statuses => {
            let statuses: Vec<&'static str> = statuses.iter().map(|s| s.as_str()).collect();
            query.push(" AND status = ANY(").push_bind(statuses).push(")");
        }
    }
    if !filter.task_identifiers.is_empty() {
        query
            .push(" AND task_identifier = ANY(")
            .push_bind(filter.task_identifiers.clone())
            .push(")");
    }
    if !filter.queues.is_empty() {
        query
            .push(" AND queue = ANY(")
            .push_bind(filter.queues.clone())
            .push(")");
    }
    if let Some(from) = filter.created_from {
        query.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(after) = filter.updated_after {
        query.push(" AND updated_at > ").push_bind(after);
    }
    if let Some(to) = filter.created_to {
        query.push(" AND created_at <= ").push_bind(to);
    }
    if let Some(is_test) = filter.is_test {
        query.push(" AND is_test = ").push_bind(is_test);
    }
    if let Some(batch) = &filter.batch_id {
        query
            // COALESCE makes the sub-select one array, not a set of them.
            .push(" AND id = ANY(COALESCE((SELECT b.run_ids FROM batches b WHERE b.id = ")
            .push_bind(batch.clone())
            .push(" AND b.environment = ")
            .push_bind(environment.as_str())
            .push("), '{}'::text[]))");
    }
    if let Some(schedule) = &filter.schedule_id {
        // The same expression as the `runs_by_schedule` partial index's.
        query
            .push(" AND payload ? 'scheduleId' AND payload->>'scheduleId' = ")
            .push_bind(schedule.clone());
    }
}

fn millis(duration: Option<std::time::Duration>) -> Option<i64> {
    duration.and_then(|d| i64::try_from(d.as_millis()).ok())
}

impl Store {
    /// Records runs without idempotency keys in one statement (the group
    /// commit path). All or nothing.
    pub async fn insert_runs(&self, runs: &[NewRun]) -> Result<(), StoreError> {
        insert_runs_on(&self.keyed, runs).await
    }

    /// Records a run that carries an idempotency key, or finds the live run
    /// that holds the key. A key past its TTL is released first.
    pub async fn insert_idempotent_run(&self, run: &NewRun) -> Result<TriggerOutcome, StoreError> {
        let Some(key) = run.spec.idempotency_key.as_deref() else {
            self.insert_runs(std::slice::from_ref(run)).await?;
            return Ok(TriggerOutcome::Created);
        };
        let key_expires_at = run.created_at
            + run
                .spec
                .idempotency_key_ttl
                .and_then(|ttl| chrono::Duration::from_std(ttl).ok())
                .unwrap_or(DEFAULT_IDEMPOTENCY_TTL);
        // Two tries: a concurrent trigger with the same key may insert
        // between our look-up and our insert; the second look-up finds it.
        for _ in 0..2 {
            let mut tx = self.pool.begin().await?;
            let existing: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
                "SELECT id, idempotency_key_expires_at FROM runs
                 WHERE environment = $1 AND task_identifier = $2 AND idempotency_key = $3
                 FOR UPDATE",
            )
            .bind(run.environment.as_str())
            .bind(&run.task_identifier)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            match existing {
                Some((id, expires)) if expires.is_none_or(|at| at > run.created_at) => {
                    tx.commit().await?;
                    return Ok(TriggerOutcome::Cached { id });
                }
                Some((id, _)) => {
                    sqlx::query("UPDATE runs SET idempotency_key = NULL, updated_at = now() WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {}
            }
            let inserted = sqlx::query(
                "INSERT INTO runs (id, environment, task_identifier, queue, concurrency_key, status,
                     payload, payload_type, metadata, tags, idempotency_key, idempotency_key_expires_at,
                     max_attempts, max_duration_ms, ttl_ms, expires_at, delay_until, dispatch_at,
                     enqueued_at, replayed_from, is_test, created_at, updated_at, parent_run_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     $17, $17, CASE WHEN $6 = 'QUEUED' THEN $20 END, $18, $19, $20, $20, $21)
                 ON CONFLICT (environment, task_identifier, idempotency_key)
                     WHERE idempotency_key IS NOT NULL DO NOTHING",
            )
            .bind(run.id.as_str())
            .bind(run.environment.as_str())
            .bind(&run.task_identifier)
            .bind(&run.spec.queue)
            .bind(&run.spec.concurrency_key)
            .bind(run.initial_status().as_str())
            .bind(&run.payload)
            .bind(&run.payload_type)
            .bind(&run.spec.metadata)
            .bind(&run.spec.tags)
            .bind(key)
            .bind(key_expires_at)
            .bind(run.spec.max_attempts as i32)
            .bind(millis(run.spec.max_duration))
            .bind(millis(run.spec.ttl))
            .bind(run.spec.expires_at(run.created_at))
            .bind(run.spec.delay_until)
            .bind(&run.replayed_from)
            .bind(run.spec.is_test)
            .bind(run.created_at)
            .bind(&run.parent_run_id)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                sqlx::query("INSERT INTO run_tags (tag, run_id) SELECT DISTINCT unnest($1::text[]), $2")
                    .bind(&run.spec.tags)
                    .bind(run.id.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(TriggerOutcome::Created);
            }
            tx.rollback().await?;
        }
        Err(StoreError::Corrupt(format!(
            "idempotency key for task {} is contended",
            run.task_identifier
        )))
    }

    pub async fn get_run(&self, environment: Environment, id: &str) -> Result<Option<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND environment = $2");
        Ok(sqlx::query_as::<_, RunRow>(AssertSqlSafe(sql))
            .bind(id)
            .bind(environment.as_str())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The run's parent (when a handler triggered it) and the runs its own
    /// handler triggered, oldest first (at most 100).
    pub async fn related_runs(
        &self,
        environment: Environment,
        run: &RunRow,
    ) -> Result<(Option<RunRow>, Vec<RunRow>), StoreError> {
        let parent = match &run.parent_run_id {
            Some(id) => self.get_run(environment, id).await?,
            None => None,
        };
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = $1 AND environment = $2 ORDER BY id LIMIT 100"
        );
        let children = sqlx::query_as::<_, RunRow>(AssertSqlSafe(sql))
            .bind(&run.id)
            .bind(environment.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok((parent, children))
    }

    /// Newest first. Returns up to `limit + 1` rows so the caller can tell
    /// whether another page follows.
    ///
    /// With a tag filter, each tag's runs are walked in id order through
    /// `run_tags`' own index and joined to `runs` one by one, up to a page
    /// per tag; the page is the newest of those. Filtering while walking
    /// `runs` newest first instead reads every newer run without the tag:
    /// a tag whose runs are all older than a million untagged ones made
    /// each listing read a million rows.
    pub async fn list_runs(&self, environment: Environment, filter: &ListFilter) -> Result<Vec<RunRow>, StoreError> {
        let limit = i64::from(filter.limit) + 1;
        // Newest first, or (for the previous page) oldest first and
        // reversed after.
        let (cursor, newest_first) = match (&filter.before, &filter.after) {
            (Some(before), _) => (Some((" > ", before)), false),
            (None, Some(after)) => (Some((" < ", after)), true),
            (None, None) => (None, true),
        };
        let order = if newest_first { " DESC" } else { " ASC" };
        let mut query: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE "));
        if filter.tags.is_empty() {
            push_run_conditions(&mut query, environment, filter);
            if let Some((operator, id)) = cursor {
                query.push(" AND id").push(operator).push_bind(id.clone());
            }
        } else {
            query
                .push("id IN (SELECT page.run_id FROM unnest(")
                .push_bind(filter.tags.clone())
                .push(
                    "::text[]) AS wanted(tag) CROSS JOIN LATERAL (
                     SELECT run_tags.run_id FROM run_tags JOIN runs ON runs.id = run_tags.run_id
                     WHERE run_tags.tag = wanted.tag AND ",
                );
            push_run_conditions(&mut query, environment, filter);
            if let Some((operator, id)) = cursor {
                query.push(" AND run_tags.run_id").push(operator).push_bind(id.clone());
            }
            query
                .push(" ORDER BY run_tags.run_id")
                .push(order)
                .push(" LIMIT ")
                .push_bind(limit)
                .push(") AS page)");
        }
        query.push(" ORDER BY id").push(order).push(" LIMIT ").push_bind(limit);
        let mut rows = query.build_query_as::<RunRow>().fetch_all(&self.pool).await?;
        if !newest_first {
            rows.reverse();
        }
        Ok(rows)
    }

    /// Cancels a run that has not ended. Returns the run's status after the
    /// call, or `None` when there is no such run. A run that already ended
    /// keeps its status.
    pub async fn cancel_run(&self, environment: Environment, id: &str) -> Result<Option<RunStatus>, StoreError> {
        static CANCEL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE runs SET status = 'CANCELED', completed_at = now(), updated_at = now(),
                     dispatch_at = NULL, lease_expires_at = NULL, parked = false
                 WHERE id = $1 AND environment = $2 AND status IN {}
                 RETURNING queue, concurrency_key",
                sql_guard("Store::cancel_run", RunStatus::Canceled)
            )
        });
        let canceled: Option<(String, Option<String>)> = sqlx::query_as(AssertSqlSafe(CANCEL.as_str()))
            .bind(id)
            .bind(environment.as_str())
            .fetch_optional(&self.pool)
            .await?;
        if let Some((queue, concurrency_key)) = canceled {
            // A canceled executing run frees its concurrency slot.
            self.unpark_after_release(&[(environment.as_str().to_owned(), queue, concurrency_key)])
                .await?;
            return Ok(Some(RunStatus::Canceled));
        }
        match self.get_run(environment, id).await? {
            Some(row) => Ok(Some(row.status()?)),
            None => Ok(None),
        }
    }

    /// Moves a DELAYED run's start to `delay_until` (its ttl, if any, counts
    /// from there). Returns the run after the call, or `None` when there is
    /// no such run; a run that is not DELAYED is returned unchanged.
    pub async fn reschedule_run(
        &self,
        environment: Environment,
        id: &str,
        delay_until: DateTime<Utc>,
    ) -> Result<Option<(bool, RunRow)>, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET delay_until = $3, dispatch_at = $3, updated_at = now(),
                 expires_at = CASE WHEN ttl_ms IS NULL THEN NULL ELSE $3 + ttl_ms * interval '1 millisecond' END
             WHERE id = $1 AND environment = $2 AND status = 'DELAYED'",
        )
        .bind(id)
        .bind(environment.as_str())
        .bind(delay_until)
        .execute(&self.pool)
        .await?;
        Ok(self
            .get_run(environment, id)
            .await?
            .map(|row| (done.rows_affected() == 1, row)))
    }

    /// Adds tags to a run, keeping at most `max` in all; `None` when there
    /// is no such run.
    pub async fn add_tags(
        &self,
        environment: Environment,
        id: &str,
        tags: &[String],
        max: usize,
    ) -> Result<Option<TagsAdded>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current: Option<Vec<String>> =
            sqlx::query_scalar("SELECT tags FROM runs WHERE id = $1 AND environment = $2 FOR UPDATE")
                .bind(id)
                .bind(environment.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(mut current) = current else {
            return Ok(None);
        };
        let new: Vec<String> = tags
            .iter()
            .filter(|t| !current.contains(t))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if current.len() + new.len() > max {
            return Ok(Some(TagsAdded::TooMany { current: current.len() }));
        }
        current.extend(new.iter().cloned());
        sqlx::query("UPDATE runs SET tags = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(&current)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO run_tags (tag, run_id) SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING")
            .bind(&new)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(TagsAdded::Added(new.len())))
    }

    /// Sets (or, with `None`, lifts) a queue's concurrency limit.
    /// A trigger's `queue.concurrencyLimit` for a queue of `environment`.
    /// A limit the operator declared ([`Store::declare_queue_limit`]) is
    /// kept: a trigger cannot change it.
    pub async fn set_queue_limit(&self, environment: Environment, queue: &str, limit: u32) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO queues (environment, name, concurrency_limit) VALUES ($1, $2, $3)
             ON CONFLICT (environment, name) DO UPDATE SET concurrency_limit = EXCLUDED.concurrency_limit, updated_at = now()
             -- Unchanged limits take no row lock: triggers do not queue up here.
             WHERE NOT queues.declared AND queues.concurrency_limit IS DISTINCT FROM EXCLUDED.concurrency_limit",
        )
        .bind(environment.as_str())
        .bind(queue)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The operator's limit for a queue (`None`: unlimited), in both
    /// environments; triggers cannot change it afterwards.
    pub async fn declare_queue_limit(&self, queue: &str, limit: Option<u32>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO queues (environment, name, concurrency_limit, declared)
             SELECT environment, $1, $2, true FROM UNNEST(ARRAY['dev', 'prod']) AS e(environment)
             ON CONFLICT (environment, name) DO UPDATE
                 SET concurrency_limit = EXCLUDED.concurrency_limit, declared = true, updated_at = now()",
        )
        .bind(queue)
        .bind(limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX)))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every queue name that has a concurrency limit, or is paused, in some
    /// environment, with its largest limit (0 paused): runs of these queues
    /// are claimed one by one, counting slots in their own environment.
    pub async fn limited_queues(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let rows: Vec<(String, i32)> = sqlx::query_as(
            "SELECT name, max(CASE WHEN paused THEN 0 ELSE COALESCE(concurrency_limit, 2147483647) END)::int4
             FROM queues WHERE concurrency_limit IS NOT NULL OR paused GROUP BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, limit)| (name, limit.max(0) as u32))
            .collect())
    }
}

/// [`Store::insert_runs`] on any connection or transaction.
pub(crate) async fn insert_runs_on<'e>(executor: impl sqlx::PgExecutor<'e>, runs: &[NewRun]) -> Result<(), StoreError> {
    let mut ids = Vec::with_capacity(runs.len());
    let mut environments = Vec::with_capacity(runs.len());
    let mut tasks = Vec::with_capacity(runs.len());
    let mut queues = Vec::with_capacity(runs.len());
    let mut concurrency_keys = Vec::with_capacity(runs.len());
    let mut statuses = Vec::with_capacity(runs.len());
    let mut payloads = Vec::with_capacity(runs.len());
    let mut payload_types = Vec::with_capacity(runs.len());
    let mut metadata = Vec::with_capacity(runs.len());
    let mut tags = Vec::with_capacity(runs.len());
    let mut max_attempts = Vec::with_capacity(runs.len());
    let mut max_durations = Vec::with_capacity(runs.len());
    let mut ttls = Vec::with_capacity(runs.len());
    let mut expiries = Vec::with_capacity(runs.len());
    let mut delays = Vec::with_capacity(runs.len());
    let mut replayed_from = Vec::with_capacity(runs.len());
    let mut parents = Vec::with_capacity(runs.len());
    let mut is_test = Vec::with_capacity(runs.len());
    let mut created = Vec::with_capacity(runs.len());
    for run in runs {
        ids.push(run.id.as_str());
        environments.push(run.environment.as_str());
        tasks.push(run.task_identifier.as_str());
        queues.push(run.spec.queue.as_str());
        concurrency_keys.push(run.spec.concurrency_key.as_deref());
        statuses.push(run.initial_status().as_str());
        payloads.push(&run.payload);
        payload_types.push(run.payload_type.as_str());
        metadata.push(run.spec.metadata.as_ref());
        tags.push(Value::from(run.spec.tags.clone()));
        max_attempts.push(run.spec.max_attempts as i32);
        max_durations.push(millis(run.spec.max_duration));
        ttls.push(millis(run.spec.ttl));
        expiries.push(run.spec.expires_at(run.created_at));
        delays.push(run.spec.delay_until);
        replayed_from.push(run.replayed_from.as_deref());
        parents.push(run.parent_run_id.as_deref());
        is_test.push(run.spec.is_test);
        created.push(run.created_at);
    }
    // A run's tags are copied into `run_tags` in the same statement. Most
    // runs have none, and then the statement skips that copy, the per-row
    // array conversion and the CTE that would hold every inserted row.
    let any_tags = runs.iter().any(|run| !run.spec.tags.is_empty());
    let (with, tags_value, then) = if any_tags {
        (
            "WITH inserted AS (",
            "ARRAY(SELECT jsonb_array_elements_text(u.tags))",
            " RETURNING id, tags)
             INSERT INTO run_tags (tag, run_id) SELECT DISTINCT unnest(tags), id FROM inserted",
        )
    } else {
        ("", "'{}'::text[]", "")
    };
    sqlx::query(AssertSqlSafe(format!(
        "{with}
         INSERT INTO runs (id, environment, task_identifier, queue, concurrency_key, status,
             payload, payload_type, metadata, tags, max_attempts, max_duration_ms, ttl_ms,
             expires_at, delay_until, dispatch_at, enqueued_at, replayed_from, is_test, created_at, updated_at,
             parent_run_id)
         SELECT u.id, u.environment, u.task, u.queue, u.concurrency_key, u.status,
             u.payload, u.payload_type, u.metadata, {tags_value}, u.max_attempts, u.max_duration_ms,
             u.ttl_ms, u.expires_at, u.delay_until, u.delay_until,
             -- Ready runs are pushed right after this insert; a run the
             -- push does not take is marked back (see `unmark_enqueued`).
             CASE WHEN u.status = 'QUEUED' THEN u.created_at END,
             u.replayed_from, u.is_test, u.created_at, u.created_at, u.parent_run_id
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
             $7::jsonb[], $8::text[], $9::jsonb[], $10::jsonb[], $11::int4[], $12::int8[],
             $13::int8[], $14::timestamptz[], $15::timestamptz[], $16::text[], $17::bool[],
             $18::timestamptz[], $19::text[])
           AS u(id, environment, task, queue, concurrency_key, status, payload, payload_type,
             metadata, tags, max_attempts, max_duration_ms, ttl_ms, expires_at, delay_until,
             replayed_from, is_test, created_at, parent_run_id){then}"
    )))
    .bind(&ids)
    .bind(&environments)
    .bind(&tasks)
    .bind(&queues)
    .bind(&concurrency_keys)
    .bind(&statuses)
    .bind(&payloads)
    .bind(&payload_types)
    .bind(&metadata)
    .bind(&tags)
    .bind(&max_attempts)
    .bind(&max_durations)
    .bind(&ttls)
    .bind(&expiries)
    .bind(&delays)
    .bind(&replayed_from)
    .bind(&is_test)
    .bind(&created)
    .bind(&parents)
    .execute(executor)
    .await?;
    Ok(())
}
