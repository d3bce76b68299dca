//! The ledger's decisions, written once: who may take, renew and release a session lease; when a
//! charge debits, replays or is refused; which receipts a save grants; how far a balance may go.
//!
//! Every store applies a request with [`apply`], over [`Books`]: the few reads and writes of rows
//! the decisions need. The in-memory and SQLite stores write through at once; the PostgreSQL store
//! reads a whole batch's rows up front (locked) and writes back what changed, so a batch gives the
//! same answers and the same final state as its requests applied one at a time.

use super::{
    HistoryFilter, HistoryPage, JournalEntry, LeaseFence, LedgerAudit, LedgerReply, LedgerRequest,
    PlayerSnapshot, SalesQuery, SalesRow,
};
use crate::ids::{PurchaseId, RequestId, ServerId, UserId};
use crate::receipt::{ReceiptInfo, ReceiptState};

/// The largest balance a ledger keeps (the SQL stores keep balances in signed 64-bit columns).
/// A credit that would go above it is refused with [`LedgerReply::BalanceTooHigh`].
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
    fn held_by(&self, fence: &LeaseFence) -> bool {
        self.owned_by(&fence.server) && self.lease_token == fence.token
    }

    fn owned_by(&self, server: &ServerId) -> bool {
        self.lease_owner.as_deref() == Some(&*storable(&server.0))
    }

    fn take_lease(&mut self, server: &ServerId, until_ms: i64) {
        self.lease_owner = Some(storable(&server.0).into_owned());
        self.lease_expires_ms = Some(until_ms);
        self.lease_token += 1;
    }

    fn release_lease(&mut self) {
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
    /// A receipt's buyer and state.
    fn receipt_state(
        &mut self,
        id: &PurchaseId,
    ) -> Result<Option<(UserId, ReceiptState)>, Self::Error>;
    /// Stores a new pending receipt, with the product's name now.
    fn insert_receipt(
        &mut self,
        receipt: &ReceiptInfo,
        request: RequestId,
        product_name: &str,
        now_ms: i64,
    ) -> Result<(), Self::Error>;
    /// Moves a receipt to `state`.
    fn set_receipt_state(
        &mut self,
        id: &PurchaseId,
        state: ReceiptState,
        now_ms: i64,
    ) -> Result<(), Self::Error>;
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
    /// Page `page` of the user's purchases that pass `filter`, newest first.
    fn history(
        &mut self,
        user: UserId,
        filter: &HistoryFilter,
        page: u32,
    ) -> Result<HistoryPage, Self::Error>;
    /// Sales per product per bucket.
    fn sales(&mut self, query: &SalesQuery) -> Result<Vec<SalesRow>, Self::Error>;
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
        LedgerRequest::OpenSession {
            user,
            server,
            lease_ms,
            starting_balance,
        } => {
            let (mut account, created) = account_or_new(books, *user, *starting_balance, now_ms)?;
            if let (Some(owner), Some(expires_at_ms)) =
                (&account.lease_owner, account.lease_expires_ms)
                && !account.owned_by(server)
                && expires_at_ms > now_ms
            {
                if !policy.take_over_foreign {
                    return Ok(LedgerReply::SessionBusy {
                        owner: owner.clone(),
                        expires_at_ms,
                    });
                }
                notices.push(Notice::TookOver {
                    user: *user,
                    owner: owner.clone(),
                    expires_at_ms,
                });
            }
            account.take_lease(server, now_ms.saturating_add(*lease_ms));
            books.put_account(*user, &account, created, now_ms)?;
            LedgerReply::SessionOpened {
                balance: account.balance,
                state: books.state(*user)?,
                pending: books.pending(*user)?,
                lease_token: account.lease_token,
            }
        }
        LedgerRequest::ReleaseSession {
            user,
            server,
            token,
        } => {
            if let Some(mut account) = books.account(*user)?
                && account.owned_by(server)
                && token.is_none_or(|token| token == account.lease_token)
            {
                account.release_lease();
                books.put_account(*user, &account, false, now_ms)?;
            }
            LedgerReply::Released
        }
        LedgerRequest::Charge(charge) => {
            // A retried charge gets the receipt of the first attempt, whoever holds the lease now:
            // nothing moves.
            if let Some(receipt) = books.receipt_by_request(charge.request_id)? {
                let balance = books.account(charge.user)?.map_or(0, |a| a.balance);
                return Ok(LedgerReply::Charged {
                    receipt,
                    balance,
                    replayed: true,
                });
            }
            let (mut account, created) = match &charge.fence {
                Some(fence) => match books.account(charge.user)? {
                    Some(account) if account.held_by(fence) => (account, false),
                    other => {
                        return Ok(LedgerReply::LeaseLost {
                            owner: other.and_then(|a| a.lease_owner),
                        });
                    }
                },
                // Bought outside any game server (a store page, a tool): the receipt waits for
                // the player's session, wherever it is.
                None => account_or_new(books, charge.user, charge.starting_balance, now_ms)?,
            };
            if account.balance < charge.price {
                if created {
                    books.put_account(charge.user, &account, true, now_ms)?;
                }
                return Ok(LedgerReply::InsufficientFunds {
                    balance: account.balance,
                    price: charge.price,
                });
            }
            account.balance -= charge.price;
            books.put_account(charge.user, &account, created, now_ms)?;
            let receipt = charge.new_receipt();
            books.insert_receipt(
                &receipt,
                charge.request_id,
                &storable(&charge.product_name),
                now_ms,
            )?;
            if charge.price > 0 {
                books.journal(
                    JournalEntry {
                        user: charge.user,
                        // The price is at most the balance, so at most `MAX_BALANCE`.
                        delta: -(charge.price as i64),
                        reason: "purchase".into(),
                        purchase_id: Some(receipt.purchase_id.clone()),
                    },
                    now_ms,
                )?;
            }
            LedgerReply::Charged {
                receipt,
                balance: account.balance,
                replayed: false,
            }
        }
        LedgerRequest::Save(save) => {
            let mut account = match books.account(save.user)? {
                Some(account) if account.held_by(&save.fence) => account,
                other => {
                    return Ok(LedgerReply::LeaseLost {
                        owner: other.and_then(|a| a.lease_owner),
                    });
                }
            };
            if save.release {
                account.release_lease();
            } else {
                account.lease_expires_ms = Some(now_ms.saturating_add(save.lease_ms));
            }
            books.put_account(save.user, &account, false, now_ms)?;
            books.put_state(save.user, &save.state)?;
            let mut newly_granted = Vec::new();
            for id in &save.granted {
                if books.receipt_state(id)? == Some((save.user, ReceiptState::Pending)) {
                    books.set_receipt_state(id, ReceiptState::Granted, now_ms)?;
                    newly_granted.push(id.clone());
                }
            }
            LedgerReply::Saved { newly_granted }
        }
        LedgerRequest::AdjustBalance {
            user,
            delta,
            reason,
            starting_balance,
        } => {
            let (mut account, created) = account_or_new(books, *user, *starting_balance, now_ms)?;
            let refusal = match account.balance.checked_add_signed(*delta) {
                Some(balance) if balance <= MAX_BALANCE => {
                    account.balance = balance;
                    None
                }
                _ if *delta < 0 => Some(LedgerReply::BalanceTooLow {
                    balance: account.balance,
                }),
                _ => Some(LedgerReply::BalanceTooHigh {
                    balance: account.balance,
                }),
            };
            books.put_account(*user, &account, created, now_ms)?;
            if let Some(refusal) = refusal {
                return Ok(refusal);
            }
            if *delta != 0 {
                books.journal(
                    JournalEntry {
                        user: *user,
                        delta: *delta,
                        reason: storable(reason).into_owned(),
                        purchase_id: None,
                    },
                    now_ms,
                )?;
            }
            LedgerReply::BalanceAdjusted {
                balance: account.balance,
            }
        }
        LedgerRequest::PendingReceipts { user } => LedgerReply::PendingReceipts {
            receipts: books.pending(*user)?,
        },
        LedgerRequest::Audit => LedgerReply::Audit(books.audit()?),
        LedgerRequest::History { user, filter, page } => {
            LedgerReply::History(books.history(*user, filter, *page)?)
        }
        LedgerRequest::Sales(query) => LedgerReply::Sales(books.sales(query)?),
    })
}

/// The user's account, or a new one with the starting balance. A new account is not written yet,
/// but its starting balance is journaled, so every balance is the sum of its journal.
fn account_or_new<B: Books>(
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
                        reason: STARTING_BALANCE.into(),
                        purchase_id: None,
                    },
                    now_ms,
                )?;
            }
            (account, true)
        }
    })
}

/// The journal's reason for a new account's starting balance.
pub(crate) const STARTING_BALANCE: &str = "starting balance";

/// Text as every store can keep it: PostgreSQL refuses a NUL character in text, and one request
/// carrying one (a top-up reason, a server id) would fail its whole batch, so it is kept as U+FFFD
/// in every store alike.
fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}").into()
    } else {
        text.into()
    }
}

/// The user whose account applying `request` may create (the PostgreSQL store reserves those
/// rows before a batch, in one global order, so concurrent servers do not deadlock).
#[cfg(feature = "postgres")]
pub(crate) fn may_create_account(request: &LedgerRequest) -> Option<UserId> {
    match request {
        LedgerRequest::OpenSession { user, .. } | LedgerRequest::AdjustBalance { user, .. } => {
            Some(*user)
        }
        LedgerRequest::Charge(charge) if charge.fence.is_none() => Some(charge.user),
        _ => None,
    }
}
