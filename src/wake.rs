//! The wake-up schedule: what to do later (retries, autosaves, re-opens), due-first, so that
//! checking it each frame is one peek.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use bevy::prelude::*;

use crate::ids::UserId;

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
