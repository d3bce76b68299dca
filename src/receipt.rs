//! Receipts: what a charge produces, what handlers receive.

use serde::{Deserialize, Serialize};

use crate::ids::{PlaceId, ProductId, PurchaseId, UserId};

/// The currency a receipt was paid in. Developer products are always bought with the premium
/// currency (Roblox: `CurrencyType.Robux`); the enum keeps Roblox's numbering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(i32)]
pub enum CurrencyType {
    /// The premium currency configured on the plugin (Roblox `Robux`).
    #[default]
    Premium = 1,
}

/// How a purchase was made (Roblox `Enum.ProductPurchaseChannel`; there is no `0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(i32)]
pub enum ProductPurchaseChannel {
    /// Bought through an in-game purchase prompt.
    #[default]
    InExperience = 1,
    /// Bought outside the game (a store page); delivered when the buyer joins.
    ExperienceDetailsPage = 2,
    /// Granted for watching a rewarded ad.
    AdReward = 3,
    /// Granted as the benefit of a commerce product.
    CommerceProduct = 4,
}

impl ProductPurchaseChannel {
    /// The numeric value Roblox uses for this channel.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The channel for a numeric value, if it is one.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::InExperience),
            2 => Some(Self::ExperienceDetailsPage),
            3 => Some(Self::AdReward),
            4 => Some(Self::CommerceProduct),
            _ => None,
        }
    }
}

/// What a handler decided about a receipt (Roblox `Enum.ProductPurchaseDecision`, plus
/// [`Rejected`](Self::Rejected), which Roblox lacks).
///
/// A purchase that can stop making sense before its handler runs (a revive bought while downed,
/// delivered after a teammate revived the buyer) is rejected and refunded, not left pending:
///
/// ```
/// use bevy::prelude::*;
/// use bevy_marketplace::prelude::*;
///
/// #[derive(Component)]
/// struct Downed(bool);
/// # let catalog = Catalog::from_ron_str("(products: [(id: 7, name: \"Revive\", price: 25)])", "products.ron").unwrap();
///
/// let mut app = App::new();
/// app.add_plugins((
///     MinimalPlugins,
///     MarketplacePlugin { starting_balance: 100, ..MarketplacePlugin::default()
///         .with_catalog(catalog)
///         .with_ledger(LedgerBackend::in_memory()) },
/// ))
/// .add_product_handler(ProductId(7), |_receipt, mut player| {
///     let Some(mut downed) = player.get_mut::<Downed>() else {
///         return ProductPurchaseDecision::NotProcessedYet;
///     };
///     if !downed.0 {
///         // Pointless now: the currency goes back, and this receipt never comes again.
///         return ProductPurchaseDecision::rejected("You were revived before it arrived");
///     }
///     downed.0 = false;
///     ProductPurchaseDecision::PurchaseGranted
/// });
/// let player = app.world_mut().spawn((Buyer::new(UserId(1)), Downed(true))).id();
/// app.update_until("the session to open", |w| {
///     w.get::<PlayerSession>(player).is_some_and(PlayerSession::is_active)
/// });
/// // A teammate revives the player between the click and the grant.
/// app.world_mut().write_message(PromptProductPurchase { player, product_id: ProductId(7) });
/// app.update();
/// app.world_mut().get_mut::<Downed>(player).unwrap().0 = false;
/// app.settle();
/// assert_eq!(app.world().get::<PremiumBalance>(player).unwrap().0, 100, "refunded");
/// let stats = app.world().resource::<bevy_marketplace::MarketplaceStats>();
/// assert_eq!(stats.rejected, 1, "told once (ReceiptRejected)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProductPurchaseDecision {
    /// Not granted this time: the receipt stays pending and is delivered again later.
    NotProcessedYet,
    /// Granted: once committed together with the buyer's persisted state it is never delivered
    /// again, on any server.
    PurchaseGranted,
    /// Never to be granted: the purchase stopped making sense between the click and the grant (a
    /// revive bought as a teammate revived you, a "skip wave" bought as the wave ended). The
    /// handler's changes are undone as for [`NotProcessedYet`](Self::NotProcessedYet); the
    /// buyer's currency goes back and the receipt becomes [`ReceiptState::Rejected`] in the
    /// same transaction as the buyer's persisted state, once; it is never delivered again, on
    /// any server. The buyer hears the reason
    /// ([`ReceiptRejected`](crate::ReceiptRejected), and the prompt's
    /// [`PurchaseError::Refunded`](crate::PurchaseError::Refunded)).
    Rejected(String),
}

impl ProductPurchaseDecision {
    /// [`Rejected`](Self::Rejected) with `reason`, shown to the buyer.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected(reason.into())
    }
}

/// One purchase, as handed to product handlers (Roblox `receiptInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptInfo {
    /// Unique id of the purchase; the same on every redelivery.
    pub purchase_id: PurchaseId,
    /// The buyer.
    pub player_id: UserId,
    /// The product bought.
    pub product_id: ProductId,
    /// The place the purchase was made in.
    pub place_id_where_purchased: PlaceId,
    /// The exact amount of premium currency the buyer paid (0 for test purchases).
    pub currency_spent: u64,
    /// Always [`CurrencyType::Premium`].
    pub currency_type: CurrencyType,
    /// How the purchase was made.
    pub product_purchase_channel: ProductPurchaseChannel,
    /// `true` for a test purchase: free, still delivered through receipts (like Roblox Studio).
    pub is_test_purchase: bool,
}

/// Where a receipt is in its life, as kept by the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReceiptState {
    /// Charged, not yet granted: delivered to handlers until granted.
    Pending,
    /// Granted and committed together with the buyer's persisted state.
    Granted,
    /// Refunded: never delivered again.
    Refunded,
    /// Rejected by its handler and refunded in the same transaction, before any grant: never
    /// delivered again. Its refund record holds the handler's reason.
    Rejected,
}

impl ReceiptState {
    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Granted => "granted",
            Self::Refunded => "refunded",
            Self::Rejected => "rejected",
        }
    }

    /// The state for a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "granted" => Some(Self::Granted),
            "refunded" => Some(Self::Refunded),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}
