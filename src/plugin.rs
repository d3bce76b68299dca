//! `MarketplacePlugin`: its configuration, wiring every stage into the app.

use std::time::Duration;

use bevy::asset::AssetApp;
use bevy::prelude::*;

use crate::catalog::{Catalog, CatalogLoader, CatalogStatus, start_catalog_load};
use crate::currency::PremiumCurrency;
use crate::ids::PlaceId;
use crate::ledger::{LedgerBackend, ServerId};
use crate::link::{Ledger, LinkPlugin};
use crate::players::PlayersPlugin;
use crate::purchase::{ConfirmPolicy, PurchasePlugin};
use crate::receipts::ReceiptsPlugin;
use crate::retry::RetryPolicy;
use crate::service::{MarketplaceService, ServicePlugin, apply_catalog_events, install_catalog};
use crate::settings::{MarketplaceSettings, MarketplaceStats, MarketplaceSystems};

/// Where the catalog comes from.
#[derive(Clone, Debug)]
pub enum CatalogSource {
    /// A RON asset, loaded (and hot-reloaded when bevy's `file_watcher` feature is on) through the
    /// `AssetServer`. Needs `AssetPlugin` (added in any order).
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
    /// How often each player's persisted components are looked at and saved if they changed
    /// (grants are saved at once, whatever this is). A player with nothing new is saved only by
    /// the last autosave before half their [`lease_duration`](Self::lease_duration) would pass
    /// since their last save, which renews their lease. A player's first autosave comes between
    /// half an interval and a whole one after they join (spread by user id), so players who join
    /// together are not all saved in one frame.
    /// Default: 30 s; at least [`MIN_AUTOSAVE_INTERVAL`](Self::MIN_AUTOSAVE_INTERVAL) (a shorter
    /// one is raised to it, with a warning).
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
    /// How often the ledger is asked what changed for players online here, so that what changed
    /// elsewhere reaches them without a rejoin: refunds and top-ups made by the `marketplace`
    /// tool or another server, purchases made outside the game. One read of the ledger's change
    /// feed per interval, however many players are online, then a read of each player it names.
    /// On PostgreSQL the database also notifies the game of each change, so it arrives at once
    /// and this interval is the fallback. Default: 2 s; at least
    /// [`MIN_REFRESH_INTERVAL`](Self::MIN_REFRESH_INTERVAL) (a shorter one is raised to it, with a warning).
    pub refresh_interval: Duration,
}

/// `value`, raised to `min` with a warning naming the setting when it is shorter.
fn at_least(setting: &str, value: Duration, min: Duration) -> Duration {
    if value < min {
        tracing::warn!(
            "MarketplacePlugin::{setting} is {value:?}, shorter than the shortest that works ({min:?}); using {min:?}"
        );
        min
    } else {
        value
    }
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
    /// The shortest [`autosave_interval`](Self::autosave_interval) (about a frame): a timer that
    /// fires again at once would never let the frame end.
    pub const MIN_AUTOSAVE_INTERVAL: Duration = Duration::from_millis(10);

    /// The shortest [`refresh_interval`](Self::refresh_interval) (about a frame), for the same
    /// reason.
    pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(10);

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
                    load_catalog_asset(app, path);
                } else {
                    // `finish` loads it if AssetPlugin is added after this plugin; this says why
                    // nothing loads otherwise.
                    app.add_systems(Startup, catalog_asset_unloadable(path.clone()));
                }
            }
        }
        let settings = MarketplaceSettings {
            place_id: self.place_id,
            server_id: self.server_id.clone().unwrap_or_else(ServerId::random),
            retry: self.retry,
            test_purchases: self.test_purchases,
            starting_balance: self.starting_balance,
            autosave_interval: at_least(
                "autosave_interval",
                self.autosave_interval,
                Self::MIN_AUTOSAVE_INTERVAL,
            ),
            lease_duration: self.lease_duration,
            frame_budget: self.frame_budget,
            exit_timeout: self.exit_timeout,
            refresh_interval: at_least(
                "refresh_interval",
                self.refresh_interval,
                Self::MIN_REFRESH_INTERVAL,
            ),
        };
        if let Some(warning) = memory_fallback_warning(&self.ledger, cfg!(feature = "sqlite")) {
            tracing::warn!("{warning}");
        }
        let ledger = Ledger::spawn(
            self.ledger.factory(&settings.server_id),
            self.ledger.reader_factory(),
            self.max_batch,
        )
        .with_change_notices(self.ledger.change_notices());
        if !app.world().contains_resource::<Time<Real>>() {
            app.init_resource::<Time<Real>>();
        }
        app.insert_resource(service)
            .insert_resource(status)
            .insert_resource(settings)
            .insert_resource(self.confirm.clone())
            .insert_resource(ledger)
            .init_resource::<MarketplaceStats>()
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
            // One plugin per stage, in the order a purchase meets them (see `MarketplaceSystems`).
            .add_plugins((
                LinkPlugin,
                PlayersPlugin,
                ServicePlugin,
                PurchasePlugin,
                ReceiptsPlugin,
            ));
        crate::shutdown::install(app);
    }

    fn finish(&self, app: &mut App) {
        if let CatalogSource::Asset(path) = &self.catalog
            && !app.world().contains_resource::<Assets<Catalog>>()
            && app.is_plugin_added::<AssetPlugin>()
        {
            // AssetPlugin was added after this plugin.
            load_catalog_asset(app, path);
        }
    }
}

fn load_catalog_asset(app: &mut App, path: &str) {
    app.init_asset::<Catalog>()
        .init_asset_loader::<CatalogLoader>()
        .add_systems(Startup, start_catalog_load(path.to_owned()))
        .add_systems(
            PreUpdate,
            apply_catalog_events.in_set(MarketplaceSystems::Receive),
        );
}

/// At startup, reports a catalog asset nothing will load.
fn catalog_asset_unloadable(path: String) -> impl FnMut(&mut World) {
    move |world| {
        if world.contains_resource::<Assets<Catalog>>() {
            return;
        }
        let message = format!(
            "MarketplacePlugin: the catalog is the asset {path:?} but AssetPlugin is not added (DefaultPlugins include it; or give the catalog in code with MarketplacePlugin::with_catalog), or it was added after MarketplacePlugin and App::finish has not run (App::run runs it; a test that calls app.update() calls app.finish() first); the catalog is empty"
        );
        tracing::error!("{message}");
        world.resource_mut::<CatalogStatus>().last_error = Some(message);
    }
}

/// What to warn about when the ledger is in memory because the crate was built without a durable
/// store (`default-features = false` drops `sqlite`): every purchase and saved component would be
/// lost when the game stops, with nothing else to say so.
fn memory_fallback_warning(ledger: &LedgerBackend, sqlite_built: bool) -> Option<&'static str> {
    (!sqlite_built && matches!(ledger, LedgerBackend::InMemory(_))).then_some(
        "MarketplacePlugin: the ledger is in memory, so every purchase, balance and saved component is lost when the game stops: bevy_marketplace was built without its `sqlite` feature (`default-features = false` turns it off). Add `features = [\"sqlite\"]` to the dependency for the default file ledger, or choose LedgerBackend::postgres; if in memory is what you want, this warning is only for builds without `sqlite`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_memory_ledger_is_warned_of_only_when_it_is_the_fallback_of_a_build_without_sqlite() {
        let warning = memory_fallback_warning(&LedgerBackend::in_memory(), false).unwrap();
        assert!(warning.contains("features = [\"sqlite\"]"), "{warning}");
        assert!(memory_fallback_warning(&LedgerBackend::in_memory(), true).is_none());
        let custom = LedgerBackend::custom(|| Ok(crate::ledger::InMemoryLedger::default()));
        assert!(memory_fallback_warning(&custom, false).is_none());
    }
}
