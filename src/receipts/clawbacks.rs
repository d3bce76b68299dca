//! Clawbacks: runs the refund handler of each refunded receipt whose effect a present buyer still
//! has, and records the outcome for the buyer's next save.

use bevy::prelude::*;

use super::delivery::{DeliveryFailure, run_handler};
use super::refund_handlers::RefundHandlers;
use crate::ledger::Clawback;
use crate::players::{PlayerSession, Sessions};
use crate::receipt::ReceiptInfo;
use crate::settings::{MarketplaceSettings, MarketplaceStats};
use crate::wake::{Wake, WakeSchedule};

/// A refund handler did not take the effect back; it is retried like a grant.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct ClawbackFailed {
    /// The refunded receipt.
    pub receipt: ReceiptInfo,
    /// Why.
    pub reason: DeliveryFailure,
    /// Failed attempts so far on this server.
    pub attempts: u32,
}

/// Runs the due refund handlers of the player at `entity`; `true` if any clawback was settled
/// (the caller saves them).
pub(super) fn take_back(
    world: &mut World,
    entity: Entity,
    forced: bool,
    now: std::time::Duration,
) -> bool {
    let receipts = match world.get::<PlayerSession>(entity) {
        Some(session) if session.is_active() => PlayerSession::due(&session.clawbacks, forced, now),
        _ => return false,
    };
    let user = world.get::<PlayerSession>(entity).map(|s| s.user);
    let retry = world.resource::<MarketplaceSettings>().retry;
    let mut settled_any = false;
    for receipt in receipts {
        let id = receipt.purchase_id.clone();
        if world.resource::<Sessions>().settling.contains_key(&id) {
            continue;
        }
        if !world
            .get::<PlayerSession>(entity)
            .is_some_and(PlayerSession::is_active)
        {
            break;
        }
        let handler = world.resource::<RefundHandlers>().route(receipt.product_id);
        let outcome = match &handler {
            None => Ok(Clawback::Kept),
            Some(handler) => run_handler(world, entity, handler, &receipt).map(|()| Clawback::Done),
        };
        let still_here = user
            .is_some_and(|user| world.resource::<Sessions>().by_user.get(&user) == Some(&entity));
        if !still_here {
            return false;
        }
        let Some(mut session) = world.get_mut::<PlayerSession>(entity) else {
            return false;
        };
        match outcome {
            Ok(clawback) => {
                if clawback == Clawback::Kept {
                    tracing::warn!(
                        "receipt {id} of user {} was refunded but product {} has no refund handler and there is no catch-all: the buyer keeps its effect",
                        session.user,
                        receipt.product_id
                    );
                }
                session.clawbacks.retain(|p| p.info.purchase_id != id);
                session.unsaved_settled.push((id.clone(), clawback));
                world
                    .resource_mut::<Sessions>()
                    .settling
                    .insert(id, (receipt, clawback));
                settled_any = true;
            }
            Err(reason) => {
                let user = session.user;
                let (attempts, wait) =
                    PlayerSession::note_failure_in(&mut session.clawbacks, &id, now, retry);
                tracing::error!(
                    "refund handler for product {} did not take back receipt {id} of user {user}: {reason:?}; retrying in {wait:?}",
                    receipt.product_id
                );
                world
                    .resource_mut::<WakeSchedule>()
                    .after(now, wait, Wake::Deliver(entity));
                world.resource_mut::<MarketplaceStats>().delivery_failures += 1;
                world.write_message(ClawbackFailed {
                    receipt,
                    reason,
                    attempts,
                });
            }
        }
    }
    settled_any
}
