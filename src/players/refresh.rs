//! What changed elsewhere reaches a player online here: the game follows the ledger's change
//! feed — one read per refresh interval, or at once when the ledger says something changed — and
//! reads again the balance, pending receipts and pending clawbacks of the players it names.

use bevy::prelude::*;

use super::player::{PlayerSession, Task};
use super::sessions::Sessions;
use super::work_queue::DeliveryQueue;
use crate::currency::PremiumBalance;
use crate::ledger::{ChangeFeed, PlayerReading, ReadChanges, ReadPlayer};
use crate::link::{Ledger, LedgerAnswers};
use crate::settings::{FrameDeadline, MarketplaceSettings};

/// Where this game is in the ledger's change feed.
#[derive(Resource, Default)]
pub(crate) struct ChangeFollower {
    /// The feed's point read up to (`None` until the first answer).
    since: Option<i64>,
    /// A `ReadChanges` is with the ledger.
    asking: bool,
    /// When to ask next without being told.
    next_ask: std::time::Duration,
}

/// Asks the ledger what changed, once per refresh interval — or at once when it says something
/// did (PostgreSQL's notifications) — one read however many players are online.
pub(crate) fn follow_changes(
    mut follower: ResMut<ChangeFollower>,
    mut ledger: ResMut<Ledger>,
    settings: Res<MarketplaceSettings>,
    time: Res<Time<Real>>,
) {
    let now = time.elapsed();
    // Taking the notice is no change to the ledger's status (systems watch that).
    let told = ledger.bypass_change_detection().take_change_notice();
    if follower.asking || (!told && now < follower.next_ask) {
        return;
    }
    follower.asking = true;
    follower.next_ask = now.saturating_add(settings.refresh_interval);
    let since = follower.since;
    ledger.send(ReadChanges { since });
}

/// Reads again the players the feed names (all of them, when it cannot say).
pub(crate) fn handle_change_feed(
    mut answers: ResMut<LedgerAnswers<ReadChanges>>,
    mut follower: ResMut<ChangeFollower>,
    sessions: Res<Sessions>,
    mut ledger: ResMut<Ledger>,
    deadline: Res<FrameDeadline>,
) {
    for answer in answers.drain_within(&deadline) {
        follower.asking = false;
        let Ok(ChangeFeed {
            users,
            latest,
            complete,
        }) = answer.result
        else {
            continue; // asked again at the next interval
        };
        let first = follower.since.is_none();
        follower.since = Some(latest);
        if first {
            continue; // where the feed is now: every session opened after reads its own
        }
        if complete {
            for user in users {
                if sessions.by_user.contains_key(&user) {
                    ledger.send(ReadPlayer { user });
                }
            }
        } else {
            tracing::warn!(
                "the ledger's change feed cannot say all that changed since this game last asked; reading every player online again"
            );
            for &user in sessions.by_user.keys() {
                ledger.send(ReadPlayer { user });
            }
        }
    }
}

/// Applies the ledger's readings of players: the balance and shortfall they show, receipts to
/// deliver and refunds to take back that this server did not know of.
pub(crate) fn handle_player_readings(
    mut answers: ResMut<LedgerAnswers<ReadPlayer>>,
    sessions: Res<Sessions>,
    mut players: Query<(&mut PlayerSession, &mut PremiumBalance)>,
    mut deliveries: ResMut<DeliveryQueue>,
    deadline: Res<FrameDeadline>,
) {
    for answer in answers.drain_within(&deadline) {
        let Ok(PlayerReading {
            pending,
            clawbacks,
            balance: stored_balance,
            shortfall,
        }) = answer.result
        else {
            continue;
        };
        let Some(&e) = sessions.by_user.get(&answer.call.user) else {
            continue;
        };
        let Ok((mut session, mut balance)) = players.get_mut(e) else {
            continue;
        };
        // Inactive, or an answer about the player's previous visit, which the opening read.
        if !session.is_active() || answer.seq < session.opened_at {
            continue;
        }
        balance.set_if_neq(PremiumBalance(stored_balance));
        session.shortfall = shortfall;
        // What this server learnt of before the reading was sent, and the ledger no longer
        // holds, was refunded or settled elsewhere meanwhile: it must not be delivered now.
        let read_at = answer.seq;
        let dropped: Vec<_> = session
            .pending
            .iter()
            .filter(|known| {
                known.learned_at < read_at
                    && !pending
                        .iter()
                        .any(|p| p.purchase_id == known.info.purchase_id)
            })
            .map(|known| known.info.purchase_id.clone())
            .collect();
        for id in &dropped {
            session.forget_pending(id, read_at);
        }
        session.clawbacks.retain(|known| {
            known.learned_at > read_at
                || clawbacks
                    .iter()
                    .any(|p| p.purchase_id == known.info.purchase_id)
        });
        let known = (session.pending.len(), session.clawbacks.len());
        for receipt in pending {
            if !sessions
                .awaiting_commit
                .holds(&receipt.purchase_id, Task::Grant)
            {
                session.add_pending(receipt, read_at);
            }
        }
        for receipt in clawbacks {
            session.add_clawback(receipt, read_at);
        }
        if (session.pending.len(), session.clawbacks.len()) != known {
            deliveries.now.push(e);
        }
    }
}
