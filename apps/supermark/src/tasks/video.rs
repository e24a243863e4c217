//! `process-video`: an uploaded video's length recorded, then the video
//! re-encoded for streaming with Supermark's exact ffmpeg parameters and
//! stored as `<teamId>/<docId>/optimized.mp4`. ffprobe and ffmpeg run as
//! child processes with an address-space limit and a time limit, so a
//! hostile file ends the run FAILED instead of holding the worker.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler};
use kiln_worker_kit::upload_file;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{db_failure, download_upload, not_found, parse_payload, team_key};
use crate::{Shared, status, task_ids};

/// Supermark skips re-encoding past this size.
const SKIP_OPTIMIZATION_BYTES: u64 = 500 * 1024 * 1024;
/// How long ffprobe may take to read a file's header.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct ProcessVideo(pub(crate) Arc<Shared>);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    video_url: String,
    team_id: String,
    doc_id: String,
    document_version_id: String,
    #[serde(default)]
    file_size: f64,
}

impl TaskHandler for ProcessVideo {
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture {
        let shared = Arc::clone(&self.0);
        Box::pin(async move {
            let result = process(&shared, &ctx, payload).await;
            status::report_failure(&ctx, result)
        })
    }
}

/// What ffprobe tells of the first video stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Probe {
    pub(crate) width: u32,
    pub(crate) fps: f64,
    pub(crate) duration: f64,
}

/// Reads ffprobe's JSON as Supermark does: width 1920 when unknown, the
/// frame rate from `r_frame_rate` or `avg_frame_rate`, the duration from
/// the container.
pub(crate) fn parse_probe(json: &Value) -> Option<Probe> {
    let stream = json["streams"]
        .as_array()?
        .iter()
        .find(|s| s["codec_type"] == "video")?;
    let width = stream["width"].as_u64().filter(|w| *w > 0).unwrap_or(1920);
    let rate = |field: &str| -> Option<f64> {
        let text = stream[field].as_str()?;
        let (num, den) = text.split_once('/').unwrap_or((text, "1"));
        let (num, den) = (num.parse::<f64>().ok()?, den.parse::<f64>().ok()?);
        (den != 0.0).then_some(num / den).filter(|r| r.is_finite() && *r > 0.0)
    };
    let fps = rate("r_frame_rate").or_else(|| rate("avg_frame_rate")).unwrap_or(30.0);
    let duration = json["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d >= 0.0)
        .unwrap_or(0.0);
    Some(Probe {
        width: u32::try_from(width).unwrap_or(1920),
        fps,
        duration,
    })
}

/// Supermark's output options for `ffmpeg -y -i input …`.
pub(crate) fn encoding_arguments(probe: &Probe) -> Vec<String> {
    video_encoding_arguments(probe.width, probe.fps)
}

/// Supermark's output options for `ffmpeg -y -i input …`, for a video
/// `width` pixels wide at `fps` frames a second.
pub fn video_encoding_arguments(width: u32, fps: f64) -> Vec<String> {
    let gop = (fps * 2.0).round().max(1.0) as u64;
    let mut args: Vec<String> = Vec::new();
    if width > 1920 {
        args.extend(["-vf".into(), "scale=1920:-2".into()]);
    }
    for arg in [
        "-c:v",
        "libx264",
        "-profile:v",
        "high",
        "-level:v",
        "4.1",
        "-c:a",
        "aac",
        "-ar",
        "48000",
        "-b:a",
        "128k",
        "-b:v",
        "6000k",
        "-maxrate",
        "12000k",
        "-bufsize",
        "12000k",
        "-preset",
        "medium",
    ] {
        args.push(arg.to_owned());
    }
    args.extend([
        "-g".into(),
        gop.to_string(),
        "-keyint_min".into(),
        gop.to_string(),
        "-sc_threshold".into(),
        "0".into(),
        "-movflags".into(),
        "+faststart".into(),
    ]);
    args
}

/// Runs a tool under an address-space limit and a time limit; answers its
/// standard output, or a failure naming the tool and its last words.
async fn run_contained(
    program: &str,
    args: &[String],
    memory_limit: u64,
    timeout: Duration,
) -> Result<Vec<u8>, TaskError> {
    // Its own environment: no kiln secret reaches a process that parses
    // untrusted files.
    let child = tokio::process::Command::new("prlimit")
        .arg(format!("--as={memory_limit}"))
        .arg("--")
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TaskError::retryable("VideoToolUnavailable", format!("cannot start {program}: {e}")))?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.map_err(|e| TaskError::retryable("VideoToolUnavailable", format!("{program}: {e}")))?,
        Err(_) => {
            return Err(TaskError::fatal(
                "VideoTimeout",
                format!("{program} did not finish within {} s", timeout.as_secs()),
            ));
        }
    };
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    Err(TaskError::fatal(
        "VideoUnreadable",
        format!("{program} cannot process the video ({}): {last}", output.status),
    ))
}

async fn process(shared: &Shared, ctx: &TaskContext, payload: Value) -> Result<Value, TaskError> {
    let payload: Payload = parse_payload(task_ids::PROCESS_VIDEO, payload)?;
    let config = &shared.config;
    if !shared
        .db
        .version_exists(&payload.document_version_id)
        .await
        .map_err(db_failure)?
    {
        return Err(not_found());
    }
    let started = std::time::Instant::now();
    let work = shared.renderer.work_dir(ctx, "supermark-video").await?;
    let input = work.path().join("input");
    download_upload(shared, "S3_PATH", &payload.video_url, &input).await?;
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "video downloaded");

    let probe_args: Vec<String> = ["-v", "error", "-print_format", "json", "-show_streams", "-show_format"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([path_arg(&input)])
        .collect();
    let probed = run_contained(&config.ffprobe, &probe_args, config.video_memory_limit, PROBE_TIMEOUT).await?;
    let json: Value = serde_json::from_slice(&probed)
        .map_err(|e| TaskError::fatal("VideoUnreadable", format!("ffprobe answered no JSON: {e}")))?;
    let probe = parse_probe(&json).ok_or_else(|| TaskError::fatal("NotAVideo", "the file has no video stream"))?;
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "video probed");
    let seconds = i32::try_from(probe.duration.round() as i64).unwrap_or(i32::MAX);
    shared
        .db
        .set_video_length(&payload.document_version_id, seconds)
        .await
        .map_err(db_failure)?;

    if payload.file_size > SKIP_OPTIMIZATION_BYTES as f64 {
        return Ok(json!({ "success": true, "message": "File size is too large, skipping optimization" }));
    }

    let output = work.path().join("output.mp4");
    let mut args = vec![
        "-nostdin".to_owned(),
        "-y".to_owned(),
        "-i".to_owned(),
        path_arg(&input),
    ];
    args.extend(encoding_arguments(&probe));
    args.push(path_arg(&output));
    run_contained(&config.ffmpeg, &args, config.video_memory_limit, config.video_timeout).await?;
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "video encoded");

    let key = team_key(&payload.team_id, &payload.doc_id, "optimized.mp4")?;
    upload_file(shared.storage.as_ref(), &output, &key, "video/mp4").await?;
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "video uploaded");
    shared
        .db
        .set_video_file(&payload.document_version_id, key.as_str())
        .await
        .map_err(db_failure)?;
    tracing::info!(key = %key, seconds, "Supermark video optimized");
    Ok(json!({ "success": true, "message": "Successfully optimized video" }))
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_as_supermark_reads_them() {
        let json = json!({
            "streams": [
                { "codec_type": "audio" },
                { "codec_type": "video", "width": 3840, "r_frame_rate": "30000/1001" }
            ],
            "format": { "duration": "12.6" }
        });
        let probe = parse_probe(&json).expect("a video");
        assert_eq!(probe.width, 3840);
        assert!((probe.fps - 29.97).abs() < 0.01);
        let args = encoding_arguments(&probe);
        assert_eq!(&args[..2], ["-vf", "scale=1920:-2"]);
        let gop = args.iter().position(|a| a == "-g").map(|i| args[i + 1].clone());
        assert_eq!(gop.as_deref(), Some("60"));
        assert!(parse_probe(&json!({ "streams": [{ "codec_type": "audio" }] })).is_none());
    }
}
