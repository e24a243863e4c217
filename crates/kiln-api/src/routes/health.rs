//! `/healthz`: the process answers. `/readyz`: it can reach Postgres and
//! Redis, so a load balancer only sends triggers to an instance that can
//! record them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Needs no key, so it says only whether each part answers; why not (a
/// host, a user, a path) goes to the log.
pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    let (postgres, redis) = tokio::join!(app.store.ping(), app.queue.ping());
    if let Err(error) = &postgres {
        tracing::warn!(%error, "readyz: Postgres does not answer");
    }
    if let Err(error) = &redis {
        tracing::warn!(%error, "readyz: Redis does not answer");
    }
    let ready = postgres.is_ok() && redis.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "postgres": { "ok": postgres.is_ok() },
        "redis": { "ok": redis.is_ok() },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
