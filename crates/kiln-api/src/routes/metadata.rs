//! `PUT` and `GET /api/v1/runs/{runId}/metadata`: a run's metadata as the
//! SDK changes it from inside a task (`metadata.set`, `append`, …, and the
//! same on `metadata.parent` and `metadata.root`), and reads it back.

use axum::Json;
use axum::extract::{Path, State};
use kiln_core::metadata::MetadataOperation;
use kiln_store::metadata::{MetadataChanges, MetadataUpdate};
use serde_json::{Map, Value, json};

use super::runs::{check_run_id, run_not_found};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;

/// Trigger.dev's limit on a run's metadata, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;

/// The SDK's `UpdateMetadataRequestBody`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMetadataBody {
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    operations: Vec<MetadataOperation>,
    #[serde(default)]
    parent_operations: Vec<MetadataOperation>,
    #[serde(default)]
    root_operations: Vec<MetadataOperation>,
}

/// `PUT /api/v1/runs/{runId}/metadata`: applies the changes, answers the
/// run's metadata after them.
pub async fn update(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
    JsonBody(body): JsonBody<UpdateMetadataBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    check_run_id(&run_id)?;
    let changes = MetadataChanges {
        replace: body.metadata,
        operations: body.operations,
        parent_operations: body.parent_operations,
        root_operations: body.root_operations,
    };
    match app
        .store
        .update_metadata(caller.environment, &run_id, &changes, MAX_METADATA_BYTES)
        .await?
    {
        MetadataUpdate::Updated(metadata) => Ok(Json(json!({ "metadata": metadata }))),
        MetadataUpdate::NotFound => Err(run_not_found(&run_id)),
        MetadataUpdate::Finished(status) => Err(ApiError::BadRequest(format!(
            "run {run_id} is {} and a finished run's metadata cannot change",
            status.as_str()
        ))),
        MetadataUpdate::TooLarge { bytes } => Err(ApiError::PayloadTooLarge(format!(
            "the metadata would be {bytes} bytes of JSON; at most {MAX_METADATA_BYTES} are kept"
        ))),
    }
}

/// Applies the changes an attempt's result carries (the SDK's last flush:
/// `{operations, parentOperations, rootOperations}`, or a whole metadata
/// object), before the attempt is recorded as over. Changes that cannot be
/// kept (too large, the run already finished) are logged, not refused: the
/// attempt's outcome matters more than its last progress note.
pub(crate) async fn apply_flushed(
    app: &AppState,
    caller: &Caller,
    run_id: &str,
    flushed: Value,
) -> Result<(), ApiError> {
    let is_flush = ["operations", "parentOperations", "rootOperations"]
        .iter()
        .any(|key| flushed.get(key).is_some());
    let changes = if is_flush {
        let body: UpdateMetadataBody = serde_json::from_value(flushed)
            .map_err(|e| ApiError::Unprocessable(format!("result.flushedMetadata: {e}")))?;
        MetadataChanges {
            replace: body.metadata,
            operations: body.operations,
            parent_operations: body.parent_operations,
            root_operations: body.root_operations,
        }
    } else if let Value::Object(metadata) = flushed {
        MetadataChanges {
            replace: Some(metadata),
            operations: Vec::new(),
            parent_operations: Vec::new(),
            root_operations: Vec::new(),
        }
    } else {
        return Ok(());
    };
    if changes.replace.is_none()
        && changes.operations.is_empty()
        && changes.parent_operations.is_empty()
        && changes.root_operations.is_empty()
    {
        return Ok(());
    }
    match app
        .store
        .update_metadata(caller.environment, run_id, &changes, MAX_METADATA_BYTES)
        .await?
    {
        MetadataUpdate::Updated(_) => {}
        other => tracing::warn!(run_id, outcome = ?other, "an attempt's last metadata changes were not kept"),
    }
    Ok(())
}

/// `GET /api/v1/runs/{runId}/metadata`.
pub async fn read(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_secret_key()?;
    check_run_id(&run_id)?;
    let metadata = app
        .store
        .run_metadata(caller.environment, &run_id)
        .await?
        .ok_or_else(|| run_not_found(&run_id))?;
    Ok(Json(
        json!({ "metadata": metadata, "metadataType": "application/json" }),
    ))
}
