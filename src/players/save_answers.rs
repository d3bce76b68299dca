//! The ledger's answers to saves: committed work is reported and forgotten; a lost lease ends the
//! session; a refused grant is undone; a failed save is retried.

use bevy::prelude::*;

use super::committed::{ReceiptRefunded, ReceiptRejected, ReceiptResolved};
use super::open::open_again;
use super::persist::PersistRegistry;
use super::player::{PlayerSession, SessionPhase, Task, Work};
use super::save::{PlayerSaveFailed, first_refused, save_without};
use super::sessions::Sessions;
use super::work_queue::DeliveryQueue;
use crate::currency::PremiumBalance;
use crate::ids::{PurchaseId, UserId};
use crate::ledger::{Answer, ReleaseSession, SaveReply, SaveRequest};
use crate::link::{Ledger, LedgerAnswers};
use crate::settings::{FrameDeadline, MarketplaceSettings, MarketplaceStats};
use crate::wake::{Wake, WakeSchedule};

/// Where a save's outcome is told: grants, clawbacks and rejections committed, saves that failed.
#[derive(bevy::ecs::system::SystemParam)]
pub(crate) struct SaveNews<'w> {
    resolved: MessageWriter<'w, ReceiptResolved>,
    refunded: MessageWriter<'w, ReceiptRefunded>,
    rejected: MessageWriter<'w, ReceiptRejected>,
    failed: MessageWriter<'w, PlayerSaveFailed>,
}

/// Applies the ledger's answers to saves.
pub(crate) fn handle_save_answers(
    mut answers: ResMut<LedgerAnswers<SaveRequest>>,
    mut sessions: ResMut<Sessions>,
    mut players: Query<&mut PlayerSession>,
    mut balances: Query<&mut PremiumBalance>,
    settings: Res<MarketplaceSettings>,
    time: Res<Time<Real>>,
    mut ledger: ResMut<Ledger>,
    mut wakes: ResMut<WakeSchedule>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut news: SaveNews,
    mut stats: ResMut<MarketplaceStats>,
    mut commands: Commands,
    deadline: Res<FrameDeadline>,
) {
    let now = time.elapsed();
    for Answer {
        call: save,
        result,
        seq,
    } in answers.drain_within(&deadline)
    {
        let departed = save.release;
        let live = (!departed)
            .then(|| sessions.by_user.get(&save.user).copied())
            .flatten();
        let mut landed = matches!(
            result,
            Ok(SaveReply::Saved { .. } | SaveReply::LeaseLost { .. })
        );
        match result {
            Ok(SaveReply::Saved {
                rejected, balance, ..
            }) => {
                stats.saves += 1;
                for id in &save.granted {
                    if let Some((receipt, _)) = sessions.awaiting_commit.remove(id, Task::Grant) {
                        stats.granted += 1;
                        news.resolved.write(ReceiptResolved { receipt });
                    }
                }
                for (id, _) in &save.settled {
                    if let Some((receipt, Work::Settled(clawback))) =
                        sessions.awaiting_commit.remove(id, Task::TakeBack)
                    {
                        stats.refunds_settled += 1;
                        news.refunded.write(ReceiptRefunded { receipt, clawback });
                    }
                }
                for (id, reason) in &save.rejected {
                    // Told once per receipt: the first answer to name it takes it off the list.
                    if let Some((receipt, _)) = sessions.awaiting_commit.remove(id, Task::Grant) {
                        if rejected.contains(id) {
                            stats.rejected += 1;
                            news.rejected.write(ReceiptRejected {
                                receipt,
                                reason: reason.clone(),
                            });
                        } else {
                            tracing::warn!(
                                "user {}: receipt {id} was not rejected: it was refunded or granted before the rejection committed, or the balance cannot take its currency back",
                                save.user
                            );
                        }
                    }
                }
                if !rejected.is_empty()
                    && let Some(entity) = sessions.by_user.get(&save.user)
                    && let Ok(mut shown) = balances.get_mut(*entity)
                {
                    shown.0 = balance;
                }
                if let Some(entity) = live
                    && let Ok(mut session) = players.get_mut(entity)
                {
                    session.uncommitted.retain(|u| {
                        let id = &u.receipt.purchase_id;
                        match u.work {
                            Work::Granted => !save.granted.contains(id),
                            Work::Settled(_) => !save.settled.iter().any(|(s, _)| s == id),
                            Work::Rejected => !save.rejected.iter().any(|(s, _)| s == id),
                        }
                    });
                    // A reading of the ledger made before the rejection committed must not
                    // bring the receipt back.
                    for (id, _) in &save.rejected {
                        session.forget_pending(id, seq);
                    }
                    session.committed.extend(save.granted.iter().cloned());
                    session
                        .settled
                        .extend(save.settled.iter().map(|(id, _)| id.clone()));
                    session.save_failures = 0;
                    session.last_save_error = None;
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
                    sessions.awaiting_commit.remove(id, Task::Grant);
                }
                for (id, _) in &save.settled {
                    sessions.awaiting_commit.remove(id, Task::TakeBack);
                }
                if let Some(mut session) = live.and_then(|e| players.get_mut(e).ok()) {
                    // Work done since this save was built is not written either.
                    for work in std::mem::take(&mut session.uncommitted) {
                        sessions
                            .awaiting_commit
                            .remove(&work.receipt.purchase_id, work.work.task());
                    }
                    session.pending.clear();
                    session.clawbacks.clear();
                    session.phase = SessionPhase::Failed("session lease lost".into());
                }
            }
            Ok(SaveReply::GrantsRefunded { refunded }) => {
                stats.save_failures += 1;
                tracing::warn!(
                    "user {}: the ledger refused to grant {} receipt(s) refunded before their grant committed ({}); their handlers' changes are undone and the save is made again without them",
                    save.user,
                    refunded.len(),
                    refunded
                        .iter()
                        .map(PurchaseId::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if departed {
                    // The new final save is in flight; it lands (and opens a rejoin) later.
                    landed = !save_departed_again(&mut sessions, &mut ledger, save.user, &refunded);
                    if landed {
                        ledger.send(ReleaseSession {
                            user: save.user,
                            server: save.fence.server.clone(),
                            token: Some(save.fence.token),
                        });
                    }
                } else if let Some(entity) = live
                    && let Ok(mut session) = players.get_mut(entity)
                {
                    undo_refused(
                        entity,
                        &mut session,
                        &mut sessions,
                        (&refunded, seq),
                        &mut commands,
                    );
                    deliveries.now.push(entity);
                    deliveries.saves.push(entity);
                }
            }
            Ok(SaveReply::InvalidText(invalid)) => {
                save_failed(
                    &save,
                    invalid.to_string(),
                    departed,
                    live,
                    (&mut sessions, &mut players, &mut wakes, &settings, now),
                    &mut news,
                    &mut stats,
                );
            }
            Err(e) => {
                save_failed(
                    &save,
                    e.to_string(),
                    departed,
                    live,
                    (&mut sessions, &mut players, &mut wakes, &settings, now),
                    &mut news,
                    &mut stats,
                );
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

/// Undoes the work the ledger refused on a player who is here: their persisted components go back
/// to before the earliest refused grant, the refunded receipts are dropped, and the other work done
/// since waits for its handler again.
fn undo_refused(
    entity: Entity,
    session: &mut PlayerSession,
    sessions: &mut Sessions,
    (refunded, seq): (&[PurchaseId], u64),
    commands: &mut Commands,
) {
    for id in refunded {
        session.forget_pending(id, seq);
    }
    let Some(first) = first_refused(&session.uncommitted, refunded) else {
        return;
    };
    let undone: Vec<_> = session.uncommitted.drain(first..).collect();
    let before = undone[0].before.clone();
    for work in undone {
        sessions
            .awaiting_commit
            .remove(&work.receipt.purchase_id, work.work.task());
        if refunded.contains(&work.receipt.purchase_id) {
            continue;
        }
        match work.work {
            // Decided again on the state put back.
            Work::Granted | Work::Rejected => session.add_pending(work.receipt, work.learned_at),
            Work::Settled(_) => session.add_clawback(work.receipt, work.learned_at),
        }
    }
    // Until the components are put back (commands run before the next stage), a save made of
    // this player is made from the state to put back.
    sessions.rolling_back.insert(entity, before.clone());
    commands.queue(move |world: &mut World| {
        let before = world
            .resource_mut::<Sessions>()
            .rolling_back
            .remove(&entity)
            .unwrap_or(before);
        if world.get_entity(entity).is_err() {
            return;
        }
        world.resource_scope(|world, registry: Mut<PersistRegistry>| {
            if let Err(e) = registry.roll_back(&mut world.entity_mut(entity), &before) {
                tracing::error!("undoing a refunded grant's changes failed: {e}");
            }
        });
    });
}

/// Makes the final save of a player who left again without the refused grants; `true` if one was
/// sent.
fn save_departed_again(
    sessions: &mut Sessions,
    ledger: &mut Ledger,
    user: UserId,
    refunded: &[PurchaseId],
) -> bool {
    let Sessions {
        departed,
        awaiting_commit,
        ..
    } = sessions;
    let Some(gone) = departed.get_mut(&user) else {
        return false;
    };
    let Some((save, kept)) =
        save_without(&gone.request, &gone.uncommitted, &gone.carried, refunded)
    else {
        return false;
    };
    // What was done from the refused grant on is not saved: it is delivered again next visit.
    for work in gone.uncommitted.drain(kept..) {
        awaiting_commit.remove(&work.receipt.purchase_id, work.work.task());
    }
    gone.request = save.clone();
    gone.in_flight = true;
    ledger.send(save);
    true
}

/// A save was not made: it is reported and retried with backoff; its work stays uncommitted.
fn save_failed(
    save: &SaveRequest,
    reason: String,
    departed: bool,
    live: Option<Entity>,
    (sessions, players, wakes, settings, now): (
        &mut Sessions,
        &mut Query<&mut PlayerSession>,
        &mut WakeSchedule,
        &MarketplaceSettings,
        std::time::Duration,
    ),
    news: &mut SaveNews,
    stats: &mut MarketplaceStats,
) {
    stats.save_failures += 1;
    news.failed.write(PlayerSaveFailed {
        user_id: save.user,
        reason: reason.clone(),
        uncommitted_grants: save.granted.len(),
    });
    if departed {
        if let Some(gone) = sessions.departed.get_mut(&save.user) {
            gone.in_flight = false;
            gone.failures += 1;
            let wait = settings.retry.delay(gone.failures);
            tracing::warn!(
                "final save of user {} failed: {reason}; retrying in {wait:?}",
                save.user
            );
            wakes.after(now, wait, Wake::Departed(save.user));
        }
    } else if let Some(entity) = live
        && let Ok(mut session) = players.get_mut(entity)
    {
        session.save_failures += 1;
        session.last_save_error = Some(reason.clone());
        let wait = settings.retry.delay(session.save_failures);
        tracing::warn!(
            "saving user {} failed: {reason}; {} grant(s) stay pending, retrying in {wait:?}",
            save.user,
            session.uncommitted_grants().len()
        );
        wakes.after(now, wait, Wake::Save(entity));
    }
}
