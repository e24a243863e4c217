//! The routes, on Trigger.dev's paths.

pub mod batches;
pub mod health;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod packets;
pub mod realtime;
pub mod runs;
pub mod schedules;
pub mod trigger;

use axum::Router;
use axum::http::Uri;
use axum::routing::{get, post, put};

use crate::AppState;
use crate::error::ApiError;

/// One operation of the API, as `/openapi.json` describes it.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Needs a secret key (or a public token where the route says so).
    pub authenticated: bool,
}

/// Builds the router and the list of its operations together, so the
/// OpenAPI document is made from the routes that are served.
struct Catalogue {
    router: Router<AppState>,
    operations: Vec<Operation>,
}

impl Catalogue {
    fn route(
        mut self,
        path: &'static str,
        handler: axum::routing::MethodRouter<AppState>,
        operations: &[(&'static str, &'static str)],
    ) -> Self {
        let authenticated = !matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
            && !path.starts_with("/api/v1/objects/");
        for &(method, summary) in operations {
            self.operations.push(Operation {
                method,
                path,
                summary,
                authenticated,
            });
        }
        self.router = self.router.route(path, handler);
        self
    }
}

/// Every route with its handlers, and the operations they serve.
pub fn catalogue() -> (Router<AppState>, Vec<Operation>) {
    let c = Catalogue {
        router: Router::new(),
        operations: Vec::new(),
    }
    .route("/healthz", get(health::healthz), &[("get", "The process answers")])
    .route(
        "/readyz",
        get(health::readyz),
        &[("get", "Postgres and Redis answer (503 otherwise)")],
    )
    .route("/metrics", get(metrics::metrics), &[("get", "Prometheus metrics")])
    .route("/openapi.json", get(openapi::document), &[("get", "This document")])
    .route(
        "/api/v1/tasks/{task_id}/trigger",
        post(trigger::trigger),
        &[("post", "Trigger a run of a task")],
    )
    .route(
        "/api/v1/tasks/batch",
        post(batches::batch_v1),
        &[("post", "Trigger a batch (SDK 3.x)")],
    )
    .route(
        "/api/v2/tasks/batch",
        post(batches::batch_v2),
        &[("post", "Trigger a batch (SDK 4.0–4.7)")],
    )
    .route(
        "/api/v3/batches",
        post(batches::create_v3),
        &[("post", "Create a two-phase batch (SDK 4.8)")],
    )
    .route(
        "/api/v3/batches/{batch_id}/items",
        post(batches::items_v3),
        &[("post", "Stream a batch's items as NDJSON")],
    )
    .route(
        "/api/v1/batches/{batch_id}",
        get(batches::retrieve),
        &[("get", "Retrieve a batch")],
    )
    .route(
        "/api/v2/batches/{batch_id}",
        get(batches::retrieve),
        &[("get", "Retrieve a batch")],
    )
    .route(
        "/api/v2/packets/{*path}",
        put(packets::upload_link),
        &[("put", "An upload link for an offloaded payload")],
    )
    .route(
        "/api/v3/runs/{run_id}",
        get(runs::retrieve),
        &[("get", "Retrieve a run, with its related runs")],
    )
    .route(
        "/api/v1/runs",
        get(runs::list),
        &[("get", "List runs, filtered and paginated")],
    )
    .route(
        "/api/v2/runs/{run_id}/cancel",
        post(runs::cancel),
        &[("post", "Cancel a run")],
    )
    .route(
        "/api/v1/runs/{run_id}/replay",
        post(runs::replay),
        &[("post", "Replay a run as a new run")],
    )
    .route(
        "/api/v1/runs/{run_id}/reschedule",
        post(runs::reschedule),
        &[("post", "Change a delayed run's delay")],
    )
    .route(
        "/api/v1/runs/{run_id}/tags",
        post(runs::add_tags),
        &[("post", "Add tags to a run")],
    )
    .route(
        "/api/v1/auth/jwt/claims",
        post(runs::jwt_claims),
        &[("post", "Claims for a public access token")],
    )
    .route(
        "/api/v1/objects/{*key}",
        get(objects::download).put(objects::upload),
        &[
            ("get", "Download through a signed link (local storage)"),
            ("put", "Upload through a signed link (local storage)"),
        ],
    )
    .route(
        "/api/v1/schedules",
        post(schedules::create).get(schedules::list),
        &[("post", "Create a schedule"), ("get", "List schedules")],
    )
    .route(
        "/api/v1/schedules/{schedule_id}",
        get(schedules::retrieve)
            .put(schedules::update)
            .delete(schedules::delete),
        &[
            ("get", "Retrieve a schedule"),
            ("put", "Update a schedule"),
            ("delete", "Delete a schedule"),
        ],
    )
    .route(
        "/api/v1/schedules/{schedule_id}/activate",
        post(schedules::activate),
        &[("post", "Activate a schedule")],
    )
    .route(
        "/api/v1/schedules/{schedule_id}/deactivate",
        post(schedules::deactivate),
        &[("post", "Deactivate a schedule")],
    )
    .route(
        "/api/v1/timezones",
        get(schedules::timezones),
        &[("get", "The time zones schedules accept")],
    )
    .route(
        "/realtime/v1/runs",
        get(realtime::runs),
        &[("get", "Realtime: runs with a tag (Electric shape)")],
    )
    .route(
        "/realtime/v1/runs/{run_id}",
        get(realtime::run),
        &[("get", "Realtime: one run (Electric shape)")],
    );
    (c.router, c.operations)
}

pub fn routes() -> Router<AppState> {
    catalogue().0
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
