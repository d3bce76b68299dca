//! An in-memory ledger, for tests or throwaway demos.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{
    LedgerAudit, LedgerError, LedgerReply, LedgerRequest, LedgerStore, PlayerSnapshot,
    StoredReceipt,
};
use crate::ids::{PurchaseId, RequestId, UserId};
use crate::receipt::{ReceiptInfo, ReceiptState};

#[derive(Clone, Debug, Default)]
struct Account {
    balance: u64,
    state: PlayerSnapshot,
    lease: Option<(String, i64)>,
}

impl Account {
    /// The account of a user the ledger has never seen.
    fn new(starting_balance: u64) -> Self {
        Self {
            balance: starting_balance,
            ..Default::default()
        }
    }
}

#[derive(Debug, Default)]
struct MemoryState {
    accounts: HashMap<UserId, Account>,
    receipts: BTreeMap<PurchaseId, StoredReceipt>,
    /// Pending receipts by buyer, so loading a player does not scan every receipt.
    pending: HashMap<UserId, BTreeSet<PurchaseId>>,
    by_request: HashMap<RequestId, PurchaseId>,
    purchase_debits: u64,
}

impl MemoryState {
    /// Puts (or removes) a receipt, keeping the pending index right.
    fn set_receipt(&mut self, id: PurchaseId, receipt: Option<StoredReceipt>) {
        if let Some(old) = self.receipts.remove(&id)
            && let Some(pending) = self.pending.get_mut(&old.info.player_id)
        {
            pending.remove(&id);
        }
        if let Some(receipt) = receipt {
            if receipt.state == ReceiptState::Pending {
                self.pending
                    .entry(receipt.info.player_id)
                    .or_default()
                    .insert(id.clone());
            }
            self.receipts.insert(id, receipt);
        }
    }
}

/// What a transaction changed, to put back on rollback (newest last).
#[derive(Debug)]
enum Undo {
    Account(UserId, Option<Account>),
    Receipt(PurchaseId, Option<StoredReceipt>),
    Request(RequestId, Option<PurchaseId>),
    Debits(u64),
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

    /// Records what `request` may change before it runs.
    fn remember(state: &MemoryState, request: &LedgerRequest, undo: &mut Vec<Undo>) {
        if let Some(user) = request.user() {
            undo.push(Undo::Account(user, state.accounts.get(&user).cloned()));
        }
        match request {
            LedgerRequest::Charge(charge) => {
                undo.push(Undo::Request(
                    charge.request_id,
                    state.by_request.get(&charge.request_id).cloned(),
                ));
                undo.push(Undo::Debits(state.purchase_debits));
            }
            LedgerRequest::Save(save) => {
                for id in &save.granted {
                    undo.push(Undo::Receipt(id.clone(), state.receipts.get(id).cloned()));
                }
            }
            _ => {}
        }
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
                Undo::Debits(debits) => state.purchase_debits = debits,
            }
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
    LedgerAudit {
        receipts: state.receipts.values().cloned().collect(),
        accounts: state
            .accounts
            .iter()
            .map(|(u, a)| (*u, (a.balance, a.state.clone())))
            .collect(),
        purchase_debits: state.purchase_debits,
    }
}

fn lease_blocks(lease: &Option<(String, i64)>, server: &str, now_ms: i64) -> Option<(String, i64)> {
    match lease {
        Some((owner, until)) if owner != server && *until > now_ms => Some((owner.clone(), *until)),
        _ => None,
    }
}

fn pending_of(state: &MemoryState, user: UserId) -> Vec<ReceiptInfo> {
    state.pending.get(&user).map_or_else(Vec::new, |ids| {
        ids.iter()
            .map(|id| state.receipts[id].info.clone())
            .collect()
    })
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
        let state = &mut guarded.state;
        Self::remember(state, request, undo);
        Ok(match request {
            LedgerRequest::OpenSession {
                user,
                server,
                lease_ms,
                starting_balance,
            } => {
                let account = state
                    .accounts
                    .entry(*user)
                    .or_insert_with(|| Account::new(*starting_balance));
                if let Some((owner, expires_at_ms)) =
                    lease_blocks(&account.lease, &server.0, now_ms)
                {
                    return Ok(LedgerReply::SessionBusy {
                        owner,
                        expires_at_ms,
                    });
                }
                account.lease = Some((server.0.to_string(), now_ms + lease_ms));
                let (balance, snapshot) = (account.balance, account.state.clone());
                LedgerReply::SessionOpened {
                    balance,
                    state: snapshot,
                    pending: pending_of(state, *user),
                }
            }
            LedgerRequest::ReleaseSession { user, server } => {
                if let Some(account) = state.accounts.get_mut(user)
                    && account
                        .lease
                        .as_ref()
                        .is_some_and(|(owner, _)| owner.as_str() == &*server.0)
                {
                    account.lease = None;
                }
                LedgerReply::Released
            }
            LedgerRequest::Charge(charge) => {
                if let Some(existing) = state.by_request.get(&charge.request_id) {
                    let receipt = state.receipts[existing].info.clone();
                    let balance = state.accounts.get(&charge.user).map_or(0, |a| a.balance);
                    return Ok(LedgerReply::Charged {
                        receipt,
                        balance,
                        replayed: true,
                    });
                }
                let account = state
                    .accounts
                    .entry(charge.user)
                    .or_insert_with(|| Account::new(charge.starting_balance));
                if account.balance < charge.price {
                    return Ok(LedgerReply::InsufficientFunds {
                        balance: account.balance,
                        price: charge.price,
                    });
                }
                account.balance -= charge.price;
                let balance = account.balance;
                let receipt = charge.new_receipt();
                state.purchase_debits += charge.price;
                state
                    .by_request
                    .insert(charge.request_id, receipt.purchase_id.clone());
                undo.push(Undo::Receipt(receipt.purchase_id.clone(), None));
                state.set_receipt(
                    receipt.purchase_id.clone(),
                    Some(StoredReceipt {
                        info: receipt.clone(),
                        state: ReceiptState::Pending,
                        request_id: charge.request_id,
                    }),
                );
                LedgerReply::Charged {
                    receipt,
                    balance,
                    replayed: false,
                }
            }
            LedgerRequest::Save(save) => {
                // No account, no lease (and no account made at balance 0), as in the SQL stores.
                let Some(account) = state.accounts.get_mut(&save.user) else {
                    return Ok(LedgerReply::LeaseLost { owner: None });
                };
                match &account.lease {
                    Some((owner, _)) if owner.as_str() == &*save.server.0 => {}
                    other => {
                        return Ok(LedgerReply::LeaseLost {
                            owner: other.as_ref().map(|(o, _)| o.clone()),
                        });
                    }
                }
                account.state = save.state.clone();
                account.lease =
                    (!save.release).then(|| (save.server.0.to_string(), now_ms + save.lease_ms));
                let mut newly_granted = Vec::new();
                for id in &save.granted {
                    if let Some(r) = state.receipts.get(id)
                        && r.info.player_id == save.user
                        && r.state == ReceiptState::Pending
                    {
                        let granted = StoredReceipt {
                            state: ReceiptState::Granted,
                            ..r.clone()
                        };
                        state.set_receipt(id.clone(), Some(granted));
                        newly_granted.push(id.clone());
                    }
                }
                LedgerReply::Saved { newly_granted }
            }
            LedgerRequest::AdjustBalance {
                user,
                delta,
                starting_balance,
                ..
            } => {
                let account = state
                    .accounts
                    .entry(*user)
                    .or_insert_with(|| Account::new(*starting_balance));
                match account.balance.checked_add_signed(*delta) {
                    Some(balance) => {
                        account.balance = balance;
                        LedgerReply::BalanceAdjusted { balance }
                    }
                    None => LedgerReply::BalanceTooLow {
                        balance: account.balance,
                    },
                }
            }
            LedgerRequest::PendingReceipts { user } => LedgerReply::PendingReceipts {
                receipts: pending_of(state, *user),
            },
            LedgerRequest::Audit => LedgerReply::Audit(audit(state)),
        })
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
