//! The data each template shows, already formatted: templates only place
//! and escape it. Every value that comes from a run is escaped by askama's
//! HTML escaper; no template marks run data safe.

use askama::Template;

use crate::error::DashboardError;

pub(crate) fn render(template: &impl Template) -> Result<String, DashboardError> {
    Ok(template.render()?)
}

/// For error pages: a template that cannot render still says something.
pub(crate) fn render_or_plain(template: &impl Template) -> String {
    template
        .render()
        .unwrap_or_else(|_| "<!doctype html><title>kiln</title><p>kiln could not show this page.</p>".into())
}

/// What every signed-in page's frame needs.
pub(crate) struct Layout {
    pub env: &'static str,
    pub csrf: String,
    /// The navigation entry to mark current.
    pub section: &'static str,
    /// The path of this page in the other environment.
    pub other_env_path: String,
    pub other_env: &'static str,
}

impl Layout {
    pub(crate) fn new(environment: kiln_core::auth::Environment, csrf: &str, section: &'static str) -> Self {
        let other = match environment {
            kiln_core::auth::Environment::Dev => kiln_core::auth::Environment::Prod,
            kiln_core::auth::Environment::Prod => kiln_core::auth::Environment::Dev,
        };
        Self {
            env: environment.as_str(),
            csrf: csrf.to_owned(),
            section,
            // Keys belong to no environment: the switch leads to runs.
            other_env_path: match section {
                "keys" => format!("/dashboard/{}/runs", other.as_str()),
                _ => format!("/dashboard/{}/{section}", other.as_str()),
            },
            other_env: other.as_str(),
        }
    }
}

#[derive(Template)]
#[template(path = "off.html")]
pub(crate) struct OffPage {}

#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage {
    pub status: u16,
    pub message: String,
}

#[derive(Template)]
#[template(path = "sign_in.html")]
pub(crate) struct SignInPage {
    pub next: String,
    pub message: String,
}

/// The runs list's filter, as the form shows it.
#[derive(Debug, Default, Clone)]
pub(crate) struct FilterForm {
    pub status: String,
    pub task: String,
    pub tag: String,
    pub queue: String,
    pub batch: String,
    pub schedule: String,
    pub from: String,
    pub to: String,
}

impl FilterForm {
    /// The filter as query or hidden form fields, empty ones left out.
    pub(crate) fn fields(&self) -> Vec<(&'static str, String)> {
        [
            ("status", &self.status),
            ("task", &self.task),
            ("tag", &self.tag),
            ("queue", &self.queue),
            ("batch", &self.batch),
            ("schedule", &self.schedule),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name, value.clone()))
        .collect()
    }

    pub(crate) fn query(&self) -> String {
        self.fields()
            .iter()
            .map(|(name, value)| {
                format!(
                    "{name}={}",
                    askama::filters::urlencode_strict(value).map_or_else(|_| String::new(), |v| v.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

pub(crate) struct RunLine {
    pub id: String,
    pub task: String,
    pub status: String,
    pub status_class: &'static str,
    pub created: String,
    pub duration: String,
    pub tags: Vec<String>,
}

#[derive(Template)]
#[template(path = "runs.html")]
pub(crate) struct RunsPage {
    pub layout: Layout,
    pub filter: FilterForm,
    pub statuses: Vec<&'static str>,
    pub runs: Vec<RunLine>,
    /// Query strings of the older and newer pages.
    pub older: Option<String>,
    pub newer: Option<String>,
    pub notice: String,
}

pub(crate) struct Moment {
    pub label: &'static str,
    pub at: String,
}

pub(crate) struct Related {
    pub label: &'static str,
    pub id: String,
    pub status: String,
}

pub(crate) struct AttemptLine {
    pub number: i32,
    pub outcome: String,
    pub outcome_class: &'static str,
    pub at: String,
    pub error: Option<String>,
}

pub(crate) struct LogLine {
    pub at: String,
    pub level: String,
    pub message: String,
}

pub(crate) struct FileLink {
    pub key: String,
    pub href: String,
    pub is_image: bool,
}

#[derive(Template)]
#[template(path = "run.html")]
pub(crate) struct RunPage {
    pub layout: Layout,
    pub id: String,
    pub task: String,
    pub queue: String,
    pub status: String,
    pub status_class: &'static str,
    pub is_final: bool,
    pub is_delayed: bool,
    pub attempts: String,
    /// Every attempt so far, first first, each failed one with its error.
    pub attempt_lines: Vec<AttemptLine>,
    pub timeline: Vec<Moment>,
    pub tags: Vec<String>,
    pub payload: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub metadata: Option<String>,
    /// A progress figure from the metadata, 0–100.
    pub progress: Option<u32>,
    pub progress_text: String,
    pub related: Vec<Related>,
    pub logs: Vec<LogLine>,
    pub files: Vec<FileLink>,
    pub notice: String,
}

#[derive(Template)]
#[template(path = "bulk.html")]
pub(crate) struct BulkPage {
    pub layout: Layout,
    pub action: String,
    pub count: String,
    pub fields: Vec<(&'static str, String)>,
    pub filter_query: String,
}

pub(crate) struct Bar {
    pub x: usize,
    pub y: u32,
    pub height: u32,
    pub title: String,
}

pub(crate) struct QueueLine {
    pub name: String,
    pub queued: i64,
    pub oldest_wait: String,
    pub executing: i64,
    pub limit: String,
    pub paused: bool,
    pub finished_last_hour: i64,
    pub bars: Vec<Bar>,
}

#[derive(Template)]
#[template(path = "queues.html")]
pub(crate) struct QueuesPage {
    pub layout: Layout,
    pub queues: Vec<QueueLine>,
    pub notice: String,
}

pub(crate) struct ScheduleLine {
    pub id: String,
    pub task: String,
    pub cron: String,
    pub timezone: String,
    pub kind: String,
    pub active: bool,
    pub next_runs: Vec<String>,
    pub last_run: String,
}

#[derive(Template)]
#[template(path = "schedules.html")]
pub(crate) struct SchedulesPage {
    pub layout: Layout,
    pub schedules: Vec<ScheduleLine>,
    pub total: i64,
    pub notice: String,
}

pub(crate) struct KeyLine {
    pub id: String,
    pub environment: String,
    pub created: String,
    pub revoked: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
pub(crate) struct KeysPage {
    pub layout: Layout,
    pub keys: Vec<KeyLine>,
    /// A key made by this request: shown once, never again.
    pub new_key: Option<(String, String)>,
    pub notice: String,
}

pub(crate) struct HostLine {
    pub id: String,
    pub hostname: String,
    pub sdk: String,
    pub last_seen: String,
    pub alive: bool,
    pub tasks: Vec<String>,
}

pub(crate) struct WorkerLine {
    pub id: String,
    pub executing: i64,
}

#[derive(Template)]
#[template(path = "workers.html")]
pub(crate) struct WorkersPage {
    pub layout: Layout,
    pub native_tasks: Vec<String>,
    pub workers: Vec<WorkerLine>,
    pub hosts: Vec<HostLine>,
}

/// CSS class of a status badge.
pub(crate) fn status_class(status: &str) -> &'static str {
    match status {
        "COMPLETED" => "ok",
        "FAILED" | "CRASHED" | "SYSTEM_FAILURE" | "TIMED_OUT" => "bad",
        "EXECUTING" => "busy",
        "QUEUED" | "DELAYED" => "wait",
        _ => "quiet",
    }
}

pub(crate) fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

pub(crate) fn span(duration: chrono::Duration) -> String {
    let ms = duration.num_milliseconds().max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

/// A JSON value shown whole, indented.
pub(crate) fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
