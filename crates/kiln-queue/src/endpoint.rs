//! Where kiln's Redis is: one server (`redis://`, `rediss://`), or the
//! primary that Redis Sentinel names (`redis+sentinel://`), followed from
//! one server to the next as Sentinel fails it over. It hands out
//! connections and knows nothing of lists.
//!
//! With Sentinel, a watcher asks the sentinels for the primary twice a
//! second; when the answer changes, new connections go to the new primary
//! and every consumer drops its blocking connection at its next pop. Runs
//! pushed to the old primary and not yet replicated are not lost: Postgres
//! holds every run, and the new primary's missing epoch token
//! (`Queue::epoch`) makes kiln push its ready runs again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Client, RedisConnectionInfo};

use crate::QueueError;

/// How often the sentinels are asked which server is the primary.
const ASK_SENTINELS_EVERY: Duration = Duration::from_millis(500);

/// A `redis+sentinel://` URL: `redis+sentinel://[:password@]host:port[,host:port…]/service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub sentinels: Vec<String>,
    pub service: String,
    /// The primary's password (the sentinels take none).
    pub password: Option<String>,
}

impl SentinelUrl {
    pub const SCHEME: &'static str = "redis+sentinel://";

    /// `None` when `url` is not a Sentinel URL; an error when it is one
    /// that cannot be read.
    pub fn parse(url: &str) -> Option<Result<Self, String>> {
        let rest = url.strip_prefix(Self::SCHEME)?;
        Some(Self::parse_rest(rest))
    }

    fn parse_rest(rest: &str) -> Result<Self, String> {
        let (authority, service) = rest
            .split_once('/')
            .ok_or("names no service: redis+sentinel://host:port,…/service")?;
        let service = service.trim_end_matches('/');
        if service.is_empty() || service.contains('/') {
            return Err("names no service (one path segment): redis+sentinel://host:port,…/service".into());
        }
        let (password, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let password = userinfo.rsplit_once(':').map_or(userinfo, |(_, p)| p);
                (Some(password.to_owned()).filter(|p| !p.is_empty()), hosts)
            }
            None => (None, authority),
        };
        let sentinels: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|host| {
                let (name, port) = host
                    .rsplit_once(':')
                    .ok_or_else(|| format!("sentinel {host:?} has no port"))?;
                port.parse::<u16>()
                    .map_err(|_| format!("sentinel {host:?} has no valid port"))?;
                Ok(format!("redis://{name}:{port}"))
            })
            .collect::<Result<_, String>>()?;
        if sentinels.is_empty() {
            return Err("names no sentinel".into());
        }
        Ok(Self {
            sentinels,
            service: service.to_owned(),
            password,
        })
    }
}

/// The server in use, and its shared connection.
#[derive(Clone)]
struct Current {
    client: Client,
    conn: ConnectionManager,
    address: String,
}

/// Connections to the current primary, shared by a queue's clones.
pub(crate) struct Endpoint {
    current: RwLock<Option<Current>>,
    /// Grows each time the primary changes.
    generation: AtomicU64,
}

fn manager_config() -> ConnectionManagerConfig {
    // A generous response timeout: redis-rs's default (500 ms) trips under
    // load and would fail healthy requests.
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1))
}

impl Endpoint {
    /// One server, connected lazily and reconnected by the manager.
    pub(crate) fn direct(url: &str) -> Result<Arc<Self>, QueueError> {
        let client = Client::open(url).map_err(QueueError::InvalidUrl)?;
        let current = Self::current_for(client)?;
        Ok(Arc::new(Self {
            current: RwLock::new(Some(current)),
            generation: AtomicU64::new(0),
        }))
    }

    /// The primary Sentinel names, found by a watcher task started here
    /// (it ends when the last clone of the queue is dropped). Until it is
    /// found, Redis counts as unavailable.
    pub(crate) fn sentinel(url: SentinelUrl) -> Result<Arc<Self>, QueueError> {
        let mut node = RedisConnectionInfo::default();
        if let Some(password) = &url.password {
            node = node.set_password(password);
        }
        let client = SentinelClient::build(
            url.sentinels.clone(),
            url.service.clone(),
            Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(node)),
            SentinelServerType::Master,
        )
        .map_err(QueueError::InvalidUrl)?;
        let endpoint = Arc::new(Self {
            current: RwLock::new(None),
            generation: AtomicU64::new(0),
        });
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| QueueError::NoRuntime)?;
        runtime.spawn(follow_primary(Arc::downgrade(&endpoint), client, url.service));
        Ok(endpoint)
    }

    fn current_for(client: Client) -> Result<Current, QueueError> {
        let address = client.get_connection_info().addr().to_string();
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config())?;
        Ok(Current { client, conn, address })
    }

    fn current(&self) -> Result<Current, QueueError> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(QueueError::NoPrimary)
    }

    /// The shared connection to the current server.
    pub(crate) fn connection(&self) -> Result<ConnectionManager, QueueError> {
        Ok(self.current()?.conn)
    }

    /// A client for a connection of one's own (a blocking pop), with the
    /// generation it belongs to.
    pub(crate) fn client(&self) -> Result<(Client, u64), QueueError> {
        let generation = self.generation();
        Ok((self.current()?.client, generation))
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Moves to `client`'s server, unless it is the one in use.
    fn switch_to(&self, client: Client) -> Result<bool, QueueError> {
        let address = client.get_connection_info().addr().to_string();
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| c.address == address) {
            return Ok(false);
        }
        let from = current.as_ref().map(|c| c.address.clone());
        *current = Some(Self::current_for(client)?);
        self.generation.fetch_add(1, Ordering::AcqRel);
        match from {
            Some(from) => tracing::warn!(%from, to = %address, "Redis Sentinel moved the primary"),
            None => tracing::info!(primary = %address, "Redis Sentinel names the primary"),
        }
        Ok(true)
    }
}

async fn follow_primary(endpoint: std::sync::Weak<Endpoint>, mut sentinel: SentinelClient, service: String) {
    let mut complained = false;
    loop {
        let Some(endpoint) = endpoint.upgrade() else {
            return;
        };
        match sentinel.async_get_client().await {
            Ok(client) => {
                complained = false;
                if let Err(error) = endpoint.switch_to(client) {
                    tracing::warn!(%error, "cannot use the primary Redis Sentinel names");
                }
            }
            Err(error) if !complained => {
                complained = true;
                tracing::warn!(%error, %service, "no sentinel names a primary yet; asking again");
            }
            Err(_) => {}
        }
        drop(endpoint);
        tokio::time::sleep(ASK_SENTINELS_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentinel_url_names_its_sentinels_service_and_password() {
        let url = SentinelUrl::parse("redis+sentinel://:s3cret@10.0.0.1:26379, 10.0.0.2:26380/kiln")
            .expect("a sentinel url")
            .expect("readable");
        assert_eq!(
            url,
            SentinelUrl {
                sentinels: vec!["redis://10.0.0.1:26379".into(), "redis://10.0.0.2:26380".into()],
                service: "kiln".into(),
                password: Some("s3cret".into()),
            }
        );
        assert_eq!(SentinelUrl::parse("redis://127.0.0.1:6379"), None);
    }

    #[test]
    fn a_sentinel_url_without_service_or_ports_is_refused_with_the_reason() {
        for (url, reason) in [
            ("redis+sentinel://a:1,b:2", "names no service"),
            ("redis+sentinel://a:1/", "names no service"),
            ("redis+sentinel://a/kiln", "has no port"),
            ("redis+sentinel://a:x/kiln", "no valid port"),
            ("redis+sentinel:///kiln", "names no sentinel"),
        ] {
            let error = SentinelUrl::parse(url).expect("a sentinel url").expect_err(url);
            assert!(error.contains(reason), "{url}: {error}");
        }
    }
}
