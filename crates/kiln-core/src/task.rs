//! The contract between the runtime and a task handler. A handler sees only
//! its payload, its attempt, a cancellation signal and its run's metadata
//! (which it may update), and answers with
//! output JSON or an error that says whether retrying can help. It knows
//! nothing of Postgres, Redis or HTTP requests into kiln.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::watch;
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
    /// The environment of the key that started the run.
    pub environment: crate::auth::Environment,
    pub task_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Fires when the run is canceled, times out or the worker shuts down.
    pub cancel: CancellationToken,
    /// The run's metadata; what the handler sets is visible through the run
    /// API while it runs (progress, a status text).
    pub metadata: RunMetadata,
    /// Triggers runs linked to this one as its children.
    pub children: Arc<dyn ChildRuns>,
}

/// Triggers a child run from a handler, recorded as this run's child. The
/// same task triggered again by a later attempt of the same run answers
/// the child the first attempt made, so retries do not duplicate work.
pub trait ChildRuns: Send + Sync + std::fmt::Debug + 'static {
    /// The child's run id.
    fn trigger(
        &self,
        task_id: &str,
        payload: Value,
    ) -> Pin<Box<dyn Future<Output = Result<String, TaskError>> + Send + '_>> {
        self.trigger_tagged(task_id, payload, Vec::new())
    }

    /// [`ChildRuns::trigger`], with tags on the child (what a realtime
    /// subscription by tag finds it by).
    fn trigger_tagged(
        &self,
        task_id: &str,
        payload: Value,
        tags: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = Result<String, TaskError>> + Send + '_>>;
}

/// For handlers run outside a worker (tests): every child trigger fails.
#[derive(Debug)]
pub struct NoChildRuns;

impl ChildRuns for NoChildRuns {
    fn trigger_tagged(
        &self,
        task_id: &str,
        _payload: Value,
        _tags: Vec<String>,
    ) -> Pin<Box<dyn Future<Output = Result<String, TaskError>> + Send + '_>> {
        let message = format!("cannot trigger {task_id}: this handler runs without a worker");
        Box::pin(async move { Err(TaskError::fatal("NoChildRuns", message)) })
    }
}

/// A run's metadata object as its handler updates it. Updates are cheap and
/// never block: the runtime watches for changes and writes the latest
/// state, so a handler may set progress after every page of a thousand.
#[derive(Debug, Clone)]
pub struct RunMetadata {
    state: Arc<watch::Sender<Map<String, Value>>>,
}

impl RunMetadata {
    /// Starts from the metadata the run was triggered with (an object, or
    /// nothing).
    pub fn new(initial: Option<&Value>) -> Self {
        let initial = match initial {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        Self {
            state: Arc::new(watch::Sender::new(initial)),
        }
    }

    /// Sets one top-level key, as Trigger's `metadata.set` does.
    pub fn set(&self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        self.state.send_if_modified(|map| {
            if map.get(key) == Some(&value) {
                return false;
            }
            map.insert(key.to_owned(), value);
            true
        });
    }

    /// Sets `progress` (0–100) and `text` together, so a reader never sees
    /// one without the other.
    pub fn progress(&self, percent: u32, text: impl Into<String>) {
        let (percent, text) = (Value::from(percent.min(100)), Value::from(text.into()));
        self.state.send_if_modified(|map| {
            if map.get("progress") == Some(&percent) && map.get("text") == Some(&text) {
                return false;
            }
            map.insert("progress".to_owned(), percent);
            map.insert("text".to_owned(), text);
            true
        });
    }

    pub fn snapshot(&self) -> Value {
        Value::Object(self.state.borrow().clone())
    }

    /// A receiver that wakes on every change, for the runtime's writer.
    pub fn subscribe(&self) -> watch::Receiver<Map<String, Value>> {
        self.state.subscribe()
    }
}

/// Downloads a URL that a payload names, under the operator's rules for
/// where untrusted URLs may go (allowed hosts, no private addresses). Tasks
/// that take a `{ "url": … }` source get one; the binary supplies the HTTP
/// client behind it.
pub trait UrlFetcher: Send + Sync + 'static {
    /// The body, refused (as a fatal error) past `limit` bytes.
    fn fetch(&self, url: &str, limit: u64) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, TaskError>> + Send + '_>>;
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

    pub fn name(&self) -> &str {
        let (TaskError::Retryable { name, .. } | TaskError::Fatal { name, .. }) = self;
        name
    }

    pub fn message(&self) -> &str {
        let (TaskError::Retryable { message, .. } | TaskError::Fatal { message, .. }) = self;
        message
    }

    /// Trigger's `SerializedError`: `{ name, message }`.
    pub fn to_json(&self) -> Value {
        let (TaskError::Retryable { name, message } | TaskError::Fatal { name, message }) = self;
        serde_json::json!({ "name": name, "message": message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_starts_from_the_trigger_and_notifies_only_real_changes() {
        let metadata = RunMetadata::new(Some(&serde_json::json!({ "documentId": "doc_1" })));
        let mut changes = metadata.subscribe();
        metadata.progress(12, "3 / 25 pages processed");
        assert!(changes.has_changed().unwrap_or(false));
        changes.mark_unchanged();
        metadata.progress(12, "3 / 25 pages processed");
        assert!(
            !changes.has_changed().unwrap_or(true),
            "the same progress is not a change"
        );
        metadata.set("progress", 150);
        assert_eq!(
            metadata.snapshot(),
            serde_json::json!({ "documentId": "doc_1", "progress": 150, "text": "3 / 25 pages processed" })
        );
        metadata.progress(150, "done");
        assert_eq!(metadata.snapshot()["progress"], 100, "progress is capped at 100");
    }
}
