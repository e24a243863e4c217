//! kiln's built-in tasks, each a [`TaskHandler`] that knows only its
//! payload and output:
//!
//! - `kiln.noop`: answers its payload (for tests and benchmarks);
//! - `kiln.sleep`: waits `{"ms": N}`, stopping early when canceled, and
//!   reports its progress in the run's metadata every tenth of the wait;
//! - `kiln.fail`: always fails with a retryable error;
//! - `kiln.http` and configured HTTP tasks ([`http`]): send a signed request
//!   and succeed on a 2xx answer.

pub mod http;

use std::time::Duration;

use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler};
use serde_json::{Value, json};

pub struct Noop;

impl TaskHandler for Noop {
    fn run(&self, _ctx: TaskContext, payload: Value) -> TaskFuture {
        Box::pin(async move { Ok(payload) })
    }
}

pub struct Sleep;

/// `kiln.sleep` waits at most a day.
const MAX_SLEEP_MS: u64 = 86_400_000;

impl TaskHandler for Sleep {
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture {
        Box::pin(async move {
            let ms = payload
                .get("ms")
                .and_then(Value::as_u64)
                .filter(|ms| *ms <= MAX_SLEEP_MS)
                .ok_or_else(|| {
                    TaskError::fatal("InvalidPayload", "kiln.sleep needs {\"ms\": N} with 0 ≤ N ≤ 86400000")
                })?;
            // Ten steps, each reported: a task whose progress a realtime
            // subscriber can watch.
            let step = Duration::from_millis(ms) / 10;
            for done in 1..=10u32 {
                tokio::select! {
                    () = tokio::time::sleep(step) => {}
                    () = ctx.cancel.cancelled() => {
                        return Err(TaskError::retryable("Canceled", "stopped while sleeping"));
                    }
                }
                ctx.metadata
                    .progress(done * 10, format!("slept {} of {ms} ms", ms * u64::from(done) / 10));
            }
            Ok(json!({ "sleptMs": ms }))
        })
    }
}

pub struct Fail;

impl TaskHandler for Fail {
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture {
        Box::pin(async move {
            let message = payload
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| format!("kiln.fail failed attempt {}", ctx.attempt), str::to_owned);
            Err(TaskError::retryable("KilnFail", message))
        })
    }
}
