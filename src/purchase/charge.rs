//! The ledger's answers to charges: a prompt shows "Purchased" (and the receipt goes to its
//! handler), "not enough funds", or a failure after retrying with the same request id.

use bevy::prelude::*;

use super::prompt::{CHARGE_ATTEMPTS, PromptState, PurchaseError, PurchasePrompt, charge_request};
use crate::currency::PremiumBalance;
use crate::ledger::{Ledger, LedgerCompletion, LedgerReply, LedgerRequest};
use crate::players::{DeliveryQueue, LedgerInbox, PlayerSession, Sessions};
use crate::settings::{FrameDeadline, MarketplaceSettings, MarketplaceStats};

/// Applies charge answers to prompts and sessions.
#[allow(clippy::too_many_arguments)]
pub(crate) fn handle_charge_replies(
    mut inbox: ResMut<LedgerInbox>,
    sessions: Res<Sessions>,
    mut players: Query<(
        &mut PlayerSession,
        &mut PremiumBalance,
        Option<&mut PurchasePrompt>,
    )>,
    settings: Res<MarketplaceSettings>,
    mut ledger: ResMut<Ledger>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut stats: ResMut<MarketplaceStats>,
    deadline: Res<FrameDeadline>,
) {
    let mut handled = 0usize;
    // Spread over frames like the other answers (see `MarketplacePlugin::frame_budget`).
    while handled == 0 || !deadline.passed() {
        let Some(LedgerCompletion { request, result }) = inbox.charges.pop_front() else {
            break;
        };
        handled += 1;
        let LedgerRequest::Charge(charge) = request else {
            continue;
        };
        let Some(entity) = sessions.player(charge.user) else {
            // The buyer left; a receipt, if any, waits for them in the ledger.
            continue;
        };
        let Ok((mut session, mut balance, prompt)) = players.get_mut(entity) else {
            continue;
        };
        let mut prompt = prompt.filter(|p| p.request_id == charge.request_id);
        match result {
            Ok(LedgerReply::Charged {
                receipt,
                balance: new_balance,
                replayed,
            }) => {
                if !replayed {
                    stats.charges += 1;
                }
                balance.0 = new_balance;
                if let Some(prompt) = prompt.as_mut() {
                    prompt.state = PromptState::Purchased(receipt.clone());
                }
                // Only the session that charged takes the receipt from this answer: a later
                // visit (the buyer left and came back while it was queued) learns its pending
                // receipts from the ledger, which may have granted this one meanwhile.
                let charged_here = charge
                    .fence
                    .as_ref()
                    .is_some_and(|fence| session.lease_token == Some(fence.token));
                if session.is_active() && charged_here {
                    session.add_pending(receipt);
                    deliveries.now.push(entity);
                }
            }
            Ok(LedgerReply::InsufficientFunds {
                balance: now,
                price,
            }) => {
                balance.0 = now;
                if let Some(prompt) = prompt.as_mut() {
                    prompt.state = PromptState::Failed(PurchaseError::NotEnoughFunds {
                        balance: now,
                        price,
                        missing: price.saturating_sub(now),
                    });
                }
            }
            Ok(other) => tracing::error!("unexpected ledger reply to a charge: {other:?}"),
            Err(e) => {
                let Some(prompt) = prompt.as_mut() else {
                    continue;
                };
                prompt.charge_attempts += 1;
                if prompt.charge_attempts < CHARGE_ATTEMPTS {
                    tracing::warn!(
                        "charging user {} for product {} failed: {e}; retrying with the same request id",
                        charge.user,
                        charge.product_id
                    );
                    ledger.send(charge_request(prompt, charge.user, &settings));
                } else {
                    tracing::error!(
                        "charging user {} for product {} failed {} times: {e}",
                        charge.user,
                        charge.product_id,
                        prompt.charge_attempts
                    );
                    prompt.state =
                        PromptState::Failed(PurchaseError::PurchaseFailed(e.to_string()));
                    // The last attempt may have committed before the error: look.
                    ledger.send(LedgerRequest::PendingReceipts { user: charge.user });
                }
            }
        }
    }
}
