//! The scripted runs CI plays in a window under Xvfb: `--print-state` for scripts that drive the
//! window from outside, and `--scripted`, which plays by itself and takes the screenshots.

use std::path::{Path, PathBuf};

use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, save_to_disk};
use bevy_marketplace::prelude::*;
use bevy_marketplace::ui::DebugPanel;
use bevy_marketplace::{PromptAction, PromptAnswer, PromptState};

use crate::{
    ARROWS, Arrows, FULL_HEAL, GOLD_CHEST, GOLD_POUCH, Gold, Health, Shop, VENDOR_AT, WalkInput,
    near_vendor,
};

/// `--print-state`: what a script outside the game reads.
/// `--print-state` (and `--exit-when-active`): prints the player's state for a script outside.
pub(crate) fn add_state_report(app: &mut App, exit_when_active: bool) {
    app.insert_resource(StateReport {
        started: std::time::Instant::now(),
        exit_when_active,
    })
    .add_systems(Update, report_state);
}

/// `--scripted`: plays by itself, takes the screenshots into `dir`, and exits 0 when all went
/// as it should.
pub(crate) fn add_scripted_run(app: &mut App, dir: PathBuf) {
    app.insert_resource(crate::Scripted)
        .insert_resource(Script {
            step: Step::WaitForGame,
            frames: 0,
            total_frames: 0,
            dir,
            balance_before: 0,
            gold_before_refund: 0,
            history: None,
        })
        .add_systems(Update, run_script.before(crate::keyboard_walk));
}

/// Saves a screenshot of the window to `dir/name`.
pub(crate) fn shoot(commands: &mut Commands, dir: &Path, name: &str) {
    commands
        .spawn(Screenshot::primary_window())
        .observe(save_to_disk(dir.join(name)));
}

#[derive(Resource)]
struct StateReport {
    started: std::time::Instant,
    exit_when_active: bool,
}

/// Prints `ACTIVE after N ms: …` once the player's session is loaded, then `STATE …` whenever
/// their persisted state changes.
fn report_state(
    report: Res<StateReport>,
    player: Single<
        (
            &Gold,
            &Arrows,
            &PremiumBalance,
            &bevy_marketplace::PlayerSession,
        ),
        With<LocalPlayer>,
    >,
    mut last: Local<Option<(u64, u32, u64)>>,
    mut exit: MessageWriter<AppExit>,
) {
    let (gold, arrows, balance, session) = *player;
    if !session.is_active() {
        return;
    }
    let now = (gold.0, arrows.0, balance.0);
    match *last {
        None => println!(
            "ACTIVE after {} ms: gold={} arrows={} balance={}",
            report.started.elapsed().as_millis(),
            now.0,
            now.1,
            now.2
        ),
        Some(before) if before != now => {
            println!("STATE gold={} arrows={} balance={}", now.0, now.1, now.2)
        }
        _ => {}
    }
    *last = Some(now);
    if report.exit_when_active {
        exit.write(AppExit::Success);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    WaitForGame,
    WalkToVendor,
    OpenShop,
    ShootShop,
    Buy,
    ShootPrompt,
    Confirm,
    ShootPurchased,
    CloseAndCheck,
    ShootDebugPanel,
    /// Buys the products of `MORE` in turn (through the prompt), for the sales chart.
    BuyMore(usize),
    /// Refunds the newest Gold Pouch from the panel's history and checks the Gold went back.
    Refund,
    /// Prompts for a Gold Chest the player cannot afford, shoots the offer, takes the top-up.
    TopUp,
    ShootReports,
    Done,
}

/// What the scripted run buys after the potion, for the sales chart.
const MORE: [ProductId; 3] = [GOLD_POUCH, ARROWS, GOLD_POUCH];

#[derive(Resource)]
struct Script {
    step: Step,
    frames: u32,
    total_frames: u32,
    dir: PathBuf,
    balance_before: u64,
    gold_before_refund: u64,
    /// The newest page of purchase history the debug panel asked for.
    history: Option<bevy_marketplace::ledger::HistoryPage>,
}

impl Script {
    fn next(&mut self, step: Step) {
        println!("script: {:?} -> {step:?}", self.step);
        self.step = step;
        self.frames = 0;
    }

    fn shoot(&self, commands: &mut Commands, name: &str) {
        shoot(commands, &self.dir, name);
    }
}

#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn run_script(
    mut script: ResMut<Script>,
    mut commands: Commands,
    mut walk: ResMut<WalkInput>,
    mut shop: ResMut<Shop>,
    mut panel: ResMut<DebugPanel>,
    icons: Res<ProductIcons>,
    player: Single<
        (
            Entity,
            &Transform,
            &Health,
            &Gold,
            &PremiumBalance,
            Option<&OpenPrompt>,
            &bevy_marketplace::PlayerSession,
        ),
        With<LocalPlayer>,
    >,
    mut prompts: MessageWriter<PromptProductPurchase>,
    mut answers: MessageWriter<PromptAnswer>,
    mut exit: MessageWriter<AppExit>,
    mut service: ResMut<MarketplaceService>,
    mut history: MessageReader<bevy_marketplace::PurchaseHistoryReady>,
) {
    let (entity, transform, health, gold, balance, prompt, session) = *player;
    if let Some(page) = history.read().filter_map(|a| a.result.clone().ok()).last() {
        script.history = Some(page);
    }
    script.frames += 1;
    script.total_frames += 1;
    if script.total_frames > 3000 {
        eprintln!("script: timed out in step {:?}", script.step);
        exit.write(AppExit::error());
        return;
    }
    match script.step {
        Step::WaitForGame => {
            std::fs::create_dir_all(&script.dir).expect("create the screenshot directory");
            if session.is_active()
                && icons.texture("icons/full_heal.png").is_some()
                && script.frames > 20
            {
                script.balance_before = balance.0;
                script.next(Step::WalkToVendor);
            }
        }
        Step::WalkToVendor => {
            let at = transform.translation.truncate();
            walk.0 = (VENDOR_AT - Vec2::new(60.0, 0.0)) - at;
            if near_vendor(at) {
                walk.0 = Vec2::ZERO;
                script.next(Step::OpenShop);
            }
        }
        Step::OpenShop => {
            shop.open = true; // what pressing E does
            script.next(Step::ShootShop);
        }
        Step::ShootShop => {
            if script.frames == 15 {
                script.shoot(&mut commands, "vendor_shop.png");
            }
            if script.frames == 30 {
                script.next(Step::Buy);
            }
        }
        Step::Buy => {
            // What the shop's "Buy" button on Full Heal sends.
            prompts.write(PromptProductPurchase {
                player: entity,
                product_id: FULL_HEAL,
            });
            script.next(Step::ShootPrompt);
        }
        Step::ShootPrompt => {
            if prompt.is_some_and(|p| p.state == PromptState::AwaitingConfirmation) {
                if script.frames == 15 {
                    script.shoot(&mut commands, "purchase_prompt.png");
                }
                if script.frames >= 30 {
                    script.next(Step::Confirm);
                }
            } else {
                script.frames = 0;
            }
        }
        Step::Confirm => {
            // What the prompt's "Buy" button sends.
            answers.write(PromptAnswer {
                player: entity,
                prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                action: PromptAction::Confirm,
            });
            script.next(Step::ShootPurchased);
        }
        Step::ShootPurchased => {
            if prompt.is_some_and(|p| matches!(p.state, PromptState::Purchased(_))) {
                if script.frames == 10 {
                    script.shoot(&mut commands, "purchase_done.png");
                }
                if script.frames >= 25 {
                    answers.write(PromptAnswer {
                        player: entity,
                        prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                        action: PromptAction::Close,
                    });
                    script.next(Step::CloseAndCheck);
                }
            } else if let Some(PromptState::Failed(e)) = prompt.map(|p| &p.state) {
                eprintln!("script: the purchase failed: {e}");
                exit.write(AppExit::error());
            } else {
                script.frames = 0;
            }
        }
        Step::CloseAndCheck => {
            // Granted and committed: healed, prompt closed, nothing left to commit.
            if prompt.is_none()
                && health.current >= health.max
                && session.uncommitted_grants().is_empty()
            {
                let paid = script.balance_before - balance.0;
                assert_eq!(health.current, health.max, "the potion healed to full");
                assert_eq!(paid, 50, "the potion cost R$ 50");
                println!(
                    "script: Full Heal granted; Health {}/{}; paid R$ {paid}",
                    health.current, health.max
                );
                shop.open = false;
                panel.open = true;
                script.next(Step::ShootDebugPanel);
            }
        }
        Step::ShootDebugPanel => {
            if script.frames == 15 {
                script.shoot(&mut commands, "debug_panel.png");
            }
            if script.frames == 40 {
                script.next(Step::BuyMore(0));
            }
        }
        Step::BuyMore(i) => match prompt.map(|p| &p.state) {
            None if script.frames == 1 => {
                prompts.write(PromptProductPurchase {
                    player: entity,
                    product_id: MORE[i],
                });
            }
            None if script.frames > 5 && session.uncommitted_grants().is_empty() => {
                if i + 1 < MORE.len() {
                    script.next(Step::BuyMore(i + 1));
                } else {
                    script.gold_before_refund = gold.0;
                    script.next(Step::Refund);
                }
            }
            Some(PromptState::AwaitingConfirmation) => {
                answers.write(PromptAnswer {
                    player: entity,
                    prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                    action: PromptAction::Confirm,
                });
            }
            Some(PromptState::Purchased(_)) => {
                answers.write(PromptAnswer {
                    player: entity,
                    prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                    action: PromptAction::Close,
                });
            }
            Some(PromptState::Failed(e)) => {
                eprintln!("script: buying {} failed: {e}", MORE[i]);
                exit.write(AppExit::error());
            }
            _ => {}
        },
        Step::Refund => {
            panel.show_history = true;
            panel.show_sales = true;
            if script.frames == 30 {
                // What the history window's Refund button on the newest Gold Pouch sends.
                let newest = script
                    .history
                    .iter()
                    .flat_map(|page| page.entries.iter())
                    .find(|entry| entry.receipt.product_id == GOLD_POUCH && entry.refund.is_none())
                    .map(|entry| entry.receipt.purchase_id.clone());
                match newest {
                    Some(id) => service.refund(id, "scripted run"),
                    None => {
                        eprintln!("script: the history shows no Gold Pouch");
                        exit.write(AppExit::error());
                    }
                }
            }
            if script.frames > 30 && gold.0 + 100 == script.gold_before_refund {
                println!(
                    "script: Gold Pouch refunded; Gold {} -> {}",
                    script.gold_before_refund, gold.0
                );
                script.balance_before = balance.0;
                panel.open = false;
                script.next(Step::TopUp);
            }
        }
        Step::TopUp => {
            if script.frames == 1 {
                prompts.write(PromptProductPurchase {
                    player: entity,
                    product_id: GOLD_CHEST,
                });
            }
            let short = prompt.is_some_and(|p| {
                matches!(
                    p.state,
                    PromptState::Failed(bevy_marketplace::PurchaseError::NotEnoughFunds { .. })
                )
            });
            if short && script.frames == 15 {
                script.shoot(&mut commands, "top_up_offer.png");
            }
            if short && script.frames == 30 {
                // What the prompt's "Buy R$ 500" button sends.
                answers.write(PromptAnswer {
                    player: entity,
                    prompt: prompt.map_or(bevy_marketplace::PromptId(0), |p| p.id),
                    action: PromptAction::TopUp,
                });
            }
            if prompt.is_none() && balance.0 == script.balance_before + 500 {
                println!(
                    "script: topped up R$ 500 from the prompt; balance {}",
                    balance.0
                );
                panel.open = true;
                script.next(Step::ShootReports);
            }
        }
        Step::ShootReports => {
            if script.frames == 40 {
                script.shoot(&mut commands, "debug_reports.png");
            }
            if script.frames == 60 {
                script.next(Step::Done);
            }
        }
        Step::Done => {
            let names = [
                "vendor_shop.png",
                "purchase_prompt.png",
                "purchase_done.png",
                "debug_panel.png",
                "top_up_offer.png",
                "debug_reports.png",
            ];
            if names.iter().all(|n| script.dir.join(n).exists()) {
                println!("SCRIPTED RUN OK: screenshots in {}", script.dir.display());
                exit.write(AppExit::Success);
            } else if script.frames > 300 {
                eprintln!("script: screenshots were not written");
                exit.write(AppExit::error());
            }
        }
    }
}
