//! The runtime: what turns recorded runs into executed ones.
//!
//! - [`registry`]: which task ids exist and which handler runs each.
//! - [`worker`]: pops run ids from Redis, claims them in Postgres, runs the
//!   handlers under a lease with heartbeats, and records how each attempt
//!   ended (retry with back-off, or a final status).
//! - [`scheduler`]: moves due runs (delays, back-offs) to the queue,
//!   expires runs past their ttl and recovers runs whose worker died.
//! - [`cron`]: fires cron schedules, each tick once across processes.
//!
//! It wires the store and the queue together but knows nothing of HTTP and
//! nothing of what any particular task does.

mod children;
pub mod cron;
pub mod registry;
pub mod scheduler;
pub mod worker;

pub use cron::CronRunner;
pub use registry::TaskRegistry;
pub use scheduler::{Scheduler, SchedulerConfig};
pub use worker::{QueueSelection, Worker, WorkerConfig};

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
    let items = ready.iter().map(|r| (r.queue.as_str(), r.id.as_str()));
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
