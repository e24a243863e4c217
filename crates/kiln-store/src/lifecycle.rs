//! What workers and the scheduler do to runs. Each transition checks the
//! status it expects, so it is a no-op when something else got there first
//! (a cancel, a duplicate delivery, another kiln process's scheduler).

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_core::RunStatus;
use kiln_core::status::sql_guard;
use serde_json::Value;
// Statements here are assembled only from the constant fragments below.
use sqlx::AssertSqlSafe;

use crate::{Store, StoreError};

/// A run that is ready for the queue: push `id` onto its environment's
/// `queue`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReadyRun {
    pub id: String,
    pub environment: String,
    pub queue: String,
}

/// A run a worker now holds the lease of.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedRun {
    pub id: String,
    pub task_identifier: String,
    pub queue: String,
    pub concurrency_key: Option<String>,
    pub payload: Value,
    /// The attempt this claim starts, 1-based.
    pub attempt_count: i32,
    pub max_attempts: i32,
    pub max_duration_ms: Option<i64>,
    /// The metadata the run carries so far (from its trigger, or an earlier
    /// attempt).
    pub metadata: Option<Value>,
    /// `dev` or `prod`: where the run's children are recorded.
    pub environment: String,
    /// When this attempt started (a claim: when the run first started).
    pub started_at: DateTime<Utc>,
    /// Popped before by a worker that did not finish it: see
    /// [`Store::peek_runs`].
    pub redelivered: bool,
    /// When the run became ready to start: created, or due after its delay.
    pub ready_at: DateTime<Utc>,
}

/// A run a worker started without recording it (see
/// [`Store::peek_runs`]), to be recorded EXECUTING now.
#[derive(Debug, Clone)]
pub struct StartedRun {
    pub id: String,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub metadata: Option<Value>,
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub attempt: i32,
    pub result: AttemptResult,
    /// The run's metadata as the attempt left it; `None` keeps what is
    /// recorded.
    pub metadata: Option<Value>,
    /// Whether the attempt was recorded EXECUTING; if not, the run is still
    /// QUEUED at the previous attempt and goes straight to its outcome.
    pub claimed: bool,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum AttemptResult {
    Completed {
        output: Value,
    },
    /// Failed, with another attempt after `retry_in`.
    Retry {
        error: Value,
        retry_in: Duration,
    },
    /// Ended for good with `status` (FAILED, TIMED_OUT, SYSTEM_FAILURE…).
    Ended {
        status: RunStatus,
        error: Value,
    },
    /// The worker is shutting down: the attempt did not count.
    HandBack,
}

impl AttemptResult {
    /// How the attempt ended, in a word: the run's next status, or
    /// `HANDED_BACK`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Completed { .. } => RunStatus::Completed.as_str(),
            Self::Retry { .. } => "RETRYING",
            Self::Ended { status, .. } => status.as_str(),
            Self::HandBack => "HANDED_BACK",
        }
    }
}

/// A slot in an (environment, queue, concurrency key) was released.
type Released = (String, String, Option<String>);

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

const CLAIM_SET: &str = "status = 'EXECUTING', attempt_count = runs.attempt_count + 1,
    started_at = COALESCE(runs.started_at, now()), updated_at = now(),
    lease_expires_at = now() + $2 * interval '1 millisecond', worker_id = $3";

const CLAIM_RETURNING: &str = "RETURNING runs.id, runs.task_identifier, runs.queue, runs.concurrency_key,
    runs.payload, runs.attempt_count, runs.max_attempts, runs.max_duration_ms, runs.metadata, runs.environment,
    runs.started_at, runs.redelivered, GREATEST(runs.created_at, runs.delay_until) AS ready_at";

/// A run a worker started without recording it (attempt `u.attempt`) is
/// still as it was then: queued at the previous attempt, not backing off,
/// not parked. Guards both its record and its outcome.
const STARTED_UNRECORDED: &str = "(runs.status = 'QUEUED') IS TRUE AND runs.attempt_count = u.attempt - 1
    AND runs.dispatch_at IS NULL AND NOT runs.parked";

/// No limit on the run's queue: such runs are claimed without counting.
const UNLIMITED_QUEUE: &str = "NOT EXISTS (SELECT 1 FROM queues q
    WHERE q.environment = runs.environment AND q.name = runs.queue AND (q.concurrency_limit IS NOT NULL OR q.paused))";

/// The distinct lanes (environment, queue) of runs matching `predicate`,
/// found by skipping through an index one lane at a time (a loose index
/// scan): a backlog of 100,000 runs in a few queues costs a few index
/// probes, not a scan.
fn distinct_lanes_where(predicate: &str) -> String {
    format!(
        "WITH RECURSIVE q(environment, queue) AS (
            (SELECT environment, queue FROM runs r WHERE {predicate} ORDER BY environment, queue LIMIT 1)
            UNION ALL
            SELECT n.environment, n.queue FROM q CROSS JOIN LATERAL (
                SELECT r.environment, r.queue FROM runs r
                WHERE {predicate} AND (r.environment, r.queue) > (q.environment, q.queue)
                ORDER BY r.environment, r.queue LIMIT 1) n)"
    )
}

/// Ready runs that are not in Redis: the predicate of the partial index
/// `runs_awaiting_push`, so those look-ups read only the backlog.
const AWAITING_PUSH: &str = "r.status = 'QUEUED' AND r.enqueued_at IS NULL AND r.dispatch_at IS NULL AND NOT r.parked";

/// Queued runs whose id was pushed: the predicate of `runs_pushed`.
const PUSHED: &str = "r.status = 'QUEUED' AND r.enqueued_at IS NOT NULL";

// Statements find runs by id with `id = ANY(…)`, a list of ids or an
// array made by a subquery, never by a join alone. Postgres may plan a
// statement while `runs` looks empty (a fresh install; statistics lagging
// with autovacuum off), and a generic plan made then is kept for the
// connection's life: a join on `runs.id = x.id` was then planned as a scan
// of every row of the primary key, for each execution. `id = ANY(…)` is an
// index condition in every plan.
//
// Those statements check that a run is still queued as
// `(status = 'QUEUED') IS TRUE`, the same test for a column that is never
// NULL, which no partial index's predicate can be proved from. A bare
// `status = 'QUEUED'` matches `runs_queued`, whose only condition it is,
// and a plan made on an empty table found a walk through that whole index,
// filtering on the ids, cheaper than the primary key: every claim and every
// refused push then read the whole backlog (tests/e2e/plans.rs).

/// A claimable run: queued, not waiting for a back-off, not parked, and
/// (before its first attempt) not past its ttl.
const CLAIMABLE: &str = "(runs.status = 'QUEUED') IS TRUE AND runs.dispatch_at IS NULL AND NOT runs.parked
    AND (runs.expires_at IS NULL OR runs.attempt_count > 0 OR runs.expires_at > now())";

impl Store {
    /// Claims runs of queues without a concurrency limit, all in one
    /// statement. Ids that are not claimable, or whose queue has a limit
    /// (see [`Store::claim_limited_run`]), are left out of the answer.
    pub async fn claim_runs(
        &self,
        ids: &[String],
        lease: Duration,
        worker: &str,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let sql = format!(
            "UPDATE runs SET {CLAIM_SET} WHERE runs.id = ANY($1) AND {CLAIMABLE} AND {UNLIMITED_QUEUE} {CLAIM_RETURNING}"
        );
        Ok(sqlx::query_as::<_, ClaimedRun>(AssertSqlSafe(sql))
            .bind(ids)
            .bind(ms(lease))
            .bind(worker)
            .fetch_all(&self.relaxed)
            .await?)
    }

    /// Reads runs of queues without a concurrency limit as a claim would
    /// answer them (the attempt they would start, started now), without
    /// writing anything. A worker starts them at once and records them
    /// EXECUTING with [`Store::claim_started`] only if they are still
    /// running a moment later; most short runs go from QUEUED straight to
    /// their outcome, one row version fewer. Ids that are not claimable, or
    /// whose queue has a limit, are left out.
    pub async fn peek_runs(&self, ids: &[String]) -> Result<Vec<ClaimedRun>, StoreError> {
        let sql = format!(
            "SELECT runs.id, runs.task_identifier, runs.queue, runs.concurrency_key, runs.payload,
                 runs.attempt_count + 1 AS attempt_count, runs.max_attempts, runs.max_duration_ms,
                 runs.metadata, runs.environment, now() AS started_at, runs.redelivered,
                 GREATEST(runs.created_at, runs.delay_until) AS ready_at
             FROM runs WHERE runs.id = ANY($1) AND {CLAIMABLE} AND {UNLIMITED_QUEUE}"
        );
        Ok(sqlx::query_as::<_, ClaimedRun>(AssertSqlSafe(sql))
            .bind(ids)
            .fetch_all(&self.keyed)
            .await?)
    }

    /// Records runs started from [`Store::peek_runs`] as EXECUTING at
    /// their attempt, with a lease and the metadata they have so far.
    /// Answers the ids recorded; the others were canceled, expired or
    /// started elsewhere meanwhile, and their attempt must stop.
    pub async fn claim_started(
        &self,
        runs: &[StartedRun],
        lease: Duration,
        worker: &str,
    ) -> Result<Vec<String>, StoreError> {
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        let attempts: Vec<i32> = runs.iter().map(|r| r.attempt).collect();
        let started: Vec<DateTime<Utc>> = runs.iter().map(|r| r.started_at).collect();
        let metadata: Vec<Option<&Value>> = runs.iter().map(|r| r.metadata.as_ref()).collect();
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "UPDATE runs SET status = 'EXECUTING', attempt_count = u.attempt,
                 started_at = COALESCE(runs.started_at, u.started_at), updated_at = now(),
                 lease_expires_at = now() + $5 * interval '1 millisecond', worker_id = $6,
                 metadata = COALESCE(u.metadata, runs.metadata)
             FROM UNNEST($1::text[], $2::int4[], $3::timestamptz[], $4::jsonb[]) AS u(id, attempt, started_at, metadata)
             WHERE runs.id = ANY($1) AND runs.id = u.id AND {STARTED_UNRECORDED}
             RETURNING runs.id"
        )))
        .bind(&ids)
        .bind(&attempts)
        .bind(&started)
        .bind(&metadata)
        .bind(ms(lease))
        .bind(worker)
        .fetch_all(&self.relaxed)
        .await?)
    }

    /// Claims one run of a queue with a concurrency limit, if its queue (and
    /// concurrency key) has a free slot; otherwise parks it until a slot
    /// frees. An advisory lock per queue makes count-then-claim atomic
    /// across kiln processes.
    pub async fn claim_limited_run(
        &self,
        id: &str,
        queue: &str,
        lease: Duration,
        worker: &str,
    ) -> Result<Option<ClaimedRun>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('kiln.queue:' || $1))")
            .bind(queue)
            .execute(&mut *tx)
            .await?;
        let sql = format!(
            "UPDATE runs SET {CLAIM_SET} WHERE runs.id = $1 AND {CLAIMABLE}
               AND (SELECT count(*) FROM runs busy
                    WHERE busy.status = 'EXECUTING' AND busy.queue = runs.queue
                      AND busy.environment = runs.environment
                      AND busy.concurrency_key IS NOT DISTINCT FROM runs.concurrency_key)
                 < COALESCE((SELECT CASE WHEN paused THEN 0 ELSE concurrency_limit END FROM queues
                             WHERE environment = runs.environment AND name = runs.queue), 2147483647)
             {CLAIM_RETURNING}"
        );
        let claimed = sqlx::query_as::<_, ClaimedRun>(AssertSqlSafe(sql))
            .bind(id)
            .bind(ms(lease))
            .bind(worker)
            .fetch_optional(&mut *tx)
            .await?;
        if claimed.is_none() {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE runs SET parked = true WHERE runs.id = $1 AND {CLAIMABLE}"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Which of `ids` are claimable runs of a queue with a limit.
    pub async fn limited_among(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT runs.id FROM runs JOIN queues q ON q.environment = runs.environment AND q.name = runs.queue
             WHERE runs.id = ANY($1) AND (q.concurrency_limit IS NOT NULL OR q.paused) AND {CLAIMABLE}"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Extends the leases of runs this worker still executes; answers the
    /// ids that are no longer executing here (canceled, or taken over), so
    /// the worker can stop them.
    pub async fn renew_leases(&self, ids: &[String], lease: Duration, worker: &str) -> Result<Vec<String>, StoreError> {
        let renewed: Vec<(String,)> = sqlx::query_as(
            "UPDATE runs SET lease_expires_at = now() + $2 * interval '1 millisecond'
             WHERE id = ANY($1) AND status = 'EXECUTING' AND worker_id = $3 RETURNING id",
        )
        .bind(ids)
        .bind(ms(lease))
        .bind(worker)
        .fetch_all(&self.relaxed)
        .await?;
        let still: std::collections::HashSet<&str> = renewed.iter().map(|(id,)| id.as_str()).collect();
        Ok(ids.iter().filter(|id| !still.contains(id.as_str())).cloned().collect())
    }

    /// Records finished attempts in one statement. Answers, per outcome,
    /// whether it was recorded (false: the run had been canceled or taken
    /// over meanwhile, and keeps its status).
    pub async fn finish_attempts(&self, outcomes: &[Outcome]) -> Result<Vec<bool>, StoreError> {
        let mut ids = Vec::with_capacity(outcomes.len());
        let mut attempts = Vec::with_capacity(outcomes.len());
        let mut statuses = Vec::with_capacity(outcomes.len());
        let mut outputs: Vec<Option<&Value>> = Vec::with_capacity(outcomes.len());
        let mut errors: Vec<Option<&Value>> = Vec::with_capacity(outcomes.len());
        let mut retry_in_ms: Vec<Option<i64>> = Vec::with_capacity(outcomes.len());
        let mut hand_back = Vec::with_capacity(outcomes.len());
        let mut metadata: Vec<Option<&Value>> = Vec::with_capacity(outcomes.len());
        let mut claimed = Vec::with_capacity(outcomes.len());
        let mut started_at = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            claimed.push(outcome.claimed);
            started_at.push(outcome.started_at);
            metadata.push(outcome.metadata.as_ref());
            ids.push(outcome.id.as_str());
            attempts.push(outcome.attempt);
            let (status, output, error, retry, back) = match &outcome.result {
                AttemptResult::Completed { output } => (RunStatus::Completed, Some(output), None, None, false),
                AttemptResult::Retry { error, retry_in } => {
                    (RunStatus::Queued, None, Some(error), Some(ms(*retry_in)), false)
                }
                AttemptResult::Ended { status, error } => (*status, None, Some(error), None, false),
                AttemptResult::HandBack => (RunStatus::Queued, None, None, None, true),
            };
            statuses.push(status.as_str());
            outputs.push(output);
            errors.push(error);
            retry_in_ms.push(retry);
            hand_back.push(back);
        }
        let recorded: Vec<(String, String, String, Option<String>, bool)> = sqlx::query_as(AssertSqlSafe(format!(
            "WITH done AS (UPDATE runs SET status = u.status, output = u.output,
                 error = COALESCE(u.error, runs.error),
                 attempt_count = CASE WHEN u.hand_back THEN u.attempt - 1 ELSE u.attempt END,
                 started_at = CASE WHEN u.hand_back THEN runs.started_at
                                   ELSE COALESCE(runs.started_at, u.started_at) END,
                 dispatch_at = now() + u.retry_in_ms * interval '1 millisecond',
                 enqueued_at = NULL,
                 lease_expires_at = NULL, worker_id = NULL, updated_at = now(),
                 completed_at = CASE WHEN u.status = 'QUEUED' THEN NULL ELSE now() END,
                 metadata = COALESCE(u.metadata, runs.metadata)
             FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::jsonb[], $5::jsonb[], $6::int8[], $7::bool[],
                         $8::jsonb[], $9::bool[], $10::timestamptz[])
                 AS u(id, attempt, status, output, error, retry_in_ms, hand_back, metadata, claimed, started_at)
             WHERE runs.id = ANY($1) AND runs.id = u.id AND CASE
                 WHEN u.claimed THEN runs.status = 'EXECUTING' AND runs.attempt_count = u.attempt
                 ELSE {STARTED_UNRECORDED} END
             RETURNING runs.id, runs.environment, runs.queue, runs.concurrency_key, NOT {UNLIMITED_QUEUE} AS limited,
                 runs.status, u.attempt, u.error AS attempt_error, u.started_at AS attempt_started_at),
             -- Each failed attempt's error, so a run's earlier attempts
             -- keep theirs (the run keeps only the last).
             failed_attempts AS (
                 INSERT INTO run_attempts (run_id, attempt, error, started_at)
                 SELECT id, attempt, attempt_error, attempt_started_at FROM done WHERE attempt_error IS NOT NULL
                 ON CONFLICT (run_id, attempt) DO NOTHING),
             counted AS (
                 INSERT INTO queue_minutes (environment, queue, minute, shard, completed, failed)
                 SELECT environment, queue, date_trunc('minute', now()), pg_backend_pid() % 16,
                        count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status <> 'COMPLETED')
                 FROM done WHERE status <> 'QUEUED' GROUP BY environment, queue
                 ON CONFLICT (environment, queue, minute, shard) DO UPDATE
                     SET completed = queue_minutes.completed + EXCLUDED.completed,
                         failed = queue_minutes.failed + EXCLUDED.failed)
             SELECT id, environment, queue, concurrency_key, limited FROM done"
        )))
        .bind(&ids)
        .bind(&attempts)
        .bind(&statuses)
        .bind(&outputs)
        .bind(&errors)
        .bind(&retry_in_ms)
        .bind(&hand_back)
        .bind(&metadata)
        .bind(&claimed)
        .bind(&started_at)
        .fetch_all(&self.keyed)
        .await?;
        // Only queues with a limit park runs; the others have nothing to
        // release.
        let released: Vec<Released> = recorded
            .iter()
            .filter(|(_, _, _, _, limited)| *limited)
            .map(|(_, e, q, k, _)| (e.clone(), q.clone(), k.clone()))
            .collect();
        self.unpark_after_release(&released).await?;
        let recorded_ids: std::collections::HashSet<&str> =
            recorded.iter().map(|(id, _, _, _, _)| id.as_str()).collect();
        Ok(ids.iter().map(|id| recorded_ids.contains(id)).collect())
    }

    /// Writes a running attempt's metadata. Answers false when the run is
    /// no longer in that attempt (canceled, taken over, finished), in which
    /// case nothing is written.
    pub async fn set_running_metadata(&self, id: &str, attempt: i32, metadata: &Value) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET metadata = $3, updated_at = now()
             WHERE id = $1 AND status = 'EXECUTING' AND attempt_count = $2",
        )
        .bind(id)
        .bind(attempt)
        .bind(metadata)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Releases one parked run per freed slot, for queues with a limit.
    /// Only queues with a limit park runs, so callers pass only theirs.
    pub(crate) async fn unpark_after_release(&self, released: &[Released]) -> Result<(), StoreError> {
        if released.is_empty() {
            return Ok(());
        }
        let environments: Vec<&str> = released.iter().map(|(e, _, _)| e.as_str()).collect();
        let queues: Vec<&str> = released.iter().map(|(_, q, _)| q.as_str()).collect();
        let keys: Vec<Option<&str>> = released.iter().map(|(_, _, k)| k.as_deref()).collect();
        sqlx::query(
            "WITH freed AS (SELECT DISTINCT environment, queue, concurrency_key
                            FROM UNNEST($1::text[], $2::text[], $3::text[]) AS f(queue, concurrency_key, environment)),
                  next AS (
                    SELECT (SELECT p.id FROM runs p
                            WHERE p.parked AND p.queue = freed.queue AND p.environment = freed.environment
                              AND p.concurrency_key IS NOT DISTINCT FROM freed.concurrency_key
                            ORDER BY p.id LIMIT 1 FOR UPDATE SKIP LOCKED) AS id
                    FROM freed)
             UPDATE runs SET parked = false, enqueued_at = NULL, updated_at = now()
             WHERE runs.id = ANY(ARRAY(SELECT next.id FROM next))",
        )
        .bind(&queues)
        .bind(&keys)
        .bind(&environments)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes runs whose delay or back-off has passed ready (DELAYED becomes
    /// QUEUED); [`Store::take_for_push`] then hands them to Redis. Answers
    /// how many.
    pub async fn dispatch_due(&self, limit: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "WITH due AS (
                 SELECT id FROM runs WHERE dispatch_at <= now()
                 ORDER BY dispatch_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             UPDATE runs SET status = CASE WHEN runs.status = 'DELAYED' THEN 'QUEUED' ELSE runs.status END,
                 dispatch_at = NULL, enqueued_at = NULL, updated_at = now()
             WHERE runs.id = ANY(ARRAY(SELECT due.id FROM due)) AND runs.status IN ('DELAYED', 'QUEUED')",
        )
        .bind(limit)
        .execute(&self.keyed)
        .await?;
        Ok(done.rows_affected())
    }

    /// Queues with ready runs that are not in Redis.
    pub async fn lanes_awaiting_push(&self) -> Result<Vec<(String, String)>, StoreError> {
        let sql = format!(
            "{} SELECT environment, queue FROM q",
            distinct_lanes_where(AWAITING_PUSH)
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&self.keyed).await?)
    }

    /// Takes up to `limit` of a queue's ready runs that are not in Redis,
    /// oldest first, and marks them pushed; the caller pushes them (and
    /// marks back any it could not, with [`Store::unmark_enqueued`]).
    pub async fn take_for_push(&self, environment: &str, queue: &str, limit: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "WITH next AS (
                 SELECT id FROM runs r WHERE {AWAITING_PUSH} AND r.environment = $1 AND r.queue = $2
                 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
             UPDATE runs SET enqueued_at = now() WHERE runs.id = ANY(ARRAY(SELECT next.id FROM next))
             RETURNING runs.id"
        )))
        .bind(environment)
        .bind(queue)
        .bind(limit)
        .fetch_all(&self.relaxed)
        .await?)
    }

    /// Marks runs as not in Redis after a push that did not take them.
    pub async fn unmark_enqueued(&self, ids: &[String]) -> Result<(), StoreError> {
        // `IS TRUE`: see the note above CLAIMABLE.
        sqlx::query("UPDATE runs SET enqueued_at = NULL WHERE id = ANY($1) AND (status = 'QUEUED') IS TRUE")
            .bind(ids)
            .execute(&self.relaxed)
            .await?;
        Ok(())
    }

    /// Redis lost its data (restart without persistence, flush, failover):
    /// every queued run must be pushed again. Answers how many.
    pub async fn forget_all_enqueued(&self) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE runs SET enqueued_at = NULL WHERE status = 'QUEUED' AND enqueued_at IS NOT NULL")
                .execute(&self.relaxed)
                .await?;
        Ok(done.rows_affected())
    }

    /// Lanes with runs pushed longer than `older_than` ago and still
    /// queued. In a lane whose Redis list is empty, such runs' ids were
    /// lost (popped by a worker that died before claiming them).
    pub async fn lanes_with_stale_pushes(&self, older_than: Duration) -> Result<Vec<(String, String)>, StoreError> {
        let sql = format!(
            "{} SELECT environment, queue FROM q WHERE EXISTS (
                 SELECT 1 FROM runs r WHERE {PUSHED} AND r.environment = q.environment AND r.queue = q.queue
                   AND r.enqueued_at < now() - $1 * interval '1 millisecond')",
            distinct_lanes_where(PUSHED)
        );
        Ok(sqlx::query_as(AssertSqlSafe(sql))
            .bind(ms(older_than))
            .fetch_all(&self.keyed)
            .await?)
    }

    /// Marks a lane's runs pushed longer than `older_than` ago as not in
    /// Redis, so they are pushed again, and as redelivered, so the next
    /// worker records EXECUTING before it starts them. Safe: a duplicate id
    /// is refused at claim. Call it only for a lane whose Redis list is
    /// empty.
    pub async fn release_stale_pushes(
        &self,
        environment: &str,
        queue: &str,
        older_than: Duration,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "WITH stale AS (
                 SELECT id FROM runs r
                 WHERE r.status = 'QUEUED' AND r.enqueued_at IS NOT NULL AND r.environment = $1 AND r.queue = $2
                   AND r.enqueued_at < now() - $3 * interval '1 millisecond'
                 LIMIT $4 FOR UPDATE SKIP LOCKED)
             UPDATE runs SET enqueued_at = NULL, redelivered = true WHERE runs.id = ANY(ARRAY(SELECT stale.id FROM stale))",
        )
        .bind(environment)
        .bind(queue)
        .bind(ms(older_than))
        .bind(limit)
        .execute(&self.relaxed)
        .await?;
        Ok(done.rows_affected())
    }

    /// Ends unstarted runs past their ttl as EXPIRED; answers how many.
    pub async fn expire_due(&self, limit: i64) -> Result<u64, StoreError> {
        static EXPIRE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH due AS (
                     SELECT id FROM runs
                     WHERE status IN {} AND attempt_count = 0 AND expires_at <= now()
                     LIMIT $1 FOR UPDATE SKIP LOCKED)
                 UPDATE runs SET status = 'EXPIRED', completed_at = now(), updated_at = now(),
                     dispatch_at = NULL, parked = false,
                     error = jsonb_build_object('name', 'Expired', 'message',
                         'the run did not start within its ttl (' || runs.ttl_ms || ' ms)')
                 WHERE runs.id = ANY(ARRAY(SELECT due.id FROM due))",
                sql_guard("Store::expire_due", RunStatus::Expired)
            )
        });
        let done = sqlx::query(AssertSqlSafe(EXPIRE.as_str()))
            .bind(limit)
            .execute(&self.keyed)
            .await?;
        Ok(done.rows_affected())
    }

    /// Finds executing runs whose worker stopped renewing the lease (killed,
    /// machine lost): queues them again as a new attempt, or ends them
    /// CRASHED when no attempt is left. Answers how many were queued again.
    pub async fn recover_lapsed_leases(&self, limit: i64) -> Result<u64, StoreError> {
        let rows: Vec<(String, String, String, Option<String>, String)> = sqlx::query_as(
            "WITH lapsed AS (
                 SELECT id FROM runs WHERE status = 'EXECUTING' AND lease_expires_at < now()
                 LIMIT $1 FOR UPDATE SKIP LOCKED)
             UPDATE runs SET
                 status = CASE WHEN runs.attempt_count >= runs.max_attempts THEN 'CRASHED' ELSE 'QUEUED' END,
                 completed_at = CASE WHEN runs.attempt_count >= runs.max_attempts THEN now() ELSE NULL END,
                 lease_expires_at = NULL, worker_id = NULL, enqueued_at = NULL, updated_at = now(),
                 error = jsonb_build_object('name', 'WorkerLost', 'message',
                     'the worker stopped renewing its lease during attempt ' || runs.attempt_count)
             WHERE runs.id = ANY(ARRAY(SELECT lapsed.id FROM lapsed))
             RETURNING runs.id, runs.queue, runs.status, runs.concurrency_key, runs.environment",
        )
        .bind(limit)
        .fetch_all(&self.keyed)
        .await?;
        let released: Vec<Released> = rows
            .iter()
            .map(|(_, q, _, k, e)| (e.clone(), q.clone(), k.clone()))
            .collect();
        self.unpark_after_release(&released).await?;
        Ok(rows.iter().filter(|(_, _, status, _, _)| status == "QUEUED").count() as u64)
    }

    /// Safety net for parked runs: releases parked runs of any (queue, key)
    /// with a free slot, in case a release was missed (a worker lost).
    pub async fn unpark_free_slots(&self, limit: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "WITH candidates AS (
                 SELECT p.id FROM runs p LEFT JOIN queues q ON q.environment = p.environment AND q.name = p.queue
                 WHERE p.parked AND (SELECT count(*) FROM runs busy
                        WHERE busy.status = 'EXECUTING' AND busy.queue = p.queue
                          AND busy.environment = p.environment
                          AND busy.concurrency_key IS NOT DISTINCT FROM p.concurrency_key)
                     < COALESCE(CASE WHEN q.paused THEN 0 ELSE q.concurrency_limit END, 2147483647)
                 ORDER BY p.id LIMIT $1 FOR UPDATE OF p SKIP LOCKED)
             UPDATE runs SET parked = false, enqueued_at = NULL, updated_at = now()
             WHERE runs.id = ANY(ARRAY(SELECT candidates.id FROM candidates))",
        )
        .bind(limit)
        .execute(&self.keyed)
        .await?;
        Ok(done.rows_affected())
    }
}
