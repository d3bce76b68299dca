//! The set of receipts granted in memory whose commit has not been confirmed.

use std::hash::{BuildHasher, Hash, Hasher};

use bevy::platform::collections::{Equivalent, HashMap};
use bevy::platform::hash::FixedHasher;

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

/// Receipts granted in memory on this server, by purchase id, until their save commits. A receipt
/// in here is never handed to a handler again. Values are boxed so growing the map moves little.
#[derive(Debug, Default)]
pub(crate) struct AwaitingCommit(HashMap<PrehashedId, Box<ReceiptInfo>>);

impl AwaitingCommit {
    pub(crate) fn contains(&self, id: &PurchaseId) -> bool {
        self.0.contains_key(&probe(id))
    }

    pub(crate) fn insert(&mut self, receipt: ReceiptInfo) {
        let hash = probe(&receipt.purchase_id).hash;
        let key = PrehashedId {
            hash,
            id: receipt.purchase_id.clone(),
        };
        self.0.insert(key, Box::new(receipt));
    }

    pub(crate) fn remove(&mut self, id: &PurchaseId) -> Option<ReceiptInfo> {
        self.0.remove(&probe(id)).map(|receipt| *receipt)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ReceiptInfo> {
        self.0.values().map(|receipt| &**receipt)
    }
}
