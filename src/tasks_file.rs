//! The tasks file (`KILN_TASKS_FILE`, TOML): task ids bound to an HTTP
//! endpoint, and queue concurrency limits. This is how Supermark's
//! notification and e-mail tasks, which only call the app's own
//! `/api/jobs/...` routes, run on kiln:
//!
//! ```toml
//! [queues."notifications"]
//! concurrency_limit = 5
//!
//! [[tasks]]
//! id = "send-notification"
//! url = "http://app:3000/api/jobs/send-notification"
//! headers = { authorization = "Bearer ${INTERNAL_API_KEY}" }
//! queue = "notifications"   # default: task/<id>
//! max_attempts = 3          # default: 3
//! max_duration = "5m"       # default: none
//! ```
//!
//! Cron schedules are declared here too (times in `timezone`, UTC by
//! default; `environment` is `prod` unless it says `dev`):
//!
//! ```toml
//! [[schedules]]
//! task = "send-weekly-digest"
//! cron = "0 9 * * 1"
//! timezone = "Europe/Berlin"
//! ```
//!
//! `${NAME}` in `url` and header values is replaced by the environment
//! variable `NAME` when the file is read; a missing one is an error.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksFile {
    #[serde(default)]
    pub tasks: Vec<HttpTaskConfig>,
    #[serde(default)]
    pub queues: BTreeMap<String, QueueConfig>,
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub task: String,
    pub cron: String,
    pub timezone: Option<String>,
    pub environment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTaskConfig {
    pub id: String,
    pub url: String,
    #[serde(default = "post")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub queue: Option<String>,
    pub max_attempts: Option<u32>,
    pub max_duration: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub concurrency_limit: Option<u32>,
}

fn post() -> String {
    "POST".into()
}

#[derive(Debug, thiserror::Error)]
pub enum TasksFileError {
    #[error("KILN_TASKS_FILE: cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("KILN_TASKS_FILE: {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

impl TasksFile {
    pub fn load(path: &Path) -> Result<Self, TasksFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TasksFileError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, |name| std::env::var(name).ok())
            .map_err(|message| TasksFileError::Invalid { path: shown, message })
    }

    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut file: TasksFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for task in &mut file.tasks {
            if task.id.is_empty() || task.id.len() > 128 {
                return Err(format!("task id {:?} must be 1 to 128 characters", task.id));
            }
            task.url = interpolate(&task.url, &env).map_err(|e| format!("task {}: url: {e}", task.id))?;
            if !(task.url.starts_with("http://") || task.url.starts_with("https://")) {
                return Err(format!("task {}: url must be http:// or https://", task.id));
            }
            for value in task.headers.values_mut() {
                *value = interpolate(value, &env).map_err(|e| format!("task {}: header: {e}", task.id))?;
            }
            if task
                .max_attempts
                .is_some_and(|n| !(1..=kiln_core::retry::MAX_ATTEMPTS_LIMIT).contains(&n))
            {
                return Err(format!("task {}: max_attempts must be between 1 and 100", task.id));
            }
            if let Some(text) = &task.max_duration {
                kiln_core::duration::parse(text).map_err(|e| format!("task {}: max_duration: {e}", task.id))?;
            }
        }
        for schedule in &file.schedules {
            kiln_core::schedule::CronSchedule::parse(&schedule.cron, schedule.timezone.as_deref())
                .map_err(|e| format!("schedule for {}: {e}", schedule.task))?;
            if let Some(environment) = &schedule.environment
                && kiln_core::auth::Environment::parse(environment).is_none()
            {
                return Err(format!(
                    "schedule for {}: environment must be dev or prod",
                    schedule.task
                ));
            }
        }
        Ok(file)
    }
}

/// Replaces `${NAME}` with the variable's value.
fn interpolate(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unclosed ${".to_owned())?;
        let name = &after[..end];
        out.push_str(&env(name).ok_or_else(|| format!("environment variable {name} is not set"))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tasks_and_interpolates_the_environment() {
        let text = r#"
            [queues.mail]
            concurrency_limit = 2
            [[tasks]]
            id = "send-notification"
            url = "http://${HOST}/api/jobs/send"
            headers = { authorization = "Bearer ${KEY}" }
            queue = "mail"
        "#;
        let env = |name: &str| match name {
            "HOST" => Some("app:3000".to_owned()),
            "KEY" => Some("k".to_owned()),
            _ => None,
        };
        let file = TasksFile::parse(text, env);
        let file = file.as_ref().ok();
        assert_eq!(
            file.map(|f| f.tasks[0].url.as_str()),
            Some("http://app:3000/api/jobs/send")
        );
        assert_eq!(
            file.map(|f| f.tasks[0].headers["authorization"].as_str()),
            Some("Bearer k")
        );
        assert_eq!(file.and_then(|f| f.queues["mail"].concurrency_limit), Some(2));
    }

    #[test]
    fn names_what_is_wrong() {
        let missing = TasksFile::parse("[[tasks]]\nid = \"a\"\nurl = \"http://${NOPE}/\"", |_| None);
        assert!(missing.err().is_some_and(|e| e.contains("NOPE")));
        let unknown = TasksFile::parse("[[tasks]]\nid = \"a\"\nurl = \"http://x/\"\nretries = 3", |_| None);
        assert!(unknown.err().is_some_and(|e| e.contains("retries")));
        let bad_cron = TasksFile::parse("[[schedules]]\ntask = \"a\"\ncron = \"0 25 * * *\"", |_| None);
        assert!(bad_cron.err().is_some_and(|e| e.contains("schedule for a")));
        let bad_zone = TasksFile::parse(
            "[[schedules]]\ntask = \"a\"\ncron = \"0 2 * * *\"\ntimezone = \"Nowhere\"",
            |_| None,
        );
        assert!(bad_zone.err().is_some_and(|e| e.contains("Nowhere")));
    }
}
