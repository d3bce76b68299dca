//! Refunds: a purchase's premium currency given back, and its effect taken back (a clawback) by
//! the product's refund handler on the buyer's server, exactly once.

use serde::{Deserialize, Serialize};

use crate::ids::{PlaceId, PurchaseId};
use crate::receipt::ReceiptInfo;

/// What becomes of a refunded purchase's effect (the Gold a pack gave).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Clawback {
    /// The receipt was refunded before it was granted: there is no effect to take back.
    NotNeeded,
    /// Waiting for the product's refund handler on the buyer's server (delivered when they are
    /// online, retried until it takes the effect back).
    Pending,
    /// The refund handler took the effect back, committed with the buyer's persisted state.
    Done,
    /// The product has no refund handler: the buyer keeps the effect.
    Kept,
}

impl Clawback {
    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotNeeded => "not_needed",
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Kept => "kept",
        }
    }

    /// The clawback for a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "not_needed" => Some(Self::NotNeeded),
            "pending" => Some(Self::Pending),
            "done" => Some(Self::Done),
            "kept" => Some(Self::Kept),
            _ => None,
        }
    }
}

/// How a receipt was refunded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    /// When (Unix ms).
    pub at_ms: i64,
    /// Why, as given to the refund.
    pub reason: String,
    /// What became of the purchase's effect.
    pub clawback: Clawback,
}

/// Refund a purchase: give its premium currency back and take its effect back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// The receipt.
    pub purchase_id: PurchaseId,
    /// Why (kept with the receipt and in the balance journal).
    pub reason: String,
    /// Only a receipt bought in this place may be refunded (`None`: any place, for tools that
    /// serve every game on the ledger).
    pub place: Option<PlaceId>,
}

/// Why a refund was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    /// No receipt has this id.
    #[error("no receipt has purchase id {0}")]
    UnknownPurchase(PurchaseId),
    /// A text of the request cannot be kept as written.
    #[error(transparent)]
    InvalidText(#[from] super::InvalidText),
    /// It was refunded before.
    #[error("receipt {purchase_id} was already refunded at {}", super::utc(*at_ms))]
    AlreadyRefunded {
        /// The receipt.
        purchase_id: PurchaseId,
        /// When it was refunded.
        at_ms: i64,
    },
    /// It was bought in another game (place) than the one asking.
    #[error("receipt {purchase_id} was bought in place {place}, not in this game")]
    OtherGame {
        /// The receipt.
        purchase_id: PurchaseId,
        /// Where it was bought.
        place: PlaceId,
    },
    /// Giving the currency back would take the buyer's balance above
    /// [`MAX_BALANCE`](crate::ledger::MAX_BALANCE).
    #[error("refunding receipt {purchase_id} would take the buyer's balance {balance} too high")]
    BalanceTooHigh {
        /// The receipt.
        purchase_id: PurchaseId,
        /// The buyer's balance now.
        balance: u64,
    },
}

/// A refund went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundOutcome {
    /// The refunded receipt.
    pub receipt: ReceiptInfo,
    /// The buyer's balance now, with the currency back.
    pub balance: u64,
    /// What becomes of the purchase's effect: [`Clawback::NotNeeded`] for a receipt that was not
    /// granted, [`Clawback::Pending`] for one that was (its refund handler takes the effect back
    /// on the buyer's server; [`ReceiptRefunded`](crate::ReceiptRefunded) says when).
    pub clawback: Clawback,
}
