//! Page previews: kiln's pipeline (pdfium render, PNG and JPEG encodings,
//! the smaller kept) beside MuPDF (`mutool draw -r 212`, the renderer
//! Papermark uses) and poppler (`pdftoppm -r 212 -png`), on the same PDFs,
//! in one run. `scripts/bench preview` builds kiln in release and runs it.
//!
//! kiln runs as its worker does: `kiln render-pdf` processes splitting the
//! pages (KILN_PREVIEW_PARALLELISM, default the number of cores). MuPDF
//! and poppler run as one process over the document, as Papermark runs
//! them, and MuPDF also as that many processes each drawing a share of
//! the pages, for a like-for-like use of the cores. Peak RSS is the
//! largest single process's (GNU time's %M), summed over concurrent
//! processes.
//!
//! A third document is the report with its trailer and `%%EOF` cut off:
//! MuPDF repairs it as it opens it; kiln's worker tries pdfium, makes a
//! repaired copy with `mutool clean` and renders that (the repair pass), so
//! its row is the whole path, and the repair's cost is printed beside the
//! good document's time.
//!
//! Last, the report goes through the whole of kiln as a client sees it:
//! `kiln dev` (API, Postgres, Redis, a worker, local storage) from the
//! `kiln.pdf.preview` trigger to COMPLETED (images written, output
//! recorded), beside `mutool draw` in the same round.
//!
//! Everything runs BENCH_ROUNDS times (3); each ratio is taken within its
//! round, and the table ends with each ratio's median.
//!
//! Settings: BENCH_PREVIEW_PAGES (36), BENCH_ROUNDS (3), KILN_BIN
//! (target/release/kiln), PDFIUM_LIB_PATH (default
//! /usr/local/lib/libpdfium.so).

#[path = "../tests/e2e/helpers.rs"]
#[allow(dead_code, unreachable_pub)]
mod helpers;
#[path = "../tests/support/pdfgen.rs"]
#[allow(dead_code, unreachable_pub)]
mod pdfgen;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

struct Measured {
    seconds: f64,
    peak_rss_kib: u64,
    output_bytes: u64,
}

/// Runs `commands` side by side under GNU time; wall time of the lot.
fn measure(commands: Vec<Vec<String>>, out_dir: &Path) -> BenchResult<Measured> {
    let _ = std::fs::remove_dir_all(out_dir);
    std::fs::create_dir_all(out_dir)?;
    let started = Instant::now();
    let mut children = Vec::new();
    for (index, command) in commands.iter().enumerate() {
        let rss_file = out_dir.with_extension(format!("rss{index}"));
        let child = Command::new("/usr/bin/time")
            .arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&rss_file)
            .args(command)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        children.push((child, rss_file, command.join(" ")));
    }
    let mut peak_rss_kib = 0;
    for (mut child, rss_file, text) in children {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("{text} failed: {status}").into());
        }
        let rss = std::fs::read_to_string(&rss_file)?;
        peak_rss_kib += rss.lines().last().unwrap_or("0").trim().parse::<u64>().unwrap_or(0);
        let _ = std::fs::remove_file(rss_file);
    }
    let seconds = started.elapsed().as_secs_f64();
    let output_bytes = std::fs::read_dir(out_dir)?
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(Measured {
        seconds,
        peak_rss_kib,
        output_bytes,
    })
}

/// kiln's path for a damaged document, as its worker takes it: the
/// renderers fail on it, one process makes a repaired copy with `mutool
/// clean`, and the renderers draw the copy (leniently). Wall time of all.
fn measure_repair_path(kiln: &str, library: &str, pdf: &Path, out: &Path, shards: usize) -> BenchResult<Measured> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out)?;
    let started = Instant::now();
    let failed = kiln_commands(kiln, library, pdf, out, shards)
        .iter()
        .map(|command| Command::new(&command[0]).args(&command[1..]).output())
        .collect::<Result<Vec<_>, _>>()?;
    if failed
        .iter()
        .all(|o| String::from_utf8_lossy(&o.stdout).contains("\"kind\":\"page\""))
    {
        return Err("the damaged document rendered without a repair; damage it more".into());
    }
    let repair_dir = out.with_extension("repair");
    std::fs::create_dir_all(&repair_dir)?;
    let repaired = Command::new(kiln)
        .args(["render-pdf", "--repair-with", "mutool", "--input"])
        .arg(pdf)
        .arg("--output-dir")
        .arg(&repair_dir)
        .arg("--library")
        .arg(library)
        .status()?;
    if !repaired.success() {
        return Err(format!("the repair failed: {repaired}").into());
    }
    let copy = repair_dir.join("repaired-mutool.pdf");
    let mut commands = kiln_commands(kiln, library, &copy, out, shards);
    for command in &mut commands {
        command.push("--lenient".into());
    }
    let first_pass = started.elapsed().as_secs_f64();
    let rendered = measure(commands, out)?;
    let _ = std::fs::remove_dir_all(&repair_dir);
    Ok(Measured {
        seconds: first_pass + rendered.seconds,
        ..rendered
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// kiln's renderers as its worker starts them: `shards` processes taking
/// pages in turn through a fresh claims folder.
fn kiln_commands(kiln: &str, library: &str, pdf: &Path, out: &Path, shards: usize) -> Vec<Vec<String>> {
    static PASSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let pass = PASSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let claims = out.with_extension(format!("claims-{pass}"));
    let _ = std::fs::create_dir_all(&claims);
    (0..shards)
        .map(|shard| {
            vec![
                kiln.to_owned(),
                "render-pdf".into(),
                "--claims".into(),
                claims.display().to_string(),
                "--input".into(),
                pdf.display().to_string(),
                "--output-dir".into(),
                out.display().to_string(),
                "--shard".into(),
                format!("{shard}/{shards}"),
                "--library".into(),
                library.to_owned(),
                "--memory-limit".into(),
                (2048u64 << 20).to_string(),
            ]
        })
        .collect()
}

fn mutool_commands(pdf: &Path, out: &Path, pages: usize, processes: usize) -> Vec<Vec<String>> {
    let per = pages.div_ceil(processes);
    (0..processes)
        .map(|p| {
            let first = p * per + 1;
            let last = ((p + 1) * per).min(pages);
            vec![
                "mutool".into(),
                "draw".into(),
                "-q".into(),
                "-r".into(),
                "212".into(),
                "-o".into(),
                out.join("page-%d.png").display().to_string(),
                pdf.display().to_string(),
                format!("{first}-{last}"),
            ]
        })
        .collect()
}

fn main() -> BenchResult<()> {
    let pages: usize = setting("BENCH_PREVIEW_PAGES", "36").parse()?;
    let kiln = setting("KILN_BIN", "target/release/kiln");
    let library = setting("PDFIUM_LIB_PATH", "/usr/local/lib/libpdfium.so");
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let shards: usize = setting("KILN_PREVIEW_PARALLELISM", &cores.to_string()).parse()?;
    for tool in ["mutool", "pdftoppm"] {
        if Command::new(tool).arg("-v").output().is_err() {
            return Err(format!("{tool} is missing: apt-get install mupdf-tools poppler-utils").into());
        }
    }
    let work = std::env::temp_dir().join(format!("kiln-bench-preview-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    let slides: Vec<pdfgen::Page> = (0..pages / 3)
        .map(|i| {
            let page = pdfgen::Page::new(960.0, 540.0)
                .with_rect([0.0, 470.0, 960.0, 70.0], [0.9, 0.4, 0.1])
                .with_text(&["Slide title", "A point worth making", "Another, with numbers: 12.4%"]);
            if i % 2 == 0 { page.with_photo(800, 300) } else { page }
        })
        .collect();
    let documents: Vec<(String, PathBuf, usize)> = vec![
        (
            "report (letter, text, 1 in 5 with a photo)".into(),
            work.join("report.pdf"),
            pages,
        ),
        (
            "slides (16:9, every other with a photo)".into(),
            work.join("slides.pdf"),
            slides.len(),
        ),
    ];
    std::fs::write(&documents[0].1, pdfgen::sample_document(pages))?;
    std::fs::write(&documents[1].1, pdfgen::build(&slides))?;

    let good = std::fs::read(&documents[0].1)?;
    let xref = good
        .windows(6)
        .position(|w| w == b"\nxref\n")
        .ok_or("the sample has an xref table")?;
    let damaged = work.join("damaged.pdf");
    std::fs::write(&damaged, &good[..=xref])?;
    let rounds: usize = setting("BENCH_ROUNDS", "3").parse()?;

    println!(
        "\nPage previews at 212 dpi (scale 2.95), {cores} cores; kiln uses {shards} renderer processes; {rounds} rounds\n"
    );
    println!("| round | document | renderer | pages | seconds | pages/s | × MuPDF | peak RSS MiB | output MiB |");
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|");
    let mut ratios: std::collections::BTreeMap<String, Vec<f64>> = std::collections::BTreeMap::new();
    let mut repair_costs = Vec::new();
    for round in 1..=rounds {
        let mut good_kiln_seconds = f64::NAN;
        for (name, pdf, count) in &documents {
            let out = work.join("out");
            let mutool = measure(mutool_commands(pdf, &out, *count, 1), &out)?;
            let kiln_row = measure(kiln_commands(&kiln, &library, pdf, &out, shards), &out)?;
            if pdf == &documents[0].1 {
                good_kiln_seconds = kiln_row.seconds;
            }
            let rows: Vec<(String, Measured)> = vec![
                (
                    format!("kiln (pdfium + PNG/JPEG, smaller kept), {shards} processes"),
                    kiln_row,
                ),
                (
                    format!("MuPDF mutool draw -r 212, {shards} processes"),
                    measure(mutool_commands(pdf, &out, *count, shards), &out)?,
                ),
                (
                    "poppler pdftoppm -r 212 -png".into(),
                    measure(
                        vec![vec![
                            "pdftoppm".into(),
                            "-r".into(),
                            "212".into(),
                            "-png".into(),
                            pdf.display().to_string(),
                            out.join("page").display().to_string(),
                        ]],
                        &out,
                    )?,
                ),
            ];
            print_row(
                round,
                name,
                *count,
                "MuPDF mutool draw -r 212 (as Papermark)",
                &mutool,
                &mutool,
            );
            for (renderer, measured) in &rows {
                let ratio = print_row(round, name, *count, renderer, measured, &mutool);
                ratios.entry(format!("{name} — {renderer}")).or_default().push(ratio);
            }
        }
        let out = work.join("out");
        let name = "report, trailer and %%EOF cut";
        let mutool = measure(mutool_commands(&damaged, &out, pages, 1), &out)?;
        let repaired = measure_repair_path(&kiln, &library, &damaged, &out, shards)?;
        print_row(
            round,
            name,
            pages,
            "MuPDF mutool draw -r 212 (repairs as it opens)",
            &mutool,
            &mutool,
        );
        let renderer = format!("kiln: pdfium fails, mutool clean, pdfium on the copy, {shards} processes");
        let ratio = print_row(round, name, pages, &renderer, &repaired, &mutool);
        ratios.entry(format!("{name} — {renderer}")).or_default().push(ratio);
        repair_costs.push(repaired.seconds - good_kiln_seconds);
    }
    println!("\n| median over {rounds} rounds | × MuPDF (one process) |\n|---|---:|");
    for (row, values) in ratios {
        println!("| {row} | {:.2} |", median(values));
    }
    println!(
        "\nThe repair path's cost over the good document's (kiln, {pages} pages): median {:.2} s",
        median(repair_costs)
    );
    trigger_to_completed(&documents[0].1, pages, rounds, &work.join("out"))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// The report through `kiln dev`, trigger to COMPLETED as a realtime
/// subscriber sees it, beside one `mutool draw` process, alternating who
/// goes first.
fn trigger_to_completed(pdf: &Path, pages: usize, rounds: usize, out: &Path) -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bytes = std::fs::read(pdf)?;
    runtime.block_on(async {
        let (kiln, storage) = helpers::kiln_with_storage("bench-preview", &[("RUST_LOG", "warn")]).await;
        helpers::put_object(&storage, "uploads/report.pdf", &bytes);
        let run_once = |n: usize| {
            let kiln = &kiln;
            async move {
                let started = Instant::now();
                let id = kiln
                    .trigger(
                        "kiln.pdf.preview",
                        serde_json::json!({ "payload": {
                            "source": { "key": "uploads/report.pdf" },
                            "outputPrefix": format!("previews/{n}"),
                        } }),
                    )
                    .await;
                wait_for_end(kiln, &id).await?;
                Ok::<f64, String>(started.elapsed().as_secs_f64())
            }
        };
        // The worker's first renderers load pdfium cold: not measured.
        run_once(0).await?;
        println!("\nThe report through kiln dev, trigger to COMPLETED, beside mutool draw (one process)\n");
        println!("| round | kiln s | kiln pages/s | mutool s | × MuPDF |\n|---:|---:|---:|---:|---:|");
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            let (kiln_seconds, mutool) = if round % 2 == 1 {
                let k = run_once(round).await?;
                (
                    k,
                    measure(mutool_commands(pdf, out, pages, 1), out).map_err(|e| e.to_string())?,
                )
            } else {
                let m = measure(mutool_commands(pdf, out, pages, 1), out).map_err(|e| e.to_string())?;
                (run_once(round).await?, m)
            };
            let ratio = mutool.seconds / kiln_seconds;
            ratios.push(ratio);
            println!(
                "| {round} | {kiln_seconds:.2} | {:.1} | {:.2} | {ratio:.2} |",
                pages as f64 / kiln_seconds,
                mutool.seconds
            );
        }
        println!(
            "\nmedian: kiln trigger to COMPLETED at {:.2}× mutool draw's pages/s",
            median(ratios)
        );
        Ok::<(), String>(())
    })?;
    Ok(())
}

/// Waits for a run to end as an app's progress bar sees it: through the
/// realtime feed, whose live request kiln answers when the run changes.
/// (Asking for the run every 10 ms, as this bench once did, took a share
/// of the two cores the renderers need, and a slower poll adds its
/// interval to the figure.) Errs unless the run completed.
async fn wait_for_end(kiln: &helpers::Kiln, id: &str) -> Result<(), String> {
    let mut query = "offset=-1".to_owned();
    loop {
        let answer = kiln
            .http
            .get(kiln.url(&format!("/realtime/v1/runs/{id}?{query}")))
            .bearer_auth(&kiln.key)
            .send()
            .await
            .map_err(|e| format!("realtime: {e}"))?;
        if !answer.status().is_success() {
            return Err(format!("realtime answered {}", answer.status()));
        }
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or(format!("realtime answered no {name}"))
        };
        query = format!(
            "live=true&offset={}&handle={}",
            header("electric-offset")?,
            header("electric-handle")?
        );
        let messages: Vec<serde_json::Value> = answer.json().await.map_err(|e| format!("realtime: {e}"))?;
        for message in messages {
            match message["value"]["status"].as_str() {
                Some("COMPLETED_SUCCESSFULLY") => return Ok(()),
                Some("PENDING" | "DELAYED" | "EXECUTING" | "WAITING_FOR_DEPLOY" | "REATTEMPTING") | None => {}
                Some(other) => return Err(format!("the preview run ended {other}")),
            }
        }
    }
}

/// Prints one row; answers its pages/s as a multiple of MuPDF's.
fn print_row(round: usize, name: &str, count: usize, renderer: &str, m: &Measured, mutool: &Measured) -> f64 {
    let rate = count as f64 / m.seconds;
    let ratio = rate / (count as f64 / mutool.seconds);
    println!(
        "| {round} | {name} | {renderer} | {count} | {:.2} | {rate:.1} | {ratio:.2} | {:.0} | {:.1} |",
        m.seconds,
        m.peak_rss_kib as f64 / 1024.0,
        m.output_bytes as f64 / 1048576.0
    );
    ratio
}
