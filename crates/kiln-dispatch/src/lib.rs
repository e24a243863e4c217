//! Hands runs that became ready to Redis, the one step the API (new
//! triggers) and the runtime (delays, retries, cron, children) share.
//!
//! It must stay this small: it knows the store and the queue, and nothing
//! of HTTP, handlers or scheduling, so the API can push without depending
//! on the runtime.

use kiln_queue::Queue;
use kiln_store::{ReadyRun, Store};

/// Pushes ready runs to Redis. Runs it cannot take (the queue's window is
/// full, or Redis is down) are marked as not in Redis, and the scheduler
/// pushes them later: an accepted run never depends on Redis being up, or
/// roomy, at the moment it became ready.
pub async fn push_ready(store: &Store, queue: &Queue, ready: &[ReadyRun]) {
    if ready.is_empty() {
        return;
    }
    let items = ready
        .iter()
        .map(|r| (r.environment.as_str(), r.queue.as_str(), r.id.as_str()));
    let left_over = match queue.push(items).await {
        Ok(refused) => refused,
        Err(error) => {
            tracing::warn!(%error, count = ready.len(), "push to redis failed; the scheduler will push these runs");
            ready.iter().map(|r| r.id.clone()).collect()
        }
    };
    if left_over.is_empty() {
        return;
    }
    if let Err(error) = store.unmark_enqueued(&left_over).await {
        tracing::error!(%error, count = left_over.len(), "could not mark runs for a later push; the stale sweep will find them");
    }
}
