//! `DeliveryQueue`: the players waiting for a delivery pass or a save, each once, oldest first.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use bevy::prelude::*;

/// Players whose receipts should be delivered this frame.
#[derive(Resource, Default)]
pub(crate) struct DeliveryQueue {
    /// Deliver every pending receipt (a purchase completed, the player joined, a prompt opened).
    pub(crate) now: Vec<Entity>,
    /// Deliver receipts whose retry time has come.
    pub(crate) due: Vec<Entity>,
    /// Save these players (a save retry).
    pub(crate) saves: Vec<Entity>,
    /// Save these players if anything changed since their last save, or their lease wants renewing.
    pub(crate) autosaves: Vec<Entity>,
    /// Players waiting for delivery, oldest first, each once; with a burst this spans frames.
    backlog: VecDeque<Entity>,
    /// The players in `backlog`, and whether all their receipts are due (`now`) or only those
    /// whose retry time has come (`due`).
    queued: HashMap<Entity, bool>,
}

impl DeliveryQueue {
    /// Moves this frame's requests into the backlog; a player already waiting is not queued twice.
    pub(crate) fn enqueue_new(&mut self) {
        for entity in self.now.drain(..) {
            match self.queued.entry(entity) {
                Entry::Occupied(mut forced) => *forced.get_mut() = true,
                Entry::Vacant(slot) => {
                    slot.insert(true);
                    self.backlog.push_back(entity);
                }
            }
        }
        for entity in self.due.drain(..) {
            if let Entry::Vacant(slot) = self.queued.entry(entity) {
                slot.insert(false);
                self.backlog.push_back(entity);
            }
        }
    }

    /// `true` when no player waits for a delivery pass.
    pub(crate) fn backlog_is_empty(&self) -> bool {
        self.backlog.is_empty()
    }

    /// Players waiting for a save or an autosave.
    pub(crate) fn saves_waiting(&self) -> usize {
        self.saves.len() + self.autosaves.len()
    }

    /// Players waiting for delivery or a save.
    pub(crate) fn len(&self) -> usize {
        self.backlog.len()
            + self.now.len()
            + self.due.len()
            + self.saves.len()
            + self.autosaves.len()
    }

    pub(crate) fn next(&mut self) -> Option<(Entity, bool)> {
        let entity = self.backlog.pop_front()?;
        let forced = self.queued.remove(&entity).unwrap_or(true);
        Some((entity, forced))
    }
}
