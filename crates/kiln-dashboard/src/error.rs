//! Dashboard errors, each shown once as an HTML page with its status.
//! Internal details are logged, never shown.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use kiln_api::ApiError;
use kiln_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("too many failed sign-ins; try again in {0} s")]
    TooManyAttempts(u64),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for DashboardError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            DashboardError::Unavailable("the run history (Postgres) is unavailable; retry shortly".into())
        } else {
            DashboardError::Internal(error.to_string())
        }
    }
}

impl From<ApiError> for DashboardError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::NotFound(message) => DashboardError::NotFound(message),
            ApiError::Forbidden(message) | ApiError::Unauthorized(message) => DashboardError::Forbidden(message),
            ApiError::BadRequest(message) | ApiError::Unprocessable(message) | ApiError::PayloadTooLarge(message) => {
                DashboardError::BadRequest(message)
            }
            ApiError::Unavailable(message) | ApiError::TooManyRequests(message) => DashboardError::Unavailable(message),
            ApiError::Internal(detail) => DashboardError::Internal(detail),
        }
    }
}

impl From<askama::Error> for DashboardError {
    fn from(error: askama::Error) -> Self {
        DashboardError::Internal(format!("template: {error}"))
    }
}

impl DashboardError {
    fn status(&self) -> StatusCode {
        match self {
            DashboardError::NotFound(_) => StatusCode::NOT_FOUND,
            DashboardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashboardError::Forbidden(_) => StatusCode::FORBIDDEN,
            DashboardError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            DashboardError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            DashboardError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl DashboardError {
    /// `html` with `status`, and when too many sign-ins failed, how long to
    /// wait (`Retry-After`).
    pub(crate) fn answer(&self, status: StatusCode, html: String) -> Response {
        let mut response = (status, Html(html)).into_response();
        if let DashboardError::TooManyAttempts(seconds) = self
            && let Ok(value) = seconds.to_string().parse()
        {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        if let DashboardError::Internal(detail) = &self {
            tracing::error!(%detail, "dashboard request failed");
        }
        let status = self.status();
        let page = crate::view::ErrorPage {
            status: status.as_u16(),
            message: self.to_string(),
        };
        self.answer(status, crate::view::render_or_plain(&page))
    }
}
