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
//! Settings: BENCH_PREVIEW_PAGES (36), KILN_BIN (target/release/kiln),
//! PDFIUM_LIB_PATH (default /usr/local/lib/libpdfium.so).

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

fn kiln_commands(kiln: &str, library: &str, pdf: &Path, out: &Path, shards: usize) -> Vec<Vec<String>> {
    (0..shards)
        .map(|shard| {
            vec![
                kiln.to_owned(),
                "render-pdf".into(),
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

    println!("\nPage previews at 212 dpi (scale 2.95), {cores} cores; kiln uses {shards} renderer processes\n");
    println!("| document | renderer | pages | seconds | pages/s | × MuPDF | peak RSS MiB | output MiB |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (name, pdf, count) in &documents {
        let out = work.join("out");
        let mutool = measure(mutool_commands(pdf, &out, *count, 1), &out)?;
        let rows: Vec<(String, Measured)> = vec![
            (
                format!("kiln (pdfium + PNG/JPEG, smaller kept), {shards} processes"),
                measure(kiln_commands(&kiln, &library, pdf, &out, shards), &out)?,
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
        let mutool_rate = *count as f64 / mutool.seconds;
        let print = |renderer: &str, m: &Measured| {
            let rate = *count as f64 / m.seconds;
            println!(
                "| {name} | {renderer} | {count} | {:.2} | {rate:.1} | {:.2} | {:.0} | {:.1} |",
                m.seconds,
                rate / mutool_rate,
                m.peak_rss_kib as f64 / 1024.0,
                m.output_bytes as f64 / 1048576.0
            );
        };
        print("MuPDF mutool draw -r 212 (as Papermark)", &mutool);
        for (renderer, measured) in &rows {
            print(renderer, measured);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
