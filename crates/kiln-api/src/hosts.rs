//! Which task ids task hosts serve, as this process last read them from
//! Postgres. Triggers look here (after kiln's own registry, whose tasks
//! always win) without a query; a miss reads Postgres again at most every
//! [`MISS_REFRESH`], so a task another process registered a moment ago is
//! found on the next trigger.
//!
//! It must not decide routing on its own: [`crate::AppState::task_defaults`]
//! asks the registry first.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use kiln_core::auth::Environment;
use kiln_core::options::TaskDefaults;
use kiln_store::hosts::ServedTask;
use kiln_store::{Store, StoreError};

/// How often a trigger of an unknown id may read the host tasks again.
pub const MISS_REFRESH: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
pub struct HostDirectory {
    loaded: RwLock<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    at: Option<Instant>,
    tasks: HashMap<(Environment, String), ServedTask>,
}

impl HostDirectory {
    /// The defaults runs of `task_id` get in `environment`, if a host
    /// serves it there.
    pub fn defaults(&self, environment: Environment, task_id: &str) -> Option<TaskDefaults> {
        let loaded = self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(loaded.tasks.get(&(environment, task_id.to_owned()))?.defaults())
    }

    /// Every served task, as last read.
    pub fn served(&self) -> Vec<ServedTask> {
        let loaded = self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tasks: Vec<ServedTask> = loaded.tasks.values().cloned().collect();
        tasks.sort_by(|a, b| (&a.environment, &a.task_id).cmp(&(&b.environment, &b.task_id)));
        tasks
    }

    /// Reads the host tasks from Postgres.
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let served = store.served_tasks().await?;
        let tasks = served
            .into_iter()
            .filter_map(|task| Some(((Environment::parse(&task.environment)?, task.task_id.clone()), task)))
            .collect();
        let mut loaded = self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *loaded = Loaded {
            at: Some(Instant::now()),
            tasks,
        };
        Ok(())
    }

    /// [`HostDirectory::refresh`], unless the last read is fresher than
    /// `max_age`.
    pub async fn refresh_if_older(&self, store: &Store, max_age: Duration) -> Result<(), StoreError> {
        let fresh = {
            let loaded = self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            loaded.at.is_some_and(|at| at.elapsed() < max_age)
        };
        if fresh { Ok(()) } else { self.refresh(store).await }
    }
}
