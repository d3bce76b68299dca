//! What a purchase prompt tells the game and what it is told: answers, refusals, the prompt's
//! outcome, top-up requests, and why a purchase could not be made.

use bevy::prelude::*;

use crate::ids::{ProductId, PromptId, UserId};

/// The prompt closed. Fires exactly once per opened prompt. `is_purchased` is `true` only when the
/// purchase went through: when the prompt closed after it, or — for a prompt closed while the
/// charge's outcome was not known yet — when the ledger says so.
///
/// **Never grant from this.** It says what the buyer saw, not what was committed; grants happen
/// in product handlers, and [`ReceiptResolved`](crate::ReceiptResolved) reports them.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptProductPurchaseFinished {
    /// The player entity the prompt was on (it may have left since).
    pub player: Entity,
    /// The prompt.
    pub prompt: PromptId,
    /// The buyer's user id.
    pub user_id: UserId,
    /// The product.
    pub product_id: ProductId,
    /// `true` if the purchase went through before the prompt closed.
    pub is_purchased: bool,
}

/// A prompt closed without a purchase because of an error (not a cancel): what the prompt
/// showed, for logs and UIs that were not watching the prompt.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct PurchaseFailed {
    /// The player entity the prompt was on.
    pub player: Entity,
    /// The prompt.
    pub prompt: PromptId,
    /// The buyer's user id.
    pub user_id: UserId,
    /// The product.
    pub product_id: ProductId,
    /// Why.
    pub error: PurchaseError,
}

/// What the player did with their prompt: sent by the purchase UI or a test. It names the prompt
/// it answers: an answer to a prompt that is no longer open (one already answered, a late click on
/// a prompt game code replaced) is refused with [`PromptRefused`] and changes nothing. A prompt
/// takes one answer; the first one that applies closes it or moves it on at once.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptAnswer {
    /// The player whose prompt it is.
    pub player: Entity,
    /// The prompt answered ([`OpenPrompt::id`](crate::OpenPrompt::id)).
    pub prompt: PromptId,
    /// The action.
    pub action: PromptAction,
}

/// A prompt request or answer that was refused, and why: nothing changed. Over the network the
/// asking client hears it too.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct PromptRefused {
    /// The player it was for.
    pub player: Entity,
    /// The prompt an answer named, if it was an answer.
    pub prompt: Option<PromptId>,
    /// The product a request asked for, if it was a request.
    pub product_id: Option<ProductId>,
    /// Why.
    pub reason: PromptRefusal,
}

/// Why a prompt request or answer was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum PromptRefusal {
    /// The answer names a prompt that is not open (already closed, or replaced).
    #[error("that prompt is no longer open")]
    NotOpen,
    /// The prompt was answered already (a second click, a second answer in one frame).
    #[error("that prompt was answered already")]
    AlreadyAnswered,
    /// The button does not apply to the prompt where it is (Cancel after the purchase).
    #[error("{action:?} does not apply to the prompt now")]
    NotNow {
        /// The button.
        action: PromptAction,
    },
    /// A prompt is open already: it is the one to answer (a networked client is sent it again).
    #[error("a prompt is open already")]
    AlreadyOpen(PromptId),
    /// The entity is not a player.
    #[error("the entity is not a player")]
    NotAPlayer,
    /// Too many requests in a short time (a networked client over its rate limit).
    #[error("too many purchase requests; please wait a moment")]
    TooManyRequests,
}

/// A button on the prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PromptAction {
    /// "Buy": charge the player.
    Confirm,
    /// "Cancel": close without buying (only before buying).
    Cancel,
    /// "OK": close a prompt that shows its result.
    Close,
    /// "Get more": on a prompt that failed for want of funds, close it and ask the game to open
    /// its own top-up flow ([`TopUpRequested`]).
    TopUp,
}

/// The game's top-up flow, offered where a prompt says "You need N more": with this resource,
/// the egui prompt shows a button with `label`, and pressing it (or any UI's
/// [`PromptAction::TopUp`]) closes the prompt and sends [`TopUpRequested`]. Without it the prompt
/// stays as it is. What the flow is — a store page, an in-game shop — is the game's.
#[derive(Resource, Clone, Debug, PartialEq, Eq)]
pub struct TopUpOffer {
    /// The button's text, e.g. "Get more Robux".
    pub label: String,
}

impl TopUpOffer {
    /// An offer with this button text.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
        }
    }
}

/// A player who could not afford a product asked for more premium currency: open your top-up
/// flow (and credit what they buy with
/// [`MarketplaceService::credit_premium_currency`](crate::MarketplaceService::credit_premium_currency)).
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopUpRequested {
    /// The player.
    pub player: Entity,
    /// The prompt the player pressed "get more" on: one request per prompt, so it can key the
    /// store order (a top-up flow asked twice for one prompt credits once).
    pub prompt: PromptId,
    /// Their user id.
    pub user_id: UserId,
    /// The product they wanted.
    pub product_id: ProductId,
    /// How much more they need for it.
    pub missing: u64,
}

/// Why a purchase could not be made. Nothing was charged unless the variant says so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum PurchaseError {
    /// The product id is not in the catalog.
    #[error("This item is not available.")]
    UnknownProduct,
    /// No catalog is installed yet, so no product can be bought: it is still loading, or it
    /// failed to load ([`CatalogStatus::last_error`](crate::CatalogStatus::last_error) says why;
    /// [`MarketplaceService::catalog_loaded`](crate::MarketplaceService::catalog_loaded) tells
    /// when it is in).
    #[error("The shop has not loaded yet. Please try again in a moment.")]
    CatalogNotLoaded,
    /// The product is not for sale.
    #[error("This item is not currently for sale.")]
    NotForSale,
    /// The balance is below the price.
    #[error("You need {missing} more to buy this item.")]
    NotEnoughFunds {
        /// Balance at the time.
        balance: u64,
        /// Price.
        price: u64,
        /// Price minus balance.
        missing: u64,
    },
    /// The price changed after the prompt opened.
    #[error("The price of this item changed from {shown} to {now}. Please try again.")]
    PriceChanged {
        /// Price on the prompt.
        shown: u64,
        /// Price now.
        now: u64,
    },
    /// The player's data is still loading.
    #[error("Your account is still loading. Please try again in a moment.")]
    ProfileNotReady,
    /// Purchases cannot be made for this player now: the ledger cannot be opened, their data did
    /// not load, or another server holds their session. The string says which.
    #[error("Purchases are unavailable right now ({0}). You have not been charged.")]
    Unavailable(String),
    /// The ledger could not charge; the player was not charged.
    #[error("Purchase failed: {0}. You have not been charged.")]
    PurchaseFailed(String),
    /// Charged, then refunded in full: the product's handler rejected the purchase
    /// ([`ProductPurchaseDecision::Rejected`](crate::ProductPurchaseDecision::Rejected)), and
    /// the refund is committed ([`ReceiptRejected`](crate::ReceiptRejected)).
    #[error("Refunded: {reason}")]
    Refunded {
        /// The handler's reason.
        reason: String,
    },
}
