//! Claiming: the run ids popped from Redis, read (and, where they must
//! be, recorded EXECUTING) in Postgres. Only claimed runs are started.

use std::collections::HashMap;

use kiln_queue::Delivery;
use kiln_store::ClaimedRun;

use super::{Worker, lock};

impl Worker {
    /// Reads the runs behind `deliveries`, recording EXECUTING those that
    /// must be recorded before they start; answers each startable run and
    /// whether it is recorded.
    /// The runs it claimed, and the error that stopped it, if one did:
    /// runs claimed before an error are still this worker's to start.
    pub(super) async fn claim(
        &self,
        deliveries: Vec<Delivery>,
        limited: &HashMap<String, u32>,
    ) -> (Vec<(ClaimedRun, bool)>, Option<kiln_store::StoreError>) {
        let mut claimed = Vec::new();
        match self.claim_into(&mut claimed, deliveries, limited).await {
            Ok(()) => (claimed, None),
            Err(error) => (claimed, Some(error)),
        }
    }

    async fn claim_into(
        &self,
        claimed: &mut Vec<(ClaimedRun, bool)>,
        deliveries: Vec<Delivery>,
        limited: &HashMap<String, u32>,
    ) -> Result<(), kiln_store::StoreError> {
        // A duplicate id (possible after Redis was recovered) is dropped when
        // this worker already runs it; across workers, the guards on the
        // record and the outcome let one attempt count.
        let deliveries: Vec<Delivery> = {
            let running = lock(&self.running);
            let mut seen = std::collections::HashSet::new();
            deliveries
                .into_iter()
                .filter(|d| !running.contains_key(&d.run_id) && seen.insert(d.run_id.clone()))
                .collect()
        };
        let (limited_runs, free_runs): (Vec<Delivery>, Vec<Delivery>) =
            deliveries.into_iter().partition(|d| limited.contains_key(&d.queue));
        let mut limited_runs = limited_runs;
        if !free_runs.is_empty() {
            let ids: Vec<String> = free_runs.iter().map(|d| d.run_id.clone()).collect();
            let peeked = self.store.peek_runs(&ids).await?;
            let found: std::collections::HashSet<String> = peeked.iter().map(|run| run.id.clone()).collect();
            let (redelivered, fresh): (Vec<ClaimedRun>, Vec<ClaimedRun>) =
                peeked.into_iter().partition(|run| run.redelivered);
            claimed.extend(fresh.into_iter().map(|run| (run, false)));
            if !redelivered.is_empty() {
                let ids: Vec<String> = redelivered.into_iter().map(|run| run.id).collect();
                let recorded = self
                    .store
                    .claim_runs(&ids, self.config.lease, &self.config.worker_id)
                    .await?;
                claimed.extend(recorded.into_iter().map(|run| (run, true)));
            }
            if found.len() < ids.len() {
                // Our view of limits lags; the store refuses runs of queues
                // that have gained a limit since. Claim those one by one.
                let unclaimed: Vec<String> = ids.into_iter().filter(|id| !found.contains(id)).collect();
                let now_limited = self.store.limited_among(&unclaimed).await?;
                limited_runs.extend(free_runs.into_iter().filter(|d| now_limited.contains(&d.run_id)));
            }
        }
        for delivery in limited_runs {
            if let Some(run) = self
                .store
                .claim_limited_run(
                    &delivery.run_id,
                    &delivery.queue,
                    self.config.lease,
                    &self.config.worker_id,
                )
                .await?
            {
                claimed.push((run, true));
            }
        }
        Ok(())
    }
}
