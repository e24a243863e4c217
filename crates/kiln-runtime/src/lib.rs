//! The runtime: what turns recorded runs into executed ones.
//!
//! - [`registry`]: which task ids exist and which handler runs each.
//! - [`worker`]: pops run ids from Redis, claims them in Postgres, runs the
//!   handlers under a lease with heartbeats, and records how each attempt
//!   ended (retry with back-off, or a final status).
//! - [`scheduler`]: moves due runs (delays, back-offs) to the queue,
//!   expires runs past their ttl and recovers runs whose worker died.
//!
//! It wires the store and the queue together but knows nothing of HTTP and
//! nothing of what any particular task does.

pub mod registry;
pub mod scheduler;
pub mod worker;

pub use registry::TaskRegistry;
pub use scheduler::{Scheduler, SchedulerConfig};
pub use worker::{QueueSelection, Worker, WorkerConfig};

use kiln_queue::Queue;
use kiln_store::{ReadyRun, Store};

/// Pushes ready runs to Redis; when Redis is unreachable, hands them back
/// to the scheduler (in Postgres) so they are pushed once it is back.
pub async fn push_or_defer(store: &Store, queue: &Queue, ready: &[ReadyRun]) {
    if ready.is_empty() {
        return;
    }
    let items = ready.iter().map(|r| (r.queue.as_str(), r.id.as_str()));
    if let Err(error) = queue.push(items).await {
        tracing::warn!(%error, count = ready.len(), "push to redis failed; the scheduler will retry");
        let ids: Vec<String> = ready.iter().map(|r| r.id.clone()).collect();
        if let Err(error) = store.defer_dispatch(&ids, std::time::Duration::from_secs(1)).await {
            tracing::error!(%error, count = ids.len(), "could not defer dispatch; runs wait for recovery");
        }
    }
}
