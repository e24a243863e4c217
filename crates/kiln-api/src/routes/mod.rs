//! The routes, on Trigger.dev's paths.

pub mod batches;
pub mod health;
pub mod hosts;
pub mod logs;
pub mod metadata;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod packets;
pub mod queues;
pub mod realtime;
pub mod runs;
pub mod schedules;
pub mod trigger;
pub mod waits;

use axum::Router;
use axum::http::Uri;
use axum::routing::{get, post, put};

use crate::AppState;
use crate::error::ApiError;

/// One operation of the API, as `/openapi.json` describes it.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub path: &'static str,
    /// Needs a secret key (or a public token where the route says so).
    pub authenticated: bool,
    pub doc: Doc,
}

/// What an operation takes and answers: the truth `/openapi.json` tells,
/// written beside the route so the two change together.
#[derive(Debug, Clone, Copy)]
pub struct Doc {
    pub method: &'static str,
    pub summary: &'static str,
    /// The JSON request body's schema, a name under `components.schemas`.
    pub request: Option<&'static str>,
    /// The body, when it is not JSON (NDJSON, raw bytes): its media type,
    /// and the schema of what it carries, if it has one.
    pub raw_request: Option<(&'static str, Option<&'static str>)>,
    pub response: Answer,
    /// Query parameters, each with its JSON schema type.
    pub query: &'static [(&'static str, &'static str)],
    /// Error statuses this operation answers besides those its kind always
    /// may (see [`openapi`]).
    pub errors: &'static [u16],
}

/// A success answer.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// JSON of a schema under `components.schemas`.
    Json(&'static str),
    /// Another media type, with no schema to check.
    Other(&'static str),
}

/// An operation answering JSON of `response`; the builders below add the
/// rest.
const fn op(method: &'static str, summary: &'static str, response: &'static str) -> Doc {
    Doc {
        method,
        summary,
        request: None,
        raw_request: None,
        response: Answer::Json(response),
        query: &[],
        errors: &[],
    }
}

impl Doc {
    const fn takes(mut self, schema: &'static str) -> Self {
        self.request = Some(schema);
        self
    }

    const fn takes_raw(mut self, media_type: &'static str, schema: Option<&'static str>) -> Self {
        self.raw_request = Some((media_type, schema));
        self
    }

    const fn answers(mut self, media_type: &'static str) -> Self {
        self.response = Answer::Other(media_type);
        self
    }

    const fn query(mut self, parameters: &'static [(&'static str, &'static str)]) -> Self {
        self.query = parameters;
        self
    }

    const fn errors(mut self, statuses: &'static [u16]) -> Self {
        self.errors = statuses;
        self
    }
}

/// Builds the router and the list of its operations together, so the
/// OpenAPI document is made from the routes that are served.
struct Catalogue {
    router: Router<AppState>,
    operations: Vec<Operation>,
}

impl Catalogue {
    fn route(mut self, path: &'static str, handler: axum::routing::MethodRouter<AppState>, docs: &[Doc]) -> Self {
        let authenticated = !matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
            && !path.starts_with("/api/v1/objects/");
        for &doc in docs {
            self.operations.push(Operation {
                path,
                authenticated,
                doc,
            });
        }
        self.router = self.router.route(path, handler);
        self
    }
}

/// The filters of `GET /api/v1/runs`, as the SDK sends them.
const RUN_LIST_QUERY: &[(&str, &str)] = &[
    ("page[size]", "integer"),
    ("page[after]", "string"),
    ("page[before]", "string"),
    ("filter[status]", "string"),
    ("filter[taskIdentifier]", "string"),
    ("filter[tag]", "string"),
    ("filter[version]", "string"),
    ("filter[bulkAction]", "string"),
    ("filter[schedule]", "string"),
    ("filter[batch]", "string"),
    ("filter[isTest]", "boolean"),
    ("filter[createdAt][from]", "string"),
    ("filter[createdAt][to]", "string"),
    ("filter[createdAt][period]", "string"),
];

/// What the realtime routes read from their query (Electric's shape).
const REALTIME_QUERY: &[(&str, &str)] = &[
    ("offset", "string"),
    ("handle", "string"),
    ("live", "boolean"),
    ("tags", "string"),
    ("createdAt", "string"),
];

/// Every route with its handlers, and the operations they serve.
pub fn catalogue() -> (Router<AppState>, Vec<Operation>) {
    let c = Catalogue {
        router: Router::new(),
        operations: Vec::new(),
    }
    .route(
        "/healthz",
        get(health::healthz),
        &[op("get", "The process answers", "Health")],
    )
    .route(
        "/readyz",
        get(health::readyz),
        &[op("get", "Postgres and Redis answer (503 otherwise)", "Readiness")],
    )
    .route(
        "/metrics",
        get(metrics::metrics),
        &[op("get", "Prometheus metrics", "").answers("text/plain").errors(&[401])],
    )
    .route(
        "/openapi.json",
        get(openapi::document),
        &[op("get", "This document", "OpenApi")],
    )
    .route(
        "/api/v1/tasks/{task_id}/trigger",
        post(trigger::trigger),
        &[op("post", "Trigger a run of a task", "TriggerAnswer").takes("TriggerRequest")],
    )
    .route(
        "/api/v1/tasks/batch",
        post(batches::batch_v1),
        &[op("post", "Trigger a batch (SDK 3.x)", "BatchV1Answer")
            .takes("BatchRequest")
            .errors(&[404])],
    )
    .route(
        "/api/v2/tasks/batch",
        post(batches::batch_v2),
        &[op("post", "Trigger a batch (SDK 4.0–4.7)", "BatchV2Answer")
            .takes("BatchRequest")
            .errors(&[404])],
    )
    .route(
        "/api/v3/batches",
        post(batches::create_v3),
        &[op("post", "Create a two-phase batch (SDK 4.8)", "StreamedBatch").takes("StreamedBatchRequest")],
    )
    .route(
        "/api/v3/batches/{batch_id}/items",
        post(batches::items_v3),
        &[op("post", "Stream a batch's items as NDJSON", "StreamedItemsAnswer")
            .takes_raw("application/x-ndjson", Some("StreamedItems"))
            .errors(&[400, 413, 422])],
    )
    .route(
        "/api/v1/batches/{batch_id}",
        get(batches::retrieve),
        &[op("get", "Retrieve a batch", "Batch")],
    )
    .route(
        "/api/v2/batches/{batch_id}",
        get(batches::retrieve),
        &[op("get", "Retrieve a batch", "Batch")],
    )
    .route(
        "/api/v1/packets/{*path}",
        put(packets::upload_link).get(packets::download_link),
        &[
            op("put", "An upload link for a packet (SDK 3.3–4.7)", "PacketLink").errors(&[400]),
            op("get", "A download link for a packet (SDK 3.3–4.7)", "PacketLink").errors(&[400]),
        ],
    )
    .route(
        "/api/v2/packets/{*path}",
        put(packets::upload_link),
        &[op("put", "An upload link for an offloaded payload", "PacketLink").errors(&[400])],
    )
    .route(
        "/api/v3/runs/{run_id}",
        get(runs::retrieve),
        &[op("get", "Retrieve a run, with its related runs", "Run")],
    )
    .route(
        "/api/v1/runs",
        get(runs::list),
        &[op("get", "List runs, filtered and paginated", "RunList")
            .query(RUN_LIST_QUERY)
            .errors(&[400, 422])],
    )
    .route(
        "/api/v2/runs/{run_id}/cancel",
        post(runs::cancel),
        &[op("post", "Cancel a run", "RunId")],
    )
    .route(
        "/api/v1/runs/{run_id}/replay",
        post(runs::replay),
        &[op("post", "Replay a run as a new run", "RunId")],
    )
    .route(
        "/api/v1/runs/{run_id}/reschedule",
        post(runs::reschedule),
        &[op("post", "Change a delayed run's delay", "Run").takes("RescheduleRequest")],
    )
    .route(
        "/api/v1/runs/{run_id}/metadata",
        put(metadata::update).get(metadata::read),
        &[
            op(
                "put",
                "Change a run's metadata (and its parent's and root's)",
                "RunMetadata",
            )
            .takes("UpdateMetadataRequest")
            .errors(&[400]),
            op("get", "A run's metadata", "RunMetadata"),
        ],
    )
    .route(
        "/engine/v1/runs/{run_id}/wait/duration",
        post(waits::wait_for_duration),
        &[op(
            "post",
            "Wait until a time, from inside a run (SDK 4.x)",
            "WaitForDuration",
        )
        .takes("WaitForDurationRequest")
        .errors(&[400])],
    )
    .route(
        "/api/v1/runs/{run_id}/tags",
        post(runs::add_tags),
        &[op("post", "Add tags to a run", "Message").takes("TagsRequest")],
    )
    .route(
        "/api/v1/auth/jwt/claims",
        post(runs::jwt_claims),
        &[op("post", "Claims for a public access token", "JwtClaims")],
    )
    .route(
        "/api/v1/objects/{*key}",
        get(objects::download).put(objects::upload),
        &[
            op("get", "Download through a signed link (local storage)", "")
                .answers("application/octet-stream")
                .query(&[("expires", "string"), ("signature", "string")])
                .errors(&[400, 403, 404]),
            op("put", "Upload through a signed link (local storage)", "StoredObject")
                .takes_raw("application/octet-stream", None)
                .query(&[("expires", "string"), ("signature", "string")])
                .errors(&[400, 403, 413]),
        ],
    )
    .route(
        "/api/v1/schedules",
        post(schedules::create).get(schedules::list),
        &[
            op("post", "Create a schedule", "Schedule").takes("CreateScheduleRequest"),
            op("get", "List schedules", "ScheduleList")
                .query(&[("page", "integer"), ("perPage", "integer")])
                .errors(&[400]),
        ],
    )
    .route(
        "/api/v1/schedules/{schedule_id}",
        get(schedules::retrieve)
            .put(schedules::update)
            .delete(schedules::delete),
        &[
            op("get", "Retrieve a schedule", "Schedule"),
            op("put", "Update a schedule", "Schedule").takes("UpdateScheduleRequest"),
            op("delete", "Delete a schedule", "RunId"),
        ],
    )
    .route(
        "/api/v1/schedules/{schedule_id}/activate",
        post(schedules::activate),
        &[op("post", "Activate a schedule", "Schedule")],
    )
    .route(
        "/api/v1/schedules/{schedule_id}/deactivate",
        post(schedules::deactivate),
        &[op("post", "Deactivate a schedule", "Schedule")],
    )
    .route(
        "/api/v1/queues",
        get(queues::list),
        &[op("get", "List queues: waiting, running, paused", "QueueList")
            .query(&[("page", "integer"), ("perPage", "integer")])
            .errors(&[400])],
    )
    .route(
        "/api/v1/queues/{queue}",
        get(queues::retrieve),
        &[op("get", "Retrieve a queue", "Queue")
            .query(&[("type", "string")])
            .errors(&[400, 404])],
    )
    .route(
        "/api/v1/queues/{queue}/pause",
        post(queues::pause),
        &[op("post", "Pause or resume a queue", "Queue")
            .takes("PauseQueueRequest")
            .errors(&[400, 404])],
    )
    .route(
        "/api/v1/timezones",
        get(schedules::timezones),
        &[op("get", "The time zones schedules accept", "Timezones")
            .query(&[("excludeUtc", "boolean")])
            .errors(&[400])],
    )
    .route(
        "/api/v1/runs/{run_id}/logs",
        get(logs::read),
        &[op("get", "A run's log lines, as its task wrote them", "RunLogs")],
    )
    .route(
        "/otel/v1/logs",
        post(logs::ingest),
        &[op(
            "post",
            "OTLP/HTTP JSON logs from inside a task, kept with their run",
            "OtlpAnswer",
        )
        .takes("OtlpExport")],
    )
    .route(
        "/otel/v1/traces",
        post(logs::traces),
        &[op("post", "OTLP/HTTP JSON traces: taken and dropped", "OtlpAnswer").takes("OtlpExport")],
    )
    .route(
        "/api/v1/tasks",
        get(hosts::list_tasks),
        &[op(
            "get",
            "Every task id this environment can trigger, and who serves it",
            "TaskList",
        )],
    )
    .route(
        "/worker/v1/register",
        post(hosts::register),
        &[op("post", "Task host: register the tasks of an app", "HostRegistered").takes("RegisterHostRequest")],
    )
    .route(
        "/worker/v1/claim",
        post(hosts::claim),
        &[op(
            "post",
            "Task host: claim runs, waiting for them up to waitSeconds",
            "ClaimedRuns",
        )
        .takes("ClaimRequest")
        .errors(&[404])],
    )
    .route(
        "/worker/v1/runs/{run_id}/heartbeat",
        post(hosts::heartbeat),
        &[op(
            "post",
            "Task host: renew the lease on a run; learn of a cancel",
            "Heartbeat",
        )
        .takes("HeartbeatRequest")],
    )
    .route(
        "/worker/v1/runs/{run_id}/waitpoints/wait",
        post(hosts::wait_for_children),
        &[op(
            "post",
            "Task host: the ends of the children a run waits for",
            "CompletedWaitpoints",
        )
        .takes("WaitRequest")],
    )
    .route(
        "/worker/v1/runs/{run_id}/complete",
        post(hosts::complete),
        &[op("post", "Task host: record an attempt's result", "Completed").takes("CompleteRequest")],
    )
    .route(
        "/realtime/v1/runs",
        get(realtime::runs),
        &[op("get", "Realtime: runs with a tag (Electric shape)", "ShapeMessages")
            .query(REALTIME_QUERY)
            .errors(&[400, 429])],
    )
    .route(
        "/realtime/v1/runs/{run_id}",
        get(realtime::run),
        &[op("get", "Realtime: one run (Electric shape)", "ShapeMessages")
            .query(REALTIME_QUERY)
            .errors(&[400, 429])],
    );
    (c.router, c.operations)
}

pub fn routes() -> Router<AppState> {
    catalogue().0
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
