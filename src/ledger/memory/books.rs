//! The in-memory ledger's rows, as the rules read and write them: every change goes into the
//! state and into the transaction's undo log.

use super::{Account, MemoryState, Undo, audit};
use crate::ids::{PurchaseId, RequestId, UserId};
use crate::ledger::reports::{SalesDelta, sales_of};
use crate::ledger::rules::{AccountRow, Books, ReceiptStatus};
use crate::ledger::{
    ChangeFeed, CreditRecord, HistoryCursor, HistoryFilter, HistoryPage, JournalEntry, LedgerAudit,
    PlayerSnapshot, RefundRecord, SalesQuery, SalesRow, StoredReceipt,
};
use crate::receipt::{ReceiptInfo, ReceiptState};

/// The rows of one transaction: changes go straight into the state, and into the undo log.
pub(super) struct MemoryBooks<'a> {
    pub(super) state: &'a mut MemoryState,
    pub(super) undo: &'a mut Vec<Undo>,
}

impl MemoryBooks<'_> {
    fn account_mut(&mut self, user: UserId) -> &mut Account {
        self.undo
            .push(Undo::Account(user, self.state.accounts.get(&user).cloned()));
        self.state.accounts.entry(user).or_default()
    }

    fn change_receipt(&mut self, id: &PurchaseId, change: impl FnOnce(&mut StoredReceipt)) {
        if let Some((seq, old)) = self.state.receipts.get(id).cloned() {
            self.undo
                .push(Undo::Receipt(id.clone(), Some((seq, old.clone()))));
            let mut new = old;
            change(&mut new);
            self.state.set_receipt(id.clone(), Some((seq, new)));
        }
    }
}

impl Books for MemoryBooks<'_> {
    type Error = std::convert::Infallible;

    fn account(&mut self, user: UserId) -> Result<Option<AccountRow>, Self::Error> {
        Ok(self.state.accounts.get(&user).map(|a| a.row.clone()))
    }

    fn put_account(
        &mut self,
        user: UserId,
        account: &AccountRow,
        _created: bool,
        _now_ms: i64,
    ) -> Result<(), Self::Error> {
        self.account_mut(user).row = account.clone();
        Ok(())
    }

    fn receipt_by_request(
        &mut self,
        request: RequestId,
    ) -> Result<Option<ReceiptInfo>, Self::Error> {
        Ok(self
            .state
            .by_request
            .get(&request)
            .map(|id| self.state.receipts[id].1.info.clone()))
    }

    fn receipt(&mut self, id: &PurchaseId) -> Result<Option<ReceiptStatus>, Self::Error> {
        Ok(self.state.receipts.get(id).map(|(_, r)| ReceiptStatus {
            info: r.info.clone(),
            state: r.state,
            refund: r.refund.clone(),
            purchased_at_ms: r.purchased_at_ms,
        }))
    }

    fn insert_receipt(
        &mut self,
        receipt: &ReceiptInfo,
        request: RequestId,
        product_name: &str,
        now_ms: i64,
    ) -> Result<(), Self::Error> {
        let id = receipt.purchase_id.clone();
        self.undo.push(Undo::Request(request, None));
        self.undo.push(Undo::Receipt(id.clone(), None));
        self.undo.push(Undo::ReceiptsMade(self.state.receipts_made));
        self.state.receipts_made += 1;
        self.state.by_request.insert(request, id.clone());
        let stored = StoredReceipt {
            info: receipt.clone(),
            state: ReceiptState::Pending,
            request_id: request,
            product_name: product_name.to_owned(),
            purchased_at_ms: now_ms,
            granted_at_ms: None,
            refund: None,
        };
        self.state
            .set_receipt(id, Some((self.state.receipts_made, stored)));
        Ok(())
    }

    fn grant_receipt(&mut self, id: &PurchaseId, now_ms: i64) -> Result<(), Self::Error> {
        self.change_receipt(id, |r| {
            r.state = ReceiptState::Granted;
            r.granted_at_ms = Some(now_ms);
        });
        Ok(())
    }

    fn put_refund(
        &mut self,
        id: &PurchaseId,
        state: ReceiptState,
        refund: &RefundRecord,
    ) -> Result<(), Self::Error> {
        self.change_receipt(id, |r| {
            r.state = state;
            r.refund = Some(refund.clone());
        });
        Ok(())
    }

    fn clawbacks(&mut self, user: UserId) -> Result<Vec<ReceiptInfo>, Self::Error> {
        Ok(self.state.listed(&self.state.clawbacks, user))
    }

    fn credit(
        &mut self,
        source: &str,
        order_id: &str,
    ) -> Result<Option<CreditRecord>, Self::Error> {
        Ok(self
            .state
            .credits
            .get(&(source.to_owned(), order_id.to_owned()))
            .cloned())
    }

    fn put_credit(&mut self, credit: &CreditRecord, _created: bool) -> Result<(), Self::Error> {
        let key = (credit.source.clone(), credit.order_id.clone());
        self.undo.push(Undo::Credit(
            key.clone(),
            self.state.credits.get(&key).cloned(),
        ));
        self.state.credits.insert(key, credit.clone());
        Ok(())
    }

    fn journal(&mut self, entry: JournalEntry, _now_ms: i64) -> Result<(), Self::Error> {
        self.undo.push(Undo::Journal(self.state.journal.len()));
        self.state.journal.push(entry);
        Ok(())
    }

    fn state(&mut self, user: UserId) -> Result<PlayerSnapshot, Self::Error> {
        Ok(self
            .state
            .accounts
            .get(&user)
            .map(|a| a.state.clone())
            .unwrap_or_default())
    }

    fn put_state(&mut self, user: UserId, state: &PlayerSnapshot) -> Result<(), Self::Error> {
        self.account_mut(user).state = state.clone();
        Ok(())
    }

    fn pending(&mut self, user: UserId) -> Result<Vec<ReceiptInfo>, Self::Error> {
        Ok(self.state.listed(&self.state.pending, user))
    }

    fn audit(&mut self) -> Result<LedgerAudit, Self::Error> {
        Ok(audit(self.state))
    }

    fn history(
        &mut self,
        user: UserId,
        filter: &HistoryFilter,
        page: u32,
        after: Option<&HistoryCursor>,
    ) -> Result<HistoryPage, Self::Error> {
        let mut mine: Vec<&StoredReceipt> = self
            .state
            .receipts
            .values()
            .map(|(_, r)| r)
            .filter(|r| r.info.player_id == user)
            .collect();
        // Newest first, as the SQL stores order them.
        mine.sort_by(|a, b| {
            (b.purchased_at_ms, &b.info.purchase_id).cmp(&(a.purchased_at_ms, &a.info.purchase_id))
        });
        let entries = mine
            .into_iter()
            .map(StoredReceipt::history_entry)
            .filter(|e| filter.admits(e));
        Ok(HistoryPage::of(entries, page, after))
    }

    fn sales(&mut self, query: &SalesQuery) -> Result<Vec<SalesRow>, Self::Error> {
        Ok(sales_of(
            self.state
                .receipts
                .values()
                .map(|(_, r)| (&r.info, r.state, r.purchased_at_ms)),
            query,
        ))
    }

    fn count_sale(&mut self, _sale: &SalesDelta) -> Result<(), Self::Error> {
        // Sales are added up from the receipts: the model the SQL stores' totals are held to.
        Ok(())
    }

    fn note_change(&mut self, user: UserId, _now_ms: i64) -> Result<(), Self::Error> {
        self.undo.push(Undo::Change);
        self.state.changes_made += 1;
        let id = self.state.changes_made;
        self.state.changes.push_back((id, user));
        Ok(())
    }

    fn changes(&mut self, since: Option<i64>) -> Result<ChangeFeed, Self::Error> {
        let changes = &self.state.changes;
        let after = since.unwrap_or(i64::MAX);
        let start = changes.partition_point(|(id, _)| *id <= after);
        let oldest = changes.front().map_or(self.state.changes_made + 1, |c| c.0);
        Ok(ChangeFeed::of(
            since,
            changes.range(start..).copied(),
            self.state.changes_made,
            oldest,
        ))
    }
}
