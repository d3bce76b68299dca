//! What a committed save tells the game: a receipt granted for good, a refund's effect settled, a
//! purchase rejected by its handler and refunded.

use bevy::prelude::*;

use crate::ledger::Clawback;
use crate::receipt::ReceiptInfo;

/// A receipt was granted **and committed** together with the buyer's persisted state: it will
/// never be delivered again, on any server. This — not [`PromptProductPurchaseFinished`](crate::PromptProductPurchaseFinished) —
/// is the signal that a purchase went through.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct ReceiptResolved {
    /// The receipt.
    pub receipt: ReceiptInfo,
}

/// A refund's effect is settled for a buyer on this server, committed with their persisted
/// state: the product's refund handler took the effect back ([`Clawback::Done`]), or the product
/// has none and the buyer keeps it ([`Clawback::Kept`]). Sent once per receipt, on the one server
/// that committed it.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct ReceiptRefunded {
    /// The refunded receipt.
    pub receipt: ReceiptInfo,
    /// Done or kept.
    pub clawback: Clawback,
}

/// A receipt's handler rejected it ([`ProductPurchaseDecision::Rejected`](crate::ProductPurchaseDecision::Rejected))
/// and the rejection is **committed** with the buyer's persisted state: the buyer has their
/// currency back, the handler's changes were undone, and the receipt will never be delivered
/// again, on any server. Sent at most once per receipt, on the server whose save committed it
/// (a server that crashes or loses the save's answer does not send it; the purchase history has
/// it all the same); the buyer's open prompt for it shows
/// [`PurchaseError::Refunded`](crate::PurchaseError::Refunded).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct ReceiptRejected {
    /// The receipt.
    pub receipt: ReceiptInfo,
    /// The handler's reason, as the buyer reads it.
    pub reason: String,
}
