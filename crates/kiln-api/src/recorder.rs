//! Records new runs. Runs without an idempotency key go through a group
//! commit: concurrent triggers share one multi-row INSERT, then one
//! pipelined push to Redis, and each caller is answered once both are done.
//! Runs with a key take a transaction of their own, which finds the run
//! already holding the key.

use kiln_queue::Queue;
use kiln_store::batch::Batcher;
use kiln_store::{NewRun, Store, StoreError, TriggerOutcome};

use crate::error::ApiError;

/// Runs written per INSERT at most.
const MAX_BATCH: usize = 500;
/// INSERTs in flight at once.
const WRITERS: usize = 2;
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
        let (writer_store, writer_queue) = (store.clone(), queue.clone());
        let plain = Batcher::spawn(WRITERS, MAX_BATCH, LINGER, move |runs: Vec<NewRun>| {
            let (store, queue) = (writer_store.clone(), writer_queue.clone());
            async move {
                store.insert_runs(&runs).await?;
                let ready: Vec<_> = runs.iter().filter_map(NewRun::ready).collect();
                kiln_runtime::push_ready(&store, &queue, &ready).await;
                Ok::<_, StoreError>(vec![(); runs.len()])
            }
        });
        Self { store, queue, plain }
    }

    /// Records `run`; answers the id of the run that now stands for it and
    /// whether it was already there (idempotency key).
    pub async fn record(&self, run: NewRun) -> Result<(String, bool), ApiError> {
        if let Some(limit) = run.spec.queue_concurrency_limit {
            self.store.set_queue_limit(&run.spec.queue, Some(limit)).await?;
        }
        if run.spec.idempotency_key.is_none() {
            let id = run.id.as_str().to_owned();
            self.plain.submit(run).await?;
            return Ok((id, false));
        }
        match self.store.insert_idempotent_run(&run).await? {
            TriggerOutcome::Cached { id } => Ok((id, true)),
            TriggerOutcome::Created => {
                if let Some(ready) = run.ready() {
                    kiln_runtime::push_ready(&self.store, &self.queue, &[ready]).await;
                }
                Ok((run.id.into_string(), false))
            }
        }
    }
}
