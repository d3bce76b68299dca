//! Shared fixtures: the products and components of Roblox's documented samples.
#![allow(dead_code)]

pub mod child;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bevy::asset::io::memory::{Dir, MemoryAssetReader};
use bevy::asset::io::{AssetSourceBuilder, AssetSourceId};
use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_marketplace::ledger::{
    FaultPlan, FaultyStore, InMemoryLedger, LedgerBackend, LedgerError, LedgerStore,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{PurchaseId, ReceiptDeliveryFailed, ReceiptState};
use serde::{Deserialize, Serialize};

/// Roblox sample: "ProductId 123123 brings the user back to full health".
pub const FULL_HEAL: ProductId = ProductId(123123);
/// Roblox sample: "ProductId 456456 awards 100 gold to the user".
pub const GOLD_100: ProductId = ProductId(456456);
pub const GOLD_1000: ProductId = ProductId(789789);
pub const ARROWS: ProductId = ProductId(111222);
pub const DRAGON_EGG: ProductId = ProductId(333444);

#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub current: u32,
    pub max: u32,
}

#[derive(Component, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gold(pub u64);

/// Knobs to make handlers fail, and a log of what they granted.
#[derive(Resource, Clone, Default)]
pub struct HandlerLog {
    pub granted: Arc<Mutex<Vec<PurchaseId>>>,
    pub calls: Arc<Mutex<Vec<PurchaseId>>>,
}

#[derive(Resource, Default, Clone, Copy, PartialEq, Eq, Debug)]
pub enum HandlerMode {
    #[default]
    Work,
    Decline,
    Error,
    Panic,
}

pub fn catalog() -> Catalog {
    Catalog::from_ron_str(include_str!("../../assets/products.ron"), "products.ron")
        .expect("the shipped catalog is valid")
}

/// The Roblox sample handlers, translated: heal to full, +100 gold. Like the sample they report
/// success only when the player has what they act on.
pub fn add_sample_handlers(app: &mut App, log: HandlerLog) {
    let heal_log = log.clone();
    app.add_product_handler(FULL_HEAL, move |receipt, mut player| {
        heal_log
            .calls
            .lock()
            .unwrap()
            .push(receipt.purchase_id.clone());
        let mode = player.world_scope(|w| *w.resource::<HandlerMode>());
        match mode {
            HandlerMode::Work => {}
            HandlerMode::Decline => return Ok(false),
            HandlerMode::Error => return Err("the potion shelf is empty".into()),
            HandlerMode::Panic => panic!("handler bug while healing"),
        }
        let Some(mut health) = player.get_mut::<Health>() else {
            return Ok::<_, BevyError>(false);
        };
        health.current = health.max;
        heal_log
            .granted
            .lock()
            .unwrap()
            .push(receipt.purchase_id.clone());
        Ok(true)
    });
    let gold_log = log.clone();
    app.add_product_handler(GOLD_100, move |receipt, mut player| {
        gold_log
            .calls
            .lock()
            .unwrap()
            .push(receipt.purchase_id.clone());
        let mode = player.world_scope(|w| *w.resource::<HandlerMode>());
        if mode != HandlerMode::Work {
            return false;
        }
        let Some(mut gold) = player.get_mut::<Gold>() else {
            return false;
        };
        gold.0 += 100;
        gold_log
            .granted
            .lock()
            .unwrap()
            .push(receipt.purchase_id.clone());
        true
    });
    app.insert_resource(log);
}

/// Prompts `player` for `product` and settles (the confirm policy answers).
pub fn buy(app: &mut App, player: Entity, product: ProductId) {
    app.world_mut().write_message(PromptProductPurchase {
        player,
        product_id: product,
    });
    app.settle();
}

/// Moves the clock by `by` in one frame (then back to 10 ms frames) and settles.
pub fn advance(app: &mut App, by: Duration) {
    app.insert_resource(TimeUpdateStrategy::ManualDuration(by));
    app.update();
    app.insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(
        10,
    )));
    app.settle();
}

pub struct TestShop {
    pub app: App,
    pub log: HandlerLog,
    pub ledger: InMemoryLedger,
    pub faults: FaultPlan,
}

pub fn plugin(ledger: LedgerBackend) -> MarketplacePlugin {
    MarketplacePlugin {
        starting_balance: 1000,
        ..MarketplacePlugin::default()
            .with_catalog(catalog())
            .with_ledger(ledger)
    }
}

/// A ledger that cannot be opened ("disk on fire"), for the paths where storage is gone.
pub fn unopenable_ledger() -> LedgerBackend {
    LedgerBackend::custom(|| -> Result<InMemoryLedger, _> {
        Err(LedgerError::Open {
            location: "test".into(),
            reason: "disk on fire".into(),
        })
    })
}

/// A headless game with the sample handlers, `Gold` persisted, the store `open` makes behind
/// fault injection, and a clock that moves 10 ms a frame: the fixture every ledger's tests start
/// from. `configure` adjusts the plugin (a server id, a lease, a retry policy).
pub fn faulty_game<S: LedgerStore>(
    open: impl Fn() -> Result<S, LedgerError> + Send + Sync + 'static,
    configure: impl FnOnce(MarketplacePlugin) -> MarketplacePlugin,
) -> (App, HandlerLog, FaultPlan) {
    let faults = FaultPlan::default();
    let plan = faults.clone();
    let backend = LedgerBackend::custom(move || Ok(FaultyStore::new(open()?, plan.clone())));
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, configure(plugin(backend))))
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(
            10,
        )))
        .init_resource::<HandlerMode>()
        .init_resource::<Collected>()
        .add_systems(Last, collect)
        .persist_component::<Gold>();
    let log = HandlerLog::default();
    add_sample_handlers(&mut app, log.clone());
    (app, log, faults)
}

/// [`faulty_game`] on a fresh in-memory ledger.
pub fn shop_with(configure: impl FnOnce(MarketplacePlugin) -> MarketplacePlugin) -> TestShop {
    let ledger = InMemoryLedger::default();
    let store = ledger.clone();
    let (app, log, faults) = faulty_game(move || Ok(store.clone()), configure);
    TestShop {
        app,
        log,
        ledger,
        faults,
    }
}

pub fn shop() -> TestShop {
    shop_with(|p| p)
}

/// Messages seen so far.
#[derive(Resource, Default, Debug)]
pub struct Collected {
    pub finished: Vec<PromptProductPurchaseFinished>,
    pub resolved: Vec<ReceiptInfo>,
    pub failed: Vec<ReceiptDeliveryFailed>,
}

fn collect(
    mut finished: MessageReader<PromptProductPurchaseFinished>,
    mut resolved: MessageReader<ReceiptResolved>,
    mut failed: MessageReader<ReceiptDeliveryFailed>,
    mut out: ResMut<Collected>,
) {
    out.finished.extend(finished.read().copied());
    out.resolved
        .extend(resolved.read().map(|r| r.receipt.clone()));
    out.failed.extend(failed.read().cloned());
}

impl TestShop {
    /// Spawns a player (Health 30/100, Gold 0) and waits for their session to load.
    pub fn join(&mut self, user: i64) -> Entity {
        let e = self
            .app
            .world_mut()
            .spawn((
                Player::new(UserId(user)),
                Health {
                    current: 30,
                    max: 100,
                },
                Gold(0),
            ))
            .id();
        self.app.settle();
        e
    }

    pub fn buy(&mut self, player: Entity, product: ProductId) {
        buy(&mut self.app, player, product);
    }

    pub fn world(&self) -> &World {
        self.app.world()
    }

    pub fn collected(&self) -> &Collected {
        self.app.world().resource::<Collected>()
    }

    pub fn balance(&self, player: Entity) -> u64 {
        self.world().get::<PremiumBalance>(player).unwrap().0
    }

    pub fn gold(&self, player: Entity) -> u64 {
        self.world().get::<Gold>(player).unwrap().0
    }

    pub fn health(&self, player: Entity) -> u32 {
        self.world().get::<Health>(player).unwrap().current
    }

    pub fn receipts_in(&self, state: ReceiptState) -> usize {
        self.ledger.audit().count(state)
    }

    pub fn set_mode(&mut self, mode: HandlerMode) {
        self.app.insert_resource(mode);
    }

    /// Moves the clock by `by` in one frame, then settles.
    pub fn advance(&mut self, by: Duration) {
        advance(&mut self.app, by);
    }

    pub fn granted_count(&self) -> usize {
        self.log.granted.lock().unwrap().len()
    }

    pub fn calls_for(&self, id: &PurchaseId) -> usize {
        self.log
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == id)
            .count()
    }
}

/// An app whose default asset source is the in-memory `dir`, with the marketplace loading its
/// catalog from there (file watching off) and an in-memory ledger.
pub fn asset_app(dir: &Dir) -> App {
    let mut app = App::new();
    let d = dir.clone();
    app.register_asset_source(
        AssetSourceId::Default,
        AssetSourceBuilder::new(move || Box::new(MemoryAssetReader { root: d.clone() })),
    )
    .add_plugins((
        MinimalPlugins,
        AssetPlugin {
            watch_for_changes_override: Some(false),
            ..Default::default()
        },
        MarketplacePlugin::default().with_ledger(LedgerBackend::in_memory()),
    ));
    app
}
