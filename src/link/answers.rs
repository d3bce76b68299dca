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

/// Answers to requests of type `C` not yet handled, in the order the ledger applied them. A
/// burst is worked off from the front over several frames (see
/// [`MarketplacePlugin::frame_budget`](crate::MarketplacePlugin::frame_budget)), so a frame costs
/// what it handles, not what is waiting.
#[derive(Resource)]
pub(crate) struct LedgerAnswers<C: LedgerCall>(VecDeque<Answer<C>>);

impl<C: LedgerCall> Default for LedgerAnswers<C> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl<C: LedgerCall> LedgerAnswers<C> {
    /// The oldest answer, if any.
    pub(crate) fn pop(&mut self) -> Option<Answer<C>> {
        self.0.pop_front()
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
        self.0.push_back(answer);
    }

    fn len(&self) -> usize {
        self.0.len()
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
