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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_core::retry::RetryPolicy;
use kiln_core::task::{RunMetadata, TaskContext, TaskError};
use kiln_core::{RunId, RunStatus};
use kiln_queue::{Delivery, Queue};
use kiln_store::batch::Batcher;
use kiln_store::lifecycle::AttemptResult;
use kiln_store::{ClaimedRun, Outcome, Store};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::registry::TaskRegistry;

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
        let mut queues = worker.queue_names().await;
        let mut limited = worker.limited_queues().await;
        let mut refreshed = tokio::time::Instant::now();
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            if consumer.take_queues_changed() || refreshed.elapsed() >= QUEUE_REFRESH {
                queues = worker.queue_names().await;
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
            let popped = consumer.pop(&queues, permits.len(), POP_WAIT).await;
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
                let back: Vec<(&str, &str)> = deliveries
                    .iter()
                    .filter(|d| !taken.contains(d.run_id.as_str()))
                    .map(|d| (d.queue.as_str(), d.run_id.as_str()))
                    .collect();
                tracing::warn!(%error, count = back.len(), "cannot claim runs; putting them back");
                // If this fails too, the scheduler's stale sweep pushes
                // them again once Postgres is back.
                if let Err(error) = worker.queue.push(back.into_iter()).await {
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

    async fn queue_names(&self) -> Vec<String> {
        match &self.config.queues {
            QueueSelection::Only(names) => names.clone(),
            QueueSelection::All => {
                let mut names = self.registry.default_queues();
                match self.queue.known_queues().await {
                    Ok(known) => names.extend(known),
                    Err(error) => tracing::warn!(%error, "cannot list queues"),
                }
                names.sort();
                names.dedup();
                names
            }
        }
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

    /// Reads the runs behind `deliveries`, recording EXECUTING those that
    /// must be recorded before they start; answers each startable run and
    /// whether it is recorded.
    /// The runs it claimed, and the error that stopped it, if one did:
    /// runs claimed before an error are still this worker's to start.
    async fn claim(
        &self,
        deliveries: Vec<Delivery>,
        limited: &HashMap<String, u32>,
    ) -> (Vec<(ClaimedRun, bool)>, Option<kiln_store::StoreError>) {
        let mut claimed = Vec::new();
        match self.claim_into(&mut claimed, deliveries, limited).await {
            Ok(()) => (claimed, None),
            Err(error) => (claimed, Some(error)),
        }
    }

    async fn claim_into(
        &self,
        claimed: &mut Vec<(ClaimedRun, bool)>,
        deliveries: Vec<Delivery>,
        limited: &HashMap<String, u32>,
    ) -> Result<(), kiln_store::StoreError> {
        // A duplicate id (possible after Redis was recovered) is dropped when
        // this worker already runs it; across workers, the guards on the
        // record and the outcome let one attempt count.
        let deliveries: Vec<Delivery> = {
            let running = lock(&self.running);
            let mut seen = std::collections::HashSet::new();
            deliveries
                .into_iter()
                .filter(|d| !running.contains_key(&d.run_id) && seen.insert(d.run_id.clone()))
                .collect()
        };
        let (limited_runs, free_runs): (Vec<Delivery>, Vec<Delivery>) =
            deliveries.into_iter().partition(|d| limited.contains_key(&d.queue));
        let mut limited_runs = limited_runs;
        if !free_runs.is_empty() {
            let ids: Vec<String> = free_runs.iter().map(|d| d.run_id.clone()).collect();
            let peeked = self.store.peek_runs(&ids).await?;
            let found: std::collections::HashSet<String> = peeked.iter().map(|run| run.id.clone()).collect();
            let (redelivered, fresh): (Vec<ClaimedRun>, Vec<ClaimedRun>) =
                peeked.into_iter().partition(|run| run.redelivered);
            claimed.extend(fresh.into_iter().map(|run| (run, false)));
            if !redelivered.is_empty() {
                let ids: Vec<String> = redelivered.into_iter().map(|run| run.id).collect();
                let recorded = self
                    .store
                    .claim_runs(&ids, self.config.lease, &self.config.worker_id)
                    .await?;
                claimed.extend(recorded.into_iter().map(|run| (run, true)));
            }
            if found.len() < ids.len() {
                // Our view of limits lags; the store refuses runs of queues
                // that have gained a limit since. Claim those one by one.
                let unclaimed: Vec<String> = ids.into_iter().filter(|id| !found.contains(id)).collect();
                let now_limited = self.store.limited_among(&unclaimed).await?;
                limited_runs.extend(free_runs.into_iter().filter(|d| now_limited.contains(&d.run_id)));
            }
        }
        for delivery in limited_runs {
            if let Some(run) = self
                .store
                .claim_limited_run(
                    &delivery.run_id,
                    &delivery.queue,
                    self.config.lease,
                    &self.config.worker_id,
                )
                .await?
            {
                claimed.push((run, true));
            }
        }
        Ok(())
    }

    async fn execute(
        self: Arc<Self>,
        run: ClaimedRun,
        recorded: bool,
        slot: OwnedSemaphorePermit,
        hard_stop: CancellationToken,
    ) {
        let span = tracing::info_span!(
            "run",
            otel.name = %format_args!("run {}", run.task_identifier),
            run_id = %run.id,
            task = %run.task_identifier,
            attempt = run.attempt_count,
            outcome = tracing::field::Empty,
        );
        async move {
            let cancel = hard_stop.child_token();
            let metadata = RunMetadata::new(run.metadata.as_ref());
            let (recorded, recorded_changes) =
                tokio::sync::watch::channel(if recorded { Recorded::Yes } else { Recorded::NotYet });
            lock(&self.running).insert(
                run.id.clone(),
                Running {
                    cancel: cancel.clone(),
                    attempt: run.attempt_count,
                    started: tokio::time::Instant::now(),
                    started_at: run.started_at,
                    metadata: metadata.clone(),
                    recorded,
                },
            );
            // The metadata writer runs beside the attempt in this task (a
            // task of its own per run cost a spawn for runs that never set
            // any) and stops with it; once done writing, it only waits.
            let metadata_writer = async {
                write_metadata(
                    self.store.clone(),
                    run.id.clone(),
                    run.attempt_count,
                    metadata.subscribe(),
                    recorded_changes,
                )
                .await;
                std::future::pending::<std::convert::Infallible>().await
            };
            let result = tokio::select! {
                biased;
                result = self.attempt(&run, cancel.clone(), metadata.clone()) => result,
                never = metadata_writer => match never {},
            };
            let recorded = self.settle(&run.id).await;
            // The outcome carries the last state, so a change the writer had
            // not written yet is not lost.
            let final_metadata =
                metadata_set(&metadata).filter(|final_metadata| Some(final_metadata) != run.metadata.as_ref());
            // The handler is done: its slot can take the next run while the
            // outcome waits for its batch to be written.
            drop(slot);

            let result = match result {
                // Stopped by shutdown: whatever the handler answered while
                // being stopped (often an error), the attempt did not run
                // its course, so it goes back without counting.
                Some(AttemptResult::Completed { output }) => AttemptResult::Completed { output },
                Some(_) | None if hard_stop.is_cancelled() => AttemptResult::HandBack,
                Some(result) => result,
                // Canceled (or taken over) elsewhere: the run already has
                // its status; the write below is refused by its guard.
                None => AttemptResult::Ended {
                    status: RunStatus::Canceled,
                    error: json!({ "name": "Canceled", "message": "the run was canceled" }),
                },
            };
            tracing::Span::current().record("outcome", result.name());
            let Some(claimed) = recorded else {
                return tracing::info!("run changed before it was recorded as started; outcome dropped");
            };
            let outcome = Outcome {
                id: run.id.clone(),
                attempt: run.attempt_count,
                result,
                metadata: final_metadata,
                claimed,
                started_at: run.started_at,
            };
            self.record(outcome).await;
        }
        .instrument(span)
        .await
    }

    /// Records an outcome, retrying while Postgres is unavailable for as
    /// long as the run's lease would have lasted; past that, the scheduler
    /// runs the attempt again, so the outcome is dropped (at-least-once).
    async fn record(&self, outcome: Outcome) {
        let deadline = tokio::time::Instant::now() + self.config.lease;
        let mut failures = 0u32;
        loop {
            match self.outcomes.submit(outcome.clone()).await {
                Ok(true) => return tracing::debug!("attempt recorded"),
                Ok(false) => return tracing::info!("run changed while executing; outcome dropped"),
                Err(error) if error.is_unavailable() && tokio::time::Instant::now() < deadline => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(%error, "cannot record the outcome yet; retrying");
                    }
                    let wait = Duration::from_millis(100u64 << failures.min(5));
                    tokio::time::sleep(wait).await;
                }
                Err(error) => {
                    return tracing::error!(%error, "could not record the outcome; the run will be attempted again");
                }
            }
        }
    }

    /// Runs one attempt; `None` when it was stopped by `cancel`.
    async fn attempt(
        &self,
        run: &ClaimedRun,
        cancel: CancellationToken,
        metadata: RunMetadata,
    ) -> Option<AttemptResult> {
        let Some(task) = self.registry.get(&run.task_identifier) else {
            return Some(AttemptResult::Ended {
                status: RunStatus::SystemFailure,
                error: json!({
                    "name": "UnknownTask",
                    "message": format!("this worker has no handler for task {:?}", run.task_identifier),
                }),
            });
        };
        let Some(run_id) = RunId::parse(&run.id) else {
            return Some(AttemptResult::Ended {
                status: RunStatus::SystemFailure,
                error: json!({ "name": "BadRecord", "message": "malformed run id" }),
            });
        };
        let attempt = u32::try_from(run.attempt_count).unwrap_or(1);
        let max_attempts = u32::try_from(run.max_attempts).unwrap_or(1);
        let environment =
            kiln_core::auth::Environment::parse(&run.environment).unwrap_or(kiln_core::auth::Environment::Prod);
        let ctx = TaskContext {
            run_id,
            environment,
            task_id: run.task_identifier.clone(),
            attempt,
            max_attempts,
            cancel: cancel.clone(),
            metadata,
            children: Arc::new(crate::children::StoreChildRuns {
                store: self.store.clone(),
                queue: self.queue.clone(),
                registry: Arc::clone(&self.registry),
                parent: run.id.clone(),
                environment,
            }),
        };
        // Its own task, so a panic fails the attempt, not the worker.
        // The handler keeps the run's span, so its log lines carry the run id.
        let mut handle = tokio::spawn(
            task.handler
                .run(ctx, run.payload.clone())
                .instrument(tracing::Span::current()),
        );
        let limit = run
            .max_duration_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis);
        let timeout = async {
            match limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let joined = tokio::select! {
            joined = &mut handle => joined,
            () = timeout => {
                cancel.cancel();
                handle.abort();
                return Some(AttemptResult::Ended {
                    status: RunStatus::TimedOut,
                    error: json!({
                        "name": "MaxDurationExceeded",
                        "message": format!("the attempt ran longer than maxDuration ({} ms)", limit.map_or(0, |l| l.as_millis())),
                    }),
                });
            }
            () = cancel.cancelled() => {
                handle.abort();
                return None;
            }
        };
        Some(match joined {
            Ok(Ok(output)) => AttemptResult::Completed { output },
            Ok(Err(error)) => self.failure(error, attempt, max_attempts),
            Err(join_error) => {
                let message = if join_error.is_panic() {
                    "the handler panicked"
                } else {
                    "the handler was aborted"
                };
                self.failure(TaskError::retryable("HandlerPanic", message), attempt, max_attempts)
            }
        })
    }

    fn failure(&self, error: TaskError, attempt: u32, max_attempts: u32) -> AttemptResult {
        tracing::info!(%error, "attempt failed");
        let retry_in = error
            .is_retryable()
            .then(|| self.config.retry.delay_after(attempt, max_attempts))
            .flatten();
        match retry_in {
            Some(retry_in) => AttemptResult::Retry {
                error: error.to_json(),
                retry_in,
            },
            None => AttemptResult::Ended {
                status: RunStatus::Failed,
                error: error.to_json(),
            },
        }
    }

    /// Takes a finished attempt out of the running set once no record of
    /// it is in flight. Answers whether it was recorded EXECUTING, or
    /// `None` when the run changed before it could be.
    async fn settle(&self, id: &str) -> Option<bool> {
        loop {
            let mut changes = {
                let mut running = lock(&self.running);
                let Some(entry) = running.get(id) else {
                    return Some(false);
                };
                let mut changes = entry.recorded.subscribe();
                let state = *changes.borrow_and_update();
                if state != Recorded::InFlight {
                    running.remove(id);
                    return match state {
                        Recorded::Yes => Some(true),
                        Recorded::Refused => None,
                        Recorded::NotYet | Recorded::InFlight => Some(false),
                    };
                }
                changes
            };
            // The recorder settles it under the same lock, then tells us.
            if changes.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Runs until aborted: records EXECUTING the runs that have been going
    /// for [`RECORD_AFTER`], all due at once in one statement.
    async fn record_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(RECORD_AFTER / 2);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let due: Vec<kiln_store::StartedRun> = lock(&self.running)
                .iter()
                .filter(|(_, run)| *run.recorded.borrow() == Recorded::NotYet && run.started.elapsed() >= RECORD_AFTER)
                .map(|(id, run)| {
                    run.recorded.send_replace(Recorded::InFlight);
                    kiln_store::StartedRun {
                        id: id.clone(),
                        attempt: run.attempt,
                        started_at: run.started_at,
                        metadata: metadata_set(&run.metadata),
                    }
                })
                .collect();
            if due.is_empty() {
                continue;
            }
            let result = self
                .store
                .claim_started(&due, self.config.lease, &self.config.worker_id)
                .await;
            let running = lock(&self.running);
            let recorded: std::collections::HashSet<String> = match result {
                Ok(ids) => ids.into_iter().collect(),
                Err(error) => {
                    // Tried again next tick; meanwhile the runs go on, and
                    // one that ends is recorded straight from QUEUED.
                    tracing::warn!(%error, count = due.len(), "cannot record started runs yet");
                    for run in &due {
                        if let Some(entry) = running.get(&run.id) {
                            entry.recorded.send_replace(Recorded::NotYet);
                        }
                    }
                    continue;
                }
            };
            for run in &due {
                let Some(entry) = running.get(&run.id) else { continue };
                if recorded.contains(&run.id) {
                    entry.recorded.send_replace(Recorded::Yes);
                } else {
                    tracing::info!(run_id = %run.id, "run changed before it was recorded as started; stopping it");
                    entry.cancel.cancel();
                    entry.recorded.send_replace(Recorded::Refused);
                }
            }
        }
    }

    /// Runs until aborted: leases must stay renewed while the worker drains.
    async fn heartbeat_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.config.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Only recorded runs hold a lease.
            let ids: Vec<String> = lock(&self.running)
                .iter()
                .filter(|(_, run)| *run.recorded.borrow() == Recorded::Yes)
                .map(|(id, _)| id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            match self
                .store
                .renew_leases(&ids, self.config.lease, &self.config.worker_id)
                .await
            {
                Ok(gone) => {
                    let running = lock(&self.running);
                    for id in gone {
                        if let Some(run) = running.get(&id) {
                            tracing::info!(run_id = %id, "run is no longer ours (canceled or taken over); stopping it");
                            run.cancel.cancel();
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot renew leases"),
            }
        }
    }
}

/// Bounds how often a run's metadata is written while it runs: a handler
/// may update it on every page, Postgres sees at most five writes a second.
const METADATA_WRITE_INTERVAL: Duration = Duration::from_millis(200);

/// Writes the run's metadata as its handler changes it, until the attempt
/// ends (the caller aborts this) or the run is no longer this attempt's.
/// Nothing is written before the run is recorded EXECUTING (that record
/// carries the metadata so far); a change made meanwhile is written then.
async fn write_metadata(
    store: Store,
    run_id: String,
    attempt: i32,
    mut changes: tokio::sync::watch::Receiver<serde_json::Map<String, serde_json::Value>>,
    mut recorded: tokio::sync::watch::Receiver<Recorded>,
) {
    if recorded.wait_for(|state| *state == Recorded::Yes).await.is_err() {
        return;
    }
    while changes.changed().await.is_ok() {
        let snapshot = serde_json::Value::Object(changes.borrow_and_update().clone());
        match store.set_running_metadata(&run_id, attempt, &snapshot).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => tracing::warn!(%error, "cannot write the run's metadata yet"),
        }
        tokio::time::sleep(METADATA_WRITE_INTERVAL).await;
    }
}

/// The run's metadata as it stands, or `None` while nothing is set (so a
/// write keeps what is recorded).
fn metadata_set(metadata: &RunMetadata) -> Option<serde_json::Value> {
    let snapshot = metadata.snapshot();
    snapshot.as_object().is_some_and(|m| !m.is_empty()).then_some(snapshot)
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
