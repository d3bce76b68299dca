//! The change feed: which players' data changed since a point of the ledger's feed, so a game
//! learns of writes made elsewhere with one read, however many players it has online.

use crate::ids::UserId;

/// Which players' data changed since `since`, a point of the ledger's change feed: every write a
/// game must hear about that it did not make under a player's lease — a refund, a top-up or its
/// reversal, a balance grant, a purchase made outside the game — adds the player to the feed.
/// Asking costs one read, however many players a game has online.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadChanges {
    /// The point read up to last time (`ChangeFeed::latest`); `None` for where the feed is now.
    pub since: Option<i64>,
}

/// The answer to [`ReadChanges`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeFeed {
    /// The players whose data changed after `since`, each once, in the order of their first
    /// change.
    pub users: Vec<UserId>,
    /// The point this answer reads up to: ask from here next time.
    pub latest: i64,
    /// `false` when the feed cannot say everything since `since` (the ledger keeps the newest
    /// [`CHANGES_KEPT`] changes, and answers at most [`CHANGES_ANSWERED`]): every player may have
    /// changed.
    pub complete: bool,
}

/// Changes the ledger keeps: a game that asks less often than this many changes are made reads
/// all its players again.
pub const CHANGES_KEPT: i64 = 100_000;

/// Most changes one [`ReadChanges`] answers.
pub const CHANGES_ANSWERED: usize = 10_000;

impl ChangeFeed {
    /// The feed's answer from the changes after `since` (`(id, user)`, oldest first, at most one
    /// more than [`CHANGES_ANSWERED`]), the newest change id and the oldest kept.
    pub(crate) fn of(
        since: Option<i64>,
        changes: impl IntoIterator<Item = (i64, UserId)>,
        latest: i64,
        oldest: i64,
    ) -> Self {
        let Some(since) = since else {
            return Self {
                users: Vec::new(),
                latest,
                complete: true,
            };
        };
        // A gap: changes after `since` were dropped already.
        let kept = oldest <= since.saturating_add(1) || latest <= since;
        let mut users = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut count = 0usize;
        for (_, user) in changes {
            count += 1;
            if count > CHANGES_ANSWERED {
                break;
            }
            if seen.insert(user) {
                users.push(user);
            }
        }
        Self {
            users,
            latest: latest.max(since),
            complete: kept && count <= CHANGES_ANSWERED,
        }
    }
}
