//! Refund handlers: the game's code that takes a refunded purchase's effect back.

use bevy::prelude::*;

use super::handlers::{ReceiptHandler, ReceiptHandlers};

/// Refund handlers by product, plus an optional catch-all, bound with
/// [`MarketplaceAppExt::add_refund_handler`](crate::MarketplaceAppExt::add_refund_handler).
///
/// A refund handler gets the refunded receipt and the buyer's entity and takes the purchase's
/// effect back (`-100` Gold). It is transactional like a grant: its changes to persisted
/// components commit in the same transaction that marks the refund settled, it runs until it
/// returns granted (`true`), its changes are undone when it declines, fails or panics, and it is
/// delivered when the buyer joins if they are away. A product with neither its own refund handler
/// nor a catch-all keeps its effect ([`Clawback::Kept`](crate::ledger::Clawback::Kept)).
#[derive(Resource, Default, Clone, Deref, DerefMut)]
pub struct RefundHandlers(pub ReceiptHandlers);

impl RefundHandlers {
    /// The refund handler of `product`: its own, else the catch-all.
    pub fn route(&self, product: crate::ProductId) -> Option<ReceiptHandler> {
        self.0.route(product)
    }
}
