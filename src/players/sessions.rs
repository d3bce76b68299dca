//! `Sessions`: the server-wide bookkeeping of who is here, who left with a save in flight, which
//! grants await their commit.

use std::collections::HashMap;

use bevy::prelude::*;

use super::awaiting_commit::AwaitingCommit;
use super::player::Uncommitted;
use crate::ids::UserId;
use crate::ledger::{PlayerSnapshot, SaveRequest};
use crate::receipt::ReceiptInfo;

/// A player who left, whose final save has not landed yet.
#[derive(Debug)]
pub(crate) struct Departed {
    pub(crate) request: SaveRequest,
    /// The work of handlers that save carries, with the state before each: if the ledger refuses
    /// a grant in it, the final save is made again from before that grant.
    pub(crate) uncommitted: Vec<Uncommitted>,
    /// Their stored components that no registered type claims, saved back untouched.
    pub(crate) carried: PlayerSnapshot,
    /// The save is with the ledger, unanswered (else it waits for a timed retry).
    pub(crate) in_flight: bool,
    pub(crate) failures: u32,
    /// The player came back here meanwhile: open their new session once this save lands.
    pub(crate) rejoined: Option<Entity>,
}

/// Server-wide session bookkeeping.
#[derive(Resource, Default, Debug)]
pub struct Sessions {
    pub(crate) by_user: HashMap<UserId, Entity>,
    /// Receipts granted, or their refunds settled, in memory on this server and not yet
    /// confirmed committed. A receipt in here is never handed to a handler for that again.
    pub(crate) awaiting_commit: AwaitingCommit,
    pub(crate) departed: HashMap<UserId, Departed>,
    /// More `Buyer`s of a user already playing here (another connection of theirs), in the
    /// order they came: the first takes the session over when the playing one leaves.
    pub(crate) waiting: HashMap<UserId, Vec<Entity>>,
    /// Per user, answers still to come to `OpenSession`s of visits that ended while loading.
    /// They must not be applied to the user's next visit: its own answer is the one to use.
    pub(crate) stale_opens: HashMap<UserId, u32>,
    /// The buyer whose handler is running, with their persisted components from before it ran.
    /// A save made meanwhile (the handler despawned its buyer) uses these, so an undecided
    /// handler's changes never reach the ledger.
    pub(crate) handler_running: Option<(Entity, PlayerSnapshot)>,
    /// Players whose persisted components are about to be put back to these (the ledger refused
    /// a grant their state holds): a save made meanwhile is made from them.
    pub(crate) rolling_back: HashMap<Entity, PlayerSnapshot>,
}

impl Sessions {
    /// The entity of a connected user.
    pub fn player(&self, user: UserId) -> Option<Entity> {
        self.by_user.get(&user).copied()
    }

    /// Receipts granted (or their refunds settled) in memory whose commit is in flight.
    pub fn awaiting_commit(&self) -> impl Iterator<Item = &ReceiptInfo> {
        self.awaiting_commit.iter()
    }

    /// The final save of `user` landed: forgets it, and returns the entity they came back as
    /// meanwhile, if they are still here.
    pub(crate) fn final_save_landed(&mut self, user: UserId) -> Option<Entity> {
        let back = self.departed.remove(&user)?.rejoined?;
        (self.by_user.get(&user) == Some(&back)).then_some(back)
    }

    /// Players who left and whose final save is still in flight.
    pub fn departing(&self) -> usize {
        self.departed.len()
    }
}
