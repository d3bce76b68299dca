//! A headless game server: three players buy products, handlers grant them, and everything lands
//! in an SQLite ledger. Runs anywhere, no window:
//!
//! ```sh
//! cargo run --example headless_shop
//! ```
//!
//! Run it twice: balances and Gold carry over, because they live in the ledger.

use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy_marketplace::Ledger;
use bevy_marketplace::ledger::LedgerBackend;
use bevy_marketplace::prelude::*;
use bevy_marketplace::{DeliveryFailure, ReceiptDeliveryFailed};
use serde::{Deserialize, Serialize};

const FULL_HEAL: ProductId = ProductId(123123);
const GOLD_POUCH: ProductId = ProductId(456456);
const GOLD_CHEST: ProductId = ProductId(789789);
const ARROWS: ProductId = ProductId(111222);
const DRAGON_EGG: ProductId = ProductId(333444);

/// Ephemeral: just game state.
#[derive(Component, Debug)]
struct Health {
    current: u32,
    max: u32,
}

/// Persisted: saved in the same transaction as every grant.
#[derive(Component, Debug, Default, Serialize, Deserialize)]
struct Gold(u64);

#[derive(Component, Debug, Default, Serialize, Deserialize)]
struct Arrows(u32);

#[derive(Component)]
struct Name(&'static str);

/// The quiver maker is out the first time anyone asks: shows a timed redelivery.
#[derive(Resource, Default)]
struct QuiverMakerBack(bool);

/// What the players do, one step whenever the marketplace is idle.
#[derive(Resource)]
struct Script {
    steps: Vec<(usize, ProductId)>,
    next: usize,
    wait_frames: u32,
}

fn main() {
    let path = std::env::temp_dir().join("bevy_marketplace_headless_shop.sqlite3");
    println!("ledger: {}", path.display());
    App::new()
        .add_plugins((
            MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_millis(2))),
            AssetPlugin::default(),
            MarketplacePlugin {
                starting_balance: 500,
                currency: PremiumCurrency::new("Robux", "R$"),
                retry: bevy_marketplace::RetryPolicy {
                    initial: Duration::from_millis(200),
                    ..Default::default()
                },
                ..MarketplacePlugin::default().with_ledger(LedgerBackend::sqlite(&path))
            },
        ))
        .persist_component::<Gold>()
        .persist_component::<Arrows>()
        // Roblox's sample: "ProductId 123123 brings the user back to full health".
        .add_product_handler(FULL_HEAL, |_receipt, mut player| {
            let Some(mut health) = player.get_mut::<Health>() else {
                return false;
            };
            health.current = health.max;
            true
        })
        // Roblox's sample: "ProductId 456456 awards 100 gold to the user".
        .add_product_handler(GOLD_POUCH, |_receipt, mut player| {
            let Some(mut gold) = player.get_mut::<Gold>() else {
                return false;
            };
            gold.0 += 100;
            true
        })
        .add_product_handler(GOLD_CHEST, |_receipt, mut player| {
            player.get_mut::<Gold>().map(|mut g| g.0 += 1000).is_some()
        })
        .add_product_handler(ARROWS, |_receipt, mut player| {
            if !player.world_scope(|w| {
                let back = w.resource::<QuiverMakerBack>().0;
                w.resource_mut::<QuiverMakerBack>().0 = true;
                back
            }) {
                return Err("the quiver maker is out; try again soon");
            }
            if let Some(mut arrows) = player.get_mut::<Arrows>() {
                arrows.0 += 20;
            }
            Ok(true)
        })
        .init_resource::<QuiverMakerBack>()
        .insert_resource(Script {
            steps: vec![
                (0, FULL_HEAL),
                (1, GOLD_POUCH),
                (1, GOLD_POUCH),
                (2, GOLD_CHEST),
                (2, DRAGON_EGG),
                (2, ARROWS),
                (0, GOLD_CHEST),
            ],
            next: 0,
            wait_frames: 0,
        })
        .add_systems(Startup, spawn_players)
        .add_systems(Update, (play_script, report).chain())
        .run();
}

fn spawn_players(mut commands: Commands) {
    for (i, name) in ["Alice", "Bob", "Cara"].into_iter().enumerate() {
        commands.spawn((
            Buyer::new(UserId(1000 + i as i64)),
            Name(name),
            Health {
                current: 20 + 30 * i as u32,
                max: 100,
            },
            Gold::default(),
            Arrows::default(),
        ));
    }
}

fn play_script(
    mut script: ResMut<Script>,
    ledger: Res<Ledger>,
    players: Query<(
        Entity,
        &Buyer,
        &Name,
        &bevy_marketplace::PlayerSession,
        Has<OpenPrompt>,
    )>,
    service: Res<MarketplaceService>,
    mut prompts: MessageWriter<PromptProductPurchase>,
    mut exit: MessageWriter<AppExit>,
) {
    let mut players: Vec<_> = players.iter().collect();
    players.sort_by_key(|p| p.1.user_id);
    let busy = ledger.in_flight() > 0
        || players
            .iter()
            .any(|p| p.4 || !p.3.is_active() || !p.3.uncommitted_grants().is_empty())
        || service.catalog().is_empty();
    if busy {
        script.wait_frames = 0;
        return;
    }
    // Let retries and saves finish: a few idle frames between steps.
    script.wait_frames += 1;
    let pending = players.iter().any(|p| !p.3.pending_receipts().is_empty());
    if script.wait_frames < 5 || (pending && script.wait_frames < 400) {
        return;
    }
    script.wait_frames = 0;
    let Some(&(who, product)) = script.steps.get(script.next) else {
        println!("All purchases settled. Run again: balances and Gold carry over in the ledger.");
        exit.write(AppExit::Success);
        return;
    };
    script.next += 1;
    let (entity, _, name, _, _) = players[who];
    let label = service
        .get_product_info(product)
        .map(|p| format!("{} for {}", p.name, service.currency().format(p.price)))
        .unwrap_or_else(|e| e.to_string());
    println!("{} opens the shop: {label}", name.0);
    prompts.write(PromptProductPurchase {
        player: entity,
        product_id: product,
    });
}

fn report(
    mut finished: MessageReader<PromptProductPurchaseFinished>,
    mut resolved: MessageReader<ReceiptResolved>,
    mut failed: MessageReader<ReceiptDeliveryFailed>,
    mut purchase_failures: MessageReader<PurchaseFailed>,
    players: Query<(&Buyer, &Name, &Health, &Gold, &Arrows, &PremiumBalance)>,
    service: Res<MarketplaceService>,
) {
    for f in purchase_failures.read() {
        println!("  the prompt of user {} said: {}", f.user_id, f.error);
    }
    for f in failed.read() {
        if let DeliveryFailure::HandlerError(why) = &f.reason {
            println!(
                "  receipt {} not granted yet: {why} (will retry)",
                f.receipt.purchase_id
            );
        }
    }
    for r in resolved.read() {
        let receipt = &r.receipt;
        let Some((_, name, health, gold, arrows, balance)) =
            players.iter().find(|p| p.0.user_id == receipt.player_id)
        else {
            continue;
        };
        println!(
            "  granted and committed: {} bought product {} for {} (purchase {}); now Health {}/{}, Gold {}, Arrows {}, balance {}",
            name.0,
            receipt.product_id,
            service.currency().format(receipt.currency_spent),
            receipt.purchase_id,
            health.current,
            health.max,
            gold.0,
            arrows.0,
            service.currency().format(balance.0)
        );
    }
    for f in finished.read() {
        println!(
            "  prompt closed for user {} (product {}): is_purchased = {}",
            f.user_id, f.product_id, f.is_purchased
        );
    }
}
