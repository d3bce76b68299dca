//! A small playable game: walk to the vendor, press E, buy potions and gold with premium currency.
//!
//! ```sh
//! cargo run -p vendor_shop
//! ```
//!
//! Controls: WASD / arrow keys to walk, E to talk to the vendor (and close the shop), Enter / Esc
//! in the purchase prompt, F1 for the marketplace debug panel. The poison swamp drains Health: a
//! Full Heal potion restores it. Gold coins lie around; Gold and Arrows are saved in the ledger
//! (`vendor_shop.sqlite3`), so purchases survive a restart.
//!
//! `--scripted` plays by itself (walk to the vendor, open the shop, buy a potion, Gold and Arrows,
//! refund a Pouch of Gold from the debug panel's history, top up from a prompt it cannot afford),
//! saves screenshots (to `--screenshots DIR`, default `target/screenshots`), checks each step and
//! exits 0 — CI runs it under Xvfb.
//!
//! Multiplayer (feature `net`): a dedicated server without a window holds the ledger and runs the
//! handlers; each client is the same game in a window, its purchases charged and granted by the
//! server:
//!
//! ```sh
//! cargo run -p vendor_shop --features net -- --server 5000
//! cargo run -p vendor_shop --features net -- --client 127.0.0.1:5000 --user 1
//! cargo run -p vendor_shop --features net -- --client 127.0.0.1:5000 --user 2
//! ```
//!
//! `--host 5000` instead of `--server 5000` plays in the server's own window too (a listen
//! server, as user 1 unless `--user` says otherwise). `-- --help` lists every option.

#[cfg(feature = "net")]
mod net;
mod script;

use std::path::PathBuf;

use bevy::prelude::*;
use bevy::window::WindowResolution;
use bevy_egui::{EguiContexts, EguiPlugin, EguiPrimaryContextPass, egui};
use bevy_marketplace::ledger::LedgerBackend;
use bevy_marketplace::prelude::*;
use bevy_marketplace::ui::MarketplaceUiSystems;
use serde::{Deserialize, Serialize};

const FULL_HEAL: ProductId = ProductId(123123);
const GOLD_POUCH: ProductId = ProductId(456456);
const GOLD_CHEST: ProductId = ProductId(789789);
const ARROWS: ProductId = ProductId(111222);

const SPEED: f32 = 260.0;
const TALK_DISTANCE: f32 = 90.0;
const VENDOR_AT: Vec2 = Vec2::new(380.0, 120.0);
const SWAMP_AT: Vec2 = Vec2::new(-260.0, -60.0);
const SWAMP_SIZE: Vec2 = Vec2::new(360.0, 260.0);
const ARENA: Vec2 = Vec2::new(600.0, 300.0);
/// The catalog and icons: the repository's `assets/`, which the crate's tests and headless
/// examples share (by default Bevy would look in this crate's own directory).
fn assets() -> AssetPlugin {
    AssetPlugin {
        file_path: concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets").to_string(),
        ..default()
    }
}

/// Where a player starts (players of a server side by side, above the swamp).
fn start(user: UserId) -> Vec2 {
    Vec2::new(-420.0 + 90.0 * (user.0 - 1).rem_euclid(4) as f32, 180.0)
}

#[derive(Component, Clone, Copy, Serialize, Deserialize)]
struct Health {
    current: f32,
    max: f32,
}

impl Default for Health {
    /// Everyone starts hurt, so the potion matters.
    fn default() -> Self {
        Self {
            current: 35.0,
            max: 100.0,
        }
    }
}

/// Persisted: committed together with every grant.
#[derive(Component, Default, Serialize, Deserialize)]
struct Gold(u64);

/// Persisted.
#[derive(Component, Default, Serialize, Deserialize)]
struct Arrows(u32);

#[derive(Component)]
struct Vendor;

#[derive(Component)]
struct Coin;

#[derive(Resource, Default)]
struct Shop {
    open: bool,
    page: usize,
}

/// Where the player wants to walk this frame: keyboard, or the script.
#[derive(Resource, Default)]
struct WalkInput(Vec2);

/// A script plays, not the keyboard.
#[derive(Resource)]
struct Scripted;

/// Who plays on this machine.
#[derive(Resource, Clone, Copy)]
struct Me {
    user: UserId,
    /// Coins lie around (in one process; a client's Gold is the server's to change).
    coins: bool,
}

enum Mode {
    /// One process: the game, the ledger and the handlers.
    Local,
    /// A dedicated server on this UDP port of loopback, without a window.
    Server(u16),
    /// The game in a window, and the server of this UDP port (a listen server).
    Host(u16),
    /// A client of the server at this address.
    Client(std::net::SocketAddr),
}

struct Args {
    mode: Mode,
    user: i64,
    /// What a scripted client buys.
    buy: ProductId,
    /// A scripted client that double-clicks Buy, and later presses Cancel and Buy in one frame.
    hasty: bool,
    scripted: bool,
    /// Print the player's state to stdout (for scripts that drive the window from outside).
    print_state: bool,
    /// Quit once the player is loaded (with `print_state`: how long that took).
    exit_when_active: bool,
    screenshots: PathBuf,
    ledger: PathBuf,
    /// Cheats in the debug panel: grant currency, simulate purchases, refund.
    debug_grants: bool,
}

/// The vendor shop: walk to the vendor, talk, and buy Roblox-style developer products. One process
/// by default; `--server`, `--host` and `--client` play it over UDP.
#[derive(clap::Parser)]
#[command(name = "vendor_shop")]
struct Cli {
    /// Run a dedicated server on this UDP port of loopback, without a window.
    #[arg(long, value_name = "PORT", group = "mode")]
    server: Option<u16>,
    /// Play in a window and serve other players on this UDP port (a listen server).
    #[arg(long, value_name = "PORT", group = "mode")]
    host: Option<u16>,
    /// Play as a client of the server at this address.
    #[arg(long, value_name = "IP:PORT", group = "mode")]
    client: Option<std::net::SocketAddr>,
    /// The user id to play as.
    #[arg(long, value_name = "N", default_value_t = 1)]
    user: i64,
    /// What a scripted client buys (a product id).
    #[arg(long, value_name = "PRODUCT", default_value_t = GOLD_POUCH.0)]
    buy: i64,
    /// Play by script: walk, buy, take screenshots, quit.
    #[arg(long)]
    scripted: bool,
    /// A scripted client that double-clicks Buy, and later presses Cancel and Buy in one frame.
    #[arg(long)]
    hasty: bool,
    /// Print the player's state to stdout (for scripts that drive the window from outside).
    #[arg(long)]
    print_state: bool,
    /// Quit once the player is loaded.
    #[arg(long)]
    exit_when_active: bool,
    /// Where scripted runs save their screenshots.
    #[arg(long, value_name = "DIR", default_value = "target/screenshots")]
    screenshots: PathBuf,
    /// The SQLite ledger file (a scripted run without one uses a fresh file in the temp dir).
    #[arg(long, value_name = "FILE")]
    ledger: Option<PathBuf>,
    /// Cheats in the debug panel (F1): grant currency, simulate purchases, refund.
    #[arg(long)]
    debug_grants: bool,
}

/// The command line; `--help` prints it, and a bad flag prints usage and exits with status 2.
fn args() -> Args {
    let cli = <Cli as clap::Parser>::parse();
    let mode = match (cli.server, cli.host, cli.client) {
        (Some(port), _, _) => Mode::Server(port),
        (_, Some(port), _) => Mode::Host(port),
        (_, _, Some(address)) => Mode::Client(address),
        _ => Mode::Local,
    };
    let given_ledger = cli.ledger.is_some();
    let mut args = Args {
        mode,
        user: cli.user,
        buy: ProductId(cli.buy),
        hasty: cli.hasty,
        debug_grants: cli.debug_grants,
        scripted: cli.scripted,
        print_state: cli.print_state,
        exit_when_active: cli.exit_when_active,
        screenshots: cli.screenshots,
        ledger: cli
            .ledger
            .unwrap_or_else(|| PathBuf::from("vendor_shop.sqlite3")),
    };
    if args.scripted && matches!(args.mode, Mode::Local | Mode::Host(_)) && !given_ledger {
        // A fresh ledger, so the scripted run always starts from the same balance.
        args.ledger = std::env::temp_dir().join(format!(
            "vendor_shop_scripted_{}.sqlite3",
            std::process::id()
        ));
    }
    args
}

/// The shop's rules, wherever the ledger is (one process, or the server): what is saved, what each
/// product grants, and what a refund takes back.
fn add_shop_rules(app: &mut App) {
    app.persist_component::<Gold>()
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
            player
                .get_mut::<Gold>()
                .map(|mut gold| gold.0 += 100)
                .is_some()
        })
        .add_product_handler(GOLD_CHEST, |_receipt, mut player| {
            player
                .get_mut::<Gold>()
                .map(|mut gold| gold.0 += 1000)
                .is_some()
        })
        .add_product_handler(ARROWS, |_receipt, mut player| {
            player.get_mut::<Arrows>().map(|mut a| a.0 += 20).is_some()
        })
        // A refund takes the goods back (a potion already drunk is not: no refund handler).
        .add_refund_handler(GOLD_POUCH, |_receipt, mut player| {
            player
                .get_mut::<Gold>()
                .map(|mut gold| gold.0 = gold.0.saturating_sub(100))
                .is_some()
        })
        .add_refund_handler(GOLD_CHEST, |_receipt, mut player| {
            player
                .get_mut::<Gold>()
                .map(|mut gold| gold.0 = gold.0.saturating_sub(1000))
                .is_some()
        })
        .add_refund_handler(ARROWS, |_receipt, mut player| {
            player
                .get_mut::<Arrows>()
                .map(|mut a| a.0 = a.0.saturating_sub(20))
                .is_some()
        });
}

/// The marketplace as every server runs it: the ledger, R$ 500 to start with.
fn marketplace(ledger: &std::path::Path, debug_grants: bool) -> MarketplacePlugin {
    MarketplacePlugin {
        starting_balance: 500,
        currency: PremiumCurrency::new("Robux", "R$"),
        allow_debug_grants: debug_grants,
        ..MarketplacePlugin::default().with_ledger(LedgerBackend::sqlite(ledger))
    }
}

fn main() -> AppExit {
    let args = args();
    let (client, host) = match args.mode {
        Mode::Local => (None, None),
        Mode::Host(port) => (None, Some(port)),
        Mode::Server(port) => return server(port, &args),
        Mode::Client(addr) => (Some(addr), None),
    };
    let title = match (client, host) {
        (None, Some(port)) => format!("bevy_marketplace — Vendor Shop (host, port {port})"),
        (None, None) => "bevy_marketplace — Vendor Shop".to_string(),
        (Some(_), _) => format!(
            "bevy_marketplace — Vendor Shop (client, user {})",
            args.user
        ),
    };
    let mut app = App::new();
    app.add_plugins((
        DefaultPlugins
            .set(WindowPlugin {
                primary_window: Some(Window {
                    title,
                    resolution: WindowResolution::new(1280, 720),
                    ..default()
                }),
                ..default()
            })
            .set(assets()),
        EguiPlugin::default(),
    ))
    .insert_resource(Me {
        user: UserId(args.user),
        coins: client.is_none(),
    });
    match client {
        None => {
            app.add_plugins((
                // The scripted run refunds a purchase from the debug panel's history.
                marketplace(&args.ledger, args.debug_grants || args.scripted),
                MarketplaceUiPlugin,
                MarketplaceDebugPanelPlugin,
                // SIGTERM (a shutdown, `kill`) saves every player as closing the window does.
                ExitOnSignal,
            ));
            add_shop_rules(&mut app);
            // The pretend store sells from the prompt's top-up button; a client's store is the
            // server's business (it credits, the ledger is there).
            app.add_systems(Update, demo_store);
            if let Some(port) = host {
                #[cfg(feature = "net")]
                net::add_host(&mut app, port);
                #[cfg(not(feature = "net"))]
                {
                    eprintln!(
                        "--host {port} needs the `net` feature: cargo run -p vendor_shop --features net"
                    );
                    return AppExit::error();
                }
            }
        }
        Some(addr) => {
            #[cfg(feature = "net")]
            net::add_client(&mut app, addr);
            #[cfg(not(feature = "net"))]
            {
                eprintln!(
                    "--client {addr} needs the `net` feature: cargo run -p vendor_shop --features net"
                );
                return AppExit::error();
            }
        }
    }
    app.insert_resource(ClearColor(Color::srgb(0.33, 0.52, 0.30)))
        .init_resource::<Shop>()
        .init_resource::<WalkInput>()
        // "You need N more": the prompt offers this shop's top-up, a pretend store that sells 500.
        .insert_resource(bevy_marketplace::TopUpOffer::new("Buy R$ 500"))
        .add_systems(Startup, setup)
        .add_systems(
            Update,
            (
                keyboard_walk,
                walk,
                swamp_drains_health,
                pick_up_coins,
                talk_to_vendor,
            )
                .chain(),
        )
        .add_systems(
            EguiPrimaryContextPass,
            (world_labels, hud, shop_window).before(MarketplaceUiSystems::Prompt),
        );
    match client {
        None => {
            if args.print_state || args.exit_when_active {
                script::add_state_report(&mut app, args.exit_when_active);
            }
            if args.scripted {
                script::add_scripted_run(&mut app, args.screenshots);
            }
        }
        Some(_) =>
        {
            #[cfg(feature = "net")]
            if args.scripted {
                net::add_scripted_client(&mut app, args.screenshots, args.buy, args.hasty);
            }
        }
    }
    app.run()
}

#[cfg(feature = "net")]
fn server(port: u16, args: &Args) -> AppExit {
    net::run_server(port, &args.ledger)
}

#[cfg(not(feature = "net"))]
fn server(port: u16, _: &Args) -> AppExit {
    eprintln!("--server {port} needs the `net` feature: cargo run -p vendor_shop --features net");
    AppExit::error()
}

fn setup(
    me: Res<Me>,
    mut commands: Commands,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<ColorMaterial>>,
) {
    commands.spawn(Camera2d);
    // The poison swamp.
    commands.spawn((
        Sprite::from_color(Color::srgba(0.36, 0.20, 0.45, 0.85), SWAMP_SIZE),
        Transform::from_translation(SWAMP_AT.extend(0.0)),
    ));
    for (offset, r) in [
        (Vec2::new(-90.0, 40.0), 26.0),
        (Vec2::new(70.0, -60.0), 18.0),
        (Vec2::new(120.0, 70.0), 12.0),
    ] {
        commands.spawn((
            Mesh2d(meshes.add(Circle::new(r))),
            MeshMaterial2d(materials.add(Color::srgb(0.55, 0.85, 0.35))),
            Transform::from_translation((SWAMP_AT + offset).extend(0.5)),
        ));
    }
    // The vendor's stall and the vendor.
    commands.spawn((
        Sprite::from_color(Color::srgb(0.55, 0.35, 0.18), Vec2::new(170.0, 70.0)),
        Transform::from_translation((VENDOR_AT + Vec2::new(0.0, 55.0)).extend(0.0)),
    ));
    commands.spawn((
        Sprite::from_color(Color::srgb(0.85, 0.25, 0.25), Vec2::new(190.0, 24.0)),
        Transform::from_translation((VENDOR_AT + Vec2::new(0.0, 95.0)).extend(0.1)),
    ));
    commands.spawn((
        Vendor,
        Mesh2d(meshes.add(Circle::new(26.0))),
        MeshMaterial2d(materials.add(Color::srgb(0.95, 0.62, 0.20))),
        Transform::from_translation(VENDOR_AT.extend(1.0)),
    ));
    // Bushes.
    for (x, y, r) in [
        (-560.0, -250.0, 34.0),
        (-520.0, -280.0, 24.0),
        (560.0, -240.0, 30.0),
        (100.0, 260.0, 28.0),
        (140.0, 245.0, 20.0),
        (-40.0, -280.0, 26.0),
        (520.0, 280.0, 22.0),
    ] {
        commands.spawn((
            Mesh2d(meshes.add(Circle::new(r))),
            MeshMaterial2d(materials.add(Color::srgb(0.20, 0.40, 0.22))),
            Transform::from_xyz(x, y, 0.2),
        ));
    }
    // Coins.
    for i in (0..12).filter(|_| me.coins) {
        let angle = i as f32 * 2.4;
        let at = Vec2::new(angle.cos() * (120.0 + 30.0 * i as f32), angle.sin() * 220.0)
            .clamp(-ARENA, ARENA);
        commands.spawn((
            Coin,
            Mesh2d(meshes.add(Circle::new(9.0))),
            MeshMaterial2d(materials.add(Color::srgb(1.0, 0.84, 0.2))),
            Transform::from_translation(at.extend(0.8)),
        ));
    }
    // The player: starts hurt, so the potion matters.
    commands.spawn((
        Buyer::new(me.user),
        LocalPlayer,
        Health::default(),
        Gold::default(),
        Arrows::default(),
        Mesh2d(meshes.add(Circle::new(20.0))),
        MeshMaterial2d(materials.add(Color::srgb(0.25, 0.55, 0.95))),
        Transform::from_translation(start(me.user).extend(2.0)),
    ));
}

fn keyboard_walk(
    keys: Res<ButtonInput<KeyCode>>,
    mut walk: ResMut<WalkInput>,
    scripted: Option<Res<Scripted>>,
) {
    if scripted.is_some() {
        return; // the script walks
    }
    let mut dir = Vec2::ZERO;
    for (keys_for, step) in [
        ([KeyCode::KeyW, KeyCode::ArrowUp], Vec2::Y),
        ([KeyCode::KeyS, KeyCode::ArrowDown], -Vec2::Y),
        ([KeyCode::KeyA, KeyCode::ArrowLeft], -Vec2::X),
        ([KeyCode::KeyD, KeyCode::ArrowRight], Vec2::X),
    ] {
        if keys.any_pressed(keys_for) {
            dir += step;
        }
    }
    walk.0 = dir;
}

fn walk(
    time: Res<Time>,
    walk: Res<WalkInput>,
    shop: Res<Shop>,
    mut player: Single<&mut Transform, (With<LocalPlayer>, Without<Vendor>)>,
) {
    if shop.open {
        return;
    }
    let step = walk.0.normalize_or_zero() * SPEED * time.delta_secs();
    let at = (player.translation.truncate() + step).clamp(-ARENA, ARENA);
    player.translation = at.extend(2.0);
}

fn in_swamp(at: Vec2) -> bool {
    (at - SWAMP_AT).abs().cmplt(SWAMP_SIZE / 2.0).all()
}

fn swamp_drains_health(
    time: Res<Time>,
    mut player: Single<(&Transform, &mut Health), With<LocalPlayer>>,
) {
    let (transform, health) = &mut *player;
    if in_swamp(transform.translation.truncate()) {
        health.current = (health.current - 15.0 * time.delta_secs()).max(1.0);
    }
}

fn pick_up_coins(
    mut commands: Commands,
    coins: Query<(Entity, &Transform), With<Coin>>,
    mut player: Single<(&Transform, &mut Gold), With<LocalPlayer>>,
) {
    let (transform, gold) = &mut *player;
    for (coin, at) in &coins {
        if at
            .translation
            .truncate()
            .distance(transform.translation.truncate())
            < 28.0
        {
            gold.0 += 10;
            commands.entity(coin).despawn();
        }
    }
}

fn near_vendor(player: Vec2) -> bool {
    player.distance(VENDOR_AT) < TALK_DISTANCE
}

fn talk_to_vendor(
    keys: Res<ButtonInput<KeyCode>>,
    mut shop: ResMut<Shop>,
    player: Single<(&Transform, Has<OpenPrompt>), With<LocalPlayer>>,
) {
    let (transform, prompting) = *player;
    if prompting {
        return; // the prompt has the keyboard
    }
    if keys.just_pressed(KeyCode::KeyE)
        && (shop.open || near_vendor(transform.translation.truncate()))
    {
        shop.open = !shop.open;
    }
    if shop.open && !near_vendor(transform.translation.truncate()) {
        shop.open = false;
    }
}

/// Writes `text` on the screen where the point `world` of the game is.
fn world_label(
    painter: &egui::Painter,
    (camera, camera_at): (&Camera, &GlobalTransform),
    world: Vec2,
    text: &str,
    size: f32,
    color: egui::Color32,
) {
    if let Ok(p) = camera.world_to_viewport(camera_at, world.extend(0.0)) {
        painter.text(
            egui::pos2(p.x, p.y),
            egui::Align2::CENTER_CENTER,
            text,
            egui::FontId::proportional(size),
            color,
        );
    }
}

fn world_labels(
    mut contexts: EguiContexts,
    camera: Single<(&Camera, &GlobalTransform)>,
    player: Single<&Transform, With<LocalPlayer>>,
    shop: Res<Shop>,
) -> Result {
    let painter = contexts
        .ctx_mut()?
        .layer_painter(egui::LayerId::background());
    let label = |world: Vec2, text: &str, size: f32, color: egui::Color32| {
        world_label(&painter, *camera, world, text, size, color);
    };
    label(
        VENDOR_AT + Vec2::new(0.0, 95.0),
        "MARLA'S MARKET",
        18.0,
        egui::Color32::WHITE,
    );
    label(
        SWAMP_AT + Vec2::new(0.0, 150.0),
        "Poison swamp",
        18.0,
        egui::Color32::from_rgb(220, 190, 255),
    );
    let at = player.translation.truncate();
    if near_vendor(at) && !shop.open {
        label(
            VENDOR_AT - Vec2::new(0.0, 50.0),
            "Press E to trade",
            20.0,
            egui::Color32::from_rgb(255, 240, 160),
        );
    }
    Ok(())
}

fn hud(
    mut contexts: EguiContexts,
    player: Single<(&Health, &Gold, &Arrows, &PremiumBalance), With<LocalPlayer>>,
    service: Res<MarketplaceService>,
    me: Res<Me>,
    panel: Option<Res<bevy_marketplace::ui::DebugPanel>>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    let controls = match panel {
        Some(_) => "WASD / arrows: walk   E: talk to the vendor   F1: debug panel".to_string(),
        None => format!(
            "WASD / arrows: walk   E: talk to the vendor   Online as Player {}",
            me.user
        ),
    };
    let (health, gold, arrows, balance) = *player;
    egui::Area::new(egui::Id::new("hud"))
        .anchor(egui::Align2::LEFT_TOP, [12.0, 12.0])
        .show(ctx, |ui| {
            egui::Frame::popup(ui.style()).show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label(egui::RichText::new("Health").strong());
                    let fraction = health.current / health.max;
                    let color = if fraction < 0.4 {
                        egui::Color32::from_rgb(210, 60, 60)
                    } else {
                        egui::Color32::from_rgb(70, 170, 80)
                    };
                    ui.add(
                        egui::ProgressBar::new(fraction)
                            .desired_width(180.0)
                            .fill(color)
                            .text(format!("{:.0} / {:.0}", health.current, health.max)),
                    );
                    ui.separator();
                    ui.label(
                        egui::RichText::new(format!("Gold {}", gold.0))
                            .color(egui::Color32::from_rgb(250, 210, 80))
                            .strong(),
                    );
                    ui.separator();
                    ui.label(format!("Arrows {}", arrows.0));
                    ui.separator();
                    ui.label(
                        egui::RichText::new(service.currency().format(balance.0))
                            .color(egui::Color32::from_rgb(120, 220, 140))
                            .strong(),
                    );
                });
            });
        });
    egui::Area::new(egui::Id::new("controls"))
        .anchor(egui::Align2::LEFT_BOTTOM, [12.0, -12.0])
        .show(ctx, |ui| {
            ui.label(egui::RichText::new(controls).color(egui::Color32::from_gray(235)));
        });
    Ok(())
}

fn shop_window(
    mut contexts: EguiContexts,
    mut shop: ResMut<Shop>,
    service: Res<MarketplaceService>,
    icons: Res<ProductIcons>,
    player: Single<(Entity, &PremiumBalance), With<LocalPlayer>>,
    mut prompts: MessageWriter<PromptProductPurchase>,
) -> Result {
    if !shop.open {
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    let (player, balance) = *player;
    let mut pages = service.get_developer_products();
    for _ in 0..shop.page {
        if pages.advance_to_next_page().is_err() {
            break;
        }
    }
    let mut open = true;
    egui::Window::new("Marla's Market")
        .open(&mut open)
        .collapsible(false)
        .resizable(false)
        .default_width(460.0)
        .anchor(egui::Align2::LEFT_CENTER, [40.0, 20.0])
        .show(ctx, |ui| {
            ui.label(format!(
                "\"Potions, gold, arrows! What'll it be?\"   You have {}.",
                service.currency().format(balance.0)
            ));
            ui.separator();
            for product in pages.current_page() {
                ui.horizontal(|ui| {
                    let size = egui::Vec2::splat(56.0);
                    match product.icon.as_deref().and_then(|p| icons.texture(p)) {
                        Some(texture) => {
                            ui.add(egui::Image::new((texture, size)));
                        }
                        None => {
                            let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
                            ui.painter().circle_filled(
                                rect.center(),
                                26.0,
                                egui::Color32::from_gray(80),
                            );
                        }
                    }
                    ui.vertical(|ui| {
                        ui.label(egui::RichText::new(&product.name).strong().size(16.0));
                        if let Some(d) = &product.description {
                            ui.label(egui::RichText::new(d).small());
                        }
                    });
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if product.is_for_sale {
                            if ui
                                .button(format!(
                                    "Buy  {}",
                                    service.currency().format(product.price)
                                ))
                                .clicked()
                            {
                                prompts.write(PromptProductPurchase {
                                    player,
                                    product_id: product.product_id,
                                });
                            }
                        } else {
                            ui.add_enabled(false, egui::Button::new("Sold out"));
                        }
                    });
                });
                ui.separator();
            }
            if pages.page_count() > 1 {
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(shop.page > 0, egui::Button::new("◀"))
                        .clicked()
                    {
                        shop.page -= 1;
                    }
                    ui.label(format!(
                        "page {} of {}",
                        pages.page_number(),
                        pages.page_count()
                    ));
                    if ui
                        .add_enabled(!pages.is_finished(), egui::Button::new("▶"))
                        .clicked()
                    {
                        shop.page += 1;
                    }
                });
            }
            ui.label(egui::RichText::new("E: leave the shop").small());
        });
    if !open {
        shop.open = false;
    }
    Ok(())
}

/// A pretend store: a real game opens its store page here, and credits the order once the store
/// confirms it, with the store's order id, so a retried confirmation credits once. Here the order
/// is the prompt "get more" was pressed on (in this run of the game): asked twice for one prompt,
/// it credits once.
fn demo_store(
    mut asked: MessageReader<bevy_marketplace::TopUpRequested>,
    mut service: ResMut<MarketplaceService>,
    run: Local<StoreRun>,
) {
    for request in asked.read() {
        let order = format!("{}-{}", run.0, request.prompt.0);
        service.credit_premium_currency(request.user_id, 500, "demo store", order);
    }
}

/// This run of the demo store: prompt ids start again with each run of the game.
struct StoreRun(String);

impl Default for StoreRun {
    fn default() -> Self {
        Self(bevy_marketplace::RequestId::new().0.simple().to_string())
    }
}
