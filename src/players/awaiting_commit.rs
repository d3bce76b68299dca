//! The receipts a handler worked on in memory (granted, or their refund settled) whose commit has
//! not been confirmed.

use std::hash::{BuildHasher, Hash, Hasher};

use bevy::platform::collections::{Equivalent, HashMap};
use bevy::platform::hash::FixedHasher;

use super::player::{Task, Work};
use crate::ids::PurchaseId;
use crate::receipt::ReceiptInfo;

/// A purchase id with its hash computed once. When a burst grows the map, rehashing reads this
/// field instead of every id's string: thousands of cache misses in one frame otherwise.
#[derive(Debug, PartialEq, Eq)]
struct PrehashedId {
    hash: u64,
    id: PurchaseId,
}

impl Hash for PrehashedId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A lookup key borrowing the id.
struct Probe<'a> {
    hash: u64,
    id: &'a PurchaseId,
}

impl Hash for Probe<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Equivalent<PrehashedId> for Probe<'_> {
    fn equivalent(&self, key: &PrehashedId) -> bool {
        self.hash == key.hash && *self.id == key.id
    }
}

fn probe(id: &PurchaseId) -> Probe<'_> {
    Probe {
        hash: FixedHasher.hash_one(id),
        id,
    }
}

/// Receipts a handler worked on in memory on this server, by purchase id, until the save that
/// commits the work: a receipt in here is never handed to a handler for that task again. Values
/// are boxed so growing the map moves little.
#[derive(Debug, Default)]
pub(crate) struct AwaitingCommit(HashMap<PrehashedId, Box<(ReceiptInfo, Work)>>);

impl AwaitingCommit {
    /// Whether a handler did `task` on `id` and its commit is in flight.
    pub(crate) fn holds(&self, id: &PurchaseId, task: Task) -> bool {
        self.0.get(&probe(id)).is_some_and(|work| {
            matches!(
                (work.1, task),
                (Work::Granted, Task::Grant) | (Work::Settled(_), Task::TakeBack)
            )
        })
    }

    pub(crate) fn insert(&mut self, receipt: ReceiptInfo, work: Work) {
        let hash = probe(&receipt.purchase_id).hash;
        let key = PrehashedId {
            hash,
            id: receipt.purchase_id.clone(),
        };
        self.0.insert(key, Box::new((receipt, work)));
    }

    pub(crate) fn remove(&mut self, id: &PurchaseId) -> Option<(ReceiptInfo, Work)> {
        self.0.remove(&probe(id)).map(|work| *work)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ReceiptInfo> {
        self.0.values().map(|work| &work.0)
    }
}
