//! The scheduler: a loop that every kiln process with the role runs; the
//! statements it issues skip rows another process holds, so several of them
//! never dispatch a run twice. Each tick it:
//!
//! - notices a Redis that lost its data (its epoch token changed) and marks
//!   every queued run for a new push;
//! - makes runs whose delay or retry back-off has passed ready (DELAYED →
//!   QUEUED);
//! - ends unstarted runs past their ttl as EXPIRED;
//! - recovers runs whose worker stopped renewing its lease (another attempt,
//!   or CRASHED when none is left);
//! - tops up each queue's Redis list, up to its window, with ready runs
//!   that are not in Redis (the backlog stays in Postgres);
//! - now and then, releases parked runs whose queue has a free slot and
//!   marks for a new push runs pushed long ago but never claimed (their id
//!   was lost with a worker that popped it and died);
//! - about once a minute, with a retention period set, deletes finished
//!   runs older than it, a bounded batch per statement (see
//!   `kiln_store::retention`).

use std::time::Duration;

use kiln_queue::Queue;
use kiln_store::Store;
use tokio_util::sync::CancellationToken;

use kiln_store::ReadyRun;

use kiln_dispatch::push_ready;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub tick: Duration,
    /// Rows each step handles per tick; the rest wait for the next tick.
    pub batch: i64,
    /// A run pushed this long ago and still queued is pushed again.
    pub requeue_after: std::time::Duration,
    /// Finished runs older than this are deleted; `None` keeps them all.
    pub retention: Option<Duration>,
    /// Rows each retention statement deletes.
    pub retention_batch: i64,
    /// Statements a retention sweep runs at most, so that one sweep of a
    /// large backlog of old runs is spread over several minutes.
    pub retention_statements: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            batch: 2_000,
            requeue_after: Duration::from_secs(30),
            retention: None,
            retention_batch: 1_000,
            retention_statements: 50,
        }
    }
}

pub struct Scheduler {
    store: Store,
    queue: Queue,
    config: SchedulerConfig,
    /// The Redis epoch this scheduler last saw.
    epoch: tokio::sync::Mutex<Option<String>>,
}

/// Parked runs are normally released by the run that frees the slot, and
/// pushed ids are normally claimed; these sweeps are safety nets, so they
/// run less often.
const SWEEP_EVERY_TICKS: u32 = 20;

/// How often the retention sweep runs, in ticks (a minute at the default
/// tick).
const RETENTION_EVERY_TICKS: u32 = 600;

impl Scheduler {
    pub fn new(store: Store, queue: Queue, config: SchedulerConfig) -> Self {
        Self {
            store,
            queue,
            config,
            epoch: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.cancelled() => break,
            }
            ticks = ticks.wrapping_add(1);
            if let Err(error) = self.tick(ticks.is_multiple_of(SWEEP_EVERY_TICKS)).await {
                tracing::warn!(%error, "scheduler tick failed");
            }
            if ticks.is_multiple_of(RETENTION_EVERY_TICKS) {
                if let Err(error) = self.sweep_history().await {
                    tracing::warn!(%error, "retention sweep failed");
                }
                // The dashboard charts the last hour; a day is kept.
                let day_ago = chrono::Utc::now() - chrono::Duration::days(1);
                if let Err(error) = self.store.prune_queue_minutes(day_ago).await {
                    tracing::warn!(%error, "pruning queue throughput failed");
                }
            }
        }
    }

    /// One pass; public so tests can step the scheduler.
    pub async fn tick(&self, sweep: bool) -> Result<(), kiln_store::StoreError> {
        self.check_epoch().await?;
        if sweep {
            let released = self.store.unpark_free_slots(self.config.batch).await?;
            if released > 0 {
                tracing::info!(released, "released parked runs");
            }
            self.release_stale_pushes().await?;
        }
        self.store.dispatch_due(self.config.batch).await?;
        let expired = self.store.expire_due(self.config.batch).await?;
        if expired > 0 {
            tracing::info!(expired, "runs expired before starting");
        }
        let recovered = self.store.recover_lapsed_leases(self.config.batch).await?;
        if recovered > 0 {
            tracing::warn!(recovered, "queued again runs whose worker stopped renewing its lease");
        }
        self.refill().await
    }

    /// Deletes finished runs older than the retention period, a batch per
    /// statement, until none is left or the sweep has run its statements;
    /// answers the runs deleted. Public so tests can sweep when they say.
    pub async fn sweep_history(&self) -> Result<u64, kiln_store::StoreError> {
        let Some(retention) = self.config.retention else {
            return Ok(0);
        };
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let mut total = kiln_store::retention::Deleted::default();
        for _ in 0..self.config.retention_statements {
            let deleted = self
                .store
                .delete_finished_before(cutoff, self.config.retention_batch)
                .await?;
            total.runs += deleted.runs;
            total.batches += deleted.batches;
            let full = u64::try_from(self.config.retention_batch).unwrap_or(0);
            if deleted.runs < full && deleted.batches < full {
                break;
            }
        }
        if total.runs > 0 || total.batches > 0 {
            tracing::info!(
                runs = total.runs,
                batches = total.batches,
                "deleted finished runs past the retention period"
            );
        }
        Ok(total.runs)
    }

    /// Runs pushed long ago and never claimed, in a lane whose Redis list
    /// is empty, were lost on the way: push them again.
    async fn release_stale_pushes(&self) -> Result<(), kiln_store::StoreError> {
        for (environment, queue) in self.store.lanes_with_stale_pushes(self.config.requeue_after).await? {
            if !matches!(self.queue.depth(&environment, &queue).await, Ok(0)) {
                continue;
            }
            let released = self
                .store
                .release_stale_pushes(&environment, &queue, self.config.requeue_after, self.config.batch)
                .await?;
            if released > 0 {
                tracing::warn!(%environment, %queue, released, "runs pushed long ago were never claimed; pushing them again");
            }
        }
        Ok(())
    }

    /// Tops up each lane that has ready runs outside Redis.
    async fn refill(&self) -> Result<(), kiln_store::StoreError> {
        for (environment, queue) in self.store.lanes_awaiting_push().await? {
            let depth = match self.queue.depth(&environment, &queue).await {
                Ok(depth) => usize::try_from(depth).unwrap_or(usize::MAX),
                Err(error) => {
                    tracing::warn!(%error, "redis unavailable; runs wait in postgres");
                    return Ok(());
                }
            };
            let room = self
                .queue
                .window()
                .saturating_sub(depth)
                .min(usize::try_from(self.config.batch).unwrap_or(0));
            if room == 0 {
                continue;
            }
            let ids = self.store.take_for_push(&environment, &queue, room as i64).await?;
            let ready: Vec<ReadyRun> = ids
                .into_iter()
                .map(|id| ReadyRun {
                    id,
                    environment: environment.clone(),
                    queue: queue.clone(),
                })
                .collect();
            push_ready(&self.store, &self.queue, &ready).await;
        }
        Ok(())
    }

    /// A changed (or vanished) epoch token means Redis lost every list.
    /// Call it once before this process pushes anything: a first look
    /// that finds no token (a fresh Redis, or one that lost its data)
    /// queues every run for a push again, and would push twice what this
    /// process had pushed just before.
    pub async fn check_epoch(&self) -> Result<(), kiln_store::StoreError> {
        let candidate = kiln_core::id::random_alphanumeric(16);
        let current = match self.queue.epoch(&candidate).await {
            Ok(epoch) => epoch,
            // Redis is down; nothing to compare until it is back.
            Err(_) => return Ok(()),
        };
        let mut seen = self.epoch.lock().await;
        let lost = match seen.as_deref() {
            Some(previous) => previous != current,
            // First look: if this process set the token, Redis was empty,
            // perhaps wiped while kiln was down.
            None => current == candidate,
        };
        if lost {
            let count = self.store.forget_all_enqueued().await?;
            tracing::warn!(count, "redis lost its data; queued runs will be pushed again");
        }
        *seen = Some(current);
        Ok(())
    }
}
