//! A connected buyer with the plugin's state for them: `Buyer`, `PlayerSession`, its phase, its
//! pending receipts.

use std::time::Duration;

use bevy::prelude::*;

use crate::currency::PremiumBalance;
use crate::ids::{PurchaseId, ServerId, UserId};
use crate::ledger::{Clawback, LeaseFence, PlayerSnapshot, ReleaseSession};
use crate::receipt::ReceiptInfo;

/// A connected player who can buy (Roblox's `Player`; named `Buyer` so it does not collide with
/// the `Player` marker most games have). Spawn it when a player joins and despawn it (or remove
/// it) when they leave: their session is loaded from the ledger on join and saved on leave.
/// Receipts are only ever delivered to a player who has a `Buyer` here.
///
/// ```
/// use bevy::prelude::*;
/// use bevy_marketplace::prelude::*;
/// use bevy_marketplace::testing::MarketplaceTestExt;
///
/// let mut app = App::new();
/// app.add_plugins((MinimalPlugins, MarketplacePlugin::default().with_ledger(LedgerBackend::in_memory())));
/// // On join: the session opens (and the balance loads) a few frames later.
/// let player = app.world_mut().spawn(Buyer::new(UserId(42))).id();
/// app.update_until("the session to open", |w| {
///     w.get::<PlayerSession>(player).is_some_and(PlayerSession::is_active)
/// });
/// // On leave: they are saved and their session lease is released.
/// app.world_mut().despawn(player);
/// app.settle();
/// ```
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
#[require(PremiumBalance)]
pub struct Buyer {
    /// The player's account.
    pub user_id: UserId,
}

impl Buyer {
    /// A player with this user id.
    pub fn new(user_id: UserId) -> Self {
        Self { user_id }
    }
}

/// Where a player's session is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionPhase {
    /// Waiting for the ledger: persisted components, balance and pending receipts are loading.
    Loading,
    /// Loaded: receipts are delivered and purchases allowed.
    Active,
    /// Unusable (data did not load, the lease was lost, the ledger is down): nothing is
    /// delivered or saved for this player.
    Failed(String),
}

/// What a handler is asked to do with a receipt: grant it (a product handler), or take a refunded
/// purchase's effect back (a refund handler).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Task {
    /// Grant the purchase.
    Grant,
    /// Take a refunded purchase's effect back.
    TakeBack,
}

/// What a handler did in memory, until the save that commits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    /// The product handler granted the receipt.
    Granted,
    /// The refund's effect was taken back (`Done`), or is kept for want of a refund handler.
    Settled(Clawback),
    /// The product handler rejected the receipt (its reason is in [`Uncommitted::rejection`]):
    /// the save refunds it. Its changes were undone when it decided.
    Rejected,
}

impl Work {
    /// The task this work did.
    pub(crate) fn task(self) -> Task {
        match self {
            Self::Granted | Self::Rejected => Task::Grant,
            Self::Settled(_) => Task::TakeBack,
        }
    }
}

/// A handler's work on a receipt, done in memory and not yet committed, with the buyer's persisted
/// components from just before it: what they go back to if the ledger refuses it.
#[derive(Clone, Debug)]
pub(crate) struct Uncommitted {
    pub(crate) receipt: ReceiptInfo,
    pub(crate) work: Work,
    pub(crate) before: PlayerSnapshot,
    /// When this server learnt of the receipt (see [`PendingReceipt`]'s), kept if it waits again.
    pub(crate) learned_at: u64,
    /// The handler's reason, for [`Work::Rejected`].
    pub(crate) rejection: Option<String>,
}

/// A receipt waiting for its handler on this server.
#[derive(Clone, Debug)]
pub struct PendingReceipt {
    /// The receipt.
    pub info: ReceiptInfo,
    /// Deliveries that did not grant.
    pub attempts: u32,
    /// Earliest time (real time since start) of the next timed retry.
    pub next_attempt: Duration,
    warned_no_handler: bool,
    /// The number of the ledger request whose answer told this server of the receipt: a later
    /// reading of the ledger that no longer lists it drops it (refunded, or settled elsewhere).
    pub(crate) learned_at: u64,
}

impl PendingReceipt {
    fn new(info: ReceiptInfo, learned_at: u64) -> Self {
        Self {
            info,
            attempts: 0,
            next_attempt: Duration::ZERO,
            warned_no_handler: false,
            learned_at,
        }
    }
}

/// The plugin's state for one player, added next to [`Buyer`].
#[derive(Component, Debug)]
pub struct PlayerSession {
    pub(crate) user: UserId,
    pub(crate) phase: SessionPhase,
    pub(crate) pending: Vec<PendingReceipt>,
    /// Grants and clawbacks done in memory, in the order their handlers ran: their effects are in
    /// the components but not yet committed.
    pub(crate) uncommitted: Vec<Uncommitted>,
    /// Granted and committed during this session. A receipt learnt of twice — from a refresh
    /// and then from its own charge's answer, handled frames later — is granted once.
    pub(crate) committed: std::collections::HashSet<PurchaseId>,
    /// Refunds whose clawback was settled and committed during this session: a refund learnt of
    /// again from an answer read before that commit is not taken back twice.
    pub(crate) settled: std::collections::HashSet<PurchaseId>,
    /// Refunded receipts whose effect this server is to take back.
    pub(crate) clawbacks: Vec<PendingReceipt>,
    /// Currency owed from reversed store top-ups.
    pub(crate) shortfall: u64,
    /// Stored components that no registered type claims; saved back untouched.
    pub(crate) carried: PlayerSnapshot,
    pub(crate) save_failures: u32,
    /// Why the last save could not be made or committed, until a save commits.
    pub(crate) last_save_error: Option<String>,
    pub(crate) open_failures: u32,
    /// An `OpenSession` for this session is with the ledger, unanswered.
    pub(crate) open_in_flight: bool,
    /// The token of the session lease this server took for them, once their data loaded.
    pub(crate) lease_token: Option<i64>,
    /// The number of the ledger request that opened this session: an answer to an older request
    /// tells of the player's previous visit, which the opening already read, and is ignored.
    pub(crate) opened_at: u64,
    /// Receipts this session learnt are no longer waiting for their grant (refunded, or dropped by
    /// a reading), with the number of the request that told it: an older answer that still lists
    /// them does not bring them back.
    pub(crate) gone: std::collections::HashMap<PurchaseId, u64>,
    /// The state the last save sent for them (or the opening read), and when (`Time<Real>`): an
    /// autosave with nothing new is skipped until half the lease has gone by.
    pub(crate) last_save: Option<(PlayerSnapshot, std::time::Duration)>,
}

impl PlayerSession {
    pub(crate) fn new(user: UserId) -> Self {
        Self {
            user,
            phase: SessionPhase::Loading,
            pending: Vec::new(),
            uncommitted: Vec::new(),
            committed: Default::default(),
            settled: Default::default(),
            clawbacks: Vec::new(),
            shortfall: 0,
            carried: PlayerSnapshot::default(),
            save_failures: 0,
            last_save_error: None,
            open_failures: 0,
            open_in_flight: false,
            lease_token: None,
            opened_at: 0,
            gone: Default::default(),
            last_save: None,
        }
    }

    /// The player's account.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// Where the session is.
    pub fn phase(&self) -> &SessionPhase {
        &self.phase
    }

    /// `true` once loaded.
    pub fn is_active(&self) -> bool {
        self.phase == SessionPhase::Active
    }

    /// Receipts not yet granted on this server.
    pub fn pending_receipts(&self) -> &[PendingReceipt] {
        &self.pending
    }

    /// Receipts granted in memory whose commit has not been confirmed yet.
    pub fn uncommitted_grants(&self) -> Vec<&PurchaseId> {
        self.uncommitted
            .iter()
            .filter(|u| u.work == Work::Granted)
            .map(|u| &u.receipt.purchase_id)
            .collect()
    }

    /// Refunded receipts whose effect waits to be taken back by their refund handler here.
    pub fn pending_clawbacks(&self) -> &[PendingReceipt] {
        &self.clawbacks
    }

    /// Premium currency the player owes because a store reversed a top-up they had already
    /// spent (see [`MarketplaceService::reverse_credit`](crate::MarketplaceService::reverse_credit)).
    /// The next top-ups pay it first. What to do meanwhile (block purchases, show a notice) is
    /// the game's choice.
    pub fn shortfall(&self) -> u64 {
        self.shortfall
    }

    /// Why the player's last save could not be made or committed (cleared when a save commits).
    pub fn last_save_error(&self) -> Option<&str> {
        self.last_save_error.as_deref()
    }

    /// The proof that `server` holds this player's lease, once their data loaded.
    pub(crate) fn fence(&self, server: &ServerId) -> Option<LeaseFence> {
        self.lease_token.map(|token| LeaseFence {
            server: server.clone(),
            token,
        })
    }

    /// Gives the lease back: the one this session took, or — while still loading — whichever
    /// this server holds.
    pub(crate) fn release(&self, server: &ServerId) -> ReleaseSession {
        ReleaseSession {
            user: self.user,
            server: server.clone(),
            token: self.lease_token,
        }
    }

    /// Adds a receipt to deliver, learnt from the answer to ledger request number `learned_at`,
    /// unless it is known already.
    pub(crate) fn add_pending(&mut self, receipt: ReceiptInfo, learned_at: u64) {
        if learned_at < self.opened_at
            || self
                .gone
                .get(&receipt.purchase_id)
                .is_some_and(|&gone| gone >= learned_at)
        {
            return;
        }
        if !self
            .pending
            .iter()
            .any(|p| p.info.purchase_id == receipt.purchase_id)
            && !self.is_uncommitted(&receipt.purchase_id, Task::Grant)
            && !self.committed.contains(&receipt.purchase_id)
        {
            self.pending.push(PendingReceipt::new(receipt, learned_at));
        }
    }

    /// Adds a refund whose effect is to be taken back here, learnt from the answer to ledger
    /// request number `learned_at`, unless it is known already.
    pub(crate) fn add_clawback(&mut self, receipt: ReceiptInfo, learned_at: u64) {
        let id = &receipt.purchase_id;
        if learned_at < self.opened_at {
            return;
        }
        if !self.clawbacks.iter().any(|p| &p.info.purchase_id == id)
            && !self.is_uncommitted(id, Task::TakeBack)
            && !self.settled.contains(id)
        {
            self.clawbacks
                .push(PendingReceipt::new(receipt, learned_at));
        }
    }

    /// Whether a handler did `task` on `id` in memory, uncommitted.
    pub(crate) fn is_uncommitted(&self, id: &PurchaseId, task: Task) -> bool {
        self.uncommitted
            .iter()
            .any(|u| u.receipt.purchase_id == *id && u.work.task() == task)
    }

    /// The receipts waiting for `task`.
    pub(crate) fn waiting(&mut self, task: Task) -> &mut Vec<PendingReceipt> {
        match task {
            Task::Grant => &mut self.pending,
            Task::TakeBack => &mut self.clawbacks,
        }
    }

    /// The receipts of `list` to try now: all of them when `forced`, else those due.
    pub(crate) fn due(
        list: &[PendingReceipt],
        forced: bool,
        now: Duration,
    ) -> Vec<(ReceiptInfo, u64)> {
        list.iter()
            .filter(|p| forced || p.next_attempt <= now)
            .map(|p| (p.info.clone(), p.learned_at))
            .collect()
    }

    /// The receipt `id` no longer waits for its grant, as the answer to request `seq` told.
    pub(crate) fn forget_pending(&mut self, id: &PurchaseId, seq: u64) {
        self.pending.retain(|p| p.info.purchase_id != *id);
        let at = self.gone.entry(id.clone()).or_insert(seq);
        *at = (*at).max(seq);
    }

    /// Records a failed attempt on `id` in `list` and when to try again; returns its failures
    /// so far and the wait.
    pub(crate) fn note_failure_in(
        list: &mut [PendingReceipt],
        id: &PurchaseId,
        now: Duration,
        retry: crate::retry::RetryPolicy,
    ) -> (u32, Duration) {
        let Some(p) = list.iter_mut().find(|p| &p.info.purchase_id == id) else {
            return (1, retry.delay(1));
        };
        p.attempts += 1;
        let wait = retry.delay(p.attempts);
        p.next_attempt = now.saturating_add(wait);
        (p.attempts, wait)
    }

    pub(crate) fn warn_no_handler_once(&mut self, id: &PurchaseId) -> bool {
        match self.pending.iter_mut().find(|p| &p.info.purchase_id == id) {
            Some(p) if !p.warned_no_handler => {
                p.warned_no_handler = true;
                true
            }
            _ => false,
        }
    }
}
