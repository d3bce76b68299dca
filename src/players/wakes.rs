//! Timed wake-ups of players: receipt retries, save retries, autosaves, re-opens.

use bevy::prelude::*;

use super::join_leave::open_request;
use super::player::{PlayerSession, SessionPhase};
use super::sessions::Sessions;
use super::work_queue::DeliveryQueue;
use crate::link::Ledger;
use crate::settings::MarketplaceSettings;
use crate::wake::{Wake, WakeSchedule};

/// Fires due wake-ups: timed receipt retries, save retries, session re-opens.
pub(crate) fn run_wakes(
    time: Res<Time<Real>>,
    mut wakes: ResMut<WakeSchedule>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut sessions: ResMut<Sessions>,
    mut sessions_q: Query<&mut PlayerSession>,
    settings: Res<MarketplaceSettings>,
    mut ledger: ResMut<Ledger>,
) {
    let now = time.elapsed();
    while let Some(wake) = wakes.pop_due(now) {
        match wake {
            Wake::Deliver(e) => deliveries.due.push(e),
            Wake::Save(e) => deliveries.saves.push(e),
            Wake::Autosave(e) => {
                if sessions_q.get(e).is_ok_and(|s| s.is_active()) {
                    deliveries.autosaves.push(e);
                    wakes.after(now, settings.autosave_interval, Wake::Autosave(e));
                }
            }
            Wake::Open(e) => {
                if let Ok(mut session) = sessions_q.get_mut(e)
                    && session.phase == SessionPhase::Loading
                    && !session.open_in_flight
                    && sessions.by_user.get(&session.user) == Some(&e)
                {
                    ledger.send(open_request(session.user, &settings));
                    session.open_in_flight = true;
                }
            }
            Wake::Departed(user) => {
                if let Some(gone) = sessions.departed.get_mut(&user)
                    && !gone.in_flight
                {
                    gone.in_flight = true;
                    ledger.send(gone.request.clone());
                }
            }
        }
    }
}
