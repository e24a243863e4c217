//! Recording while runs go: runs going for [`RECORD_AFTER`] recorded
//! EXECUTING in one statement, leases renewed by the heartbeat (which
//! learns of cancels), and a running attempt's metadata written as it
//! changes.

use std::sync::Arc;
use std::time::Duration;

use kiln_core::task::RunMetadata;
use kiln_store::Store;

use super::{RECORD_AFTER, Recorded, Worker, lock};

impl Worker {
    /// Runs until aborted: records EXECUTING the runs that have been going
    /// for [`RECORD_AFTER`], all due at once in one statement.
    pub(super) async fn record_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(RECORD_AFTER / 2);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let due: Vec<kiln_store::StartedRun> = lock(&self.running)
                .iter()
                .filter(|(_, run)| *run.recorded.borrow() == Recorded::NotYet && run.started.elapsed() >= RECORD_AFTER)
                .map(|(id, run)| {
                    run.recorded.send_replace(Recorded::InFlight);
                    kiln_store::StartedRun {
                        id: id.clone(),
                        attempt: run.attempt,
                        started_at: run.started_at,
                        metadata: metadata_set(&run.metadata),
                    }
                })
                .collect();
            if due.is_empty() {
                continue;
            }
            let result = self
                .store
                .claim_started(&due, self.config.lease, &self.config.worker_id)
                .await;
            let running = lock(&self.running);
            let recorded: std::collections::HashSet<String> = match result {
                Ok(ids) => ids.into_iter().collect(),
                Err(error) => {
                    // Tried again next tick; meanwhile the runs go on, and
                    // one that ends is recorded straight from QUEUED.
                    tracing::warn!(%error, count = due.len(), "cannot record started runs yet");
                    for run in &due {
                        if let Some(entry) = running.get(&run.id) {
                            entry.recorded.send_replace(Recorded::NotYet);
                        }
                    }
                    continue;
                }
            };
            for run in &due {
                let Some(entry) = running.get(&run.id) else { continue };
                if recorded.contains(&run.id) {
                    entry.recorded.send_replace(Recorded::Yes);
                } else {
                    tracing::info!(run_id = %run.id, "run changed before it was recorded as started; stopping it");
                    entry.cancel.cancel();
                    entry.recorded.send_replace(Recorded::Refused);
                }
            }
        }
    }

    /// Runs until aborted: leases must stay renewed while the worker drains.
    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.config.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Only recorded runs hold a lease.
            let ids: Vec<String> = lock(&self.running)
                .iter()
                .filter(|(_, run)| *run.recorded.borrow() == Recorded::Yes)
                .map(|(id, _)| id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            match self
                .store
                .renew_leases(&ids, self.config.lease, &self.config.worker_id)
                .await
            {
                Ok(gone) => {
                    let running = lock(&self.running);
                    for id in gone {
                        if let Some(run) = running.get(&id) {
                            tracing::info!(run_id = %id, "run is no longer ours (canceled or taken over); stopping it");
                            run.cancel.cancel();
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot renew leases"),
            }
        }
    }
}

/// Bounds how often a run's metadata is written while it runs: a handler
/// may update it on every page, Postgres sees at most five writes a second.
const METADATA_WRITE_INTERVAL: Duration = Duration::from_millis(200);

/// Writes the run's metadata as its handler changes it, until the attempt
/// ends (the caller aborts this) or the run is no longer this attempt's.
/// Nothing is written before the run is recorded EXECUTING (that record
/// carries the metadata so far); a change made meanwhile is written then.
pub(super) async fn write_metadata(
    store: Store,
    run_id: String,
    attempt: i32,
    mut changes: tokio::sync::watch::Receiver<serde_json::Map<String, serde_json::Value>>,
    mut recorded: tokio::sync::watch::Receiver<Recorded>,
) {
    if recorded.wait_for(|state| *state == Recorded::Yes).await.is_err() {
        return;
    }
    while changes.changed().await.is_ok() {
        let snapshot = serde_json::Value::Object(changes.borrow_and_update().clone());
        match store.set_running_metadata(&run_id, attempt, &snapshot).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => tracing::warn!(%error, "cannot write the run's metadata yet"),
        }
        tokio::time::sleep(METADATA_WRITE_INTERVAL).await;
    }
}

/// The run's metadata as it stands, or `None` while nothing is set (so a
/// write keeps what is recorded).
pub(super) fn metadata_set(metadata: &RunMetadata) -> Option<serde_json::Value> {
    let snapshot = metadata.snapshot();
    snapshot.as_object().is_some_and(|m| !m.is_empty()).then_some(snapshot)
}
