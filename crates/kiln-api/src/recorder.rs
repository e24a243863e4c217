//! Records new runs. Runs without an idempotency key go through a group
//! commit: concurrent triggers share one multi-row INSERT, and each caller
//! is answered once it is committed; one task pushes the recorded runs to
//! Redis behind them, in order.
//! Runs with a key take a transaction of their own, which finds the run
//! already holding the key.

use kiln_queue::Queue;
use kiln_store::batch::Batcher;
use kiln_store::{NewRun, ReadyRun, Store, StoreError, TriggerOutcome};
use tokio::sync::mpsc;

use crate::error::ApiError;

/// Runs written per INSERT at most.
const MAX_BATCH: usize = 500;
/// INSERTs in flight at once.
const WRITERS: usize = 2;
/// Recorded batches waiting for their push at most; writers wait beyond.
const PUSH_BACKLOG: usize = 64;
/// How long a loaded writer waits for a batch to fill (see `Batcher`).
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

#[derive(Clone)]
pub struct RunRecorder {
    store: Store,
    queue: Queue,
    plain: Batcher<NewRun, ()>,
}

impl RunRecorder {
    pub fn new(store: Store, queue: Queue) -> Self {
        let pushes = spawn_pusher(store.clone(), queue.clone());
        let writer_store = store.clone();
        let plain = Batcher::spawn(WRITERS, MAX_BATCH, LINGER, move |runs: Vec<NewRun>| {
            let (store, pushes) = (writer_store.clone(), pushes.clone());
            async move {
                store.insert_runs(&runs).await?;
                let ready: Vec<_> = runs.iter().filter_map(NewRun::ready).collect();
                if !ready.is_empty() && pushes.send(ready).await.is_err() {
                    // Only when the process is stopping; the runs are
                    // recorded, and the stale-push sweep pushes them.
                    tracing::warn!(
                        count = runs.len(),
                        "run pusher stopped; the scheduler will push these runs"
                    );
                }
                Ok::<_, StoreError>(vec![(); runs.len()])
            }
        });
        Self { store, queue, plain }
    }

    /// Records `run`; answers the id of the run that now stands for it and
    /// whether it was already there (idempotency key).
    pub async fn record(&self, run: NewRun) -> Result<(String, bool), ApiError> {
        if let Some(limit) = run.spec.queue_concurrency_limit {
            self.store
                .set_queue_limit(run.environment, &run.spec.queue, limit)
                .await?;
        }
        if run.spec.idempotency_key.is_none() {
            let id = run.id.as_str().to_owned();
            let task = run.task_identifier.clone();
            self.plain.submit(run).await?;
            count_triggered(task);
            return Ok((id, false));
        }
        match self.store.insert_idempotent_run(&run).await? {
            TriggerOutcome::Cached { id } => Ok((id, true)),
            TriggerOutcome::Created => {
                count_triggered(run.task_identifier.clone());
                if let Some(ready) = run.ready() {
                    kiln_dispatch::push_ready(&self.store, &self.queue, &[ready]).await;
                }
                Ok((run.id.into_string(), false))
            }
        }
    }
}

/// Counts a run this process recorded (`kiln_runs_triggered_total`).
pub(crate) fn count_triggered(task: String) {
    metrics::counter!("kiln_runs_triggered_total", "task" => task).increment(1);
}

/// Pushes recorded runs to Redis in the order they were recorded, off the
/// triggers' path: a trigger is answered once its run is committed, and
/// its push (which, if it fails, leaves the run to the scheduler) costs it
/// no round trip. Batches that pile up while a push is in flight go out as
/// one pipelined push.
fn spawn_pusher(store: Store, queue: Queue) -> mpsc::Sender<Vec<ReadyRun>> {
    let (sender, mut receiver) = mpsc::channel::<Vec<ReadyRun>>(PUSH_BACKLOG);
    tokio::spawn(async move {
        while let Some(mut ready) = receiver.recv().await {
            while let Ok(more) = receiver.try_recv() {
                ready.extend(more);
            }
            kiln_dispatch::push_ready(&store, &queue, &ready).await;
        }
    });
    sender
}
