//! The run change feed: which runs changed, told by Postgres as they
//! change, so a realtime subscription re-reads its shape only when one of
//! its runs did, not on a timer.
//!
//! While any process is registered as a listener, every statement that
//! inserts or updates runs sends one notification per environment it
//! touched on the channel [`CHANNEL`] (a trigger,
//! `migrations/0011_run_changes.sql`): the ids it wrote with their tags, or
//! "all" when they would not fit in a notification. Each process holds one
//! listening connection, on a pool of its own so it never takes a
//! connection a trigger needs, and wakes the subscribers a change concerns:
//! those of a run it names, those of a tag one of its runs carries, found
//! by look-up, so a change costs the same with ten subscribers or ten
//! thousand. A process is registered (a row in `run_change_listeners`,
//! refreshed every few seconds) only while it has subscribers: a NOTIFY
//! serializes the commits that send one, so kiln pays for it only while
//! someone watches.
//!
//! A subscriber can miss nothing it must see: a wake-up that comes while it
//! is not waiting is kept for its next wait, and when the listening
//! connection is lost (notifications sent meanwhile are gone) every
//! subscriber is woken. A wake-up is only a reason to read again, never the
//! new state.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The channel the runs table's trigger notifies.
pub const CHANNEL: &str = "kiln_run_changes";

/// How often a process with subscribers refreshes its registration (the
/// trigger takes one older than 30 s for a process gone).
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// A registration younger than this needs no refresh before a subscriber
/// starts to wait.
const STILL_FRESH: Duration = Duration::from_secs(10);

/// What changed, as a notification tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunChange {
    /// These runs of `environment` were written; each with its tags.
    Runs {
        environment: String,
        runs: Vec<(String, Vec<String>)>,
    },
    /// Some runs of `environment`, too many to name, were written.
    Environment(String),
}

#[derive(serde::Deserialize)]
struct Notification {
    e: String,
    #[serde(default)]
    runs: Vec<(String, Option<Vec<String>>)>,
    #[serde(default)]
    all: bool,
}

impl RunChange {
    /// A notification's payload, as the trigger writes it.
    fn parse(payload: &str) -> Option<Self> {
        let notification: Notification = serde_json::from_str(payload).ok()?;
        Some(if notification.all {
            RunChange::Environment(notification.e)
        } else {
            RunChange::Runs {
                environment: notification.e,
                runs: notification
                    .runs
                    .into_iter()
                    .map(|(id, tags)| (id, tags.unwrap_or_default()))
                    .collect(),
            }
        })
    }
}

/// What a subscriber watches: one run, the runs with any of some tags, or
/// every run, of one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    Run { environment: String, id: String },
    Tags { environment: String, tags: Vec<String> },
    Environment { environment: String },
}

impl Interest {
    fn environment(&self) -> &str {
        match self {
            Interest::Run { environment, .. }
            | Interest::Tags { environment, .. }
            | Interest::Environment { environment } => environment,
        }
    }

    /// The look-up keys under which a change finds this subscriber.
    fn keys(&self) -> Vec<(String, Key)> {
        match self {
            Interest::Run { environment, id } => vec![(environment.clone(), Key::Run(id.clone()))],
            Interest::Tags { environment, tags } => tags
                .iter()
                .map(|tag| (environment.clone(), Key::Tag(tag.clone())))
                .collect(),
            Interest::Environment { environment } => vec![(environment.clone(), Key::Every)],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Run(String),
    Tag(String),
    /// Any run of the environment.
    Every,
}

/// The subscribers of one process, found by what they watch.
#[derive(Default)]
struct Subscribers {
    next: u64,
    by_key: HashMap<(String, Key), HashSet<u64>>,
    all: HashMap<u64, (Interest, Arc<Notify>)>,
}

impl Subscribers {
    /// Wakes the subscribers `change` concerns; answers how many.
    fn wake(&self, change: &RunChange) -> usize {
        let mut woken = HashSet::new();
        match change {
            RunChange::Runs { environment, runs } => {
                if !runs.is_empty()
                    && let Some(ids) = self.by_key.get(&(environment.clone(), Key::Every))
                {
                    woken.extend(ids.iter().copied());
                }
                for (id, tags) in runs {
                    let keys = std::iter::once(Key::Run(id.clone())).chain(tags.iter().cloned().map(Key::Tag));
                    for key in keys {
                        if let Some(ids) = self.by_key.get(&(environment.clone(), key)) {
                            woken.extend(ids.iter().copied());
                        }
                    }
                }
            }
            RunChange::Environment(environment) => woken.extend(
                self.all
                    .iter()
                    .filter(|(_, (interest, _))| interest.environment() == environment)
                    .map(|(id, _)| *id),
            ),
        }
        for id in &woken {
            if let Some((_, notify)) = self.all.get(id) {
                notify.notify_one();
            }
        }
        woken.len()
    }

    /// Adds a subscriber; answers its id and what wakes it.
    fn add(&mut self, interest: Interest) -> (u64, Arc<Notify>) {
        let id = self.next;
        self.next += 1;
        let notify = Arc::new(Notify::new());
        for key in interest.keys() {
            self.by_key.entry(key).or_default().insert(id);
        }
        self.all.insert(id, (interest, Arc::clone(&notify)));
        (id, notify)
    }

    fn wake_all(&self) {
        for (_, notify) in self.all.values() {
            notify.notify_one();
        }
    }

    fn remove(&mut self, id: u64) {
        let Some((interest, _)) = self.all.remove(&id) else {
            return;
        };
        for key in interest.keys() {
            if let Some(ids) = self.by_key.get_mut(&key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }
}

/// One process's feed; cheap to clone.
#[derive(Clone)]
pub struct RunChanges {
    subscribers: Arc<Mutex<Subscribers>>,
    /// Registers this process as a listener.
    pool: PgPool,
    process_id: Arc<str>,
    /// When this process last registered, if it is registered. Held while
    /// a subscriber joins or the last one's registration is dropped, so the
    /// two never cross.
    registered: Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>,
}

/// A subscriber's end of the feed; it leaves the feed when dropped.
pub struct ChangeReceiver {
    id: u64,
    notify: Arc<Notify>,
    subscribers: Arc<Mutex<Subscribers>>,
}

impl Drop for ChangeReceiver {
    fn drop(&mut self) {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.id);
    }
}

impl ChangeReceiver {
    /// Returns once a change concerns this subscriber, or one may have
    /// been missed, since it subscribed or last returned.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl RunChanges {
    /// Starts listening on `listen_pool` (a pool of its own, of one
    /// connection) until `shutdown`; registers on `pool`.
    pub fn listen(listen_pool: PgPool, pool: PgPool, shutdown: CancellationToken) -> Self {
        let feed = Self {
            subscribers: Arc::default(),
            pool,
            process_id: format!("{}-{}", std::process::id(), kiln_core::id::random_alphanumeric(12)).into(),
            registered: Arc::default(),
        };
        tokio::spawn(feed.clone().run(listen_pool, shutdown.clone()));
        tokio::spawn(feed.clone().keep_registered(shutdown));
        feed
    }

    /// Hears of every change to what `interest` names from now on.
    /// Registers this process first if it is not, so the changes that
    /// follow are sent.
    pub async fn subscribe(&self, interest: Interest) -> ChangeReceiver {
        let mut registered = self.registered.lock().await;
        let (id, notify) = self.lock().add(interest);
        let receiver = ChangeReceiver {
            id,
            notify,
            subscribers: Arc::clone(&self.subscribers),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(PoisonError::into_inner)
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
            let subscribed = !self.lock().all.is_empty();
            if subscribed {
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
            self.lock().wake_all();
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
        self.lock().wake_all();
        while let Some(notification) = listener.try_recv().await? {
            match RunChange::parse(notification.payload()) {
                Some(change) => {
                    self.lock().wake(&change);
                }
                None => tracing::warn!(payload = notification.payload(), "unreadable run change notification"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(environment: &str, id: &str) -> Interest {
        Interest::Run {
            environment: environment.into(),
            id: id.into(),
        }
    }

    fn tags(environment: &str, tags: &[&str]) -> Interest {
        Interest::Tags {
            environment: environment.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn a_payload_names_its_environment_runs_and_tags() {
        let change = RunChange::parse(r#"{"e":"prod","runs":[["run_a",["doc:1"]],["run_b",[]],["run_c",null]]}"#)
            .expect("parses");
        assert_eq!(
            change,
            RunChange::Runs {
                environment: "prod".into(),
                runs: vec![
                    ("run_a".into(), vec!["doc:1".into()]),
                    ("run_b".into(), vec![]),
                    ("run_c".into(), vec![]),
                ],
            }
        );
        assert_eq!(
            RunChange::parse(r#"{"e":"dev","all":true}"#),
            Some(RunChange::Environment("dev".into()))
        );
        assert_eq!(RunChange::parse("dev run_a"), None);
    }

    #[test]
    fn a_change_wakes_the_subscribers_of_its_runs_and_tags_in_its_environment_only() {
        let mut subscribers = Subscribers::default();
        let (_, of_run) = subscribers.add(run("prod", "run_a"));
        let (_, of_other_run) = subscribers.add(run("prod", "run_b"));
        let (_, of_tag) = subscribers.add(tags("prod", &["user:2", "doc:1"]));
        let (_, of_dev_run) = subscribers.add(run("dev", "run_a"));
        let (_, of_dev_tag) = subscribers.add(tags("dev", &["doc:1"]));
        let change = RunChange::Runs {
            environment: "prod".into(),
            runs: vec![("run_a".into(), vec!["doc:1".into()])],
        };
        assert_eq!(subscribers.wake(&change), 2);
        let woken = |notify: &Arc<Notify>| {
            let notified = notify.notified();
            tokio::pin!(notified);
            // A kept wake-up makes the first poll ready.
            notified.as_mut().enable()
        };
        assert!(woken(&of_run));
        assert!(woken(&of_tag));
        assert!(!woken(&of_other_run));
        assert!(!woken(&of_dev_run), "another environment's run of the same id");
        assert!(!woken(&of_dev_tag), "another environment's tag");

        assert_eq!(subscribers.wake(&RunChange::Environment("dev".into())), 2);
        assert!(woken(&of_dev_run) && woken(&of_dev_tag));
        assert!(!woken(&of_run));
    }

    #[test]
    fn an_environments_subscriber_hears_of_every_run_in_it_and_no_other() {
        let mut subscribers = Subscribers::default();
        let (_, of_prod) = subscribers.add(Interest::Environment {
            environment: "prod".into(),
        });
        let (_, of_dev) = subscribers.add(Interest::Environment {
            environment: "dev".into(),
        });
        let woken = |notify: &Arc<Notify>| {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable()
        };
        let change = RunChange::Runs {
            environment: "prod".into(),
            runs: vec![("run_a".into(), vec![]), ("run_b".into(), vec!["t".into()])],
        };
        assert_eq!(subscribers.wake(&change), 1);
        assert!(woken(&of_prod));
        assert!(!woken(&of_dev));
    }

    #[test]
    fn a_subscriber_that_left_is_found_no_more() {
        let mut subscribers = Subscribers::default();
        let (id, _) = subscribers.add(tags("prod", &["a", "b"]));
        subscribers.remove(id);
        assert!(subscribers.by_key.is_empty() && subscribers.all.is_empty());
        let change = RunChange::Runs {
            environment: "prod".into(),
            runs: vec![("run_a".into(), vec!["a".into()])],
        };
        assert_eq!(subscribers.wake(&change), 0);
    }
}
