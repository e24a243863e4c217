//! The task host's cost: a no-op TypeScript task run through `kiln
//! task-host` (the sample project in `tests/task-host/app`, SDK 4.1.2)
//! beside kiln's native `kiln.noop`, on the same kiln, in rounds that
//! alternate which goes first. Each round triggers the same number of runs
//! of each from concurrent clients and prints runs/s from the first
//! trigger to the last COMPLETED, and the trigger→start latency (the
//! run's `started_at` less its `created_at`) at p50 and p99.
//!
//! `scripts/bench host` installs the sample project's packages and runs
//! it. Settings: BENCH_ROUNDS (3), BENCH_HOST_RUNS (400),
//! BENCH_HOST_SLOTS (8), BENCH_CLIENTS (16).

#![allow(unreachable_pub, dead_code)]

#[path = "../tests/e2e/helpers.rs"]
mod helpers;
#[path = "../tests/support/task_host.rs"]
mod task_host_app;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use helpers::Kiln;
use serde_json::json;
use sqlx::PgPool;
use task_host_app::{Host, Sdk, app_copy};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Measured {
    runs_per_second: f64,
    p50_start_ms: f64,
    p99_start_ms: f64,
}

/// Triggers `runs` runs of `task` from `clients` concurrent clients and
/// waits until all have COMPLETED.
async fn measure(kiln: &Kiln, db: &PgPool, task: &str, runs: usize, clients: usize) -> Measured {
    let round_start: chrono::DateTime<chrono::Utc> = chrono::Utc::now();
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..clients {
        let (http, url, key, next) = (
            kiln.http.clone(),
            kiln.url(&format!("/api/v1/tasks/{task}/trigger")),
            kiln.key.clone(),
            Arc::clone(&next),
        );
        senders.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < runs {
                let response = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({ "payload": { "n": 1 } }))
                    .send()
                    .await
                    .expect("trigger");
                assert!(response.status().is_success(), "trigger answered {}", response.status());
            }
        }));
    }
    for sender in senders {
        sender.await.expect("client");
    }
    let expected = i64::try_from(runs).unwrap_or(i64::MAX);
    loop {
        let (done, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status IN ('FAILED', 'CRASHED', 'SYSTEM_FAILURE', 'TIMED_OUT'))
             FROM runs WHERE task_identifier = $1 AND created_at >= $2",
        )
        .bind(task)
        .bind(round_start)
        .fetch_one(db)
        .await
        .expect("count");
        assert_eq!(failed, 0, "{task} runs failed");
        if done >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
         FROM (SELECT extract(epoch FROM started_at - created_at) * 1000 AS ms
               FROM runs WHERE task_identifier = $1 AND created_at >= $2) AS latencies",
    )
    .bind(task)
    .bind(round_start)
    .fetch_one(db)
    .await
    .expect("latency");
    Measured {
        runs_per_second: runs as f64 / seconds,
        p50_start_ms: p50,
        p99_start_ms: p99,
    }
}

fn row(round: usize, side: &str, m: &Measured) {
    println!(
        "| {round} | {side} | {:.0} | {:.1} | {:.1} |",
        m.runs_per_second, m.p50_start_ms, m.p99_start_ms
    );
}

#[tokio::main]
async fn main() {
    let rounds = setting("BENCH_ROUNDS", 3);
    let runs = setting("BENCH_HOST_RUNS", 400);
    let slots = setting("BENCH_HOST_SLOTS", 8);
    let clients = setting("BENCH_CLIENTS", 16);
    let mut kiln = Kiln::dev().await;
    let db = kiln.db().await;
    let app = app_copy("bench-host", Sdk::Own);
    let _host = Host::start(&kiln, &app, slots).await;
    // One run each first, so neither side pays its start-up in a round.
    measure(&kiln, &db, "host.noop", 1, 1).await;
    measure(&kiln, &db, "kiln.noop", 1, 1).await;

    println!("Task host: {runs} no-op runs per side and round, {clients} clients, {slots} host slots\n");
    println!("| round | task | runs/s | trigger→start p50 (ms) | trigger→start p99 (ms) |");
    println!("|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let host_first = round % 2 == 1;
        let (host, native) = if host_first {
            let host = measure(&kiln, &db, "host.noop", runs, clients).await;
            (host, measure(&kiln, &db, "kiln.noop", runs, clients).await)
        } else {
            let native = measure(&kiln, &db, "kiln.noop", runs, clients).await;
            (measure(&kiln, &db, "host.noop", runs, clients).await, native)
        };
        row(round, "host.noop (TypeScript, task host)", &host);
        row(round, "kiln.noop (native)", &native);
        ratios.push(host.runs_per_second / native.runs_per_second);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "\nthroughput through the host, as a share of native: median {:.2}× (rounds: {})",
        ratios[ratios.len() / 2],
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
    );
}
