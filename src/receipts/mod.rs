//! Receipts after the charge: the game's handlers, their delivery to present buyers.

mod clawbacks;
mod delivery;
mod handlers;
mod refund_handlers;

pub use clawbacks::ClawbackFailed;
pub(crate) use delivery::deliver_receipts;
pub use delivery::{DeliveryFailure, ReceiptDeliveryFailed};
pub use handlers::{
    HandlerError, IntoPurchaseDecision, ReceiptHandler, ReceiptHandlers, receipt_handler,
};
pub use refund_handlers::RefundHandlers;
