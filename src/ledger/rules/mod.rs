//! The ledger's decisions, written once: who may take, renew and release a session lease; when a
//! charge debits, replays or is refused; which receipts a save grants; how far a balance may go.
//!
//! Every store applies a request with [`apply`], over [`Books`]: the few reads and writes of rows
//! the decisions need. The in-memory and SQLite stores write through at once; the PostgreSQL store
//! reads a whole batch's rows up front (locked) and writes back what changed, so a batch gives the
//! same answers and the same final state as its requests applied one at a time.

mod money;
mod sessions;
#[cfg(test)]
mod tests;

use super::reports::SalesDelta;
use super::{
    CreditRecord, HistoryCursor, HistoryFilter, HistoryPage, JournalEntry, JournalKind, LeaseFence,
    LedgerAudit, LedgerReply, LedgerRequest, PlayerSnapshot, RefundRecord, SalesQuery, SalesRow,
};
use crate::ids::{PurchaseId, RequestId, ServerId, UserId};
use crate::receipt::{ReceiptInfo, ReceiptState};

/// The largest balance a ledger keeps (the SQL stores keep balances in signed 64-bit columns).
/// A credit that would go above it is refused (for example with
/// [`AdjustReply::TooHigh`](super::AdjustReply::TooHigh)).
pub const MAX_BALANCE: u64 = i64::MAX as u64;

/// An account as the rules see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AccountRow {
    /// Premium balance, at most [`MAX_BALANCE`].
    pub(crate) balance: u64,
    /// The server holding the session lease.
    pub(crate) lease_owner: Option<String>,
    /// When that lease ends (Unix ms).
    pub(crate) lease_expires_ms: Option<i64>,
    /// The token of the newest lease taken; it only grows, and outlives releases.
    pub(crate) lease_token: i64,
    /// Currency owed from reversed top-ups the balance could not cover.
    pub(crate) shortfall: u64,
}

/// A receipt as the rules see it: what it is, where it is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReceiptStatus {
    pub(crate) info: ReceiptInfo,
    pub(crate) state: ReceiptState,
    pub(crate) refund: Option<RefundRecord>,
    /// When it was bought (Unix ms).
    pub(crate) purchased_at_ms: i64,
}

impl AccountRow {
    /// The account of a user the ledger has never seen.
    pub(crate) fn new(starting_balance: u64) -> Self {
        Self {
            balance: starting_balance.min(MAX_BALANCE),
            ..Self::default()
        }
    }

    /// Whether `fence` names the lease this account is under.
    pub(super) fn held_by(&self, fence: &LeaseFence) -> bool {
        self.owned_by(&fence.server) && self.lease_token == fence.token
    }

    pub(super) fn owned_by(&self, server: &ServerId) -> bool {
        self.lease_owner.as_deref() == Some(server.as_str())
    }

    pub(super) fn take_lease(&mut self, server: &ServerId, until_ms: i64) {
        self.lease_owner = Some(server.as_str().to_owned());
        self.lease_expires_ms = Some(until_ms);
        self.lease_token += 1;
    }

    pub(super) fn release_lease(&mut self) {
        self.lease_owner = None;
        self.lease_expires_ms = None;
    }
}

/// The rows a store keeps, as the rules read and write them, inside one transaction.
pub(crate) trait Books {
    /// A storage failure.
    type Error;
    /// The user's account (locked for the rest of the transaction where that means something).
    fn account(&mut self, user: UserId) -> Result<Option<AccountRow>, Self::Error>;
    /// Writes the user's account; `created` when [`Books::account`] found none.
    fn put_account(
        &mut self,
        user: UserId,
        account: &AccountRow,
        created: bool,
        now_ms: i64,
    ) -> Result<(), Self::Error>;
    /// The receipt a charge request made, if it made one.
    fn receipt_by_request(
        &mut self,
        request: RequestId,
    ) -> Result<Option<ReceiptInfo>, Self::Error>;
    /// A receipt and its state.
    fn receipt(&mut self, id: &PurchaseId) -> Result<Option<ReceiptStatus>, Self::Error>;
    /// Stores a new pending receipt, with the product's name now.
    fn insert_receipt(
        &mut self,
        receipt: &ReceiptInfo,
        request: RequestId,
        product_name: &str,
        now_ms: i64,
    ) -> Result<(), Self::Error>;
    /// Marks a pending receipt granted.
    fn grant_receipt(&mut self, id: &PurchaseId, now_ms: i64) -> Result<(), Self::Error>;
    /// Marks a receipt refunded (`state` [`Refunded`](ReceiptState::Refunded)) or rejected by
    /// its handler ([`Rejected`](ReceiptState::Rejected)), or changes its refund's clawback.
    fn put_refund(
        &mut self,
        id: &PurchaseId,
        state: ReceiptState,
        refund: &RefundRecord,
    ) -> Result<(), Self::Error>;
    /// The user's refunded receipts whose clawback is pending, oldest purchase first.
    fn clawbacks(&mut self, user: UserId) -> Result<Vec<ReceiptInfo>, Self::Error>;
    /// A store order credited before.
    fn credit(&mut self, source: &str, order_id: &str)
    -> Result<Option<CreditRecord>, Self::Error>;
    /// Writes a store order; `created` when [`Books::credit`] found none.
    fn put_credit(&mut self, credit: &CreditRecord, created: bool) -> Result<(), Self::Error>;
    /// Appends to the balance journal.
    fn journal(&mut self, entry: JournalEntry, now_ms: i64) -> Result<(), Self::Error>;
    /// The user's persisted components.
    fn state(&mut self, user: UserId) -> Result<PlayerSnapshot, Self::Error>;
    /// Replaces the user's persisted components.
    fn put_state(&mut self, user: UserId, state: &PlayerSnapshot) -> Result<(), Self::Error>;
    /// The user's pending receipts, oldest first.
    fn pending(&mut self, user: UserId) -> Result<Vec<ReceiptInfo>, Self::Error>;
    /// Everything committed and written so far in this transaction.
    fn audit(&mut self) -> Result<LedgerAudit, Self::Error>;
    /// The user's purchases that pass `filter`, newest first: the page after `after`, or without
    /// it page `page`.
    fn history(
        &mut self,
        user: UserId,
        filter: &HistoryFilter,
        page: u32,
        after: Option<&HistoryCursor>,
    ) -> Result<HistoryPage, Self::Error>;
    /// Sales per product per bucket.
    fn sales(&mut self, query: &SalesQuery) -> Result<Vec<SalesRow>, Self::Error>;
    /// Adds to the sales totals of an hour (a store that answers [`Books::sales`] from its
    /// receipts keeps none).
    fn count_sale(&mut self, sale: &SalesDelta) -> Result<(), Self::Error>;
    /// Adds `user` to the change feed: a running game must hear their data changed.
    fn note_change(&mut self, user: UserId, now_ms: i64) -> Result<(), Self::Error>;
    /// The change feed after `since`.
    fn changes(&mut self, since: Option<i64>) -> Result<super::ChangeFeed, Self::Error>;
}

/// How a store lets sessions be taken.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LeasePolicy {
    /// The store is the only game using the ledger (an SQLite file under its lock): a live lease
    /// naming another server was left by a game that died, and is taken over.
    pub(crate) take_over_foreign: bool,
}

/// What [`apply`] noticed besides its answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A live lease of another server was taken over ([`LeasePolicy::take_over_foreign`]).
    TookOver {
        user: UserId,
        owner: String,
        expires_at_ms: i64,
    },
}

/// Applies one request to `books` at `now_ms` (Unix ms): the one place the ledger decides.
pub(crate) fn apply<B: Books>(
    books: &mut B,
    request: &LedgerRequest,
    now_ms: i64,
    policy: LeasePolicy,
    notices: &mut Vec<Notice>,
) -> Result<LedgerReply, B::Error> {
    Ok(match request {
        LedgerRequest::OpenSession(open) => {
            LedgerReply::OpenSession(sessions::open(books, open, now_ms, policy, notices)?)
        }
        LedgerRequest::ReleaseSession(release) => {
            LedgerReply::ReleaseSession(sessions::release(books, release, now_ms)?)
        }
        LedgerRequest::Charge(charge) => LedgerReply::Charge(money::charge(books, charge, now_ms)?),
        LedgerRequest::Save(save) => LedgerReply::Save(sessions::save(books, save, now_ms)?),
        LedgerRequest::AdjustBalance(adjust) => {
            LedgerReply::AdjustBalance(money::adjust(books, adjust, now_ms)?)
        }
        LedgerRequest::ReadPlayer(read) => LedgerReply::ReadPlayer(sessions::read(books, read)?),
        LedgerRequest::Refund(refund) => LedgerReply::Refund(money::refund(books, refund, now_ms)?),
        LedgerRequest::Credit(credit) => LedgerReply::Credit(money::credit(books, credit, now_ms)?),
        LedgerRequest::ReverseCredit(reverse) => {
            LedgerReply::ReverseCredit(money::reverse_credit(books, reverse, now_ms)?)
        }
        LedgerRequest::Audit(_) => LedgerReply::Audit(books.audit()?),
        LedgerRequest::History(history) => LedgerReply::History(match history.cursor_keepable() {
            Err(invalid) => Err(invalid),
            Ok(()) => Ok(books.history(
                history.user,
                &history.filter,
                history.page,
                history.after.as_ref(),
            )?),
        }),
        LedgerRequest::Sales(query) => LedgerReply::Sales(books.sales(query)?),
        LedgerRequest::ReadChanges(read) => LedgerReply::ReadChanges(books.changes(read.since)?),
    })
}

/// The user's account, or a new one with the starting balance. A new account is not written yet,
/// but its starting balance is journaled, so every balance is the sum of its journal.
pub(super) fn account_or_new<B: Books>(
    books: &mut B,
    user: UserId,
    starting_balance: u64,
    now_ms: i64,
) -> Result<(AccountRow, bool), B::Error> {
    Ok(match books.account(user)? {
        Some(account) => (account, false),
        None => {
            let account = AccountRow::new(starting_balance);
            if account.balance > 0 {
                books.journal(
                    JournalEntry {
                        user,
                        delta: account.balance as i64,
                        kind: JournalKind::StartingBalance,
                        reason: "starting balance".into(),
                        purchase_id: None,
                    },
                    now_ms,
                )?;
            }
            (account, true)
        }
    })
}

/// Whether a store can apply `request` as written: a request holding text no store can keep (a
/// NUL character) is refused by the rules without reading anything, so the PostgreSQL store must
/// not send its text to the database either.
#[cfg(feature = "postgres")]
pub(crate) fn texts_keepable(request: &LedgerRequest) -> bool {
    use super::keepable;
    match request {
        LedgerRequest::Refund(refund) => {
            keepable("", refund.purchase_id.as_str()).is_ok()
                && keepable("", &refund.reason).is_ok()
        }
        LedgerRequest::Credit(credit) => {
            keepable("", &credit.source).is_ok() && keepable("", &credit.order_id).is_ok()
        }
        LedgerRequest::ReverseCredit(reverse) => {
            keepable("", &reverse.source).is_ok() && keepable("", &reverse.order_id).is_ok()
        }
        LedgerRequest::Save(save) => save
            .rejected
            .iter()
            .all(|(id, reason)| keepable("", id.as_str()).is_ok() && keepable("", reason).is_ok()),
        _ => true,
    }
}

/// The user whose account applying `request` may create (the PostgreSQL store reserves those
/// rows before a batch, in one global order, so concurrent servers do not deadlock).
#[cfg(feature = "postgres")]
pub(crate) fn may_create_account(request: &LedgerRequest) -> Option<UserId> {
    match request {
        LedgerRequest::OpenSession(open) => Some(open.user),
        LedgerRequest::AdjustBalance(adjust) => Some(adjust.user),
        LedgerRequest::Credit(credit) => Some(credit.user),
        LedgerRequest::Charge(charge) if charge.fence.is_none() => Some(charge.user),
        _ => None,
    }
}
