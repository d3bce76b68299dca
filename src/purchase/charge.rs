//! Charging: the charge a confirmed prompt sends, its retries with the same request id, and the
//! ledger's answer — the prompt shows "Purchased" (and the receipt goes to its handler), "not
//! enough funds", a failure, or, while the ledger cannot say whether the charge went through,
//! that the purchase is unconfirmed until it can.

use std::collections::HashMap;
use std::time::Duration;

use bevy::prelude::*;

use super::messages::{PromptProductPurchaseFinished, PurchaseError};
use super::prompt::{OpenPrompt, PromptState};
use crate::currency::PremiumBalance;
use crate::ids::{PromptId, RequestId};
use crate::ledger::{Answer, ChargeReply, ChargeRequest, LedgerError, LedgerStatus};
use crate::link::{Ledger, LedgerAnswers};
use crate::players::{DeliveryQueue, PlayerSession, Sessions};
use crate::settings::{FrameDeadline, MarketplaceSettings, MarketplaceStats};

/// How many times a charge is sent again at once after a storage error before the prompt says
/// the purchase is unconfirmed (it is then retried with backoff until the ledger answers).
pub(crate) const CHARGE_ATTEMPTS: u32 = 3;

/// Charges prompts sent whose outcome is not known yet, by request id.
#[derive(Resource, Default)]
pub(crate) struct Charges(HashMap<RequestId, Charge>);

/// A prompt's charge on its way.
struct Charge {
    request: ChargeRequest,
    /// The player and the prompt that charged.
    prompt: (Entity, PromptId),
    /// Storage errors so far: each left it unknown whether the charge committed.
    failures: u32,
    /// When to send it again (it is with the ledger when `None`).
    retry_at: Option<Duration>,
    /// The player closed the prompt before the outcome was known: the outcome is told by
    /// [`PromptProductPurchaseFinished`] when it is.
    prompt_closed: bool,
}

impl Charges {
    /// Sends a prompt's charge and follows it until its outcome is known.
    pub(crate) fn send(
        &mut self,
        request: ChargeRequest,
        prompt: (Entity, PromptId),
        ledger: &mut Ledger,
    ) {
        ledger.send(request.clone());
        self.0.insert(
            request.request_id,
            Charge {
                request,
                prompt,
                failures: 0,
                retry_at: None,
                prompt_closed: false,
            },
        );
    }

    /// The prompt of this charge closed (the player pressed OK on "unconfirmed", or left): its
    /// outcome is told when the ledger answers.
    pub(crate) fn prompt_closed(&mut self, request: RequestId) {
        if let Some(charge) = self.0.get_mut(&request) {
            charge.prompt_closed = true;
        }
    }

    /// Charges waiting for their outcome.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Sends again the charges whose outcome is unknown, when their backoff is over.
pub(crate) fn retry_unconfirmed_charges(
    mut charges: ResMut<Charges>,
    mut ledger: ResMut<Ledger>,
    settings: Res<MarketplaceSettings>,
    time: Res<Time<Real>>,
) {
    let now = time.elapsed();
    if ledger.is_changed() && matches!(ledger.status(), LedgerStatus::Failed(_)) {
        // The worker stopped: a charge it had may or may not have committed, and its answer will
        // not come. Ask again later (a replay finds the receipt if there is one).
        for charge in charges.0.values_mut() {
            if charge.retry_at.is_none() {
                charge.failures = charge.failures.max(1);
                charge.retry_at = Some(now.saturating_add(settings.retry.delay(1)));
            }
        }
    }
    for charge in charges.0.values_mut() {
        if charge.retry_at.is_some_and(|at| at <= now) {
            charge.retry_at = None;
            ledger.send(charge.request.clone());
        }
    }
}

/// What the ledger said of a charge.
enum Outcome {
    /// It is settled: charged, or refused with nothing taken.
    Known(Result<crate::receipt::ReceiptInfo, PurchaseError>),
    /// It may or may not have committed.
    Unknown,
}

/// Applies charge answers to prompts and sessions.
pub(crate) fn handle_charge_replies(
    mut answers: ResMut<LedgerAnswers<ChargeRequest>>,
    mut charges: ResMut<Charges>,
    sessions: Res<Sessions>,
    mut players: Query<(
        &mut PlayerSession,
        &mut PremiumBalance,
        Option<&mut OpenPrompt>,
    )>,
    settings: Res<MarketplaceSettings>,
    time: Res<Time<Real>>,
    mut ledger: ResMut<Ledger>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut stats: ResMut<MarketplaceStats>,
    mut finished: MessageWriter<PromptProductPurchaseFinished>,
    deadline: Res<FrameDeadline>,
) {
    // Spread over frames like the other answers (see `MarketplacePlugin::frame_budget`).
    for Answer {
        call: charge,
        result,
        seq,
    } in answers.drain_within(&deadline)
    {
        let mut player = sessions
            .player(charge.user)
            .and_then(|entity| Some(entity).zip(players.get_mut(entity).ok()));
        let outcome = match result {
            Ok(ChargeReply::Charged {
                receipt,
                balance: new_balance,
                replayed,
                pending,
            }) => {
                if !replayed {
                    stats.charges += 1;
                }
                if let Some((entity, (session, balance, _))) = player.as_mut() {
                    balance.0 = new_balance;
                    // Only the session that charged takes the receipt from this answer: a later
                    // visit (the buyer left and came back while it was queued) learns its
                    // pending receipts from the ledger, which may have granted this one.
                    let charged_here = charge
                        .fence
                        .as_ref()
                        .is_some_and(|fence| session.lease_token == Some(fence.token));
                    if session.is_active() && charged_here && pending {
                        session.add_pending(receipt.clone(), seq);
                        deliveries.now.push(*entity);
                    }
                }
                Outcome::Known(Ok(receipt))
            }
            Ok(ChargeReply::InsufficientFunds {
                balance: now,
                price,
            }) => {
                if let Some((_, (_, balance, _))) = player.as_mut() {
                    balance.0 = now;
                }
                Outcome::Known(Err(PurchaseError::NotEnoughFunds {
                    balance: now,
                    price,
                    missing: price.saturating_sub(now),
                }))
            }
            Ok(ChargeReply::LeaseLost { owner }) => {
                tracing::error!(
                    "charging user {} for product {} was refused: server {} no longer holds their session (held by {})",
                    charge.user,
                    charge.product_id,
                    settings.server_id,
                    owner.as_deref().unwrap_or("nobody")
                );
                Outcome::Known(Err(PurchaseError::Unavailable(
                    "this server no longer holds your session".into(),
                )))
            }
            Ok(ChargeReply::InvalidText(invalid)) => {
                tracing::error!("charging user {} was refused: {invalid}", charge.user);
                Outcome::Known(Err(PurchaseError::PurchaseFailed(invalid.to_string())))
            }
            // The request never reached a store: nothing was charged by it — unless an earlier
            // attempt's outcome was already unknown.
            Err(LedgerError::Unavailable(why))
                if charges
                    .0
                    .get(&charge.request_id)
                    .is_none_or(|followed| followed.failures == 0) =>
            {
                Outcome::Known(Err(PurchaseError::PurchaseFailed(why)))
            }
            Err(e) => {
                tracing::warn!(
                    "charging user {} for product {} failed: {e}; it may or may not have gone through, asking again with the same request id",
                    charge.user,
                    charge.product_id
                );
                Outcome::Unknown
            }
        };
        let prompt = player
            .as_mut()
            .and_then(|(_, (_, _, prompt))| prompt.as_mut())
            .filter(|p| p.request_id == charge.request_id);
        match outcome {
            Outcome::Known(known) => {
                let followed = charges.0.remove(&charge.request_id);
                match prompt {
                    // Its handler rejected the receipt before this (repeated) answer came.
                    Some(prompt)
                        if matches!(
                            prompt.state,
                            PromptState::Failed(PurchaseError::Refunded { .. })
                        ) => {}
                    Some(prompt) => {
                        prompt.state = match known {
                            Ok(receipt) => PromptState::Purchased(receipt),
                            Err(error) => PromptState::Failed(error),
                        };
                    }
                    // The player closed the prompt while the outcome was unknown: now it is known.
                    None if let Some(Charge {
                        prompt: (player, prompt),
                        prompt_closed: true,
                        ..
                    }) = followed =>
                    {
                        finished.write(PromptProductPurchaseFinished {
                            player,
                            prompt,
                            user_id: charge.user,
                            product_id: charge.product_id,
                            is_purchased: known.is_ok(),
                        });
                    }
                    None => {}
                }
            }
            Outcome::Unknown => {
                let Some(followed) = charges.0.get_mut(&charge.request_id) else {
                    continue;
                };
                followed.failures += 1;
                if followed.failures < CHARGE_ATTEMPTS {
                    ledger.send(charge);
                } else {
                    let wait = settings
                        .retry
                        .delay(followed.failures + 1 - CHARGE_ATTEMPTS);
                    followed.retry_at = Some(time.elapsed().saturating_add(wait));
                    if let Some(prompt) = prompt
                        && prompt.state == PromptState::Purchasing
                    {
                        prompt.state = PromptState::Unconfirmed;
                    }
                }
            }
        }
    }
}
