//! Task hosts and the task ids they serve (`task_hosts`, `host_tasks`).
//! A host registers what it found in an app's task files; the latest
//! registration of an id in an environment serves it. Hosts claim, renew
//! and finish runs with the same statements kiln's own workers use
//! ([`crate::lifecycle`]), under their host id as the worker id.
//!
//! This module records registrations and answers who serves what; it
//! decides nothing about routing (native tasks win, in the API).

use chrono::{DateTime, Utc};
use kiln_core::auth::Environment;

use crate::{Store, StoreError};

/// A host as it registers.
#[derive(Debug, Clone)]
pub struct HostRegistration {
    pub id: String,
    pub environment: Environment,
    pub hostname: String,
    pub pid: Option<i32>,
    pub slots: i32,
    pub sdk_version: String,
    pub content_hash: Option<String>,
    pub tasks: Vec<HostTask>,
    /// Concurrency limits the app's queue manifests declare.
    pub queue_limits: Vec<(String, u32)>,
}

/// One task of a host's manifest, with the app's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTask {
    pub task_id: String,
    pub queue: String,
    pub max_attempts: i32,
    pub max_duration_ms: Option<i64>,
    pub file_path: String,
    pub export_name: Option<String>,
    pub machine: Option<String>,
}

/// A task id a host serves, with the host that serves it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServedTask {
    pub environment: String,
    pub task_id: String,
    pub queue: String,
    pub max_attempts: i32,
    pub max_duration_ms: Option<i64>,
    pub file_path: String,
    pub export_name: Option<String>,
    pub machine: Option<String>,
    pub host_id: String,
    pub hostname: String,
    pub sdk_version: String,
    pub last_seen_at: DateTime<Utc>,
}

impl ServedTask {
    /// What the task's runs get when their trigger does not say otherwise.
    pub fn defaults(&self) -> kiln_core::options::TaskDefaults {
        kiln_core::options::TaskDefaults {
            queue: self.queue.clone(),
            max_attempts: u32::try_from(self.max_attempts).unwrap_or(1).max(1),
            max_duration: self
                .max_duration_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map(std::time::Duration::from_millis),
            access: kiln_core::options::TaskAccess::Any,
        }
    }
}

/// A registered host.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HostRow {
    pub id: String,
    pub environment: String,
    pub hostname: String,
    pub pid: Option<i32>,
    pub slots: i32,
    pub sdk_version: String,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

impl Store {
    /// Records a host and makes it the server of every task it lists, in
    /// one transaction, with its queues' limits.
    pub async fn register_host(&self, host: &HostRegistration) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO task_hosts (id, environment, hostname, pid, slots, sdk_version, content_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
                 slots = EXCLUDED.slots, sdk_version = EXCLUDED.sdk_version,
                 content_hash = EXCLUDED.content_hash, last_seen_at = now()",
        )
        .bind(&host.id)
        .bind(host.environment.as_str())
        .bind(&host.hostname)
        .bind(host.pid)
        .bind(host.slots)
        .bind(&host.sdk_version)
        .bind(&host.content_hash)
        .execute(&mut *tx)
        .await?;
        let ids: Vec<&str> = host.tasks.iter().map(|t| t.task_id.as_str()).collect();
        let queues: Vec<&str> = host.tasks.iter().map(|t| t.queue.as_str()).collect();
        let attempts: Vec<i32> = host.tasks.iter().map(|t| t.max_attempts).collect();
        let durations: Vec<Option<i64>> = host.tasks.iter().map(|t| t.max_duration_ms).collect();
        let files: Vec<&str> = host.tasks.iter().map(|t| t.file_path.as_str()).collect();
        let exports: Vec<Option<&str>> = host.tasks.iter().map(|t| t.export_name.as_deref()).collect();
        let machines: Vec<Option<&str>> = host.tasks.iter().map(|t| t.machine.as_deref()).collect();
        sqlx::query(
            "INSERT INTO host_tasks (environment, task_id, queue, max_attempts, max_duration_ms, file_path,
                 export_name, machine, host_id)
             SELECT $1, t.task_id, t.queue, t.max_attempts, t.max_duration_ms, t.file_path, t.export_name,
                 t.machine, $9
             FROM UNNEST($2::text[], $3::text[], $4::int4[], $5::int8[], $6::text[], $7::text[], $8::text[])
                 AS t(task_id, queue, max_attempts, max_duration_ms, file_path, export_name, machine)
             ON CONFLICT (environment, task_id) DO UPDATE SET queue = EXCLUDED.queue,
                 max_attempts = EXCLUDED.max_attempts, max_duration_ms = EXCLUDED.max_duration_ms,
                 file_path = EXCLUDED.file_path, export_name = EXCLUDED.export_name,
                 machine = EXCLUDED.machine, host_id = EXCLUDED.host_id, registered_at = now()",
        )
        .bind(host.environment.as_str())
        .bind(&ids)
        .bind(&queues)
        .bind(&attempts)
        .bind(&durations)
        .bind(&files)
        .bind(&exports)
        .bind(&machines)
        .bind(&host.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        for (queue, limit) in &host.queue_limits {
            self.set_queue_limit(host.environment, queue, *limit).await?;
        }
        Ok(())
    }

    /// Every task id a host serves, in every environment.
    pub async fn served_tasks(&self) -> Result<Vec<ServedTask>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT t.environment, t.task_id, t.queue, t.max_attempts, t.max_duration_ms, t.file_path,
                 t.export_name, t.machine, t.host_id, h.hostname, h.sdk_version, h.last_seen_at
             FROM host_tasks t JOIN task_hosts h ON h.id = t.host_id
             ORDER BY t.environment, t.task_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The hosts of `environment`, most recently seen first.
    pub async fn hosts(&self, environment: Environment) -> Result<Vec<HostRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, environment, hostname, pid, slots, sdk_version, registered_at, last_seen_at
             FROM task_hosts WHERE environment = $1 ORDER BY last_seen_at DESC LIMIT 100",
        )
        .bind(environment.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// The host `id` of `environment`, marked seen now; `None` if it never
    /// registered there.
    pub async fn touch_host(&self, environment: Environment, id: &str) -> Result<Option<HostRow>, StoreError> {
        Ok(sqlx::query_as(
            "UPDATE task_hosts SET last_seen_at = now() WHERE id = $1 AND environment = $2
             RETURNING id, environment, hostname, pid, slots, sdk_version, registered_at, last_seen_at",
        )
        .bind(id)
        .bind(environment.as_str())
        .fetch_optional(&self.relaxed)
        .await?)
    }

    /// The `(environment, queue)` lanes whose runs hosts take: kiln's own
    /// workers leave them alone.
    pub async fn host_lanes(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT DISTINCT environment, queue FROM host_tasks")
            .fetch_all(&self.pool)
            .await?)
    }
}
