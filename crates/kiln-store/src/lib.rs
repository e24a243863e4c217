//! Postgres run history: the source of truth for every run and key.
//!
//! Every status change a run goes through is one SQL statement here, guarded
//! by the status it expects (`WHERE status = 'EXECUTING' AND attempt_count =
//! …`), so that a late worker, a duplicate delivery or a concurrent cancel
//! can never move a run backwards. Writes on the hot path (new runs,
//! finished attempts) are grouped into multi-row statements by [`batch`].
//!
//! This crate knows nothing of Redis or HTTP: it returns the run ids that
//! became ready, and its caller pushes them.
//!
//! # Layout
//!
//! - [`keys`]: secret keys, stored encrypted.
//! - [`runs`]: inserting, reading, listing and canceling runs.
//! - [`lifecycle`]: what workers and the scheduler do to runs: claim, renew
//!   leases, finish attempts, dispatch due runs, expire, recover lost runs.
//! - [`schedules`]: cron schedules, and firing each tick exactly once.
//! - [`batches`]: the runs one `batch.trigger` call made.
//! - [`batch`]: a group-commit helper that turns many callers' writes into
//!   one statement.

pub mod batch;
pub mod batches;
pub mod changes;
pub mod dashboard;
pub mod hosts;
pub mod keys;
pub mod lifecycle;
pub mod logs;
pub mod metadata;
pub mod metrics;
pub mod retention;
pub mod runs;
pub mod schedules;
pub mod waitpoints;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use changes::{ChangeReceiver, Interest, RunChange, RunChanges};
pub use lifecycle::{ClaimedRun, Outcome, ReadyRun, StartedRun};
pub use runs::{ListFilter, NewRun, RunPage, RunRow, TagsAdded, TriggerOutcome};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres cannot be reached now; the caller should answer 503.
    #[error("postgres is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("postgres error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("a stored value is invalid: {0}")]
    Corrupt(String),
    /// Postgres refused a value (class 22, data exception): text with a NUL
    /// character, a number out of range. The caller's input is at fault.
    #[error("postgres refused a value: {0}")]
    InvalidData(#[source] sqlx::Error),
    /// The batched statement this write was part of failed.
    #[error("a batched write failed: {0}")]
    BatchFailed(String),
    /// The batch writer's task has stopped (shutdown).
    #[error("the run writer has stopped")]
    WriterStopped,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            // Connection exceptions (08…) and operator intervention (57P…:
            // shutdown, restart, terminated backend) mean "not now".
            sqlx::Error::Database(ref db)
                if db
                    .code()
                    .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")) =>
            {
                StoreError::Unavailable(error)
            }
            sqlx::Error::Database(ref db) if db.code().is_some_and(|code| code.starts_with("22")) => {
                StoreError::InvalidData(error)
            }
            other => StoreError::Database(other),
        }
    }
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::WriterStopped)
    }
}

/// A handle to the run history; cheap to clone.
///
/// Three pools:
/// - `pool` commits durably and plans each statement for its parameters.
/// - `relaxed` commits without waiting for the WAL flush
///   (`synchronous_commit = off`). It serves only writes whose loss in a
///   Postgres crash kiln recovers from by itself: a claim (the lease lapses,
///   or the stale sweep pushes the run again), a lease renewal, a mark that
///   a run is or is not in Redis. Its statements all find rows by key, and
///   it plans them as `keyed` does.
/// - `keyed` commits durably and plans each statement once per connection.
///   It serves the statements that find rows by primary key or by the
///   predicate of a partial index: the three every run goes through
///   (recording new runs, reading popped runs, recording outcomes) and the
///   scheduler's look-ups. Planning the first three on each execution cost
///   Postgres a quarter of its time, and a custom plan made while the
///   statistics said `runs` was empty scanned the whole table for each of
///   the scheduler's look-ups, ten times a second. Sequential scans are off
///   there, so a plan made while `runs` is small still uses the index.
///
/// New runs and finished attempts always go through a durable pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    relaxed: PgPool,
    keyed: PgPool,
    /// One connection of its own for `/metrics`, with a statement timeout:
    /// scrapes never take a connection a trigger or a claim needs.
    gauges: PgPool,
    /// One connection of its own for the run change feed's LISTEN.
    listen: PgPool,
}

pub struct StoreOptions {
    pub max_connections: u32,
    /// How long a query waits for a free connection before the store says
    /// Postgres is unavailable.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

impl Store {
    /// Connects lazily: the pool opens connections on first use, so kiln
    /// starts (and answers 503) while Postgres is down.
    pub fn connect_lazy(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        // No JIT: kiln's statements are short, and with sequential scans
        // off a plan that must scan a small table is costed past every JIT
        // threshold, so Postgres compiled it anew on each execution (see
        // docs/architecture.md, "Plans").
        let connect: PgConnectOptions = url
            .parse::<PgConnectOptions>()?
            .log_statements(tracing::log::LevelFilter::Trace)
            .options([("jit", "off")]);
        // See the type's documentation and docs/architecture.md, "Plans".
        let custom_plans = connect.clone().options([("plan_cache_mode", "force_custom_plan")]);
        let keyed_plans = connect.options([("plan_cache_mode", "force_generic_plan"), ("enable_seqscan", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(custom_plans.clone());
        let relaxed = PgPoolOptions::new()
            .max_connections(options.max_connections.div_ceil(2))
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(keyed_plans.clone().options([("synchronous_commit", "off")]));
        let gauges = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(custom_plans.clone().options([("statement_timeout", "2s")]));
        let listen = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(custom_plans.clone());
        let keyed = PgPoolOptions::new()
            .max_connections(options.max_connections.div_ceil(2))
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(keyed_plans);
        Ok(Self {
            pool,
            relaxed,
            keyed,
            gauges,
            listen,
        })
    }

    /// Starts this process's run change feed, listening on a connection of
    /// its own until `shutdown`.
    pub fn run_changes(&self, shutdown: tokio_util::sync::CancellationToken) -> RunChanges {
        RunChanges::listen(self.listen.clone(), self.pool.clone(), shutdown)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies `migrations/`. Safe to run from several processes at once:
    /// sqlx takes an advisory lock.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../../migrations").run(&self.pool).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
