//! The Redis side of kiln: a list per lane (an environment's queue) that
//! carries run ids from the API and the scheduler to workers.
//!
//! Redis holds no state that matters: a run's payload, status, attempts and
//! lease are in Postgres, and a worker claims a run there before it runs it.
//! A duplicate id in Redis is therefore harmless (the second claim finds the
//! run no longer QUEUED), and a lost one is found again from Postgres.
//! Attempts, back-off and delays are not Redis's business either.
//!
//! Delivery is a blocking pop (`BLMPOP`), so an idle worker starts a new run
//! within a round trip of its push, not on a polling tick.
//!
//! Each lane's list holds at most a *window* of ids: Postgres keeps the
//! backlog, and the scheduler tops the list up as workers drain it. Redis
//! memory stays bounded whatever the backlog.
//!
//! Redis is one server, or the primary Redis Sentinel names ([`endpoint`]).
//!
//! Environments never share a list: a queue named the same in dev and prod
//! is two lanes, and a consumer takes turns between them, so a backlog
//! (or a flood) in one environment neither fills the other's window nor
//! waits in front of its runs.
//!
//! # Keys (all under the configured prefix)
//!
//! - `{prefix}:queue:{environment}:{name}`: LIST of ready run ids, pushed
//!   right, popped left.
//! - `{prefix}:queues`: SET of `{environment}:{name}` for every lane that
//!   has had a run, so a worker serving every queue knows what to watch.
//! - `{prefix}:epoch`: a random token, set once. When it is gone or has
//!   changed, Redis lost its data, and kiln pushes every queued run again.
//! - `{prefix}:queues:new`: LIST of tokens pushed when a queue is first
//!   seen; workers block on it beside their queues, so a run on a new queue
//!   wakes a worker at once instead of on its next refresh.

mod endpoint;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Script};

use endpoint::Endpoint;
pub use endpoint::SentinelUrl;

static PUSH_BOUNDED: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("../lua/push_bounded.lua")));

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis is unavailable: {0}")]
    Unavailable(#[from] redis::RedisError),
    #[error("REDIS_URL is invalid: {0}")]
    InvalidUrl(#[source] redis::RedisError),
    #[error("REDIS_URL is invalid: a Sentinel URL that {0}")]
    InvalidSentinelUrl(String),
    #[error("redis is unavailable: no sentinel has named a primary yet")]
    NoPrimary,
    #[error("a Redis Sentinel queue must be made inside the async runtime")]
    NoRuntime,
}

/// One environment's queue: the unit Redis keeps a list for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lane {
    pub environment: String,
    pub queue: String,
}

impl Lane {
    pub fn new(environment: impl Into<String>, queue: impl Into<String>) -> Self {
        Self {
            environment: environment.into(),
            queue: queue.into(),
        }
    }

    /// The member of the lanes set; environments hold no `:`, so the first
    /// one splits it back.
    fn member(environment: &str, queue: &str) -> String {
        format!("{environment}:{queue}")
    }

    fn from_member(member: &str) -> Option<Self> {
        let (environment, queue) = member.split_once(':')?;
        Some(Self::new(environment, queue))
    }
}

/// One run id on one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub environment: String,
    pub queue: String,
    pub run_id: String,
}

/// The producer side, shared by the API and the scheduler; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    endpoint: Arc<Endpoint>,
    prefix: String,
    window: usize,
}

/// Ids a queue's list holds at most, unless configured otherwise.
pub const DEFAULT_WINDOW: usize = 5_000;

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("prefix", &self.prefix).finish()
    }
}

impl Queue {
    /// Connects lazily and reconnects by itself, so kiln starts and keeps
    /// accepting runs (into Postgres) while Redis is down. `url` names one
    /// server, or Redis Sentinel's primary (`redis+sentinel://`, followed
    /// through failovers; see [`SentinelUrl`]).
    pub fn connect_lazy(url: &str, prefix: &str) -> Result<Self, QueueError> {
        let endpoint = match SentinelUrl::parse(url) {
            Some(sentinel) => Endpoint::sentinel(sentinel.map_err(QueueError::InvalidSentinelUrl)?)?,
            None => Endpoint::direct(url)?,
        };
        Ok(Self {
            endpoint,
            prefix: prefix.to_owned(),
            window: DEFAULT_WINDOW,
        })
    }

    fn conn(&self) -> Result<ConnectionManager, QueueError> {
        self.endpoint.connection()
    }

    /// Sets the most ids each queue's list holds.
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    pub fn window(&self) -> usize {
        self.window
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn lane_key(&self, environment: &str, queue: &str) -> String {
        lane_key(&self.prefix, environment, queue)
    }

    fn queues_key(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    fn new_queue_key(prefix: &str) -> String {
        format!("{prefix}:queues:new")
    }

    /// Pushes run ids (oldest first), given as `(environment, queue, id)`,
    /// in one pipelined round trip, each lane's list up to the window.
    /// Answers the ids that found no room.
    pub async fn push<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<Vec<String>, QueueError> {
        let window = self.window;
        let mut by_lane: std::collections::BTreeMap<(&str, &str), Vec<&str>> = std::collections::BTreeMap::new();
        for (environment, queue, run_id) in items {
            by_lane.entry((environment, queue)).or_default().push(run_id);
        }
        if by_lane.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let mut pipe = redis::pipe();
        for ((environment, queue), ids) in &by_lane {
            pipe.cmd("EVALSHA")
                .arg(PUSH_BOUNDED.get_hash())
                .arg(1)
                .arg(self.lane_key(environment, queue))
                .arg(window)
                .arg(ids);
        }
        pipe.sadd(
            self.queues_key(),
            by_lane
                .keys()
                .map(|(environment, queue)| Lane::member(environment, queue))
                .collect::<Vec<_>>(),
        );
        let (mut answers, resent): (Vec<u64>, bool) = match pipe.query_async(&mut conn).await {
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // First use on this Redis (or after a restart): load the
                // script and send again.
                PUSH_BOUNDED.prepare_invoke().load_async(&mut conn).await?;
                (pipe.query_async(&mut conn).await?, true)
            }
            other => (other?, false),
        };
        // A resent pipeline's SADD finds the lanes its first sending added,
        // so it cannot tell whether a lane is new: wake workers anyway.
        let added = answers.pop().unwrap_or(0) > 0 || resent;
        let refused = by_lane
            .values()
            .zip(&answers)
            .flat_map(|(ids, pushed)| ids.iter().skip(usize::try_from(*pushed).unwrap_or(usize::MAX)))
            .map(|id| (*id).to_owned())
            .collect();
        if added {
            // Wake workers so they add the queue to those they watch; the
            // list stays short however many queues appear.
            let notify = Self::new_queue_key(&self.prefix);
            redis::pipe()
                .rpush(&notify, "1")
                .ignore()
                .ltrim(&notify, -16, -1)
                .ignore()
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(refused)
    }

    /// This Redis's epoch token, set now if there is none. A different
    /// answer than last time means Redis lost its data.
    pub async fn epoch(&self, candidate: &str) -> Result<String, QueueError> {
        let key = format!("{}:epoch", self.prefix);
        let mut conn = self.conn()?;
        let (epoch,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(candidate)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        Ok(epoch)
    }

    /// Every lane that has had a run.
    pub async fn known_lanes(&self) -> Result<Vec<Lane>, QueueError> {
        let mut conn = self.conn()?;
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.queues_key())
            .query_async(&mut conn)
            .await?;
        let mut lanes: Vec<Lane> = members.iter().filter_map(|m| Lane::from_member(m)).collect();
        lanes.sort();
        Ok(lanes)
    }

    /// How many ids wait in a lane.
    pub async fn depth(&self, environment: &str, queue: &str) -> Result<u64, QueueError> {
        let mut conn = self.conn()?;
        Ok(redis::cmd("LLEN")
            .arg(self.lane_key(environment, queue))
            .query_async(&mut conn)
            .await?)
    }

    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn()?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    /// A consumer with its own connection: a blocking pop holds its
    /// connection, so it must not share the producer's.
    pub fn consumer(&self) -> Consumer {
        Consumer {
            endpoint: Arc::clone(&self.endpoint),
            prefix: self.prefix.clone(),
            conn: None,
            rotation: 0,
            queues_changed: false,
        }
    }
}

impl Consumer {
    /// True once after a new queue appeared: the caller should refresh the
    /// list of queues it passes to [`Consumer::pop`].
    pub fn take_queues_changed(&mut self) -> bool {
        std::mem::take(&mut self.queues_changed)
    }
}

/// Pops ready run ids for one worker process.
pub struct Consumer {
    endpoint: Arc<Endpoint>,
    prefix: String,
    /// Its own connection, and the generation of the primary it goes to.
    conn: Option<(MultiplexedConnection, u64)>,
    rotation: usize,
    queues_changed: bool,
}

impl Consumer {
    /// Waits up to `wait` for ids on any of `lanes`; takes up to `max` from
    /// the first non-empty one. The next call starts looking just after the
    /// lane served, so lanes with ids take turns (round robin) and a busy
    /// lane (or environment) cannot starve the others.
    pub async fn pop(&mut self, lanes: &[Lane], max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        if lanes.is_empty() || max == 0 {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let start = self.rotation % lanes.len();
        let notify = Queue::new_queue_key(&self.prefix);
        let order: Vec<&Lane> = lanes[start..].iter().chain(&lanes[..start]).collect();
        let keys: Vec<String> = std::iter::once(notify.clone())
            .chain(
                order
                    .iter()
                    .map(|lane| lane_key(&self.prefix, &lane.environment, &lane.queue)),
            )
            .collect();
        // A connection to a server that is no longer the primary is
        // dropped (it may still answer, as a replica with nothing to pop).
        if self
            .conn
            .as_ref()
            .is_some_and(|(_, generation)| *generation != self.endpoint.generation())
        {
            self.conn = None;
        }
        let conn = match &mut self.conn {
            Some((conn, _)) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    // The pop blocks server-side for up to `wait`.
                    .set_response_timeout(None);
                let (client, generation) = self.endpoint.client()?;
                let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
                &mut self.conn.insert((conn, generation)).0
            }
        };
        let popped: Result<Option<(String, Vec<String>)>, _> = redis::cmd("BLMPOP")
            .arg(wait.as_secs_f64())
            .arg(keys.len())
            .arg(&keys)
            .arg("LEFT")
            .arg("COUNT")
            .arg(max)
            .query_async(conn)
            .await;
        let popped = match popped {
            Ok(popped) => popped,
            Err(error) => {
                self.conn = None;
                return Err(error.into());
            }
        };
        if popped.as_ref().is_some_and(|(key, _)| *key == notify) {
            self.queues_changed = true;
            return Ok(Vec::new());
        }
        let Some((key, ids)) = popped else {
            return Ok(Vec::new());
        };
        // The key is one of those sent; its lane is at the same place.
        let Some(at) = keys.iter().skip(1).position(|k| *k == key) else {
            return Ok(Vec::new());
        };
        let lane = order[at];
        self.rotation = start + at + 1;
        Ok(ids
            .into_iter()
            .map(|run_id| Delivery {
                environment: lane.environment.clone(),
                queue: lane.queue.clone(),
                run_id,
            })
            .collect())
    }
}

fn lane_key(prefix: &str, environment: &str, queue: &str) -> String {
    format!("{prefix}:queue:{environment}:{queue}")
}
