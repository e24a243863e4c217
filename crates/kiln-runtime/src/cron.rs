//! Fires cron schedules. Every process with the scheduler role runs a
//! [`CronRunner`]; each second it fires the schedules that are due, in a
//! transaction that records the run and moves the schedule to its next
//! tick (see `kiln_store::schedules`), so a tick fires once whatever the
//! number of processes. A run's payload is Trigger.dev's scheduled-task
//! payload: `scheduleId`, `type`, `timestamp`, `lastTimestamp`,
//! `externalId`, `timezone`, `upcoming`.
//!
//! Ticks missed while no kiln was running fire once, not once per missed
//! tick, and the schedule resumes from the present.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kiln_core::RunId;
use kiln_core::auth::Environment;
use kiln_core::options::{TaskDefaults, TriggerOptions};
use kiln_core::schedule::CronSchedule;
use kiln_queue::Queue;
use kiln_store::schedules::{Firing, ScheduleRow, ScheduleSpec};
use kiln_store::{NewRun, Store, StoreError};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use kiln_core::registry::TaskRegistry;

/// Schedules fired per transaction.
const FIRE_BATCH: i64 = 100;
/// Firings listed in a run's `upcoming`.
const UPCOMING: usize = 10;

pub struct CronRunner {
    store: Store,
    queue: Queue,
    registry: Arc<TaskRegistry>,
    tick: Duration,
    /// The task hosts' tasks, as last read: their schedules fire too.
    hosted: std::sync::Mutex<Hosted>,
}

#[derive(Default)]
struct Hosted {
    read_at: Option<std::time::Instant>,
    defaults: HashMap<(String, String), TaskDefaults>,
}

/// How long the task hosts' tasks are trusted before they are read again.
const HOSTED_REFRESH: Duration = Duration::from_secs(5);

impl CronRunner {
    pub fn new(store: Store, queue: Queue, registry: Arc<TaskRegistry>, tick: Duration) -> Self {
        Self {
            store,
            queue,
            registry,
            tick,
            hosted: std::sync::Mutex::default(),
        }
    }

    /// The task hosts' task defaults, read again when stale.
    async fn hosted_defaults(&self) -> HashMap<(String, String), TaskDefaults> {
        let fresh = {
            let hosted = self.hosted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            hosted
                .read_at
                .is_some_and(|at| at.elapsed() < HOSTED_REFRESH)
                .then(|| hosted.defaults.clone())
        };
        if let Some(defaults) = fresh {
            return defaults;
        }
        match self.store.served_tasks().await {
            Ok(served) => {
                let defaults: HashMap<(String, String), TaskDefaults> = served
                    .iter()
                    .map(|task| ((task.environment.clone(), task.task_id.clone()), task.defaults()))
                    .collect();
                let mut hosted = self.hosted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *hosted = Hosted {
                    read_at: Some(std::time::Instant::now()),
                    defaults: defaults.clone(),
                };
                defaults
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the task hosts' tasks");
                let hosted = self.hosted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                hosted.defaults.clone()
            }
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.cancelled() => return,
            }
            // A full batch means more may be due: go on at once.
            loop {
                match self.fire_due().await {
                    Ok(fired) if fired as i64 == FIRE_BATCH => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "cannot fire schedules now");
                        break;
                    }
                }
            }
        }
    }

    /// Fires what is due now; answers how many schedules fired.
    pub async fn fire_due(&self) -> Result<usize, StoreError> {
        let fired = std::sync::atomic::AtomicUsize::new(0);
        let hosted = self.hosted_defaults().await;
        let ready = self
            .store
            .fire_due_schedules(FIRE_BATCH, |schedule| {
                fired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Read after Postgres found the schedule due, so a run is
                // never recorded as made before its own tick.
                plan_firing(&self.registry, &hosted, schedule, Utc::now())
            })
            .await?;
        kiln_dispatch::push_ready(&self.store, &self.queue, &ready).await;
        Ok(fired.into_inner())
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The run a due schedule makes now, and its next tick.
fn plan_firing(
    registry: &TaskRegistry,
    hosted: &HashMap<(String, String), TaskDefaults>,
    schedule: &ScheduleRow,
    now: DateTime<Utc>,
) -> Firing {
    let span = tracing::info_span!("schedule", schedule_id = %schedule.id, task = %schedule.task_identifier);
    let _entered = span.enter();
    let cron = match CronSchedule::parse(&schedule.cron, Some(&schedule.timezone)) {
        Ok(cron) => cron,
        Err(error) => {
            tracing::error!(%error, "schedule cannot fire; deactivated");
            return Firing {
                run: None,
                next_run_at: None,
            };
        }
    };
    let tick = schedule.next_run_at.unwrap_or(now);
    let next_run_at = cron.next_after(tick.max(now));
    // kiln's own task first, as for a trigger; else a task host's.
    let defaults = registry
        .get(&schedule.task_identifier)
        .map(|task| &task.defaults)
        .or_else(|| hosted.get(&(schedule.environment.clone(), schedule.task_identifier.clone())));
    let (Some(defaults), Some(environment)) = (defaults, Environment::parse(&schedule.environment)) else {
        tracing::warn!("schedule's task is not known to kiln; tick skipped");
        return Firing { run: None, next_run_at };
    };
    let spec = match TriggerOptions::default().validate(now, defaults) {
        Ok(spec) => spec,
        Err(error) => {
            tracing::error!(%error, "schedule's task defaults are invalid; tick skipped");
            return Firing { run: None, next_run_at };
        }
    };
    let upcoming: Vec<String> = cron.upcoming(tick, UPCOMING).into_iter().map(timestamp).collect();
    let mut payload = json!({
        "scheduleId": schedule.id,
        "type": schedule.kind,
        "timestamp": timestamp(tick),
        "timezone": schedule.timezone,
        "upcoming": upcoming,
    });
    if let Some(last) = schedule.last_run_at {
        payload["lastTimestamp"] = json!(timestamp(last));
    }
    if let Some(external_id) = &schedule.external_id {
        payload["externalId"] = json!(external_id);
    }
    let run = NewRun {
        id: RunId::generate(u64::try_from(now.timestamp_millis()).unwrap_or(0)),
        environment,
        task_identifier: schedule.task_identifier.clone(),
        payload,
        payload_type: "application/json".into(),
        spec,
        created_at: now,
        replayed_from: None,
        parent_run_id: None,
    };
    tracing::info!(run_id = %run.id.as_str(), tick = %timestamp(tick), "schedule fired");
    Firing {
        run: Some(run),
        next_run_at,
    }
}

/// A schedule declared in kiln's configuration.
#[derive(Debug, Clone)]
pub struct DeclaredSchedule {
    pub task: String,
    pub cron: CronSchedule,
    pub environment: Environment,
}

/// Makes the stored declarative schedules match `declared`.
pub async fn sync_declared(store: &Store, declared: &[DeclaredSchedule]) -> Result<(), StoreError> {
    let now = Utc::now();
    let specs: Vec<(String, ScheduleSpec)> = declared
        .iter()
        .map(|schedule| {
            let key = format!(
                "declared:{}:{}:{}",
                schedule.task,
                schedule.cron.expression(),
                schedule.cron.timezone()
            );
            let spec = ScheduleSpec {
                environment: schedule.environment,
                task_identifier: schedule.task.clone(),
                cron: schedule.cron.expression().to_owned(),
                timezone: schedule.cron.timezone().to_owned(),
                external_id: None,
                deduplication_key: Some(key),
                next_run_at: schedule.cron.next_after(now),
            };
            (kiln_core::id::new_schedule_id(), spec)
        })
        .collect();
    store.sync_declarative_schedules(&specs).await
}
