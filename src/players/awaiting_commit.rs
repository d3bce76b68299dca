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

/// Receipts a handler worked on in memory on this server, by purchase id and task, until the save
/// that commits the work: a receipt in here is never handed to a handler for that task again. A
/// receipt can be in both at once (granted, refunded while its grant commits, taken back). Values
/// are boxed so growing the maps moves little.
#[derive(Debug, Default)]
pub(crate) struct AwaitingCommit {
    grants: HashMap<PrehashedId, Box<(ReceiptInfo, Work)>>,
    take_backs: HashMap<PrehashedId, Box<(ReceiptInfo, Work)>>,
}

impl AwaitingCommit {
    fn map(&mut self, task: Task) -> &mut HashMap<PrehashedId, Box<(ReceiptInfo, Work)>> {
        match task {
            Task::Grant => &mut self.grants,
            Task::TakeBack => &mut self.take_backs,
        }
    }

    /// Whether a handler did `task` on `id` and its commit is in flight.
    pub(crate) fn holds(&self, id: &PurchaseId, task: Task) -> bool {
        match task {
            Task::Grant => self.grants.contains_key(&probe(id)),
            Task::TakeBack => self.take_backs.contains_key(&probe(id)),
        }
    }

    pub(crate) fn insert(&mut self, receipt: ReceiptInfo, work: Work) {
        let hash = probe(&receipt.purchase_id).hash;
        let key = PrehashedId {
            hash,
            id: receipt.purchase_id.clone(),
        };
        self.map(work.task()).insert(key, Box::new((receipt, work)));
    }

    pub(crate) fn remove(&mut self, id: &PurchaseId, task: Task) -> Option<(ReceiptInfo, Work)> {
        self.map(task).remove(&probe(id)).map(|work| *work)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ReceiptInfo> {
        self.grants
            .values()
            .chain(self.take_backs.values())
            .map(|work| &work.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{PlaceId, ProductId, UserId};
    use crate::ledger::Clawback;
    use crate::receipt::{CurrencyType, ProductPurchaseChannel};

    /// A receipt granted in memory, refunded while the grant commits and taken back at once, has
    /// both works in flight: neither hides the other.
    #[test]
    fn a_grant_and_its_take_back_can_both_await_their_commit() {
        let receipt = ReceiptInfo {
            purchase_id: PurchaseId("a".into()),
            player_id: UserId(1),
            product_id: ProductId(1),
            place_id_where_purchased: PlaceId(0),
            currency_spent: 5,
            currency_type: CurrencyType::Premium,
            product_purchase_channel: ProductPurchaseChannel::InExperience,
            is_test_purchase: false,
        };
        let id = receipt.purchase_id.clone();
        let mut awaiting = AwaitingCommit::default();
        awaiting.insert(receipt.clone(), Work::Granted);
        awaiting.insert(receipt, Work::Settled(Clawback::Done));
        assert!(awaiting.holds(&id, Task::Grant) && awaiting.holds(&id, Task::TakeBack));
        assert_eq!(
            awaiting.remove(&id, Task::Grant).map(|w| w.1),
            Some(Work::Granted)
        );
        assert!(awaiting.holds(&id, Task::TakeBack));
        assert_eq!(
            awaiting.remove(&id, Task::TakeBack).map(|w| w.1),
            Some(Work::Settled(Clawback::Done))
        );
        assert_eq!(awaiting.iter().count(), 0);
    }
}
