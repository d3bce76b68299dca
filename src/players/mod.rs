//! Players: who is connected, their sessions with the ledger, what is saved of them.
//!
//! A `Buyer` added opens a session (balance, persisted components and pending receipts load);
//! grants, autosaves and leaving save it; the ledger's answers to each move the session along.

mod awaiting_commit;
mod committed;
mod join_leave;
mod open;
mod persist;
mod player;
mod refresh;
mod save;
mod save_answers;
mod sessions;
mod wakes;
mod work_queue;

pub use committed::{ReceiptRefunded, ReceiptRejected, ReceiptResolved};
pub(crate) use persist::PersistRegistry;
pub use player::{Buyer, PendingReceipt, PlayerSession, SessionPhase};
pub(crate) use player::{Task, Uncommitted, Work};
pub use save::PlayerSaveFailed;
pub use sessions::Sessions;

pub(crate) use join_leave::{on_player_added, on_player_removed};
pub(crate) use open::{handle_releases, handle_session_openings, watch_ledger_status};
pub(crate) use persist::short_type_name;
pub(crate) use refresh::{
    ChangeFollower, follow_changes, handle_change_feed, handle_player_readings,
};
pub(crate) use save::{Farewell, farewell, queue_save, save_players, save_without};
pub(crate) use save_answers::handle_save_answers;
pub(crate) use wakes::run_wakes;
pub(crate) use work_queue::DeliveryQueue;

use bevy::prelude::*;

use crate::settings::MarketplaceSystems;
use crate::wake::WakeSchedule;

/// Sessions: joins and leaves, the ledger's answers about sessions, timed wake-ups, saves.
pub(crate) struct PlayersPlugin;

impl Plugin for PlayersPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<PersistRegistry>()
            .init_resource::<Sessions>()
            .init_resource::<DeliveryQueue>()
            .init_resource::<WakeSchedule>()
            .init_resource::<ChangeFollower>()
            .add_message::<PlayerSaveFailed>()
            .add_message::<ReceiptResolved>()
            .add_message::<ReceiptRefunded>()
            .add_message::<ReceiptRejected>()
            .add_observer(on_player_added)
            .add_observer(on_player_removed)
            .add_systems(
                PreUpdate,
                (
                    (
                        watch_ledger_status,
                        handle_session_openings,
                        handle_releases,
                        handle_save_answers,
                        handle_player_readings,
                        handle_change_feed,
                        run_wakes,
                        follow_changes,
                    )
                        .chain()
                        .in_set(MarketplaceSystems::Sessions),
                    save_players.in_set(MarketplaceSystems::Persist),
                ),
            );
    }
}
