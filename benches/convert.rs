//! Office → PDF: kiln's warm LibreOffice pool beside a cold
//! `soffice --headless --convert-to pdf` per document, on the same small
//! docx files, in one run. `scripts/bench convert` runs it.
//!
//! The pool is measured at sizes 1 and 2 (the cores here) with as many
//! documents in flight as instances; latency is per document, from the
//! request to the PDF on disk.
//!
//! Then the fallbacks: how many documents of the older-format corpus
//! (`tests/support/make_legacy_office_docs.py`) needed one, and, in rounds,
//! what a document costs when its warm instance is killed while reading it
//! (converted again on a fresh instance) and when the fresh one is killed
//! too (converted by a one-shot soffice), beside the warm conversion.
//!
//! Settings: BENCH_CONVERT_DOCS (24), BENCH_ROUNDS (3), KILN_SOFFICE_PATH.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_worker_convert::pool::{Containment, Fallback, OfficePool, PoolConfig};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn row(name: &str, docs: usize, total: Duration, mut latencies: Vec<Duration>, cold_p50: Option<Duration>) {
    latencies.sort();
    let p50 = percentile(&latencies, 0.5);
    let faster = cold_p50.map_or("1.0".to_owned(), |cold| {
        format!("{:.1}", cold.as_secs_f64() / p50.as_secs_f64())
    });
    println!(
        "| {name} | {docs} | {:.0} | {:.0} | {:.2} | {faster} |",
        p50.as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        docs as f64 / total.as_secs_f64()
    );
}

fn cold_convert(soffice: &str, profile: &Path, input: &Path, out_dir: &Path) -> BenchResult<()> {
    for _ in 0..3 {
        let status = std::process::Command::new(soffice)
            .args(["--headless", "--norestore", "--convert-to", "pdf", "--outdir"])
            .arg(out_dir)
            .arg(format!("-env:UserInstallation=file://{}", profile.display()))
            .arg(input)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        // 81: a new profile was made; soffice.bin wants to be started again.
        if status.code() != Some(81) {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("soffice failed: {status}").into())
            };
        }
    }
    Err("soffice kept asking to restart".into())
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let docs: usize = setting("BENCH_CONVERT_DOCS", "24").parse()?;
    let soffice = setting("KILN_SOFFICE_PATH", "/usr/lib/libreoffice/program/soffice.bin");
    let work = std::env::temp_dir().join(format!("kiln-bench-convert-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let made = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/make_office_docs.py"
        ))
        .arg(&work)
        .arg("Benchmark")
        .status()?;
    if !made.success() {
        return Err("cannot make the sample documents (is LibreOffice installed?)".into());
    }
    let inputs: Vec<PathBuf> = (0..docs)
        .map(|i| {
            let path = work.join(format!("doc-{i}.docx"));
            std::fs::copy(work.join("sample.docx"), &path).map(|_| path)
        })
        .collect::<Result<_, _>>()?;

    println!(
        "\nOffice → PDF, {docs} small docx files, {} cores\n",
        std::thread::available_parallelism()?.get()
    );
    println!("| converter | documents | p50 ms | p99 ms | documents/s | × faster than cold (p50) |");
    println!("|---|---:|---:|---:|---:|---:|");

    let profile = work.join("cold-profile");
    let out = work.join("cold-out");
    std::fs::create_dir_all(&out)?;
    cold_convert(&soffice, &profile, &inputs[0], &out)?; // makes the profile once, as a long-lived host would have it
    let started = Instant::now();
    let mut cold = Vec::new();
    for input in &inputs {
        let t = Instant::now();
        cold_convert(&soffice, &profile, input, &out)?;
        cold.push(t.elapsed());
    }
    let cold_total = started.elapsed();
    let mut sorted = cold.clone();
    sorted.sort();
    let cold_p50 = percentile(&sorted, 0.5);
    row(
        "cold soffice --convert-to pdf, one at a time",
        docs,
        cold_total,
        cold,
        None,
    );

    for size in [1usize, 2] {
        let pool = Arc::new(OfficePool::new(PoolConfig {
            size,
            soffice: PathBuf::from(&soffice),
            python: PathBuf::from("/usr/bin/python3"),
            conversion_timeout: Duration::from_secs(60),
            memory_limit: 4 << 30,
            work_dir: work.join(format!("pool-{size}")),
            containment: Containment::probe(),
        }));
        pool.warm_up().await?;
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..size {
            let (pool, next, inputs, work) = (Arc::clone(&pool), Arc::clone(&next), inputs.clone(), work.clone());
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(input) = inputs.get(i) else { break };
                    let t = Instant::now();
                    let output = work.join(format!("warm-{size}-{i}.pdf"));
                    pool.convert(input, &output, Some(("MS Word 2007 XML", "")))
                        .await
                        .map_err(|e| e.to_string())?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, String>(latencies)
            });
        }
        let mut latencies = Vec::new();
        while let Some(done) = tasks.join_next().await {
            latencies.extend(done??);
        }
        row(
            &format!("kiln warm pool, {size} instance(s)"),
            docs,
            started.elapsed(),
            latencies,
            Some(cold_p50),
        );
    }
    fallbacks(&soffice, &work).await?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn pool_of_one(soffice: &str, work: &Path, label: &str) -> OfficePool {
    OfficePool::new(PoolConfig {
        size: 1,
        soffice: PathBuf::from(soffice),
        python: PathBuf::from("/usr/bin/python3"),
        conversion_timeout: Duration::from_secs(120),
        memory_limit: 4 << 30,
        work_dir: work.join(label),
        containment: Containment::probe(),
    })
}

/// The soffice.bin processes of this process's pools that have a file
/// named `name` open.
fn instances_reading(name: &str) -> Vec<u32> {
    let pipe = format!("kiln_office_{}_", std::process::id());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.starts_with('/') && cmdline.contains("soffice.bin") && cmdline.contains(&pipe)
        })
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok)
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .any(|target| target.file_name().is_some_and(|file| file == name))
            })
        })
        .collect()
}

/// Converts `input` on `pool`, killing the first `kills` instances that
/// open it; answers the time taken and the fallback that converted it.
async fn convert_killing(
    pool: &Arc<OfficePool>,
    input: &Path,
    output: &Path,
    kills: usize,
) -> BenchResult<(Duration, Option<Fallback>)> {
    let started = Instant::now();
    let conversion = {
        let (pool, input, output) = (Arc::clone(pool), input.to_owned(), output.to_owned());
        tokio::spawn(async move { pool.convert(&input, &output, Some(("Rich Text Format", ""))).await })
    };
    let name = input.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut killed = Vec::new();
    while killed.len() < kills && !conversion.is_finished() {
        for pid in instances_reading(&name) {
            if !killed.contains(&pid) {
                std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()?;
                killed.push(pid);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fallback = conversion.await?.map_err(|e| e.to_string())?;
    Ok((started.elapsed(), fallback))
}

async fn fallbacks(soffice: &str, work: &Path) -> BenchResult<()> {
    let legacy = work.join("legacy");
    std::fs::create_dir_all(&legacy)?;
    let made = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/make_legacy_office_docs.py"
        ))
        .arg(&legacy)
        .arg("Benchmark")
        .status()?;
    if !made.success() {
        return Err("cannot make the older-format documents".into());
    }
    let manifest: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(legacy.join("manifest.json"))?)?;
    let pool = pool_of_one(soffice, work, "legacy-pool");
    pool.warm_up().await?;
    let (mut converted, mut refused, mut fell_back) = (0, 0, 0);
    let started = Instant::now();
    for (i, name) in manifest.keys().enumerate() {
        let dir = legacy.join(format!("run-{i}"));
        std::fs::create_dir_all(&dir)?;
        let download = dir.join("download");
        std::fs::copy(legacy.join(name), &download)?;
        match kiln_worker_convert::convert_download(&pool, &dir, &download, name).await {
            Ok((_, done)) => {
                converted += 1;
                fell_back += usize::from(done.fallback.is_some());
            }
            Err(_) => refused += 1,
        }
    }
    println!(
        "\nOlder-format corpus: {} documents in {:.1} s: {converted} converted, {refused} refused (another family), \
         {fell_back} needed a fallback\n",
        manifest.len(),
        started.elapsed().as_secs_f64()
    );

    let rounds: usize = setting("BENCH_ROUNDS", "3").parse()?;
    let mut rtf = String::from("{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times;}}\n");
    for paragraph in 0..4000 {
        rtf.push_str(&format!("\\pard Paragraph {paragraph} with {{\\b bold}} words\\par\n"));
    }
    rtf.push('}');
    let input = work.join("long.rtf");
    std::fs::write(&input, rtf)?;
    let pool = Arc::new(pool_of_one(soffice, work, "fallback-pool"));
    pool.warm_up().await?;
    let mut times: [Vec<Duration>; 3] = Default::default();
    for round in 0..rounds {
        for (kills, expected) in [
            (0, None),
            (1, Some(Fallback::FreshInstance)),
            (2, Some(Fallback::ColdOneShot)),
        ] {
            let output = work.join(format!("long-{round}-{kills}.pdf"));
            let (took, fallback) = convert_killing(&pool, &input, &output, kills).await?;
            if fallback != expected {
                return Err(format!("{kills} kill(s) ended with {fallback:?}, not {expected:?}").into());
            }
            times[kills].push(took);
        }
        // The pool is warm again before the next round's warm conversion.
        pool.warm_up().await?;
    }
    println!("Fallback cost, a 4,000-paragraph RTF, {rounds} rounds (median)\n");
    println!("| path | median ms | × the warm conversion |");
    println!("|---|---:|---:|");
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        percentile(times, 0.5)
    };
    let warm = median(&mut times[0]);
    for (path, kills) in [
        ("warm instance", 0),
        ("killed once → fresh instance", 1),
        ("killed twice → one-shot soffice", 2),
    ] {
        let took = median(&mut times[kills]);
        println!(
            "| {path} | {:.0} | {:.2} |",
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() / warm.as_secs_f64()
        );
    }
    Ok(())
}
