//! Run statuses, named as Trigger.dev names them so its SDK understands
//! them. `docs/state-machine.md` draws the transitions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Waiting for its `delay` to pass.
    Delayed,
    /// Waiting for a worker (also between attempts, while backing off).
    Queued,
    /// A worker holds the lease and runs the handler.
    Executing,
    Completed,
    Failed,
    Canceled,
    /// Its `ttl` passed before any attempt started.
    Expired,
    /// An attempt ran past `maxDuration`.
    TimedOut,
    /// Its worker died on every attempt.
    Crashed,
    /// kiln itself could not run it (unknown task on the worker, bad record).
    SystemFailure,
}

impl RunStatus {
    pub const ALL: [RunStatus; 10] = [
        RunStatus::Delayed,
        RunStatus::Queued,
        RunStatus::Executing,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Canceled,
        RunStatus::Expired,
        RunStatus::TimedOut,
        RunStatus::Crashed,
        RunStatus::SystemFailure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Delayed => "DELAYED",
            RunStatus::Queued => "QUEUED",
            RunStatus::Executing => "EXECUTING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Canceled => "CANCELED",
            RunStatus::Expired => "EXPIRED",
            RunStatus::TimedOut => "TIMED_OUT",
            RunStatus::Crashed => "CRASHED",
            RunStatus::SystemFailure => "SYSTEM_FAILURE",
        }
    }

    /// A final status never changes again.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Delayed | RunStatus::Queued | RunStatus::Executing)
    }

    pub fn is_success(self) -> bool {
        self == RunStatus::Completed
    }

    /// Ended without success (Trigger's `isFailed`; cancel is not a failure).
    pub fn is_failed(self) -> bool {
        self.is_final() && !matches!(self, RunStatus::Completed | RunStatus::Canceled)
    }

    /// Statuses a run may be canceled from.
    pub fn is_cancelable(self) -> bool {
        !self.is_final()
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown run status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for RunStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>().ok(), Some(status));
        }
        assert!("PENDING".parse::<RunStatus>().is_err());
    }

    #[test]
    fn expired_and_timed_out_are_final_failures() {
        for status in [RunStatus::Expired, RunStatus::TimedOut, RunStatus::Crashed] {
            assert!(status.is_final());
            assert!(status.is_failed());
        }
        assert!(RunStatus::Canceled.is_final());
        assert!(!RunStatus::Canceled.is_failed());
        assert!(!RunStatus::Queued.is_final());
    }
}
