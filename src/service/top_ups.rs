//! Premium currency outside purchases, asked through the service: grants, store top-ups and
//! their reversals; the ledger's answers, told to the game and shown on the player's balance.

use bevy::prelude::*;

use crate::currency::PremiumBalance;
use crate::ids::UserId;
use crate::ledger::{
    AdjustBalance, AdjustReply, CreditError, CreditOutcome, CreditRequest, LedgerError,
    ReversalOutcome, ReverseCredit,
};
use crate::link::LedgerAnswers;
use crate::players::{PlayerSession, Sessions};
use crate::settings::FrameDeadline;

/// Why a top-up or a reversal did not go through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreditFailure {
    /// The ledger refused it; nothing changed.
    #[error(transparent)]
    Refused(#[from] CreditError),
    /// The ledger could not be reached or failed; ask again with the same order id (it is never
    /// applied twice).
    #[error("the ledger failed: {0}")]
    Ledger(String),
}

/// The answer to [`MarketplaceService::credit_premium_currency`](crate::MarketplaceService::credit_premium_currency).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct CreditFinished {
    /// The top-up asked for.
    pub request: CreditRequest,
    /// What happened.
    pub result: Result<CreditOutcome, CreditFailure>,
}

/// The answer to [`MarketplaceService::reverse_credit`](crate::MarketplaceService::reverse_credit).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct CreditReversalFinished {
    /// The store.
    pub source: String,
    /// The store's order id.
    pub order_id: String,
    /// What happened.
    pub result: Result<ReversalOutcome, CreditFailure>,
}

/// Applies the ledger's answers to balance grants, top-ups and reversals: the player's balance
/// shows the outcome, and [`CreditFinished`] and [`CreditReversalFinished`] tell the game.
pub(crate) fn handle_currency_answers(
    mut adjustments: ResMut<LedgerAnswers<AdjustBalance>>,
    mut credits: ResMut<LedgerAnswers<CreditRequest>>,
    mut reversals: ResMut<LedgerAnswers<ReverseCredit>>,
    sessions: Res<Sessions>,
    mut players: Query<(&mut PlayerSession, &mut PremiumBalance)>,
    mut credited: MessageWriter<CreditFinished>,
    mut reversed: MessageWriter<CreditReversalFinished>,
    deadline: Res<FrameDeadline>,
) {
    for answer in adjustments.drain_within(&deadline) {
        let user = answer.call.user;
        match answer.result {
            Ok(AdjustReply::Adjusted { balance }) => {
                show_wallet(&sessions, &mut players, user, balance, None);
            }
            Ok(AdjustReply::TooLow { balance }) => {
                tracing::warn!("balance of user {user} cannot go below zero (it is {balance})");
            }
            Ok(AdjustReply::TooHigh { balance }) => {
                tracing::warn!("balance of user {user} cannot go higher (it is {balance})");
            }
            Ok(AdjustReply::InvalidText(invalid)) => {
                tracing::error!("the balance of user {user} was not changed: {invalid}");
            }
            Err(e) => tracing::error!("changing the balance of user {user} failed: {e}"),
        }
    }
    for answer in credits.drain_within(&deadline) {
        if let Ok(Ok(outcome)) = &answer.result {
            let user = answer.call.user;
            show_wallet(
                &sessions,
                &mut players,
                user,
                outcome.balance,
                Some(outcome.shortfall),
            );
        }
        credited.write(CreditFinished {
            request: answer.call,
            result: failure(answer.result),
        });
    }
    for answer in reversals.drain_within(&deadline) {
        if let Ok(Ok(outcome)) = &answer.result {
            let user = outcome.record.user;
            show_wallet(
                &sessions,
                &mut players,
                user,
                outcome.balance,
                Some(outcome.shortfall),
            );
        }
        reversed.write(CreditReversalFinished {
            source: answer.call.source,
            order_id: answer.call.order_id,
            result: failure(answer.result),
        });
    }
}

/// Shows a player online here the balance (and shortfall) a change left them with.
fn show_wallet(
    sessions: &Sessions,
    players: &mut Query<(&mut PlayerSession, &mut PremiumBalance)>,
    user: UserId,
    balance: u64,
    shortfall: Option<u64>,
) {
    if let Some(&e) = sessions.by_user.get(&user)
        && let Ok((mut session, mut shown)) = players.get_mut(e)
    {
        shown.0 = balance;
        if let Some(shortfall) = shortfall {
            session.shortfall = shortfall;
        }
    }
}

/// A top-up's or reversal's outcome as the game is told it.
fn failure<T>(result: Result<Result<T, CreditError>, LedgerError>) -> Result<T, CreditFailure> {
    match result {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(refused)) => Err(CreditFailure::Refused(refused)),
        Err(e) => Err(CreditFailure::Ledger(e.to_string())),
    }
}
