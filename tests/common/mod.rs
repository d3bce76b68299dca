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
    FaultPlan, FaultyStore, InMemoryLedger, LedgerAudit, LedgerBackend, LedgerError, LedgerStore,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{
    PlayerSession, PurchaseId, ReceiptDeliveryFailed, ReceiptState, SessionPhase,
};
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

impl HandlerLog {
    /// Notes that a handler ran on `receipt`.
    pub fn called(&self, receipt: &ReceiptInfo) {
        self.calls.lock().unwrap().push(receipt.purchase_id.clone());
    }

    /// Notes that a handler granted `receipt`.
    pub fn grant(&self, receipt: &ReceiptInfo) {
        self.granted
            .lock()
            .unwrap()
            .push(receipt.purchase_id.clone());
    }
}

#[derive(Resource, Default, Clone, Copy, PartialEq, Eq, Debug)]
pub enum HandlerMode {
    #[default]
    Work,
    Decline,
    Error,
    Panic,
    /// Reject and refund ("sold out"), after changing the buyer's components (to be undone).
    Reject,
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
        heal_log.called(receipt);
        let mode = player.world_scope(|w| *w.resource::<HandlerMode>());
        match mode {
            HandlerMode::Work => {}
            HandlerMode::Decline => return Ok(ProductPurchaseDecision::NotProcessedYet),
            HandlerMode::Error => return Err("the potion shelf is empty".into()),
            HandlerMode::Panic => panic!("handler bug while healing"),
            HandlerMode::Reject => {
                if let Some(mut health) = player.get_mut::<Health>() {
                    health.current = health.max;
                }
                return Ok(ProductPurchaseDecision::rejected("sold out"));
            }
        }
        let Some(mut health) = player.get_mut::<Health>() else {
            return Ok::<_, BevyError>(ProductPurchaseDecision::NotProcessedYet);
        };
        health.current = health.max;
        heal_log.grant(receipt);
        Ok(ProductPurchaseDecision::PurchaseGranted)
    });
    let gold_log = log.clone();
    app.add_product_handler(GOLD_100, move |receipt, mut player| {
        gold_log.called(receipt);
        let mode = player.world_scope(|w| *w.resource::<HandlerMode>());
        if !matches!(mode, HandlerMode::Work | HandlerMode::Reject) {
            return ProductPurchaseDecision::NotProcessedYet;
        }
        let Some(mut gold) = player.get_mut::<Gold>() else {
            return ProductPurchaseDecision::NotProcessedYet;
        };
        gold.0 += 100;
        if mode == HandlerMode::Reject {
            // The Gold added above must not stay: a rejection undoes the handler's changes.
            return ProductPurchaseDecision::rejected("sold out");
        }
        gold_log.grant(receipt);
        ProductPurchaseDecision::PurchaseGranted
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

/// A game server on a shared ledger (SQLite file or PostgreSQL), for stories with several servers.
pub struct GameServer {
    pub app: App,
    pub log: HandlerLog,
    pub faults: FaultPlan,
}

impl GameServer {
    /// [`faulty_game`] named `server` on the store `open` makes, autosave off.
    pub fn new<S: LedgerStore>(
        open: impl Fn() -> Result<S, LedgerError> + Send + Sync + 'static,
        server: &str,
        configure: impl FnOnce(MarketplacePlugin) -> MarketplacePlugin,
    ) -> Self {
        let id = bevy_marketplace::ledger::ServerId::new(server).unwrap();
        let (app, log, faults) = faulty_game(open, |p| {
            configure(MarketplacePlugin {
                server_id: Some(id),
                autosave_interval: Duration::from_secs(3600),
                ..p
            })
        });
        Self { app, log, faults }
    }

    /// Spawns the buyer (Health 5/100, Gold 0) without waiting.
    pub fn spawn(&mut self, user: i64) -> Entity {
        spawn_buyer(&mut self.app, user, 5)
    }

    /// Spawns the buyer and waits until their session is no longer loading.
    pub fn join(&mut self, user: i64) -> Entity {
        let e = self.spawn(user);
        self.app.update_until("the session to load", |w| {
            w.get::<PlayerSession>(e)
                .is_some_and(|s| *s.phase() != SessionPhase::Loading)
        });
        e
    }

    pub fn phase(&self, e: Entity) -> SessionPhase {
        self.app
            .world()
            .get::<PlayerSession>(e)
            .unwrap()
            .phase()
            .clone()
    }

    pub fn buy(&mut self, player: Entity, product: ProductId) {
        buy(&mut self.app, player, product);
    }

    pub fn gold(&self, e: Entity) -> u64 {
        self.app.world().get::<Gold>(e).unwrap().0
    }

    /// Receipts granted in memory for `e` whose commit has not been confirmed.
    pub fn uncommitted(&self, e: Entity) -> usize {
        self.app
            .world()
            .get::<PlayerSession>(e)
            .unwrap()
            .uncommitted_grants()
            .len()
    }

    /// Credits `amount` to `user` before they ever joined, then joins them: their balance is
    /// the starting balance (1000) plus the top-up.
    pub fn top_up_then_join(&mut self, user: i64, amount: u64) -> Entity {
        self.app
            .world_mut()
            .resource_mut::<bevy_marketplace::MarketplaceService>()
            .grant_premium_currency(UserId(user), amount, "gift card");
        self.app.settle();
        let p = self.join(user);
        assert_eq!(
            self.app.world().get::<PremiumBalance>(p).unwrap().0,
            1000 + amount,
            "the starting balance plus the top-up"
        );
        p
    }

    pub fn advance(&mut self, by: Duration) {
        advance(&mut self.app, by);
    }
}

/// Server A holds a player with Gold; server B's join waits while A's lease lives, and gets the
/// player with A's Gold once A lets them go.
pub fn a_lease_is_handed_over_when_its_holder_lets_go(a: &mut GameServer, b: &mut GameServer) {
    let pa = a.join(1);
    a.buy(pa, GOLD_100);
    let pb = b.spawn(1);
    for _ in 0..20 {
        b.app.update();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        b.phase(pb),
        SessionPhase::Loading,
        "server A holds the lease"
    );
    a.app.world_mut().entity_mut(pa).despawn();
    a.app.settle();
    b.advance(Duration::from_secs(2));
    b.app.update_until("server B to get the session", |w| {
        w.get::<PlayerSession>(pb)
            .is_some_and(PlayerSession::is_active)
    });
    assert_eq!(b.gold(pb), 100, "with the Gold server A saved");
}

/// A grant whose commits fail three times stays pending in the ledger (granted in memory), is
/// committed by a later save, and its handler never runs again. `audit` reads the ledger.
pub fn a_failing_grant_commit_is_retried_without_rerunning_the_handler(
    shop: &mut GameServer,
    audit: impl Fn() -> LedgerAudit,
) {
    let p = shop.join(3);
    shop.app.insert_resource(HandlerMode::Decline);
    shop.buy(p, GOLD_100);
    assert_eq!(audit().count(ReceiptState::Pending), 1);
    // The next grant's commits fail three times.
    shop.faults.fail_next_commits(3);
    shop.app.insert_resource(HandlerMode::Work);
    shop.advance(Duration::from_secs(2));
    assert_eq!(shop.gold(p), 100, "granted in memory");
    assert_eq!(
        audit().count(ReceiptState::Pending),
        1,
        "not reported granted before it commits"
    );
    assert_eq!(shop.uncommitted(p), 1);
    for _ in 0..6 {
        shop.advance(Duration::from_secs(10));
    }
    assert_eq!(shop.faults.injected_failures(), 3);
    let audit = audit();
    assert_eq!(
        audit.count(ReceiptState::Granted),
        1,
        "a later commit resolved it"
    );
    assert_eq!(audit.accounts[&UserId(3)].1.0["Gold"], "(100)");
    assert_eq!(
        shop.log.granted.lock().unwrap().len(),
        1,
        "the handler granted once"
    );
    assert_eq!(shop.gold(p), 100);
}

/// A server buys Gold twice and stops without its player leaving (a crash, for the ledger); the
/// same server started again (`start`, same id) takes the player back at once with their Gold
/// and balance, and buys on. `audit` reads the ledger.
pub fn gold_survives_a_restart(start: impl Fn() -> GameServer, audit: impl Fn() -> LedgerAudit) {
    {
        let mut shop = start();
        let p = shop.join(1);
        shop.buy(p, GOLD_100);
        shop.buy(p, GOLD_100);
        assert_eq!(shop.gold(p), 200);
    } // dropped without the player leaving: grants were committed with their Gold anyway
    let mut shop = start();
    let p = shop.join(1);
    assert_eq!(shop.gold(p), 200, "Gold is loaded from the ledger on join");
    assert_eq!(
        shop.app.world().get::<PremiumBalance>(p).unwrap().0,
        1000 - 160
    );
    shop.buy(p, GOLD_100);
    assert_eq!(shop.gold(p), 300);
    let audit = audit();
    assert_eq!(audit.count(ReceiptState::Granted), 3);
    assert_eq!(audit.purchase_debits, 240);
    assert_eq!(audit.receipt_total(), 240);
    assert_eq!(audit.accounts[&UserId(1)].0, 760);
    assert_eq!(audit.accounts[&UserId(1)].1.0["Gold"], "(300)");
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

/// A shop whose handlers are in `mode`, where `user` joined and bought `product`.
pub fn bought_with(mode: HandlerMode, user: i64, product: ProductId) -> (TestShop, Entity) {
    let mut shop = shop();
    shop.set_mode(mode);
    let player = shop.join(user);
    shop.buy(player, product);
    (shop, player)
}

pub fn shop() -> TestShop {
    shop_with(|p| p)
}

/// Spawns the buyer `user` with Gold 0 and `health` of 100 Health (their session starts loading).
pub fn spawn_buyer(app: &mut App, user: i64, health: u32) -> Entity {
    app.world_mut()
        .spawn((
            Buyer::new(UserId(user)),
            Health {
                current: health,
                max: 100,
            },
            Gold(0),
        ))
        .id()
}

/// Messages seen so far.
#[derive(Resource, Default, Debug)]
pub struct Collected {
    pub finished: Vec<PromptProductPurchaseFinished>,
    pub resolved: Vec<ReceiptInfo>,
    pub rejected: Vec<ReceiptRejected>,
    pub failed: Vec<ReceiptDeliveryFailed>,
    pub purchase_failed: Vec<PurchaseFailed>,
}

fn collect(
    mut finished: MessageReader<PromptProductPurchaseFinished>,
    mut resolved: MessageReader<ReceiptResolved>,
    mut rejected: MessageReader<ReceiptRejected>,
    mut failed: MessageReader<ReceiptDeliveryFailed>,
    mut purchase_failed: MessageReader<PurchaseFailed>,
    mut out: ResMut<Collected>,
) {
    out.purchase_failed.extend(purchase_failed.read().cloned());
    out.rejected.extend(rejected.read().cloned());
    out.finished.extend(finished.read().copied());
    out.resolved
        .extend(resolved.read().map(|r| r.receipt.clone()));
    out.failed.extend(failed.read().cloned());
}

impl TestShop {
    /// Spawns a player (Health 30/100, Gold 0) and waits for their session to load.
    pub fn join(&mut self, user: i64) -> Entity {
        let e = spawn_buyer(&mut self.app, user, 30);
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
    asset_app_in_order(dir, false)
}

/// [`asset_app`], with `MarketplacePlugin` added before `AssetPlugin` if `marketplace_first`.
pub fn asset_app_in_order(dir: &Dir, marketplace_first: bool) -> App {
    let mut app = App::new();
    let d = dir.clone();
    app.register_asset_source(
        AssetSourceId::Default,
        AssetSourceBuilder::new(move || Box::new(MemoryAssetReader { root: d.clone() })),
    );
    let assets = AssetPlugin {
        watch_for_changes_override: Some(false),
        ..Default::default()
    };
    let marketplace = MarketplacePlugin::default().with_ledger(LedgerBackend::in_memory());
    if marketplace_first {
        app.add_plugins((MinimalPlugins, marketplace, assets));
    } else {
        app.add_plugins((MinimalPlugins, assets, marketplace));
    }
    app
}

/// Answers a player's open prompt (naming it, as a UI does) from a test.
pub trait AnswerPrompt {
    /// Writes a [`PromptAnswer`] with `action` for the prompt `player` has open (a prompt id no
    /// prompt has, if none is open: the answer is then refused).
    fn answer_prompt(&mut self, player: Entity, action: bevy_marketplace::PromptAction);
}

impl AnswerPrompt for World {
    fn answer_prompt(&mut self, player: Entity, action: bevy_marketplace::PromptAction) {
        let prompt = self
            .get::<bevy_marketplace::OpenPrompt>(player)
            .map_or(bevy_marketplace::PromptId(u64::MAX), |p| p.id);
        self.write_message(bevy_marketplace::PromptAnswer {
            player,
            prompt,
            action,
        });
    }
}

/// Runs `f` and returns what the process logged meanwhile (warnings and errors included, one
/// line each). The log is captured from every thread (Bevy runs systems on several), so lines
/// of tests running at the same time may be in it too: look for what only `f` would log.
pub fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};
    static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    static INSTALLED: OnceLock<()> = OnceLock::new();
    struct Sink;
    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            LOG.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| Sink)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other log subscriber");
    });
    let from = LOG.lock().unwrap().len();
    let result = f();
    let text = String::from_utf8_lossy(&LOG.lock().unwrap()[from..]).into_owned();
    (result, text)
}
