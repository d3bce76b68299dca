//! Timed retries: backoff policy and the wake-up schedule that makes them cost nothing while idle.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bevy::prelude::*;

use crate::ids::UserId;

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

/// Something to do later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Wake {
    /// Try this player's receipts whose retry time has come.
    Deliver(Entity),
    /// Retry saving this player after a failed save.
    Save(Entity),
    /// Periodic save of this player (reschedules itself).
    Autosave(Entity),
    /// Ask the ledger again for this player's session.
    Open(Entity),
    /// Retry the final save of a player who left.
    Departed(UserId),
}

/// A min-heap of wake-ups by time: checking it each frame is one peek.
#[derive(Resource, Default)]
pub(crate) struct WakeSchedule {
    heap: BinaryHeap<Reverse<(Duration, Wake)>>,
}

impl WakeSchedule {
    pub(crate) fn at(&mut self, when: Duration, wake: Wake) {
        self.heap.push(Reverse((when, wake)));
    }

    /// Schedules `wake` for `delay` after `now`; a delay past the end of time never fires
    /// instead of overflowing (an `autosave_interval` of `Duration::MAX` means "never").
    pub(crate) fn after(&mut self, now: Duration, delay: Duration, wake: Wake) {
        if let Some(when) = now.checked_add(delay) {
            self.at(when, wake);
        }
    }

    /// Wake-ups waiting.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<Wake> {
        match self.heap.peek() {
            Some(Reverse((when, _))) if *when <= now => self.heap.pop().map(|Reverse((_, w))| w),
            _ => None,
        }
    }
}
