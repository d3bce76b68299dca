//! Typed answer queues: the worker's answers to each request type wait in their own resource,
//! read by the system of the stage that sent the request, within the frame's work budget.

use std::collections::VecDeque;

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;

use crate::ledger::{
    AdjustBalance, Answer, Audit, ChargeRequest, Completed, CreditRequest, HistoryRequest,
    LedgerCall, OpenSession, ReadChanges, ReadPlayer, RefundRequest, ReleaseSession, ReverseCredit,
    SalesQuery, SaveRequest,
};
use crate::settings::FrameDeadline;

/// Answers per segment of a queue: 128 × ~250 bytes stays under the size at which glibc's
/// `free` consolidates (64 KiB).
const SEGMENT: usize = 128;

/// Answers to requests of type `C` not yet handled, in the order the ledger applied them. A
/// burst is worked off from the front over several frames (see
/// [`MarketplacePlugin::frame_budget`](crate::MarketplacePlugin::frame_budget)), so a frame costs
/// what it handles, not what is waiting.
///
/// The queue is kept in segments of [`SEGMENT`] answers, and emptied segments are used again:
/// a burst of 10,000 answers never grows (copies and faults in) one buffer of megabytes in a
/// frame, which took the game thread up to a millisecond.
#[derive(Resource)]
pub(crate) struct LedgerAnswers<C: LedgerCall> {
    /// Oldest first.
    segments: VecDeque<VecDeque<Answer<C>>>,
    /// Emptied segments, kept for the next burst.
    spare: Vec<VecDeque<Answer<C>>>,
    len: usize,
}

impl<C: LedgerCall> Default for LedgerAnswers<C> {
    fn default() -> Self {
        Self {
            segments: VecDeque::new(),
            spare: Vec::new(),
            len: 0,
        }
    }
}

impl<C: LedgerCall> LedgerAnswers<C> {
    /// The oldest answer, if any.
    pub(crate) fn pop(&mut self) -> Option<Answer<C>> {
        let front = self.segments.front_mut()?;
        let answer = front.pop_front();
        if front.is_empty() {
            let emptied = self.segments.pop_front().expect("the front segment");
            self.spare.push(emptied);
        }
        self.len -= usize::from(answer.is_some());
        answer
    }

    /// The answers to handle this frame: at least one, then as many as the budget allows; the
    /// rest stays at the front for the next frame.
    pub(crate) fn drain_within<'a>(
        &'a mut self,
        deadline: &'a FrameDeadline,
    ) -> impl Iterator<Item = Answer<C>> + 'a {
        let mut handled = 0usize;
        std::iter::from_fn(move || {
            if handled > 0 && deadline.passed() {
                return None;
            }
            handled += 1;
            self.pop()
        })
    }

    fn push(&mut self, answer: Answer<C>) {
        if self
            .segments
            .back()
            .is_none_or(|back| back.len() == SEGMENT)
        {
            let segment = self
                .spare
                .pop()
                .unwrap_or_else(|| VecDeque::with_capacity(SEGMENT));
            self.segments.push_back(segment);
        }
        self.segments
            .back_mut()
            .expect("a segment with room")
            .push_back(answer);
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }
}

macro_rules! answer_queues {
    ($($field:ident: $variant:ident($call:ty)),* $(,)?) => {
        /// Every typed answer queue, for the system that fills them.
        #[derive(SystemParam)]
        pub(crate) struct AnswerQueues<'w> {
            $($field: ResMut<'w, LedgerAnswers<$call>>,)*
        }

        impl AnswerQueues<'_> {
            /// Puts an answer on the queue of its request type.
            pub(crate) fn route(&mut self, answer: Completed) {
                match answer {
                    $(Completed::$variant(answer) => self.$field.push(answer),)*
                }
            }
        }

        /// Adds every typed answer queue to the app.
        pub(crate) fn init_answer_queues(app: &mut App) {
            $(app.init_resource::<LedgerAnswers<$call>>();)*
        }

        impl AnswerQueues<'_> {
            /// Answers waiting in every queue.
            pub(crate) fn waiting(&self) -> usize {
                0 $(+ self.$field.len())*
            }
        }

        /// Answers waiting in every queue (for tests that wait until the plugin is idle).
        pub(crate) fn answers_waiting(world: &World) -> usize {
            0 $(+ world.get_resource::<LedgerAnswers<$call>>().map_or(0, LedgerAnswers::len))*
        }
    };
}

answer_queues! {
    opens: OpenSession(OpenSession),
    releases: ReleaseSession(ReleaseSession),
    charges: Charge(ChargeRequest),
    saves: Save(SaveRequest),
    adjustments: AdjustBalance(AdjustBalance),
    refunds: Refund(RefundRequest),
    credits: Credit(CreditRequest),
    reversals: ReverseCredit(ReverseCredit),
    readings: ReadPlayer(ReadPlayer),
    changes: ReadChanges(ReadChanges),
    audits: Audit(Audit),
    histories: History(HistoryRequest),
    sales: Sales(SalesQuery),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::ReadChanges;

    fn answer(seq: u64) -> Answer<ReadChanges> {
        Answer {
            call: ReadChanges { since: None },
            result: Err(crate::ledger::LedgerError::Unavailable("test".into())),
            seq,
        }
    }

    /// Answers leave a queue in the order they came, across its segments and while it is
    /// filled and emptied in turns, and emptied segments are used again.
    #[test]
    fn a_queue_keeps_its_answers_in_order_across_segments() {
        let mut queue = LedgerAnswers::<ReadChanges>::default();
        let (mut next_in, mut next_out) = (0u64, 0u64);
        for (push, pop) in [
            (3 * SEGMENT + 5, SEGMENT + 7),
            (10, 2 * SEGMENT),
            (SEGMENT, 1000),
        ] {
            for _ in 0..push {
                queue.push(answer(next_in));
                next_in += 1;
            }
            for _ in 0..pop {
                let Some(answer) = queue.pop() else { break };
                assert_eq!(answer.seq, next_out);
                next_out += 1;
            }
            assert_eq!(queue.len(), (next_in - next_out) as usize);
        }
        assert_eq!(next_out, next_in, "every answer came out");
        // The peak held four segments: no more were ever made.
        assert_eq!(queue.segments.len() + queue.spare.len(), 4);
    }
}
