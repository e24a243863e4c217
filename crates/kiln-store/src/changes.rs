//! The run change feed: which runs changed, told by Postgres as they
//! change, so a realtime subscription re-reads its shape only when one of
//! its runs did, not on a timer.
//!
//! While any process is registered as a listener, every statement that
//! inserts or updates runs sends one notification per environment it
//! touched on the channel [`CHANNEL`] (a trigger,
//! `migrations/0011_run_changes.sql`): `"<environment> <id>,<id>,…"`, or
//! `"<environment> *"` when the ids would not fit in a notification. Each
//! process holds one listening connection, on a pool of its own so it
//! never takes a connection a trigger needs, and fans what it hears out to
//! its subscribers. A process is registered (a row in
//! `run_change_listeners`, refreshed every few seconds) only while it has
//! subscribers: a NOTIFY serializes the commits that send one, so kiln
//! pays for it only while someone watches.
//!
//! A subscriber can miss nothing it must see: when the listening connection
//! is lost (notifications sent meanwhile are gone) or a subscriber falls
//! behind, it is told [`RunChange::Anything`] and re-reads. It must not
//! take a change as the new state: it is only a reason to read again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The channel the runs table's trigger notifies.
pub const CHANNEL: &str = "kiln_run_changes";

/// Changes a slow subscriber may fall behind by before it is told
/// [`RunChange::Anything`].
const BACKLOG: usize = 1024;

/// How often a process with subscribers refreshes its registration (the
/// trigger takes one older than 30 s for a process gone).
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// A registration younger than this needs no refresh before a subscriber
/// starts to wait.
const STILL_FRESH: Duration = Duration::from_secs(10);

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunChange {
    /// These runs of `environment` were written; `tags` are theirs, read
    /// when a subscriber watches tags (`None`: not read, or unreadable).
    Runs {
        environment: String,
        ids: HashSet<String>,
        tags: Option<HashSet<String>>,
    },
    /// Some runs of `environment`, too many to name, were written.
    Environment(String),
    /// Changes may have been missed: read again, whatever you watch.
    Anything,
}

impl RunChange {
    /// Whether a subscriber watching `environment`'s run `id` (or any run
    /// of it, with `None`) must read again.
    pub fn concerns(&self, environment: &str, id: Option<&str>) -> bool {
        match self {
            RunChange::Anything => true,
            RunChange::Environment(changed) => changed == environment,
            RunChange::Runs {
                environment: changed,
                ids,
                ..
            } => changed == environment && id.is_none_or(|id| ids.contains(id)),
        }
    }

    /// Whether a subscriber watching `environment`'s runs with any of
    /// `watched` tags must read again.
    pub fn concerns_tags(&self, environment: &str, watched: &[String]) -> bool {
        match self {
            RunChange::Runs {
                environment: changed,
                tags: Some(tags),
                ..
            } => changed == environment && watched.iter().any(|tag| tags.contains(tag)),
            other => other.concerns(environment, None),
        }
    }

    /// A notification's payload, as the trigger writes it.
    fn parse(payload: &str) -> Option<Self> {
        let (environment, ids) = payload.split_once(' ')?;
        if ids == "*" {
            return Some(RunChange::Environment(environment.to_owned()));
        }
        Some(RunChange::Runs {
            environment: environment.to_owned(),
            ids: ids.split(',').filter(|id| !id.is_empty()).map(str::to_owned).collect(),
            tags: None,
        })
    }
}

/// One process's feed; cheap to clone.
#[derive(Clone)]
pub struct RunChanges {
    sender: broadcast::Sender<Arc<RunChange>>,
    /// Registers this process as a listener.
    pool: PgPool,
    process_id: Arc<str>,
    /// When this process last registered, if it is registered. Held while
    /// a subscriber joins or the last one's registration is dropped, so the
    /// two never cross.
    registered: Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>,
    /// Subscribers that watch tags: while there are any, each change's runs
    /// have their tags read (one query per notification, however many
    /// subscribers), so only those watching one of them read again.
    tag_watchers: Arc<AtomicUsize>,
}

/// A subscriber's end of the feed.
pub struct ChangeReceiver {
    receiver: broadcast::Receiver<Arc<RunChange>>,
    /// Counted among the tag watchers until dropped.
    tag_watchers: Option<Arc<AtomicUsize>>,
}

impl Drop for ChangeReceiver {
    fn drop(&mut self) {
        if let Some(count) = &self.tag_watchers {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ChangeReceiver {
    /// The next change; [`RunChange::Anything`] if this receiver fell
    /// behind. `None` once the feed has stopped.
    pub async fn next(&mut self) -> Option<Arc<RunChange>> {
        match self.receiver.recv().await {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Arc::new(RunChange::Anything)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl RunChanges {
    /// Starts listening on `listen_pool` (a pool of its own, of one
    /// connection) until `shutdown`; registers on `pool`.
    pub fn listen(listen_pool: PgPool, pool: PgPool, shutdown: CancellationToken) -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        let feed = Self {
            sender,
            pool,
            process_id: format!("{}-{}", std::process::id(), kiln_core::id::random_alphanumeric(12)).into(),
            registered: Arc::default(),
            tag_watchers: Arc::default(),
        };
        tokio::spawn(feed.clone().run(listen_pool, shutdown.clone()));
        tokio::spawn(feed.clone().keep_registered(shutdown));
        feed
    }

    /// Receives every change from now on. Registers this process first if
    /// it is not, so the changes that follow are sent. `watches_tags`: the
    /// changes will carry their runs' tags.
    pub async fn subscribe(&self, watches_tags: bool) -> ChangeReceiver {
        let mut registered = self.registered.lock().await;
        let receiver = ChangeReceiver {
            receiver: self.sender.subscribe(),
            tag_watchers: watches_tags.then(|| {
                self.tag_watchers.fetch_add(1, Ordering::Relaxed);
                Arc::clone(&self.tag_watchers)
            }),
        };
        if registered.is_none_or(|at| at.elapsed() >= STILL_FRESH) {
            match self.register().await {
                Ok(()) => *registered = Some(tokio::time::Instant::now()),
                // The subscriber still answers, at its deadline.
                Err(error) => tracing::warn!(%error, "cannot register for run changes"),
            }
        }
        receiver
    }

    async fn register(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            // Rows of processes killed without a word go too.
            "WITH gone AS (DELETE FROM run_change_listeners WHERE seen_at < now() - interval '1 hour')
             INSERT INTO run_change_listeners (process_id, seen_at) VALUES ($1, now())
             ON CONFLICT (process_id) DO UPDATE SET seen_at = now()",
        )
        .bind(&*self.process_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Refreshes the registration while there are subscribers, and drops
    /// it once there are none.
    async fn keep_registered(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(REFRESH_EVERY) => {}
            }
            let mut registered = self.registered.lock().await;
            if self.sender.receiver_count() > 0 {
                match self.register().await {
                    Ok(()) => *registered = Some(tokio::time::Instant::now()),
                    Err(error) => tracing::warn!(%error, "cannot refresh the run change registration"),
                }
            } else if registered.is_some() {
                *registered = None;
                self.unregister().await;
            }
        }
        self.unregister().await;
    }

    async fn unregister(&self) {
        // A row left behind expires by itself after 30 s.
        let _ = sqlx::query("DELETE FROM run_change_listeners WHERE process_id = $1")
            .bind(&*self.process_id)
            .execute(&self.pool)
            .await;
    }

    async fn run(self, pool: PgPool, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let listened = tokio::select! {
                () = shutdown.cancelled() => return,
                listened = self.listen_once(&pool) => listened,
            };
            // Whatever ended the connection, what was sent meanwhile is
            // lost: every subscriber reads again.
            let _ = self.sender.send(Arc::new(RunChange::Anything));
            failures = match listened {
                Ok(()) => 0,
                Err(error) => {
                    tracing::warn!(%error, "the run change feed lost Postgres; realtime re-reads until it is back");
                    failures.saturating_add(1)
                }
            };
            let wait = Duration::from_millis(100u64.saturating_mul(1 << failures.min(5)));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Listens until the connection is lost.
    async fn listen_once(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        // Changes made before LISTEN took effect were not heard.
        let _ = self.sender.send(Arc::new(RunChange::Anything));
        while let Some(notification) = listener.try_recv().await? {
            match RunChange::parse(notification.payload()) {
                // No subscriber is not an error.
                Some(change) => {
                    let _ = self.sender.send(Arc::new(self.with_tags(change).await));
                }
                None => tracing::warn!(payload = notification.payload(), "unreadable run change notification"),
            }
        }
        Ok(())
    }
}

impl RunChanges {
    /// Reads the tags of a change's runs, when someone watches tags.
    async fn with_tags(&self, change: RunChange) -> RunChange {
        let RunChange::Runs { environment, ids, .. } = change else {
            return change;
        };
        let tags = if self.tag_watchers.load(Ordering::Relaxed) > 0 {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            sqlx::query_scalar::<_, String>("SELECT DISTINCT unnest(tags) FROM runs WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await
                .map(|tags| tags.into_iter().collect())
                // Unreadable: every tag watcher of the environment reads.
                .inspect_err(|error| tracing::warn!(%error, "cannot read the tags of changed runs"))
                .ok()
        } else {
            None
        };
        RunChange::Runs { environment, ids, tags }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_its_environment_and_runs() {
        let change = RunChange::parse("prod run_a,run_b").expect("parses");
        assert!(change.concerns("prod", Some("run_a")));
        assert!(change.concerns("prod", None));
        assert!(!change.concerns("prod", Some("run_c")));
        assert!(
            !change.concerns("dev", Some("run_a")),
            "another environment's run of the same id"
        );
    }

    #[test]
    fn too_many_runs_to_name_concern_every_run_of_their_environment() {
        let change = RunChange::parse("dev *").expect("parses");
        assert_eq!(change, RunChange::Environment("dev".into()));
        assert!(change.concerns("dev", Some("run_x")));
        assert!(!change.concerns("prod", Some("run_x")));
        assert!(RunChange::Anything.concerns("prod", Some("run_x")));
        assert_eq!(RunChange::parse("garbage"), None);
    }

    #[test]
    fn tag_watchers_read_again_only_for_runs_with_one_of_their_tags() {
        let tagged = RunChange::Runs {
            environment: "prod".into(),
            ids: HashSet::from(["run_a".to_owned()]),
            tags: Some(HashSet::from(["user:1".to_owned(), "doc:9".to_owned()])),
        };
        assert!(tagged.concerns_tags("prod", &["doc:9".to_owned()]));
        assert!(!tagged.concerns_tags("prod", &["user:2".to_owned()]));
        assert!(!tagged.concerns_tags("dev", &["doc:9".to_owned()]));
        let unread = RunChange::parse("prod run_a").expect("parses");
        assert!(
            unread.concerns_tags("prod", &["user:2".to_owned()]),
            "tags unknown: read again"
        );
    }
}
