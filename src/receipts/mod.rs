//! Receipts after the charge: the game's handlers, their delivery to present buyers.

mod delivery;
mod handlers;

pub(crate) use delivery::deliver_receipts;
pub use delivery::{DeliveryFailure, ReceiptDeliveryFailed};
pub use handlers::{
    HandlerError, IntoPurchaseDecision, ReceiptHandler, ReceiptHandlers, receipt_handler,
};
