//! The fault bench: each scenario of the reliability tests, run once with
//! the real kiln binary, Postgres and Redis, and counted: runs triggered,
//! completed, lost (accepted but never final) and executed more than once
//! (more than one counted attempt). `cargo bench --bench faults` prints the
//! table; `scripts/bench faults` builds and runs it.
//!
//! Settings: FAULTS_BACKLOG (100000), the size of the backlog scenario.

#![allow(unreachable_pub, dead_code)]

#[path = "../tests/e2e/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use helpers::{Kiln, Mode, RedisServer, TcpProxy, wait_for_count};
use serde_json::json;
use sqlx::PgPool;

struct Tally {
    scenario: &'static str,
    triggered: i64,
    completed: i64,
    lost: i64,
    more_than_once: i64,
}

/// Counts the runs of a finished scenario. Lost: recorded, yet not in a
/// final status once the scenario had time to settle.
async fn tally(scenario: &'static str, db: &PgPool, triggered: i64) -> Tally {
    let (completed, unfinished, more_than_once): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'COMPLETED'),
                count(*) FILTER (WHERE status IN ('QUEUED', 'DELAYED', 'EXECUTING')),
                count(*) FILTER (WHERE attempt_count > 1)
         FROM runs",
    )
    .fetch_one(db)
    .await
    .expect("tally");
    Tally {
        scenario,
        triggered,
        completed,
        lost: unfinished + (triggered - completed - unfinished).max(0),
        more_than_once,
    }
}

async fn trigger_many(kiln: &Kiln, count: usize, body: serde_json::Value, clients: usize) -> i64 {
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let url = kiln
        .url("/api/v1/tasks/kiln.sleep/trigger")
        .replace("kiln.sleep", body["task"].as_str().unwrap_or("kiln.noop"));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, key, next, accepted, payload) = (
            kiln.http.clone(),
            url.clone(),
            kiln.key.clone(),
            next.clone(),
            accepted.clone(),
            body["payload"].clone(),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let response = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "payload": payload }))
                    .send()
                    .await;
                if response.is_ok_and(|r| r.status().is_success()) {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    accepted.load(Ordering::Relaxed) as i64
}

async fn killed_worker() -> Tally {
    let mut kiln = Kiln::builder(Mode::Serve).env("KILN_LEASE", "2s").spawn().await;
    let mut worker = kiln.spawn_worker(&[("KILN_WORKER_CONCURRENCY", "250")]);
    let db = kiln.db().await;
    let triggered = trigger_many(
        &kiln,
        200,
        json!({ "task": "kiln.sleep", "payload": { "ms": 3000 } }),
        16,
    )
    .await;
    wait_for_count(&db, "EXECUTING", triggered, Duration::from_secs(60)).await;
    worker.kill_hard();
    let _next = kiln.spawn_worker(&[("KILN_WORKER_CONCURRENCY", "250")]);
    wait_for_count(&db, "COMPLETED", triggered, Duration::from_secs(120)).await;
    tally("kill -9 of a worker with 200 runs in flight", &db, triggered).await
}

async fn flushed_redis() -> Tally {
    let redis = RedisServer::start().await;
    let mut kiln = Kiln::builder(Mode::Serve).redis(&redis.url).spawn().await;
    let db = kiln.db().await;
    let triggered = trigger_many(&kiln, 500, json!({ "task": "kiln.noop", "payload": {} }), 16).await;
    let mut conn = redis.connection().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .expect("flushall");
    let _worker = kiln.spawn_worker(&[]);
    wait_for_count(&db, "COMPLETED", triggered, Duration::from_secs(120)).await;
    tally("FLUSHALL with 500 runs queued", &db, triggered).await
}

async fn backlog() -> Tally {
    let runs: usize = std::env::var("FAULTS_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let redis = RedisServer::start().await;
    let mut kiln = Kiln::builder(Mode::Serve).redis(&redis.url).spawn().await;
    let db = kiln.db().await;
    let triggered = trigger_many(&kiln, runs, json!({ "task": "kiln.noop", "payload": {} }), 128).await;
    let _workers = [kiln.spawn_worker(&[]), kiln.spawn_worker(&[])];
    wait_for_count(&db, "COMPLETED", triggered, Duration::from_secs(600)).await;
    tally("backlog triggered with no worker, then 2 workers", &db, triggered).await
}

async fn postgres_outage() -> Tally {
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let mut kiln = Kiln::builder(Mode::Dev).postgres_port(proxy.port).spawn().await;
    let db = kiln.db().await;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (http, url, key, stop, accepted) = (
            kiln.http.clone(),
            kiln.url("/api/v1/tasks/kiln.noop/trigger"),
            kiln.key.clone(),
            stop.clone(),
            accepted.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(response) = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "payload": {} }))
                    .send()
                    .await
                    && response.status().is_success()
                {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(10)).await;
    proxy.restore();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let _ = client.await;
    }
    let triggered = accepted.load(Ordering::Relaxed) as i64;
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&db)
        .await
        .expect("count");
    wait_for_count(&db, "COMPLETED", recorded, Duration::from_secs(120)).await;
    tally("Postgres unreachable for 10 s under triggers", &db, triggered).await
}

async fn sigterm() -> Tally {
    let mut kiln = Kiln::builder(Mode::Serve).spawn().await;
    let db = kiln.db().await;
    let worker = kiln.spawn_worker(&[("KILN_SHUTDOWN_GRACE", "1s")]);
    let short = trigger_many(&kiln, 20, json!({ "task": "kiln.sleep", "payload": { "ms": 300 } }), 4).await;
    let long = trigger_many(&kiln, 10, json!({ "task": "kiln.sleep", "payload": { "ms": 4000 } }), 4).await;
    wait_for_count(&db, "EXECUTING", short + long, Duration::from_secs(30)).await;
    worker.terminate();
    let mut worker = worker;
    let _ = tokio::task::spawn_blocking(move || worker.child.wait()).await;
    let _next = kiln.spawn_worker(&[]);
    wait_for_count(&db, "COMPLETED", short + long, Duration::from_secs(60)).await;
    tally("SIGTERM on a worker with 30 runs in flight", &db, short + long).await
}

#[tokio::main]
async fn main() {
    let tallies = vec![
        killed_worker().await,
        flushed_redis().await,
        postgres_outage().await,
        sigterm().await,
        backlog().await,
    ];
    println!();
    println!("| scenario | triggered (accepted) | completed | lost | executed more than once |");
    println!("|---|---:|---:|---:|---:|");
    for t in &tallies {
        println!(
            "| {} | {} | {} | {} | {} |",
            t.scenario, t.triggered, t.completed, t.lost, t.more_than_once
        );
    }
}
