//! Fault injection: a store wrapper that fails commits, delays answers, pauses, or drops the
//! connection on command, so tests can prove nothing is lost or granted twice when storage misbehaves.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{LedgerError, LedgerReply, LedgerRequest, LedgerStore};

#[derive(Debug, Default)]
struct Faults {
    fail_next: u32,
    lose_acks: u32,
    fail_numbers: BTreeSet<u64>,
    delay: Duration,
    disconnected: bool,
    paused: bool,
    commits: u64,
    injected: u64,
}

/// Shared controls for a [`FaultyStore`]: keep a clone in the test, change faults while the game runs.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan(Arc<(Mutex<Faults>, Condvar)>);

impl FaultPlan {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` commits fail (and roll back).
    pub fn fail_next_commits(&self, n: u32) -> &Self {
        self.faults().fail_next = n;
        self
    }

    /// The next `n` commits succeed but report a failure (an ambiguous commit, as when the
    /// connection drops after `COMMIT` is sent): retries must not apply anything twice.
    pub fn lose_next_acks(&self, n: u32) -> &Self {
        self.faults().lose_acks = n;
        self
    }

    /// The commit with this number (the first is 1) fails.
    pub fn fail_commit_number(&self, n: u64) -> &Self {
        self.faults().fail_numbers.insert(n);
        self
    }

    /// Every commit first sleeps this long (on the worker thread).
    pub fn delay_commits(&self, delay: Duration) -> &Self {
        self.faults().delay = delay;
        self
    }

    /// Drops the connection: every transaction fails until [`FaultPlan::reconnect`].
    pub fn disconnect(&self) -> &Self {
        self.faults().disconnected = true;
        self
    }

    /// Restores the connection.
    pub fn reconnect(&self) -> &Self {
        self.faults().disconnected = false;
        self
    }

    /// Holds the worker before its next transaction until [`FaultPlan::resume`]: requests stay in flight.
    pub fn pause(&self) -> &Self {
        self.faults().paused = true;
        self
    }

    /// Lets a paused worker go on.
    pub fn resume(&self) -> &Self {
        self.faults().paused = false;
        self.0.1.notify_all();
        self
    }

    /// Commits attempted so far.
    pub fn commits(&self) -> u64 {
        self.faults().commits
    }

    /// Failures injected so far.
    pub fn injected_failures(&self) -> u64 {
        self.faults().injected
    }
}

/// Wraps a store and injects the faults of a [`FaultPlan`].
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    plan: FaultPlan,
}

impl<S: LedgerStore> FaultyStore<S> {
    /// Wraps `inner`, controlled by `plan`.
    pub fn new(inner: S, plan: FaultPlan) -> Self {
        Self { inner, plan }
    }
}

impl<S: LedgerStore> LedgerStore for FaultyStore<S> {
    fn location(&self) -> String {
        format!("{} (with fault injection)", self.inner.location())
    }

    fn begin(&mut self) -> Result<(), LedgerError> {
        let (lock, resumed) = &*self.plan.0;
        let mut faults = lock.lock().unwrap_or_else(|e| e.into_inner());
        while faults.paused {
            faults = resumed.wait(faults).unwrap_or_else(|e| e.into_inner());
        }
        if faults.disconnected {
            faults.injected += 1;
            return Err(LedgerError::Storage("connection lost (injected)".into()));
        }
        drop(faults);
        self.inner.begin()
    }

    fn apply(&mut self, request: &LedgerRequest, now_ms: i64) -> Result<LedgerReply, LedgerError> {
        self.inner.apply(request, now_ms)
    }

    fn apply_batch(
        &mut self,
        batch: &[LedgerRequest],
        now_ms: i64,
    ) -> Option<Result<Vec<LedgerReply>, LedgerError>> {
        self.inner.apply_batch(batch, now_ms)
    }

    fn commit(&mut self) -> Result<(), LedgerError> {
        let delay = self.plan.faults().delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut faults = self.plan.faults();
        faults.commits += 1;
        let number = faults.commits;
        let fail = if faults.fail_next > 0 {
            faults.fail_next -= 1;
            true
        } else {
            faults.fail_numbers.remove(&number)
        };
        if fail || faults.disconnected {
            faults.injected += 1;
            drop(faults);
            self.inner.rollback();
            return Err(LedgerError::Storage(format!(
                "commit {number} failed (injected)"
            )));
        }
        let lose_ack = faults.lose_acks > 0;
        if lose_ack {
            faults.lose_acks -= 1;
            faults.injected += 1;
        }
        drop(faults);
        self.inner.commit()?;
        if lose_ack {
            return Err(LedgerError::Storage(format!(
                "commit {number} succeeded but its answer was lost (injected)"
            )));
        }
        Ok(())
    }

    fn rollback(&mut self) {
        self.inner.rollback();
    }
}
