//! Trigger options as a client sends them, and their validation into a
//! [`RunSpec`] that the store can record as it is. Every rule about what a
//! trigger may ask for lives here, so the API answers 422 with the name of
//! the offending field and the store never sees an invalid run.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::auth::Environment;
use crate::duration;
use crate::retry::MAX_ATTEMPTS_LIMIT;

/// Trigger.dev's limits: 10 tags a run, 128 characters a tag.
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_LEN: usize = 128;
pub const MAX_KEY_LEN: usize = 512;
pub const MAX_QUEUE_NAME_LEN: usize = 128;

/// `delay` and `ttl` arrive as a string or a number.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeSpec {
    Text(String),
    Seconds(f64),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerOptions {
    pub queue: Option<String>,
    pub queue_concurrency_limit: Option<i64>,
    pub concurrency_key: Option<String>,
    pub delay: Option<TimeSpec>,
    pub ttl: Option<TimeSpec>,
    pub idempotency_key: Option<String>,
    pub idempotency_key_ttl: Option<String>,
    pub max_attempts: Option<i64>,
    pub max_duration_secs: Option<f64>,
    pub tags: Vec<String>,
    pub metadata: Option<Value>,
    pub test: bool,
}

/// What a task declares for runs that do not say otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefaults {
    pub queue: String,
    pub max_attempts: u32,
    pub max_duration: Option<Duration>,
    pub access: TaskAccess,
}

impl TaskDefaults {
    /// Trigger names a task's own queue `task/<id>`.
    pub fn for_task(task_id: &str) -> Self {
        Self {
            queue: format!("task/{task_id}"),
            max_attempts: crate::retry::RetryPolicy::default().max_attempts,
            max_duration: None,
            access: TaskAccess::Any,
        }
    }
}

/// Which keys may trigger a task (and schedule or replay it) through the
/// API. Children and kiln's own schedules start runs whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskAccess {
    /// A key of either environment.
    #[default]
    Any,
    /// Only keys of this environment: the task touches data that belongs
    /// to one environment (an app's own database and bucket).
    Only(Environment),
    /// No key: kiln starts its runs itself (housekeeping on its schedule).
    Internal,
}

impl TaskAccess {
    /// Why a key of `environment` may not trigger `task_id`, if it may not.
    pub fn refusal(self, task_id: &str, environment: Environment) -> Option<String> {
        match self {
            TaskAccess::Any => None,
            TaskAccess::Only(allowed) if allowed == environment => None,
            TaskAccess::Only(allowed) => Some(format!(
                "task {task_id:?} runs only for {} keys; this is a {} key",
                allowed.as_str(),
                environment.as_str()
            )),
            TaskAccess::Internal => Some(format!(
                "task {task_id:?} is run by kiln itself and cannot be triggered"
            )),
        }
    }
}

/// A validated run, ready to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub queue: String,
    pub queue_concurrency_limit: Option<u32>,
    pub concurrency_key: Option<String>,
    /// `Some` when the run starts DELAYED.
    pub delay_until: Option<DateTime<Utc>>,
    pub ttl: Option<Duration>,
    pub idempotency_key: Option<String>,
    pub idempotency_key_ttl: Option<Duration>,
    pub max_attempts: u32,
    pub max_duration: Option<Duration>,
    pub tags: Vec<String>,
    pub metadata: Option<Value>,
    pub is_test: bool,
}

impl RunSpec {
    /// When an unstarted run expires, if it has a `ttl`: the clock starts
    /// when the run becomes ready, so a delayed run gets its full ttl.
    pub fn expires_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ttl = chrono::Duration::from_std(self.ttl?).ok()?;
        Some(self.delay_until.unwrap_or(now) + ttl)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("options.{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

fn invalid(field: &'static str, message: impl Into<String>) -> OptionsError {
    OptionsError::Invalid {
        field,
        message: message.into(),
    }
}

impl TriggerOptions {
    pub fn validate(self, now: DateTime<Utc>, defaults: &TaskDefaults) -> Result<RunSpec, OptionsError> {
        let queue = match self.queue {
            Some(name) => {
                let name = name.trim().to_owned();
                if name.is_empty() || name.len() > MAX_QUEUE_NAME_LEN {
                    return Err(invalid("queue.name", "must be 1 to 128 characters"));
                }
                name
            }
            None => defaults.queue.clone(),
        };
        let queue_concurrency_limit = match self.queue_concurrency_limit {
            // 0 would hold every run of the queue until someone noticed.
            Some(limit) if !(1..=100_000).contains(&limit) => {
                return Err(invalid("queue.concurrencyLimit", "must be between 1 and 100000"));
            }
            Some(limit) => Some(limit as u32),
            None => None,
        };
        let concurrency_key = non_empty_key("concurrencyKey", self.concurrency_key)?;
        let idempotency_key = non_empty_key("idempotencyKey", self.idempotency_key)?;
        let idempotency_key_ttl = self
            .idempotency_key_ttl
            .map(|text| duration::parse(&text).map_err(|e| invalid("idempotencyKeyTTL", e.to_string())))
            .transpose()?;

        let delay_until = match self.delay {
            None => None,
            Some(spec) => {
                let until = parse_time_spec(&spec, now).map_err(|m| invalid("delay", m))?;
                (until > now).then_some(until)
            }
        };
        let ttl = match self.ttl {
            None => None,
            Some(TimeSpec::Seconds(secs)) => Some(seconds("ttl", secs)?),
            Some(TimeSpec::Text(text)) => Some(duration::parse(&text).map_err(|e| invalid("ttl", e.to_string()))?),
        };
        let max_attempts = match self.max_attempts {
            None => defaults.max_attempts,
            Some(n) if (1..=i64::from(MAX_ATTEMPTS_LIMIT)).contains(&n) => n as u32,
            Some(_) => {
                return Err(invalid(
                    "maxAttempts",
                    format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
                ));
            }
        };
        let max_duration = match self.max_duration_secs {
            None => defaults.max_duration,
            Some(secs) if secs >= NO_MAX_DURATION_SECS => None,
            Some(secs) => Some(seconds("maxDuration", secs)?),
        };
        if self.tags.len() > MAX_TAGS {
            return Err(invalid("tags", format!("at most {MAX_TAGS} tags per run")));
        }
        if let Some(tag) = self.tags.iter().find(|t| t.is_empty() || t.len() > MAX_TAG_LEN) {
            return Err(invalid(
                "tags",
                format!("tag {tag:?} must be 1 to {MAX_TAG_LEN} characters"),
            ));
        }
        let mut tags = self.tags;
        tags.dedup();
        if let Some(metadata) = &self.metadata
            && !metadata.is_object()
        {
            return Err(invalid("metadata", "must be a JSON object"));
        }
        Ok(RunSpec {
            queue,
            queue_concurrency_limit,
            concurrency_key,
            delay_until,
            ttl,
            idempotency_key,
            idempotency_key_ttl,
            max_attempts,
            max_duration,
            tags,
            metadata: self.metadata,
            is_test: self.test,
        })
    }
}

fn non_empty_key(field: &'static str, key: Option<String>) -> Result<Option<String>, OptionsError> {
    match key {
        Some(k) if k.is_empty() || k.len() > MAX_KEY_LEN => {
            Err(invalid(field, format!("must be 1 to {MAX_KEY_LEN} characters")))
        }
        other => Ok(other),
    }
}

/// The SDK's `timeout.None` (the largest 32-bit integer): a `maxDuration`
/// of this many seconds, or more, means no limit.
pub const NO_MAX_DURATION_SECS: f64 = 2_147_483_647.0;

fn seconds(field: &'static str, secs: f64) -> Result<Duration, OptionsError> {
    if !secs.is_finite() || secs <= 0.0 || secs > duration::MAX.as_secs_f64() {
        return Err(invalid(field, "must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A `delay`: a duration from now, or an RFC 3339 date (the SDK sends a
/// `Date` as its ISO string).
pub fn parse_time_spec(spec: &TimeSpec, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let offset = match spec {
        TimeSpec::Seconds(secs) => seconds("delay", *secs).map_err(|e| e.to_string())?,
        TimeSpec::Text(text) => {
            if let Ok(date) = DateTime::parse_from_rfc3339(text.trim()) {
                let date = date.with_timezone(&Utc);
                // Held to the same ten years as a duration.
                let latest = chrono::Duration::from_std(duration::MAX).map(|max| now + max);
                if latest.is_ok_and(|latest| date > latest) {
                    return Err(format!("{text:?} is more than ten years ahead"));
                }
                return Ok(date);
            }
            duration::parse(text)
                .map_err(|_| format!("{text:?} is neither a duration (\"30s\", \"40d\") nor an ISO 8601 date"))?
        }
    };
    chrono::Duration::from_std(offset)
        .map(|offset| now + offset)
        .map_err(|_| "too far in the future".to_owned())
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_sdks_timeout_none_is_no_limit() {
        let now = Utc::now();
        let options = TriggerOptions {
            max_duration_secs: Some(NO_MAX_DURATION_SECS),
            ..TriggerOptions::default()
        };
        let defaults = TaskDefaults {
            max_duration: Some(Duration::from_secs(60)),
            ..TaskDefaults::for_task("t")
        };
        let spec = options.validate(now, &defaults).map_err(|e| e.to_string());
        assert_eq!(spec.map(|s| s.max_duration), Ok(None));
    }

    use super::*;

    #[test]
    fn a_delay_date_past_ten_years_is_refused() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default();
        let far = TimeSpec::Text("9999-12-31T23:59:59Z".into());
        assert!(parse_time_spec(&far, now).is_err_and(|e| e.contains("ten years")));
        let near = TimeSpec::Text("2030-06-01T00:00:00Z".into());
        assert!(parse_time_spec(&near, now).is_ok());
    }

    #[test]
    fn task_access_names_why_a_key_is_refused() {
        assert_eq!(TaskAccess::Any.refusal("t", Environment::Dev), None);
        assert_eq!(
            TaskAccess::Only(Environment::Prod).refusal("t", Environment::Prod),
            None
        );
        assert_eq!(
            TaskAccess::Only(Environment::Prod)
                .refusal("t", Environment::Dev)
                .as_deref(),
            Some("task \"t\" runs only for prod keys; this is a dev key")
        );
        assert!(TaskAccess::Internal.refusal("t", Environment::Prod).is_some());
    }

    fn defaults() -> TaskDefaults {
        TaskDefaults::for_task("kiln.noop")
    }

    #[test]
    fn defaults_apply_when_options_are_empty() {
        let now = Utc::now();
        let spec = TriggerOptions::default().validate(now, &defaults()).ok();
        let spec = spec.as_ref();
        assert_eq!(spec.map(|s| s.queue.as_str()), Some("task/kiln.noop"));
        assert_eq!(spec.map(|s| s.max_attempts), Some(3));
        assert_eq!(spec.and_then(|s| s.delay_until), None);
    }

    #[test]
    fn delay_accepts_durations_and_dates() {
        let now = Utc::now();
        let by_duration = TriggerOptions {
            delay: Some(TimeSpec::Text("2s".into())),
            ..Default::default()
        }
        .validate(now, &defaults());
        assert_eq!(
            by_duration.ok().and_then(|s| s.delay_until),
            Some(now + chrono::Duration::seconds(2))
        );
        let date = (now + chrono::Duration::days(1)).to_rfc3339();
        let by_date = TriggerOptions {
            delay: Some(TimeSpec::Text(date)),
            ..Default::default()
        }
        .validate(now, &defaults());
        assert!(by_date.ok().and_then(|s| s.delay_until).is_some());
    }

    #[test]
    fn a_past_date_runs_now() {
        let now = Utc::now();
        let spec = TriggerOptions {
            delay: Some(TimeSpec::Text("2001-01-01T00:00:00Z".into())),
            ..Default::default()
        }
        .validate(now, &defaults());
        assert_eq!(spec.ok().map(|s| s.delay_until), Some(None));
    }

    #[test]
    fn invalid_options_name_their_field() {
        let now = Utc::now();
        let cases = [
            TriggerOptions {
                max_attempts: Some(0),
                ..Default::default()
            },
            TriggerOptions {
                delay: Some(TimeSpec::Text("soon".into())),
                ..Default::default()
            },
            TriggerOptions {
                ttl: Some(TimeSpec::Seconds(-1.0)),
                ..Default::default()
            },
            TriggerOptions {
                tags: vec!["x".repeat(129)],
                ..Default::default()
            },
            TriggerOptions {
                metadata: Some(Value::from(3)),
                ..Default::default()
            },
        ];
        let fields = ["maxAttempts", "delay", "ttl", "tags", "metadata"];
        for (options, field) in cases.into_iter().zip(fields) {
            let Err(OptionsError::Invalid { field: got, .. }) = options.validate(now, &defaults()) else {
                panic!("{field} should be invalid");
            };
            assert_eq!(got, field);
        }
    }

    #[test]
    fn ttl_counts_from_the_end_of_the_delay() {
        let now = Utc::now();
        let spec = TriggerOptions {
            delay: Some(TimeSpec::Text("10s".into())),
            ttl: Some(TimeSpec::Text("1s".into())),
            ..Default::default()
        }
        .validate(now, &defaults());
        let expires = spec.ok().and_then(|s| s.expires_at(now));
        assert_eq!(expires, Some(now + chrono::Duration::seconds(11)));
    }
}
