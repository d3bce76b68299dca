//! Sessions: who may take, renew and release a player's lease; which receipts a save grants and
//! which clawbacks it settles; what a player's data reads as.

use super::{Books, LeasePolicy, Notice, ReceiptStatus, account_or_new};
use crate::ledger::{
    Clawback, OpenSession, OpenSessionReply, OpenedSession, PlayerReading, ReadPlayer,
    ReleaseSession, SaveReply, SaveRequest,
};
use crate::receipt::ReceiptState;

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

/// Saves the player's state under the lease, granting and settling what the save carries.
pub(super) fn save<B: Books>(
    books: &mut B,
    save: &SaveRequest,
    now_ms: i64,
) -> Result<SaveReply, B::Error> {
    let mut account = match books.account(save.user)? {
        Some(account) if account.held_by(&save.fence) => account,
        other => {
            return Ok(SaveReply::LeaseLost {
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
    Ok(SaveReply::Saved {
        newly_granted,
        newly_settled,
        clawbacks_due,
    })
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
