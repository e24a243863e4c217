//! Nothing is lost: worker crashes, Redis loss, Postgres outages, large
//! backlogs and shutdowns, each with real kiln processes. Every accepted run
//! reaches a final status.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Kiln, Mode, RedisServer, TcpProxy, count_status, wait_for_count};

#[tokio::test]
async fn a_killed_worker_loses_nothing() {
    let mut kiln = Kiln::builder(Mode::Serve).env("KILN_LEASE", "5s").spawn().await;
    let mut worker = kiln.spawn_worker(&[("KILN_WORKER_CONCURRENCY", "250")]);
    let db = kiln.db().await;
    let kiln_ref = &kiln;
    futures::stream::iter(0..200)
        .map(|_| async move {
            kiln_ref
                .trigger("kiln.sleep", json!({ "payload": { "ms": 10000 } }))
                .await
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    // The worker is killed once every run has started; on a slow machine
    // some may have ended already, and those keep their one attempt.
    wait_for_started(&db, 200, Duration::from_secs(60)).await;
    worker.kill_hard();
    let interrupted: HashSet<String> = sqlx::query_scalar("SELECT id FROM runs WHERE status = 'EXECUTING'")
        .fetch_all(&db)
        .await
        .expect("ids")
        .into_iter()
        .collect();
    assert!(!interrupted.is_empty(), "the worker was killed while it ran runs");
    let _replacement = kiln.spawn_worker(&[("KILN_WORKER_CONCURRENCY", "250")]);
    wait_for_count(&db, "COMPLETED", 200, Duration::from_secs(90)).await;
    let attempts: Vec<(String, i32)> = sqlx::query_as("SELECT id, attempt_count FROM runs")
        .fetch_all(&db)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 200);
    let mut ran_again = 0;
    for (id, attempt_count) in attempts {
        if interrupted.contains(&id) {
            // At-least-once: an interrupted attempt counts, and the run ran
            // again. One whose completion Postgres already held when the
            // worker died (read as EXECUTING a moment before it committed)
            // keeps its one attempt.
            assert!(
                attempt_count == 1 || attempt_count == 2,
                "run {id} ran {attempt_count} times"
            );
            ran_again += usize::from(attempt_count == 2);
        } else {
            assert_eq!(attempt_count, 1, "run {id} ended before the kill and ran once");
        }
    }
    assert!(ran_again > 0, "no interrupted run was run again");
}

/// Waits until `count` runs have been recorded as started (whatever they
/// are now).
async fn wait_for_started(db: &sqlx::PgPool, count: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let started: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE started_at IS NOT NULL AND status <> 'QUEUED'")
                .fetch_one(db)
                .await
                .expect("count");
        if started >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {started} of {count} runs started within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_run_that_keeps_killing_its_worker_ends_crashed() {
    let mut kiln = Kiln::builder(Mode::Serve)
        .env("KILN_LEASE", "1s")
        .env("KILN_HEARTBEAT", "200ms")
        .spawn()
        .await;
    let db = kiln.db().await;
    let id = kiln
        .trigger(
            "kiln.sleep",
            json!({ "payload": { "ms": 60000 }, "options": { "maxAttempts": 2 } }),
        )
        .await;
    for attempt in 1..=2 {
        let mut worker = kiln.spawn_worker(&[]);
        kiln.wait_for(&id, Duration::from_secs(20), |run| {
            run["status"] == "EXECUTING" && run["attemptCount"] == attempt
        })
        .await;
        worker.kill_hard();
    }
    let run = kiln.wait_for_status(&id, "CRASHED", Duration::from_secs(20)).await;
    assert_eq!(run["attemptCount"], 2);
    assert_eq!(run["error"]["name"], "WorkerLost");
    assert_eq!(count_status(&db, "CRASHED").await, 1);
}

#[tokio::test]
async fn a_flushed_redis_loses_nothing() {
    let redis = RedisServer::start().await;
    let mut kiln = Kiln::builder(Mode::Serve).redis(&redis.url).spawn().await;
    let db = kiln.db().await;
    let kiln_ref = &kiln;
    let ids: Vec<String> = futures::stream::iter(0..500)
        .map(|i| async move { kiln_ref.trigger("kiln.noop", json!({ "payload": { "i": i } })).await })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut conn = redis.connection().await;
    let list = format!("{}:queue:dev:task/kiln.noop", kiln.redis_prefix);
    // Pushes follow the triggers' answers: wait until the last is in.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let len: usize = redis::cmd("LLEN")
            .arg(&list)
            .query_async(&mut conn)
            .await
            .expect("llen");
        if len >= ids.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg(&list)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    assert_eq!(
        queued.into_iter().collect::<HashSet<_>>(),
        ids.iter().cloned().collect::<HashSet<_>>(),
        "every run is in Redis before the flush"
    );
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .expect("flushall");
    let _worker = kiln.spawn_worker(&[]);
    wait_for_count(&db, "COMPLETED", 500, Duration::from_secs(60)).await;
    let completed: Vec<String> = sqlx::query_scalar("SELECT id FROM runs WHERE status = 'COMPLETED'")
        .fetch_all(&db)
        .await
        .expect("ids");
    let completed: HashSet<String> = completed.into_iter().collect();
    assert_eq!(completed, ids.into_iter().collect::<HashSet<_>>());
}

#[tokio::test]
async fn triggers_are_accepted_while_redis_is_down_and_run_when_it_is_back() {
    let redis = RedisServer::start().await;
    let port = redis.port();
    let mut kiln = Kiln::builder(Mode::Dev).redis(&redis.url).spawn().await;
    let db = kiln.db().await;
    let before = kiln
        .trigger("kiln.noop", json!({ "payload": { "before": true } }))
        .await;
    kiln.wait_for_status(&before, "COMPLETED", Duration::from_secs(10))
        .await;
    redis.stop();
    let mut during = Vec::new();
    for i in 0..20 {
        during.push(kiln.trigger("kiln.noop", json!({ "payload": { "during": i } })).await);
    }
    for id in &during {
        assert_eq!(
            kiln.retrieve(id).await["status"],
            "QUEUED",
            "accepted and recorded while Redis is down"
        );
    }
    let _redis = RedisServer::start_on(port).await;
    for id in &during {
        kiln.wait_for_status(id, "COMPLETED", Duration::from_secs(30)).await;
    }
    assert_eq!(count_status(&db, "COMPLETED").await, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_run_backlog_drains_with_bounded_redis() {
    const RUNS: usize = 100_000;
    const WINDOW: u64 = 2_000;
    let redis = RedisServer::start().await;
    let mut kiln = Kiln::builder(Mode::Serve)
        .redis(&redis.url)
        .env("KILN_QUEUE_WINDOW", WINDOW.to_string())
        .spawn()
        .await;
    let db = kiln.db().await;
    let url = kiln.url("/api/v1/tasks/kiln.noop/trigger");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    // Many clients in flight, so triggers share large group commits.
    for _ in 0..128 {
        let (http, url, key, next) = (kiln.http.clone(), url.clone(), kiln.key.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < RUNS {
                let response = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "payload": {} }))
                    .send()
                    .await
                    .expect("trigger");
                assert_eq!(response.status(), 200);
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    assert_eq!(count_status(&db, "QUEUED").await, RUNS as i64);
    let mut conn = redis.connection().await;
    let list = format!("{}:queue:dev:task/kiln.noop", kiln.redis_prefix);
    let in_redis: u64 = redis::cmd("LLEN")
        .arg(&list)
        .query_async(&mut conn)
        .await
        .expect("llen");
    assert_eq!(
        in_redis, WINDOW,
        "Redis holds one window of the backlog; Postgres the rest"
    );

    let _workers = [kiln.spawn_worker(&[]), kiln.spawn_worker(&[])];
    wait_for_count(&db, "COMPLETED", RUNS as i64, Duration::from_secs(60)).await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .expect("info");
    let peak: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory_peak:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory_peak");
    println!(
        "redis peak memory with a {RUNS}-run backlog: {:.1} MiB",
        peak as f64 / 1048576.0
    );
    assert!(peak < 16 * 1024 * 1024, "redis peaked at {peak} bytes");
    let left: u64 = redis::cmd("LLEN")
        .arg(&list)
        .query_async(&mut conn)
        .await
        .expect("llen");
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_answers_503_and_loses_nothing() {
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let mut kiln = Kiln::builder(Mode::Dev).postgres_port(proxy.port).spawn().await;
    let db = kiln.db().await;
    let url = kiln.url("/api/v1/tasks/kiln.noop/trigger");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Answers so far, by status, for the choreography below.
    let oks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let unavailable = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (http, url, key, stop) = (http.clone(), url.clone(), kiln.key.clone(), stop.clone());
        let (oks, unavailable) = (oks.clone(), unavailable.clone());
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let response = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "payload": {} }))
                    .send()
                    .await
                    .expect("kiln answers");
                let status = response.status().as_u16();
                match status {
                    200 => oks.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                    503 => unavailable.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                    _ => 0,
                };
                let retry_after = response.headers().contains_key("retry-after");
                let body: Value = response.json().await.expect("json body");
                answers.push((status, retry_after, body));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        }));
    }
    let count = |counter: &Arc<std::sync::atomic::AtomicUsize>| counter.load(std::sync::atomic::Ordering::SeqCst);
    wait_until(Duration::from_secs(30), "a trigger is accepted", || count(&oks) > 0).await;
    proxy.cut();
    let outage = Instant::now();
    wait_until(Duration::from_secs(60), "the outage is answered 503", || {
        count(&unavailable) > 0
    })
    .await;
    // Some more of the outage: triggers keep being refused, none is lost.
    let refused_at_first = count(&unavailable);
    wait_until(Duration::from_secs(60), "more triggers are refused", || {
        count(&unavailable) >= refused_at_first + 16
    })
    .await;
    proxy.restore();
    println!("postgres was unreachable for {:?}", outage.elapsed());
    let accepted_before = count(&oks);
    wait_until(Duration::from_secs(60), "triggers are accepted again", || {
        count(&oks) >= accepted_before + 16
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for client in clients {
        for (status, retry_after, body) in client.await.expect("client") {
            match status {
                200 => accepted.push(body["id"].as_str().expect("id").to_owned()),
                503 => {
                    assert!(retry_after, "a 503 carries Retry-After");
                    refused += 1;
                }
                other => panic!("a trigger was answered {other}: {body}"),
            }
        }
    }
    println!("accepted {}, refused with 503: {refused}", accepted.len());
    assert!(refused > 0, "the outage was not noticed");
    assert!(!accepted.is_empty());
    let known: HashSet<String> = sqlx::query_scalar("SELECT id FROM runs")
        .fetch_all(&db)
        .await
        .expect("ids")
        .into_iter()
        .collect();
    for id in &accepted {
        assert!(known.contains(id), "run {id} was answered but is not in Postgres");
    }
    wait_for_count(&db, "COMPLETED", known.len() as i64, Duration::from_secs(60)).await;
}

#[tokio::test]
async fn sigterm_finishes_or_hands_back_every_run() {
    let mut kiln = Kiln::builder(Mode::Serve).spawn().await;
    let db = kiln.db().await;
    let mut worker = kiln.spawn_worker(&[("KILN_SHUTDOWN_GRACE", "6s")]);
    // Short runs (4 s) fit in the grace period; long ones (20 s) do not.
    // All are triggered in one go, so all 15 run together even on a busy
    // machine: triggered in two groups, the first group's runs could end
    // before the second's started, and 15 would never run at once.
    let trigger = |ms: u64| kiln.trigger("kiln.sleep", json!({ "payload": { "ms": ms } }));
    let lengths: Vec<u64> = (0..15).map(|i| if i % 3 == 2 { 20_000 } else { 4_000 }).collect();
    let ids: Vec<String> = futures::future::join_all(lengths.iter().map(|ms| trigger(*ms))).await;
    let (short, long): (Vec<(String, u64)>, Vec<(String, u64)>) =
        ids.into_iter().zip(lengths).partition(|(_, ms)| *ms == 4_000);
    let short: Vec<String> = short.into_iter().map(|(id, _)| id).collect();
    let long: Vec<String> = long.into_iter().map(|(id, _)| id).collect();
    wait_for_count(&db, "EXECUTING", 15, Duration::from_secs(90)).await;
    worker.terminate();
    let log = worker.log_path.display().to_string();
    let stopping = Instant::now();
    let status = tokio::task::spawn_blocking(move || worker.child.wait().map(|s| (s, worker)))
        .await
        .expect("join")
        .expect("wait");
    assert!(status.0.success(), "the worker exits cleanly; see {log}");
    // After the grace period (6 s), not after the long runs: they were
    // handed back (below), not waited for. The bound leaves a loaded
    // machine room to record the short runs' outcomes.
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    assert_eq!(count_status(&db, "EXECUTING").await, 0, "no run is left EXECUTING");
    for id in &short {
        assert_eq!(
            kiln.retrieve(id).await["status"],
            "COMPLETED",
            "a run that fits in the grace period finishes"
        );
    }
    for id in &long {
        let run = kiln.retrieve(id).await;
        assert_eq!(run["status"], "QUEUED", "an unfinished run is handed back");
        assert_eq!(run["attemptCount"], 0, "a handed-back attempt does not count");
    }
    let _next = kiln.spawn_worker(&[]);
    for id in &long {
        let run = kiln.wait_for_status(id, "COMPLETED", Duration::from_secs(90)).await;
        assert_eq!(run["attemptCount"], 1);
    }
}

/// Waits, polling, until `done` holds; fails naming `what` after `within`.
async fn wait_until(within: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A claim that fails part-way starts the runs it had already recorded
/// EXECUTING, and puts back only the others: a recorded run is never left
/// without a handler until its lease lapses. The failure is made real: an
/// id Postgres cannot take (it holds a NUL) sits behind a real run in the
/// same limited lane, so the worker records the real run and then fails.
#[tokio::test]
async fn a_claim_that_fails_part_way_starts_the_runs_it_recorded() {
    let tasks_file = crate::helpers::temp_dir("partial-claim").join("tasks.toml");
    std::fs::write(&tasks_file, "[queues.\"limited\"]\nconcurrency_limit = 5\n").expect("tasks file");
    let mut kiln = Kiln::builder(Mode::Serve)
        .env("KILN_TASKS_FILE", tasks_file.to_string_lossy())
        // Far past the test's wait: an orphaned run could only finish by
        // its lease lapsing.
        .env("KILN_LEASE", "10m")
        .spawn()
        .await;
    let run = kiln
        .trigger(
            "kiln.sleep",
            json!({ "payload": { "ms": 10 }, "options": { "queue": { "name": "limited" } } }),
        )
        .await;
    let lane = format!("{}:queue:dev:limited", kiln.redis_prefix);
    let mut redis = redis::Client::open(crate::helpers::redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    wait_until_async(Duration::from_secs(30), "the run reaches Redis", || {
        let mut redis = redis.clone();
        let lane = lane.clone();
        async move {
            let length: u64 = redis::cmd("LLEN")
                .arg(&lane)
                .query_async(&mut redis)
                .await
                .expect("llen");
            length == 1
        }
    })
    .await;
    let _: u64 = redis::cmd("RPUSH")
        .arg(&lane)
        .arg("run_unreadable\u{0}")
        .query_async(&mut redis)
        .await
        .expect("rpush");

    let _worker = kiln.spawn_worker(&[("KILN_WORKER_CONCURRENCY", "4")]);
    let done = kiln.wait_for_status(&run, "COMPLETED", Duration::from_secs(60)).await;
    assert_eq!(done["attemptCount"], 1, "{done}");
    let db = kiln.db().await;
    let attempts: i32 = sqlx::query_scalar("SELECT attempt_count FROM runs WHERE id = $1")
        .bind(&run)
        .fetch_one(&db)
        .await
        .expect("attempts");
    assert_eq!(attempts, 1, "one attempt, not one burnt by an orphaned claim");
}

async fn wait_until_async<F: std::future::Future<Output = bool>>(within: Duration, what: &str, done: impl Fn() -> F) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
