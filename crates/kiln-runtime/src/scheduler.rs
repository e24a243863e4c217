//! The scheduler: a loop that every kiln process with the role runs; the
//! statements it issues skip rows another process holds, so several of them
//! never dispatch a run twice. Each tick it:
//!
//! - pushes runs whose delay or retry back-off has passed (DELAYED → QUEUED);
//! - ends unstarted runs past their ttl as EXPIRED;
//! - recovers runs whose worker stopped renewing its lease (another attempt,
//!   or CRASHED when none is left);
//! - now and then, releases parked runs whose queue has a free slot.

use std::time::Duration;

use kiln_queue::Queue;
use kiln_store::Store;
use tokio_util::sync::CancellationToken;

use crate::push_or_defer;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub tick: Duration,
    /// Rows each step handles per tick; the rest wait for the next tick.
    pub batch: i64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            batch: 2_000,
        }
    }
}

pub struct Scheduler {
    store: Store,
    queue: Queue,
    config: SchedulerConfig,
}

/// Parked runs are normally released by the run that frees the slot; this
/// sweep is the safety net, so it runs less often.
const UNPARK_EVERY_TICKS: u32 = 20;

impl Scheduler {
    pub fn new(store: Store, queue: Queue, config: SchedulerConfig) -> Self {
        Self { store, queue, config }
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
            if let Err(error) = self.tick(ticks % UNPARK_EVERY_TICKS == 0).await {
                tracing::warn!(%error, "scheduler tick failed");
            }
        }
    }

    /// One pass; public so tests can step the scheduler.
    pub async fn tick(&self, sweep_parked: bool) -> Result<(), kiln_store::StoreError> {
        if sweep_parked {
            let released = self.store.unpark_free_slots(self.config.batch).await?;
            if released > 0 {
                tracing::debug!(released, "released parked runs");
            }
        }
        let due = self.store.dispatch_due(self.config.batch).await?;
        push_or_defer(&self.store, &self.queue, &due).await;

        let expired = self.store.expire_due(self.config.batch).await?;
        if expired > 0 {
            tracing::info!(expired, "runs expired before starting");
        }
        let recovered = self.store.recover_lapsed_leases(self.config.batch).await?;
        if !recovered.is_empty() {
            tracing::warn!(count = recovered.len(), "recovered runs whose worker stopped heartbeating");
        }
        push_or_defer(&self.store, &self.queue, &recovered).await;
        Ok(())
    }
}
