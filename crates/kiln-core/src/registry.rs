//! The task registry: every task id kiln accepts, with its handler and the
//! defaults its runs get (queue, attempts, duration limit). The API uses it
//! to answer 404 for unknown tasks; workers use it to find handlers.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::options::TaskDefaults;
use crate::task::TaskHandler;

#[derive(Clone)]
pub struct RegisteredTask {
    pub handler: Arc<dyn TaskHandler>,
    pub defaults: TaskDefaults,
}

#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, RegisteredTask>,
}

impl std::fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tasks.keys()).finish()
    }
}

impl TaskRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `task_id`; a later registration of the same id replaces
    /// the earlier one (configured tasks override built-ins).
    pub fn register(&mut self, task_id: impl Into<String>, handler: Arc<dyn TaskHandler>, defaults: TaskDefaults) {
        self.tasks.insert(task_id.into(), RegisteredTask { handler, defaults });
    }

    pub fn get(&self, task_id: &str) -> Option<&RegisteredTask> {
        self.tasks.get(task_id)
    }

    pub fn task_ids(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// The queues the registered tasks use by default.
    pub fn default_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.tasks.values().map(|t| t.defaults.queue.clone()).collect();
        queues.sort();
        queues.dedup();
        queues
    }
}
