//! The backoff policy of timed retries (`RetryPolicy`).

use std::time::Duration;

/// How long to wait before delivering a receipt again after a handler did not grant it, and
/// before retrying a failed save. Roblox retries only on rejoin or the next purchase; we also
/// retry on a timer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Each further failure multiplies the wait by this.
    pub multiplier: f64,
    /// Longest wait.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 1 s, doubling, at most 60 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after `failures` failures (1 = the first): `initial × multiplier^(failures − 1)`,
    /// at most `max`. Never panics: a wait too long to represent is `max`, and a multiplier that
    /// is negative or not a number keeps the wait at `initial`.
    pub fn delay(&self, failures: u32) -> Duration {
        // In f64 seconds, because `Duration::mul_f64` panics once the product passes u64 seconds
        // (2^64 s after 65 doublings) — before `.min(max)` could cap it.
        let factor = self
            .multiplier
            .powi(failures.saturating_sub(1).min(4096) as i32);
        let secs = self.initial.as_secs_f64() * factor;
        if secs.is_nan() || secs < 0.0 {
            return self.initial.min(self.max);
        }
        Duration::try_from_secs_f64(secs)
            .unwrap_or(Duration::MAX)
            .min(self.max)
    }
}
