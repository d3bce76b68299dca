//! An in-memory ledger, for tests or throwaway demos.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::reports::hourly_sales;
use super::rules::{self, AccountRow, LeasePolicy};
use super::{
    Clawback, CreditRecord, JournalEntry, LeaseRecord, LedgerAudit, LedgerError, LedgerReply,
    LedgerRequest, LedgerStore, PlayerSnapshot, StoredReceipt, purchase_debits,
};
use crate::ids::{PurchaseId, RequestId, UserId};
use crate::receipt::{ReceiptInfo, ReceiptState};

mod books;
use books::MemoryBooks;

#[derive(Clone, Debug, Default)]
struct Account {
    row: AccountRow,
    state: PlayerSnapshot,
}

#[derive(Debug, Default)]
struct MemoryState {
    accounts: HashMap<UserId, Account>,
    /// Every receipt, with the order it was made in.
    receipts: BTreeMap<PurchaseId, (u64, StoredReceipt)>,
    /// Pending receipts by buyer, oldest first (by purchase time, then id, as the SQL stores
    /// order them), so loading a player does not scan every receipt.
    pending: HashMap<UserId, BTreeSet<(i64, PurchaseId)>>,
    /// Refunded receipts waiting for their clawback, by buyer, in the same order.
    clawbacks: HashMap<UserId, BTreeSet<(i64, PurchaseId)>>,
    by_request: HashMap<RequestId, PurchaseId>,
    /// Store top-ups by (source, order id).
    credits: BTreeMap<(String, String), CreditRecord>,
    journal: Vec<JournalEntry>,
    receipts_made: u64,
    /// The change feed: the newest changes, by id.
    changes: VecDeque<(i64, UserId)>,
    changes_made: i64,
}

impl MemoryState {
    /// Puts (or removes) a receipt, keeping the pending and clawback indexes right.
    fn set_receipt(&mut self, id: PurchaseId, receipt: Option<(u64, StoredReceipt)>) {
        if let Some((_, old)) = self.receipts.remove(&id) {
            for index in [&mut self.pending, &mut self.clawbacks] {
                if let Some(ids) = index.get_mut(&old.info.player_id) {
                    ids.remove(&(old.purchased_at_ms, id.clone()));
                }
            }
        }
        if let Some((seq, receipt)) = receipt {
            let user = receipt.info.player_id;
            let key = (receipt.purchased_at_ms, id.clone());
            if receipt.state == ReceiptState::Pending {
                self.pending.entry(user).or_default().insert(key.clone());
            }
            if receipt
                .refund
                .as_ref()
                .is_some_and(|r| r.clawback == Clawback::Pending)
            {
                self.clawbacks.entry(user).or_default().insert(key);
            }
            self.receipts.insert(id, (seq, receipt));
        }
    }

    /// The receipts of `index` for `user`, oldest first.
    fn listed(
        &self,
        index: &HashMap<UserId, BTreeSet<(i64, PurchaseId)>>,
        user: UserId,
    ) -> Vec<ReceiptInfo> {
        index.get(&user).map_or_else(Vec::new, |ids| {
            ids.iter()
                .map(|(_, id)| self.receipts[id].1.info.clone())
                .collect()
        })
    }
}

/// What a transaction changed, to put back on rollback (newest last).
#[derive(Debug)]
enum Undo {
    Account(UserId, Option<Account>),
    Receipt(PurchaseId, Option<(u64, StoredReceipt)>),
    Request(RequestId, Option<PurchaseId>),
    Credit((String, String), Option<CreditRecord>),
    Journal(usize),
    ReceiptsMade(u64),
    Change,
}

#[derive(Debug, Default)]
struct Guarded {
    state: MemoryState,
    /// A store is inside a transaction: others wait to begin or to audit.
    writing: bool,
}

#[derive(Debug, Default)]
struct Shared {
    guarded: Mutex<Guarded>,
    writer_done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Guarded> {
        // The undo log, not the lock, protects committed data from a writer that panicked.
        self.guarded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A ledger kept in memory. Clones share the same data, so a test can keep one clone to inspect
/// what the plugin wrote ([`InMemoryLedger::audit`]).
///
/// Transactions are real: one at a time across clones, invisible to audits until committed, and
/// a batch that fails is rolled back whole. Changes are made in place with an undo log, so a
/// transaction costs what it touches, not the size of the ledger.
#[derive(Debug, Default)]
pub struct InMemoryLedger {
    shared: Arc<Shared>,
    undo: Option<Vec<Undo>>,
}

impl Clone for InMemoryLedger {
    /// Another handle on the same data (outside any transaction).
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            undo: None,
        }
    }
}

impl InMemoryLedger {
    /// Everything committed so far (waits for a transaction in progress to end).
    pub fn audit(&self) -> LedgerAudit {
        audit(&self.committed().state)
    }

    /// The data with no transaction in progress.
    fn committed(&self) -> MutexGuard<'_, Guarded> {
        let mut guarded = self.shared.lock();
        while guarded.writing {
            guarded = self
                .shared
                .writer_done
                .wait(guarded)
                .unwrap_or_else(|e| e.into_inner());
        }
        guarded
    }

    fn end_transaction(&mut self, undo: Vec<Undo>) {
        let mut guarded = self.shared.lock();
        let state = &mut guarded.state;
        for change in undo.into_iter().rev() {
            match change {
                Undo::Account(user, Some(account)) => {
                    state.accounts.insert(user, account);
                }
                Undo::Account(user, None) => {
                    state.accounts.remove(&user);
                }
                Undo::Receipt(id, receipt) => state.set_receipt(id, receipt),
                Undo::Request(request, Some(id)) => {
                    state.by_request.insert(request, id);
                }
                Undo::Request(request, None) => {
                    state.by_request.remove(&request);
                }
                Undo::Credit(key, Some(record)) => {
                    state.credits.insert(key, record);
                }
                Undo::Credit(key, None) => {
                    state.credits.remove(&key);
                }
                Undo::Journal(len) => state.journal.truncate(len),
                Undo::ReceiptsMade(made) => state.receipts_made = made,
                Undo::Change => {
                    state.changes.pop_back();
                    state.changes_made -= 1;
                }
            }
        }
        // Committed (or rolled back): the feed keeps its newest changes.
        while state.changes.len() as i64 > super::CHANGES_KEPT {
            state.changes.pop_front();
        }
        guarded.writing = false;
        drop(guarded);
        self.shared.writer_done.notify_all();
    }
}

impl Drop for InMemoryLedger {
    fn drop(&mut self) {
        // A store dropped inside a transaction (its worker panicked) rolls it back.
        if let Some(undo) = self.undo.take() {
            self.end_transaction(undo);
        }
    }
}

fn audit(state: &MemoryState) -> LedgerAudit {
    let receipts: Vec<StoredReceipt> = state.receipts.values().map(|(_, r)| r.clone()).collect();
    LedgerAudit {
        sales_hours: hourly_sales(&receipts),
        receipts,
        accounts: state
            .accounts
            .iter()
            .map(|(u, a)| (*u, (a.row.balance, a.state.clone())))
            .collect(),
        leases: state
            .accounts
            .iter()
            .map(|(u, a)| {
                let lease = LeaseRecord {
                    owner: a.row.lease_owner.clone(),
                    expires_at_ms: a.row.lease_expires_ms,
                    token: a.row.lease_token,
                };
                (*u, lease)
            })
            .collect(),
        journal: state.journal.clone(),
        shortfalls: state
            .accounts
            .iter()
            .filter(|(_, a)| a.row.shortfall > 0)
            .map(|(u, a)| (*u, a.row.shortfall))
            .collect(),
        credits: state.credits.values().cloned().collect(),
        purchase_debits: purchase_debits(&state.journal),
    }
}

impl LedgerStore for InMemoryLedger {
    fn location(&self) -> String {
        "memory".into()
    }

    fn begin(&mut self) -> Result<(), LedgerError> {
        if self.undo.is_some() {
            return Err(LedgerError::Storage("a transaction is already open".into()));
        }
        self.committed().writing = true;
        self.undo = Some(Vec::new());
        Ok(())
    }

    fn apply(&mut self, request: &LedgerRequest, now_ms: i64) -> Result<LedgerReply, LedgerError> {
        let undo = self
            .undo
            .as_mut()
            .ok_or_else(|| LedgerError::Storage("apply outside a transaction".into()))?;
        let mut guarded = self.shared.lock();
        let mut books = MemoryBooks {
            state: &mut guarded.state,
            undo,
        };
        let Ok(reply) = rules::apply(
            &mut books,
            request,
            now_ms,
            LeasePolicy::default(),
            &mut Vec::new(),
        );
        Ok(reply)
    }

    fn commit(&mut self) -> Result<(), LedgerError> {
        if self.undo.take().is_some() {
            self.end_transaction(Vec::new());
        }
        Ok(())
    }

    fn rollback(&mut self) {
        if let Some(undo) = self.undo.take() {
            self.end_transaction(undo);
        }
    }
}
