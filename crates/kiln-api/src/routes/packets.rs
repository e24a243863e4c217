//! Offloaded packets: SDK 4.8 on sends a payload of 128 KiB or more as a
//! packet. It asks `PUT /api/v2/packets/{path}` for an upload link, PUTs
//! the payload there, then triggers with `payloadType: "application/store"`
//! and the path as payload. kiln keeps packets in its storage under
//! `_kiln/packets/<environment>/`, and at trigger time reads the packet back
//! and records the payload inline, so workers and `runs.retrieve` see the
//! payload itself. A packet is deleted once its run is recorded.
//!
//! SDK 3.3 and 4.1 use `/api/v1/packets/{path}`: `PUT` for an upload link
//! (a task's large output), `GET` for a download link (a packet a task
//! reads back). Both stay inside the caller's environment's packets.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, State};
use kiln_core::auth::Environment;
use kiln_storage::{ObjectKey, StorageError};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::trigger::TriggerBody;

const STORE_TYPE: &str = "application/store";
const UPLOAD_LINK_LIFETIME: Duration = Duration::from_secs(3600);

fn packet_key(environment: Environment, path: &str) -> Result<ObjectKey, ApiError> {
    ObjectKey::parse(format!(
        "{}{}/{path}",
        kiln_storage::PACKETS_PREFIX,
        environment.as_str()
    ))
    .map_err(|e| ApiError::BadRequest(format!("packet path {path:?}: {e}")))
}

fn storage(app: &AppState) -> Result<&kiln_storage::Storage, ApiError> {
    app.storage
        .as_ref()
        .ok_or_else(|| ApiError::Unprocessable("this kiln has no storage for offloaded packets".into()))
}

pub async fn upload_link(
    State(app): State<AppState>,
    Path(path): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let key = packet_key(caller.environment, &path)?;
    let link = storage(&app)?
        .presign_put(&key, UPLOAD_LINK_LIFETIME, SystemTime::now())
        .await
        .map_err(|e| ApiError::from_storage("making an upload link", &e))?;
    Ok(Json(json!({ "presignedUrl": link.url, "storagePath": path })))
}

/// A download link for a packet of the caller's environment; 404 when no
/// such packet was uploaded (or it was already used and deleted).
pub async fn download_link(
    State(app): State<AppState>,
    Path(path): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    let key = packet_key(caller.environment, &path)?;
    let storage = storage(&app)?;
    storage.head(&key).await.map_err(|error| match error {
        StorageError::NotFound { .. } => ApiError::NotFound(format!("no packet {path:?}")),
        other => ApiError::from_storage("finding a packet", &other),
    })?;
    let link = storage
        .presign_get(&key, UPLOAD_LINK_LIFETIME, SystemTime::now())
        .await
        .map_err(|e| ApiError::from_storage("making a download link", &e))?;
    Ok(Json(json!({ "presignedUrl": link.url, "storagePath": path })))
}

/// The type of a packet's content: what its upload said, or else what its
/// name and shape say (the local backend keeps no content types; superjson
/// is an object of `json` and `meta`).
fn packet_type(path: &str, content_type: Option<&str>, text: &str) -> &'static str {
    match content_type.map(|t| t.split(';').next().unwrap_or(t).trim()) {
        Some("application/json") => return "application/json",
        Some("application/super+json") => return "application/super+json",
        Some("text/plain") => return "text/plain",
        _ => {}
    }
    if !path.ends_with(".json") {
        return "text/plain";
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) if map.contains_key("json") && map.keys().all(|k| k == "json" || k == "meta") => {
            "application/super+json"
        }
        _ => "application/json",
    }
}

/// Replaces an offloaded payload by its packet's content. Answers the
/// packet's key, to delete once the run is recorded.
pub async fn load_offloaded(
    app: &AppState,
    caller: &Caller,
    body: &mut TriggerBody,
) -> Result<Option<ObjectKey>, ApiError> {
    let Some(options) = body.options.as_mut() else {
        return Ok(None);
    };
    if options.payload_type.as_deref() != Some(STORE_TYPE) {
        return Ok(None);
    }
    let Some(Value::String(path)) = &body.payload else {
        return Err(ApiError::Unprocessable(
            "an application/store payload must be the packet's path".into(),
        ));
    };
    let path = path.clone();
    let (text, packet_type, key) = read_packet(app, caller, &path).await?;
    options.payload_type = Some(packet_type.to_owned());
    body.payload = Some(Value::String(text));
    Ok(Some(key))
}

/// The packet the SDK uploaded at `path` (a large payload, or a task's
/// large output): its text, its type and its key, to delete once used.
pub async fn read_packet(
    app: &AppState,
    caller: &Caller,
    path: &str,
) -> Result<(String, &'static str, ObjectKey), ApiError> {
    let key = packet_key(caller.environment, path)?;
    let limit = app.limits.max_body_bytes as u64;
    let object = storage(app)?.get(&key).await.map_err(|error| match error {
        StorageError::NotFound { .. } => ApiError::Unprocessable(format!("packet {path:?} was not uploaded")),
        other => ApiError::from_storage("reading a packet", &other),
    })?;
    let too_large = |size: u64| {
        ApiError::PayloadTooLarge(format!(
            "packet {path:?} is {size} bytes, over the limit of {limit} (KILN_MAX_PAYLOAD_BYTES)"
        ))
    };
    if object.size > limit {
        return Err(too_large(object.size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(object.size).unwrap_or(0));
    object
        .reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "reading a packet failed");
            ApiError::Unavailable("storage is unavailable (reading a packet); retry shortly".into())
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    let content_type = object.content_type;
    let text = String::from_utf8(bytes).map_err(|_| ApiError::BadRequest(format!("packet {path:?} is not UTF-8")))?;
    let packet_type = packet_type(path, content_type.as_deref(), &text);
    Ok((text, packet_type, key))
}

/// Deletes packets whose runs are recorded; a failure only leaves a file.
pub async fn forget(app: &AppState, packets: impl IntoIterator<Item = ObjectKey>) {
    let Some(storage) = app.storage.as_ref() else { return };
    for key in packets {
        if let Err(error) = storage.delete(&key).await {
            tracing::warn!(%error, packet = %key, "cannot delete a packet after recording its run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_types_come_from_the_upload_or_the_content() {
        assert_eq!(
            packet_type("a.json", Some("application/super+json"), "{}"),
            "application/super+json"
        );
        assert_eq!(
            packet_type("a.json", None, r#"{"json":{"a":1},"meta":{"values":{}}}"#),
            "application/super+json"
        );
        assert_eq!(
            packet_type("a.json", None, r#"{"json":1,"other":2}"#),
            "application/json"
        );
        assert_eq!(packet_type("a.txt", None, "hello"), "text/plain");
    }
}
