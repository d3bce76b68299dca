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
    /// The wait after `failures` failures (1 = the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = self
            .multiplier
            .powi(failures.saturating_sub(1).min(64) as i32);
        self.initial.mul_f64(factor.max(0.0)).min(self.max)
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

    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<Wake> {
        match self.heap.peek() {
            Some(Reverse((when, _))) if *when <= now => self.heap.pop().map(|Reverse((_, w))| w),
            _ => None,
        }
    }
}
