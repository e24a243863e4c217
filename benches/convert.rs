//! Office → PDF: kiln's warm LibreOffice pool beside a cold
//! `soffice --headless --convert-to pdf` per document, on the same small
//! docx files, in one run. `scripts/bench convert` runs it.
//!
//! The pool is measured at sizes 1 and 2 (the cores here) with as many
//! documents in flight as instances; latency is per document, from the
//! request to the PDF on disk.
//!
//! Settings: BENCH_CONVERT_DOCS (24), KILN_SOFFICE_PATH.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_worker_convert::pool::{OfficePool, PoolConfig};

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
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
