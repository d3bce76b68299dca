//! The scripted runs CI plays in a window under Xvfb. `--scripted` dies, buys a Revive, buys one
//! an ally makes pointless before it arrives (and sees it refunded), buys a Skip Wave and Double
//! Gold, and closes its window; `--scripted --check-boost` starts again on the same ledger and
//! sees the boost still running. Both take screenshots and exit 0 when all went as it should.

use std::path::{Path, PathBuf};

use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, save_to_disk};
use bevy::window::{PrimaryWindow, WindowCloseRequested};
use bevy_marketplace::prelude::*;
use bevy_marketplace::{PromptAction, PromptAnswer, PromptId, PromptState};

use crate::{
    ALLY_REVIVE_SECS, AllyTimer, BOOST_SECS, Controls, DOUBLE_GOLD, GoldBoost, Health, REVIVE,
    SKIP_WAVE, Slime, Wave, WavePhase,
};

/// Adds the scripted run: `check_boost` for the run after a restart; `wait_for_close` to leave
/// closing the window to the caller.
pub(crate) fn add_scripted_run(
    app: &mut App,
    dir: PathBuf,
    check_boost: bool,
    wait_for_close: bool,
) {
    app.insert_resource(crate::Scripted)
        .insert_resource(Script {
            step: Step::WaitForGame,
            check_boost,
            wait_for_close,
            frames: 0,
            ticks: 0,
            started: std::time::Instant::now(),
            dir,
            balance_before: 0,
            shots: Vec::new(),
            queued: Vec::new(),
            closing: false,
            noted: false,
        })
        .add_systems(Update, run_script.before(crate::keyboard));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    WaitForGame,
    /// Shoots at the first wave for a while.
    Fight,
    /// Walks into the slimes until down (the first or the second time).
    Die(u8),
    /// Down: buys a Revive, which arrives while the player is still down.
    Revive,
    /// Down again: buys a Revive and, before it arrives, an ally gets the player up.
    PointlessRevive,
    /// Skips the wave being fought.
    SkipWave,
    /// Buys Double Gold (the first or the second time: the second adds to the first).
    Boost(u8),
    /// Closes the window, as a window manager's close button does: the exit saves the player.
    Close,
    /// After a restart: the boost bought before is still running.
    CheckBoost,
}

#[derive(Resource)]
struct Script {
    step: Step,
    check_boost: bool,
    wait_for_close: bool,
    frames: u32,
    /// Frames since the start.
    ticks: u64,
    started: std::time::Instant,
    dir: PathBuf,
    balance_before: u64,
    /// Screenshots asked for, by file name.
    shots: Vec<&'static str>,
    /// Screenshots to take at a frame to come (egui draws text it has not drawn before a frame
    /// late, and new windows fade in).
    queued: Vec<(&'static str, u64)>,
    /// The window was asked to close.
    closing: bool,
    /// This step's outcome was seen (and told).
    noted: bool,
}

impl Script {
    fn next(&mut self, step: Step) {
        println!("script: {:?} -> {step:?}", self.step);
        self.step = step;
        self.frames = 0;
        self.noted = false;
    }

    /// Takes a screenshot named `name` ten frames from now.
    fn shoot(&mut self, name: &'static str) {
        self.shots.push(name);
        self.queued.push((name, self.ticks + 10));
    }

    fn take_due_shots(&mut self, commands: &mut Commands) {
        let ticks = self.ticks;
        let dir = self.dir.clone();
        self.queued.retain(|(name, at)| {
            if *at <= ticks {
                shoot(commands, &dir, name);
            }
            *at > ticks
        });
    }

    fn shots_written(&self) -> bool {
        self.shots.iter().all(|name| self.dir.join(name).exists())
    }
}

/// Saves a screenshot of the window to `dir/name`.
fn shoot(commands: &mut Commands, dir: &Path, name: &str) {
    commands
        .spawn(Screenshot::primary_window())
        .observe(save_to_disk(dir.join(name)));
}

/// Where a purchase through the prompt is.
enum Buying<'a> {
    NoPrompt,
    Asking(PromptId),
    Bought(PromptId),
    Failed(PromptId, &'a bevy_marketplace::PurchaseError),
    Waiting,
}

fn buying(prompt: Option<&OpenPrompt>) -> Buying<'_> {
    match prompt {
        None => Buying::NoPrompt,
        Some(p) => match &p.state {
            PromptState::AwaitingConfirmation => Buying::Asking(p.id),
            PromptState::Purchased(_) => Buying::Bought(p.id),
            PromptState::Failed(e) => Buying::Failed(p.id, e),
            _ => Buying::Waiting,
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn run_script(
    mut script: ResMut<Script>,
    mut commands: Commands,
    mut controls: ResMut<Controls>,
    mut ally: ResMut<AllyTimer>,
    wave: Res<Wave>,
    icons: Res<ProductIcons>,
    slimes: Query<&Transform, With<Slime>>,
    player: Single<
        (
            Entity,
            &Transform,
            &Health,
            &GoldBoost,
            &PremiumBalance,
            Option<&OpenPrompt>,
            &bevy_marketplace::PlayerSession,
        ),
        With<LocalPlayer>,
    >,
    window: Query<Entity, With<PrimaryWindow>>,
    mut prompts: MessageWriter<PromptProductPurchase>,
    mut answers: MessageWriter<PromptAnswer>,
    mut close: MessageWriter<WindowCloseRequested>,
    mut exit: MessageWriter<AppExit>,
) {
    let (entity, transform, health, boost, balance, prompt, session) = *player;
    script.frames += 1;
    script.ticks += 1;
    script.take_due_shots(&mut commands);
    if script.started.elapsed() > std::time::Duration::from_secs(240) {
        eprintln!("script: timed out in step {:?}", script.step);
        exit.write(AppExit::error());
        return;
    }
    let answer = |answers: &mut MessageWriter<PromptAnswer>, prompt, action| {
        answers.write(PromptAnswer {
            player: entity,
            prompt,
            action,
        });
    };
    let fail = |exit: &mut MessageWriter<AppExit>, what: String| {
        eprintln!("script: {what}");
        exit.write(AppExit::error());
    };
    controls.shoot = false;
    controls.walk = Vec2::ZERO;
    let at = transform.translation.truncate();
    match script.step {
        Step::WaitForGame => {
            std::fs::create_dir_all(&script.dir).expect("create the screenshot directory");
            if session.is_active()
                && icons.texture("icons/revive.png").is_some()
                && script.frames > 20
            {
                script.balance_before = balance.0;
                let next = if script.check_boost {
                    Step::CheckBoost
                } else {
                    Step::Fight
                };
                script.next(next);
            }
        }
        Step::Fight => {
            controls.shoot = script.frames.is_multiple_of(30) && wave.phase == WavePhase::Fighting;
            if script.frames == 60 {
                script.shoot("arena.png");
            }
            if script.frames >= 90 {
                script.next(Step::Die(1));
            }
        }
        Step::Die(time) => {
            if let Some(nearest) = slimes
                .iter()
                .map(|s| s.translation.truncate())
                .min_by(|a, b| a.distance(at).total_cmp(&b.distance(at)))
            {
                controls.walk = nearest - at;
            }
            if health.downed() {
                if time == 1 && script.frames > 1 {
                    script.shoot("downed.png");
                }
                script.balance_before = balance.0;
                script.next(if time == 1 {
                    Step::Revive
                } else {
                    Step::PointlessRevive
                });
            }
        }
        Step::Revive => match buying(prompt) {
            Buying::NoPrompt if script.frames == 30 => {
                // What the "Revive now" button (or R) sends.
                prompts.write(PromptProductPurchase {
                    player: entity,
                    product_id: REVIVE,
                });
            }
            Buying::Asking(id) => {
                if script.frames == 40 {
                    script.shoot("revive_prompt.png");
                }
                if script.frames == 60 {
                    answer(&mut answers, id, PromptAction::Confirm);
                }
            }
            Buying::Bought(id) if !health.downed() => {
                if !script.shots.contains(&"revived.png") {
                    let paid = script.balance_before - balance.0;
                    if paid != 30 || health.current != health.max {
                        return fail(
                            &mut exit,
                            format!("revived at {} Health for R$ {paid}", health.current),
                        );
                    }
                    println!("script: revived at full Health for R$ {paid}");
                    script.frames = 0;
                    script.shoot("revived.png");
                }
                if script.frames == 30 {
                    answer(&mut answers, id, PromptAction::Close);
                    script.next(Step::Die(2));
                }
            }
            Buying::Failed(_, e) => fail(&mut exit, format!("the Revive failed: {e}")),
            _ => {}
        },
        Step::PointlessRevive => match buying(prompt) {
            Buying::NoPrompt if script.frames == 10 => {
                prompts.write(PromptProductPurchase {
                    player: entity,
                    product_id: REVIVE,
                });
            }
            Buying::Asking(id) if script.frames > 20 => {
                // Buy, and in the same frame an ally gets the player up: the purchase arrives
                // (a frame or more later) for a player who is no longer down.
                answer(&mut answers, id, PromptAction::Confirm);
                ally.0 = ALLY_REVIVE_SECS;
            }
            Buying::Failed(id, bevy_marketplace::PurchaseError::Refunded { reason }) => {
                if !script.shots.contains(&"revive_refunded.png") {
                    if balance.0 != script.balance_before {
                        return fail(
                            &mut exit,
                            format!(
                                "refunded, but the balance is {} (was {})",
                                balance.0, script.balance_before
                            ),
                        );
                    }
                    println!(
                        "script: the pointless Revive was refunded ({reason}); balance R$ {}",
                        balance.0
                    );
                    script.frames = 0;
                    script.shoot("revive_refunded.png");
                }
                if script.frames == 40 {
                    answer(&mut answers, id, PromptAction::Close);
                    script.next(Step::SkipWave);
                }
            }
            Buying::Bought(_) if script.frames > 200 => {
                fail(&mut exit, "the pointless Revive was not refunded".into());
            }
            Buying::Failed(_, e) => fail(&mut exit, format!("the Revive failed: {e}")),
            _ => {}
        },
        Step::SkipWave => match buying(prompt) {
            Buying::NoPrompt if wave.phase == WavePhase::Fighting && script.frames > 10 => {
                if script.shots.contains(&"wave_skipped.png") {
                    return;
                }
                prompts.write(PromptProductPurchase {
                    player: entity,
                    product_id: SKIP_WAVE,
                });
                script.frames = 0;
            }
            Buying::Asking(id) => answer(&mut answers, id, PromptAction::Confirm),
            Buying::Bought(id) if matches!(wave.phase, WavePhase::Break(_)) => {
                if !script.shots.contains(&"wave_skipped.png") {
                    println!("script: wave {} skipped", wave.number);
                    script.frames = 0;
                    script.shoot("wave_skipped.png");
                }
                if script.frames == 30 {
                    answer(&mut answers, id, PromptAction::Close);
                    script.next(Step::Boost(1));
                }
            }
            Buying::Failed(_, e) => fail(&mut exit, format!("the Skip Wave failed: {e}")),
            _ => {}
        },
        Step::Boost(time) => match buying(prompt) {
            Buying::NoPrompt if script.frames == 10 => {
                prompts.write(PromptProductPurchase {
                    player: entity,
                    product_id: DOUBLE_GOLD,
                });
            }
            Buying::Asking(id) => answer(&mut answers, id, PromptAction::Confirm),
            Buying::Bought(id) if boost.seconds_left > f32::from(time) * BOOST_SECS - 20.0 => {
                if !script.noted {
                    script.noted = true;
                    println!(
                        "script: Double Gold bought ({time}); {:.0} s left",
                        boost.seconds_left
                    );
                    script.frames = 0;
                    if time == 2 {
                        script.shoot("boost.png");
                    }
                }
                if script.frames == 30 {
                    answer(&mut answers, id, PromptAction::Close);
                    script.next(if time == 1 {
                        Step::Boost(2)
                    } else {
                        Step::Close
                    });
                }
            }
            Buying::Failed(_, e) => fail(&mut exit, format!("Double Gold failed: {e}")),
            _ => {}
        },
        Step::Close => {
            if script.closing {
                return;
            }
            if prompt.is_none()
                && session.uncommitted_grants().is_empty()
                && script.queued.is_empty()
                && script.shots_written()
            {
                script.closing = true;
                println!("BOOST LEFT {:.0} s", boost.seconds_left);
                println!("SCRIPTED RUN OK: screenshots in {}", script.dir.display());
                if script.wait_for_close {
                    println!("READY TO CLOSE");
                } else {
                    for window in &window {
                        close.write(WindowCloseRequested { window });
                    }
                }
            } else if script.frames > 600 {
                fail(&mut exit, "the screenshots were not written".into());
            }
        }
        Step::CheckBoost => {
            if script.frames == 1 {
                println!("BOOST LEFT AFTER RESTART {:.0} s", boost.seconds_left);
                // Two boosts stacked: less than bought (it ran while playing), but not less by
                // the time the game was closed.
                if !(2.0 * BOOST_SECS - 120.0..2.0 * BOOST_SECS).contains(&boost.seconds_left) {
                    return fail(
                        &mut exit,
                        format!("the boost has {} s left", boost.seconds_left),
                    );
                }
            }
            if script.frames == 40 {
                script.shoot("boost_after_restart.png");
            }
            if script.frames > 40 && script.queued.is_empty() && script.shots_written() {
                println!("SCRIPTED RUN OK: the boost survived the restart");
                exit.write(AppExit::Success);
            }
        }
    }
}
