//! Sessions: who may take, renew and release a player's lease; which receipts a save grants and
//! which clawbacks it settles; what a player's data reads as.

use super::money::give_back;
use super::{Books, LeasePolicy, Notice, ReceiptStatus, account_or_new};
use crate::ids::{PurchaseId, UserId};
use crate::ledger::{
    Clawback, OpenSession, OpenSessionReply, OpenedSession, PlayerReading, ReadPlayer,
    RefundRecord, ReleaseSession, SaveReply, SaveRequest, keepable,
};
use crate::receipt::ReceiptState;
use crate::text::keepable_named;

/// Takes the player's lease (unless another server holds a live one) and loads their data.
pub(super) fn open<B: Books>(
    books: &mut B,
    request: &OpenSession,
    now_ms: i64,
    policy: LeasePolicy,
    notices: &mut Vec<Notice>,
) -> Result<OpenSessionReply, B::Error> {
    let user = request.user;
    let (mut account, created) = account_or_new(books, user, request.starting_balance, now_ms)?;
    if let (Some(owner), Some(expires_at_ms)) = (&account.lease_owner, account.lease_expires_ms)
        && !account.owned_by(&request.server)
        && expires_at_ms > now_ms
    {
        if !policy.take_over_foreign {
            return Ok(OpenSessionReply::Busy {
                owner: owner.clone(),
                expires_at_ms,
            });
        }
        notices.push(Notice::TookOver {
            user,
            owner: owner.clone(),
            expires_at_ms,
        });
    }
    account.take_lease(&request.server, now_ms.saturating_add(request.lease_ms));
    books.put_account(user, &account, created, now_ms)?;
    Ok(OpenSessionReply::Opened(OpenedSession {
        balance: account.balance,
        state: books.state(user)?,
        pending: books.pending(user)?,
        clawbacks: books.clawbacks(user)?,
        shortfall: account.shortfall,
        lease_token: account.lease_token,
    }))
}

/// Releases the lease if this server holds it (with the given token, when one is given).
pub(super) fn release<B: Books>(
    books: &mut B,
    request: &ReleaseSession,
    now_ms: i64,
) -> Result<(), B::Error> {
    if let Some(mut account) = books.account(request.user)?
        && account.owned_by(&request.server)
        && request
            .token
            .is_none_or(|token| token == account.lease_token)
    {
        account.release_lease();
        books.put_account(request.user, &account, false, now_ms)?;
    }
    Ok(())
}

/// Saves the player's state under the lease, granting and settling what the save carries. A
/// save that would grant a receipt refunded before it was granted writes nothing: its state holds
/// the effect of a purchase whose currency went back.
pub(super) fn save<B: Books>(
    books: &mut B,
    save: &SaveRequest,
    now_ms: i64,
) -> Result<SaveReply, B::Error> {
    for (name, value) in &save.state.0 {
        // Every save checks every value: the field's name is only written out for a refusal.
        if let Err(invalid) = keepable("component name", name)
            .and_then(|()| keepable_named(|| format!("value of component {name:?}"), value))
        {
            return Ok(SaveReply::InvalidText(invalid));
        }
    }
    for (id, reason) in &save.rejected {
        if let Err(invalid) =
            keepable("purchase id", id.as_str()).and_then(|()| keepable("rejection reason", reason))
        {
            return Ok(SaveReply::InvalidText(invalid));
        }
    }
    let mut account = match books.account(save.user)? {
        Some(account) if account.held_by(&save.fence) => account,
        other => {
            return Ok(SaveReply::LeaseLost {
                owner: other.and_then(|a| a.lease_owner),
            });
        }
    };
    // Decide every grant before writing anything.
    let (mut grants, mut refunded) = (Vec::new(), Vec::new());
    for id in &save.granted {
        let Some(receipt) = own_receipt(books, id, save.user)? else {
            continue;
        };
        match (receipt.state, receipt.refund) {
            (ReceiptState::Pending, _) => grants.push(id),
            // Refunded before any grant committed: its currency is back, so it is never granted.
            (ReceiptState::Refunded | ReceiptState::Rejected, Some(refund))
                if refund.clawback == Clawback::NotNeeded =>
            {
                refunded.push(id.clone());
            }
            // Granted already (this save is a retry of one whose answer was lost), perhaps
            // refunded since, with its effect to be taken back by its clawback.
            _ => {}
        }
    }
    if !refunded.is_empty() {
        return Ok(SaveReply::GrantsRefunded { refunded });
    }
    if save.release {
        account.release_lease();
    } else {
        account.lease_expires_ms = Some(now_ms.saturating_add(save.lease_ms));
    }
    books.put_account(save.user, &account, false, now_ms)?;
    books.put_state(save.user, &save.state)?;
    let mut newly_granted = Vec::with_capacity(grants.len());
    for id in grants {
        books.grant_receipt(id, now_ms)?;
        newly_granted.push(id.clone());
    }
    // Rejections after the grants: a receipt both granted and rejected is granted.
    let (mut rejected, mut balance) = (Vec::new(), account.balance);
    for (id, reason) in &save.rejected {
        let Some(receipt) = own_receipt(books, id, save.user)? else {
            continue;
        };
        match receipt.state {
            ReceiptState::Pending => {
                let refund = RefundRecord {
                    at_ms: now_ms,
                    reason: reason.clone(),
                    clawback: Clawback::NotNeeded,
                };
                // A balance that cannot take the currency back leaves the receipt pending.
                if let Some(given_back) =
                    give_back(books, &receipt, &refund, ReceiptState::Rejected, now_ms)?
                {
                    balance = given_back;
                    // The balance moved: a game that applied an older answer reads it again.
                    books.note_change(save.user, now_ms)?;
                    rejected.push(id.clone());
                }
            }
            // This save's first attempt rejected it; its answer was lost.
            ReceiptState::Rejected => rejected.push(id.clone()),
            // Refunded or granted first: nothing to give back twice.
            ReceiptState::Refunded | ReceiptState::Granted => {}
        }
    }
    let mut newly_settled = Vec::new();
    for (id, outcome) in &save.settled {
        if let Some(ReceiptStatus {
            refund: Some(mut refund),
            ..
        }) = own_receipt(books, id, save.user)?
            && refund.clawback == Clawback::Pending
            && matches!(outcome, Clawback::Done | Clawback::Kept)
        {
            refund.clawback = *outcome;
            books.put_refund(id, ReceiptState::Refunded, &refund)?;
            newly_settled.push(id.clone());
        }
    }
    Ok(SaveReply::Saved {
        newly_granted,
        newly_settled,
        rejected,
        balance,
    })
}

/// The receipt `id` if it is `user`'s: a save names receipts, and one of another player's is
/// never touched.
fn own_receipt<B: Books>(
    books: &mut B,
    id: &PurchaseId,
    user: UserId,
) -> Result<Option<ReceiptStatus>, B::Error> {
    Ok(books
        .receipt(id)?
        .filter(|receipt| receipt.info.player_id == user))
}

/// The player's balance, pending receipts and pending clawbacks now.
pub(super) fn read<B: Books>(
    books: &mut B,
    request: &ReadPlayer,
) -> Result<PlayerReading, B::Error> {
    let account = books.account(request.user)?.unwrap_or_default();
    Ok(PlayerReading {
        pending: books.pending(request.user)?,
        clawbacks: books.clawbacks(request.user)?,
        balance: account.balance,
        shortfall: account.shortfall,
    })
}
