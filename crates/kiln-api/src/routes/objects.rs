//! `GET /api/v1/objects/{key}?expires=…&signature=…`: downloads an object of
//! the local storage backend through a signed, expiring link, the local
//! counterpart of an S3 presigned URL; `PUT` on the same path uploads one
//! through an upload link (how the SDK sends offloaded packets). The link is the credential: no API
//! key is asked for, and nothing is served without a valid signature.
//! With the S3 backend, links point at S3 itself and this route answers 404.

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};

use crate::extract::QueryParams;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kiln_storage::{LinkAccess, LinkError, LocalStore, ObjectKey, StorageError};
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
    QueryParams(query): QueryParams<LinkQuery>,
) -> Result<Response, ApiError> {
    let local = local_store(&app)?;
    let key = verify_link(local, LinkAccess::Get, &key, query)?;
    let object = kiln_storage::ObjectStore::get(local, &key)
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

fn local_store(app: &AppState) -> Result<&LocalStore, ApiError> {
    app.local_objects
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("objects are served by the S3 backend, not by kiln".into()))
}

fn verify_link(local: &LocalStore, access: LinkAccess, key: &str, query: LinkQuery) -> Result<ObjectKey, ApiError> {
    let (Some(expires), Some(signature)) = (query.expires, query.signature) else {
        return Err(ApiError::Forbidden(
            "an object link needs its expires and signature parameters".into(),
        ));
    };
    local
        .links()
        .verify(access, key, &expires, &signature, SystemTime::now())
        .map_err(|error| match error {
            LinkError::Expired | LinkError::BadSignature => ApiError::Forbidden(error.to_string()),
            LinkError::Malformed(_) => ApiError::BadRequest(error.to_string()),
        })
}

/// `PUT`: stores the request body as the object the upload link names. A
/// link is for a packet (a payload), so its body is held to the payload
/// limit like any request: past it the answer is 413 and nothing is stored.
pub async fn upload(
    State(app): State<AppState>,
    Path(key): Path<String>,
    QueryParams(query): QueryParams<LinkQuery>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let local = local_store(&app)?;
    let key = verify_link(local, LinkAccess::Put, &key, query)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "the upload is larger than {} bytes (KILN_MAX_PAYLOAD_BYTES)",
                app.limits.max_body_bytes
            ))
        } else {
            ApiError::BadRequest("the upload's body could not be read".into())
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let size = kiln_storage::put_bytes(local, &key, &body, &content_type)
        .await
        .map_err(|error| ApiError::from_storage("storing an upload", &error))?;
    Ok(axum::Json(serde_json::json!({ "key": key.as_str(), "size": size })).into_response())
}
