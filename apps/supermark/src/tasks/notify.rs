//! `send-dataroom-change-notification`: tells each verified viewer of a
//! dataroom that a document was added, by asking Supermark's own route to
//! send each e-mail (`POST /api/jobs/send-dataroom-new-document-notification`),
//! as Supermark's task does. Archived and expired links, and viewers who
//! turned the dataroom's notifications off, are skipped; a viewer whose
//! e-mail cannot be sent does not stop the others.

use std::sync::Arc;

use chrono::Utc;
use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{db_failure, parse_payload};
use crate::db::DataroomViewer;
use crate::{Shared, task_ids};

pub(crate) struct DataroomChangeNotification(pub(crate) Arc<Shared>);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    dataroom_id: String,
    dataroom_document_id: String,
    sender_user_id: String,
    team_id: String,
}

impl TaskHandler for DataroomChangeNotification {
    fn run(&self, _ctx: TaskContext, payload: Value) -> TaskFuture {
        let shared = Arc::clone(&self.0);
        Box::pin(async move { notify(&shared, payload).await })
    }
}

/// Whether the viewer turned this dataroom's notifications off. Only a
/// preferences object whose every dataroom entry is `{enabled: boolean}`
/// counts, as Supermark's schema check decides.
fn opted_out(preferences: Option<&Value>, dataroom_id: &str) -> bool {
    let Some(rooms) = preferences.and_then(|p| p.get("dataroom")).and_then(Value::as_object) else {
        return false;
    };
    let well_formed = rooms.values().all(|entry| {
        entry
            .as_object()
            .is_some_and(|e| e.get("enabled").is_some_and(Value::is_boolean))
    });
    well_formed && rooms.get(dataroom_id).and_then(|e| e.get("enabled")) == Some(&Value::Bool(false))
}

/// The address the e-mail links to, or `None` when the viewer is skipped.
fn viewer_link(viewer: &DataroomViewer, dataroom_id: &str, marketing_url: &str) -> Option<String> {
    let link = viewer.link.as_ref()?;
    if link.is_archived || link.expires_at.is_some_and(|at| at < Utc::now().naive_utc()) {
        return None;
    }
    if opted_out(viewer.notification_preferences.as_ref(), dataroom_id) {
        return None;
    }
    match (&link.domain_id, &link.domain_slug, &link.slug) {
        (Some(_), Some(domain), Some(slug)) if !domain.is_empty() && !slug.is_empty() => {
            Some(format!("https://{domain}/{slug}"))
        }
        _ => Some(format!("{marketing_url}/view/{}", link.id)),
    }
}

async fn notify(shared: &Shared, payload: Value) -> Result<Value, TaskError> {
    let payload: Payload = parse_payload(task_ids::DATAROOM_CHANGE_NOTIFICATION, payload)?;
    let config = &shared.config;
    let Some(app) = &config.app_url else {
        return Err(TaskError::fatal(
            "SupermarkUnreachable",
            "KILN_SUPERMARK_APP_URL (or NEXTAUTH_URL) is not set: kiln cannot ask Supermark to send the e-mails",
        ));
    };
    let viewers = shared
        .db
        .dataroom_viewers(&payload.team_id, &payload.dataroom_id)
        .await
        .map_err(db_failure)?;
    let url = format!("{app}/api/jobs/send-dataroom-new-document-notification");
    let mut sent = 0;
    for viewer in &viewers {
        let Some(link_url) = viewer_link(viewer, &payload.dataroom_id, &config.marketing_url) else {
            continue;
        };
        let body = json!({
            "dataroomId": payload.dataroom_id,
            "linkUrl": link_url,
            "dataroomDocumentId": payload.dataroom_document_id,
            "viewerId": viewer.viewer_id,
            "senderUserId": payload.sender_user_id,
            "teamId": payload.team_id,
        });
        let mut request = shared.http.post(&url).json(&body);
        if let Some(key) = &config.internal_api_key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(answer) if answer.status().is_success() => sent += 1,
            Ok(answer) => {
                tracing::warn!(viewer = %viewer.viewer_id, status = %answer.status(), "Supermark did not send a notification");
            }
            Err(error) => {
                tracing::warn!(viewer = %viewer.viewer_id, %error, "cannot reach Supermark to notify a viewer")
            }
        }
    }
    tracing::info!(viewers = viewers.len(), sent, "dataroom change notifications");
    Ok(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_opt_out_skips_a_viewer() {
        let off = json!({ "dataroom": { "dr_1": { "enabled": false }, "dr_2": { "enabled": true } } });
        assert!(opted_out(Some(&off), "dr_1"));
        assert!(!opted_out(Some(&off), "dr_2"));
        let malformed = json!({ "dataroom": { "dr_1": { "enabled": false }, "dr_2": { "enabled": "no" } } });
        assert!(!opted_out(Some(&malformed), "dr_1"));
        assert!(!opted_out(None, "dr_1"));
    }
}
