//! Ledger answers about sessions: opens, saves, balance changes, re-read receipts, the ledger's
//! status.

use bevy::prelude::*;

use super::inbox::LedgerInbox;
use super::join_leave::open_request;
use super::persist::PersistRegistry;
use super::player::{PlayerSession, SessionPhase};
use super::save::PlayerSaveFailed;
use super::sessions::Sessions;
use super::work_queue::DeliveryQueue;
use crate::currency::PremiumBalance;
use crate::ledger::{
    Clawback, CreditFinished, CreditReversalFinished, Ledger, LedgerCompletion, LedgerError,
    LedgerReply, LedgerRequest, LedgerStatus, PurchaseHistoryReady, ReceiptRefunded,
    RefundFinished, SalesReportReady,
};
use crate::receipt::ReceiptResolved;
use crate::settings::{FrameDeadline, MarketplaceSettings, MarketplaceStats};
use crate::wake::{Wake, WakeSchedule};

#[allow(clippy::too_many_arguments)]
pub(crate) fn handle_session_replies(
    mut inbox: ResMut<LedgerInbox>,
    mut sessions: ResMut<Sessions>,
    mut players: Query<(&mut PlayerSession, &mut PremiumBalance)>,
    registry: Res<PersistRegistry>,
    settings: Res<MarketplaceSettings>,
    time: Res<Time<Real>>,
    mut ledger: ResMut<Ledger>,
    mut wakes: ResMut<WakeSchedule>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut resolved: MessageWriter<ReceiptResolved>,
    mut save_failed: MessageWriter<PlayerSaveFailed>,
    mut money: Answers,
    mut stats: ResMut<MarketplaceStats>,
    mut commands: Commands,
    deadline: Res<FrameDeadline>,
) {
    let now = time.elapsed();
    let mut handled = 0usize;
    // A burst (thousands of players joining at once) is spread over frames, at least one answer
    // a frame; what is left stays at the front of the queue, so each user's answers keep order.
    while handled == 0 || !deadline.passed() {
        let Some(LedgerCompletion { request, result }) = inbox.sessions.pop_front() else {
            break;
        };
        handled += 1;
        match request {
            LedgerRequest::OpenSession { user, .. } => {
                if let Some(stale) = sessions.stale_opens.get_mut(&user) {
                    // The answer to a visit that ended while loading; its lease release was
                    // queued after it. The current visit waits for its own answer.
                    *stale -= 1;
                    if *stale == 0 {
                        sessions.stale_opens.remove(&user);
                    }
                    continue;
                }
                let Some(&entity) = sessions.by_user.get(&user) else {
                    if let Ok(LedgerReply::SessionOpened { lease_token, .. }) = result {
                        // They left while loading: hand the lease back.
                        ledger.send(LedgerRequest::ReleaseSession {
                            user,
                            server: settings.server_id.clone(),
                            token: Some(lease_token),
                        });
                    }
                    continue;
                };
                let Ok((mut session, mut balance)) = players.get_mut(entity) else {
                    continue;
                };
                session.open_in_flight = false;
                match result {
                    Ok(LedgerReply::SessionOpened {
                        balance: stored_balance,
                        state,
                        pending,
                        clawbacks,
                        shortfall,
                        lease_token,
                    }) => {
                        balance.0 = stored_balance;
                        session.shortfall = shortfall;
                        session.lease_token = Some(lease_token);
                        match registry.restore(&mut commands.entity(entity), &state) {
                            Ok(carried) => {
                                session.carried = carried;
                                session.phase = SessionPhase::Active;
                                for receipt in pending {
                                    if !sessions.awaiting_commit.contains(&receipt.purchase_id) {
                                        session.add_pending(receipt);
                                    }
                                }
                                for receipt in clawbacks {
                                    session.add_clawback(receipt);
                                }
                                deliveries.now.push(entity);
                                wakes.after(
                                    now,
                                    settings.autosave_interval,
                                    Wake::Autosave(entity),
                                );
                                wakes.after(now, settings.refresh_interval, Wake::Refresh(entity));
                            }
                            Err(e) => {
                                tracing::error!(
                                    "user {user}: {e}; purchases and saves are off for this session so nothing is overwritten, and its lease is given back"
                                );
                                session.phase = SessionPhase::Failed(e);
                                // This server will never write for them: holding the lease
                                // would only keep every other server from trying.
                                ledger.send(LedgerRequest::ReleaseSession {
                                    user,
                                    server: settings.server_id.clone(),
                                    token: Some(lease_token),
                                });
                            }
                        }
                    }
                    Ok(LedgerReply::SessionBusy {
                        owner,
                        expires_at_ms,
                    }) => {
                        session.open_failures += 1;
                        let wait = settings.retry.delay(session.open_failures);
                        tracing::warn!(
                            "user {user} is held by server {owner} until {expires_at_ms} (Unix ms); asking again in {wait:?}"
                        );
                        wakes.after(now, wait, Wake::Open(entity));
                    }
                    Ok(other) => {
                        tracing::error!("unexpected ledger reply to OpenSession: {other:?}")
                    }
                    Err(LedgerError::Unavailable(why)) => {
                        session.phase = SessionPhase::Failed(format!("ledger unavailable: {why}"));
                    }
                    Err(e) => {
                        session.open_failures += 1;
                        let wait = settings.retry.delay(session.open_failures);
                        tracing::warn!("loading user {user} failed: {e}; retrying in {wait:?}");
                        wakes.after(now, wait, Wake::Open(entity));
                    }
                }
            }
            LedgerRequest::Save(save) => {
                let departed = save.release;
                let live = (!departed)
                    .then(|| sessions.by_user.get(&save.user).copied())
                    .flatten();
                let landed = matches!(
                    result,
                    Ok(LedgerReply::Saved { .. } | LedgerReply::LeaseLost { .. })
                );
                match result {
                    Ok(LedgerReply::Saved { clawbacks_due, .. }) => {
                        stats.saves += 1;
                        for id in &save.granted {
                            if let Some(receipt) = sessions.awaiting_commit.remove(id) {
                                stats.granted += 1;
                                resolved.write(ReceiptResolved { receipt });
                            }
                        }
                        for (id, _) in &save.settled {
                            if let Some((receipt, clawback)) = sessions.settling.remove(id) {
                                stats.refunds_settled += 1;
                                money.refunded.write(ReceiptRefunded { receipt, clawback });
                            }
                        }
                        if let Some(entity) = live
                            && let Ok((mut session, _)) = players.get_mut(entity)
                        {
                            session.unsaved.retain(|id| !save.granted.contains(id));
                            session.committed.extend(save.granted.iter().cloned());
                            session
                                .unsaved_settled
                                .retain(|settled| !save.settled.contains(settled));
                            session.save_failures = 0;
                            session.last_save_error = None;
                            if !clawbacks_due.is_empty() {
                                for receipt in clawbacks_due {
                                    session.add_clawback(receipt);
                                }
                                deliveries.now.push(entity);
                            }
                        }
                    }
                    Ok(LedgerReply::LeaseLost { owner }) => {
                        tracing::error!(
                            "server {} lost the session lease of user {} to {}; dropping {} uncommitted grant(s) instead of writing",
                            settings.server_id,
                            save.user,
                            owner.as_deref().unwrap_or("nobody"),
                            save.granted.len()
                        );
                        stats.lease_losses += 1;
                        for id in &save.granted {
                            sessions.awaiting_commit.remove(id);
                        }
                        for (id, _) in &save.settled {
                            sessions.settling.remove(id);
                        }
                        if let Some((mut session, _)) = live.and_then(|e| players.get_mut(e).ok()) {
                            session.unsaved.clear();
                            session.pending.clear();
                            session.unsaved_settled.clear();
                            session.clawbacks.clear();
                            session.phase = SessionPhase::Failed("session lease lost".into());
                        }
                    }
                    Ok(other) => tracing::error!("unexpected ledger reply to Save: {other:?}"),
                    Err(e) => {
                        stats.save_failures += 1;
                        save_failed.write(PlayerSaveFailed {
                            user_id: save.user,
                            reason: e.to_string(),
                            uncommitted_grants: save.granted.len(),
                        });
                        if departed {
                            if let Some(gone) = sessions.departed.get_mut(&save.user) {
                                gone.in_flight = false;
                                gone.failures += 1;
                                let wait = settings.retry.delay(gone.failures);
                                tracing::warn!(
                                    "final save of user {} failed: {e}; retrying in {wait:?}",
                                    save.user
                                );
                                wakes.after(now, wait, Wake::Departed(save.user));
                            }
                        } else if let Some(entity) = live
                            && let Ok((mut session, _)) = players.get_mut(entity)
                        {
                            session.save_failures += 1;
                            session.last_save_error = Some(e.to_string());
                            let wait = settings.retry.delay(session.save_failures);
                            tracing::warn!(
                                "saving user {} failed: {e}; {} grant(s) stay pending, retrying in {wait:?}",
                                save.user,
                                session.unsaved.len()
                            );
                            wakes.after(now, wait, Wake::Save(entity));
                        }
                    }
                }
                // A final save landed: a player who came back meanwhile can load now.
                if departed
                    && landed
                    && let Some(back) = sessions.final_save_landed(save.user)
                    && let Ok((mut session, _)) = players.get_mut(back)
                {
                    ledger.send(open_request(save.user, &settings));
                    session.open_in_flight = true;
                }
            }
            LedgerRequest::AdjustBalance { user, .. } => match result {
                Ok(LedgerReply::BalanceAdjusted { balance: new }) => {
                    if let Some(&e) = sessions.by_user.get(&user)
                        && let Ok((_, mut balance)) = players.get_mut(e)
                    {
                        balance.0 = new;
                    }
                }
                Ok(LedgerReply::BalanceTooLow { balance }) => {
                    tracing::warn!("balance of user {user} cannot go below zero (it is {balance})");
                }
                Ok(other) => tracing::error!("unexpected ledger reply to AdjustBalance: {other:?}"),
                Err(e) => tracing::error!("changing the balance of user {user} failed: {e}"),
            },
            LedgerRequest::PendingReceipts { user } => {
                if let Ok(LedgerReply::PendingReceipts {
                    receipts,
                    clawbacks,
                    balance: stored_balance,
                    shortfall,
                }) = result
                    && let Some(&e) = sessions.by_user.get(&user)
                    && let Ok((mut session, mut balance)) = players.get_mut(e)
                    && session.is_active()
                {
                    balance.set_if_neq(PremiumBalance(stored_balance));
                    session.shortfall = shortfall;
                    let known = (session.pending.len(), session.clawbacks.len());
                    for receipt in receipts {
                        if !sessions.awaiting_commit.contains(&receipt.purchase_id) {
                            session.add_pending(receipt);
                        }
                    }
                    for receipt in clawbacks {
                        session.add_clawback(receipt);
                    }
                    if (session.pending.len(), session.clawbacks.len()) != known {
                        deliveries.now.push(e);
                    }
                }
            }
            LedgerRequest::Refund(request) => {
                let result = match result {
                    Ok(LedgerReply::Refunded {
                        receipt,
                        balance: new_balance,
                        clawback,
                    }) => {
                        if let Some(&e) = sessions.by_user.get(&receipt.player_id)
                            && let Ok((mut session, mut balance)) = players.get_mut(e)
                        {
                            balance.0 = new_balance;
                            // Not granted yet: it must not be now. (One granted in memory and
                            // not yet saved is taken back once its save commits.)
                            session
                                .pending
                                .retain(|p| p.info.purchase_id != receipt.purchase_id);
                            if clawback == Clawback::Pending && session.is_active() {
                                session.add_clawback(receipt.clone());
                                deliveries.now.push(e);
                            }
                        }
                        stats.refunds += 1;
                        Ok(crate::ledger::RefundOutcome {
                            receipt,
                            balance: new_balance,
                            clawback,
                        })
                    }
                    Ok(LedgerReply::RefundRefused(e)) => {
                        Err(crate::ledger::RefundFailure::Refused(e))
                    }
                    Ok(other) => Err(crate::ledger::RefundFailure::Ledger(format!(
                        "unexpected ledger reply: {other:?}"
                    ))),
                    Err(e) => Err(crate::ledger::RefundFailure::Ledger(e.to_string())),
                };
                money.refunds.write(RefundFinished {
                    purchase_id: request.purchase_id,
                    result,
                });
            }
            LedgerRequest::Credit(request) => {
                let result = match result {
                    Ok(LedgerReply::Credited {
                        user,
                        balance: new_balance,
                        shortfall,
                        already_credited,
                    }) => {
                        show_wallet(&sessions, &mut players, user, new_balance, shortfall);
                        Ok(crate::ledger::CreditOutcome {
                            balance: new_balance,
                            shortfall,
                            already_credited,
                        })
                    }
                    other => Err(credit_failure(other)),
                };
                money.credits.write(CreditFinished { request, result });
            }
            LedgerRequest::ReverseCredit { source, order_id } => {
                let result = match result {
                    Ok(LedgerReply::CreditReversed {
                        record,
                        balance: new_balance,
                        shortfall,
                        already_reversed,
                    }) => {
                        show_wallet(&sessions, &mut players, record.user, new_balance, shortfall);
                        Ok(crate::ledger::ReversalOutcome {
                            record,
                            balance: new_balance,
                            shortfall,
                            already_reversed,
                        })
                    }
                    other => Err(credit_failure(other)),
                };
                money.reversals.write(CreditReversalFinished {
                    source,
                    order_id,
                    result,
                });
            }
            LedgerRequest::History {
                user,
                filter,
                page,
                after,
            } => {
                money.history.write(PurchaseHistoryReady {
                    user_id: user,
                    filter,
                    page,
                    after,
                    result: match result {
                        Ok(LedgerReply::History(page)) => Ok(page),
                        Ok(other) => Err(format!("unexpected ledger reply: {other:?}")),
                        Err(e) => Err(e.to_string()),
                    },
                });
            }
            LedgerRequest::Sales(query) => {
                money.sales.write(SalesReportReady {
                    query,
                    result: match result {
                        Ok(LedgerReply::Sales(rows)) => Ok(rows),
                        Ok(other) => Err(format!("unexpected ledger reply: {other:?}")),
                        Err(e) => Err(e.to_string()),
                    },
                });
            }
            LedgerRequest::ReleaseSession { .. } | LedgerRequest::Audit => {}
            LedgerRequest::Charge(_) => unreachable!("charges are handled by the prompt systems"),
        }
    }
}

/// Shows a player online here the balance and shortfall a top-up or its reversal left them with.
fn show_wallet(
    sessions: &Sessions,
    players: &mut Query<(&mut PlayerSession, &mut PremiumBalance)>,
    user: crate::ids::UserId,
    balance: u64,
    shortfall: u64,
) {
    if let Some(&e) = sessions.by_user.get(&user)
        && let Ok((mut session, mut shown)) = players.get_mut(e)
    {
        shown.0 = balance;
        session.shortfall = shortfall;
    }
}

/// A top-up or reversal that did not go through, as the game is told.
fn credit_failure(result: Result<LedgerReply, LedgerError>) -> crate::ledger::CreditFailure {
    use crate::ledger::CreditFailure;
    match result {
        Ok(LedgerReply::CreditRefused(e)) => CreditFailure::Refused(e),
        Ok(other) => CreditFailure::Ledger(format!("unexpected ledger reply: {other:?}")),
        Err(e) => CreditFailure::Ledger(e.to_string()),
    }
}

/// Where answers to the service's ledger questions go: history, sales, refunds, top-ups and their
/// reversals.
#[derive(bevy::ecs::system::SystemParam)]
pub(crate) struct Answers<'w> {
    history: MessageWriter<'w, PurchaseHistoryReady>,
    sales: MessageWriter<'w, SalesReportReady>,
    refunds: MessageWriter<'w, RefundFinished>,
    refunded: MessageWriter<'w, ReceiptRefunded>,
    credits: MessageWriter<'w, CreditFinished>,
    reversals: MessageWriter<'w, CreditReversalFinished>,
}

/// Marks sessions failed when the ledger cannot be opened, so prompts say so at once.
pub(crate) fn watch_ledger_status(ledger: Res<Ledger>, mut sessions: Query<&mut PlayerSession>) {
    if let LedgerStatus::Failed(error) = ledger.status()
        && ledger.is_changed()
    {
        for mut session in &mut sessions {
            if session.phase == SessionPhase::Loading {
                session.phase = SessionPhase::Failed(format!("ledger unavailable: {error}"));
            }
        }
    }
}
