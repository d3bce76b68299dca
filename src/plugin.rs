//! `MarketplacePlugin`: its configuration, wiring every stage into the app.

use std::time::Duration;

use bevy::asset::AssetApp;
use bevy::prelude::*;

use crate::catalog::{Catalog, CatalogLoader, CatalogStatus, start_catalog_load};
use crate::currency::PremiumCurrency;
use crate::ids::PlaceId;
use crate::ledger::{Ledger, LedgerBackend, ServerId};
use crate::players::{
    DeliveryQueue, LedgerInbox, PersistRegistry, PlayerSaveFailed, Sessions, flush_ledger,
    handle_session_replies, on_player_added, on_player_removed, receive_ledger, run_wakes,
    save_players, watch_ledger_status,
};
use crate::purchase::{
    ConfirmPolicy, PromptAnswer, PromptProductPurchaseFinished, PurchaseFailed, answer_prompts,
    close_prompt_of_leaving_buyer, handle_charge_replies, open_prompts,
};
use crate::receipt::ReceiptResolved;
use crate::receipts::{ReceiptDeliveryFailed, ReceiptHandlers, deliver_receipts};
use crate::retry::RetryPolicy;
use crate::service::{
    MarketplaceService, PromptProductPurchase, apply_catalog_events, apply_service_requests,
    install_catalog,
};
use crate::settings::{FrameDeadline, MarketplaceSettings, MarketplaceStats, MarketplaceSystems};
use crate::wake::WakeSchedule;

/// Where the catalog comes from.
#[derive(Clone, Debug)]
pub enum CatalogSource {
    /// A RON asset, loaded (and hot-reloaded when bevy's `file_watcher` feature is on) through the
    /// `AssetServer`. Needs `AssetPlugin` added before the marketplace plugin.
    Asset(String),
    /// A catalog built in code.
    Inline(Catalog),
}

/// Adds developer products to an app.
///
/// ```no_run
/// use bevy::prelude::*;
/// use bevy_marketplace::prelude::*;
///
/// App::new()
///     .add_plugins((MinimalPlugins, AssetPlugin::default(), MarketplacePlugin::default()))
///     .run();
/// ```
#[derive(Clone, Debug)]
pub struct MarketplacePlugin {
    /// The catalog. Default: the asset `products.ron`.
    pub catalog: CatalogSource,
    /// The ledger. Default: SQLite at `marketplace.sqlite3` (in memory without the `sqlite` feature).
    pub ledger: LedgerBackend,
    /// The premium currency's name and symbol. Default: "Gems", "◆".
    pub currency: PremiumCurrency,
    /// Recorded on receipts as the place of purchase. Default: 0.
    pub place_id: PlaceId,
    /// Names this server in session leases. Default: random.
    pub server_id: Option<ServerId>,
    /// Timed redelivery and save retries. Default: 1 s doubling to 60 s.
    pub retry: RetryPolicy,
    /// Who answers prompts when no UI does. Default: [`ConfirmPolicy::AutoConfirm`].
    pub confirm: ConfirmPolicy,
    /// Test purchases: free, flagged on receipts, still delivered through handlers. Default: off.
    /// Also allows the free grants of [`allow_debug_grants`](Self::allow_debug_grants).
    pub test_purchases: bool,
    /// Allows free grants without test purchases: [`MarketplaceService::simulate_purchase`] and
    /// the debug panel's grant and simulate buttons. A cheat for development builds; a shipped
    /// game leaves it off. Default: off.
    pub allow_debug_grants: bool,
    /// Premium balance of a user the ledger has never seen. Default: 0.
    pub starting_balance: u64,
    /// How often each player's persisted components are saved. Default: 30 s.
    pub autosave_interval: Duration,
    /// How long a session lease lasts without a save renewing it. Default: 5 min.
    pub lease_duration: Duration,
    /// Most ledger requests committed in one transaction (group commit). Default: 8192;
    /// 1 commits every request on its own (one fsync each), for comparison.
    pub max_batch: usize,
    /// Main-thread time the plugin's systems may spend, together, working off backlogs (ledger
    /// answers, deliveries, saves) in one frame; a burst beyond it continues next frame. Each
    /// backlog still moves by at least one item a frame, so none starves. Default: 500 µs.
    pub frame_budget: Duration,
    /// On `AppExit`, the longest the game waits for the ledger to commit every player's final
    /// save and lease release before the process ends. Default: 5 s.
    pub exit_timeout: Duration,
    /// How often the ledger is asked again about each player online here, so that what changed
    /// elsewhere reaches them without a rejoin: refunds and top-ups made by the `marketplace`
    /// tool or another server, purchases made outside the game. Default: 2 s.
    pub refresh_interval: Duration,
}

impl Default for MarketplacePlugin {
    fn default() -> Self {
        Self {
            catalog: CatalogSource::Asset("products.ron".into()),
            ledger: LedgerBackend::default(),
            currency: PremiumCurrency::default(),
            place_id: PlaceId::default(),
            server_id: None,
            retry: RetryPolicy::default(),
            confirm: ConfirmPolicy::default(),
            test_purchases: false,
            allow_debug_grants: false,
            starting_balance: 0,
            autosave_interval: Duration::from_secs(30),
            lease_duration: Duration::from_secs(300),
            max_batch: crate::ledger::DEFAULT_MAX_BATCH,
            frame_budget: Duration::from_micros(500),
            exit_timeout: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(2),
        }
    }
}

impl MarketplacePlugin {
    /// Uses a catalog built in code.
    pub fn with_catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = CatalogSource::Inline(catalog);
        self
    }

    /// Loads the catalog from this asset path.
    pub fn with_catalog_asset(mut self, path: impl Into<String>) -> Self {
        self.catalog = CatalogSource::Asset(path.into());
        self
    }

    /// Uses this ledger.
    pub fn with_ledger(mut self, ledger: LedgerBackend) -> Self {
        self.ledger = ledger;
        self
    }

    /// Uses this confirm policy.
    pub fn with_confirm_policy(mut self, confirm: ConfirmPolicy) -> Self {
        self.confirm = confirm;
        self
    }

    /// Uses this currency.
    pub fn with_currency(mut self, currency: PremiumCurrency) -> Self {
        self.currency = currency;
        self
    }
}

impl Plugin for MarketplacePlugin {
    fn build(&self, app: &mut App) {
        let mut service = MarketplaceService {
            currency: self.currency.clone(),
            debug_grants: self.test_purchases || self.allow_debug_grants,
            ..Default::default()
        };
        let mut status = CatalogStatus::default();
        match &self.catalog {
            CatalogSource::Inline(catalog) => {
                install_catalog(&mut service, catalog);
                status.installed = 1;
            }
            CatalogSource::Asset(path) => {
                if app.is_plugin_added::<AssetPlugin>() {
                    app.init_asset::<Catalog>()
                        .init_asset_loader::<CatalogLoader>()
                        .add_systems(Startup, start_catalog_load(path.clone()))
                        .add_systems(
                            PreUpdate,
                            apply_catalog_events.in_set(MarketplaceSystems::Receive),
                        );
                } else {
                    let message = format!(
                        "MarketplacePlugin: the catalog is the asset {path:?} but AssetPlugin is not added (add it before MarketplacePlugin, or use MarketplacePlugin::with_catalog); the catalog is empty"
                    );
                    tracing::error!("{message}");
                    status.last_error = Some(message);
                }
            }
        }
        let settings = MarketplaceSettings {
            place_id: self.place_id,
            server_id: self.server_id.clone().unwrap_or_else(ServerId::random),
            retry: self.retry,
            test_purchases: self.test_purchases,
            starting_balance: self.starting_balance,
            autosave_interval: self.autosave_interval,
            lease_duration: self.lease_duration,
            frame_budget: self.frame_budget,
            exit_timeout: self.exit_timeout,
            refresh_interval: self.refresh_interval,
        };
        let ledger = Ledger::spawn_with_batch_limit(
            self.ledger.factory(&settings.server_id),
            self.ledger.reader_factory(),
            self.max_batch,
        );
        if !app.world().contains_resource::<Time<Real>>() {
            app.init_resource::<Time<Real>>();
        }
        app.insert_resource(service)
            .insert_resource(status)
            .insert_resource(settings)
            .insert_resource(self.confirm.clone())
            .insert_resource(ledger)
            .init_resource::<ReceiptHandlers>()
            .init_resource::<crate::receipts::RefundHandlers>()
            .init_resource::<PersistRegistry>()
            .init_resource::<Sessions>()
            .init_resource::<LedgerInbox>()
            .init_resource::<FrameDeadline>()
            .init_resource::<DeliveryQueue>()
            .init_resource::<WakeSchedule>()
            .init_resource::<MarketplaceStats>()
            .add_message::<PromptProductPurchase>()
            .add_message::<crate::ledger::PurchaseHistoryReady>()
            .add_message::<crate::ledger::SalesReportReady>()
            .add_message::<PromptProductPurchaseFinished>()
            .add_message::<PromptAnswer>()
            .add_message::<PurchaseFailed>()
            .add_message::<crate::purchase::TopUpRequested>()
            .add_message::<ReceiptResolved>()
            .add_message::<crate::ledger::ReceiptRefunded>()
            .add_message::<crate::ledger::RefundFinished>()
            .add_message::<crate::ledger::CreditFinished>()
            .add_message::<crate::ledger::CreditReversalFinished>()
            .add_message::<crate::receipts::ClawbackFailed>()
            .add_message::<ReceiptDeliveryFailed>()
            .add_message::<PlayerSaveFailed>()
            .add_observer(on_player_added)
            .add_observer(on_player_removed)
            .add_observer(close_prompt_of_leaving_buyer)
            .configure_sets(
                PreUpdate,
                (
                    MarketplaceSystems::Receive,
                    MarketplaceSystems::Sessions,
                    MarketplaceSystems::Prompts,
                    MarketplaceSystems::Deliver,
                    MarketplaceSystems::Persist,
                    MarketplaceSystems::Send,
                )
                    .chain(),
            )
            .add_systems(
                PreUpdate,
                (
                    receive_ledger.in_set(MarketplaceSystems::Receive),
                    (
                        watch_ledger_status,
                        handle_session_replies,
                        run_wakes,
                        apply_service_requests,
                    )
                        .chain()
                        .in_set(MarketplaceSystems::Sessions),
                    (handle_charge_replies, open_prompts, answer_prompts)
                        .chain()
                        .in_set(MarketplaceSystems::Prompts),
                    deliver_receipts.in_set(MarketplaceSystems::Deliver),
                    save_players.in_set(MarketplaceSystems::Persist),
                    flush_ledger.in_set(MarketplaceSystems::Send),
                ),
            );
        crate::shutdown::install(app);
    }
}
