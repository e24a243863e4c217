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

pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    let (postgres, redis) = tokio::join!(app.store.ping(), app.queue.ping());
    let describe = |result: Result<(), String>| match result {
        Ok(()) => json!({ "ok": true }),
        Err(error) => json!({ "ok": false, "error": error }),
    };
    let ready = postgres.is_ok() && redis.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "postgres": describe(postgres.map_err(|e| e.to_string())),
        "redis": describe(redis.map_err(|e| e.to_string())),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
