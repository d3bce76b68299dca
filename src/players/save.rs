//! Saving a player: the save request (persisted components with uncommitted grants), queued saves,
//! the report when a save cannot be made.

use bevy::prelude::*;

use super::committed::{ReceiptRefunded, ReceiptResolved};
use super::open::open_again;
use super::persist::PersistRegistry;
use super::player::{PlayerSession, SessionPhase};
use super::sessions::Sessions;
use super::work_queue::DeliveryQueue;
use crate::ids::UserId;
use crate::ledger::{Answer, SaveReply, SaveRequest};
use crate::link::{Ledger, LedgerAnswers};
use crate::settings::{FrameDeadline, MarketplaceSettings, MarketplaceStats};
use crate::wake::{Wake, WakeSchedule};

/// A player's state could not be saved: a persisted component did not serialise, or the ledger
/// refused or failed the save. The player's uncommitted grants stay pending (in memory while the
/// player is here, in the ledger once they leave) and the save is retried; nothing is granted twice.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct PlayerSaveFailed {
    /// The player.
    pub user_id: UserId,
    /// What went wrong.
    pub reason: String,
    /// Receipts granted in memory that this save would have committed.
    pub uncommitted_grants: usize,
}

/// What [`build_save`] made of a player.
pub(crate) enum SaveBuild {
    /// The session is not active: there is nothing of theirs to save.
    Inactive,
    /// The save to send.
    Ready(SaveRequest),
    /// A persisted component could not be serialised; nothing can be saved now.
    Unserializable {
        user: UserId,
        reason: String,
        uncommitted_grants: usize,
    },
}

/// Builds a save of the player's persisted components and uncommitted grants.
pub(crate) fn build_save(world: &World, entity: Entity, release: bool) -> SaveBuild {
    let Ok(entity_ref) = world.get_entity(entity) else {
        return SaveBuild::Inactive;
    };
    let Some(session) = entity_ref.get::<PlayerSession>() else {
        return SaveBuild::Inactive;
    };
    let settings = world.resource::<MarketplaceSettings>();
    let Some(fence) = session.fence(&settings.server_id) else {
        return SaveBuild::Inactive;
    };
    if session.phase != SessionPhase::Active {
        return SaveBuild::Inactive;
    }
    let state = match &world.resource::<Sessions>().handler_running {
        // A handler is running on this player and has not decided: save what it started from.
        Some((running, before)) if *running == entity => Ok(before.clone()),
        _ => world.resource::<PersistRegistry>().snapshot(&entity_ref),
    };
    let mut state = match state {
        Ok(state) => state,
        Err(reason) => {
            return SaveBuild::Unserializable {
                user: session.user,
                reason,
                uncommitted_grants: session.unsaved.len(),
            };
        }
    };
    for (name, text) in &session.carried.0 {
        state.0.entry(name.clone()).or_insert_with(|| text.clone());
    }
    SaveBuild::Ready(SaveRequest {
        user: session.user,
        fence,
        state,
        granted: session.unsaved.clone(),
        settled: session.unsaved_settled.clone(),
        release,
        lease_ms: settings.lease_ms(),
    })
}

/// How a player's session ends: when they leave, or when the game exits.
pub(crate) enum Farewell {
    /// Their final save, which also releases the lease.
    Save(SaveRequest),
    /// Nothing of theirs can be saved now: the lease is given back without a save.
    Unsaveable {
        reason: String,
        uncommitted_grants: usize,
    },
    /// Still loading, or failed: the lease is given back if this server holds it.
    Release,
    /// Their previous visit's final save has not landed: it releases the lease when it does, and
    /// releasing now would make it fail and lose that visit's progress.
    AwaitPreviousSave,
}

/// How the session of `user`, playing as `entity`, ends.
pub(crate) fn farewell(world: &World, entity: Entity, user: UserId) -> Farewell {
    match build_save(world, entity, true) {
        SaveBuild::Ready(save) => Farewell::Save(save),
        SaveBuild::Unserializable {
            reason,
            uncommitted_grants,
            ..
        } => Farewell::Unsaveable {
            reason,
            uncommitted_grants,
        },
        SaveBuild::Inactive if world.resource::<Sessions>().departed.contains_key(&user) => {
            Farewell::AwaitPreviousSave
        }
        SaveBuild::Inactive => Farewell::Release,
    }
}

/// Queues a save of the player now (after a grant, on autosave, on a retry). A save that cannot
/// be built is reported and retried with backoff; the grants it would carry stay uncommitted.
pub(crate) fn queue_save(world: &mut World, entity: Entity) {
    match build_save(world, entity, false) {
        SaveBuild::Inactive => {}
        SaveBuild::Ready(request) => {
            world.resource_mut::<Ledger>().send(request);
        }
        SaveBuild::Unserializable {
            user,
            reason,
            uncommitted_grants,
        } => {
            let now = world.resource::<Time<Real>>().elapsed();
            let retry = world.resource::<MarketplaceSettings>().retry;
            let Some(mut session) = world.get_mut::<PlayerSession>(entity) else {
                return;
            };
            session.save_failures += 1;
            let wait = retry.delay(session.save_failures);
            session.last_save_error = Some(reason.clone());
            tracing::error!(
                "cannot save user {user}: {reason}; nothing was saved, {uncommitted_grants} grant(s) stay uncommitted, retrying in {wait:?}"
            );
            world.resource_mut::<MarketplaceStats>().save_failures += 1;
            world
                .resource_mut::<WakeSchedule>()
                .after(now, wait, Wake::Save(entity));
            world.write_message(PlayerSaveFailed {
                user_id: user,
                reason,
                uncommitted_grants,
            });
        }
    }
}

/// Saves the players queued by autosave and save retries.
pub(crate) fn save_players(world: &mut World) {
    let saves = std::mem::take(&mut world.resource_mut::<DeliveryQueue>().saves);
    if saves.is_empty() {
        return;
    }
    let mut saves = saves.into_iter();
    for entity in saves.by_ref() {
        queue_save(world, entity);
        if world.resource::<FrameDeadline>().passed() {
            break;
        }
    }
    world.resource_mut::<DeliveryQueue>().saves.extend(saves);
}

/// Where a save's outcome is told: grants committed, clawbacks committed, saves that failed.
#[derive(bevy::ecs::system::SystemParam)]
pub(crate) struct SaveNews<'w> {
    resolved: MessageWriter<'w, ReceiptResolved>,
    refunded: MessageWriter<'w, ReceiptRefunded>,
    failed: MessageWriter<'w, PlayerSaveFailed>,
}

/// Applies the ledger's answers to saves: committed grants and clawbacks are reported and
/// forgotten, a lost lease ends the session, a failed save is retried with backoff.
#[allow(clippy::too_many_arguments)]
pub(crate) fn handle_save_answers(
    mut answers: ResMut<LedgerAnswers<SaveRequest>>,
    mut sessions: ResMut<Sessions>,
    mut players: Query<&mut PlayerSession>,
    settings: Res<MarketplaceSettings>,
    time: Res<Time<Real>>,
    mut ledger: ResMut<Ledger>,
    mut wakes: ResMut<WakeSchedule>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut news: SaveNews,
    mut stats: ResMut<MarketplaceStats>,
    deadline: Res<FrameDeadline>,
) {
    let now = time.elapsed();
    for Answer {
        call: save, result, ..
    } in answers.drain_within(&deadline)
    {
        let departed = save.release;
        let live = (!departed)
            .then(|| sessions.by_user.get(&save.user).copied())
            .flatten();
        let landed = matches!(
            result,
            Ok(SaveReply::Saved { .. } | SaveReply::LeaseLost { .. })
        );
        match result {
            Ok(SaveReply::Saved { clawbacks_due, .. }) => {
                stats.saves += 1;
                for id in &save.granted {
                    if let Some(receipt) = sessions.awaiting_commit.remove(id) {
                        stats.granted += 1;
                        news.resolved.write(ReceiptResolved { receipt });
                    }
                }
                for (id, _) in &save.settled {
                    if let Some((receipt, clawback)) = sessions.settling.remove(id) {
                        stats.refunds_settled += 1;
                        news.refunded.write(ReceiptRefunded { receipt, clawback });
                    }
                }
                if let Some(entity) = live
                    && let Ok(mut session) = players.get_mut(entity)
                {
                    session.unsaved.retain(|id| !save.granted.contains(id));
                    session.committed.extend(save.granted.iter().cloned());
                    session
                        .unsaved_settled
                        .retain(|settled| !save.settled.contains(settled));
                    session
                        .settled
                        .extend(save.settled.iter().map(|(id, _)| id.clone()));
                    session.save_failures = 0;
                    session.last_save_error = None;
                    if !clawbacks_due.is_empty() {
                        for receipt in clawbacks_due {
                            session.add_clawback(receipt);
                        }
                        deliveries.now.push(entity);
                    }
                }
            }
            Ok(SaveReply::LeaseLost { owner }) => {
                tracing::error!(
                    "server {} lost the session lease of user {} to {}; dropping {} uncommitted grant(s) instead of writing",
                    settings.server_id,
                    save.user,
                    owner.as_deref().unwrap_or("nobody"),
                    save.granted.len()
                );
                stats.lease_losses += 1;
                for id in &save.granted {
                    sessions.awaiting_commit.remove(id);
                }
                for (id, _) in &save.settled {
                    sessions.settling.remove(id);
                }
                if let Some(mut session) = live.and_then(|e| players.get_mut(e).ok()) {
                    session.unsaved.clear();
                    session.pending.clear();
                    session.unsaved_settled.clear();
                    session.clawbacks.clear();
                    session.phase = SessionPhase::Failed("session lease lost".into());
                }
            }
            Err(e) => {
                stats.save_failures += 1;
                news.failed.write(PlayerSaveFailed {
                    user_id: save.user,
                    reason: e.to_string(),
                    uncommitted_grants: save.granted.len(),
                });
                if departed {
                    if let Some(gone) = sessions.departed.get_mut(&save.user) {
                        gone.in_flight = false;
                        gone.failures += 1;
                        let wait = settings.retry.delay(gone.failures);
                        tracing::warn!(
                            "final save of user {} failed: {e}; retrying in {wait:?}",
                            save.user
                        );
                        wakes.after(now, wait, Wake::Departed(save.user));
                    }
                } else if let Some(entity) = live
                    && let Ok(mut session) = players.get_mut(entity)
                {
                    session.save_failures += 1;
                    session.last_save_error = Some(e.to_string());
                    let wait = settings.retry.delay(session.save_failures);
                    tracing::warn!(
                        "saving user {} failed: {e}; {} grant(s) stay pending, retrying in {wait:?}",
                        save.user,
                        session.unsaved.len()
                    );
                    wakes.after(now, wait, Wake::Save(entity));
                }
            }
        }
        // A final save landed: a player who came back meanwhile can load now.
        if departed && landed {
            open_again(
                save.user,
                &mut sessions,
                &mut players,
                &mut ledger,
                &settings,
            );
        }
    }
}
