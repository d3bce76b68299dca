//! Wave Arena: survive waves of slimes, and buy what a fight needs while it goes on.
//!
//! ```sh
//! cargo run -p wave_arena
//! ```
//!
//! Controls: WASD / arrow keys to walk, Space to shoot at the nearest slime (an arrow each), B for
//! the shop, R for a Revive while you are down, Enter / Esc in the purchase prompt, F1 for the
//! marketplace debug panel. Health, Gold, Arrows and the Double Gold time left are saved in the
//! ledger (`wave_arena.sqlite3`), so they survive a restart.
//!
//! Purchases here can stop making sense between the click and the grant, and their handlers say
//! so ([`ProductPurchaseDecision::Rejected`]): a Revive that arrives after an ally revived you,
//! a Skip Wave that arrives after the wave ended. The currency goes back, the prompt says
//! "Refunded", and the receipt is never delivered again.
//!
//! `--scripted` plays by itself (dies, buys a Revive, buys one that an ally makes pointless and
//! sees the refund, buys a Skip Wave and Double Gold twice, then closes its window, or with
//! `--wait-for-close` waits for it to be closed from outside), saves screenshots to
//! `--screenshots DIR` and exits 0; `--scripted --check-boost` starts again on the same ledger
//! and checks the boost is still running. CI runs both under Xvfb.

mod script;

use std::path::PathBuf;

use bevy::prelude::*;
use bevy::window::WindowResolution;
use bevy_egui::{EguiContexts, EguiPlugin, EguiPrimaryContextPass, egui};
use bevy_marketplace::ledger::LedgerBackend;
use bevy_marketplace::prelude::*;
use bevy_marketplace::ui::MarketplaceUiSystems;
use serde::{Deserialize, Serialize};

const QUIVER: ProductId = ProductId(5001);
const REVIVE: ProductId = ProductId(5002);
const DOUBLE_GOLD: ProductId = ProductId(5003);
const SKIP_WAVE: ProductId = ProductId(5004);

/// How long one Double Gold lasts (seconds of play).
const BOOST_SECS: f32 = 300.0;
const ARENA: Vec2 = Vec2::new(600.0, 300.0);
const PLAYER_SPEED: f32 = 240.0;
const PLAYER_RADIUS: f32 = 20.0;
const SLIME_SPEED: f32 = 65.0;
const SLIME_RADIUS: f32 = 18.0;
const SLIME_DAMAGE_PER_S: f32 = 20.0;
const ARROW_SPEED: f32 = 720.0;
/// A downed player's ally gets them up after this long (seconds).
const ALLY_REVIVE_SECS: f32 = 20.0;
/// The pause between waves (seconds).
const BREAK_SECS: f32 = 4.0;
const GOLD_PER_SLIME: u64 = 10;

/// The catalog and icons of this game: its own `assets/` (by default Bevy would look in the
/// directory the game is started from).
fn assets() -> AssetPlugin {
    AssetPlugin {
        file_path: concat!(env!("CARGO_MANIFEST_DIR"), "/assets").to_string(),
        ..default()
    }
}

/// Persisted. At 0 the player is down: they cannot move or shoot until revived.
#[derive(Component, Clone, Copy, Serialize, Deserialize)]
struct Health {
    current: f32,
    max: f32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            current: 100.0,
            max: 100.0,
        }
    }
}

impl Health {
    fn downed(&self) -> bool {
        self.current <= 0.0
    }
}

/// Persisted.
#[derive(Component, Default, Serialize, Deserialize)]
struct Gold(u64);

/// Persisted.
#[derive(Component, Serialize, Deserialize)]
struct Arrows(u32);

impl Default for Arrows {
    fn default() -> Self {
        Self(15)
    }
}

/// Persisted: the Double Gold time left, so a boost survives a restart and the time spent away
/// is not used up.
#[derive(Component, Default, Serialize, Deserialize)]
struct GoldBoost {
    seconds_left: f32,
}

#[derive(Component)]
struct Slime;

#[derive(Component)]
struct Arrow {
    velocity: Vec2,
    seconds_left: f32,
}

/// The wave being fought, or the pause before the next.
#[derive(Resource)]
struct Wave {
    number: u32,
    phase: WavePhase,
    /// A Skip Wave was granted: the wave ends this frame.
    skip: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum WavePhase {
    Fighting,
    /// Seconds until the next wave.
    Break(f32),
}

impl Default for Wave {
    fn default() -> Self {
        Self {
            number: 0,
            phase: WavePhase::Break(1.0),
            skip: false,
        }
    }
}

/// How long the player has been down: an ally gets them up at [`ALLY_REVIVE_SECS`].
#[derive(Resource, Default)]
struct AllyTimer(f32);

/// What the player does this frame: keyboard, or the script.
#[derive(Resource, Default)]
struct Controls {
    walk: Vec2,
    shoot: bool,
}

/// A script plays, not the keyboard.
#[derive(Resource)]
struct Scripted;

#[derive(Resource, Default)]
struct ShopOpen(bool);

/// Meshes and colours of what the waves spawn.
#[derive(Resource)]
struct ArenaArt {
    slime: Handle<Mesh>,
    slime_color: Handle<ColorMaterial>,
    arrow: Handle<Mesh>,
    arrow_color: Handle<ColorMaterial>,
}

/// Wave Arena: survive waves of slimes, buying arrows, revives, a Gold boost and wave skips
/// mid-fight.
#[derive(clap::Parser)]
#[command(name = "wave_arena")]
struct Cli {
    /// The user id to play as.
    #[arg(long, value_name = "N", default_value_t = 1)]
    user: i64,
    /// Play by script: die, revive, buy, take screenshots, close the window.
    #[arg(long)]
    scripted: bool,
    /// With --scripted: start on a ledger a scripted run left, and check the boost still runs.
    #[arg(long, requires = "scripted")]
    check_boost: bool,
    /// With --scripted: at the end, print `READY TO CLOSE` and wait for the window to be closed
    /// from outside (a window manager's close button), instead of closing it.
    #[arg(long, requires = "scripted")]
    wait_for_close: bool,
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

/// What each product does. Every handler decides first and changes the buyer after: a handler
/// that does not grant has its changes to persisted components undone, but not those to
/// resources or other entities.
fn add_arena_rules(app: &mut App) {
    app.init_resource::<Wave>()
        .persist_component::<Health>()
        .persist_component::<Gold>()
        .persist_component::<Arrows>()
        .persist_component::<GoldBoost>()
        .add_product_handler(QUIVER, |_receipt, mut player| {
            player.get_mut::<Arrows>().map(|mut a| a.0 += 25).is_some()
        })
        // Only for a player who is down when it arrives: an ally may have got them up between
        // the click and the grant. Then it is refunded, not granted for nothing nor kept pending.
        .add_product_handler(REVIVE, |_receipt, mut player| {
            let Some(mut health) = player.get_mut::<Health>() else {
                return ProductPurchaseDecision::NotProcessedYet;
            };
            if !health.downed() {
                return ProductPurchaseDecision::rejected(
                    "You were back on your feet before the Revive arrived",
                );
            }
            health.current = health.max;
            ProductPurchaseDecision::PurchaseGranted
        })
        // Stacks: each purchase adds five minutes to what is left.
        .add_product_handler(DOUBLE_GOLD, |_receipt, mut player| {
            player
                .get_mut::<GoldBoost>()
                .map(|mut boost| boost.seconds_left += BOOST_SECS)
                .is_some()
        })
        // The wave is the game's, not the buyer's: the handler decides, and a game system ends
        // the wave when it sees the flag (a resource is not rolled back, so it is set only once
        // the answer is "granted").
        .add_product_handler(SKIP_WAVE, |_receipt, mut player| {
            let fighting =
                player.world_scope(|w| w.resource::<Wave>().phase == WavePhase::Fighting);
            if !fighting {
                return ProductPurchaseDecision::rejected("The wave had already ended");
            }
            player.world_scope(|w| w.resource_mut::<Wave>().skip = true);
            ProductPurchaseDecision::PurchaseGranted
        });
}

fn main() -> AppExit {
    let cli = <Cli as clap::Parser>::parse();
    let ledger = match (&cli.ledger, cli.scripted) {
        (Some(path), _) => path.clone(),
        // A fresh ledger, so the scripted run always starts from the same balance.
        (None, true) => std::env::temp_dir().join(format!(
            "wave_arena_scripted_{}.sqlite3",
            std::process::id()
        )),
        (None, false) => PathBuf::from("wave_arena.sqlite3"),
    };
    let mut app = App::new();
    app.add_plugins((
        DefaultPlugins
            .set(WindowPlugin {
                primary_window: Some(Window {
                    title: "bevy_marketplace — Wave Arena".into(),
                    resolution: WindowResolution::new(1280, 720),
                    ..default()
                }),
                ..default()
            })
            .set(assets()),
        EguiPlugin::default(),
        MarketplacePlugin {
            starting_balance: 300,
            currency: PremiumCurrency::new("Robux", "R$"),
            allow_debug_grants: cli.debug_grants,
            ..MarketplacePlugin::default().with_ledger(LedgerBackend::sqlite(&ledger))
        },
        MarketplaceUiPlugin,
        MarketplaceDebugPanelPlugin,
        // SIGTERM (a shutdown, `kill`) saves the player as closing the window does.
        ExitOnSignal,
    ));
    add_arena_rules(&mut app);
    app.insert_resource(ClearColor(Color::srgb(0.16, 0.14, 0.20)))
        .insert_resource(PlayerUser(UserId(cli.user)))
        .init_resource::<AllyTimer>()
        .init_resource::<Controls>()
        .init_resource::<ShopOpen>()
        .add_systems(Startup, setup)
        .add_systems(
            Update,
            (
                keyboard,
                move_player,
                shoot,
                fly_arrows,
                slimes_chase,
                slimes_bite,
                ally_revives,
                knock_back_on_revive,
                boost_runs_down,
                waves,
            )
                .chain(),
        )
        .add_systems(
            EguiPrimaryContextPass,
            (hud, downed_overlay, shop_window).before(MarketplaceUiSystems::Prompt),
        );
    if cli.scripted {
        script::add_scripted_run(
            &mut app,
            cli.screenshots,
            cli.check_boost,
            cli.wait_for_close,
        );
    }
    app.run()
}

/// Who plays on this machine.
#[derive(Resource)]
struct PlayerUser(UserId);

fn setup(
    user: Res<PlayerUser>,
    mut commands: Commands,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<ColorMaterial>>,
) {
    commands.spawn(Camera2d);
    commands.spawn((
        Sprite::from_color(
            Color::srgb(0.24, 0.22, 0.30),
            ARENA * 2.0 + Vec2::splat(40.0),
        ),
        Transform::from_xyz(0.0, 0.0, -1.0),
    ));
    for (x, y) in [(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)] {
        commands.spawn((
            Mesh2d(meshes.add(Circle::new(30.0))),
            MeshMaterial2d(materials.add(Color::srgb(0.35, 0.30, 0.42))),
            Transform::from_xyz(x * (ARENA.x + 5.0), y * (ARENA.y + 5.0), -0.5),
        ));
    }
    commands.insert_resource(ArenaArt {
        slime: meshes.add(Circle::new(SLIME_RADIUS)),
        slime_color: materials.add(Color::srgb(0.45, 0.85, 0.35)),
        arrow: meshes.add(Rectangle::new(18.0, 4.0)),
        arrow_color: materials.add(Color::srgb(0.95, 0.9, 0.75)),
    });
    commands.spawn((
        Buyer::new(user.0),
        LocalPlayer,
        Health::default(),
        Gold::default(),
        Arrows::default(),
        GoldBoost::default(),
        Mesh2d(meshes.add(Circle::new(PLAYER_RADIUS))),
        MeshMaterial2d(materials.add(Color::srgb(0.25, 0.55, 0.95))),
        Transform::from_xyz(0.0, 0.0, 2.0),
    ));
}

fn keyboard(
    keys: Res<ButtonInput<KeyCode>>,
    mut controls: ResMut<Controls>,
    mut shop: ResMut<ShopOpen>,
    scripted: Option<Res<Scripted>>,
    player: Single<(Entity, &Health, Has<OpenPrompt>), With<LocalPlayer>>,
    mut prompts: MessageWriter<PromptProductPurchase>,
) {
    if scripted.is_some() {
        return; // the script plays
    }
    let (entity, health, prompting) = *player;
    let mut walk = Vec2::ZERO;
    for (keys_for, step) in [
        ([KeyCode::KeyW, KeyCode::ArrowUp], Vec2::Y),
        ([KeyCode::KeyS, KeyCode::ArrowDown], -Vec2::Y),
        ([KeyCode::KeyA, KeyCode::ArrowLeft], -Vec2::X),
        ([KeyCode::KeyD, KeyCode::ArrowRight], Vec2::X),
    ] {
        if keys.any_pressed(keys_for) {
            walk += step;
        }
    }
    controls.walk = walk;
    controls.shoot = keys.just_pressed(KeyCode::Space);
    if prompting {
        return; // Enter and Esc are the prompt's
    }
    if keys.just_pressed(KeyCode::KeyB) {
        shop.0 = !shop.0;
    }
    if keys.just_pressed(KeyCode::KeyR) && health.downed() {
        prompts.write(PromptProductPurchase {
            player: entity,
            product_id: REVIVE,
        });
    }
}

fn move_player(
    time: Res<Time>,
    controls: Res<Controls>,
    mut player: Single<(&mut Transform, &Health), With<LocalPlayer>>,
) {
    let (transform, health) = &mut *player;
    if health.downed() {
        return;
    }
    let step = controls.walk.normalize_or_zero() * PLAYER_SPEED * time.delta_secs();
    let at = (transform.translation.truncate() + step).clamp(-ARENA, ARENA);
    transform.translation = at.extend(2.0);
}

/// Space: an arrow at the nearest slime.
fn shoot(
    mut commands: Commands,
    controls: Res<Controls>,
    art: Res<ArenaArt>,
    mut player: Single<(&Transform, &Health, &mut Arrows), With<LocalPlayer>>,
    slimes: Query<&Transform, With<Slime>>,
) {
    let (transform, health, arrows) = &mut *player;
    if !controls.shoot || health.downed() || arrows.0 == 0 {
        return;
    }
    let from = transform.translation.truncate();
    let Some(target) = slimes
        .iter()
        .map(|s| s.translation.truncate())
        .min_by(|a, b| a.distance(from).total_cmp(&b.distance(from)))
    else {
        return;
    };
    arrows.0 -= 1;
    let direction = (target - from).normalize_or(Vec2::X);
    commands.spawn((
        Arrow {
            velocity: direction * ARROW_SPEED,
            seconds_left: 1.5,
        },
        Mesh2d(art.arrow.clone()),
        MeshMaterial2d(art.arrow_color.clone()),
        Transform::from_translation(from.extend(3.0))
            .with_rotation(Quat::from_rotation_z(direction.to_angle())),
    ));
}

/// Arrows fly; one that touches a slime kills it, and the slime drops Gold (twice as much under
/// Double Gold).
fn fly_arrows(
    mut commands: Commands,
    time: Res<Time>,
    mut arrows: Query<(Entity, &mut Arrow, &mut Transform), Without<Slime>>,
    slimes: Query<(Entity, &Transform), With<Slime>>,
    mut player: Single<(&mut Gold, &GoldBoost), With<LocalPlayer>>,
) {
    let (gold, boost) = &mut *player;
    let mut dead = Vec::new();
    for (entity, mut arrow, mut transform) in &mut arrows {
        let from = transform.translation.truncate();
        transform.translation += (arrow.velocity * time.delta_secs()).extend(0.0);
        arrow.seconds_left -= time.delta_secs();
        // Along the whole step: a slow frame moves an arrow further than a slime is wide.
        let to = transform.translation.truncate();
        let hit = slimes.iter().find(|(slime, s)| {
            !dead.contains(slime)
                && distance_to_segment(s.translation.truncate(), from, to) < SLIME_RADIUS + 6.0
        });
        if let Some((slime, _)) = hit {
            dead.push(slime);
            commands.entity(slime).despawn();
            gold.0 += if boost.seconds_left > 0.0 {
                2 * GOLD_PER_SLIME
            } else {
                GOLD_PER_SLIME
            };
        }
        if hit.is_some() || arrow.seconds_left <= 0.0 {
            commands.entity(entity).despawn();
        }
    }
}

fn distance_to_segment(point: Vec2, from: Vec2, to: Vec2) -> f32 {
    let step = to - from;
    let along = (point - from).dot(step) / step.length_squared().max(f32::EPSILON);
    point.distance(from + step * along.clamp(0.0, 1.0))
}

fn slimes_chase(
    time: Res<Time>,
    player: Single<(&Transform, &Health), With<LocalPlayer>>,
    mut slimes: Query<&mut Transform, (With<Slime>, Without<LocalPlayer>)>,
) {
    let (target, health) = *player;
    if health.downed() {
        return; // they lose interest in a player who is down
    }
    let target = target.translation.truncate();
    for mut slime in &mut slimes {
        let at = slime.translation.truncate();
        let step = (target - at).normalize_or_zero() * SLIME_SPEED * time.delta_secs();
        slime.translation = (at + step).extend(1.0);
    }
}

fn slimes_bite(
    time: Res<Time>,
    mut player: Single<(&Transform, &mut Health), With<LocalPlayer>>,
    slimes: Query<&Transform, With<Slime>>,
) {
    let (transform, health) = &mut *player;
    let at = transform.translation.truncate();
    let biting = slimes
        .iter()
        .filter(|s| s.translation.truncate().distance(at) < PLAYER_RADIUS + SLIME_RADIUS + 4.0)
        .count();
    if biting > 0 && !health.downed() {
        health.current =
            (health.current - SLIME_DAMAGE_PER_S * biting as f32 * time.delta_secs()).max(0.0);
    }
}

/// A player who is down is got up by an ally after [`ALLY_REVIVE_SECS`], at half Health.
fn ally_revives(
    time: Res<Time>,
    mut timer: ResMut<AllyTimer>,
    mut player: Single<&mut Health, With<LocalPlayer>>,
) {
    if !player.downed() {
        timer.0 = 0.0;
        return;
    }
    timer.0 += time.delta_secs();
    if timer.0 >= ALLY_REVIVE_SECS {
        player.current = player.max / 2.0;
        timer.0 = 0.0;
    }
}

/// Getting up (a Revive, an ally) pushes the slimes around the player back.
fn knock_back_on_revive(
    mut was_down: Local<bool>,
    player: Single<(&Transform, &Health), With<LocalPlayer>>,
    mut slimes: Query<&mut Transform, (With<Slime>, Without<LocalPlayer>)>,
) {
    let (transform, health) = *player;
    let got_up = *was_down && !health.downed();
    *was_down = health.downed();
    if !got_up {
        return;
    }
    let at = transform.translation.truncate();
    for mut slime in &mut slimes {
        let offset = slime.translation.truncate() - at;
        if offset.length() < 240.0 {
            let pushed = at + offset.normalize_or(Vec2::X) * 260.0;
            slime.translation = pushed.clamp(-ARENA, ARENA).extend(1.0);
        }
    }
}

/// Double Gold runs down while the game runs (not while it is closed: the time left is saved).
fn boost_runs_down(time: Res<Time>, mut boost: Single<&mut GoldBoost, With<LocalPlayer>>) {
    if boost.seconds_left > 0.0 {
        boost.seconds_left = (boost.seconds_left - time.delta_secs()).max(0.0);
    }
}

fn waves(
    mut commands: Commands,
    time: Res<Time>,
    mut wave: ResMut<Wave>,
    art: Res<ArenaArt>,
    slimes: Query<Entity, With<Slime>>,
) {
    match wave.phase {
        WavePhase::Fighting if wave.skip || slimes.is_empty() => {
            for slime in &slimes {
                commands.entity(slime).despawn();
            }
            wave.skip = false;
            wave.phase = WavePhase::Break(BREAK_SECS);
        }
        WavePhase::Fighting => {}
        WavePhase::Break(left) if left > 0.0 => {
            wave.phase = WavePhase::Break(left - time.delta_secs());
        }
        WavePhase::Break(_) => {
            wave.number += 1;
            wave.phase = WavePhase::Fighting;
            let count = 2 + 2 * wave.number;
            for i in 0..count {
                // Around the edge of the arena, spread evenly.
                let angle = i as f32 / count as f32 * std::f32::consts::TAU + wave.number as f32;
                let at = Vec2::new(angle.cos() * ARENA.x, angle.sin() * ARENA.y);
                commands.spawn((
                    Slime,
                    Mesh2d(art.slime.clone()),
                    MeshMaterial2d(art.slime_color.clone()),
                    Transform::from_translation(at.extend(1.0)),
                ));
            }
        }
    }
}

fn minutes(seconds: f32) -> String {
    let s = seconds.ceil() as u32;
    format!("{}:{:02}", s / 60, s % 60)
}

fn hud(
    mut contexts: EguiContexts,
    player: Single<(&Health, &Gold, &Arrows, &GoldBoost, &PremiumBalance), With<LocalPlayer>>,
    service: Res<MarketplaceService>,
    wave: Res<Wave>,
    slimes: Query<(), With<Slime>>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    let (health, gold, arrows, boost, balance) = *player;
    egui::Area::new(egui::Id::new("hud"))
        .anchor(egui::Align2::LEFT_TOP, [12.0, 12.0])
        .show(ctx, |ui| {
            egui::Frame::popup(ui.style()).show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label(egui::RichText::new("Health").strong());
                    let fraction = health.current / health.max;
                    ui.add(
                        egui::ProgressBar::new(fraction)
                            .desired_width(160.0)
                            .fill(if fraction < 0.4 {
                                egui::Color32::from_rgb(210, 60, 60)
                            } else {
                                egui::Color32::from_rgb(70, 170, 80)
                            })
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
                    if boost.seconds_left > 0.0 {
                        ui.separator();
                        ui.label(
                            egui::RichText::new(format!(
                                "Double Gold {}",
                                minutes(boost.seconds_left)
                            ))
                            .color(egui::Color32::from_rgb(255, 180, 60))
                            .strong(),
                        );
                    }
                });
            });
        });
    let banner = match wave.phase {
        WavePhase::Fighting => match slimes.iter().count() {
            1 => format!("Wave {} — 1 slime left", wave.number),
            left => format!("Wave {} — {left} slimes left", wave.number),
        },
        WavePhase::Break(left) => {
            format!(
                "Wave {} cleared — the next in {:.0} s",
                wave.number,
                left.max(0.0).ceil()
            )
        }
    };
    egui::Area::new(egui::Id::new("wave"))
        .anchor(egui::Align2::CENTER_TOP, [0.0, 60.0])
        .show(ctx, |ui| {
            ui.add(
                egui::Label::new(
                    egui::RichText::new(banner)
                        .size(22.0)
                        .strong()
                        .color(egui::Color32::WHITE),
                )
                .extend(),
            );
        });
    egui::Area::new(egui::Id::new("controls"))
        .anchor(egui::Align2::LEFT_BOTTOM, [12.0, -12.0])
        .show(ctx, |ui| {
            ui.label(
                egui::RichText::new(
                    "WASD: walk   Space: shoot   B: shop   R: Revive (when down)   F1: debug panel",
                )
                .color(egui::Color32::from_gray(235)),
            );
        });
    Ok(())
}

/// Down: what an ally will do, and the Revive on offer.
fn downed_overlay(
    mut contexts: EguiContexts,
    player: Single<(Entity, &Health, Has<OpenPrompt>), With<LocalPlayer>>,
    timer: Res<AllyTimer>,
    service: Res<MarketplaceService>,
    mut prompts: MessageWriter<PromptProductPurchase>,
) -> Result {
    let (entity, health, prompting) = *player;
    if !health.downed() {
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    let price = service.get_product_info(REVIVE).map_or(0, |p| p.price);
    egui::Area::new(egui::Id::new("downed"))
        .anchor(egui::Align2::CENTER_CENTER, [0.0, -140.0])
        .show(ctx, |ui| {
            egui::Frame::popup(ui.style()).show(ui, |ui| {
                ui.vertical_centered(|ui| {
                    ui.label(
                        egui::RichText::new("You are down!")
                            .size(26.0)
                            .strong()
                            .color(egui::Color32::from_rgb(235, 80, 80)),
                    );
                    ui.label(format!(
                        "An ally gets you up in {:.0} s",
                        (ALLY_REVIVE_SECS - timer.0).max(0.0).ceil()
                    ));
                    let revive = ui.add_enabled(
                        !prompting,
                        egui::Button::new(
                            egui::RichText::new(format!(
                                "Revive now  {}  (R)",
                                service.currency().format(price)
                            ))
                            .strong(),
                        ),
                    );
                    if revive.clicked() {
                        prompts.write(PromptProductPurchase {
                            player: entity,
                            product_id: REVIVE,
                        });
                    }
                });
            });
        });
    Ok(())
}

fn shop_window(
    mut contexts: EguiContexts,
    mut shop: ResMut<ShopOpen>,
    service: Res<MarketplaceService>,
    icons: Res<ProductIcons>,
    wave: Res<Wave>,
    player: Single<(Entity, &Health), With<LocalPlayer>>,
    mut prompts: MessageWriter<PromptProductPurchase>,
) -> Result {
    if !shop.0 {
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    let (entity, health) = *player;
    let mut open = true;
    egui::Window::new("Arena shop")
        .open(&mut open)
        .collapsible(false)
        .resizable(false)
        .default_width(480.0)
        .anchor(egui::Align2::RIGHT_CENTER, [-30.0, 20.0])
        .show(ctx, |ui| {
            for product in service.get_developer_products().current_page() {
                // What can be bought now; the handlers check again when the purchase arrives.
                let why_not = match product.product_id {
                    REVIVE if !health.downed() => Some("only while down"),
                    SKIP_WAVE if wave.phase != WavePhase::Fighting => Some("between waves"),
                    _ => None,
                };
                ui.horizontal(|ui| {
                    let size = egui::Vec2::splat(48.0);
                    if let Some(texture) = product.icon.as_deref().and_then(|p| icons.texture(p)) {
                        ui.add(egui::Image::new((texture, size)));
                    }
                    ui.vertical(|ui| {
                        ui.set_max_width(280.0);
                        ui.label(egui::RichText::new(&product.name).strong().size(16.0));
                        if let Some(d) = &product.description {
                            ui.label(egui::RichText::new(d).small());
                        }
                    });
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        let label = match why_not {
                            Some(why) => why.to_owned(),
                            None => format!("Buy  {}", service.currency().format(product.price)),
                        };
                        if ui
                            .add_enabled(why_not.is_none(), egui::Button::new(label))
                            .clicked()
                        {
                            prompts.write(PromptProductPurchase {
                                player: entity,
                                product_id: product.product_id,
                            });
                        }
                    });
                });
                ui.separator();
            }
            ui.label(egui::RichText::new("B: close the shop").small());
        });
    if !open {
        shop.0 = false;
    }
    Ok(())
}
