//! Child runs: a handler triggers another task's run (a conversion chaining
//! into its page previews), recorded in Postgres with its parent's id and
//! pushed like any other. The child's idempotency key is made of the
//! parent's id and the task, so a later attempt of the same parent finds
//! the child the first attempt made instead of starting a second one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use kiln_core::RunId;
use kiln_core::auth::Environment;
use kiln_core::options::TriggerOptions;
use kiln_core::task::{ChildRuns, TaskError};
use kiln_queue::Queue;
use kiln_store::{NewRun, Store, TriggerOutcome};
use serde_json::Value;

use kiln_core::registry::TaskRegistry;

pub(crate) struct StoreChildRuns {
    pub(crate) store: Store,
    pub(crate) queue: Queue,
    pub(crate) registry: Arc<TaskRegistry>,
    pub(crate) parent: String,
    pub(crate) environment: Environment,
}

impl std::fmt::Debug for StoreChildRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreChildRuns")
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

impl ChildRuns for StoreChildRuns {
    fn trigger_tagged(
        &self,
        task_id: &str,
        payload: Value,
        tags: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = Result<String, TaskError>> + Send + '_>> {
        let task_id = task_id.to_owned();
        Box::pin(async move {
            let task = self
                .registry
                .get(&task_id)
                .ok_or_else(|| TaskError::fatal("UnknownTask", format!("cannot trigger {task_id:?}: no such task")))?;
            let now = Utc::now();
            let options = TriggerOptions {
                idempotency_key: Some(format!("{}:{task_id}", self.parent)),
                tags,
                ..TriggerOptions::default()
            };
            let spec = options
                .validate(now, &task.defaults)
                .map_err(|e| TaskError::fatal("InvalidChildRun", e.to_string()))?;
            let run = NewRun {
                id: RunId::generate(u64::try_from(now.timestamp_millis()).unwrap_or(0)),
                environment: self.environment,
                task_identifier: task_id.clone(),
                payload,
                payload_type: "application/json".into(),
                spec,
                created_at: now,
                replayed_from: None,
                parent_run_id: Some(self.parent.clone()),
            };
            let outcome =
                self.store.insert_idempotent_run(&run).await.map_err(|e| {
                    TaskError::retryable("StoreUnavailable", format!("cannot record the child run: {e}"))
                })?;
            match outcome {
                TriggerOutcome::Cached { id } => Ok(id),
                TriggerOutcome::Created => {
                    if let Some(ready) = run.ready() {
                        kiln_dispatch::push_ready(&self.store, &self.queue, &[ready]).await;
                    }
                    tracing::info!(child = %run.id.as_str(), task = %task_id, "child run triggered");
                    Ok(run.id.into_string())
                }
            }
        })
    }
}
