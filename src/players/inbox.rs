//! The ledger inbox: answers from the storage worker, queued per consumer, worked off within the
//! frame budget.

use std::collections::VecDeque;

use bevy::prelude::*;

use crate::ledger::{Ledger, LedgerCompletion, LedgerRequest};
use crate::settings::{FrameDeadline, MarketplaceSettings};

/// Ledger answers not yet handled, in arrival order, one queue per system that consumes them.
/// A burst is worked off from the front over several frames (see
/// [`MarketplacePlugin::frame_budget`](crate::MarketplacePlugin::frame_budget)), so a frame
/// costs what it handles, not what is waiting.
#[derive(Resource, Default)]
pub(crate) struct LedgerInbox {
    /// Answers to charges (prompts).
    pub(crate) charges: CompletionQueue,
    /// Everything else (sessions, saves, balances).
    pub(crate) sessions: CompletionQueue,
}

impl LedgerInbox {
    /// `true` when every answer has been handled.
    pub(crate) fn is_empty(&self) -> bool {
        self.charges.is_empty() && self.sessions.is_empty()
    }
}

/// Answers as the worker sent them: whole batches, taken from the front one at a time.
#[derive(Default)]
pub(crate) struct CompletionQueue(VecDeque<std::vec::IntoIter<LedgerCompletion>>);

impl CompletionQueue {
    fn push_batch(&mut self, batch: Vec<LedgerCompletion>) {
        if !batch.is_empty() {
            self.0.push_back(batch.into_iter());
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<LedgerCompletion> {
        loop {
            let front = self.0.front_mut()?;
            if let Some(completion) = front.next() {
                return Some(completion);
            }
            self.0.pop_front();
        }
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|batch| batch.len() == 0)
    }
}

pub(crate) fn receive_ledger(
    mut ledger: ResMut<Ledger>,
    mut inbox: ResMut<LedgerInbox>,
    mut deadline: ResMut<FrameDeadline>,
    settings: Res<MarketplaceSettings>,
) {
    deadline.start(settings.frame_budget);
    ledger.poll_batches(|batch| match batch.first().map(|c| &c.request) {
        Some(LedgerRequest::Charge(_)) => inbox.charges.push_batch(batch),
        Some(_) => inbox.sessions.push_batch(batch),
        None => {}
    });
}

pub(crate) fn flush_ledger(mut ledger: ResMut<Ledger>) {
    ledger.flush();
}
