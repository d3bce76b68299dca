//! Refunds asked through the service: the ledger's answer, told to the game, and the refunded
//! purchase's effect queued to be taken back when its buyer is online here.

use bevy::prelude::*;

use crate::currency::PremiumBalance;
use crate::ids::PurchaseId;
use crate::ledger::{Clawback, RefundError, RefundOutcome, RefundRequest};
use crate::link::LedgerAnswers;
use crate::players::{DeliveryQueue, PlayerSession, Sessions};
use crate::settings::{FrameDeadline, MarketplaceStats};

/// Why a refund did not go through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefundFailure {
    /// The ledger refused it; nothing changed.
    #[error(transparent)]
    Refused(#[from] RefundError),
    /// The ledger could not be reached or failed; ask again (a refund is never applied twice).
    #[error("the ledger failed: {0}")]
    Ledger(String),
}

/// The answer to [`MarketplaceService::refund`](crate::MarketplaceService::refund).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct RefundFinished {
    /// The receipt asked about.
    pub purchase_id: PurchaseId,
    /// What happened.
    pub result: Result<RefundOutcome, RefundFailure>,
}

/// Applies the ledger's answers to refunds and tells the game with [`RefundFinished`].
pub(crate) fn handle_refund_answers(
    mut answers: ResMut<LedgerAnswers<RefundRequest>>,
    sessions: Res<Sessions>,
    mut players: Query<(&mut PlayerSession, &mut PremiumBalance)>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut stats: ResMut<MarketplaceStats>,
    mut finished: MessageWriter<RefundFinished>,
    deadline: Res<FrameDeadline>,
) {
    for answer in answers.drain_within(&deadline) {
        let result = match answer.result {
            Ok(Ok(outcome)) => {
                if let Some(&e) = sessions.by_user.get(&outcome.receipt.player_id)
                    && let Ok((mut session, mut balance)) = players.get_mut(e)
                    // An answer older than the session's opening is about a previous visit.
                    && answer.seq >= session.opened_at
                {
                    balance.0 = outcome.balance;
                    // Not granted yet: it must not be now. (One granted in memory and not yet
                    // saved is refused by the ledger when its save comes, and undone.)
                    session.forget_pending(&outcome.receipt.purchase_id, answer.seq);
                    if outcome.clawback == Clawback::Pending && session.is_active() {
                        session.add_clawback(outcome.receipt.clone(), answer.seq);
                        deliveries.now.push(e);
                    }
                }
                stats.refunds += 1;
                Ok(outcome)
            }
            Ok(Err(refused)) => Err(RefundFailure::Refused(refused)),
            Err(e) => Err(RefundFailure::Ledger(e.to_string())),
        };
        finished.write(RefundFinished {
            purchase_id: answer.call.purchase_id,
            result,
        });
    }
}
