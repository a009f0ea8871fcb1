//! When to try a deferred entry again, and when to give up.
//!
//! Exponential backoff between a minimum and a maximum, per entry: the n-th
//! deferral waits `min · 2ⁿ⁻¹`, capped at `max` (Postfix's
//! minimal/maximal_backoff_time). Recipients still pending `give_up` after the
//! first attempt fail with "expired", and become a bounce record: nothing is
//! ever dropped silently: every give-up is a bounce record with the last reply.

use std::time::Duration;

/// The retry schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
    /// How long after the first attempt pending recipients fail.
    pub give_up: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            min: Duration::from_secs(300),
            max: Duration::from_secs(4 * 3600),
            give_up: Duration::from_secs(5 * 86_400),
        }
    }
}

impl RetryPolicy {
    /// The delay after the `attempts`-th deferral (1 for the first).
    pub fn delay(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(32);
        let d = self.min.saturating_mul(1u32 << shift.min(31));
        d.min(self.max).max(self.min.min(self.max))
    }

    /// When an entry deferred for the `attempts`-th time at `now` is due again.
    pub fn next_due(&self, attempts: u32, now: u64) -> u64 {
        now.saturating_add(self.delay(attempts).as_secs().max(1))
    }

    /// When recipients first tried at `first_attempt` are given up on.
    pub fn give_up_at(&self, first_attempt: u64) -> u64 {
        give_up_at(self.give_up, first_attempt)
    }

    /// Whether recipients first tried at `first_attempt` are to be given up at `now`.
    pub fn expired(&self, first_attempt: u64, now: u64) -> bool {
        now >= self.give_up_at(first_attempt)
    }
}

/// When recipients first tried at `first_attempt` are given up on, `give_up`
/// later (the runner's rule, for the tools that show it).
pub fn give_up_at(give_up: Duration, first_attempt: u64) -> u64 {
    first_attempt.saturating_add(give_up.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_between_min_and_max() {
        let p = RetryPolicy::default();
        let mins: Vec<u64> = (1..=8).map(|a| p.delay(a).as_secs() / 60).collect();
        assert_eq!(mins, [5, 10, 20, 40, 80, 160, 240, 240]);
        assert_eq!(p.delay(1000), p.max);
        assert_eq!(p.next_due(1, 1000), 1300);
    }

    #[test]
    fn gives_up_after_the_horizon_from_the_first_attempt() {
        let p = RetryPolicy::default();
        assert!(!p.expired(0, 5 * 86_400 - 1));
        assert!(p.expired(0, 5 * 86_400));
        assert_eq!(p.give_up_at(100), 100 + 5 * 86_400);
    }
}
