//! Live progress bars at scale: `scripts/bench realtime`.
//!
//! Each phase starts a release `kiln serve` and one `kiln worker` on a
//! fresh database, then triggers BENCH_BARS (2,000) `kiln.sleep` runs, each
//! tagged `bar-<n>` and reporting its progress ten times. In the watched
//! phase, every run has a subscriber from before its trigger: a live
//! realtime subscription to its tag (`useRealtimeRunsWithTag`'s protocol)
//! with a public token that may read that tag only, as a browser holds it.
//! The plain phase runs the same load with no subscriber.
//!
//! Beside the bars, a probe triggers `kiln.noop` from four clients, one
//! request at a time each, for the whole phase: its p50 and p99 are what a
//! trigger costs while the bars move. Printed per phase: whether every
//! subscriber saw its run's final status, the progress updates each saw
//! (median), the probe's latencies, and the CPU seconds Postgres and the
//! kiln API process used. Phases alternate in rounds (BENCH_ROUNDS, 3), and
//! each ratio is taken within its round.
//!
//! Settings: BENCH_BARS (2000), BENCH_SLEEP_MS (3000), BENCH_ROUNDS (3).

#![allow(unreachable_pub, dead_code)]

#[path = "../tests/e2e/helpers.rs"]
mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use helpers::{Kiln, Mode, count_status};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of every process named `name`, by pid.
fn cpu_of_all(name: &str) -> Vec<(u32, f64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .map(|pid| (pid, cpu_seconds(pid)))
        .collect()
}

/// CPU used by the processes named `name` since `before` was read, new
/// processes (Postgres backends opened meanwhile) counted whole.
fn cpu_since(name: &str, before: &[(u32, f64)]) -> f64 {
    cpu_of_all(name)
        .into_iter()
        .map(|(pid, now)| now - before.iter().find(|(p, _)| *p == pid).map_or(0.0, |(_, then)| *then))
        .sum()
}

/// A public access token that may read the runs tagged `tag`, signed as
/// the SDK's `auth.createPublicToken` signs it.
fn tag_token(secret: &str, key_id: &str, tag: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let exp = chrono::Utc::now().timestamp() + 3600;
    let claims = json!({ "sub": key_id, "pub": true, "scopes": [format!("read:tags:{tag}")], "exp": exp });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{header}.{claims}").as_bytes());
    format!(
        "{header}.{claims}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// What one subscriber saw.
struct Watched {
    saw_final: bool,
    progress_updates: usize,
}

/// Follows the runs tagged `tag` until one is COMPLETED (or `stop`).
async fn watch(http: reqwest::Client, base: String, token: String, tag: String, stop: Arc<AtomicBool>) -> Watched {
    let mut seen_progress = std::collections::HashSet::new();
    let mut offset = "-1".to_owned();
    let mut handle: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut url = format!("{base}/realtime/v1/runs?tags={tag}&offset={offset}");
        if let Some(handle) = &handle {
            url.push_str(&format!("&live=true&handle={handle}"));
        }
        let Ok(answer) = http.get(&url).bearer_auth(&token).send().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !answer.status().is_success() {
            eprintln!("subscriber {tag}: {}", answer.status());
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(next) = header("electric-offset") {
            offset = next;
        }
        handle = header("electric-handle").or(handle);
        let Ok(messages) = answer.json::<Vec<Value>>().await else {
            continue;
        };
        for message in &messages {
            let value = &message["value"];
            if let Some(metadata) = value["metadata"].as_str()
                && let Ok(metadata) = serde_json::from_str::<Value>(metadata)
                && let Some(progress) = metadata["progress"].as_u64()
            {
                seen_progress.insert(progress);
            }
            if value["status"] == "COMPLETED_SUCCESSFULLY" {
                return Watched {
                    saw_final: true,
                    progress_updates: seen_progress.len(),
                };
            }
        }
    }
    Watched {
        saw_final: false,
        progress_updates: seen_progress.len(),
    }
}

struct Phase {
    watched: bool,
    all_final: Option<(usize, usize)>,
    median_updates: usize,
    probe_p50: Duration,
    probe_p99: Duration,
    probes: usize,
    postgres_cpu: f64,
    api_cpu: f64,
    elapsed: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn run_phase(bars: usize, sleep_ms: usize, watched: bool) -> BenchResult<Phase> {
    let mut kiln = Kiln::builder(Mode::Serve)
        .env("RUST_LOG", "warn")
        .env("KILN_DB_MAX_CONNECTIONS", "16")
        .env("KILN_REALTIME_MAX_PER_KEY", (bars * 2).to_string())
        .env("KILN_WORKER_CONCURRENCY", bars.to_string())
        .spawn()
        .await;
    let db = kiln.db().await;
    let _worker = kiln.spawn_worker(&[]);
    let http = reqwest::Client::builder().pool_max_idle_per_host(bars + 64).build()?;
    let claims: Value = kiln.post("/api/v1/auth/jwt/claims", &json!({})).await.json().await?;
    let key_id = claims["sub"].as_str().ok_or("no sub in the claims")?.to_owned();

    let postgres_before = cpu_of_all("postgres");
    let api_before = cpu_seconds(kiln.pid());
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    let subscribers: Vec<_> = if watched {
        (0..bars)
            .map(|n| {
                let tag = format!("bar-{n}");
                tokio::spawn(watch(
                    http.clone(),
                    kiln.base_url.clone(),
                    tag_token(&kiln.key, &key_id, &tag),
                    tag,
                    stop.clone(),
                ))
            })
            .collect()
    } else {
        Vec::new()
    };

    let probes: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, key, stop) = (
                http.clone(),
                kiln.url("/api/v1/tasks/kiln.noop/trigger"),
                kiln.key.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let sent = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&json!({ "payload": {} }))
                        .send()
                        .await;
                    if sent.is_ok_and(|a| a.status().is_success()) {
                        latencies.push(at.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                latencies
            })
        })
        .collect();

    // The bars, from 32 clients.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let triggers: Vec<_> = (0..32)
        .map(|_| {
            let (http, url, key, next) = (
                http.clone(),
                kiln.url("/api/v1/tasks/kiln.sleep/trigger"),
                kiln.key.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= bars {
                        return;
                    }
                    let body = json!({ "payload": { "ms": sleep_ms }, "options": { "tags": [format!("bar-{n}")] } });
                    let answer = http.post(&url).bearer_auth(&key).json(&body).send().await;
                    assert!(answer.is_ok_and(|a| a.status().is_success()), "trigger bar-{n}");
                }
            })
        })
        .collect();
    for trigger in triggers {
        trigger.await?;
    }

    let deadline = Instant::now() + Duration::from_secs(300);
    while count_status(&db, "COMPLETED").await < bars as i64 {
        if Instant::now() > deadline {
            return Err("the bars did not all complete within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Subscribers get a little while to read the last change.
    let mut seen = Vec::new();
    let grace = tokio::time::Instant::now() + Duration::from_secs(30);
    for subscriber in subscribers {
        match tokio::time::timeout_at(grace, subscriber).await {
            Ok(watched) => seen.push(watched?),
            Err(_) => seen.push(Watched {
                saw_final: false,
                progress_updates: 0,
            }),
        }
    }
    let elapsed = started.elapsed();
    let postgres_cpu = cpu_since("postgres", &postgres_before);
    let api_cpu = cpu_seconds(kiln.pid()) - api_before;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for probe in probes {
        latencies.extend(probe.await?);
    }
    latencies.sort();
    let mut updates: Vec<usize> = seen.iter().map(|w| w.progress_updates).collect();
    updates.sort_unstable();
    Ok(Phase {
        watched,
        all_final: watched.then(|| (seen.iter().filter(|w| w.saw_final).count(), bars)),
        median_updates: updates.get(updates.len() / 2).copied().unwrap_or(0),
        probe_p50: percentile(&latencies, 0.50),
        probe_p99: percentile(&latencies, 0.99),
        probes: latencies.len(),
        postgres_cpu,
        api_cpu,
        elapsed,
    })
}

fn print_phase(round: usize, phase: &Phase) {
    let subscribers = match phase.all_final {
        Some((saw, of)) => format!("{saw} of {of}"),
        None => "none".to_owned(),
    };
    println!(
        "| {round} | {} | {subscribers} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.1} |",
        if phase.watched { "watched" } else { "plain" },
        if phase.watched {
            phase.median_updates.to_string()
        } else {
            "–".into()
        },
        phase.probe_p50.as_secs_f64() * 1000.0,
        phase.probe_p99.as_secs_f64() * 1000.0,
        phase.probes,
        phase.postgres_cpu,
        phase.api_cpu,
        phase.elapsed.as_secs_f64(),
    );
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let bars = setting("BENCH_BARS", 2000);
    let sleep_ms = setting("BENCH_SLEEP_MS", 3000);
    let rounds = setting("BENCH_ROUNDS", 3);
    println!(
        "{bars} progress bars (kiln.sleep {sleep_ms} ms, ten updates each), watched by a tag subscription each or not at all\n"
    );
    println!(
        "| round | phase | subscribers that saw COMPLETED | progress values seen (median of 10) | probe trigger p50 ms | p99 ms | probes | Postgres CPU s | kiln API CPU s | phase s |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        // Alternate who goes first, so neither always meets a warmer machine.
        let order = if round % 2 == 1 { [false, true] } else { [true, false] };
        let mut phases = Vec::new();
        for watched in order {
            let phase = run_phase(bars, sleep_ms, watched).await?;
            print_phase(round, &phase);
            phases.push(phase);
        }
        let plain = phases.iter().find(|p| !p.watched).ok_or("plain phase")?;
        let watched = phases.iter().find(|p| p.watched).ok_or("watched phase")?;
        ratios.push((
            watched.probe_p99.as_secs_f64() / plain.probe_p99.as_secs_f64().max(1e-6),
            watched.postgres_cpu / plain.postgres_cpu.max(1e-6),
        ));
    }
    println!("\nwatched ÷ plain, per round:");
    for (round, (p99, cpu)) in ratios.iter().enumerate() {
        println!(
            "  round {}: probe trigger p99 ×{p99:.2}, Postgres CPU ×{cpu:.2}",
            round + 1
        );
    }
    Ok(())
}
