//! The ledger's answers to charges: a prompt shows "Purchased" (and the receipt goes to its
//! handler), "not enough funds", or a failure after retrying with the same request id.

use bevy::prelude::*;

use super::prompt::{CHARGE_ATTEMPTS, PromptState, PurchaseError, PurchasePrompt, charge_request};
use crate::currency::PremiumBalance;
use crate::ledger::{Answer, ChargeReply, ChargeRequest, ReadPlayer};
use crate::link::{Ledger, LedgerAnswers};
use crate::players::{DeliveryQueue, PlayerSession, Sessions};
use crate::settings::{FrameDeadline, MarketplaceSettings, MarketplaceStats};

/// Applies charge answers to prompts and sessions.
#[allow(clippy::too_many_arguments)]
pub(crate) fn handle_charge_replies(
    mut answers: ResMut<LedgerAnswers<ChargeRequest>>,
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
    // Spread over frames like the other answers (see `MarketplacePlugin::frame_budget`).
    for Answer {
        call: charge,
        result,
        seq,
    } in answers.drain_within(&deadline)
    {
        let Some(entity) = sessions.player(charge.user) else {
            // The buyer left; a receipt, if any, waits for them in the ledger.
            continue;
        };
        let Ok((mut session, mut balance, prompt)) = players.get_mut(entity) else {
            continue;
        };
        let mut prompt = prompt.filter(|p| p.request_id == charge.request_id);
        match result {
            Ok(ChargeReply::Charged {
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
                    session.add_pending(receipt, seq);
                    deliveries.now.push(entity);
                }
            }
            Ok(ChargeReply::InsufficientFunds {
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
            Ok(ChargeReply::LeaseLost { owner }) => {
                tracing::error!(
                    "charging user {} for product {} was refused: server {} no longer holds their session (held by {})",
                    charge.user,
                    charge.product_id,
                    settings.server_id,
                    owner.as_deref().unwrap_or("nobody")
                );
                if let Some(prompt) = prompt.as_mut() {
                    prompt.state = PromptState::Failed(PurchaseError::Unavailable(
                        "this server no longer holds your session".into(),
                    ));
                }
            }
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
                    ledger.send(ReadPlayer { user: charge.user });
                }
            }
        }
    }
}
