//! Money: charges, balance adjustments, refunds, store top-ups and their reversals.

use super::{Books, ReceiptStatus, account_or_new};
use crate::ledger::reports::SalesDelta;
use crate::ledger::{
    AdjustBalance, AdjustReply, ChargeReply, ChargeRequest, Clawback, CreditError, CreditOutcome,
    CreditRecord, CreditRequest, CreditReversal, JournalEntry, JournalKind, MAX_BALANCE,
    RefundError, RefundOutcome, RefundRecord, RefundRequest, ReversalOutcome, ReverseCredit,
    keepable,
};
use crate::receipt::ReceiptState;

/// Debits the buyer and creates the receipt, once per request id; a server must show the
/// buyer's lease.
pub(super) fn charge<B: Books>(
    books: &mut B,
    charge: &ChargeRequest,
    now_ms: i64,
) -> Result<ChargeReply, B::Error> {
    if let Err(invalid) = keepable("product name", &charge.product_name) {
        return Ok(ChargeReply::InvalidText(invalid));
    }
    // A retried charge gets the receipt of the first attempt, whoever holds the lease now:
    // nothing moves.
    if let Some(receipt) = books.receipt_by_request(charge.request_id)? {
        let balance = books.account(charge.user)?.map_or(0, |a| a.balance);
        let pending = books
            .receipt(&receipt.purchase_id)?
            .is_some_and(|status| status.state == ReceiptState::Pending);
        return Ok(ChargeReply::Charged {
            receipt,
            balance,
            replayed: true,
            pending,
        });
    }
    let (mut account, created) = match &charge.fence {
        Some(fence) => match books.account(charge.user)? {
            Some(account) if account.held_by(fence) => (account, false),
            other => {
                return Ok(ChargeReply::LeaseLost {
                    owner: other.and_then(|a| a.lease_owner),
                });
            }
        },
        // Bought outside any game server (a store page, a tool): the receipt waits for the
        // player's session, wherever it is.
        None => account_or_new(books, charge.user, charge.starting_balance, now_ms)?,
    };
    if account.balance < charge.price {
        if created {
            books.put_account(charge.user, &account, true, now_ms)?;
        }
        return Ok(ChargeReply::InsufficientFunds {
            balance: account.balance,
            price: charge.price,
        });
    }
    account.balance -= charge.price;
    books.put_account(charge.user, &account, created, now_ms)?;
    let receipt = charge.new_receipt();
    books.insert_receipt(&receipt, charge.request_id, &charge.product_name, now_ms)?;
    books.count_sale(&SalesDelta::purchase(&receipt, now_ms))?;
    if charge.fence.is_none() {
        // Bought outside any game: the player's game must hear of the receipt.
        books.note_change(charge.user, now_ms)?;
    }
    if charge.price > 0 {
        books.journal(
            JournalEntry {
                user: charge.user,
                // The price is at most the balance, so at most `MAX_BALANCE`.
                delta: -(charge.price as i64),
                kind: JournalKind::Purchase,
                reason: charge.product_name.clone(),
                purchase_id: Some(receipt.purchase_id.clone()),
            },
            now_ms,
        )?;
    }
    Ok(ChargeReply::Charged {
        receipt,
        balance: account.balance,
        replayed: false,
        pending: true,
    })
}

/// Credits or debits the balance outside a purchase, within `0..=MAX_BALANCE`.
pub(super) fn adjust<B: Books>(
    books: &mut B,
    request: &AdjustBalance,
    now_ms: i64,
) -> Result<AdjustReply, B::Error> {
    if let Err(invalid) = keepable("reason", &request.reason) {
        return Ok(AdjustReply::InvalidText(invalid));
    }
    let (mut account, created) =
        account_or_new(books, request.user, request.starting_balance, now_ms)?;
    let refusal = match account.balance.checked_add_signed(request.delta) {
        Some(balance) if balance <= MAX_BALANCE => {
            account.balance = balance;
            None
        }
        _ if request.delta < 0 => Some(AdjustReply::TooLow {
            balance: account.balance,
        }),
        _ => Some(AdjustReply::TooHigh {
            balance: account.balance,
        }),
    };
    books.put_account(request.user, &account, created, now_ms)?;
    if let Some(refusal) = refusal {
        return Ok(refusal);
    }
    if request.delta != 0 {
        books.journal(
            JournalEntry {
                user: request.user,
                delta: request.delta,
                kind: JournalKind::Adjustment,
                reason: request.reason.clone(),
                purchase_id: None,
            },
            now_ms,
        )?;
        books.note_change(request.user, now_ms)?;
    }
    Ok(AdjustReply::Adjusted {
        balance: account.balance,
    })
}

/// Refunds a receipt: the currency goes back; a granted receipt's effect waits for its clawback,
/// and a receipt not granted yet can never be granted after.
pub(super) fn refund<B: Books>(
    books: &mut B,
    request: &RefundRequest,
    now_ms: i64,
) -> Result<Result<RefundOutcome, RefundError>, B::Error> {
    let id = &request.purchase_id;
    if let Err(invalid) = keepable("purchase id", id.as_str())
        .and_then(|()| keepable("refund reason", &request.reason))
    {
        return Ok(Err(RefundError::InvalidText(invalid)));
    }
    let Some(receipt) = books.receipt(id)? else {
        return Ok(Err(RefundError::UnknownPurchase(id.clone())));
    };
    if let Some(place) = request.place
        && receipt.info.place_id_where_purchased != place
    {
        return Ok(Err(RefundError::OtherGame {
            purchase_id: id.clone(),
            place: receipt.info.place_id_where_purchased,
        }));
    }
    if let Some(done) = &receipt.refund {
        return Ok(Err(RefundError::AlreadyRefunded {
            purchase_id: id.clone(),
            at_ms: done.at_ms,
        }));
    }
    let clawback = match receipt.state {
        ReceiptState::Granted => Clawback::Pending,
        _ => Clawback::NotNeeded,
    };
    let refund = RefundRecord {
        at_ms: now_ms,
        reason: request.reason.clone(),
        clawback,
    };
    let balance = match give_back(books, &receipt, &refund, ReceiptState::Refunded, now_ms)? {
        Some(balance) => balance,
        None => {
            return Ok(Err(RefundError::BalanceTooHigh {
                purchase_id: id.clone(),
                balance: books
                    .account(receipt.info.player_id)?
                    .map_or(0, |a| a.balance),
            }));
        }
    };
    books.note_change(receipt.info.player_id, now_ms)?;
    Ok(Ok(RefundOutcome {
        receipt: receipt.info,
        balance,
        clawback,
    }))
}

/// Gives a receipt's currency back to its buyer and records `refund` on it in state `state`
/// ([`Refunded`](ReceiptState::Refunded) by a refund, [`Rejected`](ReceiptState::Rejected) by
/// its handler): the one way currency goes back for a purchase. `None`, with nothing written,
/// when the balance would go above [`MAX_BALANCE`].
pub(super) fn give_back<B: Books>(
    books: &mut B,
    receipt: &ReceiptStatus,
    refund: &RefundRecord,
    state: ReceiptState,
    now_ms: i64,
) -> Result<Option<u64>, B::Error> {
    let user = receipt.info.player_id;
    let spent = receipt.info.currency_spent;
    let (mut account, created) = account_or_new(books, user, 0, now_ms)?;
    let Some(balance) = account
        .balance
        .checked_add(spent)
        .filter(|b| *b <= MAX_BALANCE)
    else {
        return Ok(None);
    };
    account.balance = balance;
    books.put_account(user, &account, created, now_ms)?;
    if spent > 0 {
        books.journal(
            JournalEntry {
                user,
                delta: spent as i64,
                kind: JournalKind::Refund,
                reason: refund.reason.clone(),
                purchase_id: Some(receipt.info.purchase_id.clone()),
            },
            now_ms,
        )?;
    }
    let id = &receipt.info.purchase_id;
    books.put_refund(id, state, refund)?;
    let sale = match state {
        ReceiptState::Rejected => SalesDelta::rejection(&receipt.info, receipt.purchased_at_ms),
        _ => SalesDelta::refund(&receipt.info, receipt.purchased_at_ms),
    };
    if let Some(sale) = sale {
        books.count_sale(&sale)?;
    }
    Ok(Some(balance))
}

/// `Ok` when a store order's key can be kept as written.
fn order_key(source: &str, order_id: &str) -> Result<(), CreditError> {
    if source.is_empty() || order_id.is_empty() {
        return Err(CreditError::MissingOrder {
            store: source.to_owned(),
            order_id: order_id.to_owned(),
        });
    }
    keepable("store name", source)
        .and_then(|()| keepable("order id", order_id))
        .map_err(CreditError::InvalidText)
}

/// Credits a store top-up once per order, to one user with one amount; a shortfall is paid first.
pub(super) fn credit<B: Books>(
    books: &mut B,
    request: &CreditRequest,
    now_ms: i64,
) -> Result<Result<CreditOutcome, CreditError>, B::Error> {
    let (source, order_id) = (&request.source, &request.order_id);
    if let Err(refused) = order_key(source, order_id) {
        return Ok(Err(refused));
    }
    if let Some(done) = books.credit(source, order_id)? {
        if done.user != request.user || done.amount != request.amount {
            return Ok(Err(CreditError::OrderMismatch {
                store: done.source,
                order_id: done.order_id,
                user: done.user,
                amount: done.amount,
            }));
        }
        let account = books.account(done.user)?.unwrap_or_default();
        return Ok(Ok(CreditOutcome {
            balance: account.balance,
            shortfall: account.shortfall,
            already_credited: true,
        }));
    }
    if request.amount == 0 || request.amount > MAX_BALANCE {
        return Ok(Err(CreditError::InvalidAmount {
            amount: request.amount,
        }));
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
        return Ok(Err(CreditError::BalanceTooHigh {
            user,
            balance: account.balance,
            amount: request.amount,
        }));
    };
    account.balance = balance;
    account.shortfall -= repaid;
    books.put_account(user, &account, created, now_ms)?;
    let order = format!("{source}:{order_id}");
    books.journal(
        JournalEntry {
            user,
            delta: request.amount as i64,
            kind: JournalKind::TopUp,
            reason: order.clone(),
            purchase_id: None,
        },
        now_ms,
    )?;
    if repaid > 0 {
        books.journal(
            JournalEntry {
                user,
                delta: -(repaid as i64),
                kind: JournalKind::ShortfallRepaid,
                reason: order,
                purchase_id: None,
            },
            now_ms,
        )?;
    }
    books.put_credit(
        &CreditRecord {
            source: source.clone(),
            order_id: order_id.clone(),
            user,
            amount: request.amount,
            credited_at_ms: now_ms,
            reversal: None,
        },
        true,
    )?;
    books.note_change(user, now_ms)?;
    Ok(Ok(CreditOutcome {
        balance: account.balance,
        shortfall: account.shortfall,
        already_credited: false,
    }))
}

/// Takes a reversed top-up back, never below zero; what the balance cannot cover is owed.
pub(super) fn reverse_credit<B: Books>(
    books: &mut B,
    request: &ReverseCredit,
    now_ms: i64,
) -> Result<Result<ReversalOutcome, CreditError>, B::Error> {
    let (source, order_id) = (&request.source, &request.order_id);
    if let Err(refused) = order_key(source, order_id) {
        return Ok(Err(refused));
    }
    let Some(mut record) = books.credit(source, order_id)? else {
        return Ok(Err(CreditError::UnknownOrder {
            store: source.clone(),
            order_id: order_id.clone(),
        }));
    };
    let mut account = books.account(record.user)?.unwrap_or_default();
    if record.reversal.is_some() {
        return Ok(Ok(ReversalOutcome {
            record,
            balance: account.balance,
            shortfall: account.shortfall,
            already_reversed: true,
        }));
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
                kind: JournalKind::TopUpReversal,
                reason: format!("{source}:{order_id}"),
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
    books.note_change(record.user, now_ms)?;
    Ok(Ok(ReversalOutcome {
        record,
        balance: account.balance,
        shortfall: account.shortfall,
        already_reversed: false,
    }))
}
