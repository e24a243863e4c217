//! A run's log lines: `POST /otel/v1/logs` takes what the SDK's logger
//! exports over OTLP/HTTP JSON from inside a task (the task host points
//! the SDK here), and `GET /api/v1/runs/{id}/logs` reads them back.
//! `POST /otel/v1/traces` is taken and dropped, so the SDK's span exporter
//! does not fail against kiln; traces go to an OTLP collector when the app
//! names one.
//!
//! A line is kept only when it names a run of the caller's environment
//! (the SDK's `ctx.run.id` attribute).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, SecondsFormat, Utc};
use kiln_store::logs::LogLine;
use serde_json::{Map, Value, json};

use super::runs::{check_run_id, run_not_found};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;

/// Lines one export may carry.
const MAX_LINES: usize = 10_000;
/// Characters of a message kept.
const MAX_MESSAGE_CHARS: usize = 32 * 1024;
/// Bytes of JSON a line's attributes may take; past it they are dropped.
const MAX_ATTRIBUTE_BYTES: usize = 16 * 1024;
/// The attributes the SDK names a log line's run with: 4.x prefixes its
/// context attributes with `$metadata.`.
const RUN_ID_ATTRIBUTES: [&str; 2] = ["$metadata.ctx.run.id", "ctx.run.id"];
/// What 3.3 names a line's attempt with.
const ATTEMPT_ID_ATTRIBUTES: [&str; 2] = ["$metadata.ctx.attempt.id", "ctx.attempt.id"];

/// OTLP's `AnyValue` as plain JSON.
fn any_value(value: &Value) -> Value {
    let Some(fields) = value.as_object() else {
        return Value::Null;
    };
    if let Some(text) = fields.get("stringValue") {
        return text.clone();
    }
    if let Some(flag) = fields.get("boolValue") {
        return flag.clone();
    }
    if let Some(number) = fields.get("intValue") {
        // OTLP JSON gives 64-bit integers as strings.
        return match number {
            Value::String(text) => text.parse::<i64>().map_or_else(|_| number.clone(), Value::from),
            other => other.clone(),
        };
    }
    if let Some(number) = fields.get("doubleValue") {
        return number.clone();
    }
    if let Some(values) = fields
        .get("arrayValue")
        .and_then(|a| a.get("values"))
        .and_then(Value::as_array)
    {
        return Value::Array(values.iter().map(any_value).collect());
    }
    if let Some(values) = fields.get("kvlistValue").and_then(|a| a.get("values")) {
        return Value::Object(key_values(values));
    }
    Value::Null
}

/// OTLP's `[{key, value}]` as a JSON object.
fn key_values(list: &Value) -> Map<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| Some((pair.get("key")?.as_str()?.to_owned(), any_value(pair.get("value")?))))
        .collect()
}

/// Nanoseconds since the epoch, as OTLP JSON writes them (a string, or a
/// number).
fn time_of(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let nanos = match value? {
        Value::String(text) => text.parse::<i64>().ok()?,
        Value::Number(number) => number.as_i64()?,
        _ => return None,
    };
    (nanos > 0).then(|| DateTime::from_timestamp_nanos(nanos))
}

/// The level a record's severity names.
fn level_of(record: &Value) -> String {
    if let Some(text) = record
        .get("severityText")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return text.to_lowercase();
    }
    match record.get("severityNumber").and_then(Value::as_i64).unwrap_or(9) {
        1..=4 => "trace",
        5..=8 => "debug",
        13..=16 => "warn",
        17..=20 => "error",
        21.. => "fatal",
        _ => "info",
    }
    .to_owned()
}

/// Postgres keeps no NUL character.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// The lines of an OTLP `ExportLogsServiceRequest` that name a run.
pub fn log_lines(request: &Value) -> Vec<LogLine> {
    let records = request
        .get("resourceLogs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|resource| {
            resource
                .get("scopeLogs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .flat_map(|scope| scope.get("logRecords").and_then(Value::as_array).into_iter().flatten());
    let mut lines = Vec::new();
    for record in records.take(MAX_LINES) {
        let mut attributes = record.get("attributes").map(key_values).unwrap_or_default();
        let named = RUN_ID_ATTRIBUTES.iter().find_map(|key| attributes.remove(*key));
        // 3.3 names the attempt only, as kiln made it: `<run id>_<n>`.
        let attempt = || {
            ATTEMPT_ID_ATTRIBUTES
                .iter()
                .find_map(|key| attributes.get(*key)?.as_str())
                .and_then(|attempt| super::trigger::run_of_attempt("attempt", attempt).ok())
        };
        let run_id = match named {
            Some(Value::String(run_id)) => run_id,
            _ => match attempt() {
                Some(run_id) => run_id,
                None => continue,
            },
        };
        if kiln_core::RunId::parse(&run_id).is_none() {
            continue;
        }
        // The SDK's own context attributes repeat the run on every line.
        attributes.retain(|key, _| !key.starts_with("ctx.") && !key.starts_with('$'));
        let message = match record.get("body").map(any_value) {
            Some(Value::String(text)) => text,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let message: String = storable(&message).chars().take(MAX_MESSAGE_CHARS).collect();
        let mut attributes = Value::Object(attributes);
        let attribute_text = attributes.to_string();
        if attribute_text.len() > MAX_ATTRIBUTE_BYTES || attribute_text.contains("\\u0000") {
            attributes = json!({});
        }
        lines.push(LogLine {
            run_id,
            logged_at: time_of(record.get("timeUnixNano"))
                .or_else(|| time_of(record.get("observedTimeUnixNano")))
                .unwrap_or_else(Utc::now),
            level: level_of(record),
            message,
            attributes,
        });
    }
    lines
}

/// `POST /otel/v1/logs`: keeps the lines of the caller's environment's
/// runs. Answers OTLP's (empty) export response.
pub async fn ingest(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let lines = log_lines(&request);
    let kept = app.store.insert_logs(caller.environment, &lines).await?;
    tracing::debug!(received = lines.len(), kept, "run logs kept");
    Ok(Json(json!({})))
}

/// `POST /otel/v1/traces`: taken and dropped (see the module's doc).
pub async fn traces(caller: Caller, JsonBody(_request): JsonBody<Value>) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    Ok(Json(json!({})))
}

/// `GET /api/v1/runs/{id}/logs`: the run's lines, oldest first.
pub async fn read(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    check_run_id(&run_id)?;
    if app.store.get_run(caller.environment, &run_id).await?.is_none() {
        return Err(run_not_found(&run_id));
    }
    let lines = app.store.run_logs(caller.environment, &run_id).await?;
    let logs: Vec<Value> = lines
        .into_iter()
        .map(|line| {
            json!({
                "time": line.logged_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "level": line.level,
                "message": line.message,
                "attributes": line.attributes,
            })
        })
        .collect();
    Ok(Json(json!({ "logs": logs })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_otlp_export_becomes_the_lines_of_the_runs_it_names() {
        let request = json!({ "resourceLogs": [{ "scopeLogs": [{ "logRecords": [
            { "timeUnixNano": "1765000000000000000", "severityNumber": 9, "severityText": "INFO",
              "body": { "stringValue": "greeting" },
              "attributes": [
                  { "key": "$metadata.ctx.run.id", "value": { "stringValue": "run_01m992yh3ggtne3te30x42fp7s" } },
                  { "key": "$metadata.ctx.task.id", "value": { "stringValue": "host.hello" } },
                  { "key": "name", "value": { "stringValue": "Ada" } },
                  { "key": "count", "value": { "intValue": "3" } } ] },
            { "severityNumber": 17, "body": { "kvlistValue": { "values": [
                  { "key": "a", "value": { "boolValue": true } } ] } },
              "attributes": [ { "key": "ctx.run.id", "value": { "stringValue": "run_01m992yh3ggtne3te30x42fp7s" } } ] },
            { "body": { "stringValue": "3.3" }, "attributes": [
                  { "key": "$metadata.ctx.attempt.id", "value": { "stringValue": "run_01m992yh3ggtne3te30x42fp7s_2" } } ] },
            { "body": { "stringValue": "no run" } },
        ] }] }] });
        let lines = log_lines(&request);
        assert_eq!(lines.len(), 3, "a line naming no run is dropped");
        assert_eq!(
            lines[2].run_id, "run_01m992yh3ggtne3te30x42fp7s",
            "3.3 names the attempt"
        );
        assert_eq!(lines[0].message, "greeting");
        assert_eq!(lines[0].level, "info");
        assert_eq!(lines[0].attributes, json!({ "name": "Ada", "count": 3 }));
        assert_eq!(lines[0].logged_at.timestamp(), 1_765_000_000);
        assert_eq!(lines[1].level, "error");
        assert_eq!(lines[1].message, r#"{"a":true}"#);
    }
}
