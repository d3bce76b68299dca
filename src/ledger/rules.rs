//! The ledger's decisions, written once: who may take, renew and release a session lease; when a
//! charge debits, replays or is refused; which receipts a save grants; how far a balance may go.
//!
//! Every store applies a request with [`apply`], over [`Books`]: the few reads and writes of rows
//! the decisions need. The in-memory and SQLite stores write through at once; the PostgreSQL store
//! reads a whole batch's rows up front (locked) and writes back what changed, so a batch gives the
//! same answers and the same final state as its requests applied one at a time.

use super::{
    Clawback, CreditError, CreditRecord, CreditRequest, CreditReversal, HistoryCursor,
    HistoryFilter, HistoryPage, JournalEntry, LeaseFence, LedgerAudit, LedgerReply, LedgerRequest,
    PlayerSnapshot, RefundError, RefundRecord, RefundRequest, SalesQuery, SalesRow,
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
    /// Currency owed from reversed top-ups the balance could not cover.
    pub(crate) shortfall: u64,
}

/// A receipt as the rules see it: what it is, where it is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReceiptStatus {
    pub(crate) info: ReceiptInfo,
    pub(crate) state: ReceiptState,
    pub(crate) refund: Option<RefundRecord>,
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
    /// Marks a receipt refunded, or changes its refund's clawback.
    fn put_refund(&mut self, id: &PurchaseId, refund: &RefundRecord) -> Result<(), Self::Error>;
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
                clawbacks: books.clawbacks(*user)?,
                shortfall: account.shortfall,
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
            let (mut newly_granted, mut newly_settled, mut clawbacks_due) =
                (Vec::new(), Vec::new(), Vec::new());
            for id in &save.granted {
                let Some(receipt) = books.receipt(id)? else {
                    continue;
                };
                if receipt.info.player_id != save.user {
                    continue;
                }
                match (receipt.state, receipt.refund) {
                    (ReceiptState::Pending, _) => {
                        books.grant_receipt(id, now_ms)?;
                        newly_granted.push(id.clone());
                    }
                    // Refunded while its grant waited to be saved: the effect is committed with
                    // this save's state now, so it has to be taken back after all.
                    (ReceiptState::Refunded, Some(mut refund))
                        if refund.clawback == Clawback::NotNeeded =>
                    {
                        refund.clawback = Clawback::Pending;
                        books.put_refund(id, &refund)?;
                        clawbacks_due.push(receipt.info);
                    }
                    _ => {}
                }
            }
            for (id, outcome) in &save.settled {
                if let Some(ReceiptStatus {
                    info,
                    refund: Some(mut refund),
                    ..
                }) = books.receipt(id)?
                    && info.player_id == save.user
                    && refund.clawback == Clawback::Pending
                    && matches!(outcome, Clawback::Done | Clawback::Kept)
                {
                    refund.clawback = *outcome;
                    books.put_refund(id, &refund)?;
                    newly_settled.push(id.clone());
                }
            }
            LedgerReply::Saved {
                newly_granted,
                newly_settled,
                clawbacks_due,
            }
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
        LedgerRequest::PendingReceipts { user } => {
            let account = books.account(*user)?.unwrap_or_default();
            LedgerReply::PendingReceipts {
                receipts: books.pending(*user)?,
                clawbacks: books.clawbacks(*user)?,
                balance: account.balance,
                shortfall: account.shortfall,
            }
        }
        LedgerRequest::Refund(refund) => self::refund(books, refund, now_ms)?,
        LedgerRequest::Credit(credit) => self::credit(books, credit, now_ms)?,
        LedgerRequest::ReverseCredit { source, order_id } => {
            reverse_credit(books, source, order_id, now_ms)?
        }
        LedgerRequest::Audit => LedgerReply::Audit(books.audit()?),
        LedgerRequest::History {
            user,
            filter,
            page,
            after,
        } => LedgerReply::History(books.history(*user, filter, *page, after.as_ref())?),
        LedgerRequest::Sales(query) => LedgerReply::Sales(books.sales(query)?),
    })
}

/// Refunds a receipt: the currency goes back; a granted receipt's effect waits for its clawback.
fn refund<B: Books>(
    books: &mut B,
    request: &RefundRequest,
    now_ms: i64,
) -> Result<LedgerReply, B::Error> {
    let id = &request.purchase_id;
    let refused = |e| Ok(LedgerReply::RefundRefused(e));
    let Some(receipt) = books.receipt(id)? else {
        return refused(RefundError::UnknownPurchase(id.clone()));
    };
    if let Some(place) = request.place
        && receipt.info.place_id_where_purchased != place
    {
        return refused(RefundError::OtherGame {
            purchase_id: id.clone(),
            place: receipt.info.place_id_where_purchased,
        });
    }
    if let Some(done) = &receipt.refund {
        return refused(RefundError::AlreadyRefunded {
            purchase_id: id.clone(),
            at_ms: done.at_ms,
        });
    }
    let user = receipt.info.player_id;
    let spent = receipt.info.currency_spent;
    let (mut account, created) = account_or_new(books, user, 0, now_ms)?;
    let Some(balance) = account
        .balance
        .checked_add(spent)
        .filter(|b| *b <= MAX_BALANCE)
    else {
        return refused(RefundError::BalanceTooHigh {
            purchase_id: id.clone(),
            balance: account.balance,
        });
    };
    account.balance = balance;
    books.put_account(user, &account, created, now_ms)?;
    if spent > 0 {
        books.journal(
            JournalEntry {
                user,
                delta: spent as i64,
                reason: REFUND.into(),
                purchase_id: Some(id.clone()),
            },
            now_ms,
        )?;
    }
    let clawback = match receipt.state {
        ReceiptState::Granted => Clawback::Pending,
        _ => Clawback::NotNeeded,
    };
    books.put_refund(
        id,
        &RefundRecord {
            at_ms: now_ms,
            reason: storable(&request.reason).into_owned(),
            clawback,
        },
    )?;
    Ok(LedgerReply::Refunded {
        receipt: receipt.info,
        balance: account.balance,
        clawback,
    })
}

/// Credits a store top-up once per order; a shortfall is paid first.
fn credit<B: Books>(
    books: &mut B,
    request: &CreditRequest,
    now_ms: i64,
) -> Result<LedgerReply, B::Error> {
    let refused = |e| Ok(LedgerReply::CreditRefused(e));
    let (source, order_id) = (storable(&request.source), storable(&request.order_id));
    if source.is_empty() || order_id.is_empty() {
        return refused(CreditError::MissingOrder {
            store: request.source.clone(),
            order_id: request.order_id.clone(),
        });
    }
    if let Some(done) = books.credit(&source, &order_id)? {
        if done.user != request.user || done.amount != request.amount {
            return refused(CreditError::OrderMismatch {
                store: done.source,
                order_id: done.order_id,
                user: done.user,
                amount: done.amount,
            });
        }
        let account = books.account(done.user)?.unwrap_or_default();
        return Ok(LedgerReply::Credited {
            user: done.user,
            balance: account.balance,
            shortfall: account.shortfall,
            already_credited: true,
        });
    }
    if request.amount == 0 || request.amount > MAX_BALANCE {
        return refused(CreditError::InvalidAmount {
            amount: request.amount,
        });
    }
    let user = request.user;
    let (mut account, created) = account_or_new(books, user, request.starting_balance, now_ms)?;
    let repaid = account.shortfall.min(request.amount);
    let Some(balance) = account
        .balance
        .checked_add(request.amount - repaid)
        .filter(|b| *b <= MAX_BALANCE)
    else {
        if created {
            books.put_account(user, &account, true, now_ms)?;
        }
        return refused(CreditError::BalanceTooHigh {
            user,
            balance: account.balance,
            amount: request.amount,
        });
    };
    account.balance = balance;
    account.shortfall -= repaid;
    books.put_account(user, &account, created, now_ms)?;
    let order = format!("{source}:{order_id}");
    books.journal(
        JournalEntry {
            user,
            delta: request.amount as i64,
            reason: format!("{TOP_UP} {order}"),
            purchase_id: None,
        },
        now_ms,
    )?;
    if repaid > 0 {
        books.journal(
            JournalEntry {
                user,
                delta: -(repaid as i64),
                reason: format!("shortfall repaid by {order}"),
                purchase_id: None,
            },
            now_ms,
        )?;
    }
    books.put_credit(
        &CreditRecord {
            source: source.into_owned(),
            order_id: order_id.into_owned(),
            user,
            amount: request.amount,
            credited_at_ms: now_ms,
            reversal: None,
        },
        true,
    )?;
    Ok(LedgerReply::Credited {
        user,
        balance: account.balance,
        shortfall: account.shortfall,
        already_credited: false,
    })
}

/// Takes a reversed top-up back, never below zero; what the balance cannot cover is owed.
fn reverse_credit<B: Books>(
    books: &mut B,
    source: &str,
    order_id: &str,
    now_ms: i64,
) -> Result<LedgerReply, B::Error> {
    let (source, order_id) = (storable(source), storable(order_id));
    let Some(mut record) = books.credit(&source, &order_id)? else {
        return Ok(LedgerReply::CreditRefused(CreditError::UnknownOrder {
            store: source.into_owned(),
            order_id: order_id.into_owned(),
        }));
    };
    let mut account = books.account(record.user)?.unwrap_or_default();
    if record.reversal.is_some() {
        return Ok(LedgerReply::CreditReversed {
            record,
            balance: account.balance,
            shortfall: account.shortfall,
            already_reversed: true,
        });
    }
    let taken = account.balance.min(record.amount);
    let owed = record.amount - taken;
    account.balance -= taken;
    account.shortfall = account.shortfall.saturating_add(owed);
    books.put_account(record.user, &account, false, now_ms)?;
    if taken > 0 {
        books.journal(
            JournalEntry {
                user: record.user,
                delta: -(taken as i64),
                reason: format!("{TOP_UP} reversed {source}:{order_id}"),
                purchase_id: None,
            },
            now_ms,
        )?;
    }
    record.reversal = Some(CreditReversal {
        at_ms: now_ms,
        taken,
        shortfall: owed,
    });
    books.put_credit(&record, false)?;
    Ok(LedgerReply::CreditReversed {
        record,
        balance: account.balance,
        shortfall: account.shortfall,
        already_reversed: false,
    })
}

/// The journal's reason for currency given back by a refund (with the receipt's id).
pub(crate) const REFUND: &str = "refund";
/// The start of the journal's reason for a store top-up (`top-up SOURCE:ORDER`).
pub(crate) const TOP_UP: &str = "top-up";

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
pub(crate) fn storable(text: &str) -> std::borrow::Cow<'_, str> {
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
        LedgerRequest::Credit(credit) => Some(credit.user),
        LedgerRequest::Charge(charge) if charge.fence.is_none() => Some(charge.user),
        _ => None,
    }
}
