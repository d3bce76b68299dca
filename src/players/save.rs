//! Saving a player: the save request (persisted components with uncommitted grants), queued saves,
//! the report when a save cannot be made.

use bevy::prelude::*;

use super::persist::PersistRegistry;
use super::player::{PlayerSession, SessionPhase, Uncommitted, Work};
use super::sessions::Sessions;
use super::work_queue::DeliveryQueue;
use crate::ids::{PurchaseId, UserId};
use crate::ledger::{Clawback, PlayerSnapshot, SaveRequest};
use crate::link::Ledger;
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
    let sessions = world.resource::<Sessions>();
    let state = match (
        &sessions.handler_running,
        sessions.rolling_back.get(&entity),
    ) {
        // A handler is running on this player and has not decided: save what it started from.
        (Some((running, before)), _) if *running == entity => Ok(before.clone()),
        // The components are about to be put back to before a refused grant.
        (_, Some(before)) => Ok(before.clone()),
        _ => world.resource::<PersistRegistry>().snapshot(&entity_ref),
    };
    let mut state = match state {
        Ok(state) => state,
        Err(reason) => {
            return SaveBuild::Unserializable {
                user: session.user,
                reason,
                uncommitted_grants: session.uncommitted_grants().len(),
            };
        }
    };
    for (name, text) in &session.carried.0 {
        state.0.entry(name.clone()).or_insert_with(|| text.clone());
    }
    let SaveWork {
        granted,
        settled,
        rejected,
    } = work_of(&session.uncommitted);
    SaveBuild::Ready(SaveRequest {
        user: session.user,
        fence,
        state,
        granted,
        settled,
        rejected,
        release,
        lease_ms: settings.lease_ms(),
    })
}

/// The work a save carries.
pub(crate) struct SaveWork {
    pub(crate) granted: Vec<PurchaseId>,
    pub(crate) settled: Vec<(PurchaseId, Clawback)>,
    pub(crate) rejected: Vec<(PurchaseId, String)>,
}

/// The grants, settled clawbacks and rejections in `uncommitted`, as a save carries them.
pub(crate) fn work_of(uncommitted: &[Uncommitted]) -> SaveWork {
    let mut work = SaveWork {
        granted: Vec::new(),
        settled: Vec::new(),
        rejected: Vec::new(),
    };
    for u in uncommitted {
        let id = u.receipt.purchase_id.clone();
        match u.work {
            Work::Granted => work.granted.push(id),
            Work::Settled(clawback) => work.settled.push((id, clawback)),
            Work::Rejected => work
                .rejected
                .push((id, u.rejection.clone().unwrap_or_default())),
        }
    }
    work
}

/// The ledger refused `save` because it would grant the `refunded` receipts: the same save made
/// again from the state before the earliest of them, carrying only the work done before it.
/// `None` if the save carries none of them.
pub(crate) fn save_without(
    save: &SaveRequest,
    uncommitted: &[Uncommitted],
    carried: &PlayerSnapshot,
    refunded: &[PurchaseId],
) -> Option<(SaveRequest, usize)> {
    let first = first_refused(uncommitted, refunded)?;
    let mut state = uncommitted[first].before.clone();
    for (name, text) in &carried.0 {
        state.0.entry(name.clone()).or_insert_with(|| text.clone());
    }
    let SaveWork {
        granted,
        settled,
        rejected,
    } = work_of(&uncommitted[..first]);
    Some((
        SaveRequest {
            state,
            granted,
            settled,
            rejected,
            ..save.clone()
        },
        first,
    ))
}

/// Where the work the ledger refused starts in `uncommitted`: the earliest grant of a refunded
/// receipt. Everything done after it was done on a state that holds its effect.
pub(crate) fn first_refused(uncommitted: &[Uncommitted], refunded: &[PurchaseId]) -> Option<usize> {
    uncommitted
        .iter()
        .position(|u| u.work == Work::Granted && refunded.contains(&u.receipt.purchase_id))
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
        SaveBuild::Ready(request) => send_save(world, entity, request),
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

/// Sends `request` and remembers what it saved and when (it renews the lease).
fn send_save(world: &mut World, entity: Entity, request: SaveRequest) {
    let now = world.resource::<Time<Real>>().elapsed();
    if let Some(mut session) = world.get_mut::<PlayerSession>(entity) {
        session.last_save = Some((request.state.clone(), now));
    }
    world.resource_mut::<Ledger>().send(request);
}

/// How long after a player's session opens their first autosave comes: between half an
/// autosave interval and a whole one, spread by user id, so that players who joined together
/// (a server's start, a burst) are not all looked at and saved in one frame, and their later
/// autosaves and lease renewals stay spread.
pub(crate) fn first_autosave_delay(
    interval: std::time::Duration,
    user: UserId,
) -> std::time::Duration {
    // Fibonacci hashing: consecutive ids land far apart in [0, 1).
    let spread = (user.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    let fraction = spread as f64 / (1u64 << 53) as f64;
    interval.mul_f64(0.5 + fraction / 2.0)
}

/// An autosave: the player is saved if anything of theirs changed since their last save, or if
/// half their lease will have gone by before the next autosave (a save renews it). An idle player
/// costs the ledger one save per half lease or so instead of one per autosave interval, and the
/// lease is renewed no later than it was when every autosave saved.
fn autosave(world: &mut World, entity: Entity) {
    let SaveBuild::Ready(request) = build_save(world, entity, false) else {
        // Inactive, or unserialisable: a save says why and retries.
        return queue_save(world, entity);
    };
    let now = world.resource::<Time<Real>>().elapsed();
    let settings = world.resource::<MarketplaceSettings>();
    let (renew_every, interval) = (settings.lease_duration / 2, settings.autosave_interval);
    let unchanged = request.granted.is_empty()
        && request.settled.is_empty()
        && request.rejected.is_empty()
        && world
            .get::<PlayerSession>(entity)
            .and_then(|s| s.last_save.as_ref())
            .is_some_and(|(state, at)| {
                *state == request.state
                    && now.saturating_sub(*at).saturating_add(interval) < renew_every
            });
    if !unchanged {
        send_save(world, entity, request);
    }
}

/// Saves the players queued by autosave and save retries.
pub(crate) fn save_players(world: &mut World) {
    let mut queue = world.resource_mut::<DeliveryQueue>();
    if queue.saves.is_empty() && queue.autosaves.is_empty() {
        return;
    }
    let saves = std::mem::take(&mut queue.saves);
    let autosaves = std::mem::take(&mut queue.autosaves);
    let mut saves = saves.into_iter();
    let mut autosaves = autosaves.into_iter();
    for entity in saves.by_ref() {
        queue_save(world, entity);
        if world.resource::<FrameDeadline>().passed() {
            break;
        }
    }
    // At least one autosave a frame, even when the budget went on other work: a busy server
    // still renews its players' leases.
    for entity in autosaves.by_ref() {
        autosave(world, entity);
        if world.resource::<FrameDeadline>().passed() {
            break;
        }
    }
    let mut queue = world.resource_mut::<DeliveryQueue>();
    queue.saves.extend(saves);
    queue.autosaves.extend(autosaves);
}
