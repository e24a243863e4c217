//! Execution: one attempt of a claimed run, from its handler's start to
//! its recorded outcome, with its span, its cancellation and its
//! metadata writer.

use std::sync::Arc;
use std::time::Duration;

use kiln_core::task::{RunMetadata, TaskContext, TaskError};
use kiln_core::{RunId, RunStatus};
use kiln_store::lifecycle::AttemptResult;
use kiln_store::{ClaimedRun, Outcome};
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::recording::{metadata_set, write_metadata};
use super::{Recorded, Running, Worker, lock};

impl Worker {
    pub(super) async fn execute(
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
            count_started(&run);
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
            count_finished(&run, &result);
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
}

/// This process's count of attempts started (`kiln_run_attempts_total`),
/// and for a first attempt how long the run waited to start
/// (`kiln_queue_wait_seconds`).
fn count_started(run: &ClaimedRun) {
    let task = run.task_identifier.clone();
    metrics::counter!("kiln_run_attempts_total", "task" => task.clone()).increment(1);
    if run.attempt_count == 1 {
        let waited = (chrono::Utc::now() - run.ready_at).to_std().unwrap_or_default();
        metrics::histogram!("kiln_queue_wait_seconds", "task" => task).record(waited.as_secs_f64());
    }
}

/// How an attempt ended (`kiln_attempts_finished_total`, by outcome), and
/// for a run that ended for good how long it took from its first start
/// (`kiln_run_duration_seconds`).
fn count_finished(run: &ClaimedRun, result: &AttemptResult) {
    let task = run.task_identifier.clone();
    metrics::counter!("kiln_attempts_finished_total", "task" => task.clone(), "outcome" => result.name()).increment(1);
    if matches!(result, AttemptResult::Completed { .. } | AttemptResult::Ended { .. }) {
        let took = (chrono::Utc::now() - run.started_at).to_std().unwrap_or_default();
        metrics::histogram!("kiln_run_duration_seconds", "task" => task).record(took.as_secs_f64());
    }
}
