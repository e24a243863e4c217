//! The runtime driven a step at a time against a fresh Postgres database
//! and a fresh Redis prefix: [`Worker::step`], [`Scheduler::tick`] and
//! [`CronRunner::fire_due`] run once each when the test says so, and time
//! passes when the test moves the database's clock ([`Harness::advance`]),
//! so back-off, delays, ttl, lease recovery and cron are tested without
//! sleeping and without a bound a loaded machine could miss.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use kiln_core::RunId;
use kiln_core::RunStatus;
use kiln_core::auth::Environment;
use kiln_core::options::{TaskDefaults, TimeSpec, TriggerOptions};
use kiln_core::registry::TaskRegistry;
use kiln_core::retry::RetryPolicy;
use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler};
use kiln_queue::Queue;
use kiln_runtime::{CronRunner, Scheduler, SchedulerConfig, Worker, WorkerConfig};
use kiln_store::schedules::ScheduleSpec;
use kiln_store::{NewRun, Store, StoreOptions};
use serde_json::{Value, json};
use sqlx::PgPool;

const TASK: &str = "steps.task";

/// How far short of a deadline a test steps the clock to check that
/// nothing happens early. Real time passes too between the trigger and the
/// check: a loaded machine (a checkpoint after a large test) can stall a
/// commit for a second or more, so the margin is well past that.
const EARLY: Duration = Duration::from_secs(30);

/// Fails retryably on the attempts it is told to, then answers its attempt.
struct FlakyTask {
    failures: u32,
    calls: Arc<AtomicU32>,
}

impl TaskHandler for FlakyTask {
    fn run(&self, ctx: TaskContext, _payload: Value) -> TaskFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = ctx.attempt <= self.failures;
        Box::pin(async move {
            if fail {
                Err(TaskError::retryable("Flaky", format!("attempt {} fails", ctx.attempt)))
            } else {
                Ok(json!({ "attempt": ctx.attempt }))
            }
        })
    }
}

struct Harness {
    store: Store,
    queue: Queue,
    /// The test's own connection, for reading rows and moving the clock.
    db: PgPool,
    worker: Arc<Worker>,
    scheduler: Scheduler,
    cron: CronRunner,
    calls: Arc<AtomicU32>,
}

fn admin_url() -> String {
    std::env::var("KILN_TEST_PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn redis_url() -> String {
    std::env::var("KILN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

impl Harness {
    /// A runtime over a database of its own, whose task fails its first
    /// `failures` attempts.
    async fn new(failures: u32) -> Self {
        let name = format!("kiln_t_steps_{}", kiln_core::id::random_alphanumeric(12));
        let admin = PgPool::connect(&admin_url()).await.expect("postgres is up");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let (base, _) = admin_url()
            .rsplit_once('/')
            .map(|(b, d)| (b.to_owned(), d.to_owned()))
            .expect("a URL");
        let url = format!("{base}/{name}");
        let store = Store::connect_lazy(&url, &StoreOptions::default()).expect("store");
        store.migrate().await.expect("migrations");
        let db = PgPool::connect(&url).await.expect("test connection");
        let prefix = format!("kiln-steps-{}", kiln_core::id::random_alphanumeric(10));
        let queue = Queue::connect_lazy(&redis_url(), &prefix).expect("redis");

        let calls = Arc::new(AtomicU32::new(0));
        let mut registry = TaskRegistry::new();
        registry.register(
            TASK,
            Arc::new(FlakyTask {
                failures,
                calls: Arc::clone(&calls),
            }),
            TaskDefaults::for_task(TASK),
        );
        let registry = Arc::new(registry);
        let mut config = WorkerConfig::new("steps-worker");
        // Back-offs of hours: the real seconds a loaded machine takes
        // between two steps are nothing beside them.
        config.retry = RetryPolicy {
            min_delay: Duration::from_secs(3600),
            max_delay: Duration::from_secs(4 * 3600),
            ..RetryPolicy::default()
        };
        config.lease = Duration::from_secs(30);
        let worker = Arc::new(Worker::new(store.clone(), queue.clone(), Arc::clone(&registry), config));
        let scheduler = Scheduler::new(store.clone(), queue.clone(), SchedulerConfig::default());
        let cron = CronRunner::new(store.clone(), queue.clone(), registry, Duration::from_secs(1));
        Self {
            store,
            queue,
            db,
            worker,
            scheduler,
            cron,
            calls,
        }
    }

    /// Records a run as the API does (and pushes it when it is ready).
    async fn trigger(&self, options: TriggerOptions) -> String {
        let run = new_run(Utc::now(), options);
        self.store
            .insert_runs(std::slice::from_ref(&run))
            .await
            .expect("insert");
        if let Some(ready) = run.ready() {
            kiln_dispatch::push_ready(&self.store, &self.queue, &[ready]).await;
        }
        run.id.into_string()
    }

    async fn status(&self, id: &str) -> (RunStatus, i32) {
        let run = self
            .store
            .get_run(Environment::Dev, id)
            .await
            .expect("read")
            .expect("the run exists");
        (run.status().expect("a known status"), run.attempt_count)
    }

    /// Moves the database's clock `by` forward: every instant kiln waits
    /// for comes `by` closer, which is what `by` passing would do.
    async fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).expect("a sane step");
        sqlx::query(
            "UPDATE runs SET dispatch_at = dispatch_at - $1 * interval '1 millisecond',
                 expires_at = expires_at - $1 * interval '1 millisecond',
                 delay_until = delay_until - $1 * interval '1 millisecond',
                 lease_expires_at = lease_expires_at - $1 * interval '1 millisecond',
                 enqueued_at = enqueued_at - $1 * interval '1 millisecond'",
        )
        .bind(ms)
        .execute(&self.db)
        .await
        .expect("move the runs' clock");
        sqlx::query("UPDATE schedules SET next_run_at = next_run_at - $1 * interval '1 millisecond'")
            .bind(ms)
            .execute(&self.db)
            .await
            .expect("move the schedules' clock");
    }

    /// How long until the run's next attempt is due.
    async fn due_in(&self, id: &str) -> Duration {
        let ms: Option<f64> = sqlx::query_scalar(
            "SELECT (EXTRACT(EPOCH FROM (dispatch_at - now())) * 1000)::float8 FROM runs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.db)
        .await
        .expect("read dispatch_at");
        Duration::from_millis(ms.expect("the run waits for a dispatch").max(0.0).ceil() as u64)
    }

    async fn in_redis(&self) -> u64 {
        self.queue
            .depth("dev", &format!("task/{TASK}"))
            .await
            .expect("redis depth")
    }

    /// An hourly UTC schedule of the task, first due at the next hour.
    async fn hourly_schedule(&self) {
        let cron = kiln_core::schedule::CronSchedule::parse("0 * * * *", Some("UTC")).expect("cron");
        let spec = ScheduleSpec {
            environment: Environment::Dev,
            task_identifier: TASK.into(),
            cron: "0 * * * *".into(),
            timezone: "UTC".into(),
            external_id: None,
            deduplication_key: None,
            next_run_at: cron.next_after(Utc::now()),
        };
        self.store
            .upsert_schedule(&kiln_core::id::new_schedule_id(), "IMPERATIVE", &spec)
            .await
            .expect("schedule");
    }

    async fn tick(&self) {
        self.scheduler.tick(true).await.expect("a scheduler tick");
    }

    async fn step(&self) -> usize {
        self.worker.step().await.expect("a worker step")
    }
}

#[tokio::test]
async fn a_failed_attempt_waits_its_back_off_and_not_a_step_less() {
    let h = Harness::new(1).await;
    let id = h.trigger(TriggerOptions::default()).await;
    assert_eq!(h.step().await, 1);
    assert_eq!(
        h.status(&id).await,
        (RunStatus::Queued, 1),
        "the first attempt failed and waits"
    );
    let back_off = h.due_in(&id).await;
    assert!(
        back_off > Duration::from_secs(3000),
        "the policy's first back-off is an hour, with jitter: {back_off:?}"
    );

    h.advance(back_off - Duration::from_secs(600)).await;
    h.tick().await;
    assert_eq!(h.in_redis().await, 0, "not pushed ten minutes before its back-off ends");
    assert_eq!(h.step().await, 0);

    h.advance(Duration::from_secs(1200)).await;
    h.tick().await;
    assert_eq!(h.in_redis().await, 1, "pushed once its back-off ended");
    assert_eq!(h.step().await, 1);
    assert_eq!(h.status(&id).await, (RunStatus::Completed, 2));
    assert_eq!(h.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn attempts_run_out_and_the_run_fails_with_the_last_error() {
    let h = Harness::new(u32::MAX).await;
    let id = h
        .trigger(TriggerOptions {
            max_attempts: Some(3),
            ..TriggerOptions::default()
        })
        .await;
    for attempt in 1..=3 {
        assert_eq!(h.step().await, 1, "attempt {attempt} runs");
        if attempt < 3 {
            assert_eq!(h.status(&id).await, (RunStatus::Queued, attempt));
            let wait = h.due_in(&id).await;
            h.advance(wait + Duration::from_millis(1)).await;
            h.tick().await;
        }
    }
    assert_eq!(h.status(&id).await, (RunStatus::Failed, 3));
    let run = h
        .store
        .get_run(Environment::Dev, &id)
        .await
        .expect("read")
        .expect("run");
    assert_eq!(run.error.expect("an error")["message"], "attempt 3 fails");
    h.tick().await;
    assert_eq!(h.step().await, 0, "nothing is left to run");
}

#[tokio::test]
async fn a_delayed_run_starts_when_its_delay_passes() {
    let h = Harness::new(0).await;
    let id = h
        .trigger(TriggerOptions {
            delay: Some(TimeSpec::Text("1h".into())),
            ..TriggerOptions::default()
        })
        .await;
    assert_eq!(h.status(&id).await.0, RunStatus::Delayed);
    h.tick().await;
    assert_eq!(h.step().await, 0);
    h.advance(Duration::from_secs(3600) - EARLY).await;
    h.tick().await;
    assert_eq!(h.status(&id).await.0, RunStatus::Delayed, "30 seconds early");
    h.advance(EARLY + Duration::from_secs(1)).await;
    h.tick().await;
    assert_eq!(h.status(&id).await.0, RunStatus::Queued);
    assert_eq!(h.step().await, 1);
    assert_eq!(h.status(&id).await, (RunStatus::Completed, 1));
}

#[tokio::test]
async fn a_run_not_started_within_its_ttl_expires_and_never_runs() {
    let h = Harness::new(0).await;
    let id = h
        .trigger(TriggerOptions {
            ttl: Some(TimeSpec::Text("10m".into())),
            ..TriggerOptions::default()
        })
        .await;
    h.advance(Duration::from_secs(600) - EARLY).await;
    h.tick().await;
    assert_eq!(h.status(&id).await.0, RunStatus::Queued);
    h.advance(EARLY + Duration::from_secs(1)).await;
    h.tick().await;
    assert_eq!(h.status(&id).await, (RunStatus::Expired, 0));
    assert_eq!(h.step().await, 0, "its id is popped and dropped");
    assert_eq!(h.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_run_whose_worker_died_is_attempted_again_then_crashed_on_its_last_attempt() {
    let h = Harness::new(0).await;
    let id = h
        .trigger(TriggerOptions {
            max_attempts: Some(2),
            ..TriggerOptions::default()
        })
        .await;
    // A worker claims it and dies: the lease is never renewed.
    for attempt in 1..=2 {
        let claimed = h
            .store
            .claim_runs(std::slice::from_ref(&id), Duration::from_secs(120), "dead-worker")
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1, "attempt {attempt} is claimed");
        assert_eq!(h.status(&id).await, (RunStatus::Executing, attempt));
        h.advance(Duration::from_secs(120) - EARLY).await;
        h.tick().await;
        assert_eq!(
            h.status(&id).await.0,
            RunStatus::Executing,
            "the lease has 30 seconds left"
        );
        h.advance(EARLY + Duration::from_secs(1)).await;
        h.tick().await;
    }
    assert_eq!(h.status(&id).await, (RunStatus::Crashed, 2));
}

#[tokio::test]
async fn a_cron_schedule_fires_once_per_tick_and_its_run_executes() {
    let h = Harness::new(0).await;
    h.hourly_schedule().await;
    assert_eq!(h.cron.fire_due().await.expect("fire"), 0, "not due yet");
    h.advance(Duration::from_secs(3600)).await;
    assert_eq!(h.cron.fire_due().await.expect("fire"), 1);
    assert_eq!(h.cron.fire_due().await.expect("fire"), 0, "a tick fires once");
    assert_eq!(h.step().await, 1, "the schedule's run executes");
    let completed: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'COMPLETED'")
        .fetch_one(&h.db)
        .await
        .expect("count");
    assert_eq!(completed, 1);
}

#[tokio::test]
async fn a_schedule_stalled_past_several_ticks_fires_once_not_once_per_missed_tick() {
    let h = Harness::new(0).await;
    h.hourly_schedule().await;
    // kiln was down (or stalled) for three hours past the tick.
    h.advance(Duration::from_secs(4 * 3600)).await;
    assert_eq!(h.cron.fire_due().await.expect("fire"), 1, "the late tick fires");
    assert_eq!(h.cron.fire_due().await.expect("fire"), 0, "the missed ones are skipped");
    let next_is_ahead: bool = sqlx::query_scalar("SELECT next_run_at > now() FROM schedules")
        .fetch_one(&h.db)
        .await
        .expect("read the schedule");
    assert!(next_is_ahead, "the next tick is one still to come");
    let payload: Value = sqlx::query_scalar("SELECT payload FROM runs")
        .fetch_one(&h.db)
        .await
        .expect("the run");
    assert!(payload.get("lastTimestamp").is_none(), "{payload}");
    assert_eq!(payload["timezone"], "UTC");
}

/// A run of the task created at `created_at` with `options`, as the API
/// records it.
fn new_run(created_at: chrono::DateTime<Utc>, options: TriggerOptions) -> NewRun {
    let spec = options
        .validate(created_at, &TaskDefaults::for_task(TASK))
        .expect("valid options");
    NewRun {
        id: RunId::generate(u64::try_from(created_at.timestamp_millis()).unwrap_or(0)),
        environment: Environment::Dev,
        task_identifier: TASK.into(),
        payload: json!({}),
        payload_type: "application/json".into(),
        spec,
        created_at,
        replayed_from: None,
        parent_run_id: None,
    }
}

/// A run recorded `days_ago`, then moved straight to `status` (finished
/// `finished_days_ago`, when given), with a tag.
async fn old_run(h: &Harness, days_ago: i64, status: &str, finished_days_ago: Option<i64>) -> String {
    let created = Utc::now() - chrono::Duration::days(days_ago);
    let run = new_run(
        created,
        TriggerOptions {
            tags: vec!["kept-or-not".into()],
            ..TriggerOptions::default()
        },
    );
    h.store.insert_runs(std::slice::from_ref(&run)).await.expect("insert");
    sqlx::query(
        "UPDATE runs SET status = $2, updated_at = $3,
             completed_at = now() - $4 * interval '1 day' WHERE id = $1",
    )
    .bind(run.id.as_str())
    .bind(status)
    .bind(created)
    .bind(finished_days_ago.map(|days| days as f64))
    .execute(&h.db)
    .await
    .expect("set the status");
    run.id.into_string()
}

/// Retention deletes the runs that finished before the cut-off, with their
/// tags, and the batches whose runs are all gone; it keeps runs finished
/// since, and every run not finished however old (delayed, queued,
/// executing), a small batch per statement until none is left.
#[tokio::test]
async fn retention_deletes_exactly_the_runs_that_finished_before_the_cut_off() {
    let h = Harness::new(0).await;
    let mut doomed = Vec::new();
    for status in [
        "COMPLETED",
        "FAILED",
        "CANCELED",
        "EXPIRED",
        "CRASHED",
        "TIMED_OUT",
        "SYSTEM_FAILURE",
    ] {
        doomed.push(old_run(&h, 40, status, Some(35)).await);
    }
    let kept = vec![
        old_run(&h, 40, "COMPLETED", Some(1)).await, // created long ago, finished lately
        old_run(&h, 2, "COMPLETED", Some(1)).await,
        old_run(&h, 40, "QUEUED", None).await,
        old_run(&h, 40, "DELAYED", None).await,
        old_run(&h, 40, "EXECUTING", None).await,
    ];
    for (id, runs) in [
        ("batch_gone", vec![doomed[0].clone(), doomed[1].clone()]),
        ("batch_kept", vec![doomed[2].clone(), kept[0].clone()]),
    ] {
        sqlx::query("INSERT INTO batches (id, environment, run_ids, created_at) VALUES ($1, 'dev', $2, now() - interval '40 days')")
            .bind(id)
            .bind(&runs)
            .execute(&h.db)
            .await
            .expect("a batch");
    }
    let scheduler = Scheduler::new(
        h.store.clone(),
        h.queue.clone(),
        SchedulerConfig {
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            retention_batch: 2,
            ..SchedulerConfig::default()
        },
    );
    assert_eq!(scheduler.sweep_history().await.expect("sweep"), doomed.len() as u64);

    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM runs ORDER BY id")
        .fetch_all(&h.db)
        .await
        .expect("runs");
    let mut expected = kept.clone();
    expected.sort();
    assert_eq!(
        left, expected,
        "exactly the runs not finished before the cut-off are left"
    );
    let tagged: Vec<String> = sqlx::query_scalar("SELECT run_id FROM run_tags ORDER BY run_id")
        .fetch_all(&h.db)
        .await
        .expect("tags");
    assert_eq!(tagged, expected, "the deleted runs' tags went with them");
    let batches: Vec<String> = sqlx::query_scalar("SELECT id FROM batches ORDER BY id")
        .fetch_all(&h.db)
        .await
        .expect("batches");
    assert_eq!(batches, vec!["batch_kept".to_owned()]);
    assert_eq!(scheduler.sweep_history().await.expect("a second sweep"), 0);
}

/// Postgres never compiles kiln's statements with its JIT. With sequential
/// scans off, as on the store's keyed pools, a statement that has to scan a
/// small table is costed past every JIT threshold, and Postgres compiled it
/// anew on each execution: a third of a busy machine's CPU went to LLVM.
#[tokio::test]
async fn statements_are_never_compiled_by_postgres_jit() {
    let harness = Harness::new(0).await;
    let mut tx = harness.store.pool().begin().await.expect("begin");
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .expect("turn sequential scans off");
    // No index serves this filter: only a (disabled) sequential scan can.
    let plan: Value =
        sqlx::query_scalar("EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM waitpoints WHERE kind = 'DATETIME'")
            .fetch_one(&mut *tx)
            .await
            .expect("explain");
    assert!(
        plan[0]["Plan"]["Total Cost"].as_f64().is_some_and(|cost| cost > 1e9),
        "the plan is costed as a disabled scan: {plan}"
    );
    assert!(plan[0].get("JIT").is_none(), "compiled by JIT: {plan}");
}
