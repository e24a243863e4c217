//! A run's metadata changed through the API: what Trigger.dev's SDK
//! flushes from inside a task (its own changes and those it makes to its
//! parent's and its root's metadata). Each change applies under a row
//! lock, so two writers never lose each other's operations.
//!
//! Native handlers do not come here: the runtime writes their metadata
//! whole as it changes ([`crate::lifecycle`]).

use kiln_core::auth::Environment;
use kiln_core::metadata::{self, MetadataOperation};
use kiln_core::status::RunStatus;
use serde_json::{Map, Value};
use sqlx::{Postgres, Transaction};

use crate::{Store, StoreError};

/// The changes one request makes.
#[derive(Debug, Default)]
pub struct MetadataChanges {
    /// Replaces the run's metadata before the operations apply.
    pub replace: Option<Map<String, Value>>,
    pub operations: Vec<MetadataOperation>,
    /// Apply to the run that triggered this one, if any.
    pub parent_operations: Vec<MetadataOperation>,
    /// Apply to the first run of this one's chain of parents (the run
    /// itself when it has none).
    pub root_operations: Vec<MetadataOperation>,
}

/// How a change ended.
#[derive(Debug, PartialEq)]
pub enum MetadataUpdate {
    /// The run's metadata after the change.
    Updated(Value),
    NotFound,
    /// A finished run's metadata stays as it finished.
    Finished(RunStatus),
    /// The result would be larger than the limit, in bytes of JSON; nothing
    /// was changed.
    TooLarge {
        bytes: usize,
    },
}

/// Parents followed at most, looking for a root: a chain this long is a
/// loop or a runaway, and its run is taken as its own root.
const MAX_DEPTH: i32 = 64;

struct Locked {
    status: RunStatus,
    metadata: Map<String, Value>,
    parent_run_id: Option<String>,
}

impl Store {
    /// Applies `changes` to run `id` of `environment` (and to its parent
    /// and root, which are in the same environment), each result at most
    /// `max_bytes` of JSON.
    pub async fn update_metadata(
        &self,
        environment: Environment,
        id: &str,
        changes: &MetadataChanges,
        max_bytes: usize,
    ) -> Result<MetadataUpdate, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(run) = lock(&mut tx, environment, id).await? else {
            return Ok(MetadataUpdate::NotFound);
        };
        if run.status.is_final() {
            return Ok(MetadataUpdate::Finished(run.status));
        }
        let mut own = changes.replace.clone().unwrap_or(run.metadata);
        skipped(id, metadata::apply(&mut own, &changes.operations));

        let root_id = if changes.root_operations.is_empty() {
            None
        } else {
            Some(root_of(&mut tx, environment, id).await?)
        };
        // The root's changes land on this run's new metadata when it is
        // its own root (and on the parent's when the parent is the root).
        if root_id.as_deref() == Some(id) {
            skipped(id, metadata::apply(&mut own, &changes.root_operations));
        }
        let own = Value::Object(own);
        let bytes = own.to_string().len();
        if bytes > max_bytes {
            return Ok(MetadataUpdate::TooLarge { bytes });
        }
        write(&mut tx, id, &own).await?;

        let parent = run.parent_run_id.filter(|_| !changes.parent_operations.is_empty());
        if let Some(parent_id) = &parent {
            let also_root = root_id.as_deref() == Some(parent_id.as_str());
            let mut operations = changes.parent_operations.clone();
            if also_root {
                operations.extend(changes.root_operations.iter().cloned());
            }
            if let Some(bytes) = change_other(&mut tx, environment, parent_id, &operations, max_bytes).await? {
                return Ok(MetadataUpdate::TooLarge { bytes });
            }
        }
        if let Some(root_id) = &root_id
            && root_id != id
            && parent.as_deref() != Some(root_id.as_str())
            && let Some(bytes) =
                change_other(&mut tx, environment, root_id, &changes.root_operations, max_bytes).await?
        {
            return Ok(MetadataUpdate::TooLarge { bytes });
        }
        tx.commit().await?;
        Ok(MetadataUpdate::Updated(own))
    }

    /// Run `id`'s metadata (an empty object when it has none); `None`
    /// when there is no such run in `environment`.
    pub async fn run_metadata(&self, environment: Environment, id: &str) -> Result<Option<Value>, StoreError> {
        let found: Option<(Option<Value>,)> =
            sqlx::query_as("SELECT metadata FROM runs WHERE id = $1 AND environment = $2")
                .bind(id)
                .bind(environment.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.map(|(metadata,)| metadata.unwrap_or_else(|| Value::Object(Map::new()))))
    }
}

/// A parent's or root's metadata: changed unless it has finished (a child
/// outliving its parent cannot rewrite the parent's record); answers the
/// size of a result that would pass the limit, which is then not written.
async fn change_other(
    tx: &mut Transaction<'_, Postgres>,
    environment: Environment,
    id: &str,
    operations: &[MetadataOperation],
    max_bytes: usize,
) -> Result<Option<usize>, StoreError> {
    let Some(run) = lock(tx, environment, id).await? else {
        return Ok(None);
    };
    if run.status.is_final() {
        tracing::debug!(run = id, "a finished run's metadata is left as it is");
        return Ok(None);
    }
    let mut changed = run.metadata;
    skipped(id, metadata::apply(&mut changed, operations));
    let changed = Value::Object(changed);
    let bytes = changed.to_string().len();
    if bytes > max_bytes {
        return Ok(Some(bytes));
    }
    write(tx, id, &changed).await?;
    Ok(None)
}

fn skipped(id: &str, operations: Vec<&MetadataOperation>) {
    for operation in operations {
        tracing::debug!(
            run = id,
            ?operation,
            "a metadata operation that cannot apply is skipped"
        );
    }
}

async fn lock(
    tx: &mut Transaction<'_, Postgres>,
    environment: Environment,
    id: &str,
) -> Result<Option<Locked>, StoreError> {
    let row: Option<(String, Option<Value>, Option<String>)> = sqlx::query_as(
        "SELECT status, metadata, parent_run_id FROM runs WHERE id = $1 AND environment = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(environment.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let Some((status, metadata, parent_run_id)) = row else {
        return Ok(None);
    };
    let status = status
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("run {id} has status {status:?}")))?;
    let metadata = match metadata {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    Ok(Some(Locked {
        status,
        metadata,
        parent_run_id,
    }))
}

async fn write(tx: &mut Transaction<'_, Postgres>, id: &str, metadata: &Value) -> Result<(), StoreError> {
    sqlx::query("UPDATE runs SET metadata = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(metadata)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The run at the top of `id`'s chain of parents, in its environment.
async fn root_of(tx: &mut Transaction<'_, Postgres>, environment: Environment, id: &str) -> Result<String, StoreError> {
    let root: Option<String> = sqlx::query_scalar(
        "WITH RECURSIVE chain(id, parent_run_id, depth) AS (
             SELECT id, parent_run_id, 0 FROM runs WHERE id = $1 AND environment = $2
             UNION ALL
             SELECT runs.id, runs.parent_run_id, chain.depth + 1
             FROM runs JOIN chain ON runs.id = chain.parent_run_id
             WHERE runs.environment = $2 AND chain.depth < $3
         )
         SELECT id FROM chain ORDER BY depth DESC LIMIT 1",
    )
    .bind(id)
    .bind(environment.as_str())
    .bind(MAX_DEPTH)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(root.unwrap_or_else(|| id.to_owned()))
}
