//! Receipt delivery: runs the right handler for each pending receipt of a present buyer.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bevy::prelude::*;

use super::handlers::{ReceiptHandler, ReceiptHandlers};
use crate::panic_message::panic_message;
use crate::players::PersistRegistry;
use crate::players::{DeliveryQueue, PlayerSession, Sessions, queue_save};
use crate::receipt::{ProductPurchaseDecision, ReceiptInfo};
use crate::settings::{FrameDeadline, MarketplaceSettings, MarketplaceStats};
use crate::wake::{Wake, WakeSchedule};

/// Why a delivery did not grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// No handler for the product and no catch-all: the receipt stays pending.
    NoHandler,
    /// The handler returned [`ProductPurchaseDecision::NotProcessedYet`].
    NotProcessedYet,
    /// The handler returned an error.
    HandlerError(String),
    /// The handler panicked.
    HandlerPanicked(String),
    /// The buyer's persisted components could not be read before the handler would run, so its
    /// changes could not have been undone: the handler was not run.
    StateUnreadable(String),
}

/// A delivery attempt did not grant; the receipt stays pending and is retried.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct ReceiptDeliveryFailed {
    /// The receipt.
    pub receipt: ReceiptInfo,
    /// Why.
    pub reason: DeliveryFailure,
    /// Failed deliveries of this receipt so far on this server.
    pub attempts: u32,
}

/// Runs handlers for the players queued this frame. Exclusive: handlers get the buyer's
/// [`EntityWorldMut`].
pub(crate) fn deliver_receipts(world: &mut World) {
    let mut queue = world.resource_mut::<DeliveryQueue>();
    queue.enqueue_new();
    if queue.backlog_is_empty() {
        return;
    }
    let now = world.resource::<Time<Real>>().elapsed();
    // At least one player a frame; over budget, the rest waits at the front of the backlog.
    while let Some((entity, forced)) = world.resource_mut::<DeliveryQueue>().next() {
        deliver_to(world, entity, forced, now);
        if world.resource::<FrameDeadline>().passed() {
            break;
        }
    }
}

/// Runs one handler as a transaction on the buyer's persisted components: if it does not grant
/// (`false`, `Err`, a panic), they are put back as they were, so an undecided handler's changes
/// are never saved by a later autosave or another receipt's grant and then applied again.
pub(super) fn run_handler(
    world: &mut World,
    entity: Entity,
    handler: &ReceiptHandler,
    receipt: &ReceiptInfo,
) -> Result<(), DeliveryFailure> {
    let before = world
        .resource::<PersistRegistry>()
        .snapshot(&world.entity(entity))
        .map_err(DeliveryFailure::StateUnreadable)?;
    world.resource_mut::<Sessions>().handler_running = Some((entity, before));
    let player = world.entity_mut(entity);
    let outcome = match catch_unwind(AssertUnwindSafe(|| handler(receipt, player))) {
        Ok(Ok(ProductPurchaseDecision::PurchaseGranted)) => Ok(()),
        Ok(Ok(ProductPurchaseDecision::NotProcessedYet)) => Err(DeliveryFailure::NotProcessedYet),
        Ok(Err(e)) => Err(DeliveryFailure::HandlerError(
            e.to_string().trim_end().to_owned(),
        )),
        Err(payload) => Err(DeliveryFailure::HandlerPanicked(panic_message(&*payload))),
    };
    let (_, before) = world
        .resource_mut::<Sessions>()
        .handler_running
        .take()
        .expect("set above; handlers cannot reach it");
    if outcome.is_err() && world.get_entity(entity).is_ok() {
        world.resource_scope(|world, registry: Mut<PersistRegistry>| {
            if let Err(e) = registry.roll_back(&mut world.entity_mut(entity), &before) {
                tracing::error!(
                    "receipt {}: undoing the handler's changes failed: {e}",
                    receipt.purchase_id
                );
            }
        });
    }
    outcome
}

/// Grants the player's due receipts and takes back their due refunds, then saves what changed.
fn deliver_to(world: &mut World, entity: Entity, forced: bool, now: std::time::Duration) {
    let granted_any = grant_due(world, entity, forced, now);
    let settled_any = super::clawbacks::take_back(world, entity, forced, now);
    if granted_any || settled_any {
        // The grants, the clawbacks and the state they changed go to the ledger in one save.
        queue_save(world, entity);
    }
}

/// Runs the handlers of the player's due receipts; `true` if any granted.
fn grant_due(world: &mut World, entity: Entity, forced: bool, now: std::time::Duration) -> bool {
    let receipts: Vec<ReceiptInfo> = match world.get::<PlayerSession>(entity) {
        Some(session) if session.is_active() => PlayerSession::due(&session.pending, forced, now),
        _ => return false,
    };
    let retry = world.resource::<MarketplaceSettings>().retry;
    let user = world.get::<PlayerSession>(entity).map(|s| s.user);
    let mut granted_any = false;
    for receipt in receipts {
        let id = receipt.purchase_id.clone();
        // One invocation at a time per receipt: skip it while its grant is being committed.
        if world.resource::<Sessions>().awaiting_commit.contains(&id) {
            continue;
        }
        if !world
            .get::<PlayerSession>(entity)
            .is_some_and(PlayerSession::is_active)
        {
            break;
        }
        let handler = world
            .resource::<ReceiptHandlers>()
            .route(receipt.product_id);
        let outcome = match handler {
            None => Err(DeliveryFailure::NoHandler),
            Some(handler) => run_handler(world, entity, &handler, &receipt),
        };
        // The handler may have despawned its buyer, or removed `Player`: they left, and their
        // final save was made from the state before the handler ran. Nothing to record.
        let still_here = user
            .is_some_and(|user| world.resource::<Sessions>().by_user.get(&user) == Some(&entity));
        if !still_here {
            return false;
        }
        let Some(mut session) = world.get_mut::<PlayerSession>(entity) else {
            return false;
        };
        match outcome {
            Ok(()) => {
                session.pending.retain(|p| p.info.purchase_id != id);
                session.unsaved.push(id.clone());
                world
                    .resource_mut::<Sessions>()
                    .awaiting_commit
                    .insert(receipt);
                granted_any = true;
            }
            Err(reason) => {
                let user = session.user;
                let warn_no_handler =
                    reason == DeliveryFailure::NoHandler && session.warn_no_handler_once(&id);
                let (attempts, wait) =
                    PlayerSession::note_failure_in(&mut session.pending, &id, now, retry);
                match &reason {
                    DeliveryFailure::NoHandler if warn_no_handler => tracing::warn!(
                        "receipt {id} of user {user} is for product {} which has no handler and there is no catch-all; it stays pending (it is not auto-acknowledged)",
                        receipt.product_id
                    ),
                    DeliveryFailure::HandlerError(e) => tracing::error!(
                        "handler for product {} failed on receipt {id} of user {user}: {e}; retrying in {:?}",
                        receipt.product_id,
                        wait
                    ),
                    DeliveryFailure::HandlerPanicked(e) => tracing::error!(
                        "handler for product {} panicked on receipt {id} of user {user}: {e}; retrying in {:?}",
                        receipt.product_id,
                        wait
                    ),
                    DeliveryFailure::StateUnreadable(e) => tracing::error!(
                        "receipt {id} of user {user} waits: {e}; retrying in {:?}",
                        wait
                    ),
                    _ => {}
                }
                world
                    .resource_mut::<WakeSchedule>()
                    .after(now, wait, Wake::Deliver(entity));
                let mut stats = world.resource_mut::<MarketplaceStats>();
                stats.delivery_failures += 1;
                if matches!(reason, DeliveryFailure::HandlerPanicked(_)) {
                    stats.handler_panics += 1;
                }
                world.write_message(ReceiptDeliveryFailed {
                    receipt,
                    reason,
                    attempts,
                });
            }
        }
    }
    granted_any
}
