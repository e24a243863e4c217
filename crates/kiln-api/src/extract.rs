//! Request extractors that fail with kiln's JSON errors instead of axum's
//! plain-text rejections: a JSON body (400 when malformed, 422 when of the
//! wrong shape, 413 when over the limit), query parameters (400 when they
//! do not parse) and the authenticated caller.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(format!(
                    "the request body is over the limit of {} bytes (KILN_MAX_PAYLOAD_BYTES)",
                    state.limits.max_body_bytes
                ))
            } else {
                ApiError::BadRequest(format!("could not read the request body: {rejection}"))
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest("the request body is empty; send JSON".into()));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|error| {
            if error.is_data() {
                ApiError::Unprocessable(format!("invalid request: {error}"))
            } else {
                ApiError::BadRequest(format!("malformed JSON: {error}"))
            }
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization header (Bearer <secret key>)".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be \"Bearer <secret key>\"".into()))?;
        state.keys.authenticate(token).await
    }
}

/// Query parameters that fail with kiln's JSON 400, naming the parameter,
/// instead of axum's plain-text rejection.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(query)| QueryParams(query))
            .map_err(|rejection| ApiError::BadRequest(format!("invalid query: {}", rejection.body_text())))
    }
}
