//! `GET /api/v1/objects/{key}?expires=…&signature=…`: downloads an object of
//! the local storage backend through a signed, expiring link, the local
//! counterpart of an S3 presigned URL. The link is the credential: no API
//! key is asked for, and nothing is served without a valid signature.
//! With the S3 backend, links point at S3 itself and this route answers 404.

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kiln_storage::{LinkError, StorageError};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct LinkQuery {
    expires: Option<String>,
    signature: Option<String>,
}

pub async fn download(
    State(app): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<LinkQuery>,
) -> Result<Response, ApiError> {
    let Some(local) = &app.local_objects else {
        return Err(ApiError::NotFound(
            "objects are served by the S3 backend, not by kiln".into(),
        ));
    };
    let (Some(expires), Some(signature)) = (query.expires, query.signature) else {
        return Err(ApiError::Forbidden(
            "an object link needs its expires and signature parameters".into(),
        ));
    };
    let key = local
        .links()
        .verify(&key, &expires, &signature, SystemTime::now())
        .map_err(|error| match error {
            LinkError::Expired | LinkError::BadSignature => ApiError::Forbidden(error.to_string()),
            LinkError::Malformed(_) => ApiError::BadRequest(error.to_string()),
        })?;
    let object = kiln_storage::ObjectStore::get(local.as_ref(), &key)
        .await
        .map_err(|error| match error {
            StorageError::NotFound { .. } => ApiError::NotFound(format!("no object {key}")),
            other => ApiError::Internal(other.to_string()),
        })?;
    let content_type = object
        .content_type
        .unwrap_or_else(|| kiln_storage::content_type_for(key.as_str()).to_owned());
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(object.reader)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(object.size));
    let file_name = key.as_str().rsplit('/').next().unwrap_or("download");
    let ascii_name: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{ascii_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
