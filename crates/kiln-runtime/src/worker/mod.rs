//! The worker harness. One `Worker` per process serves some or all queues
//! with a fixed number of concurrent slots:
//!
//! 1. pop up to "free slots" run ids from Redis (blocking, so an idle worker
//!    starts a new run as soon as it is pushed);
//! 2. read them from Postgres (ids that are not claimable, canceled or
//!    duplicate, are dropped) and start them at once; a run still going
//!    [`RECORD_AFTER`] later is recorded EXECUTING (attempt + 1, lease) in
//!    one statement with the others due, so a short run goes from QUEUED
//!    straight to its outcome and costs Postgres one row version less.
//!    Runs of queues with a concurrency limit, and runs redelivered after a
//!    worker died with them, are recorded before they start;
//! 3. run each handler in its own task, bounded by `maxDuration`, with a
//!    cancellation token; a panic is an attempt's failure, not the worker's;
//! 4. record the outcome through a batched writer: COMPLETED, a retry after
//!    back-off, or a final failure.
//!
//! A heartbeat renews the leases of running runs and learns which were
//! canceled meanwhile, so their handlers are told to stop. On shutdown the
//! worker stops popping, lets running handlers finish within the grace
//! period, and hands back the rest without counting their attempt.
//!
//! [`Worker::step`] runs one round of that by hand, so tests can drive the
//! worker a step at a time instead of waiting on it.
//!
//! Here: the loop and the queues it serves. [`claim`]: reading popped ids
//! in Postgres. [`execute`]: one attempt, to its recorded outcome.
//! [`recording`]: what is written while runs go (EXECUTING, leases,
//! metadata).

mod claim;
mod execute;
mod recording;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_core::auth::Environment;
use kiln_core::retry::RetryPolicy;
use kiln_core::task::RunMetadata;
use kiln_queue::{Lane, Queue};
use kiln_store::batch::Batcher;
use kiln_store::{Outcome, Store};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use kiln_core::registry::TaskRegistry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSelection {
    /// Every queue: the registered tasks' own, and any other that runs were
    /// triggered on.
    All,
    Only(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this process in leases; unique per process.
    pub worker_id: String,
    pub concurrency: usize,
    pub queues: QueueSelection,
    /// A run whose lease is not renewed for this long is presumed lost.
    pub lease: Duration,
    pub heartbeat: Duration,
    /// How long running handlers get to finish on shutdown.
    pub shutdown_grace: Duration,
    pub retry: RetryPolicy,
}

impl WorkerConfig {
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            concurrency: 50,
            queues: QueueSelection::All,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// What stopped [`Worker::step`].
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("redis: {0}")]
    Queue(#[from] kiln_queue::QueueError),
    #[error("postgres: {0}")]
    Store(#[from] kiln_store::StoreError),
    #[error("the worker's slots are closed")]
    Closed,
}

/// How long [`Worker::step`] waits for ids: it takes what is there.
const STEP_POP_WAIT: Duration = Duration::from_millis(10);

/// How long a pop blocks in Redis before the worker looks around (new
/// queues, shutdown). Not a latency: a push wakes the pop at once.
const POP_WAIT: Duration = Duration::from_secs(1);
const QUEUE_REFRESH: Duration = Duration::from_secs(2);
/// How long a loaded outcome writer waits for a batch to fill. The run's
/// slot is already free by then, so this delays only the recorded end.
const OUTCOME_LINGER: Duration = Duration::from_millis(2);

/// How long a run goes before it is recorded EXECUTING. Shorter runs are
/// never recorded as executing: their outcome is their first write. A run
/// that kills its worker within this time leaves no attempt; the stale-push
/// sweep finds it and marks it redelivered, and it is recorded before it
/// starts from then on.
pub const RECORD_AFTER: Duration = Duration::from_millis(50);

/// Whether a running attempt is recorded EXECUTING in Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// Started unrecorded; the run is QUEUED in Postgres.
    NotYet,
    /// Being recorded now.
    InFlight,
    Yes,
    /// The run changed before it could be recorded (canceled, expired,
    /// started elsewhere): the attempt is stopped and its outcome dropped.
    Refused,
}

/// A running attempt, as the heartbeat and the recorder see it.
struct Running {
    cancel: CancellationToken,
    attempt: i32,
    started: tokio::time::Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    metadata: RunMetadata,
    recorded: tokio::sync::watch::Sender<Recorded>,
}

pub struct Worker {
    store: Store,
    queue: Queue,
    registry: Arc<TaskRegistry>,
    config: WorkerConfig,
    running: Arc<Mutex<HashMap<String, Running>>>,
    outcomes: Batcher<Outcome, bool>,
    /// The `(environment, queue)` lanes task hosts serve, as last read.
    hosted_lanes: Mutex<std::collections::HashSet<(String, String)>>,
}

impl Worker {
    pub fn new(store: Store, queue: Queue, registry: Arc<TaskRegistry>, config: WorkerConfig) -> Self {
        let writer_store = store.clone();
        let outcomes = Batcher::spawn(2, 512, OUTCOME_LINGER, move |batch: Vec<Outcome>| {
            let store = writer_store.clone();
            async move { store.finish_attempts(&batch).await }
        });
        Self {
            store,
            queue,
            registry,
            config,
            running: Arc::new(Mutex::new(HashMap::new())),
            outcomes,
            hosted_lanes: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Runs until `shutdown` fires, then drains as described above.
    pub async fn run(self, shutdown: CancellationToken) {
        let worker = Arc::new(self);
        let hard_stop = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(worker.config.concurrency.max(1)));
        let mut attempts = JoinSet::new();
        let heartbeat = tokio::spawn(Arc::clone(&worker).heartbeat_loop());
        let recorder = tokio::spawn(Arc::clone(&worker).record_loop());
        tracing::info!(worker = %worker.config.worker_id, concurrency = worker.config.concurrency, "worker started");

        let mut consumer = worker.queue.consumer();
        let mut lanes = worker.lanes().await;
        let mut limited = worker.limited_queues().await;
        let mut refreshed = tokio::time::Instant::now();
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            if consumer.take_queues_changed() || refreshed.elapsed() >= QUEUE_REFRESH {
                lanes = worker.lanes().await;
                limited = worker.limited_queues().await;
                refreshed = tokio::time::Instant::now();
            }
            // Reap finished attempts so the set does not grow.
            while attempts.try_join_next().is_some() {}

            let first = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = shutdown.cancelled() => break,
            };
            let mut permits = vec![first];
            while let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
                permits.push(permit);
            }
            // Not raced against shutdown: a pop abandoned mid-flight would
            // lose the ids Redis already handed over. It lasts POP_WAIT at
            // most.
            let popped = consumer.pop(&lanes, permits.len(), POP_WAIT).await;
            let deliveries = match popped {
                Ok(deliveries) => {
                    failures = 0;
                    deliveries
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "cannot pop from redis; retrying");
                    backoff(failures, &shutdown).await;
                    continue;
                }
            };
            if deliveries.is_empty() {
                continue;
            }
            let (claimed, failed) = worker.claim(deliveries.clone(), &limited).await;
            if let Some(error) = failed {
                failures += 1;
                // Runs claimed before the failure are this worker's now (some
                // recorded EXECUTING under its lease): they start below. Only
                // the others go back.
                let taken: std::collections::HashSet<&str> = claimed.iter().map(|(run, _)| run.id.as_str()).collect();
                let back: Vec<(&str, &str, &str)> = deliveries
                    .iter()
                    .filter(|d| !taken.contains(d.run_id.as_str()))
                    .map(|d| (d.environment.as_str(), d.queue.as_str(), d.run_id.as_str()))
                    .collect();
                tracing::warn!(%error, count = back.len(), "cannot claim runs; putting them back");
                // If this fails too, the scheduler's stale sweep pushes
                // them again once Postgres is back.
                if let Err(error) = worker.queue.push(back).await {
                    tracing::error!(%error, "could not put runs back; the stale sweep will find them");
                }
                if claimed.is_empty() {
                    backoff(failures, &shutdown).await;
                    continue;
                }
            }
            for (run, recorded) in claimed {
                let Some(permit) = permits.pop() else {
                    tracing::error!(run_id = %run.id, "claimed more runs than slots");
                    break;
                };
                attempts.spawn(Arc::clone(&worker).execute(run, recorded, permit, hard_stop.child_token()));
            }
        }

        tracing::info!(running = attempts.len(), grace = ?worker.config.shutdown_grace, "worker stopping");
        let drained = tokio::time::timeout(worker.config.shutdown_grace, async {
            while attempts.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                running = attempts.len(),
                "grace period over; handing back unfinished runs"
            );
            hard_stop.cancel();
            while attempts.join_next().await.is_some() {}
        }
        heartbeat.abort();
        recorder.abort();
        tracing::info!("worker stopped");
    }

    /// One round, run to its end: pops what the worker's queues hold now
    /// (up to its concurrency), claims it, runs every claimed attempt to
    /// its end and records the outcomes; answers how many attempts ran.
    /// No heartbeat or EXECUTING record runs meanwhile, so an attempt's
    /// outcome is its first write, as for a short run. For tests that step
    /// the runtime (with [`Scheduler::tick`](crate::Scheduler::tick) and
    /// [`CronRunner::fire_due`](crate::CronRunner::fire_due)) instead of
    /// waiting on its loops.
    pub async fn step(self: &Arc<Self>) -> Result<usize, StepError> {
        let mut consumer = self.queue.consumer();
        let mut deliveries = Vec::new();
        // A pop may take only the note that a queue was added; look again
        // with the new queue list.
        for _ in 0..3 {
            let lanes = self.lanes().await;
            deliveries = consumer
                .pop(&lanes, self.config.concurrency.max(1), STEP_POP_WAIT)
                .await?;
            if !deliveries.is_empty() || !consumer.take_queues_changed() {
                break;
            }
        }
        if deliveries.is_empty() {
            return Ok(0);
        }
        let limited = self.limited_queues().await;
        let (claimed, failed) = self.claim(deliveries, &limited).await;
        if let Some(error) = failed {
            return Err(StepError::Store(error));
        }
        let slots = Arc::new(Semaphore::new(claimed.len().max(1)));
        let mut attempts = JoinSet::new();
        let count = claimed.len();
        for (run, recorded) in claimed {
            let permit = Arc::clone(&slots)
                .acquire_owned()
                .await
                .map_err(|_| StepError::Closed)?;
            attempts.spawn(Arc::clone(self).execute(run, recorded, permit, CancellationToken::new()));
        }
        while attempts.join_next().await.is_some() {}
        Ok(count)
    }

    /// The lanes to watch: each served queue in every environment, since
    /// a worker serves both and Redis keeps their lists apart.
    async fn lanes(&self) -> Vec<Lane> {
        let every_environment = |names: &[String]| -> Vec<Lane> {
            names
                .iter()
                .flat_map(|name| {
                    Environment::ALL
                        .iter()
                        .map(move |env| Lane::new(env.as_str(), name.as_str()))
                })
                .collect()
        };
        let mut lanes = match &self.config.queues {
            QueueSelection::Only(names) => every_environment(names),
            QueueSelection::All => {
                let mut lanes = every_environment(&self.registry.default_queues());
                match self.queue.known_lanes().await {
                    Ok(known) => lanes.extend(known),
                    Err(error) => tracing::warn!(%error, "cannot list queues"),
                }
                lanes
            }
        };
        // Task hosts take their queues' runs through the worker API; a run
        // this worker popped there would find no handler.
        // When Postgres cannot say, the last answer stands.
        match self.store.host_lanes().await {
            Ok(hosted) => *lock(&self.hosted_lanes) = hosted.into_iter().collect(),
            Err(error) => tracing::warn!(%error, "cannot read the task hosts' queues"),
        }
        {
            let hosted = lock(&self.hosted_lanes);
            lanes.retain(|lane| !hosted.contains(&(lane.environment.clone(), lane.queue.clone())));
        }
        lanes.sort();
        lanes.dedup();
        lanes
    }

    async fn limited_queues(&self) -> HashMap<String, u32> {
        match self.store.limited_queues().await {
            Ok(limits) => limits.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot read queue limits");
                HashMap::new()
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map is still a consistent map of tokens.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits 50 ms, 100 ms, … up to 2 s, or until shutdown.
async fn backoff(failures: u32, shutdown: &CancellationToken) {
    let wait = Duration::from_millis(50u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(2));
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = shutdown.cancelled() => {}
    }
}
