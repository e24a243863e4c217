//! Cron schedules: an expression and a time zone, and when they fire next.
//! Pure computation; firing, storing and the API live elsewhere.
//!
//! Expressions have Trigger.dev's five fields (minute hour day-of-month
//! month day-of-week, with `L` for "last"), or six with a leading seconds
//! field for sub-minute schedules. Time zones are IANA names
//! (`Europe/Berlin`); times are computed in the zone, so `0 2 * * *` fires
//! at 02:00 local time across daylight-saving changes.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// The longest expression accepted.
const MAX_EXPRESSION: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSchedule {
    #[error("invalid cron expression {expression:?}: {reason}")]
    Cron { expression: String, reason: String },
    #[error("unknown time zone {0:?}; use an IANA name such as Europe/Berlin (GET /api/v1/timezones lists them)")]
    TimeZone(String),
}

#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: String,
    timezone: Tz,
    cron: Cron,
}

impl CronSchedule {
    /// `timezone` `None` means UTC.
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Self, InvalidSchedule> {
        let expression = expression.trim();
        let invalid = |reason: String| InvalidSchedule::Cron {
            expression: expression.to_owned(),
            reason,
        };
        if expression.len() > MAX_EXPRESSION {
            return Err(invalid("too long".into()));
        }
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(invalid(format!(
                "has {fields} fields; expected 5 (minute hour day month weekday) or 6 (with seconds first)"
            )));
        }
        let cron: Cron = expression
            .parse()
            .map_err(|e: croner::errors::CronError| invalid(e.to_string()))?;
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| InvalidSchedule::TimeZone(name.to_owned()))?,
        };
        Ok(Self {
            expression: expression.to_owned(),
            timezone,
            cron,
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> &str {
        self.timezone.name()
    }

    /// The first firing strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    /// The next `count` firings after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::with_capacity(count);
        let mut cursor = after;
        while times.len() < count {
            let Some(next) = self.next_after(cursor) else { break };
            times.push(next);
            cursor = next;
        }
        times
    }

    /// A short human description, as Trigger's API gives one.
    pub fn describe(&self) -> String {
        let zone = if self.timezone == Tz::UTC {
            "UTC".to_owned()
        } else {
            self.timezone.name().to_owned()
        };
        format!("cron \"{}\" ({zone})", self.expression)
    }
}

/// Every time zone name kiln accepts, sorted.
pub fn timezones() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap_or_default()
    }

    #[test]
    fn daily_at_two_in_utc_and_in_a_zone() {
        let utc = CronSchedule::parse("0 2 * * *", None).ok();
        assert_eq!(
            utc.and_then(|s| s.next_after(at("2026-11-23T05:00:00Z"))),
            Some(at("2026-11-24T02:00:00Z"))
        );
        // Kolkata is UTC+5:30 all year.
        let kolkata = CronSchedule::parse("0 2 * * *", Some("Asia/Kolkata")).ok();
        assert_eq!(
            kolkata.and_then(|s| s.next_after(at("2026-11-23T05:00:00Z"))),
            Some(at("2026-11-23T20:30:00Z"))
        );
    }

    #[test]
    fn local_time_holds_across_daylight_saving() {
        // Berlin: UTC+1 in winter, UTC+2 from 29 March 2026.
        let berlin = CronSchedule::parse("0 9 * * *", Some("Europe/Berlin")).ok();
        let times = berlin
            .map(|s| s.upcoming(at("2026-03-27T12:00:00Z"), 3))
            .unwrap_or_default();
        assert_eq!(
            times,
            vec![
                at("2026-03-28T08:00:00Z"),
                at("2026-03-29T07:00:00Z"),
                at("2026-03-30T07:00:00Z")
            ]
        );
    }

    #[test]
    fn seconds_field_and_last_day() {
        let every_two = CronSchedule::parse("*/2 * * * * *", None).ok();
        assert_eq!(
            every_two.and_then(|s| s.next_after(at("2026-11-23T05:00:01Z"))),
            Some(at("2026-11-23T05:00:02Z"))
        );
        let last_day = CronSchedule::parse("0 0 L * *", None).ok();
        assert_eq!(
            last_day.and_then(|s| s.next_after(at("2027-02-10T00:00:00Z"))),
            Some(at("2027-02-28T00:00:00Z"))
        );
    }

    #[test]
    fn refuses_bad_expressions_and_zones() {
        assert!(matches!(
            CronSchedule::parse("0 2 * *", None),
            Err(InvalidSchedule::Cron { .. })
        ));
        assert!(matches!(
            CronSchedule::parse("61 * * * *", None),
            Err(InvalidSchedule::Cron { .. })
        ));
        assert!(matches!(
            CronSchedule::parse("0 2 * * *", Some("Mars/Olympus")),
            Err(InvalidSchedule::TimeZone(_))
        ));
        assert!(timezones().contains(&"Europe/Berlin"));
    }
}
