//! Redis Sentinel: kiln follows the primary that Sentinel names. A primary,
//! a replica and three sentinels run locally; the primary is killed while
//! triggers arrive, and every accepted run still completes once Sentinel
//! has promoted the replica. The pause is measured from the runs' own
//! completion times.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Kiln, Mode, Process, RedisServer, count_status, free_port, temp_dir, wait_for_count};

const SERVICE: &str = "kiln";

async fn connection(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()
}

fn spawn_redis(args: &[String], log: &Path) -> Process {
    let child = Command::new("redis-server")
        .args(args)
        .stdout(std::fs::File::create(log).expect("redis log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    Process {
        child,
        log_path: log.to_owned(),
    }
}

/// Waits until `check` answers true, or fails with `what`.
async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a sentinel answers to `args`, as a list of values.
async fn ask_sentinel(port: u16, args: &[&str]) -> Option<redis::Value> {
    let mut conn = connection(port).await?;
    redis::cmd("SENTINEL").arg(args).query_async(&mut conn).await.ok()
}

fn listed(value: &Option<redis::Value>) -> usize {
    match value {
        Some(redis::Value::Array(items)) => items.len(),
        _ => 0,
    }
}

/// The primary's port as sentinel `port` names it.
async fn named_primary(port: u16) -> Option<u16> {
    let mut conn = connection(port).await?;
    let answer: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(SERVICE)
        .query_async(&mut conn)
        .await
        .ok()?;
    answer.and_then(|(_, port)| port.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_loses_no_accepted_run() {
    let primary = RedisServer::start().await;
    let primary_port = primary.port();
    let dir = temp_dir("sentinel");
    let replica_port = free_port();
    let _replica = spawn_redis(
        &[
            "--port".into(),
            replica_port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            // The replica writes what it receives to disk: in the test's folder.
            "--dir".into(),
            dir.to_string_lossy().into_owned(),
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary_port.to_string(),
        ],
        &dir.join("replica.log"),
    );
    wait_until("the replica follows the primary", Duration::from_secs(30), || async {
        let Some(mut conn) = connection(primary_port).await else {
            return false;
        };
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        info.contains("connected_slaves:1") && info.contains("state=online")
    })
    .await;

    let sentinel_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _sentinels: Vec<Process> = sentinel_ports
        .iter()
        .enumerate()
        .map(|(n, port)| {
            // Sentinel rewrites its configuration file: one each.
            let conf = dir.join(format!("sentinel-{n}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {SERVICE} 1000\n\
                     sentinel failover-timeout {SERVICE} 10000\n\
                     sentinel parallel-syncs {SERVICE} 1\n"
                ),
            )
            .expect("sentinel conf");
            spawn_redis(
                &[conf.to_string_lossy().into_owned(), "--sentinel".into()],
                &dir.join(format!("sentinel-{n}.log")),
            )
        })
        .collect();
    // Sentinels find the replica and each other through the primary.
    for port in &sentinel_ports {
        wait_until(
            "each sentinel knows the replica and the other two",
            Duration::from_secs(60),
            || async {
                listed(&ask_sentinel(*port, &["replicas", SERVICE]).await) == 1
                    && listed(&ask_sentinel(*port, &["sentinels", SERVICE]).await) == 2
            },
        )
        .await;
    }

    let url = format!(
        "redis+sentinel://{}/{SERVICE}",
        sentinel_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut kiln = Kiln::builder(Mode::Dev).redis(&url).spawn().await;
    let db = kiln.db().await;
    let first = kiln.trigger("kiln.noop", json!({ "payload": {} })).await;
    kiln.wait_for_status(&first, "COMPLETED", Duration::from_secs(30)).await;

    // Triggers arrive throughout; the primary dies among them.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(1));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, key, stop, accepted) = (
                kiln.http.clone(),
                kiln.url("/api/v1/tasks/kiln.noop/trigger"),
                kiln.key.clone(),
                stop.clone(),
                accepted.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&json!({ "payload": {} }))
                        .send()
                        .await
                        .expect("kiln answers");
                    assert_eq!(answer.status(), 200, "a trigger is accepted while Redis fails over");
                    accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    primary.stop();
    let killed_at = Instant::now();
    wait_until("the sentinels promote the replica", Duration::from_secs(60), || async {
        named_primary(sentinel_ports[0]).await == Some(replica_port)
    })
    .await;
    println!("sentinel promoted the replica {:?} after the kill", killed_at.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    let accepted = accepted.load(Ordering::Relaxed) as i64;
    wait_for_count(&db, "COMPLETED", accepted, Duration::from_secs(120)).await;
    assert_eq!(
        count_status(&db, "COMPLETED").await,
        accepted,
        "every accepted run completed"
    );

    let (pause,): (f64,) = sqlx::query_as(
        "SELECT COALESCE(EXTRACT(EPOCH FROM max(gap)), 0)::float8 FROM (
             SELECT completed_at - lag(completed_at) OVER (ORDER BY completed_at) AS gap FROM runs) gaps",
    )
    .fetch_one(&db)
    .await
    .expect("pause");
    println!("{accepted} runs accepted and completed; the longest pause between completions: {pause:.2} s");
    let log = std::fs::read_to_string(&kiln.log_path).unwrap_or_default();
    assert!(
        log.contains("Redis Sentinel moved the primary"),
        "kiln followed the failover; see {}",
        kiln.log_path.display()
    );
}
