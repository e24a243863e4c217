//! Throughput and latency of kiln end to end, beside BullMQ on the same
//! Redis, in one run. `scripts/bench` builds kiln in release and runs this.
//!
//! For 1 and 2 worker processes it starts the release `kiln serve` and
//! `kiln worker`s on a fresh database, triggers `kiln.noop` runs over HTTP
//! from many concurrent clients, waits until Postgres shows every run
//! COMPLETED, and reads the latencies from the runs' own timestamps
//! (created → started → completed). A second phase triggers at half the
//! measured rate to show trigger→start latency under moderate load. A
//! third triggers the same number of runs as batches of 100 (the SDK's
//! `batch.trigger`, `/api/v2/tasks/batch`). Then it runs BullMQ's bench
//! (`benches/bullmq`) and prints the table.
//!
//! The clients are a minimal keep-alive HTTP/1.1 client, one connection
//! each (as wrk's are): the load generator shares the two cores with what
//! it measures, and a general-purpose client spent about 30 µs of CPU per
//! request, a sixth of the machine. Its CPU is still shown per phase.
//!
//! 50,000 runs a phase keep each phase several seconds long, so that the
//! first and last moments (connections warming, the last outcomes) weigh
//! little on its rate.
//!
//! Everything runs in rounds (3 by default): on a shared two-core machine
//! a system's rate drifts by a quarter or more from one minute to the next,
//! so one sample each would compare the moments more than the systems. The
//! table shows each system's median round, and each ratio compares kiln
//! with BullMQ from the same round.
//!
//! Settings: BENCH_RUNS (50000), BENCH_CLIENTS (64), BENCH_HALF_LOAD_SECS
//! (5), BENCH_WORKERS (the worker process counts, 1,2), BENCH_ROUNDS (3),
//! KILN_BIN (target/release/kiln), BENCH_PG_ADMIN_URL, REDIS_URL.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses.
    let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ")".
    (ticks(11) + ticks(12)) / 100.0
}

/// Every process whose command name is `name`.
fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

/// Where the CPU went during a measured phase, per component.
struct CpuMeter {
    groups: Vec<(String, Vec<u32>, f64)>,
}

impl CpuMeter {
    /// kiln's processes, Postgres (its backends as of now), Redis and this
    /// load generator.
    fn for_kiln(api_pid: u32, worker_pids: Vec<u32>) -> Self {
        Self::start(vec![
            ("kiln api".into(), vec![api_pid]),
            ("kiln workers".into(), worker_pids),
            ("postgres".into(), pids_named("postgres")),
            ("redis".into(), pids_named("redis-server")),
            ("load generator".into(), vec![std::process::id()]),
        ])
    }

    fn start(groups: Vec<(String, Vec<u32>)>) -> Self {
        Self {
            groups: groups
                .into_iter()
                .map(|(name, pids)| {
                    let used = pids.iter().map(|p| cpu_seconds(*p)).sum();
                    (name, pids, used)
                })
                .collect(),
        }
    }

    /// CPU seconds per group since `start`, and the share of the total.
    fn report(&self) -> String {
        let used: Vec<(String, f64)> = self
            .groups
            .iter()
            .map(|(name, pids, before)| (name.clone(), pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - before))
            .collect();
        let total: f64 = used.iter().map(|(_, s)| s).sum();
        used.iter()
            .map(|(name, s)| format!("{name} {s:.1} s ({:.0}%)", 100.0 * s / total.max(f64::EPSILON)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Default, Clone)]
struct Row {
    name: String,
    runs: u64,
    per_sec: f64,
    triggered_per_sec: f64,
    start: [f64; 3],
    done: [f64; 3],
    cpu: String,
}

/// One round: every kiln configuration, then BullMQ fed the same two ways.
struct Round {
    /// Per worker count: single triggers, half load, batches.
    kiln: Vec<(Row, Row, Row)>,
    bullmq: Row,
    bullmq_bulk: Row,
}

impl Round {
    /// kiln with the `i`-th worker count, single triggers or batches.
    fn kiln_row(&self, i: usize, batched: bool) -> &Row {
        let (single, _, batches) = &self.kiln[i];
        if batched { batches } else { single }
    }

    /// BullMQ fed as `kiln_row` was: one by one, or in bulk.
    fn peer_row(&self, batched: bool) -> &Row {
        if batched { &self.bullmq_bulk } else { &self.bullmq }
    }
}

/// The median of `items` by `key`: the lower of the two middle ones for an
/// even count; `None` for no items.
fn median_by<T: Clone>(items: &[T], key: impl Fn(&T) -> f64) -> Option<T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .map(|item| (*item).clone())
}

fn listed(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let runs: usize = setting("BENCH_RUNS", "50000").parse()?;
    let clients: usize = setting("BENCH_CLIENTS", "64").parse()?;
    let half_load_secs: u64 = setting("BENCH_HALF_LOAD_SECS", "5").parse()?;
    let round_count: usize = setting("BENCH_ROUNDS", "3").parse::<usize>()?.max(1);
    let worker_counts: Vec<usize> = setting("BENCH_WORKERS", "1,2")
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()?;
    let mut rounds = Vec::new();
    for round in 1..=round_count {
        eprintln!("round {round} of {round_count}");
        let mut kiln = Vec::new();
        for &workers in &worker_counts {
            kiln.push(bench_kiln(workers, runs, clients, half_load_secs).await?);
        }
        let bullmq = bench_bullmq(runs, clients, None)?;
        let bullmq_bulk = bench_bullmq(runs, BATCH_CLIENTS, Some(BATCH_SIZE))?;
        rounds.push(Round {
            kiln,
            bullmq,
            bullmq_bulk,
        });
    }

    let mut systems: Vec<(Row, Vec<f64>)> = Vec::new();
    let mut ratios: Vec<(String, String, Vec<f64>)> = Vec::new();
    let mut half_load: Vec<(String, Row, Vec<f64>)> = Vec::new();
    // The row of the round with the median completed/s, with its
    // latencies and CPU, and every round's completed/s.
    let per_round = |pick: &dyn Fn(&Round) -> &Row| -> (Row, Vec<f64>) {
        let picked: Vec<&Row> = rounds.iter().map(pick).collect();
        let rates = picked.iter().map(|row| row.per_sec).collect();
        let median = median_by(&picked, |row| row.per_sec).cloned().unwrap_or_default();
        (median, rates)
    };
    for batched in [false, true] {
        for i in 0..worker_counts.len() {
            systems.push(per_round(&|r: &Round| r.kiln_row(i, batched)));
        }
        systems.push(per_round(&|r: &Round| r.peer_row(batched)));
    }
    for i in 0..worker_counts.len() {
        for batched in [false, true] {
            let Some(first) = rounds.first() else { continue };
            ratios.push((
                first.kiln_row(i, batched).name.clone(),
                first.peer_row(batched).name.clone(),
                rounds
                    .iter()
                    .map(|r| r.kiln_row(i, batched).per_sec / r.peer_row(batched).per_sec)
                    .collect(),
            ));
        }
        let halves: Vec<&Row> = rounds.iter().map(|r| &r.kiln[i].1).collect();
        let p99s: Vec<f64> = halves.iter().map(|row| row.start[1]).collect();
        let median_half = median_by(&halves, |row| row.start[1]).cloned().unwrap_or_default();
        half_load.push((rounds[0].kiln_row(i, false).name.clone(), median_half, p99s));
    }

    println!();
    println!(
        "{runs} no-op runs a phase, {clients} concurrent clients, on {} cores; {round_count} rounds, each running every \
         system in turn. Each row is the round with the median completed/s; the last column lists every round's.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| system | runs | completed/s | triggered/s | trigger→start p50 / p99 / max (ms) | trigger→completed p50 / p99 / max (ms) | completed/s each round |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (row, rates) in &systems {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {} |",
            row.name,
            row.runs,
            row.per_sec,
            row.triggered_per_sec,
            row.start[0],
            row.start[1],
            row.start[2],
            row.done[0],
            row.done[1],
            row.done[2],
            listed(rates, 0)
        );
    }
    println!();
    for (name, half, p99s) in &half_load {
        println!(
            "| {name} at half load ({:.0} runs/s offered) | trigger→start p50 / p99 / max: {:.1} / {:.1} / {:.1} ms \
             (p99 each round: {} ms) |",
            half.per_sec,
            half.start[0],
            half.start[1],
            half.start[2],
            listed(p99s, 1)
        );
    }
    println!();
    println!("CPU used while measuring, in the median round (2 cores = 2 s per second):");
    for (row, _) in systems.iter().filter(|(row, _)| !row.cpu.is_empty()) {
        println!("- {}: {}", row.name, row.cpu);
    }
    println!();
    // Each kiln row beside BullMQ fed the same way (one by one, or in
    // bulk) in the same round, so that the machine's drift between rounds
    // weighs on both sides alike.
    for (kiln_name, peer_name, round_ratios) in &ratios {
        println!(
            "ratio {kiln_name} / {peer_name} (completed/s, same round): median {:.2} (each round: {})",
            median_by(round_ratios, |ratio| *ratio).unwrap_or(f64::NAN),
            listed(round_ratios, 2)
        );
    }
    Ok(())
}

async fn fresh_database() -> BenchResult<String> {
    let admin = setting("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres");
    let name = format!(
        "kiln_bench_{}",
        std::process::id() as u64 * 1000 + (Instant::now().elapsed().subsec_nanos() as u64 % 1000)
    );
    let mut conn = PgConnection::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
    Ok(format!("{base}/{name}"))
}

async fn drop_database(url: &str) -> BenchResult<()> {
    let admin = setting("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres");
    let name = url.rsplit('/').next().unwrap_or_default();
    let mut conn = PgConnection::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    Ok(())
}

fn kiln_command(args: &[&str], env: &[(String, String)]) -> Command {
    let mut command = Command::new(setting("KILN_BIN", "target/release/kiln"));
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Only no-op runs are measured: a worker warming up its LibreOffice
        // instances would spend the first seconds of the measurement
        // starting them, on the same two cores.
        .env("KILN_OFFICE_WARM_UP", "false")
        .env("RUST_LOG", "warn");
    command
}

/// Items per batch trigger, and clients sending batches at once.
const BATCH_SIZE: usize = 100;
const BATCH_CLIENTS: usize = 8;

async fn bench_kiln(workers: usize, runs: usize, clients: usize, half_load_secs: u64) -> BenchResult<(Row, Row, Row)> {
    let database_url = fresh_database().await?;
    let env = vec![
        ("DATABASE_URL".to_owned(), database_url.clone()),
        ("REDIS_URL".to_owned(), setting("REDIS_URL", "redis://127.0.0.1:6379")),
        (
            "KILN_REDIS_PREFIX".to_owned(),
            format!("kiln_bench_{}_{workers}", std::process::id()),
        ),
        (
            "KILN_SECRET".to_owned(),
            "bench-server-secret-0123456789abcdef".to_owned(),
        ),
        ("KILN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ];
    let created = kiln_command(&["keys", "create", "--env", "prod"], &env).output()?;
    if !created.status.success() {
        return Err(format!("kiln keys create: {}", String::from_utf8_lossy(&created.stderr)).into());
    }
    let key = String::from_utf8_lossy(&created.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();

    let mut processes = Processes(Vec::new());
    let mut api = kiln_command(&["serve"], &env).stdout(Stdio::piped()).spawn()?;
    let api_pid = api.id();
    let stdout = api.stdout.take().ok_or("no stdout")?;
    processes.0.push(api);
    let base_url = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("kiln listening on ").map(str::to_owned))
        .ok_or("kiln serve did not start")?;
    for _ in 0..workers {
        processes.0.push(kiln_command(&["worker"], &env).spawn()?);
    }
    let pool = PgPool::connect(&database_url).await?;
    let trigger_url = format!("{base_url}/api/v1/tasks/kiln.noop/trigger");

    // Warm up connections, caches and the workers' queue lists.
    fire(&trigger_url, &key, 500, clients, None).await?;
    wait_completed(&pool, 500).await?;
    sqlx::query("DELETE FROM runs").execute(&pool).await?;
    // What autovacuum would do after such a delete (it may be off where
    // this runs).
    sqlx::query("VACUUM ANALYZE runs").execute(&pool).await?;

    let worker_pids: Vec<u32> = processes.0[1..].iter().map(Child::id).collect();
    let meter = CpuMeter::for_kiln(api_pid, worker_pids);
    let started = Instant::now();
    fire(&trigger_url, &key, runs, clients, None).await?;
    let triggered_in = started.elapsed().as_secs_f64();
    wait_completed(&pool, runs as i64).await?;
    let mut row = measure(
        &pool,
        &format!("kiln, {workers} worker process{}", if workers > 1 { "es" } else { "" }),
    )
    .await?;
    row.triggered_per_sec = runs as f64 / triggered_in;
    row.cpu = meter.report();

    // Half load: a steady offered rate, to read latency when not saturated.
    sqlx::query("DELETE FROM runs").execute(&pool).await?;
    let rate = row.per_sec / 2.0;
    let count = (rate * half_load_secs as f64) as usize;
    fire(&trigger_url, &key, count, clients, Some(rate)).await?;
    wait_completed(&pool, count as i64).await?;
    let mut half = measure(&pool, "half").await?;
    half.per_sec = rate;

    // The batch-trigger path: the same runs, BATCH_SIZE to a request.
    sqlx::query("DELETE FROM runs").execute(&pool).await?;
    sqlx::query("VACUUM ANALYZE runs").execute(&pool).await?;
    let batch_url = format!("{base_url}/api/v2/tasks/batch");
    let meter = CpuMeter::for_kiln(api_pid, processes.0[1..].iter().map(Child::id).collect());
    let started = Instant::now();
    fire_batches(&batch_url, &key, runs, BATCH_CLIENTS).await?;
    let triggered_in = started.elapsed().as_secs_f64();
    wait_completed(&pool, runs as i64).await?;
    let mut batched = measure(
        &pool,
        &format!(
            "kiln, {workers} worker process{}, batches of {BATCH_SIZE} ({BATCH_CLIENTS} clients)",
            if workers > 1 { "es" } else { "" }
        ),
    )
    .await?;
    batched.triggered_per_sec = runs as f64 / triggered_in;
    batched.cpu = meter.report();

    pool.close().await;
    drop(processes);
    drop_database(&database_url).await?;
    Ok((row, half, batched))
}

/// Sends `count` triggers from `clients` concurrent clients, optionally
/// paced to `rate` per second overall.
async fn fire(url: &str, key: &str, count: usize, clients: usize, rate: Option<f64>) -> BenchResult<()> {
    post_all(url, key, count, clients, rate, |i| json!({ "payload": { "i": i } })).await
}

/// Sends `count` runs as batch triggers of BATCH_SIZE items from `clients`
/// concurrent clients.
async fn fire_batches(url: &str, key: &str, count: usize, clients: usize) -> BenchResult<()> {
    post_all(url, key, count.div_ceil(BATCH_SIZE), clients, None, move |b| {
        let items: Vec<Value> = (b * BATCH_SIZE..((b + 1) * BATCH_SIZE).min(count))
            .map(|i| json!({ "task": "kiln.noop", "payload": { "i": i } }))
            .collect();
        json!({ "items": items })
    })
    .await
}

/// POSTs `requests` bodies (`body(i)` for the i-th) to `url` from
/// `clients` concurrent clients, each on its own connection, optionally
/// paced to `rate` per second.
async fn post_all(
    url: &str,
    key: &str,
    requests: usize,
    clients: usize,
    rate: Option<f64>,
    body: impl Fn(usize) -> Value + Send + Sync + 'static,
) -> BenchResult<()> {
    let (address, path) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| format!("{url} is not an http:// URL"))?;
    let path = format!("/{path}");
    let next = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut connection = Connection::open(address, key).await?;
        let (path, next, body) = (path.clone(), Arc::clone(&next), Arc::clone(&body));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok::<_, std::io::Error>(());
                }
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let status = connection.post(&path, body(i).to_string().as_bytes()).await?;
                if !(200..300).contains(&status) {
                    eprintln!("{path} answered {status}");
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// One keep-alive HTTP/1.1 connection that POSTs JSON and reads each
/// answer whole: all this load generator needs, at a small part of the CPU
/// a general-purpose client takes. It shares two cores with what it
/// measures (wrk and oha are built the same way).
struct Connection {
    stream: BufReader<TcpStream>,
    head: String,
    request: Vec<u8>,
    line: String,
    answer: Vec<u8>,
}

impl Connection {
    async fn open(address: &str, key: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            head: format!("Host: {address}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"),
            request: Vec::new(),
            line: String::new(),
            answer: Vec::new(),
        })
    }

    /// Sends one POST and answers its status once the body is read.
    async fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        use std::io::Write as _;
        use std::io::{Error, ErrorKind};
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\n{}Content-Length: {}\r\n\r\n",
            self.head,
            body.len()
        )?;
        self.request.extend_from_slice(body);
        self.stream.get_mut().write_all(&self.request).await?;

        let malformed = |what: &str| Error::new(ErrorKind::InvalidData, format!("malformed answer: {what}"));
        self.line.clear();
        self.stream.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| malformed(&self.line))?;
        let mut length = None;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed mid-answer"));
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let length = length.ok_or_else(|| malformed("no content-length"))?;
        self.answer.resize(length, 0);
        self.stream.read_exact(&mut self.answer).await?;
        Ok(status)
    }
}

async fn wait_completed(pool: &PgPool, count: i64) -> BenchResult<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'COMPLETED'")
            .fetch_one(pool)
            .await?;
        if done >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {done} of {count} runs completed").into());
        }
        // Rates and latencies come from the runs' own timestamps, so how
        // often this looks only decides when the phase ends; each look is a
        // scan of `runs` that would take Postgres time from kiln.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn measure(pool: &PgPool, name: &str) -> BenchResult<Row> {
    let (runs, span_ms, s50, s99, smax, d50, d99, dmax): (i64, f64, f64, f64, f64, f64, f64, f64) = sqlx::query_as(
        "SELECT count(*),
            (EXTRACT(EPOCH FROM max(completed_at) - min(created_at)) * 1000)::float8,
            percentile_cont(0.5) WITHIN GROUP (ORDER BY (EXTRACT(EPOCH FROM started_at - created_at) * 1000)::float8),
            percentile_cont(0.99) WITHIN GROUP (ORDER BY (EXTRACT(EPOCH FROM started_at - created_at) * 1000)::float8),
            max(EXTRACT(EPOCH FROM started_at - created_at) * 1000)::float8,
            percentile_cont(0.5) WITHIN GROUP (ORDER BY (EXTRACT(EPOCH FROM completed_at - created_at) * 1000)::float8),
            percentile_cont(0.99) WITHIN GROUP (ORDER BY (EXTRACT(EPOCH FROM completed_at - created_at) * 1000)::float8),
            max(EXTRACT(EPOCH FROM completed_at - created_at) * 1000)::float8
         FROM runs WHERE status = 'COMPLETED'",
    )
    .fetch_one(pool)
    .await?;
    Ok(Row {
        name: name.to_owned(),
        runs: runs as u64,
        per_sec: runs as f64 / (span_ms / 1000.0),
        triggered_per_sec: 0.0,
        start: [s50, s99, smax],
        done: [d50, d99, dmax],
        cpu: String::new(),
    })
}

fn bench_bullmq(runs: usize, clients: usize, bulk: Option<usize>) -> BenchResult<Row> {
    let output = Command::new("node")
        .arg("bench.mjs")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/bullmq"))
        .env("BENCH_RUNS", runs.to_string())
        .env("BENCH_CLIENTS", clients.to_string())
        .env("BULK", bulk.unwrap_or(0).to_string())
        .output()?;
    if !output.status.success() {
        return Err(format!("BullMQ bench failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let line = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let result: Value = serde_json::from_str(&line)?;
    let f = |k: &str| result[k].as_f64().unwrap_or(f64::NAN);
    Ok(Row {
        name: match bulk {
            Some(n) => format!("BullMQ 5.81 (concurrency 50), addBulk of {n} ({clients} clients)"),
            None => "BullMQ 5.81 (concurrency 50)".into(),
        },
        runs: runs as u64,
        per_sec: f("processedPerSec"),
        triggered_per_sec: f("addedPerSec"),
        start: [f("startP50"), f("startP99"), f("startMax")],
        done: [f("doneP50"), f("doneP99"), f("doneMax")],
        cpu: String::new(),
    })
}
