//! Delivery: runs the right handler for each receipt of a present buyer that waits for one — a
//! product handler to grant a purchase, a refund handler to take a refunded one's effect back —
//! as a transaction on the buyer's persisted components, and queues the save that commits it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bevy::prelude::*;

use super::handlers::{ReceiptHandler, ReceiptHandlers};
use super::refund_handlers::RefundHandlers;
use crate::ledger::{Clawback, PlayerSnapshot};
use crate::panic_message::panic_message;
use crate::players::{
    DeliveryQueue, PersistRegistry, PlayerSession, Sessions, Task, Uncommitted, Work, queue_save,
};
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

/// What a handler that decided did decide.
enum Verdict {
    Granted,
    /// Rejected, with the reason as the buyer will read it.
    Rejected(String),
}

/// Runs one handler as a transaction on the buyer's persisted components: if it does not grant
/// (`false`, `Err`, a panic, a rejection), they are put back as they were, so an undecided
/// handler's changes are never saved by a later autosave or another receipt's grant and then
/// applied again. When it decided, returns the decision and the components from before it ran
/// (what they go back to if the ledger refuses the work).
fn run_handler(
    world: &mut World,
    entity: Entity,
    handler: &ReceiptHandler,
    receipt: &ReceiptInfo,
) -> Result<(Verdict, PlayerSnapshot), DeliveryFailure> {
    let before = snapshot(world, entity)?;
    world.resource_mut::<Sessions>().handler_running = Some((entity, before));
    let player = world.entity_mut(entity);
    let outcome = match catch_unwind(AssertUnwindSafe(|| handler(receipt, player))) {
        Ok(Ok(ProductPurchaseDecision::PurchaseGranted)) => Ok(Verdict::Granted),
        Ok(Ok(ProductPurchaseDecision::Rejected(reason))) => {
            Ok(Verdict::Rejected(rejection_reason(&reason)))
        }
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
    let mut outcome = outcome;
    if !matches!(outcome, Ok(Verdict::Granted)) && world.get_entity(entity).is_ok() {
        let undone = world.resource_scope(|world, registry: Mut<PersistRegistry>| {
            registry.roll_back(&mut world.entity_mut(entity), &before)
        });
        if let Err(e) = undone {
            tracing::error!(
                "receipt {}: undoing the handler's changes failed: {e}",
                receipt.purchase_id
            );
            // A rejection refunds: never with the handler's changes kept. It is decided again.
            if let Ok(Verdict::Rejected(_)) = outcome {
                outcome = Err(DeliveryFailure::HandlerError(format!(
                    "the handler rejected the purchase, but undoing its changes failed: {e}"
                )));
            }
        }
    }
    outcome.map(|verdict| (verdict, before))
}

/// The longest rejection reason kept, in characters.
const REASON_CHARS: usize = 200;

/// A handler's reason as the ledger keeps it: text every store can keep (a NUL would have the
/// ledger refuse every save of the buyer), trimmed, at most [`REASON_CHARS`] long, never empty.
fn rejection_reason(reason: &str) -> String {
    let kept: String = reason
        .trim()
        .chars()
        .map(|c| {
            if c == '\0' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .take(REASON_CHARS)
        .collect();
    if kept.is_empty() {
        "rejected by the game".to_owned()
    } else {
        kept
    }
}

/// The buyer's persisted components now.
fn snapshot(world: &World, entity: Entity) -> Result<PlayerSnapshot, DeliveryFailure> {
    world
        .resource::<PersistRegistry>()
        .snapshot(&world.entity(entity))
        .map_err(DeliveryFailure::StateUnreadable)
}

/// Grants the player's due receipts and takes back their due refunds, then saves what changed.
fn deliver_to(world: &mut World, entity: Entity, forced: bool, now: std::time::Duration) {
    let granted_any = run_due(world, entity, Task::Grant, forced, now);
    let settled_any = run_due(world, entity, Task::TakeBack, forced, now);
    if granted_any || settled_any {
        // The work, and the state it changed, go to the ledger in one save.
        queue_save(world, entity);
    }
}

/// Runs the handlers of the player's receipts due for `task`; `true` if any did its work.
fn run_due(
    world: &mut World,
    entity: Entity,
    task: Task,
    forced: bool,
    now: std::time::Duration,
) -> bool {
    let receipts: Vec<(ReceiptInfo, u64)> = match world.get_mut::<PlayerSession>(entity) {
        Some(mut session) if session.is_active() => {
            PlayerSession::due(session.waiting(task), forced, now)
        }
        _ => return false,
    };
    let retry = world.resource::<MarketplaceSettings>().retry;
    let user = world.get::<PlayerSession>(entity).map(|s| s.user);
    let mut worked = false;
    for (receipt, learned_at) in receipts {
        let id = receipt.purchase_id.clone();
        // One invocation at a time per receipt: skip it while its work is being committed.
        if world
            .resource::<Sessions>()
            .awaiting_commit
            .holds(&id, task)
        {
            continue;
        }
        if !world
            .get::<PlayerSession>(entity)
            .is_some_and(PlayerSession::is_active)
        {
            break;
        }
        let outcome = match task {
            Task::Grant => match world
                .resource::<ReceiptHandlers>()
                .route(receipt.product_id)
            {
                None => Err(DeliveryFailure::NoHandler),
                Some(handler) => run_handler(world, entity, &handler, &receipt).map(
                    |(verdict, before)| match verdict {
                        Verdict::Granted => (Work::Granted, before, None),
                        Verdict::Rejected(reason) => (Work::Rejected, before, Some(reason)),
                    },
                ),
            },
            Task::TakeBack => match world.resource::<RefundHandlers>().route(receipt.product_id) {
                // No refund handler: the buyer keeps the effect, and the refund says so.
                None => {
                    snapshot(world, entity).map(|b| (Work::Settled(Clawback::Kept), b, None))
                }
                // The currency is back already: there is nothing for a refund handler to reject.
                Some(handler) => run_handler(world, entity, &handler, &receipt).and_then(
                    |(verdict, before)| match verdict {
                        Verdict::Granted => Ok((Work::Settled(Clawback::Done), before, None)),
                        Verdict::Rejected(reason) => Err(DeliveryFailure::HandlerError(format!(
                            "a refund handler cannot reject a refund (it said {reason:?}); return granted once the effect is taken back"
                        ))),
                    },
                ),
            },
        };
        // The handler may have despawned its buyer, or removed `Buyer`: they left, and their
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
            Ok((work, before, rejection)) => {
                if work == Work::Settled(Clawback::Kept) {
                    tracing::warn!(
                        "receipt {id} of user {} was refunded but product {} has no refund handler and there is no catch-all: the buyer keeps its effect",
                        session.user,
                        receipt.product_id
                    );
                }
                session.waiting(task).retain(|p| p.info.purchase_id != id);
                session.uncommitted.push(Uncommitted {
                    receipt: receipt.clone(),
                    work,
                    before,
                    learned_at,
                    rejection,
                });
                world
                    .resource_mut::<Sessions>()
                    .awaiting_commit
                    .insert(receipt, work);
                worked = true;
            }
            Err(reason) => {
                let user = session.user;
                let warn_no_handler =
                    reason == DeliveryFailure::NoHandler && session.warn_no_handler_once(&id);
                let (attempts, wait) =
                    PlayerSession::note_failure_in(session.waiting(task), &id, now, retry);
                let what = match task {
                    Task::Grant => "handler",
                    Task::TakeBack => "refund handler",
                };
                match &reason {
                    DeliveryFailure::NoHandler if warn_no_handler => tracing::warn!(
                        "receipt {id} of user {user} is for product {} which has no handler and there is no catch-all; it stays pending (it is not auto-acknowledged)",
                        receipt.product_id
                    ),
                    DeliveryFailure::NoHandler => {}
                    DeliveryFailure::NotProcessedYet => tracing::debug!(
                        "{what} for product {} did not process receipt {id} of user {user} yet; retrying in {wait:?}",
                        receipt.product_id
                    ),
                    DeliveryFailure::HandlerError(e) => tracing::error!(
                        "{what} for product {} failed on receipt {id} of user {user}: {e}; retrying in {wait:?}",
                        receipt.product_id
                    ),
                    DeliveryFailure::HandlerPanicked(e) => tracing::error!(
                        "{what} for product {} panicked on receipt {id} of user {user}: {e}; retrying in {wait:?}",
                        receipt.product_id
                    ),
                    DeliveryFailure::StateUnreadable(e) => tracing::error!(
                        "receipt {id} of user {user} waits: {e}; retrying in {wait:?}"
                    ),
                }
                world
                    .resource_mut::<WakeSchedule>()
                    .after(now, wait, Wake::Deliver(entity));
                let mut stats = world.resource_mut::<MarketplaceStats>();
                stats.delivery_failures += 1;
                if matches!(reason, DeliveryFailure::HandlerPanicked(_)) {
                    stats.handler_panics += 1;
                }
                match task {
                    Task::Grant => {
                        world.write_message(ReceiptDeliveryFailed {
                            receipt,
                            reason,
                            attempts,
                        });
                    }
                    Task::TakeBack => {
                        world.write_message(ClawbackFailed {
                            receipt,
                            reason,
                            attempts,
                        });
                    }
                }
            }
        }
    }
    worked
}
