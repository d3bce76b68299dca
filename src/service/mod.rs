//! `MarketplaceService`: the game's entry point, named after Roblox's.

mod catalog_install;
mod refunds;
mod reports;
mod requests;
mod top_ups;

use std::sync::Arc;

use bevy::prelude::*;

use crate::catalog::{CatalogIndex, PAGE_SIZE, Pages, ProductInfo};
use crate::currency::PremiumCurrency;
use crate::ids::{ProductId, UserId};

pub(crate) use catalog_install::{apply_catalog_events, install_catalog};
pub(crate) use refunds::handle_refund_answers;
pub use refunds::{RefundFailure, RefundFinished};
pub(crate) use reports::handle_report_answers;
pub use reports::{PurchaseHistoryReady, SalesReportReady};
pub(crate) use requests::{ServiceRequest, apply_service_requests};
pub(crate) use top_ups::handle_currency_answers;
pub use top_ups::{CreditFailure, CreditFinished, CreditReversalFinished};

/// The service's systems: the ledger's answers to what it asked, then this frame's requests.
pub(crate) struct ServicePlugin;

impl Plugin for ServicePlugin {
    fn build(&self, app: &mut App) {
        app.add_message::<PromptProductPurchase>()
            .add_message::<PurchaseHistoryReady>()
            .add_message::<SalesReportReady>()
            .add_message::<RefundFinished>()
            .add_message::<CreditFinished>()
            .add_message::<CreditReversalFinished>()
            .add_systems(
                PreUpdate,
                (
                    handle_refund_answers,
                    handle_currency_answers,
                    handle_report_answers,
                    apply_service_requests,
                )
                    .chain()
                    .after(crate::players::run_wakes)
                    .in_set(crate::settings::MarketplaceSystems::Sessions),
            );
    }
}

/// Ask to show the purchase prompt of a product to a player (Roblox
/// `MarketplaceService:PromptProductPurchase`). Ignored while that player already has a prompt open.
///
/// The prompt is an [`OpenPrompt`](crate::OpenPrompt) on the player's entity until it closes;
/// [`PurchaseFailed`](crate::PurchaseFailed) says why a prompt could not open or buy (here: the
/// player cannot afford it, and nothing is charged).
///
/// ```
/// use bevy::prelude::*;
/// use bevy_marketplace::prelude::*;
/// # let catalog = Catalog::from_ron_str("(products: [(id: 123123, name: \"Full Heal\", price: 50), (id: 456456, name: \"Pouch of Gold\", price: 80)])", "products.ron").unwrap();
///
/// let mut app = App::new();
/// app.add_plugins((
///     MinimalPlugins,
///     MarketplacePlugin { starting_balance: 60, ..MarketplacePlugin::default()
///         .with_catalog(catalog)
///         .with_ledger(LedgerBackend::in_memory()) },
/// ));
/// let player = app.world_mut().spawn(Buyer::new(UserId(1))).id();
/// app.update_until("the session to open", |w| {
///     w.get::<PlayerSession>(player).is_some_and(PlayerSession::is_active)
/// });
///
/// let mut failures = app.world().resource::<Messages<PurchaseFailed>>().get_cursor();
/// app.world_mut().write_message(PromptProductPurchase { player, product_id: ProductId(456456) });
/// let mut failed = None;
/// app.update_until("the purchase to fail", |w| {
///     failed = failures.read(w.resource::<Messages<PurchaseFailed>>()).next().cloned();
///     failed.is_some()
/// });
/// assert!(matches!(failed.unwrap().error, PurchaseError::NotEnoughFunds { .. }));
/// app.settle();
/// assert_eq!(app.world().get::<PremiumBalance>(player).unwrap().0, 60, "nothing charged");
/// ```
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptProductPurchase {
    /// The buyer: an entity with [`Buyer`](crate::Buyer).
    pub player: Entity,
    /// The product.
    pub product_id: ProductId,
}

/// Asking about a product the catalog does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarketplaceError {
    /// No product has this id.
    #[error("no developer product has id {0}")]
    UnknownProduct(ProductId),
    /// A free grant (a simulated purchase) was asked for in a game that does not allow them.
    #[error(
        "simulated purchases are off: turn on MarketplacePlugin::test_purchases or MarketplacePlugin::allow_debug_grants"
    )]
    DebugGrantsDisabled,
    /// The pages ended: the last answer said `is_finished`.
    #[error("no more pages: the last page was finished")]
    PagesFinished,
}

/// The marketplace: product metadata, the paged catalog, purchase prompts and premium currency
/// (Roblox `MarketplaceService`). A resource: systems take `Res<MarketplaceService>` to read and
/// `ResMut<MarketplaceService>` to ask; what the ledger answers comes back as messages.
///
/// ```
/// use bevy::prelude::*;
/// use bevy_marketplace::prelude::*;
/// # let catalog = Catalog::from_ron_str("(products: [(id: 123123, name: \"Full Heal\", price: 50), (id: 456456, name: \"Pouch of Gold\", price: 80)])", "products.ron").unwrap();
///
/// let mut app = App::new();
/// app.add_plugins((
///     MinimalPlugins,
///     MarketplacePlugin::default().with_catalog(catalog).with_ledger(LedgerBackend::in_memory()),
/// ));
/// app.update();
/// let service = app.world().resource::<MarketplaceService>();
/// // Product info (Roblox `GetProductInfo`), O(1).
/// assert_eq!(service.get_product_info(ProductId(123123)).unwrap().price, 50);
/// assert!(service.get_product_info(ProductId(1)).is_err());
/// // The catalog in pages (Roblox `GetDeveloperProductsAsync`), for a shop window.
/// let mut pages = service.get_developer_products();
/// let mut names = Vec::new();
/// loop {
///     names.extend(pages.current_page().iter().map(|product| product.name.clone()));
///     if pages.is_finished() { break }
///     pages.advance_to_next_page().unwrap();
/// }
/// assert_eq!(names, ["Full Heal", "Pouch of Gold"]);
///
/// // In a system: a vendor NPC opens the prompt.
/// fn talk_to_vendor(player: Single<Entity, With<Buyer>>, mut service: ResMut<MarketplaceService>) {
///     service.prompt_product_purchase(*player, ProductId(123123));
/// }
/// app.add_systems(Update, talk_to_vendor);
/// ```
#[derive(Resource, Default)]
pub struct MarketplaceService {
    pub(crate) catalog: Arc<CatalogIndex>,
    pub(crate) currency: PremiumCurrency,
    pub(crate) queued_prompts: Vec<PromptProductPurchase>,
    pub(crate) requests: Vec<ServiceRequest>,
    /// Free grants (simulated purchases, the debug panel's buttons) are allowed.
    pub(crate) debug_grants: bool,
    /// A catalog has been installed (given in code, or its asset loaded).
    pub(crate) catalog_loaded: bool,
}

impl MarketplaceService {
    /// Shows the purchase prompt of `product_id` to `player` (an entity with
    /// [`Buyer`](crate::Buyer)); same as writing a [`PromptProductPurchase`] message.
    pub fn prompt_product_purchase(&mut self, player: Entity, product_id: ProductId) {
        self.queued_prompts
            .push(PromptProductPurchase { player, product_id });
    }

    /// Metadata of one product, O(1); an error for an unknown id.
    pub fn get_product_info(&self, product_id: ProductId) -> Result<ProductInfo, MarketplaceError> {
        self.catalog
            .get(product_id)
            .cloned()
            .ok_or(MarketplaceError::UnknownProduct(product_id))
    }

    /// Every product of the game, 50 a page, in catalog order. O(1): pages share the catalog.
    pub fn get_developer_products(&self) -> Pages<ProductInfo> {
        Pages::new(self.catalog.products().clone(), PAGE_SIZE)
    }

    /// Replaces the catalog (as a hot reload would). Products that did not change keep their
    /// timestamps; prompts already open keep the price they showed, and fail if it changed.
    pub fn set_catalog(&mut self, catalog: &crate::Catalog) {
        catalog_install::install_catalog(self, catalog);
    }

    /// Whether a catalog is installed: given in code, or its asset loaded. Until then every
    /// prompt fails with [`PurchaseError::CatalogNotLoaded`](crate::PurchaseError::CatalogNotLoaded).
    pub fn catalog_loaded(&self) -> bool {
        self.catalog_loaded
    }

    /// The live catalog.
    pub fn catalog(&self) -> &CatalogIndex {
        &self.catalog
    }

    /// The premium currency.
    pub fn currency(&self) -> &PremiumCurrency {
        &self.currency
    }

    /// Credits premium currency to a user (a top-up, a reward, a support grant), recorded in the
    /// ledger's balance journal with `reason`.
    pub fn grant_premium_currency(&mut self, user: UserId, amount: u64, reason: impl Into<String>) {
        self.requests.push(ServiceRequest::AdjustBalance(
            user,
            amount.min(i64::MAX as u64) as i64,
            reason.into(),
        ));
    }

    /// Credits premium currency a player bought with real money through a store, once per
    /// `(source, order_id)`: call it again with the same order (after a timeout, a crash, a
    /// webhook retry) and nothing more is credited. The answer comes as a
    /// [`CreditFinished`](CreditFinished) message: credited, already credited,
    /// or refused with a reason (a zero or too large amount, the order already credited to
    /// someone else). A player online here sees the balance change at once; one online on
    /// another server within [`MarketplacePlugin::refresh_interval`](crate::MarketplacePlugin::refresh_interval).
    pub fn credit_premium_currency(
        &mut self,
        user: UserId,
        amount: u64,
        source: impl Into<String>,
        order_id: impl Into<String>,
    ) {
        self.requests.push(ServiceRequest::Credit {
            user,
            amount,
            source: source.into(),
            order_id: order_id.into(),
        });
    }

    /// The store refunded (or charged back) a top-up: takes its currency back, never below zero.
    /// What the balance cannot cover is recorded as the player's
    /// [`shortfall`](crate::PlayerSession::shortfall), paid first by their next top-ups.
    /// Reversing an order twice changes nothing the second time. The answer comes as a
    /// [`CreditReversalFinished`](CreditReversalFinished) message.
    pub fn reverse_credit(&mut self, source: impl Into<String>, order_id: impl Into<String>) {
        self.requests.push(ServiceRequest::ReverseCredit(
            crate::ledger::ReverseCredit {
                source: source.into(),
                order_id: order_id.into(),
            },
        ));
    }

    /// Refunds a purchase of this game, exactly once: the buyer gets the premium currency back.
    /// A receipt not granted yet is never granted; a granted one's effect is taken back by the
    /// product's refund handler ([`MarketplaceAppExt::add_refund_handler`](crate::MarketplaceAppExt::add_refund_handler))
    /// on the buyer's server — now if they are online, when they join if not — and
    /// [`ReceiptRefunded`](crate::ReceiptRefunded) says when that committed. A product with no
    /// refund handler keeps its effect. The answer comes as a
    /// [`RefundFinished`](RefundFinished) message; refunding twice, an unknown
    /// id, or a receipt of another place is refused there.
    pub fn refund(&mut self, purchase_id: crate::PurchaseId, reason: impl Into<String>) {
        self.requests
            .push(ServiceRequest::Refund(purchase_id, reason.into()));
    }

    /// Asks the ledger for page `page` (from 0) of `user`'s purchase history, newest first,
    /// [`HISTORY_PAGE_SIZE`](crate::ledger::HISTORY_PAGE_SIZE) entries a page; the answer comes
    /// as a [`PurchaseHistoryReady`](PurchaseHistoryReady) message (the frame
    /// never waits). Works for players who are away too: the ledger keeps every receipt.
    pub fn request_purchase_history(
        &mut self,
        user: UserId,
        filter: crate::ledger::HistoryFilter,
        page: u32,
    ) {
        self.requests
            .push(ServiceRequest::History(crate::ledger::HistoryRequest {
                user,
                filter,
                page,
                after: None,
            }));
    }

    /// The page after `answer`, or [`MarketplaceError::PagesFinished`] when `answer` was the last.
    /// It starts from `answer`'s last purchase, so page 200 of a long history costs what page 0
    /// does.
    pub fn request_next_history_page(
        &mut self,
        answer: &PurchaseHistoryReady,
    ) -> Result<(), MarketplaceError> {
        let next = answer
            .result
            .as_ref()
            .ok()
            .and_then(|page| page.next_cursor());
        let Some(after) = next else {
            return Err(MarketplaceError::PagesFinished);
        };
        self.requests
            .push(ServiceRequest::History(crate::ledger::HistoryRequest {
                user: answer.user_id,
                filter: answer.filter.clone(),
                page: answer.page + 1,
                after: Some(after),
            }));
        Ok(())
    }

    /// Asks the ledger for sales per product per day or hour; the answer comes as a
    /// [`SalesReportReady`](SalesReportReady) message.
    /// [`sales_csv`](crate::ledger::sales_csv) writes it as CSV.
    ///
    /// The report reads every purchase in the range. On SQLite and PostgreSQL it is read on a
    /// connection of its own (as are history pages), so purchases never queue behind it.
    pub fn request_sales_report(&mut self, query: crate::ledger::SalesQuery) {
        self.requests.push(ServiceRequest::Sales(query));
    }

    /// Creates a free test receipt for `product_id` without a prompt, as if the user bought it
    /// elsewhere (Roblox Studio's simulated purchase). It is delivered through the handlers like
    /// any other receipt, flagged `is_test_purchase`.
    ///
    /// A cheat, so it is off unless [`MarketplacePlugin::test_purchases`](crate::MarketplacePlugin::test_purchases)
    /// or [`MarketplacePlugin::allow_debug_grants`](crate::MarketplacePlugin::allow_debug_grants)
    /// is on ([`MarketplaceError::DebugGrantsDisabled`]); a product the catalog does not have is
    /// [`MarketplaceError::UnknownProduct`].
    pub fn simulate_purchase(
        &mut self,
        user: UserId,
        product_id: ProductId,
    ) -> Result<(), MarketplaceError> {
        if !self.debug_grants {
            return Err(MarketplaceError::DebugGrantsDisabled);
        }
        self.get_product_info(product_id)?;
        self.requests
            .push(ServiceRequest::SimulatePurchase(user, product_id));
        Ok(())
    }

    /// `true` if free grants (simulated purchases, the debug panel's grant buttons) are allowed.
    pub fn debug_grants_allowed(&self) -> bool {
        self.debug_grants
    }

    /// Delivers every pending receipt of `player` now instead of waiting for the retry timer.
    pub fn retry_pending(&mut self, player: Entity) {
        self.requests.push(ServiceRequest::RetryNow(player));
    }
}
