//! Identifiers. Run ids look like Trigger.dev's (`run_` + lowercase letters
//! and digits) and sort by creation time, so "newest first" pagination can
//! order by id alone.

use std::fmt;

use rand::Rng;

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A run's public id: `run_` followed by 26 Crockford base-32 characters
/// (48 bits of milliseconds since the epoch, then 80 random bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(String);

impl RunId {
    pub const PREFIX: &'static str = "run_";

    /// A new id for a run created at `unix_ms`.
    pub fn generate(unix_ms: u64) -> Self {
        Self(format!("{}{}", Self::PREFIX, time_ordered_suffix(unix_ms)))
    }

    /// The smallest id a run created at `unix_ms` can have: every run
    /// created before it has a smaller id.
    pub fn lower_bound(unix_ms: u64) -> String {
        let mut suffix = time_ordered_suffix(unix_ms);
        suffix.replace_range(10.., &"0".repeat(16));
        format!("{}{suffix}", Self::PREFIX)
    }

    /// Accepts any id of the right shape; ids are opaque to callers.
    pub fn parse(raw: &str) -> Option<Self> {
        let suffix = raw.strip_prefix(Self::PREFIX)?;
        let ok = !suffix.is_empty() && suffix.len() <= 64 && suffix.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 26 characters: 10 for the timestamp, 16 random.
pub fn time_ordered_suffix(unix_ms: u64) -> String {
    let mut out = String::with_capacity(26);
    for shift in (0..10).rev() {
        let index = ((unix_ms >> (shift * 5)) & 31) as usize;
        out.push(CROCKFORD[index] as char);
    }
    random_chars(&mut out, 16);
    out
}

/// `len` random lowercase letters and digits.
pub fn random_alphanumeric(len: usize) -> String {
    let mut out = String::with_capacity(len);
    random_chars(&mut out, len);
    out
}

/// A new schedule id, `sched_…` as Trigger's.
pub fn new_schedule_id() -> String {
    format!("sched_{}", random_alphanumeric(20))
}

fn random_chars(out: &mut String, len: usize) {
    let mut rng = rand::rng();
    for _ in 0..len {
        out.push(CROCKFORD[rng.random_range(0..32)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time() {
        let earlier = RunId::generate(1_700_000_000_000);
        let later = RunId::generate(1_700_000_000_001);
        assert!(earlier < later);
        assert_eq!(earlier.as_str().len(), 4 + 26);
    }

    #[test]
    fn the_lower_bound_of_an_instant_sorts_between_earlier_and_later_ids() {
        let bound = RunId::lower_bound(1_700_000_000_000);
        assert!(RunId::generate(1_699_999_999_999).as_str() < bound.as_str());
        assert!(RunId::generate(1_700_000_000_000).as_str() >= bound.as_str());
        assert!(RunId::generate(1_700_000_000_001).as_str() > bound.as_str());
    }

    #[test]
    fn parse_rejects_other_shapes() {
        assert!(RunId::parse("run_abc123").is_some());
        assert!(RunId::parse("batch_abc").is_none());
        assert!(RunId::parse("run_").is_none());
        assert!(RunId::parse("run_../etc").is_none());
    }
}
