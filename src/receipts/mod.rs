//! Receipts after the charge: the game's handlers, their delivery to present buyers.

mod delivery;
mod handlers;
mod refund_handlers;

pub(crate) use delivery::deliver_receipts;
pub use delivery::{ClawbackFailed, DeliveryFailure, ReceiptDeliveryFailed};
pub use handlers::{
    HandlerError, IntoPurchaseDecision, ReceiptHandler, ReceiptHandlers, receipt_handler,
};
pub use refund_handlers::RefundHandlers;

use bevy::prelude::*;

use crate::settings::MarketplaceSystems;

/// Delivery: the game's handlers run on present buyers' receipts and refunds.
pub(crate) struct ReceiptsPlugin;

impl Plugin for ReceiptsPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<ReceiptHandlers>()
            .init_resource::<RefundHandlers>()
            .add_message::<ReceiptDeliveryFailed>()
            .add_message::<ClawbackFailed>()
            .add_systems(
                PreUpdate,
                deliver_receipts.in_set(MarketplaceSystems::Deliver),
            );
    }
}
