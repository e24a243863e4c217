//! The contract between the runtime and a task handler. A handler sees only
//! its payload, its attempt and a cancellation signal, and answers with
//! output JSON or an error that says whether retrying can help. It knows
//! nothing of Postgres, Redis or HTTP requests into kiln.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::RunId;

pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;

pub trait TaskHandler: Send + Sync + 'static {
    /// Runs one attempt. Must return soon after `ctx.cancel` fires; the
    /// runtime records the run's end whatever the handler does then.
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture;
}

#[derive(Debug, Clone)]
pub struct TaskContext {
    pub run_id: RunId,
    pub task_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Fires when the run is canceled, times out or the worker shuts down.
    pub cancel: CancellationToken,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// Another attempt may succeed (network error, 5xx answer).
    #[error("{name}: {message}")]
    Retryable { name: String, message: String },
    /// No attempt will (bad payload, corrupt file): the run fails now.
    #[error("{name}: {message}")]
    Fatal { name: String, message: String },
}

impl TaskError {
    pub fn retryable(name: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError::Retryable {
            name: name.into(),
            message: message.into(),
        }
    }

    pub fn fatal(name: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError::Fatal {
            name: name.into(),
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, TaskError::Retryable { .. })
    }

    /// Trigger's `SerializedError`: `{ name, message }`.
    pub fn to_json(&self) -> Value {
        let (TaskError::Retryable { name, message } | TaskError::Fatal { name, message }) = self;
        serde_json::json!({ "name": name, "message": message })
    }
}
