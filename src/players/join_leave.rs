//! A player's arrival or departure: a `Buyer` added opens their session with the ledger; removed,
//! it queues their final save.

use bevy::ecs::world::DeferredWorld;
use bevy::prelude::*;

use super::player::{Buyer, PlayerSession, SessionPhase};
use super::save::{Farewell, PlayerSaveFailed, farewell};
use super::sessions::{Departed, Sessions};
use crate::ids::UserId;
use crate::ledger::{LedgerRequest, OpenSession};
use crate::link::Ledger;
use crate::settings::{MarketplaceSettings, MarketplaceStats};

pub(super) fn open_request(user: UserId, settings: &MarketplaceSettings) -> OpenSession {
    OpenSession {
        user,
        server: settings.server_id.clone(),
        lease_ms: settings.lease_ms(),
        starting_balance: settings.starting_balance,
    }
}

pub(crate) fn on_player_added(
    add: On<Add, Buyer>,
    players: Query<&Buyer>,
    mut sessions: ResMut<Sessions>,
    mut ledger: ResMut<Ledger>,
    settings: Res<MarketplaceSettings>,
    mut commands: Commands,
) {
    let entity = add.entity;
    let Ok(player) = players.get(entity) else {
        return;
    };
    let user = player.user_id;
    let mut session = PlayerSession::new(user);
    if let Some(&other) = sessions.by_user.get(&user)
        && other != entity
    {
        tracing::warn!(
            "user {user} is already playing as entity {other}; the second Buyer on {entity} waits: its session opens when the first leaves"
        );
        session.phase = SessionPhase::Failed(format!(
            "user {user} is already playing here on another connection; this one can buy once that one leaves"
        ));
        sessions.waiting.entry(user).or_default().push(entity);
        commands.entity(entity).insert(session);
        return;
    }
    sessions.by_user.insert(user, entity);
    match sessions.departed.get_mut(&user) {
        // Their last save from the previous visit must land before we read their data again.
        Some(departed) => departed.rejoined = Some(entity),
        None => {
            ledger.send(open_request(user, &settings));
            session.open_in_flight = true;
        }
    }
    commands.entity(entity).insert(session);
}

pub(crate) fn on_player_removed(remove: On<Remove, Buyer>, mut world: DeferredWorld) {
    let entity = remove.entity;
    let Some(user) = world.get::<PlayerSession>(entity).map(|s| s.user) else {
        return;
    };
    if world.resource::<Sessions>().by_user.get(&user) != Some(&entity) {
        // A second Buyer of the user, waiting for the first to leave: it waits no more.
        if let Some(waiting) = world.resource_mut::<Sessions>().waiting.get_mut(&user) {
            waiting.retain(|&e| e != entity);
        }
        return;
    }
    // The user's next waiting Buyer (another connection of theirs) takes the session over.
    let next = world
        .resource_mut::<Sessions>()
        .waiting
        .get_mut(&user)
        .and_then(|waiting| (!waiting.is_empty()).then(|| waiting.remove(0)));
    if let Some(next) = next {
        world.commands().queue(move |world: &mut World| {
            // Added again, it opens its session as any joining player does.
            if let Some(player) = world.get::<Buyer>(next).copied() {
                world.entity_mut(next).remove::<Buyer>().insert(player);
            }
        });
    }
    let open_in_flight = world
        .get::<PlayerSession>(entity)
        .is_some_and(|s| s.open_in_flight);
    let (uncommitted, carried) = world
        .get::<PlayerSession>(entity)
        .map(|s| (s.uncommitted.clone(), s.carried.clone()))
        .unwrap_or_default();
    let ending = farewell(&world, entity, user);
    let server = world.resource::<MarketplaceSettings>().server_id.clone();
    let release = world
        .get::<PlayerSession>(entity)
        .map(|s| s.release(&server));
    let mut sessions = world.resource_mut::<Sessions>();
    sessions.by_user.remove(&user);
    if open_in_flight {
        *sessions.stale_opens.entry(user).or_default() += 1;
    }
    let request = match ending {
        Farewell::Save(save) => {
            sessions.departed.insert(
                user,
                Departed {
                    request: save.clone(),
                    uncommitted,
                    carried,
                    in_flight: true,
                    failures: 0,
                    rejoined: None,
                },
            );
            Some(LedgerRequest::Save(save))
        }
        Farewell::Unsaveable {
            reason,
            uncommitted_grants,
        } => {
            // Their grants die with the unsaved state: back to pending in the ledger, so the
            // next session delivers them again (their effects were never committed).
            for work in &uncommitted {
                sessions
                    .awaiting_commit
                    .remove(&work.receipt.purchase_id, work.work.task());
            }
            tracing::error!(
                "user {user} left and cannot be saved: {reason}; progress since the last save is lost and {uncommitted_grants} uncommitted grant(s) will be delivered again next time"
            );
            world.resource_mut::<MarketplaceStats>().save_failures += 1;
            world.write_message(PlayerSaveFailed {
                user_id: user,
                reason,
                uncommitted_grants,
            });
            release.map(Into::into)
        }
        // They came back while that save was being retried, and left again while loading.
        Farewell::AwaitPreviousSave => {
            if let Some(gone) = sessions.departed.get_mut(&user) {
                gone.rejoined = None;
            }
            None
        }
        Farewell::Release => release.map(Into::into),
    };
    if let Some(request) = request {
        world.resource_mut::<Ledger>().send_request(request);
    }
    world
        .commands()
        .entity(entity)
        .try_remove::<PlayerSession>();
}
