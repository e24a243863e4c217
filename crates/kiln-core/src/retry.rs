//! Retry policy. kiln, not the queue, decides whether and when a failed
//! attempt runs again, so the attempt count in Postgres is the only one.
//! Defaults are Trigger.dev's: 3 attempts, 1 s → 10 s, factor 2, jitter.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub factor: f64,
    /// Multiply each delay by a random factor in [1, 2), as Trigger does,
    /// so that runs failing together do not retry together.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            factor: 2.0,
            jitter: true,
        }
    }
}

/// Upper bound on `maxAttempts`, so a typo cannot retry forever.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

impl RetryPolicy {
    /// The wait before the attempt after `failed_attempt` (1-based), or
    /// `None` when no attempt is left.
    pub fn delay_after(&self, failed_attempt: u32, max_attempts: u32) -> Option<Duration> {
        if failed_attempt >= max_attempts {
            return None;
        }
        let exponent = failed_attempt.saturating_sub(1).min(63) as i32;
        let base = self.min_delay.as_secs_f64() * self.factor.powi(exponent);
        let jitter = if self.jitter {
            1.0 + rand::rng().random::<f64>()
        } else {
            1.0
        };
        let seconds = (base * jitter).min(self.max_delay.as_secs_f64());
        Some(Duration::from_secs_f64(seconds.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay_after(1, 10), Some(Duration::from_secs(1)));
        assert_eq!(policy.delay_after(2, 10), Some(Duration::from_secs(2)));
        assert_eq!(policy.delay_after(3, 10), Some(Duration::from_secs(4)));
        assert_eq!(policy.delay_after(5, 10), Some(Duration::from_secs(10)));
        assert_eq!(policy.delay_after(3, 3), None);
    }

    #[test]
    fn jitter_stays_within_one_to_two_times() {
        let policy = RetryPolicy::default();
        for _ in 0..100 {
            let delay = policy.delay_after(2, 5).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            assert!((2.0..=4.0).contains(&delay), "{delay}");
        }
    }
}
