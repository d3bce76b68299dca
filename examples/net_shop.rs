//! Networked purchases over UDP (bevy_replicon + renet), headless: a dedicated server with the
//! ledger and the handlers, and clients that prompt, confirm and see their purchase granted.
//!
//! ```sh
//! cargo run --example net_shop --features net -- --server 5000 --ledger net_shop.sqlite3
//! cargo run --example net_shop --features net -- --client 127.0.0.1:5000 --user 1 --buy 456456
//! cargo run --example net_shop --features net -- --client 127.0.0.1:5000 --user 2 --buy 111222
//! ```
//!
//! The demo trusts the user id a client connects with (netcode's unsecure mode); a real game
//! authenticates its players before it says which client owns which player.

#[path = "common/net_demo.rs"]
mod net_demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy::state::app::StatesPlugin;
use bevy_marketplace::ledger::LedgerBackend;
use bevy_marketplace::net::{
    BuyerClient, LocalBuyer, MarketplaceClientPlugin, MarketplaceServerPlugin,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::{PromptAction, PromptAnswer, PromptState, PurchaseError};
use bevy_replicon::prelude::*;
use bevy_replicon::shared::backend::connected_client::NetworkId;
use bevy_replicon_renet::RepliconRenetPlugins;
use serde::{Deserialize, Serialize};

#[derive(Component, Default, Serialize, Deserialize)]
struct Gold(u64);

#[derive(Component, Default, Serialize, Deserialize)]
struct Arrows(u32);

/// Networked purchases over UDP, headless: `--server PORT` runs the server, `--client IP:PORT
/// --user N` a client that buys one product.
#[derive(clap::Parser)]
#[command(name = "net_shop", group(clap::ArgGroup::new("mode").required(true).args(["server", "client"])))]
struct Cli {
    /// Run the server on this UDP port (SIGINT or SIGTERM ends it, after saving every player).
    #[arg(
        long,
        value_name = "PORT",
        group = "mode",
        required_unless_present = "client"
    )]
    server: Option<u16>,
    /// The server's SQLite ledger file.
    #[arg(long, value_name = "FILE", default_value = "net_shop.sqlite3")]
    ledger: PathBuf,
    /// Connect to the server at this address and buy one product.
    #[arg(long, value_name = "IP:PORT")]
    client: Option<SocketAddr>,
    /// The client's user id.
    #[arg(long, value_name = "N", default_value_t = 1)]
    user: u64,
    /// What the client buys (a product id).
    #[arg(long, value_name = "PRODUCT", default_value_t = 456456)]
    buy: i64,
}

fn main() -> AppExit {
    let cli = <Cli as clap::Parser>::parse();
    let catalog = Catalog::from_ron_str(include_str!("../assets/products.ron"), "products.ron")
        .expect("the shipped catalog is valid");
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_millis(4))),
        StatesPlugin,
        RepliconPlugins,
        RepliconRenetPlugins,
    ));
    if let Some(port) = cli.server {
        let ledger = cli.ledger;
        app.add_plugins((
            MarketplacePlugin {
                starting_balance: 500,
                currency: PremiumCurrency::new("Robux", "R$"),
                ..MarketplacePlugin::default()
                    .with_catalog(catalog)
                    .with_ledger(LedgerBackend::sqlite(ledger))
            },
            MarketplaceServerPlugin,
            // SIGINT / SIGTERM: every player is saved before the server ends.
            ExitOnSignal,
        ))
        .persist_component::<Gold>()
        .persist_component::<Arrows>()
        .add_product_handler(ProductId(456456), |_, mut player| {
            player.get_mut::<Gold>().map(|mut g| g.0 += 100).is_some()
        })
        .add_product_handler(ProductId(111222), |_, mut player| {
            player.get_mut::<Arrows>().map(|mut a| a.0 += 20).is_some()
        })
        .add_observer(spawn_player_of_client)
        .add_observer(net_demo::despawn_player_of_client)
        .add_systems(
            Startup,
            move |mut commands: Commands, channels: Res<RepliconChannels>| {
                net_demo::start_server(&mut commands, &channels, port)
            },
        )
        .add_systems(Update, net_demo::report_grants);
    } else if let Some(addr) = cli.client {
        let user = cli.user;
        let product = ProductId(cli.buy);
        app.add_plugins(MarketplaceClientPlugin)
            .insert_resource(Shopper {
                product,
                asked_at: None,
                ask_again_at: None,
                started: Instant::now(),
                confirmed: false,
                closed: false,
                granted: false,
            })
            .add_systems(
                Startup,
                move |mut commands: Commands, channels: Res<RepliconChannels>| {
                    commands.spawn(LocalBuyer);
                    net_demo::start_client(&mut commands, &channels, addr, user)
                },
            )
            .add_systems(Update, shop);
    } else {
        // clap asks for one of them; this only keeps the branches total.
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return AppExit::error();
    }
    app.run()
}

/// A client was authorized: its player joins, owned by it.
fn spawn_player_of_client(
    add: On<Add, AuthorizedClient>,
    ids: Query<&NetworkId>,
    mut commands: Commands,
) {
    let Ok(id) = ids.get(add.entity) else {
        return;
    };
    let user = UserId(id.get() as i64);
    commands.spawn((
        Buyer::new(user),
        Gold(0),
        Arrows(0),
        BuyerClient(add.entity),
    ));
    println!("SERVER player {user} joined");
}

#[derive(Resource)]
struct Shopper {
    product: ProductId,
    asked_at: Option<Instant>,
    /// Not before then (the server was still loading the player).
    ask_again_at: Option<Instant>,
    started: Instant,
    confirmed: bool,
    closed: bool,
    granted: bool,
}

/// Asks once the catalog arrived, confirms, and reports the round trip from asking to
/// "Purchase successful" and to the grant's commit.
fn shop(
    mut shopper: ResMut<Shopper>,
    mut service: ResMut<MarketplaceService>,
    buyer: Single<(Entity, &PremiumBalance, Option<&OpenPrompt>), With<LocalBuyer>>,
    mut answers: MessageWriter<PromptAnswer>,
    mut resolved: MessageReader<ReceiptResolved>,
    mut refused: MessageReader<PurchaseFailed>,
    mut exit: MessageWriter<AppExit>,
) {
    let (entity, balance, prompt) = *buyer;
    if shopper.started.elapsed() > Duration::from_secs(30) {
        eprintln!("CLIENT timed out");
        exit.write(AppExit::error());
        return;
    }
    if let Some(refusal) = refused.read().last()
        && prompt.is_none()
    {
        // No prompt was made (asked too often): wait, and ask again.
        println!("CLIENT refused: {}; asking again", refusal.error);
        shopper.asked_at = None;
        shopper.ask_again_at = Some(Instant::now() + Duration::from_secs(2));
    }
    let Some(asked) = shopper.asked_at else {
        let waited = shopper.ask_again_at.is_none_or(|at| Instant::now() >= at);
        if waited && prompt.is_none() && service.get_product_info(shopper.product).is_ok() {
            println!(
                "CLIENT catalog arrived: {} products",
                service.catalog().len()
            );
            service.prompt_product_purchase(entity, shopper.product);
            shopper.asked_at = Some(Instant::now());
        }
        return;
    };
    match prompt.map(|p| &p.state) {
        Some(PromptState::AwaitingConfirmation) if !shopper.confirmed => {
            // What one click on "Buy" sends.
            answers.write(PromptAnswer {
                player: entity,
                prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                action: PromptAction::Confirm,
            });
            shopper.confirmed = true;
        }
        Some(PromptState::Purchased(_)) if !shopper.closed => {
            shopper.closed = true;
            println!(
                "CLIENT Purchase successful after {:.1} ms (ask to confirmation, one confirm round trip included); balance {}",
                asked.elapsed().as_secs_f64() * 1e3,
                balance.0
            );
            answers.write(PromptAnswer {
                player: entity,
                prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                action: PromptAction::Close,
            });
        }
        Some(PromptState::Failed(
            e @ (PurchaseError::ProfileNotReady | PurchaseError::Unavailable(_)),
        )) => {
            // The server is still loading this player from its ledger, or the ledger is busy:
            // close the prompt and ask again shortly, as a player would.
            println!("CLIENT {e}; asking again");
            answers.write(PromptAnswer {
                player: entity,
                prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                action: PromptAction::Close,
            });
            shopper.asked_at = None;
            shopper.ask_again_at = Some(Instant::now() + Duration::from_secs(1));
        }
        Some(PromptState::Failed(e)) => {
            eprintln!("CLIENT purchase failed: {e}");
            exit.write(AppExit::error());
        }
        _ => {}
    }
    for r in resolved.read() {
        println!(
            "CLIENT granted {} (product {}) after {:.1} ms",
            r.receipt.purchase_id,
            r.receipt.product_id,
            asked.elapsed().as_secs_f64() * 1e3
        );
        shopper.granted = true;
    }
    if shopper.granted && shopper.closed && prompt.is_none() {
        exit.write(AppExit::Success);
    }
}
