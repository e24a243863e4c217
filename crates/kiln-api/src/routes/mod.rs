//! The routes, on Trigger.dev's paths.

pub mod batches;
pub mod health;
pub mod metrics;
pub mod objects;
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

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/tasks/{task_id}/trigger", post(trigger::trigger))
        .route("/api/v1/tasks/batch", post(batches::batch_v1))
        .route("/api/v2/tasks/batch", post(batches::batch_v2))
        .route("/api/v3/batches", post(batches::create_v3))
        .route("/api/v3/batches/{batch_id}/items", post(batches::items_v3))
        .route("/api/v1/batches/{batch_id}", get(batches::retrieve))
        .route("/api/v2/batches/{batch_id}", get(batches::retrieve))
        .route("/api/v2/packets/{*path}", put(packets::upload_link))
        .route("/api/v3/runs/{run_id}", get(runs::retrieve))
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v2/runs/{run_id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{run_id}/replay", post(runs::replay))
        .route("/api/v1/runs/{run_id}/reschedule", post(runs::reschedule))
        .route("/api/v1/runs/{run_id}/tags", post(runs::add_tags))
        .route("/api/v1/auth/jwt/claims", post(runs::jwt_claims))
        .route("/api/v1/objects/{*key}", get(objects::download).put(objects::upload))
        .route("/api/v1/schedules", post(schedules::create).get(schedules::list))
        .route(
            "/api/v1/schedules/{schedule_id}",
            get(schedules::retrieve)
                .put(schedules::update)
                .delete(schedules::delete),
        )
        .route("/api/v1/schedules/{schedule_id}/activate", post(schedules::activate))
        .route(
            "/api/v1/schedules/{schedule_id}/deactivate",
            post(schedules::deactivate),
        )
        .route("/api/v1/timezones", get(schedules::timezones))
        .route("/realtime/v1/runs", get(realtime::runs))
        .route("/realtime/v1/runs/{run_id}", get(realtime::run))
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
