//! Receipt routing: finding a receipt's handler, running it on the buyer, and the whole
//! in-memory delivery path (charge → handler → grant commit) for a batch of receipts.
//!
//! ```sh
//! cargo bench --bench routing
//! ```

use std::time::Duration;

use bevy::prelude::*;
use bevy_marketplace::prelude::*;
use bevy_marketplace::{
    CurrencyType, MarketplaceStats, PlaceId, PlayerSession, ProductPurchaseChannel, PurchaseId,
    ReceiptHandlers, ReceiptInfo, receipt_handler,
};
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};

const GOLD: ProductId = ProductId(456456);

#[derive(Component, Default, serde::Serialize, serde::Deserialize)]
struct Gold(u64);

fn main() {
    divan::main();
}

/// 1,000 product handlers and a catch-all.
fn handlers() -> ReceiptHandlers {
    let mut handlers = ReceiptHandlers::default();
    for id in 0..1000 {
        handlers
            .bind(
                ProductId(id),
                receipt_handler(|_: &ReceiptInfo, mut player: EntityWorldMut| {
                    player.get_mut::<Gold>().map(|mut g| g.0 += 1).is_some()
                }),
            )
            .unwrap();
    }
    handlers
        .bind_catch_all(receipt_handler(|_: &ReceiptInfo, _: EntityWorldMut| false))
        .unwrap();
    handlers
}

fn receipt(product_id: ProductId) -> ReceiptInfo {
    ReceiptInfo {
        purchase_id: PurchaseId::new(),
        player_id: UserId(1),
        product_id,
        place_id_where_purchased: PlaceId(1),
        currency_spent: 80,
        currency_type: CurrencyType::Premium,
        product_purchase_channel: ProductPurchaseChannel::InExperience,
        is_test_purchase: false,
    }
}

/// The handler of a product among 1,000 (and of an unknown product: the catch-all).
#[divan::bench(args = [ProductId(517), ProductId(999_999)])]
fn route(bencher: Bencher, product: ProductId) {
    let handlers = handlers();
    bencher.bench_local(|| handlers.route(black_box(product)));
}

/// Route a receipt and run its handler on the buyer's entity.
#[divan::bench]
fn route_and_run(bencher: Bencher) {
    let handlers = handlers();
    let mut world = World::new();
    let player = world.spawn(Gold(0)).id();
    let receipt = receipt(ProductId(517));
    bencher.bench_local(|| {
        let handler = handlers.route(receipt.product_id).unwrap();
        handler(black_box(&receipt), world.entity_mut(player)).unwrap()
    });
}

/// A server with `n` loaded players on the in-memory ledger.
fn server(n: i64) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        MarketplacePlugin {
            autosave_interval: Duration::from_secs(3600),
            test_purchases: true, // simulated purchases are test purchases
            ..MarketplacePlugin::default()
                .with_ledger(LedgerBackend::in_memory())
                .with_catalog(
                    Catalog::from_ron_str(
                        "(products: [(id: 456456, name: \"Gold\", price: 80)])",
                        "bench.ron",
                    )
                    .unwrap(),
                )
        },
    ))
    .persist_component::<Gold>()
    .add_product_handler(GOLD, |_receipt, mut player| {
        player.get_mut::<Gold>().map(|mut g| g.0 += 100).is_some()
    });
    for u in 0..n {
        app.world_mut().spawn((Buyer::new(UserId(u)), Gold(0)));
    }
    while app
        .world_mut()
        .query::<&PlayerSession>()
        .iter(app.world())
        .filter(|s| s.is_active())
        .count()
        < n as usize
    {
        app.update();
    }
    app
}

/// `n` players each get a receipt (a simulated purchase); frames run until every receipt is
/// granted and committed. In memory, so this is the plugin's own cost per receipt.
#[divan::bench(args = [1, 100, 1000], sample_count = 20)]
fn deliver_batch(bencher: Bencher, n: i64) {
    bencher
        .counter(ItemsCount::new(n as usize))
        .with_inputs(|| server(n))
        .bench_local_values(|mut app| {
            let mut service = app.world_mut().resource_mut::<MarketplaceService>();
            for u in 0..n {
                service.simulate_purchase(UserId(u), GOLD).unwrap();
            }
            while app.world().resource::<MarketplaceStats>().granted < n as u64 {
                app.update();
            }
            app
        });
}
