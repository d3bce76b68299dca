//! Players: who is connected, their sessions with the ledger, what is saved of them.
//!
//! A `Player` added opens a session (balance, persisted components and pending receipts load);
//! grants, autosaves and leaving save it; the ledger's answers move the session along.

mod awaiting_commit;
mod inbox;
mod join_leave;
mod persist;
mod player;
mod replies;
mod save;
mod sessions;
mod wakes;
mod work_queue;

pub use persist::PersistRegistry;
pub use player::{PendingReceipt, Player, PlayerSession, SessionPhase};
pub use save::PlayerSaveFailed;
pub use sessions::Sessions;

pub(crate) use inbox::{LedgerInbox, flush_ledger, receive_ledger};
pub(crate) use join_leave::{on_player_added, on_player_removed};
pub(crate) use persist::short_type_name;
pub(crate) use replies::{handle_session_replies, watch_ledger_status};
pub(crate) use save::{Farewell, farewell, queue_save, save_players};
pub(crate) use wakes::run_wakes;
pub(crate) use work_queue::DeliveryQueue;
