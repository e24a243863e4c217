//! Run statuses, named as Trigger.dev names them so its SDK understands
//! them, and the transitions between them as data ([`TRANSITIONS`]): the
//! store's guards are built from it, and a test holds
//! `docs/state-machine.md`'s table to it.

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
        can_move(self, RunStatus::Canceled)
    }
}

/// One kind of move: a run in any status of `from` may go to any of `to`,
/// written by any of the store's operations `by`. An empty `from` is a
/// run's birth (a trigger).
#[derive(Debug, Clone, Copy)]
pub struct Transition {
    pub from: &'static [RunStatus],
    pub to: &'static [RunStatus],
    pub by: &'static [&'static str],
}

use RunStatus::{Canceled, Completed, Crashed, Delayed, Executing, Expired, Failed, Queued, SystemFailure, TimedOut};

/// Every move a run can make, and which operation of `kiln-store` makes
/// it. Each is one guarded statement that names the statuses it moves
/// from, so a late worker, a duplicate delivery or a concurrent cancel
/// never moves a run backwards.
pub const TRANSITIONS: &[Transition] = &[
    Transition {
        from: &[],
        to: &[Queued, Delayed],
        by: &["Store::insert_runs", "Store::insert_idempotent_run"],
    },
    Transition {
        from: &[Delayed],
        to: &[Queued],
        by: &["Store::dispatch_due"],
    },
    Transition {
        from: &[Queued],
        to: &[Executing],
        by: &["Store::claim_started", "Store::claim_runs", "Store::claim_limited_run"],
    },
    // An attempt's outcome: a recorded attempt, or (from QUEUED) one that
    // ended before it was recorded; QUEUED again is a retry or a hand-back.
    Transition {
        from: &[Executing, Queued],
        to: &[Completed, Failed, TimedOut, SystemFailure, Queued],
        by: &["Store::finish_attempts"],
    },
    Transition {
        from: &[Executing],
        to: &[Queued, Crashed],
        by: &["Store::recover_lapsed_leases"],
    },
    Transition {
        from: &[Queued, Delayed],
        to: &[Expired],
        by: &["Store::expire_due"],
    },
    Transition {
        from: &[Delayed, Queued, Executing],
        to: &[Canceled],
        by: &["Store::cancel_run"],
    },
];

/// Whether any operation may move a run from `from` to `to`.
pub fn can_move(from: RunStatus, to: RunStatus) -> bool {
    TRANSITIONS.iter().any(|t| t.from.contains(&from) && t.to.contains(&to))
}

/// The statuses `operation` moves runs to `to` from, as an SQL list
/// (`('DELAYED', 'QUEUED')`), so the store's guards are the table's. The
/// text is the same on every call, so Postgres plans it as a literal.
pub fn sql_guard(operation: &str, to: RunStatus) -> String {
    let from: Vec<String> = TRANSITIONS
        .iter()
        .filter(|t| t.by.contains(&operation) && t.to.contains(&to))
        .flat_map(|t| t.from.iter())
        .map(|status| format!("'{}'", status.as_str()))
        .collect();
    assert!(!from.is_empty(), "no transition of {operation} reaches {to}");
    format!("({})", from.join(", "))
}

/// The statuses a run has not ended in, as an SQL list.
pub fn sql_unfinished() -> String {
    let statuses: Vec<String> = RunStatus::ALL
        .into_iter()
        .filter(|s| !s.is_final())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("({})", statuses.join(", "))
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

    #[test]
    fn final_statuses_are_left_by_no_transition_and_every_status_is_reached() {
        for t in TRANSITIONS {
            for from in t.from {
                assert!(!from.is_final(), "{from} is final, yet {:?} leaves it", t.by);
            }
        }
        for status in RunStatus::ALL {
            assert!(
                TRANSITIONS.iter().any(|t| t.to.contains(&status)),
                "nothing moves a run to {status}"
            );
        }
        assert!(!can_move(Completed, Queued));
        assert!(can_move(Queued, SystemFailure));
    }

    #[test]
    fn guards_are_the_tables_statuses() {
        assert_eq!(
            sql_guard("Store::cancel_run", Canceled),
            "('DELAYED', 'QUEUED', 'EXECUTING')"
        );
        assert_eq!(sql_guard("Store::expire_due", Expired), "('QUEUED', 'DELAYED')");
        assert_eq!(sql_unfinished(), "('DELAYED', 'QUEUED', 'EXECUTING')");
    }

    /// `docs/state-machine.md`'s table, row by row: `from | to | where | guard`.
    fn documented_moves() -> std::collections::BTreeSet<(String, String, String)> {
        let doc = include_str!("../../../docs/state-machine.md");
        let mut moves = std::collections::BTreeSet::new();
        let rows = doc
            .lines()
            .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| from "));
        for row in rows {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            assert!(cells.len() >= 3, "a row of the table has too few cells: {row}");
            let statuses = |cell: &str| -> Vec<String> {
                cell.split('/')
                    .map(|s| s.split('(').next().unwrap_or_default().trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            };
            let from = if cells[0] == "trigger" {
                vec!["-".to_owned()]
            } else {
                statuses(cells[0])
            };
            let operations: Vec<String> = cells[2]
                .split('`')
                .filter(|part| part.starts_with("Store::"))
                .map(str::to_owned)
                .collect();
            assert!(!operations.is_empty(), "a row names no Store:: operation: {row}");
            for f in &from {
                for t in statuses(cells[1]) {
                    for op in &operations {
                        moves.insert((f.clone(), t.clone(), op.clone()));
                    }
                }
            }
        }
        moves
    }

    #[test]
    fn the_state_machine_doc_and_the_code_list_the_same_moves() {
        let mut coded = std::collections::BTreeSet::new();
        for t in TRANSITIONS {
            let from: Vec<String> = if t.from.is_empty() {
                vec!["-".to_owned()]
            } else {
                t.from.iter().map(|s| s.as_str().to_owned()).collect()
            };
            for f in &from {
                for to in t.to {
                    for op in t.by {
                        coded.insert((f.clone(), to.as_str().to_owned(), (*op).to_owned()));
                    }
                }
            }
        }
        let documented = documented_moves();
        let missing: Vec<_> = coded.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&coded).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/state-machine.md disagrees with status::TRANSITIONS.\n  in the code, not the doc: {missing:?}\n  in the doc, not the code: {extra:?}"
        );
    }
}
