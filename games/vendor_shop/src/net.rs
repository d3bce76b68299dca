//! The shop over the network: `--server PORT` runs the ledger and the handlers without a window
//! (`--host PORT` runs them in the game's own window, its player playing there too);
//! `--client IP:PORT --user N` is the game in a window, whose purchases the server charges and
//! grants. Everyone sees where the others walk; each client sees only its own prompts, balance,
//! Gold and Arrows.

#[path = "../../../examples/common/net_demo.rs"]
mod net_demo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy::state::app::StatesPlugin;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, egui};
use bevy_marketplace::net::{
    BuyerClient, LocalBuyer, MarketplaceClientPlugin, MarketplaceServerPlugin,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::ui::MarketplaceUiSystems;
use bevy_marketplace::{PromptAction, PromptAnswer, PromptState, PurchaseError};
use bevy_replicon::prelude::*;
use bevy_replicon::shared::backend::connected_client::NetworkId;
use bevy_replicon_renet::RepliconRenetPlugins;
use serde::{Deserialize, Serialize};

use crate::{
    ARROWS, Arrows, GOLD_POUCH, Gold, Health, LocalPlayer, Me, Shop, VENDOR_AT, WalkInput,
    near_vendor,
};

/// Server → the owning client: its player's game state, whenever a grant or refund changes it.
#[derive(Message, Clone, Copy, Debug, Serialize, Deserialize)]
struct PlayerStats {
    gold: u64,
    arrows: u32,
    /// Set when the server changed Health (a Full Heal).
    health: Option<f32>,
}

/// A player as everyone sees them: who, and where they stand (replicated to every client).
#[derive(Component, Clone, Copy, Debug, Serialize, Deserialize)]
struct Avatar {
    user: i64,
    at: [f32; 2],
}

/// Client → server: where this client's player walked to.
#[derive(Message, Clone, Copy, Debug, Serialize, Deserialize)]
struct Walked {
    at: [f32; 2],
}

/// The game's own network messages, registered after the marketplace's on both sides.
fn add_game_protocol(app: &mut App) {
    app.add_server_message::<PlayerStats>(Channel::Ordered)
        .add_client_message::<Walked>(Channel::Unreliable)
        .replicate::<Avatar>();
}

/// The dedicated server: the ledger, the handlers and the catalog (from `assets/products.ron`),
/// no window. SIGINT or SIGTERM saves every player and ends it.
pub fn run_server(port: u16, ledger: &Path) -> AppExit {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_millis(5))),
        // Warnings and errors (a broken catalog edit, a distrusted client) reach the server's log.
        bevy::log::LogPlugin::default(),
        // Watches `assets/`: an edited catalog reaches every client at once.
        crate::assets(),
        StatesPlugin,
        crate::marketplace(ledger, false),
        ExitOnSignal,
    ));
    crate::add_shop_rules(&mut app);
    // The prompt's top-up button on a client lands here: the server credits.
    app.add_systems(Update, crate::demo_store);
    add_server(&mut app, port);
    app.run()
}

/// `--host PORT`: the windowed game, with its ledger, is also the server (a listen server). Its
/// own player plays in this window; clients join as they would a dedicated server.
pub fn add_host(app: &mut App, port: u16) {
    add_server(app, port);
    app.add_observer(
        |add: On<Add, LocalPlayer>, me: Res<Me>, mut commands: Commands| {
            commands.entity(add.entity).insert((
                Replicated,
                Avatar {
                    user: me.user.0,
                    at: crate::start(me.user).into(),
                },
            ));
        },
    )
    .add_systems(Update, host_avatar_follows.after(crate::walk));
    show_other_players(app);
}

/// Draws the other players where their replicated `Avatar` says, with their names.
fn show_other_players(app: &mut App) {
    app.add_observer(show_other_player)
        .add_systems(Update, move_other_players)
        .add_systems(
            EguiPrimaryContextPass,
            label_other_players.before(MarketplaceUiSystems::Prompt),
        );
}

/// The server half, with or without a window: replicon over UDP, the marketplace's server half,
/// and the game's players as clients join and leave.
fn add_server(app: &mut App, port: u16) {
    app.add_plugins((
        RepliconPlugins,
        RepliconRenetPlugins,
        MarketplaceServerPlugin,
    ));
    add_game_protocol(app);
    app.add_observer(spawn_player_of_client)
        .add_observer(net_demo::despawn_player_of_client)
        .add_systems(
            Startup,
            move |mut commands: Commands, channels: Res<RepliconChannels>| {
                net_demo::start_server(&mut commands, &channels, port)
            },
        )
        .add_systems(Update, (net_demo::report_grants, apply_walks))
        .add_systems(PostUpdate, send_player_stats.before(ServerSystems::Send));
}

fn host_avatar_follows(mut host: Single<(&Transform, &mut Avatar), With<LocalPlayer>>) {
    let at = host.0.translation.truncate().into();
    if host.1.at != at {
        host.1.at = at;
    }
}

/// A client was authorized: its player joins, owned by it, and loads from the ledger.
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
        Health::default(),
        Gold::default(),
        Arrows::default(),
        BuyerClient(add.entity),
        Replicated,
        Avatar {
            user: user.0,
            at: crate::start(user).into(),
        },
    ));
    println!("SERVER player {user} joined");
}

fn apply_walks(
    mut walks: MessageReader<FromClient<Walked>>,
    mut avatars: Query<(&BuyerClient, &mut Avatar)>,
) {
    for FromClient { client_id, message } in walks.read() {
        let owned = avatars
            .iter_mut()
            .find(|(owner, _)| Some(owner.0) == client_id.entity());
        if let Some((_, mut avatar)) = owned {
            avatar.at = Vec2::from(message.at)
                .clamp(-crate::ARENA, crate::ARENA)
                .into();
        }
    }
}

#[allow(clippy::type_complexity)]
fn send_player_stats(
    players: Query<(&BuyerClient, Ref<Gold>, Ref<Arrows>, Ref<Health>)>,
    mut stats: MessageWriter<ToClients<PlayerStats>>,
) {
    for (owner, gold, arrows, health) in &players {
        if gold.is_changed() || arrows.is_changed() || health.is_changed() {
            stats.write(ToClients {
                targets: SendTargets::Single(ClientId::Client(owner.0)),
                message: PlayerStats {
                    gold: gold.0,
                    arrows: arrows.0,
                    health: health.is_changed().then_some(health.current),
                },
            });
        }
    }
}

/// The client: the marketplace's client half instead of the ledger, connected to `server`.
pub fn add_client(app: &mut App, server: SocketAddr) {
    app.add_plugins((
        RepliconPlugins,
        RepliconRenetPlugins,
        MarketplaceClientPlugin,
        MarketplaceUiPlugin,
        // Ctrl-C exits like closing the window: the client says goodbye, so the server sees the
        // player leave at once (not after netcode's timeout) and they can join again right away.
        ExitOnSignal,
    ));
    add_game_protocol(app);
    app.add_observer(|add: On<Add, LocalPlayer>, mut commands: Commands| {
        // The server's answers about this client's player land on the player it walks.
        commands.entity(add.entity).insert(LocalBuyer);
    })
    .add_systems(
        Startup,
        move |me: Res<Me>, mut commands: Commands, channels: Res<RepliconChannels>| {
            net_demo::start_client(&mut commands, &channels, server, me.user.0 as u64)
        },
    )
    .add_systems(
        PreUpdate,
        apply_player_stats
            .after(ClientSystems::Receive)
            .run_if(in_state(ClientState::Connected)),
    )
    .add_systems(
        Update,
        send_walk
            .after(crate::walk)
            .run_if(in_state(ClientState::Connected)),
    );
    show_other_players(app);
}

fn send_walk(
    player: Single<&Transform, With<LocalPlayer>>,
    mut last: Local<Option<Vec2>>,
    mut walked: MessageWriter<Walked>,
) {
    let at = player.translation.truncate();
    if last.is_none_or(|last| last.distance(at) > 0.5) {
        *last = Some(at);
        walked.write(Walked { at: at.into() });
    }
}

/// Another player appeared: draw them (this client's own player is drawn already).
fn show_other_player(
    add: On<Add, Avatar>,
    me: Res<Me>,
    avatars: Query<&Avatar>,
    mut commands: Commands,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<ColorMaterial>>,
) {
    let Ok(avatar) = avatars.get(add.entity) else {
        return;
    };
    if avatar.user == me.user.0 {
        return;
    }
    commands.entity(add.entity).insert((
        Mesh2d(meshes.add(Circle::new(20.0))),
        MeshMaterial2d(materials.add(Color::srgb(0.85, 0.35, 0.75))),
        Transform::from_translation(Vec2::from(avatar.at).extend(1.5)),
    ));
}

fn move_other_players(mut others: Query<(&Avatar, &mut Transform), Changed<Avatar>>) {
    for (avatar, mut transform) in &mut others {
        transform.translation = Vec2::from(avatar.at).extend(1.5);
    }
}

fn label_other_players(
    mut contexts: EguiContexts,
    camera: Single<(&Camera, &GlobalTransform)>,
    others: Query<(&Avatar, &Transform)>,
    me: Res<Me>,
) -> Result {
    let painter = contexts
        .ctx_mut()?
        .layer_painter(egui::LayerId::background());
    for (avatar, transform) in others.iter().filter(|(a, _)| a.user != me.user.0) {
        crate::world_label(
            &painter,
            *camera,
            transform.translation.truncate() + Vec2::new(0.0, 34.0),
            &format!("Player {}", avatar.user),
            15.0,
            egui::Color32::WHITE,
        );
    }
    Ok(())
}

fn apply_player_stats(
    mut stats: MessageReader<PlayerStats>,
    player: Single<(&mut Gold, &mut Arrows, &mut Health), With<LocalPlayer>>,
) {
    let (mut gold, mut arrows, mut health) = player.into_inner();
    for update in stats.read() {
        gold.0 = update.gold;
        arrows.0 = update.arrows;
        if let Some(current) = update.health {
            health.current = current;
        }
    }
}

// ------------------------------------------------------------------ scripted client (CI)

/// `--client … --scripted`: walks to the vendor, buys `product` through the prompt, checks the
/// server granted it, takes two screenshots (`client<user>_prompt.png`, `client<user>_done.png`
/// in `dir`) and exits 0.
pub fn add_scripted_client(app: &mut App, dir: PathBuf, product: ProductId, hasty: bool) {
    app.insert_resource(crate::Scripted)
        .insert_resource(ClientScript {
            step: ClientStep::WaitForServer,
            frames: 0,
            started: Instant::now(),
            asked: None,
            dir,
            product,
            before: (0, 0),
            hasty,
        })
        .add_systems(Update, run_client_script.before(crate::keyboard_walk));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientStep {
    WaitForServer,
    WalkToVendor,
    Buy,
    ShootPrompt,
    ShootPurchased,
    WaitForGrant,
    /// A hasty player: Buy again, then Cancel and Buy in one frame.
    CancelAndBuy,
    /// Nothing more may be bought.
    ExpectNoPurchase,
    Done,
}

#[derive(Resource)]
struct ClientScript {
    step: ClientStep,
    frames: u32,
    started: Instant,
    /// When the shop's Buy button was pressed.
    asked: Option<Instant>,
    dir: PathBuf,
    product: ProductId,
    /// Gold and Arrows before the purchase.
    before: (u64, u32),
    /// Double-click Buy, and press Cancel and Buy in one frame on a second prompt.
    hasty: bool,
}

impl ClientScript {
    fn next(&mut self, step: ClientStep) {
        println!("client script: {:?} -> {step:?}", self.step);
        self.step = step;
        self.frames = 0;
    }
}

#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn run_client_script(
    mut script: ResMut<ClientScript>,
    me: Res<Me>,
    mut commands: Commands,
    mut walk: ResMut<WalkInput>,
    mut shop: ResMut<Shop>,
    service: Res<MarketplaceService>,
    icons: Res<ProductIcons>,
    player: Single<(Entity, &Transform, &Gold, &Arrows, Option<&OpenPrompt>), With<LocalPlayer>>,
    mut prompts: MessageWriter<PromptProductPurchase>,
    mut answers: MessageWriter<PromptAnswer>,
    mut resolved: MessageReader<ReceiptResolved>,
    mut refused: MessageReader<PurchaseFailed>,
    mut exit: MessageWriter<AppExit>,
) {
    let (entity, transform, gold, arrows, prompt) = *player;
    let user = me.user;
    if let Some(refusal) = refused.read().last()
        && script.step == ClientStep::ShootPrompt
        && prompt.is_none()
    {
        // No prompt was made (asked too often, or still loading): press Buy again later.
        println!("CLIENT {user}: refused: {}; buying again", refusal.error);
        script.next(ClientStep::Buy);
    }
    for r in resolved.read() {
        println!(
            "CLIENT {user}: ReceiptResolved {} (product {})",
            r.receipt.purchase_id, r.receipt.product_id
        );
    }
    script.frames += 1;
    if script.started.elapsed() > Duration::from_secs(240) {
        eprintln!("CLIENT {user}: timed out in step {:?}", script.step);
        exit.write(AppExit::error());
        return;
    }
    let shot = |name: &str| format!("client{}_{name}.png", user.0);
    match script.step {
        ClientStep::WaitForServer => {
            std::fs::create_dir_all(&script.dir).expect("create the screenshot directory");
            // The catalog came from the server, and its icons are on screen.
            if service.get_product_info(script.product).is_ok()
                && icons.texture("icons/full_heal.png").is_some()
                && script.frames > 20
            {
                script.before = (gold.0, arrows.0);
                script.next(ClientStep::WalkToVendor);
            }
        }
        ClientStep::WalkToVendor => {
            let at = transform.translation.truncate();
            // Players stand side by side at the stall.
            let spot = match user.0 {
                1 => Vec2::new(-60.0, 0.0),
                2 => Vec2::new(-40.0, -70.0),
                _ => Vec2::new(-80.0, -60.0),
            };
            walk.0 = (VENDOR_AT + spot) - at;
            if near_vendor(at) {
                walk.0 = Vec2::ZERO;
                shop.open = true; // what pressing E does
                script.next(ClientStep::Buy);
            }
        }
        ClientStep::Buy => {
            // The first time after the shop opened; again a second later after a refusal.
            let wait = if script.asked.is_none() { 20 } else { 60 };
            if script.frames >= wait && prompt.is_none() {
                // What the shop's "Buy" button sends; the server opens the prompt.
                prompts.write(PromptProductPurchase {
                    player: entity,
                    product_id: script.product,
                });
                script.asked = Some(Instant::now());
                script.next(ClientStep::ShootPrompt);
            }
        }
        ClientStep::ShootPrompt => {
            if prompt.is_some_and(|p| p.state == PromptState::AwaitingConfirmation) {
                if script.frames == 15 {
                    crate::script::shoot(&mut commands, &script.dir, &shot("prompt"));
                }
                if script.frames >= 30 {
                    // What the prompt's "Buy" button sends (twice, for a double click).
                    for _ in 0..if script.hasty { 2 } else { 1 } {
                        answers.write(PromptAnswer {
                            player: entity,
                            prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                            action: PromptAction::Confirm,
                        });
                    }
                    script.asked = Some(Instant::now());
                    script.next(ClientStep::ShootPurchased);
                }
            } else if let Some(PromptState::Failed(e)) = prompt.map(|p| &p.state) {
                if !matches!(
                    e,
                    PurchaseError::ProfileNotReady | PurchaseError::Unavailable(_)
                ) {
                    eprintln!("CLIENT {user}: the prompt failed: {e}");
                    exit.write(AppExit::error());
                    return;
                }
                // The server is still loading this player, or its ledger is busy: close the
                // prompt and press Buy again, as a player would.
                println!("CLIENT {user}: {e}; buying again");
                answers.write(PromptAnswer {
                    player: entity,
                    prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                    action: PromptAction::Close,
                });
                script.next(ClientStep::Buy);
            } else {
                script.frames = 0;
            }
        }
        ClientStep::ShootPurchased => match prompt.map(|p| &p.state) {
            Some(PromptState::Purchased(_)) => {
                if script.frames == 1
                    && let Some(asked) = script.asked
                {
                    println!(
                        "CLIENT {user}: Purchase successful {:.1} ms after the prompt's Buy was pressed",
                        asked.elapsed().as_secs_f64() * 1e3
                    );
                }
                if script.frames == 10 {
                    crate::script::shoot(&mut commands, &script.dir, &shot("done"));
                }
                if script.frames >= 25 {
                    answers.write(PromptAnswer {
                        player: entity,
                        prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                        action: PromptAction::Close,
                    });
                    script.next(ClientStep::WaitForGrant);
                }
            }
            Some(PromptState::Failed(e)) => {
                eprintln!("CLIENT {user}: the purchase failed: {e}");
                exit.write(AppExit::error());
            }
            _ => script.frames = 0,
        },
        ClientStep::WaitForGrant => {
            let (gold_before, arrows_before) = script.before;
            let granted = match script.product {
                GOLD_POUCH => gold.0 == gold_before + 100,
                ARROWS => arrows.0 == arrows_before + 20,
                _ => true,
            };
            if prompt.is_none() && granted {
                println!(
                    "CLIENT {user}: the server granted it: Gold {gold_before} -> {}, Arrows {arrows_before} -> {}",
                    gold.0, arrows.0
                );
                script.before = (gold.0, arrows.0);
                let next = if script.hasty {
                    ClientStep::CancelAndBuy
                } else {
                    ClientStep::Done
                };
                script.next(next);
            }
        }
        ClientStep::CancelAndBuy => match prompt {
            None if script.frames == 20 => {
                prompts.write(PromptProductPurchase {
                    player: entity,
                    product_id: script.product,
                });
            }
            Some(p) if p.state == PromptState::AwaitingConfirmation => {
                // Cancel and Buy in one frame: the first answer closes the prompt.
                for action in [PromptAction::Cancel, PromptAction::Confirm] {
                    answers.write(PromptAnswer {
                        player: entity,
                        prompt: p.id,
                        action,
                    });
                }
                println!("CLIENT {user}: pressed Cancel and Buy in one frame");
                script.next(ClientStep::ExpectNoPurchase);
            }
            None if script.frames > 600 => {
                eprintln!("CLIENT {user}: no second prompt");
                exit.write(AppExit::error());
            }
            _ => {}
        },
        ClientStep::ExpectNoPurchase => {
            let (gold_before, arrows_before) = script.before;
            if (gold.0, arrows.0) != (gold_before, arrows_before) {
                eprintln!("CLIENT {user}: the cancelled prompt bought something");
                exit.write(AppExit::error());
            } else if prompt.is_none() && script.frames > 120 {
                println!("CLIENT {user}: SCREENS SHOWED 1 purchase");
                script.next(ClientStep::Done);
            }
        }
        ClientStep::Done => {
            let shots = [shot("prompt"), shot("done")];
            if shots.iter().all(|n| script.dir.join(n).exists()) {
                println!("CLIENT {user}: SCRIPTED RUN OK");
                exit.write(AppExit::Success);
            }
        }
    }
}
