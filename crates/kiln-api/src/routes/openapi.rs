//! `GET /openapi.json`: an OpenAPI 3.0 document made from the route
//! catalogue the router itself is built from, so it lists exactly the
//! routes kiln serves, each with the statuses it answers and the shapes of
//! its bodies. CI checks it against the running server with schemathesis.
//!
//! Which errors an operation answers follows from what it is, plus what
//! its [`Doc`] adds:
//! - every one: 500 (a bug, with no detail);
//! - every one that reads Postgres, Redis or storage: 503 (retry later);
//! - one that needs a key: 401 (no or bad key) and 403 (a public token
//!   where a secret key is needed, or one not scoped to what it asks);
//! - one with a path parameter: 404;
//! - one with a JSON body: 400 (malformed), 413 (over the limit), 422
//!   (well-formed but of the wrong shape or values).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use axum::Json;
use kiln_core::RunStatus;
use serde_json::{Map, Value, json};

use super::{Answer, Operation, catalogue};

/// Operations that answer from the process alone.
const STATELESS: &[&str] = &["/healthz", "/openapi.json"];

fn parameters(op: &Operation) -> Vec<Value> {
    let path = op
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let name = name.trim_start_matches('*');
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "minLength": 1 } })
        });
    let query = op
        .doc
        .query
        .iter()
        .map(|(name, kind)| json!({ "name": name, "in": "query", "required": false, "schema": { "type": kind } }));
    path.chain(query).collect()
}

/// `{*key}` is a catch-all to axum; to OpenAPI it is a plain parameter.
fn openapi_path(path: &str) -> String {
    path.replace("{*", "{")
}

fn json_content(schema: &str) -> Value {
    json!({ "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } })
}

/// The statuses `op` answers, success first.
pub fn statuses(op: &Operation) -> BTreeSet<u16> {
    let mut statuses = BTreeSet::from([200, 500]);
    if !STATELESS.contains(&op.path) {
        statuses.insert(503);
    }
    if op.authenticated {
        statuses.extend([401, 403]);
    }
    if op.path.contains('{') {
        statuses.insert(404);
    }
    if op.doc.request.is_some() {
        statuses.extend([400, 413, 422]);
    }
    statuses.extend(op.doc.errors);
    statuses
}

fn operation(op: &Operation) -> Value {
    let mut responses = Map::new();
    for status in statuses(op) {
        let response = match (status, op.doc.response) {
            (200, Answer::Json(schema)) => json!({ "description": "OK", "content": json_content(schema) }),
            (200, Answer::Other(media_type)) => {
                json!({ "description": "OK", "content": { media_type: { "schema": {} } } })
            }
            // `/readyz` says what does not answer in its own shape.
            (503, Answer::Json(schema @ "Readiness")) => {
                json!({ "description": "A part does not answer", "content": json_content(schema) })
            }
            _ => json!({ "$ref": "#/components/responses/Error" }),
        };
        responses.insert(status.to_string(), response);
    }
    let mut value = json!({
        "summary": op.doc.summary,
        "operationId": format!("{}{}", op.doc.method, op.path.replace(['/', '{', '}', '*', '.'], "_")),
        "parameters": parameters(op),
        "responses": responses,
    });
    if op.authenticated {
        value["security"] = json!([{ "secretKey": [] }]);
    } else {
        value["security"] = json!([]);
    }
    if let Some(schema) = op.doc.request {
        value["requestBody"] = json!({ "required": true, "content": json_content(schema) });
    } else if let Some((media_type, schema)) = op.doc.raw_request {
        let schema = schema.map_or_else(
            || json!({}),
            |name| json!({ "$ref": format!("#/components/schemas/{name}") }),
        );
        value["requestBody"] = json!({ "required": true, "content": { media_type: { "schema": schema } } });
    }
    value
}

/// The document, built once.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let (_, operations) = catalogue();
        let mut paths = Map::new();
        for op in &operations {
            let entry = paths.entry(openapi_path(op.path)).or_insert_with(|| json!({}));
            entry[op.doc.method] = operation(op);
        }
        json!({
            "openapi": "3.0.3",
            "info": {
                "title": "kiln",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "A self-hosted background-job runtime that speaks Trigger.dev's HTTP API.",
            },
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "secretKey": { "type": "http", "scheme": "bearer", "description": "A key from `kiln keys create` (TRIGGER_SECRET_KEY), or a public access token where a route reads runs" }
                },
                "responses": {
                    "Error": {
                        "description": "An error, with a message that says what is wrong",
                        "content": json_content("Error"),
                    }
                },
                "schemas": schemas(),
            }
        })
    })
}

pub async fn document() -> Json<Value> {
    Json(spec().clone())
}

/// The bodies, as kiln reads and writes them (Trigger.dev's shapes; fields
/// not listed are allowed, as Trigger's own schemas pass them through).
fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let date = json!({ "type": "string", "format": "date-time" });
    let statuses: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    let tags = json!({ "oneOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }] });
    let keyed = |kind: &str, value: Value| {
        json!({ "type": "object", "required": ["type", "key", "value"], "properties": {
            "type": { "const": kind }, "key": { "type": "string" }, "value": value } })
    };
    let metadata_operation = json!({ "oneOf": [
        keyed("set", json!({})),
        { "type": "object", "required": ["type", "key"], "properties": {
            "type": { "const": "delete" }, "key": { "type": "string" } } },
        keyed("append", json!({})),
        keyed("remove", json!({})),
        keyed("increment", json!({ "type": "number" })),
        { "type": "object", "required": ["type", "value"], "properties": {
            "type": { "const": "update" }, "value": { "type": "object" } } },
    ] });
    let options = json!({
        "type": "object",
        "properties": {
            "queue": { "type": "object", "required": ["name"], "properties": {
                "name": string, "concurrencyLimit": { "type": "integer", "minimum": 1 } } },
            "concurrencyKey": string,
            "delay": { "oneOf": [{ "type": "string" }, { "type": "number" }] },
            "ttl": { "oneOf": [{ "type": "string" }, { "type": "number" }] },
            "idempotencyKey": string,
            "idempotencyKeyTTL": string,
            "maxAttempts": { "type": "integer" },
            "maxDuration": { "type": "number" },
            "metadata": {},
            "metadataType": string,
            "payloadType": string,
            "tags": tags,
            "test": { "type": "boolean" },
            "parentRunId": string,
            "resumeParentOnCompletion": { "type": "boolean" },
            "parentAttempt": string,
            "dependentAttempt": string,
        }
    });
    let run_summary_properties = json!({
        "id": string,
        "status": { "type": "string", "enum": statuses },
        "taskIdentifier": string,
        "isQueued": { "type": "boolean" },
        "isExecuting": { "type": "boolean" },
        "isWaiting": { "type": "boolean" },
        "isCompleted": { "type": "boolean" },
        "isSuccess": { "type": "boolean" },
        "isFailed": { "type": "boolean" },
        "isCancelled": { "type": "boolean" },
        "isTest": { "type": "boolean" },
        "createdAt": date,
        "updatedAt": date,
        "startedAt": date,
        "finishedAt": date,
        "delayedUntil": date,
        "idempotencyKey": string,
        "ttl": string,
        "tags": { "type": "array", "items": string },
        "costInCents": { "type": "number" },
        "baseCostInCents": { "type": "number" },
        "durationMs": { "type": "integer", "minimum": 0 },
        "metadata": { "type": "object" },
        "depth": { "type": "integer", "minimum": 0 },
    });
    let run_summary_required = json!([
        "id",
        "status",
        "taskIdentifier",
        "isQueued",
        "isExecuting",
        "isCompleted",
        "isSuccess",
        "isFailed",
        "isCancelled",
        "isTest",
        "createdAt",
        "updatedAt",
        "tags",
        "durationMs"
    ]);
    let mut run_properties = run_summary_properties.clone();
    if let Some(properties) = run_properties.as_object_mut() {
        properties.extend(
            json!({
                "triggerFunction": string,
                "payload": {},
                "payloadType": string,
                "output": {},
                "outputType": string,
                "error": { "type": "object", "required": ["message"], "properties": { "message": string, "name": string } },
                "relatedRuns": { "type": "object", "properties": {
                    "parent": { "$ref": "#/components/schemas/RunSummary" },
                    "children": { "type": "array", "items": { "$ref": "#/components/schemas/RunSummary" } } } },
                "attempts": { "type": "array" },
                "attemptCount": { "type": "integer", "minimum": 0 },
                "maxAttempts": { "type": "integer", "minimum": 1 },
                "queue": string,
                "concurrencyKey": string,
                "replayedFrom": string,
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
    }
    let schedule = json!({
        "type": "object",
        "required": ["id", "type", "task", "active", "generator", "timezone", "environments"],
        "properties": {
            "id": string,
            "type": { "type": "string", "enum": ["DECLARATIVE", "IMPERATIVE"] },
            "task": string,
            "active": { "type": "boolean" },
            "deduplicationKey": { "type": "string", "nullable": true },
            "externalId": { "type": "string", "nullable": true },
            "generator": { "type": "object", "required": ["type", "expression", "description"], "properties": {
                "type": { "type": "string", "enum": ["CRON"] }, "expression": string, "description": string } },
            "timezone": string,
            "nextRun": { "type": "string", "format": "date-time", "nullable": true },
            "environments": { "type": "array", "items": { "type": "object", "required": ["id", "type"] } },
        }
    });
    let batch_run = json!({ "type": "object", "required": ["id", "taskIdentifier", "isCached"], "properties": {
        "id": string, "taskIdentifier": string, "isCached": { "type": "boolean" }, "idempotencyKey": string } });
    let item = json!({ "type": "object", "required": ["task"], "properties": {
        "task": string, "payload": {}, "options": { "$ref": "#/components/schemas/TriggerOptions" } } });
    // NDJSON: each element of the array is one line.
    let streamed_items = json!({ "type": "array", "items": { "type": "object", "required": ["index", "task"],
        "properties": { "index": { "type": "integer", "minimum": 0 }, "task": string, "payload": {},
        "options": { "$ref": "#/components/schemas/TriggerOptions" } } } });
    let mut all = json!({
        "Error": { "type": "object", "required": ["error"], "properties": { "error": string } },
        "Health": { "type": "object", "required": ["status"], "properties": { "status": { "type": "string", "enum": ["ok"] } } },
        "Readiness": { "type": "object", "required": ["status", "postgres", "redis"], "properties": {
            "status": { "type": "string", "enum": ["ready", "unavailable"] },
            "postgres": { "type": "object", "required": ["ok"], "properties": { "ok": { "type": "boolean" } } },
            "redis": { "type": "object", "required": ["ok"], "properties": { "ok": { "type": "boolean" } } } } },
        "OpenApi": { "type": "object", "required": ["openapi", "info", "paths"] },
        "TriggerOptions": options,
        "TriggerRequest": { "type": "object", "properties": {
            "payload": {}, "options": { "$ref": "#/components/schemas/TriggerOptions" }, "context": {} } },
        "TriggerAnswer": { "type": "object", "required": ["id"], "properties": {
            "id": string, "isCached": { "type": "boolean" } } },
        "BatchRequest": { "type": "object", "required": ["items"], "properties": {
            "items": { "type": "array", "items": item },
            "parentRunId": string, "resumeParentOnCompletion": { "type": "boolean" },
            "dependentAttempt": string } },
        "BatchV1Answer": { "type": "object", "required": ["id", "isCached", "runs"], "properties": {
            "id": string, "isCached": { "type": "boolean" }, "idempotencyKey": string,
            "runs": { "type": "array", "items": batch_run } } },
        "BatchV2Answer": { "type": "object", "required": ["id", "runCount"], "properties": {
            "id": string, "runCount": { "type": "integer", "minimum": 0 } } },
        "StreamedBatchRequest": { "type": "object", "required": ["runCount"], "properties": {
            "runCount": { "type": "integer" }, "idempotencyKey": string, "idempotencyKeyTTL": string,
            "parentRunId": string, "resumeParentOnCompletion": { "type": "boolean" } } },
        "StreamedBatch": { "type": "object", "required": ["id", "runCount", "isCached"], "properties": {
            "id": string, "runCount": { "type": "integer", "minimum": 1 }, "isCached": { "type": "boolean" },
            "idempotencyKey": string } },
        "StreamedItems": streamed_items,
        "StreamedItemsAnswer": { "type": "object", "required": ["id", "itemsAccepted", "itemsDeduplicated", "sealed"],
            "properties": { "id": string, "itemsAccepted": { "type": "integer", "minimum": 0 },
            "itemsDeduplicated": { "type": "integer", "minimum": 0 }, "sealed": { "type": "boolean" },
            "enqueuedCount": { "type": "integer" }, "expectedCount": { "type": "integer" } } },
        "Batch": { "type": "object", "required": ["id", "status", "createdAt", "updatedAt", "runCount", "runs"], "properties": {
            "id": string, "status": { "type": "string", "enum": ["PENDING", "COMPLETED"] }, "idempotencyKey": string,
            "createdAt": date, "updatedAt": date, "runCount": { "type": "integer", "minimum": 0 },
            "runs": { "type": "array", "items": string } } },
        "PacketLink": { "type": "object", "required": ["presignedUrl", "storagePath"], "properties": {
            "presignedUrl": string, "storagePath": string } },
        "WaitForDurationRequest": { "type": "object", "required": ["date"], "properties": {
            "date": date, "idempotencyKey": string, "idempotencyKeyTTL": string } },
        "WaitForDuration": { "type": "object", "required": ["waitUntil", "waitpoint"], "properties": {
            "waitUntil": date, "waitpoint": { "type": "object", "required": ["id"], "properties": { "id": string } } } },
    });
    let runs_and_schedules = json!({
        "RunSummary": { "type": "object", "required": run_summary_required, "properties": run_summary_properties },
        "Run": { "type": "object", "required": ["id", "status", "taskIdentifier", "createdAt", "updatedAt", "tags",
            "payloadType", "relatedRuns", "attempts", "attemptCount", "maxAttempts", "queue", "depth"],
            "properties": run_properties },
        "RunList": { "type": "object", "required": ["data", "pagination"], "properties": {
            "data": { "type": "array", "items": { "$ref": "#/components/schemas/RunSummary" } },
            "pagination": { "type": "object", "properties": { "next": string, "previous": string } } } },
        "RunId": { "type": "object", "required": ["id"], "properties": { "id": string } },
        "RescheduleRequest": { "type": "object", "required": ["delay"], "properties": {
            "delay": { "oneOf": [{ "type": "string" }, { "type": "number" }] } } },
        "TagsRequest": { "type": "object", "required": ["tags"], "properties": { "tags": tags } },
        "Message": { "type": "object", "required": ["message"], "properties": { "message": string } },
        "MetadataOperation": metadata_operation,
        "UpdateMetadataRequest": { "type": "object", "properties": {
            "metadata": { "type": "object" },
            "operations": { "type": "array", "items": { "$ref": "#/components/schemas/MetadataOperation" } },
            "parentOperations": { "type": "array", "items": { "$ref": "#/components/schemas/MetadataOperation" } },
            "rootOperations": { "type": "array", "items": { "$ref": "#/components/schemas/MetadataOperation" } } } },
        "RunMetadata": { "type": "object", "required": ["metadata"], "properties": {
            "metadata": { "type": "object" }, "metadataType": string } },
        "JwtClaims": { "type": "object", "required": ["sub", "pub"], "properties": {
            "sub": string, "pub": { "type": "boolean" } } },
        "StoredObject": { "type": "object", "required": ["key", "size"], "properties": {
            "key": string, "size": { "type": "integer", "minimum": 0 } } },
        "CreateScheduleRequest": { "type": "object", "required": ["task", "cron"], "properties": {
            "task": string, "cron": string, "deduplicationKey": string, "externalId": string, "timezone": string } },
        "UpdateScheduleRequest": { "type": "object", "required": ["task", "cron"], "properties": {
            "task": string, "cron": string, "externalId": string, "timezone": string } },
        "Schedule": schedule,
        "ScheduleList": { "type": "object", "required": ["data", "pagination"], "properties": {
            "data": { "type": "array", "items": { "$ref": "#/components/schemas/Schedule" } },
            "pagination": { "type": "object", "required": ["currentPage", "totalPages", "count"], "properties": {
                "currentPage": { "type": "integer" }, "totalPages": { "type": "integer" }, "count": { "type": "integer" } } } } },
        "Queue": { "type": "object", "required": ["id", "name", "type", "running", "queued", "paused", "concurrencyLimit"],
            "properties": { "id": string, "name": string, "type": { "type": "string", "enum": ["task", "custom"] },
                "running": { "type": "integer" }, "queued": { "type": "integer" }, "paused": { "type": "boolean" },
                "concurrencyLimit": { "type": "integer", "nullable": true } } },
        "QueueList": { "type": "object", "required": ["data", "pagination"], "properties": {
            "data": { "type": "array", "items": { "$ref": "#/components/schemas/Queue" } },
            "pagination": { "type": "object", "required": ["currentPage", "totalPages", "count"], "properties": {
                "currentPage": { "type": "integer" }, "totalPages": { "type": "integer" }, "count": { "type": "integer" } } } } },
        "PauseQueueRequest": { "type": "object", "required": ["action"], "properties": {
            "type": { "type": "string", "enum": ["id", "task", "custom"] },
            "action": { "type": "string", "enum": ["pause", "resume"] } } },
        "Timezones": { "type": "object", "required": ["timezones"], "properties": {
            "timezones": { "type": "array", "items": string } } },
        "ShapeMessages": { "type": "array", "items": { "type": "object", "required": ["headers"] } },
    });
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), runs_and_schedules) {
        all.extend(more);
    }
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), task_host_schemas()) {
        all.extend(more);
    }
    all
}

/// The worker API a task host uses, and the task list.
fn task_host_schemas() -> Value {
    let string = json!({ "type": "string" });
    json!({
        "TaskList": { "type": "object", "required": ["tasks"], "properties": {
            "tasks": { "type": "array", "items": { "type": "object", "required": ["id", "servedBy", "queue"], "properties": {
                "id": string, "servedBy": { "enum": ["kiln", "host"] }, "queue": string,
                "maxAttempts": { "type": "integer" }, "filePath": string, "host": { "type": "object" } } } } } },
        "RegisterHostRequest": { "type": "object", "required": ["host", "sdk", "tasks"], "properties": {
            "host": { "type": "object", "required": ["hostname", "slots"], "properties": {
                "hostname": string, "pid": { "type": "integer" }, "slots": { "type": "integer" } } },
            "sdk": { "type": "object", "required": ["version"], "properties": { "version": string } },
            "contentHash": string,
            "tasks": { "type": "array", "items": { "type": "object", "required": ["id", "filePath"], "properties": {
                "id": string, "filePath": string, "exportName": string,
                "queue": { "type": "object", "properties": { "name": string, "concurrencyLimit": { "type": "integer" } } },
                "retry": { "type": "object", "properties": { "maxAttempts": { "type": "integer" } } },
                "maxDuration": { "type": "number" }, "machine": {},
                "schedule": { "type": "object", "required": ["cron"], "properties": { "cron": string, "timezone": string } } } } },
            "queues": { "type": "array", "items": { "type": "object", "properties": {
                "name": string, "concurrencyLimit": { "type": "integer" } } } } } },
        "HostRegistered": { "type": "object", "required": ["workerId", "served", "servedByKiln"], "properties": {
            "workerId": string, "served": { "type": "array", "items": string }, "schedules": { "type": "integer" },
            "servedByKiln": { "type": "array", "items": string } } },
        "ClaimRequest": { "type": "object", "required": ["workerId", "free"], "properties": {
            "workerId": string, "free": { "type": "integer" }, "waitSeconds": { "type": "number" } } },
        "ClaimedRuns": { "type": "object", "required": ["runs"], "properties": {
            "runs": { "type": "array", "items": { "type": "object", "required": ["runId", "attempt", "leaseMs", "execution"],
                "properties": { "runId": string, "attempt": { "type": "integer" }, "leaseMs": { "type": "integer" },
                    "execution": { "type": "object" } } } } } },
        "HeartbeatRequest": { "type": "object", "required": ["workerId"], "properties": { "workerId": string } },
        "Heartbeat": { "type": "object", "required": ["cancel", "leaseMs"], "properties": {
            "cancel": { "type": "boolean" }, "leaseMs": { "type": "integer" } } },
        "CompleteRequest": { "type": "object", "required": ["workerId", "attempt", "result"], "properties": {
            "workerId": string, "attempt": { "type": "integer" },
            "result": { "type": "object", "required": ["ok"], "properties": {
                "ok": { "type": "boolean" }, "output": {}, "outputType": string, "error": {},
                "retry": { "type": "object", "required": ["delay"], "properties": { "delay": { "type": "number" } } },
                "skippedRetrying": { "type": "boolean" }, "flushedMetadata": { "type": "object" }, "metadata": { "type": "object" } } } } },
        "WaitRequest": { "type": "object", "required": ["workerId"], "properties": {
            "workerId": string, "waitSeconds": { "type": "number" },
            "seen": { "type": "array", "items": string } } },
        "CompletedWaitpoints": { "type": "object", "required": ["completedWaitpoints"], "properties": {
            "completedWaitpoints": { "type": "array", "items": { "type": "object",
                "required": ["id", "friendlyId", "type", "completedAt", "outputIsError"] } } } },
        "RunLogs": { "type": "object", "required": ["logs"], "properties": {
            "logs": { "type": "array", "items": { "type": "object", "required": ["time", "level", "message", "attributes"],
                "properties": { "time": string, "level": string, "message": string, "attributes": { "type": "object" } } } } } },
        "OtlpExport": { "type": "object" },
        "OtlpAnswer": { "type": "object" },
        "Completed": { "type": "object", "required": ["recorded"], "properties": { "recorded": { "type": "boolean" } } },
    })
}
