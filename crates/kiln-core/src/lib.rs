//! kiln's domain: what a run is and the rules it lives by, with no I/O.
//!
//! Everything here is plain data and pure functions, so the API, the store,
//! the queue and the workers agree on one vocabulary and the rules can be
//! unit-tested without Postgres or Redis. Nothing in this crate may open a
//! socket, touch a file or read the clock's configuration from the
//! environment.
//!
//! # Layout
//!
//! - [`id`]: run and key identifiers (`run_…`, time-ordered).
//! - [`status`]: [`RunStatus`] with Trigger.dev's names and the state machine.
//! - [`duration`]: Trigger's duration strings (`"30s"`, `"1h30m"`, `"40d"`).
//! - [`retry`]: the retry policy and its exponential back-off with jitter.
//! - [`options`]: trigger options, validated into a [`options::RunSpec`].
//! - [`metadata`]: the SDK's metadata operations and how they apply.
//! - [`task`]: the contract between the runtime and a task handler.
//! - [`registry`]: which task ids exist, their handlers and defaults.
//! - [`schedule`]: cron expressions in a time zone, and their next firings.
//! - [`auth`]: secret keys, their encryption at rest, and HS256 tokens.

pub mod auth;
pub mod duration;
pub mod id;
pub mod metadata;
pub mod options;
pub mod registry;
pub mod retry;
pub mod schedule;
pub mod status;
pub mod task;

pub use id::RunId;
pub use status::RunStatus;
