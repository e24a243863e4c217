//! Progress where Supermark's UI reads it: run metadata
//! `{"status": {"progress", "text"}}`, numbers written as JavaScript writes
//! them (`50`, not `50.0`; `33.33333333333333`).

use kiln_core::task::{RunMetadata, TaskContext, TaskError};
use serde_json::{Value, json};

/// A number as `JSON.stringify` writes it: integral values without a
/// fraction, as JSONB would otherwise keep `1836.0`.
pub(crate) fn js_number(value: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_991.0;
    if value.is_finite() && value.fract() == 0.0 && value.abs() <= SAFE {
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

/// Supermark's `updateStatus`.
pub(crate) fn set(metadata: &RunMetadata, progress: f64, text: impl Into<String>) {
    metadata.set(
        "status",
        json!({ "progress": js_number(progress), "text": text.into() }),
    );
}

/// Passes an attempt's result on, naming the reason on the progress bar
/// when the attempt failed for good (no retry left, or none can help).
pub(crate) fn report_failure(ctx: &TaskContext, result: Result<Value, TaskError>) -> Result<Value, TaskError> {
    if let Err(error) = &result
        && (!error.is_retryable() || ctx.attempt >= ctx.max_attempts)
    {
        let (TaskError::Retryable { message, .. } | TaskError::Fatal { message, .. }) = error;
        set(&ctx.metadata, 0.0, message.clone());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_javascript_writes_them() {
        assert_eq!(js_number(1836.0).to_string(), "1836");
        assert_eq!(js_number((1.0 / 3.0) * 100.0).to_string(), "33.33333333333333");
        assert_eq!(js_number(f64::from(595.276_f32)).to_string(), "595.2760009765625");
        assert_eq!(
            js_number(f64::from(595.276_f32) * 3.0).to_string(),
            "1785.8280029296875"
        );
        assert_eq!(js_number(1.8).to_string(), "1.8");
    }
}
