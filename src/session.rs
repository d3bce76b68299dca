//! Players and their sessions: loading on join, saving on leave, the in-flight grant set.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bevy::ecs::world::DeferredWorld;
use bevy::prelude::*;

use crate::awaiting_commit::AwaitingCommit;
use crate::currency::PremiumBalance;
use crate::delivery::{DeliveryQueue, ReceiptResolved};
use crate::ids::{PurchaseId, UserId};
use crate::ledger::{
    Ledger, LedgerCompletion, LedgerError, LedgerReply, LedgerRequest, LedgerStatus,
    PlayerSnapshot, SaveRequest,
};
use crate::persist::PersistRegistry;
use crate::plugin::{FrameDeadline, MarketplaceSettings, MarketplaceStats};
use crate::prompt::{PromptProductPurchaseFinished, PromptState, PurchasePrompt};
use crate::receipt::ReceiptInfo;
use crate::retry::{Wake, WakeSchedule};

/// A connected buyer (Roblox `Player`). Spawn it when a player joins and despawn it (or remove
/// it) when they leave: their session is loaded from the ledger on join and saved on leave.
/// Receipts are only ever delivered to a buyer who has a `Player` here.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq)]
#[require(PremiumBalance)]
pub struct Player {
    /// The player's account.
    pub user_id: UserId,
}

impl Player {
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
}

impl PendingReceipt {
    fn new(info: ReceiptInfo) -> Self {
        Self {
            info,
            attempts: 0,
            next_attempt: Duration::ZERO,
            warned_no_handler: false,
        }
    }
}

/// The plugin's state for one player, added next to [`Player`].
#[derive(Component, Debug)]
pub struct PlayerSession {
    pub(crate) user: UserId,
    pub(crate) phase: SessionPhase,
    pub(crate) pending: Vec<PendingReceipt>,
    /// Granted in memory; their effects are in the components but not yet committed.
    pub(crate) unsaved: Vec<PurchaseId>,
    /// Stored components that no registered type claims; saved back untouched.
    pub(crate) carried: PlayerSnapshot,
    pub(crate) save_failures: u32,
    /// Why the last save could not be made or committed, until a save commits.
    pub(crate) last_save_error: Option<String>,
    pub(crate) open_failures: u32,
    /// An `OpenSession` for this session is with the ledger, unanswered.
    pub(crate) open_in_flight: bool,
}

impl PlayerSession {
    fn new(user: UserId) -> Self {
        Self {
            user,
            phase: SessionPhase::Loading,
            pending: Vec::new(),
            unsaved: Vec::new(),
            carried: PlayerSnapshot::default(),
            save_failures: 0,
            last_save_error: None,
            open_failures: 0,
            open_in_flight: false,
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
    pub fn uncommitted_grants(&self) -> &[PurchaseId] {
        &self.unsaved
    }

    /// Why the player's last save could not be made or committed (cleared when a save commits).
    pub fn last_save_error(&self) -> Option<&str> {
        self.last_save_error.as_deref()
    }

    pub(crate) fn add_pending(&mut self, receipt: ReceiptInfo) {
        if !self
            .pending
            .iter()
            .any(|p| p.info.purchase_id == receipt.purchase_id)
            && !self.unsaved.contains(&receipt.purchase_id)
        {
            self.pending.push(PendingReceipt::new(receipt));
        }
    }

    pub(crate) fn note_failure(
        &mut self,
        id: &PurchaseId,
        retry_at: Duration,
    ) -> Option<&mut PendingReceipt> {
        let p = self
            .pending
            .iter_mut()
            .find(|p| &p.info.purchase_id == id)?;
        p.attempts += 1;
        p.next_attempt = retry_at;
        Some(p)
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

/// A player's state could not be saved: a persisted component did not serialise, or the ledger
/// refused or failed the save. The player's uncommitted grants stay pending (in memory while the
/// player is here, in the ledger once they leave) and the save is retried; nothing is granted twice.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct PlayerSaveFailed {
    /// The player.
    pub user_id: UserId,
    /// What went wrong.
    pub reason: String,
    /// Receipts granted in memory that this save would have committed.
    pub uncommitted_grants: usize,
}

/// A player who left, whose final save has not landed yet.
#[derive(Debug)]
pub(crate) struct Departed {
    pub(crate) request: SaveRequest,
    /// The save is with the ledger, unanswered (else it waits for a timed retry).
    pub(crate) in_flight: bool,
    failures: u32,
    /// The player came back here meanwhile: open their new session once this save lands.
    rejoined: Option<Entity>,
}

/// Server-wide session bookkeeping.
#[derive(Resource, Default, Debug)]
pub struct Sessions {
    pub(crate) by_user: HashMap<UserId, Entity>,
    /// Receipts granted in memory on this server and not yet confirmed committed. A receipt in
    /// this set is never handed to a handler again.
    pub(crate) awaiting_commit: AwaitingCommit,
    pub(crate) departed: HashMap<UserId, Departed>,
    /// Per user, answers still to come to `OpenSession`s of visits that ended while loading.
    /// They must not be applied to the user's next visit: its own answer is the one to use.
    pub(crate) stale_opens: HashMap<UserId, u32>,
    /// The buyer whose handler is running, with their persisted components from before it ran.
    /// A save made meanwhile (the handler despawned its buyer) uses these, so an undecided
    /// handler's changes never reach the ledger.
    pub(crate) handler_running: Option<(Entity, PlayerSnapshot)>,
}

impl Sessions {
    /// The entity of a connected user.
    pub fn player(&self, user: UserId) -> Option<Entity> {
        self.by_user.get(&user).copied()
    }

    /// Receipts granted in memory whose commit is in flight.
    pub fn awaiting_commit(&self) -> impl Iterator<Item = &ReceiptInfo> {
        self.awaiting_commit.iter()
    }

    /// Players who left and whose final save is still in flight.
    pub fn departing(&self) -> usize {
        self.departed.len()
    }
}

fn open_request(user: UserId, settings: &MarketplaceSettings) -> LedgerRequest {
    LedgerRequest::OpenSession {
        user,
        server: settings.server_id.clone(),
        lease_ms: settings.lease_ms(),
        starting_balance: settings.starting_balance,
    }
}

pub(crate) fn on_player_added(
    add: On<Add, Player>,
    players: Query<&Player>,
    mut sessions: ResMut<Sessions>,
    mut ledger: ResMut<Ledger>,
    settings: Res<MarketplaceSettings>,
    mut commands: Commands,
) {
    let entity = add.entity;
    let Ok(player) = players.get(entity) else {
        return;
    };
    let user = player.user_id;
    let mut session = PlayerSession::new(user);
    if let Some(&other) = sessions.by_user.get(&user)
        && other != entity
    {
        tracing::error!(
            "user {user} is already playing as entity {other}; the second Player on {entity} gets no session"
        );
        session.phase = SessionPhase::Failed(format!("user {user} is already playing here"));
        commands.entity(entity).insert(session);
        return;
    }
    sessions.by_user.insert(user, entity);
    match sessions.departed.get_mut(&user) {
        // Their last save from the previous visit must land before we read their data again.
        Some(departed) => departed.rejoined = Some(entity),
        None => {
            ledger.send(open_request(user, &settings));
            session.open_in_flight = true;
        }
    }
    commands.entity(entity).insert(session);
}

/// What [`build_save`] made of a player.
pub(crate) enum SaveBuild {
    /// The session is not active: there is nothing of theirs to save.
    Inactive,
    /// The save to send.
    Ready(SaveRequest),
    /// A persisted component could not be serialised; nothing can be saved now.
    Unserializable {
        user: UserId,
        reason: String,
        uncommitted_grants: usize,
    },
}

/// Builds a save of the player's persisted components and uncommitted grants.
pub(crate) fn build_save(world: &World, entity: Entity, release: bool) -> SaveBuild {
    let Ok(entity_ref) = world.get_entity(entity) else {
        return SaveBuild::Inactive;
    };
    let Some(session) = entity_ref.get::<PlayerSession>() else {
        return SaveBuild::Inactive;
    };
    if session.phase != SessionPhase::Active {
        return SaveBuild::Inactive;
    }
    let settings = world.resource::<MarketplaceSettings>();
    let state = match &world.resource::<Sessions>().handler_running {
        // A handler is running on this player and has not decided: save what it started from.
        Some((running, before)) if *running == entity => Ok(before.clone()),
        _ => world.resource::<PersistRegistry>().snapshot(&entity_ref),
    };
    let mut state = match state {
        Ok(state) => state,
        Err(reason) => {
            return SaveBuild::Unserializable {
                user: session.user,
                reason,
                uncommitted_grants: session.unsaved.len(),
            };
        }
    };
    for (name, text) in &session.carried.0 {
        state.0.entry(name.clone()).or_insert_with(|| text.clone());
    }
    SaveBuild::Ready(SaveRequest {
        user: session.user,
        server: settings.server_id.clone(),
        state,
        granted: session.unsaved.clone(),
        release,
        lease_ms: settings.lease_ms(),
    })
}

/// Queues a save of the player now (after a grant, on autosave, on a retry). A save that cannot
/// be built is reported and retried with backoff; the grants it would carry stay uncommitted.
pub(crate) fn queue_save(world: &mut World, entity: Entity) {
    match build_save(world, entity, false) {
        SaveBuild::Inactive => {}
        SaveBuild::Ready(request) => world
            .resource_mut::<Ledger>()
            .send(LedgerRequest::Save(request)),
        SaveBuild::Unserializable {
            user,
            reason,
            uncommitted_grants,
        } => {
            let now = world.resource::<Time<Real>>().elapsed();
            let retry = world.resource::<MarketplaceSettings>().retry;
            let Some(mut session) = world.get_mut::<PlayerSession>(entity) else {
                return;
            };
            session.save_failures += 1;
            let wait = retry.delay(session.save_failures);
            session.last_save_error = Some(reason.clone());
            tracing::error!(
                "cannot save user {user}: {reason}; nothing was saved, {uncommitted_grants} grant(s) stay uncommitted, retrying in {wait:?}"
            );
            world.resource_mut::<MarketplaceStats>().save_failures += 1;
            world
                .resource_mut::<WakeSchedule>()
                .after(now, wait, Wake::Save(entity));
            world.write_message(PlayerSaveFailed {
                user_id: user,
                reason,
                uncommitted_grants,
            });
        }
    }
}

pub(crate) fn on_player_removed(remove: On<Remove, Player>, mut world: DeferredWorld) {
    let entity = remove.entity;
    let Some(user) = world.get::<PlayerSession>(entity).map(|s| s.user) else {
        return;
    };
    if let Some(prompt) = world.get::<PurchasePrompt>(entity) {
        let finished = PromptProductPurchaseFinished {
            user_id: user,
            product_id: prompt.product_id,
            // They saw "Purchased": the purchase went through, whether or not they pressed OK.
            is_purchased: matches!(prompt.state, PromptState::Purchased(_)),
        };
        world.write_message(finished);
    }
    if world.resource::<Sessions>().by_user.get(&user) != Some(&entity) {
        return; // a duplicate Player that never had the session
    }
    let open_in_flight = world
        .get::<PlayerSession>(entity)
        .is_some_and(|s| s.open_in_flight);
    let unsaved = world
        .get::<PlayerSession>(entity)
        .map(|s| s.unsaved.clone())
        .unwrap_or_default();
    let save = build_save(&world, entity, true);
    let server = world.resource::<MarketplaceSettings>().server_id.clone();
    let mut sessions = world.resource_mut::<Sessions>();
    sessions.by_user.remove(&user);
    if open_in_flight {
        *sessions.stale_opens.entry(user).or_default() += 1;
    }
    let request = match save {
        SaveBuild::Ready(save) => {
            sessions.departed.insert(
                user,
                Departed {
                    request: save.clone(),
                    in_flight: true,
                    failures: 0,
                    rejoined: None,
                },
            );
            Some(LedgerRequest::Save(save))
        }
        SaveBuild::Unserializable {
            reason,
            uncommitted_grants,
            ..
        } => {
            // Their grants die with the unsaved state: back to pending in the ledger, so the
            // next session delivers them again (their effects were never committed).
            for id in &unsaved {
                sessions.awaiting_commit.remove(id);
            }
            tracing::error!(
                "user {user} left and cannot be saved: {reason}; progress since the last save is lost and {uncommitted_grants} uncommitted grant(s) will be delivered again next time"
            );
            world.resource_mut::<MarketplaceStats>().save_failures += 1;
            world.write_message(PlayerSaveFailed {
                user_id: user,
                reason,
                uncommitted_grants,
            });
            Some(LedgerRequest::ReleaseSession { user, server })
        }
        // The previous visit's final save has not landed (they came back while it was being
        // retried, and left again while loading): that save releases the lease when it lands;
        // releasing now would make it fail and lose that visit's progress.
        SaveBuild::Inactive if sessions.departed.contains_key(&user) => {
            if let Some(gone) = sessions.departed.get_mut(&user) {
                gone.rejoined = None;
            }
            None
        }
        // Still loading, or failed: give the lease back if we hold it.
        SaveBuild::Inactive => Some(LedgerRequest::ReleaseSession { user, server }),
    };
    if let Some(request) = request {
        world.resource_mut::<Ledger>().send(request);
    }
    world
        .commands()
        .entity(entity)
        .try_remove::<PlayerSession>();
}

/// Ledger answers not yet handled, in arrival order, one queue per system that consumes them.
/// A burst is worked off from the front over several frames (see
/// [`MarketplacePlugin::frame_budget`](crate::MarketplacePlugin::frame_budget)), so a frame
/// costs what it handles, not what is waiting.
#[derive(Resource, Default)]
pub(crate) struct LedgerInbox {
    /// Answers to charges (prompts).
    pub(crate) charges: CompletionQueue,
    /// Everything else (sessions, saves, balances).
    pub(crate) sessions: CompletionQueue,
}

impl LedgerInbox {
    /// `true` when every answer has been handled.
    pub(crate) fn is_empty(&self) -> bool {
        self.charges.is_empty() && self.sessions.is_empty()
    }
}

/// Answers as the worker sent them: whole batches, taken from the front one at a time.
#[derive(Default)]
pub(crate) struct CompletionQueue(VecDeque<std::vec::IntoIter<LedgerCompletion>>);

impl CompletionQueue {
    fn push_batch(&mut self, batch: Vec<LedgerCompletion>) {
        if !batch.is_empty() {
            self.0.push_back(batch.into_iter());
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<LedgerCompletion> {
        loop {
            let front = self.0.front_mut()?;
            if let Some(completion) = front.next() {
                return Some(completion);
            }
            self.0.pop_front();
        }
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|batch| batch.len() == 0)
    }
}

pub(crate) fn receive_ledger(
    mut ledger: ResMut<Ledger>,
    mut inbox: ResMut<LedgerInbox>,
    mut deadline: ResMut<FrameDeadline>,
    settings: Res<MarketplaceSettings>,
) {
    deadline.start(settings.frame_budget);
    ledger.poll_batches(|batch| match batch.first().map(|c| &c.request) {
        Some(LedgerRequest::Charge(_)) => inbox.charges.push_batch(batch),
        Some(_) => inbox.sessions.push_batch(batch),
        None => {}
    });
}

pub(crate) fn flush_ledger(mut ledger: ResMut<Ledger>) {
    ledger.flush();
}

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
                    if let Ok(LedgerReply::SessionOpened { .. }) = result {
                        // They left while loading: hand the lease back.
                        ledger.send(LedgerRequest::ReleaseSession {
                            user,
                            server: settings.server_id.clone(),
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
                    }) => {
                        balance.0 = stored_balance;
                        match registry.restore(&mut commands.entity(entity), &state) {
                            Ok(carried) => {
                                session.carried = carried;
                                session.phase = SessionPhase::Active;
                                for receipt in pending {
                                    if !sessions.awaiting_commit.contains(&receipt.purchase_id) {
                                        session.add_pending(receipt);
                                    }
                                }
                                deliveries.now.push(entity);
                                wakes.after(
                                    now,
                                    settings.autosave_interval,
                                    Wake::Autosave(entity),
                                );
                            }
                            Err(e) => {
                                tracing::error!(
                                    "user {user}: {e}; purchases and saves are off for this session so nothing is overwritten"
                                );
                                session.phase = SessionPhase::Failed(e);
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
                match result {
                    Ok(LedgerReply::Saved { .. }) => {
                        stats.saves += 1;
                        for id in &save.granted {
                            if let Some(receipt) = sessions.awaiting_commit.remove(id) {
                                stats.granted += 1;
                                resolved.write(ReceiptResolved { receipt });
                            }
                        }
                        if let Some((mut session, _)) = live.and_then(|e| players.get_mut(e).ok()) {
                            session.unsaved.retain(|id| !save.granted.contains(id));
                            session.save_failures = 0;
                            session.last_save_error = None;
                        }
                        if departed
                            && let Some(gone) = sessions.departed.remove(&save.user)
                            && let Some(back) = gone.rejoined
                            && sessions.by_user.get(&save.user) == Some(&back)
                            && let Ok((mut session, _)) = players.get_mut(back)
                        {
                            ledger.send(open_request(save.user, &settings));
                            session.open_in_flight = true;
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
                        if let Some((mut session, _)) = live.and_then(|e| players.get_mut(e).ok()) {
                            session.unsaved.clear();
                            session.pending.clear();
                            session.phase = SessionPhase::Failed("session lease lost".into());
                        }
                        if departed
                            && let Some(gone) = sessions.departed.remove(&save.user)
                            && let Some(back) = gone.rejoined
                            && sessions.by_user.get(&save.user) == Some(&back)
                            && let Ok((mut session, _)) = players.get_mut(back)
                        {
                            ledger.send(open_request(save.user, &settings));
                            session.open_in_flight = true;
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
                if let Ok(LedgerReply::PendingReceipts { receipts }) = result
                    && let Some(&e) = sessions.by_user.get(&user)
                    && let Ok((mut session, _)) = players.get_mut(e)
                    && session.is_active()
                {
                    for receipt in receipts {
                        if !sessions.awaiting_commit.contains(&receipt.purchase_id) {
                            session.add_pending(receipt);
                        }
                    }
                    deliveries.now.push(e);
                }
            }
            LedgerRequest::ReleaseSession { .. } | LedgerRequest::Audit => {}
            LedgerRequest::Charge(_) => unreachable!("charges are handled by the prompt systems"),
        }
    }
}

/// Fires due wake-ups: timed receipt retries, save retries, session re-opens.
pub(crate) fn run_wakes(
    time: Res<Time<Real>>,
    mut wakes: ResMut<WakeSchedule>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut sessions: ResMut<Sessions>,
    mut sessions_q: Query<&mut PlayerSession>,
    settings: Res<MarketplaceSettings>,
    mut ledger: ResMut<Ledger>,
) {
    let now = time.elapsed();
    while let Some(wake) = wakes.pop_due(now) {
        match wake {
            Wake::Deliver(e) => deliveries.due.push(e),
            Wake::Save(e) => deliveries.saves.push(e),
            Wake::Autosave(e) => {
                if sessions_q.get(e).is_ok_and(|s| s.is_active()) {
                    deliveries.saves.push(e);
                    wakes.after(now, settings.autosave_interval, Wake::Autosave(e));
                }
            }
            Wake::Open(e) => {
                if let Ok(mut session) = sessions_q.get_mut(e)
                    && session.phase == SessionPhase::Loading
                    && !session.open_in_flight
                    && sessions.by_user.get(&session.user) == Some(&e)
                {
                    ledger.send(open_request(session.user, &settings));
                    session.open_in_flight = true;
                }
            }
            Wake::Departed(user) => {
                if let Some(gone) = sessions.departed.get_mut(&user)
                    && !gone.in_flight
                {
                    gone.in_flight = true;
                    ledger.send(LedgerRequest::Save(gone.request.clone()));
                }
            }
        }
    }
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
