#![doc = include_str!("lib.md")]
// On docs.rs, each item says which feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

// Floors, bottom to top: text, ids, currency, receipt, retry, wake, panic_message → catalog, ledger, settings → link → players →
// receipts, service → purchase → shutdown → plugin → ui. A module imports only from floors
// below its own.
mod catalog;
mod currency;
pub mod docs;
#[cfg(feature = "icons")]
pub mod icon;
mod ids;
pub mod ledger;
mod link;
#[cfg(feature = "net")]
pub mod net;
mod panic_message;
mod players;
mod plugin;
mod purchase;
mod receipt;
mod receipts;
mod retry;
mod service;
mod settings;
mod shutdown;
pub mod testing;
mod text;
#[cfg(feature = "egui")]
pub mod ui;
mod wake;

use bevy::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use catalog::{
    Catalog, CatalogError, CatalogIndex, CatalogStatus, FilePosition, MAX_PRICE, MIN_PRICE,
    PAGE_SIZE, Pages, PagesFinished, ProductDefinition, ProductInfo,
};
pub use currency::{PremiumBalance, PremiumCurrency};
pub use ids::{PlaceId, ProductId, PromptId, PurchaseId, RequestId, UserId};
pub use ledger::Clawback;
pub use link::Ledger;
pub use players::{
    Buyer, PendingReceipt, PlayerSaveFailed, PlayerSession, ReceiptRefunded, ReceiptRejected,
    ReceiptResolved, SessionPhase, Sessions,
};
pub use plugin::{CatalogSource, MarketplacePlugin};
pub use purchase::{
    ConfirmPolicy, OpenPrompt, PromptAction, PromptAnswer, PromptProductPurchaseFinished,
    PromptRefusal, PromptRefused, PromptState, PurchaseError, PurchaseFailed, TopUpOffer,
    TopUpRequested,
};
pub use receipt::{
    CurrencyType, ProductPurchaseChannel, ProductPurchaseDecision, ReceiptInfo, ReceiptState,
};
pub use receipts::{
    ClawbackFailed, DeliveryFailure, HandlerError, IntoPurchaseDecision, ReceiptDeliveryFailed,
    ReceiptHandler, ReceiptHandlers, RefundHandlers, receipt_handler,
};
pub use retry::RetryPolicy;
pub use service::{
    CreditFailure, CreditFinished, CreditReversalFinished, MarketplaceError, MarketplaceService,
    PromptProductPurchase, PurchaseHistoryReady, RefundFailure, RefundFinished, SalesReportReady,
};
pub use settings::{MarketplaceSettings, MarketplaceStats, MarketplaceSystems};
pub use shutdown::{ExitOnSignal, ExitReport, MarketplaceExit};

// The README's examples compile and run as doctests too (it is not the crate's front page).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Everything a game needs: `use bevy_marketplace::prelude::*;`.
pub mod prelude {
    pub use crate::ledger::{InMemoryLedger, LedgerBackend};
    pub use crate::testing::MarketplaceTestExt;
    #[cfg(feature = "egui")]
    pub use crate::ui::{
        LocalPlayer, MarketplaceDebugPanelPlugin, MarketplaceUiPlugin, ProductIcons,
    };
    pub use crate::{
        Buyer, Catalog, CatalogStatus, ConfirmPolicy, ExitOnSignal, MarketplaceAppExt,
        MarketplacePlugin, MarketplaceService, MarketplaceSystems, OpenPrompt, PlayerSession,
        PremiumBalance, PremiumCurrency, ProductId, ProductPurchaseDecision, PromptAction,
        PromptAnswer, PromptProductPurchase, PromptProductPurchaseFinished, PromptState,
        PurchaseError, PurchaseFailed, ReceiptInfo, ReceiptRefunded, ReceiptRejected,
        ReceiptResolved, UserId,
    };
}

/// Renamed [`Buyer`], so that it does not collide with the `Player` marker of most games.
#[deprecated(since = "0.1.0", note = "renamed `Buyer`")]
pub type Player = Buyer;

/// Renamed [`OpenPrompt`], so that it is not mixed up with the [`PromptProductPurchase`]
/// message that opens it.
#[deprecated(since = "0.1.0", note = "renamed `OpenPrompt`")]
pub type PurchasePrompt = OpenPrompt;

/// Registration on the [`App`]: product handlers and persisted components.
pub trait MarketplaceAppExt {
    /// Binds a handler to a product. It receives the receipt and the buyer's entity and returns a
    /// decision (see [`IntoPurchaseDecision`]). A panic or `Err` counts as
    /// [`ProductPurchaseDecision::NotProcessedYet`].
    ///
    /// A handler is a transaction: when it does not grant, its changes to the buyer's persisted
    /// components are put back, and the receipt (already paid) is delivered again later.
    ///
    /// ```
    /// use bevy::prelude::*;
    /// use bevy_marketplace::prelude::*;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Component, Default, Serialize, Deserialize)]
    /// struct Gold(u64);
    /// #[derive(Component)]
    /// struct InBattle(bool);
    /// # let catalog = Catalog::from_ron_str("(products: [(id: 456456, name: \"Pouch of Gold\", price: 80)])", "products.ron").unwrap();
    ///
    /// let mut app = App::new();
    /// app.add_plugins((
    ///     MinimalPlugins,
    ///     MarketplacePlugin { starting_balance: 1_000, ..MarketplacePlugin::default()
    ///         .with_catalog(catalog)
    ///         .with_ledger(LedgerBackend::in_memory()) },
    /// ))
    /// .persist_component::<Gold>()
    /// .add_product_handler(ProductId(456456), |_receipt, mut player| {
    ///     player.get_mut::<Gold>().unwrap().0 += 100;
    ///     // Granted outside battle only: declining puts the Gold back, and the receipt waits.
    ///     if player.get::<InBattle>().is_some_and(|battle| battle.0) {
    ///         return ProductPurchaseDecision::NotProcessedYet;
    ///     }
    ///     ProductPurchaseDecision::PurchaseGranted
    /// });
    /// let player = app.world_mut().spawn((Buyer::new(UserId(1)), Gold(0), InBattle(true))).id();
    /// app.update_until("the session to open", |w| {
    ///     w.get::<PlayerSession>(player).is_some_and(PlayerSession::is_active)
    /// });
    /// app.world_mut().write_message(PromptProductPurchase { player, product_id: ProductId(456456) });
    /// app.settle();
    /// assert_eq!(app.world().get::<PremiumBalance>(player).unwrap().0, 920, "paid");
    /// assert_eq!(app.world().get::<Gold>(player).unwrap().0, 0, "not granted yet");
    ///
    /// // The battle ends; the receipt is delivered again (on a timer, or now:)
    /// app.world_mut().get_mut::<InBattle>(player).unwrap().0 = false;
    /// app.world_mut().resource_mut::<MarketplaceService>().retry_pending(player);
    /// app.settle();
    /// assert_eq!(app.world().get::<Gold>(player).unwrap().0, 100, "granted once");
    /// ```
    ///
    /// # Panics
    /// If the product already has a handler (Roblox throws too); use
    /// [`ReceiptHandlers::bind`] to handle that as an error.
    fn add_product_handler<F, O>(&mut self, product: ProductId, handler: F) -> &mut Self
    where
        F: for<'w> Fn(&ReceiptInfo, EntityWorldMut<'w>) -> O + Send + Sync + 'static,
        O: IntoPurchaseDecision;

    /// Binds the catch-all handler: it receives receipts of products without a handler of their own.
    ///
    /// # Panics
    /// If a catch-all is already bound.
    fn set_catch_all_handler<F, O>(&mut self, handler: F) -> &mut Self
    where
        F: for<'w> Fn(&ReceiptInfo, EntityWorldMut<'w>) -> O + Send + Sync + 'static,
        O: IntoPurchaseDecision;

    /// Binds a refund handler to a product: when a granted purchase of it is refunded, it gets
    /// the receipt and the buyer's entity and takes the effect back. Transactional and retried
    /// like a product handler (see [`RefundHandlers`]).
    ///
    /// # Panics
    /// If the product already has a refund handler.
    fn add_refund_handler<F, O>(&mut self, product: ProductId, handler: F) -> &mut Self
    where
        F: for<'w> Fn(&ReceiptInfo, EntityWorldMut<'w>) -> O + Send + Sync + 'static,
        O: IntoPurchaseDecision;

    /// Binds the catch-all refund handler, for refunds of products without one of their own.
    ///
    /// # Panics
    /// If a catch-all refund handler is already bound.
    fn set_catch_all_refund_handler<F, O>(&mut self, handler: F) -> &mut Self
    where
        F: for<'w> Fn(&ReceiptInfo, EntityWorldMut<'w>) -> O + Send + Sync + 'static,
        O: IntoPurchaseDecision;

    /// Persists component `C` of players under its type name: loaded on join before any receipt
    /// is delivered, saved on leave, on autosave, and in the same transaction as every grant.
    fn persist_component<C: Component + Serialize + DeserializeOwned>(&mut self) -> &mut Self;

    /// Like [`persist_component`](Self::persist_component), under an explicit name (keep it
    /// stable: it is the key in the ledger).
    fn persist_component_as<C: Component + Serialize + DeserializeOwned>(
        &mut self,
        name: &str,
    ) -> &mut Self;
}

impl MarketplaceAppExt for App {
    fn add_product_handler<F, O>(&mut self, product: ProductId, handler: F) -> &mut Self
    where
        F: for<'w> Fn(&ReceiptInfo, EntityWorldMut<'w>) -> O + Send + Sync + 'static,
        O: IntoPurchaseDecision,
    {
        let mut handlers = self.world_mut().get_resource_or_init::<ReceiptHandlers>();
        if let Err(e) = handlers.bind(product, receipt_handler(handler)) {
            panic!("add_product_handler: {e}");
        }
        self
    }

    fn set_catch_all_handler<F, O>(&mut self, handler: F) -> &mut Self
    where
        F: for<'w> Fn(&ReceiptInfo, EntityWorldMut<'w>) -> O + Send + Sync + 'static,
        O: IntoPurchaseDecision,
    {
        let mut handlers = self.world_mut().get_resource_or_init::<ReceiptHandlers>();
        if let Err(e) = handlers.bind_catch_all(receipt_handler(handler)) {
            panic!("set_catch_all_handler: {e}");
        }
        self
    }

    fn add_refund_handler<F, O>(&mut self, product: ProductId, handler: F) -> &mut Self
    where
        F: for<'w> Fn(&ReceiptInfo, EntityWorldMut<'w>) -> O + Send + Sync + 'static,
        O: IntoPurchaseDecision,
    {
        let mut handlers = self.world_mut().get_resource_or_init::<RefundHandlers>();
        if let Err(e) = handlers.bind(product, receipt_handler(handler)) {
            panic!("add_refund_handler: {e}");
        }
        self
    }

    fn set_catch_all_refund_handler<F, O>(&mut self, handler: F) -> &mut Self
    where
        F: for<'w> Fn(&ReceiptInfo, EntityWorldMut<'w>) -> O + Send + Sync + 'static,
        O: IntoPurchaseDecision,
    {
        let mut handlers = self.world_mut().get_resource_or_init::<RefundHandlers>();
        if let Err(e) = handlers.bind_catch_all(receipt_handler(handler)) {
            panic!("set_catch_all_refund_handler: {e}");
        }
        self
    }

    fn persist_component<C: Component + Serialize + DeserializeOwned>(&mut self) -> &mut Self {
        self.persist_component_as::<C>(players::short_type_name::<C>())
    }

    fn persist_component_as<C: Component + Serialize + DeserializeOwned>(
        &mut self,
        name: &str,
    ) -> &mut Self {
        let mut registry = self
            .world_mut()
            .get_resource_or_init::<players::PersistRegistry>();
        if let Err(e) = registry.register::<C>(name) {
            panic!("persist_component: {e}");
        }
        self
    }
}
