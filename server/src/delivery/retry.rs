//! The retry policy: a fixed schedule of delays after the initial attempt, each stretched by a random
//! jitter so that many deliveries failing together do not all come back at the same instant.

use std::time::Duration;

use rand::Rng;

/// When to try again after a failed attempt.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    jitter: f64,
}

impl RetryPolicy {
    /// A policy with one retry per schedule entry; `jitter` (0 to 1) is the largest random extension
    /// of each delay, as a fraction of it.
    pub fn new(schedule: Vec<Duration>, jitter: f64) -> Self {
        RetryPolicy {
            schedule,
            jitter: jitter.clamp(0.0, 1.0),
        }
    }

    /// Attempts in all, the initial one included.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The delay before the attempt after `attempt_number` (1 = initial), or `None` when that was the last.
    pub fn delay_after(&self, attempt_number: u32) -> Option<Duration> {
        let index = usize::try_from(attempt_number.checked_sub(1)?).ok()?;
        let base = *self.schedule.get(index)?;
        if self.jitter == 0.0 {
            return Some(base);
        }
        let extra = base.mul_f64(rand::rng().random_range(0.0..=self.jitter));
        Some(base + extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_secs).collect()
    }

    #[test]
    fn the_default_schedule_allows_six_attempts_then_stops() {
        let policy = RetryPolicy::new(secs(&[10, 30, 60, 300, 900]), 0.0);
        assert_eq!(policy.max_attempts(), 6);
        let delays: Vec<_> = (1..=6).map(|attempt| policy.delay_after(attempt)).collect();
        assert_eq!(
            delays,
            [Some(10), Some(30), Some(60), Some(300), Some(900), None]
                .map(|secs| secs.map(Duration::from_secs))
        );
        assert_eq!(policy.delay_after(0), None);
    }

    #[test]
    fn jitter_only_lengthens_a_delay_and_by_at_most_its_fraction() {
        let policy = RetryPolicy::new(secs(&[10]), 0.1);
        for _ in 0..1000 {
            let delay = policy.delay_after(1).unwrap();
            assert!(
                delay >= Duration::from_secs(10) && delay <= Duration::from_secs(11),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn an_empty_schedule_means_a_single_attempt() {
        let policy = RetryPolicy::new(Vec::new(), 0.0);
        assert_eq!(policy.max_attempts(), 1);
        assert_eq!(policy.delay_after(1), None);
    }
}
