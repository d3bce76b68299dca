//! What changed elsewhere reaches a player online here: their balance, pending receipts and
//! pending clawbacks, read again from the ledger.

use bevy::prelude::*;

use super::player::{PlayerSession, Task};
use super::sessions::Sessions;
use super::work_queue::DeliveryQueue;
use crate::currency::PremiumBalance;
use crate::ledger::{PlayerReading, ReadPlayer};
use crate::link::LedgerAnswers;
use crate::settings::FrameDeadline;

/// Applies the ledger's readings of players: the balance and shortfall they show, receipts to
/// deliver and refunds to take back that this server did not know of.
pub(crate) fn handle_player_readings(
    mut answers: ResMut<LedgerAnswers<ReadPlayer>>,
    sessions: Res<Sessions>,
    mut players: Query<(&mut PlayerSession, &mut PremiumBalance)>,
    mut deliveries: ResMut<DeliveryQueue>,
    deadline: Res<FrameDeadline>,
) {
    for answer in answers.drain_within(&deadline) {
        let Ok(PlayerReading {
            pending,
            clawbacks,
            balance: stored_balance,
            shortfall,
        }) = answer.result
        else {
            continue;
        };
        let Some(&e) = sessions.by_user.get(&answer.call.user) else {
            continue;
        };
        let Ok((mut session, mut balance)) = players.get_mut(e) else {
            continue;
        };
        // Inactive, or an answer about the player's previous visit, which the opening read.
        if !session.is_active() || answer.seq < session.opened_at {
            continue;
        }
        balance.set_if_neq(PremiumBalance(stored_balance));
        session.shortfall = shortfall;
        // What this server learnt of before the reading was sent, and the ledger no longer
        // holds, was refunded or settled elsewhere meanwhile: it must not be delivered now.
        let read_at = answer.seq;
        let dropped: Vec<_> = session
            .pending
            .iter()
            .filter(|known| {
                known.learned_at < read_at
                    && !pending
                        .iter()
                        .any(|p| p.purchase_id == known.info.purchase_id)
            })
            .map(|known| known.info.purchase_id.clone())
            .collect();
        for id in &dropped {
            session.forget_pending(id, read_at);
        }
        session.clawbacks.retain(|known| {
            known.learned_at > read_at
                || clawbacks
                    .iter()
                    .any(|p| p.purchase_id == known.info.purchase_id)
        });
        let known = (session.pending.len(), session.clawbacks.len());
        for receipt in pending {
            if !sessions
                .awaiting_commit
                .holds(&receipt.purchase_id, Task::Grant)
            {
                session.add_pending(receipt, read_at);
            }
        }
        for receipt in clawbacks {
            session.add_clawback(receipt, read_at);
        }
        if (session.pending.len(), session.clawbacks.len()) != known {
            deliveries.now.push(e);
        }
    }
}
