//! The runtime: what turns recorded runs into executed ones.
//!
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
pub mod scheduler;
pub mod worker;

pub use cron::CronRunner;
pub use scheduler::{Scheduler, SchedulerConfig};
pub use worker::{QueueSelection, StepError, Worker, WorkerConfig};
