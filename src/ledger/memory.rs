//! An in-memory ledger for tests and throwaway demos.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    LedgerAudit, LedgerError, LedgerReply, LedgerRequest, LedgerStore, PlayerSnapshot,
    StoredReceipt,
};
use crate::ids::{PurchaseId, RequestId, UserId};
use crate::receipt::{CurrencyType, ReceiptInfo, ReceiptState};

#[derive(Clone, Debug, Default)]
struct Account {
    balance: u64,
    state: PlayerSnapshot,
    lease: Option<(String, i64)>,
}

#[derive(Clone, Debug, Default)]
struct MemoryState {
    accounts: HashMap<UserId, Account>,
    receipts: BTreeMap<PurchaseId, StoredReceipt>,
    by_request: HashMap<RequestId, PurchaseId>,
    purchase_debits: u64,
}

/// A ledger kept in memory. Clones share the same data, so a test can keep one clone to inspect
/// what the plugin wrote ([`InMemoryLedger::audit`]).
///
/// Transactions are real: a batch that fails is rolled back whole.
#[derive(Clone, Debug, Default)]
pub struct InMemoryLedger {
    shared: Arc<Mutex<MemoryState>>,
    staged: Option<MemoryState>,
}

impl InMemoryLedger {
    /// Everything committed so far.
    pub fn audit(&self) -> LedgerAudit {
        audit(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // A panic while holding the lock leaves committed data intact (writes go to `staged`).
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
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
    state
        .receipts
        .values()
        .filter(|r| r.info.player_id == user && r.state == ReceiptState::Pending)
        .map(|r| r.info.clone())
        .collect()
}

impl LedgerStore for InMemoryLedger {
    fn location(&self) -> String {
        "memory".into()
    }

    fn begin(&mut self) -> Result<(), LedgerError> {
        let snapshot = self.lock().clone();
        self.staged = Some(snapshot);
        Ok(())
    }

    fn apply(&mut self, request: &LedgerRequest, now_ms: i64) -> Result<LedgerReply, LedgerError> {
        let state = self
            .staged
            .as_mut()
            .ok_or_else(|| LedgerError::Storage("apply outside a transaction".into()))?;
        Ok(match request {
            LedgerRequest::OpenSession {
                user,
                server,
                lease_ms,
                starting_balance,
            } => {
                let account = state.accounts.entry(*user).or_insert_with(|| Account {
                    balance: *starting_balance,
                    ..Default::default()
                });
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
                let account = state.accounts.entry(charge.user).or_default();
                if account.balance < charge.price {
                    return Ok(LedgerReply::InsufficientFunds {
                        balance: account.balance,
                        price: charge.price,
                    });
                }
                account.balance -= charge.price;
                let balance = account.balance;
                let receipt = ReceiptInfo {
                    purchase_id: PurchaseId::new(),
                    player_id: charge.user,
                    product_id: charge.product_id,
                    place_id_where_purchased: charge.place_id,
                    currency_spent: charge.price,
                    currency_type: CurrencyType::Premium,
                    product_purchase_channel: charge.channel,
                    is_test_purchase: charge.test_purchase,
                };
                state.purchase_debits += charge.price;
                state
                    .by_request
                    .insert(charge.request_id, receipt.purchase_id.clone());
                state.receipts.insert(
                    receipt.purchase_id.clone(),
                    StoredReceipt {
                        info: receipt.clone(),
                        state: ReceiptState::Pending,
                        request_id: charge.request_id,
                    },
                );
                LedgerReply::Charged {
                    receipt,
                    balance,
                    replayed: false,
                }
            }
            LedgerRequest::Save(save) => {
                let account = state.accounts.entry(save.user).or_default();
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
                    if let Some(r) = state.receipts.get_mut(id)
                        && r.info.player_id == save.user
                        && r.state == ReceiptState::Pending
                    {
                        r.state = ReceiptState::Granted;
                        newly_granted.push(id.clone());
                    }
                }
                LedgerReply::Saved { newly_granted }
            }
            LedgerRequest::AdjustBalance { user, delta, .. } => {
                let account = state.accounts.entry(*user).or_default();
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
        if let Some(staged) = self.staged.take() {
            *self.lock() = staged;
        }
        Ok(())
    }

    fn rollback(&mut self) {
        self.staged = None;
    }
}
