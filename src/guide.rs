//! A guide for a newcomer: a game with purchases, step by step, in the order one builds it.
//! Every example here runs as a test.
//!
//! # 1. Add the dependency
//!
//! ```toml
//! [dependencies]
//! bevy = "0.19"
//! bevy_marketplace = "0.1"                         # the SQLite ledger is on by default
//! serde = { version = "1", features = ["derive"] } # persisted components are serde types
//! ```
//!
//! With `default-features = false` keep `features = ["sqlite"]`: without it the ledger is in
//! memory and every purchase is lost when the game stops (the plugin warns at start).
//!
//! # 2. Describe the products
//!
//! A RON catalog, usually the asset `assets/products.ron` (the plugin's default, hot-reloaded
//! with Bevy's `file_watcher`), or given in code:
//!
//! ```
//! use bevy_marketplace::prelude::*;
//!
//! let catalog = Catalog::from_ron_str(
//!     r#"(products: [
//!         (id: 123123, name: "Full Heal", price: 50, description: "Restores your health."),
//!         (id: 456456, name: "Pouch of Gold", price: 80),
//!     ])"#,
//!     "products.ron",
//! )
//! .unwrap();
//! assert_eq!(catalog.products().len(), 2);
//! // A broken catalog names the product and where it is.
//! let broken = Catalog::from_ron_str("(products: [(id: 1, name: \"\", price: 5)])", "shop.ron");
//! assert!(broken.unwrap_err().to_string().contains("shop.ron"));
//! ```
//!
//! # 3. Add the plugin, and give players currency
//!
//! A player is an entity with [`Player`](crate::Player). Its premium balance is kept in the
//! ledger and shown in [`PremiumBalance`](crate::PremiumBalance); a new user starts with
//! [`MarketplacePlugin::starting_balance`](crate::MarketplacePlugin::starting_balance) (0 by
//! default: a game gives currency, for example from a store with
//! [`MarketplaceService::credit_premium_currency`](crate::MarketplaceService::credit_premium_currency)).
//! A windowed game uses `DefaultPlugins`; a headless one needs `MinimalPlugins` (and
//! `AssetPlugin` when the catalog is an asset; `LogPlugin` to see warnings).
//!
//! ```
//! use bevy::prelude::*;
//! use bevy_marketplace::prelude::*;
//! use bevy_marketplace::testing::MarketplaceTestExt;
//! # let catalog = Catalog::from_ron_str("(products: [(id: 456456, name: \"Pouch of Gold\", price: 80)])", "products.ron").unwrap();
//!
//! let mut app = App::new();
//! app.add_plugins((
//!     MinimalPlugins,
//!     MarketplacePlugin {
//!         starting_balance: 1_000,
//!         ..MarketplacePlugin::default()
//!             .with_catalog(catalog)
//!             .with_ledger(LedgerBackend::in_memory())
//!     },
//! ));
//! let player = app.world_mut().spawn(Player::new(UserId(1))).id();
//! // The player's session opens on the ledger's worker thread, off the main thread.
//! app.update_until("the session to open", |w| {
//!     w.get::<PlayerSession>(player).is_some_and(PlayerSession::is_active)
//! });
//! assert_eq!(app.world().get::<PremiumBalance>(player).unwrap().0, 1_000);
//! assert!(app.world().resource::<MarketplaceService>().catalog_loaded());
//! ```
//!
//! # 4. Handle purchases, and prompt one
//!
//! A handler is keyed by product id and acts on the buyer's entity; it returns `true` once the
//! product is granted. Components registered with
//! [`persist_component`](crate::MarketplaceAppExt::persist_component) are saved in the ledger
//! in the same transaction as the grant, so a grant is never lost or doubled.
//! [`PromptProductPurchase`](crate::PromptProductPurchase) opens the purchase prompt; without a
//! UI, [`ConfirmPolicy`](crate::ConfirmPolicy) answers it (`AutoConfirm` by default).
//!
//! ```
//! use bevy::prelude::*;
//! use bevy_marketplace::prelude::*;
//! use bevy_marketplace::testing::MarketplaceTestExt;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Component, Default, Serialize, Deserialize)]
//! struct Gold(u64);
//! # let catalog = Catalog::from_ron_str("(products: [(id: 456456, name: \"Pouch of Gold\", price: 80)])", "products.ron").unwrap();
//!
//! let mut app = App::new();
//! app.add_plugins((
//!     MinimalPlugins,
//!     MarketplacePlugin {
//!         starting_balance: 1_000,
//!         ..MarketplacePlugin::default()
//!             .with_catalog(catalog)
//!             .with_ledger(LedgerBackend::in_memory())
//!     },
//! ))
//! .persist_component::<Gold>()
//! .add_product_handler(ProductId(456456), |_receipt, mut player| {
//!     player.get_mut::<Gold>().map(|mut gold| gold.0 += 100).is_some()
//! });
//! let player = app.world_mut().spawn((Player::new(UserId(1)), Gold(0))).id();
//! app.update_until("the session to open", |w| {
//!     w.get::<PlayerSession>(player).is_some_and(PlayerSession::is_active)
//! });
//!
//! // A button, a vendor NPC: anywhere in the game.
//! app.world_mut().write_message(PromptProductPurchase { player, product_id: ProductId(456456) });
//! app.settle();
//! assert_eq!(app.world().get::<Gold>(player).unwrap().0, 100);
//! assert_eq!(app.world().get::<PremiumBalance>(player).unwrap().0, 920);
//! ```
//!
//! [`ReceiptResolved`](crate::ReceiptResolved) says a grant is committed;
//! [`PromptProductPurchaseFinished`](crate::PromptProductPurchaseFinished) only says the prompt
//! closed. A prompt fails without charging when the product is unknown, not for sale or too
//! dear, and with [`PurchaseError::CatalogNotLoaded`](crate::PurchaseError::CatalogNotLoaded) or
//! [`PurchaseError::ProfileNotReady`](crate::PurchaseError::ProfileNotReady) while the catalog or
//! the player's session is still loading.
//!
//! # 5. Show the prompt
//!
//! With the `egui` feature, [`MarketplaceUiPlugin`](crate::ui::MarketplaceUiPlugin) draws it
//! (it needs `EguiPlugin` and a camera, and says so when they are missing):
//!
//! ```toml
//! bevy_marketplace = { version = "0.1", features = ["egui"] }
//! bevy_egui = "0.42"
//! ```
//!
//! ```ignore
//! App::new()
//!     .add_plugins((DefaultPlugins, EguiPlugin::default(), MarketplacePlugin::default()))
//!     .add_plugins((MarketplaceUiPlugin, MarketplaceDebugPanelPlugin))
//!     .add_systems(Startup, |mut commands: Commands| {
//!         commands.spawn(Camera2d);
//!         commands.spawn((Player::new(UserId(1)), LocalPlayer));
//!     })
//!     .run();
//! ```
//!
//! # 6. Persist across restarts
//!
//! The default ledger is the SQLite file `marketplace.sqlite3` in the working directory (put
//! `marketplace.sqlite3*` in `.gitignore`). On [`AppExit`](bevy::app::AppExit) every player is
//! saved; the next start finds their Gold and balance where they were.
//!
//! ```
//! # #[cfg(feature = "sqlite")] {
//! use bevy::prelude::*;
//! use bevy_marketplace::prelude::*;
//! use bevy_marketplace::testing::MarketplaceTestExt;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Component, Default, Serialize, Deserialize)]
//! struct Gold(u64);
//!
//! fn game(ledger: &std::path::Path) -> App {
//!     # let catalog = Catalog::from_ron_str("(products: [(id: 456456, name: \"Pouch of Gold\", price: 80)])", "products.ron").unwrap();
//!     let mut app = App::new();
//!     app.add_plugins((
//!         MinimalPlugins,
//!         MarketplacePlugin {
//!             starting_balance: 1_000,
//!             ..MarketplacePlugin::default()
//!                 .with_catalog(catalog)
//!                 .with_ledger(LedgerBackend::sqlite(ledger))
//!         },
//!     ))
//!     .persist_component::<Gold>()
//!     .add_product_handler(ProductId(456456), |_receipt, mut player| {
//!         player.get_mut::<Gold>().map(|mut gold| gold.0 += 100).is_some()
//!     });
//!     app
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let ledger = dir.path().join("marketplace.sqlite3");
//! let mut first = game(&ledger);
//! let player = first.world_mut().spawn((Player::new(UserId(7)), Gold(0))).id();
//! first.update_until("the session to open", |w| {
//!     w.get::<PlayerSession>(player).is_some_and(PlayerSession::is_active)
//! });
//! first.world_mut().write_message(PromptProductPurchase { player, product_id: ProductId(456456) });
//! first.settle();
//! first.world_mut().write_message(AppExit::Success); // saves everyone before the app ends
//! first.update();
//! drop(first);
//!
//! let mut second = game(&ledger);
//! let player = second.world_mut().spawn((Player::new(UserId(7)), Gold(0))).id();
//! second.update_until("the session to open", |w| {
//!     w.get::<PlayerSession>(player).is_some_and(PlayerSession::is_active)
//! });
//! assert_eq!(second.world().get::<Gold>(player).unwrap().0, 100, "Gold kept");
//! assert_eq!(second.world().get::<PremiumBalance>(player).unwrap().0, 920, "balance kept");
//! # }
//! ```
//!
//! Many servers share one PostgreSQL ledger instead (feature `postgres`, see the README).
//!
//! # 7. Test
//!
//! [`LedgerBackend::in_memory`](crate::ledger::LedgerBackend::in_memory) keeps tests off the
//! disk, [`MarketplaceTestExt`](crate::testing::MarketplaceTestExt) runs an app until the
//! ledger is idle (as above), `test_purchases` makes purchases free and marks their receipts,
//! and with the `testing` feature `ledger::FaultyStore` fails, delays or disconnects the ledger
//! on command.
