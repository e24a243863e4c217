//! The one place where errors become HTTP answers. Every error is JSON,
//! `{"error": "<message>"}`, the shape Trigger.dev's SDK reads. Internal
//! details are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECONDS: &str = "2";

impl ApiError {
    /// A storage failure, as a client may see it: a retryable 503 when it
    /// may pass, a bare 500 otherwise. The storage's own words (endpoints,
    /// buckets, paths) go to the log only.
    pub fn from_storage(doing: &str, error: &kiln_storage::StorageError) -> Self {
        tracing::warn!(%error, doing, "storage failed");
        if error.is_transient() {
            ApiError::Unavailable(format!("storage is unavailable ({doing}); retry shortly"))
        } else {
            ApiError::Internal(format!("{doing}: {error}"))
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            ApiError::Unavailable("the run history (Postgres) is unavailable; retry shortly".into())
        } else if let StoreError::InvalidData(detail) = &error {
            tracing::info!(%detail, "postgres refused a value");
            ApiError::Unprocessable(
                "a value cannot be stored: text must not hold a NUL character (\\u0000), and numbers must be in range"
                    .into(),
            )
        } else {
            ApiError::Internal(error.to_string())
        }
    }
}

impl From<kiln_queue::QueueError> for ApiError {
    fn from(error: kiln_queue::QueueError) -> Self {
        tracing::warn!(%error, "redis failed");
        ApiError::Unavailable("the delivery queue (Redis) is unavailable; retry shortly".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unavailable(_) => {
                headers.insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECONDS));
            }
            // The SDK retries some statuses for ~9 s; a 404 or 422 will not
            // change by retrying, so tell it to stop at once.
            ApiError::NotFound(_)
            | ApiError::Forbidden(_)
            | ApiError::Unprocessable(_)
            | ApiError::BadRequest(_)
            | ApiError::PayloadTooLarge(_) => {
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_reach_clients_without_the_storages_words() {
        let backend = kiln_storage::StorageError::Backend {
            operation: "GetObject",
            key: "_kiln/packets/prod/p.json".into(),
            message: "http://minio.internal:9000 bucket kiln-secret-bucket: AccessDenied".into(),
            status: Some(403),
        };
        let error = ApiError::from_storage("reading a packet", &backend);
        let shown = error.to_string();
        assert!(
            !shown.contains("minio") && !shown.contains("kiln-secret-bucket"),
            "{shown}"
        );
        let config = kiln_storage::StorageError::Config("KILN_S3_BUCKET kiln-secret-bucket".into());
        assert_eq!(ApiError::from_storage("x", &config).to_string(), "internal error");
    }
}
