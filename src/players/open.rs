//! The ledger's answers to opening and releasing sessions: a joining player's data loads, or
//! their join waits for another server's lease; the ledger's status when it cannot be opened.

use bevy::prelude::*;

use super::join_leave::open_request;
use super::persist::PersistRegistry;
use super::player::{PlayerSession, SessionPhase, Task};
use super::save::first_autosave_delay;
use super::sessions::Sessions;
use super::work_queue::DeliveryQueue;
use crate::currency::PremiumBalance;
use crate::ledger::{
    LedgerError, LedgerStatus, OpenSession, OpenSessionReply, OpenedSession, ReleaseSession,
};
use crate::link::{Ledger, LedgerAnswers};
use crate::settings::{FrameDeadline, MarketplaceSettings};
use crate::wake::{Wake, WakeSchedule};

/// Applies the ledger's answers to `OpenSession`: the player becomes active with their stored
/// data, waits for another server's lease, or fails.
pub(crate) fn handle_session_openings(
    mut answers: ResMut<LedgerAnswers<OpenSession>>,
    mut sessions: ResMut<Sessions>,
    mut players: Query<(&mut PlayerSession, &mut PremiumBalance)>,
    registry: Res<PersistRegistry>,
    settings: Res<MarketplaceSettings>,
    time: Res<Time<Real>>,
    mut ledger: ResMut<Ledger>,
    mut wakes: ResMut<WakeSchedule>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut commands: Commands,
    deadline: Res<FrameDeadline>,
) {
    let now = time.elapsed();
    // A burst (thousands of players joining at once) is spread over frames; what is left stays
    // at the front of the queue, so each user's answers keep their order.
    for answer in answers.drain_within(&deadline) {
        let user = answer.call.user;
        if let Some(stale) = sessions.stale_opens.get_mut(&user) {
            // The answer to a visit that ended while loading; its lease release was queued after
            // it. The current visit waits for its own answer.
            *stale -= 1;
            if *stale == 0 {
                sessions.stale_opens.remove(&user);
            }
            continue;
        }
        let Some(&entity) = sessions.by_user.get(&user) else {
            if let Ok(OpenSessionReply::Opened(opened)) = answer.result {
                // They left while loading: hand the lease back.
                ledger.send(ReleaseSession {
                    user,
                    server: settings.server_id.clone(),
                    token: Some(opened.lease_token),
                });
            }
            continue;
        };
        let Ok((mut session, mut balance)) = players.get_mut(entity) else {
            continue;
        };
        session.open_in_flight = false;
        match answer.result {
            Ok(OpenSessionReply::Opened(OpenedSession {
                balance: stored_balance,
                state,
                pending,
                clawbacks,
                shortfall,
                lease_token,
            })) => {
                balance.0 = stored_balance;
                session.shortfall = shortfall;
                session.lease_token = Some(lease_token);
                session.opened_at = answer.seq;
                match registry.restore(&mut commands.entity(entity), &state) {
                    Ok(carried) => {
                        session.carried = carried;
                        // The opening renewed the lease; the state is what the ledger holds.
                        session.last_save = Some((state, now));
                        session.phase = SessionPhase::Active;
                        for receipt in pending {
                            if !sessions
                                .awaiting_commit
                                .holds(&receipt.purchase_id, Task::Grant)
                            {
                                session.add_pending(receipt, answer.seq);
                            }
                        }
                        for receipt in clawbacks {
                            session.add_clawback(receipt, answer.seq);
                        }
                        deliveries.now.push(entity);
                        wakes.after(
                            now,
                            first_autosave_delay(settings.autosave_interval, user),
                            Wake::Autosave(entity),
                        );
                    }
                    Err(e) => {
                        tracing::error!(
                            "user {user}: {e}; purchases and saves are off for this session so nothing is overwritten, and its lease is given back"
                        );
                        session.phase = SessionPhase::Failed(e);
                        // This server will never write for them: holding the lease would only
                        // keep every other server from trying.
                        ledger.send(ReleaseSession {
                            user,
                            server: settings.server_id.clone(),
                            token: Some(lease_token),
                        });
                    }
                }
            }
            Ok(OpenSessionReply::Busy {
                owner,
                expires_at_ms,
            }) => {
                session.open_failures += 1;
                let wait = settings.retry.delay(session.open_failures);
                tracing::warn!(
                    "user {user} is held by server {owner} until {}; asking again in {wait:?}",
                    crate::ledger::utc(expires_at_ms)
                );
                wakes.after(now, wait, Wake::Open(entity));
            }
            Err(LedgerError::Unavailable(why)) => {
                session.phase = SessionPhase::Failed(format!("ledger unavailable: {why}"));
            }
            Err(e) => {
                session.open_failures += 1;
                let wait = settings.retry.delay(session.open_failures);
                tracing::warn!("loading user {user} failed: {e}; retrying in {wait:?}");
                wakes.after(now, wait, Wake::Open(entity));
            }
        }
    }
}

/// Reads the answers to lease releases: one that failed leaves the lease to expire on its own.
pub(crate) fn handle_releases(
    mut answers: ResMut<LedgerAnswers<ReleaseSession>>,
    deadline: Res<FrameDeadline>,
) {
    for answer in answers.drain_within(&deadline) {
        if let Err(e) = answer.result {
            tracing::warn!(
                "releasing the session lease of user {} failed: {e}; it expires on its own",
                answer.call.user
            );
        }
    }
}

/// A player who came back while their previous visit's final save was in flight: once it lands,
/// their new session opens.
pub(crate) fn open_again(
    user: crate::UserId,
    sessions: &mut Sessions,
    players: &mut Query<&mut PlayerSession>,
    ledger: &mut Ledger,
    settings: &MarketplaceSettings,
) {
    if let Some(back) = sessions.final_save_landed(user)
        && let Ok(mut session) = players.get_mut(back)
    {
        ledger.send(open_request(user, settings));
        session.open_in_flight = true;
    }
}

/// Marks sessions failed when the ledger cannot be opened, so prompts say so at once.
pub(crate) fn watch_ledger_status(ledger: Res<Ledger>, mut sessions: Query<&mut PlayerSession>) {
    if let LedgerStatus::Failed(error) = ledger.status()
        && ledger.is_changed()
    {
        for mut session in &mut sessions {
            if session.phase == SessionPhase::Loading {
                session.phase = SessionPhase::Failed(format!("ledger unavailable: {error}"));
            }
        }
    }
}
